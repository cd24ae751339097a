//! Versioned schema: numbered migrations applied in order when the store opens, all in
//! the one transaction that opens it, with the version reached recorded in `meta`
//! (`k = 'schema'`). SQLite has every version's script (`src/migrations/NNNN_*.sql`);
//! PostgreSQL came with version 6 and makes it whole from one script
//! (`src/postgres/migrations/0006_schema.sql`). From version 7 on a migration is one
//! portable script both engines run, or one script per engine.

use crate::sql::numbered;
use sqlx::AnyConnection;
use vpcep_model::{EndpointStatus, SNAT_RANGE, SNAT_SIZE};

use super::{now_micros, Engine};
use crate::{BoxFuture, Result, StoreError};

/// Row work that SQL alone cannot say, run right after a migration's script.
type RowWork = for<'c> fn(&'c mut AnyConnection) -> BoxFuture<'c, ()>;

/// SQLite's version N is `SQLITE[N - 1]`. A released migration is never edited
/// (databases out there hold its result): a change to the schema is the next migration.
const SQLITE: &[(&str, Option<RowWork>)] = &[
    (include_str!("../migrations/0001_schema.sql"), None),
    (
        include_str!("../migrations/0002_snat_addresses.sql"),
        Some(|c| Box::pin(assign_snat_addresses(c))),
    ),
    (include_str!("../migrations/0003_revisions.sql"), None),
    (include_str!("../migrations/0004_named_endpoints.sql"), None),
    (include_str!("../migrations/0005_held_runs.sql"), None),
    (
        include_str!("../migrations/0006_endpoints_by_service_status.sql"),
        None,
    ),
    (include_str!("../migrations/0007_replicas.sql"), None),
    (include_str!("../migrations/0008_machines.sql"), None),
    (include_str!("../migrations/0009_gateway_pair.sql"), None),
];

/// PostgreSQL's scripts, by the version each brings the database to.
const POSTGRES: &[(i64, &str)] = &[
    (6, include_str!("../postgres/migrations/0006_schema.sql")),
    (7, include_str!("../migrations/0007_replicas.sql")),
    (8, include_str!("../migrations/0008_machines.sql")),
    (9, include_str!("../migrations/0009_gateway_pair.sql")),
];

/// The schema version this binary writes.
pub(crate) const LATEST: i64 = SQLITE.len() as i64;

/// The schema version of the database behind `conn`: 0 when it is empty.
pub(crate) async fn version(conn: &mut AnyConnection, engine: Engine) -> Result<i64> {
    let probe = match engine {
        Engine::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        Engine::Postgres => {
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'meta'"
        }
    };
    let has_meta: Option<i32> = sqlx::query_scalar(probe).fetch_optional(&mut *conn).await?;
    if has_meta.is_none() {
        return Ok(0);
    }
    sqlx::query_scalar(&numbered("SELECT v FROM meta WHERE k = 'schema'"))
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt("meta has no schema version".into()))
}

/// Brings the database behind `conn` (in a write transaction) to version `target`. A
/// database of a version newer than this binary knows is refused, never used.
pub(crate) async fn migrate(conn: &mut AnyConnection, engine: Engine, target: i64) -> Result<()> {
    let found = version(conn, engine).await?;
    if found > LATEST {
        return Err(StoreError::NewerSchema {
            found,
            known: LATEST,
        });
    }
    let mut v = found;
    while v < target {
        v = match engine {
            Engine::Sqlite => {
                let (sql, work) = SQLITE[v as usize];
                sqlx::raw_sql(sql).execute(&mut *conn).await?;
                if let Some(work) = work {
                    work(conn).await?;
                }
                v + 1
            }
            Engine::Postgres => {
                let Some(&(to, sql)) = POSTGRES.iter().find(|(to, _)| *to > v) else {
                    break;
                };
                sqlx::raw_sql(sql).execute(&mut *conn).await?;
                to
            }
        };
        sqlx::query(&numbered("UPDATE meta SET v = ? WHERE k = 'schema'"))
            .bind(v)
            .execute(&mut *conn)
            .await?;
    }
    if found > 0 && found < target {
        // Rows may have changed (migration 2 moves colliding SNAT addresses): gateway
        // nodes that hold the last revision's snapshot must fetch the new one.
        sqlx::query(&numbered("UPDATE meta SET v = v + 1 WHERE k = 'revision'"))
            .execute(&mut *conn)
            .await?;
        tracing::info!(from = found, to = target, "store schema migrated");
    }
    Ok(())
}

/// Migration 2's row work: the endpoints that lost their address to a collision take the
/// lowest free one, in the order the migration ranked them. Should none be left (more
/// endpoints towards one VPC than addresses, which version 1 allowed), the endpoint
/// holds none and fails, unless it is already on its way out.
async fn assign_snat_addresses(conn: &mut AnyConnection) -> Result<()> {
    let waiting: Vec<(String, String)> = sqlx::query_as(&numbered("SELECT id, snat_vpc_id FROM endpoints WHERE snat_vpc_id IS NOT NULL AND snat_host IS NULL \
         ORDER BY CASE WHEN status = 'accepted' THEN 0 ELSE 1 END, marker_id",))
    .fetch_all(&mut *conn)
    .await?;
    for (id, vpc) in waiting {
        // The runs of held numbers come with version 5, so this walks the held numbers
        // to the first gap (once, on the upgrade from version 1).
        let next: i64 = sqlx::query_scalar(&numbered("SELECT CASE WHEN COUNT(*) = COALESCE(MAX(snat_host), 0) THEN COUNT(*) + 1 \
                         WHEN MIN(snat_host) > 1 THEN 1 \
                         ELSE (SELECT e.snat_host + 1 FROM endpoints e WHERE e.snat_vpc_id = ?1 AND e.snat_host IS NOT NULL \
                               AND NOT EXISTS (SELECT 1 FROM endpoints f WHERE f.snat_vpc_id = ?1 AND f.snat_host = e.snat_host + 1) \
                               ORDER BY e.snat_host LIMIT 1) END \
             FROM endpoints WHERE snat_vpc_id = ?1 AND snat_host IS NOT NULL",))
        .bind(&vpc)
        .fetch_one(&mut *conn)
        .await?;
        if next <= i64::from(SNAT_SIZE) {
            sqlx::query(&numbered("UPDATE endpoints SET snat_host = ? WHERE id = ?"))
                .bind(next)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query(&numbered("UPDATE endpoints SET snat_vpc_id = NULL, status = CASE WHEN status = 'deleting' THEN status ELSE ? END, error = ?, updated_at = ? WHERE id = ?"))
                .bind(EndpointStatus::Failed.as_str())
                .bind(format!("no source address left in {SNAT_RANGE} towards the endpoint service's VPC"))
                .bind(now_micros())
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
