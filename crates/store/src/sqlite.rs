//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a commit that was
//! acknowledged survives `kill -9` and power loss alike. Writers take the lock up front
//! (`BEGIN IMMEDIATE`), which serialises every read-check-write (quotas, addresses,
//! marker ids) across processes too, e.g. `vpcep admin` beside a running server.

mod accounts;
mod controller;
mod desired;
mod dns;
mod endpoints;
mod idcs;
mod migrate;
mod runs;
mod services;
mod tags;
mod vpc;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::sync::Arc;

use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use vpcep_model::{Reason, Rejection};

use crate::{MasterKey, Page, Result, SortKey, StoreError};

pub struct SqliteStore {
    pool: SqlitePool,
    key: MasterKey,
    revision: watch::Sender<u64>,
    /// Writers of this process queue here, first come first served, instead of spinning
    /// in SQLite's busy handler; other processes still meet the database lock.
    writer: Arc<Mutex<()>>,
}

/// A write transaction that holds this process's writer turn until it ends.
struct Tx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl std::ops::Deref for Tx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: `vpcep.db` and `master.key`. A
    /// database of an older schema is migrated in place; one of a newer schema is refused.
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = MasterKey::load_or_create(dir)?;
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(dir.join("vpcep.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .after_release(|conn, _| Box::pin(reusable(conn)))
            .connect_with(opts)
            .await?;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        migrate::migrate(&mut tx, migrate::LATEST).await?;
        tx.commit().await?;
        let rev: i64 = sqlx::query_scalar("SELECT v FROM meta WHERE k = 'revision'")
            .fetch_one(&pool)
            .await?;
        let (revision, _) = watch::channel(rev as u64);
        Ok(SqliteStore {
            pool,
            key,
            revision,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Follows the revision: it changes after every commit made through this handle.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn revision(&self) -> Result<u64> {
        let rev: i64 = sqlx::query_scalar("SELECT v FROM meta WHERE k = 'revision'")
            .fetch_one(&self.pool)
            .await?;
        Ok(rev as u64)
    }

    async fn begin(&self) -> Result<Tx> {
        let turn = self.writer.clone().lock_owned().await;
        Ok(Tx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _turn: turn,
        })
    }

    /// Advances the revision inside `tx`, commits, and tells the watchers.
    async fn commit(&self, mut tx: Tx) -> Result<()> {
        let rev: i64 =
            sqlx::query_scalar("UPDATE meta SET v = v + 1 WHERE k = 'revision' RETURNING v")
                .fetch_one(&mut *tx)
                .await?;
        if rev % 1000 == 0 {
            // Tombstones are read by those following the revisions; one that has fallen
            // this far behind reads the desired state whole instead.
            let floor = rev - desired::GONE_KEPT;
            sqlx::query("DELETE FROM gone WHERE rev <= ?")
                .bind(floor)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE meta SET v = MAX(v, ?) WHERE k = 'gone_floor'")
                .bind(floor)
                .execute(&mut *tx)
                .await?;
        }
        tx.tx.commit().await?;
        self.revision.send_replace(rev as u64);
        Ok(())
    }

    async fn read(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        Ok(self.pool.acquire().await?)
    }
}

/// Whether a connection given back to the pool may serve again. A transaction whose
/// COMMIT or ROLLBACK failed — SQLite rolls a transaction back by itself on `SQLITE_FULL`
/// and some I/O errors, after which sqlx's ROLLBACK fails too — leaves sqlx counting the
/// connection as inside a transaction, and every later `BEGIN` on it would fail
/// ("attempted to call begin_with at non-zero transaction depth") until a restart. Such
/// a connection is closed instead (closing rolls back whatever SQLite still holds) and
/// the pool opens a fresh one.
async fn reusable(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    // The rollback of a transaction dropped without commit is queued on the
    // connection's worker; a ping is answered after it.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("a store connection was left inside a failed transaction; closing it");
        return Ok(false);
    }
    Ok(true)
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `ORDER BY … LIMIT … OFFSET …` for a page, with the id as tiebreaker so that walking
/// the pages returns every row exactly once.
fn order_clause(page: &Page, alias: &str) -> String {
    let col = match page.sort {
        SortKey::Created => "created_at",
        SortKey::Updated => "updated_at",
    };
    let dir = if page.desc { "DESC" } else { "ASC" };
    format!(
        " ORDER BY {alias}{col} {dir}, {alias}id {dir} LIMIT {} OFFSET {}",
        page.limit.max(0),
        page.offset.max(0)
    )
}

/// A LIKE pattern that matches `needle` anywhere, case-insensitively, with `%`, `_` and
/// `\` in the needle taken literally (use with `ESCAPE '\'`).
fn like_pattern(needle: &str) -> String {
    let mut out = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("json column: {e}")))
}

fn not_found(what: &str) -> StoreError {
    Rejection::not_found(what).into()
}

fn reject<T>(reason: Reason, msg: impl Into<String>) -> Result<T> {
    Err(Rejection::new(reason, msg).into())
}

async fn exists(conn: &mut SqliteConnection, sql: &str, args: &[&str]) -> Result<bool> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(conn).await?.is_some())
}

#[cfg(test)]
mod tests;
