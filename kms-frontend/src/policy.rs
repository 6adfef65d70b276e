//! Key policies: validation for `CreateKey` / `PutKeyPolicy`, the policy lockout safety
//! check, and the default key policy.
//!
//! # Order of checks in [`validate`]
//!
//! 1. Size: the UTF-8 byte length must not exceed [`MAX_POLICY_BYTES`] (the documented
//!    32 KB quota) → [`PolicyError::TooLarge`] (LimitExceededException).
//! 2. Characters: every character must match the model pattern
//!    `[\u0009\u000A\u000D\u0020-\u00FF]+` (so the empty string fails too)
//!    → [`PolicyError::BadCharacters`] (ValidationException, formatted by the caller).
//! 3. Grammar of the IAM policy document (JSON, then elements and their shapes; duplicate
//!    JSON object keys are rejected rather than silently resolved) → [`PolicyError::Malformed`].
//!    The whole document is checked before any principal is looked at.
//! 4. Principals: every `AWS` and `Service` principal of every `Principal` and `NotPrincipal`
//!    must be valid → [`PolicyError::InvalidPrincipals`] listing all invalid ones.
//! 5. Unless bypassed, the lockout safety check → [`PolicyError::Lockout`].
//!
//! # Choices where the AWS documentation is silent
//!
//! - Element names and `Effect` values are case-sensitive (`"Allow"`, not `"allow"`).
//! - Every statement needs exactly one of `Principal` / `NotPrincipal` (the CreateKey page:
//!   "Each statement in the key policy must contain one or more principals"). A statement
//!   without `Action`/`NotAction` or without `Resource`/`NotResource` is accepted (the
//!   model's `Policy` text: such statements are accepted but ineffective).
//! - Empty lists (`"Action": []`, `{"AWS": []}`, `"Statement": []`) are malformed.
//! - Actions must be `"*"` or `<vendor>:<action>` (one colon), like IAM.
//! - `Federated` and `CanonicalUser` principals are only checked for being non-empty
//!   strings: this installation has no identity providers or canonical users to look up.
//!   `Service` principals must look like a DNS name (`kms.amazonaws.com`).
//! - An ARN principal in another partition than the context's is invalid, even a root.
//!
//! # The lockout check
//!
//! The policy must let the caller call `kms:PutKeyPolicy` later. It passes when some
//! statement *grants* that action to the caller and no statement *denies* it:
//!
//! - The caller is covered by a principal list when it holds `"*"` (or is `"Principal": "*"`),
//!   the caller's exact ARN, the account root `arn:<partition>:iam::<account>:root`, or the
//!   bare account id. The caller's account is [`PolicyContext::account_id`] (CreateKey and
//!   PutKeyPolicy are not cross-account). An IAM role ARN does not cover one of its
//!   `sts::…:assumed-role/…` sessions (exact ARNs only; may report a lockout that AWS would
//!   not, never the reverse).
//! - Actions match case-insensitively with `*` and `?` wildcards (`kms:*`, `kms:Put*`, `*`).
//! - An `Allow` grants when its `Principal` covers the caller, its `Action` covers
//!   `kms:PutKeyPolicy` (or it has a `NotAction` that does not cover it), and it has a
//!   `Resource` or `NotResource` (a statement without one is ineffective). Resource values
//!   are not matched: in a key policy they refer to the key itself.
//! - An `Allow` with a `Condition` still grants: AWS evaluates conditions at request time
//!   and this check cannot know the future request context.
//! - An `Allow` with `NotPrincipal` never grants (conservative: "everyone except …" is not
//!   evaluated).
//! - A `Deny` overrides everything when its actions cover `kms:PutKeyPolicy` (as above) and
//!   its principal covers the caller; its `Condition`, `Resource` and `NotResource` are
//!   ignored (conservative). A `Deny` with `NotPrincipal` applies to the caller unless the
//!   `NotPrincipal` lists `"*"` or the caller's exact ARN (or, when the caller is the account
//!   root, the bare account id): listing only the account root does not exempt the account's
//!   users, as in IAM.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The key policy size quota in bytes (32 KB; "not adjustable" per the Developer Guide).
///
/// The service model allows strings up to 131072 characters; the documented quota, which
/// this front end enforces, is smaller.
pub const MAX_POLICY_BYTES: usize = 32_768;

/// The action the lockout safety check is about.
const PUT_KEY_POLICY: &str = "kms:PutKeyPolicy";

/// Who is setting a key policy and what principals this installation knows.
pub struct PolicyContext<'a> {
    /// The AWS partition of this installation (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub partition: &'a str,
    /// The account that owns the key; also the caller's account.
    pub account_id: &'a str,
    /// The ARN of the authenticated caller (the principal making the request).
    pub caller_arn: &'a str,
    /// Whether an AWS principal ARN (IAM user or role, STS session) is known to this
    /// installation. Account roots, bare account ids and `"*"` are never passed here.
    pub principal_exists: &'a dyn Fn(&str) -> bool,
}

impl fmt::Debug for PolicyContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyContext")
            .field("partition", &self.partition)
            .field("account_id", &self.account_id)
            .field("caller_arn", &self.caller_arn)
            .finish_non_exhaustive()
    }
}

/// Why a key policy was refused. `Display` gives the message for the KMS error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy is longer than [`MAX_POLICY_BYTES`] UTF-8 bytes (→ LimitExceededException).
    #[error(
        "The key policy size ({bytes} bytes) exceeds the key policy size quota of {max} bytes.",
        max = MAX_POLICY_BYTES
    )]
    TooLarge {
        /// The UTF-8 byte length of the refused policy.
        bytes: usize,
    },
    /// The policy is empty or has a character outside `[\u0009\u000A\u000D\u0020-\u00FF]`
    /// (→ ValidationException; the caller formats the model-constraint message).
    #[error(
        "Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+"
    )]
    BadCharacters,
    /// The policy is not a syntactically valid key policy; the text says what is wrong
    /// (→ MalformedPolicyDocumentException).
    #[error("{0}")]
    Malformed(String),
    /// Some principals are malformed or unknown; they are listed in document order,
    /// without repetition (→ MalformedPolicyDocumentException).
    #[error("Policy contains a statement with one or more invalid principals.")]
    InvalidPrincipals(Vec<String>),
    /// The policy would not let the caller change it later
    /// (→ MalformedPolicyDocumentException).
    #[error("The new key policy will not allow you to update the key policy in the future.")]
    Lockout,
}

impl PolicyError {
    /// The KMS error name (`__type`) for this error.
    pub fn kms_error_type(&self) -> &'static str {
        match self {
            PolicyError::TooLarge { .. } => "LimitExceededException",
            PolicyError::BadCharacters => "ValidationException",
            PolicyError::Malformed(_)
            | PolicyError::InvalidPrincipals(_)
            | PolicyError::Lockout => "MalformedPolicyDocumentException",
        }
    }
}

