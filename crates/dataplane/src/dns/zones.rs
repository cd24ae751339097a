//! The names the resolvers answer and how a name is decided (pure: no sockets, no wire).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use vpcep_model::CloudName;

/// What the resolvers answer, replaced whole after every apply.
#[derive(Debug, Default)]
pub struct Zones {
    /// VPC id → (name → address); names lowercase, without the final dot.
    pub vpcs: HashMap<String, HashMap<String, Ipv4Addr>>,
    pub cloud: Vec<CloudName>,
}

/// The zones every resolver answers from, replaced whole: a reader holds the lock only
/// to clone the `Arc` (a UDP worker once per batch of datagrams).
#[derive(Debug, Default)]
pub(super) struct Published {
    pub(super) zones: RwLock<Arc<Zones>>,
}

/// How a name is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Address(Ipv4Addr),
    /// A name we own with no such record.
    NoSuchName,
    Elsewhere,
}

/// How `name` (lowercase, no final dot) is answered in `vpc` (`None`: the cloud resolver).
pub(super) fn decide(zones: &Zones, vpc: Option<&str>, name: &str) -> Verdict {
    if let Some(ip) = vpc
        .and_then(|v| zones.vpcs.get(v))
        .and_then(|z| z.get(name))
    {
        return Verdict::Address(*ip);
    }
    for c in &zones.cloud {
        let under = name.len() > c.name.len()
            && name.ends_with(&c.name)
            && name.as_bytes()[name.len() - c.name.len() - 1] == b'.';
        if name == c.name || under {
            return Verdict::Address(c.ip);
        }
    }
    if owned(name) {
        Verdict::NoSuchName
    } else {
        Verdict::Elsewhere
    }
}

/// Whether we are authoritative for `name`: our private zone `*.vpcep.*.internal`.
fn owned(name: &str) -> bool {
    name.ends_with(".internal") && name.split('.').any(|l| l == "vpcep")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        assert!(owned("abc.svc.vpcep.region-1.internal"));
        assert!(owned("obs.region-1.vpcep.internal"));
        assert!(!owned("example.com"));
        assert!(!owned("vpcep.example.com"));
    }
}
