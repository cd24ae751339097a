//! The store's SQL, one dialect for both engines: SQLite embedded in the server's data
//! directory (`crate::sqlite`) and PostgreSQL shared by replicas (`crate::postgres`).
//! Statements are written with `?` placeholders and numbered (`$1`, `$2`, …) on their
//! way out, which both engines read; the few phrases the engines spell differently come
//! from [`Engine`]. Writers take the database's write lock up front (SQLite's `BEGIN
//! IMMEDIATE`, a PostgreSQL transaction-scoped advisory lock), which serialises every
//! read-check-write (quotas, addresses, marker ids) across processes and machines, and
//! gives the revisions one order.

mod accounts;
mod cluster;
mod controller;
mod desired;
mod dns;
mod endpoints;
mod idcs;
mod machines;
pub(crate) mod migrate;
mod runs;
mod services;
mod tags;
mod vpc;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Transaction};
use tokio::sync::{watch, Mutex, OwnedMutexGuard};
use vpcep_model::{Reason, Rejection};

use crate::{MasterKey, Page, Result, SortKey, StoreError};

/// Which database a store lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `vpcep.db` and `master.key` in a data directory, for one server.
    Sqlite { dir: PathBuf },
    /// A PostgreSQL database shared by any number of replicas; the master key that
    /// seals secret keys is `master.key` in `key_dir`, the same file on every replica.
    Postgres { url: String, key_dir: PathBuf },
}

impl Database {
    /// The store of `--database URL` and `--data-dir DIR`: SQLite in `dir` without a URL;
    /// PostgreSQL for `postgres://…` (or `postgresql://…`), the master key in `dir`;
    /// any other URL is refused.
    pub fn new(url: Option<&str>, dir: PathBuf) -> std::result::Result<Database, String> {
        let Some(url) = url else {
            return Ok(Database::Sqlite { dir });
        };
        let key_dir = dir;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres {
                url: url.to_owned(),
                key_dir,
            })
        } else {
            Err(format!(
                "--database takes a postgres://… URL (without it the store is SQLite in --data-dir); got {:?}",
                redact(url)
            ))
        }
    }

    /// Where it is, for people: a URL's password is left out.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite { dir } => format!("SQLite in {}", dir.display()),
            Database::Postgres { url, .. } => format!("PostgreSQL at {}", redact(url)),
        }
    }
}

/// `url` without the password it may carry.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &user[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The two engines, and the phrases they spell differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn of(conn: &AnyConnection) -> Engine {
        if conn.backend_name() == "PostgreSQL" {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }

    /// The members of a JSON array of strings bound at this `?`, as a subquery.
    fn json_members(self) -> &'static str {
        match self {
            Engine::Sqlite => "SELECT value FROM json_each(?)",
            Engine::Postgres => "SELECT json_array_elements_text(CAST(? AS json))",
        }
    }

    /// `col` in a condition that must not pick the column's index: SQLite's planner
    /// takes the status index and walks every accepted endpoint unless told not to
    /// (`+col`); PostgreSQL's weighs it by its statistics.
    fn unindexed(self, col: &str) -> String {
        match self {
            Engine::Sqlite => format!("+{col}"),
            Engine::Postgres => col.to_owned(),
        }
    }

    /// Where the text bound at `?` first occurs in column `hay`, 1-based, 0 when
    /// nowhere: a plain, case-sensitive substring (`%` and `_` included).
    fn position(self, hay: &str) -> String {
        match self {
            Engine::Sqlite => format!("instr({hay}, ?)"),
            Engine::Postgres => format!("strpos({hay}, ?)"),
        }
    }

    /// A text key that sorts as `(created_at, id)` does (created_at is never negative).
    fn age_key(self, alias: &str) -> String {
        match self {
            Engine::Sqlite => format!("printf('%020d', {alias}created_at) || {alias}id"),
            Engine::Postgres => {
                format!("lpad(CAST({alias}created_at AS text), 20, '0') || {alias}id")
            }
        }
    }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … (and `?N` as `$N`), outside
/// quoted text: the spelling both engines read.
pub(crate) fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next.to_string());
                    next += 1;
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub struct SqlStore {
    pool: AnyPool,
    engine: Engine,
    key: MasterKey,
    revision: watch::Sender<u64>,
    /// Writers of this process queue here, first come first served, instead of on the
    /// database's lock; other processes still meet that lock.
    writer: Arc<Mutex<()>>,
    /// Follows the commits of other processes (PostgreSQL), until the store is closed.
    follower: Option<tokio::task::JoinHandle<()>>,
}

