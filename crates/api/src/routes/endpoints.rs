//! Endpoints (consumer side): create, list, show, whitelist, policy, route tables,
//! delete, and the v2 upgrade.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vpcep_store::{EndpointFilter, NewEndpoint};

use super::{req, tags_in, TagIn, UpgradeBody};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::openapi::{body, Io};
use crate::wire::{self, Empty, EndpointOut};
use crate::App;

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "create_endpoint" => (body::<CreateBody>(), body::<EndpointOut>()),
        "list_endpoints" => (None, body::<EndpointList>()),
        "list_endpoint_info_details" => (None, body::<EndpointOut>()),
        "update_endpoint_white" => (body::<WhitelistBody>(), body::<EndpointOut>()),
        "delete_endpoint" => (None, None),
        "update_endpoint_policy" => (body::<PolicyBody>(), body::<EndpointOut>()),
        "delete_endpoint_policy" => (None, body::<EndpointOut>()),
        "update_endpoint_routetable" => (body::<RoutetablesBody>(), body::<Routetables>()),
        "upgrade_endpoint" => (body::<UpgradeBody>(), body::<Empty>()),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    let base = "/v1/{project_id}/vpc-endpoints";
    Router::new()
        .route(base, post(create).get(list))
        .route(
            &format!("{base}/{{vpc_endpoint_id}}"),
            get(show).put(update_whitelist).delete(delete),
        )
        .route(
            &format!("{base}/{{vpc_endpoint_id}}/policy"),
            put(update_policy).delete(delete_policy),
        )
        .route(
            &format!("{base}/{{vpc_endpoint_id}}/routetables"),
            put(update_routetables),
        )
        .route(
            "/v2/{project_id}/vpc-endpoints/{vpc_endpoint_id}/upgrade",
            post(upgrade),
        )
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateEndpointBody)]
struct CreateBody {
    endpoint_service_id: Option<String>,
    vpc_id: Option<String>,
    subnet_id: Option<String>,
    port_ip: Option<String>,
    enable_dns: Option<bool>,
    routetables: Option<Vec<String>>,
    whitelist: Option<Vec<String>>,
    enable_whitelist: Option<bool>,
    tags: Option<Vec<TagIn>>,
    description: Option<String>,
    /// Policy statements (gateway endpoints), any JSON.
    #[schema(value_type = Option<Value>)]
    policy_statement: Option<Value>,
    /// A policy document (gateway endpoints), any JSON.
    #[schema(value_type = Option<Value>)]
    policy_document: Option<Value>,
    ip_version: Option<String>,
    ipv6_address: Option<String>,
}

/// A required id that must not be empty either.
fn non_empty(field: &str, v: Option<String>, code: &'static str) -> ApiResult<String> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::bad(
            code,
            format!("{field}: required and not empty"),
        )),
    }
}

async fn create(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult<Json<EndpointOut>> {
    if matches!(b.ip_version.as_deref(), Some(v) if v != "ipv4") || b.ipv6_address.is_some() {
        return Err(ApiError::param(
            "ip_version: only ipv4 endpoints are supported",
        ));
    }
    let port_ip = b
        .port_ip
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::bad(
                    "EndPoint.2041",
                    format!("port_ip: {s:?} is not an IPv4 address"),
                )
            })
        })
        .transpose()?;
    let new = NewEndpoint {
        service_id: non_empty(
            "endpoint_service_id",
            b.endpoint_service_id,
            "EndPoint.2029",
        )?,
        vpc_id: non_empty("vpc_id", b.vpc_id, "EndPoint.2011")?,
        subnet_id: b.subnet_id.filter(|s| !s.is_empty()),
        port_ip,
        enable_dns: b.enable_dns.unwrap_or(false),
        routetables: b.routetables,
        whitelist: b.whitelist.unwrap_or_default(),
        enable_whitelist: b.enable_whitelist.unwrap_or(false),
        description: b.description.unwrap_or_default(),
        tags: tags_in(b.tags)?,
        policy_statement: b.policy_statement.filter(|v| !v.is_null()),
        policy_document: b.policy_document.filter(|v| !v.is_null()),
        region: app.region.clone(),
    };
    let ep = app.store.create_endpoint(caller, new).await?;
    Ok(Json(wire::endpoint(&ep)))
}

