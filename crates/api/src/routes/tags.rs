//! Resource tags (TMS style): tag or untag one resource, list a project's tags, and
//! filter or count resources by tags.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vpcep_store::{ResourceKind, TaggedResource};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody};
use crate::openapi::{body, Io};
use crate::wire::{self, TagOut};
use crate::App;

/// A tag key of the project and the values it has.
#[derive(Serialize, ToSchema)]
struct KeyValues {
    key: String,
    values: Vec<String>,
}

/// The tags used in the project.
#[derive(Serialize, ToSchema)]
struct ProjectTags {
    tags: Vec<KeyValues>,
}

/// A tagged resource.
#[derive(Serialize, ToSchema)]
struct Instance {
    resource_id: String,
    resource_name: String,
    tags: Vec<TagOut>,
}

/// The resources a tag query matched (`filter`), or only how many (`count`).
#[derive(Serialize, ToSchema)]
#[schema(as = ResourceInstances)]
struct Instances {
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Vec<Instance>>,
    total_count: usize,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "batch_add_or_remove_resource_instance" => (body::<ActionBody>(), None),
        "list_query_project_resource_tags" => (None, body::<ProjectTags>()),
        "list_resource_instances" => (body::<QueryBody>(), body::<Instances>()),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    Router::new()
        .route(
            "/v1/{project_id}/{resource_type}/{resource_id}/tags/action",
            post(action),
        )
        .route("/v1/{project_id}/{resource_type}/tags", get(project_tags))
        .route(
            "/v1/{project_id}/{resource_type}/resource_instances/action",
            post(instances),
        )
}

fn kind(raw: &str) -> ApiResult<ResourceKind> {
    match raw {
        "endpoint_service" => Ok(ResourceKind::Service),
        "endpoint" => Ok(ResourceKind::Endpoint),
        other => Err(ApiError::bad(
            "EndPoint.3070",
            format!("resource_type: {other:?} is not endpoint_service or endpoint"),
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[schema(as = TagActionItem)]
struct TagItem {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = TagActionBody)]
struct ActionBody {
    action: Option<String>,
    tags: Option<Vec<TagItem>>,
}

async fn action(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<ActionBody>,
) -> ApiResult<StatusCode> {
    let kind = kind(&ids.get("resource_type"))?;
    let create = match req("action", b.action)?.as_str() {
        "create" => true,
        "delete" => false,
        other => {
            return Err(ApiError::bad(
                "EndPoint.0007",
                format!("action: {other:?} is not create or delete"),
            ))
        }
    };
    let tags = req("tags", b.tags)?
        .into_iter()
        .map(|t| Ok((req("tags.key", t.key)?, t.value)))
        .collect::<ApiResult<Vec<_>>>()?;
    app.store
        .tag_resource(caller, kind, ids.get("resource_id"), create, tags)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn project_tags(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<ProjectTags>> {
    let kind = kind(&ids.get("resource_type"))?;
    let tags = app.store.project_tags(caller, kind).await?;
    Ok(Json(ProjectTags {
        tags: tags
            .into_iter()
            .map(|(key, values)| KeyValues { key, values })
            .collect(),
    }))
}

#[derive(Deserialize, Clone, Default, ToSchema)]
pub(crate) struct TagValues {
    key: Option<String>,
    values: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = TagMatchIn)]
struct MatchIn {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ResourceInstancesBody)]
struct QueryBody {
    action: Option<String>,
    tags: Option<Vec<TagValues>>,
    tags_any: Option<Vec<TagValues>>,
    not_tags: Option<Vec<TagValues>>,
    not_tags_any: Option<Vec<TagValues>>,
    sys_tags: Option<Vec<TagValues>>,
    limit: Option<String>,
    offset: Option<String>,
    matches: Option<Vec<MatchIn>>,
    without_any_tag: Option<bool>,
}

/// A validated tag filter: key → accepted values (empty = any value).
type Filter = Vec<(String, Vec<String>)>;

fn parse_filter(field: &str, raw: Option<Vec<TagValues>>) -> ApiResult<Filter> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 20 {
        return Err(ApiError::bad(
            "EndPoint.3069",
            format!("{field}: at most 20 keys"),
        ));
    }
    let mut out: Filter = Vec::new();
    for t in raw {
        let key = req(&format!("{field}.key"), t.key)?
            .trim_matches(' ')
            .to_owned();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(ApiError::bad(
                "EndPoint.3072",
                format!("{field}: key {key:?} must be 1-128 characters"),
            ));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::bad(
                "EndPoint.3067",
                format!("{field}: key {key:?} appears twice"),
            ));
        }
        let mut values: Vec<String> = Vec::new();
        for v in t.values.unwrap_or_default() {
            let v = v.trim_matches(' ').to_owned();
            if v.chars().count() > 255 {
                return Err(ApiError::bad(
                    "EndPoint.3073",
                    format!("{field}: a value of {key:?} is longer than 255 characters"),
                ));
            }
            if values.contains(&v) {
                return Err(ApiError::bad(
                    "EndPoint.3071",
                    format!("{field}: value {v:?} of {key:?} appears twice"),
                ));
            }
            values.push(v);
        }
        if values.len() > 10 {
            return Err(ApiError::bad(
                "EndPoint.3069",
                format!("{field}: at most 10 values per key"),
            ));
        }
        out.push((key, values));
    }
    Ok(out)
}

