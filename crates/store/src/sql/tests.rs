//! The store against a real SQLite database in a temporary directory.

use crate::sql::numbered;
use vpcep_model::{validate_service_name, PortMapping, Protocol, Reason, ServerType, TcpProxy};

use super::SqlStore;
use crate::*;

mod alloc;
mod desired;
mod hardening;
mod snat;

/// The store of `dir`: SQLite in it, or with `VPCEP_TEST_ENGINE=postgres`, a database of
/// its own (named after `dir`, so reopening finds it again) in this test process's
/// throwaway PostgreSQL cluster.
pub(crate) async fn open_store(dir: &std::path::Path) -> Result<SqlStore> {
    SqlStore::open(&test_database(dir)).await
}

/// Whether these tests run against PostgreSQL (`VPCEP_TEST_ENGINE=postgres`).
pub(crate) fn on_postgres() -> bool {
    std::env::var("VPCEP_TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

pub(crate) fn test_database(dir: &std::path::Path) -> Database {
    if !on_postgres() {
        return Database::Sqlite {
            dir: dir.to_owned(),
        };
    }
    static CLUSTER: std::sync::OnceLock<vpcep_testpg::Cluster> = std::sync::OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| {
        let mut c = vpcep_testpg::Cluster::start().expect("a PostgreSQL cluster for the tests");
        c.reap_on_exit().expect("a reaper for the test cluster");
        c
    });
    let name = format!(
        "t_{}",
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    static MADE: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap();
    let url = match made.iter().find(|(n, _)| *n == name) {
        Some((_, url)) => url.clone(),
        None => {
            let url = cluster.create_database(&name).expect("a test database");
            made.push((name, url.clone()));
            url
        }
    };
    Database::Postgres {
        url,
        key_dir: dir.to_owned(),
    }
}

async fn setup() -> (tempfile::TempDir, SqlStore, Caller) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    let a = store
        .create_account("alice".into(), "r1".into())
        .await
        .unwrap();
    let caller = Caller {
        domain_id: a.domain_id,
        project_id: a.project_id,
    };
    (dir, store, caller)
}

/// A VM NIC in `subnet`, at `ip` or the lowest free address.
fn vm_port(subnet: &str, name: &str, ip: Option<&str>) -> NewPort {
    NewPort {
        subnet_id: subnet.to_owned(),
        name: name.into(),
        ip: ip.map(|a| a.parse().unwrap()),
        device_owner: String::new(),
        device_id: String::new(),
        is_host: false,
        machine: None,
    }
}

async fn vpc(store: &SqlStore, caller: &Caller, cidr: &str) -> Vpc {
    store
        .create_vpc(
            caller.clone(),
            NewVpc {
                name: "v".into(),
                cidr: cidr.into(),
                description: String::new(),
            },
        )
        .await
        .unwrap()
}

/// A subnet of `vpc`, with the given gateway or the default one (network + 1).
async fn subnet(
    store: &SqlStore,
    caller: &Caller,
    vpc: &Vpc,
    cidr: &str,
    gateway: Option<&str>,
) -> Subnet {
    store
        .create_subnet(
            caller.clone(),
            NewSubnet {
                vpc_id: vpc.id.clone(),
                name: "s".into(),
                cidr: cidr.into(),
                gateway_ip: gateway.map(str::to_owned),
                description: String::new(),
            },
        )
        .await
        .unwrap()
}

/// A VPC of `caller` with one subnet.
async fn vpc_with_subnet(
    store: &SqlStore,
    caller: &Caller,
    cidr: &str,
    subnet_cidr: &str,
) -> (Vpc, Subnet) {
    let v = vpc(store, caller, cidr).await;
    let s = subnet(store, caller, &v, subnet_cidr, None).await;
    (v, s)
}

/// Service "web" (port 80 to 8080, no approval) on a VM port.
fn web_service(vpc_id: &str, port_id: &str) -> NewService {
    NewService {
        vpc_id: vpc_id.to_owned(),
        port_id: port_id.to_owned(),
        server_type: ServerType::Vm,
        name: validate_service_name("web").unwrap(),
        approval_enabled: false,
        tcp_proxy: TcpProxy::Close,
        description: String::new(),
        ports: vec![PortMapping {
            client_port: 80,
            server_port: 8080,
            protocol: Protocol::Tcp,
        }],
        tags: vec![],
        connection_limit: 3000,
    }
}

/// An available service (no approval) on a VM in a VPC of its own.
async fn service(store: &SqlStore, caller: &Caller) -> Service {
    let (vpc, subnet) = vpc_with_subnet(store, caller, "192.168.0.0/16", "192.168.0.0/16").await;
    let port = store
        .create_port(caller.clone(), vm_port(&subnet.id, "vm", None))
        .await
        .unwrap();
    let svc = store
        .create_service(caller.clone(), web_service(&vpc.id, &port.id))
        .await
        .unwrap();
    store
        .settle_services(vec![(svc.id.clone(), Ok(()))])
        .await
        .unwrap();
    svc
}

/// An interface endpoint of `service_id` in `subnet_id`, with nothing optional.
fn new_endpoint(service_id: &str, vpc_id: &str, subnet_id: &str) -> NewEndpoint {
    NewEndpoint {
        service_id: service_id.to_owned(),
        vpc_id: vpc_id.to_owned(),
        subnet_id: Some(subnet_id.to_owned()),
        port_ip: None,
        enable_dns: false,
        routetables: None,
        whitelist: vec![],
        enable_whitelist: false,
        description: String::new(),
        tags: vec![],
        policy_statement: None,
        policy_document: None,
        region: "r1".into(),
    }
}

fn reason(e: StoreError) -> Reason {
    match e {
        StoreError::Rejected(r) => r.reason,
        other => panic!("expected a rejection, got {other}"),
    }
}

#[tokio::test]
async fn secrets_are_not_stored_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    let a = store
        .create_account("bob".into(), "r1".into())
        .await
        .unwrap();
    // Every row of the tables that hold them, as text (both engines), and SQLite's files.
    let mut hays: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT domain_id || name || password_hash FROM accounts",
        "SELECT access_key || domain_id || secret_sealed FROM credentials",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sql)
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(!rows.is_empty());
        hays.extend(rows.into_iter().map(String::into_bytes));
    }
    store.close().await;
    if !on_postgres() {
        hays.push(std::fs::read(dir.path().join("vpcep.db")).unwrap());
        hays.push(std::fs::read(dir.path().join("vpcep.db-wal")).unwrap_or_default());
    }
    for hay in &hays {
        let hay = String::from_utf8_lossy(hay);
        assert!(!hay.contains(&a.secret_key));
        assert!(!hay.contains(&a.password));
    }
    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    let cred = store
        .credential(a.access_key.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cred.secret_key, a.secret_key);
    assert!(store
        .login("bob".into(), a.password.clone(), "r1".into())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .login("bob".into(), "wrong".into(), "r1".into())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn service_lifecycle_and_isolation() {
    let (_dir, store, alice) = setup().await;
    let rev0 = store.revision().await.unwrap();
    let (vpc, sub) = vpc_with_subnet(&store, &alice, "192.168.0.0/16", "192.168.0.0/24").await;
    let port = store
        .create_port(alice.clone(), vm_port(&sub.id, "vm", None))
        .await
        .unwrap();
    assert_eq!(port.ip, "192.168.0.3");
    let fixed = store
        .create_port(alice.clone(), vm_port(&sub.id, "b", Some("192.168.0.5")))
        .await
        .unwrap();
    assert_eq!(fixed.ip, "192.168.0.5");
    let gw = store
        .create_port(alice.clone(), vm_port(&sub.id, "g", Some("192.168.0.1")))
        .await;
    assert_eq!(reason(gw.unwrap_err()), Reason::BadPortIp);
    let new = web_service(&vpc.id, &port.id);
    let svc = store
        .create_service(alice.clone(), new.clone())
        .await
        .unwrap();
    assert_eq!(svc.service_name, format!("r1.web.{}", svc.id));
    assert!(store.revision().await.unwrap() > rev0);
    // The same server port of the same backend cannot be published twice.
    assert_eq!(
        reason(
            store
                .create_service(alice.clone(), new.clone())
                .await
                .unwrap_err()
        ),
        Reason::PortMappingConflict
    );
    // LB type needs an LB port.
    let lb = NewService {
        server_type: ServerType::Lb,
        ..new.clone()
    };
    assert_eq!(
        reason(store.create_service(alice.clone(), lb).await.unwrap_err()),
        Reason::BadPortId
    );

    let b = store
        .create_account("bob".into(), "r1".into())
        .await
        .unwrap();
    let bob = Caller {
        domain_id: b.domain_id,
        project_id: b.project_id,
    };
    assert_eq!(
        reason(
            store
                .get_service(bob.clone(), svc.id.clone())
                .await
                .unwrap_err()
        ),
        Reason::NotFound
    );
    assert_eq!(
        reason(
            store
                .get_vpc(bob.clone(), vpc.id.clone())
                .await
                .unwrap_err()
        ),
        Reason::NotFound
    );

    store
        .settle_services(vec![(svc.id.clone(), Ok(()))])
        .await
        .unwrap();
    // Bob is not whitelisted: the service looks missing to him.
    let (bvpc, bsub) = vpc_with_subnet(&store, &bob, "192.168.0.0/16", "192.168.0.0/24").await;
    let ep = new_endpoint(&svc.id, &bvpc.id, &bsub.id);
    assert_eq!(
        reason(
            store
                .create_endpoint(bob.clone(), ep.clone())
                .await
                .unwrap_err()
        ),
        Reason::NotFound
    );
    store
        .add_permissions(
            alice.clone(),
            svc.id.clone(),
            vec![(format!("iam:domain::{}", bob.domain_id), String::new())],
        )
        .await
        .unwrap();
    let e = store
        .create_endpoint(bob.clone(), ep.clone())
        .await
        .unwrap();
    assert_eq!(e.status, vpcep_model::EndpointStatus::Creating);
    assert_eq!(e.ip, "192.168.0.3");
    assert!(e.marker_id >= vpcep_model::MARKER_ID_BASE);
    store
        .settle_endpoints(vec![(e.id.clone(), Ok(()))])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_endpoint(bob.clone(), e.id.clone())
            .await
            .unwrap()
            .status,
        vpcep_model::EndpointStatus::Accepted
    );
    assert_eq!(
        reason(
            store
                .delete_service(alice.clone(), svc.id.clone())
                .await
                .unwrap_err()
        ),
        Reason::ServiceInUse
    );
    store
        .delete_endpoint(bob.clone(), e.id.clone())
        .await
        .unwrap();
    store
        .finish_deletions(vec![], vec![e.id.clone()])
        .await
        .unwrap();
    store
        .delete_service(alice.clone(), svc.id.clone())
        .await
        .unwrap();
    store
        .finish_deletions(vec![svc.id.clone()], vec![])
        .await
        .unwrap();
    assert!(store.transitional().await.unwrap().is_empty());

    // A subnet with ports cannot go; without them it can, reserved addresses and all.
    assert_eq!(
        reason(
            store
                .delete_subnet(alice.clone(), vpc.id.clone(), sub.id.clone())
                .await
                .unwrap_err()
        ),
        Reason::InUse
    );
    for p in store
        .list_ports(alice.clone(), PortFilter::default())
        .await
        .unwrap()
    {
        store.delete_port(alice.clone(), p.id).await.unwrap();
    }
    store
        .delete_subnet(alice.clone(), vpc.id.clone(), sub.id.clone())
        .await
        .unwrap();
    store
        .delete_vpc(alice.clone(), vpc.id.clone())
        .await
        .unwrap();
}

