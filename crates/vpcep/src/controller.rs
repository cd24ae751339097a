//! The controller keeps the world in step with the store. After every commit (and once a
//! second, for commits of other processes) it reads what changed in the desired state
//! since the revision the data plane applied last, has the data plane apply it, then
//! moves resources out of transitional statuses (`creating`, `deleting`) according to
//! what is actually live. Handlers only write rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vpcep_dataplane::Node;
use vpcep_store::{Outcome, Store, Transitional};

/// Reports whether what a resource needs is up. `None`: not yet, ask again later.
pub trait DataPlane: Send + Sync + 'static {
    fn service_outcome(&self, id: &str) -> Option<Outcome>;
    fn endpoint_outcome(&self, id: &str) -> Option<Outcome>;
}

impl DataPlane for Node {
    /// A service is a row plus its VPC, which every snapshot realises; it is ready.
    fn service_outcome(&self, _: &str) -> Option<Outcome> {
        Some(Ok(()))
    }

    fn endpoint_outcome(&self, id: &str) -> Option<Outcome> {
        Node::endpoint_outcome(self, id)
    }
}

/// One pass over the transitional rows: at most three transactions, however many rows.
pub async fn step(
    store: &dyn Store,
    plane: &dyn DataPlane,
    t: Transitional,
) -> vpcep_store::Result<usize> {
    let services: Vec<_> = t
        .services_creating
        .into_iter()
        .filter_map(|id| plane.service_outcome(&id).map(|o| (id, o)))
        .collect();
    let endpoints: Vec<_> = t
        .endpoints_creating
        .into_iter()
        .filter_map(|(id, needs_plane)| {
            let outcome = if needs_plane {
                plane.endpoint_outcome(&id)
            } else {
                Some(Ok(()))
            };
            outcome.map(|o| (id, o))
        })
        .collect();
    let moved =
        services.len() + endpoints.len() + t.services_deleting.len() + t.endpoints_deleting.len();
    if !services.is_empty() {
        store.settle_services(services).await?;
    }
    if !endpoints.is_empty() {
        store.settle_endpoints(endpoints).await?;
    }
    if !t.services_deleting.is_empty() || !t.endpoints_deleting.is_empty() {
        store
            .finish_deletions(t.services_deleting, t.endpoints_deleting)
            .await?;
    }
    Ok(moved)
}

impl DataPlane for vpcep_api::NodeReports {
    fn service_outcome(&self, _: &str) -> Option<Outcome> {
        Some(Ok(()))
    }

    fn endpoint_outcome(&self, id: &str) -> Option<Outcome> {
        vpcep_api::NodeReports::endpoint_outcome(self, id)
    }
}

/// What the controller works with.
pub struct Wiring {
    pub store: Arc<dyn Store>,
    /// Who says whether endpoints are live: the local node, or the remote nodes' reports.
    pub plane: Arc<dyn DataPlane>,
    /// The in-process data plane, which the controller feeds snapshots.
    pub local: Option<Arc<Node>>,
    pub revision: watch::Receiver<u64>,
    pub reports: watch::Receiver<u64>,
    /// The gateway nodes' reports are in the store (replicas of one database), not in
    /// `plane`.
    pub shared_reports: bool,
    /// How long a machine may be silent before it is declared down.
    pub machine_down_after: Duration,
    pub shutdown: watch::Receiver<bool>,
}

/// What the gateway nodes said of some endpoints, read from the store for one pass.
struct Reported(HashMap<String, Outcome>);

impl DataPlane for Reported {
    fn service_outcome(&self, _: &str) -> Option<Outcome> {
        Some(Ok(()))
    }

    fn endpoint_outcome(&self, id: &str) -> Option<Outcome> {
        self.0.get(id).cloned()
    }
}

/// Brings the node to the store's revision: what changed since the revision it applied
/// last, or the whole desired state at start and when those changes are no longer known.
async fn feed(store: &dyn Store, node: &Node) -> vpcep_store::Result<()> {
    if let Some(rev) = node.applied_revision() {
        if let Some(delta) = store.changes_since(rev).await? {
            if node.apply_delta(delta).await {
                return Ok(());
            }
        }
    }
    node.apply(store.snapshot().await?).await;
    Ok(())
}

/// The machines of a deployment across machines: declared down when silent, and the
/// gateway pair's slots moved to spares (see `Store::tend_machines`). Nobody is declared
/// down before this controller has led for `machine_down_after`: a controller that has
/// just taken over (or started) has not yet heard the machines' reports.
async fn tend(w: &Wiring, leading_since: Instant) -> vpcep_store::Result<()> {
    let declare = leading_since.elapsed() >= w.machine_down_after;
    let t = w
        .store
        .tend_machines(w.machine_down_after.as_secs(), declare)
        .await?;
    for name in &t.down {
        tracing::warn!(machine = %name, silent_secs = w.machine_down_after.as_secs(), "machine declared down");
    }
    for (name, slot) in &t.slots {
        match slot {
            Some(s) => {
                tracing::info!(machine = %name, slot = s, "machine takes a slot of the gateway pair")
            }
            None => {
                tracing::info!(machine = %name, "machine gives up its slot of the gateway pair")
            }
        }
    }
    Ok(())
}

async fn pass(w: &Wiring) -> vpcep_store::Result<usize> {
    let began = Instant::now();
    if let Some(node) = &w.local {
        feed(w.store.as_ref(), node).await?;
    }
    let fed = began.elapsed();
    let t = w.store.transitional().await?;
    if t.is_empty() {
        return Ok(0);
    }
    let moved = if w.shared_reports {
        let asked = t
            .endpoints_creating
            .iter()
            .filter(|(_, needs_plane)| *needs_plane)
            .map(|(id, _)| id.clone())
            .collect();
        let said = w
            .store
            .gateway_outcomes(asked, vpcep_api::REPORT_TTL.as_secs())
            .await?;
        step(w.store.as_ref(), &Reported(said.into_iter().collect()), t).await?
    } else {
        step(w.store.as_ref(), w.plane.as_ref(), t).await?
    };
    tracing::debug!(
        moved,
        fed_ms = fed.as_secs_f64() * 1e3,
        settled_ms = (began.elapsed() - fed).as_secs_f64() * 1e3,
        "controller pass"
    );
    Ok(moved)
}

/// Runs until `shutdown` turns true: after every commit, every node report, and once a
/// second (for commits of other processes, e.g. `vpcep admin`).
pub async fn run(mut w: Wiring) {
    let leading_since = Instant::now();
    let mut tended: Option<Instant> = None;
    loop {
        if tended.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tended = Some(Instant::now());
            if let Err(e) = tend(&w, leading_since).await {
                tracing::warn!(error = %e, "tending the machines failed; retrying");
            }
        }
        match pass(&w).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(moved = n, "controller pass"),
            Err(e) => tracing::warn!(error = %e, "controller pass failed; retrying"),
        }
        tokio::select! {
            _ = w.revision.changed() => {}
            _ = w.reports.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = w.shutdown.changed() => {}
        }
        if *w.shutdown.borrow() {
            break;
        }
    }
}
