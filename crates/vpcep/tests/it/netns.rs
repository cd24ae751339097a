//! The user guide's scenarios in real network namespaces (root only): two VPCs with the
//! same CIDR, a provider host serving HTTP and UDP, a consumer host that curls the
//! endpoint. Every namespace and process a test makes is removed by its guard, even when
//! the test fails. Without root the tests say they were skipped, unless
//! `VPCEP_REQUIRE_NETNS` is set (CI), which makes a skip a failure.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use vpcep::serve::{ForwardingMode, SubstrateKind};
use vpcep_dataplane::Netns;

use crate::support::{spawn_with, test_config, Client, TestApp};

/// Owns the namespaces of one test (by prefix) and the programs it started in them.
struct Guard {
    netns: Netns,
    children: Mutex<Vec<Child>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.netns.remove_all() {
            eprintln!("cleaning up namespaces: {e}");
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A server on the netns substrate with a unique namespace prefix, or `None` (skip).
async fn netns_app(forwarding: ForwardingMode) -> Option<(TestApp, Arc<Guard>)> {
    let prefix = format!(
        "t{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let netns = match Netns::new(&prefix) {
        Ok(n) => n,
        Err(e) => {
            assert!(
                std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
                "VPCEP_REQUIRE_NETNS is set, but: {e}"
            );
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let guard = Arc::new(Guard {
        netns,
        children: Mutex::default(),
    });
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir);
    config.substrate = SubstrateKind::Netns;
    config.netns_prefix = prefix;
    config.forwarding = forwarding;
    Some((spawn_with(dir, config).await, guard))
}

impl Guard {
    /// Starts `python3 -c script` inside a namespace; it is killed with the guard.
    fn spawn_py(&self, ns: &str, script: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.lock().unwrap().push(child);
    }
}

/// Runs a command inside a namespace: (success, stdout).
async fn run_in(ns: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Retries `args` in `ns` until it succeeds with some output (servers take a moment to
/// start; until the backend listens, the gateway closes the session without a word).
async fn eventually(ns: &str, args: &[&str]) -> String {
    for _ in 0..50 {
        let (ok, out) = run_in(ns, args).await;
        if ok && !out.trim().is_empty() {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{args:?} in {ns} never succeeded");
}

const HTTP: &str = r#"
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hold":
            time.sleep(30)
        body = self.client_address[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0", 80), H).serve_forever()
"#;

const PROXY: &str = r#"
import socket, struct
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 81)); s.listen(16)
while True:
    c, _ = s.accept()
    head = b""
    while len(head) < 16: head += c.recv(16 - len(head))
    n = struct.unpack("!H", head[14:16])[0]
    body = b""
    while len(body) < n: body += c.recv(n - len(body))
    src = socket.inet_ntoa(body[0:4]); sport = struct.unpack("!H", body[8:10])[0]
    marker = None; rest = body[12:]
    while len(rest) >= 3:
        t, l = rest[0], struct.unpack("!H", rest[1:3])[0]; v = rest[3:3+l]
        if t == 0xE3:
            while len(v) >= 3:
                st, sl = v[0], struct.unpack("!H", v[1:3])[0]
                if st == 0x02: marker = struct.unpack("!I", v[3:7])[0]
                v = v[3+sl:]
        rest = rest[3+l:]
    c.sendall(("%s %s" % (src, marker)).encode()); c.close()
"#;

const UDP_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    d, a = s.recvfrom(2048); s.sendto(d, a)
"#;

/// Holds N sessions open, then tries one more: prints whether it was admitted.
const LIMIT: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=3); s.sendall(b"GET /hold HTTP/1.0\r\n\r\n"); held.append(s)
time.sleep(0.5)
try:
    s = socket.create_connection((host, port), timeout=2); s.sendall(b"GET / HTTP/1.0\r\n\r\n"); d = s.recv(100)
    print("admitted" if d else "refused")
except Exception:
    print("refused")
"#;

const TCP_READ: &str = "import socket,sys; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(c.recv(200).decode())";
const UDP_ASK: &str = "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b'ping', (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())";

async fn host(c: &Client, vpc: &str, sub: &str, ip: &str, name: &str) -> Value {
    c.ok(
        "POST",
        "/v1/{p}/hosts",
        Some(json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "name": name}})),
    )
    .await["host"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_guide_scenarios_userspace_path() {
    scenarios(ForwardingMode::Userspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_guide_scenarios_kernel_path() {
    scenarios(ForwardingMode::Auto).await;
}

/// The same flows on either path. With `Auto`, the PROXY-v2 part stays in userspace and the
/// plain part (`tcp_proxy` close) takes the kernel path.
async fn scenarios(forwarding: ForwardingMode) {
    let Some((app, guard)) = netns_app(forwarding).await else {
        return;
    };
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let carol = app.account("carol").await;

    // Provider: VPC 192.168.0.0/16 with a web host serving HTTP, PROXY-aware TCP and UDP.
    let (pvpc, psub, _) = alice.network().await;
    let web = host(&alice, &pvpc, &psub, "192.168.0.10", "web").await;
    let web_ns = web["netns"].as_str().unwrap().to_owned();
    let svc = alice
        .ok("POST", "/v1/{p}/vpc-endpoint-services", Some(json!({"vpc_id": pvpc, "port_id": web["port_id"], "server_type": "VM", "approval_enabled": true, "tcp_proxy": "proxy_open",
            "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}, {"client_port": 8081, "server_port": 81, "protocol": "TCP"}, {"client_port": 5353, "server_port": 53, "protocol": "UDP"}]})))
        .await;
    let svc_id = svc["id"].as_str().unwrap().to_owned();
    alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            "available",
        )
        .await;
    alice.ok("POST", &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}/permissions/action"), Some(json!({"permissions": [format!("iam:domain::{}", bob.acct.domain_id)], "action": "add"}))).await;

    // Consumer: the same CIDR; its client host even has the same address as the backend.
    let (cvpc, csub, _) = bob.network().await;
    let client = host(&bob, &cvpc, &csub, "192.168.0.10", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let ep = bob
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": svc_id, "vpc_id": cvpc, "subnet_id": csub})),
        )
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    bob.wait(
        &format!("/v1/{{p}}/vpc-endpoints/{ep_id}"),
        "pendingAcceptance",
    )
    .await;
    alice
        .ok(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}/connections/action"),
            Some(json!({"action": "receive", "endpoints": [ep_id]})),
        )
        .await;
    let ep = bob
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"), "accepted")
        .await;
    let node = ep["ip"].as_str().unwrap().to_owned();

    // With proxy_open, the HTTP backend would see the PROXY header first; use a second,
    // plain service for HTTP to keep both flows honest.
    guard.spawn_py(&web_ns, PROXY);
    guard.spawn_py(&web_ns, UDP_ECHO);
    let marker_line = eventually(&client_ns, &["python3", "-c", TCP_READ, &node, "8081"]).await;
    assert_eq!(
        marker_line.trim(),
        format!("192.168.0.10 {}", ep["marker_id"]),
        "PROXY v2 header: client address and marker id"
    );
    let echo = eventually(&client_ns, &["python3", "-c", UDP_ASK, &node, "5353"]).await;
    assert_eq!(echo.trim(), "ping");

    let plain = alice
        .ok(
            "PUT",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            Some(json!({"tcp_proxy": "close"})),
        )
        .await;
    assert_eq!(plain["tcp_proxy"], "close");
    guard.spawn_py(&web_ns, HTTP);
    let seen = eventually(
        &client_ns,
        &["curl", "-s", "-m", "3", &format!("http://{node}:8080/")],
    )
    .await;
    let src: std::net::Ipv4Addr = seen.trim().parse().unwrap();
    let snat: ipnet::Ipv4Net = "198.19.128.0/20".parse().unwrap();
    assert!(
        snat.contains(&src),
        "the backend sees a source in 198.19.128.0/20, not {src}"
    );
    // The path an endpoint takes shows in its metrics.
    let path = if forwarding == ForwardingMode::Auto {
        "kernel"
    } else {
        "userspace"
    };
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vpcep_gateway_sessions_total") && l.contains(&ep_id))
        .unwrap_or_else(|| panic!("no session counter for the endpoint in {metrics}"));
    assert!(line.contains(&format!("path=\"{path}\"")), "{line}");
    assert!(!line.ends_with(" 0"), "sessions are counted: {line}");

    // One way only: the provider host reaches neither the consumer nor the endpoint.
    let (ok, _) = run_in(
        &web_ns,
        &["curl", "-s", "-m", "1", &format!("http://{node}:8080/")],
    )
    .await;
    assert!(!ok, "the provider side reaches the endpoint IP");
    // An unmapped port is closed.
    let (ok, _) = run_in(
        &client_ns,
        &["curl", "-s", "-m", "1", &format!("http://{node}:9999/")],
    )
    .await;
    assert!(!ok);
    // A third VPC cannot reach the endpoint.
    let (xvpc, xsub, _) = carol.network().await;
    let other = host(&carol, &xvpc, &xsub, "192.168.0.20", "other").await;
    let other_ns = other["netns"].as_str().unwrap().to_owned();
    eventually(&other_ns, &["ip", "addr", "show", "eth0"]).await;
    let (ok, _) = run_in(
        &other_ns,
        &["curl", "-s", "-m", "1", &format!("http://{node}:8080/")],
    )
    .await;
    assert!(!ok, "a third VPC reaches the endpoint");

    // A restart of the server brings every listener back (namespaces and hosts stayed).
    let (dir, config) = (app.dir.clone(), app.config.clone());
    app.stop().await;
    let kernel = forwarding == ForwardingMode::Auto;
    let (ok, _) = run_in(
        &client_ns,
        &["curl", "-s", "-m", "2", &format!("http://{node}:8080/")],
    )
    .await;
    if kernel {
        assert!(
            ok,
            "the kernel keeps forwarding while the control plane is down"
        );
    } else {
        assert!(!ok, "nothing forwards while the server is down");
    }
    let app = spawn_with(dir, config).await;
    let bob = Client::new(format!("http://{}", app.addr), bob.acct.clone());
    let seen = eventually(
        &client_ns,
        &["curl", "-s", "-m", "3", &format!("http://{node}:8080/")],
    )
    .await;
    assert!(snat.contains(&seen.trim().parse::<std::net::Ipv4Addr>().unwrap()));

    // The connection limit (a service setting, 3000 by default): with 5, the sixth
    // concurrent session is refused while the five are held.
    let alice = Client::new(format!("http://{}", app.addr), alice.acct.clone());
    alice
        .ok(
            "PUT",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            Some(json!({"connection_limit": 5})),
        )
        .await;
    let mut limited = false;
    for _ in 0..30 {
        let (_, out) = run_in(&client_ns, &["python3", "-c", LIMIT, &node, "8080", "5"]).await;
        if out.trim() == "refused" {
            limited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(limited, "the sixth session got through a limit of 5");

    // The endpoint whitelist applies to the consumer's own hosts.
    bob.ok(
        "PUT",
        &format!("/v1/{{p}}/vpc-endpoints/{ep_id}"),
        Some(json!({"whitelist": ["10.0.0.0/8"], "enable_whitelist": true})),
    )
    .await;
    let mut refused = false;
    for _ in 0..50 {
        let (ok, _) = run_in(
            &client_ns,
            &["curl", "-s", "-m", "1", &format!("http://{node}:8080/")],
        )
        .await;
        if !ok {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "a source outside the endpoint whitelist gets through"
    );

    // Deleting the endpoint stops forwarding at once.
    bob.delete(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"))
        .await;
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"), "gone")
        .await;
    let (ok, _) = run_in(
        &client_ns,
        &["curl", "-s", "-m", "1", &format!("http://{node}:8080/")],
    )
    .await;
    assert!(!ok, "a deleted endpoint still forwards");
    app.stop().await;
    drop(guard);
}
