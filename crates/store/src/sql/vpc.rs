//! The VPC registry: VPCs, subnets, ports (NICs and LB VIPs) and route tables, plus
//! address bookkeeping shared with endpoints.

use crate::sql::numbered;
use std::net::Ipv4Addr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use vpcep_model::{check_subnet_cidr, parse_cidr, Reason, Rejection};

use super::runs::{hold, release, take_lowest, Pool};

/// Subnets' VXLAN network identifiers: the lower half of the 24 bits (the upper half
/// numbers the gateway pairs' HA links, by VPC).
const MAX_VNI: i64 = (1 << 23) - 1;
use super::{exists, from_json, json_text, new_id, not_found, now_micros, reject, SqlStore};
use crate::secrets::random_bytes;
use crate::{
    Caller, NewPort, NewRouteTable, NewSubnet, NewVpc, Port, PortFilter, Result, Route, RouteTable,
    RouteTableUpdate, Subnet, Vpc,
};

fn check_name(field: &str, name: &str) -> Result<()> {
    if name.chars().count() > 64 || name.contains('<') || name.contains('>') {
        return reject(
            Reason::BadParameter,
            format!("{field}: at most 64 characters, without '<' or '>'"),
        );
    }
    Ok(())
}

/// Checks a new name and description, either of which may be left as it is.
fn check_renaming(name: &Option<String>, description: &Option<String>) -> Result<()> {
    if let Some(n) = name {
        check_name("name", n)?;
    }
    if let Some(d) = description {
        vpcep_model::validate_description("description", d)?;
    }
    Ok(())
}

