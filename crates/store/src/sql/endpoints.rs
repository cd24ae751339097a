//! Endpoints: the consumer side of a connection.

use crate::sql::numbered;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use vpcep_model::{
    parse_cidr, validate_description, validate_endpoint_whitelist, validate_tags, EndpointStatus,
    Reason, Rejection, ServiceStatus, ServiceType, MARKER_ID_BASE, SNAT_RANGE, SNAT_SIZE,
};

use super::runs::{release, take_lowest, Pool};
use super::services::{connectable_service, quota_of};
use super::tags::{insert_tags, kind_str, load_tags};
use super::vpc::{claim_address, find_subnet, find_vpc, overlaps, release_address};
use super::{
    from_json, json_text, like_pattern, new_id, not_found, now_micros, order_clause, reject,
    SqlStore,
};
use crate::{
    Caller, Endpoint, EndpointFilter, NewEndpoint, Page, ResourceKind, Result, StoreError,
};

/// Endpoints with the current name and type of their service (kept on the row too, for
/// endpoints whose service is gone).
pub(super) const ENDPOINT_SELECT: &str = "SELECT e.*, COALESCE(s.service_name, e.service_name) AS current_service_name FROM endpoints e LEFT JOIN services s ON s.id = e.service_id";

fn endpoint_row(r: &AnyRow) -> Result<Endpoint> {
    let s = |col: &str| -> Result<String> { Ok(r.try_get::<String, _>(col)?) };
    let corrupt = |e: Rejection| StoreError::Corrupt(e.msg);
    let opt_json = |col: &str| -> Result<Option<serde_json::Value>> {
        let raw = s(col)?;
        if raw.is_empty() {
            Ok(None)
        } else {
            Ok(Some(from_json(&raw)?))
        }
    };
    let error = s("error")?;
    Ok(Endpoint {
        id: s("id")?,
        project_id: s("project_id")?,
        domain_id: s("domain_id")?,
        service_id: s("service_id")?,
        service_name: s("current_service_name")?,
        service_type: ServiceType::parse(&s("service_type")?).map_err(corrupt)?,
        vpc_id: s("vpc_id")?,
        subnet_id: s("subnet_id")?,
        ip: s("ip")?,
        status: EndpointStatus::parse(&s("status")?).map_err(corrupt)?,
        marker_id: r.try_get("marker_id")?,
        enable_dns: r.try_get::<i64, _>("enable_dns")? != 0,
        dns_name: s("dns_name")?,
        whitelist: from_json(&s("whitelist")?)?,
        enable_whitelist: r.try_get::<i64, _>("enable_whitelist")? != 0,
        routetables: from_json(&s("routetables")?)?,
        description: s("description")?,
        conn_description: s("conn_description")?,
        policy_statement: opt_json("policy_statement")?,
        policy_document: opt_json("policy_document")?,
        edition: s("edition")?,
        error: (!error.is_empty()).then_some(error),
        tags: Vec::new(),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Endpoints matching `where_` (over alias `e`), with tags; paged when `page` is given.
pub(super) async fn endpoint_rows(
    conn: &mut AnyConnection,
    where_: &str,
    args: &[String],
    page: Option<&Page>,
) -> Result<(Vec<Endpoint>, i64)> {
    let count_sql = format!("SELECT COUNT(*) FROM endpoints e WHERE {where_}");
    let cq_sql = numbered(&count_sql);
    let mut cq = sqlx::query_scalar::<_, i64>(&cq_sql);
    for a in args {
        cq = cq.bind(a);
    }
    let total = cq.fetch_one(&mut *conn).await?;
    let tail = page.map(|p| order_clause(p, "e.")).unwrap_or_default();
    let sql = format!("{ENDPOINT_SELECT} WHERE {where_}{tail}");
    let q_sql = numbered(&sql);
    let mut q = sqlx::query(&q_sql);
    for a in args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut out = rows.iter().map(endpoint_row).collect::<Result<Vec<_>>>()?;
    for e in &mut out {
        e.tags = load_tags(conn, ResourceKind::Endpoint, &e.id).await?;
    }
    Ok((out, total))
}

/// Any endpoint by id, whoever owns it: for the provider side, which scopes by service.
pub(super) async fn endpoint_by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<Endpoint>> {
    Ok(endpoint_rows(conn, "e.id = ?", &[id.to_owned()], None)
        .await?
        .0
        .pop())
}

async fn own_endpoint(conn: &mut AnyConnection, caller: &Caller, id: &str) -> Result<Endpoint> {
    endpoint_rows(
        conn,
        "e.id = ? AND e.project_id = ?",
        &[id.to_owned(), caller.project_id.clone()],
        None,
    )
    .await?
    .0
    .pop()
    .ok_or_else(|| not_found("endpoint"))
}

fn check_policy(
    statement: &Option<serde_json::Value>,
    document: &Option<serde_json::Value>,
) -> Result<()> {
    if let Some(st) = statement {
        let ok = st.as_array().is_some_and(|items| {
            items.iter().all(|i| {
                matches!(
                    i.get("Effect").and_then(|e| e.as_str()),
                    Some("Allow" | "Deny")
                ) && i.get("Action").is_some_and(|a| {
                    a.as_array()
                        .is_some_and(|a| a.iter().all(|x| x.is_string()))
                }) && i.get("Resource").is_some_and(|a| {
                    a.as_array()
                        .is_some_and(|a| a.iter().all(|x| x.is_string()))
                })
            })
        });
        if !ok {
            return reject(Reason::BadPolicy, "policy_statement: each statement needs Effect (Allow or Deny), Action and Resource (arrays of strings)");
        }
    }
    if let Some(doc) = document {
        if !doc.is_object() {
            return reject(Reason::BadPolicy, "policy_document: must be a JSON object");
        }
    }
    Ok(())
}

/// Checks gateway route tables: each belongs to the VPC and routes no other endpoint of
/// the same service. An empty choice means the VPC's default table.
async fn check_route_tables(
    conn: &mut AnyConnection,
    store: &SqlStore,
    caller: &Caller,
    vpc_id: &str,
    service_id: &str,
    wanted: Option<Vec<String>>,
    except: Option<&str>,
) -> Result<Vec<String>> {
    let tables = match wanted {
        Some(t) if !t.is_empty() => t,
        _ => {
            sqlx::query_scalar(&numbered(
                "SELECT id FROM route_tables WHERE vpc_id = ? AND is_default = 1",
            ))
            .bind(vpc_id)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut seen = Vec::new();
    for t in &tables {
        let rt = store.find_route_table(conn, caller, t).await?;
        if rt.as_ref().is_none_or(|r| r.vpc_id != vpc_id) {
            return reject(
                Reason::BadRouteTable,
                format!("routetables: route table {t} not found in VPC {vpc_id}"),
            );
        }
        if seen.contains(t) {
            return reject(
                Reason::BadRouteTable,
                format!("routetables: {t} is listed twice"),
            );
        }
        seen.push(t.clone());
    }
    let others: Vec<(String, String)> = sqlx::query_as(&numbered("SELECT id, routetables FROM endpoints WHERE service_id = ? AND vpc_id = ? AND status != 'deleting'"))
        .bind(service_id).bind(vpc_id).fetch_all(&mut *conn).await?;
    for (id, rts) in others {
        if Some(id.as_str()) == except {
            continue;
        }
        let rts: Vec<String> = from_json(&rts)?;
        if let Some(t) = tables.iter().find(|t| rts.contains(t)) {
            return reject(
                Reason::RouteTableInUse,
                format!("routetables: {t} already routes endpoint {id} of the same service"),
            );
        }
    }
    Ok(tables)
}

/// A gateway endpoint routes its service's range in the VPC (for its subnets and its data
/// centres): refused when the VPC's own CIDR or a data centre's range overlaps it, since
/// those addresses would then be the service's for some sources and local for others.
async fn check_gateway_range(
    conn: &mut AnyConnection,
    vpc: &crate::Vpc,
    svc: &crate::Service,
) -> Result<()> {
    if svc.cidr.is_empty() {
        return Ok(());
    }
    let range = parse_cidr("cidr", &svc.cidr)?;
    let own = parse_cidr("cidr", &vpc.cidr)?;
    if overlaps(&own, &range) {
        return reject(
            Reason::BadCidr,
            format!(
                "vpc_id: the VPC's CIDR {own} overlaps {range}, the range of {}; a gateway endpoint routes that range, so create it in a VPC whose CIDR does not overlap it",
                svc.service_name
            ),
        );
    }
    let idcs: Vec<(String, String)> = sqlx::query_as(&numbered(
        "SELECT cidr, COALESCE(NULLIF(name, ''), id) FROM idcs WHERE vpc_id = ?",
    ))
    .bind(&vpc.id)
    .fetch_all(&mut *conn)
    .await?;
    for (c, name) in idcs {
        let other = parse_cidr("cidr", &c)?;
        if overlaps(&other, &range) {
            return reject(
                Reason::BadCidr,
                format!(
                    "vpc_id: data centre {name} of this VPC has the range {other}, which overlaps {range}, the range of {}; a gateway endpoint cannot route it",
                    svc.service_name
                ),
            );
        }
    }
    Ok(())
}

/// Claims the lowest SNAT host number (1 = 198.19.128.1) that no endpoint towards
/// `provider_vpc` holds, or `None` when all of them are held.
async fn claim_snat_host(conn: &mut AnyConnection, provider_vpc: &str) -> Result<Option<i64>> {
    take_lowest(conn, Pool::Snat(provider_vpc), 1, i64::from(SNAT_SIZE)).await
}

/// Removes an endpoint whose deletion is complete, with its tags, freeing its address
/// and its SNAT address; nothing happens unless it is being deleted.
pub(super) async fn remove_deleted_endpoint(conn: &mut AnyConnection, id: &str) -> Result<()> {
    let gone: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&numbered("DELETE FROM endpoints WHERE id = ? AND status = 'deleting' RETURNING snat_vpc_id, snat_host",))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(snat) = gone else {
        return Ok(());
    };
    if let (Some(vpc), Some(host)) = snat {
        release(&mut *conn, Pool::Snat(&vpc), host).await?;
    }
    release_address(&mut *conn, id).await?;
    sqlx::query(&numbered(
        "DELETE FROM tags WHERE resource_type = ? AND resource_id = ?",
    ))
    .bind(kind_str(ResourceKind::Endpoint))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

impl SqlStore {
    pub(crate) async fn create_endpoint(&self, caller: Caller, n: NewEndpoint) -> Result<Endpoint> {
        validate_description("description", &n.description)?;
        validate_tags(&n.tags)?;
        validate_endpoint_whitelist(&n.whitelist)?;
        check_policy(&n.policy_statement, &n.policy_document)?;
        let mut tx = self.begin().await?;
        let svc = connectable_service(&mut tx, &caller, &n.service_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::NotFound,
                    format!(
                        "endpoint service {} not found (or your account is not on its whitelist)",
                        n.service_id
                    ),
                )
            })?;
        if svc.status != ServiceStatus::Available {
            return reject(
                Reason::ServiceNotAvailable,
                format!(
                    "endpoint service {} is {}, not available",
                    svc.id, svc.status
                ),
            );
        }
        let q = quota_of(&mut tx, &caller).await?;
        if q.endpoints_used >= q.endpoints_quota {
            return reject(
                Reason::QuotaExceeded,
                format!(
                    "endpoint quota exceeded: {} of {} used",
                    q.endpoints_used, q.endpoints_quota
                ),
            );
        }
        let vpc = find_vpc(&mut tx, &caller, &n.vpc_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::BadVpcId,
                    format!("vpc_id: VPC {} not found", n.vpc_id),
                )
            })?;
        let id = new_id();
        let enable_policy = svc.service_type == ServiceType::Gateway;
        if !enable_policy && (n.policy_statement.is_some() || n.policy_document.is_some()) {
            return reject(
                Reason::BadPolicy,
                "this endpoint service does not take endpoint policies",
            );
        }
        let (subnet_id, ip, routetables, enable_dns) = match svc.service_type {
            ServiceType::Interface => {
                let Some(sid) = &n.subnet_id else {
                    return reject(
                        Reason::BadSubnetId,
                        "subnet_id: required for an interface endpoint",
                    );
                };
                let subnet = find_subnet(&mut tx, &caller, sid).await?.ok_or_else(|| {
                    Rejection::new(
                        Reason::BadSubnetId,
                        format!("subnet_id: subnet {sid} not found"),
                    )
                })?;
                if subnet.vpc_id != vpc.id {
                    return reject(
                        Reason::SubnetNotInVpc,
                        format!("subnet_id: subnet {sid} is not in VPC {}", vpc.id),
                    );
                }
                if vpcep_model::overlaps_system_range(&vpcep_model::parse_cidr(
                    "cidr",
                    &subnet.cidr,
                )?) {
                    return reject(
                        Reason::CidrOverlapsSystemRange,
                        format!(
                            "subnet_id: the subnet overlaps {}",
                            vpcep_model::SYSTEM_RANGE
                        ),
                    );
                }
                if n.enable_dns {
                    let dup: Option<String> = sqlx::query_scalar(&numbered("SELECT id FROM endpoints WHERE service_id = ? AND vpc_id = ? AND enable_dns = 1 AND status != 'deleting'"))
                        .bind(&svc.id).bind(&vpc.id).fetch_optional(&mut *tx).await?;
                    if let Some(other) = dup {
                        return reject(Reason::DnsAlreadyEnabled, format!("enable_dns: endpoint {other} of this VPC already has the private domain name of this service"));
                    }
                }
                let ip = claim_address(&mut tx, &subnet, n.port_ip, &id).await?;
                (subnet.id, ip.to_string(), Vec::new(), n.enable_dns)
            }
            ServiceType::Gateway => {
                check_gateway_range(&mut tx, &vpc, &svc).await?;
                let rts = check_route_tables(
                    &mut tx,
                    self,
                    &caller,
                    &vpc.id,
                    &svc.id,
                    n.routetables.clone(),
                    None,
                )
                .await?;
                (
                    n.subnet_id.clone().unwrap_or_default(),
                    String::new(),
                    rts,
                    false,
                )
            }
        };
        // Operator services have no VPC of their own: the node reaches their backends.
        let snat = if svc.is_public {
            None
        } else {
            let host = claim_snat_host(&mut tx, &svc.vpc_id).await?.ok_or_else(|| {
                Rejection::new(
                    Reason::QuotaExceeded,
                    format!(
                        "endpoint service {} takes no more endpoints: all {SNAT_SIZE} source addresses of {SNAT_RANGE} towards its VPC are held by endpoints (deleting one frees its address)",
                        svc.id
                    ),
                )
            })?;
            Some((&svc.vpc_id, host))
        };
        let marker: i64 = sqlx::query_scalar(&numbered(
            "SELECT COALESCE(MAX(marker_id) + 1, ?) FROM endpoints",
        ))
        .bind(MARKER_ID_BASE)
        .fetch_one(&mut *tx)
        .await?;
        let short = if svc.short_name.is_empty() {
            "service"
        } else {
            svc.short_name.as_str()
        };
        let dns_name = if enable_dns {
            format!(
                "{id}.{}.vpcep.{}.internal",
                short.to_lowercase().replace('_', "-"),
                n.region
            )
        } else {
            String::new()
        };
        let now = now_micros();
        let opt = |v: &Option<serde_json::Value>| v.as_ref().map(json_text).unwrap_or_default();
        sqlx::query(&numbered("INSERT INTO endpoints (id, project_id, domain_id, service_id, service_name, service_type, vpc_id, subnet_id, ip, status, marker_id, enable_dns, dns_name, whitelist, enable_whitelist, routetables, description, conn_description, policy_statement, policy_document, edition, error, created_at, updated_at, snat_vpc_id, snat_host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 'default', '', ?, ?, ?, ?)"))
            .bind(&id).bind(&caller.project_id).bind(&caller.domain_id).bind(&svc.id).bind(&svc.service_name).bind(svc.service_type.as_str())
            .bind(&vpc.id).bind(&subnet_id).bind(&ip).bind(marker).bind(i64::from(enable_dns)).bind(&dns_name)
            .bind(json_text(&n.whitelist)).bind(i64::from(n.enable_whitelist)).bind(json_text(&routetables)).bind(&n.description)
            .bind(opt(&n.policy_statement)).bind(opt(&n.policy_document)).bind(now).bind(now)
            .bind(snat.map(|s| s.0)).bind(snat.map(|s| s.1))
            .execute(&mut *tx).await?;
        insert_tags(
            &mut tx,
            ResourceKind::Endpoint,
            &id,
            &caller.project_id,
            &n.tags,
        )
        .await?;
        let ep = own_endpoint(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(ep)
    }

    pub(crate) async fn list_endpoints(
        &self,
        caller: Caller,
        f: EndpointFilter,
        page: Page,
    ) -> Result<(Vec<Endpoint>, i64)> {
        let mut c = self.read().await?;
        let mut where_ = String::from("e.project_id = ?");
        let mut args = vec![caller.project_id];
        if let Some(n) = f.service_name_like {
            where_.push_str(
                " AND LOWER(COALESCE(s.service_name, e.service_name)) LIKE ? ESCAPE '\\'",
            );
            args.push(like_pattern(&n));
        }
        if let Some(v) = f.vpc_id {
            where_.push_str(" AND e.vpc_id = ?");
            args.push(v);
        }
        if let Some(id) = f.id {
            where_.push_str(" AND e.id = ?");
            args.push(id);
        }
        // The name filter needs the join in the count too.
        let where_ = format!("e.id IN (SELECT e.id FROM endpoints e LEFT JOIN services s ON s.id = e.service_id WHERE {where_})");
        endpoint_rows(&mut c, &where_, &args, Some(&page)).await
    }

    pub(crate) async fn get_endpoint(&self, caller: Caller, id: String) -> Result<Endpoint> {
        let mut c = self.read().await?;
        own_endpoint(&mut c, &caller, &id).await
    }

    /// Runs a consumer-side modification of an endpoint in one transaction.
    async fn modify_endpoint(
        &self,
        caller: &Caller,
        id: &str,
        sql: &str,
        args: Vec<String>,
    ) -> Result<Endpoint> {
        let mut tx = self.begin().await?;
        let ep = own_endpoint(&mut tx, caller, id).await?;
        ep.status.check_modifiable()?;
        let q_sql = numbered(sql);
        let mut q = sqlx::query(&q_sql);
        for a in &args {
            q = q.bind(a);
        }
        q.bind(now_micros()).bind(id).execute(&mut *tx).await?;
        let ep = own_endpoint(&mut tx, caller, id).await?;
        self.commit(tx).await?;
        Ok(ep)
    }

    pub(crate) async fn update_endpoint_whitelist(
        &self,
        caller: Caller,
        id: String,
        whitelist: Vec<String>,
        enable: bool,
    ) -> Result<Endpoint> {
        validate_endpoint_whitelist(&whitelist)?;
        {
            let mut c = self.read().await?;
            if own_endpoint(&mut c, &caller, &id).await?.service_type != ServiceType::Interface {
                return reject(
                    Reason::BadEndpointWhitelist,
                    "whitelist: only interface endpoints have a source whitelist",
                );
            }
        }
        self.modify_endpoint(
            &caller,
            &id,
            "UPDATE endpoints SET whitelist = ?, enable_whitelist = CAST(? AS INTEGER), updated_at = ? WHERE id = ?",
            vec![json_text(&whitelist), (enable as i64).to_string()],
        )
        .await
    }

    pub(crate) async fn update_endpoint_policy(
        &self,
        caller: Caller,
        id: String,
        statement: Option<serde_json::Value>,
        document: Option<serde_json::Value>,
    ) -> Result<Endpoint> {
        check_policy(&statement, &document)?;
        if statement.is_none() && document.is_none() {
            return reject(
                Reason::BadPolicy,
                "give policy_statement or policy_document",
            );
        }
        {
            let mut c = self.read().await?;
            if own_endpoint(&mut c, &caller, &id).await?.service_type != ServiceType::Gateway {
                return reject(
                    Reason::BadPolicy,
                    "this endpoint's service does not take endpoint policies",
                );
            }
        }
        let ep = self.get_endpoint(caller.clone(), id.clone()).await?;
        let st = statement
            .or(ep.policy_statement)
            .map(|v| json_text(&v))
            .unwrap_or_default();
        let doc = document
            .or(ep.policy_document)
            .map(|v| json_text(&v))
            .unwrap_or_default();
        self.modify_endpoint(&caller, &id, "UPDATE endpoints SET policy_statement = ?, policy_document = ?, updated_at = ? WHERE id = ?", vec![st, doc]).await
    }

    pub(crate) async fn delete_endpoint_policy(
        &self,
        caller: Caller,
        id: String,
    ) -> Result<Endpoint> {
        let ep = self.get_endpoint(caller.clone(), id.clone()).await?;
        if ep.policy_statement.is_none() && ep.policy_document.is_none() {
            return reject(Reason::NoPolicy, "the endpoint has no policy");
        }
        self.modify_endpoint(&caller, &id, "UPDATE endpoints SET policy_statement = '', policy_document = '', updated_at = ? WHERE id = ?", vec![]).await
    }

    pub(crate) async fn update_endpoint_routetables(
        &self,
        caller: Caller,
        id: String,
        routetables: Vec<String>,
    ) -> Result<Endpoint> {
        let mut tx = self.begin().await?;
        let ep = own_endpoint(&mut tx, &caller, &id).await?;
        if ep.service_type != ServiceType::Gateway {
            return reject(
                Reason::NotGatewayEndpoint,
                "routetables: only gateway endpoints have route tables",
            );
        }
        ep.status.check_modifiable()?;
        let rts = check_route_tables(
            &mut tx,
            self,
            &caller,
            &ep.vpc_id,
            &ep.service_id,
            Some(routetables),
            Some(&id),
        )
        .await?;
        sqlx::query(&numbered(
            "UPDATE endpoints SET routetables = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(json_text(&rts))
        .bind(now_micros())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let ep = own_endpoint(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(ep)
    }

    pub(crate) async fn delete_endpoint(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let ep = own_endpoint(&mut tx, &caller, &id).await?;
        if ep.status == EndpointStatus::Deleting {
            return Ok(());
        }
        sqlx::query(&numbered(
            "UPDATE endpoints SET status = 'deleting', updated_at = ? WHERE id = ?",
        ))
        .bind(now_micros())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    pub(crate) async fn upgrade_endpoint(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let ep = own_endpoint(&mut tx, &caller, &id).await?;
        ep.status.check_modifiable()?;
        if ep.service_type != ServiceType::Interface {
            return reject(
                Reason::Unsupported,
                "only interface endpoints have editions",
            );
        }
        let editions: Option<String> =
            sqlx::query_scalar(&numbered("SELECT editions FROM services WHERE id = ?"))
                .bind(&ep.service_id)
                .fetch_optional(&mut *tx)
                .await?;
        let editions: Vec<String> = editions
            .map(|e| from_json(&e))
            .transpose()?
            .unwrap_or_default();
        if !editions.iter().any(|e| e == "profession") {
            return reject(Reason::Unsupported, "the endpoint service does not support professional endpoints; its owner must upgrade it first");
        }
        sqlx::query(&numbered(
            "UPDATE endpoints SET edition = 'profession', updated_at = ? WHERE id = ?",
        ))
        .bind(now_micros())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }
}
