//! The provider's view of the endpoints connected to its service: list, accept or
//! reject, and notes.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vpcep_model::EndpointStatus;
use vpcep_store::ConnectionFilter;

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::openapi::{body, Io};
use crate::wire::{self, ConnectionOut};
use crate::App;

/// Connections; a listing also counts them all.
#[derive(Serialize, ToSchema)]
struct Connections {
    connections: Vec<ConnectionOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_count: Option<i64>,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "list_service_connections" => (None, body::<Connections>()),
        "accept_or_reject_endpoint" => (body::<ActionBody>(), body::<Connections>()),
        "update_endpoint_connections_desc" => (body::<DescBody>(), body::<Connections>()),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    let base = "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/connections";
    Router::new()
        .route(base, get(list))
        .route(&format!("{base}/action"), post(action))
        .route(&format!("{base}/description"), put(describe))
}

async fn list(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    p: Params,
) -> ApiResult<Json<Connections>> {
    let status = p
        .get("status")
        .map(|s| match EndpointStatus::parse(&s) {
            Ok(
                st @ (EndpointStatus::PendingAcceptance
                | EndpointStatus::Accepted
                | EndpointStatus::Rejected
                | EndpointStatus::Failed),
            ) => Ok(st),
            _ => Err(ApiError::bad(
                "EndPoint.0019",
                format!(
                    "status: {s:?} is not one of pendingAcceptance, accepted, rejected, failed"
                ),
            )),
        })
        .transpose()?;
    let filter = ConnectionFilter {
        id: p.get("id"),
        marker_id: p.int("marker_id", "EndPoint.0021")?,
        status,
    };
    let (rows, total) = app
        .store
        .list_connections(
            caller,
            ids.get("vpc_endpoint_service_id"),
            filter,
            p.page(1000)?,
        )
        .await?;
    Ok(Json(Connections {
        connections: rows.iter().map(wire::connection).collect(),
        total_count: Some(total),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ConnectionActionBody)]
struct ActionBody {
    action: Option<String>,
    endpoints: Option<Vec<String>>,
}

async fn action(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<ActionBody>,
) -> ApiResult<Json<Connections>> {
    let accept = match req("action", b.action)?.as_str() {
        "receive" => true,
        "reject" => false,
        other => {
            return Err(ApiError::bad(
                "EndPoint.0007",
                format!("action: {other:?} is not receive or reject"),
            ))
        }
    };
    let mut eps = req("endpoints", b.endpoints)?;
    if eps.len() != 1 {
        return Err(ApiError::bad(
            "EndPoint.2031",
            format!(
                "endpoints: exactly one endpoint per request, got {}",
                eps.len()
            ),
        ));
    }
    let ep = app
        .store
        .decide_connection(
            caller,
            ids.get("vpc_endpoint_service_id"),
            eps.remove(0),
            accept,
        )
        .await?;
    Ok(Json(Connections {
        connections: vec![wire::connection(&ep)],
        total_count: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ConnectionDescItem)]
struct DescItem {
    id: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ConnectionDescBody)]
struct DescBody {
    connections: Option<Vec<DescItem>>,
}

async fn describe(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<DescBody>,
) -> ApiResult<Json<Connections>> {
    let items = req("connections", b.connections)?
        .into_iter()
        .map(|c| {
            Ok((
                req("connections.id", c.id)?,
                req("connections.description", c.description)?,
            ))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    if items.is_empty() {
        return Err(ApiError::param("connections: the list is empty"));
    }
    let rows = app
        .store
        .describe_connections(caller, ids.get("vpc_endpoint_service_id"), items)
        .await?;
    Ok(Json(Connections {
        connections: rows.iter().map(wire::connection).collect(),
        total_count: None,
    }))
}
