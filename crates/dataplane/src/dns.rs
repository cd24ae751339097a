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

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::Server;
use vpcep_model::VpcSpec;

use crate::substrate::{Local, Substrate};
use answer::Handler;
use tcp::bind_tcp;
use udp::{bind_udp, UdpLoop, MAX_UDP_SOCKETS};
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

/// One running resolver: its TCP server and UDP loops (dropping them stops them) and
/// where it listens.
struct Running {
    _tcp: Server<Handler>,
    _udp: Vec<UdpLoop>,
    addrs: Vec<(String, Ipv4Addr)>,
}

/// The node's resolvers and their zones.
pub struct Dns {
    config: DnsConfig,
    substrate: Arc<dyn Substrate>,
    published: Arc<Published>,
    counters: Arc<Counters>,
    vpcs: tokio::sync::Mutex<HashMap<String, Running>>,
    cloud: tokio::sync::Mutex<Option<Running>>,
}

impl Dns {
    pub fn new(substrate: Arc<dyn Substrate>, config: DnsConfig) -> Dns {
        Dns {
            config,
            substrate,
            published: Arc::default(),
            counters: Arc::default(),
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
        self.published.generation.fetch_add(1, Ordering::Release);
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

    /// Starts the cloud resolver, once, if one is configured.
    pub async fn start_cloud(&self) -> io::Result<()> {
        let Some(addr) = self.config.cloud_listen else {
            return Ok(());
        };
        let mut cloud = self.cloud.lock().await;
        if cloud.is_some() {
            return Ok(());
        }
        let mut running = self.running(None, Vec::new());
        self.listen(&mut running, addr, None)?;
        tracing::info!(%addr, "cloud DNS listening");
        *cloud = Some(running);
        Ok(())
    }

    /// Makes the VPCs' resolvers match `vpcs`: new VPCs (or new subnets) get one, removed
    /// VPCs lose theirs. A resolver that cannot bind is logged and retried next time.
    pub async fn sync(&self, vpcs: &[VpcSpec]) {
        let mut running = self.vpcs.lock().await;
        let wanted: HashMap<&str, &VpcSpec> = vpcs.iter().map(|v| (v.id.as_str(), v)).collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            running.remove(&id);
        }
        for vpc in vpcs {
            let addrs: Vec<(String, Ipv4Addr)> = vpc
                .subnets
                .iter()
                .filter_map(|s| Some((s.id.clone(), s.resolver_ip()?)))
                .collect();
            if running.get(&vpc.id).is_some_and(|r| r.addrs == addrs) {
                continue;
            }
            running.remove(&vpc.id);
            match self.start_vpc(vpc, &addrs).await {
                Ok(r) => {
                    running.insert(vpc.id.clone(), r);
                }
                Err(e) => tracing::warn!(vpc = %vpc.id, error = %e, "VPC resolver could not start"),
            }
        }
    }

    async fn start_vpc(&self, vpc: &VpcSpec, addrs: &[(String, Ipv4Addr)]) -> io::Result<Running> {
        let mut running = self.running(Some(vpc.id.clone()), addrs.to_vec());
        for (subnet, ip) in addrs {
            let (sub, v, s, ip) = (self.substrate.clone(), vpc.clone(), subnet.clone(), *ip);
            let local =
                tokio::task::spawn_blocking(move || sub.add_local(&v, &s, ip, Local::Endpoint))
                    .await
                    .map_err(io::Error::other)??
                    .unwrap_or(ip);
            let addr = SocketAddr::V4(SocketAddrV4::new(local, self.config.port));
            self.listen(&mut running, addr, Some(vpc))?;
            tracing::info!(vpc = %vpc.id, resolver = %ip, listen = %addr, "VPC resolver listening");
        }
        Ok(running)
    }

    fn running(&self, vpc: Option<String>, addrs: Vec<(String, Ipv4Addr)>) -> Running {
        Running {
            _tcp: Server::new(self.handler(vpc)),
            _udp: Vec::new(),
            addrs,
        }
    }

    /// Serves `addr` (made inside `vpc`): UDP on one `SO_REUSEPORT` socket per core, each
    /// with its own `serve_udp` loop, and TCP through hickory-server.
    fn listen(
        &self,
        running: &mut Running,
        addr: SocketAddr,
        vpc: Option<&VpcSpec>,
    ) -> io::Result<()> {
        let handler = Arc::new(self.handler(vpc.map(|v| v.id.clone())));
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_UDP_SOCKETS);
        for udp in bind_udp(addr, &*self.substrate, vpc, n)? {
            running._udp.push(UdpLoop::start(udp, handler.clone())?);
        }
        running._tcp.register_listener(
            bind_tcp(addr, &*self.substrate, vpc)?,
            Duration::from_secs(10),
            64 * 1024,
        );
        Ok(())
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