fn has(tags: &BTreeMap<&str, &str>, (key, values): &(String, Vec<String>)) -> bool {
    tags.get(key.as_str())
        .is_some_and(|v| values.is_empty() || values.iter().any(|x| x == v))
}

/// The query semantics of the tag service: all of `tags`, any of `tags_any`, none of
/// `not_tags` as a whole, none of `not_tags_any`; `without_any_tag` overrides them all.
struct Query {
    all: Filter,
    any: Filter,
    not_all: Filter,
    not_any: Filter,
    without_any_tag: bool,
    name: Option<String>,
}

impl Query {
    fn matches(&self, r: &TaggedResource) -> bool {
        if let Some(n) = &self.name {
            // An empty match value is an exact match on the empty name: nothing.
            if n.is_empty() || !r.name.to_lowercase().contains(&n.to_lowercase()) {
                return false;
            }
        }
        if self.without_any_tag {
            return r.tags.is_empty();
        }
        let tags: BTreeMap<&str, &str> = r
            .tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        self.all.iter().all(|f| has(&tags, f))
            && (self.any.is_empty() || self.any.iter().any(|f| has(&tags, f)))
            && (self.not_all.is_empty() || !self.not_all.iter().all(|f| has(&tags, f)))
            && !self.not_any.iter().any(|f| has(&tags, f))
    }
}

fn string_number(
    field: &str,
    raw: Option<String>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    code: &'static str,
) -> ApiResult<i64> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    code,
                    format!(
                        "{field}: {s:?} must be a whole number in {}-{}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

async fn instances(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<QueryBody>,
) -> ApiResult<Json<Instances>> {
    let kind = kind(&ids.get("resource_type"))?;
    let count_only = match req("action", b.action)?.as_str() {
        "filter" => false,
        "count" => true,
        other => {
            return Err(ApiError::bad(
                "EndPoint.0007",
                format!("action: {other:?} is not filter or count"),
            ))
        }
    };
    let limit = string_number("limit", b.limit, 1000, 1..=1000, "EndPoint.0006")?;
    let offset = string_number("offset", b.offset, 0, 0..=i64::MAX, "EndPoint.0010")?;
    let mut name = None;
    for m in b.matches.unwrap_or_default() {
        match m.key.as_deref() {
            Some("resource_name") => name = Some(req("matches.value", m.value)?),
            other => {
                return Err(ApiError::param(format!(
                    "matches.key: {other:?} is not supported (only resource_name)"
                )))
            }
        }
    }
    parse_filter("sys_tags", b.sys_tags)?;
    let q = Query {
        all: parse_filter("tags", b.tags)?,
        any: parse_filter("tags_any", b.tags_any)?,
        not_all: parse_filter("not_tags", b.not_tags)?,
        not_any: parse_filter("not_tags_any", b.not_tags_any)?,
        without_any_tag: b.without_any_tag.unwrap_or(false),
        name,
    };
    let hits: Vec<TaggedResource> = app
        .store
        .tagged_resources(caller, kind)
        .await?
        .into_iter()
        .filter(|r| q.matches(r))
        .collect();
    let total = hits.len();
    if count_only {
        return Ok(Json(Instances {
            resources: None,
            total_count: total,
        }));
    }
    let page: Vec<Instance> = hits
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|r| Instance {
            resource_id: r.id.clone(),
            resource_name: r.name.clone(),
            tags: wire::tags(&r.tags),
        })
        .collect();
    Ok(Json(Instances {
        resources: Some(page),
        total_count: total,
    }))
}

