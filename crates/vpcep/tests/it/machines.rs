//! Machines on one box (root): each "machine" is a network namespace with an address on
//! a shared bridge (the underlay; the bridge itself has no address), running its own
//! `vpcep gateway --role … --underlay …` with a namespace prefix of its own; the control
//! plane has a machine of its own too. The test reaches the control plane's API through a
//! forwarder on 127.0.0.1 whose connections are made inside the control plane's machine.
//! Skipped without root, unless `VPCEP_REQUIRE_NETNS` is set (CI).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};
use vpcep_dataplane::substrate::netns::host_ns_name;
use vpcep_dataplane::Netns;

use crate::durability::admin_account;
use crate::netns::{eventually, run_in, HTTP};
use crate::support::Client;

const TOKEN: &str = "node-token-for-machine-tests";
const API_PORT: u16 = 9876;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One simulated machine.
struct Machine {
    name: String,
    /// `compute` or `gateway`.
    role: String,
    /// Its namespace, holding `eth0` on the underlay.
    ns: String,
    underlay: String,
    /// The namespace prefix of its `vpcep` (what it makes is named after it).
    prefix: String,
}

/// A deployment across machines on one box; everything it made goes when it drops.
struct Machines {
    bridge: String,
    cp: Machine,
    nodes: Vec<Machine>,
    children: Vec<Child>,
    /// The `vpcep gateway` of each node, by the node's name.
    gateways: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// The API, through the forwarder.
    base: String,
    /// The control plane's API inside the underlay (what nodes follow).
    url: String,
}

