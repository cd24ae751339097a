//! The VPC registry (Huawei VPC v1 shapes, as the `huaweicloudsdkvpc` v2 client speaks
//! them): VPCs, subnets, ports and route tables, so services and endpoints have
//! something to point at.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vpcep_store::{
    NewPort, NewRouteTable, NewSubnet, NewVpc, Port, PortFilter, Route, RouteTable,
    RouteTableUpdate, Subnet, Vpc,
};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::openapi::{body, Io};
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

/// A VPC.
#[derive(Serialize, ToSchema)]
struct VpcOut {
    id: String,
    name: String,
    cidr: String,
    description: String,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    routes: Vec<Value>,
    status: String,
    enterprise_project_id: String,
    tenant_id: String,
    created_at: String,
    updated_at: String,
    /// Where the VPC's addresses are reachable on this machine (loopback substrate).
    loopback_block: Option<String>,
}

fn vpc_json(app: &App, v: &Vpc) -> VpcOut {
    let block = app
        .node
        .as_ref()
        .and_then(|n| n.local_ip(v.seq, std::net::Ipv4Addr::UNSPECIFIED))
        .map(|a| format!("{a}/16"));
    VpcOut {
        id: v.id.clone(),
        name: v.name.clone(),
        cidr: v.cidr.clone(),
        description: v.description.clone(),
        routes: vec![],
        status: "OK".to_owned(),
        enterprise_project_id: "0".to_owned(),
        tenant_id: v.project_id.clone(),
        created_at: ts(v.created_at),
        updated_at: ts(v.updated_at),
        loopback_block: block,
    }
}

/// A subnet.
#[derive(Serialize, ToSchema)]
struct SubnetOut {
    id: String,
    name: String,
    description: String,
    cidr: String,
    gateway_ip: String,
    ipv6_enable: bool,
    dhcp_enable: bool,
    primary_dns: String,
    secondary_dns: String,
    dns_list: Vec<String>,
    availability_zone: String,
    vpc_id: String,
    status: String,
    neutron_network_id: String,
    neutron_subnet_id: String,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    extra_dhcp_opts: Vec<Value>,
    scope: String,
    tenant_id: String,
    created_at: String,
    updated_at: String,
}

fn subnet_json(s: &Subnet) -> SubnetOut {
    SubnetOut {
        id: s.id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        cidr: s.cidr.clone(),
        gateway_ip: s.gateway_ip.clone(),
        ipv6_enable: false,
        dhcp_enable: true,
        primary_dns: String::new(),
        secondary_dns: String::new(),
        dns_list: vec![],
        availability_zone: String::new(),
        vpc_id: s.vpc_id.clone(),
        status: "ACTIVE".to_owned(),
        neutron_network_id: s.id.clone(),
        neutron_subnet_id: s.neutron_subnet_id.clone(),
        extra_dhcp_opts: vec![],
        scope: "center".to_owned(),
        tenant_id: s.project_id.clone(),
        created_at: ts(s.created_at),
        updated_at: ts(s.updated_at),
    }
}

#[derive(Serialize, ToSchema)]
struct FixedIpOut {
    ip_address: String,
    subnet_id: String,
}

/// A port (Neutron shape).
#[derive(Serialize, ToSchema)]
struct PortOut {
    id: String,
    name: String,
    network_id: String,
    admin_state_up: bool,
    mac_address: String,
    fixed_ips: Vec<FixedIpOut>,
    device_id: String,
    device_owner: String,
    tenant_id: String,
    project_id: String,
    status: String,
    security_groups: Vec<String>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    allowed_address_pairs: Vec<Value>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    extra_dhcp_opts: Vec<Value>,
    #[serde(rename = "binding:vnic_type")]
    binding_vnic_type: String,
    instance_id: String,
    instance_type: String,
    port_security_enabled: bool,
    vpc_id: String,
    created_at: String,
    updated_at: String,
}

fn port_json(p: &Port) -> PortOut {
    PortOut {
        id: p.id.clone(),
        name: p.name.clone(),
        network_id: p.subnet_id.clone(),
        admin_state_up: true,
        mac_address: p.mac.clone(),
        fixed_ips: vec![FixedIpOut {
            ip_address: p.ip.clone(),
            subnet_id: p.neutron_subnet_id.clone(),
        }],
        device_id: p.device_id.clone(),
        device_owner: p.device_owner.clone(),
        tenant_id: p.project_id.clone(),
        project_id: p.project_id.clone(),
        status: "ACTIVE".to_owned(),
        security_groups: vec![],
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        binding_vnic_type: "normal".to_owned(),
        instance_id: String::new(),
        instance_type: String::new(),
        port_security_enabled: true,
        vpc_id: p.vpc_id.clone(),
        created_at: ts(p.created_at),
        updated_at: ts(p.updated_at),
    }
}

#[derive(Serialize, ToSchema)]
struct RouteOut {
    #[serde(rename = "type")]
    kind: String,
    destination: String,
    nexthop: String,
    description: String,
}

#[derive(Serialize, ToSchema)]
struct IdOut {
    id: String,
}

