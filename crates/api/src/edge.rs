//! The HTTP edge: the accept loop and connections of the API (and of `/metrics`), and the
//! limits every request meets before authentication.
//!
//! - A connection must send a complete request head within `header_timeout` of opening,
//!   and again within `header_timeout` of its previous response (hyper starts its header
//!   timer when a keep-alive connection goes idle, so this is also the idle timeout);
//!   otherwise it is closed.
//! - At most `max_connections` connections are open at once, and `max_per_ip` from one
//!   source address; the next one is accepted, answered `503` with `Retry-After` and
//!   closed at once, so the backlog never fills.
//! - The listen backlog is the kernel's `somaxconn` (not the 128 of `TcpListener::bind`),
//!   and the accept loops (one per core) do nothing but accept and hand each connection
//!   to its task.
//! - With TLS (`--tls-cert`/`--tls-key`), each accepted connection is wrapped in a rustls
//!   server session before hyper sees it; the handshake must complete within
//!   `header_timeout` too, so a client that never finishes it does not hold a slot.
//! - A request body must arrive whole within `body_timeout` (else `408`) and be at most
//!   `max_body` bytes (else `413`, refused from `Content-Length` before it is read).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::error::ApiError;
use crate::App;

/// How one listener treats its connections.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// A request head must be complete this long after the connection opens or goes idle.
    pub header_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections open at once from one source address, so that one client cannot take
    /// every slot.
    pub max_per_ip: usize,
    /// Serve HTTPS only, with this certificate; `None`: plain HTTP.
    pub tls: Option<Tls>,
}

/// Marks the requests of a TLS listener (a request extension), for links that name the
/// scheme.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// A server certificate and key, ready for handshakes.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or SEC1);
    /// the message says which file is wrong and why.
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no PEM certificate in it",
                cert.display()
            ));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        // ring, not aws-lc-rs (which needs cmake and a long C build); rustls 0.23.48
        // deprecates ring's provider only for its lack of post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| {
                format!(
                    "--tls-cert {} with --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// What the API's requests are held to before authentication; also the per-key rate.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// A request body must have arrived whole this long after its head.
    pub body_timeout: Duration,
    /// Requests per second per access key (or token's account); `None`: unlimited.
    pub rate: Option<crate::ratelimit::Rate>,
}

/// Huawei's API gateway takes bodies up to 12 MB.
pub const DEFAULT_MAX_BODY: usize = 12 * 1024 * 1024;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body: DEFAULT_MAX_BODY,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            rate: Some(crate::ratelimit::Rate::DEFAULT),
        }
    }
}

/// Counters of one listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Turned away because `max_connections` (or `max_per_ip`) were open.
    pub refused: AtomicU64,
    /// Closed by the header (or keep-alive idle) timeout.
    pub header_timeouts: AtomicU64,
    /// Failed accepts (descriptors exhausted and the like).
    pub accept_errors: AtomicU64,
}

impl EdgeStats {
    /// Prometheus text, with `listener` as a label.
    pub fn render(&self, listener: &str, max: usize) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP vpcep_http_connections_open Open HTTP connections.\n# TYPE vpcep_http_connections_open gauge\nvpcep_http_connections_open{{listener=\"{listener}\"}} {}\n\
             # HELP vpcep_http_connections_max The cap on open HTTP connections.\n# TYPE vpcep_http_connections_max gauge\nvpcep_http_connections_max{{listener=\"{listener}\"}} {max}\n\
             # HELP vpcep_http_connections_total Accepted HTTP connections.\n# TYPE vpcep_http_connections_total counter\nvpcep_http_connections_total{{listener=\"{listener}\"}} {}\n\
             # HELP vpcep_http_connections_refused_total Connections answered 503 at the cap.\n# TYPE vpcep_http_connections_refused_total counter\nvpcep_http_connections_refused_total{{listener=\"{listener}\"}} {}\n\
             # HELP vpcep_http_header_timeouts_total Connections closed for not sending a request head in time.\n# TYPE vpcep_http_header_timeouts_total counter\nvpcep_http_header_timeouts_total{{listener=\"{listener}\"}} {}\n\
             # HELP vpcep_http_accept_errors_total Failed accepts.\n# TYPE vpcep_http_accept_errors_total counter\nvpcep_http_accept_errors_total{{listener=\"{listener}\"}} {}\n",
            g(&self.open),
            g(&self.accepted),
            g(&self.refused),
            g(&self.header_timeouts),
            g(&self.accept_errors),
        )
    }
}

