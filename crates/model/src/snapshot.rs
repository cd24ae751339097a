//! The desired state of the data plane, built from the store and applied by every
//! gateway node: which VPCs and hosts exist, and which endpoints must forward where.
//! It is the one type (with status reports) that crosses between planes, so it is
//! plain data with serde, versioned by the store revision it was built at.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{PortMapping, TcpProxy};

/// Addresses in this range are the gateway's sources towards backends: SNAT host number
/// N (1 to `SNAT_SIZE`, allocated by the store per provider VPC) is `SNAT_BASE + N`.
pub const SNAT_BASE: u32 = 0xC613_8000; // 198.19.128.0
/// Usable SNAT addresses in 198.19.128.0/20: endpoints one provider VPC can have at once.
pub const SNAT_SIZE: u32 = 4094;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// An on-premises data centre joined to a VPC: its own address space, routed to the VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdcSpec {
    pub id: String,
    pub vpc_id: String,
    /// The data centre's own range (outside the VPC's subnets).
    pub cidr: String,
    /// The data centre's one machine, an address in `cidr`.
    pub ip: Ipv4Addr,
}

/// A name of the cloud's internal zone: it and every name under it resolve to `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudName {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// What a gateway endpoint adds to its VPC: traffic to `cidr` from `sources` goes to the
/// endpoint (whose listeners sit at the first address of `cidr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub cidr: String,
    /// Source ranges whose route table has the route: the subnets associated with the
    /// endpoint's route tables, and data centres when the VPC's default table is one.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcSpec {
    pub id: String,
    /// Small and stable for the VPC's life: its 127.N.0.0/16 block in loopback mode
    /// (which therefore holds VPCs 1-254).
    pub seq: u32,
    pub subnets: Vec<SubnetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub id: String,
    pub cidr: String,
    pub gateway_ip: Ipv4Addr,
}

/// A stand-in for a VM or a load balancer: a namespace joined to a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    pub port_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub ip: Ipv4Addr,
}

/// One endpoint that must forward: listeners at `ip` in the consumer VPC, connections
/// from `snat_ip` in the provider VPC (or from the node itself, for cloud services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub id: String,
    pub service_id: String,
    pub marker_id: u32,
    pub consumer_vpc: String,
    pub subnet_id: String,
    pub ip: Ipv4Addr,
    /// `None` for operator services, whose backend the node reaches directly.
    pub provider_vpc: Option<String>,
    pub backend_ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
    pub tcp_proxy: TcpProxy,
    /// Source CIDRs allowed to connect, when the endpoint whitelist is enabled.
    pub whitelist: Option<Vec<String>>,
    pub max_connections: u32,
    /// The endpoint's own source address in the provider VPC: no other endpoint towards
    /// that VPC has it while this one exists. Unspecified (0.0.0.0) without a provider VPC.
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

fn by_key<'a, T>(items: &'a [T], key: impl Fn(&'a T) -> &'a str) -> BTreeMap<&'a str, &'a T> {
    items.iter().map(|i| (key(i), i)).collect()
}

