//! The desired state of the data plane as the store holds it: whole (`snapshot`), or as
//! what changed since a revision (`changes_since`), which reads only the rows written
//! after it — the `rev` columns and the tombstones in `gone`, both kept by triggers
//! (migration 3) — so following the store costs what changed, not what there is.

use crate::sql::numbered;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use sqlx::{AnyConnection, Row};
use vpcep_model::{
    route_listen_ip, CloudName, EndpointSpec, HostSpec, IdcSpec, MachineRole, MachineSpec,
    RouteSpec, Snapshot, SnapshotDelta, SubnetSpec, TcpProxy, VpcSpec, SNAT_BASE, SNAT_SIZE,
};

use super::{from_json, json_text, Engine, SqlStore};
use crate::{Result, StoreError};

/// Tombstones are kept for this many revisions; a reader further behind reads whole.
pub(super) const GONE_KEPT: i64 = 100_000;

/// Which rows a read covers: all, or those whose ids are listed.
#[derive(Clone, Copy)]
enum Rows<'a> {
    All,
    /// A JSON array of ids (for `json_each`).
    Only(&'a str),
}

impl Rows<'_> {
    /// `sql` with ` AND {col} IN (the listed ids)` in place of `{only}`.
    fn sql(self, c: &AnyConnection, sql: &str, col: &str) -> String {
        let only = match self {
            Rows::All => String::new(),
            Rows::Only(_) => format!(" AND {col} IN ({})", Engine::of(c).json_members()),
        };
        numbered(&sql.replace("{only}", &only)).into_owned()
    }

    fn bind<'q, O>(
        self,
        q: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
    where
        Self: 'q,
    {
        match self {
            Rows::All => q,
            Rows::Only(ids) => q.bind(ids),
        }
    }
}

type SubnetRow = (String, String, String, String, i64);

async fn vpcs(c: &mut AnyConnection, rows: Rows<'_>) -> Result<Vec<VpcSpec>> {
    let sql = rows.sql(c, "SELECT id, vpc_id, cidr, gateway_ip, vni FROM subnets WHERE 1 = 1{only} ORDER BY created_at, id",
        "vpc_id",
    );
    let subnets: Vec<SubnetRow> = rows.bind(sqlx::query_as(&sql)).fetch_all(&mut *c).await?;
    let mut by_vpc: HashMap<String, Vec<SubnetSpec>> = HashMap::new();
    for (id, vpc, cidr, gw, vni) in subnets {
        by_vpc.entry(vpc).or_default().push(SubnetSpec {
            id,
            cidr,
            gateway_ip: ip(&gw)?,
            vni: vni as u32,
        });
    }
    let sql = rows.sql(
        c,
        "SELECT id, seq FROM vpcs WHERE 1 = 1{only} ORDER BY seq",
        "id",
    );
    let vpcs: Vec<(String, i64)> = rows.bind(sqlx::query_as(&sql)).fetch_all(&mut *c).await?;
    Ok(vpcs
        .into_iter()
        .map(|(id, seq)| VpcSpec {
            subnets: by_vpc.remove(&id).unwrap_or_default(),
            id,
            seq: seq as u32,
        })
        .collect())
}

/// Hosts written after revision `after` (all with -1).
async fn hosts(c: &mut AnyConnection, after: i64) -> Result<Vec<HostSpec>> {
    type HostRow = (String, String, String, String, String, Option<String>);
    let rows: Vec<HostRow> = sqlx::query_as(
        "SELECT id, vpc_id, subnet_id, ip, mac, machine FROM ports WHERE is_host = 1 AND rev > $1 ORDER BY created_at, id",
    )
    .bind(after)
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(port_id, vpc_id, subnet_id, addr, mac, machine)| {
            Ok(HostSpec {
                port_id,
                vpc_id,
                subnet_id,
                ip: ip(&addr)?,
                mac,
                machine,
            })
        })
        .collect()
}

