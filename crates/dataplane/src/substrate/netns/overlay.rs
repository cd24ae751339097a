//! Subnets across machines: each subnet is a VXLAN segment (its own VNI) between the
//! machines that hold a part of it — the compute machines with its hosts, and the
//! gateway machine with its VPC's router. On every machine the subnet's bridge has a
//! VXLAN port without learning (`vx-{subnet8}`), and what lies behind the other machines
//! is programmed from the desired state, as OpenStack Neutron's l2population does: a
//! forwarding entry (MAC → the machine's underlay address) and a neighbour entry (IP →
//! MAC, answered by the port itself: `proxy`) for every remote host, router address and
//! endpoint address. Nothing is flooded over the underlay.
//!
//! The port is made in the machine's own namespace, where the underlay address is, and
//! then moved into the VPC's: its UDP socket stays where it was made. The segment's MTU is
//! the underlay's less VXLAN's 50 bytes: hosts on machines get 1450 on a 1500 underlay.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::Ipv4Addr;

use vpcep_model::{MachineRole, SubnetSpec, VpcSpec};

use crate::kernel::{IpLine, Tolerate};

use super::{ip, ip_batch, short, Netns, EXISTS, GONE};

/// The MAC of every VPC router's subnet interface (a bridge) on gateway machines: one
/// per subnet is all a segment needs, so one for all of them.
pub const ROUTER_MAC: &str = "fa:16:3f:00:00:01";
/// The UDP port of the tunnels (IANA's VXLAN port).
pub const VXLAN_PORT: u16 = 4789;
const VXLAN_PORT_STR: &str = "4789";
/// The forwarding entry of frames to MACs not programmed or learned.
const UNKNOWN_MAC: &str = "00:00:00:00:00:00";
/// What VXLAN adds to a frame: the MTU of a segment is the underlay's less this.
pub(super) const VXLAN_OVERHEAD: u32 = 50;
/// The MTU of hosts on segments over a 1500-byte underlay.
pub const SEGMENT_MTU: u32 = 1500 - VXLAN_OVERHEAD;

/// This machine, in a deployment across machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub role: MachineRole,
    pub underlay: Ipv4Addr,
}

/// Something of a subnet that lives on another machine: reach `ip` at `mac`, through the
/// tunnel to `at`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub subnet_id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub at: Ipv4Addr,
}

/// The VXLAN port of a subnet.
pub(super) fn port_name(subnet_id: &str) -> String {
    format!("vx-{}", short(subnet_id))
}

impl Netns {
    /// Gives the subnet's bridge in namespace `ns` its VXLAN port (made in this machine's
    /// namespace, moved into `ns`). Idempotent.
    pub(super) fn ensure_segment_port(
        &self,
        ns: &str,
        subnet: &SubnetSpec,
        me: &Machine,
    ) -> io::Result<()> {
        if subnet.vni == 0 {
            return Ok(());
        }
        let (vx, br) = (port_name(&subnet.id), format!("br-{}", short(&subnet.id)));
        // A compute machine learns where the router's MAC is (the master of a gateway
        // pair announces itself); what is programmed stays as programmed.
        let learning: &[&str] = if me.role == MachineRole::Compute {
            &[]
        } else {
            &["nolearning"]
        };
        add_vxlan(ns, &vx, subnet.vni, me, &[&["proxy"], learning].concat())?;
        ip(&["-n", ns, "link", "set", &vx, "master", &br, "up"], &[])
    }

    /// A compute machine's part of a VPC: a namespace with the subnet's bridge and its
    /// VXLAN port, and no address: the router is on a gateway machine.
    pub(super) fn ensure_segment(&self, vpc: &VpcSpec, subnet: &SubnetSpec) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let ns = self.vpc_ns(&vpc.id);
        Self::add_ns(&ns)?;
        let br = format!("br-{}", short(&subnet.id));
        ip_batch(
            &ns,
            &[
                IpLine {
                    line: format!("link add {br} type bridge"),
                    tolerate: Tolerate::Exists,
                },
                IpLine {
                    line: format!("link set {br} up"),
                    tolerate: Tolerate::Nothing,
                },
            ],
        )?;
        self.ensure_segment_port(&ns, subnet, me)
    }

    /// Makes the VXLAN ports of VPC `vpc` know exactly `want` behind other machines:
    /// what changed since the last call is added or taken out. A VPC this machine holds
    /// no part of is skipped.
    pub(super) fn program_overlay(&self, vpc: &VpcSpec, want: &[Neighbour]) -> io::Result<()> {
        let ns = self.vpc_ns(&vpc.id);
        let mut held = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
        if !std::path::Path::new("/run/netns").join(&ns).exists() {
            held.remove(&vpc.id);
            return Ok(());
        }
        let want: BTreeSet<Neighbour> = want.iter().cloned().collect();
        let had = held.remove(&vpc.id).unwrap_or_default();
        // A MAC may be behind two machines (the routers of a gateway pair): each is one
        // destination of its entry, added and taken out on its own.
        // On a compute machine the routers' MAC is learned, from the gateway machines
        // that the segment's unknown frames go to (the all-zero entry, one destination
        // each): a unicast MAC has one destination only.
        let compute = self.machine.as_ref().map(|m| m.role) == Some(MachineRole::Compute);
        let fdb = |set: &BTreeSet<Neighbour>| -> BTreeSet<(String, String, Ipv4Addr)> {
            set.iter()
                .map(|n| {
                    let mac = if compute && n.mac == ROUTER_MAC {
                        UNKNOWN_MAC.to_owned()
                    } else {
                        n.mac.clone()
                    };
                    (port_name(&n.subnet_id), mac, n.at)
                })
                .collect()
        };
        let (fdb_want, fdb_had) = (fdb(&want), fdb(&had));
        let neighbours = |set: &BTreeSet<Neighbour>| -> BTreeSet<(String, Ipv4Addr, String)> {
            set.iter()
                .map(|n| (port_name(&n.subnet_id), n.ip, n.mac.clone()))
                .collect()
        };
        let (neigh_want, neigh_had) = (neighbours(&want), neighbours(&had));
        let mut neigh = Vec::new();
        for (vx, ip, _) in neigh_had.difference(&neigh_want) {
            neigh.push(IpLine {
                line: format!("neigh del {ip} dev {vx}"),
                tolerate: Tolerate::Gone,
            });
        }
        for (vx, ip, mac) in neigh_want.difference(&neigh_had) {
            neigh.push(IpLine {
                line: format!("neigh replace {ip} lladdr {mac} dev {vx} nud permanent"),
                tolerate: Tolerate::Nothing,
            });
        }
        let mut bridge = Vec::new();
        for (vx, mac, at) in fdb_had.difference(&fdb_want) {
            bridge.push(format!("fdb del {mac} dev {vx} dst {at} self"));
        }
        for (vx, mac, at) in fdb_want.difference(&fdb_had) {
            bridge.push(format!("fdb append {mac} dev {vx} dst {at} self permanent"));
        }
        let done = bridge_batch(&ns, &bridge).and_then(|()| ip_batch(&ns, &neigh));
        if done.is_ok() {
            held.insert(vpc.id.clone(), want);
        }
        // On failure nothing is taken as held: the next call programs everything again.
        done
    }
}

