//! The topology of the netns substrate: VPC namespaces with their subnet bridges, hosts
//! and data centres joined to them, the gateway endpoints' route table, and the local
//! addresses and sockets of the userspace gateway.

use std::io;
use std::net::Ipv4Addr;

use socket2::Socket;
use vpcep_model::{HostSpec, IdcSpec, MachineRole, RouteSpec, Snapshot, VpcSpec};

use crate::kernel::{IpLine, Tolerate};

use super::{
    ip, prefix_len, remove_netns_etc, rtnl, short, KernelPath, Local, MakeSocket, Netns, Substrate,
    EXISTS, GONE, ROUTER_MAC, SEGMENT_MTU,
};

impl Substrate for Netns {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn ensure_vpc(&self, vpc: &VpcSpec) -> io::Result<()> {
        if self.role() == Some(MachineRole::Compute) {
            // Its subnets come with the hosts placed here (`ensure_host`).
            return Ok(());
        }
        let ns = self.vpc_ns(&vpc.id);
        Self::add_ns(&ns)?;
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            // It translates for endpoints in the backend's own subnet: forwarding back
            // out of the bridge is not a hint for the host to go direct.
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/default/send_redirects", "0"),
            // The router routes; frames switched inside a subnet's bridge do not need
            // conntrack or our tables (the kernel's default, where br_netfilter is built
            // in, would send them through both). A kernel without br_netfilter has no
            // such keys.
            ("net/bridge/bridge-nf-call-iptables", "0"),
            ("net/bridge/bridge-nf-call-ip6tables", "0"),
            ("net/bridge/bridge-nf-call-arptables", "0"),
        ] {
            match self.sysctl(&ns, key, value) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && key.starts_with("net/bridge") => {}
                r => r?,
            }
        }
        let standby = self.role() == Some(MachineRole::Gateway) && super::ha::standby(&ns);
        let mut lines = Vec::new();
        for s in &vpc.subnets {
            let br = format!("br-{}", short(&s.id));
            let addr = format!("{}/{}", s.gateway_ip, prefix_len(&s.cidr)?);
            lines.push(IpLine {
                line: format!("link add {br} type bridge"),
                tolerate: Tolerate::Exists,
            });
            lines.push(IpLine {
                line: format!("address add {addr} dev {br}"),
                tolerate: Tolerate::Exists,
            });
            // The standby of a pair (and a router whose node is starting again) keeps its
            // bridges down: one frame from it would teach the compute machines to send
            // the router's traffic here.
            if !standby {
                lines.push(IpLine {
                    line: format!("link set {br} up"),
                    tolerate: Tolerate::Nothing,
                });
            }
        }
        self.ip_batch(&ns, &lines)?;
        // The bridges answer ARP for the kernel path's endpoint addresses, which are
        // routed elsewhere (only addresses routed off the bridge are answered), and at
        // once: the kernel delays a proxied answer by up to 0.8 s by default, which a
        // client's first connection to a new endpoint would wait for.
        for s in &vpc.subnets {
            let br = format!("br-{}", short(&s.id));
            self.sysctl(&ns, &format!("net/ipv4/conf/{br}/proxy_arp"), "1")?;
            self.sysctl(&ns, &format!("net/ipv4/neigh/{br}/proxy_delay"), "0")?;
        }
        if let Some(me) = self
            .machine
            .as_ref()
            .filter(|m| m.role == MachineRole::Gateway)
        {
            // The router's side of each subnet's segment across machines.
            for s in vpc.subnets.iter().filter(|s| s.vni > 0) {
                let br = format!("br-{}", short(&s.id));
                ip(&["-n", &ns, "link", "set", &br, "address", ROUTER_MAC], &[])?;
                self.ensure_segment_port(&ns, s, me)?;
            }
        }
        Ok(())
    }

    fn remove_vpc(&self, vpc_id: &str) -> io::Result<()> {
        self.forget_pair(vpc_id);
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vpc_id);
        let ns = self.vpc_ns(vpc_id);
        self.ns_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ns);
        ip(&["netns", "del", &ns], GONE)
    }

    fn ensure_host(&self, vpc: &VpcSpec, host: &HostSpec) -> io::Result<()> {
        if !self.holds(host) {
            return Ok(());
        }
        let (vns, hns) = (self.vpc_ns(&vpc.id), self.host_ns(&host.port_id));
        let subnet = Self::subnet(vpc, &host.subnet_id)?;
        if self.role() == Some(MachineRole::Compute) {
            self.ensure_segment(vpc, subnet)?;
        }
        let veth = format!("vh-{}", short(&host.port_id));
        Self::joined_ns(&hns, &vns, &veth)?;
        if self.machine.is_some() {
            // Its port's MAC (the other machines are told it) and the segment's MTU.
            let mtu = SEGMENT_MTU.to_string();
            if !host.mac.is_empty() {
                ip(
                    &["-n", &hns, "link", "set", "eth0", "address", &host.mac],
                    &[],
                )?;
            }
            ip(&["-n", &hns, "link", "set", "eth0", "mtu", &mtu], &[])?;
            ip(&["-n", &vns, "link", "set", &veth, "mtu", &mtu], &[])?;
        }
        let br = format!("br-{}", short(&subnet.id));
        ip(
            &["-n", &vns, "link", "set", &veth, "master", &br, "up"],
            &[],
        )?;
        // A bridge takes packets as big as its ports do, so it is set once it has one.
        Self::big_gso(&vns, &[&veth, &br]);
        Self::big_gso(&hns, &["eth0"]);
        let addr = format!("{}/{}", host.ip, prefix_len(&subnet.cidr)?);
        ip(&["-n", &hns, "addr", "add", &addr, "dev", "eth0"], EXISTS)?;
        if let Some(resolver) = subnet.resolver_ip() {
            // `ip netns exec` bind-mounts this over /etc/resolv.conf.
            let dir = std::path::Path::new("/etc/netns").join(&hns);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("resolv.conf"),
                format!("# the VPC resolver (vpcep)\nnameserver {resolver}\noptions timeout:2 attempts:2\n"),
            )?;
        }
        ip(&["-n", &hns, "link", "set", "eth0", "up"], &[])?;
        ip(
            &[
                "-n",
                &hns,
                "route",
                "replace",
                "default",
                "via",
                &subnet.gateway_ip.to_string(),
            ],
            &[],
        )
    }

    fn remove_host(&self, host: &HostSpec) -> io::Result<()> {
        let ns = self.host_ns(&host.port_id);
        remove_netns_etc(&ns);
        ip(&["netns", "del", &ns], GONE)
    }

    fn ensure_idc(&self, vpc: &VpcSpec, idc: &IdcSpec) -> io::Result<()> {
        let (vns, ins) = (self.vpc_ns(&vpc.id), self.idc_ns(&idc.id));
        let link = format!("vd-{}", short(&idc.id));
        Self::joined_ns(&ins, &vns, &link)?;
        // The VPC end answers at a link-local hop; the data centre's range is on-link there.
        let hop = IDC_HOP.to_string();
        ip(
            &[
                "-n",
                &vns,
                "addr",
                "add",
                &format!("{hop}/32"),
                "dev",
                &link,
            ],
            EXISTS,
        )?;
        ip(&["-n", &vns, "link", "set", &link, "up"], &[])?;
        Self::big_gso(&vns, &[&link]);
        Self::big_gso(&ins, &["eth0"]);
        ip(
            &["-n", &vns, "route", "replace", &idc.cidr, "dev", &link],
            &[],
        )?;
        let addr = format!("{}/{}", idc.ip, prefix_len(&idc.cidr)?);
        ip(&["-n", &ins, "addr", "add", &addr, "dev", "eth0"], EXISTS)?;
        ip(&["-n", &ins, "link", "set", "eth0", "up"], &[])?;
        // Like a VPN whose remote side includes everything behind the VPC.
        ip(
            &[
                "-n", &ins, "route", "replace", "default", "via", &hop, "dev", "eth0", "onlink",
            ],
            &[],
        )
    }

    fn remove_idc(&self, idc: &IdcSpec) -> io::Result<()> {
        ip(&["netns", "del", &self.idc_ns(&idc.id)], GONE)
    }

    fn idc_netns(&self, idc_id: &str) -> Option<String> {
        Some(self.idc_ns(idc_id))
    }

    fn set_routes(&self, vpc: &VpcSpec, routes: &[RouteSpec]) -> io::Result<()> {
        let ns = self.vpc_ns(&vpc.id);
        let script = route_table_script(routes);
        self.nft(&ns, &script)
    }

    fn add_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        addr: Ipv4Addr,
        kind: Local,
    ) -> io::Result<Option<Ipv4Addr>> {
        let dev = match kind {
            Local::Endpoint if !subnet_id.is_empty() => {
                format!("br-{}", short(&Self::subnet(vpc, subnet_id)?.id))
            }
            Local::Endpoint | Local::Snat => "lo".to_owned(),
        };
        self.in_vpc(vpc, || rtnl::local_route(true, &dev, addr))?;
        Ok(Some(addr))
    }

    fn remove_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        addr: Ipv4Addr,
        kind: Local,
    ) -> io::Result<()> {
        let dev = match kind {
            Local::Endpoint if !subnet_id.is_empty() => format!("br-{}", short(subnet_id)),
            Local::Endpoint | Local::Snat => "lo".to_owned(),
        };
        self.in_vpc(vpc, || rtnl::local_route(false, &dev, addr))
    }

    fn map_remote(&self, _: &VpcSpec, addr: Ipv4Addr) -> Ipv4Addr {
        addr
    }

    fn make_sockets(
        &self,
        vpc: Option<&VpcSpec>,
        n: usize,
        make: MakeSocket,
    ) -> io::Result<Vec<Socket>> {
        let batch = || (0..n).map(|_| make()).collect();
        match vpc {
            Some(vpc) => self.in_vpc(vpc, batch),
            None => batch(),
        }
    }

    fn host_netns(&self, port_id: &str) -> Option<String> {
        Some(self.host_ns(port_id))
    }

    fn local_ip(&self, _: u32, _: Ipv4Addr) -> Option<Ipv4Addr> {
        None
    }

    fn kernel(&self) -> Option<&dyn KernelPath> {
        self.kernel.then_some(self as &dyn KernelPath)
    }

    fn role(&self) -> Option<MachineRole> {
        Netns::role(self)
    }

    fn plan_overlay(
        &self,
        state: &vpcep_model::State,
        vpcs: Option<&std::collections::BTreeSet<String>>,
    ) -> Option<crate::substrate::OverlayPlan> {
        let me = self.machine.as_ref()?;
        let mut want = super::overlay::neighbours(state, me, vpcs);
        let listed: Vec<&VpcSpec> = match vpcs {
            None => state.vpcs.values().collect(),
            Some(ids) => ids.iter().filter_map(|id| state.vpcs.get(id)).collect(),
        };
        Some(crate::substrate::OverlayPlan {
            vpcs: listed
                .into_iter()
                .map(|v| (v.clone(), want.remove(&v.id).unwrap_or_default()))
                .collect(),
            place: (me.role == MachineRole::Gateway).then(|| super::ha::place(state, me)),
        })
    }

    fn set_overlay(&self, plan: crate::substrate::OverlayPlan) -> io::Result<()> {
        let mut failed = Vec::new();
        // The gate first: the routers' instances track it from their start.
        if let Some(place) = &plan.place {
            if let Err(e) = self.ensure_gate(place) {
                failed.push(format!("the machine's gate: {e}"));
            }
        }
        for (vpc, entries) in &plan.vpcs {
            if let Err(e) = self.program_overlay(vpc, entries) {
                failed.push(format!("VPC {}: {e}", vpc.id));
            }
            if let Some(place) = &plan.place {
                if let Err(e) = self.ensure_pair(vpc, place) {
                    failed.push(format!("VPC {} as one of a pair: {e}", vpc.id));
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(failed.join("; ")))
        }
    }

    fn supervise(&self) -> io::Result<()> {
        let gate = self.supervise_gate();
        self.supervise_keepers().and(gate)
    }

    fn prune(&self, keep: &Snapshot) -> io::Result<()> {
        let wanted: std::collections::HashSet<String> = keep
            .vpcs
            .iter()
            .map(|v| self.vpc_ns(&v.id))
            .chain(keep.hosts.iter().map(|h| self.host_ns(&h.port_id)))
            .chain(keep.idcs.iter().map(|i| self.idc_ns(&i.id)))
            // The gate's, which the overlay keeps (or removes) itself.
            .chain([super::gate::gate_ns(&self.prefix)])
            .collect();
        for ns in self.namespaces()? {
            if !wanted.contains(&ns) {
                remove_netns_etc(&ns);
                tracing::info!(netns = %ns, "removing a namespace the desired state no longer has");
                ip(&["netns", "del", &ns], GONE)?;
            }
        }
        Ok(())
    }
}

