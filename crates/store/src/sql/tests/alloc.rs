//! Address and SNAT allocation: the lowest free number first, freed ones reused,
//! requested and reserved addresses, full subnets refused; the same answers as version
//! 4's walk to the first gap, under churn and after an upgrade from version 4.

use crate::sql::numbered;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use vpcep_model::Reason;

use super::super::migrate::LATEST;
use super::{new_endpoint, on_postgres, reason, service, setup, subnet, vm_port, vpc};
use crate::*;

/// The lowest free address as version 4 found it: the first gap after a held address.
const WALK_ADDRESS: &str = "SELECT a.ip_num + 1 FROM addresses a WHERE a.subnet_id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM addresses b WHERE b.subnet_id = ?1 AND b.ip_num = a.ip_num + 1) \
     ORDER BY a.ip_num LIMIT 1";

/// The lowest free SNAT host number towards a VPC as version 4 found it.
const WALK_SNAT: &str = "SELECT CASE WHEN COUNT(*) = COALESCE(MAX(snat_host), 0) THEN COUNT(*) + 1 \
     WHEN MIN(snat_host) > 1 THEN 1 \
     ELSE (SELECT e.snat_host + 1 FROM endpoints e WHERE e.snat_vpc_id = ?1 AND e.snat_host IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM endpoints f WHERE f.snat_vpc_id = ?1 AND f.snat_host = e.snat_host + 1) \
           ORDER BY e.snat_host LIMIT 1) END \
     FROM endpoints WHERE snat_vpc_id = ?1 AND snat_host IS NOT NULL";

/// Version 4's answer for the next address of a subnet, `None` when it found it full.
async fn walk_address(store: &SqlStore, subnet: &Subnet) -> Option<Ipv4Addr> {
    let net: ipnet::Ipv4Net = subnet.cidr.parse().unwrap();
    let next: Option<i64> = sqlx::query_scalar(&numbered(WALK_ADDRESS))
        .bind(&subnet.id)
        .fetch_optional(&store.pool)
        .await
        .unwrap();
    next.map(|n| Ipv4Addr::from(n as u32))
        .filter(|ip| net.contains(ip) && *ip != net.broadcast())
}

