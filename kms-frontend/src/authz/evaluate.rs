//! The evaluator: a pure function of the request, the key policy, the caller's identity
//! policies and grants.

use super::conditions::ContextKeys;
use super::parse::{Effect, Policy, Principals, Statement};

/// What is being decided.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `kms:<Operation>` (or `kms:ReEncryptFrom` / `kms:ReEncryptTo`).
    pub action: String,
    /// The key ARN, alias ARN, or `*`.
    pub resource: String,
    /// The caller's ARN as it signed (`arn:aws:sts::<a>:assumed-role/R/S` for sessions).
    pub principal_arn: String,
    /// The caller's account.
    pub principal_account: String,
    /// The account that owns the resource (`None` for `*`).
    pub resource_account: Option<String>,
    /// The partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// The service principal making the call for the caller (`None`: a direct call).
    pub via_service_principal: Option<String>,
    /// Condition keys, lower-cased names.
    pub keys: ContextKeys,
}

/// A grant (the grants issue fills these in; empty until then).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The grantee principal ARN.
    pub grantee: String,
    /// The operations granted, e.g. `Decrypt`.
    pub operations: Vec<String>,
}

/// The outcome, with the reason AWS words a refusal by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// A key-policy `Deny` applies.
    ExplicitDenyResource,
    /// An identity-policy `Deny` applies.
    ExplicitDenyIdentity,
    /// The key policy neither names the caller nor delegates to its account.
    NoResourceAllow,
    /// The identity policies do not allow (needed for `*` resources, root delegation, and
    /// cross-account calls).
    NoIdentityAllow,
}

/// How a key-policy principal element relates to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// Not covered.
    No,
    /// Covered by the caller's own ARN, its role, or `*`.
    Caller,
    /// Covered through the caller's account root (delegation to IAM).
    Account,
}

/// The role ARN of an assumed-role session ARN (`aws:PrincipalArn` of a session).
pub fn role_of_session(arn: &str) -> Option<String> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(":sts::")?;
    let (account, rest) = rest.split_once(":assumed-role/")?;
    let (role, _session) = rest.rsplit_once('/')?;
    Some(format!("arn:{partition}:iam::{account}:role/{role}"))
}

fn principal_in(list: &Principals, req: &Request) -> Named {
    if let Some(service) = &req.via_service_principal
        && list.service.iter().any(|s| s == service)
    {
        return Named::Caller;
    }
    if list.any {
        return Named::Caller;
    }
    let role = role_of_session(&req.principal_arn);
    let root = format!("arn:{}:iam::{}:root", req.partition, req.principal_account);
    let mut named = Named::No;
    for p in &list.aws {
        if *p == req.principal_arn || role.as_deref() == Some(p.as_str()) {
            return Named::Caller;
        }
        if *p == root || *p == req.principal_account {
            named = Named::Account;
        }
    }
    named
}

/// Whether the statement applies to the action, resource and conditions (not principals).
fn applies(s: &Statement, req: &Request) -> bool {
    s.actions.as_ref().is_some_and(|a| a.covers(&req.action))
        && s.resources
            .as_ref()
            .is_some_and(|r| r.covers(&req.resource))
        && s.conditions.iter().all(|c| c.holds(&req.keys))
}

/// How the key-policy statement's principals cover the caller.
fn key_policy_names(s: &Statement, req: &Request) -> Named {
    match &s.principals {
        Some((false, p)) => principal_in(p, req),
        // NotPrincipal: everyone not listed. Only the caller's own ARN (or its role) or
        // `*` exempts it: listing the account root exempts the root alone, not the
        // account's users (IAM's rule).
        Some((true, p)) => match principal_in(p, req) {
            Named::Caller => Named::No,
            Named::No | Named::Account => Named::Caller,
        },
        None => Named::No,
    }
}

/// Decides `req`. `key_policy` is `None` for operations on resource `*` (identity policies
/// alone decide); `grants` only allow.
pub fn evaluate(
    req: &Request,
    key_policy: Option<&Policy>,
    identity: &[Policy],
    grants: &[Grant],
) -> Decision {
    let key_statements = key_policy.map_or(&[][..], |p| &p.statements[..]);
    let identity_statements = || identity.iter().flat_map(|p| p.statements.iter());
    if key_statements.iter().any(|s| {
        s.effect == Effect::Deny && key_policy_names(s, req) != Named::No && applies(s, req)
    }) {
        return Decision::ExplicitDenyResource;
    }
    if identity_statements().any(|s| s.effect == Effect::Deny && applies(s, req)) {
        return Decision::ExplicitDenyIdentity;
    }
    let identity_allows =
        identity_statements().any(|s| s.effect == Effect::Allow && applies(s, req));
    if key_policy.is_none() {
        return if identity_allows {
            Decision::Allow
        } else {
            Decision::NoIdentityAllow
        };
    }
    let operation = req.action.strip_prefix("kms:").unwrap_or(&req.action);
    if grants
        .iter()
        .any(|g| g.grantee == req.principal_arn && g.operations.iter().any(|o| o == operation))
    {
        return Decision::Allow;
    }
    let mut best = Named::No;
    for s in key_statements {
        if s.effect == Effect::Allow && applies(s, req) {
            match key_policy_names(s, req) {
                Named::Caller => {
                    best = Named::Caller;
                    break;
                }
                Named::Account => best = Named::Account,
                Named::No => {}
            }
        }
    }
    let same_account = req.resource_account.as_deref() == Some(req.principal_account.as_str());
    match best {
        Named::No => Decision::NoResourceAllow,
        Named::Caller if same_account || identity_allows => Decision::Allow,
        Named::Account if identity_allows => Decision::Allow,
        Named::Caller | Named::Account => Decision::NoIdentityAllow,
    }
}
