//! The desired state of the data plane, built from the store and applied by every
//! gateway node: which VPCs and hosts exist, and which endpoints must forward where.
//! It is the one type (with status reports) that crosses between planes, so it is
//! plain data with serde, versioned by the store revision it was built at.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{PortMapping, TcpProxy};

/// Addresses in this range are the gateway's sources towards backends: SNAT host number
/// N (1 to `SNAT_SIZE`, allocated by the store per provider VPC) is `SNAT_BASE + N`.
pub const SNAT_BASE: u32 = 0xC613_8000; // 198.19.128.0
/// Usable SNAT addresses in 198.19.128.0/20: endpoints one provider VPC can have at once.
pub const SNAT_SIZE: u32 = 4094;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Snapshot {
    pub revision: u64,
    pub vpcs: Vec<VpcSpec>,
    pub hosts: Vec<HostSpec>,
    pub endpoints: Vec<EndpointSpec>,
    /// Data centres attached to VPCs (as a VPN or Direct Connect would attach them).
    #[serde(default)]
    pub idcs: Vec<IdcSpec>,
    /// Names the cloud's internal DNS answers (the operator's gateway services).
    #[serde(default)]
    pub cloud_names: Vec<CloudName>,
    /// The machines of a deployment across machines, by name (none: one machine is
    /// everything).
    #[serde(default)]
    pub machines: Vec<MachineSpec>,
}

/// A machine that runs `vpcep gateway --role`: compute machines hold hosts (the VMs'
/// stand-ins), gateway machines the VPCs' routers with their endpoints; the subnets
/// between them are VXLAN segments over the machines' underlay addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MachineSpec {
    pub name: String,
    pub role: MachineRole,
    /// Its availability zone ("" when none was given).
    #[serde(default)]
    pub zone: String,
    /// Where the other machines reach it (the VXLAN tunnels' endpoints).
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub underlay: Ipv4Addr,
    /// A gateway machine's place in the pair that carries the routers: 0 (the first,
    /// which leads at start) or 1; `None`: a spare, or not a gateway machine. Chosen by
    /// the control plane, and kept by a machine until it is declared down and another
    /// takes its place.
    #[serde(default)]
    pub slot: Option<u8>,
    /// Declared down by the control plane: silent for longer than it allows.
    #[serde(default)]
    pub down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MachineRole {
    Compute,
    Gateway,
}

impl MachineRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineRole::Compute => "compute",
            MachineRole::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Result<Self, crate::Rejection> {
        match s {
            "compute" => Ok(MachineRole::Compute),
            "gateway" => Ok(MachineRole::Gateway),
            other => Err(crate::Rejection::bad(format!(
                "role {other:?}: compute or gateway"
            ))),
        }
    }
}

/// An on-premises data centre joined to a VPC: its own address space, routed to the VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct IdcSpec {
    pub id: String,
    pub vpc_id: String,
    /// The data centre's own range (outside the VPC's subnets).
    pub cidr: String,
    /// The data centre's one machine, an address in `cidr`.
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub ip: Ipv4Addr,
}

/// A name of the cloud's internal zone: it and every name under it resolve to `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CloudName {
    pub name: String,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub ip: Ipv4Addr,
}

/// What a gateway endpoint adds to its VPC: traffic to `cidr` from `sources` goes to the
/// endpoint (whose listeners sit at the first address of `cidr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RouteSpec {
    pub cidr: String,
    /// Source ranges whose route table has the route: the subnets associated with the
    /// endpoint's route tables, and data centres when the VPC's default table is one.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct VpcSpec {
    pub id: String,
    /// Small and stable for the VPC's life: its 127.N.0.0/16 block in loopback mode
    /// (which therefore holds VPCs 1-254).
    pub seq: u32,
    pub subnets: Vec<SubnetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SubnetSpec {
    pub id: String,
    pub cidr: String,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub gateway_ip: Ipv4Addr,
    /// Its VXLAN network identifier across machines (0: none), one subnet per VNI.
    #[serde(default)]
    pub vni: u32,
}

