//! `vpcep admin`: operator commands that work on the store directly, whether or not
//! servers are running (the store serialises the writers): SQLite in the data
//! directory, or the PostgreSQL database of `--database`.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use vpcep_model::{validate_port_mappings, PortMapping, ServiceType};
use vpcep_store::{
    Account, Database, NewPublicService, Page, PublicServiceUpdate, Service, ServiceFilter,
    SqlStore, Store,
};

use crate::cli::UsageError;

async fn open(db: &Database) -> anyhow::Result<SqlStore> {
    SqlStore::open(db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store ({}): {e}", db.describe()))
}

pub async fn create_account(db: &Database, name: &str, region: &str) -> anyhow::Result<Value> {
    let store = open(db).await?;
    let a = Store::create_account(&store, name.to_owned(), region.to_owned()).await?;
    store.close().await;
    Ok(json!({
        "name": a.name,
        "domain_id": a.domain_id,
        "project_id": a.project_id,
        "access_key": a.access_key,
        "secret_key": a.secret_key,
        "password": a.password,
    }))
}

pub fn account_json(a: &Account) -> Value {
    json!({
        "name": a.name,
        "domain_id": a.domain_id,
        "projects": a.project_ids.iter().map(|(r, p)| json!({"region": r, "project_id": p})).collect::<Vec<_>>(),
        "quota": {"endpoint_services": a.service_quota, "endpoints": a.endpoint_quota},
    })
}

pub async fn list_accounts(db: &Database) -> anyhow::Result<Vec<Account>> {
    let store = open(db).await?;
    let list = Store::list_accounts(&store).await?;
    store.close().await;
    Ok(list)
}

pub async fn set_quota(
    db: &Database,
    name: &str,
    services: Option<i64>,
    endpoints: Option<i64>,
) -> anyhow::Result<Account> {
    if services.is_none() && endpoints.is_none() {
        return Err(UsageError("give --endpoint-services and/or --endpoints".into()).into());
    }
    let store = open(db).await?;
    let a = Store::set_quota(&store, name.to_owned(), services, endpoints).await?;
    store.close().await;
    Ok(a)
}

/// Parses `CLIENT:SERVER[/PROTO]`, e.g. `53:53/UDP` or `8080:80`.
pub fn parse_port(raw: &str) -> Result<(i64, i64, String), String> {
    let (ports, proto) = raw.split_once('/').unwrap_or((raw, "TCP"));
    let (c, s) = ports.split_once(':').unwrap_or((ports, ports));
    let num = |x: &str| {
        x.parse::<i64>()
            .map_err(|_| format!("{raw:?}: use CLIENT:SERVER[/TCP|UDP], e.g. 53:53/UDP"))
    };
    Ok((num(c)?, num(s)?, proto.to_uppercase()))
}

pub struct PublicService<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub backend: &'a str,
    pub ports: &'a [String],
    pub cidr: Option<&'a str>,
    pub description: &'a str,
}

fn backend_ip(raw: &str) -> anyhow::Result<Ipv4Addr> {
    raw.parse()
        .map_err(|_| UsageError(format!("--backend {raw:?}: not an IPv4 address")).into())
}