impl Snapshot {
    /// The changes that turn `old` into `new`, ordered so that nothing is removed while
    /// something still needs it and nothing is added before what it needs: endpoints
    /// first out, then hosts, then VPCs; VPCs first in, then hosts, then endpoints. A
    /// changed item is removed and added again; VPCs change in place (subnets are added).
    pub fn diff<'a>(old: &'a Snapshot, new: &'a Snapshot) -> Vec<Change<'a>> {
        let (ov, nv) = (by_key(&old.vpcs, |v| &v.id), by_key(&new.vpcs, |v| &v.id));
        let (oh, nh) = (
            by_key(&old.hosts, |h| &h.port_id),
            by_key(&new.hosts, |h| &h.port_id),
        );
        let (oi, ni) = (by_key(&old.idcs, |i| &i.id), by_key(&new.idcs, |i| &i.id));
        let (oe, ne) = (
            by_key(&old.endpoints, |e| &e.id),
            by_key(&new.endpoints, |e| &e.id),
        );
        let mut out = Vec::new();
        let in_place = |id: &str| matches!((oe.get(id), ne.get(id)), (Some(o), Some(n)) if o != n && o.same_listeners(n));
        for (id, e) in &oe {
            if ne.get(id) != Some(e) && !in_place(id) {
                out.push(Change::RemoveEndpoint(e));
            }
        }
        for (id, h) in &oh {
            if nh.get(id) != Some(h) {
                out.push(Change::RemoveHost(h));
            }
        }
        for (id, i) in &oi {
            if ni.get(id) != Some(i) {
                out.push(Change::RemoveIdc(i));
            }
        }
        for (id, v) in &ov {
            if !nv.contains_key(id) {
                out.push(Change::RemoveVpc(v));
            }
        }
        for (id, v) in &nv {
            if ov.get(id) != Some(v) {
                out.push(Change::AddVpc(v));
            }
        }
        for (id, h) in &nh {
            if oh.get(id) != Some(h) {
                out.push(Change::AddHost(h));
            }
        }
        for (id, i) in &ni {
            if oi.get(id) != Some(i) {
                out.push(Change::AddIdc(i));
            }
        }
        for (id, e) in &ne {
            match oe.get(id) {
                Some(old) if in_place(id) => out.push(Change::UpdateEndpoint { old, new: e }),
                Some(old) if old == e => {}
                _ => out.push(Change::AddEndpoint(e)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn vpc(id: &str) -> VpcSpec {
        VpcSpec {
            id: id.into(),
            seq: 1,
            subnets: vec![],
        }
    }

    fn ep(id: &str, port: u16) -> EndpointSpec {
        EndpointSpec {
            id: id.into(),
            service_id: "s".into(),
            marker_id: 0x0100_0000,
            consumer_vpc: "a".into(),
            subnet_id: "sa".into(),
            ip: Ipv4Addr::new(10, 0, 0, 4),
            provider_vpc: Some("b".into()),
            backend_ip: Ipv4Addr::new(10, 0, 0, 3),
            ports: vec![PortMapping {
                client_port: port,
                server_port: 80,
                protocol: Protocol::Tcp,
            }],
            tcp_proxy: TcpProxy::Close,
            whitelist: None,
            max_connections: 3000,
            snat_ip: Ipv4Addr::new(198, 19, 128, 1),
            dns_name: None,
            route: None,
        }
    }

    #[test]
    fn diffs() {
        let empty = Snapshot::default();
        let one = Snapshot {
            revision: 1,
            vpcs: vec![vpc("a"), vpc("b")],
            hosts: vec![],
            endpoints: vec![ep("e1", 80)],
            ..Default::default()
        };
        assert_eq!(
            Snapshot::diff(&empty, &one),
            vec![
                Change::AddVpc(&vpc("a")),
                Change::AddVpc(&vpc("b")),
                Change::AddEndpoint(&ep("e1", 80))
            ]
        );
        assert_eq!(Snapshot::diff(&one, &one), vec![]);
        let changed = Snapshot {
            endpoints: vec![ep("e1", 81)],
            ..one.clone()
        };
        assert_eq!(
            Snapshot::diff(&one, &changed),
            vec![
                Change::RemoveEndpoint(&ep("e1", 80)),
                Change::AddEndpoint(&ep("e1", 81))
            ]
        );
        let mut listed = ep("e1", 80);
        listed.whitelist = Some(vec!["10.0.0.0/8".into()]);
        let tightened = Snapshot {
            endpoints: vec![listed.clone()],
            ..one.clone()
        };
        assert_eq!(
            Snapshot::diff(&one, &tightened),
            vec![Change::UpdateEndpoint {
                old: &ep("e1", 80),
                new: &listed
            }]
        );
        assert_eq!(
            Snapshot::diff(&one, &empty),
            vec![
                Change::RemoveEndpoint(&ep("e1", 80)),
                Change::RemoveVpc(&vpc("a")),
                Change::RemoveVpc(&vpc("b"))
            ]
        );
    }
}
