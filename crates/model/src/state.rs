//! The desired state as a node holds it — indexed by id — and the changes that move it
//! from one revision to a later one. A [`SnapshotDelta`] carries only what changed since
//! a revision, so following the store costs what changed; a whole [`Snapshot`] is turned
//! into the delta that reaches it (at start, or when a node fell too far behind).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Change, CloudName, EndpointSpec, HostSpec, IdcSpec, MachineSpec, Snapshot, VpcSpec};

/// What changed between two revisions: what is new or changed (whole, as it is now) and
/// the ids of what went. An entry may be unchanged after all (a service's description
/// changed, not its endpoints' specs); applying it is then nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SnapshotDelta {
    /// The changes are those after revision `from`, up to and including `revision`.
    pub from: u64,
    pub revision: u64,
    #[serde(default)]
    pub vpcs: Vec<VpcSpec>,
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub idcs: Vec<IdcSpec>,
    #[serde(default)]
    pub vpcs_gone: Vec<String>,
    #[serde(default)]
    pub hosts_gone: Vec<String>,
    #[serde(default)]
    pub endpoints_gone: Vec<String>,
    #[serde(default)]
    pub idcs_gone: Vec<String>,
    /// The cloud's names, when they changed.
    #[serde(default)]
    pub cloud_names: Option<Vec<CloudName>>,
    /// The machines, when they changed.
    #[serde(default)]
    pub machines: Option<Vec<MachineSpec>>,
}

impl SnapshotDelta {
    /// Whether it changes nothing at all (the revision may still move).
    pub fn is_empty(&self) -> bool {
        self.vpcs.is_empty()
            && self.hosts.is_empty()
            && self.endpoints.is_empty()
            && self.idcs.is_empty()
            && self.vpcs_gone.is_empty()
            && self.hosts_gone.is_empty()
            && self.endpoints_gone.is_empty()
            && self.idcs_gone.is_empty()
            && self.cloud_names.is_none()
            && self.machines.is_none()
    }
}

/// A snapshot indexed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub revision: u64,
    pub vpcs: BTreeMap<String, VpcSpec>,
    pub hosts: BTreeMap<String, HostSpec>,
    pub endpoints: BTreeMap<String, EndpointSpec>,
    pub idcs: BTreeMap<String, IdcSpec>,
    pub cloud_names: Vec<CloudName>,
    pub machines: Vec<MachineSpec>,
}

fn gone<'a, T>(held: &BTreeMap<String, T>, next: impl Iterator<Item = &'a str>) -> Vec<String> {
    let keep: BTreeSet<&str> = next.collect();
    held.keys()
        .filter(|k| !keep.contains(k.as_str()))
        .cloned()
        .collect()
}

/// How an item becomes a change (removed, or added).
type ToChange<'a, T> = fn(&'a T) -> Change<'a>;

/// The changes of one kind of item that is removed and added again when it changes: what
/// goes (the held version of what changed, and what is gone) into `out`, and returns
/// what comes.
fn replaced<'a, T: PartialEq>(
    (held, next, gone): (&'a BTreeMap<String, T>, &'a [T], &'a [String]),
    id: impl Fn(&T) -> &String,
    (remove, add): (ToChange<'a, T>, ToChange<'a, T>),
    out: &mut Vec<Change<'a>>,
) -> Vec<Change<'a>> {
    let mut added = Vec::new();
    for item in next {
        match held.get(id(item)) {
            Some(old) if old == item => {}
            Some(old) => {
                out.push(remove(old));
                added.push(add(item));
            }
            None => added.push(add(item)),
        }
    }
    out.extend(gone.iter().filter_map(|g| held.get(g)).map(remove));
    added
}

impl State {
    /// The delta that makes this state equal to `next`: everything of `next`, and the ids
    /// of what `next` no longer has.
    pub fn delta_to(&self, next: Snapshot) -> SnapshotDelta {
        SnapshotDelta {
            from: self.revision,
            revision: next.revision,
            vpcs_gone: gone(&self.vpcs, next.vpcs.iter().map(|v| v.id.as_str())),
            hosts_gone: gone(&self.hosts, next.hosts.iter().map(|h| h.port_id.as_str())),
            endpoints_gone: gone(
                &self.endpoints,
                next.endpoints.iter().map(|e| e.id.as_str()),
            ),
            idcs_gone: gone(&self.idcs, next.idcs.iter().map(|i| i.id.as_str())),
            cloud_names: (next.cloud_names != self.cloud_names).then_some(next.cloud_names),
            machines: (next.machines != self.machines).then_some(next.machines),
            vpcs: next.vpcs,
            hosts: next.hosts,
            endpoints: next.endpoints,
            idcs: next.idcs,
        }
    }