#[cfg(test)]
mod tests {
    use vpcep_model::Tag;

    use super::*;

    fn res(name: &str, tags: &[(&str, &str)]) -> TaggedResource {
        TaggedResource {
            id: name.into(),
            name: name.into(),
            tags: tags
                .iter()
                .map(|(k, v)| Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    fn f(pairs: &[(&str, &[&str])]) -> Filter {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn q() -> Query {
        Query {
            all: vec![],
            any: vec![],
            not_all: vec![],
            not_any: vec![],
            without_any_tag: false,
            name: None,
        }
    }

    #[test]
    fn semantics() {
        let a = res("alpha", &[("env", "prod"), ("team", "net")]);
        let b = res("beta", &[("env", "dev")]);
        let c = res("gamma", &[]);
        let check = |q: Query, want: &[&str]| {
            let got: Vec<&str> = [&a, &b, &c]
                .iter()
                .filter(|r| q.matches(r))
                .map(|r| r.name.as_str())
                .collect();
            assert_eq!(got, want);
        };
        check(q(), &["alpha", "beta", "gamma"]);
        check(
            Query {
                all: f(&[("env", &[])]),
                ..q()
            },
            &["alpha", "beta"],
        );
        check(
            Query {
                all: f(&[("env", &["prod"]), ("team", &[])]),
                ..q()
            },
            &["alpha"],
        );
        check(
            Query {
                any: f(&[("team", &[]), ("env", &["dev"])]),
                ..q()
            },
            &["alpha", "beta"],
        );
        check(
            Query {
                not_any: f(&[("env", &[])]),
                ..q()
            },
            &["gamma"],
        );
        check(
            Query {
                not_all: f(&[("env", &["prod"]), ("team", &["net"])]),
                ..q()
            },
            &["beta", "gamma"],
        );
        check(
            Query {
                without_any_tag: true,
                all: f(&[("env", &[])]),
                ..q()
            },
            &["gamma"],
        );
        check(
            Query {
                name: Some("ALP".into()),
                ..q()
            },
            &["alpha"],
        );
        check(
            Query {
                name: Some(String::new()),
                ..q()
            },
            &[],
        );
    }

    #[test]
    fn filter_validation() {
        let tv = |k: &str, v: &[&str]| TagValues {
            key: Some(k.into()),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(
            parse_filter("tags", Some(vec![tv(" k ", &[" v "])])).unwrap(),
            f(&[("k", &["v"])])
        );
        assert_eq!(
            parse_filter("tags", Some(vec![tv("k", &[]), tv("k", &[])]))
                .unwrap_err()
                .code,
            "EndPoint.3067"
        );
        assert_eq!(
            parse_filter("tags", Some(vec![tv("k", &["a", "a"])]))
                .unwrap_err()
                .code,
            "EndPoint.3071"
        );
        assert_eq!(
            parse_filter("tags", Some(vec![tv("  ", &[])]))
                .unwrap_err()
                .code,
            "EndPoint.3072"
        );
    }
}
