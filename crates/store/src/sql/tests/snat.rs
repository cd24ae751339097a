//! SNAT addresses: unique per provider VPC while their endpoint exists, reused once it is
//! gone, refused when a VPC has none left; and the schema migrations that brought them.

use crate::sql::numbered;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use sqlx::{AnyConnection, Connection};
use vpcep_model::{EndpointStatus, PortMapping, Protocol, Reason, ServiceType, MARKER_ID_BASE};

use super::super::migrate::{migrate, LATEST};
use super::{new_endpoint, on_postgres, reason, service, setup, vpc_with_subnet};
use crate::*;

/// The consumer side: one VPC and subnet that every endpoint of a test is made in.
struct Consumer {
    caller: Caller,
    vpc: String,
    subnet: String,
}

impl Consumer {
    async fn new(store: &SqlStore, caller: &Caller) -> Consumer {
        let (vpc, subnet) = vpc_with_subnet(store, caller, "10.0.0.0/16", "10.0.0.0/16").await;
        Consumer {
            caller: caller.clone(),
            vpc: vpc.id,
            subnet: subnet.id,
        }
    }

    async fn create(&self, store: &SqlStore, service_id: &str) -> Result<Endpoint> {
        store
            .create_endpoint(
                self.caller.clone(),
                new_endpoint(service_id, &self.vpc, &self.subnet),
            )
            .await
    }

    /// Deletes an endpoint the way the API and the controller do: `deleting`, then gone.
    async fn delete(&self, store: &SqlStore, id: &str) {
        store
            .delete_endpoint(self.caller.clone(), id.to_owned())
            .await
            .unwrap();
        store
            .finish_deletions(vec![], vec![id.to_owned()])
            .await
            .unwrap();
    }
}

/// Every endpoint of the snapshot: (provider VPC, SNAT address).
async fn snat_of(store: &SqlStore) -> BTreeMap<String, (Option<String>, Ipv4Addr)> {
    store
        .snapshot()
        .await
        .unwrap()
        .endpoints
        .into_iter()
        .map(|e| (e.id, (e.provider_vpc, e.snat_ip)))
        .collect()
}

/// Fails if two endpoints towards one provider VPC share an address in the snapshot.
async fn assert_unique(store: &SqlStore) {
    let mut seen = BTreeMap::new();
    for (id, (vpc, addr)) in snat_of(store).await {
        let Some(vpc) = vpc else { continue };
        if let Some(other) = seen.insert((vpc, addr), id.clone()) {
            panic!("endpoints {other} and {id} share {addr}");
        }
    }
}

fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 128, n)
}

