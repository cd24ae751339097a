//! Machines on one box (root), built by `vpcep::testbed`: compute and gateway machines
//! joined by VXLAN, a gateway pair failing over. Skipped without root, unless
//! `VPCEP_REQUIRE_NETNS` is set (CI).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use vpcep::testbed::{Testbed, ECHO};
use vpcep_dataplane::substrate::netns::host_ns_name;
use vpcep_dataplane::Netns;

use crate::durability::admin_account;
use crate::netns::{eventually, run_in, HTTP};
use crate::support::Client;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The control plane and `machines` (name, role) on one underlay, or `None` (skip)
/// without root.
async fn start(machines: &[(&str, &str)]) -> Option<Testbed> {
    start_with(machines, &[], &[]).await
}

/// Like [`start`], every node given `node_args` too, the control plane `serve_args`.
async fn start_with(
    machines: &[(&str, &str)],
    node_args: &[&str],
    serve_args: &[&str],
) -> Option<Testbed> {
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
    Some(
        Testbed::start(
            Path::new(env!("CARGO_BIN_EXE_vpcep")),
            &tag,
            machines,
            node_args,
            serve_args,
        )
        .await
        .unwrap(),
    )
}

fn account(m: &Testbed, name: &str) -> Client {
    Client::new(m.base.clone(), admin_account(&m.data_dir(), name))
}

/// Starts `python3 -c script ARGS` in namespace `ns` once its machine has made it; it
/// stops with the testbed.
async fn spawn_py(m: &mut Testbed, ns: &str, script: &str, args: &[&str]) {
    eventually(ns, &["ip", "-o", "addr", "show", "eth0"]).await;
    let mut all = vec!["python3", "-c", script];
    all.extend(args);
    m.spawn_in(ns, &all).unwrap();
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

/// A service of `backend` in `vpc` mapping (client port, server port) over TCP, without
/// approval, once available: its id.
async fn service(c: &Client, vpc: &str, backend: &Value, ports: &[(u16, u16)]) -> String {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(c, s)| json!({"client_port": c, "server_port": s, "protocol": "TCP"}))
        .collect();
    let svc = c
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(
                json!({"vpc_id": vpc, "port_id": s(backend, "port_id"), "server_type": "VM",
                "approval_enabled": false, "ports": ports}),
            ),
        )
        .await;
    let id = s(&svc, "id");
    c.wait(
        &format!("/v1/{{p}}/vpc-endpoint-services/{id}"),
        "available",
    )
    .await;
    id
}

/// An endpoint of service `svc` in subnet `sub` of VPC `vpc` (with the service's private
/// name if `dns`), once accepted.
async fn endpoint(c: &Client, svc: &str, vpc: &str, sub: &str, dns: bool) -> Value {
    let ep = c
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub, "enable_dns": dns})),
        )
        .await;
    c.wait(
        &format!("/v1/{{p}}/vpc-endpoints/{}", s(&ep, "id")),
        "accepted",
    )
    .await
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

/// What the pair tests run across machines: a backend on c2 (HTTP on 80, an echo on
/// 9000) behind a service, a client on c1, and its endpoint.
struct Across {
    pvpc: String,
    cvpc: String,
    client_ns: String,
    ep: Value,
}

/// Builds [`Across`] for `c` on `m`, the endpoint with its private name if `dns`.
async fn across(m: &mut Testbed, c: &Client, dns: bool) -> Across {
    let (pvpc, _, backend) = vpc_with_host(c, "192.168.1.40", "c2", "backend").await;
    let backend_ns = m.host_ns(&backend);
    spawn_py(m, &backend_ns, HTTP, &[]).await;
    spawn_py(m, &backend_ns, ECHO, &[]).await;
    let svc = service(c, &pvpc, &backend, &[(8080, 80), (9000, 9000)]).await;
    let (cvpc, csub, client) = vpc_with_host(c, "192.168.1.50", "c1", "client").await;
    let client_ns = m.host_ns(&client);
    eventually(&client_ns, &["ip", "-o", "addr", "show", "eth0"]).await;
    let ep = endpoint(c, &svc, &cvpc, &csub, dns).await;
    Across {
        pvpc,
        cvpc,
        client_ns,
        ep,
    }
}

