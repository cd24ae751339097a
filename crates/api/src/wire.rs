//! The Huawei JSON shapes of our records. Only this crate knows these field names.

use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;
use vpcep_model::{EndpointStatus, PortMapping, ServiceType, Tag};
use vpcep_store::{Endpoint, PermissionRow, Service};

/// Unix microseconds → `2025-01-01T12:00:00Z`.
pub(crate) fn ts(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

pub(crate) fn tags(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect(),
    )
}

pub(crate) fn ports(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| json!({"client_port": p.client_port, "server_port": p.server_port, "protocol": p.protocol.as_str()}))
            .collect(),
    )
}

/// The full service object, for its owner.
pub(crate) fn service(s: &Service) -> Value {
    json!({
        "id": s.id,
        "port_id": s.port_id,
        "service_name": s.service_name,
        "server_type": s.server_type.as_str(),
        "vpc_id": s.vpc_id,
        "pool_id": "",
        "approval_enabled": s.approval_enabled,
        "status": s.status.as_str(),
        "service_type": s.service_type.as_str(),
        "supported_editions": s.editions,
        "created_at": ts(s.created_at),
        "updated_at": ts(s.updated_at),
        "project_id": s.project_id,
        "domain_id": s.domain_id,
        "cidr_type": "internal",
        "ip": s.backend_ip,
                "ports": ports(&s.ports),
        "connection_limit": s.connection_limit,
        "tcp_proxy": s.tcp_proxy.as_str(),
        "tags": tags(&s.tags),
        "connection_count": s.connection_count,
        "error": s.error.as_ref().map(|e| json!([{"code": "EndPoint.3001", "message": e}])).unwrap_or(json!([])),
        "description": s.description,
        "enable_policy": s.service_type == ServiceType::Gateway,
        "ip_version": "ipv4",
    })
}

/// What any permitted consumer may learn about a service (no backend details).
pub(crate) fn service_summary(s: &Service) -> Value {
    json!({
        "id": s.id,
        "owner": if s.is_public { "vpcep".to_owned() } else { s.domain_id.clone() },
        "service_name": s.service_name,
        "service_type": s.service_type.as_str(),
        "created_at": ts(s.created_at),
        "is_charge": false,
        "enable_policy": s.service_type == ServiceType::Gateway,
        "public_border_group": "",
        "cidr": if s.cidr.is_empty() { Value::Null } else { json!(s.cidr) },
        "ports": ports(&s.ports),
    })
}

fn error_list(e: &Endpoint) -> Value {
    match &e.error {
        Some(msg) if e.status == EndpointStatus::Failed => {
            json!([{"error_code": "EndPoint.2022", "error_message": msg}])
        }
        _ => json!([]),
    }
}

/// The node IP shows once the provider has accepted the connection.
fn shows_ip(e: &Endpoint) -> bool {
    matches!(
        e.status,
        EndpointStatus::Accepted | EndpointStatus::Rejected
    ) && !e.ip.is_empty()
}

pub(crate) fn endpoint(e: &Endpoint) -> Value {
    let interface = e.service_type == ServiceType::Interface;
    let dns_names = if e.enable_dns && interface && e.status == EndpointStatus::Accepted {
        json!([e.dns_name])
    } else {
        json!([])
    };
    json!({
        "id": e.id,
        "service_type": e.service_type.as_str(),
        "status": e.status.as_str(),
        "active_status": ["active"],
        "enable_status": "enable",
        "specification_name": e.edition,
        "endpoint_service_name": e.service_name,
        "endpoint_service_id": e.service_id,
        "marker_id": e.marker_id,
        "enable_dns": e.enable_dns,
        "dns_names": dns_names,
        "ip": if shows_ip(e) { json!(e.ip) } else { Value::Null },
        "vpc_id": e.vpc_id,
        "subnet_id": e.subnet_id,
        "created_at": ts(e.created_at),
        "updated_at": ts(e.updated_at),
        "project_id": e.project_id,
        "domain_id": e.domain_id,
        "tags": tags(&e.tags),
        "error": error_list(e),
        "whitelist": e.whitelist,
        "enable_whitelist": e.enable_whitelist,
        "routetables": e.routetables,
        "description": e.description,
        "policy_statement": e.policy_statement.clone().unwrap_or(json!([])),
        "policy_document": e.policy_document.clone().unwrap_or(Value::Null),
        "endpoint_pool_id": "",
        "ip_version": "ipv4",
    })
}

/// The provider's view of an endpoint.
pub(crate) fn connection(e: &Endpoint) -> Value {
    json!({
        "id": e.id,
        "marker_id": e.marker_id,
        "created_at": ts(e.created_at),
        "updated_at": ts(e.updated_at),
        "domain_id": e.domain_id,
        "status": e.status.as_str(),
        "description": e.conn_description,
        "error": error_list(e),
    })
}

pub(crate) fn permission(p: &PermissionRow) -> Value {
    json!({
        "id": p.id,
        "permission": p.permission,
        "permission_type": p.permission_type,
        "description": p.description,
        "created_at": ts(p.created_at),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::ts(1_735_732_800_000_000), "2025-01-01T12:00:00Z");
        assert_eq!(super::ts(0), "1970-01-01T00:00:00Z");
    }
}
