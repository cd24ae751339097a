//! Crash safety: `kill -9` the real binary during a burst of writes; every write that was
//! acknowledged is there after a restart, and transitional statuses resume.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::{Account, Client};

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Proc, String) {
    start_with(dir, &[])
}

pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        // Tests run side by side: not the default metrics port.
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("VPCEP_LOG", "warn")
        // Above the blocks the in-process test servers use.
        .env("VPCEP_LOOPBACK_BASE", "240")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (Proc(child), url)
}

pub(crate) fn admin_account(dir: &Path, name: &str) -> Account {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["admin", "account", "create", name, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    for k in ["domain_id", "project_id"] {
        assert!(
            s(k).len() == 32
                && s(k)
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    Account {
        domain_id: s("domain_id"),
        project_id: s("project_id"),
        ak: s("access_key"),
        sk: s("secret_key"),
        password: s("password"),
    }
}

#[tokio::test]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // The admin command works before any server exists.
    let acct = admin_account(dir.path(), "alice");
    let (mut proc_, url) = start(dir.path());
    let client = Client::new(url, acct.clone());
    let (svc, vpc, sub) = client.service(false, 80).await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = client.clone();
        let acked = acked.clone();
        let body = json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub});
        writers.push(tokio::spawn(async move {
            for i in 0..200 {
                let r = if i % 2 == 0 {
                    c.try_call(
                        "POST",
                        "/v1/{p}/vpcs",
                        Some(&json!({"vpc": {"name": format!("w{w}-{i}"), "cidr": "10.0.0.0/16"}})),
                    )
                    .await
                } else {
                    c.try_call("POST", "/v1/{p}/vpc-endpoints", Some(&body))
                        .await
                };
                match r {
                    Some(r) if r.status == 200 => {
                        let id = r.body.get("vpc").map(|v| &v["id"]).unwrap_or(&r.body["id"]);
                        acked.lock().unwrap().push(id.as_str().unwrap().to_owned());
                    }
                    Some(r) if r.status == 400 => {}
                    Some(r) => panic!("unexpected {}: {}", r.status, r.body),
                    None => break,
                }
            }
        }));
    }
    // Let the burst run, then kill without warning.
    while acked.lock().unwrap().len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    proc_.0.kill().unwrap();
    proc_.0.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);

    let (_proc2, url2) = start(dir.path());
    let client = Client::new(url2, acct);
    for id in &acked {
        let vpc = client.get(&format!("/v1/{{p}}/vpcs/{id}")).await;
        let ep = client.get(&format!("/v1/{{p}}/vpc-endpoints/{id}")).await;
        assert!(
            vpc.status == 200 || ep.status == 200,
            "acknowledged {id} is lost"
        );
    }
    // Endpoints caught in `creating` by the crash settle after the restart.
    let list = client
        .ok("GET", "/v1/{p}/vpc-endpoints?limit=1000", None)
        .await;
    for e in list["endpoints"].as_array().unwrap() {
        client
            .wait(
                &format!("/v1/{{p}}/vpc-endpoints/{}", e["id"].as_str().unwrap()),
                "accepted",
            )
            .await;
    }
}

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop (also when
/// the test fails). `None` without the right to mount.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
                    "VPCEP_REQUIRE_NETNS is set, but a tmpfs cannot be mounted: {why}"
                );
                eprintln!("skipped: a tmpfs cannot be mounted (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Fills the file system under `path` with one file, until the kernel says it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0x5a_u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

async fn create_vpc(c: &Client, name: &str) -> crate::support::Resp {
    c.call(
        "POST",
        "/v1/{p}/vpcs",
        Some(&json!({"vpc": {"name": name, "cidr": "10.0.0.0/16"}})),
    )
    .await
}

async fn all_there(c: &Client, acked: &[String]) {
    let list = c.ok("GET", "/v1/{p}/vpcs?limit=2000", None).await;
    let have: std::collections::HashSet<&str> = list["vpcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    for id in acked {
        assert!(have.contains(id.as_str()), "acknowledged VPC {id} is lost");
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_and_writes_resume_when_there_is_room() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let dir = fs.0.path().join("data");
    let filler = fs.0.path().join("filler");
    let acct = admin_account(&dir, "alice");
    // Declared after the mount, so the server is gone before the unmount.
    let no_dns = ["--dns-port", "0"];
    let (proc_, url) = start_with(&dir, &no_dns);
    let client = Client::new(url, acct.clone());
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = create_vpc(&client, &format!("before{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(r.body["vpc"]["id"].as_str().unwrap().to_owned());
    }

    // The disk fills up: creates go on succeeding while the WAL has room, then fail
    // with 503, the storage code and a message that says what happened.
    fill(&filler);
    let refused = loop {
        let r = create_vpc(&client, &format!("full{}", acked.len())).await;
        match r.status {
            200 => acked.push(r.body["vpc"]["id"].as_str().unwrap().to_owned()),
            _ => break r,
        }
        assert!(acked.len() < 20_000, "the disk never filled up");
    };
    assert_eq!(
        (refused.status, refused.code()),
        (503, "EndPoint.0015"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["error_msg"]
            .as_str()
            .unwrap()
            .contains("storage is full"),
        "{}",
        refused.body
    );
    assert!(refused.body["request_id"].is_string(), "{}", refused.body);
    // As HTTP asks of a 503: when to try again.
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    // More writes while the disk stays full: each one is either written whole (SQLite
    // reuses the room its failed commit had taken in the WAL) or refused the same way.
    for i in 0..5 {
        let r = create_vpc(&client, &format!("still-full{i}")).await;
        match r.status {
            200 => acked.push(r.body["vpc"]["id"].as_str().unwrap().to_owned()),
            _ => assert_eq!((r.status, r.code()), (503, "EndPoint.0015"), "{}", r.body),
        }
    }
    all_there(&client, &acked).await;

    // Room again: writes resume at once, on every connection, without a restart.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..24 {
        let r = create_vpc(&client, &format!("after{i}")).await;
        assert_eq!(r.status, 200, "write {i} after freeing space: {}", r.body);
        acked.push(r.body["vpc"]["id"].as_str().unwrap().to_owned());
    }
    all_there(&client, &acked).await;
    // The controller writes again too: a new service is settled `available`.
    client.service(false, 80).await;

    // And nothing acknowledged is lost across a restart.
    drop(proc_);
    let (_proc2, url2) = start_with(&dir, &no_dns);
    let client = Client::new(url2, acct);
    all_there(&client, &acked).await;
    let r = create_vpc(&client, "after-restart").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (first, url) = start(dir.path());
    let second = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("VPCEP_LOG", "warn")
        .env("VPCEP_LOOPBACK_BASE", "240")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second server started: {err}");
    let addr = url.trim_start_matches("http://");
    let who = format!("pid {}, listening on {addr}", first.0.id());
    assert!(
        err.contains(&who) && err.contains("is using the data directory"),
        "{err}"
    );
    // The operator's commands keep working beside the server.
    admin_account(dir.path(), "alice");
    // The kernel lets the lock go with the process, however it ends.
    drop(first);
    let (_again, _) = start(dir.path());
}

/// `vpcep admin` beside a running server, as JSON: its stdout, or the failure.
fn admin(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An online backup holds every write acknowledged before it, however busy the server
/// is while it is made; the server keeps its own; restoring it brings exactly those
/// back. The schema commands and the cluster's status work on the embedded store too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = admin(dir.path(), &["migrate"]);
    assert_eq!(migrated["schema_before"], 0, "{migrated}");
    let latest = migrated["schema"].as_i64().unwrap();
    assert!(latest >= 7, "{migrated}");
    let acct = admin_account(dir.path(), "alice");
    let (proc_, url) = start(dir.path());
    let client = Client::new(url, acct.clone());
    let create_vpc = |c: Client, name: String| async move {
        let r = c
            .call(
                "POST",
                "/v1/{p}/vpcs",
                Some(&json!({"vpc": {"name": name, "cidr": "10.0.0.0/16"}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["vpc"]["id"].as_str().unwrap().to_owned()
    };
    let mut before = Vec::new();
    for i in 0..30 {
        before.push(create_vpc(client.clone(), format!("before-{i}")).await);
    }
    // Writes go on while the copy is made.
    let busy = {
        let c = client.clone();
        tokio::spawn(async move {
            let mut during = Vec::new();
            for i in 0..60 {
                during.push(create_vpc(c.clone(), format!("during-{i}")).await);
            }
            during
        })
    };
    let file = dir.path().join("backup.db");
    let made = tokio::task::spawn_blocking({
        let (dir, file) = (dir.path().to_owned(), file.clone());
        move || admin(&dir, &["backup", file.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(made["bytes"].as_u64().unwrap() > 0, "{made}");
    let during = busy.await.unwrap();
    let after = create_vpc(client.clone(), "after".into()).await;
    // The one server leads, and says so.
    let status = admin(dir.path(), &["cluster", "status", "--output", "json"]);
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{status}");
    assert_eq!(rows[0]["leader"], true, "{status}");
    assert_eq!(admin(dir.path(), &["migrate"])["schema_before"], latest);

    // Restore: stop the server, put the copy in place of the database.
    drop(proc_);
    for f in ["vpcep.db-wal", "vpcep.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::rename(&file, dir.path().join("vpcep.db")).unwrap();
    let (_proc2, url2) = start(dir.path());
    let client = Client::new(url2, acct);
    for id in &before {
        assert_eq!(
            client.get(&format!("/v1/{{p}}/vpcs/{id}")).await.status,
            200,
            "{id}, acknowledged before the backup, is restored"
        );
    }
    assert_eq!(
        client.get(&format!("/v1/{{p}}/vpcs/{after}")).await.status,
        404,
        "a write after the backup is not in it"
    );
    // What was written while it was made is there or not as a whole request, and the
    // restored store takes writes.
    let list = client.ok("GET", "/v1/{p}/vpcs?limit=1000", None).await;
    let held = list["vpcs"].as_array().unwrap().len();
    assert!(
        held >= before.len() && held <= before.len() + during.len(),
        "{held}"
    );
    create_vpc(client, "after-restore".into()).await;
}
