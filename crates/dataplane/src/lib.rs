//! The data plane of vpcep: it turns a desired-state [`Snapshot`] into VPCs, hosts and
//! forwarding endpoints on this node, and reports which endpoints are live. It never
//! reads the store; snapshots come from the controller (in-process) or over HTTP.
//! Invariant: `setns` and every namespace operation live in `substrate::netns`.
#![forbid(unsafe_code)]

pub mod dns;
pub mod gateway;
pub mod kernel;
pub mod substrate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use vpcep_model::{
    Change, EndpointSpec, Outcome, RouteSpec, Snapshot, SnapshotDelta, State, VpcSpec,
};

pub use dns::{Dns, DnsConfig};
pub use gateway::Gateway;
pub use substrate::loopback::Loopback;
pub use substrate::netns::Netns;
pub use substrate::Substrate;

/// Which path endpoints take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// The kernel path where the substrate has one and the endpoint allows it
    /// (`tcp_proxy = close`), the userspace gateway otherwise.
    Auto,
    /// The userspace gateway for every endpoint.
    Userspace,
}

/// A data-plane node: substrate plus gateway, following snapshots.
pub struct Node {
    substrate: Arc<dyn Substrate>,
    gateway: Gateway,
    forwarding: Forwarding,
    current: Mutex<Applied>,
    /// The first apply prunes leftovers and rewrites the kernel state whatever it was.
    started: std::sync::atomic::AtomicBool,
    outcomes: RwLock<HashMap<String, Outcome>>,
    /// Hosts and data centres by id: stood up by the substrate, or why not.
    standing: RwLock<HashMap<String, Result<(), String>>>,
    /// The VPC resolvers and the cloud resolver, when the node serves DNS.
    dns: Option<Dns>,
    /// Kernel-path namespaces rewritten whole: at start, after a failed change, and
    /// when drift was found.
    rewrites: AtomicU64,
    /// The kernel path's endpoints: id → (consumer VPC, marker id), for the metrics.
    on_kernel_path: RwLock<BTreeMap<String, (String, u32)>>,
    /// How the node keeps up: the revision it applied last, and what applies took.
    applied_revision: AtomicU64,
    applies: AtomicU64,
    apply_micros: AtomicU64,
    last_apply_micros: AtomicU64,
}

/// The kernel path's share of one apply: endpoints out, endpoints in (one that changed
/// is in both).
#[derive(Default)]
struct KernelStep<'a> {
    gone: Vec<&'a EndpointSpec>,
    now: Vec<&'a EndpointSpec>,
}

/// What the node has applied: the snapshot and what follows from it.
#[derive(Default)]
struct Applied {
    /// The private names each VPC's resolver answers.
    names: BTreeMap<String, BTreeMap<String, Ipv4Addr>>,
    state: State,
    /// What the kernel path holds, counted by the endpoints that need it.
    kernel: kernel::KernelState,
    /// VPCs whose namespace must be rewritten whole: its last change failed, so what it
    /// holds is unknown.
    dirty: BTreeSet<String>,
    /// The gateway endpoints' routes, by consumer VPC and endpoint.
    routes: BTreeMap<String, BTreeMap<String, RouteSpec>>,
    /// The routes each VPC router holds now (set only on success).
    held_routes: HashMap<String, Vec<RouteSpec>>,
    /// VPCs whose routes could not be set: tried again at the next apply.
    routes_retry: BTreeSet<String>,
}

/// The VPCs of one apply: as they are after it (changed ones from the delta) and as they
/// were (for the endpoints that leave).
struct Vpcs<'a> {
    held: &'a State,
    changed: HashMap<&'a str, &'a VpcSpec>,
    gone: BTreeSet<&'a str>,
}

impl<'a> Vpcs<'a> {
    fn new(held: &'a State, delta: &'a SnapshotDelta) -> Vpcs<'a> {
        Vpcs {
            held,
            changed: delta.vpcs.iter().map(|v| (v.id.as_str(), v)).collect(),
            gone: delta.vpcs_gone.iter().map(String::as_str).collect(),
        }
    }

    /// A VPC as it is after the apply.
    fn get(&self, id: &str) -> Option<&'a VpcSpec> {
        match self.changed.get(id) {
            Some(v) => Some(*v),
            None if self.gone.contains(id) => None,
            None => self.held.vpcs.get(id),
        }
    }

    /// A VPC's number, whether it stays or goes.
    fn seq(&self, id: &str) -> Option<u32> {
        self.changed
            .get(id)
            .map(|v| v.seq)
            .or_else(|| self.held.vpcs.get(id).map(|v| v.seq))
    }

    /// The ids of every VPC after the apply (a walk over all of them: start-up only).
    fn ids(&self) -> Vec<String> {
        let mut ids: BTreeSet<&str> = self
            .held
            .vpcs
            .keys()
            .map(String::as_str)
            .filter(|id| !self.gone.contains(id))
            .collect();
        ids.extend(self.changed.keys());
        ids.into_iter().map(str::to_owned).collect()
    }

    /// The VPCs an endpoint forwards between, as the gateway takes them.
    fn of(&self, e: &EndpointSpec) -> HashMap<String, VpcSpec> {
        [Some(&e.consumer_vpc), e.provider_vpc.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
            .map(|v| (v.id.clone(), v.clone()))
            .collect()
    }
}

