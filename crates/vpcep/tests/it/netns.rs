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
use vpcep::serve::{Config, ForwardingMode, SubstrateKind};
use vpcep_dataplane::Netns;

use crate::support::{bare_config, spawn_with, Client, TestApp};

/// Owns the namespaces of one test (by prefix) and the programs it started in them.
pub(crate) struct Guard {
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
        // A stopped server's last apply may still be running on a blocking thread (and a
        // failed test's server is still running): remove until nothing comes back.
        let mut quiet = 0;
        for _ in 0..50 {
            if let Err(e) = self.netns.remove_all() {
                eprintln!("cleaning up namespaces: {e}");
            }
            std::thread::sleep(Duration::from_millis(100));
            quiet = match self.netns.namespaces() {
                Ok(left) if left.is_empty() => quiet + 1,
                _ => 0,
            };
            if quiet == 3 {
                return;
            }
        }
        eprintln!("namespaces keep coming back: {:?}", self.netns.namespaces());
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A server on the netns substrate with a unique namespace prefix, or `None` (skip).
pub(crate) async fn netns_app(forwarding: ForwardingMode) -> Option<(TestApp, Arc<Guard>)> {
    netns_app_with(|c| c.forwarding = forwarding).await
}

/// Like [`netns_app`], with the configuration adjusted by `tune`.
pub(crate) async fn netns_app_with(
    tune: impl FnOnce(&mut Config),
) -> Option<(TestApp, Arc<Guard>)> {
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
    let mut config = bare_config(&dir);
    config.substrate = SubstrateKind::Netns;
    config.netns_prefix = prefix;
    tune(&mut config);
    Some((spawn_with(dir, config).await, guard))
}

impl Guard {
    /// Starts `python3 -c script` inside a namespace; it is killed with the guard.
    pub(crate) fn spawn_py(&self, ns: &str, script: &str) {
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
pub(crate) async fn run_in(ns: &str, args: &[&str]) -> (bool, String) {
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
pub(crate) async fn eventually(ns: &str, args: &[&str]) -> String {
    for _ in 0..50 {
        let (ok, out) = run_in(ns, args).await;
        if ok && !out.trim().is_empty() {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{args:?} in {ns} never succeeded");
}

pub(crate) const HTTP: &str = r#"
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

pub(crate) async fn host(c: &Client, vpc: &str, sub: &str, ip: &str, name: &str) -> Value {
    c.ok(
        "POST",
        "/v1/{p}/hosts",
        Some(json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "name": name}})),
    )
    .await["host"]
        .clone()
}

/// The provider side of the scenarios: a VPC 192.168.0.0/16 with a web host at
/// 192.168.0.10 published with approval (and the `fields` given), `consumer` on its
/// whitelist. Returns the service id and the web host's namespace (up).
pub(crate) async fn provider(alice: &Client, consumer: &Client, fields: Value) -> (String, String) {
    let (pvpc, psub, _) = alice.network().await;
    let web = host(alice, &pvpc, &psub, "192.168.0.10", "web").await;
    let web_ns = web["netns"].as_str().unwrap().to_owned();
    eventually(&web_ns, &["ip", "addr", "show", "eth0"]).await;
    let mut body = json!({"vpc_id": pvpc, "port_id": web["port_id"], "server_type": "VM", "approval_enabled": true});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let svc = alice
        .ok("POST", "/v1/{p}/vpc-endpoint-services", Some(body))
        .await;
    let svc_id = svc["id"].as_str().unwrap().to_owned();
    alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            "available",
        )
        .await;
    alice.ok("POST", &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}/permissions/action"), Some(json!({"permissions": [format!("iam:domain::{}", consumer.acct.domain_id)], "action": "add"}))).await;
    (svc_id, web_ns)
}

/// The consumer asks for an endpoint of a service with approval (`extra` fields added):
/// its id, once it waits for acceptance.
async fn request_endpoint(
    bob: &Client,
    svc_id: &str,
    vpc: &str,
    sub: &str,
    extra: Value,
) -> String {
    let mut body = json!({"endpoint_service_id": svc_id, "vpc_id": vpc, "subnet_id": sub});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let ep = bob.ok("POST", "/v1/{p}/vpc-endpoints", Some(body)).await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    bob.wait(
        &format!("/v1/{{p}}/vpc-endpoints/{ep_id}"),
        "pendingAcceptance",
    )
    .await;
    ep_id
}

/// The provider accepts the connection; the endpoint once accepted.
async fn accept(alice: &Client, bob: &Client, svc_id: &str, ep_id: &str) -> Value {
    alice
        .ok(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}/connections/action"),
            Some(json!({"action": "receive", "endpoints": [ep_id]})),
        )
        .await;
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"), "accepted")
        .await
}

/// Two tests running `$run`: one on the userspace path, one with the kernel path.
macro_rules! on_both_paths {
    ($run:ident: $userspace:ident, $kernel:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $userspace() {
            $run(ForwardingMode::Userspace).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kernel() {
            $run(ForwardingMode::Auto).await;
        }
    };
}

on_both_paths!(scenarios: user_guide_scenarios_userspace_path, user_guide_scenarios_kernel_path);

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
    let (svc_id, web_ns) = provider(&alice, &bob, json!({"tcp_proxy": "proxy_open",
        "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}, {"client_port": 8081, "server_port": 81, "protocol": "TCP"}, {"client_port": 5353, "server_port": 53, "protocol": "UDP"}]})).await;

    // Consumer: the same CIDR; its client host even has the same address as the backend.
    let (cvpc, csub, _) = bob.network().await;
    let client = host(&bob, &cvpc, &csub, "192.168.0.10", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let ep_id = request_endpoint(&bob, &svc_id, &cvpc, &csub, json!({})).await;
    let ep = accept(&alice, &bob, &svc_id, &ep_id).await;
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
    // The host is made: it sends 512 KB GSO packets (BIG TCP), which no device of the
    // substrate cuts smaller.
    let (ok, link) = run_in(&client_ns, &["ip", "-d", "link", "show", "eth0"]).await;
    assert!(ok && link.contains("gso_max_size 524280"), "{link}");

    let plain = alice
        .ok(
            "PUT",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            Some(json!({"tcp_proxy": "close"})),
        )
        .await;
    assert_eq!(plain["tcp_proxy"], "close");
    guard.spawn_py(&web_ns, HTTP);
    backend_sees_snat(&client_ns, &node).await;
    // The path an endpoint takes shows in its metrics.
    let path = path_label(forwarding);
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vpcep_gateway_sessions_total") && l.contains(&ep_id))
        .unwrap_or_else(|| panic!("no session counter for the endpoint in {metrics}"));
    assert!(line.contains(&format!("path=\"{path}\"")), "{line}");
    assert!(!line.ends_with(" 0"), "sessions are counted: {line}");
    // The request went one way and the answer the other, and each direction is counted.
    for metric in [
        "vpcep_gateway_bytes_to_backend_total",
        "vpcep_gateway_bytes_to_client_total",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(metric) && l.contains(&ep_id))
            .unwrap_or_else(|| panic!("no {metric} for the endpoint in {metrics}"));
        assert!(!line.ends_with(" 0"), "bytes are counted: {line}");
    }

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
    backend_sees_snat(&client_ns, &node).await;

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

on_both_paths!(own_vpc: endpoint_in_the_services_own_vpc_userspace_path, endpoint_in_the_services_own_vpc_kernel_path);

/// A tenant's endpoint of its own service, in the service's own VPC and subnet: a
/// neighbour of the backend reaches it through the endpoint like any consumer.
async fn own_vpc(forwarding: ForwardingMode) {
    let Some((app, guard)) = netns_app(forwarding).await else {
        return;
    };
    let alice = app.account("alice").await;
    let (vpc, sub, _) = alice.network().await;
    let web = host(&alice, &vpc, &sub, "192.168.0.10", "web").await;
    let web_ns = web["netns"].as_str().unwrap().to_owned();
    let client = host(&alice, &vpc, &sub, "192.168.0.20", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    eventually(&web_ns, &["ip", "addr", "show", "eth0"]).await;
    guard.spawn_py(&web_ns, HTTP);
    let svc = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(json!({"vpc_id": vpc, "port_id": web["port_id"], "server_type": "VM", "approval_enabled": false,
                "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}]})),
        )
        .await;
    let svc_id = svc["id"].as_str().unwrap().to_owned();
    alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
            "available",
        )
        .await;
    let ep = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": svc_id, "vpc_id": vpc, "subnet_id": sub})),
        )
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let ep = alice
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"), "accepted")
        .await;
    let node = ep["ip"].as_str().unwrap().to_owned();
    backend_sees_snat(&client_ns, &node).await;
    let metrics = app.metrics().await;
    let path = path_label(forwarding);
    assert!(
        metrics.contains(&format!("endpoint=\"{ep_id}\",path=\"{path}\"")),
        "{metrics}"
    );
    // Many sessions in a row, each through the endpoint.
    for _ in 0..20 {
        let (ok, out) = run_in(
            &client_ns,
            &["curl", "-s", "-m", "3", &format!("http://{node}:8080/")],
        )
        .await;
        assert!(ok && in_snat_range(&out), "{out}");
    }
    app.stop().await;
    drop(guard);
}

/// The `path` label of an endpoint's metrics when the server runs with `forwarding`.
fn path_label(forwarding: ForwardingMode) -> &'static str {
    if forwarding == ForwardingMode::Auto {
        "kernel"
    } else {
        "userspace"
    }
}

/// Whether the HTTP backend answered with a source address in 198.19.128.0/20.
pub(crate) fn in_snat_range(seen: &str) -> bool {
    let snat: ipnet::Ipv4Net = "198.19.128.0/20".parse().unwrap();
    seen.trim()
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|src| snat.contains(&src))
}

/// Fetches `http://{node}:8080/` from `ns` once the path is up, and checks that the
/// backend saw the endpoint's SNAT address as the source.
pub(crate) async fn backend_sees_snat(ns: &str, node: &str) {
    let seen = eventually(
        ns,
        &["curl", "-s", "-m", "3", &format!("http://{node}:8080/")],
    )
    .await;
    assert!(
        in_snat_range(&seen),
        "the backend sees a source in 198.19.128.0/20, not {seen}"
    );
}

/// A free port on 127.0.0.1 (TCP and UDP both free when this returns).
fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `dig +short` inside a namespace: the answer lines, or "NXDOMAIN"/"REFUSED" etc.
async fn dig(ns: &str, server: &str, name: &str) -> String {
    let (_, out) = run_in(
        ns,
        &[
            "dig",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            name,
            "A",
        ],
    )
    .await;
    if let Some(status) = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_owned())
    {
        if status != "NOERROR" {
            return status;
        }
    }
    let (_, short) = run_in(
        ns,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            name,
            "A",
        ],
    )
    .await;
    short.trim().to_owned()
}

/// Retries `dig` until the answer is `want`.
async fn dig_until(ns: &str, server: &str, name: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        last = dig(ns, server, name).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dig @{server} {name} in {ns}: {last:?}, wanted {want:?}");
}

/// User guide 2.4: a data centre joined to a VPC resolves the storage domain through an
/// interface endpoint to the cloud's DNS service and fetches an object over the route a
/// gateway endpoint adds for 100.125.0.0/16 — with dig and curl, as a user would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_centre_reaches_object_storage() {
    let Some((app, guard)) = netns_app_with(|c| {
        c.dns.cloud = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        c.object_store = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    })
    .await
    else {
        return;
    };
    let cloud = app.config.dns.cloud.unwrap();
    let objects = app.config.object_store.unwrap();
    let op =
        |name: &str, kind, ports: Vec<(u16, u16, vpcep_model::Protocol)>, cidr: Option<&str>| {
            vpcep_store::NewPublicService {
                name: name.into(),
                region: "local-1".into(),
                service_type: kind,
                backend_ip: "127.0.0.1".parse().unwrap(),
                cidr: cidr.map(str::to_owned),
                ports: ports
                    .into_iter()
                    .map(|(c, s, protocol)| vpcep_model::PortMapping {
                        client_port: c,
                        server_port: s,
                        protocol,
                    })
                    .collect(),
                description: String::new(),
            }
        };
    use vpcep_model::{Protocol, ServiceType};
    use vpcep_store::Store;
    let dns_svc = Store::create_public_service(
        &*app.store,
        op(
            "dns",
            ServiceType::Interface,
            vec![
                (53, cloud.port(), Protocol::Udp),
                (53, cloud.port(), Protocol::Tcp),
            ],
            None,
        ),
    )
    .await
    .unwrap();
    let obs_svc = Store::create_public_service(
        &*app.store,
        op(
            "obs",
            ServiceType::Gateway,
            vec![(80, objects.port(), Protocol::Tcp)],
            Some("100.125.0.0/16"),
        ),
    )
    .await
    .unwrap();
    // The operator's storage holds an object.
    let put = reqwest::Client::new()
        .put(format!("http://{objects}/photos/hello.txt"))
        .body("hello from object storage")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let bob = app.account("bob").await;
    let (vpc, sub, _) = bob.network().await;
    // Step 1: an interface endpoint to the DNS service.
    let dns_ep = bob
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": dns_svc.id, "vpc_id": vpc, "subnet_id": sub})),
        )
        .await;
    let dns_ep_id = dns_ep["id"].as_str().unwrap().to_owned();
    let dns_ep = bob
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{dns_ep_id}"), "accepted")
        .await;
    let dns_ip = dns_ep["ip"].as_str().unwrap().to_owned();
    // Step 2: a gateway endpoint to OBS, routed in the VPC's default route table.
    let obs_ep = bob
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": obs_svc.id, "vpc_id": vpc})),
        )
        .await;
    let obs_ep_id = obs_ep["id"].as_str().unwrap().to_owned();
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{obs_ep_id}"), "accepted")
        .await;
    // The data centre, joined to the VPC as over a VPN.
    let idc = bob
        .ok(
            "POST",
            "/v1/{p}/idcs",
            Some(json!({"idc": {"vpc_id": vpc, "cidr": "172.31.0.0/24", "name": "idc"}})),
        )
        .await["idc"]
        .clone();
    let idc_ns = idc["netns"].as_str().unwrap().to_owned();
    assert_eq!(idc["ip"], "172.31.0.1");
    eventually(&idc_ns, &["ip", "addr", "show", "eth0"]).await;

    // Step 3: the storage domain resolves through the DNS endpoint, and the object comes
    // over the gateway endpoint's route.
    let domain = "obs.local-1.vpcep.internal";
    dig_until(&idc_ns, &dns_ip, domain, "100.125.0.1").await;
    dig_until(&idc_ns, &dns_ip, &format!("photos.{domain}"), "100.125.0.1").await;
    dig_until(
        &idc_ns,
        &dns_ip,
        "nothing.vpcep.local-1.internal",
        "NXDOMAIN",
    )
    .await;
    let url = "http://100.125.0.1/photos/hello.txt";
    let body = eventually(&idc_ns, &["curl", "-sf", "-m", "3", url]).await;
    assert_eq!(body, "hello from object storage");
    // Any address of the range reaches the service, as a route to the range should.
    let body = eventually(
        &idc_ns,
        &[
            "curl",
            "-sf",
            "-m",
            "3",
            "http://100.125.7.9/photos/hello.txt",
        ],
    )
    .await;
    assert_eq!(body, "hello from object storage");
    // A VM of the VPC too (its subnet uses the default route table).
    let vm = host(&bob, &vpc, &sub, "192.168.0.30", "vm").await;
    let vm_ns = vm["netns"].as_str().unwrap().to_owned();
    eventually(&vm_ns, &["curl", "-sf", "-m", "3", url]).await;

    // Moving the route to a custom route table (which serves no subnet) takes it away;
    // moving it back restores it.
    let rt = bob
        .ok(
            "POST",
            "/v1/{p}/routetables",
            Some(json!({"routetable": {"name": "custom", "vpc_id": vpc}})),
        )
        .await["routetable"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let default_rt = obs_ep["routetables"][0].as_str().unwrap().to_owned();
    bob.ok(
        "PUT",
        &format!("/v1/{{p}}/vpc-endpoints/{obs_ep_id}/routetables"),
        Some(json!({"routetables": [rt]})),
    )
    .await;
    let shown = bob
        .ok("GET", &format!("/v1/{{p}}/routetables/{rt}"), None)
        .await;
    assert!(
        shown["routetable"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["destination"] == "100.125.0.0/16"),
        "the custom table lists the route: {shown}"
    );
    let mut cut = false;
    for _ in 0..50 {
        let (ok, _) = run_in(&vm_ns, &["curl", "-sf", "-m", "1", url]).await;
        if !ok {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut, "the route stayed in the default table's subnets");
    bob.ok(
        "PUT",
        &format!("/v1/{{p}}/vpc-endpoints/{obs_ep_id}/routetables"),
        Some(json!({"routetables": [default_rt]})),
    )
    .await;
    eventually(&vm_ns, &["curl", "-sf", "-m", "3", url]).await;

    // Deleting the gateway endpoint removes the route.
    bob.delete(&format!("/v1/{{p}}/vpc-endpoints/{obs_ep_id}"))
        .await;
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{obs_ep_id}"), "gone")
        .await;
    let (ok, _) = run_in(&idc_ns, &["curl", "-sf", "-m", "1", url]).await;
    assert!(!ok, "a deleted gateway endpoint still routes");
    bob.delete(&format!("/v1/{{p}}/idcs/{}", idc["id"].as_str().unwrap()))
        .await;
    app.stop().await;
    drop(guard);
}

/// Private names: published in the consumer VPC only once the endpoint works, resolved
/// by its hosts (whose resolv.conf names the VPC resolver), unknown in other VPCs, listed
/// in the DNS v2 view, and gone after deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_names_resolve_in_their_vpc_only() {
    let Some((app, guard)) = netns_app(ForwardingMode::Auto).await else {
        return;
    };
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let (svc_id, web_ns) = provider(
        &alice,
        &bob,
        json!({"ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}]}),
    )
    .await;
    guard.spawn_py(&web_ns, HTTP);

    let (cvpc, csub, _) = bob.network().await;
    let client = host(&bob, &cvpc, &csub, "192.168.0.10", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let ep_id = request_endpoint(&bob, &svc_id, &cvpc, &csub, json!({"enable_dns": true})).await;
    let name = format!("{ep_id}.service.vpcep.local-1.internal");
    // Not yet accepted, not yet working: no name.
    dig_until(&client_ns, "192.168.0.2", &name, "NXDOMAIN").await;
    let ep = accept(&alice, &bob, &svc_id, &ep_id).await;
    let node = ep["ip"].as_str().unwrap().to_owned();
    assert_eq!(ep["dns_names"][0], name.as_str());
    dig_until(&client_ns, "192.168.0.2", &name, &node).await;
    // The host's own resolver configuration finds it: curl by name.
    let seen = eventually(
        &client_ns,
        &["curl", "-s", "-m", "3", &format!("http://{name}:8080/")],
    )
    .await;
    assert!(seen.trim().starts_with("198.19.128."), "{seen}");
    // Another VPC (same CIDR, same resolver address) does not know the name.
    let (ovpc, osub, _) = bob.network().await;
    let other = host(&bob, &ovpc, &osub, "192.168.0.11", "other").await;
    let other_ns = other["netns"].as_str().unwrap().to_owned();
    eventually(&other_ns, &["ip", "addr", "show", "eth0"]).await;
    dig_until(&other_ns, "192.168.0.2", &name, "NXDOMAIN").await;
    // Names vpcep does not own are refused (no upstream configured), never made up.
    dig_until(&client_ns, "192.168.0.2", "example.com", "REFUSED").await;

    // The DNS v2 view lists the record in the VPC's private zone.
    let zones = bob.ok("GET", "/v2/zones?type=private", None).await;
    let zone = zones["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["routers"][0]["router_id"] == cvpc.as_str())
        .unwrap_or_else(|| panic!("no zone for the VPC: {zones}"))
        .clone();
    let sets = bob
        .ok(
            "GET",
            &format!("/v2/zones/{}/recordsets", zone["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(sets["recordsets"][0]["name"], format!("{name}."));
    assert_eq!(sets["recordsets"][0]["records"][0], node.as_str());

    bob.delete(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"))
        .await;
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{ep_id}"), "gone")
        .await;
    dig_until(&client_ns, "192.168.0.2", &name, "NXDOMAIN").await;
    let all = bob.ok("GET", "/v2/recordsets", None).await;
    assert_eq!(all["metadata"]["total_count"], 0, "{all}");
    app.stop().await;
    drop(guard);
}

/// A directory of symlinks to every program on `PATH` except `without`: a machine where
/// those are not installed.
fn path_without(without: &[&str]) -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if without.iter().any(|w| name == *w) {
                continue;
            }
            // The first on PATH wins, as for the shell.
            let _ = std::os::unix::fs::symlink(e.path(), bin.path().join(&name));
        }
    }
    bin
}

/// Runs `vpcep serve --substrate netns` with `PATH` lacking `without`; the exit status
/// and stderr if it stopped, or `None` once it printed its listening line (then stopped).
fn serve_without(without: &[&str], extra: &[&str]) -> Option<(Option<i32>, String)> {
    use std::io::{BufRead, Read};
    let bin = path_without(without);
    let data = tempfile::tempdir().unwrap();
    let prefix = format!(
        "t{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(["serve", "--substrate", "netns", "--listen", "127.0.0.1:0"])
        .args(["--dns-port", "0", "--netns-prefix", &prefix, "--data-dir"])
        .arg(data.path())
        .args(extra)
        .env("PATH", bin.path())
        .env("VPCEP_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut guard = ServeGuard(Some(child), prefix);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    if line.contains("http://") {
        return None;
    }
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    let code = guard.0.take().unwrap().wait().unwrap().code();
    Some((code, err))
}

/// Stops the server (if still running) and removes whatever namespaces its prefix owns.
struct ServeGuard(Option<Child>, String);

impl Drop for ServeGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(n) = Netns::new(&self.1) {
            let _ = n.remove_all();
        }
    }
}

#[test]
fn serve_says_at_start_which_tools_are_missing() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        assert!(
            std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
            "VPCEP_REQUIRE_NETNS is set, but this is not root"
        );
        eprintln!("skipped: the netns substrate needs root");
        return;
    }
    let install = "apt-get install nftables conntrack iproute2";
    // nft is needed whatever the forwarding: VPC route tables are nftables.
    for forwarding in ["auto", "userspace"] {
        let (code, err) = serve_without(&["nft"], &["--forwarding", forwarding])
            .unwrap_or_else(|| panic!("--forwarding {forwarding}: started without nft"));
        // A failure that is not the API's: exit 5, as for every other start-up failure.
        assert_eq!(code, Some(5), "{err}");
        assert!(
            err.contains("missing (not on PATH, or failing): nft;"),
            "{err}"
        );
        assert!(err.contains(install), "{err}");
        assert!(!err.contains("exec of"), "{err}");
    }
    // conntrack only for the kernel path.
    let (code, err) = serve_without(&["conntrack"], &[]).expect("started without conntrack");
    // A failure that is not the API's: exit 5, as for every other start-up failure.
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("missing (not on PATH, or failing): conntrack;"),
        "{err}"
    );
    assert!(err.contains(install), "{err}");
    assert!(
        serve_without(&["conntrack"], &["--forwarding", "userspace"]).is_none(),
        "--forwarding userspace needs no conntrack"
    );
}

/// `vpcep …` as `c`'s account, against its server (no profile file).
fn cli_as(c: &Client, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vpcep"))
        .args(args)
        .env("VPCEP_CONFIG", "/nonexistent/vpcep-profile.json")
        .env("VPCEP_ENDPOINT", &c.base)
        .env("VPCEP_ACCESS_KEY", &c.acct.ak)
        .env("VPCEP_SECRET_KEY", &c.acct.sk)
        .env("VPCEP_PROJECT_ID", &c.acct.project_id)
        .output()
        .unwrap()
}

/// `vpcep host create` returns once the host is up: `host exec` right after it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_create_returns_when_the_host_is_up() {
    let Some((app, _guard)) = netns_app(ForwardingMode::Auto).await else {
        return;
    };
    let alice = app.account("alice").await;
    let (vpc, sub) = alice.network_of("10.7.0.0/16", "10.7.1.0/24").await;
    for i in 0..3 {
        let name = format!("h{i}");
        let out = cli_as(
            &alice,
            &[
                "host", "create", "--vpc", &vpc, "--subnet", &sub, "--name", &name,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let h: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(h["status"], "up", "{h}");
        let out = cli_as(
            &alice,
            &[
                "host", "exec", &name, "--", "ip", "-o", "addr", "show", "eth0",
            ],
        );
        assert!(
            out.status.success(),
            "host exec right after host create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ip = h["ip"].as_str().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(ip), "{out:?}");
    }
    // --no-wait returns what the API answered at once.
    let out = cli_as(
        &alice,
        &[
            "host",
            "create",
            "--vpc",
            &vpc,
            "--subnet",
            &sub,
            "--no-wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(h["status"] == "creating" || h["status"] == "up", "{h}");

    // An unknown host is a host not found (exit 3), not a missing data centre.
    let out = cli_as(&alice, &["host", "exec", "nosuch", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("host nosuch not found"), "{err}");
    assert!(!err.contains("data centre"), "{err}");
}