impl Drop for Machines {
    fn drop(&mut self) {
        if let Some(f) = self.forwarder.take() {
            f.abort();
        }
        // Everything running in the machines (their keepalived and conntrackd too), and
        // the routers' HA files.
        for name in self
            .nodes
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
        {
            self.kill_inside(&name);
            let mine = format!("{}-", self.node(&name).prefix);
            for d in std::fs::read_dir("/run/vpcep-ha")
                .into_iter()
                .flatten()
                .flatten()
            {
                if d.file_name().to_string_lossy().starts_with(&mine) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        for c in self
            .children
            .iter_mut()
            .chain(self.gateways.iter_mut().map(|(_, c)| c))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in self.nodes.iter().chain([&self.cp]) {
            // What its node made, until nothing comes back (a last apply may still run).
            if let Ok(netns) = Netns::new(&m.prefix) {
                for _ in 0..20 {
                    let _ = netns.remove_all();
                    if netns.namespaces().is_ok_and(|l| l.is_empty()) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &m.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command run in machine `ns`'s network namespace only. Not `ip netns exec`, which
/// gives the program a mount namespace of its own too: the namespaces it then makes
/// would not be visible (nor enterable) from outside it.
fn in_machine(ns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--");
    cmd
}

/// A TCP connection made inside namespace `ns` (the socket stays there).
fn connect_in(ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let target = File::open(format!("/run/netns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .join()
        .expect("the connecting thread")
    })
}

impl Machines {
    /// The control plane and `nodes` (name, role) as machines on one underlay, or `None`
    /// (skip) without root.
    async fn start(nodes: &[(&str, &str)]) -> Option<Machines> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("m{}x{n}", std::process::id() % 100_000);
        if let Err(e) = Netns::new(&format!("{tag}cp")) {
            assert!(
                std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
                "VPCEP_REQUIRE_NETNS is set, but: {e}"
            );
            eprintln!("skipped: {e}");
            return None;
        }
        let machine = |name: &str, role: &str, last: u8| Machine {
            name: name.to_owned(),
            role: role.to_owned(),
            ns: format!("{tag}-{name}"),
            underlay: format!("10.99.0.{last}"),
            prefix: format!("{tag}{name}"),
        };
        let mut m = Machines {
            bridge: format!("{tag}u"),
            cp: machine("cp", "control", 1),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, (name, role))| machine(name, role, 11 + i as u8))
                .collect(),
            children: Vec::new(),
            gateways: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            forwarder: None,
            base: String::new(),
            url: String::new(),
        };
        ip(&["link", "add", &m.bridge, "type", "bridge"]);
        ip(&["link", "set", &m.bridge, "up"]);
        for (i, mm) in m.nodes.iter().chain([&m.cp]).enumerate() {
            let port = format!("{}p{i}", m.bridge);
            ip(&["netns", "add", &mm.ns]);
            ip(&["-n", &mm.ns, "link", "set", "lo", "up"]);
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &mm.ns,
            ]);
            ip(&["link", "set", &port, "master", &m.bridge, "up"]);
            ip(&[
                "-n",
                &mm.ns,
                "addr",
                "add",
                &format!("{}/24", mm.underlay),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &mm.ns, "link", "set", "eth0", "up"]);
        }
        let cp_addr: SocketAddr = format!("{}:{API_PORT}", m.cp.underlay).parse().unwrap();
        let data = m.dir.path().join("cp");
        let serve = in_machine(&m.cp.ns)
            .args([env!("CARGO_BIN_EXE_vpcep"), "serve"])
            .args(["--listen", &cp_addr.to_string(), "--metrics-listen", "off"])
            .args(["--dataplane", "remote", "--node-token", TOKEN])
            .args(["--substrate", "netns", "--netns-prefix", &m.cp.prefix])
            .arg("--data-dir")
            .arg(&data)
            .env("VPCEP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        m.children.push(serve);
        let url = format!("http://{cp_addr}");
        m.url = url;
        for (name, _) in nodes {
            m.spawn_node(name);
        }
        // The API, for this process, through connections made in the control plane's
        // machine.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        m.base = format!("http://{}", listener.local_addr().unwrap());
        let cp_ns = m.cp.ns.clone();
        m.forwarder = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let ns = cp_ns.clone();
                tokio::spawn(async move {
                    let Ok(Ok(out)) =
                        tokio::task::spawn_blocking(move || connect_in(&ns, cp_addr)).await
                    else {
                        return;
                    };
                    out.set_nonblocking(true).unwrap();
                    let mut out = tokio::net::TcpStream::from_std(out).unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                });
            }
        }));
        // Up when every machine has registered.
        for _ in 0..150 {
            let listed = m.admin(&["node", "list", "--output", "json"]);
            if listed.as_array().is_some_and(|l| l.len() == nodes.len()) {
                return Some(m);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the machines did not all register");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("cp")
    }

    /// `vpcep admin ARGS` on the control plane's store, as JSON.
    fn admin(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_vpcep"))
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .unwrap();
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn account(&self, name: &str) -> Client {
        Client::new(self.base.clone(), admin_account(&self.data_dir(), name))
    }

    /// Starts machine `name`'s `vpcep gateway` (again).
    fn spawn_node(&mut self, name: &str) {
        let mm = self.node(name);
        let node = in_machine(&mm.ns)
            .args([env!("CARGO_BIN_EXE_vpcep"), "gateway"])
            .args([
                "--control-plane",
                &self.url,
                "--token",
                TOKEN,
                "--node",
                name,
            ])
            .args(["--role", &mm.role, "--underlay", &mm.underlay])
            .args(["--substrate", "netns", "--netns-prefix", &mm.prefix])
            .env("VPCEP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.gateways.retain(|(n, _)| n != name);
        self.gateways.push((name.to_owned(), node));
    }

    /// Machine `name` goes dark, as when it loses power: every process in its
    /// namespaces is killed (SIGKILL: its node, keepalived, conntrackd, servers) and its
    /// underlay link goes down; what it made stays, as on a disk.
    fn power_off(&mut self, name: &str) {
        self.kill_inside(name);
        let ns = self.node(name).ns.clone();
        if let Some((_, child)) = self.gateways.iter_mut().find(|(n, _)| n == name) {
            let _ = child.wait();
        }
        ip(&["-n", &ns, "link", "set", "eth0", "down"]);
    }

    /// SIGKILL to every process in machine `name`'s namespaces.
    fn kill_inside(&self, name: &str) {
        use std::os::unix::fs::MetadataExt;
        let mm = self.node(name);
        let mut inodes: Vec<u64> = Netns::new(&mm.prefix)
            .and_then(|n| n.namespaces())
            .unwrap_or_default()
            .iter()
            .chain([&mm.ns])
            .filter_map(|ns| std::fs::metadata(format!("/run/netns/{ns}")).ok())
            .map(|m| m.ino())
            .collect();
        inodes.sort_unstable();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let inside = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| inodes.binary_search(&m.ino()).is_ok());
            if inside && pid != std::process::id() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }

    /// Machine `name` comes back: its link up, its node started again.
    fn power_on(&mut self, name: &str) {
        let ns = self.node(name).ns.clone();
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.spawn_node(name);
    }

    /// Machine `name` dies: its node stops at once and everything on it goes with it
    /// (its namespaces, its underlay link).
    fn kill(&mut self, name: &str) {
        let (_, child) = self.gateways.iter_mut().find(|(n, _)| n == name).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let m = self.node(name);
        if let Ok(netns) = Netns::new(&m.prefix) {
            let _ = netns.remove_all();
        }
        let _ = Command::new("ip").args(["netns", "del", &m.ns]).status();
    }

    fn node(&self, name: &str) -> &Machine {
        self.nodes.iter().find(|m| m.name == name).unwrap()
    }

    /// Starts `python3 -c script ARGS` in namespace `ns` once its machine has made it; it
    /// stops with the machines.
    async fn spawn_py(&mut self, ns: &str, script: &str, args: &[&str]) {
        eventually(ns, &["ip", "-o", "addr", "show", "eth0"]).await;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", script])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

/// A VPC 192.168.0.0/16 with subnet 192.168.1.0/24 and a host at `ip` in it, placed on
/// machine `on`: (vpc, subnet, host).
async fn vpc_with_host(c: &Client, ip: &str, on: &str, name: &str) -> (String, String, Value) {
    let (vpc, sub) = c.network_of("192.168.0.0/16", "192.168.1.0/24").await;
    let host = c
        .ok(
            "POST",
            "/v1/{p}/hosts",
            Some(json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "name": name, "node": on}})),
        )
        .await["host"]
        .clone();
    assert_eq!(host["node"], on, "{host}");
    (vpc, sub, host)
}

/// The namespace of `host` on the machine that holds it.
fn host_ns(m: &Machines, host: &Value) -> String {
    let on = m.node(host["node"].as_str().unwrap());
    host_ns_name(&on.prefix, host["port_id"].as_str().unwrap())
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_joins_hosts_on_two_compute_machines_through_a_gateway_machine_and_a_dead_compute_machine_takes_only_its_hosts(
) {
    let Some(mut m) =
        Machines::start(&[("c1", "compute"), ("c2", "compute"), ("g1", "gateway")]).await
    else {
        return;
    };
    let nodes = m.admin(&["node", "list", "--output", "json"]);
    let roles: Vec<(String, String)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (s(n, "name"), s(n, "role")))
        .collect();
    assert_eq!(
        roles,
        [("c1", "compute"), ("c2", "compute"), ("g1", "gateway")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let alice = m.account("alice");

    // The provider's backend on compute-2, the client on compute-1, in VPCs with the same
    // CIDR; the endpoint's router is on the gateway machine.
    let (pvpc, _, backend) = vpc_with_host(&alice, "192.168.1.40", "c2", "backend").await;
    let backend_ns = host_ns(&m, &backend);
    m.spawn_py(&backend_ns, HTTP, &[]).await;
    let svc = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(
                json!({"vpc_id": pvpc, "port_id": s(&backend, "port_id"), "server_type": "VM",
                "approval_enabled": false,
                "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}]}),
            ),
        )
        .await;
    let svc = s(&svc, "id");
    alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}"),
            "available",
        )
        .await;
    let (cvpc, csub, client) = vpc_with_host(&alice, "192.168.1.50", "c1", "client").await;
    let client_ns = host_ns(&m, &client);
    m.spawn_py(&client_ns, HTTP, &[]).await;
    // A second client of the same subnet, beside the backend's machine.
    let client2 = alice
        .ok(
            "POST",
            "/v1/{p}/hosts",
            Some(json!({"host": {"vpc_id": cvpc, "subnet_id": csub, "ip": "192.168.1.51", "name": "client2", "node": "c2"}})),
        )
        .await["host"]
        .clone();
    let client2_ns = host_ns(&m, &client2);
    let ep = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": svc, "vpc_id": cvpc, "subnet_id": csub})),
        )
        .await;
    let ep = alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoints/{}", s(&ep, "id")),
            "accepted",
        )
        .await;
    let ep_ip = s(&ep, "ip");

