//! The shared engine: one PostgreSQL database behind any number of replicas. What it
//! adds to the SQL both engines share:
//! - writers take a transaction-scoped advisory lock ([`crate::sql::WRITE_LOCK`]), so
//!   read-check-writes stay exact across machines and revisions have one order;
//! - every commit sends its revision on `vpcep_revision` (NOTIFY, delivered at commit),
//!   and each replica follows the channel ([`follow`]);
//! - the controller's lease is a session-level advisory lock on a connection of its own
//!   ([`Lease`]): PostgreSQL lets it go the moment that session ends, a killed process
//!   included.

use std::path::Path;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::watch;

use crate::sql::{advance, pool_options, Engine};
use crate::{MasterKey, Result, StoreError};

/// The channel commits are announced on.
const CHANNEL: &str = "vpcep_revision";
/// The session advisory lock whose holder runs the controller.
const LEASE_LOCK: i64 = 0x7670_6365_7002;
/// How often a replica reads the revision even when no notification came (the listener's
/// connection may have been down).
const POLL: Duration = Duration::from_secs(2);

pub(crate) async fn connect(url: &str, key_dir: &Path) -> Result<(AnyPool, Engine, MasterKey)> {
    std::fs::create_dir_all(key_dir)?;
    let key = MasterKey::load_or_create(key_dir)?;
    let pool = pool_options()
        // While PostgreSQL cannot be reached a request fails (503) after this, rather
        // than holding its client for long.
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok((pool, Engine::Postgres, key))
}

/// Every replica must seal secret keys with the same master key: the database keeps a
/// check value of the first one, and a replica with another key is refused.
pub(crate) async fn check_key(conn: &mut AnyConnection, key: &MasterKey) -> Result<()> {
    let mine = key.check_value();
    let held: Option<i64> = sqlx::query_scalar("SELECT v FROM meta WHERE k = 'key_check'")
        .fetch_optional(&mut *conn)
        .await?;
    match held {
        Some(v) if v == mine => Ok(()),
        Some(_) => Err(StoreError::Corrupt(
            "this replica's master.key is not the one the database's secrets were sealed with: \
             copy master.key from a replica that has served this database (same file on every replica)"
                .into(),
        )),
        None => {
            sqlx::query("INSERT INTO meta (k, v) VALUES ('key_check', $1)")
                .bind(mine)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}

/// Announces `rev` to the other replicas when the transaction on `conn` commits.
pub(crate) async fn notify(conn: &mut AnyConnection, rev: i64) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(rev.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps `revision` at the newest commit of any replica: from notifications, and from a
/// read every [`POLL`] (and after the listener reconnects), until aborted.
pub(crate) fn follow(
    url: String,
    pool: AnyPool,
    revision: watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let read = |pool: AnyPool, revision: watch::Sender<u64>| async move {
            if let Ok(v) = sqlx::query_scalar::<_, i64>("SELECT v FROM meta WHERE k = 'revision'")
                .fetch_one(&pool)
                .await
            {
                advance(&revision, v as u64);
            }
        };
        loop {
            let mut listener = match PgListener::connect(&url).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("cannot follow the revisions of other replicas: {e}");
                    tokio::time::sleep(POLL).await;
                    read(pool.clone(), revision.clone()).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!("cannot LISTEN {CHANNEL}: {e}");
                tokio::time::sleep(POLL).await;
                continue;
            }
            read(pool.clone(), revision.clone()).await;
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => {
                            if let Ok(v) = n.payload().parse::<u64>() {
                                advance(&revision, v);
                            }
                        }
                        // The connection dropped (it reconnects on the next call):
                        // notifications may have been missed meanwhile.
                        Ok(None) => read(pool.clone(), revision.clone()).await,
                        Err(e) => {
                            tracing::warn!("following the revisions: {e}");
                            break;
                        }
                    },
                    _ = tick.tick() => read(pool.clone(), revision.clone()).await,
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The controller's lease: held while this connection's session lives.
pub struct Lease {
    conn: PgConnection,
}

impl Lease {
    /// Takes the lease if no other replica holds it.
    pub async fn try_acquire(url: &str) -> Result<Option<Lease>> {
        let mut conn = PgConnection::connect(url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEASE_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Lease { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Whether the lease is still held: its session answers within `timeout`. Once
    /// this says no, the lease is gone for good (another replica may hold it already).
    pub async fn held(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.conn.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Gives the lease up at once (a clean stop), for another replica to take.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LEASE_LOCK)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
