//! Request extractors whose every rejection is an [`ApiError`] in the API's format.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use vpcep_store::{Caller, Page, SortKey};

use crate::error::ApiError;

/// A JSON body; an empty body reads as `{}` (the SDK sends `{}` for all-default models,
/// other clients send nothing). Errors name the offending field.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "APIGW.0201", e.body_text()))?;
        let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(slice);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    ApiError::param(format!("request body: {}", e.inner()))
                } else {
                    ApiError::param(format!("{path}: {}", e.inner()))
                }
            })
    }
}

/// The query string as decoded pairs; a `+` stays a `+`, as the signer treats it.
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let map = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (dec(k), dec(v)),
                None => (dec(p), String::new()),
            })
            .collect();
        Ok(Params(map))
    }
}

impl Params {
    /// A non-empty value.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).filter(|v| !v.is_empty()).cloned()
    }

    pub(crate) fn int(&self, key: &str, code: &'static str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad(code, format!("{key}: {v:?} is not an integer")))
            })
            .transpose()
    }

    /// `limit`, `offset`, `sort_key`, `sort_dir` with the VPCEP error codes.
    pub(crate) fn page(&self, max_limit: i64) -> Result<Page, ApiError> {
        let limit = self.int("limit", "EndPoint.0006")?.unwrap_or(10);
        if !(0..=max_limit).contains(&limit) {
            return Err(ApiError::bad(
                "EndPoint.0006",
                format!("limit: {limit} is outside 0-{max_limit}"),
            ));
        }
        let offset = self.int("offset", "EndPoint.0010")?.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::bad(
                "EndPoint.0010",
                format!("offset: {offset} is negative"),
            ));
        }
        let sort = match self.get("sort_key").as_deref() {
            None | Some("create_at" | "created_at") => SortKey::Created,
            Some("update_at" | "updated_at") => SortKey::Updated,
            Some(other) => {
                return Err(ApiError::bad(
                    "EndPoint.0017",
                    format!("sort_key: {other:?} is not create_at or update_at"),
                ))
            }
        };
        let desc = match self.get("sort_dir").as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(ApiError::bad(
                    "EndPoint.0018",
                    format!("sort_dir: {other:?} is not asc or desc"),
                ))
            }
        };
        Ok(Page {
            limit,
            offset,
            sort,
            desc,
        })
    }
}

/// Path parameters by name.
pub(crate) struct Ids(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(m)| Ids(m))
            .map_err(|e| ApiError::param(e.body_text()))
    }
}

impl Ids {
    pub(crate) fn get(&self, key: &str) -> String {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

/// The authenticated caller, put in place by the auth layer.
pub(crate) struct Auth(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| ApiError::unauthorized("APIGW.0301", "authentication required"))
    }
}
