//! A read-only Huawei DNS v2 view of the private names vpcep publishes, as
//! `huaweicloudsdkdns` lists them: one private zone `vpcep.{region}.internal.` per VPC that
//! has named endpoints (associated with that VPC as its router), and one A record set per
//! endpoint created with `enable_dns` once it is accepted. Nothing here can be changed:
//! the records follow the endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vpcep_store::{Caller, DnsRecord, DnsRecordFilter, DnsZone};

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

fn zone_id(vpc_id: &str) -> String {
    hex::encode(&Sha256::digest(format!("vpcep-zone:{vpc_id}").as_bytes())[..16])
}

fn zone_name(app: &App) -> String {
    format!("vpcep.{}.internal.", app.region)
}

/// The caller's zone with this id. A zone id is a hash of its VPC, so this looks through
/// the project's zones (one row per VPC with names, not per name).
async fn find_zone(app: &App, caller: &Caller, id: &str) -> ApiResult<DnsZone> {
    let (zones, _) = app.store.dns_zones(caller.clone(), None, -1, 0).await?;
    zones
        .into_iter()
        .find(|z| zone_id(&z.vpc_id) == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "DNS.0101",
                format!("zone {id} not found"),
            )
        })
}

fn zone_json(app: &App, caller: &Caller, z: &DnsZone) -> Value {
    let id = zone_id(&z.vpc_id);
    json!({
        "id": id,
        "name": zone_name(app),
        "description": format!("private names of VPC endpoints in VPC {} (read-only, kept by vpcep)", z.vpc_id),
        "email": "hostmaster@vpcep.internal",
        "zone_type": "private",
        "ttl": TTL,
        "serial": 1,
        "status": "ACTIVE",
        "record_num": z.records,
        "pool_id": "",
        "project_id": caller.project_id,
        "created_at": ts(z.created_at),
        "updated_at": ts(z.updated_at),
        "links": {"self": format!("/v2/zones/{id}")},
        "masters": [],
        "routers": [{"router_id": z.vpc_id, "router_region": app.region, "status": "ACTIVE"}],
        "proxy_pattern": "AUTHORITY",
        "enterprise_project_id": "0",
        "tags": [],
    })
}

fn record_json(app: &App, caller: &Caller, e: &DnsRecord) -> Value {
    let zone = zone_id(&e.vpc_id);
    json!({
        "id": e.id,
        "name": format!("{}.", e.name),
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
fn window(p: &Params) -> ApiResult<(i64, i64)> {
    let limit = p.int("limit", "DNS.0303")?.unwrap_or(500);
    let offset = p.int("offset", "DNS.0303")?.unwrap_or(0);
    if !(0..=500).contains(&limit) || offset < 0 {
        return Err(ApiError::bad(
            "DNS.0303",
            "limit must be 0-500 and offset at least 0",
        ));
    }
    Ok((limit, offset))
}

fn listing(key: &str, total: i64, items: Vec<Value>, path: &str) -> Json<Value> {
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
    let private = match kind.as_str() {
        "private" => true,
        "public" => false,
        other => {
            return Err(ApiError::bad(
                "DNS.0303",
                format!("type: {other:?} is not public or private"),
            ))
        }
    };
    let (limit, offset) = window(&p)?;
    // Every zone has the same name: it matches or none does.
    let named = p.get("name").is_none_or(|name| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        zone_name(&app).contains(&name)
    });
    let (zones, total) = match p.get("id") {
        _ if !private || !named => (Vec::new(), 0),
        None => {
            app.store
                .dns_zones(caller.clone(), None, limit, offset)
                .await?
        }
        Some(id) => {
            let (all, _) = app.store.dns_zones(caller.clone(), None, -1, 0).await?;
            let one: Vec<DnsZone> = all
                .into_iter()
                .filter(|z| zone_id(&z.vpc_id) == id)
                .collect();
            let total = one.len() as i64;
            let shown = one.into_iter().skip(offset as usize).take(limit as usize);
            (shown.collect(), total)
        }
    };
    let items = zones.iter().map(|z| zone_json(&app, &caller, z)).collect();
    Ok(listing("zones", total, items, "/v2/zones"))
}

async fn show_zone(State(app): State<App>, Auth(caller): Auth, ids: Ids) -> ApiResult<Json<Value>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    Ok(Json(zone_json(&app, &caller, &z)))
}

/// The record sets matching the query's `type`, `name` (substring) and `status`, within
/// `vpc_id`'s zone if given, and how many match in all.
async fn matching(
    app: &App,
    caller: &Caller,
    vpc_id: Option<String>,
    p: &Params,
) -> ApiResult<(Vec<DnsRecord>, i64)> {
    let (limit, offset) = window(p)?;
    // Every record set is an ACTIVE A record.
    let kind = p.get("type").is_none_or(|t| t.eq_ignore_ascii_case("A"));
    let status = p
        .get("status")
        .is_none_or(|s| s.eq_ignore_ascii_case("ACTIVE"));
    if !kind || !status {
        return Ok((Vec::new(), 0));
    }
    let filter = DnsRecordFilter {
        vpc_id,
        id: None,
        name_contains: p
            .get("name")
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
    };
    Ok(app
        .store
        .dns_records(caller.clone(), filter, limit, offset)
        .await?)
}

async fn list_zone_records(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
    p: Params,
) -> ApiResult<Json<Value>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    let (records, total) = matching(&app, &caller, Some(z.vpc_id.clone()), &p).await?;
    let items = records
        .iter()
        .map(|e| record_json(&app, &caller, e))
        .collect();
    Ok(listing(
        "recordsets",
        total,
        items,
        &format!("/v2/zones/{}/recordsets", zone_id(&z.vpc_id)),
    ))
}

async fn list_records(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<Value>> {
    let (records, total) = match p.get("zone_type").as_deref() {
        None | Some("private") => matching(&app, &caller, None, &p).await?,
        Some("public") => {
            window(&p)?;
            (Vec::new(), 0)
        }
        Some(other) => {
            return Err(ApiError::bad(
                "DNS.0303",
                format!("zone_type: {other:?} is not public or private"),
            ))
        }
    };
    let items = records
        .iter()
        .map(|e| record_json(&app, &caller, e))
        .collect();
    Ok(listing("recordsets", total, items, "/v2/recordsets"))
}

async fn show_record(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<Value>> {
    let (zone, id) = (ids.get("zone_id"), ids.get("recordset_id"));
    let filter = DnsRecordFilter {
        id: Some(id.clone()),
        ..Default::default()
    };
    let (found, _) = app.store.dns_records(caller.clone(), filter, 1, 0).await?;
    match found.into_iter().find(|e| zone_id(&e.vpc_id) == zone) {
        Some(e) => Ok(Json(record_json(&app, &caller, &e))),
        None => {
            // A missing zone is told apart from a record that is not in it.
            find_zone(&app, &caller, &zone).await?;
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "DNS.0305",
                format!("record set {id} not found"),
            ))
        }
    }
}
