//! Authentication and tenancy at the edge: AK/SK signatures (SDK-HMAC-SHA256) or an
//! `X-Auth-Token` from a console login, then the project in the path checked against the
//! caller. Handlers only ever see a verified [`Caller`].

pub mod sign;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use vpcep_store::{Caller, Credential};

use crate::error::ApiError;
use crate::App;

/// Requests that need no credentials: version discovery, login, docs, console.
fn is_public(method: &Method, path: &str) -> bool {
    let p = path.trim_end_matches('/');
    match *method {
        Method::GET => {
            matches!(
                p,
                "" | "/v1" | "/v2" | "/openapi.json" | "/healthz"
            ) || p.starts_with("/console")
                // Gateway nodes authenticate with the node token in their own handlers.
                || p.starts_with("/internal/")
        }
        Method::POST => p == "/v3/auth/tokens" || p.starts_with("/internal/"),
        _ => false,
    }
}

pub(crate) async fn layer(State(app): State<App>, req: Request, next: Next) -> Response {
    if is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match authenticate(&app, req).await {
        Ok(req) => next.run(req).await,
        Err(Refused::Api(e)) => e.into_response(),
        Err(Refused::Throttled(wait)) => throttled(&app, wait),
    }
}

/// Why a request goes no further than authentication.
enum Refused {
    Api(ApiError),
    /// Over the caller's rate; a token is back after this long.
    Throttled(std::time::Duration),
}

impl From<vpcep_store::StoreError> for Refused {
    fn from(e: vpcep_store::StoreError) -> Self {
        Refused::Api(e.into())
    }
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

/// One token from the verified caller's bucket (`key`: its access key, or its account for
/// console tokens).
fn throttle(app: &App, key: &str) -> Result<(), Refused> {
    match &app.limiter {
        Some(l) => l.check(key).map_err(Refused::Throttled),
        None => Ok(()),
    }
}

/// `429` in the API's format, with `Retry-After` in whole seconds (at least 1).
fn throttled(app: &App, wait: std::time::Duration) -> Response {
    let rate = app
        .limiter
        .as_ref()
        .map(|l| l.rate())
        .unwrap_or(crate::ratelimit::Rate::DEFAULT);
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "APIGW.0308",
        format!(
            "the throttling threshold has been reached: {} requests per second per access key (bursts of {})",
            rate.per_sec, rate.burst
        ),
    )
    .into_response();
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    resp.headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
    resp
}

fn header_str<'a>(parts: &'a axum::http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses `X-Sdk-Date` and checks it against the allowed clock skew.
fn check_date(raw: &str, skew_secs: i64) -> Result<(), ApiError> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    let when = PrimitiveDateTime::parse(raw, fmt)
        .map_err(|_| {
            ApiError::unauthorized(
                "APIGW.0303",
                format!("X-Sdk-Date {raw:?} is not of the form 20250101T120000Z"),
            )
        })?
        .assume_utc();
    let drift = (OffsetDateTime::now_utc() - when).whole_seconds().abs();
    if drift > skew_secs {
        return Err(ApiError::unauthorized(
            "APIGW.0303",
            format!("signature expired: X-Sdk-Date is {drift} s away from server time (allowed {skew_secs} s)"),
        ));
    }
    Ok(())
}

