//! TCP sessions: accept in the consumer VPC, admit, connect out of the provider VPC, send
//! the PROXY header if the service asks for one, then copy both ways with pooled buffers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use vpcep_model::TcpProxy;

use super::{bump, pool, proxy_v2, Ctx};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn serve(listener: TcpListener, server_port: u16, ctx: Arc<Ctx>) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let (client, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or a transient error: back off instead of spinning.
                tracing::warn!(endpoint = %ctx.spec.id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else { continue };
        if !ctx.admit(*peer.ip(), 2) {
            // Refused cleanly: the client sees the connection close.
            drop(client);
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut stop = ctx.stop.clone();
            tokio::select! {
                r = session(client, peer, server_port, &ctx) => {
                    if let Err(e) = r {
                        tracing::debug!(endpoint = %ctx.spec.id, client = %peer, error = %e, "session ended with an error");
                    }
                }
                _ = stop.changed() => {}
            }
            ctx.release(2);
        });
    }
}

async fn session(
    client: TcpStream,
    peer: SocketAddrV4,
    server_port: u16,
    ctx: &Ctx,
) -> io::Result<()> {
    let (backend_ip, tcp_proxy) = {
        let live = ctx.live();
        (live.backend, live.tcp_proxy)
    };
    let backend = match connect(ctx, SocketAddrV4::new(backend_ip, server_port)).await {
        Ok(b) => b,
        Err(e) => {
            bump(&ctx.stats.backend_errors, 1);
            return Err(e);
        }
    };
    if matches!(tcp_proxy, TcpProxy::ProxyOpen | TcpProxy::Open) {
        let header = proxy_v2::encode(&proxy_v2::Header {
            src: peer,
            dst: SocketAddrV4::new(ctx.spec.ip, client.local_addr()?.port()),
            endpoint_id: ctx.spec.id.clone(),
            marker_id: ctx.spec.marker_id,
            service_id: ctx.spec.service_id.clone(),
        });
        write_all(&backend, &header).await?;
    }
    // Only the first direction to end passes its end on with a half-close; when the
    // second ends, both sockets are closed, which says the same. A client usually
    // speaks first and its request is there by the time the backend is connected, so
    // that direction reads before waiting; the backend's answer cannot be there yet.
    let ended = AtomicBool::new(false);
    tokio::try_join!(
        pump(&client, &backend, &ctx.stats.bytes_to_backend, &ended, true),
        pump(&backend, &client, &ctx.stats.bytes_to_client, &ended, false),
    )?;
    Ok(())
}

/// Connects to the backend from a ready-made socket. Across the node's links the
/// handshake has usually completed by the time `connect` returns, so the session goes
/// on at once; only a connection still in progress waits (at most [`CONNECT_TIMEOUT`]).
async fn connect(ctx: &Ctx, to: SocketAddrV4) -> io::Result<TcpStream> {
    let sock = ctx.backend_stream()?;
    match sock.connect(&SocketAddr::from(to).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    if stream.peer_addr().is_err() {
        // Not connected yet (or already refused): writable says which.
        match tokio::time::timeout(CONNECT_TIMEOUT, stream.writable()).await {
            Ok(ready) => ready?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "backend connect timed out",
                ))
            }
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// One read or write straight on the socket, whatever the runtime last saw of its
/// readiness: the runtime only learns that a new socket is ready from its next poll, a
/// round trip that most first reads and writes of a session do not need. A
/// `WouldBlock` from here leaves the runtime's readiness alone, so a caller then waits
/// with the runtime's own `readable`/`writable` and `try_*`, which clear it.
fn now<T>(s: &TcpStream, op: impl FnOnce(&mut &socket2::Socket) -> io::Result<T>) -> io::Result<T> {
    let sock = SockRef::from(s);
    op(&mut &*sock)
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    let mut eager = true;
    while !data.is_empty() {
        let wrote = if eager {
            eager = false;
            now(to, |s| s.write(data))
        } else {
            to.writable().await?;
            to.try_write(data)
        };
        match wrote {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `from` → `to` until end of stream, then half-closes `to` unless the other
/// direction has ended already. A buffer is held only between a read and the end of its
/// write. With `eager`, the first read is tried before waiting.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    ended: &AtomicBool,
    mut eager: bool,
) -> io::Result<()> {
    loop {
        let mut buf = pool::take();
        let read = if eager {
            eager = false;
            now(from, |s| s.read(&mut buf))
        } else {
            from.try_read(&mut buf)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pool::give(buf);
                from.readable().await?;
                continue;
            }
            Err(e) => {
                pool::give(buf);
                return Err(e);
            }
        };
        if n == 0 {
            pool::give(buf);
            if !ended.swap(true, Ordering::Relaxed) {
                let _ = SockRef::from(to).shutdown(Shutdown::Write);
            }
            return Ok(());
        }
        let written = write_all(to, &buf[..n]).await;
        pool::give(buf);
        written?;
        bump(counter, n as u64);
    }
}
