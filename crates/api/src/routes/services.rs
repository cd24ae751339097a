//! Endpoint services (provider side): create, list, show, update, rename, delete,
//! describe for consumers, the public list, and the v2 backend operations.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vpcep_model::{
    validate_port_mappings, validate_service_name, PortMapping, ServerType, ServiceStatus,
    ServiceType, TcpProxy,
};
use vpcep_store::{NewService, ServiceFilter, ServiceUpdate};

use super::{req, tags_in, TagIn, UpgradeBody};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::openapi::{body, Io};
use crate::wire::{self, ServiceOut, ServiceSummaryOut};
use crate::App;

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "create_endpoint_service" => (body::<CreateBody>(), body::<ServiceOut>()),
        "list_endpoint_service" => (None, body::<ServiceList>()),
        "list_service_details" => (None, body::<ServiceOut>()),
        "update_endpoint_service" => (body::<UpdateBody>(), body::<ServiceOut>()),
        "delete_endpoint_service" => (None, None),
        "update_endpoint_service_name" => (body::<RenameBody>(), body::<Renamed>()),
        "list_service_describe_details" => (None, body::<ServiceSummaryOut>()),
        "list_service_public_details" => (None, body::<ServiceSummaryList>()),
        "add_endpoint_service_server_resource" => (body::<AddResourcesBody>(), None),
        "upgrade_endpoint_service" => (body::<UpgradeBody>(), None),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    let base = "/v1/{project_id}/vpc-endpoint-services";
    Router::new()
        .route(base, post(create).get(list))
        .route(&format!("{base}/describe"), get(describe))
        .route(&format!("{base}/public"), get(public))
        .route(
            &format!("{base}/{{vpc_endpoint_service_id}}"),
            get(show).put(update).delete(delete),
        )
        .route(
            &format!("{base}/{{vpc_endpoint_service_id}}/name"),
            put(rename),
        )
        .route(
            "/v2/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/add-server-resources",
            post(add_server_resources),
        )
        .route(
            "/v2/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/upgrade",
            post(upgrade),
        )
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ServicePortIn)]
pub(crate) struct PortIn {
    client_port: Option<i64>,
    server_port: Option<i64>,
    protocol: Option<String>,
}

fn ports_in(ports: &[PortIn]) -> ApiResult<Vec<PortMapping>> {
    let raw: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.client_port.unwrap_or(0),
                p.server_port.unwrap_or(0),
                p.protocol.as_deref(),
            )
        })
        .collect();
    Ok(validate_port_mappings(&raw)?)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateServiceBody)]
struct CreateBody {
    port_id: Option<String>,
    vpc_id: Option<String>,
    server_type: Option<String>,
    ports: Option<Vec<PortIn>>,
    service_name: Option<String>,
    approval_enabled: Option<bool>,
    service_type: Option<String>,
    ip: Option<String>,
    tcp_proxy: Option<String>,
    tags: Option<Vec<TagIn>>,
    description: Option<String>,
    ip_version: Option<String>,
    /// vpcep extension: concurrent sessions per endpoint (default 3000).
    connection_limit: Option<i64>,
}

/// `tcp_proxy`: TOA (a TCP option some kernels read) is not carried by this gateway.
fn tcp_proxy(raw: &str) -> ApiResult<TcpProxy> {
    match TcpProxy::parse(raw)? {
        TcpProxy::ToaOpen => Err(ApiError::param("tcp_proxy: toa_open is not supported; use proxy_open (PROXY protocol v2) to pass the client address to the backend")),
        other => Ok(other),
    }
}

fn check_ip_version(v: Option<&str>, allowed: &str) -> ApiResult<()> {
    match v {
        None => Ok(()),
        Some(v) if v == allowed => Ok(()),
        Some(v) => Err(ApiError::param(format!(
            "ip_version: {v:?} is not supported here; only {allowed}"
        ))),
    }
}

