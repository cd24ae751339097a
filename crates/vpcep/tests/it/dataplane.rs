//! The data plane in the loopback substrate (no root): traffic really crosses the
//! gateway between 127.N.0.0/16 blocks. The same flows run in real namespaces in
//! `netns.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use vpcep_dataplane::gateway::proxy_v2;

use crate::support::{spawn_app, spawn_with, test_config, Client, TestApp};

/// Whether `check` comes true within about 2 s (tried every 20 ms).
async fn within_2s<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A backend host: TCP echo on :80, a PROXY-v2-reporting server on :81, UDP echo on :53.
pub(crate) async fn backends(ip: Ipv4Addr) {
    let tcp = TcpListener::bind((ip, 80)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = TcpListener::bind((ip, 81)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = proxy.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                let header = loop {
                    let n = s.read(&mut buf[have..]).await.unwrap();
                    have += n;
                    if let Some((h, _)) = proxy_v2::decode(&buf[..have]) {
                        break h;
                    }
                    assert!(n > 0 && have < 4096, "no PROXY header");
                };
                let line = format!(
                    "{} {} {}\n",
                    header.src, header.marker_id, header.endpoint_id
                );
                s.write_all(line.as_bytes()).await.unwrap();
            });
        }
    });
    let udp = UdpSocket::bind((ip, 53)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&buf[..n], peer).await.unwrap();
        }
    });
}

pub(crate) async fn echo(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await??;
    Ok(got)
}

/// The local address of `ip` in a VPC, from the VPC's loopback block.
pub(crate) async fn local(c: &Client, vpc: &str, ip: &str) -> Ipv4Addr {
    let v = c.ok("GET", &format!("/v1/{{p}}/vpcs/{vpc}"), None).await;
    let block = v["vpc"]["loopback_block"].as_str().unwrap().to_owned();
    let n: u8 = block.split('.').nth(1).unwrap().parse().unwrap();
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    Ipv4Addr::new(127, n, o[2], o[3])
}

pub(crate) struct Setup {
    pub(crate) provider: Client,
    pub(crate) consumer: Client,
    pub(crate) service: String,
    pub(crate) endpoint: Value,
    pub(crate) node: Ipv4Addr,
}

/// Provider (alice) with a backend host and a service (no approval, whitelisted consumer bob),
/// consumer with an accepted endpoint: the user guide's 2.3 without the approval step.
pub(crate) async fn setup(app: &TestApp, tcp_proxy: &str, endpoint_extra: Value) -> Setup {
    let (provider, consumer) = (app.account("alice").await, app.account("bob").await);
    setup_between(provider, consumer, tcp_proxy, endpoint_extra).await
}

