//! HTTPS: a certificate from `admin tls self-signed`, the API served with it, the CLI and
//! a gateway node trusting it through `--ca-file`, and what is refused.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dataplane::{echo, setup};
use crate::support::{spawn_with, test_config, TestApp};

const TOKEN: &str = "node-token-for-tests";

fn vpcep(args: &[&str], profile: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(args)
        .env("VPCEP_CONFIG", profile)
        .env_remove("VPCEP_ACCESS_KEY")
        .env_remove("VPCEP_SECRET_KEY")
        .env_remove("VPCEP_PROJECT_ID")
        .env_remove("VPCEP_ENDPOINT")
        .env_remove("VPCEP_CA_FILE")
        .env_remove("VPCEP_TLS_CERT")
        .env_remove("VPCEP_TLS_KEY")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `vpcep admin tls self-signed --out dir --output json`: what it printed.
fn self_signed(dir: &std::path::Path) -> Value {
    let out = vpcep(
        &[
            "admin",
            "tls",
            "self-signed",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            "vpcep.test",
            "--output",
            "json",
        ],
        &dir.join("unused-profile.json"),
    );
    serde_json::from_slice(&ok(&out).stdout).unwrap()
}

/// A server on HTTPS with a fresh self-signed certificate; `remote`: for gateway nodes.
async fn https_app(remote: bool, edit: impl FnOnce(&mut vpcep::serve::Config)) -> (TestApp, Value) {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let cert = self_signed(&dir.path().join("tls"));
    let mut config = test_config(&dir);
    config.tls = Some(vpcep::serve::TlsFiles {
        cert: cert["cert"].as_str().unwrap().into(),
        key: cert["key"].as_str().unwrap().into(),
    });
    if remote {
        config.dataplane = vpcep::serve::DataplaneMode::Remote;
        config.node_token = Some(TOKEN.into());
    }
    edit(&mut config);
    (spawn_with(dir, config).await, cert)
}

#[test]
fn the_self_signed_certificate_is_for_the_names_and_loopback_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let made = self_signed(dir.path());
    assert_eq!(
        made["names"],
        json!(["vpcep.test", "127.0.0.1", "localhost"])
    );
    let fp = made["sha256_fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 95, "{fp}");
    assert!(
        fp.split(':').all(|b| b.len() == 2
            && b.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())),
        "{fp}"
    );
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(made["key"].as_str().unwrap()).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    // The table for people says the same.
    let out = vpcep(
        &[
            "admin",
            "tls",
            "self-signed",
            "--out",
            dir.path().join("again").to_str().unwrap(),
        ],
        &dir.path().join("p.json"),
    );
    let text = String::from_utf8(ok(&out).stdout.clone()).unwrap();
    assert!(text.contains("sha256 fingerprint"), "{text}");
    assert!(text.contains("key.pem"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_a_gateway_node_work_over_https_with_the_ca() {
    let (app, cert) = https_app(true, |_| {}).await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    let ca = cert["cert"].as_str().unwrap();

    // A gateway node follows the control plane over HTTPS, trusting only its CA.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = tokio::spawn(vpcep::gateway::run(
        vpcep::gateway::GatewayConfig {
            control_plane: app.base.clone(),
            token: TOKEN.into(),
            name: "gw-tls".into(),
            substrate: vpcep::serve::SubstrateKind::Loopback,
            netns_prefix: "unused".into(),
            loopback_base: app.config.loopback_base,
            forwarding: vpcep::serve::ForwardingMode::Auto,
            dns: Default::default(),
            kernel_resync: vpcep::serve::DEFAULT_KERNEL_RESYNC,
            ca_file: Some(ca.into()),
            machine: None,
        },
        rx,
    ));
    // The services and endpoint become available only when the node reports them.
    let s = setup(&app, "close", json!({})).await;
    assert_eq!(
        echo((s.node, 8080).into(), b"over https").await.unwrap(),
        b"over https"
    );

    // The CLI: configured with the CA, it works.
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("alice.json");
    let a = &s.provider.acct;
    std::fs::write(
        &account,
        json!({"access_key": a.ak, "secret_key": a.sk, "project_id": a.project_id}).to_string(),
    )
    .unwrap();
    let with_ca = dir.path().join("with-ca.json");
    let configure = |profile: &std::path::Path, ca: Option<&str>| {
        let mut args = vec![
            "configure",
            "--endpoint",
            &app.base,
            "--from-account",
            account.to_str().unwrap(),
        ];
        args.extend(ca.map(|c| ["--ca-file", c]).into_iter().flatten());
        ok(&vpcep(&args, profile));
    };
    configure(&with_ca, Some(ca));
    let saved: Value = serde_json::from_slice(&std::fs::read(&with_ca).unwrap()).unwrap();
    assert_eq!(saved["ca_file"], ca);
    let out = vpcep(&["service", "list", "--output", "json"], &with_ca);
    let list: Value = serde_json::from_slice(&ok(&out).stdout).unwrap();
    assert!(
        list.to_string().contains(&s.service),
        "the service is listed over https: {list}"
    );

    // Without the CA (the built-in roots), the certificate is not trusted: exit 5.
    let without = dir.path().join("without-ca.json");
    configure(&without, None);
    let out = vpcep(&["service", "list"], &without);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    // Nor with another CA, given on the command line.
    let other = self_signed(&dir.path().join("other"));
    let out = vpcep(
        &[
            "service",
            "list",
            "--ca-file",
            other["cert"].as_str().unwrap(),
        ],
        &with_ca,
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The versions document names the scheme the client used.
    let v: Value = app
        .http
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let href = v["versions"][0]["links"][0]["href"].as_str().unwrap();
    assert!(href.starts_with("https://"), "{href}");

    // Plain HTTP to the HTTPS port gets no API answer.
    let mut c = TcpStream::connect(app.addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains("HTTP/1.1"), "plain HTTP was answered: {got}");
    let plain = reqwest::Client::new()
        .get(format!("http://{}/", app.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    stop.send(true).unwrap();
    node.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_closed_by_the_header_timeout() {
    let (app, _) = https_app(false, |c| {
        c.api.header_timeout = Duration::from_secs(1);
    })
    .await;
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(app.addr).await.unwrap();
    // The start of a TLS record, and then nothing.
    c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut b = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled handshake was not closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vpcep_http_header_timeouts_total{listener=\"api\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!line.ends_with(" 0"), "{line}");
}

#[test]
fn a_bad_certificate_or_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let made = self_signed(&dir.path().join("tls"));
    let (cert, key) = (
        made["cert"].as_str().unwrap(),
        made["key"].as_str().unwrap(),
    );
    let data = dir.path().join("data");
    for (c, k, says) in [
        (key, key, "--tls-cert"),
        (cert, cert, "--tls-key"),
        (cert, "/nonexistent/key.pem", "--tls-key"),
    ] {
        let out = vpcep(
            &[
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
                "--tls-cert",
                c,
                "--tls-key",
                k,
            ],
            &dir.path().join("p.json"),
        );
        assert_eq!(out.status.code(), Some(5), "{c} {k}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{c} {k}: {err}");
        assert!(out.stdout.is_empty(), "nothing listened: {c} {k}");
    }
}
