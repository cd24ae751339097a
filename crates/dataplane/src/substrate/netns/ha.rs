//! Gateway machines in pairs, as OpenStack Neutron's L3 HA routers: every VPC router
//! exists on both gateway machines of the pair; keepalived (VRRPv3, unicast, adverts every
//! 200 ms) in each router's namespace decides which one forwards, and conntrackd keeps
//! the other's connection-tracking table in step, so that established kernel-path
//! sessions survive a failover.
//!
//! - The two routers of a VPC talk over an HA link of their own: a VXLAN port `ha0` in
//!   the router's namespace (VNI `HA_VNI_BASE` + the VPC's number), 169.254.192.1 on the
//!   first machine of the pair and .2 on the second.
//! - The standby's subnet bridges are down, so it takes no frame; keepalived's notify
//!   script (written here) sets them up or down on every change of state, and records it
//!   in `state`. The compute machines send what is for the router to both gateway
//!   machines (two destinations of the router's MAC), so a failover changes nothing on
//!   them: the new master simply starts to take the frames.
//! - Both start as BACKUP with `nopreempt`: the first machine of the pair (higher
//!   priority) becomes master at start; a machine that comes back stays standby.
//! - Files live in `/run/vpcep-ha/{namespace}/`; a node that restarts finds the
//!   keepalived and conntrackd of its previous run by their pid files and replaces them.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use vpcep_model::{MachineRole, MachineSpec, State, VpcSpec};

use super::overlay::Machine;
use super::{ip, Netns, EXISTS};

/// The HA links' VNIs start here; subnets' VNIs stay below.
pub const HA_VNI_BASE: u32 = 1 << 23;
/// The HA link's device in a router's namespace.
const HA_DEV: &str = "ha0";
/// Where the routers' HA files are.
const HA_DIR: &str = "/run/vpcep-ha";

/// The pair of gateway machines this machine belongs to, as seen from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// 0: the first of the pair (priority 200), 1: the second (100).
    pub index: u8,
    pub peer: Ipv4Addr,
}

/// The gateway machines that carry the routers: the first gateway machine by name and,
/// when there are more, a second one — the first by name in another zone, if there is
/// one, so that a pair survives the loss of a zone.
pub fn carriers(state: &State) -> Vec<&MachineSpec> {
    let mut gateways: Vec<&MachineSpec> = state
        .machines
        .iter()
        .filter(|m| m.role == MachineRole::Gateway)
        .collect();
    gateways.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(first) = gateways.first().copied() else {
        return Vec::new();
    };
    let second = gateways[1..]
        .iter()
        .find(|m| m.zone != first.zone)
        .or(gateways.get(1))
        .copied();
    [Some(first), second].into_iter().flatten().collect()
}

/// This machine's place in the pair of [`carriers`] (`None`: not one of two).
pub fn pair(state: &State, me: &Machine) -> Option<Pair> {
    let pair = carriers(state);
    if pair.len() < 2 {
        return None;
    }
    let index = pair.iter().position(|m| m.name == me.name)?;
    Some(Pair {
        index: index as u8,
        peer: pair[1 - index].underlay,
    })
}

/// The running keepalived and conntrackd of one router.
pub(super) struct Keepers {
    pair: Pair,
    keepalived: Child,
    conntrackd: Child,
}

