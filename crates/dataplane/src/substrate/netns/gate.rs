//! The machine's gate: one VRRP instance per gateway machine of the pair decides which
//! machine's routers may be master, and the routers' own instances (one per router
//! namespace, `ha`) track its gate file and stand down (FAULT) while it is closed.
//!
//! Routers are not independent here, as they are in OpenStack Neutron: an endpoint joins
//! the consumer's router and the provider's on one machine (a link between the two), so
//! both must be master on the same machine. Instances that each elect on their own can
//! split them: two routers started a moment apart on each machine, or one router's
//! keepalived dying, leave the consumer's router master on one machine and the
//! provider's on the other, and the endpoint dead. The gate makes the machine the unit
//! of failover, while each router keeps its own instance, HA link and conntrackd.
//!
//! The machine's instance runs in a namespace of its own, `{prefix}-ha`, over a VXLAN
//! port `hm0` to the peer machine (VNI 2^24 - 1; 169.254.193.1 on slot 0, .2 on slot 1):
//! a new peer changes only the port's destination, never the configuration. Its notify
//! script writes the gate file: `0` (open) on master, `1` (closed) otherwise, by rename,
//! which keepalived's routers see at once (inotify).

use std::io;
use std::path::PathBuf;
use std::process::Child;

use super::ha::{
    dir_of, kill_leftovers, link_addresses, make_link, retarget, spawn_keepalived, write_script,
    Pair, Place,
};
use super::overlay::Machine;
use super::{ip, Netns, GONE};

/// The VNI of the machines' own HA link (the routers' are below).
pub const GATE_VNI: u32 = (1 << 24) - 1;
/// The machines' HA link in the gate's namespace.
const GATE_DEV: &str = "hm0";

/// The gate's namespace (and its directory in `/run/vpcep-ha`).
pub(super) fn gate_ns(prefix: &str) -> String {
    format!("{prefix}-ha")
}

/// The file the routers' instances track: `0` open, anything else closed.
pub(super) fn gate_path(prefix: &str) -> PathBuf {
    dir_of(&gate_ns(prefix)).join("gate")
}

/// Closes the gate: every router of this machine stands down.
pub(super) fn close_gate(prefix: &str) -> io::Result<()> {
    let path = gate_path(prefix);
    std::fs::create_dir_all(path.parent().expect("in a directory"))?;
    let new = path.with_extension("new");
    std::fs::write(&new, "1\n")?;
    std::fs::rename(&new, &path)
}

/// The machine's running instance.
pub(super) struct Gate {
    pair: Pair,
    keepalived: Child,
}

impl Gate {
    fn alive(&mut self) -> bool {
        matches!(self.keepalived.try_wait(), Ok(None))
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.keepalived.kill();
        let _ = self.keepalived.wait();
    }
}

impl Netns {
    /// Makes this machine's gate what `place` says: an instance with the peer when it is
    /// one of a pair (turned to a new peer in place when the other slot moved), none
    /// otherwise.
    pub(super) fn ensure_gate(&self, place: &Place) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let ns = gate_ns(&self.prefix);
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let Place::Pair(pair) = place else {
            if gate.take().is_some() || dir_of(&ns).exists() {
                kill_leftovers(&ns);
                let _ = std::fs::remove_dir_all(dir_of(&ns));
                ip(&["netns", "del", &ns], GONE)?;
            }
            return Ok(());
        };
        if let Some(g) = gate.as_mut() {
            if g.alive() && g.pair == *pair {
                return Ok(());
            }
            if g.alive() && g.pair.index == pair.index {
                retarget(&ns, GATE_DEV, pair.peer)?;
                tracing::info!(peer = %pair.peer, "the machine's HA link turned to a new peer");
                g.pair = pair.clone();
                return Ok(());
            }
        }
        *gate = None;
        *gate = Some(self.start_gate(me, pair)?);
        Ok(())
    }

    /// Starts the machine's instance as one of `pair`, the gate closed until it is
    /// master. It waits a second before it speaks (two for slot 1, so that slot 0 leads
    /// when both start together): a machine that takes the slot of one that died must
    /// hear the survivor, which turns its link to it at the same revision.
    fn start_gate(&self, me: &Machine, pair: &Pair) -> io::Result<Gate> {
        let ns = gate_ns(&self.prefix);
        kill_leftovers(&ns);
        close_gate(&self.prefix)?;
        Self::add_ns(&ns)?;
        make_link(&ns, GATE_DEV, GATE_VNI, me, pair)?;
        let (mine, peer) = link_addresses(193, pair.index);
        let dir = dir_of(&ns);
        let notify = dir.join("notify.sh");
        write_script(&notify, &notify_script(&dir))?;
        let priority = if pair.index == 0 { 200 } else { 100 };
        let delay = 1 + u32::from(pair.index);
        std::fs::write(
            dir.join("keepalived.conf"),
            format!(
                "# Written by vpcep: the VRRP instance of this gateway machine, whose\n\
                 # state opens or closes its routers' gate.\n\
                 global_defs {{\n  router_id {ns}\n  vrrp_version 3\n  \
                 vrrp_garp_master_delay 0\n  vrrp_startup_delay {delay}\n  \
                 script_user root\n  enable_script_security\n}}\n\
                 vrrp_instance machine {{\n  state BACKUP\n  nopreempt\n  interface {GATE_DEV}\n  \
                 virtual_router_id 1\n  priority {priority}\n  advert_int 0.2\n  \
                 unicast_src_ip {mine}\n  unicast_peer {{\n    {peer}\n  }}\n  \
                 virtual_ipaddress {{\n    169.254.193.254/32 dev {GATE_DEV}\n  }}\n  \
                 notify_master \"{n} master\"\n  notify_backup \"{n} backup\"\n  \
                 notify_fault \"{n} fault\"\n  notify_stop \"{n} stop\"\n}}\n",
                n = notify.display()
            ),
        )?;
        std::fs::write(dir.join("state"), "starting\n")?;
        let keepalived = spawn_keepalived(&ns, &dir)?;
        Ok(Gate {
            pair: pair.clone(),
            keepalived,
        })
    }

    /// Starts the machine's instance again if it died, its gate closed first: without
    /// it, nothing would close the gate when the peer takes over.
    pub(super) fn supervise_gate(&self) -> io::Result<()> {
        let Some(me) = &self.machine else {
            return Ok(());
        };
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let Some(g) = gate.as_mut() else {
            return Ok(());
        };
        if g.alive() {
            return Ok(());
        }
        close_gate(&self.prefix)?;
        let pair = g.pair.clone();
        *gate = None;
        tracing::warn!(
            "the machine's keepalived died; its routers stand down, and it starts again"
        );
        *gate = Some(self.start_gate(me, &pair)?);
        Ok(())
    }
}

/// What the machine's keepalived runs on every change of state: the state in `state`,
/// the gate open on master and closed otherwise (by rename: keepalived reads it whole).
fn notify_script(dir: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n\
         # Written by vpcep: this gateway machine's VRRP state changed to $1.\n\
         echo \"$1\" > {dir}/state\n\
         case \"$1\" in master) v=0 ;; *) v=1 ;; esac\n\
         echo $v > {dir}/gate.new && mv {dir}/gate.new {dir}/gate\n",
        dir = dir.display()
    )
}