/// `--port` values as port mappings (none when none are given).
fn port_mappings(raw: &[String]) -> anyhow::Result<Vec<PortMapping>> {
    let parsed = raw
        .iter()
        .map(|r| parse_port(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError(format!("--port {e}")))?;
    let raw: Vec<_> = parsed
        .iter()
        .map(|(c, s, pr)| (*c, *s, Some(pr.as_str())))
        .collect();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    validate_port_mappings(&raw).map_err(|e| UsageError(format!("--port: {e}")).into())
}

pub async fn create_public_service(
    db: &Database,
    region: &str,
    p: PublicService<'_>,
) -> anyhow::Result<Value> {
    let service_type =
        ServiceType::parse(p.kind).map_err(|e| UsageError(format!("--type: {e}")))?;
    let backend_ip = backend_ip(p.backend)?;
    let ports = port_mappings(p.ports)?;
    let store = open(db).await?;
    let svc = Store::create_public_service(
        &store,
        NewPublicService {
            name: p.name.to_owned(),
            region: region.to_owned(),
            service_type,
            backend_ip,
            cidr: p.cidr.map(str::to_owned),
            ports,
            description: p.description.to_owned(),
        },
    )
    .await?;
    store.close().await;
    Ok(public_service_json(&svc))
}

/// A public service as the operator's commands print it.
pub fn public_service_json(svc: &Service) -> Value {
    json!({
        "id": svc.id,
        "name": svc.short_name,
        "service_name": svc.service_name,
        "service_type": svc.service_type.as_str(),
        "backend": svc.backend_ip,
        "cidr": svc.cidr,
        "ports": svc.ports.iter().map(|m| json!({"client_port": m.client_port, "server_port": m.server_port, "protocol": m.protocol.as_str()})).collect::<Vec<_>>(),
        "status": svc.status.as_str(),
        "connections": svc.connection_count,
        "description": svc.description,
    })
}

/// Every public service, oldest first.
pub async fn list_public_services(db: &Database) -> anyhow::Result<Vec<Service>> {
    let store = open(db).await?;
    let (list, _) = Store::list_public_services(
        &store,
        ServiceFilter::default(),
        Page {
            limit: i64::MAX,
            ..Page::default()
        },
    )
    .await?;
    store.close().await;
    Ok(list)
}

/// What `admin public-service update` changes (`None`: unchanged).
pub struct PublicServiceChange<'a> {
    pub backend: Option<&'a str>,
    pub ports: &'a [String],
    pub cidr: Option<&'a str>,
    pub description: Option<&'a str>,
}

pub async fn update_public_service(
    db: &Database,
    key: &str,
    c: PublicServiceChange<'_>,
) -> anyhow::Result<Service> {
    if c.backend.is_none() && c.ports.is_empty() && c.cidr.is_none() && c.description.is_none() {
        return Err(UsageError("give --backend, --port, --cidr or --description".into()).into());
    }
    let update = PublicServiceUpdate {
        backend_ip: c.backend.map(backend_ip).transpose()?,
        ports: (!c.ports.is_empty())
            .then(|| port_mappings(c.ports))
            .transpose()?,
        cidr: c.cidr.map(str::to_owned),
        description: c.description.map(str::to_owned),
    };
    let store = open(db).await?;
    let svc = Store::update_public_service(&store, key.to_owned(), update).await;
    store.close().await;
    Ok(svc?)
}

pub async fn delete_public_service(db: &Database, key: &str) -> anyhow::Result<Service> {
    let store = open(db).await?;
    let svc = Store::delete_public_service(&store, key.to_owned()).await;
    store.close().await;
    Ok(svc?)
}

/// Brings the store to this vpcep's schema (opening it does) and says which version it
/// was and is: `vpcep admin migrate`, before the first start of a new release.
pub async fn migrate(db: &Database) -> anyhow::Result<Value> {
    let before = SqlStore::schema_version(db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the store ({}): {e}", db.describe()))?;
    let store = open(db).await?;
    let after = SqlStore::schema_version(db).await?;
    store.close().await;
    Ok(json!({"store": db.describe(), "schema_before": before, "schema": after}))
}

/// Every process serving the store, as it last said, and who leads.
pub async fn cluster_status(db: &Database) -> anyhow::Result<Vec<vpcep_store::Replica>> {
    let store = open(db).await?;
    let list = Store::replicas(&store).await?;
    store.close().await;
    Ok(list)
}

/// Every machine of a deployment across machines.
pub async fn machines(db: &Database) -> anyhow::Result<Vec<vpcep_store::Machine>> {
    let store = open(db).await?;
    let list = Store::machines(&store).await?;
    store.close().await;
    Ok(list)
}

/// A consistent copy of a live SQLite store in the new file `to`.
pub async fn backup(db: &Database, to: &std::path::Path) -> anyhow::Result<Value> {
    if to.exists() {
        return Err(UsageError(format!(
            "{} exists already: back up into a new file",
            to.display()
        ))
        .into());
    }
    let store = open(db).await?;
    let done = store.backup(to).await;
    store.close().await;
    done?;
    let bytes = std::fs::metadata(to)?.len();
    Ok(json!({"backup": to.display().to_string(), "bytes": bytes}))
}

#[cfg(test)]
mod tests {
    use super::parse_port;

    #[test]
    fn ports() {
        assert_eq!(parse_port("53:53/UDP").unwrap(), (53, 53, "UDP".into()));
        assert_eq!(parse_port("8080:80").unwrap(), (8080, 80, "TCP".into()));
        assert_eq!(parse_port("443").unwrap(), (443, 443, "TCP".into()));
        assert!(parse_port("x:1").is_err());
    }
}