impl Drop for Keepers {
    fn drop(&mut self) {
        for c in [&mut self.keepalived, &mut self.conntrackd] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dir_of(ns: &str) -> PathBuf {
    PathBuf::from(HA_DIR).join(ns)
}

/// Whether the router in `ns` is standby (its HA state says so): its bridges stay down.
pub(super) fn standby(ns: &str) -> bool {
    std::fs::read_to_string(dir_of(ns).join("state")).is_ok_and(|s| s.trim() != "master")
}

/// Makes every router of namespace prefix `prefix` standby, its bridges down, until its
/// keepalived decides (a node starting: the routers its previous run left may still
/// have their bridges up, and one frame from them would teach the compute machines to
/// send the routers' traffic here).
pub(super) fn all_standby(prefix: &str) {
    let mine = format!("{prefix}-");
    for d in std::fs::read_dir(HA_DIR).into_iter().flatten().flatten() {
        let ns = d.file_name().to_string_lossy().into_owned();
        if ns.starts_with(&mine) {
            let _ = std::fs::write(d.path().join("state"), "starting\n");
            if std::path::Path::new("/run/netns").join(&ns).exists() {
                let _ = set_bridges(&ns, false);
            }
        }
    }
}

/// Kills what a previous run left for `ns` (by pid file), and its files.
fn clear_leftovers(ns: &str) {
    let dir = dir_of(ns);
    for pidfile in ["keepalived.pid", "vrrp.pid", "conntrackd.pid"] {
        if let Ok(pid) = std::fs::read_to_string(dir.join(pidfile)) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

impl Netns {
    /// Makes the router of `vpc` one of a pair (HA link, keepalived, conntrackd), or alone
    /// again (`pair` `None`). Restarts a keeper that died.
    pub(super) fn ensure_pair(&self, vpc: &VpcSpec, pair: Option<&Pair>) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let ns = self.vpc_ns(&vpc.id);
        let mut keepers = self.keepers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pair) = pair else {
            // Alone (again): it forwards, whatever a pair left.
            if keepers.remove(&vpc.id).is_some() || dir_of(&ns).exists() {
                clear_leftovers(&ns);
                set_bridges(&ns, true)?;
            }
            return Ok(());
        };
        if let Some(k) = keepers.get_mut(&vpc.id) {
            let alive = matches!(k.keepalived.try_wait(), Ok(None))
                && matches!(k.conntrackd.try_wait(), Ok(None));
            if alive && k.pair == *pair {
                return Ok(());
            }
            keepers.remove(&vpc.id);
        }
        clear_leftovers(&ns);
        self.ha_link(&ns, vpc, me, pair)?;
        let dir = dir_of(&ns);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(HA_DIR, std::fs::Permissions::from_mode(0o700))?;
        let (mine, peer) = addresses(pair.index);
        let notify = dir.join("notify.sh");
        write_script(&notify, &notify_script(&dir))?;
        std::fs::write(
            dir.join("keepalived.conf"),
            keepalived_conf(&ns, pair.index, mine, peer, &notify),
        )?;
        std::fs::write(
            dir.join("conntrackd.conf"),
            conntrackd_conf(&dir, mine, peer),
        )?;
        // Until keepalived says otherwise, this router forwards nothing.
        std::fs::write(dir.join("state"), "starting\n")?;
        set_bridges(&ns, false)?;
        let conntrackd = spawn_in(
            &ns,
            &[
                "conntrackd",
                "-C",
                &dir.join("conntrackd.conf").display().to_string(),
            ],
            &dir.join("conntrackd.log"),
        )?;
        let keepalived = spawn_in(
            &ns,
            &[
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--vrrp",
                "-f",
                &dir.join("keepalived.conf").display().to_string(),
                "-p",
                &dir.join("keepalived.pid").display().to_string(),
                "-r",
                &dir.join("vrrp.pid").display().to_string(),
            ],
            &dir.join("keepalived.log"),
        )?;
        std::fs::write(dir.join("conntrackd.pid"), conntrackd.id().to_string())?;
        keepers.insert(
            vpc.id.clone(),
            Keepers {
                pair: pair.clone(),
                keepalived,
                conntrackd,
            },
        );
        Ok(())
    }

    /// The router of `vpc_id` goes: its keepers with it.
    pub(super) fn forget_pair(&self, vpc_id: &str) {
        let removed = self
            .keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vpc_id);
        if removed.is_some() {
            clear_leftovers(&self.vpc_ns(vpc_id));
        }
    }

    /// The HA link of the router in `ns`: a VXLAN port to the peer machine, learning (it
    /// has one peer), with this machine's link address.
    fn ha_link(&self, ns: &str, vpc: &VpcSpec, me: &Machine, pair: &Pair) -> io::Result<()> {
        let peer = pair.peer.to_string();
        super::overlay::add_vxlan(ns, HA_DEV, HA_VNI_BASE + vpc.seq, me, &["remote", &peer])?;
        let (mine, _) = addresses(pair.index);
        ip(
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{mine}/24"),
                "dev",
                HA_DEV,
            ],
            EXISTS,
        )?;
        ip(&["-n", ns, "link", "set", HA_DEV, "up"], &[])
    }
}

