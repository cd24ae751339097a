//! The shared vocabulary of vpcep: validated names, port mappings, statuses and the
//! rules that need no I/O. Nothing here knows HTTP, SQL or sockets.
#![forbid(unsafe_code)]

mod error;
mod names;
mod net;
mod ports;
mod snapshot;
mod state;
mod status;
mod tags;
mod whitelist;

pub use error::{Reason, Rejection};
pub use names::{full_service_name, validate_description, validate_service_name, ServiceName};
pub use net::{
    check_subnet_cidr, overlaps_system_range, parse_cidr, parse_ipv4, validate_endpoint_whitelist,
    SNAT_RANGE, SYSTEM_RANGE,
};
pub use ports::{validate_port_mappings, PortMapping, Protocol, MAX_PORT_MAPPINGS};
pub use snapshot::{
    route_listen_ip, Change, CloudName, EndpointSpec, HostSpec, IdcSpec, MachineRole, MachineSpec,
    RouteSpec, Snapshot, SubnetSpec, VpcSpec, SNAT_BASE, SNAT_SIZE,
};
pub use state::{SnapshotDelta, State};
pub use status::{
    EndpointStatus, ServerType, ServiceStatus, ServiceType, TcpProxy, MARKER_ID_BASE,
};
pub use tags::{validate_tag, validate_tags, Tag, MAX_TAGS};
pub use whitelist::{Permission, MAX_PERMISSIONS};

/// Whether a resource came up: `Err` carries the reason it could not.
pub type Outcome = Result<(), String>;

/// Concurrent sessions one endpoint carries unless its service says otherwise (user
/// guide: 3000).
pub const DEFAULT_CONNECTION_LIMIT: i64 = 3000;

/// Checks a service's per-endpoint connection limit.
pub fn validate_connection_limit(n: i64) -> Result<(), Rejection> {
    if (1..=100_000).contains(&n) {
        Ok(())
    } else {
        Err(Rejection::bad(format!(
            "connection_limit: {n} is outside 1-100000"
        )))
    }
}

/// Default quotas per account and region (user guide, 5.1).
pub const DEFAULT_SERVICE_QUOTA: i64 = 20;
pub const DEFAULT_ENDPOINT_QUOTA: i64 = 50;
