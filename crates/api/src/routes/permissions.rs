//! The whitelist of an endpoint service: which accounts may connect to it.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::{wire, App};

pub(super) fn router() -> Router<App> {
    let base = "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions";
    Router::new()
        .route(base, get(list))
        .route(&format!("{base}/action"), post(action))
        .route(&format!("{base}/batch-create"), post(batch_create))
        .route(&format!("{base}/batch-delete"), post(batch_delete))
        .route(&format!("{base}/{{permission_id}}"), put(describe))
}

fn check_type(t: Option<&str>) -> ApiResult<()> {
    match t {
        None | Some("domainId") => Ok(()),
        Some("orgPath") => Err(ApiError::bad(
            "EndPoint.3002",
            "permission_type: organisation paths are not supported; use domainId",
        )),
        Some(other) => Err(ApiError::bad(
            "EndPoint.3002",
            format!("permission_type: {other:?} is not domainId or orgPath"),
        )),
    }
}

async fn list(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    p: Params,
) -> ApiResult<Json<Value>> {
    let (rows, total) = app
        .store
        .list_permissions(
            caller,
            ids.get("vpc_endpoint_service_id"),
            p.get("permission"),
            p.page(500)?,
        )
        .await?;
    Ok(Json(json!({
        "permissions": rows.iter().map(wire::permission).collect::<Vec<_>>(),
        "total_count": total,
    })))
}

#[derive(Deserialize)]
struct ActionBody {
    permissions: Option<Vec<String>>,
    permission_type: Option<String>,
    action: Option<String>,
}

async fn action(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<ActionBody>,
) -> ApiResult<Json<Value>> {
    check_type(b.permission_type.as_deref())?;
    let action = req("action", b.action)?;
    let perms = req("permissions", b.permissions)?;
    let sid = ids.get("vpc_endpoint_service_id");
    let rows = match action.as_str() {
        "add" => {
            app.store
                .add_permissions(
                    caller,
                    sid,
                    perms.into_iter().map(|p| (p, String::new())).collect(),
                )
                .await?
        }
        "remove" => app.store.remove_permissions(caller, sid, perms).await?,
        other => {
            return Err(ApiError::bad(
                "EndPoint.3035",
                format!("action: {other:?} is not add or remove"),
            ))
        }
    };
    Ok(Json(json!({
        "permissions": rows.iter().map(|r| r.permission.clone()).collect::<Vec<_>>(),
        "permission_type": "domainId",
    })))
}

#[derive(Deserialize)]
struct AddItem {
    permission: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct BatchCreateBody {
    permissions: Option<Vec<AddItem>>,
    permission_type: Option<String>,
}

async fn batch_create(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<BatchCreateBody>,
) -> ApiResult<Json<Value>> {
    check_type(b.permission_type.as_deref())?;
    let items = req("permissions", b.permissions)?
        .into_iter()
        .map(|i| {
            Ok((
                req("permissions.permission", i.permission)?,
                i.description.unwrap_or_default(),
            ))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let rows = app
        .store
        .add_permissions(caller, ids.get("vpc_endpoint_service_id"), items)
        .await?;
    Ok(Json(
        json!({"permissions": rows.iter().map(wire::permission).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct RemoveItem {
    id: Option<String>,
}

#[derive(Deserialize)]
struct BatchDeleteBody {
    permissions: Option<Vec<RemoveItem>>,
}

async fn batch_delete(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<BatchDeleteBody>,
) -> ApiResult<Json<Value>> {
    let list = req("permissions", b.permissions)?
        .into_iter()
        .map(|i| req("permissions.id", i.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let rows = app
        .store
        .remove_permission_ids(caller, ids.get("vpc_endpoint_service_id"), list)
        .await?;
    Ok(Json(
        json!({"permissions": rows.iter().map(wire::permission).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct Desc {
    description: Option<String>,
}

#[derive(Deserialize)]
struct DescBody {
    permission: Option<Desc>,
}

async fn describe(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<DescBody>,
) -> ApiResult<Json<Value>> {
    let desc = req(
        "permission.description",
        req("permission", b.permission)?.description,
    )?;
    let row = app
        .store
        .describe_permission(
            caller,
            ids.get("vpc_endpoint_service_id"),
            ids.get("permission_id"),
            desc,
        )
        .await?;
    Ok(Json(json!({"permissions": [wire::permission(&row)]})))
}
