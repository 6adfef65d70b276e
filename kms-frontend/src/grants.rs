//! Grants: the model beyond storage (which operations a grant may name for a key, the
//! quotas), grant tokens, and the one evaluation of a grant against a request
//! ([`grant_allows`], called by the authorization hook in `authz::context`).
//!
//! - A grant lets its grantee run exactly its operations on its one key, while its
//!   encryption context constraints hold (for the operations that take an encryption
//!   context; DescribeKey, RetireGrant and CreateGrant ignore them, and a CreateGrant made
//!   through a grant may only hand on a subset of its operations under constraints at least
//!   as strict). Grants only allow: an explicit `Deny` in a policy still wins, because the
//!   hook consults grants only after the policies refused without a `Deny`.
//! - A grant token is `base64url(version ‖ nonce ‖ grant id ‖ key ARN ‖ HMAC-SHA-256)`
//!   under a key derived from the root key: it names the grant and cannot be forged or
//!   altered (a forged or garbage token is `InvalidGrantTokenException`). Each CreateGrant
//!   answer carries a fresh token (a new nonce); all tokens of a grant are interchangeable.
//!   Grants are stored durably before CreateGrant answers, so a token is usable at once;
//!   the token still proves the grant when the grant is named only through it.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::auth::Caller;
use crate::authz::evaluate::role_of_session;
use crate::catalogue::KeySpec;
use crate::key_state::Operation;
use crate::protocol::KmsError;
use crate::storage::{GrantConstraints, GrantRecord, KeyRecord};

/// The operations a grant may name (the model's `GrantOperation` enum).
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
    "Encapsulate",
    "Decapsulate",
];

/// The grant operations that take an encryption context: the ones constraints bind.
const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// The KMS operations that take `GrantTokens` (botocore model): their tokens are checked
/// before the authorization decision.
pub const TOKEN_OPERATIONS: &[&str] = &[
    "CreateGrant",
    "Decrypt",
    "DeriveSharedSecret",
    "DescribeKey",
    "Encapsulate",
    "Decapsulate",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GetPublicKey",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// AWS's quota of grants per customer managed key.
pub const DEFAULT_MAX_GRANTS_PER_KEY: u64 = 50_000;

/// The grant quotas (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantLimits {
    /// Grants on one key.
    pub per_key: u64,
    /// Grants for one grantee principal on one key. AWS dropped its separate quota (500) in
    /// April 2021, so the default is the per-key quota.
    pub per_grantee: u64,
}

impl Default for GrantLimits {
    fn default() -> Self {
        Self {
            per_key: DEFAULT_MAX_GRANTS_PER_KEY,
            per_grantee: DEFAULT_MAX_GRANTS_PER_KEY,
        }
    }
}

/// The key-state and key-type rule a grant operation stands for, if it uses the key
/// material (`None` for CreateGrant, RetireGrant and DescribeKey, which fit every key).
fn key_operation(op: &str) -> Option<Operation> {
    Some(match op {
        "Decrypt" => Operation::Decrypt,
        "Encrypt" => Operation::Encrypt,
        "GenerateDataKey" => Operation::GenerateDataKey,
        "GenerateDataKeyWithoutPlaintext" => Operation::GenerateDataKeyWithoutPlaintext,
        "ReEncryptFrom" | "ReEncryptTo" => Operation::ReEncrypt,
        "Sign" => Operation::Sign,
        "Verify" => Operation::Verify,
        "GetPublicKey" => Operation::GetPublicKey,
        "GenerateDataKeyPair" => Operation::GenerateDataKeyPair,
        "GenerateDataKeyPairWithoutPlaintext" => Operation::GenerateDataKeyPairWithoutPlaintext,
        "GenerateMac" => Operation::GenerateMac,
        "VerifyMac" => Operation::VerifyMac,
        "DeriveSharedSecret" => Operation::DeriveSharedSecret,
        "Encapsulate" => Operation::Encapsulate,
        "Decapsulate" => Operation::Decapsulate,
        _ => return None,
    })
}

