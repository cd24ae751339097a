//! TCP sessions: accept in the consumer VPC, admit, connect out of the provider VPC, send
//! the PROXY header if the service asks for one, then copy both ways with pooled buffers.

use std::io;
use std::net::{Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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
    let backend_addr = SocketAddr::from(SocketAddrV4::new(ctx.backend(), server_port));
    let connect = async {
        let sock = ctx.backend_stream()?;
        let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
        sock.connect(backend_addr).await
    };
    let backend = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            bump(&ctx.stats.backend_errors, 1);
            return Err(e);
        }
        Err(_) => {
            bump(&ctx.stats.backend_errors, 1);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend connect timed out",
            ));
        }
    };
    let tcp_proxy = ctx.live().tcp_proxy;
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
    // second ends, both sockets are closed, which says the same.
    let ended = AtomicBool::new(false);
    tokio::try_join!(
        pump(&client, &backend, &ctx.stats.bytes_to_backend, &ended),
        pump(&backend, &client, &ctx.stats.bytes_to_client, &ended),
    )?;
    Ok(())
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `from` → `to` until end of stream, then half-closes `to` unless the other
/// direction has ended already. A buffer is held only between a read and the end of its
/// write.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    ended: &AtomicBool,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = pool::take();
        let n = match from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pool::give(buf);
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
