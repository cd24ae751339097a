//! One module per resource family; each exposes `router()`.

mod connections;
mod dns;
mod endpoints;
mod hosts;
mod iam;
mod misc;
mod permissions;
mod services;
mod tags;
mod vpc;

use axum::Router;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::App;

pub(crate) fn router() -> Router<App> {
    Router::new()
        .merge(services::router())
        .merge(connections::router())
        .merge(permissions::router())
        .merge(endpoints::router())
        .merge(hosts::router())
        .merge(dns::router())
        .merge(tags::router())
        .merge(misc::router())
        .merge(vpc::router())
        .merge(iam::router())
}

/// The request and response bodies of an operation, by its id (see `openapi`).
pub(crate) fn io(op: &str) -> Option<crate::openapi::Io> {
    services::io(op)
        .or_else(|| endpoints::io(op))
        .or_else(|| connections::io(op))
        .or_else(|| permissions::io(op))
        .or_else(|| tags::io(op))
        .or_else(|| misc::io(op))
        .or_else(|| iam::io(op))
        .or_else(|| vpc::io(op))
        .or_else(|| hosts::io(op))
        .or_else(|| dns::io(op))
}

pub(crate) fn metrics_router() -> Router<App> {
    misc::metrics_router()
}

/// A required body field.
pub(crate) fn req<T>(field: &str, v: Option<T>) -> ApiResult<T> {
    v.ok_or_else(|| ApiError::param(format!("{field}: required")))
}

/// A tag as clients send it.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TagIn {
    key: Option<String>,
    value: Option<String>,
}

pub(crate) fn tags_in(tags: Option<Vec<TagIn>>) -> ApiResult<Vec<vpcep_model::Tag>> {
    tags.unwrap_or_default()
        .into_iter()
        .map(|t| {
            Ok(vpcep_model::Tag {
                key: req("tags.key", t.key)?,
                value: t.value.unwrap_or_default(),
            })
        })
        .collect()
}

/// The body of the v2 upgrade operations: an optional `action` with one allowed value.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpgradeBody {
    action: Option<String>,
}

impl UpgradeBody {
    pub(crate) fn expect(&self, allowed: &str) -> ApiResult<()> {
        match self.action.as_deref() {
            None => Ok(()),
            Some(a) if a == allowed => Ok(()),
            Some(other) => Err(ApiError::bad(
                "EndPoint.0007",
                format!("action: {other:?} is not {allowed}"),
            )),
        }
    }
}