/// Every registered machine, by name.
async fn machines(c: &mut AnyConnection) -> Result<Vec<MachineSpec>> {
    type MachineRow = (String, String, String, String, Option<i64>, i64);
    let rows: Vec<MachineRow> =
        sqlx::query_as("SELECT name, role, zone, underlay, slot, down FROM machines ORDER BY name")
            .fetch_all(c)
            .await?;
    rows.into_iter()
        .map(|(name, role, zone, underlay, slot, down)| {
            Ok(MachineSpec {
                role: MachineRole::parse(&role).map_err(|e| StoreError::Corrupt(e.msg))?,
                underlay: ip(&underlay)?,
                name,
                zone,
                slot: slot.map(|s| s as u8),
                down: down != 0,
            })
        })
        .collect()
}

/// Data centres written after revision `after` (all with -1).
async fn idcs(c: &mut AnyConnection, after: i64) -> Result<Vec<IdcSpec>> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(&numbered(
        "SELECT id, vpc_id, cidr, ip FROM idcs WHERE rev > ? ORDER BY created_at, id",
    ))
    .bind(after)
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(id, vpc_id, cidr, addr)| {
            Ok(IdcSpec {
                id,
                vpc_id,
                cidr,
                ip: ip(&addr)?,
            })
        })
        .collect()
}

