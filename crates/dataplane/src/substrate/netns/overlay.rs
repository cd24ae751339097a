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

/// What the subnets of VPCs `vpcs` (every VPC for `None`) must know behind other
/// machines, as seen from machine `me`: the hosts placed elsewhere and, on a compute
/// machine, the routers' addresses and the endpoints' addresses, which are on the
/// gateway machines that carry the routers (`ha::carriers`).
pub fn neighbours(
    state: &vpcep_model::State,
    me: &Machine,
    vpcs: Option<&BTreeSet<String>>,
) -> HashMap<String, Vec<Neighbour>> {
    let wanted = |vpc: &str| vpcs.is_none_or(|v| v.contains(vpc));
    let underlay = |name: &str| {
        state
            .machines
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.underlay)
    };
    // Frames for a router whose MAC is not learned yet go to both of the pair.
    let gateways = super::ha::carriers(state);
    let gateway = gateways.first().copied();
    // A compute machine has the ports of the subnets it holds hosts of, and only those;
    // a gateway machine has every subnet's.
    let held: Option<BTreeSet<&str>> = (me.role == MachineRole::Compute).then(|| {
        state
            .hosts
            .values()
            .filter(|h| h.machine.as_deref() == Some(me.name.as_str()) && wanted(&h.vpc_id))
            .map(|h| h.subnet_id.as_str())
            .collect()
    });
    let here = |subnet: &str| held.as_ref().is_none_or(|h| h.contains(subnet));
    let mut out: HashMap<String, Vec<Neighbour>> = HashMap::new();
    for h in state.hosts.values().filter(|h| wanted(&h.vpc_id)) {
        let Some(vni_subnet) = state
            .vpcs
            .get(&h.vpc_id)
            .and_then(|v| v.subnets.iter().find(|s| s.id == h.subnet_id))
            .filter(|s| s.vni > 0 && here(&s.id))
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
    let listed: Vec<&VpcSpec> = match vpcs {
        None => state.vpcs.values().collect(),
        Some(ids) => ids.iter().filter_map(|id| state.vpcs.get(id)).collect(),
    };
    for gw in gateways {
        let router = |subnet_id: &str, ip: Ipv4Addr| Neighbour {
            subnet_id: subnet_id.to_owned(),
            ip,
            mac: ROUTER_MAC.to_owned(),
            at: gw.underlay,
        };
        for v in &listed {
            for s in v.subnets.iter().filter(|s| s.vni > 0 && here(&s.id)) {
                let at_router = [Some(s.gateway_ip), s.resolver_ip()];
                out.entry(v.id.clone())
                    .or_default()
                    .extend(at_router.into_iter().flatten().map(|ip| router(&s.id, ip)));
            }
        }
        for e in state.endpoints.values().filter(|e| wanted(&e.consumer_vpc)) {
            let in_segment = here(&e.subnet_id)
                && state
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

#[cfg(test)]
mod tests {
    use super::super::ha::tests::machine;
    use super::*;
    use vpcep_model::{HostSpec, State};

    fn host(id: &str, vpc: &str, subnet: &str, last: u8, on: &str) -> HostSpec {
        HostSpec {
            port_id: id.into(),
            vpc_id: vpc.into(),
            subnet_id: subnet.into(),
            ip: Ipv4Addr::new(192, 168, 1, last),
            mac: format!("fa:16:3e:00:00:{last:02x}"),
            machine: Some(on.into()),
        }
    }

    /// Two VPCs, the first with subnets `a` and `b`; hosts on c1 and c2; g1 and g2 the pair.
    fn state() -> State {
        let subnet = |id: &str, vni: u32, third: u8| SubnetSpec {
            id: id.into(),
            cidr: format!("192.168.{third}.0/24"),
            gateway_ip: Ipv4Addr::new(192, 168, third, 1),
            vni,
        };
        let mut s = State::default();
        for (id, seq, subnets) in [
            ("v1", 1, vec![subnet("a", 1, 1), subnet("b", 2, 2)]),
            ("v2", 2, vec![subnet("c", 3, 1)]),
        ] {
            s.vpcs.insert(
                id.into(),
                VpcSpec {
                    id: id.into(),
                    seq,
                    subnets,
                },
            );
        }
        for h in [
            host("h1", "v1", "a", 11, "c1"),
            host("h2", "v1", "a", 12, "c2"),
            host("h3", "v1", "b", 13, "c2"),
            host("h4", "v2", "c", 14, "c2"),
        ] {
            s.hosts.insert(h.port_id.clone(), h);
        }
        s.machines = vec![
            machine("c1", MachineRole::Compute, None, 1),
            machine("c2", MachineRole::Compute, None, 2),
            machine("g1", MachineRole::Gateway, Some(0), 21),
            machine("g2", MachineRole::Gateway, Some(1), 22),
            machine("g3", MachineRole::Gateway, None, 23),
        ];
        s
    }

    fn me(name: &str, role: MachineRole, last: u8) -> Machine {
        Machine {
            name: name.into(),
            role,
            underlay: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    #[test]
    fn a_compute_machine_is_told_only_of_the_subnets_it_holds_hosts_of() {
        let s = state();
        let c1 = neighbours(&s, &me("c1", MachineRole::Compute, 1), None);
        assert!(!c1.contains_key("v2"), "c1 holds nothing of v2");
        let v1 = &c1["v1"];
        assert!(
            v1.iter().all(|n| n.subnet_id == "a"),
            "no port of b on c1: {v1:?}"
        );
        let hosts: Vec<Ipv4Addr> = v1
            .iter()
            .filter(|n| n.mac != ROUTER_MAC)
            .map(|n| n.ip)
            .collect();
        assert_eq!(hosts, [Ipv4Addr::new(192, 168, 1, 12)], "h2, behind c2");
        // The router's address (and resolver) behind both machines of the pair.
        let routers: BTreeSet<Ipv4Addr> = v1
            .iter()
            .filter(|n| n.mac == ROUTER_MAC && n.ip == Ipv4Addr::new(192, 168, 1, 1))
            .map(|n| n.at)
            .collect();
        assert_eq!(
            routers,
            BTreeSet::from([Ipv4Addr::new(10, 0, 0, 21), Ipv4Addr::new(10, 0, 0, 22)])
        );
    }

    #[test]
    fn a_gateway_machine_is_told_of_every_host_and_only_the_vpcs_asked_for() {
        let s = state();
        let g3 = me("g3", MachineRole::Gateway, 23);
        let all = neighbours(&s, &g3, None);
        assert_eq!(all["v1"].len(), 3);
        assert_eq!(all["v2"].len(), 1);
        assert!(all.values().flatten().all(|n| n.mac != ROUTER_MAC));
        let only = neighbours(&s, &g3, Some(&BTreeSet::from(["v2".to_owned()])));
        assert_eq!(only.keys().collect::<Vec<_>>(), ["v2"]);
    }
}