/// A page of the caller's endpoints.
#[derive(Serialize, ToSchema)]
struct EndpointList {
    endpoints: Vec<EndpointOut>,
    total_count: i64,
}

async fn list(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<EndpointList>> {
    let filter = EndpointFilter {
        service_name_like: p.get("endpoint_service_name"),
        vpc_id: p.get("vpc_id"),
        id: p.get("id"),
    };
    let (rows, total) = app
        .store
        .list_endpoints(caller, filter, p.page(1000)?)
        .await?;
    Ok(Json(EndpointList {
        endpoints: rows.iter().map(wire::endpoint).collect(),
        total_count: total,
    }))
}

async fn show(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<EndpointOut>> {
    let ep = app
        .store
        .get_endpoint(caller, ids.get("vpc_endpoint_id"))
        .await?;
    Ok(Json(wire::endpoint(&ep)))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = EndpointWhitelistBody)]
struct WhitelistBody {
    whitelist: Option<Vec<String>>,
    enable_whitelist: Option<bool>,
}

async fn update_whitelist(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<WhitelistBody>,
) -> ApiResult<Json<EndpointOut>> {
    let id = ids.get("vpc_endpoint_id");
    // Fields left out keep their value.
    let current = app.store.get_endpoint(caller.clone(), id.clone()).await?;
    let list = b.whitelist.unwrap_or(current.whitelist);
    let enable = b.enable_whitelist.unwrap_or(current.enable_whitelist);
    let ep = app
        .store
        .update_endpoint_whitelist(caller, id, list, enable)
        .await?;
    Ok(Json(wire::endpoint(&ep)))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = EndpointPolicyBody)]
struct PolicyBody {
    /// Policy statements, any JSON.
    #[schema(value_type = Option<Value>)]
    policy_statement: Option<Value>,
    /// A policy document, any JSON.
    #[schema(value_type = Option<Value>)]
    policy_document: Option<Value>,
}

async fn update_policy(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<PolicyBody>,
) -> ApiResult<Json<EndpointOut>> {
    let ep = app
        .store
        .update_endpoint_policy(
            caller,
            ids.get("vpc_endpoint_id"),
            b.policy_statement.filter(|v| !v.is_null()),
            b.policy_document.filter(|v| !v.is_null()),
        )
        .await?;
    Ok(Json(wire::endpoint(&ep)))
}

async fn delete_policy(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<EndpointOut>> {
    let ep = app
        .store
        .delete_endpoint_policy(caller, ids.get("vpc_endpoint_id"))
        .await?;
    Ok(Json(wire::endpoint(&ep)))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = EndpointRoutetablesBody)]
struct RoutetablesBody {
    routetables: Option<Vec<String>>,
}

/// The route tables of an endpoint after a change.
#[derive(Serialize, ToSchema)]
struct Routetables {
    routetables: Vec<String>,
    /// Always empty.
    error: Vec<wire::EndpointErrorOut>,
}

async fn update_routetables(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<RoutetablesBody>,
) -> ApiResult<Json<Routetables>> {
    let ep = app
        .store
        .update_endpoint_routetables(
            caller,
            ids.get("vpc_endpoint_id"),
            req("routetables", b.routetables)?,
        )
        .await?;
    Ok(Json(Routetables {
        routetables: ep.routetables,
        error: vec![],
    }))
}

async fn delete(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store
        .delete_endpoint(caller, ids.get("vpc_endpoint_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn upgrade(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<UpgradeBody>,
) -> ApiResult<(StatusCode, Json<Empty>)> {
    b.expect("start")?;
    app.store
        .upgrade_endpoint(caller, ids.get("vpc_endpoint_id"))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Empty {})))
}
