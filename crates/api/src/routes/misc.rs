//! Quotas, API versions, metrics, health and the OpenAPI document.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::edge::Https;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, Params};
use crate::openapi::{body, Document, Io};
use crate::App;

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "list_quota_details" => (None, body::<Quotas>()),
        "list_version_details" => (None, body::<Versions>()),
        "list_specified_version_details" => (None, body::<OneVersion>()),
        "openapi" => (None, body::<Document>()),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v1/{project_id}/quotas", get(quotas))
        .route("/", get(versions))
        .route("/{version}", get(version))
        .route("/healthz", get(healthz))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
}

/// `GET /healthz`: `ok` while the store answers; a replica that cannot reach its
/// database says so with a 503, for a balancer to take it out of rotation.
async fn healthz(State(app): State<App>) -> ApiResult<&'static str> {
    app.store.revision().await?;
    Ok("ok")
}

/// `GET /metrics`, served on the metrics listener only.
pub(crate) fn metrics_router() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

/// One quota: how many of a kind the account has and may have.
#[derive(Serialize, ToSchema)]
struct QuotaOut {
    /// `endpoint_service` or `endpoint`.
    #[serde(rename = "type")]
    kind: String,
    used: i64,
    quota: i64,
}

#[derive(Serialize, ToSchema)]
struct QuotaResources {
    resources: Vec<QuotaOut>,
}

/// The account's quotas.
#[derive(Serialize, ToSchema)]
struct Quotas {
    quotas: QuotaResources,
}

async fn quotas(State(app): State<App>, Auth(caller): Auth, p: Params) -> ApiResult<Json<Quotas>> {
    let q = app.store.quota(caller).await?;
    let svc = QuotaOut {
        kind: "endpoint_service".to_owned(),
        used: q.services_used,
        quota: q.services_quota,
    };
    let ep = QuotaOut {
        kind: "endpoint".to_owned(),
        used: q.endpoints_used,
        quota: q.endpoints_quota,
    };
    let resources = match p.get("type").as_deref() {
        None => vec![svc, ep],
        Some("endpoint_service") => vec![svc],
        Some("endpoint") => vec![ep],
        Some(other) => {
            return Err(ApiError::param(format!(
                "type: {other:?} is not endpoint_service or endpoint"
            )))
        }
    };
    Ok(Json(Quotas {
        quotas: QuotaResources { resources },
    }))
}

#[derive(Serialize, ToSchema)]
struct Link {
    rel: String,
    href: String,
    #[serde(rename = "type")]
    kind: String,
}

/// An API version.
#[derive(Serialize, ToSchema)]
struct VersionOut {
    id: String,
    status: String,
    version: String,
    min_version: String,
    updated: String,
    links: Vec<Link>,
}

/// The API versions.
#[derive(Serialize, ToSchema)]
struct Versions {
    versions: Vec<VersionOut>,
}

/// One API version.
#[derive(Serialize, ToSchema)]
struct OneVersion {
    version: VersionOut,
}

fn version_object(id: &str, base: &str) -> Option<VersionOut> {
    let (status, updated) = match id {
        "v1" => ("SUPPORT", "2018-09-30T00:00:00Z"),
        "v2" => ("CURRENT", "2020-03-30T00:00:00Z"),
        _ => return None,
    };
    Some(VersionOut {
        id: id.to_owned(),
        status: status.to_owned(),
        version: id[1..].to_owned(),
        min_version: String::new(),
        updated: updated.to_owned(),
        links: vec![Link {
            rel: "self".to_owned(),
            href: format!("{base}/{id}"),
            kind: "application/json".to_owned(),
        }],
    })
}

/// `SCHEME://HOST` of this request: https on a TLS listener.
fn base(headers: &axum::http::HeaderMap, https: Option<&Extension<Https>>) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if https.is_some() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The versions document; a browser asking for HTML is sent to the console instead.
async fn versions(
    https: Option<Extension<Https>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return axum::response::Redirect::to("/console/").into_response();
    }
    let h = base(&headers, https.as_ref());
    let versions = ["v1", "v2"]
        .iter()
        .filter_map(|v| version_object(v, &h))
        .collect();
    Json(Versions { versions }).into_response()
}

async fn version(
    https: Option<Extension<Https>>,
    headers: axum::http::HeaderMap,
    ids: Ids,
) -> ApiResult<Json<OneVersion>> {
    version_object(&ids.get("version"), &base(&headers, https.as_ref()))
        .map(|version| Json(OneVersion { version }))
        .ok_or_else(ApiError::no_route)
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let rev = app.store.revision().await.unwrap_or(0);
    let mut extra = format!("# HELP vpcep_store_revision Revision of the durable state.\n# TYPE vpcep_store_revision gauge\nvpcep_store_revision {rev}\n");
    let _ = write!(
        extra,
        "# HELP vpcep_controller_leader Whether this replica holds the controller lease.\n# TYPE vpcep_controller_leader gauge\nvpcep_controller_leader{{replica=\"{}\"}} {}\n",
        app.role.name,
        u8::from(app.role.leading())
    );
    if let Some((stats, max)) = &app.connections {
        extra.push_str(&stats.render("api", *max));
    }
    if let Some(node) = &app.node {
        extra.push_str(&node.metrics());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&extra),
    )
}