/// What one apply touched beyond the kernel path.
#[derive(Default)]
struct Touched {
    /// VPC routers whose gateway endpoints' routes changed.
    routes: BTreeSet<String>,
    /// Whether VPCs came or went (the resolvers follow them).
    vpcs: bool,
    /// Private names that went, (VPC, name), and that came, (endpoint, VPC, name, IP),
    /// the latter answered if the endpoint is up.
    unnamed: Vec<(String, String)>,
    named: Vec<(String, String, String, Ipv4Addr)>,
    /// The cloud's names, when they changed.
    cloud: Option<Vec<vpcep_model::CloudName>>,
}

impl Touched {
    /// Notes an endpoint that arrives (`present`) or leaves, for its VPC's routes and
    /// private name.
    fn endpoint(&mut self, current: &mut Applied, e: &EndpointSpec, present: bool) {
        if let Some(name) = &e.dns_name {
            let (vpc, name) = (e.consumer_vpc.clone(), name.to_ascii_lowercase());
            if present {
                self.named.push((e.id.clone(), vpc, name, e.ip));
            } else {
                self.unnamed.push((vpc, name));
            }
        }
        let Some(r) = &e.route else { return };
        self.routes.insert(e.consumer_vpc.clone());
        let routes = current.routes.entry(e.consumer_vpc.clone()).or_default();
        if present {
            routes.insert(e.id.clone(), r.clone());
        } else {
            routes.remove(&e.id);
        }
    }
}

impl Node {
    pub fn new(substrate: Arc<dyn Substrate>) -> Node {
        Node::with_forwarding(substrate, Forwarding::Auto)
    }

    pub fn with_forwarding(substrate: Arc<dyn Substrate>, forwarding: Forwarding) -> Node {
        Node {
            gateway: Gateway::new(substrate.clone()),
            substrate,
            forwarding,
            current: Mutex::default(),
            started: std::sync::atomic::AtomicBool::new(false),
            outcomes: RwLock::default(),
            standing: RwLock::default(),
            dns: None,
            rewrites: AtomicU64::new(0),
            on_kernel_path: RwLock::default(),
            applied_revision: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            apply_micros: AtomicU64::new(0),
            last_apply_micros: AtomicU64::new(0),
        }
    }

    /// Caps what the userspace gateway spends on listeners and sessions at `descriptors`
    /// (by default the process's limit less 1024), before any endpoint starts.
    pub fn with_gateway_budget(mut self, descriptors: u64) -> Node {
        self.gateway = Gateway::with_budget(self.substrate.clone(), descriptors);
        self
    }

    /// Serves private DNS: a resolver in every VPC, and the cloud resolver if configured.
    pub fn with_dns(mut self, config: DnsConfig) -> Node {
        self.dns = Some(Dns::new(self.substrate.clone(), config));
        self
    }

    pub fn dns(&self) -> Option<&Dns> {
        self.dns.as_ref()
    }

    /// The kernel path runs where routers are: not on a compute machine.
    fn kernel_on(&self) -> bool {
        self.forwarding == Forwarding::Auto
            && self.substrate.kernel().is_some()
            && self.substrate.role() != Some(vpcep_model::MachineRole::Compute)
    }

    /// Whether this endpoint takes the kernel path on this node.
    fn on_kernel(&self, e: &EndpointSpec) -> bool {
        self.kernel_on() && kernel::eligible(e)
    }

    pub fn substrate(&self) -> &Arc<dyn Substrate> {
        &self.substrate
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// How many times a kernel-path namespace was rewritten whole (at start, after a
    /// failed change, after drift); a change of endpoints never rewrites one.
    pub fn kernel_rewrites(&self) -> u64 {
        self.rewrites.load(Ordering::Relaxed)
    }

    fn set_outcome(&self, id: &str, outcome: Option<Outcome>) {
        let mut outcomes = self.outcomes.write().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Some(o) => outcomes.insert(id.to_owned(), o),
            None => outcomes.remove(id),
        };
    }

