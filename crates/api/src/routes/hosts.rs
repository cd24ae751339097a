//! Hosts: the stand-ins for ECS VMs and ELB VIPs. A host is a port (so it can back an
//! endpoint service) that the data plane stands up: a namespace joined to the subnet in
//! the netns substrate, just an address in the loopback one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vpcep_store::{Caller, Idc, NewIdc, NewPort, Port, PortFilter, LB_DEVICE_OWNER};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody};
use crate::openapi::{body, Io};
use crate::{App, HostStatus};

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v1/{project_id}/hosts", get(list).post(create))
        .route("/v1/{project_id}/hosts/{host_id}", get(show).delete(delete))
        .route("/v1/{project_id}/idcs", get(list_idcs).post(create_idc))
        .route(
            "/v1/{project_id}/idcs/{idc_id}",
            get(show_idc).delete(delete_idc),
        )
}

/// A host: a VM or load-balancer stand-in.
#[derive(Serialize, ToSchema)]
struct HostOut {
    id: String,
    port_id: String,
    name: String,
    ip: String,
    vpc_id: String,
    subnet_id: String,
    lb: bool,
    /// Its network namespace (netns substrate).
    netns: Option<String>,
    /// Where it answers on this machine (loopback substrate).
    local_ip: Option<String>,
    substrate: Option<String>,
    /// The compute machine it is placed on (deployments across machines).
    node: Option<String>,
    /// `creating`, `up` or `failed`; null when the data plane runs on gateway nodes.
    status: Option<String>,
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct OneHost {
    host: HostOut,
}

#[derive(Serialize, ToSchema)]
struct Hosts {
    hosts: Vec<HostOut>,
}

/// A data centre attached to a VPC.
#[derive(Serialize, ToSchema)]
struct IdcOut {
    id: String,
    name: String,
    vpc_id: String,
    cidr: String,
    ip: String,
    netns: Option<String>,
    substrate: Option<String>,
    status: Option<String>,
    error: Option<String>,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct OneIdc {
    idc: IdcOut,
}

#[derive(Serialize, ToSchema)]
struct Idcs {
    idcs: Vec<IdcOut>,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "create_host" => (body::<CreateBody>(), body::<OneHost>()),
        "list_hosts" => (None, body::<Hosts>()),
        "show_host" => (None, body::<OneHost>()),
        "create_idc" => (body::<CreateIdcBody>(), body::<OneIdc>()),
        "list_idcs" => (None, body::<Idcs>()),
        "show_idc" => (None, body::<OneIdc>()),
        "delete_host" | "delete_idc" => (None, None),
        _ => return None,
    };
    Some(Io { request, response })
}

async fn host_json(app: &App, caller: &Caller, p: &Port) -> ApiResult<HostOut> {
    let node = app.node.as_ref();
    let local_ip = match (node, p.ip.parse()) {
        (Some(n), Ok(ip)) => {
            let seq = app
                .store
                .get_vpc(caller.clone(), p.vpc_id.clone())
                .await?
                .seq;
            n.local_ip(seq, ip).map(|a| a.to_string())
        }
        _ => None,
    };
    Ok(HostOut {
        id: p.id.clone(),
        port_id: p.id.clone(),
        name: p.name.clone(),
        ip: p.ip.clone(),
        vpc_id: p.vpc_id.clone(),
        subnet_id: p.subnet_id.clone(),
        lb: p.device_owner == LB_DEVICE_OWNER,
        netns: node.and_then(|n| n.host_netns(&p.id)),
        local_ip,
        substrate: node.map(|n| n.substrate().to_owned()),
        node: p.machine.clone(),
        status: status_json(app, &p.id),
        error: error_json(app, &p.id),
    })
}

/// `creating`, `up` or `failed` once the data plane of this process has applied it;
/// null when the data plane runs on gateway nodes.
fn status_json(app: &App, id: &str) -> Option<String> {
    let status = match app.node.as_ref().and_then(|n| n.host_status(id))? {
        HostStatus::Creating => "creating",
        HostStatus::Up => "up",
        HostStatus::Failed(_) => "failed",
    };
    Some(status.to_owned())
}

fn error_json(app: &App, id: &str) -> Option<String> {
    match app.node.as_ref().and_then(|n| n.host_status(id)) {
        Some(HostStatus::Failed(e)) => Some(e),
        _ => None,
    }
}

#[derive(Deserialize, ToSchema)]
#[schema(as = HostIn)]
struct HostIn {
    name: Option<String>,
    vpc_id: Option<String>,
    subnet_id: Option<String>,
    ip: Option<String>,
    lb: Option<bool>,
    /// The compute machine to place it on (deployments across machines); by default
    /// the one with the fewest hosts.
    node: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateHostBody)]
struct CreateBody {
    host: Option<HostIn>,
}

