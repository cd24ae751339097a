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
//!
//! This file holds what every part shares (names, entering a namespace, running `ip`);
//! `topology` makes VPCs, hosts and data centres, `kernel_path` the links and tables of
//! the kernel fast path, `rtnl` the few rtnetlink requests sent without `ip`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use nix::sched::{setns, CloneFlags};
use vpcep_model::VpcSpec;

use crate::kernel::{IpLine, Tolerate};

mod gate;
mod ha;
mod kernel_path;
mod overlay;
mod rtnl;
mod topology;

pub use gate::GATE_VNI;
pub use ha::{carriers, place, Pair, Place, HA_VNI_BASE};
pub use overlay::{neighbours, Machine, Neighbour, ROUTER_MAC, SEGMENT_MTU, VXLAN_PORT};
pub use topology::{route_table_script, IDC_HOP, ROUTE_TABLE};

use super::{KernelPath, Local, MakeSocket, Substrate};

pub struct Netns {
    prefix: String,
    /// Whether `conntrack` is there too (`nft` always is): the kernel fast path needs both.
    kernel: bool,
    /// Open handles to the VPC namespaces, for entering them.
    ns_files: Mutex<HashMap<String, Arc<File>>>,
    /// This machine, in a deployment across machines (`None`: one machine is all).
    machine: Option<Machine>,
    /// What each VPC's VXLAN ports were last told lies behind other machines.
    overlay: Mutex<HashMap<String, std::collections::BTreeSet<Neighbour>>>,
    /// The keepalived and conntrackd of each VPC router of a gateway pair.
    keepers: Mutex<ha::KeepersOf>,
    /// The machine's own keepalived, which opens or closes its routers' gate.
    gate: Mutex<Option<gate::Gate>>,
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
    "No such process",
    "No such file",
    "Cannot find device",
    "Cannot assign requested address",
    "does not exist",
    "Address not found",
    "FIB table does not exist",
];

impl Netns {
    /// Checks that this process may manage namespaces and that its tools are there:
    /// `ip` and `nft` always (a VPC's route tables are nftables), `conntrack` too (the
    /// kernel path). See [`Netns::with_kernel_path`].
    pub fn new(prefix: &str) -> io::Result<Netns> {
        Self::with_kernel_path(prefix, true)
    }

