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

use std::collections::HashMap;
use std::io;
use std::iter;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    emit_message_parts, Edns, EmitAndCount, Header, HeaderCounts, Message, MessageType, Metadata,
    OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::proto::ProtoError;
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
/// The UDP payload size an EDNS answer of ours advertises.
const EDNS_PAYLOAD: u16 = 1232;
/// The largest UDP query read (a longer one is cut, fails to parse and gets FORMERR).
const MAX_QUERY: usize = 4096;
/// At most this many UDP sockets (and loops) per resolver address, whatever the cores.
const MAX_UDP_SOCKETS: usize = 16;

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
    /// VPC id → (name → address); names lowercase, without the final dot.
    pub vpcs: HashMap<String, HashMap<String, Ipv4Addr>>,
    pub cloud: Vec<CloudName>,
}

/// The zones every resolver answers from; `generation` moves on at each replacement, so
/// a UDP loop keeps its own `Arc<Zones>` and looks at the lock only when it moved.
#[derive(Debug, Default)]
struct Published {
    zones: RwLock<Arc<Zones>>,
    generation: AtomicU64,
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

#[derive(Clone)]
struct Handler {
    /// The VPC this resolver serves; `None` for the cloud resolver.
    vpc: Option<String>,
    published: Arc<Published>,
    upstream: Option<SocketAddr>,
    counters: Arc<Counters>,
}

/// How a name is answered.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Address(Ipv4Addr),
    /// A name we own with no such record.
    NoSuchName,
    Elsewhere,
}

/// How `name` (lowercase, no final dot) is answered in `vpc` (`None`: the cloud resolver).
fn decide(zones: &Zones, vpc: Option<&str>, name: &str) -> Verdict {
    if let Some(ip) = vpc
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

impl Handler {
    fn zones(&self) -> Arc<Zones> {
        self.published
            .zones
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The zones now and their generation.
    fn snapshot(&self) -> (u64, Arc<Zones>) {
        let generation = self.published.generation.load(Ordering::Acquire);
        (generation, self.zones())
    }

    /// Replaces `zones` if new ones were published since `generation`.
    fn refresh(&self, generation: &mut u64, zones: &mut Arc<Zones>) {
        if self.published.generation.load(Ordering::Acquire) != *generation {
            (*generation, *zones) = self.snapshot();
        }
    }

    fn decide(&self, name: &str) -> Verdict {
        decide(&self.zones(), self.vpc.as_deref(), name)
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

    /// Answers one UDP query (`packet`) into `out` from `zones`, the way the TCP handler
    /// (`handle_request`) does, but without allocating on the common paths: `name` is a
    /// reused buffer for the query name. Forwarding is left to the caller.
    fn answer(&self, zones: &Zones, packet: &[u8], out: &mut Vec<u8>, name: &mut String) -> Action {
        let q = match parse(packet) {
            Ok(q) => q,
            Err(Unparsed::Ignore) => return Action::Ignore,
            Err(Unparsed::FormErr(request)) => {
                // As hickory-server: FORMERR, no question, no EDNS.
                let mut metadata = Metadata::response_from_request(&request);
                metadata.response_code = ResponseCode::FormErr;
                let reply = Reply {
                    metadata,
                    question: RawQuestion::default(),
                    edns: None,
                    limit: 512,
                };
                reply.encode_empty(out);
                return Action::Reply;
            }
        };
        let mut reply = Reply::to(&q);
        reply.metadata.authoritative = true;
        reply.metadata.recursion_available = self.upstream.is_some();
        let Some(query) = &q.first else {
            reply.metadata.response_code = ResponseCode::FormErr;
            reply.encode_empty(out);
            return Action::Reply;
        };
        if q.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 6.1.3: we only speak EDNS version 0.
            reply.metadata.authoritative = false;
            reply.metadata.response_code = ResponseCode::BADVERS;
            reply.encode_empty(out);
            return Action::Reply;
        }
        let verdict = if plain_lower(query.name(), name) {
            decide(zones, self.vpc.as_deref(), name)
        } else {
            // Escaped or IDNA labels: the text form of the name, as the TCP path uses it.
            let full = LowerName::new(query.name()).to_string();
            let lower = full.trim_end_matches('.').to_ascii_lowercase();
            decide(zones, self.vpc.as_deref(), &lower)
        };
        match verdict {
            Verdict::Address(ip) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                let record = matches!(query.query_type(), RecordType::A | RecordType::ANY)
                    .then_some(OwnA {
                        name: query.name(),
                        at: q.name_at,
                        ip,
                    });
                reply.encode(out, &mut record.iter(), &mut none(), &mut none());
            }
            Verdict::NoSuchName => {
                self.counters.nxdomain.fetch_add(1, Ordering::Relaxed);
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.encode_empty(out);
            }
            Verdict::Elsewhere => match self.upstream {
                None => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    reply.metadata.authoritative = false;
                    reply.metadata.response_code = ResponseCode::Refused;
                    reply.encode_empty(out);
                }
                Some(up) => return Action::Forward(up),
            },
        }
        Action::Reply
    }

    /// The answer to `packet`, a UDP query `answer` left to the upstream: the upstream's
    /// records under our header, or SERVFAIL.
    async fn forwarded(&self, upstream: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let q = parse(packet).ok()?;
        let mut reply = Reply::to(&q);
        reply.metadata.recursion_available = true;
        let mut out = Vec::with_capacity(512);
        match self.forward(upstream, packet).await {
            Ok(m) => {
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                reply.metadata.response_code = m.metadata.response_code;
                reply.encode(
                    &mut out,
                    &mut m.answers.iter(),
                    &mut m.authorities.iter(),
                    &mut m.additionals.iter(),
                );
            }
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "forwarding failed");
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                reply.metadata.response_code = ResponseCode::ServFail;
                reply.encode_empty(&mut out);
            }
        }
        Some(out)
    }
}

