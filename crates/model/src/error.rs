//! Why a request is refused, in domain terms; the API maps each reason to a wire code.

use std::fmt;

/// A refusal of a request by a business rule. The message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub msg: String,
}

/// The closed list of reasons a rule can refuse a request for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadParameter,
    BadServiceName,
    BadDescription,
    BadPortMapping,
    BadProtocol,
    BadServerType,
    BadPortId,
    PortNotInVpc,
    BadVpcId,
    BadSubnetId,
    SubnetNotInVpc,
    BadCidr,
    CidrOverlapsSystemRange,
    BadPortIp,
    PortIpOutsideSubnet,
    PortIpInUse,
    SubnetFull,
    BadEndpointWhitelist,
    EndpointWhitelistFull,
    BadPermission,
    EmptyPermissionList,
    PermissionListFull,
    BadAction,
    OneEndpointPerAction,
    EndpointNotConnected,
    NotWhitelisted,
    ServiceNotAvailable,
    ServiceInUse,
    SystemServiceImmutable,
    PortMappingsImmutable,
    PortMappingConflict,
    StateForbids,
    EndpointCreating,
    EndpointDeleting,
    EndpointFailed,
    QuotaExceeded,
    DnsAlreadyEnabled,
    BadTag,
    DuplicateTagKey,
    TagLimit,
    BadResourceType,
    BadRouteTable,
    RouteTableInUse,
    NotGatewayEndpoint,
    BadPolicy,
    NoPolicy,
    NotFound,
    InUse,
    Unsupported,
}

impl Rejection {
    pub fn new(reason: Reason, msg: impl Into<String>) -> Self {
        Rejection {
            reason,
            msg: msg.into(),
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        Rejection::new(Reason::BadParameter, msg)
    }

    pub fn not_found(what: &str) -> Self {
        Rejection::new(Reason::NotFound, format!("{what} not found"))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Rejection {}
