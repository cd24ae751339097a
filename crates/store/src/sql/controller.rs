//! What the controller reads and writes: rows in transitional statuses and their outcome.

use crate::sql::numbered;
use vpcep_model::EndpointStatus;

use super::endpoints::remove_deleted_endpoint;
use super::services::orphan_endpoints;
use super::tags::kind_str;
use super::{now_micros, SqlStore};
use crate::{Outcome, ResourceKind, Result, Transitional};

impl SqlStore {
    pub(crate) async fn transitional(&self) -> Result<Transitional> {
        let mut c = self.read().await?;
        let ids = |sql: &'static str| sqlx::query_scalar::<_, String>(sql);
        Ok(Transitional {
            services_creating: ids(
                "SELECT id FROM services WHERE status = 'creating' ORDER BY created_at",
            )
            .fetch_all(&mut *c)
            .await?,
            services_deleting: ids(
                "SELECT id FROM services WHERE status = 'deleting' ORDER BY updated_at",
            )
            .fetch_all(&mut *c)
            .await?,
            // Whether each needs the data plane (no approval), as 0/1: a comparison is an
            // integer to SQLite and a boolean to PostgreSQL.
            endpoints_creating: sqlx::query_as::<_, (String, i64)>(
                "SELECT e.id, CASE WHEN COALESCE(s.approval_enabled, 1) = 0 THEN 1 ELSE 0 END \
                 FROM endpoints e LEFT JOIN services s ON s.id = e.service_id \
                 WHERE e.status = 'creating' ORDER BY e.created_at",
            )
            .fetch_all(&mut *c)
            .await?
            .into_iter()
            .map(|(id, needs_plane)| (id, needs_plane != 0))
            .collect(),
            endpoints_deleting: ids(
                "SELECT id FROM endpoints WHERE status = 'deleting' ORDER BY updated_at",
            )
            .fetch_all(&mut *c)
            .await?,
        })
    }

    pub(crate) async fn settle_services(&self, outcomes: Vec<(String, Outcome)>) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, outcome) in outcomes {
            let (status, error) = match outcome {
                Ok(()) => ("available", String::new()),
                Err(e) => ("failed", e),
            };
            sqlx::query(&numbered("UPDATE services SET status = ?, error = ?, updated_at = ? WHERE id = ? AND status = 'creating'"))
                .bind(status).bind(error).bind(now_micros()).bind(&id)
                .execute(&mut *tx).await?;
        }
        self.commit(tx).await
    }

    /// Endpoints that came up settle as accepted or pending acceptance, according to their
    /// service's approval setting at this moment; the others fail.
    pub(crate) async fn settle_endpoints(&self, outcomes: Vec<(String, Outcome)>) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, outcome) in outcomes {
            let approval: Option<i64> = sqlx::query_scalar(&numbered("SELECT s.approval_enabled FROM endpoints e JOIN services s ON s.id = e.service_id WHERE e.id = ? AND e.status = 'creating'"))
                .bind(&id).fetch_optional(&mut *tx).await?;
            let Some(approval) = approval else { continue };
            let (status, error) = match outcome {
                Ok(()) => (EndpointStatus::settled(approval != 0), String::new()),
                Err(e) => (EndpointStatus::Failed, e),
            };
            sqlx::query(&numbered(
                "UPDATE endpoints SET status = ?, error = ?, updated_at = ? WHERE id = ?",
            ))
            .bind(status.as_str())
            .bind(error)
            .bind(now_micros())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await
    }

    pub(crate) async fn finish_deletions(
        &self,
        services: Vec<String>,
        endpoints: Vec<String>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for id in endpoints {
            remove_deleted_endpoint(&mut tx, &id).await?;
        }
        for id in services {
            let gone = sqlx::query(&numbered(
                "DELETE FROM services WHERE id = ? AND status = 'deleting'",
            ))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            if gone.rows_affected() > 0 {
                orphan_endpoints(&mut tx, &id).await?;
                sqlx::query(&numbered("DELETE FROM permissions WHERE service_id = ?"))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&numbered(
                    "DELETE FROM tags WHERE resource_type = ? AND resource_id = ?",
                ))
                .bind(kind_str(ResourceKind::Service))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
        }
        self.commit(tx).await
    }
}
