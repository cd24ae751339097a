//! The controller moves resources out of transitional statuses (`creating`, `deleting`)
//! once they are real. It watches the store's revision, never the API: handlers only
//! write rows. What "real" means is asked of a [`DataPlane`]; with none attached yet, a
//! committed row counts as live ([`CommittedIsLive`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vpcep_store::{Store, Transitional};

/// Reports whether what a resource needs is up. `None`: not yet, ask again later.
pub trait DataPlane: Send + Sync + 'static {
    fn service_outcome(&self, id: &str) -> Option<Result<(), String>>;
    fn endpoint_outcome(&self, id: &str) -> Option<Result<(), String>>;
}

/// The control plane alone: nothing to bring up, so a committed row is live.
pub struct CommittedIsLive;

impl DataPlane for CommittedIsLive {
    fn service_outcome(&self, _: &str) -> Option<Result<(), String>> {
        Some(Ok(()))
    }

    fn endpoint_outcome(&self, _: &str) -> Option<Result<(), String>> {
        Some(Ok(()))
    }
}

/// One pass over the transitional rows. Returns how many moved.
pub async fn step(
    store: &dyn Store,
    plane: &dyn DataPlane,
    t: Transitional,
) -> vpcep_store::Result<usize> {
    let mut moved = 0;
    for id in t.services_creating {
        if let Some(outcome) = plane.service_outcome(&id) {
            store.settle_service(id, outcome).await?;
            moved += 1;
        }
    }
    for id in t.endpoints_creating {
        if let Some(outcome) = plane.endpoint_outcome(&id) {
            store.settle_endpoint(id, outcome).await?;
            moved += 1;
        }
    }
    for id in t.endpoints_deleting {
        store.finish_endpoint_deletion(id).await?;
        moved += 1;
    }
    for id in t.services_deleting {
        store.finish_service_deletion(id).await?;
        moved += 1;
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
