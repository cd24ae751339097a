//! The machines of a deployment across machines: what each says it is (with every
//! report of its node), whether the control plane holds it down, and which two gateway
//! machines carry the routers (their `slot`). A change of any of these is desired
//! state: it advances the revision and every node receives the whole list again.
//!
//! The pair is kept, not recomputed: a slot passes to a spare gateway machine only when
//! its machine is declared down, and the other slot stays where it is, so that the
//! survivor of a pair keeps its routers' keepalived and conntrackd running (it only
//! turns its HA links to the new peer).

use std::net::Ipv4Addr;

use sqlx::Row;
use vpcep_model::{MachineRole, Rejection};

use super::{now_micros, SqlStore};
use crate::{Machine, MachinesTended, Result};

/// The slots of the gateway pair.
const SLOTS: [i64; 2] = [0, 1];

/// A machine as the controller weighs it.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    name: String,
    gateway: bool,
    zone: String,
    seen_at: i64,
    down: bool,
    slot: Option<i64>,
}

/// Declares down the machines silent for longer than `down_after` micros (unless
/// `declare` is false: the controller has not led long enough to have heard them), and
/// gives every slot that is vacant, or whose machine is down, to a spare gateway
/// machine that is up: preferably in another zone than the other slot's machine, then
/// the first by name. A slot whose machine is down stays with it while there is no
/// spare (the machine may come back, and then rejoins as standby).
fn plan(held: &mut [Held], now: i64, down_after: i64, declare: bool) -> MachinesTended {
    let mut t = MachinesTended::default();
    for m in held.iter_mut().filter(|m| declare && !m.down) {
        if now - m.seen_at > down_after {
            m.down = true;
            t.down.push(m.name.clone());
        }
    }
    for slot in SLOTS {
        let holder = held.iter().position(|m| m.slot == Some(slot));
        if holder.is_some_and(|i| !held[i].down) {
            continue;
        }
        let other_zone = held
            .iter()
            .find(|m| m.slot == Some(1 - slot))
            .map(|m| m.zone.clone());
        let spare = held
            .iter()
            .enumerate()
            .filter(|(_, m)| m.gateway && !m.down && m.slot.is_none())
            .min_by_key(|(_, m)| (other_zone.as_ref() == Some(&m.zone), m.name.clone()))
            .map(|(i, _)| i);
        let Some(spare) = spare else {
            continue;
        };
        if let Some(h) = holder {
            held[h].slot = None;
            t.slots.push((held[h].name.clone(), None));
        }
        held[spare].slot = Some(slot);
        t.slots.push((held[spare].name.clone(), Some(slot)));
    }
    t
}

/// The revision the writing transaction commits as: what a changed row's `rev` is.
const NEXT_REV: &str = "(SELECT v + 1 FROM meta WHERE k = 'revision')";

