//! Real VPCs: each VPC is a network namespace acting as its router, each subnet a bridge
//! in it holding the gateway address, each host a namespace joined to its subnet by a
//! veth pair. Overlapping CIDRs cost nothing, since every VPC has its own stack, and no
//! route ever joins two VPCs. Topology changes run iproute2's `ip`; sockets for a VPC
//! are made by a thread that entered its namespace, then handed to the async runtime.
//!
//! Names (the prefix keeps parallel test runs apart): VPC `{prefix}-v-{id8}`, host
//! `{prefix}-h-{id8}`; inside a VPC the subnet bridge `br-{subnet8}`, the host's veth
//! `vh-{host8}` (its peer is `eth0` in the host); SNAT addresses are /32s on the VPC's
//! `lo` (dummy links need a kernel module that is not everywhere).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};
use socket2::Socket;
use vpcep_model::{HostSpec, IdcSpec, RouteSpec, Snapshot, VpcSpec};

use super::{KernelPath, Local, MakeSocket, Substrate};
use crate::kernel::{self, Links, NsPlan};

mod gso;

pub struct Netns {
    prefix: String,
    /// Whether `nft` and `conntrack` are there (the kernel fast path needs both).
    kernel: bool,
    /// Open handles to the VPC namespaces, for entering them.
    ns_files: Mutex<HashMap<String, Arc<File>>>,
}

thread_local! {
    /// The namespace each thread started in, to come back to after entering a VPC's.
    static HOME: io::Result<File> = File::open("/proc/thread-self/ns/net");
}

/// Brings the thread back to its own namespace when dropped.
struct Back<'a>(&'a File);

impl Drop for Back<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0, CloneFlags::CLONE_NEWNET) {
            // A thread left in a tenant's namespace would make the next socket there:
            // stopping is the only safe answer (the data plane is rebuilt at start).
            tracing::error!(error = %e, "cannot return to the node's network namespace");
            std::process::abort();
        }
    }
}

/// The namespace of a host, for a given prefix (also known to control planes whose data
/// plane runs on gateway nodes).
pub fn host_ns_name(prefix: &str, port_id: &str) -> String {
    format!("{prefix}-h-{}", short(port_id))
}

/// The namespace of an attached data centre, for a given prefix.
pub fn idc_ns_name(prefix: &str, idc_id: &str) -> String {
    format!("{prefix}-d-{}", short(idc_id))
}

fn short(id: &str) -> String {
    id.chars().filter(|c| *c != '-').take(8).collect()
}

/// Runs `ip ARGS`; "already exists" and "not there" answers count as success when the
/// caller says they are expected, which makes every operation idempotent.
fn ip(args: &[&str], tolerate: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::other(format!("cannot run ip: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if tolerate.iter().any(|t| err.contains(t)) {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "ip {}: {}",
        args.join(" "),
        err.trim()
    )))
}

const EXISTS: &[&str] = &["File exists", "already exists", "already assigned"];
const GONE: &[&str] = &[
    "No such file",
    "Cannot find device",
    "Cannot assign requested address",
    "does not exist",
    "Address not found",
];

