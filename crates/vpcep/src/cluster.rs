//! One controller among replicas. On the embedded store the one server always runs the
//! controller (its data-directory lock keeps it alone). Replicas of one PostgreSQL
//! database take turns through a lease, a session advisory lock: the holder runs the
//! controller; the others try again every second, so when the holder dies (even by
//! SIGKILL, which ends its database session at once) another takes over within about a
//! second. Every replica says every [`HEARTBEAT`] who it is and whether it leads, for
//! `vpcep admin cluster status`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vpcep_api::Role;
use vpcep_store::postgres::Lease;
use vpcep_store::Store;

use crate::controller::{self, Wiring};

/// How often a replica says it is alive (and a candidate asks for the lease).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the leader checks that its lease's session still answers, and how long it
/// waits for the answer.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Runs the controller while this process may, until `shutdown`: always on the embedded
/// store (`lease_url` `None`), while holding the lease on PostgreSQL.
pub async fn lead(
    lease_url: Option<String>,
    role: Arc<Role>,
    wiring: impl Fn(watch::Receiver<bool>) -> Wiring,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(url) = lease_url else {
        role.leading.store(true, Ordering::Relaxed);
        controller::run(wiring(shutdown)).await;
        return;
    };
    while !*shutdown.borrow() {
        let mut lease = match Lease::try_acquire(&url).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), shutdown.changed()).await;
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot ask for the controller lease: {e}");
                let _ = tokio::time::timeout(Duration::from_secs(1), shutdown.changed()).await;
                continue;
            }
        };
        tracing::info!(replica = %role.name, "this replica holds the controller lease: it runs the controller");
        role.leading.store(true, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let ctl = tokio::spawn(controller::run(wiring(stopped)));
        let lost = loop {
            tokio::select! {
                _ = tokio::time::sleep(LEASE_CHECK) => {
                    if !lease.held(LEASE_CHECK).await {
                        break true;
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break false;
                    }
                }
            }
        };
        let _ = stop.send(true);
        let _ = ctl.await;
        role.leading.store(false, Ordering::Relaxed);
        if lost {
            tracing::warn!(replica = %role.name, "lost the controller lease (its database session stopped answering); asking again");
        } else {
            lease.release().await;
        }
    }
}

/// Says every [`HEARTBEAT`] that this replica is alive and whether it leads, until
/// `shutdown`; then once more, not leading.
pub async fn heartbeat(
    store: Arc<dyn Store>,
    role: Arc<Role>,
    address: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut said_leading = None;
    loop {
        let leading = role.leading();
        if let Err(e) = store
            .heartbeat(role.name.clone(), address.clone(), leading)
            .await
        {
            tracing::warn!("cannot record this replica's heartbeat: {e}");
        } else if said_leading != Some(leading) {
            said_leading = Some(leading);
        }
        if *shutdown.borrow() {
            break;
        }
        // A change of leadership is said at once, the rest every HEARTBEAT.
        let deadline = tokio::time::Instant::now() + HEARTBEAT;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if said_leading != Some(role.leading()) {
                        break;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
    let _ = store.heartbeat(role.name.clone(), address, false).await;
}