async fn create(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult<Json<OneHost>> {
    let h = req("host", b.host)?;
    let vpc_id = req("host.vpc_id", h.vpc_id)?;
    let subnet_id = req("host.subnet_id", h.subnet_id)?;
    let subnet = app
        .store
        .get_subnet(caller.clone(), subnet_id.clone())
        .await
        .map_err(|_| {
            ApiError::bad(
                "EndPoint.0023",
                format!("host.subnet_id: subnet {subnet_id} not found"),
            )
        })?;
    if subnet.vpc_id != vpc_id {
        return Err(ApiError::bad(
            "EndPoint.2037",
            format!("host.subnet_id: subnet {subnet_id} is not in VPC {vpc_id}"),
        ));
    }
    let ip =
        h.ip.filter(|s| !s.is_empty())
            .map(|s| vpcep_model::parse_ipv4("host.ip", &s))
            .transpose()?;
    let lb = h.lb.unwrap_or(false);
    let port = app
        .store
        .create_port(
            caller.clone(),
            NewPort {
                subnet_id,
                name: h.name.unwrap_or_default(),
                ip,
                device_owner: if lb {
                    LB_DEVICE_OWNER.into()
                } else {
                    "compute:vpcep-host".into()
                },
                device_id: String::new(),
                is_host: true,
                machine: h.node.filter(|n| !n.is_empty()),
            },
        )
        .await?;
    Ok(Json(OneHost {
        host: host_json(&app, &caller, &port).await?,
    }))
}

async fn hosts_of(app: &App, caller: &Caller) -> ApiResult<Vec<Port>> {
    Ok(app
        .store
        .list_ports(
            caller.clone(),
            PortFilter {
                is_host: Some(true),
                ..Default::default()
            },
        )
        .await?)
}

async fn list(State(app): State<App>, Auth(caller): Auth) -> ApiResult<Json<Hosts>> {
    let mut out = Vec::new();
    for p in hosts_of(&app, &caller).await? {
        out.push(host_json(&app, &caller, &p).await?);
    }
    Ok(Json(Hosts { hosts: out }))
}

/// One of `all` by id, or by name when none has that id.
fn by_id_or_name<T: Clone>(
    all: Vec<T>,
    key: &str,
    id_name: impl Fn(&T) -> (&str, &str),
    what: &str,
) -> ApiResult<T> {
    if let Some(hit) = all.iter().find(|t| id_name(t).0 == key) {
        return Ok(hit.clone());
    }
    let by_name: Vec<&T> = all.iter().filter(|t| id_name(t).1 == key).collect();
    match by_name.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::not_found(what)),
        _ => Err(ApiError::param(format!(
            "{key:?} names several of them; use the id"
        ))),
    }
}

/// A host by id, or by name when no host has that id.
async fn find(app: &App, caller: &Caller, key: &str) -> ApiResult<Port> {
    let all = hosts_of(app, caller).await?;
    by_id_or_name(all, key, |p| (p.id.as_str(), p.name.as_str()), "host")
}

async fn show(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<OneHost>> {
    let p = find(&app, &caller, &ids.get("host_id")).await?;
    Ok(Json(OneHost {
        host: host_json(&app, &caller, &p).await?,
    }))
}

async fn delete(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    let p = find(&app, &caller, &ids.get("host_id")).await?;
    app.store.delete_port(caller, p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// === Data centres: the user guide's on-premises side, joined to a VPC as over a VPN ===

fn idc_json(app: &App, i: &Idc) -> IdcOut {
    let node = app.node.as_ref();
    IdcOut {
        id: i.id.clone(),
        name: i.name.clone(),
        vpc_id: i.vpc_id.clone(),
        cidr: i.cidr.clone(),
        ip: i.ip.clone(),
        netns: node.and_then(|n| n.idc_netns(&i.id)),
        substrate: node.map(|n| n.substrate().to_owned()),
        status: status_json(app, &i.id),
        error: error_json(app, &i.id),
        created_at: crate::wire::ts(i.created_at),
    }
}

#[derive(Deserialize, ToSchema)]
#[schema(as = IdcIn)]
struct IdcIn {
    name: Option<String>,
    vpc_id: Option<String>,
    cidr: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CreateIdcBody)]
struct CreateIdcBody {
    idc: Option<IdcIn>,
}

async fn create_idc(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<CreateIdcBody>,
) -> ApiResult<Json<OneIdc>> {
    let i = req("idc", b.idc)?;
    if let Some(n) = app.node.as_ref().filter(|n| n.substrate() != "netns") {
        return Err(ApiError::bad(
            "EndPoint.0001",
            format!(
                "a data centre needs its own network: the {} substrate has none (run vpcep serve --substrate netns)",
                n.substrate()
            ),
        ));
    }
    let idc = app
        .store
        .create_idc(
            caller,
            NewIdc {
                vpc_id: req("idc.vpc_id", i.vpc_id)?,
                name: i.name.unwrap_or_default(),
                cidr: req("idc.cidr", i.cidr)?,
            },
        )
        .await?;
    Ok(Json(OneIdc {
        idc: idc_json(&app, &idc),
    }))
}

async fn list_idcs(State(app): State<App>, Auth(caller): Auth) -> ApiResult<Json<Idcs>> {
    let all = app.store.list_idcs(caller).await?;
    Ok(Json(Idcs {
        idcs: all.iter().map(|i| idc_json(&app, i)).collect(),
    }))
}

async fn find_idc(app: &App, caller: &Caller, key: &str) -> ApiResult<Idc> {
    let all = app.store.list_idcs(caller.clone()).await?;
    by_id_or_name(
        all,
        key,
        |i| (i.id.as_str(), i.name.as_str()),
        "data centre",
    )
}

async fn show_idc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<OneIdc>> {
    let i = find_idc(&app, &caller, &ids.get("idc_id")).await?;
    Ok(Json(OneIdc {
        idc: idc_json(&app, &i),
    }))
}

async fn delete_idc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    let i = find_idc(&app, &caller, &ids.get("idc_id")).await?;
    app.store.delete_idc(caller, i.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
