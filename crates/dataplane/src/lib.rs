//! The data plane of vpcep: it turns a desired-state [`Snapshot`] into VPCs, hosts and
//! forwarding endpoints on this node, and reports which endpoints are live. It never
//! reads the store; snapshots come from the controller (in-process) or over HTTP.
//! Invariant: `setns` and every namespace operation live in `substrate::netns`.
#![forbid(unsafe_code)]

pub mod dns;
pub mod gateway;
pub mod kernel;
pub mod substrate;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use vpcep_model::{Change, Outcome, Snapshot, VpcSpec};

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
    current: Mutex<Snapshot>,
    /// The first apply prunes leftovers and rewrites the kernel state whatever it was.
    started: std::sync::atomic::AtomicBool,
    outcomes: RwLock<HashMap<String, Outcome>>,
    /// The VPC resolvers and the cloud resolver, when the node serves DNS.
    dns: Option<Dns>,
    /// The gateway-endpoint routes each VPC router holds now (set only on success, so
    /// a VPC whose routes could not be set is tried again at the next apply).
    routes: Mutex<HashMap<String, Vec<vpcep_model::RouteSpec>>>,
    /// The private names each VPC's resolver was given last (`publish_names`).
    dns_names: std::sync::Mutex<HashMap<String, BTreeMap<String, Ipv4Addr>>>,
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
            dns: None,
            routes: Mutex::default(),
            dns_names: Default::default(),
        }
    }

    /// Serves private DNS: a resolver in every VPC, and the cloud resolver if configured.
    pub fn with_dns(mut self, config: DnsConfig) -> Node {
        self.dns = Some(Dns::new(self.substrate.clone(), config));
        self
    }

    pub fn dns(&self) -> Option<&Dns> {
        self.dns.as_ref()
    }

    fn kernel_on(&self) -> bool {
        self.forwarding == Forwarding::Auto && self.substrate.kernel().is_some()
    }

    /// The snapshot the userspace gateway serves, and the endpoints of the kernel path.
    fn split(&self, s: &Snapshot) -> (Snapshot, Vec<vpcep_model::EndpointSpec>) {
        if !self.kernel_on() {
            return (s.clone(), Vec::new());
        }
        let (kernel, user): (Vec<_>, Vec<_>) =
            s.endpoints.iter().cloned().partition(kernel::eligible);
        (
            Snapshot {
                endpoints: user,
                ..s.clone()
            },
            kernel,
        )
    }

    pub fn substrate(&self) -> &Arc<dyn Substrate> {
        &self.substrate
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Applies the difference between what runs and `next`, idempotently; afterwards every
    /// endpoint of `next` has an outcome (up, or why not).
    pub async fn apply(&self, next: Snapshot) {
        let mut current = self.current.lock().await;
        if current.revision == next.revision && *current == next {
            return;
        }
        let first = !self.started.swap(true, std::sync::atomic::Ordering::AcqRel);
        if first {
            let (sub, keep) = (self.substrate.clone(), next.clone());
            log(blocking(move || sub.prune(&keep)).await, "prune");
        }
        let (user_cur, kernel_cur) = self.split(&current);
        let (user_next, kernel_next) = self.split(&next);
        let vpcs: HashMap<String, VpcSpec> = next
            .vpcs
            .iter()
            .map(|v| (v.id.clone(), v.clone()))
            .collect();
        let mut failed_vpcs: HashMap<String, String> = HashMap::new();
        for change in Snapshot::diff(&user_cur, &user_next) {
            let sub = self.substrate.clone();
            match change {
                Change::RemoveEndpoint(id) => {
                    self.gateway.stop(&id).await;
                    self.outcomes
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                Change::RemoveHost(h) => {
                    log(blocking(move || sub.remove_host(&h)).await, "remove host")
                }
                Change::RemoveVpc(id) => {
                    log(blocking(move || sub.remove_vpc(&id)).await, "remove VPC")
                }
                Change::AddVpc(v) => {
                    let id = v.id.clone();
                    if let Err(e) = blocking(move || sub.ensure_vpc(&v)).await {
                        tracing::warn!(vpc = %id, error = %e, "VPC could not be realised");
                        failed_vpcs.insert(id, e);
                    }
                }
                Change::RemoveIdc(i) => log(
                    blocking(move || sub.remove_idc(&i)).await,
                    "remove data centre",
                ),
                Change::AddIdc(i) => {
                    let Some(v) = vpcs.get(&i.vpc_id).cloned() else {
                        continue;
                    };
                    log(
                        blocking(move || sub.ensure_idc(&v, &i)).await,
                        "data centre",
                    );
                }
                Change::AddHost(h) => {
                    let Some(v) = vpcs.get(&h.vpc_id).cloned() else {
                        continue;
                    };
                    log(blocking(move || sub.ensure_host(&v, &h)).await, "host");
                }
                Change::UpdateEndpoint(e) => {
                    let outcome = self.gateway.update(&e, &vpcs).await;
                    self.outcomes
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(e.id.clone(), outcome);
                }
                Change::AddEndpoint(e) => {
                    let broken = [Some(&e.consumer_vpc), e.provider_vpc.as_ref()]
                        .into_iter()
                        .flatten()
                        .find_map(|v| failed_vpcs.get(v));
                    let outcome = match broken {
                        Some(why) => Err(format!("VPC not realised: {why}")),
                        None => self.gateway.start(&e, &vpcs).await,
                    };
                    if let Err(why) = &outcome {
                        tracing::warn!(endpoint = %e.id, error = %why, "endpoint could not come up");
                    }
                    self.outcomes
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(e.id.clone(), outcome);
                }
            }
        }
        if self.kernel_on()
            && (first || kernel_cur != kernel_next || user_cur.vpcs != user_next.vpcs)
        {
            self.apply_kernel(&next, &kernel_cur, &kernel_next, &failed_vpcs)
                .await;
        } else if first && self.substrate.kernel().is_some() {
            // Forced to userspace on a node that may hold kernel state from an earlier
            // run: clear it, or its routes would take the endpoints' traffic, and end its
            // sessions, whose conntrack entries would otherwise clash with the new ones.
            let eligible: Vec<_> = next
                .endpoints
                .iter()
                .filter(|e| kernel::eligible(e))
                .cloned()
                .collect();
            self.apply_kernel(&next, &eligible, &[], &failed_vpcs).await;
        }
        self.apply_routes(&next, &failed_vpcs).await;
        if let Some(dns) = &self.dns {
            if first {
                if let Err(e) = dns.start_cloud().await {
                    tracing::warn!(error = %e, "cloud DNS could not start");
                }
            }
            let live: Vec<VpcSpec> = next
                .vpcs
                .iter()
                .filter(|v| !failed_vpcs.contains_key(&v.id))
                .cloned()
                .collect();
            dns.sync(&live).await;
            self.publish_names(dns, &current, &next);
        }
        *current = next;
    }

    /// Makes every VPC router hold its gateway endpoints' routes where they differ from
    /// what it holds (after a start nothing is known to be held, so all are written,
    /// whatever an earlier run left).
    async fn apply_routes(&self, next: &Snapshot, failed_vpcs: &HashMap<String, String>) {
        let mut held = self.routes.lock().await;
        held.retain(|id, _| next.vpcs.iter().any(|v| v.id == *id));
        for vpc in next
            .vpcs
            .iter()
            .filter(|v| !failed_vpcs.contains_key(&v.id))
        {
            let want: Vec<vpcep_model::RouteSpec> = next
                .endpoints
                .iter()
                .filter(|e| e.consumer_vpc == vpc.id)
                .filter_map(|e| e.route.clone())
                .collect();
            if held.get(&vpc.id) == Some(&want) {
                continue;
            }
            let (sub, v, routes) = (self.substrate.clone(), vpc.clone(), want.clone());
            match blocking(move || sub.set_routes(&v, &routes)).await {
                Ok(()) => {
                    held.insert(vpc.id.clone(), want);
                }
                Err(e) => {
                    held.remove(&vpc.id);
                    tracing::warn!(vpc = %vpc.id, error = %e, "gateway endpoint routes failed");
                }
            }
        }
    }

    /// Gives the resolvers the names they answer: endpoints' private names once they are
    /// up (in their consumer VPC only), and the cloud's names. Only the VPCs whose names
    /// differ from what their resolver was given last are touched.
    fn publish_names(&self, dns: &Dns, current: &Snapshot, next: &Snapshot) {
        if current.cloud_names != next.cloud_names {
            dns.set_cloud(next.cloud_names.clone());
        }
        let mut wanted: HashMap<&str, BTreeMap<&str, Ipv4Addr>> = HashMap::new();
        {
            let outcomes = self.outcomes.read().unwrap_or_else(|p| p.into_inner());
            for e in &next.endpoints {
                let (Some(name), Some(Ok(()))) = (&e.dns_name, outcomes.get(&e.id)) else {
                    continue;
                };
                wanted
                    .entry(e.consumer_vpc.as_str())
                    .or_default()
                    .insert(name, e.ip);
            }
        }
        let mut given = self.dns_names.lock().unwrap_or_else(|p| p.into_inner());
        given.retain(|vpc, _| {
            if wanted.contains_key(vpc.as_str()) {
                return true;
            }
            if next.vpcs.iter().any(|v| v.id == *vpc) {
                dns.set_names(vpc, BTreeMap::new());
            } else {
                dns.drop_vpc(vpc);
            }
            false
        });
        for (vpc, names) in wanted {
            let same = given.get(vpc).is_some_and(|g| {
                let given = g.iter().map(|(n, ip)| (n.as_str(), *ip));
                given.eq(names.iter().map(|(n, ip)| (*n, *ip)))
            });
            if !same {
                let names: BTreeMap<String, Ipv4Addr> = names
                    .into_iter()
                    .map(|(n, ip)| (n.to_owned(), ip))
                    .collect();
                dns.set_names(vpc, names.clone());
                given.insert(vpc.to_owned(), names);
            }
        }
    }

    /// Rewrites the kernel path for `next` (atomically per namespace) and ends the sessions
    /// of endpoints that left it.
    async fn apply_kernel(
        &self,
        next: &Snapshot,
        before: &[vpcep_model::EndpointSpec],
        now: &[vpcep_model::EndpointSpec],
        failed_vpcs: &HashMap<String, String>,
    ) {
        let vpcs: std::collections::BTreeMap<String, VpcSpec> = next
            .vpcs
            .iter()
            .filter(|v| !failed_vpcs.contains_key(&v.id))
            .map(|v| (v.id.clone(), v.clone()))
            .collect();
        let usable: Vec<vpcep_model::EndpointSpec> = now
            .iter()
            .filter(|e| {
                vpcs.contains_key(&e.consumer_vpc)
                    && e.provider_vpc
                        .as_ref()
                        .is_some_and(|p| vpcs.contains_key(p))
            })
            .cloned()
            .collect();
        let refs: Vec<&vpcep_model::EndpointSpec> = usable.iter().collect();
        let (plans, links) = kernel::plan(&vpcs, &refs);
        let sub = self.substrate.clone();
        let result = blocking(move || match sub.kernel() {
            Some(k) => k.apply(&vpcs, &plans, &links),
            None => Ok(()),
        })
        .await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "kernel path could not be applied");
        }
        {
            let mut outcomes = self.outcomes.write().unwrap_or_else(|p| p.into_inner());
            for e in now {
                let outcome = match (&result, usable.iter().any(|u| u.id == e.id)) {
                    (Ok(()), true) => Ok(()),
                    (Ok(()), false) => Err("VPC not realised".to_owned()),
                    (Err(why), _) => Err(why.clone()),
                };
                outcomes.insert(e.id.clone(), outcome);
            }
        }
        for gone in before.iter().filter(|b| {
            !now.iter()
                .any(|n| n.id == b.id && n.marker_id == b.marker_id)
        }) {
            self.outcomes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&gone.id);
            let (sub, c, p, m) = (
                self.substrate.clone(),
                gone.consumer_vpc.clone(),
                gone.provider_vpc.clone().unwrap_or_default(),
                gone.marker_id,
            );
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(k) = sub.kernel() {
                    k.forget(&[&c, &p], m);
                }
            })
            .await;
        }
    }

    /// Prometheus text of this node: both paths, one family per metric.
    pub fn render_metrics(&self) -> String {
        let mut out = self.gateway.render_metrics(&self.kernel_samples());
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
        let Ok(current) = self.current.try_lock() else {
            return Vec::new();
        };
        let (_, eps) = self.split(&current);
        let mut by_vpc: HashMap<&str, HashMap<String, (u64, u64)>> = HashMap::new();
        let mut out = Vec::new();
        for e in &eps {
            let counters = by_vpc
                .entry(e.consumer_vpc.as_str())
                .or_insert_with(|| k.counters(&e.consumer_vpc));
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
                    .get(&format!("{counter}_{}", e.marker_id))
                    .copied()
                    .unwrap_or((0, 0));
                out.push((metric, e.id.clone(), if bytes { octets } else { packets }));
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

fn log(r: Result<(), String>, what: &str) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "{what} failed");
    }
}