/// The first of `operations` that `key`'s type does not allow (the same rule the
/// operations themselves apply, `Operation::accepts`).
pub fn unfit_operation<'a>(key: &KeyRecord, operations: &'a [String]) -> Option<&'a str> {
    operations
        .iter()
        .map(String::as_str)
        .find(|op| key_operation(op).is_some_and(|o| !o.accepts(&key.key_spec, &key.key_usage)))
}

/// Whether grants on `key` may carry encryption context constraints: only symmetric
/// encryption keys have operations that take an encryption context.
pub fn takes_constraints(key: &KeyRecord) -> bool {
    key.key_spec == KeySpec::SymmetricDefault.as_str() && key.key_usage == "ENCRYPT_DECRYPT"
}

/// A new grant id: 64 lower-case hex digits, as AWS's look.
pub fn new_grant_id() -> Result<String, KmsError> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    Ok(to_hex(&id))
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The 32 bytes of a grant id (64 lower-case hex digits); `None` for any other text.
fn id_bytes(grant_id: &str) -> Option<[u8; ID_LEN]> {
    let digits = grant_id.as_bytes();
    if digits.len() != 2 * ID_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; ID_LEN];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Whether `grant_id` has the form of a grant id (InvalidGrantIdException otherwise).
pub fn is_grant_id(grant_id: &str) -> bool {
    id_bytes(grant_id).is_some()
}

const TOKEN_VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const ID_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// The model's bound on a token's length.
pub const MAX_TOKEN_LEN: usize = 8192;

/// What a valid grant token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The key's ARN.
    pub key_arn: String,
    /// The grant id.
    pub grant_id: String,
}

/// Why a grant token is refused (both answer `InvalidGrantTokenException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantTokenError {
    /// Not a token of this format.
    #[error("the grant token is malformed")]
    Malformed,
    /// The authentication tag does not verify: altered, forged, or made under another root
    /// key.
    #[error("the grant token does not verify")]
    Forged,
}

fn token_mac(root: &root_key::RootKey) -> Hmac<Sha256> {
    let key = root.derive(b"kms-frontend/grant-token/v1");
    // HMAC takes keys of any length; a 32-byte key always fits.
    <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..])
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// A fresh token for the grant `grant_id` on the key `key_arn`.
pub fn issue_token(
    root: &root_key::RootKey,
    key_arn: &str,
    grant_id: &str,
) -> Result<String, KmsError> {
    let id =
        id_bytes(grant_id).ok_or_else(|| KmsError::internal("a grant id is not 64 hex digits"))?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let mut body = Vec::with_capacity(1 + NONCE_LEN + ID_LEN + key_arn.len() + MAC_LEN);
    body.push(TOKEN_VERSION);
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&id);
    body.extend_from_slice(key_arn.as_bytes());
    let mut mac = token_mac(root);
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body))
}

/// Checks a token and returns what it names.
pub fn verify_token(root: &root_key::RootKey, token: &str) -> Result<TokenClaims, GrantTokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(GrantTokenError::Malformed);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| GrantTokenError::Malformed)?;
    if raw.len() <= 1 + NONCE_LEN + ID_LEN + MAC_LEN || raw[0] != TOKEN_VERSION {
        return Err(GrantTokenError::Malformed);
    }
    let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
    let mut mac = token_mac(root);
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| GrantTokenError::Forged)?;
    let id = &body[1 + NONCE_LEN..1 + NONCE_LEN + ID_LEN];
    let arn = std::str::from_utf8(&body[1 + NONCE_LEN + ID_LEN..])
        .map_err(|_| GrantTokenError::Malformed)?;
    Ok(TokenClaims {
        key_arn: arn.to_owned(),
        grant_id: to_hex(id),
    })
}

/// The error for a refused token.
pub fn invalid_token() -> KmsError {
    KmsError::client("InvalidGrantTokenException", "Invalid grant token.")
}

/// The names a grant may give the caller by: its ARN, its role (an assumed-role session),
/// its account root and account id (a grant to an account, which the account delegates
/// through its identity policies).
pub fn grantee_names(caller: &Caller) -> Vec<String> {
    let mut names = vec![caller.principal_arn.clone()];
    names.extend(role_of_session(&caller.principal_arn));
    names.push(account_root(caller));
    names.push(caller.account_id.clone());
    names
}

