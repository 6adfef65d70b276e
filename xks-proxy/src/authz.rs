//! Secondary authorization: allow rules over a request's `requestMetadata`.
//!
//! The XKS Proxy API lets a proxy apply optional secondary authorization using the
//! `requestMetadata` KMS sends. This module is the policy: a list of allow rules, loaded from
//! its own TOML file (separate from the proxy config so it can be reloaded on its own and
//! kept by a security team). The caller never applies it to GetHealthStatus, answers a
//! denial with 403 `AccessDeniedException`, and logs the [`Decision::Denied`] details.
//!
//! # File format
//!
//! ```toml
//! # Every request except health must match at least one rule; no rule matches → denied.
//! [[allow]]
//! name = "payments-app"                         # required, unique, used in logs
//! key_stores = ["payments"]                     # optional: key store names; absent = any
//! key_ids = ["payments-*", "legacy-key"]        # optional: external key ids; absent = any
//! operations = ["Encrypt", "Decrypt", "GenerateDataKey*"]  # optional: kmsOperation values; absent = any
//! principals = ["arn:aws:iam::111122223333:role/app-*", "arn:aws:iam::111122223333:root"]  # optional: awsPrincipalArn; absent = any
//! source_vpcs = ["vpc-0abc*"]                   # optional: awsSourceVpc; when present, the request must carry a matching awsSourceVpc
//! source_vpces = ["vpce-0123456789abcdef0"]     # optional: awsSourceVpce; likewise
//! ```
//!
//! - A rule matches when every field it has matches: fields are ANDed, the patterns of one
//!   field are ORed. Rules are tried in file order; the first match allows the request.
//! - When a rule has `principals`, `source_vpcs` or `source_vpces` and the request does not
//!   carry that metadata field, the rule does not match.
//! - Patterns: `*` matches any run of characters (including none, `/` and `:`), `?` exactly
//!   one character; everything else is literal and case-sensitive.
//! - Errors (all reported together, naming the file and the rule): bad TOML, unknown keys,
//!   no rules, a missing, empty or duplicate `name`, a field given as an empty list (it would
//!   match nothing; omit the field to allow any value) and an empty pattern.
//!
//! Patterns are compiled at load. Evaluation allocates nothing to find a matching rule
//! ([`Policy::matching_rule`]); [`Policy::evaluate`] allocates the rule name when allowing
//! and the explanation when denying. Matching is iterative, O(pattern × value) at worst.

use aws_wildcard::Wildcard;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use xks_api::types::RequestMetadata;

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read authorization policy {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("authorization policy {path} is not valid TOML: {message}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One or more rules are invalid.
    #[error("authorization policy {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// What a rule is checked against: one request to one key store.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The name of the key store the request is for.
    pub key_store: &'a str,
    /// The external key id from the URI path.
    pub key_id: &'a str,
    /// The request's `requestMetadata`.
    pub metadata: &'a RequestMetadata,
}

/// The outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A rule matched.
    Allowed {
        /// The name of the first matching rule.
        rule: String,
    },
    /// No rule matched: answer 403 `AccessDeniedException` and log these.
    Denied {
        /// The names of the rules evaluated, in file order.
        consulted: Vec<String>,
        /// One line per consulted rule: the first field that did not match, and why.
        reasons: Vec<String>,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// A loaded, compiled authorization policy; immutable (reload by building a new one).
#[derive(Debug)]
pub struct Policy {
    path: PathBuf,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    /// The fields the rule has, in [`Field::ALL`] order.
    conditions: Vec<Condition>,
}

#[derive(Debug)]
struct Condition {
    field: Field,
    patterns: Vec<Wildcard>,
}

#[derive(Debug, Clone, Copy)]
enum Field {
    KeyStore,
    KeyId,
    Operation,
    Principal,
    SourceVpc,
    SourceVpce,
}

impl Field {
    /// Also the order in which a rule's fields are checked (and so reported).
    const ALL: [Self; 6] = [
        Self::KeyStore,
        Self::KeyId,
        Self::Operation,
        Self::Principal,
        Self::SourceVpc,
        Self::SourceVpce,
    ];

    /// The key in the policy file.
    fn key(self) -> &'static str {
        match self {
            Self::KeyStore => "key_stores",
            Self::KeyId => "key_ids",
            Self::Operation => "operations",
            Self::Principal => "principals",
            Self::SourceVpc => "source_vpcs",
            Self::SourceVpce => "source_vpces",
        }
    }

    /// The name used in denial reasons.
    fn label(self) -> &'static str {
        match self {
            Self::KeyStore => "key store",
            Self::KeyId => "key id",
            Self::Operation => "operation",
            Self::Principal => "principal",
            Self::SourceVpc => "source VPC",
            Self::SourceVpce => "source VPCE",
        }
    }

    /// The request's value; `None` when an optional metadata field is absent.
    fn value<'a>(self, req: &AccessRequest<'a>) -> Option<&'a str> {
        let m = req.metadata;
        match self {
            Self::KeyStore => Some(req.key_store),
            Self::KeyId => Some(req.key_id),
            Self::Operation => Some(&m.kms_operation),
            Self::Principal => m.aws_principal_arn.as_deref(),
            Self::SourceVpc => m.aws_source_vpc.as_deref(),
            Self::SourceVpce => m.aws_source_vpce.as_deref(),
        }
    }

    /// The metadata field's wire name, for "the request has no ..." reasons.
    fn wire_name(self) -> &'static str {
        match self {
            Self::KeyStore => "key store",
            Self::KeyId => "key id",
            Self::Operation => "kmsOperation",
            Self::Principal => "awsPrincipalArn",
            Self::SourceVpc => "awsSourceVpc",
            Self::SourceVpce => "awsSourceVpce",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    key_stores: Option<Vec<String>>,
    key_ids: Option<Vec<String>>,
    operations: Option<Vec<String>>,
    principals: Option<Vec<String>>,
    source_vpcs: Option<Vec<String>>,
    source_vpces: Option<Vec<String>>,
}

