//! The CLI against a real server: `configure`, resource commands with `--output json`,
//! tables, and exit codes scripts can rely on.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::spawn_app;

struct Cli {
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vpcep"))
            .args(args)
            .env("VPCEP_CONFIG", &self.config)
            .env_remove("VPCEP_ACCESS_KEY")
            .env_remove("VPCEP_SECRET_KEY")
            .env_remove("VPCEP_PROJECT_ID")
            .env_remove("VPCEP_ENDPOINT")
            .output()
            .unwrap()
    }

    /// Runs with `--output json`, asserts success, returns the JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_every_resource() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("alice.json");
    let a = &alice.acct;
    std::fs::write(
        &account,
        serde_json::json!({"access_key": a.ak, "secret_key": a.sk, "project_id": a.project_id})
            .to_string(),
    )
    .unwrap();
    let cli = Cli {
        config: dir.path().join("profile.json"),
        _dir: dir,
    };
    let url = format!("http://{}", app.addr);
    let out = cli.run(&[
        "configure",
        "--endpoint",
        &url,
        "--from-account",
        account.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cli.config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let vpc = cli.json(&["vpc", "create", "--cidr", "192.168.0.0/16", "--name", "v"]);
    let subnet = cli.json(&[
        "subnet",
        "create",
        "--vpc",
        &s(&vpc, "id"),
        "--cidr",
        "192.168.0.0/24",
    ]);
    let host = cli.json(&[
        "host",
        "create",
        "--vpc",
        &s(&vpc, "id"),
        "--subnet",
        &s(&subnet, "id"),
        "--name",
        "web",
    ]);
    let svc = cli.json(&[
        "service",
        "create",
        "--vpc",
        &s(&vpc, "id"),
        "--port",
        &s(&host, "port_id"),
        "--map",
        "8080:80",
        "--map",
        "53:53/udp",
        "--name",
        "web",
    ]);
    assert_eq!(svc["ports"].as_array().unwrap().len(), 2);
    let sid = s(&svc, "id");
    for _ in 0..100 {
        if cli.json(&["service", "show", &sid])["status"] == "available" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let found = cli.json(&["service", "describe", "--name", &s(&svc, "service_name")]);
    assert_eq!(found["id"], sid.as_str());
    let ep = cli.json(&[
        "endpoint",
        "create",
        "--service",
        &sid,
        "--vpc",
        &s(&vpc, "id"),
        "--subnet",
        &s(&subnet, "id"),
        "--dns",
    ]);
    let eid = s(&ep, "id");
    let conns = cli.json(&["connection", "list", &sid]);
    assert_eq!(conns["total_count"], 1);
    for _ in 0..100 {
        if cli.json(&["endpoint", "show", &eid])["status"] == "pendingAcceptance" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let accepted = cli.json(&["connection", "accept", &sid, &eid]);
    assert_eq!(accepted["connections"][0]["status"], "accepted");
    let list = cli.json(&["endpoint", "list"]);
    assert_eq!(list["endpoints"][0]["id"], eid.as_str());
    cli.json(&["tag", "add", "endpoint", &eid, "env=prod"]);
    assert_eq!(
        cli.json(&["tag", "list", "endpoint"])["tags"][0]["key"],
        "env"
    );
    cli.json(&["permission", "add", &sid, "*"]);
    assert_eq!(cli.json(&["permission", "list", &sid])["total_count"], 1);
    let q = cli.json(&["quota"]);
    assert_eq!(q["quotas"]["resources"][0]["used"], 1);

    // Tables for people.
    let table = cli.run(&["service", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID") && text.contains(&sid), "{text}");

    // Exit codes: 3 refused by the API, 5 unreachable, 2 bad usage.
    let refused = cli.run(&["service", "delete", &sid]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("EndPoint.3006"));
    let missing = cli.run(&["endpoint", "show", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(missing.status.code(), Some(3));
    let unreachable = cli.run(&["quota", "--endpoint", "http://127.0.0.1:9"]);
    assert_eq!(unreachable.status.code(), Some(5));
    assert_eq!(cli.run(&["service", "create"]).status.code(), Some(2));
    let completion = cli.run(&["completion", "bash"]);
    assert!(
        completion.status.success()
            && String::from_utf8_lossy(&completion.stdout).contains("vpcep")
    );
}

#[test]
fn logs_written_to_a_file_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["admin", "account", "create", "alice", "--data-dir"])
        .arg(dir.path())
        // Debug makes the store log its statements: something to look at.
        .env("VPCEP_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("DEBUG"), "nothing was logged: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log file: {logs}"
    );
}

#[test]
fn log_lines_can_be_json_and_never_mix_with_a_commands_output() {
    use std::io::BufRead;
    // serve --log-format json (or VPCEP_LOG_FORMAT=json): one JSON object per line.
    for (flag, env) in [(Some("json"), None), (None, Some("json"))] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpcep"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--dns-port", "0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--loopback-base", "250", "--data-dir"])
            .arg(dir.path())
            .env("VPCEP_LOG", "debug")
            .env_remove("VPCEP_LOG_FORMAT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(f) = flag {
            cmd.args(["--log-format", f]);
        }
        if let Some(e) = env {
            cmd.env("VPCEP_LOG_FORMAT", e);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(line.contains("http://127.0.0.1:"), "{line}");
        let logs = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = logs.lines().collect();
        assert!(!lines.is_empty(), "nothing was logged");
        for l in lines {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}"));
            assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
            assert!(v["fields"].is_object(), "{l}");
        }
    }

    // The demo's progress and report are standard output, whole lines, and nothing else;
    // log lines (at info here, so that there are some) are standard error only.
    for format in ["plain", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
            .args(["demo", "--loopback-base", "234", "--log-format", format])
            .env("VPCEP_LOG", "info")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("7 checks passed"), "{stdout}");
        let progress = stdout.lines().filter(|l| l.starts_with('[')).count();
        assert_eq!(progress, 13, "{stdout}");
        for l in stdout.lines().filter(|l| l.starts_with('[')) {
            assert!(
                l.contains(" … ok ("),
                "a progress line cut by something: {l:?}"
            );
        }
        for l in stdout.lines() {
            assert!(
                !l.contains("INFO") && !l.contains("\"level\""),
                "a log line in the demo's output: {l:?}"
            );
        }
        assert!(stderr.contains("VPC resolver listening"), "{stderr}");
        assert!(!stderr.contains("checks passed"), "{stderr}");
    }
    // By default the embedded server only warns: nothing on standard error.
    let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["demo", "--loopback-base", "234"])
        .env_remove("VPCEP_LOG")
        .env_remove("VPCEP_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("INFO"), "{stderr}");
}

/// A profile for `client`'s account on `app`, in a directory of its own.
fn configured(app: &crate::support::TestApp, client: &crate::support::Client) -> Cli {
    let dir = tempfile::tempdir().unwrap();
    let a = &client.acct;
    let profile = serde_json::json!({
        "endpoint": format!("http://{}", app.addr),
        "access_key": a.ak, "secret_key": a.sk, "project_id": a.project_id,
    });
    let config = dir.path().join("profile.json");
    std::fs::write(&config, profile.to_string()).unwrap();
    Cli { config, _dir: dir }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `vpcep ARGS --output json` until its `status` is `want`.
fn wait_status(cli: &Cli, args: &[&str], want: &str) {
    for _ in 0..200 {
        if cli.json(args)["status"] == want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{args:?} never became {want}");
}

/// Issue 17, finding 7: a usage mistake exits 2 without calling the API, a refusal 3,
/// and every message is printed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_mistakes_exit_2_and_refusals_3_with_one_message() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let cli = configured(&app, &alice);
    let data_dir = app.dir.path().to_str().unwrap().to_owned();

    let o = cli.run(&[
        "service", "create", "--vpc", "v", "--port", "p", "--map", "8080-80",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("CLIENT:SERVER"), "{}", stderr(&o));
    // A usage mistake is one whether or not the client is configured; a missing
    // configuration shows at the first request (5).
    let unconfigured = Cli {
        config: "/nonexistent/profile.json".into(),
        _dir: tempfile::tempdir().unwrap(),
    };
    for args in [
        &[
            "service", "create", "--vpc", "v", "--port", "p", "--map", "8080-80",
        ][..],
        &["service", "update", "some-id"],
        &["tag", "add", "service", "some-id"],
        &["permission", "add", "some-id"],
    ] {
        let o = unconfigured.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = unconfigured.run(&["quota"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("VPCEP_ACCESS_KEY"), "{}", stderr(&o));

    // The operator's commands: a duplicate name is the store's refusal (3), said once.
    let obs = [
        "admin",
        "public-service",
        "create",
        "--name",
        "obs",
        "--type",
        "gateway",
        "--backend",
        "127.0.0.1",
        "--cidr",
        "100.125.0.0/16",
        "--data-dir",
        &data_dir,
    ];
    assert!(cli.run(&obs).status.success());
    let o = cli.run(&obs);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.matches("exists already").count(), 1, "{err}");
    for (args, why) in [
        (
            vec![
                "admin",
                "public-service",
                "create",
                "--name",
                "x",
                "--backend",
                "no-ip",
                "--port",
                "53",
                "--data-dir",
                &data_dir,
            ],
            "--backend",
        ),
        (
            vec![
                "admin",
                "public-service",
                "create",
                "--name",
                "x",
                "--backend",
                "10.0.0.1",
                "--port",
                "53-53",
                "--data-dir",
                &data_dir,
            ],
            "--port",
        ),
        (
            vec![
                "admin",
                "public-service",
                "create",
                "--name",
                "x",
                "--type",
                "bridge",
                "--backend",
                "10.0.0.1",
                "--data-dir",
                &data_dir,
            ],
            "--type",
        ),
        (
            vec![
                "admin",
                "public-service",
                "update",
                "obs",
                "--data-dir",
                &data_dir,
            ],
            "--backend",
        ),
        (
            vec!["admin", "quota", "set", "alice", "--data-dir", &data_dir],
            "--endpoints",
        ),
        (
            vec!["configure", "--from-account", "/nonexistent/alice.json"],
            "--from-account",
        ),
        (vec!["routetable", "update", "some-id"], "--add-route"),
        (
            vec![
                "routetable",
                "create",
                "--vpc",
                "v",
                "--route",
                "10.0.0.0/8",
            ],
            "DESTINATION=NEXTHOP",
        ),
    ] {
        let o = cli.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }
    let o = cli.run(&[
        "admin",
        "quota",
        "set",
        "nobody",
        "--endpoints",
        "3",
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // Finding 6: a project id given as an account id.
    let (svc, _, _) = alice.service(true, 80).await;
    let own = format!("iam:domain::{}", alice.acct.project_id);
    let o = cli.run(&["permission", "add", &svc, &own]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("your project id"), "{}", stderr(&o));
    let theirs = format!("iam:domain::{}", bob.acct.project_id);
    let o = cli.run(&["permission", "add", &svc, &theirs]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("EndPoint.3002") && stderr(&o).contains("project id"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cli.json(&["permission", "list", &svc])["total_count"], 0);
    cli.json(&[
        "permission",
        "add",
        &svc,
        &format!("iam:domain::{}", bob.acct.domain_id),
    ]);
}

/// Finding 8: `--wait` returns once an endpoint (or service) is gone, so what it held
/// can be deleted next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_wait_until_the_resource_is_gone() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let cli = configured(&app, &alice);
    let (svc, vpc, subnet) = alice.service(false, 80).await;
    let (vpc2, subnet2) = alice.network_of("10.0.0.0/16", "10.0.0.0/24").await;
    let _ = vpc;
    let ep = cli.json(&[
        "endpoint",
        "create",
        "--service",
        &svc,
        "--vpc",
        &vpc2,
        "--subnet",
        &subnet2,
    ]);
    let eid = s(&ep, "id");
    wait_status(&cli, &["endpoint", "show", &eid], "accepted");

    let o = cli.run(&["endpoint", "delete", &eid, "--wait", "--timeout", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
    assert_eq!(cli.run(&["endpoint", "show", &eid]).status.code(), Some(3));
    // Its address is free at once: the subnet goes.
    let o = cli.run(&["subnet", "delete", &vpc2, &subnet2]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = cli.run(&["service", "delete", &svc, "--wait", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cli.run(&["service", "show", &svc]).status.code(), Some(3));
    let _ = subnet;
    // --timeout without --wait is a usage mistake.
    let o = cli.run(&["endpoint", "delete", &eid, "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Finding 8: route tables from the shell, as the API has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tables_from_the_shell() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let cli = configured(&app, &alice);
    let (vpc, _) = alice.network_of("192.168.0.0/16", "192.168.0.0/24").await;

    let listed = cli.json(&["routetable", "list", "--vpc", &vpc]);
    assert_eq!(listed["routetables"].as_array().unwrap().len(), 1);
    assert_eq!(listed["routetables"][0]["default"], true);
    let t = cli.json(&[
        "routetable",
        "create",
        "--vpc",
        &vpc,
        "--name",
        "extra",
        "--route",
        "10.8.0.0/16=192.168.0.10",
        "--route",
        "0.0.0.0/0=192.168.0.1,nat",
    ]);
    let id = s(&t, "id");
    assert_eq!(t["routes"].as_array().unwrap().len(), 2);
    assert_eq!(t["routes"][1]["type"], "nat");
    let t = cli.json(&[
        "routetable",
        "update",
        &id,
        "--add-route",
        "10.9.0.0/16=192.168.0.11",
        "--del-route",
        "0.0.0.0/0",
        "--mod-route",
        "10.8.0.0/16=192.168.0.12",
        "--description",
        "lab",
    ]);
    let routes: Vec<(String, String)> = t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (s(r, "destination"), s(r, "nexthop")))
        .collect();
    assert_eq!(
        routes,
        [
            ("10.8.0.0/16".into(), "192.168.0.12".into()),
            ("10.9.0.0/16".into(), "192.168.0.11".into())
        ]
    );
    assert_eq!(t["description"], "lab");
    // Tables for people: routes as DEST via NEXTHOP.
    let o = cli.run(&["routetable", "show", &id]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("10.8.0.0/16 via 192.168.0.12 (ecs)"),
        "{text}"
    );
    let o = cli.run(&["routetable", "list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("ID") && text.contains("extra"), "{text}");
    // The API's refusals are exit 3: a bad destination, the default table.
    let o = cli.run(&[
        "routetable",
        "update",
        &id,
        "--add-route",
        "10.9.0.300/16=x",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let default = s(&listed["routetables"][0], "id");
    let o = cli.run(&["routetable", "delete", &default]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = cli.run(&["routetable", "delete", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cli.run(&["routetable", "show", &id]).status.code(), Some(3));
}

/// Finding 8: the operator lists, changes and deletes public services next to a running
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_manages_public_services() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let cli = configured(&app, &alice);
    let data_dir = app.dir.path().to_str().unwrap().to_owned();
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "public-service"];
        all.extend_from_slice(args);
        all.extend(["--data-dir", &data_dir]);
        cli.run(&all)
    };
    let o = admin(&[
        "create",
        "--name",
        "dns",
        "--backend",
        "127.0.0.1",
        "--port",
        "53:53/UDP",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admin(&[
        "create",
        "--name",
        "obs",
        "--type",
        "gateway",
        "--backend",
        "127.0.0.1",
        "--cidr",
        "100.125.0.0/16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = admin(&["list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("ID")
            && text.contains("com.vpcep.local-1.obs")
            && text.contains("53:53/UDP"),
        "{text}"
    );
    let o = admin(&["list", "--output", "json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let obs = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "obs")
        .unwrap()
        .clone();
    assert_eq!(obs["cidr"], "100.125.0.0/16");

    let o = admin(&[
        "update",
        "dns",
        "--backend",
        "127.0.0.2",
        "--description",
        "resolver",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dns: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (dns["backend"].as_str(), dns["description"].as_str()),
        (Some("127.0.0.2"), Some("resolver"))
    );
    let o = admin(&["update", "dns", "--cidr", "100.126.0.0/16"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // An endpoint to obs keeps it; once that is gone, so can obs be.
    let obs_id = s(&obs, "id");
    let status_of_obs = || {
        let o = admin(&["list", "--output", "json"]);
        let list: Value = serde_json::from_slice(&o.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "obs")
            .map(|s| s["status"].clone())
    };
    for _ in 0..200 {
        if status_of_obs() == Some(Value::from("available")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let (vpc, _) = alice.network_of("10.0.0.0/16", "10.0.0.0/24").await;
    let ep = cli.json(&["endpoint", "create", "--service", &obs_id, "--vpc", &vpc]);
    wait_status(&cli, &["endpoint", "show", &s(&ep, "id")], "accepted");
    let o = admin(&["delete", "obs"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("EndPoint.3006") || stderr(&o).contains("endpoint(s) connected"),
        "{}",
        stderr(&o)
    );
    cli.json(&["endpoint", "delete", &s(&ep, "id"), "--wait"]);
    let o = admin(&["delete", "obs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for _ in 0..200 {
        let o = admin(&["list", "--output", "json"]);
        let list: Value = serde_json::from_slice(&o.stdout).unwrap();
        if list.as_array().unwrap().len() == 1 {
            assert_eq!(list[0]["name"], "dns");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the server never removed obs");
}

/// `--wait` against a server whose deletion takes a while (or never ends): it polls until
/// the resource is gone, tells a person it is waiting, and gives up at `--timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_polls_until_gone_and_gives_up_at_the_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::http::StatusCode;
    use axum::routing::get;

    // GET answers "deleting" `slow` times, then 404.
    async fn fake(slow: usize) -> (String, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let seen = polls.clone();
        let app = axum::Router::new().route(
            "/v1/{p}/vpc-endpoints/{id}",
            get(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < slow {
                        (StatusCode::OK, axum::Json(serde_json::json!({"status": "deleting"})))
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            axum::Json(serde_json::json!({"error_code": "EndPoint.0005", "error_msg": "endpoint not found"})),
                        )
                    }
                }
            })
            .delete(|| async { StatusCode::NO_CONTENT }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, polls)
    }
    let run = |url: String, extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "endpoint",
                "delete",
                "ep-1",
                "--wait",
                "--endpoint",
                &url,
                "--access-key",
                "AK",
                "--secret-key",
                "SK",
                "--project-id",
                "p",
            ];
            args.extend_from_slice(extra);
            Command::new(env!("CARGO_BIN_EXE_vpcep"))
                .args(&args)
                .env("VPCEP_CONFIG", "/nonexistent/profile.json")
                .output()
                .unwrap()
        })
    };

    let (url, polls) = fake(5).await;
    let o = run(url, &[]).await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(polls.load(Ordering::SeqCst), 6, "polled until the 404");

    let (url, _) = fake(usize::MAX).await;
    let o = run(url, &["--timeout", "4"]).await.unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains("waiting for endpoint ep-1 to go: deleting"),
        "{err}"
    );
    assert!(err.contains("still deleting after 4 s"), "{err}");
}