/// What a UDP loop does with a datagram after `Handler::answer`.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Send the answer written.
    Reply,
    /// Nothing to send (not a query).
    Ignore,
    /// Not ours: ask this upstream (`Handler::forwarded`).
    Forward(SocketAddr),
}

/// A UDP query as hickory-server reads one: a header, then every section must parse.
struct Parsed<'a> {
    metadata: Metadata,
    question: RawQuestion<'a>,
    /// The first question, the one answered.
    first: Option<Query>,
    /// Where the first question's name is in the answer too, if it was not compressed
    /// (so the answer record can point at it).
    name_at: Option<u16>,
    edns: Option<Edns>,
}

enum Unparsed {
    /// Shorter than a header, or a response: no answer.
    Ignore,
    /// The header of a query whose sections did not parse.
    FormErr(Metadata),
}

fn parse(packet: &[u8]) -> Result<Parsed<'_>, Unparsed> {
    let mut d = BinDecoder::new(packet);
    let header = Header::read(&mut d).map_err(|_| Unparsed::Ignore)?;
    let form_err = |_| Unparsed::FormErr(header.metadata);
    let start = d.index();
    let mut first = None;
    let mut name_at = None;
    for i in 0..header.counts.queries {
        let q = Query::read(&mut d).map_err(form_err)?;
        if i == 0 {
            let wire = q.name().iter().map(|l| l.len() + 1).sum::<usize>() + 1;
            if d.index() - start == wire + 4 {
                name_at = u16::try_from(start).ok();
            }
            first = Some(q);
        }
    }
    let question = RawQuestion {
        bytes: &packet[start..d.index()],
        count: header.counts.queries,
    };
    let op = header.metadata.op_code;
    let c = header.counts;
    Message::read_records(&mut d, c.answers.into(), false, op).map_err(form_err)?;
    Message::read_records(&mut d, c.authorities.into(), false, op).map_err(form_err)?;
    let (_, edns, _) =
        Message::read_records(&mut d, c.additionals.into(), true, op).map_err(form_err)?;
    if header.metadata.message_type == MessageType::Response {
        return Err(Unparsed::Ignore);
    }
    Ok(Parsed {
        metadata: header.metadata,
        question,
        first,
        name_at,
        edns,
    })
}

/// Writes `name` as `decide` takes it (lowercase, without the final dot) into `out`, if
/// its text form is just its labels' bytes — letters, digits, `_`, and `-` except first,
/// and no `xn--` label (shown as Unicode) — and says whether it was.
fn plain_lower(name: &Name, out: &mut String) -> bool {
    out.clear();
    for (i, label) in name.iter().enumerate() {
        let plain = label.first() != Some(&b'-')
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            && !label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"xn--"));
        if !plain {
            return false;
        }
        if i > 0 {
            out.push('.');
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    true
}

