//! Endpoint services, their whitelists (permissions) and the provider's view of
//! connections.

use crate::sql::numbered;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use vpcep_model::{
    full_service_name, validate_description, validate_tags, EndpointStatus, Permission,
    PortMapping, Reason, Rejection, ServerType, ServiceStatus, ServiceType, TcpProxy,
    MAX_PERMISSIONS,
};

use super::endpoints::{endpoint_by_id, endpoint_rows};
use super::tags::{insert_tags, load_tags};
use super::vpc::{find_port, find_vpc};
use super::{
    from_json, json_text, like_pattern, new_id, not_found, now_micros, order_clause, reject,
    SqlStore,
};
use crate::{
    Caller, ConnectionFilter, Endpoint, NewPublicService, NewService, Page, PermissionRow,
    PublicServiceUpdate, Quota, ResourceKind, Result, Service, ServiceFilter, ServiceUpdate,
    StoreError, LB_DEVICE_OWNER,
};

const SERVICE_SELECT: &str = "SELECT s.*, (SELECT COUNT(*) FROM endpoints e WHERE e.service_id = s.id AND e.status IN ('creating', 'accepted')) AS connection_count FROM services s";

fn service_row(r: &AnyRow) -> Result<Service> {
    let parse = |col: &str| -> Result<String> { Ok(r.try_get::<String, _>(col)?) };
    let corrupt = |e: Rejection| StoreError::Corrupt(e.msg);
    let error: String = r.try_get("error")?;
    Ok(Service {
        id: parse("id")?,
        project_id: parse("project_id")?,
        domain_id: parse("domain_id")?,
        short_name: parse("short_name")?,
        service_name: parse("service_name")?,
        vpc_id: parse("vpc_id")?,
        port_id: parse("port_id")?,
        backend_ip: parse("backend_ip")?,
        server_type: ServerType::parse(&parse("server_type")?).map_err(corrupt)?,
        service_type: ServiceType::parse(&parse("service_type")?).map_err(corrupt)?,
        approval_enabled: r.try_get::<i64, _>("approval_enabled")? != 0,
        status: ServiceStatus::parse(&parse("status")?).map_err(corrupt)?,
        tcp_proxy: TcpProxy::parse(&parse("tcp_proxy")?).map_err(corrupt)?,
        description: parse("description")?,
        is_public: r.try_get::<i64, _>("is_public")? != 0,
        cidr: parse("cidr")?,
        ports: from_json(&parse("ports")?)?,
        connection_limit: r.try_get("connection_limit")?,
        editions: from_json(&parse("editions")?)?,
        error: (!error.is_empty()).then_some(error),
        connection_count: r.try_get("connection_count")?,
        tags: Vec::new(),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn with_tags(conn: &mut AnyConnection, mut rows: Vec<Service>) -> Result<Vec<Service>> {
    for s in &mut rows {
        s.tags = load_tags(conn, ResourceKind::Service, &s.id).await?;
    }
    Ok(rows)
}

/// The caller's own service (never a public one), in any status.
pub(super) async fn own_service(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Service> {
    let sql = format!("{SERVICE_SELECT} WHERE s.id = ? AND s.project_id = ? AND s.is_public = 0");
    let row = sqlx::query(&numbered(&sql))
        .bind(id)
        .bind(&caller.project_id)
        .fetch_optional(&mut *conn)
        .await?;
    let svc = row
        .as_ref()
        .map(service_row)
        .transpose()?
        .ok_or_else(|| not_found("endpoint service"))?;
    Ok(with_tags(conn, vec![svc]).await?.remove(0))
}

/// SQL condition: the service is visible to a prospective consumer (`?` = project, domain).
const VISIBLE: &str = "(s.project_id = ? OR s.is_public = 1 OR EXISTS (SELECT 1 FROM permissions p WHERE p.service_id = s.id AND (p.permission = '*' OR p.permission = 'iam:domain::' || ?)))";

/// A service the caller may connect to: its own, a public one, or one whose whitelist
/// names the caller's account. Anything else is reported as missing. Read for an
/// endpoint's create, which does not need the service's connections: they are not
/// counted (`connection_count` is 0), since counting them costs what the service holds.
pub(super) async fn connectable_service(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Option<Service>> {
    let sql = format!("SELECT s.*, 0 AS connection_count FROM services s WHERE s.id = ? AND s.status != 'deleting' AND {VISIBLE}");
    let row = sqlx::query(&numbered(&sql))
        .bind(id)
        .bind(&caller.project_id)
        .bind(&caller.domain_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(service_row).transpose()
}

/// Hands `svc` to the controller for deletion (a tenant's or the operator's): refused,
/// with `in_use(count)`, while endpoints are accepted or creating; `false` when it was
/// already being deleted (nothing to write).
async fn mark_deleting(
    conn: &mut AnyConnection,
    svc: &Service,
    in_use: impl FnOnce(i64) -> String,
) -> Result<bool> {
    if svc.status == ServiceStatus::Deleting {
        return Ok(false);
    }
    if svc.connection_count > 0 {
        return reject(Reason::ServiceInUse, in_use(svc.connection_count));
    }
    sqlx::query(&numbered(
        "UPDATE services SET status = 'deleting', updated_at = ? WHERE id = ?",
    ))
    .bind(now_micros())
    .bind(&svc.id)
    .execute(conn)
    .await?;
    Ok(true)
}

async fn count(conn: &mut AnyConnection, sql: &str, arg: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(&numbered(sql))
        .bind(arg)
        .fetch_one(conn)
        .await?)
}

pub(super) async fn quota_of(conn: &mut AnyConnection, caller: &Caller) -> Result<Quota> {
    let row = sqlx::query(&numbered(
        "SELECT service_quota, endpoint_quota FROM accounts WHERE domain_id = ?",
    ))
    .bind(&caller.domain_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found("account"))?;
    Ok(Quota {
        services_used: count(
            conn,
            "SELECT COUNT(*) FROM services WHERE project_id = ? AND is_public = 0",
            &caller.project_id,
        )
        .await?,
        services_quota: row.try_get("service_quota")?,
        endpoints_used: count(
            conn,
            "SELECT COUNT(*) FROM endpoints WHERE project_id = ?",
            &caller.project_id,
        )
        .await?,
        endpoints_quota: row.try_get("endpoint_quota")?,
    })
}

/// Checks that a new backend exists in the service's VPC, has the right kind, and that
/// no other service on the same backend maps the same server port.
async fn check_backend(
    conn: &mut AnyConnection,
    caller: &Caller,
    vpc_id: &str,
    port_id: &str,
    server_type: ServerType,
    ports: &[PortMapping],
    except_service: Option<&str>,
) -> Result<String> {
    let port = find_port(conn, caller, port_id).await?.ok_or_else(|| {
        Rejection::new(
            Reason::BadPortId,
            format!("port_id: port {port_id} not found"),
        )
    })?;
    if port.vpc_id != vpc_id {
        return reject(
            Reason::PortNotInVpc,
            format!("port_id: port {port_id} is not in VPC {vpc_id}"),
        );
    }
    let is_lb = port.device_owner == LB_DEVICE_OWNER;
    match server_type {
        ServerType::Lb if !is_lb => {
            return reject(
                Reason::BadPortId,
                format!(
                    "port_id: port {port_id} is not a load balancer's private IP (server_type LB)"
                ),
            )
        }
        ServerType::Vm | ServerType::Vip if is_lb => {
            return reject(
                Reason::BadPortId,
                format!("port_id: port {port_id} belongs to a load balancer; use server_type LB"),
            )
        }
        _ => {}
    }
    let others: Vec<(String, String)> = sqlx::query_as(&numbered(
        "SELECT id, ports FROM services WHERE port_id = ? AND status != 'deleting'",
    ))
    .bind(port_id)
    .fetch_all(&mut *conn)
    .await?;
    for (other_id, other_ports) in others {
        if Some(other_id.as_str()) == except_service {
            continue;
        }
        let other_ports: Vec<PortMapping> = from_json(&other_ports)?;
        for p in ports {
            if other_ports
                .iter()
                .any(|o| o.server_port == p.server_port && o.protocol == p.protocol)
            {
                return reject(Reason::PortMappingConflict, format!("ports: server_port {} {} of this backend is already published by service {other_id}", p.server_port, p.protocol));
            }
        }
    }
    Ok(port.ip)
}

fn filter_sql(f: &ServiceFilter) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    if let Some(n) = &f.name_like {
        sql.push_str(" AND LOWER(s.service_name) LIKE ? ESCAPE '\\'");
        args.push(like_pattern(n));
    }
    if let Some(id) = &f.id {
        sql.push_str(" AND s.id = ?");
        args.push(id.clone());
    }
    if let Some(st) = f.status {
        sql.push_str(" AND s.status = ?");
        args.push(st.as_str().to_owned());
    }
    (sql, args)
}

async fn page_services(
    conn: &mut AnyConnection,
    base_where: &str,
    base_args: &[&str],
    f: &ServiceFilter,
    page: &Page,
) -> Result<(Vec<Service>, i64)> {
    let (extra, args) = filter_sql(f);
    let where_ = format!("WHERE {base_where}{extra}");
    let count_sql = format!("SELECT COUNT(*) FROM services s {where_}");
    let cq_sql = numbered(&count_sql);
    let mut cq = sqlx::query_scalar::<_, i64>(&cq_sql);
    for a in base_args {
        cq = cq.bind(*a);
    }
    for a in &args {
        cq = cq.bind(a);
    }
    let total = cq.fetch_one(&mut *conn).await?;
    let sql = format!("{SERVICE_SELECT} {where_}{}", order_clause(page, "s."));
    let q_sql = numbered(&sql);
    let mut q = sqlx::query(&q_sql);
    for a in base_args {
        q = q.bind(*a);
    }
    for a in &args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let svcs = rows.iter().map(service_row).collect::<Result<Vec<_>>>()?;
    Ok((with_tags(conn, svcs).await?, total))
}

fn permission_row(r: &AnyRow) -> Result<PermissionRow> {
    Ok(PermissionRow {
        id: r.try_get("id")?,
        permission: r.try_get("permission")?,
        permission_type: r.try_get("permission_type")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
    })
}

impl SqlStore {
    pub(crate) async fn create_service(&self, caller: Caller, s: NewService) -> Result<Service> {
        validate_description("description", &s.description)?;
        validate_tags(&s.tags)?;
        vpcep_model::validate_connection_limit(s.connection_limit)?;
        let mut tx = self.begin().await?;
        let q = quota_of(&mut tx, &caller).await?;
        if q.services_used >= q.services_quota {
            return reject(
                Reason::QuotaExceeded,
                format!(
                    "endpoint service quota exceeded: {} of {} used",
                    q.services_used, q.services_quota
                ),
            );
        }
        find_vpc(&mut tx, &caller, &s.vpc_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::BadVpcId,
                    format!("vpc_id: VPC {} not found", s.vpc_id),
                )
            })?;
        let backend_ip = check_backend(
            &mut tx,
            &caller,
            &s.vpc_id,
            &s.port_id,
            s.server_type,
            &s.ports,
            None,
        )
        .await?;
        let id = new_id();
        let region: String =
            sqlx::query_scalar(&numbered("SELECT region FROM projects WHERE id = ?"))
                .bind(&caller.project_id)
                .fetch_one(&mut *tx)
                .await?;
        let now = now_micros();
        sqlx::query(&numbered("INSERT INTO services (id, project_id, domain_id, short_name, service_name, vpc_id, port_id, backend_ip, server_type, service_type, approval_enabled, status, tcp_proxy, description, is_public, cidr, ports, editions, server_resources, error, connection_limit, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'interface', ?, 'creating', ?, ?, 0, '', ?, '[\"basic\"]', '[]', '', ?, ?, ?)"))
            .bind(&id).bind(&caller.project_id).bind(&caller.domain_id).bind(s.name.as_str())
            .bind(full_service_name(&region, &s.name, &id)).bind(&s.vpc_id).bind(&s.port_id).bind(&backend_ip)
            .bind(s.server_type.as_str()).bind(i64::from(s.approval_enabled)).bind(s.tcp_proxy.as_str()).bind(&s.description)
            .bind(json_text(&s.ports)).bind(s.connection_limit).bind(now).bind(now)
            .execute(&mut *tx).await?;
        insert_tags(
            &mut tx,
            ResourceKind::Service,
            &id,
            &caller.project_id,
            &s.tags,
        )
        .await?;
        let svc = own_service(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(svc)
    }

    pub(crate) async fn create_public_service(&self, s: NewPublicService) -> Result<Service> {
        if vpcep_model::validate_service_name(&s.name).is_err() || s.name.is_empty() {
            return reject(
                Reason::BadServiceName,
                format!("name {:?}: 1-16 of letters, digits, '_' and '-'", s.name),
            );
        }
        let cidr = match (&s.cidr, s.service_type) {
            (Some(c), _) => vpcep_model::parse_cidr("cidr", c)?.to_string(),
            (None, ServiceType::Gateway) => {
                return reject(
                    Reason::BadParameter,
                    "a gateway service needs --cidr (the service's address range)",
                )
            }
            (None, ServiceType::Interface) => String::new(),
        };
        if s.service_type == ServiceType::Interface && s.ports.is_empty() {
            return reject(
                Reason::BadPortMapping,
                "an interface service needs at least one port mapping",
            );
        }
        let id = new_id();
        let now = now_micros();
        let full = format!("com.vpcep.{}.{}", s.region, s.name);
        let mut tx = self.begin().await?;
        if super::exists(
            &mut tx,
            "SELECT 1 FROM services WHERE service_name = ?",
            &[&full],
        )
        .await?
        {
            return reject(
                Reason::BadServiceName,
                format!("a public service named {full} exists already"),
            );
        }
        sqlx::query(&numbered("INSERT INTO services (id, project_id, domain_id, short_name, service_name, vpc_id, port_id, backend_ip, server_type, service_type, approval_enabled, status, tcp_proxy, description, is_public, cidr, ports, editions, server_resources, error, created_at, updated_at) VALUES (?, '', '', ?, ?, '', '', ?, 'VM', ?, 0, 'creating', 'close', ?, 1, ?, ?, '[\"basic\"]', '[]', '', ?, ?)"))
            .bind(&id).bind(&s.name).bind(&full).bind(s.backend_ip.to_string()).bind(s.service_type.as_str())
            .bind(&s.description).bind(&cidr).bind(json_text(&s.ports)).bind(now).bind(now)
            .execute(&mut *tx).await?;
        let sql = format!("{SERVICE_SELECT} WHERE s.id = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let svc = service_row(&row)?;
        self.commit(tx).await?;
        Ok(svc)
    }

    pub(crate) async fn list_services(
        &self,
        caller: Caller,
        f: ServiceFilter,
        page: Page,
    ) -> Result<(Vec<Service>, i64)> {
        let mut c = self.read().await?;
        page_services(
            &mut c,
            "s.project_id = ? AND s.is_public = 0",
            &[&caller.project_id],
            &f,
            &page,
        )
        .await
    }

    pub(crate) async fn get_service(&self, caller: Caller, id: String) -> Result<Service> {
        let mut c = self.read().await?;
        own_service(&mut c, &caller, &id).await
    }

    pub(crate) async fn describe_service(
        &self,
        caller: Caller,
        id: Option<String>,
        name: Option<String>,
    ) -> Result<Service> {
        let mut c = self.read().await?;
        let (col, val) = match (id, name) {
            (Some(id), _) => ("s.id", id),
            (None, Some(n)) => ("s.service_name", n),
            (None, None) => {
                return reject(Reason::BadParameter, "give endpoint_service_name or id")
            }
        };
        let sql =
            format!("{SERVICE_SELECT} WHERE {col} = ? AND s.status != 'deleting' AND {VISIBLE}");
        let row = sqlx::query(&numbered(&sql))
            .bind(&val)
            .bind(&caller.project_id)
            .bind(&caller.domain_id)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref()
            .map(service_row)
            .transpose()?
            .ok_or_else(|| not_found("endpoint service"))
    }

    pub(crate) async fn list_public_services(
        &self,
        f: ServiceFilter,
        page: Page,
    ) -> Result<(Vec<Service>, i64)> {
        let mut c = self.read().await?;
        page_services(&mut c, "s.is_public = 1", &[], &f, &page).await
    }

    pub(crate) async fn update_service(
        &self,
        caller: Caller,
        id: String,
        u: ServiceUpdate,
    ) -> Result<Service> {
        if let Some(d) = &u.description {
            validate_description("description", d)?;
        }
        if let Some(n) = u.connection_limit {
            vpcep_model::validate_connection_limit(n)?;
        }
        let mut tx = self.begin().await?;
        let svc = own_service(&mut tx, &caller, &id).await?;
        if let Some(ports) = &u.ports {
            if *ports != svc.ports {
                return reject(Reason::PortMappingsImmutable, "ports: port mappings cannot be changed after the service is created; create a new service instead");
            }
        }
        let touches = u.connection_limit.is_some()
            || u.approval_enabled.is_some()
            || u.name.is_some()
            || u.port_id.is_some()
            || u.tcp_proxy.is_some()
            || u.description.is_some();
        if touches && svc.status != ServiceStatus::Available {
            return reject(
                Reason::StateForbids,
                format!("the service is {} and cannot be changed now", svc.status),
            );
        }
        let mut backend_ip = svc.backend_ip.clone();
        if let Some(p) = &u.port_id {
            backend_ip = check_backend(
                &mut tx,
                &caller,
                &svc.vpc_id,
                p,
                svc.server_type,
                &svc.ports,
                Some(&id),
            )
            .await?;
        }
        let region: String =
            sqlx::query_scalar(&numbered("SELECT region FROM projects WHERE id = ?"))
                .bind(&caller.project_id)
                .fetch_one(&mut *tx)
                .await?;
        let (short, full) = match &u.name {
            Some(n) => (n.as_str().to_owned(), full_service_name(&region, n, &id)),
            None => (svc.short_name.clone(), svc.service_name.clone()),
        };
        sqlx::query(&numbered("UPDATE services SET approval_enabled = ?, short_name = ?, service_name = ?, port_id = ?, backend_ip = ?, tcp_proxy = ?, description = ?, connection_limit = ?, updated_at = ? WHERE id = ?"))
            .bind(i64::from(u.approval_enabled.unwrap_or(svc.approval_enabled))).bind(&short).bind(&full)
            .bind(u.port_id.as_ref().unwrap_or(&svc.port_id)).bind(&backend_ip)
            .bind(u.tcp_proxy.unwrap_or(svc.tcp_proxy).as_str())            .bind(u.description.as_ref().unwrap_or(&svc.description))
            .bind(u.connection_limit.unwrap_or(svc.connection_limit))
            .bind(now_micros()).bind(&id)
            .execute(&mut *tx).await?;
        let svc = own_service(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(svc)
    }

    pub(crate) async fn delete_service(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let public: Option<i64> = sqlx::query_scalar(&numbered(
            "SELECT 1 FROM services WHERE id = ? AND is_public = 1",
        ))
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
        if public.is_some() {
            return reject(
                Reason::SystemServiceImmutable,
                "a system (cloud) service cannot be deleted",
            );
        }
        let svc = own_service(&mut tx, &caller, &id).await?;
        let in_use = |n| {
            format!("the service has {n} endpoint(s) connected (accepted or creating); delete or reject them first")
        };
        if mark_deleting(&mut tx, &svc, in_use).await? {
            self.commit(tx).await?;
        }
        Ok(())
    }

    pub(crate) async fn add_server_resources(
        &self,
        caller: Caller,
        id: String,
        resources: Vec<String>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let svc = own_service(&mut tx, &caller, &id).await?;
        if svc.server_type != ServerType::Lb {
            return reject(Reason::BadServerType, "server resources can be added only to a service whose backend is a load balancer (server_type LB)");
        }
        if resources.is_empty() {
            return reject(
                Reason::BadParameter,
                "server_resources: at least one resource is required",
            );
        }
        let mut list: Vec<String> = from_json(
            &sqlx::query_scalar::<_, String>(&numbered(
                "SELECT server_resources FROM services WHERE id = ?",
            ))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?,
        )?;
        for r in resources {
            let port = find_port(&mut tx, &caller, &r).await?.ok_or_else(|| {
                Rejection::new(
                    Reason::BadPortId,
                    format!("server_resources: resource {r} not found"),
                )
            })?;
            if port.device_owner != LB_DEVICE_OWNER || port.vpc_id != svc.vpc_id {
                return reject(
                    Reason::BadPortId,
                    format!("server_resources: {r} is not a load balancer in the service's VPC"),
                );
            }
            if !list.contains(&r) && r != svc.port_id {
                list.push(r);
            }
        }
        sqlx::query(&numbered(
            "UPDATE services SET server_resources = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(json_text(&list))
        .bind(now_micros())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    pub(crate) async fn upgrade_service(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let svc = own_service(&mut tx, &caller, &id).await?;
        if svc.status != ServiceStatus::Available {
            return reject(
                Reason::StateForbids,
                format!("the service is {} and cannot be upgraded now", svc.status),
            );
        }
        sqlx::query(&numbered("UPDATE services SET editions = '[\"basic\",\"profession\"]', updated_at = ? WHERE id = ?")).bind(now_micros()).bind(&id).execute(&mut *tx).await?;
        self.commit(tx).await
    }

    pub(crate) async fn list_connections(
        &self,
        caller: Caller,
        service_id: String,
        f: ConnectionFilter,
        page: Page,
    ) -> Result<(Vec<Endpoint>, i64)> {
        let mut c = self.read().await?;
        own_service(&mut c, &caller, &service_id).await?;
        let mut where_ = String::from("e.service_id = ?");
        let mut args = vec![service_id];
        if let Some(id) = f.id {
            where_.push_str(" AND e.id = ?");
            args.push(id);
        }
        if let Some(m) = f.marker_id {
            where_.push_str(" AND e.marker_id = CAST(? AS INTEGER)");
            args.push(m.to_string());
        }
        if let Some(s) = f.status {
            where_.push_str(" AND e.status = ?");
            args.push(s.as_str().to_owned());
        }
        endpoint_rows(&mut c, &where_, &args, Some(&page)).await
    }

    pub(crate) async fn decide_connection(
        &self,
        caller: Caller,
        service_id: String,
        endpoint_id: String,
        accept: bool,
    ) -> Result<Endpoint> {
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        let ep = endpoint_by_id(&mut tx, &endpoint_id)
            .await?
            .filter(|e| e.service_id == service_id)
            .ok_or_else(|| {
                Rejection::new(
                    Reason::EndpointNotConnected,
                    format!("endpoints: {endpoint_id} is not connected to this service"),
                )
            })?;
        let next = ep.status.decide(accept)?;
        sqlx::query(&numbered(
            "UPDATE endpoints SET status = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(next.as_str())
        .bind(now_micros())
        .bind(&endpoint_id)
        .execute(&mut *tx)
        .await?;
        let ep = endpoint_by_id(&mut tx, &endpoint_id)
            .await?
            .ok_or_else(|| not_found("endpoint"))?;
        self.commit(tx).await?;
        Ok(ep)
    }

    pub(crate) async fn describe_connections(
        &self,
        caller: Caller,
        service_id: String,
        items: Vec<(String, String)>,
    ) -> Result<Vec<Endpoint>> {
        for (_, d) in &items {
            validate_description("description", d)?;
        }
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        let mut out = Vec::new();
        for (id, desc) in items {
            let res = sqlx::query(&numbered(
                "UPDATE endpoints SET conn_description = ? WHERE id = ? AND service_id = ?",
            ))
            .bind(&desc)
            .bind(&id)
            .bind(&service_id)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return reject(
                    Reason::EndpointNotConnected,
                    format!("connections: {id} is not connected to this service"),
                );
            }
            out.push(
                endpoint_by_id(&mut tx, &id)
                    .await?
                    .ok_or_else(|| not_found("endpoint"))?,
            );
        }
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn list_permissions(
        &self,
        caller: Caller,
        service_id: String,
        like: Option<String>,
        page: Page,
    ) -> Result<(Vec<PermissionRow>, i64)> {
        let mut c = self.read().await?;
        own_service(&mut c, &caller, &service_id).await?;
        let pat = like.as_deref().map(like_pattern);
        let total: i64 = sqlx::query_scalar(&numbered("SELECT COUNT(*) FROM permissions WHERE service_id = ? AND (? IS NULL OR LOWER(permission) LIKE ? ESCAPE '\\')"))
            .bind(&service_id).bind(&pat).bind(&pat).fetch_one(&mut *c).await?;
        let sql = format!("SELECT * FROM permissions WHERE service_id = ? AND (? IS NULL OR LOWER(permission) LIKE ? ESCAPE '\\'){}", order_clause(&Page { sort: crate::SortKey::Created, ..page }, ""));
        let rows = sqlx::query(&numbered(&sql))
            .bind(&service_id)
            .bind(&pat)
            .bind(&pat)
            .fetch_all(&mut *c)
            .await?;
        Ok((
            rows.iter().map(permission_row).collect::<Result<_>>()?,
            total,
        ))
    }

    pub(crate) async fn add_permissions(
        &self,
        caller: Caller,
        service_id: String,
        entries: Vec<(String, String)>,
    ) -> Result<Vec<PermissionRow>> {
        if entries.is_empty() {
            return reject(
                Reason::EmptyPermissionList,
                "permissions: the list is empty",
            );
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for (raw, desc) in &entries {
            validate_description("description", desc)?;
            parsed.push((Permission::parse(raw)?.canonical(), desc.clone()));
        }
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        for (perm, _) in &parsed {
            check_names_an_account(&mut tx, &caller, perm).await?;
        }
        let now = now_micros();
        let mut out = Vec::new();
        for (perm, desc) in parsed {
            let existing = sqlx::query(&numbered(
                "SELECT * FROM permissions WHERE service_id = ? AND permission = ?",
            ))
            .bind(&service_id)
            .bind(&perm)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = existing {
                out.push(permission_row(&r)?);
                continue;
            }
            let id = new_id();
            sqlx::query(&numbered("INSERT INTO permissions (id, service_id, permission, permission_type, description, created_at) VALUES (?, ?, ?, 'domainId', ?, ?)"))
                .bind(&id).bind(&service_id).bind(&perm).bind(&desc).bind(now).execute(&mut *tx).await?;
            out.push(PermissionRow {
                id,
                permission: perm,
                permission_type: "domainId".into(),
                description: desc,
                created_at: now,
            });
        }
        let n: i64 = sqlx::query_scalar(&numbered(
            "SELECT COUNT(*) FROM permissions WHERE service_id = ?",
        ))
        .bind(&service_id)
        .fetch_one(&mut *tx)
        .await?;
        if n as usize > MAX_PERMISSIONS {
            return reject(
                Reason::PermissionListFull,
                format!(
                    "the whitelist holds at most {MAX_PERMISSIONS} entries; add * or remove some"
                ),
            );
        }
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn remove_permissions(
        &self,
        caller: Caller,
        service_id: String,
        entries: Vec<String>,
    ) -> Result<Vec<PermissionRow>> {
        if entries.is_empty() {
            return reject(
                Reason::EmptyPermissionList,
                "permissions: the list is empty",
            );
        }
        let canon = entries
            .iter()
            .map(|e| Permission::parse(e).map(|p| p.canonical()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        let mut out = Vec::new();
        for p in canon {
            if let Some(r) = sqlx::query(&numbered(
                "DELETE FROM permissions WHERE service_id = ? AND permission = ? RETURNING *",
            ))
            .bind(&service_id)
            .bind(&p)
            .fetch_optional(&mut *tx)
            .await?
            {
                out.push(permission_row(&r)?);
            }
        }
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn remove_permission_ids(
        &self,
        caller: Caller,
        service_id: String,
        ids: Vec<String>,
    ) -> Result<Vec<PermissionRow>> {
        if ids.is_empty() {
            return reject(
                Reason::EmptyPermissionList,
                "permissions: the list is empty",
            );
        }
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        let mut out = Vec::new();
        for id in ids {
            let r = sqlx::query(&numbered(
                "DELETE FROM permissions WHERE service_id = ? AND id = ? RETURNING *",
            ))
            .bind(&service_id)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::NotFound,
                    format!("permissions: whitelist entry {id} not found"),
                )
            })?;
            out.push(permission_row(&r)?);
        }
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn describe_permission(
        &self,
        caller: Caller,
        service_id: String,
        id: String,
        description: String,
    ) -> Result<PermissionRow> {
        validate_description("description", &description)?;
        let mut tx = self.begin().await?;
        own_service(&mut tx, &caller, &service_id).await?;
        let r = sqlx::query(&numbered(
            "UPDATE permissions SET description = ? WHERE service_id = ? AND id = ? RETURNING *",
        ))
        .bind(&description)
        .bind(&service_id)
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found("whitelist entry"))?;
        let row = permission_row(&r)?;
        self.commit(tx).await?;
        Ok(row)
    }

    /// An operator service by id, short name or full name.
    async fn public_service(conn: &mut AnyConnection, key: &str) -> Result<Service> {
        let sql = format!("{SERVICE_SELECT} WHERE s.is_public = 1 AND (s.id = ? OR s.short_name = ? OR s.service_name = ?)");
        let row = sqlx::query(&numbered(&sql))
            .bind(key)
            .bind(key)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| not_found(&format!("public service {key:?}")))?;
        service_row(&row)
    }

    /// Changes an operator service. Its backend and description change at any time (new
    /// sessions use the new backend); its ports and range only while no endpoint uses it.
    pub(crate) async fn update_public_service(
        &self,
        key: String,
        u: PublicServiceUpdate,
    ) -> Result<Service> {
        if let Some(d) = &u.description {
            validate_description("description", d)?;
        }
        let cidr = u
            .cidr
            .as_deref()
            .map(|c| vpcep_model::parse_cidr("cidr", c).map(|n| n.to_string()))
            .transpose()?;
        let mut tx = self.begin().await?;
        let svc = Self::public_service(&mut tx, &key).await?;
        if svc.status == ServiceStatus::Deleting {
            return reject(
                Reason::StateForbids,
                format!("{} is being deleted", svc.service_name),
            );
        }
        if cidr.is_some() && svc.service_type != ServiceType::Gateway {
            return reject(
                Reason::BadParameter,
                format!(
                    "cidr: {} is an interface service; only gateway services have a range",
                    svc.service_name
                ),
            );
        }
        if let Some(p) = &u.ports {
            if svc.service_type != ServiceType::Interface || p.is_empty() {
                return reject(
                    Reason::BadPortMapping,
                    format!(
                        "ports: {} is a {} service; only interface services have port mappings, at least one",
                        svc.service_name, svc.service_type.as_str()
                    ),
                );
            }
        }
        let reshapes = u.ports.as_ref().is_some_and(|p| *p != svc.ports)
            || cidr.as_ref().is_some_and(|c| *c != svc.cidr);
        if reshapes {
            let users: i64 = sqlx::query_scalar(&numbered(
                "SELECT COUNT(*) FROM endpoints WHERE service_id = ? AND status != 'deleting'",
            ))
            .bind(&svc.id)
            .fetch_one(&mut *tx)
            .await?;
            if users > 0 {
                return reject(
                    Reason::ServiceInUse,
                    format!("{} has {users} endpoint(s); its ports and range change only while none uses it (delete them first)", svc.service_name),
                );
            }
        }
        sqlx::query(&numbered("UPDATE services SET backend_ip = ?, ports = ?, cidr = ?, description = ?, updated_at = ? WHERE id = ?"))
            .bind(u.backend_ip.map(|ip| ip.to_string()).unwrap_or(svc.backend_ip.clone()))
            .bind(json_text(u.ports.as_ref().unwrap_or(&svc.ports)))
            .bind(cidr.unwrap_or(svc.cidr.clone()))
            .bind(u.description.as_ref().unwrap_or(&svc.description))
            .bind(now_micros())
            .bind(&svc.id)
            .execute(&mut *tx)
            .await?;
        let svc = Self::public_service(&mut tx, &svc.id).await?;
        self.commit(tx).await?;
        Ok(svc)
    }

    /// Deletes an operator service, as a tenant's: refused while endpoints are accepted
    /// or creating; the controller removes it (its other endpoints fail).
    pub(crate) async fn delete_public_service(&self, key: String) -> Result<Service> {
        let mut tx = self.begin().await?;
        let svc = Self::public_service(&mut tx, &key).await?;
        let in_use = |n| {
            format!("{} has {n} endpoint(s) connected (accepted or creating); their owners must delete them first", svc.service_name)
        };
        if !mark_deleting(&mut tx, &svc, in_use).await? {
            return Ok(svc);
        }
        let svc = Self::public_service(&mut tx, &svc.id).await?;
        self.commit(tx).await?;
        Ok(svc)
    }

    pub(crate) async fn quota(&self, caller: Caller) -> Result<Quota> {
        let mut c = self.read().await?;
        quota_of(&mut c, &caller).await
    }
}

/// A whitelist entry names an account by its domain id. A project id has the same form
/// (32 hex characters) and is an easy mistake, which would let nobody in: refused.
async fn check_names_an_account(
    conn: &mut AnyConnection,
    caller: &Caller,
    perm: &str,
) -> Result<()> {
    let Some(id) = perm.strip_prefix("iam:domain::").filter(|d| *d != "*") else {
        return Ok(());
    };
    let is_domain =
        super::exists(conn, "SELECT 1 FROM accounts WHERE domain_id = ?", &[id]).await?;
    if is_domain || !super::exists(conn, "SELECT 1 FROM projects WHERE id = ?", &[id]).await? {
        return Ok(());
    }
    if id == caller.project_id {
        return reject(
            Reason::BadPermission,
            format!("permissions: {id} is your project id, not an account id; a whitelist entry names an account (domain): use iam:domain::<the account's domain id> (yours is {})", caller.domain_id),
        );
    }
    reject(
        Reason::BadPermission,
        format!("permissions: {id} is a project id, not an account id; a whitelist entry names an account (domain): use iam:domain::<the account's domain id>, which its owner can tell you"),
    )
}

/// Endpoints left on a service that is going away are marked failed (they can only be
/// deleted afterwards).
pub(super) async fn orphan_endpoints(conn: &mut AnyConnection, service_id: &str) -> Result<()> {
    sqlx::query(&numbered("UPDATE endpoints SET status = ?, error = 'the endpoint service was deleted', updated_at = ? WHERE service_id = ? AND status != 'deleting'"))
        .bind(EndpointStatus::Failed.as_str()).bind(now_micros()).bind(service_id)
        .execute(conn).await?;
    Ok(())
}
