//! The kernel path at scale and under repair (root only, like `netns`): a change is sent
//! as the elements it adds and removes, never as a rewritten table; a table, route or
//! element changed by hand comes back at the next resync; a deleted endpoint leaves
//! nothing behind; an endpoint's unmapped ports lead nowhere.

use std::time::Duration;

use serde_json::{json, Value};
use vpcep::serve::ForwardingMode;
use vpcep_store::Store;

use crate::netns::{
    backend_sees_snat, eventually, host, netns_app, netns_app_with, provider, run_in, HTTP,
};
use crate::support::{Client, TestApp};

/// The namespace of a VPC of `app` (the netns substrate's naming).
fn vpc_ns(app: &TestApp, vpc: &str) -> String {
    let id8: String = vpc.chars().filter(|c| *c != '-').take(8).collect();
    format!("{}-v-{id8}", app.config.netns_prefix)
}

/// The number of times the node rewrote a kernel-path namespace whole.
async fn rewrites(app: &TestApp) -> u64 {
    let metrics = app.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("vpcep_kernel_rewrites_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no vpcep_kernel_rewrites_total in {metrics}"))
}

/// Waits until every endpoint of `c` is accepted; their ids and addresses.
async fn all_accepted(c: &Client, n: usize) -> Vec<(String, String)> {
    let mut last = Value::Null;
    for _ in 0..600 {
        let list = c.ok("GET", "/v1/{p}/vpc-endpoints?limit=1000", None).await;
        let eps = list["endpoints"].as_array().cloned().unwrap_or_default();
        if eps.len() == n && eps.iter().all(|e| e["status"] == "accepted") {
            return eps
                .iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap().to_owned(),
                        e["ip"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        }
        last = list;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} endpoints never all accepted; last seen: {last}");
}

/// Deletes an endpoint and waits until it is gone.
async fn delete_endpoint(c: &Client, id: &Value) {
    let path = format!("/v1/{{p}}/vpc-endpoints/{}", id.as_str().unwrap());
    c.ok("DELETE", &path, None).await;
    c.wait(&path, "gone").await;
}

/// `nft list …` of our table inside a namespace (empty when it fails).
async fn nft_list(ns: &str, what: &[&str]) -> String {
    let mut args = vec!["nft", "list"];
    args.extend_from_slice(what);
    run_in(ns, &args).await.1
}

/// Retries `check` until it holds (a resync runs every second in these tests).
async fn within_5s(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 5 s");
}

const PLAIN: &str = r#"{"approval_enabled": false, "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_more_endpoint_among_300_is_added_without_rewriting_the_table() {
    let Some((app, guard)) = netns_app(ForwardingMode::Auto).await else {
        return;
    };
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    Store::set_quota(&*app.store, "bob".into(), None, Some(400))
        .await
        .unwrap();
    let (svc_id, web_ns) = provider(&alice, &bob, serde_json::from_str(PLAIN).unwrap()).await;
    guard.spawn_py(&web_ns, HTTP);
    // Room for 1,000 endpoints.
    let (vpc, sub) = bob.network_of("10.0.0.0/16", "10.0.0.0/22").await;
    let client = host(&bob, &vpc, &sub, "10.0.3.200", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let create = |ip: String| {
        let bob = bob.clone();
        let body =
            json!({"endpoint_service_id": svc_id, "vpc_id": vpc, "subnet_id": sub, "port_ip": ip});
        async move { bob.ok("POST", "/v1/{p}/vpc-endpoints", Some(body)).await }
    };
    for i in 0..300u32 {
        create(format!("10.0.{}.{}", 1 + (i + 10) / 256, (i + 10) % 256)).await;
    }
    all_accepted(&bob, 300).await;
    let before = rewrites(&app).await;
    let last = create("10.0.3.100".into()).await;
    let eps = all_accepted(&bob, 301).await;
    assert_eq!(
        rewrites(&app).await,
        before,
        "the 301st endpoint was applied by rewriting a namespace"
    );
    // All 301 are elements of one table, and traffic flows through the first and the last.
    let ns = vpc_ns(&app, &vpc);
    let listed = nft_list(&ns, &["map", "ip", "vpcep", "mark_of"]).await;
    assert_eq!(listed.matches(" . tcp . 8080 : ").count(), 301, "{listed}");
    assert!(eps.iter().any(|(id, _)| *id == last["id"]));
    backend_sees_snat(&client_ns, "10.0.1.10").await;
    backend_sees_snat(&client_ns, "10.0.3.100").await;
    app.stop().await;
    drop(guard);
}

/// Appends what it receives on UDP port 9999 to the file given as its argument.
const UDP_TRAP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9999))
while True:
    d, a = s.recvfrom(100)
    open(sys.argv[1], "ab").write(d + b"\n")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_a_deleted_endpoint_leaves_nothing_behind() {
    let Some((app, guard)) = netns_app_with(|c| c.kernel_resync = Duration::from_secs(1)).await
    else {
        return;
    };
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let (svc_id, web_ns) = provider(&alice, &bob, serde_json::from_str(PLAIN).unwrap()).await;
    guard.spawn_py(&web_ns, HTTP);
    let (cvpc, csub, _) = bob.network().await;
    let client = host(&bob, &cvpc, &csub, "192.168.0.20", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let mut eps = Vec::new();
    for ip in ["192.168.0.50", "192.168.0.51"] {
        let body = json!({"endpoint_service_id": svc_id, "vpc_id": cvpc, "subnet_id": csub, "port_ip": ip});
        eps.push(bob.ok("POST", "/v1/{p}/vpc-endpoints", Some(body)).await);
    }
    all_accepted(&bob, 2).await;
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    let ns = vpc_ns(&app, &cvpc);
    // The bridge answers ARP for endpoint addresses at once (the kernel's default for
    // proxied answers is a random delay of up to 0.8 s, a new endpoint's first
    // connection would wait for it).
    let bridge = format!(
        "br-{}",
        csub.chars()
            .filter(|c| *c != '-')
            .take(8)
            .collect::<String>()
    );
    let delay = format!("/proc/sys/net/ipv4/neigh/{bridge}/proxy_delay");
    assert_eq!(run_in(&ns, &["cat", &delay]).await.1.trim(), "0");

    // An unmapped port of the endpoint is not translated and goes nowhere, even where the
    // provider's space has a host at the endpoint's own address.
    let (pvpc, psub) = {
        let svc = alice
            .ok(
                "GET",
                &format!("/v1/{{p}}/vpc-endpoint-services/{svc_id}"),
                None,
            )
            .await;
        let sub = alice.ok("GET", "/v1/{p}/subnets", None).await["subnets"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (svc["vpc_id"].as_str().unwrap().to_owned(), sub)
    };
    let trap = host(&alice, &pvpc, &psub, "192.168.0.50", "trap").await;
    let trap_ns = trap["netns"].as_str().unwrap().to_owned();
    eventually(&trap_ns, &["ip", "addr", "show", "eth0"]).await;
    let seen = tempfile::NamedTempFile::new().unwrap();
    let seen_path = seen.path().display().to_string();
    let trap_script = format!("import sys; sys.argv = ['trap', {seen_path:?}]\n{UDP_TRAP}");
    guard.spawn_py(&trap_ns, &trap_script);
    // The trap answers its own neighbours (so it listens), but nothing from the consumer.
    let probe = "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(sys.argv[2].encode(), (sys.argv[1], 9999))";
    within_5s("the trap listens", async || {
        run_in(
            &web_ns,
            &["python3", "-c", probe, "192.168.0.50", "neighbour"],
        )
        .await;
        std::fs::read_to_string(seen.path())
            .unwrap_or_default()
            .contains("neighbour")
    })
    .await;
    for _ in 0..5 {
        run_in(
            &client_ns,
            &["python3", "-c", probe, "192.168.0.50", "consumer"],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = std::fs::read_to_string(seen.path()).unwrap();
    assert!(!got.contains("consumer"), "an unmapped port crossed: {got}");

    // Drift: a rule, an element and a route deleted by hand come back at the next resync.
    let before = rewrites(&app).await;
    let (_, chain) = run_in(
        &ns,
        &["nft", "-a", "list", "chain", "ip", "vpcep", "ep_dnat"],
    )
    .await;
    let handle = chain
        .lines()
        .find(|l| l.contains("dnat ip to"))
        .and_then(|l| l.rsplit("handle ").next())
        .unwrap_or_else(|| panic!("no DNAT rule in {chain}"))
        .trim()
        .to_owned();
    run_in(
        &ns,
        &[
            "nft", "delete", "rule", "ip", "vpcep", "ep_dnat", "handle", &handle,
        ],
    )
    .await;
    run_in(
        &ns,
        &[
            "nft",
            "delete",
            "element",
            "ip",
            "vpcep",
            "mark_of",
            "{ 192.168.0.51 . tcp . 8080 }",
        ],
    )
    .await;
    run_in(
        &ns,
        &["ip", "route", "del", "192.168.0.50/32", "proto", "199"],
    )
    .await;
    within_5s("the DNAT rule is back", async || {
        nft_list(&ns, &["chain", "ip", "vpcep", "ep_dnat"])
            .await
            .contains("dnat ip to")
    })
    .await;
    within_5s("the element is back", async || {
        nft_list(&ns, &["map", "ip", "vpcep", "mark_of"])
            .await
            .contains("192.168.0.51 . tcp . 8080")
    })
    .await;
    within_5s("the route is back", async || {
        run_in(&ns, &["ip", "route", "show", "proto", "199"])
            .await
            .1
            .contains("192.168.0.50")
    })
    .await;
    // The repair was a rewrite, and it is counted (once the resync has finished).
    within_5s("the rewrite is counted", async || {
        rewrites(&app).await > before
    })
    .await;
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    backend_sees_snat(&client_ns, "192.168.0.51").await;

    // A deleted endpoint leaves no element, set, chain or route behind; the last one takes
    // the table with it.
    let marker = eps[0]["marker_id"].as_u64().unwrap();
    delete_endpoint(&bob, &eps[0]["id"]).await;
    let table = nft_list(&ns, &["table", "ip", "vpcep"]).await;
    for gone in [format!("{marker:#010x}"), "192.168.0.50 ".into()] {
        assert!(!table.contains(&gone), "{gone} left in {table}");
    }
    assert!(table.contains("192.168.0.51 . tcp . 8080"), "{table}");
    let (_, routes) = run_in(&ns, &["ip", "route", "show", "proto", "199"]).await;
    assert!(!routes.contains("192.168.0.50"), "{routes}");
    delete_endpoint(&bob, &eps[1]["id"]).await;
    let (has_table, _) = run_in(&ns, &["nft", "list", "table", "ip", "vpcep"]).await;
    assert!(!has_table, "the table outlives its last endpoint");
    app.stop().await;
    drop(guard);
}

/// One endpoint at 192.168.0.50 (port 8080 to an HTTP backend) and a client host in its
/// VPC, for the restarts from one path onto the other: (consumer VPC, subnet, client's
/// namespace).
async fn one_endpoint(app: &TestApp, guard: &crate::netns::Guard) -> (String, String, String) {
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let (svc_id, web_ns) = provider(&alice, &bob, serde_json::from_str(PLAIN).unwrap()).await;
    guard.spawn_py(&web_ns, HTTP);
    let (cvpc, csub, _) = bob.network().await;
    let client = host(&bob, &cvpc, &csub, "192.168.0.20", "client").await;
    let client_ns = client["netns"].as_str().unwrap().to_owned();
    let body = json!({"endpoint_service_id": svc_id, "vpc_id": cvpc, "subnet_id": csub, "port_ip": "192.168.0.50"});
    bob.ok("POST", "/v1/{p}/vpc-endpoints", Some(body)).await;
    all_accepted(&bob, 1).await;
    (cvpc, csub, client_ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_onto_the_kernel_path_takes_the_userspace_paths_local_routes_away() {
    let Some((app, guard)) = netns_app(ForwardingMode::Userspace).await else {
        return;
    };
    let (cvpc, csub, client_ns) = one_endpoint(&app, &guard).await;
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    // The userspace path holds the endpoint's address on the subnet's bridge (a local
    // route of its own); the kernel path must take it off, or the router would answer
    // for it itself (and nothing listens there any more).
    let ns = vpc_ns(&app, &cvpc);
    let locals = [
        "ip", "-o", "route", "show", "table", "local", "proto", "198",
    ];
    let (_, routes) = run_in(&ns, &locals).await;
    assert!(routes.contains("192.168.0.50 dev br-"), "{routes}");
    let (dir, mut config) = (app.dir.clone(), app.config.clone());
    app.stop().await;
    // A stop hands the address back; a userspace path that was killed leaves it.
    let bridge = format!(
        "br-{}",
        csub.chars()
            .filter(|c| *c != '-')
            .take(8)
            .collect::<String>()
    );
    let add = "ip route add local 192.168.0.50/32 table local proto 198 dev";
    let mut leftover: Vec<&str> = add.split(' ').collect();
    leftover.push(&bridge);
    run_in(&ns, &leftover).await;
    assert!(run_in(&ns, &locals).await.1.contains("192.168.0.50"));
    config.forwarding = ForwardingMode::Auto;
    let app = crate::support::spawn_with(dir, config).await;
    within_5s("the address leaves the bridge", async || {
        !run_in(&ns, &locals).await.1.contains("192.168.0.50")
    })
    .await;
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("path=\"kernel\""), "{metrics}");
    app.stop().await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_onto_the_userspace_path_clears_the_kernel_path_and_its_sessions() {
    let Some((app, guard)) = netns_app(ForwardingMode::Auto).await else {
        return;
    };
    let (cvpc, _, client_ns) = one_endpoint(&app, &guard).await;
    // A session through the kernel path leaves its translation in conntrack (marked).
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    let ns = vpc_ns(&app, &cvpc);
    let marked = async |ns: &str| {
        run_in(ns, &["conntrack", "-L", "-d", "192.168.0.50"])
            .await
            .1
            .lines()
            .filter(|l| l.contains("mark=") && !l.contains("mark=0 "))
            .count()
    };
    assert!(marked(&ns).await > 0, "no marked conntrack entry");
    let table = ["nft", "-t", "list", "table", "ip", "vpcep"];
    assert!(run_in(&ns, &table).await.0);
    let (dir, mut config) = (app.dir.clone(), app.config.clone());
    app.stop().await;
    config.forwarding = ForwardingMode::Userspace;
    let app = crate::support::spawn_with(dir, config).await;
    within_5s("the kernel path's table leaves", async || {
        !run_in(&ns, &table).await.0
    })
    .await;
    within_5s("the kernel path's sessions end with it", async || {
        marked(&ns).await == 0
    })
    .await;
    backend_sees_snat(&client_ns, "192.168.0.50").await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("path=\"userspace\""), "{metrics}");
    app.stop().await;
    drop(guard);
}
