//! TCP sessions: one event loop per worker thread (epoll through mio) accepts in the
//! consumer VPC, admits, connects out of the provider VPC, sends the PROXY header if the
//! service asks for one, then copies both ways with pooled buffers. A session is a small
//! record in its port's table, not a task: two sockets, the readiness each has reported
//! and not used up, and a buffer per direction only while data is in flight, so an idle
//! session costs the process about a hundred bytes.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use tokio::sync::oneshot;
use vpcep_model::TcpProxy;

use super::{bump, pool, proxy_v2, Ctx, Stats};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a listener rests after an accept failed for want of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections one listener accepts, and reads or writes one session makes, before the
/// others get their turn.
const TURN: usize = 32;

/// A listener of one endpoint port, handed to a worker.
pub(super) struct Listen {
    /// The endpoint's start, which stopping it names.
    pub(super) key: u64,
    pub(super) listener: std::net::TcpListener,
    pub(super) server_port: u16,
    pub(super) ctx: Arc<Ctx>,
    /// The port's PROXY v2 header with an unspecified source (`proxy_v2::set_source`).
    pub(super) header: Arc<[u8]>,
}

enum Command {
    Listen(Listen),
    /// Closes the listeners and sessions of a start, then says so.
    Stop(u64, oneshot::Sender<()>),
}

struct Shared {
    commands: Mutex<Vec<Command>>,
    waker: mio::Waker,
}

/// A worker thread's handle: where its commands go.
pub(super) struct Worker {
    shared: Arc<Shared>,
}

const WAKE: Token = Token(usize::MAX);

impl Worker {
    pub(super) fn spawn(name: String) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let shared = Arc::new(Shared {
            commands: Mutex::default(),
            waker: mio::Waker::new(poll.registry(), WAKE)?,
        });
        let mut event_loop = Loop {
            poll,
            shared: shared.clone(),
            ports: Slab::new(),
            by_key: HashMap::new(),
            connecting: VecDeque::new(),
            resting: Vec::new(),
            again: Vec::new(),
            serial: 0,
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || event_loop.run())?;
        Ok(Worker { shared })
    }

    fn send(&self, c: Command) {
        self.shared
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
        if let Err(e) = self.shared.waker.wake() {
            tracing::error!(error = %e, "gateway worker cannot be woken");
        }
    }

    pub(super) fn listen(&self, l: Listen) {
        self.send(Command::Listen(l));
    }

    /// Closes the listeners and sessions of start `key`; the answer comes once they are.
    pub(super) fn stop(&self, key: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stop(key, tx));
        rx
    }
}

/// A token names a socket: its port's slot, then its session's slot and side (or the
/// port's listener).
const SLOT_BITS: u32 = 32;
const LISTENER: usize = (1 << SLOT_BITS) - 1;

fn token(port: usize, slot: usize, side: Side) -> Token {
    Token(port << (SLOT_BITS + 1) | slot << 1 | side as usize)
}

