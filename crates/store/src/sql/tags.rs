//! Resource tags of services and endpoints.

use crate::sql::numbered;
use std::collections::{BTreeMap, BTreeSet};

use sqlx::AnyConnection;
use vpcep_model::{validate_tag, Reason, Tag, MAX_TAGS};

use super::{exists, not_found, reject, SqlStore};
use crate::{Caller, ResourceKind, Result, TaggedResource};

pub(super) fn kind_str(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Service => "endpoint_service",
        ResourceKind::Endpoint => "endpoint",
    }
}

pub(super) async fn load_tags(
    conn: &mut AnyConnection,
    kind: ResourceKind,
    id: &str,
) -> Result<Vec<Tag>> {
    let rows: Vec<(String, String)> = sqlx::query_as(&numbered(
        "SELECT k, v FROM tags WHERE resource_type = ? AND resource_id = ? ORDER BY k",
    ))
    .bind(kind_str(kind))
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect())
}

pub(super) async fn insert_tags(
    conn: &mut AnyConnection,
    kind: ResourceKind,
    id: &str,
    project: &str,
    tags: &[Tag],
) -> Result<()> {
    for t in tags {
        sqlx::query(&numbered("INSERT INTO tags (resource_type, resource_id, project_id, k, v) VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_type, resource_id, k) DO UPDATE SET v = excluded.v"))
            .bind(kind_str(kind))
            .bind(id)
            .bind(project)
            .bind(&t.key)
            .bind(&t.value)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn owned(
    conn: &mut AnyConnection,
    caller: &Caller,
    kind: ResourceKind,
    id: &str,
) -> Result<bool> {
    let sql = match kind {
        ResourceKind::Service => {
            "SELECT 1 FROM services WHERE id = ? AND project_id = ? AND is_public = 0"
        }
        ResourceKind::Endpoint => "SELECT 1 FROM endpoints WHERE id = ? AND project_id = ?",
    };
    exists(conn, sql, &[id, &caller.project_id]).await
}

impl SqlStore {
    pub(crate) async fn tag_resource(
        &self,
        caller: Caller,
        kind: ResourceKind,
        id: String,
        create: bool,
        tags: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        if tags.is_empty() {
            return reject(Reason::BadTag, "tags: the list is empty");
        }
        let mut keys = BTreeSet::new();
        for (k, v) in &tags {
            if !keys.insert(k.as_str()) {
                return reject(
                    Reason::DuplicateTagKey,
                    format!("tags: key {k:?} appears twice"),
                );
            }
            match (create, v) {
                (true, None) => {
                    return reject(
                        Reason::BadTag,
                        format!("tags: key {k:?} needs a value to be created"),
                    )
                }
                (true, Some(v)) => validate_tag(k, v)?,
                (false, v) => validate_tag(k, v.as_deref().unwrap_or(""))?,
            }
        }
        let mut tx = self.begin().await?;
        if !owned(&mut tx, &caller, kind, &id).await? {
            return Err(not_found(kind_str(kind)));
        }
        for (k, v) in &tags {
            if create {
                let t = Tag {
                    key: k.clone(),
                    value: v.clone().unwrap_or_default(),
                };
                insert_tags(
                    &mut tx,
                    kind,
                    &id,
                    &caller.project_id,
                    std::slice::from_ref(&t),
                )
                .await?;
            } else {
                sqlx::query(&numbered("DELETE FROM tags WHERE resource_type = ? AND resource_id = ? AND k = ? AND (? IS NULL OR v = ?)"))
                    .bind(kind_str(kind)).bind(&id).bind(k).bind(v).bind(v)
                    .execute(&mut *tx).await?;
            }
        }
        let n: i64 = sqlx::query_scalar(&numbered(
            "SELECT COUNT(*) FROM tags WHERE resource_type = ? AND resource_id = ?",
        ))
        .bind(kind_str(kind))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        if n as usize > MAX_TAGS {
            return reject(
                Reason::TagLimit,
                format!("tags: a resource holds at most {MAX_TAGS} tags"),
            );
        }
        self.commit(tx).await
    }

    pub(crate) async fn project_tags(
        &self,
        caller: Caller,
        kind: ResourceKind,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut c = self.read().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(&numbered(
            "SELECT k, v FROM tags WHERE project_id = ? AND resource_type = ?",
        ))
        .bind(&caller.project_id)
        .bind(kind_str(kind))
        .fetch_all(&mut *c)
        .await?;
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in rows {
            map.entry(k).or_default().insert(v);
        }
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect())
    }

    pub(crate) async fn tagged_resources(
        &self,
        caller: Caller,
        kind: ResourceKind,
    ) -> Result<Vec<TaggedResource>> {
        let mut c = self.read().await?;
        let sql = match kind {
            ResourceKind::Service => "SELECT id, service_name FROM services WHERE project_id = ? AND is_public = 0 ORDER BY created_at, id",
            ResourceKind::Endpoint => "SELECT id, id FROM endpoints WHERE project_id = ? ORDER BY created_at, id",
        };
        let rows: Vec<(String, String)> = sqlx::query_as(&numbered(sql))
            .bind(&caller.project_id)
            .fetch_all(&mut *c)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, name) in rows {
            let tags = load_tags(&mut c, kind, &id).await?;
            out.push(TaggedResource { id, name, tags });
        }
        Ok(out)
    }
}