/// The question section of a query, echoed as received (hickory-server does the same).
#[derive(Clone, Copy, Default)]
struct RawQuestion<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl EmitAndCount for RawQuestion<'_> {
    fn emit(&mut self, encoder: &mut BinEncoder<'_>) -> Result<usize, ProtoError> {
        encoder.emit_vec(self.bytes)?;
        Ok(self.count.into())
    }
}

/// Our A record for the question's name: its owner is a pointer to the question's name
/// (what a compressing encoder would write) unless that name was itself compressed.
struct OwnA<'a> {
    name: &'a Name,
    at: Option<u16>,
    ip: Ipv4Addr,
}

impl BinEncodable for OwnA<'_> {
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
        match self.at {
            Some(at) => encoder.emit_u16(0xC000 | at)?,
            None => self.name.emit(encoder)?,
        }
        RecordType::A.emit(encoder)?;
        DNSClass::IN.emit(encoder)?;
        encoder.emit_u32(TTL)?;
        encoder.emit_u16(4)?;
        A(self.ip).emit(encoder)
    }
}

fn none() -> iter::Empty<&'static Record> {
    iter::empty()
}

/// An answer's header, question and EDNS, and how long it may be.
struct Reply<'a> {
    metadata: Metadata,
    question: RawQuestion<'a>,
    edns: Option<Edns>,
    limit: u16,
}