    // client (c1) → its subnet's segment → the consumer VPC's router (g1) → the provider
    // VPC's router (g1) → the backend's segment → backend (c2); the backend sees the
    // endpoint's source address in its own VPC, not the client's.
    let url = format!("http://{ep_ip}:8080/");
    let seen = eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    assert!(
        seen.starts_with("198.19."),
        "the backend saw {seen:?}, not an SNAT address"
    );
    // Big enough to need the segments' MTU (1450) to be right.
    let (ok, big) = run_in(
        &client_ns,
        &[
            "python3",
            "-c",
            &format!("import urllib.request; print(len(urllib.request.urlopen('{url}', timeout=5).read()))"),
        ],
    )
    .await;
    assert!(ok, "{big}");

    // One way: the backend does not reach the client, which serves too.
    let (reached, _) = run_in(
        &backend_ns,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://{}:80/", s(&client, "ip")),
        ],
    )
    .await;
    assert!(!reached, "the backend reached into the consumer's VPC");

    // A third VPC (same CIDR, a host on compute-1 beside the client) reaches neither
    // the endpoint nor the backend.
    let (_, _, other) = vpc_with_host(&alice, "192.168.1.60", "c1", "other").await;
    let other_ns = host_ns(&m, &other);
    eventually(&other_ns, &["ip", "-o", "addr", "show", "eth0"]).await;
    for target in [format!("{ep_ip}:8080"), format!("{}:80", s(&backend, "ip"))] {
        let (reached, out) = run_in(
            &other_ns,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://{target}/"),
            ],
        )
        .await;
        assert!(
            !reached || out.is_empty(),
            "a third VPC reached {target}: {out}"
        );
    }
    // Compute-1 dies: its hosts go, and only they; the client on compute-2 still uses
    // the endpoint.
    m.kill("c1");
    assert!(!Path::new("/run/netns").join(&client_ns).exists());
    let seen = eventually(&client2_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    assert!(seen.starts_with("198.19."), "{seen}");

    // The hosts are where they were placed: each on its own machine only.
    assert!(Path::new("/run/netns").join(&backend_ns).exists());
    assert!(!Path::new("/run/netns")
        .join(host_ns_name(&m.node("c1").prefix, &s(&backend, "port_id")))
        .exists());
}