/// Version 4's answer for the next SNAT host number towards a VPC.
async fn walk_snat(store: &SqlStore, vpc: &str) -> i64 {
    sqlx::query_scalar(&numbered(WALK_SNAT))
        .bind(vpc)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

async fn snat_host(store: &SqlStore, endpoint: &str) -> i64 {
    sqlx::query_scalar(&numbered("SELECT snat_host FROM endpoints WHERE id = ?"))
        .bind(endpoint)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

/// Fails unless `held_runs` is exactly the runs of the numbers that the rows hold
/// (addresses; endpoints' SNAT hosts; subnets' VNIs), as computed here from the rows.
async fn assert_runs_match_rows(store: &SqlStore) {
    let kept: Vec<(String, String, i64, i64)> = sqlx::query_as(&numbered(
        "SELECT kind, pool, lo, hi FROM held_runs ORDER BY kind, pool, lo",
    ))
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let held: Vec<(String, String, i64)> = sqlx::query_as(&numbered(
        "SELECT 'address', subnet_id, ip_num FROM addresses \
         UNION ALL SELECT 'snat', snat_vpc_id, snat_host FROM endpoints \
         WHERE snat_vpc_id IS NOT NULL AND snat_host IS NOT NULL \
         UNION ALL SELECT 'vni', '', vni FROM subnets ORDER BY 1, 2, 3",
    ))
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let mut runs: Vec<(String, String, i64, i64)> = Vec::new();
    for (kind, pool, n) in held {
        match runs.last_mut() {
            Some(r) if r.0 == kind && r.1 == pool && r.3 + 1 == n => r.3 = n,
            _ => runs.push((kind, pool, n, n)),
        }
    }
    assert_eq!(kept, runs, "held_runs against the rows");
}

async fn port(
    store: &SqlStore,
    caller: &Caller,
    subnet: &Subnet,
    ip: Option<&str>,
) -> Result<Port> {
    store
        .create_port(caller.clone(), vm_port(&subnet.id, "p", ip))
        .await
}

#[tokio::test]
async fn the_lowest_free_address_is_given_and_reserved_ones_never() {
    let (_dir, store, alice) = setup().await;
    let svc = service(&store, &alice).await;
    let v = vpc(&store, &alice, "10.0.0.0/28").await;
    // Reserved: .0 (network), .1 and .2 (router, resolver), .5 (gateway), .7 (broadcast).
    let s = subnet(&store, &alice, &v, "10.0.0.0/29", Some("10.0.0.5")).await;
    let ip = |p: Result<Port>| p.unwrap().ip;

    let a = port(&store, &alice, &s, None).await.unwrap();
    assert_eq!(a.ip, "10.0.0.3");
    // Endpoints and ports take from the same addresses.
    let e = store
        .create_endpoint(alice.clone(), new_endpoint(&svc.id, &v.id, &s.id))
        .await
        .unwrap();
    assert_eq!(e.ip, "10.0.0.4");
    let b = port(&store, &alice, &s, None).await.unwrap();
    assert_eq!(b.ip, "10.0.0.6", "the gateway .5 is skipped");
    let full = port(&store, &alice, &s, None).await.unwrap_err();
    assert!(full.to_string().contains("has no free address"), "{full}");
    assert_eq!(reason(full), Reason::SubnetFull);

    // A freed address is the lowest free one again, before any other.
    store.delete_port(alice.clone(), a.id).await.unwrap();
    let d = port(&store, &alice, &s, None).await.unwrap();
    assert_eq!(d.ip, "10.0.0.3");
    // An endpoint being deleted still holds its address; once gone, it is free.
    store
        .delete_endpoint(alice.clone(), e.id.clone())
        .await
        .unwrap();
    assert_eq!(
        reason(port(&store, &alice, &s, None).await.unwrap_err()),
        Reason::SubnetFull
    );
    store
        .finish_deletions(vec![], vec![e.id.clone()])
        .await
        .unwrap();
    assert_eq!(ip(port(&store, &alice, &s, None).await), "10.0.0.4");

    // Requested addresses: reserved ones are refused, held ones too, free ones given.
    for reserved in ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.7"] {
        let refused = port(&store, &alice, &s, Some(reserved)).await.unwrap_err();
        assert_eq!(reason(refused), Reason::BadPortIp, "{reserved}");
    }
    assert_eq!(
        reason(
            port(&store, &alice, &s, Some("10.0.0.6"))
                .await
                .unwrap_err()
        ),
        Reason::PortIpInUse
    );
    assert_eq!(
        reason(
            port(&store, &alice, &s, Some("10.0.0.9"))
                .await
                .unwrap_err()
        ),
        Reason::PortIpOutsideSubnet
    );
    store.delete_port(alice.clone(), b.id).await.unwrap();
    store.delete_port(alice.clone(), d.id).await.unwrap();
    assert_eq!(
        ip(port(&store, &alice, &s, Some("10.0.0.6")).await),
        "10.0.0.6"
    );
    assert_eq!(ip(port(&store, &alice, &s, None).await), "10.0.0.3");
    assert_runs_match_rows(&store).await;

    // A subnet that goes takes its runs along.
    for p in store
        .list_ports(alice.clone(), PortFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.subnet_id == s.id)
    {
        store.delete_port(alice.clone(), p.id).await.unwrap();
    }
    store
        .delete_subnet(alice.clone(), v.id.clone(), s.id.clone())
        .await
        .unwrap();
    assert_runs_match_rows(&store).await;
    let left: i64 = sqlx::query_scalar(&numbered("SELECT COUNT(*) FROM held_runs WHERE pool = ?"))
        .bind(&s.id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A small deterministic generator (xorshift64), so that a failing run replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The test's own account of a subnet: the addresses it holds, reserved ones included.
struct ModelSubnet {
    subnet: Subnet,
    network: u32,
    broadcast: u32,
    reserved: BTreeSet<u32>,
    held: BTreeSet<u32>,
}

impl ModelSubnet {
    fn new(subnet: Subnet, gateway: u32) -> ModelSubnet {
        let net: ipnet::Ipv4Net = subnet.cidr.parse().unwrap();
        let network = u32::from(net.network());
        let broadcast = u32::from(net.broadcast());
        let reserved: BTreeSet<u32> =
            [network, network + 1, network + 2, gateway, broadcast].into();
        ModelSubnet {
            subnet,
            network,
            broadcast,
            held: reserved.clone(),
            reserved,
        }
    }

    /// The lowest free address, by looking at every one.
    fn lowest(&self) -> Option<u32> {
        (self.network..=self.broadcast).find(|n| !self.held.contains(n))
    }
}

/// The lowest SNAT host number that `held` lacks, by looking at every one.
fn lowest_snat(held: &BTreeSet<i64>) -> i64 {
    (1..).find(|n| !held.contains(n)).unwrap()
}

struct ModelEndpoint {
    id: String,
    subnet: usize,
    ip: u32,
    vpc: String,
    snat: i64,
}

#[tokio::test]
async fn churn_allocates_as_the_walk_to_the_first_gap_and_a_brute_force_model() {
    let (_dir, store, alice) = setup().await;
    store
        .set_quota("alice".into(), None, Some(10_000))
        .await
        .unwrap();
    let services = [service(&store, &alice).await, service(&store, &alice).await];
    let v = vpc(&store, &alice, "10.0.0.0/24").await;
    let mut subnets = vec![
        ModelSubnet::new(
            subnet(&store, &alice, &v, "10.0.0.0/27", None).await,
            0x0a00_0001,
        ),
        ModelSubnet::new(
            subnet(&store, &alice, &v, "10.0.0.64/27", Some("10.0.0.70")).await,
            0x0a00_0046,
        ),
    ];
    let mut snat: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut ports: Vec<(String, usize, u32)> = Vec::new();
    let mut live: Vec<ModelEndpoint> = Vec::new();
    let mut deleting: Vec<ModelEndpoint> = Vec::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut refused_full = 0;

    for step in 0..400 {
        let si = rng.below(subnets.len());
        match rng.below(7) {
            0 | 1 => {
                let svc = &services[rng.below(services.len())];
                let expected = subnets[si].lowest();
                let walked = walk_address(&store, &subnets[si].subnet).await;
                assert_eq!(walked.map(u32::from), expected, "step {step}: the walk");
                let want_snat = lowest_snat(snat.entry(svc.vpc_id.clone()).or_default());
                assert_eq!(walk_snat(&store, &svc.vpc_id).await, want_snat);
                let made = store
                    .create_endpoint(
                        alice.clone(),
                        new_endpoint(&svc.id, &v.id, &subnets[si].subnet.id),
                    )
                    .await;
                let Some(ip) = expected else {
                    assert_eq!(reason(made.unwrap_err()), Reason::SubnetFull);
                    refused_full += 1;
                    continue;
                };
                let e = made.unwrap();
                assert_eq!(e.ip, Ipv4Addr::from(ip).to_string(), "step {step}");
                assert_eq!(snat_host(&store, &e.id).await, want_snat, "step {step}");
                subnets[si].held.insert(ip);
                snat.get_mut(&svc.vpc_id).unwrap().insert(want_snat);
                live.push(ModelEndpoint {
                    id: e.id,
                    subnet: si,
                    ip,
                    vpc: svc.vpc_id.clone(),
                    snat: want_snat,
                });
            }
            2 => {
                let expected = subnets[si].lowest();
                let made = port(&store, &alice, &subnets[si].subnet, None).await;
                match expected {
                    Some(ip) => {
                        let p = made.unwrap();
                        assert_eq!(p.ip, Ipv4Addr::from(ip).to_string(), "step {step}");
                        subnets[si].held.insert(ip);
                        ports.push((p.id, si, ip));
                    }
                    None => assert_eq!(reason(made.unwrap_err()), Reason::SubnetFull),
                }
            }
            3 => {
                // Anywhere in the subnet, its reserved addresses included.
                let m = &subnets[si];
                let ip = m.network + rng.below((m.broadcast - m.network + 1) as usize) as u32;
                let text = Ipv4Addr::from(ip).to_string();
                let made = port(&store, &alice, &m.subnet, Some(&text)).await;
                if m.reserved.contains(&ip) {
                    assert_eq!(reason(made.unwrap_err()), Reason::BadPortIp);
                } else if m.held.contains(&ip) {
                    assert_eq!(reason(made.unwrap_err()), Reason::PortIpInUse);
                } else {
                    let p = made.unwrap();
                    subnets[si].held.insert(ip);
                    ports.push((p.id, si, ip));
                }
            }
            4 if !ports.is_empty() => {
                let (id, si, ip) = ports.swap_remove(rng.below(ports.len()));
                store.delete_port(alice.clone(), id).await.unwrap();
                subnets[si].held.remove(&ip);
            }
            5 if !live.is_empty() => {
                // Being deleted, it still holds both its addresses.
                let e = live.swap_remove(rng.below(live.len()));
                store
                    .delete_endpoint(alice.clone(), e.id.clone())
                    .await
                    .unwrap();
                deleting.push(e);
            }
            6 if !deleting.is_empty() => {
                let e = deleting.swap_remove(rng.below(deleting.len()));
                store
                    .finish_deletions(vec![], vec![e.id.clone()])
                    .await
                    .unwrap();
                subnets[e.subnet].held.remove(&e.ip);
                snat.get_mut(&e.vpc).unwrap().remove(&e.snat);
            }
            _ => continue,
        }
        assert_runs_match_rows(&store).await;
    }
    // The run went through full subnets and through holes both low and high.
    assert!(refused_full > 0, "no subnet filled up");
    for m in &subnets {
        let rows: BTreeSet<u32> = sqlx::query_scalar::<_, i64>(&numbered(
            "SELECT ip_num FROM addresses WHERE subnet_id = ?",
        ))
        .bind(&m.subnet.id)
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n as u32)
        .collect();
        assert_eq!(rows, m.held);
    }
}

#[tokio::test]
async fn a_version_4_database_with_holes_allocates_as_before() {
    if on_postgres() {
        return; // SQLite's own: PostgreSQL starts at version 6
    }
    let (dir, store, alice) = setup().await;
    let svc = service(&store, &alice).await;
    let v = vpc(&store, &alice, "10.0.0.0/16").await;
    let s = subnet(&store, &alice, &v, "10.0.0.0/24", None).await;
    let mut made = Vec::new();
    for _ in 0..12 {
        let e = store
            .create_endpoint(alice.clone(), new_endpoint(&svc.id, &v.id, &s.id))
            .await
            .unwrap();
        made.push(e.id);
    }
    // Endpoints .3-.14 with SNAT hosts 1-12, a port at .16 and one at .200; then holes
    // at .3/1, .8/6 and .9/7, while .12/10 is being deleted and still holds both.
    port(&store, &alice, &s, Some("10.0.0.16")).await.unwrap();
    port(&store, &alice, &s, Some("10.0.0.200")).await.unwrap();
    for i in [0, 5, 6, 9] {
        store
            .delete_endpoint(alice.clone(), made[i].clone())
            .await
            .unwrap();
    }
    store
        .finish_deletions(
            vec![],
            vec![made[0].clone(), made[5].clone(), made[6].clone()],
        )
        .await
        .unwrap();
    // Migration 5 only adds held_runs, 6 swaps an index, 7 and 8 add tables and columns:
    // without them, and with
    // version 4 in meta, this is the database that version 4 left after the same requests.
    sqlx::raw_sql("DROP TABLE machines; DROP INDEX subnets_vni; ALTER TABLE subnets DROP COLUMN vni; ALTER TABLE ports DROP COLUMN machine; DROP TABLE gateway_endpoints; DROP TABLE gateway_nodes; DROP TABLE replicas; DROP TABLE held_runs; DROP INDEX endpoints_service_status; CREATE INDEX endpoints_service ON endpoints (service_id); UPDATE meta SET v = 4 WHERE k = 'schema';")
        .execute(&store.pool)
        .await
        .unwrap();
    store.close().await;

    let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
    let version: i64 = sqlx::query_scalar(&numbered("SELECT v FROM meta WHERE k = 'schema'"))
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(version, LATEST);
    assert_runs_match_rows(&store).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let before = (
            walk_address(&store, &s).await.unwrap().to_string(),
            walk_snat(&store, &svc.vpc_id).await,
        );
        let e = store
            .create_endpoint(alice.clone(), new_endpoint(&svc.id, &v.id, &s.id))
            .await
            .unwrap();
        let after = (e.ip.clone(), snat_host(&store, &e.id).await);
        assert_eq!(after, before, "as version 4 would have given");
        got.push(after);
    }
    let want = [
        ("10.0.0.3", 1),
        ("10.0.0.8", 6),
        ("10.0.0.9", 7),
        ("10.0.0.15", 13),
        ("10.0.0.17", 14),
    ];
    assert_eq!(got, want.map(|(ip, host)| (ip.to_owned(), host)));
    assert_runs_match_rows(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_through_two_handles_take_distinct_lowest_numbers() {
    let (dir, store, alice) = setup().await;
    let svc = service(&store, &alice).await;
    let v = vpc(&store, &alice, "10.0.0.0/24").await;
    let s = subnet(&store, &alice, &v, "10.0.0.0/24", None).await;
    // A second handle on the same database, as `vpcep admin` beside a running server:
    // the two meet only at SQLite's lock.
    let stores = [
        Arc::new(store),
        Arc::new(crate::sql::tests::open_store(dir.path()).await.unwrap()),
    ];
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = stores[i % 2].clone();
        let new = new_endpoint(&svc.id, &v.id, &s.id);
        let alice = alice.clone();
        creates.spawn(async move { store.create_endpoint(alice, new).await.unwrap() });
    }
    let mut ips = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    while let Some(e) = creates.join_next().await {
        let e = e.unwrap();
        ips.insert(e.ip.parse::<Ipv4Addr>().unwrap());
        hosts.insert(snat_host(&stores[0], &e.id).await);
    }
    let want: BTreeSet<Ipv4Addr> = (3..43).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
    assert_eq!(ips, want);
    assert_eq!(hosts, (1..=40).collect());
    assert_runs_match_rows(&stores[0]).await;
}
