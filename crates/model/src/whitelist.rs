//! Service whitelist (permission) entries: which accounts may connect to a service.

use crate::{Reason, Rejection};

/// How many entries a service whitelist holds at most.
pub const MAX_PERMISSIONS: usize = 500;

/// A parsed whitelist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// `*` or `iam:domain::*`: every account.
    Everyone,
    /// `iam:domain::<32 lowercase hex>`: one account.
    Domain(String),
}

impl Permission {
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let bad = |why: &str| {
            Rejection::new(
                Reason::BadPermission,
                format!("permissions: {raw:?} {why}; use iam:domain::<32-hex account id> or *"),
            )
        };
        if raw == "*" {
            return Ok(Permission::Everyone);
        }
        if raw.starts_with("organizations:orgPath::") {
            return Err(bad("is an organisation path, which is not supported"));
        }
        let Some(id) = raw.strip_prefix("iam:domain::") else {
            return Err(bad("is not a whitelist entry"));
        };
        if id == "*" {
            return Ok(Permission::Everyone);
        }
        if id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Permission::Domain(id.to_owned()))
        } else {
            Err(bad(
                "names an account id that is not 32 lowercase hex characters",
            ))
        }
    }

    /// The canonical stored spelling.
    pub fn canonical(&self) -> String {
        match self {
            Permission::Everyone => "*".to_owned(),
            Permission::Domain(d) => format!("iam:domain::{d}"),
        }
    }

    pub fn allows(&self, domain_id: &str) -> bool {
        match self {
            Permission::Everyone => true,
            Permission::Domain(d) => d == domain_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            Permission::parse(&format!("iam:domain::{id}")).unwrap(),
            Permission::Domain(id.into())
        );
        assert_eq!(Permission::parse("*").unwrap(), Permission::Everyone);
        assert_eq!(
            Permission::parse("iam:domain::*").unwrap(),
            Permission::Everyone
        );
        for bad in [
            "iam:domain::0123",
            "iam:domain::0123456789ABCDEF0123456789abcdef",
            "domain::x",
            "",
            "organizations:orgPath::o-1/r-2",
        ] {
            assert_eq!(
                Permission::parse(bad).unwrap_err().reason,
                Reason::BadPermission,
                "{bad}"
            );
        }
        assert!(Permission::Everyone.allows(id));
        assert!(!Permission::Domain(id.into()).allows("x"));
    }
}