/// A stand-in for a VM or a load balancer: a namespace joined to a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct HostSpec {
    pub port_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub ip: Ipv4Addr,
    /// Its port's MAC address ("" for none given).
    #[serde(default)]
    pub mac: String,
    /// The compute machine it is placed on (`None`: the one machine).
    #[serde(default)]
    pub machine: Option<String>,
}

/// One endpoint that must forward: listeners at `ip` in the consumer VPC, connections
/// from `snat_ip` in the provider VPC (or from the node itself, for cloud services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EndpointSpec {
    pub id: String,
    pub service_id: String,
    pub marker_id: u32,
    pub consumer_vpc: String,
    pub subnet_id: String,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub ip: Ipv4Addr,
    /// `None` for operator services, whose backend the node reaches directly.
    pub provider_vpc: Option<String>,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub backend_ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
    pub tcp_proxy: TcpProxy,
    /// Source CIDRs allowed to connect, when the endpoint whitelist is enabled.
    pub whitelist: Option<Vec<String>>,
    pub max_connections: u32,
    /// The endpoint's own source address in the provider VPC: no other endpoint towards
    /// that VPC has it while this one exists. Unspecified (0.0.0.0) without a provider VPC.
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub snat_ip: Ipv4Addr,
    /// The private DNS name published in the consumer VPC once the endpoint is up.
    #[serde(default)]
    pub dns_name: Option<String>,
    /// Gateway endpoints only: the route they add (their listeners are on the consumer
    /// VPC's router, `subnet_id` is empty).
    #[serde(default)]
    pub route: Option<RouteSpec>,
}

/// Where a gateway endpoint listens for its route's traffic: the first host of `cidr`
/// (the VPC router DNATs every address of `cidr` there).
pub fn route_listen_ip(cidr: &str) -> Option<Ipv4Addr> {
    let net: ipnet::Ipv4Net = cidr.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(net.network()).saturating_add(1)))
}

impl SubnetSpec {
    /// The VPC resolver's address in this subnet: the second reserved host address
    /// (network + 2), or network + 1 where the gateway took that one.
    pub fn resolver_ip(&self) -> Option<Ipv4Addr> {
        let net: ipnet::Ipv4Net = self.cidr.parse().ok()?;
        let first = u32::from(net.network());
        let pick = if Ipv4Addr::from(first + 2) == self.gateway_ip {
            first + 1
        } else {
            first + 2
        };
        Some(Ipv4Addr::from(pick))
    }
}

/// One thing to do to move a node from one snapshot to the next, borrowed from the two
/// snapshots (a diff copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    AddVpc(&'a VpcSpec),
    RemoveVpc(&'a VpcSpec),
    AddHost(&'a HostSpec),
    RemoveHost(&'a HostSpec),
    AddEndpoint(&'a EndpointSpec),
    /// Same listeners, new settings (whitelist, limit, backend, PROXY header): applied in
    /// place, live sessions kept.
    UpdateEndpoint {
        old: &'a EndpointSpec,
        new: &'a EndpointSpec,
    },
    RemoveEndpoint(&'a EndpointSpec),
    AddIdc(&'a IdcSpec),
    RemoveIdc(&'a IdcSpec),
}

impl EndpointSpec {
    /// Whether `other` listens and sources exactly where `self` does.
    pub fn same_listeners(&self, other: &EndpointSpec) -> bool {
        (
            &self.consumer_vpc,
            &self.subnet_id,
            self.ip,
            &self.ports,
            &self.provider_vpc,
            self.snat_ip,
        ) == (
            &other.consumer_vpc,
            &other.subnet_id,
            other.ip,
            &other.ports,
            &other.provider_vpc,
            other.snat_ip,
        )
    }
}