/// The VPC router's address on every data-centre link.
pub const IDC_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 9, 1);

/// The table `vpcep_route` of a VPC router: what the gateway endpoints' routes do. Traffic
/// to a route's range from the sources whose route table has it is sent to the endpoint's
/// listeners (DNAT to the range's first address, ports kept); anything else to that
/// range is dropped, as it would find no route.
pub fn route_table_script(routes: &[RouteSpec]) -> String {
    let mut rules = String::new();
    let mut guard = String::new();
    for r in routes {
        let Some(listen) = vpcep_model::route_listen_ip(&r.cidr) else {
            continue;
        };
        if !r.sources.is_empty() {
            let from = r.sources.join(", ");
            rules.push_str(&format!(
                "    ip saddr {{ {from} }} ip daddr {} dnat to {listen}\n",
                r.cidr
            ));
            guard.push_str(&format!(
                "    ip saddr {{ {from} }} ip daddr {listen} accept\n"
            ));
        }
        guard.push_str(&format!("    ip daddr {} drop\n", r.cidr));
    }
    format!(
        "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n  chain route_dnat {{\n    type nat hook prerouting priority -110; policy accept;\n{rules}  }}\n  chain route_guard {{\n    type filter hook input priority -10; policy accept;\n{guard}  }}\n}}\n",
        t = ROUTE_TABLE
    )
}

/// The nftables table of gateway-endpoint routes (separate from the kernel path's).
pub const ROUTE_TABLE: &str = "vpcep_route";
