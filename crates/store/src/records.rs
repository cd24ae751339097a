//! The rows the store hands out and the commands it takes, in domain terms.

use std::net::Ipv4Addr;

use vpcep_model::{
    EndpointStatus, PortMapping, ServerType, ServiceName, ServiceStatus, ServiceType, Tag, TcpProxy,
};

/// Who is asking: an authenticated account acting in one of its projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub domain_id: String,
    pub project_id: String,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub domain_id: String,
    pub project_ids: Vec<(String, String)>,
    pub service_quota: i64,
    pub endpoint_quota: i64,
    pub created_at: i64,
}

/// A freshly created account with the secrets that are shown exactly once.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub domain_id: String,
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: String,
    pub domain_id: String,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub caller: Caller,
    pub account_name: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Sorting and paging of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    pub sort: SortKey,
    pub desc: bool,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 1000,
            offset: 0,
            sort: SortKey::Created,
            desc: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Created,
    Updated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Service,
    Endpoint,
}

// === VPC registry ===

#[derive(Debug, Clone)]
pub struct NewVpc {
    pub name: String,
    pub cidr: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Vpc {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub cidr: String,
    pub description: String,
    pub seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An on-premises data centre joined to a VPC (a VPN or Direct Connect stand-in).
#[derive(Debug, Clone)]
pub struct Idc {
    pub id: String,
    pub project_id: String,
    pub vpc_id: String,
    pub name: String,
    pub cidr: String,
    pub ip: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewIdc {
    pub vpc_id: String,
    pub name: String,
    pub cidr: String,
}

#[derive(Debug, Clone)]
pub struct NewSubnet {
    pub vpc_id: String,
    pub name: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub id: String,
    pub project_id: String,
    pub vpc_id: String,
    pub name: String,
    pub cidr: String,
    pub gateway_ip: String,
    pub neutron_subnet_id: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `device_owner` of a port that stands for a load balancer's VIP.
pub const LB_DEVICE_OWNER: &str = "neutron:LOADBALANCERV2";

#[derive(Debug, Clone)]
pub struct NewPort {
    pub subnet_id: String,
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub device_owner: String,
    pub device_id: String,
    /// A host: the data plane stands up a namespace (netns) or an address (loopback).
    pub is_host: bool,
    /// For a host: the compute machine to place it on; `None`: the one with the fewest
    /// hosts, if there are compute machines.
    pub machine: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PortFilter {
    pub is_host: Option<bool>,
    pub id: Option<String>,
    pub subnet_id: Option<String>,
    pub device_owner: Option<String>,
    pub device_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub id: String,
    pub project_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub neutron_subnet_id: String,
    pub name: String,
    pub ip: String,
    pub mac: String,
    pub device_owner: String,
    pub device_id: String,
    pub is_host: bool,
    /// The compute machine a host is placed on.
    pub machine: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub nexthop: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct NewRouteTable {
    pub vpc_id: String,
    pub name: String,
    pub routes: Vec<Route>,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTableUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub add: Vec<Route>,
    pub del: Vec<Route>,
    pub modify: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub id: String,
    pub project_id: String,
    pub vpc_id: String,
    pub name: String,
    pub is_default: bool,
    pub routes: Vec<Route>,
    /// Routes of accepted gateway endpoints (type `vpcep`), derived from the endpoints.
    pub endpoint_routes: Vec<Route>,
    pub subnet_ids: Vec<String>,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

// === Endpoint services ===

#[derive(Debug, Clone)]
pub struct NewService {
    pub vpc_id: String,
    pub port_id: String,
    pub server_type: ServerType,
    pub name: ServiceName,
    pub approval_enabled: bool,
    pub tcp_proxy: TcpProxy,
    pub description: String,
    pub ports: Vec<PortMapping>,
    pub tags: Vec<Tag>,
    pub connection_limit: i64,
}

/// An operator-provided cloud service (the user guide's `dns` and `obs`).
#[derive(Debug, Clone)]
pub struct NewPublicService {
    pub name: String,
    pub region: String,
    pub service_type: ServiceType,
    pub backend_ip: Ipv4Addr,
    pub cidr: Option<String>,
    pub ports: Vec<PortMapping>,
    pub description: String,
}

/// What the operator changes on a public service (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PublicServiceUpdate {
    pub backend_ip: Option<Ipv4Addr>,
    pub ports: Option<Vec<PortMapping>>,
    pub cidr: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ServiceUpdate {
    pub approval_enabled: Option<bool>,
    pub name: Option<ServiceName>,
    pub ports: Option<Vec<PortMapping>>,
    pub port_id: Option<String>,
    pub tcp_proxy: Option<TcpProxy>,
    pub description: Option<String>,
    pub connection_limit: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    pub name_like: Option<String>,
    pub id: Option<String>,
    pub status: Option<ServiceStatus>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub project_id: String,
    pub domain_id: String,
    pub short_name: String,
    pub service_name: String,
    pub vpc_id: String,
    pub port_id: String,
    pub backend_ip: String,
    pub server_type: ServerType,
    pub service_type: ServiceType,
    pub approval_enabled: bool,
    pub status: ServiceStatus,
    pub tcp_proxy: TcpProxy,
    pub description: String,
    pub is_public: bool,
    pub cidr: String,
    pub ports: Vec<PortMapping>,
    pub connection_limit: i64,
    pub editions: Vec<String>,
    pub error: Option<String>,
    pub connection_count: i64,
    pub tags: Vec<Tag>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct PermissionRow {
    pub id: String,
    pub permission: String,
    pub permission_type: String,
    pub description: String,
    pub created_at: i64,
}

// === Endpoints ===

#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub service_id: String,
    pub vpc_id: String,
    pub subnet_id: Option<String>,
    pub port_ip: Option<Ipv4Addr>,
    pub enable_dns: bool,
    pub routetables: Option<Vec<String>>,
    pub whitelist: Vec<String>,
    pub enable_whitelist: bool,
    pub description: String,
    pub tags: Vec<Tag>,
    pub policy_statement: Option<serde_json::Value>,
    pub policy_document: Option<serde_json::Value>,
    pub region: String,
}

#[derive(Debug, Clone, Default)]
pub struct EndpointFilter {
    pub service_name_like: Option<String>,
    pub vpc_id: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub id: Option<String>,
    pub marker_id: Option<i64>,
    pub status: Option<EndpointStatus>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub project_id: String,
    pub domain_id: String,
    pub service_id: String,
    pub service_name: String,
    pub service_type: ServiceType,
    pub vpc_id: String,
    pub subnet_id: String,
    pub ip: String,
    pub status: EndpointStatus,
    pub marker_id: i64,
    pub enable_dns: bool,
    pub dns_name: String,
    pub whitelist: Vec<String>,
    pub enable_whitelist: bool,
    pub routetables: Vec<String>,
    pub description: String,
    pub conn_description: String,
    pub policy_statement: Option<serde_json::Value>,
    pub policy_document: Option<serde_json::Value>,
    pub edition: String,
    pub error: Option<String>,
    pub tags: Vec<Tag>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct Quota {
    pub services_used: i64,
    pub services_quota: i64,
    pub endpoints_used: i64,
    pub endpoints_quota: i64,
}

#[derive(Debug, Clone)]
pub struct TaggedResource {
    pub id: String,
    pub name: String,
    pub tags: Vec<Tag>,
}

/// Work left for the controller: rows in a transitional status.
#[derive(Debug, Clone, Default)]
pub struct Transitional {
    pub services_creating: Vec<String>,
    pub services_deleting: Vec<String>,
    /// Endpoints in `creating`, and whether the data plane has to bring them up before
    /// they settle (an endpoint that waits for approval has nothing to bring up yet).
    pub endpoints_creating: Vec<(String, bool)>,
    pub endpoints_deleting: Vec<String>,
}

impl Transitional {
    pub fn is_empty(&self) -> bool {
        self.services_creating.is_empty()
            && self.services_deleting.is_empty()
            && self.endpoints_creating.is_empty()
            && self.endpoints_deleting.is_empty()
    }
}

/// A VPC's private DNS zone: a VPC with published names (see `DnsRecord`), how many, the
/// oldest creation and the latest update among them.
#[derive(Debug, Clone)]
pub struct DnsZone {
    pub vpc_id: String,
    pub records: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A published private name: an interface endpoint with `enable_dns`, accepted, named.
#[derive(Debug, Clone)]
pub struct DnsRecord {
    /// The endpoint's id.
    pub id: String,
    pub vpc_id: String,
    /// Without the final dot.
    pub name: String,
    pub ip: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which published names: of one VPC, of one endpoint, containing a text.
#[derive(Debug, Clone, Default)]
pub struct DnsRecordFilter {
    pub vpc_id: Option<String>,
    pub id: Option<String>,
    /// A plain, case-sensitive substring of the name.
    pub name_contains: Option<String>,
}

/// A process serving the database, as it last said (`vpcep admin cluster status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replica {
    pub name: String,
    /// Where its API listens.
    pub address: String,
    pub version: String,
    /// Unix microseconds.
    pub started_at: i64,
    pub seen_at: i64,
    pub seen_secs_ago: f64,
    /// Holds the controller lease.
    pub leader: bool,
}

/// A machine of a deployment across machines, as it registered (`vpcep admin node list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub name: String,
    pub role: String,
    pub zone: String,
    pub underlay: String,
    pub registered_at: i64,
    /// When it last reported (Unix microseconds), and how long ago that is.
    pub seen_at: i64,
    pub seen_secs_ago: f64,
    /// Declared down by the controller: silent longer than `--machine-down-after`.
    pub down: bool,
    /// Its slot in the gateway pair (0 or 1); `None`: a spare, or a compute machine.
    pub slot: Option<i64>,
    /// Hosts placed on it.
    pub hosts: i64,
}

/// What the controller changed of the machines: those it declared down, and the slots
/// of the gateway pair that moved (`None`: the machine lost its slot), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachinesTended {
    pub down: Vec<String>,
    pub slots: Vec<(String, Option<i64>)>,
}

impl MachinesTended {
    pub fn is_empty(&self) -> bool {
        self.down.is_empty() && self.slots.is_empty()
    }
}