/// SIGKILLs the process whose pid is in `pidfile`.
fn kill_by_pidfile(pidfile: &str) -> String {
    let pid = std::fs::read_to_string(pidfile).unwrap().trim().to_owned();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_joins_hosts_on_two_compute_machines_through_a_gateway_machine_and_a_dead_compute_machine_takes_only_its_hosts(
) {
    let Some(mut m) = start(&[("c1", "compute"), ("c2", "compute"), ("g1", "gateway")]).await
    else {
        return;
    };
    let nodes = m.admin(&["node", "list", "--output", "json"]).unwrap();
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
    let alice = account(&m, "alice");

    // The provider's backend on compute-2, the client on compute-1, in VPCs with the same
    // CIDR; the endpoint's router is on the gateway machine.
    let (pvpc, _, backend) = vpc_with_host(&alice, "192.168.1.40", "c2", "backend").await;
    let backend_ns = m.host_ns(&backend);
    spawn_py(&mut m, &backend_ns, HTTP, &[]).await;
    let svc = service(&alice, &pvpc, &backend, &[(8080, 80)]).await;
    let (cvpc, csub, client) = vpc_with_host(&alice, "192.168.1.50", "c1", "client").await;
    let client_ns = m.host_ns(&client);
    spawn_py(&mut m, &client_ns, HTTP, &[]).await;
    // A second client of the same subnet, beside the backend's machine.
    let client2 = alice
        .ok(
            "POST",
            "/v1/{p}/hosts",
            Some(json!({"host": {"vpc_id": cvpc, "subnet_id": csub, "ip": "192.168.1.51", "name": "client2", "node": "c2"}})),
        )
        .await["host"]
        .clone();
    let client2_ns = m.host_ns(&client2);
    let ep = endpoint(&alice, &svc, &cvpc, &csub, false).await;
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
    let other_ns = m.host_ns(&other);
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
    m.destroy("c1");
    assert!(!Path::new("/run/netns").join(&client_ns).exists());
    let seen = eventually(&client2_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    assert!(seen.starts_with("198.19."), "{seen}");

    // The hosts are where they were placed: each on its own machine only.
    assert!(Path::new("/run/netns").join(&backend_ns).exists());
    assert!(!Path::new("/run/netns")
        .join(host_ns_name(
            &m.machine("c1").prefix,
            &s(&backend, "port_id")
        ))
        .exists());
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_pair_fails_over_keeping_kernel_path_sessions_and_the_dead_one_rejoins_as_standby(
) {
    let Some(mut m) = start(&[
        ("c1", "compute"),
        ("c2", "compute"),
        ("g1", "gateway"),
        ("g2", "gateway"),
    ])
    .await
    else {
        return;
    };
    let alice = account(&m, "alice");
    let Across {
        pvpc,
        cvpc,
        client_ns,
        ep,
    } = across(&mut m, &alice, true).await;
    let (ep_ip, name) = (
        s(&ep, "ip"),
        ep["dns_names"][0].as_str().unwrap().to_owned(),
    );
    let url = format!("http://{ep_ip}:8080/");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    // The first of the pair forwards; the second stands by. The routers an endpoint joins
    // are master on the same machine (the machine's gate decides for all of them).
    until("g1 master, g2 standby", 10, || {
        m.ha_state("g1", &cvpc) == "master" && m.ha_state("g2", &cvpc) == "standby"
    })
    .await;
    assert_eq!(m.ha_state("g1", &pvpc), "master");
    assert_eq!(m.ha_state("g2", &pvpc), "standby");
    let resolved = eventually(&client_ns, &["dig", "+short", "+time=1", "+tries=2", &name]).await;
    assert_eq!(resolved.trim(), ep_ip);

    // An established kernel-path session while the active gateway machine dies.
    let held = session(&client_ns, &ep_ip, 120);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.power_off("g1").unwrap();
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
    assert_eq!(m.ha_state("g2", &cvpc), "master");
    assert_eq!(m.ha_state("g2", &pvpc), "master");
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
    m.power_on("g1").unwrap();
    let back = std::time::Instant::now();
    while m.ha_state("g1", &cvpc) != "standby" {
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
    assert_eq!(m.ha_state("g2", &cvpc), "master");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;

    // And back: the machine that rejoined takes over in turn, with the sessions it was
    // sent as standby (not those it held when it died).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = session(&client_ns, &ep_ip, 60);
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.power_off("g2").unwrap();
    let out = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out, "done 60", "a session across the second failover");
    assert_eq!(m.ha_state("g1", &cvpc), "master");
}

/// Waits up to `secs` for `ok`, failing with `what`.
async fn until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let began = std::time::Instant::now();
    while !ok() {
        assert!(
            began.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each machine's (status, pair) as `vpcep admin node list` shows them: ("up"|"down",
/// slot or -1).
fn pairing(m: &Testbed) -> Vec<(String, bool, i64)> {
    let list = m.admin(&["node", "list", "--output", "json"]).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "gateway")
        .map(|n| {
            (
                s(n, "name"),
                n["down"].as_bool().unwrap(),
                n["slot"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The kernel-path sessions to port 9000 that router `vpc` on machine `name` tracks.
fn tracked(m: &Testbed, name: &str, vpc: &str) -> usize {
    let ns = Netns::new(&m.machine(name).prefix).unwrap().vpc_ns(vpc);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--dport",
            "9000",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("ESTABLISHED"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_machine_that_stays_down_gives_its_place_in_the_pair_to_a_spare_which_takes_the_sessions_over(
) {
    let Some(mut m) = start_with(
        &[
            ("c1", "compute"),
            ("c2", "compute"),
            ("g1", "gateway"),
            ("g2", "gateway"),
            ("g3", "gateway"),
        ],
        &[],
        &["--machine-down-after", "3"],
    )
    .await
    else {
        return;
    };
    let alice = account(&m, "alice");
    let Across {
        pvpc,
        cvpc,
        client_ns,
        ep,
    } = across(&mut m, &alice, false).await;
    let ep_ip = s(&ep, "ip");
    let url = format!("http://{ep_ip}:8080/");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    let gateways = |list: &[(&str, bool, i64)]| -> Vec<(String, bool, i64)> {
        list.iter()
            .map(|(n, d, s)| (n.to_string(), *d, *s))
            .collect()
    };
    assert_eq!(
        pairing(&m),
        gateways(&[("g1", false, 0), ("g2", false, 1), ("g3", false, -1)])
    );
    until("g1 master, g2 standby", 10, || {
        m.ha_state("g1", &cvpc) == "master" && m.ha_state("g2", &cvpc) == "standby"
    })
    .await;
    assert_eq!(
        m.ha_state("g3", &cvpc),
        "spare",
        "a spare's routers stand ready"
    );

    // g1 dies and stays down: g2 takes over at once; 3 s later the control plane gives
    // g1's slot to g3, which joins as standby and is sent the sessions.
    let held = session(&client_ns, &ep_ip, 400);
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.power_off("g1").unwrap();
    let died = std::time::Instant::now();
    until("g3 in g1's slot", 15, || {
        pairing(&m) == gateways(&[("g1", true, -1), ("g2", false, 1), ("g3", false, 0)])
    })
    .await;
    let rehomed = died.elapsed();
    until("g3 standby", 10, || m.ha_state("g3", &cvpc) == "standby").await;
    assert_eq!(
        m.ha_state("g2", &cvpc),
        "master",
        "the survivor kept forwarding"
    );
    until("the session on g3", 10, || tracked(&m, "g3", &cvpc) > 0).await;
    eprintln!(
        "re-homed: g3 took g1's slot {rehomed:?} after g1 died, standby with the sessions {:?} after",
        died.elapsed()
    );

    // The standby's keepalived dies: its node starts it again, and it is sent the
    // sessions again.
    let pidfile = format!(
        "/run/vpcep-ha/{}/keepalived.pid",
        Netns::new(&m.machine("g3").prefix).unwrap().vpc_ns(&cvpc)
    );
    let pid = kill_by_pidfile(&pidfile);
    until("g3's keepalived started again", 10, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.trim().is_empty() && p.trim() != pid)
            && m.ha_state("g3", &cvpc) == "standby"
    })
    .await;
    until("the session on g3 again", 10, || {
        tracked(&m, "g3", &cvpc) > 0
    })
    .await;

    // g2 dies too: g3 forwards, and the session started before both failures lives on.
    m.power_off("g2").unwrap();
    let out = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out, "done 400",
        "a session across two failovers and a re-homing"
    );
    assert_eq!(m.ha_state("g3", &cvpc), "master");
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;

    // g1 comes back: now the spare, it takes the slot of g2 (down by then) and stands by.
    m.power_on("g1").unwrap();
    until("g1 in g2's slot", 20, || {
        pairing(&m) == gateways(&[("g1", false, 1), ("g2", true, -1), ("g3", false, 0)])
    })
    .await;
    until("g1 standby", 10, || m.ha_state("g1", &cvpc) == "standby").await;
    assert_eq!(m.ha_state("g3", &cvpc), "master");
    let (ok, _) = run_in(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    assert!(ok, "the endpoint works while g1 joins");

    // The master machine's own keepalived dies: its node closes the gate, and every
    // router moves to g1 together (the consumer's and the provider's on one machine),
    // with the session g1 was sent over its new HA link.
    let held = session(&client_ns, &ep_ip, 200);
    until("the session on g1", 10, || tracked(&m, "g1", &cvpc) > 0).await;
    // The pair settles: g1's own instance is past its start-up delay (2 s on slot 1);
    // before that, g3's restarted one (1 s on slot 0) would lead again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill_by_pidfile(&format!(
        "/run/vpcep-ha/{}-ha/keepalived.pid",
        m.machine("g3").prefix
    ));
    until("every router master on g1", 10, || {
        [&cvpc, &pvpc]
            .iter()
            .all(|v| m.ha_state("g1", v) == "master" && m.ha_state("g3", v) == "standby")
    })
    .await;
    let out = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(out, "done 200", "a session across the gate's death");
    let seen = eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;
    assert!(seen.starts_with("198.19."), "{seen}");
}

/// On the userspace path too, a machine that comes back stays out of the way: the
/// compute machines keep sending the router's traffic to the master, and new sessions
/// keep working while it stands by. (That its routers' bridges go down before its node
/// does anything is the unit test `ha::tests::a_starting_node_takes_its_routers_bridges_down`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_userspace_path_a_rejoining_gateway_machine_takes_no_traffic_from_the_master() {
    let pair = [
        ("c1", "compute"),
        ("c2", "compute"),
        ("g1", "gateway"),
        ("g2", "gateway"),
    ];
    let Some(mut m) = start_with(&pair, &["--forwarding", "userspace"], &[]).await else {
        return;
    };
    let alice = account(&m, "alice");
    let Across {
        cvpc,
        client_ns,
        ep,
        ..
    } = across(&mut m, &alice, false).await;
    let url = format!("http://{}:8080/", s(&ep, "ip"));
    eventually(&client_ns, &["curl", "-s", "--max-time", "3", &url]).await;

    m.power_off("g1").unwrap();
    eventually(&client_ns, &["curl", "-s", "--max-time", "1", &url]).await;
    m.power_on("g1").unwrap();
    let back = std::time::Instant::now();
    while m.ha_state("g1", &cvpc) != "standby" {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "g1 did not rejoin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.ha_state("g2", &cvpc), "master");
    // The compute machine still sends the router's traffic to the master, and a new
    // session through the endpoint works, again and again.
    let segment = Netns::new(&m.machine("c1").prefix).unwrap().vpc_ns(&cvpc);
    let standby = format!("dst {} ", m.machine("g1").underlay);
    for _ in 0..10 {
        let fdb = Command::new("bridge")
            .args(["-n", &segment, "fdb", "show"])
            .output()
            .unwrap();
        let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
        assert!(
            !fdb.lines()
                .any(|l| l.starts_with("fa:16:3f:00:00:01") && l.contains(&standby)),
            "the router's MAC is learned behind the standby: {fdb}"
        );
        let (ok, out) = run_in(&client_ns, &["curl", "-s", "--max-time", "2", &url]).await;
        assert!(ok && !out.is_empty(), "a new session while g1 stands by");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