/// Makes VXLAN port `name` with network identifier `vni` in namespace `ns`, its tunnels'
/// socket in this machine's namespace (where it is made): `extra` are `ip`'s further
/// vxlan options. Idempotent.
pub(super) fn add_vxlan(
    ns: &str,
    name: &str,
    vni: u32,
    me: &Machine,
    extra: &[&str],
) -> io::Result<()> {
    let (vni, local) = (vni.to_string(), me.underlay.to_string());
    let mut args = vec![
        "link",
        "add",
        name,
        "netns",
        ns,
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &local,
        "dstport",
        VXLAN_PORT_STR,
    ];
    args.extend(extra);
    ip(&args, EXISTS)
}

/// Runs `bridge -n NS -force -batch -` with `lines`; entries that are already gone when
/// deleted are no failure.
fn bridge_batch(ns: &str, lines: &[String]) -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("bridge")
        .args(["-n", ns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot run bridge: {e}")))?;
    let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let real: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !GONE.iter().any(|g| l.contains(g)))
        .filter(|l| !l.starts_with("Command failed"))
        .collect();
    if out.status.success() || real.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "bridge -n {ns} -batch: {}",
            real.join("; ")
        )))
    }
}

/// What every VPC's subnets must know behind other machines, as seen from machine `me`:
/// the hosts placed elsewhere and, on a compute machine, the router's addresses and the
/// endpoints' addresses, which are on the gateway machine. The gateway machine is the
/// first gateway machine by name.
pub fn neighbours(state: &vpcep_model::State, me: &Machine) -> HashMap<String, Vec<Neighbour>> {
    let underlay = |name: &str| {
        state
            .machines
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.underlay)
    };
    // The routers are on one gateway machine, or two (a pair, `ha`): frames for a
    // router that its MAC is not learned for yet go to both.
    let gateways = super::ha::carriers(state);
    let gateway = gateways.first().copied();
    let mut out: HashMap<String, Vec<Neighbour>> = HashMap::new();
    for h in state.hosts.values() {
        let Some(vni_subnet) = state
            .vpcs
            .get(&h.vpc_id)
            .and_then(|v| v.subnets.iter().find(|s| s.id == h.subnet_id))
            .filter(|s| s.vni > 0)
        else {
            continue;
        };
        let on = h.machine.as_deref().or(gateway.map(|g| g.name.as_str()));
        let Some(on) = on.filter(|m| *m != me.name) else {
            continue;
        };
        let (Some(at), false) = (underlay(on), h.mac.is_empty()) else {
            continue;
        };
        out.entry(h.vpc_id.clone()).or_default().push(Neighbour {
            subnet_id: vni_subnet.id.clone(),
            ip: h.ip,
            mac: h.mac.clone(),
            at,
        });
    }
    if me.role != MachineRole::Compute {
        return out;
    }
    for gw in gateways {
        let router = |subnet_id: &str, ip: Ipv4Addr| Neighbour {
            subnet_id: subnet_id.to_owned(),
            ip,
            mac: ROUTER_MAC.to_owned(),
            at: gw.underlay,
        };
        for v in state.vpcs.values() {
            for s in v.subnets.iter().filter(|s| s.vni > 0) {
                let at_router = [Some(s.gateway_ip), s.resolver_ip()];
                out.entry(v.id.clone())
                    .or_default()
                    .extend(at_router.into_iter().flatten().map(|ip| router(&s.id, ip)));
            }
        }
        for e in state.endpoints.values() {
            let in_segment = state
                .vpcs
                .get(&e.consumer_vpc)
                .is_some_and(|v| v.subnets.iter().any(|s| s.id == e.subnet_id && s.vni > 0));
            if in_segment {
                out.entry(e.consumer_vpc.clone())
                    .or_default()
                    .push(router(&e.subnet_id, e.ip));
            }
        }
    }
    out
}
