//! Port mappings of an endpoint service: client port on the endpoint → server port on the backend.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Reason, Rejection};

/// The user guide allows at most 50 mappings per operation.
pub const MAX_PORT_MAPPINGS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        match raw {
            "TCP" | "tcp" => Ok(Protocol::Tcp),
            "UDP" | "udp" => Ok(Protocol::Udp),
            _ => Err(Rejection::new(
                Reason::BadProtocol,
                format!("ports: protocol {raw:?} is not TCP or UDP"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PortMapping {
    pub client_port: u16,
    pub server_port: u16,
    pub protocol: Protocol,
}

/// Checks raw (client, server, protocol) triples and returns typed mappings.
pub fn validate_port_mappings(
    raw: &[(i64, i64, Option<&str>)],
) -> Result<Vec<PortMapping>, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::new(
            Reason::BadPortMapping,
            "ports: at least one port mapping is required",
        ));
    }
    if raw.len() > MAX_PORT_MAPPINGS {
        return Err(Rejection::new(
            Reason::BadPortMapping,
            format!(
                "ports: at most {MAX_PORT_MAPPINGS} port mappings per request, got {}",
                raw.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, &(client, server, proto)) in raw.iter().enumerate() {
        let check = |name: &str, v: i64| -> Result<u16, Rejection> {
            u16::try_from(v).ok().filter(|p| *p != 0).ok_or_else(|| {
                Rejection::new(
                    Reason::BadPortMapping,
                    format!("ports[{i}].{name}: {v} is outside 1-65535"),
                )
            })
        };
        let m = PortMapping {
            client_port: check("client_port", client)?,
            server_port: check("server_port", server)?,
            protocol: Protocol::parse(proto.unwrap_or("TCP"))?,
        };
        if !seen.insert((m.client_port, m.protocol)) {
            return Err(Rejection::new(
                Reason::BadPortMapping,
                format!(
                    "ports[{i}]: client_port {} {} is mapped twice",
                    m.client_port, m.protocol
                ),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &[(i64, i64, Option<&str>)]) -> Result<usize, Reason> {
        validate_port_mappings(raw)
            .map(|v| v.len())
            .map_err(|e| e.reason)
    }

    #[test]
    fn mappings() {
        assert_eq!(check(&[(80, 8080, None)]), Ok(1));
        assert_eq!(
            check(&[(80, 80, Some("TCP")), (80, 80, Some("UDP"))]),
            Ok(2)
        );
        assert_eq!(check(&[]), Err(Reason::BadPortMapping));
        assert_eq!(check(&[(0, 80, None)]), Err(Reason::BadPortMapping));
        assert_eq!(check(&[(80, 65536, None)]), Err(Reason::BadPortMapping));
        assert_eq!(check(&[(-1, 80, None)]), Err(Reason::BadPortMapping));
        assert_eq!(check(&[(80, 80, Some("SCTP"))]), Err(Reason::BadProtocol));
        assert_eq!(
            check(&[(80, 80, None), (80, 81, Some("TCP"))]),
            Err(Reason::BadPortMapping)
        );
        let fifty: Vec<_> = (1..=50).map(|p| (p, p, None)).collect();
        assert_eq!(check(&fifty), Ok(50));
        let many: Vec<_> = (1..=51).map(|p| (p, p, None)).collect();
        assert_eq!(check(&many), Err(Reason::BadPortMapping));
    }
}