/// The kernel's cap on listen backlogs (`net.core.somaxconn`), at least 1024.
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(4096)
        .max(1024)
}

/// A listening socket with a backlog of `somaxconn` (`TcpListener::bind` gives 128,
/// which a burst of connections overflows into 1-second SYN retransmits).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(somaxconn())?;
    TcpListener::from_std(s.into())
}

/// What a connection beyond the cap is told before it is closed.
static BUSY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = serde_json::json!({
        "error_code": "APIGW.0503",
        "error_msg": "too many open connections to the API; retry later",
        "request_id": "",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// What the acceptors of one listener share.
struct Shared {
    limits: ConnLimits,
    max: usize,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    service: TowerToHyperService<Router>,
    builder: hyper::server::conn::http1::Builder,
    stats: Arc<EdgeStats>,
    last_warning: std::sync::Mutex<Option<Instant>>,
}

impl Shared {
    /// Logs one line a second at most: a flood must not become a flood of logs.
    fn warn(&self, what: &str, e: Option<&io::Error>) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            match e {
                Some(e) => tracing::warn!(error = %e, max = self.max, "{what}"),
                None => tracing::warn!(max = self.max, "{what}"),
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets in-flight requests
/// finish and waits for every connection to close. One acceptor per core takes
/// connections off the backlog, so a flood of them does not overflow it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stats: Arc<EdgeStats>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let router = match limits.tls {
        Some(_) => router.layer(axum::Extension(Https)),
        None => router,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        limits,
        max,
        slots: Arc::new(Semaphore::new(max)),
        per_ip: Arc::default(),
        service: TowerToHyperService::new(router),
        builder,
        stats,
        last_warning: std::sync::Mutex::new(None),
    });
    let listener = Arc::new(listener);
    let acceptors = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let tasks: Vec<_> = (0..acceptors)
        .map(|_| {
            tokio::spawn(accept_loop(
                listener.clone(),
                shared.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    drop(listener);
    // Every permit back means every connection has ended.
    let _ = shared.slots.acquire_many(max as u32).await;
    Ok(())
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stats = &shared.stats;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    shared.warn("cannot accept an API connection", Some(&e));
                    // Out of descriptors: the backlog holds the connection until one is
                    // free; a short pause keeps the loop from spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let admitted = shared.slots.clone().try_acquire_owned().ok().and_then(|p| {
            PerIp::take(&shared.per_ip, peer.ip(), shared.limits.max_per_ip).map(|ip| (p, ip))
        });
        let Some(permit) = admitted else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            shared.warn(
                "API connection cap reached (in all or from one address); new connections are answered 503",
                None,
            );
            // A fresh socket's send buffer is empty: this never blocks the loop.
            let _ = stream.try_write(&BUSY);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (shared, mut stop) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(
                stream,
                shared.limits.tls.as_ref(),
                shared.limits.header_timeout,
                &shared.builder,
                shared.service.clone(),
                &shared.stats,
                &mut stop,
            )
            .await;
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(
    stream: TcpStream,
    tls: Option<&Tls>,
    header_timeout: Duration,
    builder: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    stats: &EdgeStats,
    stop: &mut watch::Receiver<bool>,
) {
    match tls {
        None => http(stream, builder, service, stats, stop).await,
        Some(tls) => {
            // The handshake counts against the header timeout: a client that opens a
            // connection and never finishes it is closed like one that sends no head.
            let shake = tokio::select! {
                r = tokio::time::timeout(header_timeout, tls.0.accept(stream)) => r,
                () = stopped(stop) => return,
            };
            match shake {
                Ok(Ok(stream)) => http(stream, builder, service, stats, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("TLS handshake timed out");
                }
            }
        }
    }
}

async fn http<S>(
    stream: S,
    builder: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    stats: &EdgeStats,
    stop: &mut watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = stopped(stop);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Open connections per source address; an address with none has no entry.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One connection's place in [`PerIp`], given back on drop.
struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(this: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = this.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot(this.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Middleware: the body, whole, within the size and time limits, before anything else
/// (authentication needs it whole anyway, to check the signature).
pub(crate) async fn body(State(app): State<App>, req: Request, next: Next) -> Response {
    let limits = &app.limits;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large(limits.max_body).into_response();
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(limits.max_body).into_response()
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body not read");
            return ApiError::bad("APIGW.0201", "the request body could not be read")
                .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "APIGW.0408",
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "APIGW.0201",
        format!("request body too large: at most {max} bytes"),
    )
}