    fn set_standing(&self, id: &str, r: Option<&Result<(), String>>) {
        let mut standing = self.standing.write().unwrap_or_else(|p| p.into_inner());
        match r {
            Some(r) => standing.insert(id.to_owned(), r.clone()),
            None => standing.remove(id),
        };
    }

    /// Whether the host or data centre `id` is up (`Some(Ok)`), could not be stood up
    /// (`Some(Err)`, why), or is not yet applied (`None`).
    pub fn standing(&self, id: &str) -> Option<Result<(), String>> {
        let standing = self.standing.read().unwrap_or_else(|p| p.into_inner());
        standing.get(id).cloned()
    }

    /// The revision of the desired state this node applied last (`None` before the first).
    pub fn applied_revision(&self) -> Option<u64> {
        self.started
            .load(Ordering::Acquire)
            .then(|| self.applied_revision.load(Ordering::Relaxed))
    }

    /// Applies the difference between what runs and `next`, idempotently; afterwards every
    /// endpoint of `next` has an outcome (up, or why not).
    pub async fn apply(&self, next: Snapshot) {
        let mut applied = self.current.lock().await;
        let delta = applied.state.delta_to(next);
        self.apply_locked(&mut applied, delta).await;
    }

    /// Applies what changed since the revision this node applied last. A delta from
    /// another revision is refused (`false`): the caller then applies a whole snapshot.
    pub async fn apply_delta(&self, delta: SnapshotDelta) -> bool {
        let mut applied = self.current.lock().await;
        if !self.started.load(Ordering::Acquire) || delta.from != applied.state.revision {
            return false;
        }
        self.apply_locked(&mut applied, delta).await;
        true
    }

