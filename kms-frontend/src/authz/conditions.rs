//! The `Condition` element: operators, `…IfExists`, `ForAnyValue:` / `ForAllValues:`, and
//! their evaluation against the request's condition keys.
//!
//! Semantics (IAM's, `../shared/reference/kms-authz.md` §4): the values of one operator and
//! key are OR-ed, keys and operators AND-ed; a negated operator needs the context value to
//! match none of the values. An absent key makes positive operators false and negated ones
//! true; `…IfExists` makes any operator true; `ForAllValues:` is true on an absent or empty
//! set, `ForAnyValue:` false.

use aws_wildcard::Wildcard;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The condition keys of a request: lower-cased key name → its values (one for
/// single-valued keys). Absent keys are not in the map.
pub type ContextKeys = BTreeMap<String, Vec<String>>;

/// The comparison an operator makes, before negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Ordering),
    Date(Ordering),
    Bool,
    Binary,
    Ip,
    Arn,
    Null,
    /// An operator IAM does not have: never holds (key policies stored before the
    /// evaluator existed may hold one; identity policies with one are config errors).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordering {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    None,
    AnyValue,
    AllValues,
}

/// One operator applied to one key with its values.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The operator as written.
    operator: String,
    compare: Compare,
    negated: bool,
    if_exists: bool,
    set: SetQualifier,
    /// Lower-cased (condition key names are case-insensitive).
    key: String,
    values: Vec<String>,
}