/// Validates a key policy for `CreateKey` or `PutKeyPolicy`.
///
/// Checks, in order: size, characters, the policy grammar, principals, and (unless
/// `bypass_lockout_check`, i.e. `BypassPolicyLockoutSafetyCheck=true`) that the caller can
/// still call `PutKeyPolicy` afterwards. See the [module documentation](self) for the rules.
pub fn validate(
    policy: &str,
    ctx: &PolicyContext<'_>,
    bypass_lockout_check: bool,
) -> Result<(), PolicyError> {
    if policy.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            bytes: policy.len(),
        });
    }
    if policy.is_empty() || !policy.chars().all(allowed_char) {
        return Err(PolicyError::BadCharacters);
    }
    let document: StrictJson = serde_json::from_str(policy)
        .map_err(|e| PolicyError::Malformed(format!("The policy is not valid JSON: {e}.")))?;
    let statements = parse_document(&document.0)?;
    check_principals(&statements, ctx)?;
    if !bypass_lockout_check && !allows_put_key_policy(&statements, ctx) {
        return Err(PolicyError::Lockout);
    }
    Ok(())
}

/// The key policy AWS KMS attaches when `CreateKey` has no `Policy`: `kms:*` for the account
/// root, in the exact text `GetKeyPolicy` returns from AWS (Jackson-style pretty printing:
/// two-space indentation, `" : "` separators, `[ {` / `} ]` around the statement).
pub fn default_policy(partition: &str, account_id: &str) -> String {
    let root = Value::String(format!("arn:{partition}:iam::{account_id}:root"));
    format!(
        "{{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n  \
         \"Statement\" : [ {{\n    \"Sid\" : \"Enable IAM User Permissions\",\n    \
         \"Effect\" : \"Allow\",\n    \"Principal\" : {{\n      \"AWS\" : {root}\n    }},\n    \
         \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  }} ]\n}}"
    )
}

/// The model pattern's character class.
fn allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{FF}')
}

// ---------------------------------------------------------------------------------------
// JSON without duplicate keys

/// A JSON value whose objects had no duplicate keys (serde_json's `Value` keeps the last).
struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

// ---------------------------------------------------------------------------------------
// Grammar

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// The principals of a `Principal` or `NotPrincipal` element.
#[derive(Debug, Default)]
struct Principals<'v> {
    /// `"Principal": "*"`.
    everyone: bool,
    aws: Vec<&'v str>,
    service: Vec<&'v str>,
    federated: Vec<&'v str>,
    canonical_user: Vec<&'v str>,
}

#[derive(Debug)]
enum PrincipalElement<'v> {
    Principal(Principals<'v>),
    NotPrincipal(Principals<'v>),
}

#[derive(Debug)]
enum ActionElement<'v> {
    Action(Vec<&'v str>),
    NotAction(Vec<&'v str>),
}

#[derive(Debug)]
struct Statement<'v> {
    effect: Effect,
    principal: PrincipalElement<'v>,
    action: Option<ActionElement<'v>>,
    has_resource: bool,
}

const DOCUMENT_KEYS: [&str; 3] = ["Version", "Id", "Statement"];
const STATEMENT_KEYS: [&str; 9] = [
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];
const PRINCIPAL_KEYS: [&str; 4] = ["AWS", "Service", "Federated", "CanonicalUser"];

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(message.into())
}

fn parse_document(document: &Value) -> Result<Vec<Statement<'_>>, PolicyError> {
    let Value::Object(object) = document else {
        return Err(malformed("The policy must be a JSON object."));
    };
    if let Some(key) = object.keys().find(|k| !DOCUMENT_KEYS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "The policy has an unknown element \"{key}\"; the allowed elements are Version, Id \
             and Statement."
        )));
    }
    if let Some(version) = object.get("Version")
        && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
    {
        return Err(malformed(
            "The policy \"Version\" must be \"2012-10-17\" or \"2008-10-17\".",
        ));
    }
    if object.get("Id").is_some_and(|id| !id.is_string()) {
        return Err(malformed("The policy \"Id\" must be a string."));
    }
    let raw_statements: Vec<&Value> = match object.get("Statement") {
        None => return Err(malformed("The policy has no \"Statement\" element.")),
        Some(Value::Object(_)) => object.get("Statement").into_iter().collect(),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(malformed("The policy \"Statement\" list is empty."));
        }
        Some(Value::Array(items)) => items.iter().collect(),
        Some(_) => {
            return Err(malformed(
                "The policy \"Statement\" must be an object or a list of objects.",
            ));
        }
    };
    let mut sids: HashMap<&str, usize> = HashMap::new();
    let mut statements = Vec::with_capacity(raw_statements.len());
    for (index, raw) in raw_statements.into_iter().enumerate() {
        let number = index + 1;
        let Value::Object(fields) = raw else {
            return Err(malformed(format!(
                "Statement {number} must be a JSON object."
            )));
        };
        let sid = match fields.get("Sid") {
            None => None,
            Some(Value::String(sid)) => Some(sid.as_str()),
            Some(_) => {
                return Err(malformed(format!(
                    "Statement {number}: \"Sid\" must be a string."
                )));
            }
        };
        let label = match sid {
            Some(sid) => format!("Statement {number} (Sid \"{sid}\")"),
            None => format!("Statement {number}"),
        };
        if let Some(sid) = sid
            && let Some(first) = sids.insert(sid, number)
        {
            return Err(malformed(format!(
                "The policy has duplicate Sid \"{sid}\" (statements {first} and {number})."
            )));
        }
        statements.push(parse_statement(fields, &label)?);
    }
    Ok(statements)
}

fn parse_statement<'v>(
    fields: &'v Map<String, Value>,
    label: &str,
) -> Result<Statement<'v>, PolicyError> {
    if let Some(key) = fields
        .keys()
        .find(|k| !STATEMENT_KEYS.contains(&k.as_str()))
    {
        return Err(malformed(format!(
            "{label} has an unknown element \"{key}\"; the allowed elements are Sid, Effect, \
             Principal, NotPrincipal, Action, NotAction, Resource, NotResource and Condition."
        )));
    }
    let effect = match fields.get("Effect") {
        None => return Err(malformed(format!("{label} has no \"Effect\"."))),
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(_) => {
            return Err(malformed(format!(
                "{label}: \"Effect\" must be \"Allow\" or \"Deny\"."
            )));
        }
    };
    let principal = match (fields.get("Principal"), fields.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return Err(malformed(format!(
                "{label} has both \"Principal\" and \"NotPrincipal\"."
            )));
        }
        (None, None) => {
            return Err(malformed(format!(
                "{label} has no \"Principal\" or \"NotPrincipal\"; every statement in a key \
                 policy must name its principals."
            )));
        }
        (Some(p), None) => PrincipalElement::Principal(parse_principals(p, label, "Principal")?),
        (None, Some(p)) => {
            PrincipalElement::NotPrincipal(parse_principals(p, label, "NotPrincipal")?)
        }
    };
    let action = match (fields.get("Action"), fields.get("NotAction")) {
        (Some(_), Some(_)) => {
            return Err(malformed(format!(
                "{label} has both \"Action\" and \"NotAction\"."
            )));
        }
        (None, None) => None,
        (Some(a), None) => Some(ActionElement::Action(parse_actions(a, label, "Action")?)),
        (None, Some(a)) => Some(ActionElement::NotAction(parse_actions(
            a,
            label,
            "NotAction",
        )?)),
    };
    let has_resource = match (fields.get("Resource"), fields.get("NotResource")) {
        (Some(_), Some(_)) => {
            return Err(malformed(format!(
                "{label} has both \"Resource\" and \"NotResource\"."
            )));
        }
        (None, None) => false,
        (Some(r), None) => {
            string_list(r, label, "Resource")?;
            true
        }
        (None, Some(r)) => {
            string_list(r, label, "NotResource")?;
            true
        }
    };
    if let Some(condition) = fields.get("Condition") {
        check_condition(condition, label)?;
    }
    Ok(Statement {
        effect,
        principal,
        action,
        has_resource,
    })
}

