//! What the processes serving one database share besides the desired state: who they
//! are and who leads (`replicas`), and what the remote gateway nodes report, whichever
//! replica they reported to (`gateway_nodes`, `gateway_endpoints`). None of it is
//! desired state: these writes do not advance the revision.

use std::collections::HashMap;

use sqlx::Row;

use super::{now_micros, numbered, Engine, SqlStore};
use crate::{Outcome, Replica, Result};

/// A replica's word that it leads counts this long after it said it (five heartbeats).
const LEADER_FRESH_MICROS: i64 = 10_000_000;

impl SqlStore {
    /// Records that replica `name` is alive (and whether it holds the controller lease).
    pub(crate) async fn heartbeat(
        &self,
        name: String,
        address: String,
        leader: bool,
    ) -> Result<()> {
        let now = now_micros();
        sqlx::query(&numbered(
            "INSERT INTO replicas (name, address, version, started_at, seen_at, leader_since) VALUES (?1, ?2, ?3, ?4, ?4, CASE WHEN ?5 = 1 THEN ?4 ELSE 0 END) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, version = excluded.version, seen_at = excluded.seen_at, \
             leader_since = CASE WHEN ?5 = 0 THEN 0 WHEN replicas.leader_since > 0 THEN replicas.leader_since ELSE excluded.seen_at END",
        ))
        .bind(&name)
        .bind(&address)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(now)
        .bind(i64::from(leader))
        .execute(&self.pool)
        .await?;
        // Replicas silent for a day are gone (renamed, or moved away).
        sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
            .bind(now - 86_400_000_000)
            .execute(&self.pool)
            .await?;
        if leader {
            // The lease is one: whoever said otherwise before has lost it.
            sqlx::query(
                "UPDATE replicas SET leader_since = 0 WHERE name != $1 AND leader_since > 0",
            )
            .bind(&name)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Every process that has served this database, by name, as it last said.
    pub(crate) async fn replicas(&self) -> Result<Vec<Replica>> {
        let rows = sqlx::query("SELECT name, address, version, started_at, seen_at, leader_since FROM replicas ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let now = now_micros();
        rows.iter()
            .map(|r| {
                let seen_at: i64 = r.try_get("seen_at")?;
                Ok(Replica {
                    name: r.try_get("name")?,
                    address: r.try_get("address")?,
                    version: r.try_get("version")?,
                    started_at: r.try_get("started_at")?,
                    seen_at,
                    seen_secs_ago: (now - seen_at).max(0) as f64 / 1e6,
                    // What a replica said lately: one silent for longer than a few
                    // heartbeats may be dead, its lease gone with it.
                    leader: r.try_get::<i64, _>("leader_since")? > 0
                        && now - seen_at < LEADER_FRESH_MICROS,
                })
            })
            .collect()
    }

    /// A gateway node's report: everything it runs (`full`), or what changed since its
    /// last one. `false` (nothing written) for changes from a node whose last report is
    /// not known, or older than `ttl_secs`: it must report everything.
    pub(crate) async fn record_gateway_report(
        &self,
        node: String,
        revision: u64,
        full: bool,
        endpoints: Vec<(String, Option<String>)>,
        gone: Vec<String>,
        ttl_secs: u64,
    ) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        if full {
            sqlx::query("DELETE FROM gateway_endpoints WHERE node = $1")
                .bind(&node)
                .execute(&mut *tx)
                .await?;
        } else {
            let at: Option<i64> =
                sqlx::query_scalar("SELECT reported_at FROM gateway_nodes WHERE node = $1")
                    .bind(&node)
                    .fetch_optional(&mut *tx)
                    .await?;
            if at.is_none_or(|at| now - at > ttl_secs as i64 * 1_000_000) {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO gateway_nodes (node, revision, reported_at) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET revision = excluded.revision, reported_at = excluded.reported_at",
        )
        .bind(&node)
        .bind(revision as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for id in &gone {
            sqlx::query("DELETE FROM gateway_endpoints WHERE node = $1 AND endpoint_id = $2")
                .bind(&node)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (id, error) in &endpoints {
            sqlx::query(
                "INSERT INTO gateway_endpoints (node, endpoint_id, error) VALUES ($1, $2, $3) \
                 ON CONFLICT (node, endpoint_id) DO UPDATE SET error = excluded.error",
            )
            .bind(&node)
            .bind(id)
            .bind(error.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        // Not desired state: committed without advancing the revision.
        tx.tx.commit().await?;
        Ok(true)
    }

    /// What the gateway nodes that reported within `ttl_secs` say of `ids`: up if any runs
    /// it, failed if one could not bring it up; endpoints none has spoken of are left out.
    pub(crate) async fn gateway_outcomes(
        &self,
        ids: Vec<String>,
        ttl_secs: u64,
    ) -> Result<Vec<(String, Outcome)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.read().await?;
        let sql = format!(
            "SELECT g.endpoint_id, g.error FROM gateway_endpoints g JOIN gateway_nodes n ON n.node = g.node \
             WHERE n.reported_at >= ? AND g.endpoint_id IN ({})",
            Engine::of(&c).json_members()
        );
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&numbered(&sql))
            .bind(now_micros() - ttl_secs as i64 * 1_000_000)
            .bind(super::json_text(&ids))
            .fetch_all(&mut *c)
            .await?;
        let mut out: HashMap<String, Outcome> = HashMap::new();
        for (id, error) in rows {
            match error {
                None => {
                    out.insert(id, Ok(()));
                }
                Some(why) => {
                    out.entry(id).or_insert(Err(why));
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}
