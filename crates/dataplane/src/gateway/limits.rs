//! Admission of a new session: the endpoint's source whitelist, its connection limit, and
//! the node's descriptor budget. Counters only; no I/O.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;

/// An endpoint whitelist of addresses and CIDRs; `None` admits everyone.
#[derive(Debug, Clone, Default)]
pub struct Whitelist(Option<Vec<Ipv4Net>>);

impl Whitelist {
    pub fn new(entries: Option<&[String]>) -> Whitelist {
        Whitelist(entries.map(|list| {
            list.iter()
                .filter_map(|e| {
                    e.parse::<Ipv4Net>()
                        .ok()
                        .or_else(|| e.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
                })
                .collect()
        }))
    }

    pub fn allows(&self, ip: Ipv4Addr) -> bool {
        self.0
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// A counter with a ceiling: taking a slot fails once `max` are taken.
#[derive(Debug, Default)]
pub struct Slots {
    taken: AtomicU64,
}

impl Slots {
    pub fn try_take(&self, n: u64, max: u64) -> bool {
        let mut cur = self.taken.load(Ordering::Relaxed);
        loop {
            if cur + n > max {
                return false;
            }
            match self.taken.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    pub fn give(&self, n: u64) {
        self.taken.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

/// Descriptors the gateway may spend on sessions: the hard `nofile` limit (raised to as
/// the soft limit) less a reserve for listeners, the store and the API.
pub fn descriptor_budget() -> u64 {
    nofile_limit().saturating_sub(1024).max(64)
}

/// The descriptors this process may hold: the hard `nofile` limit, to which the soft one
/// is raised (the soft one if that fails).
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1088,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist() {
        let any = Whitelist::new(None);
        assert!(any.allows(Ipv4Addr::new(1, 2, 3, 4)));
        let list = vec!["10.0.0.0/24".to_string(), "192.168.1.7".to_string()];
        let w = Whitelist::new(Some(&list));
        assert!(w.allows(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(w.allows(Ipv4Addr::new(192, 168, 1, 7)));
        assert!(!w.allows(Ipv4Addr::new(192, 168, 1, 8)));
        let empty = Whitelist::new(Some(&[]));
        assert!(!empty.allows(Ipv4Addr::new(10, 0, 0, 9)));
    }

    #[test]
    fn slots() {
        let s = Slots::default();
        assert!(s.try_take(2, 3));
        assert!(!s.try_take(2, 3));
        assert!(s.try_take(1, 3));
        s.give(3);
        assert_eq!(s.taken(), 0);
    }
}
