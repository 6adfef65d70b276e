//! External key ids and XKS URI path rules.

use std::fmt;

use crate::limits::{MAX_KEY_ID_CHARS, MAX_URI_PATH_CHARS};

/// The fixed tail of every XKS URI path: `[/<prefix>]/kms/xks/v1`.
pub const API_PATH_SUFFIX: &str = "/kms/xks/v1";

/// An external key id: 1-128 characters from `A-Z a-z 0-9 - . _`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XksKeyId(String);

/// Why a string is not a valid external key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    /// Empty.
    #[error("key id is empty")]
    Empty,
    /// Longer than 128 characters.
    #[error("key id is {0} characters; at most 128 are allowed")]
    TooLong(usize),
    /// Contains a character outside `A-Z a-z 0-9 - . _`.
    #[error("key id contains a character outside A-Z a-z 0-9 - . _")]
    BadCharacter,
}

impl XksKeyId {
    /// Validates a key id.
    pub fn parse(s: &str) -> Result<Self, KeyIdError> {
        if s.is_empty() {
            return Err(KeyIdError::Empty);
        }
        if s.len() > MAX_KEY_ID_CHARS {
            return Err(KeyIdError::TooLong(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(KeyIdError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for XksKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for XksKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XksKeyId({})", self.0)
    }
}

/// Why a URI path prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// A non-empty prefix must start with `/` and must not end with `/`.
    #[error("a path prefix must be empty or start with '/' and not end with '/'")]
    Shape,
    /// Characters outside `a-z A-Z 0-9 / - _`, or an empty segment.
    #[error("a path prefix may contain only a-z A-Z 0-9 / - _ and no empty segments")]
    BadCharacter,
    /// `prefix + /kms/xks/v1` longer than 128 characters.
    #[error("the path prefix makes the XKS URI path longer than 128 characters")]
    TooLong,
}

/// Validates a key store's URI path prefix (the part before `/kms/xks/v1`, may be empty).
pub fn validate_path_prefix(prefix: &str) -> Result<(), PrefixError> {
    if prefix.is_empty() {
        return Ok(());
    }
    if !prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(PrefixError::Shape);
    }
    let chars_ok = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'));
    if !chars_ok || prefix[1..].split('/').any(str::is_empty) {
        return Err(PrefixError::BadCharacter);
    }
    if prefix.len() + API_PATH_SUFFIX.len() > MAX_URI_PATH_CHARS {
        return Err(PrefixError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(XksKeyId::parse("a").is_ok());
        assert!(XksKeyId::parse("Key-1.2_x").is_ok());
        assert!(XksKeyId::parse(&"k".repeat(128)).is_ok());
        assert_eq!(XksKeyId::parse(""), Err(KeyIdError::Empty));
        assert_eq!(
            XksKeyId::parse(&"k".repeat(129)),
            Err(KeyIdError::TooLong(129))
        );
        for bad in ["a/b", "a b", "ä", "a%20", "a+b"] {
            assert_eq!(XksKeyId::parse(bad), Err(KeyIdError::BadCharacter), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in [
            "",
            "/a",
            "/tenant-1/store_2",
            &format!("/{}", "p".repeat(116)),
        ] {
            assert_eq!(validate_path_prefix(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_path_prefix("a"), Err(PrefixError::Shape));
        assert_eq!(validate_path_prefix("/a/"), Err(PrefixError::Shape));
        assert_eq!(
            validate_path_prefix("/a//b"),
            Err(PrefixError::BadCharacter)
        );
        assert_eq!(validate_path_prefix("/a.b"), Err(PrefixError::BadCharacter));
        assert_eq!(
            validate_path_prefix(&format!("/{}", "p".repeat(117))),
            Err(PrefixError::TooLong)
        );
    }
}
