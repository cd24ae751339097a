//! IAM-lite: Keystone-shaped password login for the console and curl users, and the
//! project lookup the SDK makes when it is given a region but no project id.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, Params};
use crate::wire::ts;
use crate::App;

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v3/auth/tokens", post(login))
        .route("/v3/projects", get(projects))
}

#[derive(Deserialize)]
struct Named {
    name: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize)]
struct User {
    name: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct PasswordIn {
    user: Option<User>,
}

#[derive(Deserialize)]
struct Identity {
    methods: Option<Vec<String>>,
    password: Option<PasswordIn>,
}

#[derive(Deserialize)]
struct Scope {
    project: Option<Named>,
}

#[derive(Deserialize)]
struct AuthIn {
    identity: Option<Identity>,
    scope: Option<Scope>,
}

#[derive(Deserialize)]
struct LoginBody {
    auth: Option<AuthIn>,
}

async fn login(State(app): State<App>, JsonBody(b): JsonBody<LoginBody>) -> ApiResult<Response> {
    let auth = req("auth", b.auth)?;
    let identity = req("auth.identity", auth.identity)?;
    if !identity
        .methods
        .unwrap_or_default()
        .iter()
        .any(|m| m == "password")
    {
        return Err(ApiError::param(
            "auth.identity.methods: only password is supported",
        ));
    }
    let user = req(
        "auth.identity.password.user",
        req("auth.identity.password", identity.password)?.user,
    )?;
    let name = req("auth.identity.password.user.name", user.name)?;
    let password = req("auth.identity.password.user.password", user.password)?;
    if let Some(p) = auth.scope.and_then(|s| s.project) {
        let wrong_region = p.name.as_ref().is_some_and(|n| *n != app.region);
        if wrong_region {
            return Err(ApiError::param(format!(
                "auth.scope.project.name: this service serves region {}",
                app.region
            )));
        }
        // A scope by id is checked against the account's project below.
        if let Some(id) = p.id {
            return finish(&app, name, password, Some(id)).await;
        }
    }
    finish(&app, name, password, None).await
}

async fn finish(
    app: &App,
    name: String,
    password: String,
    want_project: Option<String>,
) -> ApiResult<Response> {
    let tok = app
        .store
        .login(name.clone(), password, app.region.clone())
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("APIGW.0301", "the account name or password is wrong")
        })?;
    if want_project.is_some_and(|p| p != tok.caller.project_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "APIGW.0302",
            "the account has no such project",
        ));
    }
    let domain = json!({"id": tok.caller.domain_id, "name": name});
    let body = json!({"token": {
        "methods": ["password"],
        "issued_at": ts(tok.issued_at),
        "expires_at": ts(tok.expires_at),
        "user": {"id": tok.caller.domain_id, "name": tok.account_name, "domain": domain},
        "project": {"id": tok.caller.project_id, "name": app.region, "domain": domain},
        "catalog": [],
    }});
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    let value = HeaderValue::from_str(&tok.token).map_err(|_| ApiError::internal())?;
    resp.headers_mut()
        .insert(HeaderName::from_static("x-subject-token"), value);
    Ok(resp)
}

async fn projects(State(app): State<App>, Auth(caller): Auth, p: Params) -> ApiResult<Json<Value>> {
    let list = match p.get("name") {
        Some(n) if n != app.region => vec![],
        _ => vec![
            json!({"id": caller.project_id, "name": app.region, "domain_id": caller.domain_id, "enabled": true}),
        ],
    };
    Ok(Json(json!({"projects": list})))
}
