//! Recognising XKS API paths: `{prefix}/kms/xks/v1/health` and
//! `{prefix}/kms/xks/v1/keys/{id}/{metadata|encrypt|decrypt}`.

use xks_api::types::Operation;

const MARK: &str = "/kms/xks/v1/";

/// A path that has the shape of an XKS API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiPath<'a> {
    /// Everything before `/kms/xks/v1` (may be empty).
    pub prefix: &'a str,
    /// The operation.
    pub operation: Operation,
    /// The raw key id segment (for key operations).
    pub key_id: Option<&'a str>,
}

impl<'a> ApiPath<'a> {
    /// Parses `path`; `None` if it is not shaped like an XKS API path.
    pub fn parse(path: &'a str) -> Option<Self> {
        // Key ids contain no '/', so the last occurrence of the mark is the right one.
        let at = path.rfind(MARK)?;
        let prefix = &path[..at];
        let rest = &path[at + MARK.len()..];
        if rest == "health" {
            return Some(Self {
                prefix,
                operation: Operation::Health,
                key_id: None,
            });
        }
        let rest = rest.strip_prefix("keys/")?;
        let (id, op) = rest.split_once('/')?;
        if id.is_empty() {
            return None;
        }
        let operation = match op {
            "metadata" => Operation::GetKeyMetadata,
            "encrypt" => Operation::Encrypt,
            "decrypt" => Operation::Decrypt,
            _ => return None,
        };
        Some(Self {
            prefix,
            operation,
            key_id: Some(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let p = ApiPath::parse("/kms/xks/v1/health").expect("health");
        assert_eq!(
            (p.prefix, p.operation, p.key_id),
            ("", Operation::Health, None)
        );
        let p = ApiPath::parse("/t/1/kms/xks/v1/keys/k.1_-/encrypt").expect("encrypt");
        assert_eq!(
            (p.prefix, p.operation, p.key_id),
            ("/t/1", Operation::Encrypt, Some("k.1_-"))
        );
        for bad in [
            "/",
            "/kms/xks/v1/",
            "/kms/xks/v1/keys//encrypt",
            "/kms/xks/v1/keys/a/sign",
            "/kms/xks/v1/keys/a/b/encrypt",
            "/kms/xks/v1/health/",
            "/kms/xks/v2/health",
        ] {
            assert_eq!(ApiPath::parse(bad), None, "{bad}");
        }
    }
}
