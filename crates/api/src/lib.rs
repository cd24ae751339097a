//! The HTTP API of vpcep: Huawei Cloud VPCEP v1/v2 and a VPC v1 subset, wire-compatible
//! with the official SDKs, plus console login and `/openapi.json`; `/metrics` is a router
//! of its own ([`metrics_router`]) for a listener of its own. Handlers turn wire shapes
//! into store commands; they never touch sockets or namespaces. [`edge`] holds the
//! connections and the limits every request meets first.
#![forbid(unsafe_code)]

pub mod auth;
mod console;
pub mod edge;
mod error;
mod extract;
mod metrics;
mod nodes;
mod openapi;
pub mod ratelimit;
mod routes;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use vpcep_store::{Credential, Store};

pub use error::ApiError;
pub use metrics::Metrics;
pub use nodes::{MachineReport, NodeReports, Role, StatusReport, REPORT_TTL};
pub use openapi::OPERATIONS;

/// Shared state of the API.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// What the API may ask of the data plane of this process: names for people, metrics.
pub trait NodeInfo: Send + Sync + 'static {
    /// `netns` or `loopback`.
    fn substrate(&self) -> &'static str;
    /// The namespace a host lives in (netns substrate only).
    fn host_netns(&self, port_id: &str) -> Option<String>;
    /// Where an address of VPC number `seq` is reachable on this machine, when the
    /// substrate maps it (loopback); `None` when it is reachable only inside the VPC.
    fn local_ip(&self, seq: i64, ip: std::net::Ipv4Addr) -> Option<std::net::Ipv4Addr>;
    /// Prometheus text of the data plane.
    fn metrics(&self) -> String;
    /// The namespace of an attached data centre (netns substrate only).
    fn idc_netns(&self, idc_id: &str) -> Option<String> {
        let _ = idc_id;
        None
    }
    /// Whether the data plane has stood up host or data centre `id`; `None` when this
    /// process cannot know (the data plane runs on gateway nodes).
    fn host_status(&self, id: &str) -> Option<HostStatus> {
        let _ = id;
        None
    }
}

/// A host's or data centre's `status` in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStatus {
    /// Not yet applied by the data plane.
    Creating,
    /// Its namespace (netns) or address (loopback) is there.
    Up,
    /// The data plane could not stand it up (why, for the `error` field).
    Failed(String),
}

pub struct AppInner {
    pub store: Arc<dyn Store>,
    pub node: Option<Arc<dyn NodeInfo>>,
    pub region: String,
    /// How far `X-Sdk-Date` may be from server time, in seconds (Huawei: 900).
    pub clock_skew_secs: i64,
    pub metrics: Metrics,
    /// The secret remote gateway nodes present; `None` disables `/internal/v1`.
    pub node_token: Option<String>,
    /// What remote gateway nodes last reported.
    pub reports: Arc<NodeReports>,
    /// Follows the store's revision (for long-polling nodes).
    pub revision: watch::Receiver<u64>,
    /// Access keys and accounts' projects never change once created, so verified ones are
    /// kept here and each signed request costs no key lookup in the store.
    pub(crate) credentials: RwLock<HashMap<String, Credential>>,
    pub(crate) projects: RwLock<HashMap<String, String>>,
    /// Body size and time limits of every request.
    pub limits: edge::RequestLimits,
    /// Per access key rate limiting (`None`: unlimited).
    pub(crate) limiter: Option<ratelimit::Limiter>,
    /// The API listener's connection counters and cap, for `/metrics`.
    pub connections: Option<(Arc<edge::EdgeStats>, usize)>,
    pub role: Arc<nodes::Role>,
}

/// What the API is built from.
pub struct AppConfig {
    pub store: Arc<dyn Store>,
    pub node: Option<Arc<dyn NodeInfo>>,
    pub region: String,
    pub clock_skew_secs: i64,
    pub node_token: Option<String>,
    pub reports: Arc<NodeReports>,
    pub revision: watch::Receiver<u64>,
    pub limits: edge::RequestLimits,
    /// The API listener's connection counters and cap, shown in `/metrics`.
    pub connections: Option<(Arc<edge::EdgeStats>, usize)>,
    /// Which replica this is, and whether it leads.
    pub role: Arc<nodes::Role>,
}

impl std::ops::Deref for App {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    pub fn new(c: AppConfig) -> Self {
        App(Arc::new(AppInner {
            store: c.store,
            node: c.node,
            region: c.region,
            clock_skew_secs: c.clock_skew_secs,
            metrics: Metrics::default(),
            node_token: c.node_token,
            reports: c.reports,
            revision: c.revision,
            credentials: RwLock::default(),
            projects: RwLock::default(),
            limiter: c.limits.rate.map(ratelimit::Limiter::new),
            limits: c.limits,
            connections: c.connections,
            role: c.role,
        }))
    }
}

/// The whole API as one router.
pub fn router(app: App) -> Router {
    routes::router()
        .merge(nodes::router())
        .merge(console::router())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::no_route() })
        .layer(middleware::from_fn_with_state(app.clone(), auth::layer))
        // The edge has read the body whole, within its limit.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), edge::body))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// `GET /metrics` alone, for the metrics listener: every tenant's endpoints and their
/// traffic are in it, so it is not on the API's port.
pub fn metrics_router(app: App) -> Router {
    routes::metrics_router()
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::no_route() })
        .with_state(app)
}

/// Gives every request an id (the `X-Request-Id` header the SDK reads), logs it and
/// counts it in the metrics.
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut resp = error::REQUEST_ID
        .scope(
            id.clone(),
            async move { next.run(req).await.into_response() },
        )
        .await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    app.metrics
        .observe(method.as_str(), &route, status, elapsed);
    tracing::debug!(request_id = %id, %method, %route, status, ms = elapsed.as_secs_f64() * 1e3, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