async fn create(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult<Json<ServiceOut>> {
    if let Some(t) = &b.service_type {
        if ServiceType::parse(t)? == ServiceType::Gateway {
            return Err(ApiError::param("service_type: gateway services are provided by the operator; tenants create interface services"));
        }
    }
    if b.ip.is_some() {
        return Err(ApiError::bad(
            "EndPoint.3011",
            "ip: the interface-VLAN backend is not available to tenants; use port_id",
        ));
    }
    check_ip_version(b.ip_version.as_deref(), "ipv4")?;
    let server_type = ServerType::parse(&req("server_type", b.server_type)?)
        .map_err(|e| ApiError::bad("EndPoint.3021", e.msg))?;
    let new = NewService {
        vpc_id: req("vpc_id", b.vpc_id)?,
        port_id: req("port_id", b.port_id)?,
        server_type,
        name: validate_service_name(b.service_name.as_deref().unwrap_or(""))?,
        approval_enabled: b.approval_enabled.unwrap_or(true),
        tcp_proxy: tcp_proxy(b.tcp_proxy.as_deref().unwrap_or("close"))?,
        description: b.description.unwrap_or_default(),
        ports: ports_in(&req("ports", b.ports)?)?,
        tags: tags_in(b.tags)?,
        connection_limit: b
            .connection_limit
            .unwrap_or(vpcep_model::DEFAULT_CONNECTION_LIMIT),
    };
    let svc = app.store.create_service(caller, new).await?;
    Ok(Json(wire::service(&svc)))
}

fn service_filter(p: &Params) -> ApiResult<ServiceFilter> {
    Ok(ServiceFilter {
        name_like: p.get("endpoint_service_name"),
        id: p.get("id"),
        status: p
            .get("status")
            .map(|s| ServiceStatus::parse(&s).map_err(|e| ApiError::bad("EndPoint.0019", e.msg)))
            .transpose()?,
    })
}

/// A page of the caller's services.
#[derive(Serialize, ToSchema)]
struct ServiceList {
    endpoint_services: Vec<ServiceOut>,
    total_count: i64,
}

/// A page of services a consumer may connect to.
#[derive(Serialize, ToSchema)]
struct ServiceSummaryList {
    endpoint_services: Vec<ServiceSummaryOut>,
    total_count: i64,
}

async fn list(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<ServiceList>> {
    let (rows, total) = app
        .store
        .list_services(caller, service_filter(&p)?, p.page(1000)?)
        .await?;
    Ok(Json(ServiceList {
        endpoint_services: rows.iter().map(wire::service).collect(),
        total_count: total,
    }))
}

async fn show(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<ServiceOut>> {
    let svc = app
        .store
        .get_service(caller, ids.get("vpc_endpoint_service_id"))
        .await?;
    Ok(Json(wire::service(&svc)))
}

async fn describe(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<ServiceSummaryOut>> {
    let (id, name) = (p.get("id"), p.get("endpoint_service_name"));
    if id.is_some() == name.is_some() {
        return Err(ApiError::param(
            "give exactly one of endpoint_service_name and id",
        ));
    }
    let svc = app.store.describe_service(caller, id, name).await?;
    Ok(Json(wire::service_summary(&svc)))
}

async fn public(
    State(app): State<App>,
    Auth(_): Auth,
    p: Params,
) -> ApiResult<Json<ServiceSummaryList>> {
    let filter = ServiceFilter {
        name_like: p.get("endpoint_service_name"),
        id: p.get("id"),
        status: None,
    };
    let (rows, total) = app
        .store
        .list_public_services(filter, p.page(1000)?)
        .await?;
    Ok(Json(ServiceSummaryList {
        endpoint_services: rows.iter().map(wire::service_summary).collect(),
        total_count: total,
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateServiceBody)]
struct UpdateBody {
    approval_enabled: Option<bool>,
    service_name: Option<String>,
    ports: Option<Vec<PortIn>>,
    port_id: Option<String>,
    tcp_proxy: Option<String>,
    description: Option<String>,
    ip: Option<String>,
    connection_limit: Option<i64>,
}

async fn update(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<UpdateBody>,
) -> ApiResult<Json<ServiceOut>> {
    match (&b.ip, &b.port_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "EndPoint.3052",
                "port_id and ip cannot be changed together",
            ))
        }
        (Some(_), None) => {
            return Err(ApiError::bad(
                "EndPoint.3055",
                "ip: the backend address follows port_id and cannot be set",
            ))
        }
        _ => {}
    }
    let u = ServiceUpdate {
        approval_enabled: b.approval_enabled,
        name: b
            .service_name
            .as_deref()
            .map(validate_service_name)
            .transpose()?,
        ports: b.ports.as_deref().map(ports_in).transpose()?,
        port_id: b.port_id,
        tcp_proxy: b.tcp_proxy.as_deref().map(tcp_proxy).transpose()?,
        description: b.description,
        connection_limit: b.connection_limit,
    };
    let svc = app
        .store
        .update_service(caller, ids.get("vpc_endpoint_service_id"), u)
        .await?;
    Ok(Json(wire::service(&svc)))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RenameServiceBody)]
struct RenameBody {
    endpoint_service_name: Option<String>,
}

/// The new name of a renamed service.
#[derive(Serialize, ToSchema)]
struct Renamed {
    endpoint_service_name: String,
}

async fn rename(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<RenameBody>,
) -> ApiResult<Json<Renamed>> {
    let name = validate_service_name(&req("endpoint_service_name", b.endpoint_service_name)?)?;
    let u = ServiceUpdate {
        name: Some(name),
        ..Default::default()
    };
    let svc = app
        .store
        .update_service(caller, ids.get("vpc_endpoint_service_id"), u)
        .await?;
    Ok(Json(Renamed {
        endpoint_service_name: svc.service_name,
    }))
}

async fn delete(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store
        .delete_service(caller, ids.get("vpc_endpoint_service_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ServerResource)]
struct ServerResource {
    resource_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = AddServerResourcesBody)]
struct AddResourcesBody {
    server_resources: Option<Vec<ServerResource>>,
}

async fn add_server_resources(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<AddResourcesBody>,
) -> ApiResult<StatusCode> {
    let list = req("server_resources", b.server_resources)?
        .into_iter()
        .map(|r| req("server_resources.resource_id", r.resource_id))
        .collect::<ApiResult<Vec<_>>>()?;
    app.store
        .add_server_resources(caller, ids.get("vpc_endpoint_service_id"), list)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn upgrade(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<UpgradeBody>,
) -> ApiResult<StatusCode> {
    b.expect("upgrade")?;
    app.store
        .upgrade_service(caller, ids.get("vpc_endpoint_service_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