impl RawRule {
    fn take(&mut self, field: Field) -> Option<Vec<String>> {
        match field {
            Field::KeyStore => self.key_stores.take(),
            Field::KeyId => self.key_ids.take(),
            Field::Operation => self.operations.take(),
            Field::Principal => self.principals.take(),
            Field::SourceVpc => self.source_vpcs.take(),
            Field::SourceVpce => self.source_vpces.take(),
        }
    }
}

impl Policy {
    /// Reads and compiles a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Compiles policy text; `path` names the file in errors and logs.
    pub fn from_toml(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        for key in table.keys().filter(|k| *k != "allow") {
            problems.push(format!(
                "unknown top-level key `{key}` (expected only [[allow]] rules)"
            ));
        }
        let entries = match table.get("allow") {
            Some(toml::Value::Array(entries)) => entries.as_slice(),
            Some(_) => {
                problems.push("`allow` must be an array of tables, written [[allow]]".to_owned());
                &[]
            }
            None => &[],
        };
        if entries.is_empty() {
            problems.push("no [[allow]] rules: every request would be denied".to_owned());
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let label = match entry.get("name").and_then(toml::Value::as_str) {
                Some(name) => format!("rule #{} {name:?}", i + 1),
                None => format!("rule #{}", i + 1),
            };
            if !entry.is_table() {
                problems.push(format!("{label}: must be a table, written [[allow]]"));
                continue;
            }
            match entry.clone().try_into::<RawRule>() {
                Ok(raw) => rules.extend(compile_rule(raw, &label, &mut names, &mut problems)),
                Err(e) => problems.push(format!("{label}: {}", e.message())),
            }
        }
        if problems.is_empty() {
            Ok(Policy {
                path: path.to_owned(),
                rules,
            })
        } else {
            Err(PolicyError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// The file the policy came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rule names, in file order (for logs at load time).
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    /// The name of the first rule that allows `req`, without allocating; `None` = denied.
    pub fn matching_rule(&self, req: &AccessRequest<'_>) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.first_mismatch(req).is_none())
            .map(|r| r.name.as_str())
    }

    /// Decides on `req`; a denial explains every rule consulted.
    pub fn evaluate(&self, req: &AccessRequest<'_>) -> Decision {
        if let Some(rule) = self.matching_rule(req) {
            return Decision::Allowed {
                rule: rule.to_owned(),
            };
        }
        // Denied, so every rule was consulted; explain each (the rare, allocating path).
        let consulted = self.rules.iter().map(|r| r.name.clone()).collect();
        let reasons = self.rules.iter().map(|r| r.reason(req)).collect();
        Decision::Denied { consulted, reasons }
    }
}

fn compile_rule(
    mut raw: RawRule,
    label: &str,
    names: &mut HashSet<String>,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let before = problems.len();
    if raw.name.trim().is_empty() {
        problems.push(format!("{label}: `name` must not be empty"));
    } else if !names.insert(raw.name.clone()) {
        problems.push(format!(
            "{label}: duplicate rule name (names must be unique)"
        ));
    }
    let mut conditions = Vec::new();
    for field in Field::ALL {
        let Some(values) = raw.take(field) else {
            continue;
        };
        let key = field.key();
        if values.is_empty() {
            problems.push(format!(
                "{label}: `{key}` is an empty list, which would match nothing \
                 (omit `{key}` to allow any {})",
                field.label()
            ));
        }
        if values.iter().any(String::is_empty) {
            problems.push(format!("{label}: `{key}` contains an empty pattern"));
        }
        let patterns = values.iter().map(|v| Wildcard::compile(v)).collect();
        conditions.push(Condition { field, patterns });
    }
    (problems.len() == before).then_some(Rule {
        name: raw.name,
        conditions,
    })
}

impl Rule {
    fn first_mismatch(&self, req: &AccessRequest<'_>) -> Option<&Condition> {
        self.conditions.iter().find(|c| match c.field.value(req) {
            Some(value) => !c.patterns.iter().any(|p| p.matches(value)),
            None => true,
        })
    }

    /// One line for a denial log; only called when this rule did not match.
    fn reason(&self, req: &AccessRequest<'_>) -> String {
        let mut out = format!("{}: ", self.name);
        let Some(c) = self.first_mismatch(req) else {
            out.push_str("matched");
            return out;
        };
        match c.field.value(req) {
            Some(value) => {
                out.push_str(c.field.label());
                out.push(' ');
                push_sanitized(&mut out, value);
                out.push_str(" matches none of [");
            }
            None => {
                let _ = write!(
                    out,
                    "request has no {} but the rule requires one of [",
                    c.field.wire_name()
                );
            }
        }
        for (i, p) in c.patterns.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(p.as_str());
        }
        out.push(']');
        out
    }
}

/// Appends a request value for a log line: control characters escaped, long values cut.
fn push_sanitized(out: &mut String, value: &str) {
    const MAX_CHARS: usize = 256;
    for (i, ch) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        if ch.is_control() {
            let _ = write!(out, "{}", ch.escape_debug());
        } else {
            out.push(ch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# Every request except health must match at least one rule; no rule matches → denied.
[[allow]]
name = "payments-app"                         # required, unique, used in logs
key_stores = ["payments"]                     # optional: key store names; absent = any
key_ids = ["payments-*", "legacy-key"]        # optional: external key ids; absent = any
operations = ["Encrypt", "Decrypt", "GenerateDataKey*"]  # optional: kmsOperation values; absent = any
principals = ["arn:aws:iam::111122223333:role/app-*", "arn:aws:iam::111122223333:root"]  # optional: awsPrincipalArn; absent = any
source_vpcs = ["vpc-0abc*"]                   # optional: awsSourceVpc; when present, the request must carry a matching awsSourceVpc
source_vpces = ["vpce-0123456789abcdef0"]     # optional: awsSourceVpce; likewise
"#;

    fn policy(text: &str) -> Policy {
        match Policy::from_toml(text, Path::new("/etc/xks/authz.toml")) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        match Policy::from_toml(text, Path::new("/etc/xks/authz.toml")) {
            Err(PolicyError::Invalid { path, problems }) => {
                assert_eq!(path, Path::new("/etc/xks/authz.toml"));
                problems
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Metadata that the example rule allows.
    fn meta() -> RequestMetadata {
        RequestMetadata {
            kms_request_id: "4112f4d6-db54-4af4-ae30-c55a22a8dfae".into(),
            kms_operation: "Encrypt".into(),
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/app-web".into()),
            aws_source_vpc: Some("vpc-0abc1234".into()),
            aws_source_vpce: Some("vpce-0123456789abcdef0".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            kms_via_service: None,
        }
    }

    fn decide(p: &Policy, store: &str, key: &str, m: &RequestMetadata) -> Decision {
        let req = AccessRequest {
            key_store: store,
            key_id: key,
            metadata: m,
        };
        let d = p.evaluate(&req);
        assert_eq!(d.is_allowed(), p.matching_rule(&req).is_some());
        d
    }

    fn allowed(p: &Policy, m: &RequestMetadata) -> bool {
        decide(p, "payments", "payments-1", m).is_allowed()
    }

    #[test]
    fn example_parses_and_allows() {
        let p = policy(EXAMPLE);
        assert_eq!(p.rule_names(), ["payments-app"]);
        assert_eq!(p.path(), Path::new("/etc/xks/authz.toml"));
        assert_eq!(
            decide(&p, "payments", "legacy-key", &meta()),
            Decision::Allowed {
                rule: "payments-app".into()
            }
        );
    }

    #[test]
    fn key_store_field() {
        let p = policy(EXAMPLE);
        assert!(decide(&p, "payments", "payments-1", &meta()).is_allowed());
        assert!(!decide(&p, "payments2", "payments-1", &meta()).is_allowed());
        assert!(!decide(&p, "Payments", "payments-1", &meta()).is_allowed());
    }

    #[test]
    fn key_id_field() {
        let p = policy(EXAMPLE);
        assert!(decide(&p, "payments", "payments-", &meta()).is_allowed());
        assert!(decide(&p, "payments", "legacy-key", &meta()).is_allowed());
        assert!(!decide(&p, "payments", "legacy-key2", &meta()).is_allowed());
        assert!(!decide(&p, "payments", "other", &meta()).is_allowed());
    }

    #[test]
    fn operation_field() {
        let p = policy(EXAMPLE);
        for op in [
            "Encrypt",
            "Decrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
        ] {
            let m = RequestMetadata {
                kms_operation: op.into(),
                ..meta()
            };
            assert!(allowed(&p, &m), "{op}");
        }
        for op in ["DescribeKey", "ReEncrypt", "encrypt", ""] {
            let m = RequestMetadata {
                kms_operation: op.into(),
                ..meta()
            };
            assert!(!allowed(&p, &m), "{op}");
        }
    }

    #[test]
    fn principal_field() {
        let p = policy(EXAMPLE);
        let with = |arn: Option<&str>| RequestMetadata {
            aws_principal_arn: arn.map(Into::into),
            ..meta()
        };
        assert!(allowed(&p, &with(Some("arn:aws:iam::111122223333:root"))));
        assert!(allowed(
            &p,
            &with(Some("arn:aws:iam::111122223333:role/app-"))
        ));
        assert!(allowed(
            &p,
            &with(Some("arn:aws:iam::111122223333:role/app-x/y:z"))
        ));
        assert!(!allowed(
            &p,
            &with(Some("arn:aws:iam::111122223333:role/other"))
        ));
        assert!(!allowed(&p, &with(Some("arn:aws:iam::444455556666:root"))));
        assert!(!allowed(&p, &with(None)));
    }

    #[test]
    fn source_vpc_field() {
        let p = policy(EXAMPLE);
        let with = |vpc: Option<&str>| RequestMetadata {
            aws_source_vpc: vpc.map(Into::into),
            ..meta()
        };
        assert!(allowed(&p, &with(Some("vpc-0abc"))));
        assert!(!allowed(&p, &with(Some("vpc-0abd1234"))));
        // The rule requires a VPC; a request without one is denied.
        let m = with(None);
        let Decision::Denied { reasons, .. } = decide(&p, "payments", "payments-1", &m) else {
            panic!("allowed without a source VPC");
        };
        assert_eq!(
            reasons,
            ["payments-app: request has no awsSourceVpc but the rule requires one of [vpc-0abc*]"]
        );
    }

    #[test]
    fn source_vpce_field() {
        let p = policy(EXAMPLE);
        let with = |vpce: Option<&str>| RequestMetadata {
            aws_source_vpce: vpce.map(Into::into),
            ..meta()
        };
        assert!(allowed(&p, &with(Some("vpce-0123456789abcdef0"))));
        assert!(!allowed(&p, &with(Some("vpce-0123456789abcdef1"))));
        assert!(!allowed(&p, &with(None)));
    }

    #[test]
    fn absent_fields_allow_anything() {
        let p = policy("[[allow]]\nname = \"any\"\n");
        let m = RequestMetadata {
            aws_principal_arn: None,
            aws_source_vpc: None,
            aws_source_vpce: None,
            ..meta()
        };
        assert!(decide(&p, "whatever", "k", &m).is_allowed());
    }

    #[test]
    fn second_rule_matches() {
        let p = policy(
            r#"
            [[allow]]
            name = "first"
            key_stores = ["other"]
            [[allow]]
            name = "second"
            principals = ["arn:aws:iam::111122223333:*"]
            "#,
        );
        assert_eq!(p.rule_names(), ["first", "second"]);
        assert_eq!(
            decide(&p, "payments", "k", &meta()),
            Decision::Allowed {
                rule: "second".into()
            }
        );
    }

    #[test]
    fn denial_lists_every_consulted_rule_and_reason() {
        let p = policy(
            r#"
            [[allow]]
            name = "payments-app"
            principals = ["arn:aws:iam::111122223333:role/app-*"]
            [[allow]]
            name = "ops"
            key_stores = ["payments"]
            operations = ["Decrypt", "GetKeyMetadata"]
            [[allow]]
            name = "by-key"
            key_ids = ["a-?", "b-*"]
            "#,
        );
        let m = RequestMetadata {
            aws_principal_arn: Some("arn:aws:iam::1:user/x".into()),
            ..meta()
        };
        assert_eq!(
            decide(&p, "payments", "c-1", &m),
            Decision::Denied {
                consulted: vec!["payments-app".into(), "ops".into(), "by-key".into()],
                reasons: vec![
                    "payments-app: principal arn:aws:iam::1:user/x matches none of \
                     [arn:aws:iam::111122223333:role/app-*]"
                        .into(),
                    "ops: operation Encrypt matches none of [Decrypt, GetKeyMetadata]".into(),
                    "by-key: key id c-1 matches none of [a-?, b-*]".into(),
                ],
            }
        );
    }

    #[test]
    fn reasons_escape_control_characters() {
        let p = policy("[[allow]]\nname = \"r\"\nkey_ids = [\"k\"]\n");
        let Decision::Denied { reasons, .. } = decide(&p, "s", "x\ny\u{1b}", &meta()) else {
            panic!("allowed");
        };
        assert_eq!(reasons, ["r: key id x\\ny\\u{1b} matches none of [k]"]);
    }

    #[test]
    fn config_errors_are_reported_together() {
        let text = r#"
            [[allow]]
            name = "a"
            principal = ["typo"]
            [[allow]]
            name = "b"
            key_ids = []
            source_vpcs = [""]
            [[allow]]
            name = "c"
            [[allow]]
            name = "c"
            [[allow]]
            name = ""
            [[allow]]
            operations = ["Encrypt"]
        "#;
        let problems = problems(text);
        let all = problems.join("\n");
        assert_eq!(problems.len(), 6, "{all}");
        assert!(
            all.contains("rule #1 \"a\": unknown field `principal`"),
            "{all}"
        );
        assert!(
            all.contains("rule #2 \"b\": `key_ids` is an empty list, which would match nothing"),
            "{all}"
        );
        assert!(
            all.contains("rule #2 \"b\": `source_vpcs` contains an empty pattern"),
            "{all}"
        );
        assert!(all.contains("rule #4 \"c\": duplicate rule name"), "{all}");
        assert!(
            all.contains("rule #5 \"\": `name` must not be empty"),
            "{all}"
        );
        assert!(all.contains("rule #6: missing field `name`"), "{all}");
        let err =
            Policy::from_toml(text, Path::new("/etc/xks/authz.toml")).expect_err("invalid policy");
        let shown = err.to_string();
        assert!(
            shown.starts_with("authorization policy /etc/xks/authz.toml has 6 problem(s):"),
            "{shown}"
        );
    }

    #[test]
    fn no_rules_and_unknown_top_level_keys() {
        assert_eq!(
            problems(""),
            ["no [[allow]] rules: every request would be denied"]
        );
        let p = problems("deny = 1\nallow = []\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("unknown top-level key `deny`"));
        assert!(p[1].contains("no [[allow]] rules"));
        let p = problems("allow = 3\n");
        assert!(p[0].contains("array of tables"), "{p:?}");
        let p = problems("allow = [1]\n");
        assert!(p[0].contains("rule #1: must be a table"), "{p:?}");
    }

    #[test]
    fn bad_toml_is_a_parse_error() {
        let err =
            Policy::from_toml("[[allow]\nname = ", Path::new("p.toml")).expect_err("bad toml");
        assert!(matches!(err, PolicyError::Parse { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("authorization policy p.toml is not valid TOML")
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authz.toml");
        std::fs::write(&path, EXAMPLE).expect("write");
        let p = Policy::load(&path).expect("load");
        assert_eq!(p.rule_names(), ["payments-app"]);
        let err = Policy::load(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(matches!(err, PolicyError::Read { .. }), "{err:?}");
    }
}