impl Netns {
    /// Checks that this process may manage namespaces, and that `ip` is there.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::other("the netns substrate needs root (network namespaces, veth links, addresses); run as root or use --substrate loopback"));
        }
        ip(&["netns", "list"], &[])?;
        let ok = !prefix.is_empty()
            && prefix.len() <= 24
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(io::Error::other(format!(
                "netns prefix {prefix:?}: 1-24 letters, digits or '-'"
            )));
        }
        let has = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let kernel = has("nft") && has("conntrack");
        if !kernel {
            tracing::warn!("nft or conntrack is missing: every endpoint takes the userspace path");
        } else {
            raise_conntrack_max();
        }
        Ok(Netns {
            prefix: prefix.to_owned(),
            kernel,
            ns_files: Mutex::default(),
        })
    }

    pub fn vpc_ns(&self, vpc_id: &str) -> String {
        format!("{}-v-{}", self.prefix, short(vpc_id))
    }

    pub fn host_ns(&self, port_id: &str) -> String {
        host_ns_name(&self.prefix, port_id)
    }

    pub fn idc_ns(&self, idc_id: &str) -> String {
        idc_ns_name(&self.prefix, idc_id)
    }

    /// Every namespace this substrate's prefix owns.
    pub fn namespaces(&self) -> io::Result<Vec<String>> {
        let out = Command::new("ip").args(["netns", "list"]).output()?;
        let mine = format!("{}-", self.prefix);
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&mine))
            .map(str::to_owned)
            .collect())
    }

    /// Removes every namespace of this prefix (tests, and `vpcep serve` cleanup).
    pub fn remove_all(&self) -> io::Result<()> {
        self.ns_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for ns in self.namespaces()? {
            remove_netns_etc(&ns);
            ip(&["netns", "del", &ns], GONE)?;
        }
        Ok(())
    }

    /// Makes namespace `ns` with an `eth0` whose peer is `link` in the VPC namespace `vns`.
    fn joined_ns(ns: &str, vns: &str, link: &str) -> io::Result<()> {
        Self::add_ns(ns)?;
        let has_eth0 = Command::new("ip")
            .args(["-n", ns, "link", "show", "eth0"])
            .output()?
            .status
            .success();
        if has_eth0 {
            return Ok(());
        }
        ip(
            &[
                "link", "add", link, "netns", vns, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ],
            EXISTS,
        )
    }

    fn add_ns(name: &str) -> io::Result<()> {
        ip(&["netns", "add", name], EXISTS)?;
        ip(&["-n", name, "link", "set", "lo", "up"], &[])
    }

    /// An open handle to a namespace (kept, so entering it costs no path lookup).
    fn ns_file(&self, ns: &str) -> io::Result<Arc<File>> {
        let mut files = self.ns_files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(ns) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(format!("/run/netns/{ns}"))?);
        files.insert(ns.to_owned(), f.clone());
        Ok(f)
    }

    /// Runs `f` with the calling thread inside the VPC's namespace, and brings the thread
    /// back before returning (also if `f` panics). Sockets keep the namespace they were
    /// made in, so this is how the process makes them without a route between VPCs.
    fn in_vpc<T>(&self, vpc: &VpcSpec, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        entered(&*self.ns_file(&self.vpc_ns(&vpc.id))?, f)
    }

    /// Lets devices `devs` of namespace `ns` carry packets of up to 512 KB (BIG TCP)
    /// rather than 64 KB. Nothing here crosses a wire, so no hop has to cut a packet to
    /// an MTU, and what each hop costs per packet (routing, and conntrack and NAT on the
    /// kernel path) is spread over eight times the bytes. Best effort: a kernel before
    /// 6.3 keeps 64 KB, which is only slower (said once in the log).
    fn big_gso(ns: &str, devs: &[&str]) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        // Opened afresh, not from `ns_files`: a host's namespace can be removed and made
        // again under the same name, and a kept handle would then point at the old one.
        let set = || -> io::Result<()> {
            let target = File::open(format!("/run/netns/{ns}"))?;
            entered(&target, || {
                devs.iter().try_for_each(|d| gso::set_max(d, gso::BIG))
            })
        };
        if let Err(e) = set() {
            WARNED.call_once(|| {
                tracing::warn!(error = %e, "devices keep 64 KB GSO packets (BIG TCP needs Linux 6.3; said once)");
            });
        }
    }
    fn subnet<'a>(vpc: &'a VpcSpec, subnet_id: &str) -> io::Result<&'a vpcep_model::SubnetSpec> {
        vpc.subnets
            .iter()
            .find(|s| s.id == subnet_id)
            .ok_or_else(|| io::Error::other(format!("subnet {subnet_id} is not in VPC {}", vpc.id)))
    }
}

/// Runs `f` with the calling thread inside the namespace `target`, and brings the thread
/// back before returning (also if `f` panics).
fn entered<T>(target: &File, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    HOME.with(|home| {
        let home = home
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), format!("this thread's namespace: {e}")))?;
        setns(target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let _back = Back(home);
        f()
    })
}

fn prefix_len(cidr: &str) -> io::Result<u8> {
    cidr.parse::<Ipv4Net>()
        .map(|n| n.prefix_len())
        .map_err(|_| io::Error::other(format!("bad CIDR {cidr}")))
}

