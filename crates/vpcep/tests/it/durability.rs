//! Crash safety: `kill -9` the real binary during a burst of writes; every write that was
//! acknowledged is there after a restart, and transitional statuses resume.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::{Account, Client};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
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
