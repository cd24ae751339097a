//! A read-only Huawei DNS v2 view of the private names vpcep publishes, as
//! `huaweicloudsdkdns` lists them: one private zone `vpcep.{region}.internal.` per VPC that
//! has named endpoints (associated with that VPC as its router), and one A record set per
//! endpoint created with `enable_dns` once it is accepted. Nothing here can be changed:
//! the records follow the endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use vpcep_store::{Caller, DnsRecord, DnsRecordFilter, DnsZone};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Ids, Params};
use crate::openapi::{body, Io};
use crate::wire::{ts, TagOut};
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

#[derive(Serialize, ToSchema)]
struct SelfLink {
    #[serde(rename = "self")]
    self_link: String,
}

#[derive(Serialize, ToSchema)]
struct ZoneRouter {
    router_id: String,
    router_region: String,
    status: String,
}

/// A private zone (one per VPC with named endpoints).
#[derive(Serialize, ToSchema)]
struct ZoneOut {
    id: String,
    name: String,
    description: String,
    email: String,
    zone_type: String,
    ttl: u32,
    serial: i64,
    status: String,
    record_num: i64,
    pool_id: String,
    project_id: String,
    created_at: String,
    updated_at: String,
    links: SelfLink,
    masters: Vec<String>,
    routers: Vec<ZoneRouter>,
    proxy_pattern: String,
    enterprise_project_id: String,
    tags: Vec<TagOut>,
}

fn zone_json(app: &App, caller: &Caller, z: &DnsZone) -> ZoneOut {
    let id = zone_id(&z.vpc_id);
    ZoneOut {
        name: zone_name(app),
        description: format!(
            "private names of VPC endpoints in VPC {} (read-only, kept by vpcep)",
            z.vpc_id
        ),
        email: "hostmaster@vpcep.internal".to_owned(),
        zone_type: "private".to_owned(),
        ttl: TTL,
        serial: 1,
        status: "ACTIVE".to_owned(),
        record_num: z.records,
        pool_id: String::new(),
        project_id: caller.project_id.clone(),
        created_at: ts(z.created_at),
        updated_at: ts(z.updated_at),
        links: SelfLink {
            self_link: format!("/v2/zones/{id}"),
        },
        masters: vec![],
        routers: vec![ZoneRouter {
            router_id: z.vpc_id.clone(),
            router_region: app.region.clone(),
            status: "ACTIVE".to_owned(),
        }],
        proxy_pattern: "AUTHORITY".to_owned(),
        enterprise_project_id: "0".to_owned(),
        tags: vec![],
        id,
    }
}

/// The A record set of one named endpoint.
#[derive(Serialize, ToSchema)]
struct RecordSetOut {
    id: String,
    name: String,
    description: String,
    zone_id: String,
    zone_name: String,
    #[serde(rename = "type")]
    kind: String,
    ttl: u32,
    records: Vec<String>,
    created_at: String,
    updated_at: String,
    create_at: String,
    update_at: String,
    status: String,
    default: bool,
    project_id: String,
    links: SelfLink,
    line: String,
    tags: Vec<TagOut>,
}

fn record_json(app: &App, caller: &Caller, e: &DnsRecord) -> RecordSetOut {
    let zone = zone_id(&e.vpc_id);
    RecordSetOut {
        id: e.id.clone(),
        name: format!("{}.", e.name),
        description: format!("VPC endpoint {}", e.id),
        zone_name: zone_name(app),
        kind: "A".to_owned(),
        ttl: TTL,
        records: vec![e.ip.clone()],
        created_at: ts(e.created_at),
        updated_at: ts(e.updated_at),
        create_at: ts(e.created_at),
        update_at: ts(e.updated_at),
        status: "ACTIVE".to_owned(),
        default: false,
        project_id: caller.project_id.clone(),
        links: SelfLink {
            self_link: format!("/v2/zones/{zone}/recordsets/{}", e.id),
        },
        line: "default_view".to_owned(),
        tags: vec![],
        zone_id: zone,
    }
}

#[derive(Serialize, ToSchema)]
struct Metadata {
    total_count: i64,
}

/// A page of zones.
#[derive(Serialize, ToSchema)]
struct ZoneList {
    links: SelfLink,
    zones: Vec<ZoneOut>,
    metadata: Metadata,
}

/// A page of record sets.
#[derive(Serialize, ToSchema)]
struct RecordSetList {
    links: SelfLink,
    recordsets: Vec<RecordSetOut>,
    metadata: Metadata,
}

/// The bodies of this module's operations.
pub(super) fn io(op: &str) -> Option<Io> {
    let (request, response) = match op {
        "list_private_zones" => (None, body::<ZoneList>()),
        "show_private_zone" => (None, body::<ZoneOut>()),
        "list_record_sets_by_zone" | "list_record_sets" => (None, body::<RecordSetList>()),
        "show_record_set" => (None, body::<RecordSetOut>()),
        _ => return None,
    };
    Some(Io { request, response })
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

fn record_sets(total: i64, recordsets: Vec<RecordSetOut>, path: &str) -> Json<RecordSetList> {
    Json(RecordSetList {
        links: SelfLink {
            self_link: path.to_owned(),
        },
        recordsets,
        metadata: Metadata { total_count: total },
    })
}

async fn list_zones(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<ZoneList>> {
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
    Ok(Json(ZoneList {
        links: SelfLink {
            self_link: "/v2/zones".to_owned(),
        },
        zones: zones.iter().map(|z| zone_json(&app, &caller, z)).collect(),
        metadata: Metadata { total_count: total },
    }))
}

async fn show_zone(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<ZoneOut>> {
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
) -> ApiResult<Json<RecordSetList>> {
    let z = find_zone(&app, &caller, &ids.get("zone_id")).await?;
    let (records, total) = matching(&app, &caller, Some(z.vpc_id.clone()), &p).await?;
    let items = records
        .iter()
        .map(|e| record_json(&app, &caller, e))
        .collect();
    Ok(record_sets(
        total,
        items,
        &format!("/v2/zones/{}/recordsets", zone_id(&z.vpc_id)),
    ))
}

async fn list_records(
    State(app): State<App>,
    Auth(caller): Auth,
    p: Params,
) -> ApiResult<Json<RecordSetList>> {
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
    Ok(record_sets(total, items, "/v2/recordsets"))
}

async fn show_record(
    State(app): State<App>,
    Auth(caller): Auth,
    ids: Ids,
) -> ApiResult<Json<RecordSetOut>> {
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
