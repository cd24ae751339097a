//! The whitelist of an endpoint service: which accounts may connect to it.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::req;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, JsonBody, Params};
use crate::openapi::{body, Io};
use crate::wire::{self, PermissionOut};
use crate::App;

/// Whitelist entries; a listing also counts them all.
#[derive(Serialize, ToSchema)]
#[schema(as = PermissionList)]
struct Permissions {
    permissions: Vec<PermissionOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_count: Option<i64>,
}

/// The whitelist after an add or remove: its entries' account ids.
#[derive(Serialize, ToSchema)]
struct PermissionNames {
    permissions: Vec<String>,
    permission_type: String,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "list_service_permissions_details" => (None, body::<Permissions>()),
        "add_or_remove_service_permissions" => (body::<ActionBody>(), body::<PermissionNames>()),
        "batch_add_endpoint_service_permissions" => {
            (body::<BatchCreateBody>(), body::<Permissions>())
        }
        "batch_remove_endpoint_service_permissions" => {
            (body::<BatchDeleteBody>(), body::<Permissions>())
        }
        "update_endpoint_service_permission_desc" => (body::<DescBody>(), body::<Permissions>()),
        _ => return None,
    };
    Some(Io { request, response })
}

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
) -> ApiResult<Json<Permissions>> {
    let (rows, total) = app
        .store
        .list_permissions(
            caller,
            ids.get("vpc_endpoint_service_id"),
            p.get("permission"),
            p.page(500)?,
        )
        .await?;
    Ok(Json(Permissions {
        permissions: rows.iter().map(wire::permission).collect(),
        total_count: Some(total),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionActionBody)]
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
) -> ApiResult<Json<PermissionNames>> {
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
    Ok(Json(PermissionNames {
        permissions: rows.into_iter().map(|r| r.permission).collect(),
        permission_type: "domainId".to_owned(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionAddItem)]
struct AddItem {
    permission: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionBatchCreateBody)]
struct BatchCreateBody {
    permissions: Option<Vec<AddItem>>,
    permission_type: Option<String>,
}

async fn batch_create(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<BatchCreateBody>,
) -> ApiResult<Json<Permissions>> {
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
    Ok(Json(Permissions {
        permissions: rows.iter().map(wire::permission).collect(),
        total_count: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionRemoveItem)]
struct RemoveItem {
    id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionBatchDeleteBody)]
struct BatchDeleteBody {
    permissions: Option<Vec<RemoveItem>>,
}

async fn batch_delete(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<BatchDeleteBody>,
) -> ApiResult<Json<Permissions>> {
    let list = req("permissions", b.permissions)?
        .into_iter()
        .map(|i| req("permissions.id", i.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let rows = app
        .store
        .remove_permission_ids(caller, ids.get("vpc_endpoint_service_id"), list)
        .await?;
    Ok(Json(Permissions {
        permissions: rows.iter().map(wire::permission).collect(),
        total_count: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionDesc)]
struct Desc {
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionDescBody)]
struct DescBody {
    permission: Option<Desc>,
}

async fn describe(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    JsonBody(b): JsonBody<DescBody>,
) -> ApiResult<Json<Permissions>> {
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
    Ok(Json(Permissions {
        permissions: vec![wire::permission(&row)],
        total_count: None,
    }))
}
