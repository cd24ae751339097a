//! Private DNS of the node: one resolver per VPC, at the reserved
//! resolver address of each of its subnets (`SubnetSpec::resolver_ip`), and optionally the
//! cloud's internal resolver on an address of the node itself (the backend an operator's
//! `dns` interface service points at).
//!
//! A VPC's resolver answers the private names of that VPC's endpoints (the node sets them
//! per VPC, `set_names`, once their listeners are up) and the cloud's internal names
//! (`set_cloud`); under `vpcep.*.internal` and the cloud names it is authoritative, so
//! another VPC's name is NXDOMAIN there. Every other name goes to the configured
//! upstream, or is REFUSED — never answered wrong.
//!
//! UDP, the path every lookup takes, is served here, not by hickory-server: one socket
//! per resolver address, every socket served by one pool of threads (`udp`) that parses
//! with hickory-proto and answers into reused buffers, with no task or allocation per
//! query on the common paths (`Handler::answer`); only forwarding becomes a tokio task.
//! TCP goes through hickory-server (`RequestHandler`), with the same decisions.
//!
//! This file is the face (configuration, which addresses are served, metrics); the names
//! and decisions are in `zones`, the wire in `answer`, the transports in `udp` and `tcp`.

mod answer;
mod tcp;
mod udp;
mod zones;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::Server;
use vpcep_model::{CloudName, VpcSpec};

use crate::substrate::{Local, Substrate};
use answer::Handler;
use tcp::bind_tcp;
use udp::{bind_udp, Served, UdpPool};
use zones::{Names, Slot, Verdict};

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The port of every VPC resolver (53 in namespaces; any port on loopback).
    pub port: u16,
    /// Where names we do not own go; without one they are REFUSED.
    pub upstream: Option<SocketAddr>,
    /// The cloud's internal resolver, on this node's own network.
    pub cloud_listen: Option<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            port: 53,
            upstream: None,
            cloud_listen: None,
        }
    }
}

/// Counters of every resolver of this node together.
#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    nxdomain: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// One served resolver address: UDP in the node's pool, TCP on hickory-server (one task
/// on the runtime, and one per connection). Dropping it stops both and closes the sockets.
struct Listener {
    _udp: Served,
    _tcp: Server<Handler>,
}

/// A VPC as the node's DNS holds it: its names, shared with its resolver's handlers, and
/// that resolver's listeners (subnet id → resolver address and listener).
#[derive(Default)]
struct Vpc {
    names: Arc<Slot<Names>>,
    listeners: HashMap<String, (Ipv4Addr, Listener)>,
}

/// The node's resolvers and the names they answer.
pub struct Dns {
    config: DnsConfig,
    substrate: Arc<dyn Substrate>,
    counters: Arc<Counters>,
    /// The cloud's names, answered by every resolver.
    cloud_names: Arc<Slot<Vec<CloudName>>>,
    /// VPC id → its names and resolver. Resolvers never take this lock (they hold their
    /// VPC's `Slot`), and it is never held while sockets are made.
    vpcs: Mutex<HashMap<String, Vpc>>,
    /// One `sync` at a time.
    syncing: tokio::sync::Mutex<()>,
    /// The threads of every UDP resolver, started with the first one.
    udp: OnceLock<UdpPool>,
    cloud: tokio::sync::Mutex<Option<Listener>>,
}

