//! Service names and descriptions: the user guide's naming rules.

use crate::{Reason, Rejection};

/// A validated short service name: at most 16 of `[A-Za-z0-9_-]`, possibly empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn validate_service_name(raw: &str) -> Result<ServiceName, Rejection> {
    if raw.len() > 16 {
        return Err(Rejection::new(
            Reason::BadServiceName,
            format!(
                "service_name: at most 16 characters, got {}",
                raw.chars().count()
            ),
        ));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Rejection::new(
            Reason::BadServiceName,
            format!(
                "service_name: character {c:?} is not allowed (only letters, digits, '_' and '-')"
            ),
        ));
    }
    Ok(ServiceName(raw.to_owned()))
}

/// The stored name: `{region}.{name}.{id}`, or `{region}.{id}` without a short name.
pub fn full_service_name(region: &str, name: &ServiceName, id: &str) -> String {
    if name.0.is_empty() {
        format!("{region}.{id}")
    } else {
        format!("{region}.{}.{id}", name.0)
    }
}

/// Descriptions: at most 512 characters and no `<` or `>`.
pub fn validate_description(field: &str, raw: &str) -> Result<(), Rejection> {
    if raw.chars().count() > 512 {
        return Err(Rejection::new(
            Reason::BadDescription,
            format!("{field}: at most 512 characters"),
        ));
    }
    if raw.contains('<') || raw.contains('>') {
        return Err(Rejection::new(
            Reason::BadDescription,
            format!("{field}: must not contain '<' or '>'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["", "web", "a-b_C9", "abcdefghijklmnop"] {
            assert!(validate_service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["abcdefghijklmnopq", "a.b", "a b", "名字", "x/y"] {
            assert_eq!(
                validate_service_name(bad).unwrap_err().reason,
                Reason::BadServiceName,
                "{bad}"
            );
        }
        let n = validate_service_name("web").unwrap();
        assert_eq!(full_service_name("r1", &n, "id"), "r1.web.id");
        let e = validate_service_name("").unwrap();
        assert_eq!(full_service_name("r1", &e, "id"), "r1.id");
    }

    #[test]
    fn descriptions() {
        assert!(validate_description("d", "plain text").is_ok());
        assert!(validate_description("d", "<script>").is_err());
        assert!(validate_description("d", "a > b").is_err());
        assert!(validate_description("d", &"x".repeat(513)).is_err());
    }
}
