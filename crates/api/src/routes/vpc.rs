//! The VPC registry (Huawei VPC v1 shapes, as the `huaweicloudsdkvpc` v2 client speaks
//! them): VPCs, subnets, ports and route tables, so services and endpoints have
//! something to point at.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vpcep_store::{
    NewPort, NewRouteTable, NewSubnet, NewVpc, Port, PortFilter, Route, RouteTable,
    RouteTableUpdate, Subnet, Vpc,
};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::wire::ts;
use crate::App;

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v1/{project_id}/vpcs", post(create_vpc).get(list_vpcs))
        .route(
            "/v1/{project_id}/vpcs/{vpc_id}",
            get(show_vpc).put(update_vpc).delete(delete_vpc),
        )
        .route(
            "/v1/{project_id}/subnets",
            post(create_subnet).get(list_subnets),
        )
        .route("/v1/{project_id}/subnets/{subnet_id}", get(show_subnet))
        .route(
            "/v1/{project_id}/vpcs/{vpc_id}/subnets/{subnet_id}",
            put(update_subnet).delete(delete_subnet),
        )
        .route("/v1/{project_id}/ports", post(create_port).get(list_ports))
        .route(
            "/v1/{project_id}/ports/{port_id}",
            get(show_port).put(update_port).delete(delete_port),
        )
        .route(
            "/v1/{project_id}/routetables",
            post(create_rt).get(list_rts),
        )
        .route(
            "/v1/{project_id}/routetables/{routetable_id}",
            get(show_rt).put(update_rt).delete(delete_rt),
        )
}

fn vpc_json(app: &App, v: &Vpc) -> Value {
    // Where the VPC's addresses are reachable on this machine (loopback substrate).
    let block = app
        .node
        .as_ref()
        .and_then(|n| n.local_ip(v.seq, std::net::Ipv4Addr::UNSPECIFIED))
        .map(|a| format!("{a}/16"));
    json!({
        "id": v.id, "name": v.name, "cidr": v.cidr, "description": v.description,
        "routes": [], "status": "OK", "enterprise_project_id": "0", "tenant_id": v.project_id,
        "created_at": ts(v.created_at), "updated_at": ts(v.updated_at),
        "loopback_block": block,
    })
}

fn subnet_json(s: &Subnet) -> Value {
    json!({
        "id": s.id, "name": s.name, "description": s.description, "cidr": s.cidr,
        "gateway_ip": s.gateway_ip, "ipv6_enable": false, "dhcp_enable": true,
        "primary_dns": "", "secondary_dns": "", "dns_list": [], "availability_zone": "",
        "vpc_id": s.vpc_id, "status": "ACTIVE", "neutron_network_id": s.id,
        "neutron_subnet_id": s.neutron_subnet_id, "extra_dhcp_opts": [], "scope": "center",
        "tenant_id": s.project_id, "created_at": ts(s.created_at), "updated_at": ts(s.updated_at),
    })
}

fn port_json(p: &Port) -> Value {
    json!({
        "id": p.id, "name": p.name, "network_id": p.subnet_id, "admin_state_up": true,
        "mac_address": p.mac,
        "fixed_ips": [{"ip_address": p.ip, "subnet_id": p.neutron_subnet_id}],
        "device_id": p.device_id, "device_owner": p.device_owner, "tenant_id": p.project_id,
        "project_id": p.project_id, "status": "ACTIVE", "security_groups": [],
        "allowed_address_pairs": [], "extra_dhcp_opts": [], "binding:vnic_type": "normal",
        "instance_id": "", "instance_type": "", "port_security_enabled": true,
        "vpc_id": p.vpc_id, "created_at": ts(p.created_at), "updated_at": ts(p.updated_at),
    })
}

fn rt_json(t: &RouteTable) -> Value {
    json!({
        "id": t.id, "name": t.name, "default": t.is_default,
        "routes": t.routes.iter().chain(&t.endpoint_routes).map(|r| json!({"type": r.kind, "destination": r.destination, "nexthop": r.nexthop, "description": r.description})).collect::<Vec<_>>(),
        "subnets": t.subnet_ids.iter().map(|s| json!({"id": s})).collect::<Vec<_>>(),
        "tenant_id": t.project_id, "vpc_id": t.vpc_id, "description": t.description,
        "created_at": ts(t.created_at), "updated_at": ts(t.updated_at),
    })
}

/// VPC v1 lists take `limit` (and a `marker`, the last id of the previous page).
fn page_vpc_style<T>(rows: Vec<T>, id: impl Fn(&T) -> &str, p: &Params) -> ApiResult<Vec<T>> {
    let limit = p.int("limit", "EndPoint.0006")?.unwrap_or(2000);
    if !(0..=2000).contains(&limit) {
        return Err(ApiError::bad(
            "EndPoint.0006",
            format!("limit: {limit} is outside 0-2000"),
        ));
    }
    let start = match p.get("marker") {
        Some(m) => rows
            .iter()
            .position(|r| id(r) == m)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::param(format!("marker: {m} not found")))?,
        None => 0,
    };
    Ok(rows.into_iter().skip(start).take(limit as usize).collect())
}

