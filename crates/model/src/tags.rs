//! Resource tags: keys and values with the TMS character rules.

use std::collections::HashSet;

use crate::{Reason, Rejection};

pub const MAX_TAGS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

fn allowed(c: char, extra_slash: bool) -> bool {
    c.is_alphanumeric() || " _.:=+-@".contains(c) || (extra_slash && c == '/')
}

/// Checks one tag: key 1–128 characters, not starting with `_sys_`, no surrounding
/// spaces; value 0–255 characters.
pub fn validate_tag(key: &str, value: &str) -> Result<(), Rejection> {
    let klen = key.chars().count();
    if klen == 0 || klen > 128 {
        return Err(Rejection::new(
            Reason::BadTag,
            format!("tags: key {key:?} must be 1-128 characters"),
        ));
    }
    if key.trim() != key || key.starts_with("_sys_") || !key.chars().all(|c| allowed(c, false)) {
        return Err(Rejection::new(
            Reason::BadTag,
            format!("tags: key {key:?} has characters that are not allowed"),
        ));
    }
    if value.chars().count() > 255 || !value.chars().all(|c| allowed(c, true)) {
        return Err(Rejection::new(
            Reason::BadTag,
            format!("tags: value {value:?} of key {key:?} is too long or has characters that are not allowed"),
        ));
    }
    Ok(())
}

/// Checks a list of tags given at creation: valid, unique keys, at most 20.
pub fn validate_tags(tags: &[Tag]) -> Result<(), Rejection> {
    if tags.len() > MAX_TAGS {
        return Err(Rejection::new(
            Reason::TagLimit,
            format!("tags: at most {MAX_TAGS} tags per resource"),
        ));
    }
    let mut keys = HashSet::new();
    for t in tags {
        validate_tag(&t.key, &t.value)?;
        if !keys.insert(t.key.as_str()) {
            return Err(Rejection::new(
                Reason::DuplicateTagKey,
                format!("tags: key {:?} appears twice", t.key),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(validate_tag("env", "prod").is_ok());
        assert!(validate_tag("环境", "生产").is_ok());
        assert!(validate_tag("k", "").is_ok());
        assert!(validate_tag("", "v").is_err());
        assert!(validate_tag(" k", "v").is_err());
        assert!(validate_tag("_sys_x", "v").is_err());
        assert!(validate_tag("a<b", "v").is_err());
        assert!(validate_tag("k", &"v".repeat(256)).is_err());
        let dup = vec![
            Tag {
                key: "a".into(),
                value: "1".into(),
            },
            Tag {
                key: "a".into(),
                value: "2".into(),
            },
        ];
        assert_eq!(
            validate_tags(&dup).unwrap_err().reason,
            Reason::DuplicateTagKey
        );
    }
}
