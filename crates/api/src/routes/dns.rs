//! A read-only Huawei DNS v2 view of the private names vpcep publishes, as
//! `huaweicloudsdkdns` lists them: one private zone `vpcep.{region}.internal.` per VPC that
//! has named endpoints (associated with that VPC as its router), and one A record set per
//! endpoint created with `enable_dns` once it is accepted. Nothing here can be changed:
//! the records follow the endpoints.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vpcep_model::{EndpointStatus, ServiceType};
use vpcep_store::{Caller, Endpoint, EndpointFilter, Page, SortKey};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, Params};
use crate::wire::ts;
use crate::App;

/// Time to live the resolvers give these answers.
const TTL: u32 = 60;

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/v2/zones", get(list_zones))
        .route("/v2/zones/{zone_id}", get(show_zone))
        .route("/v2/zones/{zone_id}/recordsets", get(list_zone_records))
        .route(
            "/v2/zones/{zone_id}/recordsets/{recordset_id}",
            get(show_record),
        )
        .route("/v2/recordsets", get(list_records))
}

/// A VPC's private zone.
struct Zone {
    id: String,
    vpc_id: String,
    records: Vec<Endpoint>,
}

fn zone_id(vpc_id: &str) -> String {
    hex::encode(&Sha256::digest(format!("vpcep-zone:{vpc_id}").as_bytes())[..16])
}

fn zone_name(app: &App) -> String {
    format!("vpcep.{}.internal.", app.region)
}

/// Every name the project has published, oldest first.
async fn named(app: &App, caller: &Caller) -> ApiResult<Vec<Endpoint>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = Page {
            limit: 1000,
            offset,
            sort: SortKey::Created,
            desc: false,
        };
        let (rows, _) = app
            .store
            .list_endpoints(caller.clone(), EndpointFilter::default(), page)
            .await?;
        let n = rows.len() as i64;
        out.extend(rows.into_iter().filter(|e| {
            e.enable_dns
                && e.service_type == ServiceType::Interface
                && e.status == EndpointStatus::Accepted
                && !e.dns_name.is_empty()
        }));
        if n < 1000 {
            return Ok(out);
        }
        offset += n;
    }
}

async fn zones(app: &App, caller: &Caller) -> ApiResult<Vec<Zone>> {
    let mut zones: Vec<Zone> = Vec::new();
    for e in named(app, caller).await? {
        match zones.iter_mut().find(|z| z.vpc_id == e.vpc_id) {
            Some(z) => z.records.push(e),
            None => zones.push(Zone {
                id: zone_id(&e.vpc_id),
                vpc_id: e.vpc_id.clone(),
                records: vec![e],
            }),
        }
    }
    Ok(zones)
}

fn zone_json(app: &App, caller: &Caller, z: &Zone) -> Value {
    let created = z.records.iter().map(|e| e.created_at).min().unwrap_or(0);
    let updated = z.records.iter().map(|e| e.updated_at).max().unwrap_or(0);
    json!({
        "id": z.id,
        "name": zone_name(app),
        "description": format!("private names of VPC endpoints in VPC {} (read-only, kept by vpcep)", z.vpc_id),
        "email": "hostmaster@vpcep.internal",
        "zone_type": "private",
        "ttl": TTL,
        "serial": 1,
        "status": "ACTIVE",
        "record_num": z.records.len(),
        "pool_id": "",
        "project_id": caller.project_id,
        "created_at": ts(created),
        "updated_at": ts(updated),
        "links": {"self": format!("/v2/zones/{}", z.id)},
        "masters": [],
        "routers": [{"router_id": z.vpc_id, "router_region": app.region, "status": "ACTIVE"}],
        "proxy_pattern": "AUTHORITY",
        "enterprise_project_id": "0",
        "tags": [],
    })
}

fn record_json(app: &App, caller: &Caller, zone: &str, e: &Endpoint) -> Value {
    json!({
        "id": e.id,
        "name": format!("{}.", e.dns_name),
        "description": format!("VPC endpoint {}", e.id),
        "zone_id": zone,
        "zone_name": zone_name(app),
        "type": "A",
        "ttl": TTL,
        "records": [e.ip],
        "created_at": ts(e.created_at),
        "updated_at": ts(e.updated_at),
        "create_at": ts(e.created_at),
        "update_at": ts(e.updated_at),
        "status": "ACTIVE",
        "default": false,
        "project_id": caller.project_id,
        "links": {"self": format!("/v2/zones/{zone}/recordsets/{}", e.id)},
        "line": "default_view",
        "tags": [],
    })
}

