//! The one seam to the kernel: where VPCs, subnets and hosts become real, and where the
//! gateway's sockets are made. Two implementations: `netns` (network namespaces, root)
//! and `loopback` (127.N.0.0/16 blocks, no privileges, no isolation).

pub mod loopback;
pub mod netns;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;

use socket2::Socket;
use vpcep_model::{HostSpec, IdcSpec, RouteSpec, Snapshot, VpcSpec};

use crate::kernel::{Delta, Item, Link, Shape};

/// Makes a socket; run by the substrate inside the right network namespace.
pub type MakeSocket<'a> = &'a dyn Fn() -> io::Result<Socket>;

/// What a local address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// An endpoint's node IP, answered in the consumer VPC.
    Endpoint,
    /// An endpoint's source address towards backends, in the provider VPC.
    Snat,
}

/// The kernel fast path of a substrate (see `kernel`).
pub trait KernelPath: Send + Sync {
    /// Applies one step: links first in, then per namespace one nftables transaction and
    /// one batch of routes and rules, then links last out. Returns the VPCs whose
    /// namespace did not take its part, with why (what they hold is then unknown).
    fn apply(&self, delta: &Delta) -> BTreeMap<String, String>;
    /// Makes the namespace of VPC `vpc` hold exactly `items` and have exactly the links
    /// `links`, whatever it held before (start-up, and repair of drift or failure).
    fn rewrite(&self, vpc: &str, items: &[&Item], links: &[Link]) -> io::Result<()>;
    /// What differs between the namespace of VPC `vpc` and `want`, if anything.
    fn drift(&self, vpc: &str, want: &Shape) -> io::Result<Option<String>>;
    /// Takes everything of the kernel path out of the namespace of VPC `vpc` (a node
    /// forced onto the userspace path, after an earlier run on the kernel path) and, if
    /// its table was there, ends the sessions the table translated: their translations
    /// would outlive it in conntrack.
    fn clear(&self, vpc: &str) -> io::Result<()>;
    /// Ends the sessions of an endpoint at once (its conntrack entries in its consumer
    /// VPC's namespace, by marker id).
    fn forget(&self, vpc_id: &str, marker_id: u32);
    /// The kernel path's counters in a VPC namespace: `{set}_{marker}` (and
    /// `to_backend_{marker}`, `to_client_{marker}`) → (packets, bytes).
    fn counters(&self, vpc_id: &str) -> HashMap<String, (u64, u64)>;
}

pub trait Substrate: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Makes the VPC and its subnets exist. Idempotent.
    fn ensure_vpc(&self, vpc: &VpcSpec) -> io::Result<()>;
    fn remove_vpc(&self, vpc_id: &str) -> io::Result<()>;
    /// Makes a host (a VM stand-in) exist, joined to its subnet. Idempotent.
    fn ensure_host(&self, vpc: &VpcSpec, host: &HostSpec) -> io::Result<()>;
    fn remove_host(&self, host: &HostSpec) -> io::Result<()>;
    /// Makes a data centre exist, attached to its VPC as a VPN would attach it.
    fn ensure_idc(&self, vpc: &VpcSpec, idc: &IdcSpec) -> io::Result<()> {
        let _ = (vpc, idc);
        Err(io::Error::other(format!(
            "the {} substrate cannot attach data centres (use --substrate netns)",
            self.name()
        )))
    }
    fn remove_idc(&self, idc: &IdcSpec) -> io::Result<()> {
        let _ = idc;
        Ok(())
    }
    /// The namespace of a data centre, where there are namespaces.
    fn idc_netns(&self, idc_id: &str) -> Option<String> {
        let _ = idc_id;
        None
    }
    /// Makes the VPC router carry exactly these gateway-endpoint routes (the substrates
    /// without routing have nothing to do: the endpoints' listeners are all there is).
    fn set_routes(&self, vpc: &VpcSpec, routes: &[RouteSpec]) -> io::Result<()> {
        let _ = (vpc, routes);
        Ok(())
    }
    /// Makes `ip` a local address of the VPC (on `subnet_id` for endpoints, on the VPC
    /// router itself when `subnet_id` is empty) and returns
    /// the address sockets should use for it; `None` where the substrate has no such
    /// address (loopback has no SNAT).
    fn add_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        ip: Ipv4Addr,
        kind: Local,
    ) -> io::Result<Option<Ipv4Addr>>;
    fn remove_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        ip: Ipv4Addr,
        kind: Local,
    ) -> io::Result<()>;
    /// The address at which `ip` of `vpc` is reached from inside that VPC.
    fn map_remote(&self, vpc: &VpcSpec, ip: Ipv4Addr) -> Ipv4Addr;
    /// Runs `make` `n` times inside the VPC's network (the node's own for `None`), on the
    /// calling thread; netns enters the namespace once for the whole batch.
    fn make_sockets(
        &self,
        vpc: Option<&VpcSpec>,
        n: usize,
        make: MakeSocket,
    ) -> io::Result<Vec<Socket>>;
    /// One socket made inside the VPC's network.
    fn make_socket(&self, vpc: Option<&VpcSpec>, make: MakeSocket) -> io::Result<Socket> {
        self.make_sockets(vpc, 1, make)?
            .pop()
            .ok_or_else(|| io::Error::other("no socket made"))
    }
    /// The namespace a host lives in, if the substrate has namespaces.
    fn host_netns(&self, port_id: &str) -> Option<String>;
    /// Where `ip` of VPC number `seq` is reachable from this machine's own namespace, if
    /// the substrate maps VPC addresses there (loopback).
    fn local_ip(&self, seq: u32, ip: Ipv4Addr) -> Option<Ipv4Addr>;
    /// Removes what this substrate made earlier that `keep` no longer has (VPCs and hosts
    /// deleted while the node was down). Runs once, before the first snapshot is applied.
    fn prune(&self, keep: &Snapshot) -> io::Result<()> {
        let _ = keep;
        Ok(())
    }
    /// The kernel fast path, where the substrate has one.
    fn kernel(&self) -> Option<&dyn KernelPath> {
        None
    }
    /// This machine's role in a deployment across machines (`None`: one machine is
    /// everything). A compute machine holds hosts only: no routers, endpoints, resolvers
    /// or data centres.
    fn role(&self) -> Option<vpcep_model::MachineRole> {
        None
    }
    /// What the subnets' tunnels to the other machines must carry for the VPCs `vpcs`
    /// (every VPC for `None`), computed from `state` without blocking; `None`: this is
    /// not a machine of several.
    fn plan_overlay(
        &self,
        state: &vpcep_model::State,
        vpcs: Option<&std::collections::BTreeSet<String>>,
    ) -> Option<OverlayPlan> {
        let _ = (state, vpcs);
        None
    }
    /// Programs what [`Substrate::plan_overlay`] planned.
    fn set_overlay(&self, plan: OverlayPlan) -> io::Result<()> {
        let _ = plan;
        Ok(())
    }
    /// Starts again what keeps the routers of a gateway pair (keepalived, conntrackd)
    /// where it died. Cheap when nothing did: the node calls it every second.
    fn supervise(&self) -> io::Result<()> {
        Ok(())
    }
}

/// What a machine of several programs for some VPCs: each one's entries behind other
/// machines and, on a gateway machine, what it is to their routers.
#[derive(Debug)]
pub struct OverlayPlan {
    pub vpcs: Vec<(VpcSpec, Vec<netns::Neighbour>)>,
    pub place: Option<netns::Place>,
}