    /// Applies `delta` to what runs. What it costs follows what changed, not what there is.
    async fn apply_locked(&self, current: &mut Applied, delta: SnapshotDelta) {
        let first = !self.started.load(Ordering::Acquire);
        if !first && delta.is_empty() && current.dirty.is_empty() {
            current.state.revision = delta.revision;
            self.applied_revision
                .store(delta.revision, Ordering::Relaxed);
            return;
        }
        let began = std::time::Instant::now();
        self.started.store(true, Ordering::Release);
        if first {
            // Only the ids matter to prune: what the node may keep.
            let keep = Snapshot {
                vpcs: delta.vpcs.clone(),
                hosts: delta.hosts.clone(),
                idcs: delta.idcs.clone(),
                ..Snapshot::default()
            };
            let sub = self.substrate.clone();
            log(blocking(move || sub.prune(&keep)).await, "prune");
        }
        // Taken out while the changes borrow it; it takes the delta in at the end.
        let held = std::mem::take(&mut current.state);
        let vpcs = Vpcs::new(&held, &delta);
        let mut failed_vpcs: HashMap<String, String> = HashMap::new();
        // The kernel path's endpoints are collected and sent as one step at the end.
        let mut step = KernelStep::default();
        let mut touched = Touched::default();
        let changes = held.changes(&delta);
        // A compute machine of several holds hosts only.
        let compute = self.substrate.role() == Some(vpcep_model::MachineRole::Compute);
        let overlay = overlay_vpcs(self.substrate.role().is_some(), first, &held, &delta);
        for change in &changes {
            let sub = self.substrate.clone();
            if compute
                && matches!(
                    change,
                    Change::RemoveEndpoint(_)
                        | Change::UpdateEndpoint { .. }
                        | Change::AddEndpoint(_)
                        | Change::AddIdc(_)
                        | Change::RemoveIdc(_)
                )
            {
                continue;
            }
            match *change {
                Change::RemoveEndpoint(old) => {
                    if self.on_kernel(old) {
                        step.gone.push(old);
                    } else {
                        self.gateway.stop(&old.id).await;
                    }
                    self.set_outcome(&old.id, None);
                    touched.endpoint(current, old, false);
                }
                Change::RemoveHost(h) => {
                    self.set_standing(&h.port_id, None);
                    let h = h.clone();
                    log(blocking(move || sub.remove_host(&h)).await, "remove host")
                }
                Change::RemoveVpc(v) => {
                    let id = v.id.clone();
                    current.dirty.remove(&id);
                    current.routes.remove(&id);
                    current.held_routes.remove(&id);
                    current.routes_retry.remove(&id);
                    touched.vpcs = true;
                    log(blocking(move || sub.remove_vpc(&id)).await, "remove VPC")
                }
                Change::AddVpc(v) => {
                    let (id, v) = (v.id.clone(), v.clone());
                    touched.routes.insert(id.clone());
                    touched.vpcs = true;
                    if let Err(e) = blocking(move || sub.ensure_vpc(&v)).await {
                        tracing::warn!(vpc = %id, error = %e, "VPC could not be realised");
                        failed_vpcs.insert(id, e);
                    }
                }
                Change::RemoveIdc(i) => {
                    self.set_standing(&i.id, None);
                    let i = i.clone();
                    log(
                        blocking(move || sub.remove_idc(&i)).await,
                        "remove data centre",
                    )
                }
                Change::AddIdc(i) => {
                    let Some(v) = vpcs.get(&i.vpc_id).cloned() else {
                        continue;
                    };
                    let (id, i) = (i.id.clone(), i.clone());
                    let r = blocking(move || sub.ensure_idc(&v, &i)).await;
                    self.set_standing(&id, Some(&r));
                    log(r, "data centre");
                }
                Change::AddHost(h) => {
                    let Some(v) = vpcs.get(&h.vpc_id).cloned() else {
                        continue;
                    };
                    let (id, h) = (h.port_id.clone(), h.clone());
                    let r = blocking(move || sub.ensure_host(&v, &h)).await;
                    self.set_standing(&id, Some(&r));
                    log(r, "host");
                }
                Change::UpdateEndpoint { old, new } => {
                    match (self.on_kernel(old), self.on_kernel(new)) {
                        (true, true) => {
                            step.gone.push(old);
                            step.now.push(new);
                        }
                        (true, false) => {
                            step.gone.push(old);
                            let outcome = self.gateway.start(new, &vpcs.of(new)).await;
                            self.set_outcome(&new.id, Some(outcome));
                        }
                        (false, true) => {
                            self.gateway.stop(&old.id).await;
                            step.now.push(new);
                        }
                        (false, false) => {
                            let outcome = self.gateway.update(new, &vpcs.of(new)).await;
                            self.set_outcome(&new.id, Some(outcome));
                        }
                    }
                    touched.endpoint(current, old, false);
                    touched.endpoint(current, new, true);
                }
                Change::AddEndpoint(e) => {
                    touched.endpoint(current, e, true);
                    if self.on_kernel(e) {
                        step.now.push(e);
                        continue;
                    }
                    let broken = [Some(&e.consumer_vpc), e.provider_vpc.as_ref()]
                        .into_iter()
                        .flatten()
                        .find_map(|v| failed_vpcs.get(v));
                    let outcome = match broken {
                        Some(why) => Err(format!("VPC not realised: {why}")),
                        None => self.gateway.start(e, &vpcs.of(e)).await,
                    };
                    if let Err(why) = &outcome {
                        tracing::warn!(endpoint = %e.id, error = %why, "endpoint could not come up");
                    }
                    self.set_outcome(&e.id, Some(outcome));
                }
            }
        }
        let kernel_began = std::time::Instant::now();
        if compute {
            // No router here: nothing of the kernel path or of the routes.
        } else if self.kernel_on() {
            self.apply_kernel(current, &vpcs, first, step, &failed_vpcs)
                .await;
        } else if first && self.substrate.kernel().is_some() {
            self.clear_kernel(&vpcs.ids()).await;
        }
        let kernel_took = kernel_began.elapsed();
        if first {
            // Nothing is known to be held, whatever an earlier run left.
            touched.routes.extend(vpcs.ids());
        }
        if !compute {
            self.apply_routes(current, &vpcs, &touched.routes, &failed_vpcs)
                .await;
        }
        touched.cloud = delta.cloud_names.clone();
        drop(changes);
        drop(vpcs);
        let mut state = held;
        state.absorb(delta);
        if let Some(vpcs) = overlay {
            if let Some(plan) = self.substrate.plan_overlay(&state, vpcs.as_ref()) {
                let sub = self.substrate.clone();
                log(blocking(move || sub.set_overlay(plan)).await, "overlay");
            }
        }
        if let Some(dns) = &self.dns {
            if first {
                if let Err(e) = dns.start_cloud().await {
                    tracing::warn!(error = %e, "cloud DNS could not start");
                }
            }
            if first || touched.vpcs || !failed_vpcs.is_empty() {
                let live: Vec<VpcSpec> = state
                    .vpcs
                    .values()
                    .filter(|v| !failed_vpcs.contains_key(&v.id))
                    .cloned()
                    .collect();
                dns.sync(&live).await;
            }
            self.publish_names(dns, current, &state, touched);
        }
        let took = began.elapsed().as_micros() as u64;
        tracing::debug!(
            revision = state.revision,
            ms = took as f64 / 1e3,
            kernel_ms = kernel_took.as_secs_f64() * 1e3,
            "applied"
        );
        self.applied_revision
            .store(state.revision, Ordering::Relaxed);
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.apply_micros.fetch_add(took, Ordering::Relaxed);
        self.last_apply_micros.store(took, Ordering::Relaxed);
        current.state = state;
    }