/// Sets `PRAGMA max_page_count` on every connection of the pool (all eight at once, so
/// none is missed), the way a full disk looks to SQLite: writes fail with `SQLITE_FULL`.
async fn cap_pages(store: &SqlStore, pages: i64) {
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = store.pool.acquire().await.unwrap();
        sqlx::query(&numbered(&format!("PRAGMA max_page_count = {pages}")))
            .execute(&mut *c)
            .await
            .unwrap();
        held.push(c);
    }
}

#[tokio::test]
async fn a_full_disk_fails_writes_cleanly_and_they_resume_when_there_is_room() {
    if on_postgres() {
        return; // SQLite's own: a full file system under the data directory
    }
    let (_dir, store, alice) = setup().await;
    let pages: i64 = sqlx::query_scalar(&numbered("PRAGMA page_count"))
        .fetch_one(&store.pool)
        .await
        .unwrap();
    cap_pages(&store, pages + 2).await;
    let mut made = Vec::new();
    let full = loop {
        let v = NewVpc {
            name: format!("v{}", made.len()),
            cidr: "10.0.0.0/16".into(),
            description: "x".repeat(200),
        };
        match store.create_vpc(alice.clone(), v).await {
            Ok(v) => made.push(v.id),
            Err(e) => break e,
        }
        assert!(made.len() < 10_000, "the cap never bites");
    };
    assert!(matches!(full, StoreError::Storage(_)), "{full:?}");
    let rev = store.revision().await.unwrap();
    // Nothing half-written: the acknowledged rows are there, the failed one is not.
    let vpcs = store.list_vpcs(alice.clone(), None).await.unwrap();
    assert_eq!(vpcs.len(), made.len());

    // Room again: every connection of the pool writes (a connection left inside the
    // failed transaction would refuse every BEGIN from then on).
    cap_pages(&store, 1 << 30).await;
    for i in 0..24 {
        let v = NewVpc {
            name: format!("after{i}"),
            cidr: "10.0.0.0/16".into(),
            description: String::new(),
        };
        store
            .create_vpc(alice.clone(), v)
            .await
            .unwrap_or_else(|e| panic!("write {i} after the disk has room again: {e}"));
    }
    assert_eq!(store.revision().await.unwrap(), rev + 24);
}

