//! Replicas of one PostgreSQL database (a throwaway cluster this test starts): a write
//! on one is read on the other, the endpoint quota holds across both, exactly one runs
//! the controller, and when that one is killed (SIGKILL) in the middle of writes, nothing
//! acknowledged is lost, the other takes over, and a gateway node that followed the
//! killed one moves to the other. Skipped without PostgreSQL, unless
//! `VPCEP_REQUIRE_POSTGRES` is set (CI), which makes a skip a failure.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vpcep_store::{Database, SqlStore, Store};

use crate::durability::{start_with, Proc};
use crate::support::{Account, Client};

const TOKEN: &str = "node-token-for-cluster-tests";

/// A throwaway PostgreSQL cluster, or `None` (skip) where there is none.
pub(crate) fn postgres() -> Option<vpcep_testpg::Cluster> {
    match vpcep_testpg::Cluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(
                std::env::var_os("VPCEP_REQUIRE_POSTGRES").is_none(),
                "VPCEP_REQUIRE_POSTGRES is set, but: {e}"
            );
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A `vpcep serve` replica process, killed (SIGKILL) when dropped.
struct Replica {
    _proc: Proc,
    url: String,
}

impl Replica {
    fn start(database: &str, dir: &Path, name: &str) -> Replica {
        let (proc_, url) = start_with(
            dir,
            &[
                "--database",
                database,
                "--dataplane",
                "remote",
                "--node-token",
                TOKEN,
                "--replica-name",
                name,
            ],
        );
        Replica { _proc: proc_, url }
    }
}

/// A new database in `pg`, an operator's handle on it (whose master key, in `dir`, every
/// replica must share), and an account made through it.
async fn database_with_account(
    pg: &vpcep_testpg::Cluster,
    name: &str,
    dir: &Path,
) -> (String, SqlStore, Account) {
    let database = pg.create_database(name).unwrap();
    let admin = SqlStore::open(&Database::Postgres {
        url: database.clone(),
        key_dir: dir.to_owned(),
    })
    .await
    .unwrap();
    let a = admin
        .create_account("alice".into(), "local-1".into())
        .await
        .unwrap();
    let acct = Account {
        domain_id: a.domain_id,
        project_id: a.project_id,
        ak: a.access_key,
        sk: a.secret_key,
        password: a.password,
    };
    (database, admin, acct)
}

/// The replica that holds the controller lease, once exactly one says so.
async fn leader(store: &SqlStore) -> String {
    for _ in 0..100 {
        let leading: Vec<String> = Store::replicas(store)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.leader && r.seen_secs_ago < 5.0)
            .map(|r| r.name)
            .collect();
        if leading.len() == 1 {
            return leading[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no single replica leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_database_and_one_takes_over_the_controller() {
    let Some(pg) = postgres() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The operator's handle makes the account, and the master key every replica shares,
    // before any replica runs.
    let (database, admin, acct) = database_with_account(&pg, "replicas", dir_a.path()).await;
    std::fs::copy(
        dir_a.path().join("master.key"),
        dir_b.path().join("master.key"),
    )
    .unwrap();
    let mut replicas = vec![
        Some(Replica::start(&database, dir_a.path(), "a")),
        Some(Replica::start(&database, dir_b.path(), "b")),
    ];
    let url = |r: &Option<Replica>| r.as_ref().unwrap().url.clone();
    let clients = [
        Client::new(url(&replicas[0]), acct.clone()),
        Client::new(url(&replicas[1]), acct.clone()),
    ];

    // A write on one is read on the next request to the other.
    let vpc = clients[0]
        .ok(
            "POST",
            "/v1/{p}/vpcs",
            Some(json!({"vpc": {"name": "v", "cidr": "10.0.0.0/16"}})),
        )
        .await;
    let id = vpc["vpc"]["id"].as_str().unwrap();
    assert_eq!(
        clients[1].get(&format!("/v1/{{p}}/vpcs/{id}")).await.status,
        200
    );

    // Exactly one leads, and the gateway node follows it first.
    let lead = leader(&admin).await;
    let (l, other) = if lead == "a" { (0, 1) } else { (1, 0) };
    let gw_dir = tempfile::tempdir().unwrap();
    let base = crate::support::test_config(&gw_dir).loopback_base;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let node = tokio::spawn(vpcep::gateway::run(
        vpcep::gateway::GatewayConfig {
            control_plane: format!("{},{}", url(&replicas[l]), url(&replicas[other])),
            token: TOKEN.into(),
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

    // 60 endpoint creates at once, split over both replicas, stop exactly at the quota.
    admin
        .set_quota("alice".into(), None, Some(25))
        .await
        .unwrap();
    let (svc, vpc, sub) = clients[other].service(false, 80).await;
    let body = json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub});
    let mut creates = Vec::new();
    for i in 0..60 {
        let (c, body) = (clients[i % 2].clone(), body.clone());
        creates.push(tokio::spawn(async move {
            let r = c.post("/v1/{p}/vpc-endpoints", body).await;
            match r.status {
                200 => Some(r.body["id"].as_str().unwrap().to_owned()),
                400 => {
                    assert_eq!(r.code(), "Endpoint.1018", "{}", r.body);
                    None
                }
                s => panic!("create answered {s}: {}", r.body),
            }
        }));
    }
    let mut made = Vec::new();
    for c in creates {
        made.extend(c.await.unwrap());
    }
    assert_eq!(made.len(), 25, "the quota holds across replicas");
    for id in &made[..3] {
        clients[other]
            .wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "accepted")
            .await;
    }
    // Room for the endpoint made after the takeover.
    let freed = &made[0];
    assert_eq!(
        clients[l]
            .delete(&format!("/v1/{{p}}/vpc-endpoints/{freed}"))
            .await
            .status,
        204
    );
    clients[other]
        .wait(&format!("/v1/{{p}}/vpc-endpoints/{freed}"), "gone")
        .await;

    // A burst of writes to the leader, killed in the middle of it: whitelist entries
    // (not VPCs: the gateway node's loopback block holds a few VPCs only).
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (c, acked, svc) = (clients[l].clone(), acked.clone(), svc.clone());
        tokio::spawn(async move {
            for i in 0..400 {
                let entry = format!("iam:domain::{i:032x}");
                let body = json!({"permissions": [entry], "action": "add"});
                let path = format!("/v1/{{p}}/vpc-endpoint-services/{svc}/permissions/action");
                match c.try_call("POST", &path, Some(&body)).await {
                    Some(r) if r.status == 200 => acked.lock().unwrap().push(entry),
                    Some(r) => panic!("unexpected {}: {}", r.status, r.body),
                    None => break,
                }
            }
        })
    };
    while acked.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    drop(replicas[l].take());
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let listed = clients[other]
        .ok(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/permissions?limit=500"),
            None,
        )
        .await;
    let held: std::collections::BTreeSet<&str> = listed["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["permission"].as_str())
        .collect();
    for entry in &acked {
        assert!(
            held.contains(entry.as_str()),
            "acknowledged entry {entry} is lost"
        );
    }

    // The survivor takes the controller over, and the gateway node follows it: an
    // endpoint created through it is accepted within 5 s of the kill.
    let ep = clients[other]
        .post("/v1/{p}/vpc-endpoints", body.clone())
        .await;
    assert_eq!(ep.status, 200, "{}", ep.body);
    let ep = ep.body["id"].as_str().unwrap().to_owned();
    let survivor = if l == 0 { "b" } else { "a" };
    loop {
        let r = clients[other]
            .get(&format!("/v1/{{p}}/vpc-endpoints/{ep}"))
            .await;
        if r.body["status"] == "accepted" {
            eprintln!(
                "takeover: accepted {:?} after the leader's SIGKILL",
                killed.elapsed()
            );
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "not accepted 5 s after the leader was killed: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It says so within a heartbeat.
    let says = Instant::now();
    while leader(&admin).await != survivor {
        assert!(
            says.elapsed() < Duration::from_secs(5),
            "the survivor never said it leads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No endpoint or service is left in a transitional status.
    let t = Store::transitional(&admin).await.unwrap();
    assert!(t.is_empty(), "{t:?}");
    let status: Value = json!(Store::replicas(&admin).await.unwrap());
    assert_eq!(status.as_array().unwrap().len(), 2, "{status}");

    stop.send(true).unwrap();
    node.await.unwrap().unwrap();
    admin.close().await;
    drop(replicas);
}

/// PostgreSQL stops under a running replica: requests are answered 503 with Retry-After
/// (never a 500, nothing half-written); once it is back the replica serves again without
/// a restart, and leads again (a new service settles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_503_while_postgresql_is_down_and_recovers() {
    let Some(mut pg) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (database, admin, acct) = database_with_account(&pg, "outage", dir.path()).await;
    admin.close().await;
    let replica = Replica::start(&database, dir.path(), "solo");
    let client = Client::new(replica.url.clone(), acct);
    client.service(false, 80).await;

    pg.stop();
    let vpc = json!({"vpc": {"name": "while-down", "cidr": "10.0.0.0/16"}});
    let down = client.call("POST", "/v1/{p}/vpcs", Some(&vpc)).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.code(), "EndPoint.0015");
    assert_eq!(down.retry_after.as_deref(), Some("5"));
    assert_eq!(client.get("/v1/{p}/vpcs").await.status, 503);
    let health = || async {
        reqwest::get(format!("{}/healthz", replica.url))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(health().await, 503, "a balancer takes the replica out");

    pg.start_again().unwrap();
    let back = Instant::now();
    loop {
        let r = client.call("POST", "/v1/{p}/vpcs", Some(&vpc)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no write 30 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health().await, 200);
    let listed = client.ok("GET", "/v1/{p}/vpcs", None).await;
    let names: Vec<&str> = listed["vpcs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .filter(|n| *n == "while-down")
        .collect();
    assert_eq!(names.len(), 1, "the refused write left nothing: {listed}");
    client.service(false, 81).await;
}