/// A route table, with the routes vpcep adds for gateway endpoints.
#[derive(Serialize, ToSchema)]
struct RouteTableOut {
    id: String,
    name: String,
    default: bool,
    routes: Vec<RouteOut>,
    subnets: Vec<IdOut>,
    tenant_id: String,
    vpc_id: String,
    description: String,
    created_at: String,
    updated_at: String,
}

fn rt_json(t: &RouteTable) -> RouteTableOut {
    RouteTableOut {
        id: t.id.clone(),
        name: t.name.clone(),
        default: t.is_default,
        routes: t
            .routes
            .iter()
            .chain(&t.endpoint_routes)
            .map(|r| RouteOut {
                kind: r.kind.clone(),
                destination: r.destination.clone(),
                nexthop: r.nexthop.clone(),
                description: r.description.clone(),
            })
            .collect(),
        subnets: t
            .subnet_ids
            .iter()
            .map(|s| IdOut { id: s.clone() })
            .collect(),
        tenant_id: t.project_id.clone(),
        vpc_id: t.vpc_id.clone(),
        description: t.description.clone(),
        created_at: ts(t.created_at),
        updated_at: ts(t.updated_at),
    }
}

#[derive(Serialize, ToSchema)]
struct OneVpc {
    vpc: VpcOut,
}

#[derive(Serialize, ToSchema)]
struct Vpcs {
    vpcs: Vec<VpcOut>,
}

#[derive(Serialize, ToSchema)]
struct OneSubnet {
    subnet: SubnetOut,
}

#[derive(Serialize, ToSchema)]
struct Subnets {
    subnets: Vec<SubnetOut>,
}

#[derive(Serialize, ToSchema)]
struct OnePort {
    port: PortOut,
}

#[derive(Serialize, ToSchema)]
struct Ports {
    ports: Vec<PortOut>,
}

#[derive(Serialize, ToSchema)]
struct OneRouteTable {
    routetable: RouteTableOut,
}

#[derive(Serialize, ToSchema)]
struct RouteTables {
    routetables: Vec<RouteTableOut>,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "create_vpc" | "update_vpc" => (body::<VpcBody>(), body::<OneVpc>()),
        "list_vpcs" => (None, body::<Vpcs>()),
        "show_vpc" => (None, body::<OneVpc>()),
        "create_subnet" | "update_subnet" => (body::<SubnetBody>(), body::<OneSubnet>()),
        "list_subnets" => (None, body::<Subnets>()),
        "show_subnet" => (None, body::<OneSubnet>()),
        "create_port" | "update_port" => (body::<PortBody>(), body::<OnePort>()),
        "list_ports" => (None, body::<Ports>()),
        "show_port" => (None, body::<OnePort>()),
        "create_route_table" => (body::<RtBody>(), body::<OneRouteTable>()),
        "update_route_table" => (body::<RtUpdateBody>(), body::<OneRouteTable>()),
        "list_route_tables" => (None, body::<RouteTables>()),
        "show_route_table" => (None, body::<OneRouteTable>()),
        "delete_vpc" | "delete_subnet" | "delete_port" | "delete_route_table" => (None, None),
        _ => return None,
    };
    Some(Io { request, response })
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

#[derive(Deserialize, ToSchema)]
#[schema(as = VpcIn)]
struct VpcIn {
    name: Option<String>,
    cidr: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = VpcBody)]
struct VpcBody {
    vpc: Option<VpcIn>,
}

async fn create_vpc(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<VpcBody>,
) -> ApiResult<Json<OneVpc>> {
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
    Ok(Json(OneVpc {
        vpc: vpc_json(&app, &vpc),
    }))
}

async fn list_vpcs(State(app): State<App>, Auth(caller): Auth, p: Params) -> ApiResult<Json<Vpcs>> {
    let rows = app.store.list_vpcs(caller, p.get("id")).await?;
    let rows = page_vpc_style(rows, |v| &v.id, &p)?;
    Ok(Json(Vpcs {
        vpcs: rows.iter().map(|v| vpc_json(&app, v)).collect(),
    }))
}

async fn show_vpc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<OneVpc>> {
    let vpc = app.store.get_vpc(caller, ids.get("vpc_id")).await?;
    Ok(Json(OneVpc {
        vpc: vpc_json(&app, &vpc),
    }))
}

async fn update_vpc(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<VpcBody>,
) -> ApiResult<Json<OneVpc>> {
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
    Ok(Json(OneVpc {
        vpc: vpc_json(&app, &vpc),
    }))
}

async fn delete_vpc(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store.delete_vpc(caller, ids.get("vpc_id")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = SubnetIn)]
struct SubnetIn {
    name: Option<String>,
    cidr: Option<String>,
    vpc_id: Option<String>,
    gateway_ip: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = SubnetBody)]
struct SubnetBody {
    subnet: Option<SubnetIn>,
}

async fn create_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<SubnetBody>,
) -> ApiResult<Json<OneSubnet>> {
    let s = req("subnet", b.subnet)?;
    let new = NewSubnet {
        vpc_id: req("subnet.vpc_id", s.vpc_id)?,
        name: s.name.unwrap_or_default(),
        cidr: req("subnet.cidr", s.cidr)?,
        gateway_ip: s.gateway_ip.filter(|g| !g.is_empty()),
        description: s.description.unwrap_or_default(),
    };
    let sub = app.store.create_subnet(caller, new).await?;
    Ok(Json(OneSubnet {
        subnet: subnet_json(&sub),
    }))
}