#[tokio::test]
async fn a_transaction_sqlite_rolled_back_by_itself_leaves_no_connection_unusable() {
    if on_postgres() {
        return; // SQLite's own: SQLite rolls back by itself
    }
    let (_dir, store, alice) = setup().await;
    // SQLite rolls a transaction back by itself when its COMMIT meets a full disk or an
    // I/O error; sqlx, which counts transactions, does not see it and its ROLLBACK fails
    // too. A ROLLBACK behind sqlx's back does the same.
    for _ in 0..3 {
        let mut tx = store.begin().await.unwrap();
        sqlx::query(&numbered("ROLLBACK"))
            .execute(&mut *tx)
            .await
            .unwrap();
        assert!(store.commit(tx).await.is_err());
    }
    for i in 0..24 {
        let v = NewVpc {
            name: format!("after{i}"),
            cidr: "10.0.0.0/16".into(),
            description: String::new(),
        };
        store
            .create_vpc(alice.clone(), v)
            .await
            .unwrap_or_else(|e| panic!("write {i} after a failed commit: {e}"));
    }
}

/// Replicas share one database and must seal secrets with one key: a replica whose
/// master.key is another is refused before it serves anything.
#[tokio::test]
async fn a_replica_with_another_master_key_is_refused() {
    if !on_postgres() {
        return; // One SQLite store has one data directory, and one key.
    }
    let (first, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open_store(first.path()).await.unwrap();
    store.close().await;
    let Database::Postgres { url, .. } = test_database(first.path()) else {
        unreachable!()
    };
    let elsewhere = Database::Postgres {
        url: url.clone(),
        key_dir: other.path().to_owned(),
    };
    let Err(refused) = SqlStore::open(&elsewhere).await else {
        panic!("a replica with another master key was let in");
    };
    assert!(refused.to_string().contains("master.key"), "{refused}");
    std::fs::copy(
        first.path().join("master.key"),
        other.path().join("master.key"),
    )
    .unwrap();
    SqlStore::open(&elsewhere).await.unwrap().close().await;
}