    /// The changes `delta` makes to this state, ordered so that nothing is removed while
    /// something still needs it and nothing is added before what it needs: endpoints first
    /// out, then hosts, data centres and VPCs; VPCs first in, then hosts, data centres and
    /// endpoints. A changed item is removed and added again, except VPCs (changed in place:
    /// subnets are added) and endpoints whose listeners stay (updated in place). What the
    /// state holds already is no change.
    pub fn changes<'a>(&'a self, delta: &'a SnapshotDelta) -> Vec<Change<'a>> {
        let mut out = Vec::new();
        let endpoint_gone: BTreeSet<&str> =
            delta.endpoints_gone.iter().map(String::as_str).collect();
        for (id, e) in &self.endpoints {
            if endpoint_gone.contains(id.as_str()) {
                out.push(Change::RemoveEndpoint(e));
            }
        }
        let mut endpoints = Vec::new();
        for e in &delta.endpoints {
            match self.endpoints.get(&e.id) {
                Some(old) if old == e => {}
                Some(old) if old.same_listeners(e) => {
                    endpoints.push(Change::UpdateEndpoint { old, new: e })
                }
                Some(old) => {
                    out.push(Change::RemoveEndpoint(old));
                    endpoints.push(Change::AddEndpoint(e));
                }
                None => endpoints.push(Change::AddEndpoint(e)),
            }
        }
        let hosts = replaced(
            (&self.hosts, &delta.hosts, &delta.hosts_gone),
            |h| &h.port_id,
            (Change::RemoveHost, Change::AddHost),
            &mut out,
        );
        let idcs = replaced(
            (&self.idcs, &delta.idcs, &delta.idcs_gone),
            |i| &i.id,
            (Change::RemoveIdc, Change::AddIdc),
            &mut out,
        );
        let mut vpcs = Vec::new();
        out.extend(
            delta
                .vpcs_gone
                .iter()
                .filter_map(|id| self.vpcs.get(id))
                .map(Change::RemoveVpc),
        );
        for v in &delta.vpcs {
            if self.vpcs.get(&v.id) != Some(v) {
                vpcs.push(Change::AddVpc(v));
            }
        }
        out.extend(vpcs);
        out.extend(hosts);
        out.extend(idcs);
        out.extend(endpoints);
        out
    }

    /// Takes `delta` in: afterwards this state is that of `delta.revision`.
    pub fn absorb(&mut self, delta: SnapshotDelta) {
        for id in &delta.endpoints_gone {
            self.endpoints.remove(id);
        }
        for id in &delta.hosts_gone {
            self.hosts.remove(id);
        }
        for id in &delta.idcs_gone {
            self.idcs.remove(id);
        }
        for id in &delta.vpcs_gone {
            self.vpcs.remove(id);
        }
        for v in delta.vpcs {
            self.vpcs.insert(v.id.clone(), v);
        }
        for h in delta.hosts {
            self.hosts.insert(h.port_id.clone(), h);
        }
        for i in delta.idcs {
            self.idcs.insert(i.id.clone(), i);
        }
        for e in delta.endpoints {
            self.endpoints.insert(e.id.clone(), e);
        }
        if let Some(names) = delta.cloud_names {
            self.cloud_names = names;
        }
        if let Some(machines) = delta.machines {
            self.machines = machines;
        }
        self.revision = delta.revision;
    }

