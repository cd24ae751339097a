//! Data centres attached to VPCs: a range of their own (which must not overlap the VPC's
//! subnets or the ranges the platform uses) and one machine at its first host address.

use crate::sql::numbered;
use sqlx::any::AnyRow;
use sqlx::Row;
use vpcep_model::{overlaps_system_range, parse_cidr, Reason};

use super::vpc::{overlaps, vpc_of};
use super::{new_id, not_found, now_micros, reject, SqlStore};
use crate::{Caller, Idc, NewIdc, Result};

/// Ranges a data centre cannot use: the platform's link (100.64.0.0/10), link-local, and
/// the cloud-service range gateway endpoints route (100.125.0.0/16 by default, inside
/// 100.64.0.0/10 too).
const TAKEN: [&str; 3] = ["100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"];

fn idc_row(r: &AnyRow) -> Result<Idc> {
    Ok(Idc {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        vpc_id: r.try_get("vpc_id")?,
        name: r.try_get("name")?,
        cidr: r.try_get("cidr")?,
        ip: r.try_get("ip")?,
        created_at: r.try_get("created_at")?,
    })
}

impl SqlStore {
    pub(crate) async fn create_idc(&self, caller: Caller, n: NewIdc) -> Result<Idc> {
        let net = parse_cidr("cidr", &n.cidr)?;
        if net.prefix_len() > 30 {
            return reject(
                Reason::BadCidr,
                format!("cidr: {net} is too small (at most /30)"),
            );
        }
        if overlaps_system_range(&net)
            || TAKEN.iter().any(|t| {
                let t: ipnet::Ipv4Net = t.parse().expect("constant range");
                t.contains(&net.network()) || net.contains(&t.network())
            })
        {
            return reject(
                Reason::CidrOverlapsSystemRange,
                format!("cidr: {net} overlaps a range the platform uses (198.19.128.0/17, 100.64.0.0/10, 169.254.0.0/16)"),
            );
        }
        let mut tx = self.begin().await?;
        let vpc = vpc_of(&mut tx, &caller, &n.vpc_id).await?;
        let own = parse_cidr("cidr", &vpc.cidr)?;
        if overlaps(&own, &net) {
            return reject(
                Reason::BadCidr,
                format!("cidr: {net} overlaps the VPC's own CIDR {own}; a data centre needs a range outside the VPC (its addresses are routed to the data centre)"),
            );
        }
        // Gateway endpoints route their service's range in this VPC, for its data centres too.
        let routed: Vec<(String, String)> = sqlx::query_as(&numbered("SELECT s.cidr, s.service_name FROM endpoints e JOIN services s ON s.id = e.service_id WHERE e.vpc_id = ? AND e.service_type = 'gateway' AND e.status != 'deleting' AND s.cidr != ''"))
            .bind(&vpc.id)
            .fetch_all(&mut *tx)
            .await?;
        for (c, service) in routed {
            let other = parse_cidr("cidr", &c)?;
            if overlaps(&other, &net) {
                return reject(
                    Reason::BadCidr,
                    format!("cidr: {net} overlaps {other}, the range of {service}, which a gateway endpoint routes in this VPC"),
                );
            }
        }
        let taken: Vec<String> = sqlx::query_scalar(&numbered("SELECT cidr FROM subnets WHERE vpc_id = ? UNION ALL SELECT cidr FROM idcs WHERE vpc_id = ?",))
        .bind(&n.vpc_id)
        .bind(&n.vpc_id)
        .fetch_all(&mut *tx)
        .await?;
        for c in taken {
            let other = parse_cidr("cidr", &c)?;
            if overlaps(&other, &net) {
                return reject(
                    Reason::BadCidr,
                    format!("cidr: {net} overlaps {other}, already routed in this VPC"),
                );
            }
        }
        let idc = Idc {
            id: new_id(),
            project_id: caller.project_id.clone(),
            vpc_id: n.vpc_id,
            name: n.name,
            cidr: net.to_string(),
            ip: std::net::Ipv4Addr::from(u32::from(net.network()) + 1).to_string(),
            created_at: now_micros(),
        };
        sqlx::query(&numbered("INSERT INTO idcs (id, project_id, vpc_id, name, cidr, ip, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"))
            .bind(&idc.id).bind(&idc.project_id).bind(&idc.vpc_id).bind(&idc.name).bind(&idc.cidr).bind(&idc.ip).bind(idc.created_at)
            .execute(&mut *tx).await?;
        self.commit(tx).await?;
        Ok(idc)
    }

    pub(crate) async fn list_idcs(&self, caller: Caller) -> Result<Vec<Idc>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(&numbered(
            "SELECT * FROM idcs WHERE project_id = ? ORDER BY created_at, id",
        ))
        .bind(&caller.project_id)
        .fetch_all(&mut *c)
        .await?;
        rows.iter().map(idc_row).collect()
    }

    pub(crate) async fn delete_idc(&self, caller: Caller, id: String) -> Result<()> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query(&numbered(
            "DELETE FROM idcs WHERE id = ? AND project_id = ?",
        ))
        .bind(&id)
        .bind(&caller.project_id)
        .execute(&mut *tx)
        .await?;
        if gone.rows_affected() == 0 {
            return Err(not_found("data centre"));
        }
        self.commit(tx).await
    }
}