impl<'a> Reply<'a> {
    /// The answer to `q`: its question, EDNS (version 0) if it had EDNS, and within its
    /// UDP payload size (512 bytes without EDNS).
    fn to(q: &Parsed<'a>) -> Reply<'a> {
        Reply {
            metadata: Metadata::response_from_request(&q.metadata),
            question: q.question,
            edns: q.edns.as_ref().map(|_| {
                let mut e = Edns::new();
                e.set_max_payload(EDNS_PAYLOAD);
                e
            }),
            limit: q.edns.as_ref().map_or(512, |e| e.max_payload().max(512)),
        }
    }

    fn encode_empty(&self, out: &mut Vec<u8>) {
        self.encode(out, &mut none(), &mut none(), &mut none());
    }

    /// Writes the answer into `out` (cleared first); records that do not fit are left out
    /// with TC set. Like hickory-server, a bare SERVFAIL if it cannot be encoded at all.
    fn encode(
        &self,
        out: &mut Vec<u8>,
        answers: &mut impl EmitAndCount,
        authorities: &mut impl EmitAndCount,
        additionals: &mut impl EmitAndCount,
    ) {
        out.clear();
        let mut encoder = BinEncoder::new(out);
        encoder.set_max_size(self.limit);
        let emitted = emit_message_parts(
            &self.metadata,
            &mut self.question.clone(),
            answers,
            authorities,
            additionals,
            self.edns.as_ref(),
            None,
            &mut encoder,
        );
        if let Err(e) = emitted {
            tracing::debug!(error = %e, "DNS answer could not be encoded");
            out.clear();
            let mut metadata =
                Metadata::new(self.metadata.id, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata,
                counts: HeaderCounts::default(),
            };
            let _ = header.emit(&mut BinEncoder::new(out));
        }
    }
}

/// One UDP socket of a resolver address, served by a thread of its own: receives,
/// answers in place and sends, one query after the other; only forwarding (the rare path)
/// becomes a task on `runtime`. Returns once `stop` is set (and the socket shut down).
fn serve_udp(
    socket: Arc<std::net::UdpSocket>,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) {
    let mut packet = vec![0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(512);
    let mut name = String::with_capacity(256);
    let (mut generation, mut zones) = handler.snapshot();
    loop {
        let received = socket.recv_from(&mut packet);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (n, src) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        handler.refresh(&mut generation, &mut zones);
        match handler.answer(&zones, &packet[..n], &mut out, &mut name) {
            Action::Reply => {
                let _ = socket.send_to(&out, src);
            }
            Action::Ignore => {}
            Action::Forward(up) => {
                let (h, s, query) = (handler.clone(), socket.clone(), packet[..n].to_vec());
                runtime.spawn(async move {
                    if let Some(reply) = h.forwarded(up, &query).await {
                        let _ = s.send_to(&reply, src);
                    }
                });
            }
        }
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

/// One running resolver: its TCP server and UDP loops (dropping them stops them) and
/// where it listens.
struct Running {
    _tcp: Server<Handler>,
    _udp: Vec<UdpLoop>,
    addrs: Vec<(String, Ipv4Addr)>,
}

/// A thread of `serve_udp`, stopped when dropped (its socket is shut down, which wakes
/// it; the socket closes when the thread has returned).
struct UdpLoop {
    socket: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl UdpLoop {
    fn start(socket: std::net::UdpSocket, handler: Arc<Handler>) -> io::Result<UdpLoop> {
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, h, st, rt) = (
            socket.clone(),
            handler,
            stop.clone(),
            tokio::runtime::Handle::current(),
        );
        std::thread::Builder::new()
            .name("vpcep-dns".into())
            .stack_size(256 * 1024)
            .spawn(move || serve_udp(s, h, st, rt))?;
        Ok(UdpLoop { socket, stop })
    }
}

impl Drop for UdpLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
    }
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

/// `n` UDP sockets on `addr` sharing it through `SO_REUSEPORT` (the kernel spreads clients
/// over them), made inside `vpc` (the node's own network for `None`) in one trip.
fn bind_udp(
    addr: SocketAddr,
    substrate: &dyn Substrate,
    vpc: Option<&VpcSpec>,
    n: usize,
) -> io::Result<Vec<std::net::UdpSocket>> {
    let bound = |e: io::Error| io::Error::new(e.kind(), format!("DNS on {addr}: {e}"));
    let sockets = substrate
        .make_sockets(vpc, n, &|| {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            Ok(s)
        })
        .map_err(bound)?;
    Ok(sockets.into_iter().map(Into::into).collect())
}

/// A TCP listener on `addr`, made inside `vpc` (the node's own network for `None`).
fn bind_tcp(
    addr: SocketAddr,
    substrate: &dyn Substrate,
    vpc: Option<&VpcSpec>,
) -> io::Result<tokio::net::TcpListener> {
    let tcp = substrate.make_socket(vpc, &|| {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s)
    })?;
    let bound = |e: io::Error| io::Error::new(e.kind(), format!("DNS on {addr}: {e}"));
    tokio::net::TcpListener::from_std(tcp.into()).map_err(bound)
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
    use hickory_server::proto::rr::Label;

    const VPC: &str = "vpc-1";
    const OWN: &str = "ep-0123456789abcdef.svc0001.vpcep.region-1.internal";

    fn zones() -> Zones {
        let mut vpcs = HashMap::new();
        vpcs.insert(
            VPC.to_owned(),
            HashMap::from([(OWN.to_owned(), Ipv4Addr::new(10, 0, 0, 9))]),
        );
        vpcs.insert(
            "vpc-2".to_owned(),
            HashMap::from([(
                "ep-other.svc0002.vpcep.region-1.internal".to_owned(),
                Ipv4Addr::new(10, 0, 0, 10),
            )]),
        );
        Zones {
            vpcs,
            cloud: vec![CloudName {
                name: "obs.region-1.vpcep.internal".to_owned(),
                ip: Ipv4Addr::new(100, 64, 0, 1),
            }],
        }
    }

    fn handler(upstream: Option<SocketAddr>) -> Handler {
        let published = Published::default();
        *published.zones.write().unwrap() = Arc::new(zones());
        Handler {
            vpc: Some(VPC.to_owned()),
            published: Arc::new(published),
            upstream,
            counters: Arc::default(),
        }
    }

    fn query(name: Name, rtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
        let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(name, rtype));
        q.edns = edns;
        q.to_vec().unwrap()
    }

    fn ask(h: &Handler, packet: &[u8]) -> (Action, Option<Message>) {
        let mut out = Vec::new();
        let mut name = String::new();
        let action = h.answer(&h.zones(), packet, &mut out, &mut name);
        let reply = (action == Action::Reply).then(|| Message::from_vec(&out).unwrap());
        (action, reply)
    }

    fn ask_a(h: &Handler, name: &str) -> Message {
        let packet = query(Name::from_ascii(name).unwrap(), RecordType::A, None);
        let (action, reply) = ask(h, &packet);
        assert_eq!(action, Action::Reply, "{name}");
        reply.unwrap()
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn own_names_are_answered_case_insensitively() {
        let h = handler(None);
        for name in [OWN.to_owned(), format!("{OWN}."), OWN.to_ascii_uppercase()] {
            let m = ask_a(&h, &name);
            assert_eq!(m.metadata.id, 0x1234);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative && m.metadata.recursion_desired);
            assert!(!m.metadata.recursion_available && !m.metadata.truncation);
            assert_eq!(addresses(&m), [Ipv4Addr::new(10, 0, 0, 9)]);
            // The question comes back as asked, the record's owner is that name.
            let mut asked = Name::from_ascii(&name).unwrap();
            asked.set_fqdn(true);
            let echoed = m.queries[0].name().to_ascii();
            assert_eq!(echoed.trim_end_matches('.'), name.trim_end_matches('.'));
            assert_eq!(m.queries[0].query_type(), RecordType::A);
            assert_eq!(m.answers[0].name, asked);
            assert_eq!(m.answers[0].ttl, TTL);
            assert_eq!(m.answers[0].dns_class, DNSClass::IN);
            assert!(m.edns.is_none());
        }
        assert_eq!(h.counters.answered.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn own_names_have_no_other_records() {
        let h = handler(None);
        let packet = query(Name::from_ascii(OWN).unwrap(), RecordType::AAAA, None);
        let m = ask(&h, &packet).1.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        let packet = query(Name::from_ascii(OWN).unwrap(), RecordType::ANY, None);
        let m = ask(&h, &packet).1.unwrap();
        assert_eq!(addresses(&m), [Ipv4Addr::new(10, 0, 0, 9)]);
    }

    #[test]
    fn cloud_names_and_names_under_them() {
        let h = handler(None);
        for name in [
            "obs.region-1.vpcep.internal",
            "Bucket.OBS.region-1.vpcep.internal.",
        ] {
            let m = ask_a(&h, name);
            assert_eq!(addresses(&m), [Ipv4Addr::new(100, 64, 0, 1)], "{name}");
        }
        // Not under it: a longer label that merely ends the same way.
        let m = ask_a(&h, "xobs.region-1.vpcep.internal");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn unknown_and_foreign_names_under_our_zone_do_not_exist() {
        let h = handler(None);
        for name in [
            "ep-missing.svc0001.vpcep.region-1.internal",
            // Another VPC's endpoint.
            "ep-other.svc0002.vpcep.region-1.internal",
        ] {
            let m = ask_a(&h, name);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty());
            assert_eq!(m.queries.len(), 1);
        }
        assert_eq!(h.counters.nxdomain.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn other_names_are_refused_or_forwarded() {
        let h = handler(None);
        let m = ask_a(&h, "www.example.com");
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(h.counters.refused.load(Ordering::Relaxed), 1);

        let up: SocketAddr = "192.0.2.1:53".parse().unwrap();
        let h = handler(Some(up));
        let packet = query(
            Name::from_ascii("www.example.com").unwrap(),
            RecordType::A,
            None,
        );
        assert_eq!(ask(&h, &packet).0, Action::Forward(up));
        // Our own names are still ours, with recursion available.
        let m = ask_a(&h, OWN);
        assert!(m.metadata.recursion_available && m.metadata.authoritative);
        assert_eq!(addresses(&m), [Ipv4Addr::new(10, 0, 0, 9)]);
    }

    #[test]
    fn edns_is_echoed() {
        let h = handler(None);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        let packet = query(Name::from_ascii(OWN).unwrap(), RecordType::A, Some(edns));
        let m = ask(&h, &packet).1.unwrap();
        assert_eq!(addresses(&m), [Ipv4Addr::new(10, 0, 0, 9)]);
        let e = m.edns.expect("an OPT record");
        assert_eq!((e.version(), e.max_payload()), (0, EDNS_PAYLOAD));

        let packet = query(
            Name::from_ascii("nope.vpcep.region-1.internal").unwrap(),
            RecordType::A,
            Some(Edns::new()),
        );
        let m = ask(&h, &packet).1.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.edns.is_some());

        let mut edns = Edns::new();
        edns.set_version(1);
        let packet = query(Name::from_ascii(OWN).unwrap(), RecordType::A, Some(edns));
        let m = ask(&h, &packet).1.unwrap();
        // BADVERS (16, which hickory reads back as BADSIG).
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn malformed_queries_and_responses() {
        let h = handler(None);
        // Shorter than a header: nothing.
        assert_eq!(ask(&h, &[0x12, 0x34, 0x01]).0, Action::Ignore);
        // A response: nothing (no reflection).
        let mut r = Message::new(7, MessageType::Response, OpCode::Query);
        r.add_query(Query::query(Name::from_ascii(OWN).unwrap(), RecordType::A));
        assert_eq!(ask(&h, &r.to_vec().unwrap()).0, Action::Ignore);
        // A header announcing a question that is not there: FORMERR.
        let mut packet = query(Name::from_ascii(OWN).unwrap(), RecordType::A, None);
        packet.truncate(20);
        let m = ask(&h, &packet).1.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.queries.is_empty());
        // No question at all: FORMERR.
        let q = Message::new(9, MessageType::Query, OpCode::Query);
        let m = ask(&h, &q.to_vec().unwrap()).1.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn names_with_unusual_labels_are_decided_on_their_text() {
        let names = [
            Name::from_ascii("Ab_c.x-1.vpcep.Internal.").unwrap(),
            Name::from_labels(vec![&b"a.b"[..], b"vpcep", b"r", b"internal"]).unwrap(),
            Name::from_labels(vec![&b"-a"[..], b"vpcep", b"internal"]).unwrap(),
            Name::from_labels(vec![&b"*"[..], b"example", b"com"]).unwrap(),
            Name::from_ascii("XN--bcher-kva.example.").unwrap(),
            Name::root(),
        ];
        for name in names {
            let text = LowerName::new(&name).to_string();
            let text = text.trim_end_matches('.').to_ascii_lowercase();
            let mut plain = String::new();
            if plain_lower(&name, &mut plain) {
                assert_eq!(plain, text, "{name:?}");
            }
        }
        // A label holding a dot is not the label `vpcep` (nor a name of ours).
        let h = handler(None);
        let name = Name::from_labels(vec![&b"x.vpcep"[..], b"r", b"internal"]).unwrap();
        let mut plain = String::new();
        assert!(!plain_lower(&name, &mut plain));
        let m = ask(&h, &query(name, RecordType::A, None)).1.unwrap();
        // Decided on `x\.vpcep.r.internal`, as the text form has always been.
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            Label::from_raw_bytes(b"vpcep").unwrap().to_string(),
            "vpcep"
        );
    }

    #[test]
    fn answers_without_edns_stay_within_512_bytes() {
        let request = Metadata::new(1, MessageType::Query, OpCode::Query);
        let reply = Reply {
            metadata: Metadata::response_from_request(&request),
            question: RawQuestion::default(),
            edns: None,
            limit: 512,
        };
        let records: Vec<Record> = (0..100u8)
            .map(|i| {
                Record::from_rdata(
                    Name::from_ascii(format!("name-{i}.example.com.")).unwrap(),
                    TTL,
                    RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
                )
            })
            .collect();
        let mut out = Vec::new();
        reply.encode(&mut out, &mut records.iter(), &mut none(), &mut none());
        assert!(out.len() <= 512, "{}", out.len());
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty() && m.answers.len() < 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_loop_answers_and_forwards() {
        // A stand-in upstream that answers every query with 192.0.2.7.
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, src)) = upstream.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.response_code = ResponseCode::NoError;
                let name = q.queries[0].name().clone();
                r.add_query(q.queries[0].clone());
                r.add_answer(Record::from_rdata(
                    name,
                    30,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                ));
                let _ = upstream.send_to(&r.to_vec().unwrap(), src).await;
            }
        });
        let h = Arc::new(handler(Some(up)));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let task = UdpLoop::start(socket, h.clone()).unwrap();
        assert_eq!(
            query_a(addr, &OWN.to_ascii_uppercase()).await.unwrap(),
            [Ipv4Addr::new(10, 0, 0, 9)]
        );
        assert!(query_a(addr, "gone.svc.vpcep.region-1.internal")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            query_a(addr, "www.example.com").await.unwrap(),
            [Ipv4Addr::new(192, 0, 2, 7)]
        );
        assert_eq!(h.counters.forwarded.load(Ordering::Relaxed), 1);
        // Newly published zones are seen by the running loop.
        let mut z = zones();
        z.vpcs.get_mut(VPC).unwrap().insert(
            "new.svc.vpcep.region-1.internal".to_owned(),
            Ipv4Addr::new(10, 0, 0, 11),
        );
        *h.published.zones.write().unwrap() = Arc::new(z);
        h.published.generation.fetch_add(1, Ordering::Release);
        assert_eq!(
            query_a(addr, "new.svc.vpcep.region-1.internal")
                .await
                .unwrap(),
            [Ipv4Addr::new(10, 0, 0, 11)]
        );
        drop(task);
    }

    #[test]
    fn ownership() {
        assert!(owned("abc.svc.vpcep.region-1.internal"));
        assert!(owned("obs.region-1.vpcep.internal"));
        assert!(!owned("example.com"));
        assert!(!owned("vpcep.example.com"));
    }
}