/// `arn:<partition>:iam::<account>:root` of the caller: a grant's `IssuingAccount`.
pub fn account_root(caller: &Caller) -> String {
    format!("arn:{}:iam::{}:root", caller.partition, caller.account_id)
}

/// Whether `principal` (a grantee or retiring principal) names the caller: its ARN or its
/// role directly; its account only when the caller's identity policies allow the action
/// (`identity_allows`), as an account's permissions reach its principals through IAM.
pub fn names_caller(principal: &str, caller: &Caller, identity_allows: bool) -> bool {
    if principal == caller.principal_arn
        || role_of_session(&caller.principal_arn).as_deref() == Some(principal)
    {
        return true;
    }
    (principal == account_root(caller) || principal == caller.account_id) && identity_allows
}

/// One use of a key that a grant might allow.
#[derive(Debug, Clone, Copy)]
pub struct GrantUse<'a> {
    /// The caller.
    pub caller: &'a Caller,
    /// The grant operation (`Encrypt`, `ReEncryptFrom`, `CreateGrant`, …).
    pub operation: &'a str,
    /// The request's encryption context (for the operations that take one; absent = empty).
    pub encryption_context: Option<&'a Map<String, Value>>,
    /// For CreateGrant: the operations and constraints of the grant being created.
    pub child: Option<(&'a [String], Option<&'a GrantConstraints>)>,
    /// Whether the caller's identity policies allow the action on the key (for grants to
    /// the caller's account).
    pub identity_allows: bool,
}

/// The grant evaluation: whether `grant` allows this use.
pub fn grant_allows(grant: &GrantRecord, u: &GrantUse<'_>) -> bool {
    if !names_caller(&grant.grantee_principal, u.caller, u.identity_allows)
        || !grant.operations.iter().any(|o| o == u.operation)
    {
        return false;
    }
    let Some(constraints) = &grant.constraints else {
        return match u.child {
            Some((ops, _)) => ops.iter().all(|o| grant.operations.contains(o)),
            None => true,
        };
    };
    if let Some((ops, child)) = u.child {
        return ops.iter().all(|o| grant.operations.contains(o))
            && child.is_some_and(|c| implies(c, constraints));
    }
    if !CONTEXT_OPERATIONS.contains(&u.operation) {
        // DescribeKey and RetireGrant take no encryption context: constraints do not apply.
        return true;
    }
    let empty = Map::new();
    let context: BTreeMap<&str, &str> = u
        .encryption_context
        .unwrap_or(&empty)
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
        .collect();
    holds(constraints, &context)
}

/// Whether `pair` is in `context`: keys compared ignoring case, values exactly.
fn contains(context: &BTreeMap<&str, &str>, key: &str, value: &str) -> bool {
    context
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && *v == value)
}

/// Whether an encryption context satisfies the constraints.
fn holds(c: &GrantConstraints, context: &BTreeMap<&str, &str>) -> bool {
    let equals = c.encryption_context_equals.as_ref().is_none_or(|want| {
        want.len() == context.len() && want.iter().all(|(k, v)| contains(context, k, v))
    });
    let subset = c
        .encryption_context_subset
        .as_ref()
        .is_none_or(|want| want.iter().all(|(k, v)| contains(context, k, v)));
    equals && subset
}

/// Whether every encryption context satisfying `child` satisfies `parent` (a grant handed
/// on through CreateGrant may only be as strict or stricter).
fn implies(child: &GrantConstraints, parent: &GrantConstraints) -> bool {
    if let Some(exact) = &child.encryption_context_equals {
        // The child allows exactly one context (if its own subset holds on it).
        let context: BTreeMap<&str, &str> = exact
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        return !holds(child, &context) || holds(parent, &context);
    }
    // The child allows any context holding its subset pairs, extra pairs included: only a
    // parent subset the child's subset covers is implied.
    parent.encryption_context_equals.is_none()
        && parent
            .encryption_context_subset
            .as_ref()
            .is_none_or(|want| {
                let have: BTreeMap<&str, &str> = child
                    .encryption_context_subset
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                want.iter().all(|(k, v)| contains(&have, k, v))
            })
}

