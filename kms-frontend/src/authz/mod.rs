//! Authorization: every request is a decision made from the key policy, the caller's
//! identity policies (the configured stand-in for IAM) and grants, as AWS KMS makes it.
//!
//! - [`Policy`]: a parsed policy document (key policy or identity policy).
//! - [`evaluate`]: the one evaluator, a pure function of a [`Request`] and the policies.
//! - [`context`]: builds the [`Request`] of an incoming KMS call (the hook in
//!   `Kms::handle`).
//!
//! The decision (AWS's order, `../shared/reference/kms-authz.md` §1): an explicit `Deny`
//! in the key policy or an identity policy wins; otherwise the key policy must allow the
//! caller by name (a user, role, assumed-role session or `*`), or allow the caller's
//! account root (`arn:aws:iam::<account>:root`, which delegates to IAM) with an `Allow` in
//! the caller's identity policies as well. A caller of another account always needs its
//! own identity `Allow` too. Operations on resource `*` (CreateKey, the list operations,
//! custom key stores) are decided by the identity policies alone.

pub mod conditions;
pub mod context;
pub mod evaluate;
pub mod parse;
#[cfg(test)]
mod tests;

pub use evaluate::{Decision, Grant, Request, evaluate};
pub use parse::{Policy, PolicyParseError};

use crate::protocol::KmsError;

/// The identity policy of a principal that has none attached: `kms:*` on `*`, so that
/// configurations written before identity policies keep working (restricting is opt-in).
pub const ALLOW_ALL_IDENTITY_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;

/// The `AccessDeniedException` AWS answers for a refused decision; `None` for an allow.
/// `on` names the resource as AWS does: `resource: <ARN>`, or `the resource associated
/// with this ciphertext` for a Decrypt resolved from its ciphertext.
pub fn denial(decision: Decision, caller_arn: &str, action: &str, on: &str) -> Option<KmsError> {
    let reason = match decision {
        Decision::Allow => return None,
        Decision::ExplicitDenyResource => {
            "with an explicit deny in a resource-based policy".to_owned()
        }
        Decision::ExplicitDenyIdentity => {
            "with an explicit deny in an identity-based policy".to_owned()
        }
        Decision::NoResourceAllow => {
            format!("because no resource-based policy allows the {action} action")
        }
        Decision::NoIdentityAllow => {
            format!("because no identity-based policy allows the {action} action")
        }
    };
    Some(KmsError::client(
        "AccessDeniedException",
        format!("User: {caller_arn} is not authorized to perform: {action} on {on} {reason}"),
    ))
}