    /// The state as a plain snapshot (what gateway nodes are sent).
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            vpcs: self.vpcs.values().cloned().collect(),
            hosts: self.hosts.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
            idcs: self.idcs.values().cloned().collect(),
            cloud_names: self.cloud_names.clone(),
            machines: self.machines.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Protocol, TcpProxy};
    use std::net::Ipv4Addr;

    fn vpc(id: &str) -> VpcSpec {
        VpcSpec {
            id: id.into(),
            seq: 1,
            subnets: vec![],
        }
    }

    fn host(id: &str) -> HostSpec {
        HostSpec {
            port_id: id.into(),
            vpc_id: "a".into(),
            subnet_id: "sa".into(),
            ip: Ipv4Addr::new(10, 0, 0, 9),
            mac: String::new(),
            machine: None,
        }
    }

    fn ep(id: &str, port: u16) -> EndpointSpec {
        EndpointSpec {
            id: id.into(),
            service_id: "s".into(),
            marker_id: 0x0100_0000,
            consumer_vpc: "a".into(),
            subnet_id: "sa".into(),
            ip: Ipv4Addr::new(10, 0, 0, 4),
            provider_vpc: Some("b".into()),
            backend_ip: Ipv4Addr::new(10, 0, 0, 3),
            ports: vec![PortMapping {
                client_port: port,
                server_port: 80,
                protocol: Protocol::Tcp,
            }],
            tcp_proxy: TcpProxy::Close,
            whitelist: None,
            max_connections: 3000,
            snat_ip: Ipv4Addr::new(198, 19, 128, 1),
            dns_name: None,
            route: None,
        }
    }

    fn state_of(s: &Snapshot) -> State {
        let mut state = State::default();
        state.absorb(state.delta_to(s.clone()));
        state
    }

    #[test]
    fn a_whole_snapshot_is_the_delta_that_reaches_it() {
        let one = Snapshot {
            revision: 1,
            vpcs: vec![vpc("a"), vpc("b")],
            hosts: vec![host("h")],
            endpoints: vec![ep("e1", 80)],
            ..Default::default()
        };
        let empty = State::default();
        let delta = empty.delta_to(one.clone());
        assert_eq!(
            empty.changes(&delta),
            vec![
                Change::AddVpc(&vpc("a")),
                Change::AddVpc(&vpc("b")),
                Change::AddHost(&host("h")),
                Change::AddEndpoint(&ep("e1", 80))
            ]
        );
        let held = state_of(&one);
        assert_eq!(held.to_snapshot(), one);
        assert_eq!(held.changes(&held.delta_to(one.clone())), vec![]);
        let delta = held.delta_to(Snapshot::default());
        assert_eq!(
            held.changes(&delta),
            vec![
                Change::RemoveEndpoint(&ep("e1", 80)),
                Change::RemoveHost(&host("h")),
                Change::RemoveVpc(&vpc("a")),
                Change::RemoveVpc(&vpc("b"))
            ]
        );
    }

    #[test]
    fn endpoints_change_in_place_when_their_listeners_stay() {
        let one = Snapshot {
            revision: 1,
            vpcs: vec![vpc("a"), vpc("b")],
            endpoints: vec![ep("e1", 80)],
            ..Default::default()
        };
        let held = state_of(&one);
        let mut listed = ep("e1", 80);
        listed.whitelist = Some(vec!["10.0.0.0/8".into()]);
        let delta = SnapshotDelta {
            from: 1,
            revision: 2,
            endpoints: vec![listed.clone()],
            ..Default::default()
        };
        assert_eq!(
            held.changes(&delta),
            vec![Change::UpdateEndpoint {
                old: &ep("e1", 80),
                new: &listed
            }]
        );
        let moved = SnapshotDelta {
            from: 1,
            revision: 2,
            endpoints: vec![ep("e1", 81)],
            ..Default::default()
        };
        assert_eq!(
            held.changes(&moved),
            vec![
                Change::RemoveEndpoint(&ep("e1", 80)),
                Change::AddEndpoint(&ep("e1", 81))
            ]
        );
        // An unchanged entry is no change; absorbing moves the revision.
        let same = SnapshotDelta {
            from: 1,
            revision: 3,
            endpoints: vec![ep("e1", 80)],
            ..Default::default()
        };
        assert!(held.changes(&same).is_empty());
        let mut held = held;
        held.absorb(same);
        assert_eq!(held.revision, 3);
    }

    #[test]
    fn a_delta_removes_only_what_went() {
        let one = Snapshot {
            revision: 1,
            vpcs: vec![vpc("a"), vpc("b")],
            endpoints: vec![ep("e1", 80), ep("e2", 81)],
            ..Default::default()
        };
        let mut held = state_of(&one);
        let delta = SnapshotDelta {
            from: 1,
            revision: 2,
            endpoints_gone: vec!["e1".into(), "never-held".into()],
            ..Default::default()
        };
        assert_eq!(
            held.changes(&delta),
            vec![Change::RemoveEndpoint(&ep("e1", 80))]
        );
        held.absorb(delta);
        assert_eq!(held.endpoints.keys().collect::<Vec<_>>(), vec!["e2"]);
        assert!(!held.delta_to(held.to_snapshot()).is_empty());
        assert!(SnapshotDelta::default().is_empty());
    }
}