/// Whether the caller may retire `grant` (RetireGrant): its retiring principal, its grantee
/// when the grant includes RetireGrant, or a principal of the account that created the
/// grant whose identity policies allow `kms:RetireGrant` (`identity_allows`; a key policy
/// cannot give this permission).
pub fn may_retire(grant: &GrantRecord, caller: &Caller, identity_allows: bool) -> bool {
    grant
        .retiring_principal
        .as_deref()
        .is_some_and(|p| names_caller(p, caller, identity_allows))
        || (grant.operations.iter().any(|o| o == "RetireGrant")
            && names_caller(&grant.grantee_principal, caller, identity_allows))
        || (grant.issuing_account == account_root(caller) && identity_allows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
    const BOB: &str = "arn:aws:iam::111122223333:user/bob";

    fn caller(arn: &str) -> Caller {
        Caller {
            account_id: arn.split(':').nth(4).unwrap_or_default().to_owned(),
            principal_arn: arn.to_owned(),
            region: "us-east-1".into(),
            partition: "aws",
            request_id: String::new(),
            event_id: String::new(),
            identity: std::sync::Arc::new(Vec::new()),
            source_ip: None,
            cross_account: false,
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn grant(ops: &[&str], constraints: Option<GrantConstraints>) -> GrantRecord {
        GrantRecord {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            key_id: "k".into(),
            grant_id: "0".repeat(64),
            name: None,
            grantee_principal: BOB.into(),
            retiring_principal: None,
            issuing_account: "arn:aws:iam::111122223333:root".into(),
            operations: ops.iter().map(|o| (*o).to_owned()).collect(),
            constraints,
            creation_date_ms: 0,
        }
    }

    fn context(p: &[(&str, &str)]) -> Map<String, Value> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    fn allows(g: &GrantRecord, who: &str, op: &str, ec: &[(&str, &str)]) -> bool {
        let c = caller(who);
        let ec = context(ec);
        grant_allows(
            g,
            &GrantUse {
                caller: &c,
                operation: op,
                encryption_context: Some(&ec),
                child: None,
                identity_allows: false,
            },
        )
    }

    #[test]
    fn tokens_name_their_grant_and_cannot_be_forged() {
        let root = root_key::RootKey::generate().expect("rng");
        let id = new_grant_id().expect("id");
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        let t1 = issue_token(&root, arn, &id).expect("token");
        let t2 = issue_token(&root, arn, &id).expect("token");
        assert_ne!(t1, t2, "every token is fresh");
        for t in [&t1, &t2] {
            let claims = verify_token(&root, t).expect("valid");
            assert_eq!(claims.grant_id, id);
            assert_eq!(claims.key_arn, arn);
        }
        let other = root_key::RootKey::generate().expect("rng");
        assert_eq!(verify_token(&other, &t1), Err(GrantTokenError::Forged));
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t1)
            .expect("b64");
        raw[20] ^= 1;
        let altered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(verify_token(&root, &altered), Err(GrantTokenError::Forged));
        assert_eq!(
            verify_token(&root, "garbage!"),
            Err(GrantTokenError::Malformed)
        );
        assert_eq!(verify_token(&root, "AQID"), Err(GrantTokenError::Malformed));
    }

    #[test]
    fn a_grant_allows_its_grantee_its_operations_within_its_constraints() {
        let g = grant(&["Encrypt", "DescribeKey"], None);
        assert!(allows(&g, BOB, "Encrypt", &[]));
        assert!(!allows(&g, BOB, "Decrypt", &[]));
        assert!(!allows(&g, ALICE, "Encrypt", &[]));

        let equals = grant(
            &["Encrypt", "DescribeKey"],
            Some(GrantConstraints {
                encryption_context_equals: pairs(&[("Dept", "IT")]),
                encryption_context_subset: None,
            }),
        );
        assert!(allows(&equals, BOB, "Encrypt", &[("Dept", "IT")]));
        assert!(
            allows(&equals, BOB, "Encrypt", &[("dept", "IT")]),
            "keys ignore case"
        );
        assert!(
            !allows(&equals, BOB, "Encrypt", &[("Dept", "it")]),
            "values do not"
        );
        assert!(!allows(
            &equals,
            BOB,
            "Encrypt",
            &[("Dept", "IT"), ("x", "y")]
        ));
        assert!(!allows(&equals, BOB, "Encrypt", &[]));
        assert!(
            allows(&equals, BOB, "DescribeKey", &[]),
            "no context to constrain"
        );

        let subset = grant(
            &["Encrypt"],
            Some(GrantConstraints {
                encryption_context_equals: None,
                encryption_context_subset: pairs(&[("Dept", "IT")]),
            }),
        );
        assert!(allows(
            &subset,
            BOB,
            "Encrypt",
            &[("Dept", "IT"), ("x", "y")]
        ));
        assert!(!allows(&subset, BOB, "Encrypt", &[("x", "y")]));
    }

    #[test]
    fn a_grant_handed_on_is_no_wider() {
        let parent = grant(
            &["Encrypt", "Decrypt", "CreateGrant"],
            Some(GrantConstraints {
                encryption_context_equals: None,
                encryption_context_subset: pairs(&[("a", "1")]),
            }),
        );
        let c = caller(BOB);
        let child = |ops: &[&str], cons: Option<GrantConstraints>| {
            let ops: Vec<String> = ops.iter().map(|o| (*o).to_owned()).collect();
            grant_allows(
                &parent,
                &GrantUse {
                    caller: &c,
                    operation: "CreateGrant",
                    encryption_context: None,
                    child: Some((&ops, cons.as_ref())),
                    identity_allows: false,
                },
            )
        };
        let sub = |p: &[(&str, &str)]| GrantConstraints {
            encryption_context_equals: None,
            encryption_context_subset: pairs(p),
        };
        let eq = |p: &[(&str, &str)]| GrantConstraints {
            encryption_context_equals: pairs(p),
            encryption_context_subset: None,
        };
        assert!(child(&["Encrypt"], Some(sub(&[("a", "1"), ("b", "2")]))));
        assert!(child(&["Decrypt"], Some(eq(&[("A", "1")]))));
        assert!(!child(&["Encrypt"], None), "constraints dropped");
        assert!(!child(&["Encrypt"], Some(sub(&[("b", "2")]))));
        assert!(!child(&["Encrypt"], Some(eq(&[("b", "2")]))));
        assert!(
            !child(&["Sign"], Some(sub(&[("a", "1")]))),
            "operation not held"
        );
    }

    #[test]
    fn who_may_retire() {
        let mut g = grant(&["Encrypt"], None);
        g.retiring_principal = Some(ALICE.into());
        let carol = caller("arn:aws:iam::444455556666:user/carol");
        assert!(may_retire(&g, &caller(ALICE), false));
        assert!(
            !may_retire(&g, &caller(BOB), false),
            "grantee without RetireGrant"
        );
        assert!(
            may_retire(&g, &caller(BOB), true),
            "issuing account with IAM permission"
        );
        assert!(!may_retire(&g, &carol, true));
        g.operations.push("RetireGrant".into());
        assert!(may_retire(&g, &caller(BOB), false));
    }

    #[test]
    fn grant_operations_fit_the_key_type() {
        let mut key = KeyRecord {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            key_id: "k".into(),
            arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            creation_date_ms: 0,
            description: String::new(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            key_state: crate::catalogue::KeyState::Enabled,
            deletion_date_ms: None,
            pending_window_days: None,
            multi_region: false,
            custom_key_store_id: None,
            xks_key_id: None,
            policy: "{}".into(),
            sealed_material: None,
            material_id: None,
            tags: Vec::new(),
        };
        let ops = |o: &[&str]| o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let all = ops(GRANT_OPERATIONS);
        assert_eq!(
            unfit_operation(&key, &ops(&["Encrypt", "ReEncryptTo", "CreateGrant"])),
            None
        );
        assert_eq!(
            unfit_operation(&key, &ops(&["Encrypt", "Sign"])),
            Some("Sign")
        );
        key.key_spec = "ECC_NIST_P256".into();
        key.key_usage = "SIGN_VERIFY".into();
        assert_eq!(
            unfit_operation(&key, &ops(&["Sign", "Verify", "GetPublicKey"])),
            None
        );
        assert_eq!(unfit_operation(&key, &all), Some("Decrypt"));
        assert!(!takes_constraints(&key));
    }
}