/// A string or a non-empty list of strings.
fn string_list<'v>(
    value: &'v Value,
    label: &str,
    element: &str,
) -> Result<Vec<&'v str>, PolicyError> {
    let wrong = || {
        malformed(format!(
            "{label}: \"{element}\" must be a string or a list of strings."
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if items.is_empty() => Err(malformed(format!(
            "{label}: \"{element}\" is an empty list."
        ))),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(wrong))
            .collect(),
        _ => Err(wrong()),
    }
}

fn parse_principals<'v>(
    value: &'v Value,
    label: &str,
    element: &str,
) -> Result<Principals<'v>, PolicyError> {
    let object = match value {
        Value::String(s) if s == "*" => {
            return Ok(Principals {
                everyone: true,
                ..Principals::default()
            });
        }
        Value::Object(object) => object,
        _ => {
            return Err(malformed(format!(
                "{label}: \"{element}\" must be \"*\" or an object with AWS, Service, Federated \
                 or CanonicalUser principals."
            )));
        }
    };
    if object.is_empty() {
        return Err(malformed(format!(
            "{label}: \"{element}\" names no principal."
        )));
    }
    let mut principals = Principals::default();
    for (kind, values) in object {
        let context = format!("{element}.{kind}");
        let list = match kind.as_str() {
            "AWS" => &mut principals.aws,
            "Service" => &mut principals.service,
            "Federated" => &mut principals.federated,
            "CanonicalUser" => &mut principals.canonical_user,
            _ => {
                return Err(malformed(format!(
                    "{label}: \"{element}\" has an unknown principal type \"{kind}\"; the \
                     allowed types are {}.",
                    PRINCIPAL_KEYS.join(", ")
                )));
            }
        };
        *list = string_list(values, label, &context)?;
    }
    Ok(principals)
}

fn parse_actions<'v>(
    value: &'v Value,
    label: &str,
    element: &str,
) -> Result<Vec<&'v str>, PolicyError> {
    let actions = string_list(value, label, element)?;
    for action in &actions {
        if *action == "*" {
            continue;
        }
        let Some((vendor, name)) = action.split_once(':') else {
            return Err(malformed(format!(
                "{label}: action \"{action}\" must be prefaced by a vendor, e.g. kms:Decrypt."
            )));
        };
        let vendor_ok = !vendor.is_empty()
            && vendor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?'));
        if !vendor_ok {
            return Err(malformed(format!(
                "{label}: action \"{action}\" must be prefaced by a vendor, e.g. kms:Decrypt."
            )));
        }
        if name.contains(':') {
            return Err(malformed(format!(
                "{label}: action \"{action}\" can contain only one colon."
            )));
        }
        if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
            return Err(malformed(format!(
                "{label}: action \"{action}\" has no valid action name after the vendor."
            )));
        }
    }
    Ok(actions)
}

