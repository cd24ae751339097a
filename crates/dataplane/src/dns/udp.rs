//! UDP resolvers: sockets on a resolver address, each served by a thread of its own.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use socket2::{Domain, Socket, Type};
use vpcep_model::VpcSpec;

use super::answer::{Action, Handler};
use crate::substrate::Substrate;

/// The largest UDP query read (a longer one is cut, fails to parse and gets FORMERR).
const MAX_QUERY: usize = 4096;
/// At most this many UDP sockets (and loops) per resolver address, whatever the cores.
pub(super) const MAX_UDP_SOCKETS: usize = 16;

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

/// A thread of `serve_udp`, stopped when dropped (its socket is shut down, which wakes
/// it; the socket closes when the thread has returned).
pub(super) struct UdpLoop {
    socket: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl UdpLoop {
    pub(super) fn start(socket: std::net::UdpSocket, handler: Arc<Handler>) -> io::Result<UdpLoop> {
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

/// `n` UDP sockets on `addr` sharing it through `SO_REUSEPORT` (the kernel spreads clients
/// over them), made inside `vpc` (the node's own network for `None`) in one trip.
pub(super) fn bind_udp(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::tests::{handler, zones, OWN, VPC};
    use crate::dns::query_a;
    use hickory_server::proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{RData, Record};
    use std::net::Ipv4Addr;

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
}