    /// Makes the VPC routers of `todo` (those whose gateway endpoints changed, all of them
    /// after a start) and those whose routes failed before hold their gateway
    /// endpoints' routes.
    async fn apply_routes(
        &self,
        current: &mut Applied,
        vpcs: &Vpcs<'_>,
        todo: &BTreeSet<String>,
        failed_vpcs: &HashMap<String, String>,
    ) {
        let retry = std::mem::take(&mut current.routes_retry);
        for id in todo.iter().chain(&retry) {
            let Some(vpc) = vpcs.get(id).cloned() else {
                continue;
            };
            if failed_vpcs.contains_key(id) {
                current.routes_retry.insert(id.clone());
                continue;
            }
            let want: Vec<RouteSpec> = current
                .routes
                .get(id)
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            if current.held_routes.get(id) == Some(&want) {
                continue;
            }
            let (sub, routes) = (self.substrate.clone(), want.clone());
            match blocking(move || sub.set_routes(&vpc, &routes)).await {
                Ok(()) => {
                    current.held_routes.insert(id.clone(), want);
                }
                Err(e) => {
                    current.held_routes.remove(id);
                    current.routes_retry.insert(id.clone());
                    tracing::warn!(vpc = %id, error = %e, "gateway endpoint routes failed");
                }
            }
        }
    }

    /// Gives the resolvers the names that changed: an endpoint's private name is
    /// answered in its consumer VPC once the endpoint is up (so a name never precedes a
    /// working endpoint), and the cloud's names everywhere. Only the VPCs whose names
    /// changed are given theirs again.
    fn publish_names(&self, dns: &Dns, current: &mut Applied, state: &State, touched: Touched) {
        if let Some(cloud) = touched.cloud {
            dns.set_cloud(cloud);
        }
        let mut vpcs = BTreeSet::new();
        for (vpc, name) in touched.unnamed {
            if let Some(names) = current.names.get_mut(&vpc) {
                names.remove(&name);
            }
            vpcs.insert(vpc);
        }
        let outcomes = self.outcomes.read().unwrap_or_else(|p| p.into_inner());
        for (id, vpc, name, ip) in touched.named {
            if matches!(outcomes.get(&id), Some(Ok(()))) {
                current
                    .names
                    .entry(vpc.clone())
                    .or_default()
                    .insert(name, ip);
            }
            vpcs.insert(vpc);
        }
        drop(outcomes);
        for vpc in vpcs {
            if state.vpcs.contains_key(&vpc) {
                let names = current.names.get(&vpc).cloned().unwrap_or_default();
                dns.set_names(&vpc, names);
            } else {
                current.names.remove(&vpc);
                dns.drop_vpc(&vpc);
            }
        }
    }