/// A write transaction that holds this process's writer turn until it ends.
struct Tx {
    tx: Transaction<'static, Any>,
    _turn: OwnedMutexGuard<()>,
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The PostgreSQL advisory lock every write transaction takes first.
pub(crate) const WRITE_LOCK: i64 = 0x7670_6365_7001;

impl SqlStore {
    /// Opens the store, creating its schema on first use. A database of an older schema
    /// is migrated in place; one of a newer schema is refused.
    pub async fn open(db: &Database) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (pool, engine, key) = match db {
            Database::Sqlite { dir } => crate::sqlite::connect(dir).await?,
            Database::Postgres { url, key_dir } => crate::postgres::connect(url, key_dir).await?,
        };
        let mut store = SqlStore {
            pool,
            engine,
            key,
            revision: watch::channel(0).0,
            writer: Arc::new(Mutex::new(())),
            follower: None,
        };
        {
            let mut tx = store.begin().await?;
            migrate::migrate(&mut tx, engine, migrate::LATEST).await?;
            if engine == Engine::Postgres {
                crate::postgres::check_key(&mut tx, &store.key).await?;
            }
            tx.tx.commit().await?;
        }
        let rev = store.revision().await?;
        store.revision.send_replace(rev);
        if let Database::Postgres { url, .. } = db {
            store.follower = Some(crate::postgres::follow(
                url.clone(),
                store.pool.clone(),
                store.revision.clone(),
            ));
        }
        Ok(store)
    }

    /// The embedded store in `dir`.
    pub async fn open_sqlite(dir: &std::path::Path) -> Result<Self> {
        Self::open(&Database::Sqlite {
            dir: dir.to_owned(),
        })
        .await
    }

    /// The schema version of the store in `db` without changing it: 0 when there is none
    /// yet.
    pub async fn schema_version(db: &Database) -> Result<i64> {
        sqlx::any::install_default_drivers();
        let mut conn = match db {
            Database::Sqlite { dir } => {
                if !dir.join("vpcep.db").exists() {
                    return Ok(0);
                }
                let url = format!("sqlite://{}?mode=ro", dir.join("vpcep.db").display());
                AnyConnection::connect(&url).await?
            }
            Database::Postgres { url, .. } => AnyConnection::connect(url).await?,
        };
        let engine = Engine::of(&conn);
        let v = migrate::version(&mut conn, engine).await;
        let _ = conn.close().await;
        v
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Follows the revision: it changes after every commit made through this handle, and
    /// (PostgreSQL) soon after every commit of another replica.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    pub async fn close(&self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
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
        let tx = match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(Tx { tx, _turn: turn })
    }

    /// A read-only transaction that sees one committed state throughout.
    async fn read_tx(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin().await?,
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// Advances the revision inside `tx`, commits, and tells the watchers (and, on
    /// PostgreSQL, the other replicas).
    async fn commit(&self, mut tx: Tx) -> Result<()> {
        let rev: i64 =
            sqlx::query_scalar("UPDATE meta SET v = v + 1 WHERE k = 'revision' RETURNING v")
                .fetch_one(&mut *tx)
                .await?;
        if rev % 1000 == 0 {
            // Tombstones are read by those following the revisions; one that has fallen
            // this far behind reads the desired state whole instead.
            let floor = rev - desired::GONE_KEPT;
            sqlx::query("DELETE FROM gone WHERE rev <= $1")
                .bind(floor)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE meta SET v = $1 WHERE k = 'gone_floor' AND v < $1")
                .bind(floor)
                .execute(&mut *tx)
                .await?;
        }
        if self.engine == Engine::Postgres {
            crate::postgres::notify(&mut tx, rev).await?;
        }
        tx.tx.commit().await?;
        advance(&self.revision, rev as u64);
        Ok(())
    }

    async fn read(&self) -> Result<sqlx::pool::PoolConnection<Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// A consistent copy of the live SQLite store in the new file `to`, while servers
    /// keep writing. PostgreSQL's copies are `pg_dump`'s.
    pub async fn backup(&self, to: &std::path::Path) -> Result<()> {
        match self.engine {
            Engine::Sqlite => crate::sqlite::backup(&self.pool, to).await,
            Engine::Postgres => Err(StoreError::Io(std::io::Error::other(
                "a PostgreSQL store is backed up with pg_dump (docs/operations.md)",
            ))),
        }
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Moves the revision watchers on to `rev`, never back.
pub(crate) fn advance(revision: &watch::Sender<u64>, rev: u64) {
    revision.send_if_modified(|r| {
        if rev > *r {
            *r = rev;
            true
        } else {
            false
        }
    });
}

/// Pool settings both engines share.
pub(crate) fn pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(8)
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

/// A `LIMIT` to bind for at most `limit` rows, all of them for a negative one (a
/// negative `LIMIT` is "none" to SQLite but an error to PostgreSQL).
fn limit_all(limit: i64) -> i64 {
    if limit < 0 {
        i64::MAX
    } else {
        limit
    }
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

async fn exists(conn: &mut AnyConnection, sql: &str, args: &[&str]) -> Result<bool> {
    let sql = numbered(sql);
    let mut q = sqlx::query_scalar::<_, i64>(&sql);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.fetch_optional(conn).await?.is_some())
}

#[cfg(test)]
mod tests;
