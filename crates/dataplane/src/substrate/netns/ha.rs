//! Gateway machines in pairs, as OpenStack Neutron's L3 HA routers: every VPC router
//! exists on the two gateway machines that hold a slot of the pair (the control plane
//! gives them out: `machines.slot`); keepalived (VRRPv3, unicast, adverts every 100 ms)
//! in each router's namespace decides which one forwards, within what the machine's
//! gate allows (`gate`: only the routers of the machine that is master may be), and
//! conntrackd keeps the other's connection-tracking table in step, so that established
//! kernel-path sessions survive a failover.
//!
//! - The two routers of a VPC talk over an HA link of their own: a VXLAN port `ha0` in
//!   the router's namespace (VNI `HA_VNI_BASE` + the VPC's number) whose one destination
//!   is the peer machine; 169.254.192.1 on slot 0 and .2 on slot 1.
//! - The standby's subnet bridges are down, so it takes no frame; keepalived's notify
//!   script (written here) sets them up or down on every change of state, and records it
//!   in `state` (`master` or `standby`). Compute machines flood what is for a router to
//!   both machines of the pair and learn its MAC from the master, which announces itself
//!   to their hosts.
//! - Both start as BACKUP with `nopreempt`; a machine that comes back stays standby.
//! - Other gateway machines are spares: their routers stand ready with their bridges
//!   down. When a machine of the pair is declared down, its slot passes to a spare, whose
//!   routers start their keepers and join as standby (taking the master's table), while
//!   the survivor only turns its HA links to the new peer.
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
use super::{ip, Netns, EXISTS, GONE};

/// The HA links' VNIs start here; subnets' VNIs stay below.
pub const HA_VNI_BASE: u32 = 1 << 23;
/// The HA link's device in a router's namespace.
const HA_DEV: &str = "ha0";
/// Where the routers' HA files are.
pub(super) const HA_DIR: &str = "/run/vpcep-ha";

/// The pair of gateway machines this machine belongs to, as seen from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Its slot: 0 (priority 200) or 1 (100).
    pub index: u8,
    pub peer: Ipv4Addr,
}

/// What a gateway machine is to the routers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The only gateway machine with a slot: its routers forward, without keepers.
    Alone,
    /// One of the two that carry the routers.
    Pair(Pair),
    /// Not carrying them (yet): its routers stand ready with their bridges down, so
    /// that taking a slot only starts their keepers.
    Spare,
}

/// The gateway machines that carry the routers, by slot: the control plane gives two of
/// them a slot each (the first by name and the first in another zone, at first) and
/// passes the slot of one that is declared down to a spare.
pub fn carriers(state: &State) -> Vec<&MachineSpec> {
    let mut carriers: Vec<&MachineSpec> = state
        .machines
        .iter()
        .filter(|m| m.role == MachineRole::Gateway && m.slot.is_some())
        .collect();
    carriers.sort_by_key(|m| m.slot);
    carriers
}

/// What gateway machine `me` is to the routers.
pub fn place(state: &State, me: &Machine) -> Place {
    let carriers = carriers(state);
    let Some(mine) = carriers.iter().find(|m| m.name == me.name) else {
        return Place::Spare;
    };
    match carriers.iter().find(|m| m.name != me.name) {
        None => Place::Alone,
        Some(peer) => Place::Pair(Pair {
            index: mine.slot.unwrap_or_default().min(1),
            peer: peer.underlay,
        }),
    }
}

/// The running keepalived and conntrackd of one router.
pub(super) struct Keepers {
    pair: Pair,
    /// The VPC's number (its HA link's VNI).
    seq: u32,
    keepalived: Child,
    conntrackd: Child,
}

impl Keepers {
    /// Whether both still run.
    fn alive(&mut self) -> bool {
        matches!(self.keepalived.try_wait(), Ok(None))
            && matches!(self.conntrackd.try_wait(), Ok(None))
    }
}