/// [`setup`] for two accounts of any server (one running as its own process, too).
pub(crate) async fn setup_between(
    provider: Client,
    consumer: Client,
    tcp_proxy: &str,
    endpoint_extra: Value,
) -> Setup {
    let (pvpc, psub, _) = provider.network().await;
    let host = provider
        .ok(
            "POST",
            "/v1/{p}/hosts",
            Some(json!({"host": {"vpc_id": pvpc, "subnet_id": psub, "name": "web"}})),
        )
        .await;
    let backend: Ipv4Addr = host["host"]["local_ip"].as_str().unwrap().parse().unwrap();
    backends(backend).await;
    let svc = provider
        .ok("POST", "/v1/{p}/vpc-endpoint-services", Some(json!({"vpc_id": pvpc, "port_id": host["host"]["port_id"], "server_type": "VM", "approval_enabled": false, "tcp_proxy": tcp_proxy,
            "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}, {"client_port": 8081, "server_port": 81, "protocol": "TCP"}, {"client_port": 8082, "server_port": 82, "protocol": "TCP"}, {"client_port": 5353, "server_port": 53, "protocol": "UDP"}]})))
        .await;
    let service = svc["id"].as_str().unwrap().to_owned();
    provider
        .wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{service}"),
            "available",
        )
        .await;
    provider.ok("POST", &format!("/v1/{{p}}/vpc-endpoint-services/{service}/permissions/action"), Some(json!({"permissions": [format!("iam:domain::{}", consumer.acct.domain_id)], "action": "add"}))).await;
    let (cvpc, csub, _) = consumer.network().await;
    let mut body = json!({"endpoint_service_id": service, "vpc_id": cvpc, "subnet_id": csub});
    for (k, v) in endpoint_extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let ep = consumer
        .ok("POST", "/v1/{p}/vpc-endpoints", Some(body))
        .await;
    let id = ep["id"].as_str().unwrap();
    let endpoint = consumer
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "accepted")
        .await;
    let node = local(&consumer, &cvpc, endpoint["ip"].as_str().unwrap()).await;
    Setup {
        provider,
        consumer,
        service,
        endpoint,
        node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_cross_the_gateway_and_stop_on_delete() {
    let app = spawn_app().await;
    let s = setup(&app, "close", json!({})).await;
    // Both VPCs use 192.168.0.0/16; the endpoint still reaches the provider's backend.
    assert_eq!(
        echo((s.node, 8080).into(), b"hello through vpcep")
            .await
            .unwrap(),
        b"hello through vpcep"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"ping", (s.node, 5353)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    // An unmapped port is closed.
    assert!(TcpStream::connect((s.node, 9999)).await.is_err());

    // Deleting the endpoint ends its live sessions and its listeners at once.
    let mut live = TcpStream::connect((s.node, 8080)).await.unwrap();
    live.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    live.read_exact(&mut one).await.unwrap();
    let id = s.endpoint["id"].as_str().unwrap();
    assert_eq!(
        s.consumer
            .delete(&format!("/v1/{{p}}/vpc-endpoints/{id}"))
            .await
            .status,
        204
    );
    s.consumer
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "gone")
        .await;
    let n = tokio::time::timeout(Duration::from_secs(5), live.read(&mut one))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the live session was closed");
    assert!(
        TcpStream::connect((s.node, 8080)).await.is_err(),
        "the listener is gone"
    );
    let _ = s.provider;
    let _ = s.service;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_carries_client_and_marker() {
    let app = spawn_app().await;
    let s = setup(&app, "proxy_open", json!({})).await;
    let mut c = TcpStream::connect((s.node, 8081)).await.unwrap();
    let local = c.local_addr().unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut line))
        .await
        .unwrap()
        .unwrap();
    let want = format!(
        "{} {} {}\n",
        local,
        s.endpoint["marker_id"],
        s.endpoint["id"].as_str().unwrap()
    );
    assert_eq!(line, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_refuses_ends_the_session_and_is_counted() {
    let app = spawn_app().await;
    let s = setup(&app, "close", json!({})).await;
    let id = s.endpoint["id"].as_str().unwrap();
    // Nothing listens on the backend's port 82: the client's session ends, unanswered.
    assert!(echo((s.node, 8082).into(), b"x").await.is_err());
    let counted = within_2s(|| async {
        app.metrics().await.lines().any(|l| {
            l.starts_with("vpcep_gateway_backend_errors_total")
                && l.contains(id)
                && l.ends_with(" 1")
        })
    })
    .await;
    assert!(counted, "the refused connect is counted once");
    // The endpoint's other ports are untouched.
    assert_eq!(echo((s.node, 8080).into(), b"ok").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_whitelist_and_connection_limit() {
    let app = spawn_app().await;
    let s = setup(
        &app,
        "close",
        json!({"enable_whitelist": true, "whitelist": ["10.0.0.0/8"]}),
    )
    .await;
    // 127.0.0.1 is not on the endpoint's whitelist: accepted by the kernel, closed by us.
    let refused = echo((s.node, 8080).into(), b"x").await;
    assert!(
        refused.is_err(),
        "a source outside the whitelist must not get through"
    );
    let id = s.endpoint["id"].as_str().unwrap();
    s.consumer
        .ok(
            "PUT",
            &format!("/v1/{{p}}/vpc-endpoints/{id}"),
            Some(json!({"whitelist": ["127.0.0.0/8"], "enable_whitelist": true})),
        )
        .await;
    let ok = within_2s(|| async { echo((s.node, 8080).into(), b"y").await.is_ok() }).await;
    assert!(ok, "the new whitelist admits the client");

    // 3000 concurrent sessions work; the 3001st is refused and counted.
    let mut held = Vec::new();
    for i in 0..3000 {
        let mut c = TcpStream::connect((s.node, 8080)).await.unwrap();
        if i % 500 == 0 {
            c.write_all(b"k").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
        }
        held.push(c);
    }
    // Make sure all of them are admitted before the next one.
    for c in held.iter_mut().rev().take(20) {
        c.write_all(b"k").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
    }
    assert!(
        echo((s.node, 8080).into(), b"z").await.is_err(),
        "connection 3001 is refused"
    );
    let first = &mut held[0];
    first.write_all(b"still").await.unwrap();
    let mut b = [0u8; 5];
    first.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"still");
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vpcep_gateway_refused_limit_total") && l.contains(id))
        .unwrap();
    assert!(line.ends_with(" 1"), "{line}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_every_listener_back() {
    let app = spawn_app().await;
    let s = setup(&app, "close", json!({})).await;
    assert!(echo((s.node, 8080).into(), b"before").await.is_ok());
    let (dir, config) = (app.dir.clone(), app.config.clone());
    app.stop().await;
    assert!(TcpStream::connect((s.node, 8080)).await.is_err(), "stopped");
    let _again = spawn_with(dir, config).await;
    let ok = within_2s(|| async { echo((s.node, 8080).into(), b"after").await.is_ok() }).await;
    assert!(ok, "the endpoint forwards again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_node_carries_the_traffic() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = crate::support::test_config(&dir);
    config.dataplane = vpcep::serve::DataplaneMode::Remote;
    config.node_token = Some("node-token-for-tests".into());
    let base = config.loopback_base;
    let app = spawn_with(dir, config).await;
    // Nothing forwards, and nothing becomes accepted, until a node reports.
    let wrong = reqwest::Client::new()
        .get(format!("http://{}/internal/v1/snapshot", app.addr))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // The node protocol: changes since a revision the store never had are not known (410),
    // and a report of changes from a node the control plane has no report of is refused
    // until it reports everything (409).
    let http = reqwest::Client::new();
    let internal = |path: &str| format!("http://{}/internal/v1/{path}", app.addr);
    let unknown = http
        .get(internal("changes?after=1000000&wait=0"))
        .bearer_auth("node-token-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 410);
    let changes = http
        .get(internal("changes?after=0&wait=0"))
        .bearer_auth("node-token-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(changes.status(), 200);
    let delta: Value = changes.json().await.unwrap();
    assert_eq!(delta["from"], 0);
    let report =
        |full: bool| json!({"node": "probe", "revision": 0, "endpoints": {}, "full": full});
    for (full, want) in [(false, 409), (true, 204), (false, 204)] {
        let r = http
            .post(internal("status"))
            .bearer_auth("node-token-for-tests")
            .json(&report(full))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "report with full = {full}");
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = tokio::spawn(vpcep::gateway::run(
        vpcep::gateway::GatewayConfig {
            control_plane: format!("http://{}", app.addr),
            token: "node-token-for-tests".into(),
            name: "gw-1".into(),
            substrate: vpcep::serve::SubstrateKind::Loopback,
            netns_prefix: "unused".into(),
            loopback_base: base,
            forwarding: vpcep::serve::ForwardingMode::Auto,
            dns: Default::default(),
            kernel_resync: vpcep::serve::DEFAULT_KERNEL_RESYNC,
            ca_file: None,
            machine: None,
        },
        rx,
    ));
    let s = setup(&app, "close", json!({})).await;
    assert_eq!(
        echo((s.node, 8080).into(), b"via a gateway node")
            .await
            .unwrap(),
        b"via a gateway node"
    );
    stop.send(true).unwrap();
    node.await.unwrap().unwrap();
    assert!(
        TcpStream::connect((s.node, 8080)).await.is_err(),
        "the node stopped forwarding when it stopped"
    );
}

/// Asks a resolver for `name` A over UDP: the response code and the addresses.
async fn resolve(server: Ipv4Addr, name: &str) -> (String, Vec<Ipv4Addr>) {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::new(7, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = vpcep::serve::LOOPBACK_DNS_PORT;
    for _ in 0..50 {
        sock.send_to(&q.to_vec().unwrap(), (server, port))
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let got = tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await;
        if let Ok(Ok((n, _))) = got {
            let m = Message::from_vec(&buf[..n]).unwrap();
            let ips = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            return (format!("{:?}", m.metadata.response_code), ips);
        }
    }
    panic!("no DNS answer from {server}:{port}");
}

/// Retries until the resolver gives `want` for `name`.
async fn resolves_to(server: Ipv4Addr, name: &str, want: (&str, Vec<Ipv4Addr>)) {
    let mut last = (String::new(), Vec::new());
    for _ in 0..100 {
        last = resolve(server, name).await;
        if last.0 == want.0 && last.1 == want.1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} at {server}: {last:?}, wanted {want:?}");
}

/// Private DNS on loopback: each VPC's resolver (its subnets' .2, mapped, port 10053)
/// answers its own endpoints' names once they are up, NXDOMAIN for names of other VPCs
/// and after deletion, REFUSED for names it does not own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_names_on_loopback() {
    let app = spawn_app().await;
    let s = setup(&app, "close", json!({"enable_dns": true})).await;
    let id = s.endpoint["id"].as_str().unwrap();
    let name = s.endpoint["dns_names"][0].as_str().unwrap().to_owned();
    assert_eq!(name, format!("{id}.service.vpcep.local-1.internal"));
    let ip: Ipv4Addr = s.endpoint["ip"].as_str().unwrap().parse().unwrap();
    let cvpc = s.endpoint["vpc_id"].as_str().unwrap();
    let resolver = local(&s.consumer, cvpc, "192.168.0.2").await;
    resolves_to(resolver, &name, ("NoError", vec![ip])).await;
    resolves_to(resolver, &name.to_uppercase(), ("NoError", vec![ip])).await;
    resolves_to(resolver, "example.com", ("Refused", vec![])).await;
    // The provider's VPC has a resolver too, which does not know the consumer's name.
    let svc = s
        .provider
        .ok(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/{}", s.service),
            None,
        )
        .await;
    let other = local(&s.provider, svc["vpc_id"].as_str().unwrap(), "192.168.0.2").await;
    resolves_to(other, &name, ("NXDomain", vec![])).await;
    // Gone with the endpoint.
    s.consumer
        .delete(&format!("/v1/{{p}}/vpc-endpoints/{id}"))
        .await;
    s.consumer
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "gone")
        .await;
    resolves_to(resolver, &name, ("NXDomain", vec![])).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("vpcep_dns_queries_total{result=\"answered\"}"),
        "{metrics}"
    );
}

/// Names vpcep does not own go to `--dns-upstream` (here a stand-in answering every A
/// question with 203.0.113.7); names under `vpcep.*.internal` never leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_go_to_the_upstream() {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let name = q.queries[0].name().clone();
            log.lock().unwrap().push(name.to_string());
            let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
            r.metadata.recursion_available = true;
            r.add_query(q.queries[0].clone());
            r.answers.push(Record::from_rdata(
                name,
                30,
                RData::A(A::new(203, 0, 113, 7)),
            ));
            let _ = upstream.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir);
    config.dns.upstream = Some(upstream_addr);
    let app = spawn_with(dir, config).await;
    let alice = app.account("alice").await;
    let (vpc, _, _) = alice.network().await;
    let resolver = local(&alice, &vpc, "192.168.0.2").await;
    resolves_to(
        resolver,
        "www.example.com",
        ("NoError", vec![Ipv4Addr::new(203, 0, 113, 7)]),
    )
    .await;
    resolves_to(
        resolver,
        "nobody.service.vpcep.local-1.internal",
        ("NXDomain", vec![]),
    )
    .await;
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|n| n.starts_with("www.example.com")),
        "{asked:?}"
    );
    assert!(
        !asked.iter().any(|n| n.contains("vpcep")),
        "a name of the private zone left the node: {asked:?}"
    );
}

/// The DNS v2 view pages and filters as the DNS API does: zones in the order of their
/// first name, record sets by zone then age, totals before paging, 404s that tell a
/// missing zone from a record set not in it, nothing of another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_view_pages_and_filters() {
    let app = spawn_app().await;
    let (alice, bob) = (app.account("alice").await, app.account("bob").await);
    let (svc1, _, _) = alice.service(false, 8080).await;
    let (svc2, _, _) = alice.service(false, 8081).await;
    let (vpc_a, sub_a, _) = alice.network().await;
    let (vpc_b, sub_b, _) = alice.network().await;
    let mut ids = Vec::new();
    // In this order: a name of VPC a, one of VPC b, a second one of VPC a.
    for (svc, vpc, sub, dns) in [
        (&svc1, &vpc_a, &sub_a, true),
        (&svc1, &vpc_b, &sub_b, true),
        (&svc2, &vpc_a, &sub_a, true),
        (&svc2, &vpc_b, &sub_b, false),
    ] {
        let body =
            json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub, "enable_dns": dns});
        let ep = alice.ok("POST", "/v1/{p}/vpc-endpoints", Some(body)).await;
        let id = ep["id"].as_str().unwrap().to_owned();
        alice
            .wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "accepted")
            .await;
        ids.push(id);
    }
    let (e1, e2, e3) = (&ids[0], &ids[1], &ids[2]);
    let listed = |v: &Value, key: &str| -> (Vec<String>, i64) {
        let items = v[key].as_array().unwrap_or_else(|| panic!("{v}"));
        let names = items
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        (names, v["metadata"]["total_count"].as_i64().unwrap())
    };

    let zones = alice.ok("GET", "/v2/zones?type=private", None).await;
    let (zone_ids, total) = listed(&zones, "zones");
    assert_eq!(total, 2);
    let (za, zb) = (zone_ids[0].clone(), zone_ids[1].clone());
    assert_eq!(zones["zones"][0]["routers"][0]["router_id"], vpc_a.as_str());
    assert_eq!(zones["zones"][0]["record_num"], 2);
    assert_eq!(zones["zones"][1]["routers"][0]["router_id"], vpc_b.as_str());
    assert_eq!(zones["zones"][1]["record_num"], 1);
    for (query, want, total) in [
        ("type=private&limit=1&offset=1", vec![zb.clone()], 2),
        ("type=private&limit=0", vec![], 2),
        (&format!("type=private&id={zb}"), vec![zb.clone()], 1),
        (
            "type=private&name=VPCEP.local-1.internal.",
            vec![za.clone(), zb.clone()],
            2,
        ),
        ("type=private&name=nope", vec![], 0),
        ("type=public", vec![], 0),
    ] {
        let got = alice.ok("GET", &format!("/v2/zones?{query}"), None).await;
        assert_eq!(listed(&got, "zones"), (want, total), "{query}");
    }
    let shown = alice.ok("GET", &format!("/v2/zones/{zb}"), None).await;
    assert_eq!(
        (shown["id"].as_str(), shown["record_num"].as_i64()),
        (Some(zb.as_str()), Some(1))
    );

    let sets = alice
        .ok("GET", &format!("/v2/zones/{za}/recordsets"), None)
        .await;
    assert_eq!(
        listed(&sets, "recordsets"),
        (vec![e1.clone(), e3.clone()], 2)
    );
    assert_eq!(sets["recordsets"][0]["zone_id"], za.as_str());
    let sets = alice
        .ok(
            "GET",
            &format!("/v2/zones/{za}/recordsets?limit=1&offset=1"),
            None,
        )
        .await;
    assert_eq!(listed(&sets, "recordsets"), (vec![e3.clone()], 2));
    let sets = alice
        .ok("GET", &format!("/v2/zones/{za}/recordsets?type=AAAA"), None)
        .await;
    assert_eq!(listed(&sets, "recordsets"), (vec![], 0));
    // All record sets: by zone (a's two, then b's), although e2 is older than e3.
    for (query, want, total) in [
        ("", vec![e1.clone(), e3.clone(), e2.clone()], 3),
        ("?limit=2&offset=1", vec![e3.clone(), e2.clone()], 3),
        (&format!("?name={}", e2.to_uppercase()), vec![e2.clone()], 1),
        (
            "?status=active&type=a",
            vec![e1.clone(), e3.clone(), e2.clone()],
            3,
        ),
        ("?status=PENDING_CREATE", vec![], 0),
        ("?zone_type=public", vec![], 0),
    ] {
        let got = alice
            .ok("GET", &format!("/v2/recordsets{query}"), None)
            .await;
        assert_eq!(listed(&got, "recordsets"), (want, total), "{query}");
    }
    let one = alice
        .ok("GET", &format!("/v2/zones/{zb}/recordsets/{e2}"), None)
        .await;
    assert_eq!(one["zone_id"], zb.as_str());
    assert!(one["name"].as_str().unwrap().starts_with(e2.as_str()));

    for (who, path, status, code) in [
        (
            &alice,
            format!("/v2/zones/{za}/recordsets/{e2}"),
            404,
            "DNS.0305",
        ),
        (
            &alice,
            format!("/v2/zones/{za}/recordsets/{}", ids[3]),
            404,
            "DNS.0305",
        ),
        (
            &alice,
            format!("/v2/zones/{}", "0".repeat(32)),
            404,
            "DNS.0101",
        ),
        (&bob, format!("/v2/zones/{za}"), 404, "DNS.0101"),
        (&bob, format!("/v2/zones/{za}/recordsets"), 404, "DNS.0101"),
        (
            &bob,
            format!("/v2/zones/{za}/recordsets/{e1}"),
            404,
            "DNS.0101",
        ),
        (
            &alice,
            "/v2/zones?type=private&limit=501".to_owned(),
            400,
            "DNS.0303",
        ),
        (&alice, "/v2/zones?type=other".to_owned(), 400, "DNS.0303"),
        (
            &alice,
            "/v2/recordsets?offset=-1".to_owned(),
            400,
            "DNS.0303",
        ),
        (
            &alice,
            "/v2/recordsets?zone_type=public&limit=x".to_owned(),
            400,
            "DNS.0303",
        ),
        (
            &alice,
            format!("/v2/zones/{za}/recordsets?limit=600"),
            400,
            "DNS.0303",
        ),
    ] {
        let r = who.get(&path).await;
        assert_eq!((r.status, r.code()), (status, code), "{path}: {}", r.body);
    }
    let theirs = bob.ok("GET", "/v2/zones?type=private", None).await;
    assert_eq!(listed(&theirs, "zones"), (vec![], 0));
    let theirs = bob.ok("GET", "/v2/recordsets", None).await;
    assert_eq!(listed(&theirs, "recordsets"), (vec![], 0));
}