fn untoken(t: Token) -> (usize, usize, Side) {
    let side = if t.0 & 1 == 0 {
        Side::Client
    } else {
        Side::Backend
    };
    (
        t.0 >> (SLOT_BITS + 1),
        (t.0 >> 1) & ((1 << SLOT_BITS) - 1),
        side,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client = 0,
    Backend = 1,
}

struct Port {
    listener: TcpListener,
    server_port: u16,
    ctx: Arc<Ctx>,
    header: Arc<[u8]>,
    sessions: Slab<Session>,
}

impl Drop for Port {
    /// The endpoint is stopping: its sessions end with their port.
    fn drop(&mut self) {
        for _ in self.sessions.drain() {
            self.ctx.release(2);
        }
    }
}

struct Loop {
    poll: Poll,
    shared: Arc<Shared>,
    ports: Slab<Port>,
    by_key: HashMap<u64, Vec<usize>>,
    /// Sessions whose backend had not answered yet when they were opened: (deadline,
    /// port, slot, serial), in deadline order since every connect gets the same time.
    connecting: VecDeque<(Instant, usize, usize, u32)>,
    /// Listeners resting after a failed accept: (until, port).
    resting: Vec<(Instant, usize)>,
    /// Listeners and sessions whose turn ended with work left.
    again: Vec<Token>,
    /// Tells a session from a later one in the same slot.
    serial: u32,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "gateway worker cannot wait for events");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKE {
                    self.commands();
                    continue;
                }
                let (port, slot, side) = untoken(event.token());
                if slot == LISTENER {
                    self.accept(port);
                } else {
                    // An error or hang-up is said by the next read or write, so it only
                    // needs that side tried again.
                    let failed = event.is_error();
                    let r = event.is_readable() || event.is_read_closed() || failed;
                    let w = event.is_writable() || event.is_write_closed() || failed;
                    self.ready(port, slot, side, r, w, event.is_writable() && !failed);
                }
            }
            for t in std::mem::take(&mut self.again) {
                let (port, slot, side) = untoken(t);
                if slot == LISTENER {
                    self.accept(port);
                } else {
                    self.ready(port, slot, side, false, false, false);
                }
            }
            if !self.connecting.is_empty() || !self.resting.is_empty() {
                self.expire(Instant::now());
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let connect = self.connecting.front().map(|c| c.0);
        let rest = self.resting.iter().map(|r| r.0).min();
        connect.into_iter().chain(rest).min()
    }

    fn commands(&mut self) {
        let commands = std::mem::take(
            &mut *self
                .shared
                .commands
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for c in commands {
            match c {
                Command::Listen(l) => self.add(l),
                Command::Stop(key, done) => {
                    for p in self.by_key.remove(&key).unwrap_or_default() {
                        self.ports.try_remove(p);
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    fn add(&mut self, l: Listen) {
        let entry = self.ports.vacant_entry();
        let mut listener = TcpListener::from_std(l.listener);
        let registered = self.poll.registry().register(
            &mut listener,
            token(entry.key(), LISTENER, Side::Client),
            Interest::READABLE,
        );
        if let Err(e) = registered {
            tracing::error!(endpoint = %l.ctx.spec.id, error = %e, "listener cannot be watched");
            return;
        }
        self.by_key.entry(l.key).or_default().push(entry.key());
        entry.insert(Port {
            listener,
            server_port: l.server_port,
            ctx: l.ctx,
            header: l.header,
            sessions: Slab::new(),
        });
    }

    fn accept(&mut self, p: usize) {
        let Some(port) = self.ports.get_mut(p) else {
            return;
        };
        for _ in 0..TURN {
            match port.listener.accept() {
                Ok((client, SocketAddr::V4(peer))) => {
                    self.serial = self.serial.wrapping_add(1);
                    let serial = self.serial;
                    if let Some(c) = open(self.poll.registry(), p, port, client, peer, serial) {
                        self.connecting.push_back(c);
                    }
                }
                Ok(_) => {}
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                    _ => {
                        // Out of descriptors or memory: rest instead of spinning (the
                        // listener says nothing new until another client comes).
                        tracing::warn!(endpoint = %port.ctx.spec.id, error = %e, "accept failed");
                        self.resting.push((Instant::now() + ACCEPT_BACKOFF, p));
                        return;
                    }
                },
            }
        }
        self.again.push(token(p, LISTENER, Side::Client));
    }

    /// A session's socket said it is ready (`r`/`w`; `connected` if it is the backend
    /// saying its connect completed): the session does what that allows.
    fn ready(&mut self, p: usize, slot: usize, side: Side, r: bool, w: bool, connected: bool) {
        let Some(port) = self.ports.get_mut(p) else {
            return;
        };
        let Some(s) = port.sessions.get_mut(slot) else {
            return;
        };
        let (rb, wb) = match side {
            Side::Client => (CLIENT_R, CLIENT_W),
            Side::Backend => (BACKEND_R, BACKEND_W),
        };
        s.flags |= if r { rb } else { 0 } | if w { wb } else { 0 };
        if connected && side == Side::Backend {
            s.flags |= CONNECTED;
        }
        match s.drive(&port.ctx.stats) {
            Ok(Drive::Waiting) => {}
            Ok(Drive::More) => self.again.push(token(p, slot, side)),
            Ok(Drive::Done) => end(port, slot, None),
            Err(e) => end(port, slot, Some(e)),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, p, slot, serial)) = self.connecting.front() {
            if at > now {
                break;
            }
            self.connecting.pop_front();
            let Some(port) = self.ports.get_mut(p) else {
                continue;
            };
            let Some(s) = port.sessions.get_mut(slot) else {
                continue;
            };
            if s.serial != serial || s.flags & CONNECTED != 0 {
                continue;
            }
            // Connected without a word yet, or still trying.
            if s.backend.peer_addr().is_ok() {
                s.flags |= CONNECTED;
            } else {
                let e = io::Error::new(io::ErrorKind::TimedOut, "backend connect timed out");
                end(port, slot, Some((Side::Backend, e)));
            }
        }
        let due: Vec<usize> = self
            .resting
            .iter()
            .filter(|r| r.0 <= now)
            .map(|r| r.1)
            .collect();
        self.resting.retain(|r| r.0 > now);
        for p in due {
            self.accept(p);
        }
    }
}

/// Ends a session: closes both sockets and gives its slots back. A backend that failed
/// before it answered the connect counts as a backend error.
fn end(port: &mut Port, slot: usize, error: Option<Failed>) {
    let Some(s) = port.sessions.try_remove(slot) else {
        return;
    };
    if let Some((side, e)) = error {
        if side == Side::Backend && s.flags & CONNECTED == 0 {
            bump(&port.ctx.stats.backend_errors, 1);
        }
        let client = s.client.peer_addr().ok();
        tracing::debug!(endpoint = %port.ctx.spec.id, client = ?client, error = %e, "session ended with an error");
    }
    port.ctx.release(2);
}

/// Admits a client, connects to the backend and starts the session: the connect to
/// watch if the backend has not answered yet.
fn open(
    registry: &Registry,
    p: usize,
    port: &mut Port,
    client: TcpStream,
    peer: SocketAddrV4,
    serial: u32,
) -> Option<(Instant, usize, usize, u32)> {
    let ctx = &port.ctx;
    if !ctx.admit(*peer.ip(), 2) {
        // Refused cleanly: the client sees the connection close.
        return None;
    }
    let (backend_ip, tcp_proxy) = {
        let live = ctx.live();
        (live.backend, live.tcp_proxy)
    };
    let backend = match connect(ctx, SocketAddrV4::new(backend_ip, port.server_port)) {
        Ok(b) => b,
        Err(e) => {
            bump(&ctx.stats.backend_errors, 1);
            tracing::debug!(endpoint = %ctx.spec.id, client = %peer, error = %e, "backend unreachable");
            ctx.release(2);
            return None;
        }
    };
    let mut s = Session {
        client,
        backend,
        up: None,
        down: None,
        // A client usually speaks first, and its request is there by the time the
        // backend is connected, so reading it and writing it on are tried before
        // waiting; across the node's links the handshake has nearly always completed
        // by the time `connect` returns.
        flags: CLIENT_R | BACKEND_W,
        serial,
    };
    if matches!(tcp_proxy, TcpProxy::ProxyOpen | TcpProxy::Open) {
        match first_flight(&port.header, peer, &s.client) {
            Ok((flight, waiting)) => {
                s.up = Some(flight);
                if waiting {
                    s.flags &= !CLIENT_R;
                }
            }
            Err(e) => {
                tracing::debug!(endpoint = %ctx.spec.id, client = %peer, error = %e, "client gone");
                ctx.release(2);
                return None;
            }
        }
    }
    // The session goes as far as it can at once, and only then are its sockets watched:
    // registering reports what is ready already, so a session with work left is taken up
    // again by the events that follow.
    let slot = port.sessions.vacant_entry().key();
    let outcome = s.drive(&ctx.stats).and_then(|d| {
        if d != Drive::Done {
            let (c, b) = (token(p, slot, Side::Client), token(p, slot, Side::Backend));
            let both = Interest::READABLE | Interest::WRITABLE;
            // Failing to watch a socket is the gateway's failure, not the backend's.
            let ours = |e| (Side::Client, e);
            registry.register(&mut s.client, c, both).map_err(ours)?;
            registry.register(&mut s.backend, b, both).map_err(ours)?;
        }
        Ok(d)
    });
    let connected = s.flags & CONNECTED != 0;
    port.sessions.insert(s);
    match outcome {
        Ok(Drive::Done) => end(port, slot, None),
        Err(e) => end(port, slot, Some(e)),
        Ok(_) if !connected => return Some((Instant::now() + CONNECT_TIMEOUT, p, slot, serial)),
        Ok(_) => {}
    }
    None
}

/// The first bytes for the backend of a session with PROXY headers: the header, followed
/// in the same buffer (and so in the same write) by what the client has sent already;
/// and whether the client has yet to send anything. A client waiting for the server to
/// speak first gets the header on its own at once.
fn first_flight(
    header: &[u8],
    peer: SocketAddrV4,
    client: &TcpStream,
) -> io::Result<(Flight, bool)> {
    let mut buf = pool::take();
    let h = header.len();
    buf[..h].copy_from_slice(header);
    proxy_v2::set_source(&mut buf[..h], peer);
    let (n, waiting) = match (&*client).read(&mut buf[h..]) {
        Ok(n) => (n, false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, true),
        Err(e) => {
            pool::give(buf);
            return Err(e);
        }
    };
    let end = (h + n) as u32;
    Ok((Flight { buf, at: 0, end }, waiting))
}

/// Connects to the backend from a ready-made socket, without waiting.
fn connect(ctx: &Ctx, to: SocketAddrV4) -> io::Result<TcpStream> {
    let sock = ctx.backend_stream()?;
    match sock.connect(&SocketAddr::from(to).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}

/// Readiness a socket has reported and a read or write has not used up yet
/// (edge-triggered: epoll says it once).
const CLIENT_R: u8 = 1;
const CLIENT_W: u8 = 2;
const BACKEND_R: u8 = 4;
const BACKEND_W: u8 = 8;
/// The backend has answered the connect.
const CONNECTED: u8 = 16;
/// The client has finished sending (and the backend has been told).
const UP_ENDED: u8 = 32;
/// The backend has finished sending.
const DOWN_ENDED: u8 = 64;

/// Data read from one side and not yet all written to the other.
struct Flight {
    buf: Box<[u8]>,
    at: u32,
    end: u32,
}

struct Session {
    client: TcpStream,
    backend: TcpStream,
    /// Client → backend, and back.
    up: Option<Flight>,
    down: Option<Flight>,
    flags: u8,
    serial: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        for f in [self.up.take(), self.down.take()].into_iter().flatten() {
            pool::give(f.buf);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Drive {
    /// Nothing more to do until a socket says it is ready.
    Waiting,
    /// Its turn is over, with work left.
    More,
    /// Both directions have ended.
    Done,
}

/// One direction of a session: the flags it reads and sets, and its sides.
struct Way {
    from: Side,
    to: Side,
    readable: u8,
    writable: u8,
    ended: u8,
    other_ended: u8,
}

const UP: Way = Way {
    from: Side::Client,
    to: Side::Backend,
    readable: CLIENT_R,
    writable: BACKEND_W,
    ended: UP_ENDED,
    other_ended: DOWN_ENDED,
};
const DOWN: Way = Way {
    from: Side::Backend,
    to: Side::Client,
    readable: BACKEND_R,
    writable: CLIENT_W,
    ended: DOWN_ENDED,
    other_ended: UP_ENDED,
};

/// An I/O error and the side whose socket gave it.
type Failed = (Side, io::Error);

/// A write to the backend, or a read from it, says it has answered the connect.
fn answered(flags: &mut u8, side: Side) {
    if side == Side::Backend {
        *flags |= CONNECTED;
    }
}

impl Session {
    /// Copies both ways as far as the sockets allow, for at most one turn.
    fn drive(&mut self, stats: &Stats) -> Result<Drive, Failed> {
        for _ in 0..TURN {
            let up = pump(
                &self.client,
                &self.backend,
                &mut self.up,
                &mut self.flags,
                &UP,
                &stats.bytes_to_backend,
            )?;
            let down = pump(
                &self.backend,
                &self.client,
                &mut self.down,
                &mut self.flags,
                &DOWN,
                &stats.bytes_to_client,
            )?;
            if self.flags & (UP_ENDED | DOWN_ENDED) == UP_ENDED | DOWN_ENDED {
                return Ok(Drive::Done);
            }
            if !(up || down) {
                return Ok(Drive::Waiting);
            }
        }
        Ok(Drive::More)
    }
}

/// One step of copying `from` → `to`: writes what is in flight, or reads more (a buffer
/// is taken only for a read and given back once its data is written). At the end of
/// `from`, the first direction to end passes it on with a half-close; when the second
/// ends, closing both sockets says the same. Whether it did anything.
fn pump(
    from: &TcpStream,
    to: &TcpStream,
    flight: &mut Option<Flight>,
    flags: &mut u8,
    way: &Way,
    counter: &AtomicU64,
) -> Result<bool, Failed> {
    if *flags & way.ended != 0 {
        return Ok(false);
    }
    if let Some(f) = flight {
        if *flags & way.writable == 0 {
            return Ok(false);
        }
        return match (&*to).write(&f.buf[f.at as usize..f.end as usize]) {
            Ok(n) => {
                bump(counter, n as u64);
                answered(flags, way.to);
                f.at += n as u32;
                if f.at == f.end {
                    if let Some(f) = flight.take() {
                        pool::give(f.buf);
                    }
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *flags &= !way.writable;
                Ok(false)
            }
            Err(e) => Err((way.to, e)),
        };
    }
    if *flags & way.readable == 0 {
        return Ok(false);
    }
    let mut buf = pool::take();
    match (&*from).read(&mut buf) {
        Ok(0) => {
            pool::give(buf);
            *flags |= way.ended;
            if *flags & way.other_ended == 0 {
                let _ = to.shutdown(Shutdown::Write);
            }
            Ok(true)
        }
        Ok(n) => {
            answered(flags, way.from);
            *flight = Some(Flight {
                buf,
                at: 0,
                end: n as u32,
            });
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            pool::give(buf);
            *flags &= !way.readable;
            Ok(false)
        }
        Err(e) => {
            pool::give(buf);
            Err((way.from, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: the far end (a peer of the gateway) and the gateway's end.
    fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let far = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (near, _) = l.accept().unwrap();
        near.set_nonblocking(true).unwrap();
        far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (far, TcpStream::from_std(near))
    }

    const READY: u8 = CLIENT_R | CLIENT_W | BACKEND_R | BACKEND_W;

    /// Drives the session as its events would, until `far` has `want.len()` bytes.
    fn carry(s: &mut Session, stats: &Stats, far: &mut std::net::TcpStream, want: &[u8]) {
        let mut got = vec![0u8; want.len()];
        let mut have = 0;
        far.set_nonblocking(true).unwrap();
        for _ in 0..1000 {
            s.flags |= READY;
            assert!(s.drive(stats).is_ok());
            match far.read(&mut got[have..]) {
                Ok(n) => have += n,
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
            if have == want.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        far.set_nonblocking(false).unwrap();
        assert_eq!(got, want);
    }

    /// An idle session holds its two sockets and a few flags: no buffer, whichever way
    /// data went last, and the record itself stays small.
    #[test]
    fn an_idle_session_holds_no_buffer() {
        // Two sockets (4 bytes each in release builds; mio adds a selector id in debug
        // builds), two empty flights, flags and serial.
        let sockets = 2 * std::mem::size_of::<TcpStream>();
        assert!(std::mem::size_of::<Session>() <= sockets + 2 * 24 + 8);
        let (mut client, c) = pair();
        let (mut backend, b) = pair();
        let mut s = Session {
            client: c,
            backend: b,
            up: None,
            down: None,
            flags: 0,
            serial: 0,
        };
        let stats = Stats::default();
        client.write_all(b"request").unwrap();
        carry(&mut s, &stats, &mut backend, b"request");
        backend.write_all(b"response").unwrap();
        carry(&mut s, &stats, &mut client, b"response");
        s.flags |= READY;
        assert_eq!(s.drive(&stats).unwrap(), Drive::Waiting);
        assert!(
            s.up.is_none() && s.down.is_none(),
            "an idle session holds a buffer"
        );
        assert_eq!(
            s.flags & (CLIENT_R | BACKEND_R),
            0,
            "both sides were read dry"
        );
        assert_eq!(s.flags & CONNECTED, CONNECTED);
        let bytes = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (
                bytes(&stats.bytes_to_backend),
                bytes(&stats.bytes_to_client)
            ),
            (7, 8)
        );
        // The client ends: the backend is told; then the backend ends: the session is done.
        client.shutdown(Shutdown::Write).unwrap();
        carry(&mut s, &stats, &mut backend, b"");
        assert_eq!(
            backend.read(&mut [0u8; 8]).unwrap(),
            0,
            "the backend sees the end"
        );
        drop(backend);
        s.flags |= READY;
        assert_eq!(s.drive(&stats).unwrap(), Drive::Done);
        assert!(s.up.is_none() && s.down.is_none());
    }

    /// The header and the client's first bytes go to the backend in one write; a client
    /// that has not spoken yet leaves the header to go on its own.
    #[test]
    fn the_header_and_the_first_bytes_share_one_write() {
        let dst: SocketAddrV4 = "10.0.0.5:8080".parse().unwrap();
        let template = proxy_v2::encode(&proxy_v2::Header {
            src: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            dst,
            endpoint_id: "e".into(),
            marker_id: 7,
            service_id: "s".into(),
        });
        let peer: SocketAddrV4 = "10.0.0.20:40001".parse().unwrap();
        let (mut client, c) = pair();
        let (flight, waiting) = first_flight(&template, peer, &c).unwrap();
        assert!(waiting);
        assert_eq!(
            &flight.buf[..flight.end as usize],
            &proxy_v2::encode(&proxy_v2::Header {
                src: peer,
                dst,
                endpoint_id: "e".into(),
                marker_id: 7,
                service_id: "s".into(),
            })[..]
        );
        pool::give(flight.buf);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut ready = false;
        for _ in 0..1000 {
            let mut probe = [0u8; 1];
            if c.peek(&mut probe).is_ok() {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(ready);
        let (flight, waiting) = first_flight(&template, peer, &c).unwrap();
        assert!(!waiting);
        let sent = &flight.buf[..flight.end as usize];
        let (h, n) = proxy_v2::decode(sent).unwrap();
        assert_eq!((h.src, h.dst), (peer, dst));
        assert_eq!(&sent[n..], b"GET / HTTP/1.1\r\n\r\n");
        pool::give(flight.buf);
    }
}
