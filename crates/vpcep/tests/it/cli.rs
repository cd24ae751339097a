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