/// Sets an endpoint's marker id (the next endpoint gets one more), as if the endpoints
/// with the ids between had come and gone.
async fn set_marker(store: &SqlStore, id: &str, marker: i64) {
    sqlx::query(&numbered("UPDATE endpoints SET marker_id = ? WHERE id = ?"))
        .bind(marker)
        .bind(id)
        .execute(&store.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn snat_addresses_are_unique_per_provider_vpc_and_reused() {
    let (_dir, store, alice) = setup().await;
    let s1 = service(&store, &alice).await;
    let s2 = service(&store, &alice).await;
    let c = Consumer::new(&store, &alice).await;

    let e1 = c.create(&store, &s1.id).await.unwrap();
    // 4,093 endpoints came and went: the next marker id is 4,094 past e1's, which the
    // marker-derived address of version 1 mapped onto e1's address again.
    set_marker(&store, &e1.id, MARKER_ID_BASE + 4093).await;
    let e2 = c.create(&store, &s1.id).await.unwrap();
    assert_eq!(e2.marker_id, MARKER_ID_BASE + 4094);
    // Another provider VPC has addresses of its own.
    let other = c.create(&store, &s2.id).await.unwrap();
    let snat = snat_of(&store).await;
    assert_eq!(snat[&e1.id], (Some(s1.vpc_id.clone()), host(1)));
    assert_eq!(snat[&e2.id], (Some(s1.vpc_id.clone()), host(2)));
    assert_eq!(snat[&other.id], (Some(s2.vpc_id.clone()), host(1)));

    // An endpoint being deleted still holds its address (the data plane may be using
    // it); once its row is gone the address is the lowest free one again.
    store
        .delete_endpoint(alice.clone(), e1.id.clone())
        .await
        .unwrap();
    let e3 = c.create(&store, &s1.id).await.unwrap();
    assert_eq!(snat_of(&store).await[&e3.id].1, host(3));
    store
        .finish_deletions(vec![], vec![e1.id.clone()])
        .await
        .unwrap();
    let e4 = c.create(&store, &s1.id).await.unwrap();
    assert_eq!(snat_of(&store).await[&e4.id].1, host(1));

    // Churn with marker ids far past 4,094: no two live endpoints ever share, and each
    // new one takes the lowest free address, so the freed ones are filled first.
    let mut live = vec![e2.id, e3.id, e4.id];
    for round in 0..12 {
        let gone = live.remove(round as usize * 5 % live.len());
        c.delete(&store, &gone).await;
        let a = c.create(&store, &s1.id).await.unwrap();
        let b = c.create(&store, &s1.id).await.unwrap();
        set_marker(&store, &b.id, b.marker_id + 4094 * (round + 1)).await;
        live.extend([a.id, b.id]);
        assert_unique(&store).await;
        let mut held: Vec<Ipv4Addr> = snat_of(&store)
            .await
            .into_values()
            .filter(|(vpc, _)| vpc.as_deref() == Some(s1.vpc_id.as_str()))
            .map(|(_, addr)| addr)
            .collect();
        held.sort();
        assert_eq!(held, (1..=live.len() as u8).map(host).collect::<Vec<_>>());
    }

    // Operator services have no VPC: their endpoints hold no address.
    let public = store
        .create_public_service(NewPublicService {
            name: "dns".into(),
            region: "r1".into(),
            service_type: ServiceType::Interface,
            backend_ip: Ipv4Addr::new(10, 9, 9, 9),
            cidr: None,
            ports: vec![PortMapping {
                client_port: 53,
                server_port: 53,
                protocol: Protocol::Udp,
            }],
            description: String::new(),
        })
        .await
        .unwrap();
    store
        .settle_services(vec![(public.id.clone(), Ok(()))])
        .await
        .unwrap();
    let p = c.create(&store, &public.id).await.unwrap();
    assert_eq!(snat_of(&store).await[&p.id], (None, Ipv4Addr::UNSPECIFIED));
}

#[tokio::test]
async fn a_provider_vpc_without_free_addresses_refuses_new_endpoints() {
    let (_dir, store, alice) = setup().await;
    let s1 = service(&store, &alice).await;
    let s2 = service(&store, &alice).await;
    let c = Consumer::new(&store, &alice).await;
    let first = c.create(&store, &s1.id).await.unwrap();
    // Endpoints 2 to 4,094 towards the same VPC, of other tenants (outside alice's quota),
    // as copies of the first row.
    let mut tx = store.pool.begin().await.unwrap();
    sqlx::query(&numbered(
        "CREATE TEMP TABLE fill AS SELECT * FROM endpoints WHERE id = ?",
    ))
    .bind(&first.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    for n in 2..=4094 {
        sqlx::query(&numbered("UPDATE fill SET id = ?, project_id = 'others', marker_id = marker_id + 1, snat_host = ?"))
            .bind(format!("fill-{n}"))
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(&numbered("INSERT INTO endpoints SELECT * FROM fill"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query(&numbered("DROP TABLE fill"))
        .execute(&mut *tx)
        .await
        .unwrap();
    // The rows came in by hand: record that the VPC holds their numbers, as the store
    // does for what it allocates (the first endpoint's run, 1 to 1, now ends at 4,094).
    sqlx::query(&numbered(
        "UPDATE held_runs SET hi = 4094 WHERE kind = 'snat' AND pool = ? AND lo = 1",
    ))
    .bind(&s1.vpc_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let rev = store.revision().await.unwrap();
    let refused = c.create(&store, &s1.id).await.unwrap_err();
    assert!(
        refused.to_string().contains("all 4094 source addresses"),
        "{refused}"
    );
    assert_eq!(reason(refused), Reason::QuotaExceeded);
    assert_eq!(store.revision().await.unwrap(), rev, "nothing was written");
    // Other provider VPCs are not affected.
    c.create(&store, &s2.id).await.unwrap();

    // The last address, once freed, is taken by the next endpoint.
    sqlx::query(&numbered(
        "UPDATE endpoints SET status = 'deleting' WHERE id = 'fill-4094'",
    ))
    .execute(&store.pool)
    .await
    .unwrap();
    assert!(c.create(&store, &s1.id).await.is_err(), "still held");
    store
        .finish_deletions(vec![], vec!["fill-4094".into()])
        .await
        .unwrap();
    let last = c.create(&store, &s1.id).await.unwrap();
    assert_eq!(
        snat_of(&store).await[&last.id].1,
        Ipv4Addr::new(198, 19, 143, 254)
    );
}

/// Makes `dir` hold a database as version 1 of vpcep left it, with `rows` in it.
async fn v1_database(dir: &Path, rows: &str) {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join("vpcep.db").display());
    let mut conn = AnyConnection::connect(&url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    migrate(&mut tx, Engine::Sqlite, 1).await.unwrap();
    sqlx::raw_sql(rows).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    conn.close().await.unwrap();
}

/// A service row of version 1: a tenant's in `vpc`, or the operator's without one.
fn v1_service(id: &str, vpc: Option<&str>) -> String {
    let (vpc, public) = vpc.map_or(("", 1), |v| (v, 0));
    format!(
        "INSERT INTO services (id, project_id, domain_id, short_name, service_name, vpc_id, port_id, backend_ip, server_type, service_type, approval_enabled, status, tcp_proxy, description, is_public, cidr, ports, editions, server_resources, error, created_at, updated_at) \
         VALUES ('{id}', 'p', 'd', 'web', 'r1.web.{id}', '{vpc}', '', '192.168.0.10', 'VM', 'interface', 0, 'available', 'close', '', {public}, '', '[{{\"client_port\":80,\"server_port\":8080,\"protocol\":\"TCP\"}}]', '[\"basic\"]', '[]', '', 1, 1);\n"
    )
}

/// An endpoint row of version 1, `offset` marker ids past the first.
fn v1_endpoint(id: &str, service: &str, offset: i64, status: &str) -> String {
    let marker = MARKER_ID_BASE + offset;
    format!(
        "INSERT INTO endpoints (id, project_id, domain_id, service_id, service_name, service_type, vpc_id, subnet_id, ip, status, marker_id, enable_dns, dns_name, whitelist, enable_whitelist, routetables, description, conn_description, policy_statement, policy_document, edition, error, created_at, updated_at) \
         VALUES ('{id}', 'p', 'd', '{service}', 'r1.web.{service}', 'interface', 'vpc-c', 'sub-c', '10.0.0.9', '{status}', {marker}, 0, '', '[]', 0, '[]', '', '', '', '', 'default', '', {marker}, {marker});\n"
    )
}

async fn status_of(store: &SqlStore, id: &str) -> EndpointStatus {
    let raw: String = sqlx::query_scalar(&numbered("SELECT status FROM endpoints WHERE id = ?"))
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    EndpointStatus::parse(&raw).unwrap()
}

async fn snat_host(store: &SqlStore, id: &str) -> Option<i64> {
    sqlx::query_scalar(&numbered("SELECT snat_host FROM endpoints WHERE id = ?"))
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_1_database_keeps_its_addresses_and_splits_collisions() {
    if on_postgres() {
        return; // SQLite's own: PostgreSQL starts at version 6
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        v1_service("s1", Some("vpc-p1")),
        v1_service("s2", Some("vpc-p2")),
        v1_service("op", None),
        // Towards vpc-p1: a and b collide on 198.19.128.1 (marker ids 4,094 apart), c and
        // d on .2; the accepted one keeps it, and among equals the older one.
        v1_endpoint("a", "s1", 0, "accepted"),
        v1_endpoint("b", "s1", 4094, "accepted"),
        v1_endpoint("c", "s1", 1, "pendingAcceptance"),
        v1_endpoint("d", "s1", 4095, "accepted"),
        // Towards vpc-p2, .3 as well: another VPC, no collision.
        v1_endpoint("e", "s2", 2, "accepted"),
        v1_endpoint("f", "op", 3, "accepted"),
        "UPDATE meta SET v = 41 WHERE k = 'revision';".to_owned(),
    ]
    .concat();
    v1_database(dir.path(), &rows).await;

    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    let snat = snat_of(&store).await;
    let p1 = Some("vpc-p1".to_owned());
    assert_eq!(snat["a"], (p1.clone(), host(1)));
    assert_eq!(snat["d"], (p1.clone(), host(2)));
    assert_eq!(snat["b"], (p1.clone(), host(3)));
    assert_eq!(snat_host(&store, "c").await, Some(4));
    assert_eq!(snat["e"], (Some("vpc-p2".to_owned()), host(3)));
    assert_eq!(snat["f"], (None, Ipv4Addr::UNSPECIFIED));
    assert_eq!(snat_host(&store, "f").await, None);
    // The data changed, so the revision moved on: gateway nodes fetch it again.
    assert_eq!(store.revision().await.unwrap(), 42);
    let version: i64 = sqlx::query_scalar(&numbered("SELECT v FROM meta WHERE k = 'schema'"))
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(version, LATEST);
    store.close().await;

    // Opening it again changes nothing.
    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), 42);
    assert_eq!(snat_of(&store).await, snat);
}

#[tokio::test]
async fn a_version_1_database_with_more_endpoints_than_addresses_fails_the_last() {
    if on_postgres() {
        return; // SQLite's own: PostgreSQL starts at version 6
    }
    let dir = tempfile::tempdir().unwrap();
    // 4,096 endpoints towards one VPC: the last two find no address left. e4094 fails;
    // e4095, already being deleted, stays so (the controller finishes it).
    let mut rows = v1_service("s1", Some("vpc-p1"));
    for n in 0..4096 {
        let status = if n == 4095 { "deleting" } else { "accepted" };
        rows.push_str(&v1_endpoint(&format!("e{n}"), "s1", n, status));
    }
    v1_database(dir.path(), &rows).await;

    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    assert_unique(&store).await;
    let snat = snat_of(&store).await;
    assert_eq!(snat.len(), 4094);
    assert_eq!(snat["e0"].1, host(1));
    assert_eq!(snat["e4093"].1, Ipv4Addr::new(198, 19, 143, 254));
    assert_eq!(status_of(&store, "e4094").await, EndpointStatus::Failed);
    assert_eq!(status_of(&store, "e4095").await, EndpointStatus::Deleting);
    assert_eq!(snat_host(&store, "e4094").await, None);
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    sqlx::query(&numbered("UPDATE meta SET v = ? WHERE k = 'schema'"))
        .bind(LATEST + 1)
        .execute(&store.pool)
        .await
        .unwrap();
    store.close().await;
    let Err(refused) = crate::sql::tests::open_store(dir.path()).await else {
        panic!("a database of an unknown version was opened");
    };
    assert!(
        matches!(refused, StoreError::NewerSchema { found, known } if found == LATEST + 1 && known == LATEST),
        "{refused}"
    );
    assert!(refused
        .to_string()
        .contains(&format!("schema version {}", LATEST + 1)));
}