    /// Sends the kernel path what changed: the endpoints of `gone` out and those of `now`
    /// in (an endpoint that changed is in both), as one step; namespaces whose last
    /// change failed, or all of them at start, are rewritten whole instead. Ends the
    /// sessions of endpoints that left the kernel path.
    async fn apply_kernel(
        &self,
        current: &mut Applied,
        vpcs: &Vpcs<'_>,
        first: bool,
        KernelStep { gone, now }: KernelStep<'_>,
        failed_vpcs: &HashMap<String, String>,
    ) {
        let (mut delta, skipped) = current.kernel.update(&gone, &now, |id| vpcs.seq(id));
        // A VPC that went has taken its namespace, its links and their routes with it.
        let exists = |id: &String| vpcs.get(id).is_some();
        delta.ns.retain(|vpc, _| exists(vpc));
        delta.links_removed.retain(|(c, p)| exists(c) && exists(p));
        let mut rewrite: BTreeSet<String> = failed_vpcs.keys().cloned().collect();
        rewrite.append(&mut current.dirty);
        if first {
            rewrite.extend(vpcs.ids());
        }
        rewrite.retain(|vpc| exists(vpc));
        // What is rewritten whole gets no step; links are made by the rewrite too.
        delta.ns.retain(|vpc, _| !rewrite.contains(vpc));
        delta
            .links_added
            .retain(|(c, p)| !rewrite.contains(c) && !rewrite.contains(p));
        let jobs: Vec<(String, Vec<kernel::Item>, Vec<kernel::Link>)> = rewrite
            .iter()
            .map(|vpc| {
                let items = current.kernel.items(vpc).into_iter().cloned().collect();
                (vpc.clone(), items, current.kernel.links_of(vpc))
            })
            .collect();
        let sub = self.substrate.clone();
        let (failed, rewritten) = tokio::task::spawn_blocking(move || {
            let Some(k) = sub.kernel() else {
                return (BTreeMap::new(), 0);
            };
            let mut failed = k.apply(&delta);
            let mut rewritten = 0;
            for (vpc, items, links) in jobs {
                let items: Vec<&kernel::Item> = items.iter().collect();
                match k.rewrite(&vpc, &items, &links) {
                    Ok(()) => rewritten += 1,
                    Err(e) => {
                        failed.insert(vpc, e.to_string());
                    }
                }
            }
            (failed, rewritten)
        })
        .await
        .unwrap_or_else(|e| {
            let why = format!("kernel path: {e}");
            (
                rewrite.iter().map(|v| (v.clone(), why.clone())).collect(),
                0,
            )
        });
        self.rewrites.fetch_add(rewritten, Ordering::Relaxed);
        for (vpc, why) in &failed {
            tracing::warn!(vpc = %vpc, error = %why, "kernel path could not be applied; the namespace will be rewritten");
        }
        current.dirty.extend(failed.keys().cloned());
        for e in &now {
            let why = if skipped.contains(&e.id) {
                Some("VPC not realised".to_owned())
            } else {
                [Some(&e.consumer_vpc), e.provider_vpc.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|v| failed_vpcs.get(v).or_else(|| failed.get(v)))
                    .map(|why| format!("VPC not realised: {why}"))
            };
            self.set_outcome(&e.id, Some(why.map_or(Ok(()), Err)));
        }
        {
            let mut listed = self
                .on_kernel_path
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for e in &gone {
                listed.remove(&e.id);
            }
            for e in &now {
                listed.insert(e.id.clone(), (e.consumer_vpc.clone(), e.marker_id));
            }
        }
        // An endpoint that stays keeps its sessions; one that left (or whose marker id
        // changed) has them ended.
        let staying: BTreeSet<(&str, u32)> =
            now.iter().map(|n| (n.id.as_str(), n.marker_id)).collect();
        for old in &gone {
            if !staying.contains(&(old.id.as_str(), old.marker_id)) {
                self.forget(old);
            }
        }
    }

    /// Ends the kernel-path sessions of an endpoint, starting now. They are tracked, and
    /// marked, in the consumer's namespace only: the provider's router just routes. Not
    /// waited for: `conntrack -D` walks the namespace's whole conntrack table, which
    /// grows with the sessions on the node, and the next change need not wait behind
    /// it; new sessions are refused already, since the endpoint's elements are gone.
    fn forget(&self, e: &EndpointSpec) {
        let (sub, c, m) = (self.substrate.clone(), e.consumer_vpc.clone(), e.marker_id);
        tokio::task::spawn_blocking(move || {
            if let Some(k) = sub.kernel() {
                k.forget(&c, m);
            }
        });
    }