/// `Condition`: an object of operator → object of condition key → scalar or list of scalars.
fn check_condition(condition: &Value, label: &str) -> Result<(), PolicyError> {
    let Value::Object(operators) = condition else {
        return Err(malformed(format!(
            "{label}: \"Condition\" must be an object of condition operators."
        )));
    };
    for (operator, keys) in operators {
        let Value::Object(keys) = keys else {
            return Err(malformed(format!(
                "{label}: condition operator \"{operator}\" must map to an object of condition \
                 keys."
            )));
        };
        for (key, value) in keys {
            let scalar =
                |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let ok = match value {
                Value::Array(items) => items.iter().all(scalar),
                other => scalar(other),
            };
            if !ok {
                return Err(malformed(format!(
                    "{label}: condition \"{operator}\" key \"{key}\" must be a string, number, \
                     boolean or a list of them."
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Principals

/// The parts of an IAM/STS principal ARN this module cares about.
struct PrincipalArn<'s> {
    partition: &'s str,
    is_root: bool,
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An IAM entity name or path segment: `[\w+=,.@-]+`.
fn is_iam_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
        })
}

/// Parses `arn:<partition>:iam::<account>:{root|user/<path/>name|role/<path/>name}` and
/// `arn:<partition>:sts::<account>:{assumed-role/<role>/<session>|federated-user/<name>}`.
fn parse_principal_arn(s: &str) -> Option<PrincipalArn<'_>> {
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let partition_ok = !partition.is_empty()
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !partition_ok || !is_account_id(account) {
        return None;
    }
    let segments: Vec<&str> = resource.split('/').collect();
    let valid = match (service, segments.as_slice()) {
        ("iam", ["root"]) => {
            return Some(PrincipalArn {
                partition,
                is_root: true,
            });
        }
        ("iam", ["user" | "role", rest @ ..]) => {
            !rest.is_empty() && rest.iter().all(|segment| is_iam_name(segment))
        }
        ("sts", ["assumed-role", role, session]) => is_iam_name(role) && is_iam_name(session),
        ("sts", ["federated-user", name]) => is_iam_name(name),
        _ => false,
    };
    valid.then_some(PrincipalArn {
        partition,
        is_root: false,
    })
}

fn aws_principal_valid(principal: &str, ctx: &PolicyContext<'_>) -> bool {
    if principal == "*" || is_account_id(principal) {
        return true;
    }
    match parse_principal_arn(principal) {
        Some(arn) if arn.partition != ctx.partition => false,
        Some(arn) if arn.is_root => true,
        Some(_) => (ctx.principal_exists)(principal),
        None => false,
    }
}

/// A service principal looks like a DNS name: `kms.amazonaws.com`.
fn service_principal_valid(principal: &str) -> bool {
    let labels: Vec<&str> = principal.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn check_principals(
    statements: &[Statement<'_>],
    ctx: &PolicyContext<'_>,
) -> Result<(), PolicyError> {
    let mut invalid: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for statement in statements {
        let principals = match &statement.principal {
            PrincipalElement::Principal(p) | PrincipalElement::NotPrincipal(p) => p,
        };
        let bad = principals
            .aws
            .iter()
            .filter(|p| !aws_principal_valid(p, ctx))
            .chain(
                principals
                    .service
                    .iter()
                    .filter(|p| !service_principal_valid(p)),
            )
            .chain(
                principals
                    .federated
                    .iter()
                    .chain(&principals.canonical_user)
                    .filter(|p| p.is_empty()),
            );
        for principal in bad {
            if seen.insert(*principal) {
                invalid.push((*principal).to_owned());
            }
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::InvalidPrincipals(invalid))
    }
}

// ---------------------------------------------------------------------------------------
// Lockout safety check

/// Case-insensitive glob match with `*` (any run of characters) and `?` (one character).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    aws_wildcard::Wildcard::compile_ignore_ascii_case(pattern).matches(text)
}

/// Whether a statement's `Action` / `NotAction` covers `kms:PutKeyPolicy`.
fn covers_put_key_policy(action: Option<&ActionElement<'_>>) -> bool {
    match action {
        Some(ActionElement::Action(patterns)) => {
            patterns.iter().any(|p| wildcard_match(p, PUT_KEY_POLICY))
        }
        Some(ActionElement::NotAction(patterns)) => {
            !patterns.iter().any(|p| wildcard_match(p, PUT_KEY_POLICY))
        }
        None => false,
    }
}

fn root_arn(ctx: &PolicyContext<'_>) -> String {
    format!("arn:{}:iam::{}:root", ctx.partition, ctx.account_id)
}

/// Whether a `Principal` element covers the caller.
fn principal_covers_caller(principals: &Principals<'_>, ctx: &PolicyContext<'_>) -> bool {
    let root = root_arn(ctx);
    principals.everyone
        || principals
            .aws
            .iter()
            .any(|p| *p == "*" || *p == ctx.caller_arn || *p == root || *p == ctx.account_id)
}

/// Whether a `NotPrincipal` element exempts the caller from a `Deny`.
fn not_principal_exempts_caller(principals: &Principals<'_>, ctx: &PolicyContext<'_>) -> bool {
    let caller_is_root = ctx.caller_arn == root_arn(ctx);
    principals.everyone
        || principals
            .aws
            .iter()
            .any(|p| *p == "*" || *p == ctx.caller_arn || (caller_is_root && *p == ctx.account_id))
}

fn allows_put_key_policy(statements: &[Statement<'_>], ctx: &PolicyContext<'_>) -> bool {
    let granted = statements.iter().any(|s| {
        s.effect == Effect::Allow
            && s.has_resource
            && covers_put_key_policy(s.action.as_ref())
            && matches!(&s.principal, PrincipalElement::Principal(p) if principal_covers_caller(p, ctx))
    });
    let denied = statements.iter().any(|s| {
        s.effect == Effect::Deny
            && covers_put_key_policy(s.action.as_ref())
            && match &s.principal {
                PrincipalElement::Principal(p) => principal_covers_caller(p, ctx),
                PrincipalElement::NotPrincipal(p) => !not_principal_exempts_caller(p, ctx),
            }
    });
    granted && !denied
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";
    const ROOT: &str = "arn:aws:iam::111122223333:root";
    const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
    const BOB: &str = "arn:aws:iam::111122223333:user/bob";
    const ADMIN_ROLE: &str = "arn:aws:iam::111122223333:role/ops/Admin";
    const SESSION: &str = "arn:aws:sts::111122223333:assumed-role/Admin/s1";
    const OTHER_ROOT: &str = "arn:aws:iam::444455556666:root";

    fn known(arn: &str) -> bool {
        [ALICE, BOB, ADMIN_ROLE, SESSION].contains(&arn)
    }

    fn ctx_for(caller: &str) -> PolicyContext<'_> {
        PolicyContext {
            partition: "aws",
            account_id: ACCOUNT,
            caller_arn: caller,
            principal_exists: &known,
        }
    }

    fn check(policy: &str) -> Result<(), PolicyError> {
        validate(policy, &ctx_for(ALICE), false)
    }

    fn check_bypass(policy: &str) -> Result<(), PolicyError> {
        validate(policy, &ctx_for(ALICE), true)
    }

    /// A policy document with the given statements (JSON text of a list's items).
    fn doc(statements: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
    }

    /// One Allow statement with the given principal and action JSON.
    fn allow(principal: &str, action: &str) -> String {
        format!(r#"{{"Effect":"Allow","Principal":{principal},"Action":{action},"Resource":"*"}}"#)
    }

    fn deny(principal: &str, action: &str) -> String {
        format!(r#"{{"Effect":"Deny","Principal":{principal},"Action":{action},"Resource":"*"}}"#)
    }

    /// Grants the caller (alice) everything, so the lockout check passes.
    fn admin() -> String {
        allow(&format!(r#"{{"AWS":"{ALICE}"}}"#), r#""kms:*""#)
    }

    fn assert_malformed(result: Result<(), PolicyError>, needle: &str) {
        match result {
            Err(PolicyError::Malformed(message)) => assert!(
                message.contains(needle),
                "message {message:?} does not contain {needle:?}"
            ),
            other => panic!("expected Malformed containing {needle:?}, got {other:?}"),
        }
    }

    fn assert_invalid(result: Result<(), PolicyError>, expected: &[&str]) {
        match result {
            Err(PolicyError::InvalidPrincipals(list)) => assert_eq!(list, expected),
            other => panic!("expected InvalidPrincipals {expected:?}, got {other:?}"),
        }
    }

    /// Pads a valid policy with trailing spaces to exactly `len` bytes.
    fn padded(len: usize) -> String {
        let mut policy = doc(&admin());
        assert!(policy.len() <= len);
        policy.push_str(&" ".repeat(len - policy.len()));
        policy
    }

    // ---- size and characters

    #[test]
    fn size_at_quota_is_accepted() {
        let policy = padded(MAX_POLICY_BYTES);
        assert_eq!(policy.len(), 32_768);
        assert_eq!(check(&policy), Ok(()));
    }

    #[test]
    fn size_over_quota_is_too_large() {
        let policy = padded(MAX_POLICY_BYTES + 1);
        assert_eq!(check(&policy), Err(PolicyError::TooLarge { bytes: 32_769 }));
        // Size is checked before anything else, even the lockout bypass does not skip it.
        assert_eq!(
            check_bypass(&"x".repeat(40_000)),
            Err(PolicyError::TooLarge { bytes: 40_000 })
        );
    }

    #[test]
    fn size_counts_utf8_bytes_not_characters() {
        // 'é' is one allowed character but two UTF-8 bytes.
        let base = doc(&admin());
        let chars = MAX_POLICY_BYTES - base.len();
        let policy = format!("{base}{}", "é".repeat(chars / 2 + 1));
        assert!(policy.chars().count() <= MAX_POLICY_BYTES);
        assert!(matches!(check(&policy), Err(PolicyError::TooLarge { .. })));
    }

    #[test]
    fn latin1_characters_are_allowed() {
        let policy = doc(&format!(
            r#"{{"Sid":"Clé für Ålice","Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_eq!(check(&policy), Ok(()));
        // Tab, CR and LF are allowed whitespace.
        assert_eq!(check(&format!("\t{policy}\r\n")), Ok(()));
    }

    #[test]
    fn characters_outside_the_pattern_are_rejected() {
        let base = doc(&admin());
        for bad in ['\u{0}', '\u{1}', '\u{B}', '\u{1F}', '\u{100}', '€', '😀'] {
            let policy = format!("{base}{bad}");
            assert_eq!(check(&policy), Err(PolicyError::BadCharacters), "{bad:?}");
        }
        // Inside a JSON string too.
        let policy = doc(&format!(
            r#"{{"Sid":"€","Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_eq!(check(&policy), Err(PolicyError::BadCharacters));
        // The pattern needs at least one character.
        assert_eq!(check(""), Err(PolicyError::BadCharacters));
    }

    // ---- JSON and document grammar

    #[test]
    fn not_json_is_malformed() {
        assert_malformed(check("not a policy"), "not valid JSON");
        assert_malformed(check(&format!("{} x", doc(&admin()))), "not valid JSON");
        assert_malformed(check("{\"Statement\": ["), "not valid JSON");
        assert_malformed(check("   "), "not valid JSON");
    }

    #[test]
    fn duplicate_json_keys_are_malformed() {
        let policy = format!(
            r#"{{"Statement":[{{"Effect":"Deny","Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}]}}"#
        );
        assert_malformed(check(&policy), "duplicate key \"Effect\"");
    }

    #[test]
    fn document_must_be_an_object() {
        assert_malformed(check("[]"), "must be a JSON object");
        assert_malformed(check("\"policy\""), "must be a JSON object");
        assert_malformed(check("42"), "must be a JSON object");
        assert_malformed(check("null"), "must be a JSON object");
    }

    #[test]
    fn unknown_top_level_element_is_malformed() {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{}],"Comment":"x"}}"#,
            admin()
        );
        assert_malformed(check(&policy), "unknown element \"Comment\"");
        // Element names are case-sensitive.
        let policy = format!(r#"{{"statement":[{}]}}"#, admin());
        assert_malformed(check(&policy), "unknown element \"statement\"");
    }

    #[test]
    fn version_must_be_a_known_version() {
        for ok in ["2012-10-17", "2008-10-17"] {
            let policy = format!(r#"{{"Version":"{ok}","Statement":[{}]}}"#, admin());
            assert_eq!(check(&policy), Ok(()), "{ok}");
        }
        // Version is optional.
        assert_eq!(check(&format!(r#"{{"Statement":[{}]}}"#, admin())), Ok(()));
        for bad in [
            r#""2012-10-18""#,
            r#""""#,
            "2012",
            "null",
            r#"["2012-10-17"]"#,
        ] {
            let policy = format!(r#"{{"Version":{bad},"Statement":[{}]}}"#, admin());
            assert_malformed(check(&policy), "\"Version\" must be");
        }
    }

    #[test]
    fn id_must_be_a_string() {
        let policy = format!(r#"{{"Id":"key-policy-1","Statement":[{}]}}"#, admin());
        assert_eq!(check(&policy), Ok(()));
        let policy = format!(r#"{{"Id":7,"Statement":[{}]}}"#, admin());
        assert_malformed(check(&policy), "\"Id\" must be a string");
    }

    #[test]
    fn statement_is_required_and_shaped() {
        assert_malformed(check(r#"{"Version":"2012-10-17"}"#), "no \"Statement\"");
        assert_malformed(check(r#"{"Statement":[]}"#), "list is empty");
        assert_malformed(
            check(r#"{"Statement":"kms:*"}"#),
            "object or a list of objects",
        );
        assert_malformed(
            check(r#"{"Statement":null}"#),
            "object or a list of objects",
        );
        assert_malformed(
            check(&format!(r#"{{"Statement":[{},"x"]}}"#, admin())),
            "Statement 2 must be a JSON object",
        );
    }

    #[test]
    fn statement_may_be_a_single_object() {
        let policy = format!(r#"{{"Version":"2012-10-17","Statement":{}}}"#, admin());
        assert_eq!(check(&policy), Ok(()));
    }

    #[test]
    fn unknown_statement_element_is_malformed() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*","Actions":"kms:*"}}"#
        ));
        assert_malformed(check(&policy), "unknown element \"Actions\"");
    }

    #[test]
    fn effect_must_be_allow_or_deny() {
        let missing = doc(&format!(
            r#"{{"Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_malformed(check(&missing), "no \"Effect\"");
        for bad in [r#""allow""#, r#""Permit""#, "true", r#"["Allow"]"#] {
            let policy = doc(&format!(
                r#"{{"Effect":{bad},"Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
            ));
            assert_malformed(check(&policy), "\"Effect\" must be \"Allow\" or \"Deny\"");
        }
    }

    #[test]
    fn sid_must_be_a_unique_string() {
        let policy = doc(&format!(
            r#"{{"Sid":1,"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_malformed(check(&policy), "\"Sid\" must be a string");
        let statement = |sid: &str| {
            format!(
                r#"{{"Sid":"{sid}","Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*"}}"#
            )
        };
        let policy = doc(&format!(
            "{},{},{}",
            statement("a"),
            statement("b"),
            statement("a")
        ));
        assert_malformed(check(&policy), "duplicate Sid \"a\" (statements 1 and 3)");
        let policy = doc(&format!("{},{}", statement("a"), statement("A")));
        assert_eq!(check(&policy), Ok(()));
    }

    #[test]
    fn principal_is_required() {
        let policy = doc(r#"{"Effect":"Allow","Action":"kms:*","Resource":"*"}"#);
        assert_malformed(
            check_bypass(&policy),
            "no \"Principal\" or \"NotPrincipal\"",
        );
    }

    #[test]
    fn principal_and_not_principal_are_exclusive() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"NotPrincipal":{{"AWS":"{BOB}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_malformed(check(&policy), "both \"Principal\" and \"NotPrincipal\"");
    }

    #[test]
    fn principal_shapes() {
        for bad in [r#""alice""#, ALICE, "42", "null", r#"["*"]"#] {
            let principal = if bad == ALICE {
                format!("\"{ALICE}\"")
            } else {
                bad.to_owned()
            };
            let policy = doc(&allow(&principal, r#""kms:*""#));
            assert_malformed(check_bypass(&policy), "must be \"*\" or an object");
        }
        let policy = doc(&allow("{}", r#""kms:*""#));
        assert_malformed(check_bypass(&policy), "names no principal");
        let policy = doc(&allow(&format!(r#"{{"aws":"{ALICE}"}}"#), r#""kms:*""#));
        assert_malformed(check_bypass(&policy), "unknown principal type \"aws\"");
        let policy = doc(&allow(&format!(r#"{{"User":"{ALICE}"}}"#), r#""kms:*""#));
        assert_malformed(check_bypass(&policy), "unknown principal type \"User\"");
        let policy = doc(&allow(r#"{"AWS":[]}"#, r#""kms:*""#));
        assert_malformed(check_bypass(&policy), "\"Principal.AWS\" is an empty list");
        let policy = doc(&allow(r#"{"AWS":111122223333}"#, r#""kms:*""#));
        assert_malformed(
            check_bypass(&policy),
            "\"Principal.AWS\" must be a string or a list",
        );
        let policy = doc(&allow(&format!(r#"{{"AWS":["{ALICE}",7]}}"#), r#""kms:*""#));
        assert_malformed(
            check_bypass(&policy),
            "\"Principal.AWS\" must be a string or a list",
        );
        let policy = doc(
            r#"{"Effect":"Deny","NotPrincipal":{"Service":{}},"Action":"kms:*","Resource":"*"}"#,
        );
        assert_malformed(
            check_bypass(&policy),
            "\"NotPrincipal.Service\" must be a string or a list",
        );
    }

    #[test]
    fn principal_lists_of_every_type_are_accepted() {
        let principal = format!(
            r#"{{"AWS":["{ALICE}","{BOB}"],"Service":["kms.amazonaws.com","logs.us-east-1.amazonaws.com"],"Federated":"cognito-identity.amazonaws.com","CanonicalUser":"79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}}"#
        );
        assert_eq!(check(&doc(&allow(&principal, r#""kms:*""#))), Ok(()));
    }

    #[test]
    fn action_must_be_a_string_or_list_of_strings() {
        for bad in ["42", "null", r#"{"kms":"*"}"#, r#"["kms:Decrypt",1]"#] {
            let policy = doc(&format!("{},{}", admin(), allow(r#""*""#, bad)));
            assert_malformed(
                check(&policy),
                "\"Action\" must be a string or a list of strings",
            );
        }
        let policy = doc(&format!("{},{}", admin(), allow(r#""*""#, "[]")));
        assert_malformed(check(&policy), "\"Action\" is an empty list");
        let policy = doc(&format!(
            r#"{},{{"Effect":"Allow","Principal":"*","NotAction":7,"Resource":"*"}}"#,
            admin()
        ));
        assert_malformed(
            check(&policy),
            "\"NotAction\" must be a string or a list of strings",
        );
    }

    #[test]
    fn action_and_not_action_are_exclusive() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}}"#
        ));
        assert_malformed(check(&policy), "both \"Action\" and \"NotAction\"");
    }

    #[test]
    fn action_needs_a_vendor_prefix() {
        for bad in ["PutKeyPolicy", ":PutKeyPolicy", "kms :Decrypt", "kms:"] {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(r#""*""#, &format!("\"{bad}\""))
            ));
            assert!(
                matches!(check(&policy), Err(PolicyError::Malformed(_))),
                "{bad}"
            );
        }
        let policy = doc(&format!(
            "{},{}",
            admin(),
            allow(r#""*""#, r#""kms:Put:KeyPolicy""#)
        ));
        assert_malformed(check(&policy), "only one colon");
        let policy = doc(&format!("{},{}", admin(), allow(r#""*""#, r#""Decrypt""#)));
        assert_malformed(check(&policy), "must be prefaced by a vendor");
    }

    #[test]
    fn statement_without_action_or_resource_is_accepted_but_ineffective() {
        let no_action =
            format!(r#"{{"Effect":"Allow","Principal":{{"AWS":"{BOB}"}},"Resource":"*"}}"#);
        let no_resource =
            format!(r#"{{"Effect":"Allow","Principal":{{"AWS":"{BOB}"}},"Action":"kms:*"}}"#);
        assert_eq!(
            check(&doc(&format!("{},{no_action},{no_resource}", admin()))),
            Ok(())
        );
        // ... and they grant nothing for the lockout check.
        let alone =
            format!(r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*"}}"#);
        assert_eq!(check(&doc(&alone)), Err(PolicyError::Lockout));
        let alone =
            format!(r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Resource":"*"}}"#);
        assert_eq!(check(&doc(&alone)), Err(PolicyError::Lockout));
    }

    #[test]
    fn resource_shapes() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*","NotResource":"*"}}"#
        ));
        assert_malformed(check(&policy), "both \"Resource\" and \"NotResource\"");
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":{{"arn":"*"}}}}"#
        ));
        assert_malformed(
            check(&policy),
            "\"Resource\" must be a string or a list of strings",
        );
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","NotResource":["arn:aws:kms:us-east-1:111122223333:key/x"]}}"#
        ));
        assert_eq!(check(&policy), Ok(()));
    }

    #[test]
    fn condition_must_be_an_object_of_objects() {
        let with = |condition: &str| {
            doc(&format!(
                r#"{},{{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{condition}}}"#,
                admin()
            ))
        };
        let good = r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":["ec2.us-east-1.amazonaws.com"]},"Bool":{"kms:GrantIsForAWSResource":true},"NumericLessThan":{"x":5}}"#;
        assert_eq!(check(&with(good)), Ok(()));
        assert_malformed(
            check(&with(r#""StringEquals""#)),
            "must be an object of condition operators",
        );
        assert_malformed(
            check(&with("[]")),
            "must be an object of condition operators",
        );
        assert_malformed(
            check(&with(r#"{"StringEquals":"kms:CallerAccount"}"#)),
            "must map to an object of condition keys",
        );
        assert_malformed(
            check(&with(r#"{"StringEquals":{"kms:CallerAccount":{"a":"b"}}}"#)),
            "must be a string, number, boolean or a list of them",
        );
        assert_malformed(
            check(&with(r#"{"StringEquals":{"kms:CallerAccount":null}}"#)),
            "must be a string, number, boolean or a list of them",
        );
    }

    #[test]
    fn messages_name_the_statement() {
        let policy = doc(&format!(
            r#"{},{{"Sid":"Second","Effect":"Maybe","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
            admin()
        ));
        assert_malformed(check(&policy), "Statement 2 (Sid \"Second\"): \"Effect\"");
    }

    #[test]
    fn grammar_is_checked_even_when_the_lockout_check_is_bypassed() {
        assert_malformed(check_bypass("{}"), "no \"Statement\"");
        assert_invalid(
            check_bypass(&doc(&allow(
                r#"{"AWS":"arn:aws:iam::111122223333:user/mallory"}"#,
                r#""kms:*""#,
            ))),
            &["arn:aws:iam::111122223333:user/mallory"],
        );
    }

    // ---- principals

    #[test]
    fn known_user_and_role_are_valid_principals() {
        for principal in [BOB, ADMIN_ROLE, SESSION] {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(&format!(r#"{{"AWS":"{principal}"}}"#), r#""kms:Decrypt""#)
            ));
            assert_eq!(check(&policy), Ok(()), "{principal}");
        }
    }

    #[test]
    fn unknown_user_is_an_invalid_principal() {
        let policy = doc(&format!(
            "{},{}",
            admin(),
            allow(
                r#"{"AWS":"arn:aws:iam::111122223333:user/mallory"}"#,
                r#""kms:Decrypt""#
            )
        ));
        assert_invalid(check(&policy), &["arn:aws:iam::111122223333:user/mallory"]);
        let err = check(&policy).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "Policy contains a statement with one or more invalid principals."
        );
        assert_eq!(err.kms_error_type(), "MalformedPolicyDocumentException");
    }

    #[test]
    fn account_roots_and_ids_of_any_account_are_valid() {
        for principal in [OTHER_ROOT, ROOT, "444455556666", ACCOUNT] {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(&format!(r#"{{"AWS":["{principal}"]}}"#), r#""kms:Decrypt""#)
            ));
            assert_eq!(check(&policy), Ok(()), "{principal}");
        }
    }

    #[test]
    fn star_principals_are_valid() {
        for principal in [r#""*""#, r#"{"AWS":"*"}"#, r#"{"AWS":["*"]}"#] {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(principal, r#""kms:Decrypt""#)
            ));
            assert_eq!(check(&policy), Ok(()), "{principal}");
        }
    }

    #[test]
    fn service_principals_are_valid() {
        let policy = doc(&format!(
            "{},{}",
            admin(),
            allow(
                r#"{"Service":["kms.amazonaws.com","logs.us-east-1.amazonaws.com","s3.amazonaws.com.cn"]}"#,
                r#""kms:Decrypt""#
            )
        ));
        assert_eq!(check(&policy), Ok(()));
        let policy = doc(&format!(
            "{},{}",
            admin(),
            allow(
                r#"{"Service":["kms", "", "KMS.amazonaws.com", "*"]}"#,
                r#""kms:Decrypt""#
            )
        ));
        assert_invalid(check(&policy), &["kms", "", "KMS.amazonaws.com", "*"]);
    }

    #[test]
    fn malformed_arns_are_invalid_principals() {
        let bad = [
            "alice",
            "",
            "1111222233334",
            "11112222333",
            "arn:aws:iam::111122223333",
            "arn:aws:iam::111122223333:",
            "arn:aws:iam::111122223333:user/",
            "arn:aws:iam::111122223333:user//alice",
            "arn:aws:iam::11112222333:user/alice",
            "arn:aws:iam:us-east-1:111122223333:user/alice",
            "arn:aws:s3::111122223333:user/alice",
            "arn:aws:iam::111122223333:group/admins",
            "arn:aws:iam::111122223333:user/*",
            "arn:aws:iam::111122223333:root/x",
            "arn:aws:sts::111122223333:assumed-role/Admin",
            "arn:aws:iam::*:root",
            "arn::iam::111122223333:root",
            "ARN:aws:iam::111122223333:root",
        ];
        for principal in bad {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(&format!(r#"{{"AWS":"{principal}"}}"#), r#""kms:Decrypt""#)
            ));
            assert_invalid(check(&policy), &[principal]);
        }
    }

    #[test]
    fn principals_of_another_partition_are_invalid() {
        for principal in [
            "arn:aws-cn:iam::111122223333:root",
            "arn:aws-cn:iam::111122223333:user/alice",
        ] {
            let policy = doc(&format!(
                "{},{}",
                admin(),
                allow(&format!(r#"{{"AWS":"{principal}"}}"#), r#""kms:Decrypt""#)
            ));
            assert_invalid(check(&policy), &[principal]);
        }
    }

    #[test]
    fn principal_exists_is_asked_with_the_exact_arn() {
        let asked = std::cell::RefCell::new(Vec::new());
        let exists = |arn: &str| {
            asked.borrow_mut().push(arn.to_owned());
            true
        };
        let ctx = PolicyContext {
            partition: "aws",
            account_id: ACCOUNT,
            caller_arn: ROOT,
            principal_exists: &exists,
        };
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":["{ROOT}","{ACCOUNT}","*","{OTHER_ROOT}","arn:aws:iam::111122223333:user/x/y"]}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_eq!(validate(&policy, &ctx, false), Ok(()));
        assert_eq!(*asked.borrow(), ["arn:aws:iam::111122223333:user/x/y"]);
    }

    #[test]
    fn invalid_principals_are_collected_in_order_without_repeats() {
        let policy = doc(&format!(
            r#"{},{{"Effect":"Allow","Principal":{{"AWS":["zed","{BOB}","arn:aws:iam::111122223333:user/ghost"]}},"Action":"kms:Decrypt","Resource":"*"}},{{"Effect":"Deny","NotPrincipal":{{"AWS":["zed","alpha"],"Federated":""}},"Action":"kms:Decrypt","Resource":"*"}}"#,
            admin()
        ));
        assert_invalid(
            check(&policy),
            &["zed", "arn:aws:iam::111122223333:user/ghost", "alpha", ""],
        );
    }

    #[test]
    fn invalid_principals_are_reported_before_the_lockout() {
        let policy = doc(&allow(r#"{"AWS":"nobody"}"#, r#""kms:Decrypt""#));
        assert_invalid(check(&policy), &["nobody"]);
    }

    // ---- lockout safety check

    #[test]
    fn lockout_passes_via_kms_star() {
        assert_eq!(
            check(&doc(&allow(
                &format!(r#"{{"AWS":"{ALICE}"}}"#),
                r#""kms:*""#
            ))),
            Ok(())
        );
    }

    #[test]
    fn lockout_passes_via_put_key_policy() {
        for action in [
            r#""kms:PutKeyPolicy""#,
            r#"["kms:Decrypt","kms:PutKeyPolicy"]"#,
            r#""KMS:putkeypolicy""#,
            r#""kms:Put*""#,
            r#""kms:PutKeyPolic?""#,
            r#""kms:*Policy""#,
            r#""*""#,
            r#""*:*""#,
        ] {
            let policy = doc(&allow(&format!(r#"{{"AWS":"{ALICE}"}}"#), action));
            assert_eq!(check(&policy), Ok(()), "{action}");
        }
    }

    #[test]
    fn lockout_passes_via_star_principal() {
        for principal in [r#""*""#, r#"{"AWS":"*"}"#] {
            assert_eq!(
                check(&doc(&allow(principal, r#""kms:*""#))),
                Ok(()),
                "{principal}"
            );
        }
    }

    #[test]
    fn lockout_passes_via_account_root() {
        for principal in [ROOT, ACCOUNT] {
            let policy = doc(&allow(&format!(r#"{{"AWS":"{principal}"}}"#), r#""kms:*""#));
            assert_eq!(check(&policy), Ok(()), "{principal}");
            // Also when the caller is the root itself.
            assert_eq!(
                validate(&policy, &ctx_for(ROOT), false),
                Ok(()),
                "{principal}"
            );
        }
    }

    #[test]
    fn lockout_when_only_decrypt_is_allowed() {
        let policy = doc(&allow(
            &format!(r#"{{"AWS":"{ALICE}"}}"#),
            r#"["kms:Decrypt","kms:Encrypt","kms:PutKeyPolicyX"]"#,
        ));
        let err = check(&policy).expect_err("lockout");
        assert_eq!(err, PolicyError::Lockout);
        assert_eq!(
            err.to_string(),
            "The new key policy will not allow you to update the key policy in the future."
        );
        assert_eq!(err.kms_error_type(), "MalformedPolicyDocumentException");
        // A near-miss wildcard does not match either.
        let policy = doc(&allow(&format!(r#"{{"AWS":"{ALICE}"}}"#), r#""kms:Put?""#));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
    }

    #[test]
    fn lockout_when_a_deny_overrides() {
        for principal in [
            r#""*""#,
            r#"{"AWS":"*"}"#,
            &format!(r#"{{"AWS":"{ALICE}"}}"#),
            &format!(r#"{{"AWS":"{ROOT}"}}"#),
        ] {
            for action in [r#""kms:PutKeyPolicy""#, r#""kms:*""#, r#""*""#] {
                let policy = doc(&format!("{},{}", admin(), deny(principal, action)));
                assert_eq!(
                    check(&policy),
                    Err(PolicyError::Lockout),
                    "{principal} {action}"
                );
            }
        }
    }

    #[test]
    fn deny_with_condition_still_overrides() {
        let policy = doc(&format!(
            r#"{},{{"Effect":"Deny","Principal":"*","Action":"kms:PutKeyPolicy","Resource":"*","Condition":{{"Bool":{{"aws:SecureTransport":false}}}}}}"#,
            admin()
        ));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
    }

    #[test]
    fn deny_of_other_principals_or_actions_does_not_override() {
        let policy = doc(&format!(
            "{},{},{}",
            admin(),
            deny(&format!(r#"{{"AWS":"{BOB}"}}"#), r#""kms:*""#),
            deny(r#""*""#, r#"["kms:ScheduleKeyDeletion","kms:Disable*"]"#)
        ));
        assert_eq!(check(&policy), Ok(()));
        // A Deny NotAction that lists PutKeyPolicy does not deny it.
        let policy = doc(&format!(
            r#"{},{{"Effect":"Deny","Principal":"*","NotAction":["kms:Put*"],"Resource":"*"}}"#,
            admin()
        ));
        assert_eq!(check(&policy), Ok(()));
        // ... but one that does not list it does.
        let policy = doc(&format!(
            r#"{},{{"Effect":"Deny","Principal":"*","NotAction":["kms:Decrypt"],"Resource":"*"}}"#,
            admin()
        ));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
    }

    #[test]
    fn deny_not_principal_applies_unless_the_caller_is_exempt() {
        let deny_except = |listed: &str| {
            doc(&format!(
                r#"{},{{"Effect":"Deny","NotPrincipal":{{"AWS":{listed}}},"Action":"kms:*","Resource":"*"}}"#,
                admin()
            ))
        };
        assert_eq!(
            check(&deny_except(&format!(r#"["{ALICE}","{ROOT}"]"#))),
            Ok(())
        );
        assert_eq!(check(&deny_except(r#""*""#)), Ok(()));
        assert_eq!(
            check(&deny_except(&format!(r#""{BOB}""#))),
            Err(PolicyError::Lockout)
        );
        // Listing only the account root exempts the root user, not the account's users.
        assert_eq!(
            check(&deny_except(&format!(r#""{ROOT}""#))),
            Err(PolicyError::Lockout)
        );
        // A root caller is exempted by its ARN or by the bare account id.
        let root_deny_except = |listed: &str| {
            doc(&format!(
                r#"{},{{"Effect":"Deny","NotPrincipal":{{"AWS":"{listed}"}},"Action":"kms:*","Resource":"*"}}"#,
                allow(&format!(r#"{{"AWS":"{ROOT}"}}"#), r#""kms:*""#)
            ))
        };
        for listed in [ROOT, ACCOUNT] {
            let policy = root_deny_except(listed);
            assert_eq!(validate(&policy, &ctx_for(ROOT), false), Ok(()), "{listed}");
        }
        let policy = root_deny_except(ALICE);
        assert_eq!(
            validate(&policy, &ctx_for(ROOT), false),
            Err(PolicyError::Lockout)
        );
    }

    #[test]
    fn lockout_when_the_principal_is_another_user() {
        let policy = doc(&allow(&format!(r#"{{"AWS":"{BOB}"}}"#), r#""kms:*""#));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
        // Another account's root does not cover the caller.
        let policy = doc(&allow(
            &format!(r#"{{"AWS":["{OTHER_ROOT}","444455556666"]}}"#),
            r#""kms:*""#,
        ));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
        // Neither does a service principal.
        let policy = doc(&allow(r#"{"Service":"kms.amazonaws.com"}"#, r#""kms:*""#));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
        // A role ARN does not cover one of its sessions (exact ARNs only).
        let policy = doc(&allow(
            &format!(r#"{{"AWS":"{ADMIN_ROLE}"}}"#),
            r#""kms:*""#,
        ));
        assert_eq!(
            validate(&policy, &ctx_for(SESSION), false),
            Err(PolicyError::Lockout)
        );
        let policy = doc(&allow(&format!(r#"{{"AWS":"{SESSION}"}}"#), r#""kms:*""#));
        assert_eq!(validate(&policy, &ctx_for(SESSION), false), Ok(()));
    }

    #[test]
    fn bypass_skips_the_lockout_check() {
        let policy = doc(&allow(&format!(r#"{{"AWS":"{BOB}"}}"#), r#""kms:Decrypt""#));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
        assert_eq!(check_bypass(&policy), Ok(()));
        let policy = doc(&format!("{},{}", admin(), deny(r#""*""#, r#""*""#)));
        assert_eq!(check_bypass(&policy), Ok(()));
    }

    #[test]
    fn allow_with_condition_still_grants() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalTag/team":"ops"}}}}}}"#
        ));
        assert_eq!(check(&policy), Ok(()));
    }

    #[test]
    fn allow_not_action_grants_unless_it_lists_put_key_policy() {
        let with = |not_action: &str| {
            doc(&format!(
                r#"{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"NotAction":{not_action},"Resource":"*"}}"#
            ))
        };
        assert_eq!(
            check(&with(r#"["kms:ScheduleKeyDeletion","kms:Decrypt"]"#)),
            Ok(())
        );
        assert_eq!(
            check(&with(r#""kms:PutKeyPolicy""#)),
            Err(PolicyError::Lockout)
        );
        assert_eq!(check(&with(r#""kms:*""#)), Err(PolicyError::Lockout));
        assert_eq!(check(&with(r#""*""#)), Err(PolicyError::Lockout));
    }

    #[test]
    fn allow_not_principal_never_grants() {
        let policy = doc(&format!(
            r#"{{"Effect":"Allow","NotPrincipal":{{"AWS":"{BOB}"}},"Action":"kms:*","Resource":"*"}}"#
        ));
        assert_eq!(check(&policy), Err(PolicyError::Lockout));
    }

    #[test]
    fn other_partitions_use_their_own_root() {
        let ctx = PolicyContext {
            partition: "aws-cn",
            account_id: ACCOUNT,
            caller_arn: "arn:aws-cn:iam::111122223333:user/alice",
            principal_exists: &|_| false,
        };
        let policy = doc(&allow(
            r#"{"AWS":"arn:aws-cn:iam::111122223333:root"}"#,
            r#""kms:*""#,
        ));
        assert_eq!(validate(&policy, &ctx, false), Ok(()));
        let policy = doc(&allow(&format!(r#"{{"AWS":"{ROOT}"}}"#), r#""kms:*""#));
        assert_invalid(validate(&policy, &ctx, false), &[ROOT]);
    }

    // ---- default policy

    #[test]
    fn default_policy_is_the_aws_text() {
        let expected = "{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n  \
                        \"Statement\" : [ {\n    \"Sid\" : \"Enable IAM User Permissions\",\n    \
                        \"Effect\" : \"Allow\",\n    \"Principal\" : {\n      \
                        \"AWS\" : \"arn:aws:iam::111122223333:root\"\n    },\n    \
                        \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  } ]\n}";
        assert_eq!(default_policy("aws", ACCOUNT), expected);
        let value: Value =
            serde_json::from_str(&default_policy("aws-us-gov", ACCOUNT)).expect("json");
        assert_eq!(
            value["Statement"][0]["Principal"]["AWS"],
            "arn:aws-us-gov:iam::111122223333:root"
        );
        // Odd inputs stay valid JSON.
        let odd: Result<Value, _> = serde_json::from_str(&default_policy("a\"b", "1\\2"));
        assert!(odd.is_ok());
    }

    #[test]
    fn default_policy_passes_validate() {
        let policy = default_policy("aws", ACCOUNT);
        assert_eq!(validate(&policy, &ctx_for(ROOT), false), Ok(()));
        // Any caller of the owning account passes through the account root.
        assert_eq!(validate(&policy, &ctx_for(ALICE), false), Ok(()));
        assert_eq!(validate(&policy, &ctx_for(SESSION), false), Ok(()));
    }

    // ---- errors and helpers

    #[test]
    fn error_types_and_messages() {
        let too_large = PolicyError::TooLarge { bytes: 32_769 };
        assert_eq!(too_large.kms_error_type(), "LimitExceededException");
        assert!(too_large.to_string().contains("32769"));
        assert!(too_large.to_string().contains("32768"));
        assert_eq!(
            PolicyError::BadCharacters.kms_error_type(),
            "ValidationException"
        );
        let malformed = PolicyError::Malformed("x y".into());
        assert_eq!(malformed.to_string(), "x y");
        assert_eq!(
            malformed.kms_error_type(),
            "MalformedPolicyDocumentException"
        );
        assert_eq!(
            PolicyError::Lockout.kms_error_type(),
            "MalformedPolicyDocumentException"
        );
    }

    #[test]
    fn context_debug_omits_the_lookup() {
        let text = format!("{:?}", ctx_for(ALICE));
        assert!(text.contains("111122223333") && text.contains(".."));
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard_match("kms:*", "kms:PutKeyPolicy"));
        assert!(wildcard_match("*", "kms:PutKeyPolicy"));
        assert!(wildcard_match("KMS:PUT*POLICY", "kms:PutKeyPolicy"));
        assert!(wildcard_match("k?s:*Key*", "kms:PutKeyPolicy"));
        assert!(wildcard_match("**:**", "kms:PutKeyPolicy"));
        assert!(wildcard_match("kms:Put*y", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("kms:Put", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("kms:PutKeyPolicy?", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("s3:*", "kms:PutKeyPolicy"));
        assert!(!wildcard_match("kms:Get*", "kms:PutKeyPolicy"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("", "a"));
    }
}
