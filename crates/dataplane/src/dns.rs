//! Private DNS of the node (hickory-server): one resolver per VPC, at the reserved
//! resolver address of each of its subnets (`SubnetSpec::resolver_ip`), and optionally the
//! cloud's internal resolver on an address of the node itself (the backend an operator's
//! `dns` interface service points at).
//!
//! A VPC's resolver answers the private names of that VPC's endpoints (only once their
//! listeners are up: the zones are rebuilt from the node's outcomes after every apply) and
//! the cloud's internal names; under `vpcep.*.internal` and the cloud names it is
//! authoritative, so another VPC's name is NXDOMAIN there. Every other name goes to the
//! configured upstream, or is REFUSED — never answered wrong.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use socket2::{Domain, Socket, Type};
use vpcep_model::{CloudName, VpcSpec};

use crate::substrate::{Local, Substrate};

/// Time to live of the answers we own: short, since endpoints come and go.
const TTL: u32 = 60;
/// How long a forwarded query may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

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

/// What the resolvers answer, replaced whole after every apply.
#[derive(Debug, Default)]
pub struct Zones {
    /// VPC id → (name → address).
    pub vpcs: HashMap<String, HashMap<String, Ipv4Addr>>,
    pub cloud: Vec<CloudName>,
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

struct Handler {
    /// The VPC this resolver serves; `None` for the cloud resolver.
    vpc: Option<String>,
    zones: Arc<RwLock<Arc<Zones>>>,
    upstream: Option<SocketAddr>,
    counters: Arc<Counters>,
}

/// How a name is answered.
enum Verdict {
    Address(Ipv4Addr),
    /// A name we own with no such record.
    NoSuchName,
    Elsewhere,
}

impl Handler {
    fn decide(&self, name: &str) -> Verdict {
        let zones = self.zones.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(ip) = self
            .vpc
            .as_ref()
            .and_then(|v| zones.vpcs.get(v))
            .and_then(|z| z.get(name))
        {
            return Verdict::Address(*ip);
        }
        for c in &zones.cloud {
            let under = name.len() > c.name.len()
                && name.ends_with(&c.name)
                && name.as_bytes()[name.len() - c.name.len() - 1] == b'.';
            if name == c.name || under {
                return Verdict::Address(c.ip);
            }
        }
        if owned(name) {
            Verdict::NoSuchName
        } else {
            Verdict::Elsewhere
        }
    }

    async fn forward(&self, upstream: SocketAddr, query: &[u8]) -> io::Result<Message> {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().expect("constant")
        } else {
            "[::]:0".parse().expect("constant")
        };
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(upstream).await?;
        socket.send(query).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream timed out"))??;
        Message::from_vec(&buf[..n]).map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Whether we are authoritative for `name`: our private zone `*.vpcep.*.internal`.
fn owned(name: &str) -> bool {
    name.ends_with(".internal") && name.split('.').any(|l| l == "vpcep")
}

fn info(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = self.upstream.is_some();
        let builder = MessageResponseBuilder::from_message_request(request);
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            let _ = response
                .send_response(builder.build_no_records(metadata))
                .await;
            return info(metadata);
        };
        let full = query.name().to_string();
        let name = full.trim_end_matches('.').to_ascii_lowercase();
        let verdict = self.decide(&name);
        let sent = match verdict {
            Verdict::Address(ip) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                let records = match query.query_type() {
                    RecordType::A | RecordType::ANY => vec![Record::from_rdata(
                        Name::from(query.name()),
                        TTL,
                        RData::A(A(ip)),
                    )],
                    _ => Vec::new(),
                };
                response
                    .send_response(builder.build(metadata, records.iter(), [], [], []))
                    .await
            }
            Verdict::NoSuchName => {
                self.counters.nxdomain.fetch_add(1, Ordering::Relaxed);
                metadata.response_code = ResponseCode::NXDomain;
                response
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Verdict::Elsewhere => match self.upstream {
                None => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    metadata.authoritative = false;
                    metadata.response_code = ResponseCode::Refused;
                    response
                        .send_response(builder.build_no_records(metadata))
                        .await
                }
                Some(up) => {
                    metadata.authoritative = false;
                    match self.forward(up, request.as_slice()).await {
                        Ok(m) => {
                            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                            metadata.response_code = m.metadata.response_code;
                            response
                                .send_response(builder.build(
                                    metadata,
                                    m.answers.iter(),
                                    m.authorities.iter(),
                                    [],
                                    m.additionals.iter(),
                                ))
                                .await
                        }
                        Err(e) => {
                            tracing::debug!(upstream = %up, error = %e, "forwarding failed");
                            self.counters.failed.fetch_add(1, Ordering::Relaxed);
                            metadata.response_code = ResponseCode::ServFail;
                            response
                                .send_response(builder.build_no_records(metadata))
                                .await
                        }
                    }
                }
            },
        };
        match sent {
            Ok(i) => i,
            Err(_) => info(metadata),
        }
    }
}

