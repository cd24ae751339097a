//! The private DNS view: the names a project's endpoints publish, by zone (one per VPC),
//! filtered and paged in SQL over the partial index `endpoints_named`.
//!
//! Zones come in the order of their first name (oldest endpoint, then id); records by
//! zone in that order, then oldest first, the order the DNS API has always listed them.

use crate::sql::numbered;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{limit_all, Engine, SqlStore};
use crate::{Caller, DnsRecord, DnsRecordFilter, DnsZone, Result};

/// An endpoint of project `project` (an SQL expression) whose name is published:
/// interface type, `enable_dns`, accepted, named. The terms of the partial index
/// `endpoints_named`, written the same way, so that SQLite uses it.
fn named(alias: &str, project: &str) -> String {
    format!(
        "{alias}project_id = {project} AND {alias}service_type = 'interface' \
         AND {alias}enable_dns = 1 AND {alias}status = 'accepted' AND {alias}dns_name != ''"
    )
}

/// The one number `sql` counts, with `args` bound.
async fn count_of(conn: &mut AnyConnection, sql: &str, args: &[String]) -> Result<i64> {
    let q_sql = numbered(sql);
    let mut q = sqlx::query_scalar::<_, i64>(&q_sql);
    for a in args {
        q = q.bind(a);
    }
    Ok(q.fetch_one(conn).await?)
}

