//! Remote gateway nodes (`vpcep gateway --control-plane URL`): they follow the desired
//! state by long-polling the revision — whole at first (`/internal/v1/snapshot`), then
//! as what changed since the revision they applied (`/internal/v1/changes`) — and report
//! which endpoints they have brought up: everything at first, then what changed. They
//! authenticate with the node token the operator gave `vpcep serve`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vpcep_model::{Outcome, Snapshot, SnapshotDelta};

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params};
use crate::App;

/// How long a node's report counts after it was sent; a node that stops reporting is
/// taken to have stopped forwarding.
pub const REPORT_TTL: Duration = Duration::from_secs(60);

/// This process among the processes serving its database.
#[derive(Debug, Default)]
pub struct Role {
    /// Its name among the replicas (`vpcep admin cluster status`).
    pub name: String,
    /// Whether it runs the controller now (always, on the embedded store).
    pub leading: std::sync::atomic::AtomicBool,
    /// Gateway nodes' reports go to the shared store, for whichever replica leads
    /// (replicas of one PostgreSQL database), instead of staying in this process.
    pub shared_reports: bool,
}

impl Role {
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }
}
/// The longest a snapshot request waits for a newer revision.
const MAX_WAIT_SECS: u64 = 60;

/// What one node says it runs: everything (`full`), or what changed since its last
/// report (an empty one says it is still there).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub node: String,
    pub revision: u64,
    /// Endpoint id → `None` when up, `Some(reason)` when it could not come up.
    pub endpoints: HashMap<String, Option<String>>,
    /// Endpoints it no longer runs (in a report of changes).
    #[serde(default)]
    pub gone: Vec<String>,
    #[serde(default = "everything")]
    pub full: bool,
    /// What machine the node is, in a deployment across machines (`vpcep gateway
    /// --role`): registered with every report.
    #[serde(default)]
    pub machine: Option<MachineReport>,
}

/// A machine's role, zone and underlay address, as its node reports them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineReport {
    pub role: vpcep_model::MachineRole,
    #[serde(default)]
    pub zone: String,
    #[schema(value_type = String)]
    pub underlay: std::net::Ipv4Addr,
}

fn everything() -> bool {
    true
}

/// A report of changes from a node whose last report is not known here (the control
/// plane restarted, or the node was silent too long): it must report everything.
#[derive(Debug)]
pub struct NeedFull;

/// The latest report of every remote node, read by the controller.
#[derive(Default)]
pub struct NodeReports {
    by_node: RwLock<HashMap<String, (Instant, StatusReport)>>,
    changed: watch::Sender<u64>,
}

impl NodeReports {
    pub fn record(&self, report: StatusReport) -> Result<(), NeedFull> {
        {
            let mut nodes = self.by_node.write().unwrap_or_else(|p| p.into_inner());
            if report.full {
                nodes.insert(report.node.clone(), (Instant::now(), report));
            } else {
                let Some((at, held)) = nodes
                    .get_mut(&report.node)
                    .filter(|(at, _)| at.elapsed() <= REPORT_TTL)
                else {
                    return Err(NeedFull);
                };
                *at = Instant::now();
                held.revision = report.revision;
                for id in &report.gone {
                    held.endpoints.remove(id);
                }
                held.endpoints.extend(report.endpoints);
            }
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Up if any live node runs it; failed if a live node could not bring it up; `None`
    /// if no live node has said anything about it yet.
    pub fn endpoint_outcome(&self, id: &str) -> Option<Outcome> {
        let nodes = self.by_node.read().unwrap_or_else(|p| p.into_inner());
        let mut failed = None;
        for (at, r) in nodes.values() {
            if at.elapsed() > REPORT_TTL {
                continue;
            }
            match r.endpoints.get(id) {
                Some(None) => return Some(Ok(())),
                Some(Some(why)) => failed = Some(Err(why.clone())),
                None => {}
            }
        }
        failed
    }

    /// Ticks whenever a report arrives.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

pub(crate) fn router() -> Router<App> {
    Router::new()
        .route("/internal/v1/snapshot", get(snapshot))
        .route("/internal/v1/changes", get(changes))
        .route("/internal/v1/status", post(status))
}

/// Checks `Authorization: Bearer <node token>` in constant time.
fn check_node(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = app.node_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "APIGW.0302",
            "remote gateway nodes are not enabled on this server (start it with a node token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return Err(ApiError::unauthorized(
            "APIGW.0301",
            "wrong or missing node token",
        ));
    }
    Ok(())
}

/// Waits until the store's revision is past `after` (`after` and `wait` from the query:
/// at most `wait` seconds).
async fn past(app: &App, p: &Params) -> ApiResult<i64> {
    let after = p.int("after", "EndPoint.0002")?.unwrap_or(-1);
    let wait = p
        .int("wait", "EndPoint.0002")?
        .unwrap_or(0)
        .clamp(0, MAX_WAIT_SECS as i64) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut rev = app.revision.clone();
    loop {
        let current = app.store.revision().await? as i64;
        if current > after || tokio::time::Instant::now() >= deadline {
            return Ok(after);
        }
        // Other processes (`vpcep admin`) commit without telling us: look again now and then.
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            rev.changed(),
        )
        .await;
    }
}

/// The snapshot, once the store's revision is past `after` (or `wait` seconds passed).
async fn snapshot(
    State(app): State<App>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Snapshot>> {
    check_node(&app, &headers)?;
    past(&app, &p).await?;
    Ok(Json(app.store.snapshot().await?))
}

/// What changed after revision `after`, once there is something (or `wait` seconds
/// passed); 410 when that is no longer known (the node reads the snapshot then).
async fn changes(
    State(app): State<App>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<SnapshotDelta>> {
    check_node(&app, &headers)?;
    let after = past(&app, &p).await?;
    let Ok(from) = u64::try_from(after) else {
        return Err(ApiError::param("after: the revision the node applied last"));
    };
    match app.store.changes_since(from).await? {
        Some(delta) => Ok(Json(delta)),
        None => Err(ApiError::new(
            StatusCode::GONE,
            "APIGW.0410",
            format!(
                "the changes since revision {from} are not kept here; read /internal/v1/snapshot"
            ),
        )),
    }
}

async fn status(
    State(app): State<App>,
    headers: HeaderMap,
    JsonBody(report): JsonBody<StatusReport>,
) -> ApiResult<StatusCode> {
    check_node(&app, &headers)?;
    if report.node.is_empty() || report.node.len() > 64 {
        return Err(ApiError::param("node: 1-64 characters"));
    }
    if let Some(m) = report.machine.clone() {
        app.store
            .register_machine(report.node.clone(), m.role, m.zone, m.underlay)
            .await?;
    }
    let known = if app.role.shared_reports {
        app.store
            .record_gateway_report(
                report.node,
                report.revision,
                report.full,
                report.endpoints.into_iter().collect(),
                report.gone,
                REPORT_TTL.as_secs(),
            )
            .await?
    } else {
        app.reports.record(report).is_ok()
    };
    if !known {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "APIGW.0409",
            "this node's earlier report is not known here; send a full one",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The bodies of the gateway nodes' operations (the snapshot's types are in vpcep-model,
/// whose `schema` feature derives their schemas).
pub(crate) fn io(op: &str) -> Option<crate::openapi::Io> {
    use crate::openapi::{body, Io};
    let (request, response) = match op {
        "node_snapshot" => (None, body::<Snapshot>()),
        "node_changes" => (None, body::<SnapshotDelta>()),
        "node_status" => (body::<StatusReport>(), None),
        _ => return None,
    };
    Some(Io { request, response })
}
