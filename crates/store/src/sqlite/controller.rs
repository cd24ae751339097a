//! What the controller reads and writes: rows in transitional statuses and their outcome.

use std::net::Ipv4Addr;

use sqlx::Row;
use vpcep_model::{
    route_listen_ip, CloudName, EndpointSpec, EndpointStatus, HostSpec, IdcSpec, RouteSpec,
    Snapshot, SubnetSpec, TcpProxy, VpcSpec, SNAT_BASE, SNAT_SIZE,
};

use super::services::orphan_endpoints;
use super::tags::kind_str;
use super::vpc::release_address;
use super::{from_json, now_micros, SqliteStore};
use crate::{Outcome, ResourceKind, Result, StoreError, Transitional};

impl SqliteStore {
    pub(crate) async fn transitional(&self) -> Result<Transitional> {
        let mut c = self.read().await?;
        let ids = |sql: &'static str| sqlx::query_scalar::<_, String>(sql);
        Ok(Transitional {
            services_creating: ids(
                "SELECT id FROM services WHERE status = 'creating' ORDER BY created_at",
            )
            .fetch_all(&mut *c)
            .await?,
            services_deleting: ids(
                "SELECT id FROM services WHERE status = 'deleting' ORDER BY updated_at",
            )
            .fetch_all(&mut *c)
            .await?,
            endpoints_creating: sqlx::query_as("SELECT e.id, (COALESCE(s.approval_enabled, 1) = 0) FROM endpoints e LEFT JOIN services s ON s.id = e.service_id WHERE e.status = 'creating' ORDER BY e.created_at").fetch_all(&mut *c).await?,
            endpoints_deleting: ids(
                "SELECT id FROM endpoints WHERE status = 'deleting' ORDER BY updated_at",
            )
            .fetch_all(&mut *c)
            .await?,
        })
    }

