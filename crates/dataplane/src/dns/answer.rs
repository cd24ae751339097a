//! The wire: a UDP query parsed and answered into a reused buffer (`Handler::answer`),
//! forwarding to the upstream, and the answer's encoding.

use std::io;
use std::iter;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{
    emit_message_parts, Edns, EmitAndCount, Header, HeaderCounts, Message, MessageType, Metadata,
    OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::proto::ProtoError;
use vpcep_model::CloudName;

use super::zones::{Names, Slot, Verdict, Zone};
use super::Counters;

/// Time to live of the answers we own: short, since endpoints come and go.
pub(super) const TTL: u32 = 60;
/// How long a forwarded query may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// The UDP payload size an EDNS answer of ours advertises.
pub(super) const EDNS_PAYLOAD: u16 = 1232;

/// How one resolver answers: from its VPC's names and the cloud's, as published now.
#[derive(Clone)]
pub(super) struct Handler {
    /// The names of the VPC this resolver serves; `None` for the cloud resolver.
    pub(super) names: Option<Arc<Slot<Names>>>,
    pub(super) cloud: Arc<Slot<Vec<CloudName>>>,
    pub(super) upstream: Option<SocketAddr>,
    pub(super) counters: Arc<Counters>,
}

impl Handler {
    /// What the resolver answers from now.
    pub(super) fn zone(&self) -> Zone {
        Zone {
            names: self.names.as_ref().map(|n| n.get()),
            cloud: self.cloud.get(),
        }
    }

    pub(super) fn decide(&self, name: &str) -> Verdict {
        self.zone().decide(name)
    }

    pub(super) async fn forward(&self, upstream: SocketAddr, query: &[u8]) -> io::Result<Message> {
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

    /// Answers one UDP query (`packet`) into `out` from `zone`, the way the TCP handler
    /// (`handle_request`) does, but without allocating on the common paths: `name` is a
    /// reused buffer for the query name. Forwarding is left to the caller.
    pub(super) fn answer(
        &self,
        zone: &Zone,
        packet: &[u8],
        out: &mut Vec<u8>,
        name: &mut String,
    ) -> Action {
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
            zone.decide(name)
        } else {
            // Escaped or IDNA labels: the text form of the name, as the TCP path uses it.
            let full = LowerName::new(query.name()).to_string();
            let lower = full.trim_end_matches('.').to_ascii_lowercase();
            zone.decide(&lower)
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
    pub(super) async fn forwarded(&self, upstream: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
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
pub(super) enum Action {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    use hickory_server::proto::rr::Label;
    use hickory_server::proto::rr::RData;

    pub(crate) const OWN: &str = "ep-0123456789abcdef.svc0001.vpcep.region-1.internal";

    /// The names of the VPC in these tests.
    pub(crate) fn names() -> Names {
        HashMap::from([(OWN.to_owned(), Ipv4Addr::new(10, 0, 0, 9))])
    }

    /// That VPC's resolver, with one cloud name.
    pub(crate) fn handler(upstream: Option<SocketAddr>) -> Handler {
        let (own, cloud) = (Slot::default(), Slot::default());
        own.set(names());
        cloud.set(vec![CloudName {
            name: "obs.region-1.vpcep.internal".to_owned(),
            ip: Ipv4Addr::new(100, 64, 0, 1),
        }]);
        Handler {
            names: Some(Arc::new(own)),
            cloud: Arc::new(cloud),
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
        let action = h.answer(&h.zone(), packet, &mut out, &mut name);
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
}