fn operator(name: &str) -> Option<(Compare, bool)> {
    use Compare as C;
    use Ordering as O;
    let ordered = |rest: &str| -> Option<(Ordering, bool)> {
        Some(match rest {
            "Equals" => (O::Equals, false),
            "NotEquals" => (O::Equals, true),
            "LessThan" => (O::LessThan, false),
            "LessThanEquals" => (O::LessThanEquals, false),
            "GreaterThan" => (O::GreaterThan, false),
            "GreaterThanEquals" => (O::GreaterThanEquals, false),
            _ => return None,
        })
    };
    Some(match name {
        "StringEquals" => (C::StringEquals, false),
        "StringNotEquals" => (C::StringEquals, true),
        "StringEqualsIgnoreCase" => (C::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (C::StringEqualsIgnoreCase, true),
        "StringLike" => (C::StringLike, false),
        "StringNotLike" => (C::StringLike, true),
        "ArnEquals" | "ArnLike" => (C::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (C::Arn, true),
        "Bool" => (C::Bool, false),
        "BinaryEquals" => (C::Binary, false),
        "IpAddress" => (C::Ip, false),
        "NotIpAddress" => (C::Ip, true),
        "Null" => (C::Null, false),
        _ => {
            if let Some(rest) = name.strip_prefix("Numeric") {
                let (o, n) = ordered(rest)?;
                (C::Numeric(o), n)
            } else if let Some(rest) = name.strip_prefix("Date") {
                let (o, n) = ordered(rest)?;
                (C::Date(o), n)
            } else {
                return None;
            }
        }
    })
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Condition {
    /// Parses a `Condition` block: `{ "<operator>": { "<key>": value or [values] } }`.
    pub fn parse_block(block: &Value) -> Result<Vec<Self>, String> {
        let ops = block
            .as_object()
            .ok_or_else(|| "Condition must be an object".to_owned())?;
        let mut out = Vec::new();
        for (name, keys) in ops {
            let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
                (SetQualifier::AnyValue, r)
            } else if let Some(r) = name.strip_prefix("ForAllValues:") {
                (SetQualifier::AllValues, r)
            } else {
                (SetQualifier::None, name.as_str())
            };
            let (base, if_exists) = match rest.strip_suffix("IfExists") {
                Some(b) => (b, true),
                None => (rest, false),
            };
            let (compare, negated) = match operator(base) {
                // There is no NullIfExists.
                Some((Compare::Null, _)) if if_exists => (Compare::Unknown, false),
                Some(op) => op,
                None => (Compare::Unknown, false),
            };
            let keys = keys
                .as_object()
                .ok_or_else(|| format!("{name} must map condition keys to values"))?;
            for (key, values) in keys {
                let values = match values {
                    Value::Array(items) => items.iter().map(value_text).collect::<Option<_>>(),
                    one => value_text(one).map(|v| vec![v]),
                }
                .ok_or_else(|| {
                    format!("{name} {key}: values must be strings, numbers or booleans")
                })?;
                out.push(Self {
                    operator: name.clone(),
                    compare,
                    negated,
                    if_exists,
                    set,
                    key: key.to_ascii_lowercase(),
                    values,
                });
            }
        }
        Ok(out)
    }

    /// The condition key, lower-cased.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator's name when IAM has no such operator.
    pub fn unknown_operator(&self) -> Option<&str> {
        (self.compare == Compare::Unknown).then_some(self.operator.as_str())
    }

    /// Whether the condition holds for the request's keys.
    pub fn holds(&self, keys: &ContextKeys) -> bool {
        if self.compare == Compare::Unknown {
            return false;
        }
        let present = keys.get(&self.key).filter(|v| !v.is_empty());
        if self.compare == Compare::Null {
            // "true": the key must be absent; "false": present.
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            let want_present = self.values.iter().any(|v| v.eq_ignore_ascii_case("false"));
            return (want_absent && present.is_none()) || (want_present && present.is_some());
        }
        let Some(context) = present else {
            return self.if_exists
                || match self.set {
                    SetQualifier::AllValues => true,
                    SetQualifier::AnyValue => false,
                    SetQualifier::None => self.negated,
                };
        };
        // One context value against the operator: positive = matches some policy value,
        // negated = matches none.
        let one = |c: &String| self.values.iter().any(|p| self.compare_one(c, p)) != self.negated;
        match self.set {
            SetQualifier::AllValues => context.iter().all(one),
            SetQualifier::AnyValue => context.iter().any(one),
            SetQualifier::None if self.negated => context.iter().all(one),
            SetQualifier::None => context.iter().any(one),
        }
    }

    fn compare_one(&self, context: &str, policy: &str) -> bool {
        match self.compare {
            Compare::StringEquals | Compare::Binary => context == policy,
            Compare::StringEqualsIgnoreCase => context.eq_ignore_ascii_case(policy),
            Compare::StringLike => Wildcard::compile(policy).matches(context),
            Compare::Arn => arn_like(policy, context),
            Compare::Bool => context.eq_ignore_ascii_case(policy),
            Compare::Numeric(o) => match (context.parse::<f64>(), policy.parse::<f64>()) {
                (Ok(c), Ok(p)) => ordered(o, c.partial_cmp(&p)),
                _ => false,
            },
            Compare::Date(o) => match (date(context), date(policy)) {
                (Some(c), Some(p)) => ordered(o, Some(c.cmp(&p))),
                _ => false,
            },
            Compare::Ip => ip_in(context, policy),
            Compare::Null | Compare::Unknown => false,
        }
    }
}

fn ordered(o: Ordering, c: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering as S;
    let Some(c) = c else { return false };
    match o {
        Ordering::Equals => c == S::Equal,
        Ordering::LessThan => c == S::Less,
        Ordering::LessThanEquals => c != S::Greater,
        Ordering::GreaterThan => c == S::Greater,
        Ordering::GreaterThanEquals => c != S::Less,
    }
}

/// A date as Unix seconds: RFC 3339 (`2026-01-01T00:00:00Z`) or epoch seconds.
fn date(s: &str) -> Option<i128> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some(i128::from(secs) * 1_000_000_000);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

/// ARN matching: the six `:`-separated parts compared one by one, each with `*`/`?`.
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6
        && a.len() == 6
        && p.iter()
            .zip(&a)
            .all(|(p, a)| Wildcard::compile(p).matches(a))
}

/// Whether address `ip` lies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or one address).
fn ip_in(ip: &str, cidr: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let (net, bits) = match cidr.split_once('/') {
        Some((n, b)) => match (n.parse::<IpAddr>(), b.parse::<u32>()) {
            (Ok(n), Ok(b)) => (n, b),
            _ => return false,
        },
        None => match cidr.parse::<IpAddr>() {
            Ok(n) => (n, if n.is_ipv4() { 32 } else { 128 }),
            Err(_) => return false,
        },
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
