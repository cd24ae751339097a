//! IPv4 addresses and CIDRs: parsing, the reserved ranges and subnet host enumeration.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{Reason, Rejection};

/// Subnets may not overlap this range: the gateway's source addresses come from it.
pub const SYSTEM_RANGE: &str = "198.19.128.0/17";
/// Backends see endpoint traffic from this range (the user guide's security-group hint).
pub const SNAT_RANGE: &str = "198.19.128.0/20";

/// Parses `a.b.c.d/n` strictly: the address must be the network address.
pub fn parse_cidr(field: &str, raw: &str) -> Result<Ipv4Net, Rejection> {
    let net: Ipv4Net = raw.parse().map_err(|_| {
        Rejection::new(
            Reason::BadCidr,
            format!("{field}: {raw:?} is not an IPv4 CIDR"),
        )
    })?;
    if net.trunc() != net {
        return Err(Rejection::new(
            Reason::BadCidr,
            format!(
                "{field}: {raw:?} has host bits set (did you mean {}?)",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

pub fn parse_ipv4(field: &str, raw: &str) -> Result<Ipv4Addr, Rejection> {
    raw.parse()
        .map_err(|_| Rejection::bad(format!("{field}: {raw:?} is not an IPv4 address")))
}

/// True when `net` overlaps 198.19.128.0/17.
pub fn overlaps_system_range(net: &Ipv4Net) -> bool {
    let sys: Ipv4Net = SYSTEM_RANGE.parse().expect("constant");
    net.contains(&sys.network()) || sys.contains(&net.network())
}

/// Checks an endpoint's source whitelist: ≤20 IPv4 addresses or CIDRs.
pub fn validate_endpoint_whitelist(entries: &[String]) -> Result<(), Rejection> {
    if entries.len() > 20 {
        return Err(Rejection::new(
            Reason::EndpointWhitelistFull,
            format!("whitelist: at most 20 entries, got {}", entries.len()),
        ));
    }
    for e in entries {
        let ok = e.parse::<Ipv4Addr>().is_ok() || e.parse::<Ipv4Net>().is_ok();
        if !ok {
            return Err(Rejection::new(
                Reason::BadEndpointWhitelist,
                format!("whitelist: {e:?} is not an IPv4 address or CIDR"),
            ));
        }
    }
    Ok(())
}

/// Validates a subnet CIDR for a VPC: it must lie inside the VPC and avoid the system range.
pub fn check_subnet_cidr(vpc: &Ipv4Net, subnet: &Ipv4Net) -> Result<(), Rejection> {
    if !vpc.contains(subnet) {
        return Err(Rejection::new(
            Reason::BadCidr,
            format!("cidr: {subnet} is not inside the VPC's {vpc}"),
        ));
    }
    if overlaps_system_range(subnet) {
        return Err(Rejection::new(
            Reason::CidrOverlapsSystemRange,
            format!("cidr: {subnet} overlaps the reserved range {SYSTEM_RANGE}"),
        ));
    }
    if subnet.prefix_len() > 29 {
        return Err(Rejection::new(
            Reason::BadCidr,
            format!("cidr: {subnet} is too small (the longest prefix is /29)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(parse_cidr("c", "10.0.0.0/8").is_ok());
        assert!(parse_cidr("c", "10.0.0.1/8").is_err());
        assert!(parse_cidr("c", "10.0.0.0").is_err());
        assert!(parse_cidr("c", "300.0.0.0/8").is_err());
        let vpc = parse_cidr("c", "198.0.0.0/8").unwrap();
        let bad = parse_cidr("c", "198.19.130.0/24").unwrap();
        assert_eq!(
            check_subnet_cidr(&vpc, &bad).unwrap_err().reason,
            Reason::CidrOverlapsSystemRange
        );
        let big = parse_cidr("c", "198.0.0.0/9").unwrap();
        assert!(check_subnet_cidr(&vpc, &big).is_err());
        let vpc = parse_cidr("c", "192.168.0.0/16").unwrap();
        let ok = parse_cidr("c", "192.168.1.0/24").unwrap();
        assert!(check_subnet_cidr(&vpc, &ok).is_ok());
        let outside = parse_cidr("c", "10.1.0.0/24").unwrap();
        assert!(check_subnet_cidr(&vpc, &outside).is_err());
    }

    #[test]
    fn whitelist() {
        assert!(validate_endpoint_whitelist(&["10.0.0.1".into(), "10.0.0.0/8".into()]).is_ok());
        assert!(validate_endpoint_whitelist(&["nope".into()]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            validate_endpoint_whitelist(&many).unwrap_err().reason,
            Reason::EndpointWhitelistFull
        );
    }
}