/// The HA link addresses: (this machine's, the peer's).
fn addresses(index: u8) -> (Ipv4Addr, Ipv4Addr) {
    let a = |i: u8| Ipv4Addr::new(169, 254, 192, i + 1);
    (a(index), a(1 - index))
}

/// Sets every subnet bridge of the router in `ns` up or down.
fn set_bridges(ns: &str, up: bool) -> io::Result<()> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "type", "bridge"])
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(':').nth(1).map(|n| n.trim().split('@').next()) else {
            continue;
        };
        if let Some(name) = name {
            ip(
                &[
                    "-n",
                    ns,
                    "link",
                    "set",
                    name,
                    if up { "up" } else { "down" },
                ],
                &[],
            )?;
        }
    }
    Ok(())
}

/// Runs `args` inside namespace `ns`, its output to the file `log`.
fn spawn_in(ns: &str, args: &[&str], log: &std::path::Path) -> io::Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| io::Error::other(format!("cannot run {}: {e}", args[0])))
}

fn write_script(path: &std::path::Path, body: &str) -> io::Result<()> {
    std::fs::write(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// What keepalived runs on every change of state (`master`, `backup`, `fault`): the
/// subnet bridges up on master, down otherwise, and the state in `state`. A new master
/// then sends one datagram to every host of its subnets on other machines: their
/// machines learn from its frames that the router's MAC is now behind this machine.
fn notify_script(dir: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n\
         # Written by vpcep: this VPC router's VRRP state changed to $1.\n\
         echo \"$1\" > {dir}/state\n\
         case \"$1\" in master) want=up ;; *) want=down ;; esac\n\
         for b in $(ip -o link show type bridge | cut -d: -f2 | cut -d@ -f1); do\n\
         \x20 ip link set \"$b\" \"$want\"\n\
         done\n\
         if [ \"$1\" = backup ]; then\n\
         \x20 # A standby drops what it holds (a machine that comes back holds sessions as\n\
         \x20 # they were when it died) and takes the master's whole table.\n\
         \x20 conntrack -F >/dev/null 2>&1\n\
         \x20 (for i in 1 2 3 4 5 6 7 8 9 10; do conntrackd -C {dir}/conntrackd.conf -n && break; sleep 0.3; done) >/dev/null 2>&1 &\n\
         fi\n\
         if [ \"$1\" = master ]; then\n\
         \x20 for h in $(ip -o neigh show nud permanent | awk '$3 ~ /^vx-/ {{print $1}}'); do\n\
         \x20   echo vpcep > \"/dev/udp/$h/9\" 2>/dev/null\n\
         \x20 done\n\
         fi\n",
        dir = dir.display()
    )
}

fn keepalived_conf(
    ns: &str,
    index: u8,
    mine: Ipv4Addr,
    peer: Ipv4Addr,
    notify: &std::path::Path,
) -> String {
    let priority = if index == 0 { 200 } else { 100 };
    let notify = notify.display();
    format!(
        "# Written by vpcep: the VRRP instance of this VPC router's pair.\n\
         global_defs {{\n  router_id {ns}\n  vrrp_version 3\n  vrrp_garp_master_delay 0\n  \
         script_user root\n  enable_script_security\n}}\n\
         vrrp_instance router {{\n  state BACKUP\n  nopreempt\n  interface {HA_DEV}\n  \
         virtual_router_id 1\n  priority {priority}\n  advert_int 0.2\n  \
         unicast_src_ip {mine}\n  unicast_peer {{\n    {peer}\n  }}\n  \
         virtual_ipaddress {{\n    169.254.192.254/32 dev {HA_DEV}\n  }}\n  \
         notify_master \"{notify} master\"\n  notify_backup \"{notify} backup\"\n  \
         notify_fault \"{notify} fault\"\n}}\n"
    )
}

fn conntrackd_conf(dir: &std::path::Path, mine: Ipv4Addr, peer: Ipv4Addr) -> String {
    let dir = dir.display();
    format!(
        "# Written by vpcep: session sync of this VPC router's pair.\n\
         Sync {{\n  Mode FTFW {{\n    DisableExternalCache On\n  }}\n  UDP {{\n    \
         IPv4_address {mine}\n    IPv4_Destination_Address {peer}\n    Port 3780\n    \
         Interface {HA_DEV}\n    Checksum on\n  }}\n}}\n\
         General {{\n  HashSize 16384\n  HashLimit 262144\n  LogFile off\n  Syslog off\n  \
         LockFile {dir}/conntrackd.lock\n  UNIX {{\n    Path {dir}/conntrackd.ctl\n  }}\n  \
         NetlinkBufferSize 2097152\n  NetlinkBufferSizeMaxGrowth 8388608\n  \
         Filter From Userspace {{\n    Address Ignore {{\n      IPv4_address 127.0.0.1\n      \
         IPv4_address 169.254.192.0/24\n    }}\n  }}\n}}\n"
    )
}

/// The keepers of every router, by VPC id.
pub(super) type KeepersOf = HashMap<String, Keepers>;

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str, role: MachineRole, zone: &str, last: u8) -> MachineSpec {
        MachineSpec {
            name: name.into(),
            role,
            zone: zone.into(),
            underlay: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    fn names(state: &State) -> Vec<&str> {
        carriers(state).iter().map(|m| m.name.as_str()).collect()
    }

    /// The bridges a previous run left up go down before the node does anything else
    /// (root; skipped without, unless `VPCEP_REQUIRE_NETNS` is set).
    #[test]
    fn a_starting_node_takes_its_routers_bridges_down() {
        let prefix = format!("ha{}", std::process::id() % 100_000);
        let ns = format!("{prefix}-v-router");
        if let Err(e) = ip(&["netns", "add", &ns], EXISTS) {
            assert!(
                std::env::var_os("VPCEP_REQUIRE_NETNS").is_none(),
                "VPCEP_REQUIRE_NETNS is set, but: {e}"
            );
            eprintln!("skipped: {e}");
            return;
        }
        let up = || {
            let out = Command::new("ip")
                .args(["-n", &ns, "-o", "link", "show", "br-test"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(",UP")
        };
        let made = ip(
            &["-n", &ns, "link", "add", "br-test", "type", "bridge"],
            &[],
        )
        .and_then(|()| ip(&["-n", &ns, "link", "set", "br-test", "up"], &[]))
        .and_then(|()| std::fs::create_dir_all(dir_of(&ns)));
        let was_up = made.is_ok() && up();
        all_standby(&prefix);
        let (down, state) = (!up(), std::fs::read_to_string(dir_of(&ns).join("state")));
        let _ = std::fs::remove_dir_all(dir_of(&ns));
        let _ = ip(&["netns", "del", &ns], &[]);
        made.unwrap();
        assert!(was_up && down, "the bridge stayed up");
        assert_eq!(state.unwrap().trim(), "starting");
    }

    #[test]
    fn a_pair_spans_two_zones_where_it_can() {
        let mut state = State::default();
        assert!(names(&state).is_empty());
        state.machines = vec![
            machine("c1", MachineRole::Compute, "az2", 1),
            machine("g1", MachineRole::Gateway, "az1", 11),
        ];
        assert_eq!(names(&state), ["g1"]);
        state
            .machines
            .push(machine("g2", MachineRole::Gateway, "az1", 12));
        assert_eq!(names(&state), ["g1", "g2"]);
        state
            .machines
            .push(machine("g3", MachineRole::Gateway, "az2", 13));
        assert_eq!(names(&state), ["g1", "g3"], "the second in another zone");
        let me = |name: &str, last: u8| Machine {
            name: name.into(),
            role: MachineRole::Gateway,
            underlay: Ipv4Addr::new(10, 0, 0, last),
        };
        assert_eq!(
            pair(&state, &me("g3", 13)),
            Some(Pair {
                index: 1,
                peer: Ipv4Addr::new(10, 0, 0, 11)
            })
        );
        assert_eq!(pair(&state, &me("g2", 12)), None, "not one of the pair");
    }
}
