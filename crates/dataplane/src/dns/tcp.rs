//! TCP resolvers, served by hickory-server with the same decisions as UDP.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use socket2::{Domain, Socket, Type};
use vpcep_model::VpcSpec;

use super::answer::{Handler, TTL};
use super::zones::Verdict;
use crate::substrate::Substrate;

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

/// A TCP listener on `addr`, made inside `vpc` (the node's own network for `None`).
pub(super) fn bind_tcp(
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