impl SqlStore {
    /// Machine `name` says what it is. A new machine, one whose role, zone or underlay
    /// changed, or one that was declared down, is a change of the desired state (every
    /// node learns where its peers are); otherwise only when it was seen is written. A
    /// machine may not change its role while hosts are placed on it; one that stops
    /// being a gateway machine loses its slot.
    pub(crate) async fn register_machine(
        &self,
        name: String,
        role: MachineRole,
        zone: String,
        underlay: Ipv4Addr,
    ) -> Result<()> {
        let now = now_micros();
        let held: Option<(String, String, String, i64)> =
            sqlx::query_as("SELECT role, zone, underlay, down FROM machines WHERE name = $1")
                .bind(&name)
                .fetch_optional(&self.pool)
                .await?;
        let same = held.as_ref().is_some_and(|(r, z, u, down)| {
            r == role.as_str() && *z == zone && *u == underlay.to_string() && *down == 0
        });
        if same {
            sqlx::query("UPDATE machines SET seen_at = $1 WHERE name = $2")
                .bind(now)
                .bind(&name)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let mut tx = self.begin().await?;
        if role != MachineRole::Compute {
            let hosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ports WHERE machine = $1")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
            if hosts > 0 {
                return Err(Rejection::bad(format!(
                    "machine {name} holds {hosts} hosts: it stays a compute machine until they are deleted"
                ))
                .into());
            }
        }
        sqlx::query(&format!(
            "INSERT INTO machines (name, role, zone, underlay, registered_at, seen_at, rev) \
             VALUES ($1, $2, $3, $4, $5, $5, {NEXT_REV}) \
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, zone = excluded.zone, \
             underlay = excluded.underlay, seen_at = excluded.seen_at, rev = excluded.rev, down = 0, \
             slot = CASE WHEN excluded.role = 'gateway' THEN machines.slot END"
        ))
        .bind(&name)
        .bind(role.as_str())
        .bind(&zone)
        .bind(underlay.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    /// The controller's care of the machines (see [`plan`]): machines silent for longer
    /// than `down_after_secs` are declared down (when `declare`), and the pair's slots
    /// move to spares as needed. One write transaction, and only when something changes.
    pub(crate) async fn tend_machines(
        &self,
        down_after_secs: u64,
        declare: bool,
    ) -> Result<MachinesTended> {
        let down_after = down_after_secs as i64 * 1_000_000;
        const READ: &str =
            "SELECT name, role, zone, seen_at, down, slot FROM machines ORDER BY name";
        let read = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<Held>> {
            rows.iter()
                .map(|r| {
                    Ok(Held {
                        name: r.try_get("name")?,
                        gateway: r.try_get::<String, _>("role")? == MachineRole::Gateway.as_str(),
                        zone: r.try_get("zone")?,
                        seen_at: r.try_get("seen_at")?,
                        down: r.try_get::<i64, _>("down")? != 0,
                        slot: r.try_get("slot")?,
                    })
                })
                .collect()
        };
        // Most passes change nothing: a read says so without the write lock.
        let mut held = read(sqlx::query(READ).fetch_all(&self.pool).await?)?;
        if plan(&mut held, now_micros(), down_after, declare) == MachinesTended::default() {
            return Ok(MachinesTended::default());
        }
        let mut tx = self.begin().await?;
        let mut held = read(sqlx::query(READ).fetch_all(&mut *tx).await?)?;
        let t = plan(&mut held, now_micros(), down_after, declare);
        for name in &t.down {
            sqlx::query(&format!(
                "UPDATE machines SET down = 1, rev = {NEXT_REV} WHERE name = $1"
            ))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        // In order: a slot is taken from its machine before another is given it.
        for (name, slot) in &t.slots {
            sqlx::query(&format!(
                "UPDATE machines SET slot = $1, rev = {NEXT_REV} WHERE name = $2"
            ))
            .bind(*slot)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(t)
    }

    /// Every registered machine, by name, with its hosts.
    pub(crate) async fn machines(&self) -> Result<Vec<Machine>> {
        let rows = sqlx::query(
            "SELECT m.name, m.role, m.zone, m.underlay, m.registered_at, m.seen_at, m.down, m.slot, \
             (SELECT COUNT(*) FROM ports p WHERE p.machine = m.name) AS hosts \
             FROM machines m ORDER BY m.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = now_micros();
        rows.iter()
            .map(|r| {
                let seen_at: i64 = r.try_get("seen_at")?;
                Ok(Machine {
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    zone: r.try_get("zone")?,
                    underlay: r.try_get("underlay")?,
                    registered_at: r.try_get("registered_at")?,
                    seen_at,
                    seen_secs_ago: (now - seen_at).max(0) as f64 / 1e6,
                    down: r.try_get::<i64, _>("down")? != 0,
                    slot: r.try_get("slot")?,
                    hosts: r.try_get("hosts")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, gateway: bool, zone: &str, seen_at: i64, slot: Option<i64>) -> Held {
        Held {
            name: name.into(),
            gateway,
            zone: zone.into(),
            seen_at,
            down: false,
            slot,
        }
    }

    fn slots(held: &[Held]) -> Vec<(&str, i64)> {
        let mut s: Vec<_> = held
            .iter()
            .filter_map(|m| m.slot.map(|s| (m.name.as_str(), s)))
            .collect();
        s.sort_by_key(|(_, s)| *s);
        s
    }

    #[test]
    fn the_pair_is_chosen_across_zones_and_kept() {
        let mut held = vec![
            m("c1", false, "az2", 100, None),
            m("g1", true, "az1", 100, None),
            m("g2", true, "az1", 100, None),
            m("g3", true, "az2", 100, None),
        ];
        let t = plan(&mut held, 100, 10, true);
        assert_eq!(
            slots(&held),
            [("g1", 0), ("g3", 1)],
            "the second in another zone"
        );
        assert!(t.down.is_empty());
        assert_eq!(
            plan(&mut held, 105, 10, true),
            MachinesTended::default(),
            "kept"
        );
        // A new machine in another zone changes nothing: a live pair is not moved.
        held.push(m("g0", true, "az3", 105, None));
        assert_eq!(plan(&mut held, 105, 10, true), MachinesTended::default());
    }

    #[test]
    fn a_slot_whose_machine_is_down_passes_to_a_spare_and_the_other_stays() {
        let mut held = vec![
            m("g1", true, "az1", 100, Some(0)),
            m("g2", true, "az2", 200, Some(1)),
            m("g3", true, "az1", 200, None),
            m("c1", false, "", 90, None),
        ];
        // Not leading long enough to have heard everyone: nobody is declared down.
        assert_eq!(
            plan(&mut held.clone(), 200, 50, false),
            MachinesTended::default()
        );
        let t = plan(&mut held, 200, 50, true);
        assert_eq!(t.down, ["g1", "c1"]);
        assert_eq!(
            t.slots,
            [("g1".to_owned(), None), ("g3".to_owned(), Some(0))]
        );
        assert_eq!(slots(&held), [("g3", 0), ("g2", 1)]);
        // g1 reports again (registering clears `down`): it is a spare now.
        held[0].down = false;
        for m in &mut held[..3] {
            m.seen_at = 300;
        }
        assert_eq!(plan(&mut held, 300, 50, true).slots, []);
        // Without a spare, a down machine keeps its slot.
        let mut two = vec![
            m("g1", true, "", 0, Some(0)),
            m("g2", true, "", 100, Some(1)),
        ];
        let t = plan(&mut two, 100, 50, true);
        assert_eq!(
            (t.down.as_slice(), t.slots.as_slice()),
            (&["g1".to_owned()][..], &[][..])
        );
        assert_eq!(slots(&two), [("g1", 0), ("g2", 1)]);
    }
}