impl Drop for Keepers {
    fn drop(&mut self) {
        for c in [&mut self.keepalived, &mut self.conntrackd] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) fn dir_of(ns: &str) -> PathBuf {
    PathBuf::from(HA_DIR).join(ns)
}

/// The state of a spare machine's routers.
const SPARE: &str = "spare";

/// The HA state of the router in `ns` (`master`, `standby`, `starting`, `spare`), if it
/// is one of a pair or a spare.
fn read_state(ns: &str) -> Option<String> {
    std::fs::read_to_string(dir_of(ns).join("state"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether the router in `ns` is standby or spare (its HA state says so): its bridges
/// stay down.
pub(super) fn standby(ns: &str) -> bool {
    read_state(ns).is_some_and(|s| s != "master")
}

/// Makes every router of namespace prefix `prefix` standby, its bridges down, until its
/// keepalived decides (a node starting: the routers its previous run left may still
/// have their bridges up, and one frame from them would teach the compute machines to
/// send the routers' traffic here).
pub(super) fn all_standby(prefix: &str) {
    if dir_of(&super::gate::gate_ns(prefix)).exists() {
        let _ = super::gate::close_gate(prefix);
    }
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
    kill_leftovers(ns);
    let _ = std::fs::remove_dir_all(dir_of(ns));
}

/// Kills what a previous run left for `ns`, by pid file, and removes the pid files. A
/// pid is killed only if its command line still names the files of `ns`: pids are
/// reused.
pub(super) fn kill_leftovers(ns: &str) {
    let dir = dir_of(ns);
    let mine = format!("{}/", dir.display());
    for pidfile in ["keepalived.pid", "vrrp.pid", "conntrackd.pid"] {
        let Some(pid) = std::fs::read_to_string(dir.join(pidfile))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&mine));
        if ours {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // Gone with it: keepalived refuses to start while its pid file names a live
        // process, and a dead one's pid may be another's by now.
        let _ = std::fs::remove_file(dir.join(pidfile));
    }
}

impl Netns {
    /// Makes the router of `vpc` what `place` says: one of a pair (HA link, keepalived,
    /// conntrackd), alone, or a spare. Restarts a keeper that died; when only the peer
    /// changed (the other slot passed to a spare), turns the HA link to the new peer and
    /// keeps the keepers running: a restart would hand over a router that forwards.
    pub(super) fn ensure_pair(&self, vpc: &VpcSpec, place: &Place) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let ns = self.vpc_ns(&vpc.id);
        let mut keepers = self.keepers.lock().unwrap_or_else(|p| p.into_inner());
        let pair = match place {
            Place::Alone => {
                // Alone (again): it forwards, whatever a pair left.
                if keepers.remove(&vpc.id).is_some() || dir_of(&ns).exists() {
                    clear_leftovers(&ns);
                    set_bridges(&ns, true)?;
                }
                return Ok(());
            }
            Place::Spare => {
                if keepers.remove(&vpc.id).is_none() && read_state(&ns).as_deref() == Some(SPARE) {
                    return Ok(());
                }
                clear_leftovers(&ns);
                std::fs::create_dir_all(dir_of(&ns))?;
                std::fs::write(dir_of(&ns).join("state"), format!("{SPARE}\n"))?;
                return set_bridges(&ns, false);
            }
            Place::Pair(pair) => pair,
        };
        if let Some(k) = keepers.get_mut(&vpc.id) {
            let alive = k.alive();
            if alive && k.pair == *pair {
                return Ok(());
            }
            if alive && k.pair.index == pair.index {
                retarget(&ns, HA_DEV, pair.peer)?;
                tracing::info!(netns = %ns, peer = %pair.peer, "router's HA link turned to a new peer");
                k.pair = pair.clone();
                return Ok(());
            }
            keepers.remove(&vpc.id);
        }
        let started = self.start_keepers(&vpc.id, vpc.seq, me, pair)?;
        keepers.insert(vpc.id.clone(), started);
        Ok(())
    }

    /// Starts the keepers of the router of VPC `vpc_id` (number `seq`) as one of `pair`,
    /// in place of whatever ran before: its bridges down until keepalived decides.
    fn start_keepers(
        &self,
        vpc_id: &str,
        seq: u32,
        me: &Machine,
        pair: &Pair,
    ) -> io::Result<Keepers> {
        let ns = self.vpc_ns(vpc_id);
        clear_leftovers(&ns);
        make_link(&ns, HA_DEV, HA_VNI_BASE + seq, me, pair)?;
        let dir = dir_of(&ns);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(HA_DIR, std::fs::Permissions::from_mode(0o700))?;
        let (mine, peer) = link_addresses(192, pair.index);
        let notify = dir.join("notify.sh");
        write_script(&notify, &notify_script(&dir))?;
        std::fs::write(
            dir.join("keepalived.conf"),
            keepalived_conf(
                &ns,
                pair.index,
                (mine, peer),
                &notify,
                &super::gate::gate_path(&self.prefix),
            ),
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
        let keepalived = spawn_keepalived(&ns, &dir)?;
        std::fs::write(dir.join("conntrackd.pid"), conntrackd.id().to_string())?;
        Ok(Keepers {
            pair: pair.clone(),
            seq,
            keepalived,
            conntrackd,
        })
    }

    /// Starts again the keepers of every router whose keepalived or conntrackd died. A
    /// router whose keepalived died keeps the bridges it had (no notify ran): if it was
    /// master, the peer is master too by now, and the new keepalived sets them down
    /// before it joins as standby.
    pub(super) fn supervise_keepers(&self) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let mut keepers = self.keepers.lock().unwrap_or_else(|p| p.into_inner());
        let dead: Vec<String> = keepers
            .iter_mut()
            .filter_map(|(id, k)| (!k.alive()).then(|| id.clone()))
            .collect();
        let mut failed = Vec::new();
        for id in dead {
            let Some(k) = keepers.remove(&id) else {
                continue;
            };
            let (seq, pair) = (k.seq, k.pair.clone());
            drop(k);
            tracing::warn!(vpc = %id, "a router's keepalived or conntrackd died; starting them again");
            match self.start_keepers(&id, seq, me, &pair) {
                Ok(k) => {
                    keepers.insert(id, k);
                }
                Err(e) => failed.push(format!("VPC {id}: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(failed.join("; ")))
        }
    }

    /// The router of `vpc_id` goes: its keepers with it.
    pub(super) fn forget_pair(&self, vpc_id: &str) {
        self.keepers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vpc_id);
        clear_leftovers(&self.vpc_ns(vpc_id));
    }
}

/// Makes HA link `dev` in `ns` afresh: a VXLAN port (VNI `vni`) whose one destination is
/// the peer machine, nothing learned, with the address and MAC of this machine's slot and
/// the peer's as a permanent neighbour (169.254.192.0/24 for a router's link, .193 for
/// the machine's). Addresses and MACs follow the slot, so a machine that takes a slot, or
/// comes back to its own, is the same neighbour to the survivor as the one before it.
pub(super) fn make_link(
    ns: &str,
    dev: &str,
    vni: u32,
    me: &Machine,
    pair: &Pair,
) -> io::Result<()> {
    ip(&["-n", ns, "link", "del", dev], GONE)?;
    let peer = pair.peer.to_string();
    super::overlay::add_vxlan(ns, dev, vni, me, &["remote", &peer, "nolearning"])?;
    let third = if dev == HA_DEV { 192 } else { 193 };
    let (mine, theirs) = link_addresses(third, pair.index);
    let (my_mac, their_mac) = (link_mac(pair.index), link_mac(1 - pair.index));
    ip(&["-n", ns, "link", "set", dev, "address", &my_mac], &[])?;
    ip(
        &["-n", ns, "addr", "add", &format!("{mine}/24"), "dev", dev],
        EXISTS,
    )?;
    ip(&["-n", ns, "link", "set", dev, "up"], &[])?;
    ip(
        &[
            "-n",
            ns,
            "neigh",
            "replace",
            &theirs.to_string(),
            "lladdr",
            &their_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
        &[],
    )
}

/// The MAC of slot `index` on an HA link (each link is a segment of its own).
fn link_mac(index: u8) -> String {
    format!("02:76:70:68:00:{:02x}", index + 1)
}

/// Turns the HA link `dev` in `ns` to a new peer machine: its one destination. The peer's
/// address and MAC are its slot's, which did not change.
pub(super) fn retarget(ns: &str, dev: &str, peer: Ipv4Addr) -> io::Result<()> {
    let peer = peer.to_string();
    ip(
        &[
            "-n", ns, "link", "set", dev, "type", "vxlan", "remote", &peer,
        ],
        &[],
    )
}

/// The addresses of an HA link in 169.254.`third`.0/24: (this machine's, the peer's).
pub(super) fn link_addresses(third: u8, index: u8) -> (Ipv4Addr, Ipv4Addr) {
    let a = |i: u8| Ipv4Addr::new(169, 254, third, i + 1);
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
pub(super) fn spawn_in(ns: &str, args: &[&str], log: &std::path::Path) -> io::Result<Child> {
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

/// Starts keepalived (VRRP only) in namespace `ns` on `dir/keepalived.conf`, its pid
/// files and log in `dir`.
pub(super) fn spawn_keepalived(ns: &str, dir: &std::path::Path) -> io::Result<Child> {
    spawn_in(
        ns,
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
    )
}

pub(super) fn write_script(path: &std::path::Path, body: &str) -> io::Result<()> {
    std::fs::write(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// What keepalived runs on every change of state (`master`, `backup`, `fault`): the
/// subnet bridges up on master, down otherwise, and the state in `state` (`master`, or
/// `standby` for both others).
/// - A new master sends a datagram to every host of its subnets on other machines, three
///   times over two seconds (their machines learn from its frames that the router's MAC
///   is now behind this machine), and sends its whole table to the standby: the
///   sessions it was sent as standby are in its table but not in conntrackd's own
///   cache, so it takes them from the table first (as conntrack-tools'
///   `primary-backup.sh` does).
/// - A router that becomes standby from `starting` (a machine that comes back holds
///   sessions as they were when it died) or from `master` drops its table and asks the
///   master for the whole one; from one standby state to the other (its machine's gate
///   opening: FAULT to BACKUP) it keeps what it was sent.
fn notify_script(dir: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n\
         # Written by vpcep: this VPC router's VRRP state changed to $1.\n\
         prev=$(cat {dir}/state 2>/dev/null)\n\
         case \"$1\" in master) now=master want=up ;; *) now=standby want=down ;; esac\n\
         echo \"$now\" > {dir}/state\n\
         for b in $(ip -o link show type bridge | cut -d: -f2 | cut -d@ -f1); do\n\
         \x20 ip link set \"$b\" \"$want\"\n\
         done\n\
         if [ \"$now\" = standby ] && [ \"$prev\" != standby ]; then\n\
         \x20 conntrack -F >/dev/null 2>&1\n\
         \x20 (for i in 1 2 3 4 5 6 7 8 9 10; do conntrackd -C {dir}/conntrackd.conf -n && break; sleep 0.3; done) >/dev/null 2>&1 &\n\
         fi\n\
         if [ \"$now\" = master ]; then\n\
         \x20 hosts=$(ip -o neigh show nud permanent | awk '$3 ~ /^vx-/ {{print $1}}')\n\
         \x20 (for pause in 0 0.5 1.5; do sleep $pause; [ \"$(cat {dir}/state)\" = master ] || exit 0; \
         for h in $hosts; do echo vpcep > \"/dev/udp/$h/9\"; done; done) >/dev/null 2>&1 &\n\
         \x20 (conntrackd -C {dir}/conntrackd.conf -f; conntrackd -C {dir}/conntrackd.conf -R; conntrackd -C {dir}/conntrackd.conf -B) >/dev/null 2>&1 &\n\
         fi\n",
        dir = dir.display()
    )
}

/// The VRRP instance of a router of the pair: it stands down (FAULT) while the
/// machine's gate (`gate`) is closed. Its adverts every 100 ms only matter once the gate
/// opens (a machine taking over waits three of them), so they are quicker than the
/// machine's own.
fn keepalived_conf(
    ns: &str,
    index: u8,
    (mine, peer): (Ipv4Addr, Ipv4Addr),
    notify: &std::path::Path,
    gate: &std::path::Path,
) -> String {
    let priority = if index == 0 { 200 } else { 100 };
    let (notify, gate) = (notify.display(), gate.display());
    format!(
        "# Written by vpcep: the VRRP instance of this VPC router's pair.\n\
         global_defs {{\n  router_id {ns}\n  vrrp_version 3\n  vrrp_garp_master_delay 0\n  \
         vrrp_startup_delay 1\n  \
         script_user root\n  enable_script_security\n}}\n\
         vrrp_track_file gate {{\n  file \"{gate}\"\n  weight 0\n}}\n\
         vrrp_instance router {{\n  state BACKUP\n  nopreempt\n  interface {HA_DEV}\n  \
         virtual_router_id 1\n  priority {priority}\n  advert_int 0.1\n  \
         unicast_src_ip {mine}\n  unicast_peer {{\n    {peer}\n  }}\n  \
         virtual_ipaddress {{\n    169.254.192.254/32 dev {HA_DEV}\n  }}\n  \
         track_file {{\n    gate\n  }}\n  \
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
pub(super) mod tests {
    use super::*;

    /// A machine at 10.0.0.`last`, in slot `slot` of the pair.
    pub(in crate::substrate::netns) fn machine(
        name: &str,
        role: MachineRole,
        slot: Option<u8>,
        last: u8,
    ) -> MachineSpec {
        MachineSpec {
            name: name.into(),
            role,
            zone: String::new(),
            underlay: Ipv4Addr::new(10, 0, 0, last),
            slot,
            down: false,
        }
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
    fn a_gateway_machine_is_alone_one_of_the_pair_or_a_spare_by_its_slot() {
        let me = |name: &str, last: u8| Machine {
            name: name.into(),
            role: MachineRole::Gateway,
            underlay: Ipv4Addr::new(10, 0, 0, last),
        };
        let mut state = State::default();
        assert_eq!(
            place(&state, &me("g1", 11)),
            Place::Spare,
            "no slot given yet"
        );
        state.machines = vec![
            machine("c1", MachineRole::Compute, None, 1),
            machine("g1", MachineRole::Gateway, Some(0), 11),
            machine("g2", MachineRole::Gateway, None, 12),
        ];
        assert_eq!(place(&state, &me("g1", 11)), Place::Alone);
        assert_eq!(place(&state, &me("g2", 12)), Place::Spare);
        // g1 is declared down and g2, then g3, take its slot: slot 1 keeps its place.
        state.machines[1].slot = Some(1);
        state.machines[2].slot = Some(0);
        state
            .machines
            .push(machine("g3", MachineRole::Gateway, None, 13));
        let names: Vec<&str> = carriers(&state).iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["g2", "g1"], "by slot");
        assert_eq!(
            place(&state, &me("g1", 11)),
            Place::Pair(Pair {
                index: 1,
                peer: Ipv4Addr::new(10, 0, 0, 12)
            })
        );
        assert_eq!(place(&state, &me("g3", 13)), Place::Spare);
    }
}
