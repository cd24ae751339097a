//! `vpcep admin`: operator commands that work on the data directory directly, whether or
//! not a server is running (SQLite serialises the writers).

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{json, Value};
use vpcep_model::{validate_port_mappings, ServiceType};
use vpcep_store::{Account, NewPublicService, SqliteStore, Store};

async fn open(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the store in {}: {e}", data_dir.display()))
}

pub async fn create_account(data_dir: &Path, name: &str, region: &str) -> anyhow::Result<Value> {
    let store = open(data_dir).await?;
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

pub async fn list_accounts(data_dir: &Path) -> anyhow::Result<Vec<Account>> {
    let store = open(data_dir).await?;
    let list = Store::list_accounts(&store).await?;
    store.close().await;
    Ok(list)
}

pub async fn set_quota(
    data_dir: &Path,
    name: &str,
    services: Option<i64>,
    endpoints: Option<i64>,
) -> anyhow::Result<Account> {
    if services.is_none() && endpoints.is_none() {
        anyhow::bail!("give --endpoint-services and/or --endpoints");
    }
    let store = open(data_dir).await?;
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

pub async fn create_public_service(
    data_dir: &Path,
    region: &str,
    p: PublicService<'_>,
) -> anyhow::Result<Value> {
    let service_type = ServiceType::parse(p.kind).map_err(|e| anyhow::anyhow!("--type: {e}"))?;
    let backend_ip: Ipv4Addr = p
        .backend
        .parse()
        .map_err(|_| anyhow::anyhow!("--backend {:?}: not an IPv4 address", p.backend))?;
    let parsed = p
        .ports
        .iter()
        .map(|r| parse_port(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let raw: Vec<_> = parsed
        .iter()
        .map(|(c, s, pr)| (*c, *s, Some(pr.as_str())))
        .collect();
    let ports = if raw.is_empty() {
        Vec::new()
    } else {
        validate_port_mappings(&raw)?
    };
    let store = open(data_dir).await?;
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
    Ok(json!({
        "id": svc.id,
        "service_name": svc.service_name,
        "service_type": svc.service_type.as_str(),
        "backend": svc.backend_ip,
        "cidr": svc.cidr,
        "ports": svc.ports.iter().map(|m| json!({"client_port": m.client_port, "server_port": m.server_port, "protocol": m.protocol.as_str()})).collect::<Vec<_>>(),
        "status": svc.status.as_str(),
    }))
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