fn record_row(r: &AnyRow) -> Result<DnsRecord> {
    Ok(DnsRecord {
        id: r.try_get("id")?,
        vpc_id: r.try_get("vpc_id")?,
        name: r.try_get("dns_name")?,
        ip: r.try_get("ip")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl SqlStore {
    /// The project's zones (of VPC `vpc_id` only, if given), `offset` skipped and at most
    /// `limit` returned (all for a negative `limit`), with how many there are in all.
    pub(crate) async fn dns_zones(
        &self,
        caller: Caller,
        vpc_id: Option<String>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DnsZone>, i64)> {
        let mut c = self.read().await?;
        let mut where_ = named("", "?");
        let mut args = vec![caller.project_id];
        if let Some(v) = vpc_id {
            where_.push_str(" AND vpc_id = ?");
            args.push(v);
        }
        let count = format!("SELECT COUNT(DISTINCT vpc_id) FROM endpoints WHERE {where_}");
        let total = count_of(&mut c, &count, &args).await?;
        let sql = format!(
            "SELECT vpc_id, COUNT(*) AS records, MIN(created_at) AS created_at, \
             MAX(updated_at) AS updated_at FROM endpoints WHERE {where_} \
             GROUP BY vpc_id ORDER BY MIN({}) LIMIT ? OFFSET ?",
            Engine::of(&c).age_key("")
        );
        let q_sql = numbered(&sql);
        let mut q = sqlx::query(&q_sql);
        for a in &args {
            q = q.bind(a);
        }
        let rows = q
            .bind(limit_all(limit))
            .bind(offset.max(0))
            .fetch_all(&mut *c)
            .await?;
        let zones = rows
            .iter()
            .map(|r| {
                Ok(DnsZone {
                    vpc_id: r.try_get("vpc_id")?,
                    records: r.try_get("records")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((zones, total))
    }

    /// The project's published names matching `filter`, `offset` skipped and at most
    /// `limit` returned (all for a negative `limit`), with how many match in all.
    pub(crate) async fn dns_records(
        &self,
        caller: Caller,
        filter: DnsRecordFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DnsRecord>, i64)> {
        let mut c = self.read().await?;
        let mut where_ = named("e.", "?");
        let mut args = vec![caller.project_id];
        if let Some(v) = filter.vpc_id {
            where_.push_str(" AND e.vpc_id = ?");
            args.push(v);
        }
        if let Some(id) = filter.id {
            where_.push_str(" AND e.id = ?");
            args.push(id);
        }
        if let Some(part) = filter.name_contains {
            // Not LIKE: a plain, case-sensitive substring, `%` and `_` included.
            where_.push_str(&format!(
                " AND {} > 0",
                Engine::of(&c).position("e.dns_name")
            ));
            args.push(part);
        }
        let count = format!("SELECT COUNT(*) FROM endpoints e WHERE {where_}");
        let total = count_of(&mut c, &count, &args).await?;
        // A record's zone sorts by the zone's first name, found through the index.
        let sql = format!(
            "SELECT e.id, e.vpc_id, e.dns_name, e.ip, e.created_at, e.updated_at \
             FROM endpoints e WHERE {where_} ORDER BY \
             (SELECT {} FROM endpoints z WHERE {} AND z.vpc_id = e.vpc_id \
              ORDER BY z.created_at, z.id LIMIT 1), e.created_at, e.id LIMIT ? OFFSET ?",
            Engine::of(&c).age_key("z."),
            named("z.", "e.project_id"),
        );
        let q_sql = numbered(&sql);
        let mut q = sqlx::query(&q_sql);
        for a in &args {
            q = q.bind(a);
        }
        let rows = q
            .bind(limit_all(limit))
            .bind(offset.max(0))
            .fetch_all(&mut *c)
            .await?;
        let records = rows.iter().map(record_row).collect::<Result<Vec<_>>>()?;
        Ok((records, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One endpoint row as the DNS view reads it (the other columns do not matter here).
    #[allow(clippy::too_many_arguments)]
    async fn endpoint(
        store: &SqlStore,
        project: &str,
        id: &str,
        vpc: &str,
        name: &str,
        status: &str,
        service_type: &str,
        created_at: i64,
    ) {
        let mut c = store.read().await.unwrap();
        let marker: i64 = sqlx::query_scalar(&numbered(
            "SELECT COALESCE(MAX(marker_id), 0) + 1 FROM endpoints",
        ))
        .fetch_one(&mut *c)
        .await
        .unwrap();
        sqlx::query(&numbered(
            "INSERT INTO endpoints (id, project_id, domain_id, service_id, service_name, \
             service_type, vpc_id, subnet_id, ip, status, marker_id, enable_dns, dns_name, \
             whitelist, enable_whitelist, routetables, description, conn_description, \
             policy_statement, policy_document, edition, error, created_at, updated_at) \
             VALUES (?, ?, 'd', 's', 'svc', ?, ?, 'sub', ?, ?, ?, ?, ?, '[]', 0, '[]', '', '', \
             '', '', 'default', '', ?, ?)",
        ))
        .bind(id)
        .bind(project)
        .bind(service_type)
        .bind(vpc)
        .bind(format!("10.0.0.{}", marker % 250))
        .bind(status)
        .bind(marker)
        .bind(i64::from(!name.is_empty()))
        .bind(name)
        .bind(created_at)
        .bind(created_at + 5)
        .execute(&mut *c)
        .await
        .unwrap();
    }

    fn caller(project: &str) -> Caller {
        Caller {
            domain_id: "d".to_owned(),
            project_id: project.to_owned(),
        }
    }

    fn ids(records: &[DnsRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    async fn records(
        store: &SqlStore,
        f: DnsRecordFilter,
        limit: i64,
        offset: i64,
    ) -> (Vec<DnsRecord>, i64) {
        store
            .dns_records(caller("p1"), f, limit, offset)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn zones_and_records_in_order_filtered_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::sql::tests::open_store(dir.path()).await.unwrap();
        let name = |id: &str| format!("{id}.svc.vpcep.r1.internal");
        // VPC b's first name is older than VPC a's; a2 and a3 are as old as each other.
        for (id, vpc, created) in [
            ("a1", "vpc-a", 20),
            ("b1", "vpc-b", 10),
            ("a3", "vpc-a", 30),
            ("a2", "vpc-a", 30),
            ("b2", "vpc-b", 40),
        ] {
            endpoint(
                &store,
                "p1",
                id,
                vpc,
                &name(id),
                "accepted",
                "interface",
                created,
            )
            .await;
        }
        // None of these is published.
        endpoint(
            &store,
            "p1",
            "x1",
            "vpc-a",
            &name("x1"),
            "creating",
            "interface",
            1,
        )
        .await;
        endpoint(&store, "p1", "x2", "vpc-c", "", "accepted", "interface", 1).await;
        endpoint(
            &store,
            "p1",
            "x3",
            "vpc-c",
            &name("x3"),
            "accepted",
            "gateway",
            1,
        )
        .await;
        endpoint(
            &store,
            "p2",
            "x4",
            "vpc-a",
            &name("x4"),
            "accepted",
            "interface",
            1,
        )
        .await;

        let (zones, total) = store.dns_zones(caller("p1"), None, -1, 0).await.unwrap();
        assert_eq!(total, 2);
        let got: Vec<_> = zones
            .iter()
            .map(|z| (z.vpc_id.as_str(), z.records, z.created_at, z.updated_at))
            .collect();
        assert_eq!(got, [("vpc-b", 2, 10, 45), ("vpc-a", 3, 20, 35)]);
        let (zones, total) = store.dns_zones(caller("p1"), None, 1, 1).await.unwrap();
        assert_eq!(
            (zones.len(), zones[0].vpc_id.as_str(), total),
            (1, "vpc-a", 2)
        );
        let (zones, total) = store
            .dns_zones(caller("p1"), Some("vpc-a".into()), -1, 0)
            .await
            .unwrap();
        assert_eq!((zones.len(), total), (1, 1));
        let (zones, total) = store.dns_zones(caller("p3"), None, -1, 0).await.unwrap();
        assert_eq!((zones.len(), total), (0, 0));

        let all = DnsRecordFilter::default();
        let (r, total) = records(&store, all.clone(), -1, 0).await;
        assert_eq!((ids(&r), total), (vec!["b1", "b2", "a1", "a2", "a3"], 5));
        assert_eq!(r[0].name, name("b1"));
        assert_eq!(
            (r[0].vpc_id.as_str(), r[0].created_at, r[0].updated_at),
            ("vpc-b", 10, 15)
        );
        let (r, total) = records(&store, all.clone(), 2, 1).await;
        assert_eq!((ids(&r), total), (vec!["b2", "a1"], 5));
        let (r, total) = records(&store, all, 0, 0).await;
        assert_eq!((ids(&r), total), (vec![], 5));

        let in_a = DnsRecordFilter {
            vpc_id: Some("vpc-a".into()),
            ..Default::default()
        };
        let (r, total) = records(&store, in_a, -1, 1).await;
        assert_eq!((ids(&r), total), (vec!["a2", "a3"], 3));

        let one = DnsRecordFilter {
            id: Some("a3".into()),
            ..Default::default()
        };
        assert_eq!(ids(&records(&store, one, 1, 0).await.0), ["a3"]);
        let other_project = DnsRecordFilter {
            id: Some("x4".into()),
            ..Default::default()
        };
        assert!(records(&store, other_project, 1, 0).await.0.is_empty());
        let unpublished = DnsRecordFilter {
            id: Some("x1".into()),
            ..Default::default()
        };
        assert!(records(&store, unpublished, 1, 0).await.0.is_empty());

        // A plain substring: `_` and `%` are not wildcards, case counts, and "" is everywhere.
        let part = |p: &str| DnsRecordFilter {
            name_contains: Some(p.to_owned()),
            ..Default::default()
        };
        assert_eq!(ids(&records(&store, part("a2."), -1, 0).await.0), ["a2"]);
        assert_eq!(
            ids(&records(&store, part("b"), -1, 0).await.0),
            ["b1", "b2"]
        );
        assert!(records(&store, part("a_"), -1, 0).await.0.is_empty());
        assert!(records(&store, part("%"), -1, 0).await.0.is_empty());
        assert!(records(&store, part("A1"), -1, 0).await.0.is_empty());
        assert_eq!(records(&store, part(""), -1, 0).await.1, 5);
    }
}