impl Dns {
    pub fn new(substrate: Arc<dyn Substrate>, config: DnsConfig) -> Dns {
        Dns {
            config,
            substrate,
            counters: Arc::default(),
            cloud_names: Arc::default(),
            vpcs: Mutex::default(),
            syncing: tokio::sync::Mutex::default(),
            udp: OnceLock::new(),
            cloud: tokio::sync::Mutex::default(),
        }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    fn handler(&self, names: Option<Arc<Slot<Names>>>) -> Handler {
        Handler {
            names,
            cloud: self.cloud_names.clone(),
            upstream: self.config.upstream,
            counters: self.counters.clone(),
        }
    }

    fn vpcs(&self) -> MutexGuard<'_, HashMap<String, Vpc>> {
        self.vpcs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `names` (any case, with or without the final dot) the private names VPC
    /// `vpc` answers, in place of its earlier ones; no other VPC is touched.
    pub fn set_names(&self, vpc: &str, names: BTreeMap<String, Ipv4Addr>) {
        let names: Names = names
            .into_iter()
            .map(|(n, ip)| (canonical(&n), ip))
            .collect();
        let slot = {
            let mut vpcs = self.vpcs();
            if !vpcs.contains_key(vpc) {
                vpcs.insert(vpc.to_owned(), Vpc::default());
            }
            vpcs.get(vpc).map(|v| v.names.clone())
        };
        if let Some(slot) = slot {
            slot.set(names);
        }
    }

    /// Forgets VPC `vpc`: its names, and its resolver if one still runs.
    pub fn drop_vpc(&self, vpc: &str) {
        let gone = self.vpcs().remove(vpc);
        // Its sockets close here, outside the lock.
        drop(gone);
    }

    /// Makes `cloud` the cloud's names, which every resolver answers.
    pub fn set_cloud(&self, cloud: Vec<CloudName>) {
        self.cloud_names.set(cloud);
    }

    /// Whether `name` resolves in `vpc` now (tests and the report of `vpcep demo`).
    pub fn lookup(&self, vpc: &str, name: &str) -> Option<Ipv4Addr> {
        let names = self.vpcs().get(vpc).map(|v| v.names.clone());
        match self.handler(names).decide(&canonical(name)) {
            Verdict::Address(ip) => Some(ip),
            _ => None,
        }
    }

    /// How many threads serve the UDP side of every resolver (0 before the first one).
    pub fn udp_threads(&self) -> usize {
        self.udp.get().map_or(0, UdpPool::workers)
    }

    /// How many resolver addresses of VPCs are served.
    pub fn vpc_addresses(&self) -> usize {
        self.vpcs().values().map(|v| v.listeners.len()).sum()
    }

    /// Starts the cloud resolver, once, if one is configured.
    pub async fn start_cloud(&self) -> io::Result<()> {
        let Some(addr) = self.config.cloud_listen else {
            return Ok(());
        };
        let mut cloud = self.cloud.lock().await;
        if cloud.is_some() {
            return Ok(());
        }
        *cloud = Some(self.listen(addr, None, self.handler(None))?);
        tracing::info!(%addr, "cloud DNS listening");
        Ok(())
    }

    /// Makes the VPCs' resolvers match `vpcs`: each subnet of each VPC gets one at its
    /// resolver address, removed subnets and VPCs lose theirs (a removed VPC keeps its
    /// names until `drop_vpc`). An address that cannot be served is logged and tried
    /// again next time.
    pub async fn sync(&self, vpcs: &[VpcSpec]) {
        let _turn = self.syncing.lock().await;
        let mut stopped = Vec::new();
        let mut starts = Vec::new();
        {
            let mut held = self.vpcs();
            let wanted: HashSet<&str> = vpcs.iter().map(|v| v.id.as_str()).collect();
            held.retain(|id, v| {
                if wanted.contains(id.as_str()) {
                    return true;
                }
                stopped.extend(v.listeners.drain());
                !v.names.get().is_empty()
            });
            for vpc in vpcs {
                if !held.contains_key(&vpc.id) {
                    held.insert(vpc.id.clone(), Vpc::default());
                }
                let Some(v) = held.get_mut(&vpc.id) else {
                    continue;
                };
                let moved: Vec<String> = v
                    .listeners
                    .iter()
                    .filter(|(subnet, (ip, _))| {
                        !vpc.subnets
                            .iter()
                            .any(|s| s.id == **subnet && s.resolver_ip() == Some(*ip))
                    })
                    .map(|(subnet, _)| subnet.clone())
                    .collect();
                stopped.extend(moved.iter().filter_map(|s| v.listeners.remove_entry(s)));
                for subnet in &vpc.subnets {
                    if let Some(ip) = subnet.resolver_ip() {
                        if !v.listeners.contains_key(&subnet.id) {
                            starts.push((vpc, &subnet.id, ip, v.names.clone()));
                        }
                    }
                }
            }
        }
        drop(stopped);
        for (vpc, subnet, ip, names) in starts {
            let listener = match self.start_vpc(vpc, subnet, ip, &names).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(vpc = %vpc.id, resolver = %ip, error = %e, "VPC resolver could not start");
                    continue;
                }
            };
            let mut held = self.vpcs();
            // Unless the VPC was dropped meanwhile (the next sync starts it again).
            if let Some(v) = held
                .get_mut(&vpc.id)
                .filter(|v| Arc::ptr_eq(&v.names, &names))
            {
                v.listeners.insert(subnet.clone(), (ip, listener));
            }
        }
    }

    /// Serves the resolver address `ip` of a subnet of `vpc`, answering `names`.
    async fn start_vpc(
        &self,
        vpc: &VpcSpec,
        subnet: &str,
        ip: Ipv4Addr,
        names: &Arc<Slot<Names>>,
    ) -> io::Result<Listener> {
        let (sub, v, s) = (self.substrate.clone(), vpc.clone(), subnet.to_owned());
        let local = tokio::task::spawn_blocking(move || sub.add_local(&v, &s, ip, Local::Endpoint))
            .await
            .map_err(io::Error::other)??
            .unwrap_or(ip);
        let addr = SocketAddr::V4(SocketAddrV4::new(local, self.config.port));
        let listener = self.listen(addr, Some(vpc), self.handler(Some(names.clone())))?;
        tracing::info!(vpc = %vpc.id, resolver = %ip, listen = %addr, "VPC resolver listening");
        Ok(listener)
    }

    /// Serves `addr` (made inside `vpc`) with `handler`: UDP in the pool, TCP through
    /// hickory-server.
    fn listen(
        &self,
        addr: SocketAddr,
        vpc: Option<&VpcSpec>,
        handler: Handler,
    ) -> io::Result<Listener> {
        let udp = bind_udp(addr, &*self.substrate, vpc)?;
        let tcp = bind_tcp(addr, &*self.substrate, vpc)?;
        let mut server = Server::new(handler.clone());
        server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
        Ok(Listener {
            _udp: self.pool()?.serve(udp, handler)?,
            _tcp: server,
        })
    }

    /// The UDP pool, started on first use (on the current runtime, where forwarding runs).
    fn pool(&self) -> io::Result<&UdpPool> {
        if let Some(pool) = self.udp.get() {
            return Ok(pool);
        }
        let started = UdpPool::start()?;
        Ok(self.udp.get_or_init(|| started))
    }

    /// Prometheus text of the resolvers.
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let mut out = String::from(
            "# HELP vpcep_dns_queries_total DNS queries answered by the node's resolvers, by result.\n# TYPE vpcep_dns_queries_total counter\n",
        );
        for (result, v) in [
            ("answered", &c.answered),
            ("nxdomain", &c.nxdomain),
            ("forwarded", &c.forwarded),
            ("refused", &c.refused),
            ("upstream_failed", &c.failed),
        ] {
            out.push_str(&format!(
                "vpcep_dns_queries_total{{result=\"{result}\"}} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// A name as the resolvers key it: lowercase, without the final dot.
fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Asks `server` for the A records of `name` over UDP (a stub resolver for `vpcep demo`
/// and tests): the addresses, empty for NXDOMAIN, an error for any other failure.
pub async fn query_a(server: SocketAddr, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let qname = Name::from_ascii(name).map_err(|e| io::Error::other(e.to_string()))?;
    let mut q = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qname, RecordType::A));
    let bytes = q.to_vec().map_err(|e| io::Error::other(e.to_string()))?;
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        socket.send(&bytes).await?;
        let Ok(n) = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
        else {
            continue;
        };
        let m = Message::from_vec(&buf[..n?]).map_err(|e| io::Error::other(e.to_string()))?;
        return match m.metadata.response_code {
            ResponseCode::NoError => Ok(m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()),
            ResponseCode::NXDomain => Ok(Vec::new()),
            other => Err(io::Error::other(format!("{server} answered {other}"))),
        };
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer from {server}"),
    ))
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Loopback;
    use vpcep_model::SubnetSpec;

    /// VPC number `seq`, with one subnet whose resolver is 10.0.0.2 (on loopback,
    /// 127.(base+seq).0.2).
    fn vpc(seq: u32) -> VpcSpec {
        VpcSpec {
            id: format!("vpc-{seq}"),
            seq,
            subnets: vec![SubnetSpec {
                id: format!("subnet-{seq}"),
                cidr: "10.0.0.0/24".to_owned(),
                gateway_ip: Ipv4Addr::new(10, 0, 0, 1),
                vni: 0,
            }],
        }
    }

    fn name(seq: u32) -> String {
        format!("ep-{seq}.svc.vpcep.region-1.internal")
    }

    /// A port free on 127.0.0.1 for both UDP and TCP (so very likely on 127.x too).
    fn free_port() -> u16 {
        loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    /// DNS on the loopback substrate (VPC `seq` in 127.(base+seq)), on a free port, and
    /// where the resolver of VPC `seq` listens.
    fn loopback_dns(base: u8) -> (Dns, impl Fn(u32) -> SocketAddr) {
        let port = free_port();
        let config = DnsConfig {
            port,
            ..Default::default()
        };
        let dns = Dns::new(Arc::new(Loopback::new(base)), config);
        let resolver = move |seq: u32| SocketAddr::from(([127, base + seq as u8, 0, 2], port));
        (dns, resolver)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resolvers_of_many_vpcs_share_one_pool_of_threads() {
        let (dns, resolver) = loopback_dns(150);
        assert_eq!(dns.udp_threads(), 0);
        dns.sync(&[vpc(1)]).await;
        let threads = dns.udp_threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads, cores.min(16));

        let vpcs: Vec<VpcSpec> = (1..=50).map(vpc).collect();
        dns.sync(&vpcs).await;
        assert_eq!(dns.vpc_addresses(), 50);
        assert_eq!(dns.udp_threads(), threads);
        for seq in 1..=50 {
            let names = BTreeMap::from([(name(seq), Ipv4Addr::new(10, 0, 0, 9))]);
            dns.set_names(&format!("vpc-{seq}"), names);
        }
        for seq in 1..=50 {
            let addr = resolver(seq);
            assert_eq!(
                query_a(addr, &name(seq)).await.unwrap(),
                [Ipv4Addr::new(10, 0, 0, 9)],
                "{addr}"
            );
            // Another VPC's name does not exist here.
            let other = name(seq % 50 + 1);
            assert!(query_a(addr, &other).await.unwrap().is_empty(), "{addr}");
        }

        // VPCs that go take their resolvers with them; the others stay.
        dns.sync(&vpcs[..10]).await;
        assert_eq!(dns.vpc_addresses(), 10);
        assert_eq!(dns.udp_threads(), threads);
        std::net::UdpSocket::bind(resolver(11)).unwrap();
        assert_eq!(
            query_a(resolver(10), &name(10)).await.unwrap(),
            [Ipv4Addr::new(10, 0, 0, 9)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishing_one_vpcs_names_leaves_the_others_alone() {
        let (dns, resolver) = loopback_dns(210);
        let ip = |last: u8| Ipv4Addr::new(10, 0, 0, last);
        // Names may come before the resolver does.
        dns.set_names("vpc-1", BTreeMap::from([(name(1), ip(11))]));
        dns.sync(&[vpc(1), vpc(2)]).await;
        dns.set_names(
            "vpc-2",
            BTreeMap::from([(name(2).to_ascii_uppercase() + ".", ip(12))]),
        );
        let cloud = "obs.region-1.vpcep.internal";
        dns.set_cloud(vec![CloudName {
            name: cloud.to_owned(),
            ip: Ipv4Addr::new(100, 64, 0, 1),
        }]);
        let vpc1 = dns.vpcs().get("vpc-1").map(|v| v.names.get()).unwrap();
        assert_eq!(query_a(resolver(1), &name(1)).await.unwrap(), [ip(11)]);
        assert_eq!(query_a(resolver(2), &name(2)).await.unwrap(), [ip(12)]);

        // VPC 2 gets a second name and loses one: VPC 1's names stay the very same map.
        dns.set_names(
            "vpc-2",
            BTreeMap::from([("new.svc.vpcep.region-1.internal".to_owned(), ip(13))]),
        );
        let after = dns.vpcs().get("vpc-1").map(|v| v.names.get()).unwrap();
        assert!(Arc::ptr_eq(&vpc1, &after));
        assert_eq!(query_a(resolver(1), &name(1)).await.unwrap(), [ip(11)]);
        assert!(query_a(resolver(2), &name(2)).await.unwrap().is_empty());
        assert_eq!(
            query_a(resolver(2), "NEW.svc.vpcep.region-1.internal")
                .await
                .unwrap(),
            [ip(13)]
        );
        assert!(query_a(resolver(1), "new.svc.vpcep.region-1.internal")
            .await
            .unwrap()
            .is_empty());
        // The cloud's names are everyone's.
        for seq in [1, 2] {
            let got = query_a(resolver(seq), &format!("bucket.{cloud}"))
                .await
                .unwrap();
            assert_eq!(got, [Ipv4Addr::new(100, 64, 0, 1)]);
        }
        assert_eq!(
            dns.lookup("vpc-1", &name(1).to_ascii_uppercase()),
            Some(ip(11))
        );
        assert_eq!(dns.lookup("vpc-2", &name(1)), None);

        // Dropping VPC 2 closes its resolver and forgets its names; VPC 1 answers on.
        dns.drop_vpc("vpc-2");
        assert_eq!(dns.vpc_addresses(), 1);
        assert_eq!(dns.lookup("vpc-2", "new.svc.vpcep.region-1.internal"), None);
        std::net::UdpSocket::bind(resolver(2)).unwrap();
        assert_eq!(query_a(resolver(1), &name(1)).await.unwrap(), [ip(11)]);
    }
}