/// Echoes every TCP connection on port 9000, one thread each.
const ECHO: &str = r#"
import socket, threading
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One session: N exchanges of 100 bytes, 50 ms apart; prints `done N`, or where it broke.
const SESSION: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
for i in range(n):
    try:
        s.sendall(b"x" * 100)
        got = b""
        while len(got) < 100:
            d = s.recv(100 - len(got))
            if not d:
                print("closed at", i); sys.exit(1)
            got += d
    except Exception as e:
        print("broken at", i, e); sys.exit(1)
    time.sleep(0.05)
print("done", n)
"#;

/// Starts `SESSION` in `ns` towards `target`: its output when it ends.
fn session(ns: &str, host: &str, exchanges: u32) -> std::thread::JoinHandle<String> {
    let (ns, host) = (ns.to_owned(), host.to_owned());
    std::thread::spawn(move || {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns, "python3", "-c", SESSION, &host, "9000",
            ])
            .arg(exchanges.to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// The state the router of `vpc` on gateway machine `g` is in (`master`, `backup`).
fn ha_state(m: &Machines, g: &str, vpc: &str) -> String {
    let ns = Netns::new(&m.node(g).prefix).unwrap().vpc_ns(vpc);
    std::fs::read_to_string(format!("/run/vpcep-ha/{ns}/state"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_pair_fails_over_keeping_kernel_path_sessions_and_the_dead_one_rejoins_as_standby(
) {
    let Some(mut m) = Machines::start(&[
        ("c1", "compute"),
        ("c2", "compute"),
        ("g1", "gateway"),
        ("g2", "gateway"),
    ])
    .await
    else {
        return;
    };
    let alice = m.account("alice");
    let (pvpc, _, backend) = vpc_with_host(&alice, "192.168.1.40", "c2", "backend").await;
    let backend_ns = host_ns(&m, &backend);
    m.spawn_py(&backend_ns, HTTP, &[]).await;
    m.spawn_py(&backend_ns, ECHO, &[]).await;
    let svc = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(
                json!({"vpc_id": pvpc, "port_id": s(&backend, "port_id"), "server_type": "VM",
                "approval_enabled": false,
                "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"},
                          {"client_port": 9000, "server_port": 9000, "protocol": "TCP"}]}),
            ),
        )
        .await;
    let svc = s(&svc, "id");
    alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}"),
            "available",
        )
        .await;
    let (cvpc, csub, client) = vpc_with_host(&alice, "192.168.1.50", "c1", "client").await;
    let client_ns = host_ns(&m, &client);
    eventually(&client_ns, &["ip", "-o", "addr", "show", "eth0"]).await;
    let ep = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": svc, "vpc_id": cvpc, "subnet_id": csub, "enable_dns": true})),
        )
        .await;
    let ep = alice
        .wait(
            &format!("/v1/{{p}}/vpc-endpoints/{}", s(&ep, "id")),
            "accepted",
        )
        .await;
    let (ep_ip, name) = (
        s(&ep, "ip"),
        ep["dns_names"][0].as_str().unwrap().to_owned(),
    );
    let url = format!("http://{ep_ip}:8080/");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    // The first of the pair forwards; the second stands by.
    assert_eq!(ha_state(&m, "g1", &cvpc), "master");
    assert_eq!(ha_state(&m, "g2", &cvpc), "backup");
    let resolved = eventually(&client_ns, &["dig", "+short", "+time=1", "+tries=2", &name]).await;
    assert_eq!(resolved.trim(), ep_ip);

    // An established kernel-path session while the active gateway machine dies.
    let held = session(&client_ns, &ep_ip, 120);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.power_off("g1");
    let died = std::time::Instant::now();
    loop {
        let (ok, out) = run_in(&client_ns, &["curl", "-s", "--max-time", "1", &url]).await;
        if ok && !out.is_empty() {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(3),
            "no new connection 3 s after the failure"
        );
    }
    eprintln!(
        "failover: a new connection {:?} after the active gateway machine died",
        died.elapsed()
    );
    assert_eq!(ha_state(&m, "g2", &cvpc), "master");
    let (_, resolved) = run_in(&client_ns, &["dig", "+short", "+time=1", "+tries=2", &name]).await;
    assert_eq!(
        resolved.trim(),
        ep_ip,
        "private DNS answers after the failover"
    );
    let out = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out, "done 120", "the session across the failover");

    // The dead machine comes back as standby, and traffic goes on undisturbed.
    let held = session(&client_ns, &ep_ip, 80);
    m.power_on("g1");
    let back = std::time::Instant::now();
    while ha_state(&m, "g1", &cvpc) != "backup" {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "g1 did not rejoin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out, "done 80", "a session while the machine rejoined");
    assert_eq!(ha_state(&m, "g2", &cvpc), "master");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
}