    /// Like [`Netns::new`]; with `kernel_path` false (`--forwarding userspace`) a missing
    /// `conntrack` is no error: every endpoint takes the userspace path anyway. A missing
    /// tool is refused here, naming it and the packages that bring it, rather than at
    /// every apply afterwards.
    pub fn with_kernel_path(prefix: &str, kernel_path: bool) -> io::Result<Netns> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::other("the netns substrate needs root (network namespaces, veth links, addresses); run as root or use --substrate loopback"));
        }
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
        let runs = |tool: &str, arg: &str| {
            Command::new(tool)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let conntrack = runs("conntrack", "--version");
        let mut missing: Vec<&str> = [("ip", "-V"), ("nft", "--version")]
            .into_iter()
            .filter(|(tool, arg)| !runs(tool, arg))
            .map(|(tool, _)| tool)
            .collect();
        if kernel_path && !conntrack {
            missing.push("conntrack");
        }
        if !missing.is_empty() {
            let why = if kernel_path {
                "ip and nft (namespaces, links, route tables) and conntrack (the kernel path; \
                 with --forwarding userspace it may be absent)"
            } else {
                "ip and nft (namespaces, links, route tables)"
            };
            return Err(io::Error::other(format!(
                "the netns substrate needs {why}; missing (not on PATH, or failing): {}; \
                 install them with `apt-get install nftables conntrack iproute2`",
                missing.join(", ")
            )));
        }
        ip(&["netns", "list"], &[])?;
        let kernel = conntrack;
        if !kernel {
            tracing::info!("conntrack is missing: --forwarding userspace, so no endpoint needs it");
        } else {
            kernel_path::raise_conntrack_max();
        }
        Ok(Netns {
            prefix: prefix.to_owned(),
            kernel,
            ns_files: Mutex::default(),
            machine: None,
            overlay: Mutex::default(),
            keepers: Mutex::default(),
            gate: Mutex::default(),
        })
    }

    /// The substrate of one machine of a deployment across machines: a compute machine
    /// holds the hosts placed on it, a gateway machine the VPCs' routers; their subnets
    /// are VXLAN segments over the machines' underlay addresses.
    /// A gateway machine needs keepalived and conntrackd (a pair's routers), refused here
    /// when they are missing, naming them.
    pub fn on_machine(mut self, machine: Machine) -> io::Result<Netns> {
        if machine.role == vpcep_model::MachineRole::Gateway {
            let missing: Vec<&str> = ["keepalived", "conntrackd"]
                .into_iter()
                .filter(|tool| {
                    !Command::new(tool)
                        .arg("--version")
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .collect();
            if !missing.is_empty() {
                return Err(io::Error::other(format!(
                    "a gateway machine runs keepalived and conntrackd for its routers' pairs; missing: {}; install them with `apt-get install keepalived conntrackd`",
                    missing.join(", ")
                )));
            }
        }
        if machine.role == vpcep_model::MachineRole::Gateway {
            // A node that starts forwards nothing until keepalived says it leads: the
            // routers it left stay standby (bridges down) as they are made again.
            ha::all_standby(&self.prefix);
        }
        self.machine = Some(machine);
        Ok(self)
    }

    /// The role of this machine, if it is one of several.
    fn role(&self) -> Option<vpcep_model::MachineRole> {
        self.machine.as_ref().map(|m| m.role)
    }

    /// Whether this machine stands up `host`: the one machine does all; a machine of
    /// several does those placed on it, and a gateway machine those placed nowhere.
    fn holds(&self, host: &vpcep_model::HostSpec) -> bool {
        match (&self.machine, &host.machine) {
            (None, _) => true,
            (Some(me), Some(on)) => me.name == *on,
            (Some(me), None) => me.role == vpcep_model::MachineRole::Gateway,
        }
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
                devs.iter()
                    .try_for_each(|d| rtnl::set_gso_max(d, rtnl::BIG))
            })
        };
        if let Err(e) = set() {
            WARNED.call_once(|| {
                tracing::warn!(error = %e, "devices keep 64 KB GSO packets (BIG TCP needs Linux 6.3; said once)");
            });
        }
    }
    /// Runs `program args` inside namespace `ns` (see [`run_in`]).
    fn run_in(
        &self,
        ns: &str,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> io::Result<String> {
        run_in(ns, program, args, stdin)
    }

    /// Runs an nftables script in namespace `ns`, as one transaction.
    fn nft(&self, ns: &str, script: &str) -> io::Result<()> {
        run_in(ns, "nft", &["-f", "-"], Some(script)).map(|_| ())
    }

    /// Sends `lines` to `ip -batch` for namespace `ns` (see [`ip_batch`]).
    fn ip_batch(&self, ns: &str, lines: &[IpLine]) -> io::Result<()> {
        ip_batch(ns, lines)
    }

    /// Writes `value` to `/proc/sys/{key}` as namespace `ns` sees it (the network part of
    /// `/proc/sys` is that of the thread that opens it).
    fn sysctl(&self, ns: &str, key: &str, value: &str) -> io::Result<()> {
        let target = File::open(format!("/run/netns/{ns}"))?;
        entered(&target, || {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .map_err(|e| io::Error::new(e.kind(), format!("{key} in {ns}: {e}")))
        })
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

/// Removes `/etc/netns/NS` (a host's resolv.conf), if there is one.
fn remove_netns_etc(ns: &str) {
    let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
}
/// Runs `program args` with `stdin` inside namespace `ns`; its stdout on success. The
/// calling thread enters the namespace and the child starts there (a process is made in
/// its parent thread's namespaces), which spares `ip netns exec` and its remounts.
fn run_in(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    use std::process::Stdio;
    // Opened afresh: a namespace removed and made again under its name is another one.
    let target = File::open(format!("/run/netns/{ns}"))
        .map_err(|e| io::Error::new(e.kind(), format!("namespace {ns}: {e}")))?;
    let child = entered(&target, || {
        Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))
    })?;
    let out = feed_and_wait(child, stdin.unwrap_or_default())?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {} in {ns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn answers(t: Tolerate) -> &'static [&'static str] {
    match t {
        Tolerate::Nothing => &[],
        Tolerate::Exists => EXISTS,
        Tolerate::Gone => GONE,
    }
}

/// Writes `input` to the child's stdin while its stdout and stderr are read, then waits
/// for it: a child that answers as it reads (`ip -batch` reports each failed line) would
/// otherwise fill its output pipe and stop reading while its input is still being written.
fn feed_and_wait(mut child: std::process::Child, input: &str) -> io::Result<std::process::Output> {
    use std::io::Write;
    let pipe = child.stdin.take();
    std::thread::scope(|scope| {
        if let Some(mut pipe) = pipe {
            // A child that exits early closes its end; what it says explains why.
            scope.spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child.wait_with_output()
    })
}

/// Sends `lines` to `ip -n NS -batch -` in one process; a line that fails with one of its
/// tolerated answers counts as done, any other failure is the error.
fn ip_batch(ns: &str, lines: &[IpLine]) -> io::Result<()> {
    use std::process::Stdio;
    if lines.is_empty() {
        return Ok(());
    }
    let child = Command::new("ip")
        .args(["-n", ns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot run ip: {e}")))?;
    let script: String = lines.iter().map(|l| format!("{}\n", l.line)).collect();
    let out = feed_and_wait(child, &script)?;
    if out.status.success() {
        return Ok(());
    }
    // Each failure is its error message, then "Command failed -:LINE".
    let mut said = String::new();
    for text in String::from_utf8_lossy(&out.stderr).lines() {
        let Some(n) = text.strip_prefix("Command failed -:") else {
            said.push_str(text);
            said.push(' ');
            continue;
        };
        let failed = n
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| lines.get(n.wrapping_sub(1)));
        match failed {
            Some(l) if answers(l.tolerate).iter().any(|t| said.contains(t)) => {}
            Some(l) => {
                return Err(io::Error::other(format!(
                    "ip -n {ns} {}: {}",
                    l.line,
                    said.trim()
                )))
            }
            None => {
                return Err(io::Error::other(format!(
                    "ip -n {ns} -batch: {}",
                    said.trim()
                )))
            }
        }
        said.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    #[test]
    fn a_child_that_answers_as_it_reads_is_fed_to_the_end() {
        // `ip -batch` reports each failed line on stderr while it reads: once its
        // output pipe is full it stops reading, and feeding it first would never end.
        let child = Command::new("sh")
            .args(["-c", "cat >&2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = "Error: ipv4: Address not found.\n".repeat(40_000);
        let out = super::feed_and_wait(child, &input).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stderr.len(), input.len());
    }
}
