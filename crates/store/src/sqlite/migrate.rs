//! Versioned schema: numbered migrations (`src/migrations/NNNN_*.sql`, portable SQL)
//! applied in order when the store opens, all in the one transaction that opens it, with
//! the version reached recorded in `meta` (`k = 'schema'`).

use sqlx::SqliteConnection;

use super::endpoints::assign_snat_addresses;
use crate::{BoxFuture, Result, StoreError};

/// Row work that SQL alone cannot say, run right after a migration's script.
type RowWork = for<'c> fn(&'c mut SqliteConnection) -> BoxFuture<'c, ()>;

/// Version N is `MIGRATIONS[N - 1]`. A released migration is never edited (databases
/// out there hold its result): a change to the schema is the next migration.
const MIGRATIONS: &[(&str, Option<RowWork>)] = &[
    (include_str!("../migrations/0001_schema.sql"), None),
    (
        include_str!("../migrations/0002_snat_addresses.sql"),
        Some(|c| Box::pin(assign_snat_addresses(c))),
    ),
    (include_str!("../migrations/0003_revisions.sql"), None),
    (include_str!("../migrations/0004_named_endpoints.sql"), None),
];

/// The schema version this binary writes.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// The schema version of the database behind `conn`: 0 when it is empty.
async fn version(conn: &mut SqliteConnection) -> Result<i64> {
    let has_meta: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_meta {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT v FROM meta WHERE k = 'schema'")
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt("meta has no schema version".into()))
}

/// Brings the database behind `conn` (in a write transaction) to version `target`. A
/// database of a version newer than this binary knows is refused, never used.
pub(super) async fn migrate(conn: &mut SqliteConnection, target: i64) -> Result<()> {
    let found = version(conn).await?;
    if found > LATEST {
        return Err(StoreError::NewerSchema {
            found,
            known: LATEST,
        });
    }
    for v in found + 1..=target {
        let (sql, work) = MIGRATIONS[v as usize - 1];
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
        if let Some(work) = work {
            work(conn).await?;
        }
        sqlx::query("UPDATE meta SET v = ? WHERE k = 'schema'")
            .bind(v)
            .execute(&mut *conn)
            .await?;
    }
    if found > 0 && found < target {
        // Rows may have changed (migration 2 moves colliding SNAT addresses): gateway
        // nodes that hold the last revision's snapshot must fetch the new one.
        sqlx::query("UPDATE meta SET v = v + 1 WHERE k = 'revision'")
            .execute(&mut *conn)
            .await?;
        tracing::info!(from = found, to = target, "store schema migrated");
    }
    Ok(())
}
