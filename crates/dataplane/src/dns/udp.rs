//! UDP resolvers: every resolver socket of the node served by one pool of threads whose
//! size follows the cores, not the VPCs.
//!
//! The workers wait on one epoll set that holds every socket, edge-triggered: a datagram
//! arriving on a socket wakes one idle worker, and a busy socket is drained by as many
//! workers as its datagrams keep awake. One set (rather than one per worker) means one
//! wake-up callback per datagram, whatever the number of workers. A worker receives,
//! answers in place into reused buffers and sends, with no task per query; only
//! forwarding (the rare path) becomes a task on the runtime. A resolver address costs
//! one UDP socket, whatever the cores.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use socket2::{Domain, Socket, Type};
use vpcep_model::VpcSpec;

use super::answer::{Action, Handler};
use crate::substrate::Substrate;

/// The largest UDP query read (a longer one is cut, fails to parse and gets FORMERR).
const MAX_QUERY: usize = 4096;
/// At most this many workers, whatever the cores.
const MAX_WORKERS: usize = 16;
/// Datagrams a worker answers from one socket before it looks at the others again, so a
/// flooded resolver cannot starve the other VPCs'.
const BUDGET: usize = 64;
/// The token of the pool's stop signal in the epoll set (socket tokens count from 0).
const STOP: u64 = u64::MAX;

/// The workers and what they serve; stopped (and joined) when dropped.
pub(super) struct UdpPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    /// The one epoll set every worker waits on, holding every socket.
    set: Epoll,
    /// Token → socket. Workers read it once per wake-up; only adding and removing a
    /// socket write it.
    sockets: RwLock<HashMap<u64, Arc<Source>>>,
    next: AtomicU64,
    /// Readable once the pool stops; level-triggered, so every worker sees it.
    stop: EventFd,
    /// Where forwarded queries wait for their upstream.
    runtime: tokio::runtime::Handle,
}

/// A socket and the resolver it belongs to.
struct Source {
    socket: std::net::UdpSocket,
    handler: Handler,
}

/// A socket served by the pool until this is dropped; then it is out of the set, and
/// closed once no worker holds it (at most one `BUDGET` of answers later), so its address
/// can be bound again at once.
pub(super) struct Served {
    shared: Arc<Shared>,
    token: u64,
}

/// A worker's reused buffers.
struct Buffers {
    packet: Vec<u8>,
    out: Vec<u8>,
    name: String,
}

impl UdpPool {
    /// One worker per core (at most `MAX_WORKERS`); forwarding runs on the current runtime.
    pub(super) fn start() -> io::Result<UdpPool> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let set = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        set.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        let shared = Arc::new(Shared {
            set,
            sockets: RwLock::default(),
            next: AtomicU64::new(0),
            stop,
            runtime: tokio::runtime::Handle::current(),
        });
        let mut pool = UdpPool {
            shared,
            workers: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let shared = pool.shared.clone();
            pool.workers.push(
                std::thread::Builder::new()
                    .name("vpcep-dns".into())
                    .stack_size(256 * 1024)
                    .spawn(move || work(&shared))?,
            );
        }
        Ok(pool)
    }

    /// How many threads serve every UDP resolver of the node.
    pub(super) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Serves `socket` (bound) with `handler` until the returned `Served` is dropped.
    pub(super) fn serve(
        &self,
        socket: std::net::UdpSocket,
        handler: Handler,
    ) -> io::Result<Served> {
        socket.set_nonblocking(true)?;
        let shared = &self.shared;
        let token = shared.next.fetch_add(1, Ordering::Relaxed);
        let source = Arc::new(Source { socket, handler });
        shared
            .sockets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, source.clone());
        let served = Served {
            shared: shared.clone(),
            token,
        };
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, token);
        shared.set.add(&source.socket, event)?;
        Ok(served)
    }
}

impl Drop for UdpPool {
    fn drop(&mut self) {
        let _ = self.shared.stop.write(1);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let source = self
            .shared
            .sockets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
        let Some(source) = source else { return };
        let _ = self.shared.set.delete(&source.socket);
        // A worker that took the socket before it left the map finishes its drain; wait
        // for it, so the socket is closed when this returns.
        let mut source = source;
        while let Err(s) = Arc::try_unwrap(source) {
            source = s;
            std::thread::yield_now();
        }
    }
}

/// A worker: waits on the set and drains whichever sockets are ready, until the pool stops.
fn work(shared: &Shared) {
    let mut events = [EpollEvent::empty(); 64];
    let mut buffers = Buffers {
        packet: vec![0u8; MAX_QUERY],
        out: Vec::with_capacity(512),
        name: String::with_capacity(256),
    };
    // Sockets whose datagrams outlasted a budget: edge-triggered, they would not be
    // reported again until the next datagram, so they are drained again (after the
    // others that are ready) without waiting.
    let (mut again, mut next) = (Vec::new(), Vec::new());
    loop {
        let timeout = if again.is_empty() {
            EpollTimeout::NONE
        } else {
            EpollTimeout::ZERO
        };
        let n = match shared.set.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "DNS worker cannot wait for its sockets");
                return;
            }
        };
        let ready = events[..n].iter().map(EpollEvent::data);
        for token in ready.chain(again.drain(..)) {
            if token == STOP {
                return;
            }
            let source = shared
                .sockets
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&token)
                .cloned();
            if let Some(source) = source {
                if drain(&source, &mut buffers, &shared.runtime) == Drained::Budget {
                    next.push(token);
                }
            }
        }
        std::mem::swap(&mut again, &mut next);
    }
}