async fn authenticate(app: &App, req: Request) -> Result<Request, Refused> {
    let (mut parts, body) = req.into_parts();
    // The edge (`edge::body`) has read the body whole and within its limit.
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::bad("APIGW.0201", "the request body could not be read"))?;
    let (domain_id, token_project) = if let Some(token) = header_str(&parts, "x-auth-token") {
        let caller = app.store.token(token.to_owned()).await?.ok_or_else(|| {
            ApiError::unauthorized("APIGW.0301", "the token is invalid or expired")
        })?;
        throttle(app, &format!("account:{}", caller.domain_id))?;
        (caller.domain_id, Some(caller.project_id))
    } else {
        let raw = header_str(&parts, header::AUTHORIZATION.as_str()).ok_or_else(|| {
            ApiError::unauthorized(
                "APIGW.0301",
                "missing credentials: sign the request (SDK-HMAC-SHA256) or send X-Auth-Token",
            )
        })?;
        let auth = sign::Authorization::parse(raw)
            .ok_or_else(|| ApiError::unauthorized("APIGW.0301", "malformed Authorization header; expected SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…"))?;
        for required in ["host", "x-sdk-date"] {
            if !auth.signed_headers.iter().any(|h| h == required) {
                return Err(ApiError::unauthorized(
                    "APIGW.0301",
                    format!("SignedHeaders must include {required}"),
                )
                .into());
            }
        }
        let date = header_str(&parts, "x-sdk-date")
            .ok_or_else(|| ApiError::unauthorized("APIGW.0303", "missing X-Sdk-Date"))?;
        check_date(date, app.clock_skew_secs)?;
        let mut signed = Vec::with_capacity(auth.signed_headers.len());
        for name in &auth.signed_headers {
            let value = parts
                .headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .ok_or_else(|| {
                    ApiError::unauthorized("APIGW.0301", format!("signed header {name} is missing"))
                })?;
            signed.push((name.clone(), value));
        }
        let cred = credential(app, &auth.access_key).await?;
        let canonical = sign::canonical_request(&sign::SignedRequest {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &signed,
            body: &bytes,
            content_sha256: header_str(&parts, "x-sdk-content-sha256"),
        });
        if !sign::verify(
            &cred.secret_key,
            &sign::string_to_sign(date, &canonical),
            &auth.signature,
        ) {
            tracing::debug!(%canonical, "signature mismatch");
            return Err(ApiError::unauthorized("APIGW.0301", "the request signature does not match; check the secret key and that nothing rewrote the request").into());
        }
        throttle(app, &auth.access_key)?;
        (cred.domain_id, None)
    };
    let project_id = resolve_project(app, &parts, &domain_id, token_project).await?;
    parts.extensions.insert(Caller {
        domain_id,
        project_id,
    });
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn credential(app: &App, access_key: &str) -> Result<Credential, ApiError> {
    if let Some(c) = app
        .credentials
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(access_key)
    {
        return Ok(c.clone());
    }
    let cred = app
        .store
        .credential(access_key.to_owned())
        .await?
        .ok_or_else(|| ApiError::unauthorized("APIGW.0301", "unknown access key"))?;
    app.credentials
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(access_key.to_owned(), cred.clone());
    Ok(cred)
}

async fn project_of(app: &App, domain_id: &str) -> Result<Option<String>, ApiError> {
    if let Some(p) = app
        .projects
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(domain_id)
    {
        return Ok(Some(p.clone()));
    }
    let found = app
        .store
        .project_of(domain_id.to_owned(), app.region.clone())
        .await?;
    if let Some(p) = &found {
        app.projects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain_id.to_owned(), p.clone());
    }
    Ok(found)
}

/// The project the request acts in: the one in the path (`/v1/{project_id}/…`), which must
/// belong to the caller, agree with `X-Project-Id` and with a token's scope.
async fn resolve_project(
    app: &App,
    parts: &axum::http::request::Parts,
    domain_id: &str,
    token_project: Option<String>,
) -> Result<String, ApiError> {
    let mut segs = parts.uri.path().split('/').skip(1);
    let in_path = match (segs.next(), segs.next()) {
        // DNS v2 paths (`/v2/zones`, `/v2/recordsets`) name no project.
        (Some("v2"), Some("zones" | "recordsets")) => None,
        (Some("v1" | "v2"), Some(p)) => Some(p.to_owned()),
        _ => None,
    };
    let header = header_str(parts, "x-project-id").map(str::to_owned);
    let own = match &token_project {
        Some(p) => Some(p.clone()),
        None => project_of(app, domain_id).await?,
    };
    let Some(wanted) = in_path.or(header.clone()) else {
        return own.ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "EndPoint.0004",
                format!("the account has no project in region {}", app.region),
            )
        });
    };
    let well_formed = wanted.len() == 32 && wanted.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(ApiError::bad(
            "EndPoint.0014",
            format!("project id {wanted:?} is not valid"),
        ));
    }
    if header.as_ref().is_some_and(|h| *h != wanted) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EndPoint.0004",
            "X-Project-Id does not match the project in the path",
        ));
    }
    if own.as_deref() != Some(wanted.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EndPoint.0004",
            format!("no permission on project {wanted}"),
        ));
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/v1"));
        assert!(is_public(&Method::GET, "/v2/"));
        assert!(is_public(&Method::POST, "/v3/auth/tokens"));
        assert!(!is_public(&Method::GET, "/v1/p/vpc-endpoints"));
        assert!(!is_public(&Method::DELETE, "/v1"));
    }

    #[test]
    fn dates() {
        let now = OffsetDateTime::now_utc();
        let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
        let ok = now.format(fmt).unwrap();
        assert!(check_date(&ok, 900).is_ok());
        let old = (now - time::Duration::minutes(16)).format(fmt).unwrap();
        assert_eq!(check_date(&old, 900).unwrap_err().code, "APIGW.0303");
        let future = (now + time::Duration::minutes(16)).format(fmt).unwrap();
        assert!(check_date(&future, 900).is_err());
        assert!(check_date("2025-01-01T12:00:00Z", 900).is_err());
    }
}
