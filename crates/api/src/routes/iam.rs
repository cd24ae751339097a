//! IAM-lite: Keystone-shaped password login for the console and curl users, and the
//! project lookup the SDK makes when it is given a region but no project id.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, Params};
use crate::openapi::{body, Io};
use crate::wire::ts;
use crate::App;

#[derive(Serialize, ToSchema, Clone)]
struct IdName {
    id: String,
    name: String,
}

#[derive(Serialize, ToSchema)]
struct Owned {
    id: String,
    name: String,
    domain: IdName,
}

/// A Keystone-shaped token (the token itself is the `X-Subject-Token` header).
#[derive(Serialize, ToSchema)]
struct TokenOut {
    methods: Vec<String>,
    issued_at: String,
    expires_at: String,
    user: Owned,
    project: Owned,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    catalog: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
struct TokenBody {
    token: TokenOut,
}

#[derive(Serialize, ToSchema)]
struct ProjectOut {
    id: String,
    name: String,
    domain_id: String,
    enabled: bool,
}

/// The caller's project in this region (or none).
#[derive(Serialize, ToSchema)]
struct Projects {
    projects: Vec<ProjectOut>,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "keystone_create_user_token_by_password" => (body::<LoginBody>(), body::<TokenBody>()),
        "keystone_list_projects" => (None, body::<Projects>()),
        _ => return None,
    };
    Some(Io { request, response })
}

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v3/auth/tokens", post(login))
        .route("/v3/projects", get(projects))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginProject)]
struct Named {
    name: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginUser)]
struct User {
    name: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginPassword)]
struct PasswordIn {
    user: Option<User>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginIdentity)]
struct Identity {
    methods: Option<Vec<String>>,
    password: Option<PasswordIn>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginScope)]
struct Scope {
    project: Option<Named>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginAuth)]
struct AuthIn {
    identity: Option<Identity>,
    scope: Option<Scope>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = LoginBody)]
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
    let domain = IdName {
        id: tok.caller.domain_id.clone(),
        name,
    };
    let body = TokenBody {
        token: TokenOut {
            methods: vec!["password".to_owned()],
            issued_at: ts(tok.issued_at),
            expires_at: ts(tok.expires_at),
            user: Owned {
                id: tok.caller.domain_id.clone(),
                name: tok.account_name.clone(),
                domain: domain.clone(),
            },
            project: Owned {
                id: tok.caller.project_id.clone(),
                name: app.region.clone(),
                domain,
            },
            catalog: vec![],
        },
    };
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    let value = HeaderValue::from_str(&tok.token).map_err(|_| ApiError::internal())?;
    resp.headers_mut()
        .insert(HeaderName::from_static("x-subject-token"), value);
    Ok(resp)
}

async fn projects(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Projects>> {
    let projects = match p.get("name") {
        Some(n) if n != app.region => vec![],
        _ => vec![ProjectOut {
            id: caller.project_id,
            name: app.region.clone(),
            domain_id: caller.domain_id,
            enabled: true,
        }],
    };
    Ok(Json(Projects { projects }))
}