/// `limit` (0-500, default 500) and `offset`, as the DNS API pages.
fn window<T>(rows: Vec<T>, p: &Params) -> ApiResult<Vec<T>> {
    let limit = p.int("limit", "DNS.0303")?.unwrap_or(500);
    let offset = p.int("offset", "DNS.0303")?.unwrap_or(0);
    if !(0..=500).contains(&limit) || offset < 0 {
        return Err(ApiError::bad(
            "DNS.0303",
            "limit must be 0-500 and offset at least 0",
        ));
    }
    Ok(rows
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect())
}

fn listing(key: &str, total: usize, items: Vec<Value>, path: &str) -> Json<Value> {
    Json(json!({
        "links": {"self": path},
        key: items,
        "metadata": {"total_count": total},
    }))
}

async fn list_zones(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let kind = p.get("type").unwrap_or_else(|| "public".into());
    let mut all = match kind.as_str() {
        "private" => zones(&app, &caller).await?,
        "public" => Vec::new(),
        other => {
            return Err(ApiError::bad(
                "DNS.0303",
                format!("type: {other:?} is not public or private"),
            ))
        }
    };
    if let Some(name) = p.get("name") {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !zone_name(&app).contains(&name) {
            all.clear();
        }
    }
    if let Some(id) = p.get("id") {
        all.retain(|z| z.id == id);
    }
    let total = all.len();
    let items = window(all, &p)?
        .iter()
        .map(|z| zone_json(&app, &caller, z))
        .collect();
    Ok(listing("zones", total, items, "/v2/zones"))
}

async fn find_zone(app: &App, caller: &Caller, id: &str) -> ApiResult<Zone> {
    zones(app, caller)
        .await?
        .into_iter()
        .find(|z| z.id == id)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "DNS.0101",
                format!("zone {id} not found"),
            )
        })
}

async fn show_zone(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<Value>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    Ok(Json(zone_json(&app, &caller, &z)))
}

/// Record sets matching the query's `type`, `name` (substring) and `status`.
fn matching<'a>(
    records: impl Iterator<Item = (&'a str, &'a Endpoint)>,
    p: &Params,
) -> Vec<(&'a str, &'a Endpoint)> {
    let kind = p.get("type").map(|t| t.to_ascii_uppercase());
    let name = p
        .get("name")
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let status = p.get("status").map(|s| s.to_ascii_uppercase());
    records
        .filter(|_| kind.as_deref().is_none_or(|k| k == "A"))
        .filter(|_| status.as_deref().is_none_or(|s| s == "ACTIVE"))
        .filter(|(_, e)| name.as_deref().is_none_or(|n| e.dns_name.contains(n)))
        .collect()
}

async fn list_zone_records(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    p: Params,
) -> ApiResult<Json<Value>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    let rows = matching(z.records.iter().map(|e| (z.id.as_str(), e)), &p);
    let total = rows.len();
    let items = window(rows, &p)?
        .into_iter()
        .map(|(zone, e)| record_json(&app, &caller, zone, e))
        .collect();
    Ok(listing(
        "recordsets",
        total,
        items,
        &format!("/v2/zones/{}/recordsets", z.id),
    ))
}

async fn list_records(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let all = match p.get("zone_type").as_deref() {
        None | Some("private") => zones(&app, &caller).await?,
        Some("public") => Vec::new(),
        Some(other) => {
            return Err(ApiError::bad(
                "DNS.0303",
                format!("zone_type: {other:?} is not public or private"),
            ))
        }
    };
    let rows = matching(
        all.iter()
            .flat_map(|z| z.records.iter().map(move |e| (z.id.as_str(), e))),
        &p,
    );
    let total = rows.len();
    let items = window(rows, &p)?
        .into_iter()
        .map(|(zone, e)| record_json(&app, &caller, zone, e))
        .collect();
    Ok(listing("recordsets", total, items, "/v2/recordsets"))
}

async fn show_record(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<Value>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    let id = ids.get("recordset_id");
    let e = z.records.iter().find(|e| e.id == id).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "DNS.0305",
            format!("record set {id} not found"),
        )
    })?;
    Ok(Json(record_json(&app, &caller, &z.id, e)))
}
