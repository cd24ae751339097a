//! The data plane of vpcep: it turns a desired-state [`Snapshot`] into VPCs, hosts and
//! forwarding endpoints on this node, and reports which endpoints are live. It never
//! reads the store; snapshots come from the controller (in-process) or over HTTP.
//! Invariant: `setns` and every namespace operation live in `substrate::netns`.
#![forbid(unsafe_code)]

pub mod gateway;
pub mod substrate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use vpcep_model::{Change, Outcome, Snapshot, VpcSpec};

pub use gateway::Gateway;
pub use substrate::loopback::Loopback;
pub use substrate::netns::Netns;
pub use substrate::Substrate;

/// A data-plane node: substrate plus gateway, following snapshots.
pub struct Node {
    substrate: Arc<dyn Substrate>,
    gateway: Gateway,
    current: Mutex<Snapshot>,
    pruned: std::sync::atomic::AtomicBool,
    outcomes: RwLock<HashMap<String, Outcome>>,
}

impl Node {
    pub fn new(substrate: Arc<dyn Substrate>) -> Node {
        Node {
            gateway: Gateway::new(substrate.clone()),
            substrate,
            current: Mutex::default(),
            pruned: std::sync::atomic::AtomicBool::new(false),
            outcomes: RwLock::default(),
        }
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
        if !self.pruned.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (sub, keep) = (self.substrate.clone(), next.clone());
            log(blocking(move || sub.prune(&keep)).await, "prune");
        }
        let vpcs: HashMap<String, VpcSpec> = next
            .vpcs
            .iter()
            .map(|v| (v.id.clone(), v.clone()))
            .collect();
        let mut failed_vpcs: HashMap<String, String> = HashMap::new();
        for change in Snapshot::diff(&current, &next) {
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
        *current = next;
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
