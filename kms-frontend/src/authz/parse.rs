//! Policy documents parsed for evaluation. Key policies were already checked strictly by
//! `crate::policy::validate` when stored; this parse only keeps what evaluation needs and
//! refuses documents it could not evaluate faithfully.

use aws_wildcard::Wildcard;
use serde_json::Value;

use super::conditions::Condition;

/// Why a document could not be parsed for evaluation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyParseError {
    /// Not JSON, or not an object with `Statement`.
    #[error("the policy is not a JSON policy document: {0}")]
    NotADocument(String),
    /// A statement element has the wrong shape.
    #[error("statement {index}: {problem}")]
    Statement {
        /// Position of the statement (0-based).
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants.
    Allow,
    /// Refuses, beating every allow.
    Deny,
}

/// A `Principal` or `NotPrincipal` element.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    /// `"*"` (or `{"AWS": "*"}`): everyone.
    pub any: bool,
    /// `AWS` entries: ARNs or bare account ids.
    pub aws: Vec<String>,
    /// `Service` entries (`logs.amazonaws.com`): match only calls made via that service.
    pub service: Vec<String>,
}

/// A list of patterns with its `Not` flag (`Action`/`NotAction`, `Resource`/`NotResource`).
#[derive(Debug)]
pub struct Patterns {
    /// Whether the element was the `Not` form.
    pub negated: bool,
    /// The compiled patterns.
    pub patterns: Vec<Wildcard>,
}

impl Patterns {
    /// Whether `value` is covered (the `Not` form covers what none of its patterns match).
    pub fn covers(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value)) != self.negated
    }
}

/// One statement.
#[derive(Debug)]
pub struct Statement {
    /// Allow or Deny.
    pub effect: Effect,
    /// `Principal` (negated = false) or `NotPrincipal` (true); `None` in identity policies.
    pub principals: Option<(bool, Principals)>,
    /// `Action` / `NotAction`; a statement without one never applies.
    pub actions: Option<Patterns>,
    /// `Resource` / `NotResource`; a statement without one never applies.
    pub resources: Option<Patterns>,
    /// Every condition; all must hold.
    pub conditions: Vec<Condition>,
}

/// A parsed policy document.
#[derive(Debug)]
pub struct Policy {
    /// Its statements, in order.
    pub statements: Vec<Statement>,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn principals(v: &Value) -> Option<Principals> {
    match v {
        Value::String(s) if s == "*" => Some(Principals {
            any: true,
            ..Principals::default()
        }),
        Value::Object(map) => {
            let mut p = Principals::default();
            for (kind, list) in map {
                let list = strings(list)?;
                match kind.as_str() {
                    "AWS" => {
                        for a in list {
                            if a == "*" {
                                p.any = true;
                            } else {
                                p.aws.push(a);
                            }
                        }
                    }
                    "Service" => p.service.extend(list),
                    // Federated / CanonicalUser principals never call this front end.
                    _ => {}
                }
            }
            Some(p)
        }
        _ => None,
    }
}

impl Policy {
    /// Parses a policy document's text.
    pub fn parse(text: &str) -> Result<Self, PolicyParseError> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| PolicyParseError::NotADocument(e.to_string()))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => {
                return Err(PolicyParseError::NotADocument(
                    "Statement must be an object or a list of objects".into(),
                ));
            }
        };
        let mut out = Vec::new();
        for (index, s) in statements.into_iter().enumerate() {
            let bad = |problem: &str| PolicyParseError::Statement {
                index,
                problem: problem.to_owned(),
            };
            let effect = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(bad("Effect must be \"Allow\" or \"Deny\"")),
            };
            let principals = match (s.get("Principal"), s.get("NotPrincipal")) {
                (Some(p), None) => {
                    Some((false, principals(p).ok_or_else(|| bad("bad Principal"))?))
                }
                (None, Some(p)) => {
                    Some((true, principals(p).ok_or_else(|| bad("bad NotPrincipal"))?))
                }
                (None, None) => None,
                (Some(_), Some(_)) => return Err(bad("both Principal and NotPrincipal")),
            };
            let patterns = |yes: &str, no: &str, ignore_case: bool| {
                let (negated, v) = match (s.get(yes), s.get(no)) {
                    (Some(v), None) => (false, v),
                    (None, Some(v)) => (true, v),
                    (None, None) => return Ok(None),
                    (Some(_), Some(_)) => return Err(bad(&format!("both {yes} and {no}"))),
                };
                let list = strings(v).ok_or_else(|| bad(&format!("bad {yes}")))?;
                let patterns = list
                    .iter()
                    .map(|p| {
                        if ignore_case {
                            Wildcard::compile_ignore_ascii_case(p)
                        } else {
                            Wildcard::compile(p)
                        }
                    })
                    .collect();
                Ok(Some(Patterns { negated, patterns }))
            };
            // Action names are case-insensitive; ARNs are not.
            let actions = patterns("Action", "NotAction", true)?;
            let resources = patterns("Resource", "NotResource", false)?;
            let conditions = match s.get("Condition") {
                None => Vec::new(),
                Some(c) => Condition::parse_block(c).map_err(|p| bad(&p))?,
            };
            out.push(Statement {
                effect,
                principals,
                actions,
                resources,
                conditions,
            });
        }
        Ok(Self { statements: out })
    }

    /// Whether some condition tests `key` (lower-cased).
    pub fn tests_key(&self, key: &str) -> bool {
        self.statements
            .iter()
            .flat_map(|s| s.conditions.iter())
            .any(|c| c.key() == key)
    }

    /// The first condition operator IAM does not have, if any.
    pub fn unknown_operator(&self) -> Option<&str> {
        self.statements
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find_map(Condition::unknown_operator)
    }

    /// Whether any statement has a `Principal`/`NotPrincipal` (forbidden in identity
    /// policies).
    pub fn names_principals(&self) -> bool {
        self.statements.iter().any(|s| s.principals.is_some())
    }
}