    pub(crate) async fn settle_services(&self, outcomes: Vec<(String, Outcome)>) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, outcome) in outcomes {
            let (status, error) = match outcome {
                Ok(()) => ("available", String::new()),
                Err(e) => ("failed", e),
            };
            sqlx::query("UPDATE services SET status = ?, error = ?, updated_at = ? WHERE id = ? AND status = 'creating'")
                .bind(status).bind(error).bind(now_micros()).bind(&id)
                .execute(&mut *tx).await?;
        }
        self.commit(tx).await
    }

    /// Endpoints that came up settle as accepted or pending acceptance, according to their
    /// service's approval setting at this moment; the others fail.
    pub(crate) async fn settle_endpoints(&self, outcomes: Vec<(String, Outcome)>) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, outcome) in outcomes {
            let approval: Option<i64> = sqlx::query_scalar("SELECT s.approval_enabled FROM endpoints e JOIN services s ON s.id = e.service_id WHERE e.id = ? AND e.status = 'creating'")
                .bind(&id).fetch_optional(&mut *tx).await?;
            let Some(approval) = approval else { continue };
            let (status, error) = match outcome {
                Ok(()) => (EndpointStatus::settled(approval != 0), String::new()),
                Err(e) => (EndpointStatus::Failed, e),
            };
            sqlx::query("UPDATE endpoints SET status = ?, error = ?, updated_at = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(error)
                .bind(now_micros())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await
    }

    pub(crate) async fn finish_deletions(
        &self,
        services: Vec<String>,
        endpoints: Vec<String>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for id in endpoints {
            let gone = sqlx::query("DELETE FROM endpoints WHERE id = ? AND status = 'deleting'")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() > 0 {
                release_address(&mut tx, &id).await?;
                sqlx::query("DELETE FROM tags WHERE resource_type = ? AND resource_id = ?")
                    .bind(kind_str(ResourceKind::Endpoint))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for id in services {
            let gone = sqlx::query("DELETE FROM services WHERE id = ? AND status = 'deleting'")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() > 0 {
                orphan_endpoints(&mut tx, &id).await?;
                sqlx::query("DELETE FROM permissions WHERE service_id = ?")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM tags WHERE resource_type = ? AND resource_id = ?")
                    .bind(kind_str(ResourceKind::Service))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        self.commit(tx).await
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        // One read transaction: the revision and the rows are of the same moment.
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query_scalar("SELECT v FROM meta WHERE k = 'revision'")
            .fetch_one(&mut *tx)
            .await?;
        let subnets: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT id, vpc_id, cidr, gateway_ip FROM subnets ORDER BY created_at, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let vpc_rows: Vec<(String, i64)> = sqlx::query_as("SELECT id, seq FROM vpcs ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        let vpcs = vpc_rows
            .into_iter()
            .map(|(id, seq)| {
                let subnets = subnets
                    .iter()
                    .filter(|s| s.1 == id)
                    .map(|(sid, _, cidr, gw)| {
                        Ok(SubnetSpec {
                            id: sid.clone(),
                            cidr: cidr.clone(),
                            gateway_ip: ip(gw)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(VpcSpec {
                    id,
                    seq: seq as u32,
                    subnets,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let host_rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT id, vpc_id, subnet_id, ip FROM ports WHERE is_host = 1 ORDER BY created_at, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let hosts = host_rows
            .into_iter()
            .map(|(port_id, vpc_id, subnet_id, addr)| {
                Ok(HostSpec {
                    port_id,
                    vpc_id,
                    subnet_id,
                    ip: ip(&addr)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Which subnets each route table serves: the default table serves every subnet of
        // its VPC (and the data centres attached to it); custom tables serve none yet.
        let defaults: Vec<(String, String)> =
            sqlx::query_as("SELECT id, vpc_id FROM route_tables WHERE is_default = 1")
                .fetch_all(&mut *tx)
                .await?;
        let idc_rows: Vec<(String, String, String, String)> =
            sqlx::query_as("SELECT id, vpc_id, cidr, ip FROM idcs ORDER BY created_at, id")
                .fetch_all(&mut *tx)
                .await?;
        let rows = sqlx::query("SELECT e.id, e.service_id, e.service_type, e.marker_id, e.vpc_id, e.subnet_id, e.ip, e.whitelist, e.enable_whitelist, e.enable_dns, e.dns_name, e.routetables, e.snat_host, s.vpc_id AS provider_vpc, s.is_public, s.backend_ip, s.ports, s.tcp_proxy, s.connection_limit, s.cidr FROM endpoints e JOIN services s ON s.id = e.service_id WHERE e.status = 'accepted' OR (e.status = 'creating' AND s.approval_enabled = 0) ORDER BY e.created_at, e.id")
            .fetch_all(&mut *tx)
            .await?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for r in rows {
            let marker = r.try_get::<i64, _>("marker_id")? as u32;
            let whitelist: Vec<String> = from_json(&r.try_get::<String, _>("whitelist")?)?;
            let consumer_vpc: String = r.try_get("vpc_id")?;
            let gateway = r.try_get::<String, _>("service_type")? == "gateway";
            let (addr, subnet_id, route) = if gateway {
                let cidr: String = r.try_get("cidr")?;
                let listen = route_listen_ip(&cidr)
                    .ok_or_else(|| StoreError::Corrupt(format!("service CIDR {cidr}")))?;
                let tables: Vec<String> = from_json(&r.try_get::<String, _>("routetables")?)?;
                let default_here = defaults
                    .iter()
                    .any(|(t, v)| *v == consumer_vpc && tables.contains(t));
                let sources = if default_here {
                    let subnets = subnets
                        .iter()
                        .filter(|s| s.1 == consumer_vpc)
                        .map(|s| s.2.clone());
                    let idcs = idc_rows
                        .iter()
                        .filter(|i| i.1 == consumer_vpc)
                        .map(|i| i.2.clone());
                    subnets.chain(idcs).collect()
                } else {
                    Vec::new()
                };
                (listen, String::new(), Some(RouteSpec { cidr, sources }))
            } else {
                (
                    ip(&r.try_get::<String, _>("ip")?)?,
                    r.try_get("subnet_id")?,
                    None,
                )
            };
            let dns_name: String = r.try_get("dns_name")?;
            let provider_vpc: Option<String> = (r.try_get::<i64, _>("is_public")? == 0)
                .then(|| r.try_get("provider_vpc"))
                .transpose()?;
            let snat_ip = match provider_vpc {
                Some(_) => snat_address(r.try_get("snat_host")?)?,
                None => Ipv4Addr::UNSPECIFIED,
            };
            endpoints.push(EndpointSpec {
                id: r.try_get("id")?,
                service_id: r.try_get("service_id")?,
                marker_id: marker,
                consumer_vpc,
                subnet_id,
                ip: addr,
                provider_vpc,
                backend_ip: ip(&r.try_get::<String, _>("backend_ip")?)?,
                ports: from_json(&r.try_get::<String, _>("ports")?)?,
                tcp_proxy: TcpProxy::parse(&r.try_get::<String, _>("tcp_proxy")?)
                    .map_err(|e| StoreError::Corrupt(e.msg))?,
                whitelist: (r.try_get::<i64, _>("enable_whitelist")? != 0).then_some(whitelist),
                max_connections: r.try_get::<i64, _>("connection_limit")? as u32,
                snat_ip,
                dns_name: (r.try_get::<i64, _>("enable_dns")? != 0 && !dns_name.is_empty())
                    .then_some(dns_name),
                route,
            });
        }
        let idcs = idc_rows
            .into_iter()
            .map(|(id, vpc_id, cidr, addr)| {
                Ok(IdcSpec {
                    id,
                    vpc_id,
                    cidr,
                    ip: ip(&addr)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The cloud's internal zone: `{name}.{region}.vpcep.internal` for every operator
        // gateway service, at the address its endpoints listen on.
        let public: Vec<(String, String, String)> = sqlx::query_as("SELECT short_name, service_name, cidr FROM services WHERE is_public = 1 AND service_type = 'gateway' AND status != 'deleting' ORDER BY created_at, id")
            .fetch_all(&mut *tx)
            .await?;
        let cloud_names = public
            .into_iter()
            .filter_map(|(short, full, cidr)| {
                let region = full
                    .strip_prefix("com.vpcep.")?
                    .strip_suffix(&format!(".{short}"))?;
                Some(CloudName {
                    name: format!("{short}.{region}.vpcep.internal").to_ascii_lowercase(),
                    ip: route_listen_ip(&cidr)?,
                })
            })
            .collect();
        tx.rollback().await?;
        Ok(Snapshot {
            revision: revision as u64,
            vpcs,
            hosts,
            endpoints,
            idcs,
            cloud_names,
        })
    }
}

/// The address of an endpoint's stored SNAT host number.
fn snat_address(host: Option<i64>) -> Result<Ipv4Addr> {
    match host {
        Some(h) if (1..=i64::from(SNAT_SIZE)).contains(&h) => {
            Ok(Ipv4Addr::from(SNAT_BASE + h as u32))
        }
        _ => Err(StoreError::Corrupt(format!("SNAT host number {host:?}"))),
    }
}

fn ip(raw: &str) -> Result<Ipv4Addr> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad address {raw:?}")))
}
