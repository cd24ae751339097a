//! UDP sessions: one per client address, each with its own socket in the provider VPC
//! (bound to the SNAT address, connected to the backend), so replies find their way
//! back. A session ends after 30 s without traffic either way.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{bump, pool, Ctx};

pub(crate) const IDLE: Duration = Duration::from_secs(30);

struct Session {
    sock: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
}

pub(super) async fn serve(listener: UdpSocket, server_port: u16, ctx: Arc<Ctx>) {
    let listener = Arc::new(listener);
    let sessions: Arc<Mutex<HashMap<SocketAddrV4, Session>>> = Arc::default();
    let epoch = Instant::now();
    let mut stop = ctx.stop.clone();
    loop {
        let got = tokio::select! {
            _ = stop.changed() => return,
            r = recv(&listener) => r,
        };
        let (buf, n, peer) = match got {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(endpoint = %ctx.spec.id, error = %e, "udp receive failed");
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else {
            pool::give(buf);
            continue;
        };
        let existing = sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|s| (s.sock.clone(), s.last.clone()));
        let (sock, last) = match existing {
            Some(s) => s,
            None => match open(&ctx, server_port, peer, &listener, &sessions, epoch).await {
                Some(s) => s,
                None => {
                    pool::give(buf);
                    continue;
                }
            },
        };
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if sock.send(&buf[..n]).await.is_ok() {
            bump(&ctx.stats.bytes_to_backend, n as u64);
        }
        pool::give(buf);
    }
}

async fn recv(sock: &UdpSocket) -> io::Result<(Box<[u8]>, usize, SocketAddr)> {
    loop {
        sock.readable().await?;
        let mut buf = pool::take();
        match sock.try_recv_from(&mut buf) {
            Ok((n, peer)) => return Ok((buf, n, peer)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pool::give(buf),
            Err(e) => {
                pool::give(buf);
                return Err(e);
            }
        }
    }
}

/// Admits a new client and starts its session; `None` if it is refused.
async fn open(
    ctx: &Arc<Ctx>,
    server_port: u16,
    peer: SocketAddrV4,
    listener: &Arc<UdpSocket>,
    sessions: &Arc<Mutex<HashMap<SocketAddrV4, Session>>>,
    epoch: Instant,
) -> Option<(Arc<UdpSocket>, Arc<AtomicU64>)> {
    if !ctx.admit(*peer.ip(), 1) {
        return None;
    }
    let made = ctx
        .backend_dgram()
        .and_then(|s| UdpSocket::from_std(std::net::UdpSocket::from(s)));
    let sock = match made {
        Ok(s) => s,
        Err(e) => {
            bump(&ctx.stats.backend_errors, 1);
            tracing::debug!(endpoint = %ctx.spec.id, error = %e, "udp backend socket");
            ctx.release(1);
            return None;
        }
    };
    if sock
        .connect(SocketAddr::from(SocketAddrV4::new(
            ctx.backend(),
            server_port,
        )))
        .await
        .is_err()
    {
        bump(&ctx.stats.backend_errors, 1);
        ctx.release(1);
        return None;
    }
    let sock = Arc::new(sock);
    let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
        peer,
        Session {
            sock: sock.clone(),
            last: last.clone(),
        },
    );
    let (ctx, listener, sessions, s2, l2) = (
        ctx.clone(),
        listener.clone(),
        sessions.clone(),
        sock.clone(),
        last.clone(),
    );
    tokio::spawn(async move {
        let mut stop = ctx.stop.clone();
        loop {
            let idle_for = Duration::from_millis(
                epoch.elapsed().as_millis() as u64 - l2.load(Ordering::Relaxed),
            );
            if idle_for >= IDLE {
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(IDLE - idle_for) => continue,
                r = recv_connected(&s2) => match r {
                    Ok((buf, n)) => {
                        l2.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        if listener.send_to(&buf[..n], SocketAddr::from(peer)).await.is_ok() {
                            bump(&ctx.stats.bytes_to_client, n as u64);
                        }
                        pool::give(buf);
                    }
                    // ICMP errors (backend port closed) surface here; keep the session.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
        sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
        ctx.release(1);
    });
    Some((sock, last))
}

async fn recv_connected(sock: &UdpSocket) -> io::Result<(Box<[u8]>, usize)> {
    loop {
        sock.readable().await?;
        let mut buf = pool::take();
        match sock.try_recv(&mut buf) {
            Ok(n) => return Ok((buf, n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pool::give(buf),
            Err(e) => {
                pool::give(buf);
                return Err(e);
            }
        }
    }
}