#[derive(Deserialize)]
struct VpcIn {
    name: Option<String>,
    cidr: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct VpcBody {
    vpc: Option<VpcIn>,
}

async fn create_vpc(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<VpcBody>,
) -> ApiResult<Json<Value>> {
    let v = req("vpc", b.vpc)?;
    let vpc = app
        .store
        .create_vpc(
            caller,
            NewVpc {
                name: v.name.unwrap_or_default(),
                cidr: v.cidr.unwrap_or_else(|| "192.168.0.0/16".into()),
                description: v.description.unwrap_or_default(),
            },
        )
        .await?;
    Ok(Json(json!({"vpc": vpc_json(&app, &vpc)})))
}

async fn list_vpcs(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let rows = app.store.list_vpcs(caller, p.get("id")).await?;
    let rows = page_vpc_style(rows, |v| &v.id, &p)?;
    Ok(Json(
        json!({"vpcs": rows.iter().map(|v| vpc_json(&app, v)).collect::<Vec<_>>()}),
    ))
}

async fn show_vpc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<Value>> {
    let vpc = app.store.get_vpc(caller, ids.get("vpc_id")).await?;
    Ok(Json(json!({"vpc": vpc_json(&app, &vpc)})))
}

async fn update_vpc(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<VpcBody>,
) -> ApiResult<Json<Value>> {
    let v = req("vpc", b.vpc)?;
    if v.cidr.is_some() {
        return Err(ApiError::param(
            "vpc.cidr: the CIDR of a VPC cannot be changed here",
        ));
    }
    let vpc = app
        .store
        .update_vpc(caller, ids.get("vpc_id"), v.name, v.description)
        .await?;
    Ok(Json(json!({"vpc": vpc_json(&app, &vpc)})))
}

async fn delete_vpc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store.delete_vpc(caller, ids.get("vpc_id")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SubnetIn {
    name: Option<String>,
    cidr: Option<String>,
    vpc_id: Option<String>,
    gateway_ip: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct SubnetBody {
    subnet: Option<SubnetIn>,
}

async fn create_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<SubnetBody>,
) -> ApiResult<Json<Value>> {
    let s = req("subnet", b.subnet)?;
    let new = NewSubnet {
        vpc_id: req("subnet.vpc_id", s.vpc_id)?,
        name: s.name.unwrap_or_default(),
        cidr: req("subnet.cidr", s.cidr)?,
        gateway_ip: s.gateway_ip.filter(|g| !g.is_empty()),
        description: s.description.unwrap_or_default(),
    };
    let sub = app.store.create_subnet(caller, new).await?;
    Ok(Json(json!({"subnet": subnet_json(&sub)})))
}

async fn list_subnets(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let rows = app.store.list_subnets(caller, p.get("vpc_id")).await?;
    let rows = page_vpc_style(rows, |s| &s.id, &p)?;
    Ok(Json(
        json!({"subnets": rows.iter().map(subnet_json).collect::<Vec<_>>()}),
    ))
}

async fn show_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<Value>> {
    let s = app.store.get_subnet(caller, ids.get("subnet_id")).await?;
    Ok(Json(json!({"subnet": subnet_json(&s)})))
}

async fn update_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<SubnetBody>,
) -> ApiResult<Json<Value>> {
    let s = req("subnet", b.subnet)?;
    let current = app
        .store
        .get_subnet(caller.clone(), ids.get("subnet_id"))
        .await?;
    if current.vpc_id != ids.get("vpc_id") {
        return Err(ApiError::not_found("subnet"));
    }
    let sub = app
        .store
        .update_subnet(caller, current.id, s.name, s.description)
        .await?;
    Ok(Json(json!({"subnet": subnet_json(&sub)})))
}

async fn delete_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<StatusCode> {
    app.store
        .delete_subnet(caller, ids.get("vpc_id"), ids.get("subnet_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct FixedIpIn {
    ip_address: Option<String>,
}

#[derive(Deserialize)]
struct PortIn {
    name: Option<String>,
    network_id: Option<String>,
    fixed_ips: Option<Vec<FixedIpIn>>,
    device_owner: Option<String>,
    device_id: Option<String>,
}

#[derive(Deserialize)]
struct PortBody {
    port: Option<PortIn>,
}

async fn create_port(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<PortBody>,
) -> ApiResult<Json<Value>> {
    let p = req("port", b.port)?;
    let fixed = p.fixed_ips.unwrap_or_default();
    if fixed.len() > 1 {
        return Err(ApiError::param(
            "port.fixed_ips: at most one address per port",
        ));
    }
    let ip = fixed
        .into_iter()
        .next()
        .and_then(|f| f.ip_address)
        .filter(|s| !s.is_empty())
        .map(|s| vpcep_model::parse_ipv4("port.fixed_ips.ip_address", &s))
        .transpose()?;
    let new = NewPort {
        subnet_id: req("port.network_id", p.network_id)?,
        name: p.name.unwrap_or_default(),
        ip,
        device_owner: p.device_owner.unwrap_or_default(),
        device_id: p.device_id.unwrap_or_default(),
        is_host: false,
    };
    let port = app.store.create_port(caller, new).await?;
    Ok(Json(json!({"port": port_json(&port)})))
}

async fn list_ports(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let filter = PortFilter {
        is_host: None,
        id: p.get("id"),
        subnet_id: p.get("network_id"),
        device_owner: p.get("device_owner"),
        device_id: p.get("device_id"),
    };
    let rows = app.store.list_ports(caller, filter).await?;
    let rows = page_vpc_style(rows, |p| &p.id, &p)?;
    Ok(Json(
        json!({"ports": rows.iter().map(port_json).collect::<Vec<_>>()}),
    ))
}

async fn show_port(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<Value>> {
    let p = app.store.get_port(caller, ids.get("port_id")).await?;
    Ok(Json(json!({"port": port_json(&p)})))
}

async fn update_port(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<PortBody>,
) -> ApiResult<Json<Value>> {
    let p = req("port", b.port)?;
    let port = app
        .store
        .update_port(caller, ids.get("port_id"), p.name)
        .await?;
    Ok(Json(json!({"port": port_json(&port)})))
}

async fn delete_port(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<StatusCode> {
    app.store.delete_port(caller, ids.get("port_id")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RouteIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    destination: Option<String>,
    nexthop: Option<String>,
    description: Option<String>,
}

fn routes_in(field: &str, list: Option<Vec<RouteIn>>) -> ApiResult<Vec<Route>> {
    list.unwrap_or_default()
        .into_iter()
        .map(|r| {
            Ok(Route {
                destination: req(&format!("{field}.destination"), r.destination)?,
                kind: r.kind.unwrap_or_else(|| "ecs".into()),
                nexthop: r.nexthop.unwrap_or_default(),
                description: r.description.unwrap_or_default(),
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct RtIn {
    name: Option<String>,
    vpc_id: Option<String>,
    routes: Option<Vec<RouteIn>>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct RtBody {
    routetable: Option<RtIn>,
}

async fn create_rt(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<RtBody>,
) -> ApiResult<Json<Value>> {
    let t = req("routetable", b.routetable)?;
    let new = NewRouteTable {
        vpc_id: req("routetable.vpc_id", t.vpc_id)?,
        name: t.name.unwrap_or_default(),
        routes: routes_in("routetable.routes", t.routes)?,
        description: t.description.unwrap_or_default(),
    };
    let rt = app.store.create_route_table(caller, new).await?;
    Ok(Json(json!({"routetable": rt_json(&rt)})))
}

async fn list_rts(State(app): State<App>, Auth(caller): Auth, p: Params) -> ApiResult<Json<Value>> {
    let rows = app
        .store
        .list_route_tables(caller, p.get("vpc_id"), p.get("id"))
        .await?;
    let rows = page_vpc_style(rows, |t| &t.id, &p)?;
    Ok(Json(
        json!({"routetables": rows.iter().map(rt_json).collect::<Vec<_>>()}),
    ))
}

async fn show_rt(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<Value>> {
    let t = app
        .store
        .get_route_table(caller, ids.get("routetable_id"))
        .await?;
    Ok(Json(json!({"routetable": rt_json(&t)})))
}

#[derive(Deserialize)]
struct RouteChanges {
    add: Option<Vec<RouteIn>>,
    del: Option<Vec<RouteIn>>,
    #[serde(rename = "mod")]
    modify: Option<Vec<RouteIn>>,
}

#[derive(Deserialize)]
struct RtUpdateIn {
    name: Option<String>,
    description: Option<String>,
    routes: Option<RouteChanges>,
}

#[derive(Deserialize)]
struct RtUpdateBody {
    routetable: Option<RtUpdateIn>,
}

async fn update_rt(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<RtUpdateBody>,
) -> ApiResult<Json<Value>> {
    let t = req("routetable", b.routetable)?;
    let (add, del, modify) = match t.routes {
        Some(r) => (r.add, r.del, r.modify),
        None => (None, None, None),
    };
    let u = RouteTableUpdate {
        name: t.name,
        description: t.description,
        add: routes_in("routes.add", add)?,
        del: routes_in("routes.del", del)?,
        modify: routes_in("routes.mod", modify)?,
    };
    let rt = app
        .store
        .update_route_table(caller, ids.get("routetable_id"), u)
        .await?;
    Ok(Json(json!({"routetable": rt_json(&rt)})))
}

async fn delete_rt(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store
        .delete_route_table(caller, ids.get("routetable_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