/// The endpoints among `rows` that must forward: accepted, or being created without
/// approval. (`+e.status` keeps SQLite off the status index: a few listed ids are found
/// by their key, not by walking every accepted endpoint — 2.6 ms per change at 10,000.) A gateway endpoint's route serves the subnets (and data centres) of its VPC
/// when the VPC's default route table is one of the endpoint's.
async fn endpoints(c: &mut AnyConnection, rows: Rows<'_>) -> Result<Vec<EndpointSpec>> {
    let sql = rows.sql(c, "SELECT e.id, e.service_id, e.service_type, e.marker_id, e.vpc_id, e.subnet_id, e.ip, e.whitelist, e.enable_whitelist, e.enable_dns, e.dns_name, e.routetables, e.snat_host, s.vpc_id AS provider_vpc, s.is_public, s.backend_ip, s.ports, s.tcp_proxy, s.connection_limit, s.cidr FROM endpoints e JOIN services s ON s.id = e.service_id WHERE ({status} = 'accepted' OR ({status} = 'creating' AND s.approval_enabled = 0)){only} ORDER BY e.created_at, e.id", "e.id").replace("{status}", &Engine::of(c).unindexed("e.status"));
    let found = match rows {
        Rows::All => sqlx::query(&sql).fetch_all(&mut *c).await?,
        Rows::Only(ids) => sqlx::query(&sql).bind(ids).fetch_all(&mut *c).await?,
    };
    // What gateway endpoints' routes need, for their VPCs only.
    let gateway_vpcs: BTreeSet<String> = found
        .iter()
        .filter(|r| {
            r.try_get::<String, _>("service_type")
                .is_ok_and(|t| t == "gateway")
        })
        .filter_map(|r| r.try_get::<String, _>("vpc_id").ok())
        .collect();
    let mut sources: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    if !gateway_vpcs.is_empty() {
        let list = json_text(&gateway_vpcs);
        let in_list = format!("IN ({})", Engine::of(c).json_members());
        let defaults: Vec<(String, String)> = sqlx::query_as(&numbered(&format!(
            "SELECT vpc_id, id FROM route_tables WHERE is_default = 1 AND vpc_id {in_list}"
        )))
        .bind(&list)
        .fetch_all(&mut *c)
        .await?;
        let cidrs: Vec<(String, String)> = sqlx::query_as(&numbered(&format!("SELECT vpc_id, cidr FROM (SELECT vpc_id, cidr, created_at, id, 0 AS k FROM subnets WHERE vpc_id {in_list} UNION ALL SELECT vpc_id, cidr, created_at, id, 1 AS k FROM idcs WHERE vpc_id {in_list}) AS u ORDER BY k, created_at, id")))
            .bind(&list)
            .bind(&list)
            .fetch_all(&mut *c)
            .await?;
        for (vpc, table) in defaults {
            sources.entry(vpc).or_default().0.push(table);
        }
        for (vpc, cidr) in cidrs {
            sources.entry(vpc).or_default().1.push(cidr);
        }
    }
    let mut out = Vec::with_capacity(found.len());
    for r in found {
        let whitelist: Vec<String> = from_json(&r.try_get::<String, _>("whitelist")?)?;
        let consumer_vpc: String = r.try_get("vpc_id")?;
        let gateway = r.try_get::<String, _>("service_type")? == "gateway";
        let (addr, subnet_id, route) = if gateway {
            let cidr: String = r.try_get("cidr")?;
            let listen = route_listen_ip(&cidr)
                .ok_or_else(|| StoreError::Corrupt(format!("service CIDR {cidr}")))?;
            let tables: Vec<String> = from_json(&r.try_get::<String, _>("routetables")?)?;
            let (defaults, cidrs) = sources.get(&consumer_vpc).cloned().unwrap_or_default();
            let sources = if defaults.iter().any(|t| tables.contains(t)) {
                cidrs
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
        out.push(EndpointSpec {
            id: r.try_get("id")?,
            service_id: r.try_get("service_id")?,
            marker_id: r.try_get::<i64, _>("marker_id")? as u32,
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
    Ok(out)
}

/// The cloud's internal zone: `{name}.{region}.vpcep.internal` for every operator
/// gateway service, at the address its endpoints listen on.
async fn cloud_names(c: &mut AnyConnection) -> Result<Vec<CloudName>> {
    let public: Vec<(String, String, String)> = sqlx::query_as(&numbered("SELECT short_name, service_name, cidr FROM services WHERE is_public = 1 AND service_type = 'gateway' AND status != 'deleting' ORDER BY created_at, id"))
        .fetch_all(c)
        .await?;
    Ok(public
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
        .collect())
}

async fn ids(c: &mut AnyConnection, sql: &str, after: i64) -> Result<Vec<String>> {
    // Every `?` of these queries is the revision.
    let q_sql = numbered(sql);
    let mut q = sqlx::query_scalar::<_, String>(&q_sql);
    for _ in 0..sql.matches('?').count() {
        q = q.bind(after);
    }
    Ok(q.fetch_all(c).await?)
}

impl SqlStore {
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        // One read transaction: the revision and the rows are of the same moment.
        let mut tx = self.read_tx().await?;
        let revision: i64 =
            sqlx::query_scalar(&numbered("SELECT v FROM meta WHERE k = 'revision'"))
                .fetch_one(&mut *tx)
                .await?;
        let snapshot = Snapshot {
            revision: revision as u64,
            vpcs: vpcs(&mut tx, Rows::All).await?,
            hosts: hosts(&mut tx, -1).await?,
            endpoints: endpoints(&mut tx, Rows::All).await?,
            idcs: idcs(&mut tx, -1).await?,
            cloud_names: cloud_names(&mut tx).await?,
            machines: machines(&mut tx).await?,
        };
        tx.rollback().await?;
        Ok(snapshot)
    }

    /// What changed after revision `from`, up to the current one; `None` when that is
    /// not known any more (tombstones pruned) or `from` is not a revision of this store.
    pub(crate) async fn changes_since(&self, from: u64) -> Result<Option<SnapshotDelta>> {
        let mut tx = self.read_tx().await?;
        // One look at which tables changed (each the last entry of its `rev` index), so
        // that a change of one endpoint reads the endpoints and nothing else.
        let last: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(&numbered("SELECT (SELECT v FROM meta WHERE k = 'revision'), (SELECT v FROM meta WHERE k = 'gone_floor'), \
             COALESCE((SELECT MAX(rev) FROM vpcs), 0), COALESCE((SELECT MAX(rev) FROM subnets), 0), \
             COALESCE((SELECT MAX(rev) FROM ports), 0), COALESCE((SELECT MAX(rev) FROM idcs), 0), \
             COALESCE((SELECT MAX(rev) FROM route_tables), 0), COALESCE((SELECT MAX(rev) FROM services), 0), \
             COALESCE((SELECT MAX(rev) FROM endpoints), 0), COALESCE((SELECT MAX(rev) FROM machines), 0)",))
        .fetch_one(&mut *tx)
        .await?;
        let (
            revision,
            floor,
            vpcs_at,
            subnets_at,
            ports_at,
            idcs_at,
            tables_at,
            services_at,
            endpoints_at,
            machines_at,
        ) = last;
        let after = from as i64;
        if after > revision || after < floor {
            return Ok(None);
        }
        let mut delta = SnapshotDelta {
            from,
            revision: revision as u64,
            ..Default::default()
        };
        if after == revision {
            return Ok(Some(delta));
        }
        let gone: Vec<(String, String, String)> = sqlx::query_as(&numbered("SELECT kind, id, parent FROM gone WHERE kind IN ('vpcs', 'subnets', 'ports', 'idcs', 'route_tables', 'services', 'endpoints') AND rev > ?",))
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let went = |kind: &'static str| gone.iter().filter(move |(k, _, _)| k == kind);
        let ids_of =
            |kind: &'static str| went(kind).map(|(_, id, _)| id.clone()).collect::<Vec<_>>();
        let changed = |at: i64| at > after;

        let mut changed_vpcs: BTreeSet<String> =
            went("subnets").map(|(_, _, vpc)| vpc.clone()).collect();
        if changed(vpcs_at) || changed(subnets_at) {
            changed_vpcs.extend(
                ids(&mut tx, "SELECT id FROM vpcs WHERE rev > ? UNION SELECT vpc_id FROM subnets WHERE rev > ?", after).await?,
            );
        }
        if !changed_vpcs.is_empty() {
            delta.vpcs = vpcs(&mut tx, Rows::Only(&json_text(&changed_vpcs))).await?;
        }
        delta.vpcs_gone = ids_of("vpcs");
        if changed(ports_at) {
            delta.hosts = hosts(&mut tx, after).await?;
        }
        delta.hosts_gone = ids_of("ports");
        if changed(idcs_at) {
            delta.idcs = idcs(&mut tx, after).await?;
        }
        delta.idcs_gone = ids_of("idcs");

        // An endpoint's spec follows its row, its service's row and, for gateway
        // endpoints, what its VPC's route tables serve.
        let mut candidates = BTreeSet::new();
        if changed(endpoints_at) {
            candidates.extend(ids(&mut tx, "SELECT id FROM endpoints WHERE rev > ?", after).await?);
        }
        if changed(services_at) {
            candidates.extend(ids(&mut tx, "SELECT e.id FROM endpoints e JOIN services s ON s.id = e.service_id WHERE s.rev > ?", after).await?);
        }
        let mut routed: BTreeSet<String> = gone
            .iter()
            .filter(|(k, _, _)| ["subnets", "idcs", "route_tables"].contains(&k.as_str()))
            .map(|(_, _, vpc)| vpc.clone())
            .collect();
        if changed(subnets_at) || changed(idcs_at) || changed(tables_at) {
            routed.extend(ids(&mut tx, "SELECT vpc_id FROM subnets WHERE rev > ? UNION SELECT vpc_id FROM idcs WHERE rev > ? UNION SELECT vpc_id FROM route_tables WHERE rev > ?", after).await?);
        }
        if !routed.is_empty() {
            let found: Vec<String> = sqlx::query_scalar(&numbered(&format!(
                "SELECT id FROM endpoints WHERE service_type = 'gateway' AND vpc_id IN ({})",
                Engine::of(&tx).json_members()
            )))
            .bind(json_text(&routed))
            .fetch_all(&mut *tx)
            .await?;
            candidates.extend(found);
        }
        if !candidates.is_empty() {
            delta.endpoints = endpoints(&mut tx, Rows::Only(&json_text(&candidates))).await?;
            // A candidate that does not forward (any more) goes.
            let forwarding: BTreeSet<&str> =
                delta.endpoints.iter().map(|e| e.id.as_str()).collect();
            delta.endpoints_gone = candidates
                .iter()
                .filter(|id| !forwarding.contains(id.as_str()))
                .cloned()
                .collect();
        }
        delta.endpoints_gone.extend(ids_of("endpoints"));
        let names_changed = went("services").next().is_some()
            || (changed(services_at)
                && !ids(
                    &mut tx,
                    "SELECT id FROM services WHERE is_public = 1 AND rev > ?",
                    after,
                )
                .await?
                .is_empty());
        if names_changed {
            delta.cloud_names = Some(cloud_names(&mut tx).await?);
        }
        if changed(machines_at) {
            delta.machines = Some(machines(&mut tx).await?);
        }
        tx.rollback().await?;
        Ok(Some(delta))
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
