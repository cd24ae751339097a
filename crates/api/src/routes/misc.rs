//! Quotas, API versions, metrics, health and the OpenAPI document.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, Params};
use crate::App;

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v1/{project_id}/quotas", get(quotas))
        .route("/", get(versions))
        .route("/{version}", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
}

/// `GET /metrics`, served on the metrics listener only.
pub(crate) fn metrics_router() -> Router<App> {
    Router::new().route("/metrics", get(metrics))
}

async fn quotas(State(app): State<App>, Auth(caller): Auth, p: Params) -> ApiResult<Json<Value>> {
    let q = app.store.quota(caller).await?;
    let svc =
        json!({"type": "endpoint_service", "used": q.services_used, "quota": q.services_quota});
    let ep = json!({"type": "endpoint", "used": q.endpoints_used, "quota": q.endpoints_quota});
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
    Ok(Json(json!({"quotas": {"resources": resources}})))
}

fn version_object(id: &str, host: &str) -> Option<Value> {
    let (status, updated) = match id {
        "v1" => ("SUPPORT", "2018-09-30T00:00:00Z"),
        "v2" => ("CURRENT", "2020-03-30T00:00:00Z"),
        _ => return None,
    };
    Some(json!({
        "id": id,
        "status": status,
        "version": &id[1..],
        "min_version": "",
        "updated": updated,
        "links": [{"rel": "self", "href": format!("http://{host}/{id}"), "type": "application/json"}],
    }))
}

fn host(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned()
}

/// The versions document; a browser asking for HTML is sent to the console instead.
async fn versions(headers: axum::http::HeaderMap) -> axum::response::Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return axum::response::Redirect::to("/console/").into_response();
    }
    let h = host(&headers);
    let list: Vec<Value> = ["v1", "v2"]
        .iter()
        .filter_map(|v| version_object(v, &h))
        .collect();
    Json(json!({ "versions": list })).into_response()
}

async fn version(headers: axum::http::HeaderMap, ids: Ids) -> ApiResult<Json<Value>> {
    version_object(&ids.get("version"), &host(&headers))
        .map(|v| Json(json!({"version": v})))
        .ok_or_else(ApiError::no_route)
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let rev = app.store.revision().await.unwrap_or(0);
    let mut extra = format!("# HELP vpcep_store_revision Revision of the durable state.\n# TYPE vpcep_store_revision gauge\nvpcep_store_revision {rev}\n");
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
