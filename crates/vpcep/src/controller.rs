//! The controller moves resources out of transitional statuses (`creating`, `deleting`)
//! once they are real. It watches the store's revision, never the API: handlers only
//! write rows. What "real" means is asked of a [`DataPlane`]; with none attached yet, a
//! committed row counts as live ([`CommittedIsLive`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vpcep_store::{Outcome, Store, Transitional};

/// Reports whether what a resource needs is up. `None`: not yet, ask again later.
pub trait DataPlane: Send + Sync + 'static {
    fn service_outcome(&self, id: &str) -> Option<Outcome>;
    fn endpoint_outcome(&self, id: &str) -> Option<Outcome>;
}

/// The control plane alone: nothing to bring up, so a committed row is live.
pub struct CommittedIsLive;

impl DataPlane for CommittedIsLive {
    fn service_outcome(&self, _: &str) -> Option<Outcome> {
        Some(Ok(()))
    }

    fn endpoint_outcome(&self, _: &str) -> Option<Outcome> {
        Some(Ok(()))
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

/// Runs until `shutdown` turns true: after every commit seen on `revision`, and once a
/// second for commits made by other processes (e.g. `vpcep admin`).
pub async fn run(
    store: Arc<dyn Store>,
    plane: Arc<dyn DataPlane>,
    mut revision: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match store.transitional().await {
            Ok(t) if !t.is_empty() => match step(store.as_ref(), plane.as_ref(), t).await {
                Ok(n) => tracing::debug!(moved = n, "controller pass"),
                Err(e) => tracing::warn!(error = %e, "controller pass failed; retrying"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "controller could not read the store"),
        }
        tokio::select! {
            _ = revision.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
}