    /// Forced to userspace on a node that may hold kernel state from an earlier run:
    /// clear it, or its routes would take the endpoints' traffic, and end its sessions,
    /// whose conntrack entries would otherwise clash with the new ones.
    async fn clear_kernel(&self, vpcs: &[String]) {
        let vpcs = vpcs.to_vec();
        let sub = self.substrate.clone();
        let cleared = tokio::task::spawn_blocking(move || {
            let Some(k) = sub.kernel() else { return 0 };
            let mut n = 0;
            for vpc in vpcs {
                match k.clear(&vpc) {
                    Ok(()) => n += 1,
                    Err(e) => tracing::warn!(vpc = %vpc, error = %e, "kernel-path leftovers could not be cleared"),
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        self.rewrites.fetch_add(cleared, Ordering::Relaxed);
    }

    /// Rewrites the kernel-path namespaces whose last change failed, and those whose
    /// table, routes or rules no longer look as they should (someone changed them by
    /// hand), and starts VPC resolvers that could not start before; returns how many
    /// namespaces were rewritten. Run now and then by the node's owner.
    pub async fn resync(&self) -> usize {
        if !self.started.load(Ordering::Acquire) {
            return 0;
        }
        let mut applied = self.current.lock().await;
        let current = &mut *applied;
        if let Some(dns) = &self.dns {
            // A resolver that could not start is tried again.
            let vpcs: Vec<VpcSpec> = current.state.vpcs.values().cloned().collect();
            dns.sync(&vpcs).await;
        }
        if !self.kernel_on() {
            return 0;
        }
        let vpcs: BTreeSet<String> = current
            .kernel
            .namespaces()
            .chain(&current.dirty)
            .filter(|id| current.state.vpcs.contains_key(*id))
            .cloned()
            .collect();
        let jobs: Vec<(String, bool, Vec<kernel::Item>, Vec<kernel::Link>)> = vpcs
            .into_iter()
            .map(|vpc| {
                let items = current.kernel.items(&vpc).into_iter().cloned().collect();
                let links = current.kernel.links_of(&vpc);
                (vpc.clone(), current.dirty.contains(&vpc), items, links)
            })
            .collect();
        let sub = self.substrate.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let Some(k) = sub.kernel() else {
                return Vec::new();
            };
            jobs.into_iter()
                .filter_map(|(vpc, dirty, items, links)| {
                    let items: Vec<&kernel::Item> = items.iter().collect();
                    if !dirty {
                        match k.drift(&vpc, &kernel::Shape::of(&items)) {
                            Ok(None) => return None,
                            Ok(Some(what)) => {
                                tracing::warn!(vpc = %vpc, drift = %what, "kernel path changed by hand; rewriting it")
                            }
                            Err(e) => tracing::warn!(vpc = %vpc, error = %e, "kernel path could not be listed; rewriting it"),
                        }
                    }
                    Some((vpc.clone(), k.rewrite(&vpc, &items, &links).map_err(|e| e.to_string())))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        let mut rewritten = 0;
        for (vpc, result) in outcome {
            match result {
                Ok(()) => {
                    current.dirty.remove(&vpc);
                    rewritten += 1;
                }
                Err(e) => {
                    tracing::warn!(vpc = %vpc, error = %e, "kernel path rewrite failed");
                    current.dirty.insert(vpc);
                }
            }
        }
        self.rewrites.fetch_add(rewritten as u64, Ordering::Relaxed);
        rewritten
    }

    /// Runs [`Node::resync`] every `every` until `shutdown` turns true.
    pub async fn resync_every(
        self: Arc<Self>,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let n = self.resync().await;
            if n > 0 {
                tracing::info!(namespaces = n, "kernel path resynced");
            }
        }
    }

    /// Starts again, every `every`, what keeps the routers of a gateway pair where it
    /// died (keepalived, conntrackd), until `shutdown` turns true.
    pub async fn supervise_every(
        self: Arc<Self>,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let sub = self.substrate.clone();
            log(
                blocking(move || sub.supervise()).await,
                "supervising the routers' keepers",
            );
        }
    }

    /// Prometheus text of this node: both paths, one family per metric.
    pub fn render_metrics(&self) -> String {
        let mut out = self.gateway.render_metrics(&self.kernel_samples());
        let seconds = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        let mut one = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        one(
            "vpcep_node_applied_revision",
            "gauge",
            "The store revision whose desired state this node applied last.",
            self.applied_revision.load(Ordering::Relaxed) as f64,
        );
        one(
            "vpcep_node_applies_total",
            "counter",
            "Desired states applied (a burst of changes is applied as one).",
            self.applies.load(Ordering::Relaxed) as f64,
        );
        one(
            "vpcep_node_apply_seconds_total",
            "counter",
            "Time spent applying desired states.",
            seconds(&self.apply_micros),
        );
        one(
            "vpcep_node_last_apply_seconds",
            "gauge",
            "How long the last apply took (the first after a start rewrites everything).",
            seconds(&self.last_apply_micros),
        );
        if self.kernel_on() {
            one(
                "vpcep_kernel_rewrites_total",
                "counter",
                "Kernel-path namespaces rewritten whole (start-up, failed changes, drift).",
                self.kernel_rewrites() as f64,
            );
        }
        if let Some(dns) = &self.dns {
            out.push_str(&dns.render_metrics());
        }
        out
    }

    /// Counters of the kernel-path endpoints, under the gateway's metric names.
    fn kernel_samples(&self) -> Vec<(&'static str, String, u64)> {
        let Some(k) = self.substrate.kernel() else {
            return Vec::new();
        };
        // Listing counters runs a process per namespace: it holds up no apply.
        let eps: Vec<(String, String, u32)> = self
            .on_kernel_path
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, (vpc, marker))| (vpc.clone(), id.clone(), *marker))
            .collect();
        let mut by_vpc: HashMap<&str, HashMap<String, (u64, u64)>> = HashMap::new();
        let mut out = Vec::new();
        for (vpc, id, marker) in &eps {
            let counters = by_vpc
                .entry(vpc.as_str())
                .or_insert_with(|| k.counters(vpc));
            // (metric, kernel counter, bytes rather than packets)
            const FROM_KERNEL: [(&str, &str, bool); 5] = [
                ("vpcep_gateway_sessions_total", "sessions", false),
                ("vpcep_gateway_refused_limit_total", "refused_limit", false),
                (
                    "vpcep_gateway_refused_whitelist_total",
                    "refused_whitelist",
                    false,
                ),
                ("vpcep_gateway_bytes_to_backend_total", "to_backend", true),
                ("vpcep_gateway_bytes_to_client_total", "to_client", true),
            ];
            for (metric, counter, bytes) in FROM_KERNEL {
                let (packets, octets) = counters
                    .get(&format!("{counter}_{marker}"))
                    .copied()
                    .unwrap_or((0, 0));
                out.push((metric, id.clone(), if bytes { octets } else { packets }));
            }
        }
        out
    }

    /// Whether an endpoint of the last applied snapshot is live: `None` if the node has
    /// not seen it yet.
    pub fn endpoint_outcome(&self, id: &str) -> Option<Outcome> {
        self.outcomes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The VPCs whose tunnels to other machines `delta` may change, on a machine of several
/// (`None`: nothing to do there): every VPC at first and when the machines changed
/// (`Some(None)`), else those whose subnets, hosts or endpoints changed.
fn overlay_vpcs(
    on_machine: bool,
    first: bool,
    held: &State,
    delta: &SnapshotDelta,
) -> Option<Option<BTreeSet<String>>> {
    if !on_machine {
        return None;
    }
    if first || delta.machines.is_some() {
        return Some(None);
    }
    let mut vpcs: BTreeSet<String> = delta.vpcs.iter().map(|v| v.id.clone()).collect();
    vpcs.extend(delta.vpcs_gone.iter().cloned());
    vpcs.extend(delta.hosts.iter().map(|h| h.vpc_id.clone()));
    vpcs.extend(
        delta
            .hosts_gone
            .iter()
            .filter_map(|id| held.hosts.get(id))
            .map(|h| h.vpc_id.clone()),
    );
    vpcs.extend(delta.endpoints.iter().map(|e| e.consumer_vpc.clone()));
    vpcs.extend(
        delta
            .endpoints_gone
            .iter()
            .filter_map(|id| held.endpoints.get(id))
            .map(|e| e.consumer_vpc.clone()),
    );
    (!vpcs.is_empty()).then_some(Some(vpcs))
}

fn log(r: Result<(), String>, what: &str) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "{what} failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_is_planned_for_the_vpcs_a_delta_touches() {
        let host = |id: &str, vpc: &str| vpcep_model::HostSpec {
            port_id: id.into(),
            vpc_id: vpc.into(),
            subnet_id: "s".into(),
            ip: Ipv4Addr::new(192, 168, 1, 10),
            mac: String::new(),
            machine: None,
        };
        let mut held = State::default();
        held.hosts.insert("h1".into(), host("h1", "v1"));
        let delta = SnapshotDelta {
            hosts: vec![host("h2", "v2")],
            hosts_gone: vec!["h1".into()],
            ..SnapshotDelta::default()
        };
        assert_eq!(
            overlay_vpcs(false, true, &held, &delta),
            None,
            "one machine"
        );
        assert_eq!(
            overlay_vpcs(true, true, &held, &delta),
            Some(None),
            "at first"
        );
        let touched = overlay_vpcs(true, false, &held, &delta).unwrap().unwrap();
        assert_eq!(touched, BTreeSet::from(["v1".to_owned(), "v2".to_owned()]));
        let machines = SnapshotDelta {
            machines: Some(Vec::new()),
            ..SnapshotDelta::default()
        };
        assert_eq!(overlay_vpcs(true, false, &held, &machines), Some(None));
        assert_eq!(
            overlay_vpcs(true, false, &held, &SnapshotDelta::default()),
            None,
            "nothing touched"
        );
    }
}
