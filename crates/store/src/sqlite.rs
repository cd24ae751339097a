//! The embedded engine: SQLite in WAL mode with `synchronous=FULL` in the server's data
//! directory, so a commit that was acknowledged survives `kill -9` and power loss alike.
//! Writers take the database lock up front (`BEGIN IMMEDIATE`), which serialises them
//! across processes too, e.g. `vpcep admin` beside a running server.

use std::path::Path;

use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::sql::{pool_options, Engine};
use crate::{MasterKey, Result};

/// Every connection's settings. `busy_timeout`: how long a writer of another process
/// waits for the database lock before the write fails.
/// The wait comes first: setting the journal mode needs the database's lock, which another
/// connection may hold for a moment.
const PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                       PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

pub(crate) async fn connect(dir: &Path) -> Result<(AnyPool, Engine, MasterKey)> {
    std::fs::create_dir_all(dir)?;
    let key = MasterKey::load_or_create(dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("vpcep.db").display());
    let pool = pool_options()
        .after_connect(|conn, _| Box::pin(async move { conn.execute(PRAGMAS).await.map(drop) }))
        .after_release(|conn, _| Box::pin(reusable(conn)))
        .connect(&url)
        .await?;
    Ok((pool, Engine::Sqlite, key))
}

/// Whether a connection given back to the pool may serve again. A transaction whose
/// COMMIT or ROLLBACK failed — SQLite rolls a transaction back by itself on `SQLITE_FULL`
/// and some I/O errors, after which sqlx's ROLLBACK fails too — leaves sqlx counting the
/// connection as inside a transaction, and every later `BEGIN` on it would fail
/// ("attempted to call begin_with at non-zero transaction depth") until a restart. Such
/// a connection is closed instead (closing rolls back whatever SQLite still holds) and
/// the pool opens a fresh one.
async fn reusable(conn: &mut AnyConnection) -> std::result::Result<bool, sqlx::Error> {
    // The rollback of a transaction dropped without commit is queued on the
    // connection's worker; a ping is answered after it.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("a store connection was left inside a failed transaction; closing it");
        return Ok(false);
    }
    Ok(true)
}

/// A consistent copy of the live database in `to` (which must not exist), made while
/// servers keep writing: `VACUUM INTO` reads one snapshot.
pub(crate) async fn backup(pool: &AnyPool, to: &Path) -> Result<()> {
    sqlx::query("VACUUM INTO $1")
        .bind(to.display().to_string())
        .execute(pool)
        .await?;
    Ok(())
}