/// How a drain ended.
#[derive(PartialEq, Eq)]
enum Drained {
    /// No datagram left.
    Empty,
    /// `BUDGET` answered, maybe more waiting.
    Budget,
}

/// Answers up to `BUDGET` datagrams waiting on `source`'s socket.
fn drain(source: &Arc<Source>, b: &mut Buffers, runtime: &tokio::runtime::Handle) -> Drained {
    let (socket, handler) = (&source.socket, &source.handler);
    let zone = handler.zone();
    for _ in 0..BUDGET {
        let (n, src) = match socket.recv_from(&mut b.packet) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        match handler.answer(&zone, &b.packet[..n], &mut b.out, &mut b.name) {
            Action::Reply => {
                let _ = socket.send_to(&b.out, src);
            }
            Action::Ignore => {}
            Action::Forward(up) => {
                // The task does not keep the socket open: a resolver stopped meanwhile
                // has no one left to answer.
                let (h, weak, query) = (
                    handler.clone(),
                    Arc::downgrade(source),
                    b.packet[..n].to_vec(),
                );
                runtime.spawn(async move {
                    if let Some(reply) = h.forwarded(up, &query).await {
                        if let Some(s) = Weak::upgrade(&weak) {
                            let _ = s.socket.send_to(&reply, src);
                        }
                    }
                });
            }
        }
    }
    Drained::Budget
}

/// A UDP socket on `addr`, made inside `vpc` (the node's own network for `None`).
pub(super) fn bind_udp(
    addr: SocketAddr,
    substrate: &dyn Substrate,
    vpc: Option<&VpcSpec>,
) -> io::Result<std::net::UdpSocket> {
    let bound = |e: io::Error| io::Error::new(e.kind(), format!("DNS on {addr}: {e}"));
    let socket = substrate
        .make_socket(vpc, &|| {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            Ok(s)
        })
        .map_err(bound)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::tests::{handler, names, OWN};
    use crate::dns::query_a;
    use hickory_server::proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{RData, Record};
    use std::net::Ipv4Addr;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_answers_and_forwards() {
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
        let h = handler(Some(up));
        let pool = UdpPool::start().unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let served = pool.serve(socket, h.clone()).unwrap();
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
        // Newly published names are seen by the running pool.
        let mut n = names();
        n.insert(
            "new.svc.vpcep.region-1.internal".to_owned(),
            Ipv4Addr::new(10, 0, 0, 11),
        );
        h.names.as_ref().unwrap().set(n);
        assert_eq!(
            query_a(addr, "new.svc.vpcep.region-1.internal")
                .await
                .unwrap(),
            [Ipv4Addr::new(10, 0, 0, 11)]
        );
        // Once no longer served, the socket is closed: its address is free at once.
        drop(served);
        std::net::UdpSocket::bind(addr).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_beyond_a_budget_are_answered_without_new_ones() {
        // Queued before the socket is served: one edge, three budgets' worth.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(socket.local_addr().unwrap()).unwrap();
        let mut q = Message::new(1, MessageType::Query, OpCode::Query);
        q.add_query(hickory_server::proto::op::Query::query(
            hickory_server::proto::rr::Name::from_ascii(OWN).unwrap(),
            hickory_server::proto::rr::RecordType::A,
        ));
        let n = 3 * BUDGET;
        for _ in 0..n {
            client.send(&q.to_vec().unwrap()).unwrap();
        }
        let pool = UdpPool::start().unwrap();
        let _served = pool.serve(socket, handler(None)).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        for i in 0..n {
            let got = client
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("answer {i}: {e}"));
            assert_eq!(Message::from_vec(&buf[..got]).unwrap().answers.len(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_pool_serves_many_sockets_with_the_same_threads() {
        let pool = UdpPool::start().unwrap();
        let workers = pool.workers();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(workers, cores.min(MAX_WORKERS));
        let mut served = Vec::new();
        for _ in 0..50 {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            served.push((addr, pool.serve(socket, handler(None)).unwrap()));
        }
        assert_eq!(pool.workers(), workers);
        assert_eq!(pool.shared.sockets.read().unwrap().len(), 50);
        for (addr, _) in &served {
            assert_eq!(
                query_a(*addr, OWN).await.unwrap(),
                [Ipv4Addr::new(10, 0, 0, 9)],
                "{addr}"
            );
        }
        // Half of them stop; the others go on answering.
        let kept = served.split_off(25);
        drop(served);
        assert_eq!(pool.shared.sockets.read().unwrap().len(), 25);
        for (addr, _) in &kept {
            assert_eq!(
                query_a(*addr, OWN).await.unwrap(),
                [Ipv4Addr::new(10, 0, 0, 9)]
            );
        }
        // Stopping the pool joins its workers.
        drop(kept);
        drop(pool);
    }
}