impl Substrate for Netns {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn ensure_vpc(&self, vpc: &VpcSpec) -> io::Result<()> {
        let ns = self.vpc_ns(&vpc.id);
        Self::add_ns(&ns)?;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qew",
                "net.ipv4.ip_forward=1",
                // It translates for endpoints in the backend's own subnet: forwarding back
                // out of the bridge is not a hint for the host to go direct.
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
                // The router routes; frames switched inside a subnet's bridge do not
                // need conntrack or our tables (the kernel's default, where
                // br_netfilter is built in, would send them through both). `-e`: a
                // kernel without br_netfilter has no such keys.
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "enabling forwarding in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        for s in &vpc.subnets {
            let br = format!("br-{}", short(&s.id));
            ip(&["-n", &ns, "link", "add", &br, "type", "bridge"], EXISTS)?;
            let addr = format!("{}/{}", s.gateway_ip, prefix_len(&s.cidr)?);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &br], EXISTS)?;
            ip(&["-n", &ns, "link", "set", &br, "up"], &[])?;
        }
        Ok(())
    }

    fn remove_vpc(&self, vpc_id: &str) -> io::Result<()> {
        let ns = self.vpc_ns(vpc_id);
        self.ns_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ns);
        ip(&["netns", "del", &ns], GONE)
    }

    fn ensure_host(&self, vpc: &VpcSpec, host: &HostSpec) -> io::Result<()> {
        let (vns, hns) = (self.vpc_ns(&vpc.id), self.host_ns(&host.port_id));
        let subnet = Self::subnet(vpc, &host.subnet_id)?;
        let veth = format!("vh-{}", short(&host.port_id));
        Self::joined_ns(&hns, &vns, &veth)?;
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
        in_ns(&ns, "nft", &["-f", "-"], Some(&script)).map(|_| ())
    }

    fn add_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        addr: Ipv4Addr,
        kind: Local,
    ) -> io::Result<Option<Ipv4Addr>> {
        let ns = self.vpc_ns(&vpc.id);
        let dev = match kind {
            Local::Endpoint if !subnet_id.is_empty() => {
                format!("br-{}", short(&Self::subnet(vpc, subnet_id)?.id))
            }
            Local::Endpoint | Local::Snat => "lo".to_owned(),
        };
        ip(
            &["-n", &ns, "addr", "add", &format!("{addr}/32"), "dev", &dev],
            EXISTS,
        )?;
        Ok(Some(addr))
    }

    fn remove_local(
        &self,
        vpc: &VpcSpec,
        subnet_id: &str,
        addr: Ipv4Addr,
        kind: Local,
    ) -> io::Result<()> {
        let ns = self.vpc_ns(&vpc.id);
        let dev = match kind {
            Local::Endpoint if !subnet_id.is_empty() => format!("br-{}", short(subnet_id)),
            Local::Endpoint | Local::Snat => "lo".to_owned(),
        };
        ip(
            &["-n", &ns, "addr", "del", &format!("{addr}/32"), "dev", &dev],
            GONE,
        )
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

    fn prune(&self, keep: &Snapshot) -> io::Result<()> {
        let wanted: std::collections::HashSet<String> = keep
            .vpcs
            .iter()
            .map(|v| self.vpc_ns(&v.id))
            .chain(keep.hosts.iter().map(|h| self.host_ns(&h.port_id)))
            .chain(keep.idcs.iter().map(|i| self.idc_ns(&i.id)))
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

/// Removes `/etc/netns/NS` (a host's resolv.conf), if there is one.
fn remove_netns_etc(ns: &str) {
    let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
}

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

/// Runs `ip netns exec NS PROGRAM ARGS` with `stdin`; its stdout on success.
fn in_ns(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .map(|mut s| s.write_all(input.as_bytes()))
            .transpose()?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {} in {ns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Routes of the kernel path carry this protocol number, so they can be listed and pruned.
const ROUTE_PROTO: &str = "199";
/// The preference of the policy rules that route marked packets over links.
const LINK_RULE_PREF: &str = "100";

impl Netns {
    fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
        in_ns(ns, "sysctl", &["-qw", &format!("{key}={value}")], None).map(|_| ())
    }

    /// The veth link between a consumer and a provider VPC, with static neighbours.
    fn ensure_link(&self, consumer: &str, provider: &str) -> io::Result<()> {
        let (cns, pns) = (self.vpc_ns(consumer), self.vpc_ns(provider));
        let (kc, kp) = kernel::link_names(consumer, provider);
        let exists = Command::new("ip")
            .args(["-n", &cns, "link", "show", &kc])
            .output()?
            .status
            .success();
        if !exists {
            ip(
                &[
                    "link",
                    "add",
                    &kc,
                    "netns",
                    &cns,
                    "address",
                    kernel::CONSUMER_MAC,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &kp,
                    "netns",
                    &pns,
                    "address",
                    kernel::PROVIDER_MAC,
                ],
                EXISTS,
            )?;
        }
        for (ns, dev, hop, mac) in [
            (&cns, &kc, kernel::PROVIDER_HOP, kernel::PROVIDER_MAC),
            (&pns, &kp, kernel::CONSUMER_HOP, kernel::CONSUMER_MAC),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"], &[])?;
            Self::big_gso(ns, &[dev]);
            Self::sysctl(ns, &format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
            // Replies come from the provider's address space, which may hold an address
            // the consumer's router owns too.
            Self::sysctl(ns, &format!("net.ipv4.conf.{dev}.accept_local"), "1")?;
            ip(
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &hop.to_string(),
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
                &[],
            )?;
        }
        Ok(())
    }

    /// Our kernel-path routes in a namespace become exactly `want` (each via `hop`, or
    /// straight onto the device).
    fn sync_routes(ns: &str, want: &[(Ipv4Addr, String, Option<Ipv4Addr>)]) -> io::Result<()> {
        let listed = Command::new("ip")
            .args(["-n", ns, "route", "show", "proto", ROUTE_PROTO])
            .output()?;
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let dest = line.split_whitespace().next().unwrap_or_default();
            let keep = want
                .iter()
                .any(|(ip, dev, _)| dest == ip.to_string() && line.contains(&format!("dev {dev}")));
            if !keep && !dest.is_empty() {
                ip(
                    &["-n", ns, "route", "del", dest, "proto", ROUTE_PROTO],
                    GONE,
                )?;
            }
        }
        for (dest, dev, hop) in want {
            let dest = format!("{dest}/32");
            let mut args = vec!["-n", ns, "route", "replace", &dest];
            let hop = hop.map(|h| h.to_string());
            if let Some(h) = &hop {
                args.extend(["via", h.as_str(), "onlink"]);
            }
            args.extend(["dev", dev, "proto", ROUTE_PROTO]);
            ip(&args, &[])?;
        }
        Ok(())
    }

    /// The policy rules of a consumer namespace become exactly `marks`: packets marked
    /// for a link are routed over it (table = mark, default route via the provider's
    /// end), ahead of the local table, which moves behind them — a backend's address may
    /// be one the consumer's router owns in its own address space.
    fn sync_marks(ns: &str, marks: &[(u32, String)]) -> io::Result<()> {
        let listed = Command::new("ip")
            .args(["-n", ns, "rule", "show", "pref", LINK_RULE_PREF])
            .output()?;
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let Some(mark) = line
                .split_whitespace()
                .skip_while(|w| *w != "fwmark")
                .nth(1)
                .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            else {
                continue;
            };
            if !marks.iter().any(|(m, _)| *m == mark) {
                let table = mark.to_string();
                ip(
                    &[
                        "-n",
                        ns,
                        "rule",
                        "del",
                        "pref",
                        LINK_RULE_PREF,
                        "fwmark",
                        &table,
                    ],
                    GONE,
                )?;
                ip(&["-n", ns, "route", "flush", "table", &table], GONE)?;
            }
        }
        if marks.is_empty() {
            return Ok(());
        }
        ip(
            &["-n", ns, "rule", "add", "pref", "200", "lookup", "local"],
            EXISTS,
        )?;
        ip(
            &["-n", ns, "rule", "del", "pref", "0", "lookup", "local"],
            GONE,
        )?;
        for (mark, dev) in marks {
            let table = mark.to_string();
            ip(
                &[
                    "-n",
                    ns,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &kernel::PROVIDER_HOP.to_string(),
                    "dev",
                    dev,
                    "onlink",
                    "table",
                    &table,
                ],
                &[],
            )?;
            ip(
                &[
                    "-n",
                    ns,
                    "rule",
                    "add",
                    "pref",
                    LINK_RULE_PREF,
                    "fwmark",
                    &table,
                    "lookup",
                    &table,
                ],
                EXISTS,
            )?;
        }
        Ok(())
    }
}

impl KernelPath for Netns {
    fn apply(
        &self,
        vpcs: &BTreeMap<String, VpcSpec>,
        plans: &BTreeMap<String, NsPlan>,
        links: &Links,
    ) -> io::Result<()> {
        for (c, p) in links {
            self.ensure_link(c, p)?;
        }
        for (id, vpc) in vpcs {
            let ns = self.vpc_ns(id);
            // Links nobody needs any more go (with their routes).
            let listed = Command::new("ip")
                .args(["-n", &ns, "-o", "link", "show"])
                .output()?;
            for line in String::from_utf8_lossy(&listed.stdout).lines() {
                let Some(name) = line
                    .split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n))
                else {
                    continue;
                };
                let wanted = links.iter().any(|(c, p)| {
                    let (kc, kp) = kernel::link_names(c, p);
                    (c == id && name == kc) || (p == id && name == kp)
                });
                if (name.starts_with("kc-") || name.starts_with("kp-")) && !wanted {
                    ip(&["-n", &ns, "link", "del", name], GONE)?;
                }
            }
            let plan = plans.get(id).cloned().unwrap_or_default();
            // Towards a provider the next hop is the provider's end; back towards a
            // consumer it is the consumer's end.
            let routes: Vec<(Ipv4Addr, String, Option<Ipv4Addr>)> = plan
                .routes
                .iter()
                .map(|(dest, dev)| {
                    let hop = if dev.starts_with("kc-") {
                        Some(kernel::PROVIDER_HOP)
                    } else if dev.starts_with("kp-") {
                        Some(kernel::CONSUMER_HOP)
                    } else {
                        None
                    };
                    (*dest, dev.clone(), hop)
                })
                .collect();
            Self::sync_routes(&ns, &routes)?;
            Self::sync_marks(&ns, &plan.marks)?;
            for (dest, dev, _) in &routes {
                if dev.starts_with("kp-") {
                    // A SNAT address left on the provider's loopback by the userspace
                    // path would swallow the replies routed back over the link.
                    ip(
                        &["-n", &ns, "addr", "del", &format!("{dest}/32"), "dev", "lo"],
                        GONE,
                    )?;
                    continue;
                }
                // An endpoint IP left on a bridge by the userspace path (an earlier run)
                // would be answered by the router itself instead of by proxy ARP.
                for s in &vpc.subnets {
                    let br = format!("br-{}", short(&s.id));
                    ip(
                        &["-n", &ns, "addr", "del", &format!("{dest}/32"), "dev", &br],
                        GONE,
                    )?;
                }
            }
            if routes.iter().any(|(_, dev, _)| !dev.starts_with("kp-")) {
                // The subnet bridges answer ARP for endpoint IPs (routed elsewhere).
                for s in &vpc.subnets {
                    Self::sysctl(
                        &ns,
                        &format!("net.ipv4.conf.br-{}.proxy_arp", short(&s.id)),
                        "1",
                    )?;
                }
            }
            let script = format!(
                "add table ip {t}\ndelete table ip {t}\n{}",
                plan.nft,
                t = kernel::TABLE
            );
            in_ns(&ns, "nft", &["-f", "-"], Some(&script))?;
        }
        Ok(())
    }

    fn forget(&self, vpc_ids: &[&str], marker_id: u32) {
        for id in vpc_ids {
            // "0 flow entries" is an exit status of 1 for conntrack; nothing to report.
            let _ = in_ns(
                &self.vpc_ns(id),
                "conntrack",
                &["-D", "-m", &marker_id.to_string()],
                None,
            );
        }
    }

    fn counters(&self, vpc_id: &str) -> HashMap<String, (u64, u64)> {
        let Ok(out) = in_ns(
            &self.vpc_ns(vpc_id),
            "nft",
            &["-j", "list", "counters", "table", "ip", kernel::TABLE],
            None,
        ) else {
            return HashMap::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
            return HashMap::new();
        };
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let c = item.get("counter")?;
                Some((
                    c["name"].as_str()?.to_owned(),
                    (c["packets"].as_u64()?, c["bytes"].as_u64()?),
                ))
            })
            .collect()
    }
}

/// Sessions of the kernel path live in conntrack; a node is meant to hold a million.
const CONNTRACK_MAX: u64 = 1 << 20;

/// Raises `net.netfilter.nf_conntrack_max` (one limit for every namespace) to at least
/// [`CONNTRACK_MAX`]; says clearly if it cannot.
fn raise_conntrack_max() {
    let path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let current: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if current >= CONNTRACK_MAX {
        return;
    }
    match std::fs::write(path, CONNTRACK_MAX.to_string()) {
        Ok(()) => tracing::info!(
            from = current,
            to = CONNTRACK_MAX,
            "raised nf_conntrack_max for the kernel path"
        ),
        Err(e) => {
            tracing::warn!(current, error = %e, "cannot raise net.netfilter.nf_conntrack_max to {CONNTRACK_MAX}; the kernel path holds at most {current} sessions on this node")
        }
    }
}
