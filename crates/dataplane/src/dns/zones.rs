//! The names the resolvers answer and how a name is decided (pure: no sockets, no wire).
//! Each VPC's names are a `Slot` of their own, shared by that VPC's resolvers, and the
//! cloud's names one `Slot` shared by all: publishing one VPC's names touches no other.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use vpcep_model::CloudName;

/// A VPC's private names: name (lowercase, without the final dot) → address.
pub(super) type Names = HashMap<String, Ipv4Addr>;

/// A value replaced whole, read by many: a reader holds the lock only to clone the `Arc`
/// and a writer only to swap it, so publishing never stalls a resolver.
#[derive(Debug, Default)]
pub(super) struct Slot<T>(RwLock<Arc<T>>);

impl<T> Slot<T> {
    pub(super) fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the value; the old one is freed by its last reader (or here), outside the lock.
    pub(super) fn set(&self, value: T) {
        let value = Arc::new(value);
        let old = std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|p| p.into_inner()),
            value,
        );
        drop(old);
    }
}

/// What one resolver answers from at one moment: its VPC's names (none for the cloud
/// resolver) and the cloud's names.
pub(super) struct Zone {
    pub(super) names: Option<Arc<Names>>,
    pub(super) cloud: Arc<Vec<CloudName>>,
}

/// How a name is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Address(Ipv4Addr),
    /// A name we own with no such record.
    NoSuchName,
    Elsewhere,
}

impl Zone {
    /// How `name` (lowercase, no final dot) is answered.
    pub(super) fn decide(&self, name: &str) -> Verdict {
        decide(self.names.as_deref(), &self.cloud, name)
    }
}

/// How `name` (lowercase, no final dot) is answered with a VPC's `names` (`None`: the
/// cloud resolver) and the `cloud`'s names.
fn decide(names: Option<&Names>, cloud: &[CloudName], name: &str) -> Verdict {
    if let Some(ip) = names.and_then(|n| n.get(name)) {
        return Verdict::Address(*ip);
    }
    for c in cloud {
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