async fn list_subnets(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Subnets>> {
    let rows = app.store.list_subnets(caller, p.get("vpc_id")).await?;
    let rows = page_vpc_style(rows, |s| &s.id, &p)?;
    Ok(Json(Subnets {
        subnets: rows.iter().map(subnet_json).collect(),
    }))
}

async fn show_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<OneSubnet>> {
    let s = app.store.get_subnet(caller, ids.get("subnet_id")).await?;
    Ok(Json(OneSubnet {
        subnet: subnet_json(&s),
    }))
}

async fn update_subnet(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<SubnetBody>,
) -> ApiResult<Json<OneSubnet>> {
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
    Ok(Json(OneSubnet {
        subnet: subnet_json(&sub),
    }))
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

#[derive(Deserialize, ToSchema)]
#[schema(as = FixedIpIn)]
struct FixedIpIn {
    ip_address: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = VpcPortIn)]
struct PortIn {
    name: Option<String>,
    network_id: Option<String>,
    fixed_ips: Option<Vec<FixedIpIn>>,
    device_owner: Option<String>,
    device_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PortBody)]
struct PortBody {
    port: Option<PortIn>,
}

async fn create_port(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<PortBody>,
) -> ApiResult<Json<OnePort>> {
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
        machine: None,
    };
    let port = app.store.create_port(caller, new).await?;
    Ok(Json(OnePort {
        port: port_json(&port),
    }))
}

async fn list_ports(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Ports>> {
    let filter = PortFilter {
        is_host: None,
        id: p.get("id"),
        subnet_id: p.get("network_id"),
        device_owner: p.get("device_owner"),
        device_id: p.get("device_id"),
    };
    let rows = app.store.list_ports(caller, filter).await?;
    let rows = page_vpc_style(rows, |p| &p.id, &p)?;
    Ok(Json(Ports {
        ports: rows.iter().map(port_json).collect(),
    }))
}

async fn show_port(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<OnePort>> {
    let p = app.store.get_port(caller, ids.get("port_id")).await?;
    Ok(Json(OnePort {
        port: port_json(&p),
    }))
}

async fn update_port(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<PortBody>,
) -> ApiResult<Json<OnePort>> {
    let p = req("port", b.port)?;
    let port = app
        .store
        .update_port(caller, ids.get("port_id"), p.name)
        .await?;
    Ok(Json(OnePort {
        port: port_json(&port),
    }))
}

async fn delete_port(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<StatusCode> {
    app.store.delete_port(caller, ids.get("port_id")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteIn)]
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

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteTableIn)]
struct RtIn {
    name: Option<String>,
    vpc_id: Option<String>,
    routes: Option<Vec<RouteIn>>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteTableBody)]
struct RtBody {
    routetable: Option<RtIn>,
}

async fn create_rt(
    State(app): State<App>,
    Auth(caller): Auth,
    JsonBody(b): JsonBody<RtBody>,
) -> ApiResult<Json<OneRouteTable>> {
    let t = req("routetable", b.routetable)?;
    let new = NewRouteTable {
        vpc_id: req("routetable.vpc_id", t.vpc_id)?,
        name: t.name.unwrap_or_default(),
        routes: routes_in("routetable.routes", t.routes)?,
        description: t.description.unwrap_or_default(),
    };
    let rt = app.store.create_route_table(caller, new).await?;
    Ok(Json(OneRouteTable {
        routetable: rt_json(&rt),
    }))
}

async fn list_rts(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<RouteTables>> {
    let rows = app
        .store
        .list_route_tables(caller, p.get("vpc_id"), p.get("id"))
        .await?;
    let rows = page_vpc_style(rows, |t| &t.id, &p)?;
    Ok(Json(RouteTables {
        routetables: rows.iter().map(rt_json).collect(),
    }))
}

async fn show_rt(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<OneRouteTable>> {
    let t = app
        .store
        .get_route_table(caller, ids.get("routetable_id"))
        .await?;
    Ok(Json(OneRouteTable {
        routetable: rt_json(&t),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteChanges)]
struct RouteChanges {
    add: Option<Vec<RouteIn>>,
    del: Option<Vec<RouteIn>>,
    #[serde(rename = "mod")]
    modify: Option<Vec<RouteIn>>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteTableUpdateIn)]
struct RtUpdateIn {
    name: Option<String>,
    description: Option<String>,
    routes: Option<RouteChanges>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RouteTableUpdateBody)]
struct RtUpdateBody {
    routetable: Option<RtUpdateIn>,
}

async fn update_rt(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<RtUpdateBody>,
) -> ApiResult<Json<OneRouteTable>> {
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
    Ok(Json(OneRouteTable {
        routetable: rt_json(&rt),
    }))
}

async fn delete_rt(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<StatusCode> {
    app.store
        .delete_route_table(caller, ids.get("routetable_id"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