/// Gives row `id` of `table` (`vpcs`, `subnets`) a new name and description, either of
/// which may stay as it is.
async fn rename(
    c: &mut AnyConnection,
    table: &str,
    id: &str,
    name: &Option<String>,
    description: &Option<String>,
) -> Result<()> {
    sqlx::query(&numbered(&format!("UPDATE {table} SET name = COALESCE(?, name), description = COALESCE(?, description), updated_at = ? WHERE id = ?")))
        .bind(name)
        .bind(description)
        .bind(now_micros())
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

fn vpc_row(r: &AnyRow) -> Result<Vpc> {
    Ok(Vpc {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        name: r.try_get("name")?,
        cidr: r.try_get("cidr")?,
        description: r.try_get("description")?,
        seq: r.try_get("seq")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn subnet_row(r: &AnyRow) -> Result<Subnet> {
    Ok(Subnet {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        vpc_id: r.try_get("vpc_id")?,
        name: r.try_get("name")?,
        cidr: r.try_get("cidr")?,
        gateway_ip: r.try_get("gateway_ip")?,
        neutron_subnet_id: r.try_get("neutron_subnet_id")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const PORT_COLS: &str = "p.id, p.project_id, p.vpc_id, p.subnet_id, s.neutron_subnet_id, p.name, p.ip, p.mac, p.device_owner, p.device_id, p.is_host, p.machine, p.created_at, p.updated_at FROM ports p JOIN subnets s ON s.id = p.subnet_id";

fn port_row(r: &AnyRow) -> Result<Port> {
    Ok(Port {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        vpc_id: r.try_get("vpc_id")?,
        subnet_id: r.try_get("subnet_id")?,
        neutron_subnet_id: r.try_get("neutron_subnet_id")?,
        name: r.try_get("name")?,
        ip: r.try_get("ip")?,
        mac: r.try_get("mac")?,
        device_owner: r.try_get("device_owner")?,
        device_id: r.try_get("device_id")?,
        is_host: r.try_get::<i64, _>("is_host")? != 0,
        machine: r.try_get("machine")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The compute machine named `name`, for a host to be placed on.
async fn placed_on(conn: &mut AnyConnection, name: &str) -> Result<String> {
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM machines WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    match role.as_deref() {
        Some("compute") => Ok(name.to_owned()),
        Some(other) => reject(
            Reason::BadParameter,
            format!("node: {name} is a {other} machine; hosts go on compute machines"),
        ),
        None => reject(
            Reason::BadParameter,
            format!("node: no machine {name} (vpcep admin node list shows them)"),
        ),
    }
}

/// The compute machine with the fewest hosts, if there are compute machines.
async fn least_loaded_compute(conn: &mut AnyConnection) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT m.name FROM machines m WHERE m.role = 'compute' \
         ORDER BY (SELECT COUNT(*) FROM ports p WHERE p.machine = m.name), m.name LIMIT 1",
    )
    .fetch_optional(conn)
    .await?)
}

pub(super) async fn find_vpc(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Option<Vpc>> {
    let row = sqlx::query(&numbered(
        "SELECT * FROM vpcs WHERE id = ? AND project_id = ?",
    ))
    .bind(id)
    .bind(&caller.project_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(vpc_row).transpose()
}

/// The caller's rows of `table`, oldest first; with `value`, only those whose `column`
/// is `value`.
async fn project_rows(
    conn: &mut AnyConnection,
    table: &str,
    column: &str,
    caller: &Caller,
    value: &Option<String>,
) -> Result<Vec<AnyRow>> {
    Ok(sqlx::query(&numbered(&format!("SELECT * FROM {table} WHERE project_id = ? AND (? IS NULL OR {column} = ?) ORDER BY created_at, id")))
        .bind(&caller.project_id)
        .bind(value)
        .bind(value)
        .fetch_all(conn)
        .await?)
}

/// The caller's VPC `id`; another project's, or none, is 404 alike.
pub(super) async fn vpc_of(conn: &mut AnyConnection, caller: &Caller, id: &str) -> Result<Vpc> {
    find_vpc(conn, caller, id)
        .await?
        .ok_or_else(|| not_found("VPC"))
}

/// The caller's subnet `id`; another project's, or none, is 404 alike.
pub(super) async fn subnet_of(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Subnet> {
    find_subnet(conn, caller, id)
        .await?
        .ok_or_else(|| not_found("subnet"))
}

pub(super) async fn find_subnet(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Option<Subnet>> {
    let row = sqlx::query(&numbered(
        "SELECT * FROM subnets WHERE id = ? AND project_id = ?",
    ))
    .bind(id)
    .bind(&caller.project_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(subnet_row).transpose()
}

pub(super) async fn find_port(
    conn: &mut AnyConnection,
    caller: &Caller,
    id: &str,
) -> Result<Option<Port>> {
    let sql = format!("SELECT {PORT_COLS} WHERE p.id = ? AND p.project_id = ?");
    let row = sqlx::query(&numbered(&sql))
        .bind(id)
        .bind(&caller.project_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(port_row).transpose()
}

/// The row of `ip` held by `owner`; the caller has recorded it in the subnet's runs.
async fn insert_address(
    conn: &mut AnyConnection,
    subnet_id: &str,
    ip: Ipv4Addr,
    owner: &str,
) -> Result<()> {
    sqlx::query(&numbered(
        "INSERT INTO addresses (subnet_id, ip_num, ip, owner_id) VALUES (?, ?, ?, ?)",
    ))
    .bind(subnet_id)
    .bind(ip_num(ip))
    .bind(ip.to_string())
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

fn ip_num(ip: Ipv4Addr) -> i64 {
    i64::from(u32::from(ip))
}

/// Marks a new subnet's network, broadcast and gateway addresses and its first two host
/// addresses (the VPC router and its resolver) as taken by the subnet itself.
async fn reserve_addresses(conn: &mut AnyConnection, subnet: &Subnet) -> Result<()> {
    let net = parse_cidr("cidr", &subnet.cidr)?;
    let first = u32::from(net.network());
    let mut reserved: Vec<Ipv4Addr> = [first, first + 1, first + 2]
        .into_iter()
        .map(Ipv4Addr::from)
        .collect();
    reserved.push(net.broadcast());
    reserved.push(
        subnet
            .gateway_ip
            .parse()
            .map_err(|_| Rejection::bad("gateway_ip: not an address"))?,
    );
    reserved.sort();
    reserved.dedup();
    for ip in reserved {
        hold(&mut *conn, Pool::Subnet(&subnet.id), ip_num(ip)).await?;
        insert_address(&mut *conn, &subnet.id, ip, &subnet.id).await?;
    }
    Ok(())
}

/// Claims an address in a subnet for `owner`: the requested one after checking it, or
/// the lowest free one.
pub(super) async fn claim_address(
    conn: &mut AnyConnection,
    subnet: &Subnet,
    requested: Option<Ipv4Addr>,
    owner: &str,
) -> Result<Ipv4Addr> {
    let net = parse_cidr("cidr", &subnet.cidr)?;
    let pool = Pool::Subnet(&subnet.id);
    let ip = match requested {
        Some(ip) => {
            if !net.contains(&ip) {
                return reject(
                    Reason::PortIpOutsideSubnet,
                    format!("port_ip: {ip} is outside the subnet {net}"),
                );
            }
            let holder: Option<String> = sqlx::query_scalar(&numbered(
                "SELECT owner_id FROM addresses WHERE subnet_id = ? AND ip_num = ?",
            ))
            .bind(&subnet.id)
            .bind(ip_num(ip))
            .fetch_optional(&mut *conn)
            .await?;
            match holder {
                Some(h) if h == subnet.id => {
                    return reject(
                        Reason::BadPortIp,
                        format!("port_ip: {ip} is reserved in subnet {net}"),
                    )
                }
                Some(_) => {
                    return reject(
                        Reason::PortIpInUse,
                        format!("port_ip: {ip} is already in use"),
                    )
                }
                None => {
                    hold(&mut *conn, pool, ip_num(ip)).await?;
                    ip
                }
            }
        }
        // The network and broadcast addresses are held (reserved), so never taken.
        None => {
            let (first, last) = (ip_num(net.network()), ip_num(net.broadcast()));
            match take_lowest(&mut *conn, pool, first, last).await? {
                Some(n) => Ipv4Addr::from(n as u32),
                None => {
                    return reject(
                        Reason::SubnetFull,
                        format!("subnet {net} has no free address"),
                    )
                }
            }
        }
    };
    insert_address(conn, &subnet.id, ip, owner).await?;
    Ok(ip)
}

/// Frees the addresses `owner` holds: a port's or an endpoint's, or a subnet's reserved
/// ones when it goes.
pub(super) async fn release_address(conn: &mut AnyConnection, owner: &str) -> Result<()> {
    let freed: Vec<(String, i64)> = sqlx::query_as(&numbered(
        "DELETE FROM addresses WHERE owner_id = ? RETURNING subnet_id, ip_num",
    ))
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    for (subnet, n) in freed {
        release(&mut *conn, Pool::Subnet(&subnet), n).await?;
    }
    Ok(())
}

/// Whether two ranges share an address.
pub(super) fn overlaps(a: &ipnet::Ipv4Net, b: &ipnet::Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_routes(routes: &[Route]) -> Result<()> {
    for r in routes {
        parse_cidr("routes.destination", &r.destination)?;
        if r.nexthop.is_empty() || r.kind.is_empty() {
            return reject(
                Reason::BadParameter,
                "routes: type and nexthop are required",
            );
        }
    }
    Ok(())
}

impl SqlStore {
    pub(crate) async fn create_vpc(&self, caller: Caller, v: NewVpc) -> Result<Vpc> {
        check_name("name", &v.name)?;
        vpcep_model::validate_description("description", &v.description)?;
        let net = parse_cidr("cidr", &v.cidr)?;
        if net.prefix_len() < 8 || net.prefix_len() > 28 {
            return reject(
                Reason::BadCidr,
                format!("cidr: {net} must have a prefix between /8 and /28"),
            );
        }
        let now = now_micros();
        let vpc = Vpc {
            id: new_id(),
            project_id: caller.project_id.clone(),
            name: v.name,
            cidr: net.to_string(),
            description: v.description,
            seq: 0,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin().await?;
        let seq: i64 = sqlx::query_scalar(&numbered("SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM vpcs WHERE seq = 1) THEN 1 ELSE (SELECT MIN(v.seq + 1) FROM vpcs v WHERE NOT EXISTS (SELECT 1 FROM vpcs w WHERE w.seq = v.seq + 1)) END"))
            .fetch_one(&mut *tx).await?;
        sqlx::query(&numbered("INSERT INTO vpcs (id, project_id, name, cidr, description, seq, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(&vpc.id).bind(&vpc.project_id).bind(&vpc.name).bind(&vpc.cidr).bind(&vpc.description).bind(seq).bind(now).bind(now)
            .execute(&mut *tx).await?;
        let vpc = Vpc { seq, ..vpc };
        // Every VPC has a default route table, as in the cloud.
        sqlx::query(&numbered("INSERT INTO route_tables (id, project_id, vpc_id, name, is_default, routes, description, created_at, updated_at) VALUES (?, ?, ?, ?, 1, '[]', '', ?, ?)"))
            .bind(new_id()).bind(&vpc.project_id).bind(&vpc.id).bind(format!("rtb-{}", if vpc.name.is_empty() { &vpc.id[..8] } else { &vpc.name })).bind(now).bind(now)
            .execute(&mut *tx).await?;
        self.commit(tx).await?;
        Ok(vpc)
    }

    pub(crate) async fn list_vpcs(&self, caller: Caller, id: Option<String>) -> Result<Vec<Vpc>> {
        let mut c = self.read().await?;
        let rows = project_rows(&mut c, "vpcs", "id", &caller, &id).await?;
        rows.iter().map(vpc_row).collect()
    }

    pub(crate) async fn get_vpc(&self, caller: Caller, id: String) -> Result<Vpc> {
        let mut c = self.read().await?;
        vpc_of(&mut c, &caller, &id).await
    }

    pub(crate) async fn update_vpc(
        &self,
        caller: Caller,
        id: String,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Vpc> {
        check_renaming(&name, &description)?;
        let mut tx = self.begin().await?;
        vpc_of(&mut tx, &caller, &id).await?;
        rename(&mut tx, "vpcs", &id, &name, &description).await?;
        let vpc = vpc_of(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(vpc)
    }

    pub(crate) async fn delete_vpc(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        vpc_of(&mut tx, &caller, &id).await?;
        for (sql, what) in [
            ("SELECT 1 FROM subnets WHERE vpc_id = ?", "subnets"),
            (
                "SELECT 1 FROM services WHERE vpc_id = ?",
                "endpoint services",
            ),
            ("SELECT 1 FROM endpoints WHERE vpc_id = ?", "endpoints"),
            (
                "SELECT 1 FROM idcs WHERE vpc_id = ?",
                "attached data centres",
            ),
            (
                "SELECT 1 FROM route_tables WHERE vpc_id = ? AND is_default = 0",
                "custom route tables",
            ),
        ] {
            if exists(&mut tx, sql, &[&id]).await? {
                return reject(
                    Reason::InUse,
                    format!("the VPC still has {what}; delete them first"),
                );
            }
        }
        sqlx::query(&numbered("DELETE FROM route_tables WHERE vpc_id = ?"))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&numbered("DELETE FROM vpcs WHERE id = ?"))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    pub(crate) async fn create_subnet(&self, caller: Caller, s: NewSubnet) -> Result<Subnet> {
        check_name("name", &s.name)?;
        vpcep_model::validate_description("description", &s.description)?;
        let net = parse_cidr("cidr", &s.cidr)?;
        let mut tx = self.begin().await?;
        let vpc = find_vpc(&mut tx, &caller, &s.vpc_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::BadVpcId,
                    format!("vpc_id: VPC {} not found", s.vpc_id),
                )
            })?;
        check_subnet_cidr(&parse_cidr("vpc cidr", &vpc.cidr)?, &net)?;
        let gateway = match &s.gateway_ip {
            Some(g) => {
                let ip = vpcep_model::parse_ipv4("gateway_ip", g)?;
                if !net.contains(&ip) || ip == net.network() || ip == net.broadcast() {
                    return reject(
                        Reason::BadParameter,
                        format!("gateway_ip: {ip} is not a host address of {net}"),
                    );
                }
                ip
            }
            None => Ipv4Addr::from(u32::from(net.network()) + 1),
        };
        let siblings: Vec<String> =
            sqlx::query_scalar(&numbered("SELECT cidr FROM subnets WHERE vpc_id = ?"))
                .bind(&vpc.id)
                .fetch_all(&mut *tx)
                .await?;
        for other in siblings {
            let o = parse_cidr("cidr", &other)?;
            if overlaps(&o, &net) {
                return reject(
                    Reason::BadCidr,
                    format!("cidr: {net} overlaps subnet {o} of the same VPC"),
                );
            }
        }
        // A data centre's range is routed to it: an address there cannot also be local.
        let idcs: Vec<(String, String)> = sqlx::query_as(&numbered(
            "SELECT cidr, COALESCE(NULLIF(name, ''), id) FROM idcs WHERE vpc_id = ?",
        ))
        .bind(&vpc.id)
        .fetch_all(&mut *tx)
        .await?;
        for (other, name) in idcs {
            let o = parse_cidr("cidr", &other)?;
            if overlaps(&o, &net) {
                return reject(
                    Reason::BadCidr,
                    format!("cidr: {net} overlaps {o}, the range of data centre {name} attached to this VPC; choose a range outside it"),
                );
            }
        }
        let now = now_micros();
        let sub = Subnet {
            id: new_id(),
            project_id: caller.project_id.clone(),
            vpc_id: vpc.id,
            name: s.name,
            cidr: net.to_string(),
            gateway_ip: gateway.to_string(),
            neutron_subnet_id: new_id(),
            description: s.description,
            created_at: now,
            updated_at: now,
        };
        // Its segment across machines: one subnet per VNI.
        let Some(vni) = take_lowest(&mut tx, Pool::Vni, 1, MAX_VNI).await? else {
            return reject(
                Reason::QuotaExceeded,
                "no VXLAN network identifier left for a new subnet",
            );
        };
        sqlx::query(&numbered("INSERT INTO subnets (id, project_id, vpc_id, name, cidr, gateway_ip, neutron_subnet_id, description, created_at, updated_at, vni) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(&sub.id).bind(&sub.project_id).bind(&sub.vpc_id).bind(&sub.name).bind(&sub.cidr).bind(&sub.gateway_ip).bind(&sub.neutron_subnet_id).bind(&sub.description).bind(now).bind(now).bind(vni)
            .execute(&mut *tx).await?;
        reserve_addresses(&mut tx, &sub).await?;
        self.commit(tx).await?;
        Ok(sub)
    }

    pub(crate) async fn list_subnets(
        &self,
        caller: Caller,
        vpc_id: Option<String>,
    ) -> Result<Vec<Subnet>> {
        let mut c = self.read().await?;
        let rows = project_rows(&mut c, "subnets", "vpc_id", &caller, &vpc_id).await?;
        rows.iter().map(subnet_row).collect()
    }

    pub(crate) async fn get_subnet(&self, caller: Caller, id: String) -> Result<Subnet> {
        let mut c = self.read().await?;
        subnet_of(&mut c, &caller, &id).await
    }

    pub(crate) async fn update_subnet(
        &self,
        caller: Caller,
        id: String,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Subnet> {
        check_renaming(&name, &description)?;
        let mut tx = self.begin().await?;
        subnet_of(&mut tx, &caller, &id).await?;
        rename(&mut tx, "subnets", &id, &name, &description).await?;
        let s = subnet_of(&mut tx, &caller, &id).await?;
        self.commit(tx).await?;
        Ok(s)
    }

    pub(crate) async fn delete_subnet(
        &self,
        caller: Caller,
        vpc_id: String,
        id: String,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let s = subnet_of(&mut tx, &caller, &id).await?;
        if s.vpc_id != vpc_id {
            return Err(not_found("subnet"));
        }
        if exists(
            &mut tx,
            "SELECT 1 FROM addresses WHERE subnet_id = ? AND owner_id != subnet_id",
            &[&id],
        )
        .await?
        {
            return reject(
                Reason::InUse,
                "the subnet still has ports or endpoints; delete them first",
            );
        }
        release_address(&mut tx, &id).await?;
        let vni: i64 = sqlx::query_scalar("DELETE FROM subnets WHERE id = $1 RETURNING vni")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        if vni > 0 {
            release(&mut tx, Pool::Vni, vni).await?;
        }
        self.commit(tx).await
    }

    pub(crate) async fn create_port(&self, caller: Caller, p: NewPort) -> Result<Port> {
        check_name("name", &p.name)?;
        let mut tx = self.begin().await?;
        let subnet = find_subnet(&mut tx, &caller, &p.subnet_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::BadSubnetId,
                    format!("network_id: subnet {} not found", p.subnet_id),
                )
            })?;
        let machine = match (p.is_host, p.machine) {
            (false, _) => None,
            (true, Some(name)) => Some(placed_on(&mut tx, &name).await?),
            (true, None) => least_loaded_compute(&mut tx).await?,
        };
        let id = new_id();
        let ip = claim_address(&mut tx, &subnet, p.ip, &id).await?;
        let m = random_bytes::<3>();
        let now = now_micros();
        sqlx::query(&numbered("INSERT INTO ports (id, project_id, vpc_id, subnet_id, name, ip, mac, device_owner, device_id, is_host, created_at, updated_at, machine) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(&id).bind(&caller.project_id).bind(&subnet.vpc_id).bind(&subnet.id).bind(&p.name).bind(ip.to_string())
            .bind(format!("fa:16:3e:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2])).bind(&p.device_owner).bind(&p.device_id).bind(i64::from(p.is_host)).bind(now).bind(now).bind(machine)
            .execute(&mut *tx).await?;
        let port = find_port(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("port"))?;
        self.commit(tx).await?;
        Ok(port)
    }

    pub(crate) async fn list_ports(&self, caller: Caller, f: PortFilter) -> Result<Vec<Port>> {
        let mut c = self.read().await?;
        let sql = format!("SELECT {PORT_COLS} WHERE p.project_id = ? AND (? IS NULL OR p.id = ?) AND (? IS NULL OR p.subnet_id = ?) AND (? IS NULL OR p.device_owner = ?) AND (? IS NULL OR p.device_id = ?) AND (? IS NULL OR p.is_host = ?) ORDER BY p.created_at, p.id");
        let rows = sqlx::query(&numbered(&sql))
            .bind(&caller.project_id)
            .bind(&f.id)
            .bind(&f.id)
            .bind(&f.subnet_id)
            .bind(&f.subnet_id)
            .bind(&f.device_owner)
            .bind(&f.device_owner)
            .bind(&f.device_id)
            .bind(&f.device_id)
            .bind(f.is_host.map(i64::from))
            .bind(f.is_host.map(i64::from))
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(port_row).collect()
    }

    pub(crate) async fn get_port(&self, caller: Caller, id: String) -> Result<Port> {
        let mut c = self.read().await?;
        find_port(&mut c, &caller, &id)
            .await?
            .ok_or_else(|| not_found("port"))
    }

    pub(crate) async fn update_port(
        &self,
        caller: Caller,
        id: String,
        name: Option<String>,
    ) -> Result<Port> {
        if let Some(n) = &name {
            check_name("name", n)?;
        }
        let mut tx = self.begin().await?;
        find_port(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("port"))?;
        sqlx::query(&numbered(
            "UPDATE ports SET name = COALESCE(?, name), updated_at = ? WHERE id = ?",
        ))
        .bind(&name)
        .bind(now_micros())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let p = find_port(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("port"))?;
        self.commit(tx).await?;
        Ok(p)
    }

    pub(crate) async fn delete_port(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        find_port(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("port"))?;
        if exists(&mut tx, "SELECT 1 FROM services WHERE port_id = ?", &[&id]).await? {
            return reject(
                Reason::InUse,
                "the port backs an endpoint service; delete the service first",
            );
        }
        release_address(&mut tx, &id).await?;
        sqlx::query(&numbered("DELETE FROM ports WHERE id = ?"))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    async fn route_table_row(&self, conn: &mut AnyConnection, r: &AnyRow) -> Result<RouteTable> {
        let vpc_id: String = r.try_get("vpc_id")?;
        let is_default = r.try_get::<i64, _>("is_default")? != 0;
        let subnet_ids = if is_default {
            sqlx::query_scalar(&numbered(
                "SELECT id FROM subnets WHERE vpc_id = ? ORDER BY created_at, id",
            ))
            .bind(&vpc_id)
            .fetch_all(&mut *conn)
            .await?
        } else {
            Vec::new()
        };
        let id: String = r.try_get("id")?;
        // Routes that accepted gateway endpoints put into this table: derived, not stored.
        let gateways: Vec<(String, String, String)> = sqlx::query_as(&numbered("SELECT e.id, e.routetables, s.cidr FROM endpoints e JOIN services s ON s.id = e.service_id WHERE e.vpc_id = ? AND e.service_type = 'gateway' AND e.status = 'accepted' ORDER BY e.created_at, e.id"))
            .bind(&vpc_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut endpoint_routes = Vec::new();
        for (ep, tables, cidr) in gateways {
            if from_json::<Vec<String>>(&tables)?.contains(&id) {
                endpoint_routes.push(Route {
                    destination: cidr,
                    kind: "vpcep".into(),
                    nexthop: ep,
                    description: String::new(),
                });
            }
        }
        Ok(RouteTable {
            endpoint_routes,
            id,
            project_id: r.try_get("project_id")?,
            vpc_id,
            name: r.try_get("name")?,
            is_default,
            routes: from_json(&r.try_get::<String, _>("routes")?)?,
            subnet_ids,
            description: r.try_get("description")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    pub(super) async fn find_route_table(
        &self,
        conn: &mut AnyConnection,
        caller: &Caller,
        id: &str,
    ) -> Result<Option<RouteTable>> {
        let row = sqlx::query(&numbered(
            "SELECT * FROM route_tables WHERE id = ? AND project_id = ?",
        ))
        .bind(id)
        .bind(&caller.project_id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(r) => Ok(Some(self.route_table_row(conn, &r).await?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn create_route_table(
        &self,
        caller: Caller,
        rt: NewRouteTable,
    ) -> Result<RouteTable> {
        check_name("name", &rt.name)?;
        vpcep_model::validate_description("description", &rt.description)?;
        check_routes(&rt.routes)?;
        let mut tx = self.begin().await?;
        find_vpc(&mut tx, &caller, &rt.vpc_id)
            .await?
            .ok_or_else(|| {
                Rejection::new(
                    Reason::BadVpcId,
                    format!("vpc_id: VPC {} not found", rt.vpc_id),
                )
            })?;
        let id = new_id();
        let now = now_micros();
        sqlx::query(&numbered("INSERT INTO route_tables (id, project_id, vpc_id, name, is_default, routes, description, created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)"))
            .bind(&id).bind(&caller.project_id).bind(&rt.vpc_id).bind(&rt.name).bind(json_text(&rt.routes)).bind(&rt.description).bind(now).bind(now)
            .execute(&mut *tx).await?;
        let t = self
            .find_route_table(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("route table"))?;
        self.commit(tx).await?;
        Ok(t)
    }

    pub(crate) async fn list_route_tables(
        &self,
        caller: Caller,
        vpc_id: Option<String>,
        id: Option<String>,
    ) -> Result<Vec<RouteTable>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&numbered("SELECT * FROM route_tables WHERE project_id = ? AND (? IS NULL OR vpc_id = ?) AND (? IS NULL OR id = ?) ORDER BY created_at, id"))
            .bind(&caller.project_id).bind(&vpc_id).bind(&vpc_id).bind(&id).bind(&id)
            .fetch_all(&mut *c).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.route_table_row(&mut c, r).await?);
        }
        Ok(out)
    }

    pub(crate) async fn get_route_table(&self, caller: Caller, id: String) -> Result<RouteTable> {
        let mut c = self.read().await?;
        self.find_route_table(&mut c, &caller, &id)
            .await?
            .ok_or_else(|| not_found("route table"))
    }

    pub(crate) async fn update_route_table(
        &self,
        caller: Caller,
        id: String,
        u: RouteTableUpdate,
    ) -> Result<RouteTable> {
        check_renaming(&u.name, &u.description)?;
        check_routes(&u.add)?;
        check_routes(&u.modify)?;
        let mut tx = self.begin().await?;
        let t = self
            .find_route_table(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("route table"))?;
        let mut routes = t.routes;
        routes.retain(|r| !u.del.iter().any(|d| d.destination == r.destination));
        for m in &u.modify {
            match routes.iter_mut().find(|r| r.destination == m.destination) {
                Some(r) => *r = m.clone(),
                None => {
                    return reject(
                        Reason::BadParameter,
                        format!("routes.mod: no route to {}", m.destination),
                    )
                }
            }
        }
        for a in &u.add {
            if routes.iter().any(|r| r.destination == a.destination) {
                return reject(
                    Reason::BadParameter,
                    format!("routes.add: a route to {} exists already", a.destination),
                );
            }
            routes.push(a.clone());
        }
        sqlx::query(&numbered("UPDATE route_tables SET name = COALESCE(?, name), description = COALESCE(?, description), routes = ?, updated_at = ? WHERE id = ?"))
            .bind(&u.name).bind(&u.description).bind(json_text(&routes)).bind(now_micros()).bind(&id)
            .execute(&mut *tx).await?;
        let t = self
            .find_route_table(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("route table"))?;
        self.commit(tx).await?;
        Ok(t)
    }

    pub(crate) async fn delete_route_table(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let t = self
            .find_route_table(&mut tx, &caller, &id)
            .await?
            .ok_or_else(|| not_found("route table"))?;
        if t.is_default {
            return reject(
                Reason::InUse,
                "the default route table of a VPC cannot be deleted",
            );
        }
        let users: Vec<String> = sqlx::query_scalar(&numbered(
            "SELECT routetables FROM endpoints WHERE vpc_id = ?",
        ))
        .bind(&t.vpc_id)
        .fetch_all(&mut *tx)
        .await?;
        for u in users {
            if from_json::<Vec<String>>(&u)?.contains(&id) {
                return reject(
                    Reason::InUse,
                    "a gateway endpoint routes through this table; update or delete it first",
                );
            }
        }
        sqlx::query(&numbered("DELETE FROM route_tables WHERE id = ?"))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }
}
