//! Private DNS of the node: one resolver per VPC, at the reserved
//! resolver address of each of its subnets (`SubnetSpec::resolver_ip`), and optionally the
//! cloud's internal resolver on an address of the node itself (the backend an operator's
//! `dns` interface service points at).
//!
//! A VPC's resolver answers the private names of that VPC's endpoints (only once their
//! listeners are up: the zones are rebuilt from the node's outcomes after every apply) and
//! the cloud's internal names; under `vpcep.*.internal` and the cloud names it is
//! authoritative, so another VPC's name is NXDOMAIN there. Every other name goes to the
//! configured upstream, or is REFUSED — never answered wrong.
//!
//! UDP, the path every lookup takes, is served here, not by hickory-server: one
//! `SO_REUSEPORT` socket per core on each resolver address, each read by a thread that
//! parses with hickory-proto, answers from its copy of the zones into a reused buffer and
//! sends, with no task or allocation per query on the common paths (`Handler::answer`);
//! only forwarding becomes a tokio task. TCP goes through hickory-server
//! (`RequestHandler`), with the same decisions (`decide`).
//!
//! This file is the face (configuration, which addresses are served, metrics); the names
//! and decisions are in `zones`, the wire in `answer`, the transports in `udp` and `tcp`.

mod answer;
mod tcp;
mod udp;
mod zones;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::Server;
use vpcep_model::VpcSpec;

use crate::substrate::{Local, Substrate};
use answer::Handler;
use tcp::bind_tcp;
use udp::{bind_udp, Served, UdpPool};
pub use zones::Zones;
use zones::{Published, Verdict};

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

/// A VPC's resolver: subnet id → its resolver address and the listener there.
type Resolver = HashMap<String, (Ipv4Addr, Listener)>;

/// The node's resolvers and their zones.
pub struct Dns {
    config: DnsConfig,
    substrate: Arc<dyn Substrate>,
    published: Arc<Published>,
    counters: Arc<Counters>,
    /// The threads of every UDP resolver, started with the first one.
    udp: OnceLock<UdpPool>,
    vpcs: tokio::sync::Mutex<HashMap<String, Resolver>>,
    cloud: tokio::sync::Mutex<Option<Listener>>,
}

impl Dns {
    pub fn new(substrate: Arc<dyn Substrate>, config: DnsConfig) -> Dns {
        Dns {
            config,
            substrate,
            published: Arc::default(),
            counters: Arc::default(),
            udp: OnceLock::new(),
            vpcs: Default::default(),
            cloud: Default::default(),
        }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    fn handler(&self, vpc: Option<String>) -> Handler {
        Handler {
            vpc,
            published: self.published.clone(),
            upstream: self.config.upstream,
            counters: self.counters.clone(),
        }
    }

    /// Replaces what every resolver answers.
    pub fn publish(&self, zones: Zones) {
        *self
            .published
            .zones
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(zones);
    }

    /// Whether `name` resolves in `vpc` now (tests and the report of `vpcep demo`).
    pub fn lookup(&self, vpc: &str, name: &str) -> Option<Ipv4Addr> {
        match self
            .handler(Some(vpc.to_owned()))
            .decide(&name.to_ascii_lowercase())
        {
            Verdict::Address(ip) => Some(ip),
            _ => None,
        }
    }

    /// How many threads serve the UDP side of every resolver (0 before the first one).
    pub fn udp_threads(&self) -> usize {
        self.udp.get().map_or(0, UdpPool::workers)
    }

    /// How many resolver addresses of VPCs are served.
    pub async fn vpc_addresses(&self) -> usize {
        self.vpcs.lock().await.values().map(HashMap::len).sum()
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
        *cloud = Some(self.listen(addr, None)?);
        tracing::info!(%addr, "cloud DNS listening");
        Ok(())
    }

    /// Makes the VPCs' resolvers match `vpcs`: each subnet of each VPC gets one at its
    /// resolver address, removed subnets and VPCs lose theirs. An address that cannot be
    /// served is logged and tried again next time.
    pub async fn sync(&self, vpcs: &[VpcSpec]) {
        let mut running = self.vpcs.lock().await;
        let wanted: HashSet<&str> = vpcs.iter().map(|v| v.id.as_str()).collect();
        running.retain(|id, _| wanted.contains(id.as_str()));
        for vpc in vpcs {
            let resolver = running.entry(vpc.id.clone()).or_default();
            resolver.retain(|subnet, (ip, _)| {
                vpc.subnets
                    .iter()
                    .any(|s| s.id == *subnet && s.resolver_ip() == Some(*ip))
            });
            for subnet in &vpc.subnets {
                let Some(ip) = subnet.resolver_ip() else {
                    continue;
                };
                if resolver.contains_key(&subnet.id) {
                    continue;
                }
                match self.start_vpc(vpc, &subnet.id, ip).await {
                    Ok(l) => {
                        resolver.insert(subnet.id.clone(), (ip, l));
                    }
                    Err(e) => {
                        tracing::warn!(vpc = %vpc.id, resolver = %ip, error = %e, "VPC resolver could not start")
                    }
                }
            }
        }
    }

    /// Serves the resolver address `ip` of a subnet of `vpc`.
    async fn start_vpc(&self, vpc: &VpcSpec, subnet: &str, ip: Ipv4Addr) -> io::Result<Listener> {
        let (sub, v, s) = (self.substrate.clone(), vpc.clone(), subnet.to_owned());
        let local = tokio::task::spawn_blocking(move || sub.add_local(&v, &s, ip, Local::Endpoint))
            .await
            .map_err(io::Error::other)??
            .unwrap_or(ip);
        let addr = SocketAddr::V4(SocketAddrV4::new(local, self.config.port));
        let listener = self.listen(addr, Some(vpc))?;
        tracing::info!(vpc = %vpc.id, resolver = %ip, listen = %addr, "VPC resolver listening");
        Ok(listener)
    }

    /// Serves `addr` (made inside `vpc`): UDP in the pool, TCP through hickory-server.
    fn listen(&self, addr: SocketAddr, vpc: Option<&VpcSpec>) -> io::Result<Listener> {
        let handler = self.handler(vpc.map(|v| v.id.clone()));
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resolvers_of_many_vpcs_share_one_pool_of_threads() {
        const BASE: u8 = 150;
        let port = free_port();
        let config = DnsConfig {
            port,
            ..Default::default()
        };
        let dns = Dns::new(Arc::new(Loopback::new(BASE)), config);
        let resolver = |seq: u32| SocketAddr::from(([127, BASE + seq as u8, 0, 2], port));
        assert_eq!(dns.udp_threads(), 0);
        dns.sync(&[vpc(1)]).await;
        let threads = dns.udp_threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads, cores.min(16));

        let vpcs: Vec<VpcSpec> = (1..=50).map(vpc).collect();
        dns.sync(&vpcs).await;
        assert_eq!(dns.vpc_addresses().await, 50);
        assert_eq!(dns.udp_threads(), threads);
        dns.publish(Zones {
            vpcs: (1..=50)
                .map(|seq| {
                    (
                        format!("vpc-{seq}"),
                        HashMap::from([(name(seq), Ipv4Addr::new(10, 0, 0, 9))]),
                    )
                })
                .collect(),
            cloud: Vec::new(),
        });
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
        assert_eq!(dns.vpc_addresses().await, 10);
        assert_eq!(dns.udp_threads(), threads);
        std::net::UdpSocket::bind(resolver(11)).unwrap();
        assert_eq!(
            query_a(resolver(10), &name(10)).await.unwrap(),
            [Ipv4Addr::new(10, 0, 0, 9)]
        );
    }
}
