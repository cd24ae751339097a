//! The Huawei JSON shapes of our records. Only this crate knows these field names.
//!
//! Every response body is a typed struct here (or next to its handler) that derives
//! `Serialize` for the wire and `ToSchema` for `/openapi.json`, so the document describes
//! exactly what the handlers send.

use serde::Serialize;
use serde_json::Value;
use time::macros::format_description;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vpcep_model::{
    EndpointStatus, PortMapping, Protocol, ServerType, ServiceStatus, ServiceType, Tag, TcpProxy,
};
use vpcep_store::{Endpoint, PermissionRow, Service};

/// Unix microseconds → `2025-01-01T12:00:00Z`.
pub(crate) fn ts(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

/// A resource tag.
#[derive(Serialize, ToSchema)]
pub(crate) struct TagOut {
    key: String,
    value: String,
}

pub(crate) fn tags(tags: &[Tag]) -> Vec<TagOut> {
    tags.iter()
        .map(|t| TagOut {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

/// A port mapping of a service.
#[derive(Serialize, ToSchema)]
pub(crate) struct PortMappingOut {
    client_port: u16,
    server_port: u16,
    protocol: Protocol,
}

pub(crate) fn ports(ports: &[PortMapping]) -> Vec<PortMappingOut> {
    ports
        .iter()
        .map(|p| PortMappingOut {
            client_port: p.client_port,
            server_port: p.server_port,
            protocol: p.protocol,
        })
        .collect()
}

/// Why a service failed.
#[derive(Serialize, ToSchema)]
pub(crate) struct ServiceErrorOut {
    code: String,
    message: String,
}

/// The full service object, for its owner.
#[derive(Serialize, ToSchema)]
pub(crate) struct ServiceOut {
    id: String,
    port_id: String,
    service_name: String,
    server_type: ServerType,
    vpc_id: String,
    pool_id: String,
    approval_enabled: bool,
    status: ServiceStatus,
    service_type: ServiceType,
    supported_editions: Vec<String>,
    created_at: String,
    updated_at: String,
    project_id: String,
    domain_id: String,
    cidr_type: String,
    ip: String,
    ports: Vec<PortMappingOut>,
    connection_limit: i64,
    tcp_proxy: TcpProxy,
    tags: Vec<TagOut>,
    connection_count: i64,
    error: Vec<ServiceErrorOut>,
    description: String,
    enable_policy: bool,
    ip_version: String,
}

pub(crate) fn service(s: &Service) -> ServiceOut {
    ServiceOut {
        id: s.id.clone(),
        port_id: s.port_id.clone(),
        service_name: s.service_name.clone(),
        server_type: s.server_type,
        vpc_id: s.vpc_id.clone(),
        pool_id: String::new(),
        approval_enabled: s.approval_enabled,
        status: s.status,
        service_type: s.service_type,
        supported_editions: s.editions.clone(),
        created_at: ts(s.created_at),
        updated_at: ts(s.updated_at),
        project_id: s.project_id.clone(),
        domain_id: s.domain_id.clone(),
        cidr_type: "internal".to_owned(),
        ip: s.backend_ip.clone(),
        ports: ports(&s.ports),
        connection_limit: s.connection_limit,
        tcp_proxy: s.tcp_proxy,
        tags: tags(&s.tags),
        connection_count: s.connection_count,
        error: s
            .error
            .iter()
            .map(|e| ServiceErrorOut {
                code: "EndPoint.3001".to_owned(),
                message: e.clone(),
            })
            .collect(),
        description: s.description.clone(),
        enable_policy: s.service_type == ServiceType::Gateway,
        ip_version: "ipv4".to_owned(),
    }
}

/// What any permitted consumer may learn about a service (no backend details).
#[derive(Serialize, ToSchema)]
pub(crate) struct ServiceSummaryOut {
    id: String,
    owner: String,
    service_name: String,
    service_type: ServiceType,
    created_at: String,
    is_charge: bool,
    enable_policy: bool,
    public_border_group: String,
    cidr: Option<String>,
    ports: Vec<PortMappingOut>,
}

pub(crate) fn service_summary(s: &Service) -> ServiceSummaryOut {
    ServiceSummaryOut {
        id: s.id.clone(),
        owner: if s.is_public {
            "vpcep".to_owned()
        } else {
            s.domain_id.clone()
        },
        service_name: s.service_name.clone(),
        service_type: s.service_type,
        created_at: ts(s.created_at),
        is_charge: false,
        enable_policy: s.service_type == ServiceType::Gateway,
        public_border_group: String::new(),
        cidr: (!s.cidr.is_empty()).then(|| s.cidr.clone()),
        ports: ports(&s.ports),
    }
}

/// Why an endpoint failed.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointErrorOut {
    error_code: String,
    error_message: String,
}

fn error_list(e: &Endpoint) -> Vec<EndpointErrorOut> {
    match &e.error {
        Some(msg) if e.status == EndpointStatus::Failed => vec![EndpointErrorOut {
            error_code: "EndPoint.2022".to_owned(),
            error_message: msg.clone(),
        }],
        _ => vec![],
    }
}

/// The node IP shows once the provider has accepted the connection.
fn shows_ip(e: &Endpoint) -> bool {
    matches!(
        e.status,
        EndpointStatus::Accepted | EndpointStatus::Rejected
    ) && !e.ip.is_empty()
}

/// An endpoint, for its owner.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointOut {
    id: String,
    service_type: ServiceType,
    status: EndpointStatus,
    active_status: Vec<String>,
    enable_status: String,
    specification_name: String,
    endpoint_service_name: String,
    endpoint_service_id: String,
    marker_id: i64,
    enable_dns: bool,
    dns_names: Vec<String>,
    /// Null until the provider has accepted the connection.
    ip: Option<String>,
    vpc_id: String,
    subnet_id: String,
    created_at: String,
    updated_at: String,
    project_id: String,
    domain_id: String,
    tags: Vec<TagOut>,
    error: Vec<EndpointErrorOut>,
    whitelist: Vec<String>,
    enable_whitelist: bool,
    routetables: Vec<String>,
    description: String,
    /// The policy statements as given (`[]` when none).
    #[schema(value_type = Value)]
    policy_statement: Value,
    /// The policy document as given (null when none).
    #[schema(value_type = Value)]
    policy_document: Value,
    endpoint_pool_id: String,
    ip_version: String,
}

pub(crate) fn endpoint(e: &Endpoint) -> EndpointOut {
    let interface = e.service_type == ServiceType::Interface;
    let dns_names = if e.enable_dns && interface && e.status == EndpointStatus::Accepted {
        vec![e.dns_name.clone()]
    } else {
        vec![]
    };
    EndpointOut {
        id: e.id.clone(),
        service_type: e.service_type,
        status: e.status,
        active_status: vec!["active".to_owned()],
        enable_status: "enable".to_owned(),
        specification_name: e.edition.clone(),
        endpoint_service_name: e.service_name.clone(),
        endpoint_service_id: e.service_id.clone(),
        marker_id: e.marker_id,
        enable_dns: e.enable_dns,
        dns_names,
        ip: shows_ip(e).then(|| e.ip.clone()),
        vpc_id: e.vpc_id.clone(),
        subnet_id: e.subnet_id.clone(),
        created_at: ts(e.created_at),
        updated_at: ts(e.updated_at),
        project_id: e.project_id.clone(),
        domain_id: e.domain_id.clone(),
        tags: tags(&e.tags),
        error: error_list(e),
        whitelist: e.whitelist.clone(),
        enable_whitelist: e.enable_whitelist,
        routetables: e.routetables.clone(),
        description: e.description.clone(),
        policy_statement: e.policy_statement.clone().unwrap_or(Value::Array(vec![])),
        policy_document: e.policy_document.clone().unwrap_or(Value::Null),
        endpoint_pool_id: String::new(),
        ip_version: "ipv4".to_owned(),
    }
}

/// The provider's view of an endpoint.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionOut {
    id: String,
    marker_id: i64,
    created_at: String,
    updated_at: String,
    domain_id: String,
    status: EndpointStatus,
    description: String,
    error: Vec<EndpointErrorOut>,
}

pub(crate) fn connection(e: &Endpoint) -> ConnectionOut {
    ConnectionOut {
        id: e.id.clone(),
        marker_id: e.marker_id,
        created_at: ts(e.created_at),
        updated_at: ts(e.updated_at),
        domain_id: e.domain_id.clone(),
        status: e.status,
        description: e.conn_description.clone(),
        error: error_list(e),
    }
}

/// A whitelist entry of a service.
#[derive(Serialize, ToSchema)]
pub(crate) struct PermissionOut {
    id: String,
    permission: String,
    permission_type: String,
    description: String,
    created_at: String,
}

pub(crate) fn permission(p: &PermissionRow) -> PermissionOut {
    PermissionOut {
        id: p.id.clone(),
        permission: p.permission.clone(),
        permission_type: p.permission_type.clone(),
        description: p.description.clone(),
        created_at: ts(p.created_at),
    }
}

/// An empty JSON object.
#[derive(Serialize, ToSchema)]
pub(crate) struct Empty {}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::ts(1_735_732_800_000_000), "2025-01-01T12:00:00Z");
        assert_eq!(super::ts(0), "1970-01-01T00:00:00Z");
    }
}