/// One running resolver: its server (dropping it stops its tasks) and where it listens.
struct Running {
    _server: Server<Handler>,
    addrs: Vec<(String, Ipv4Addr)>,
}

/// The node's resolvers and their zones.
pub struct Dns {
    config: DnsConfig,
    substrate: Arc<dyn Substrate>,
    zones: Arc<RwLock<Arc<Zones>>>,
    counters: Arc<Counters>,
    vpcs: tokio::sync::Mutex<HashMap<String, Running>>,
    cloud: tokio::sync::Mutex<Option<Running>>,
}

impl Dns {
    pub fn new(substrate: Arc<dyn Substrate>, config: DnsConfig) -> Dns {
        Dns {
            config,
            substrate,
            zones: Arc::default(),
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
            zones: self.zones.clone(),
            upstream: self.config.upstream,
            counters: self.counters.clone(),
        }
    }

    /// Replaces what every resolver answers.
    pub fn publish(&self, zones: Zones) {
        *self.zones.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(zones);
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
        let mut server = Server::new(self.handler(None));
        let (udp, tcp) = bind_pair(addr, &*self.substrate, None)?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
        tracing::info!(%addr, "cloud DNS listening");
        *cloud = Some(Running {
            _server: server,
            addrs: Vec::new(),
        });
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
        let mut server = Server::new(self.handler(Some(vpc.id.clone())));
        for (subnet, ip) in addrs {
            let (sub, v, s, ip) = (self.substrate.clone(), vpc.clone(), subnet.clone(), *ip);
            let local =
                tokio::task::spawn_blocking(move || sub.add_local(&v, &s, ip, Local::Endpoint))
                    .await
                    .map_err(io::Error::other)??
                    .unwrap_or(ip);
            let addr = SocketAddr::V4(SocketAddrV4::new(local, self.config.port));
            let (udp, tcp) = bind_pair(addr, &*self.substrate, Some(vpc))?;
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
            tracing::info!(vpc = %vpc.id, resolver = %ip, listen = %addr, "VPC resolver listening");
        }
        Ok(Running {
            _server: server,
            addrs: addrs.to_vec(),
        })
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

/// A UDP socket and a TCP listener on `addr`, made inside `vpc` (the node's own network
/// for `None`).
fn bind_pair(
    addr: SocketAddr,
    substrate: &dyn Substrate,
    vpc: Option<&VpcSpec>,
) -> io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = substrate.make_socket(
        vpc,
        Box::new(move || {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            Ok(s)
        }),
    )?;
    let tcp = substrate.make_socket(
        vpc,
        Box::new(move || {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            Ok(s)
        }),
    )?;
    let bound = |e: io::Error| io::Error::new(e.kind(), format!("DNS on {addr}: {e}"));
    Ok((
        tokio::net::UdpSocket::from_std(udp.into()).map_err(bound)?,
        tokio::net::TcpListener::from_std(tcp.into()).map_err(bound)?,
    ))
}

/// Asks `server` for the A records of `name` over UDP (a stub resolver for `vpcep demo`
/// and tests): the addresses, empty for NXDOMAIN, an error for any other failure.
pub async fn query_a(server: SocketAddr, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    use hickory_server::proto::op::{MessageType, OpCode, Query};
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

    #[test]
    fn ownership() {
        assert!(owned("abc.svc.vpcep.region-1.internal"));
        assert!(owned("obs.region-1.vpcep.internal"));
        assert!(!owned("example.com"));
        assert!(!owned("vpcep.example.com"));
    }
}
