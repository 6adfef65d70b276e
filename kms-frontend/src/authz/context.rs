//! The authorization hook: for every KMS call, the resources AWS authorizes it on, the
//! request's condition keys, and the decision ([`authorize`], called from `Kms::handle`,
//! the one place every operation goes through).
//!
//! References that do not resolve (an unknown key, a malformed body) are left to the
//! operation, which answers them as AWS does (`NotFoundException`, a validation error):
//! there is nothing to authorize against and nothing the request could change.

use base64::Engine as _;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use super::evaluate::role_of_session;
use super::{Decision, Policy, Request, denial, evaluate};
use crate::auth::Caller;
use crate::protocol::KmsError;
use crate::service::{KeyRef, Kms};
use crate::storage::KeyRecord;

/// Operations authorized on resource `*` by identity policies alone.
const STAR_OPERATIONS: &[&str] = &[
    "CreateKey",
    "ListKeys",
    "ListAliases",
    "GenerateRandom",
    "CreateCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
    "UpdateCustomKeyStore",
    "DeleteCustomKeyStore",
    "DescribeCustomKeyStores",
    "ListRetirableGrants",
];

/// Operations authorized on the key named by `KeyId` (key policy and identity policies).
const KEY_OPERATIONS: &[&str] = &[
    "CancelKeyDeletion",
    "CreateGrant",
    "Decapsulate",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "EnableKey",
    "EnableKeyRotation",
    "Encapsulate",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GetKeyLastUsage",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListResourceTags",
    "PutKeyPolicy",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "Sign",
    "TagResource",
    "UntagResource",
    "UpdateKeyDescription",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

/// Operations with their own resources (ciphertext, two keys, an alias and its key).
const SPECIAL_OPERATIONS: &[&str] = &[
    "Decrypt",
    "ReEncrypt",
    "CreateAlias",
    "UpdateAlias",
    "DeleteAlias",
];

/// Operations whose AWS documentation says "Cross-account use: Yes" (botocore model).
pub const CROSS_ACCOUNT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "Sign",
    "Verify",
    "DeriveSharedSecret",
    "DescribeKey",
    "GetPublicKey",
    "Encapsulate",
    "Decapsulate",
    "ReEncrypt",
    "CreateGrant",
    "ListGrants",
    "RevokeGrant",
    "RetireGrant",
    "GetKeyRotationStatus",
];

/// Whether `op` is an operation of the KMS API (known to the authorizer).
pub fn is_kms_operation(op: &str) -> bool {
    STAR_OPERATIONS.contains(&op)
        || KEY_OPERATIONS.contains(&op)
        || SPECIAL_OPERATIONS.contains(&op)
}

/// The request fields condition keys are made of.
fn request_keys(
    op: &str,
    caller: &Caller,
    body: &Value,
    now_ms: i64,
) -> BTreeMap<String, Vec<String>> {
    let mut keys = BTreeMap::new();
    let mut put = |k: &str, v: Vec<String>| {
        keys.insert(k.to_ascii_lowercase(), v);
    };
    put("kms:CallerAccount", vec![caller.account_id.clone()]);
    put("aws:PrincipalAccount", vec![caller.account_id.clone()]);
    let principal_arn =
        role_of_session(&caller.principal_arn).unwrap_or_else(|| caller.principal_arn.clone());
    put("aws:PrincipalArn", vec![principal_arn]);
    // Clients always reach the front end over TLS: plain HTTP is only allowed behind a
    // TLS-terminating load balancer (`[server] allow_plaintext_http`).
    put("aws:SecureTransport", vec!["true".into()]);
    if let Some(ip) = caller.source_ip {
        put("aws:SourceIp", vec![ip.to_string()]);
    }
    if let Some(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    {
        put("aws:CurrentTime", vec![t]);
    }
    put("aws:EpochTime", vec![(now_ms / 1000).to_string()]);
    let s = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(ctx) = body.get("EncryptionContext").and_then(Value::as_object) {
        let mut names = Vec::new();
        for (k, v) in ctx {
            if let Some(v) = v.as_str() {
                put(&format!("kms:EncryptionContext:{k}"), vec![v.to_owned()]);
            }
            names.push(k.clone());
        }
        put("kms:EncryptionContextKeys", names);
    }
    let with_default = |name: &str, default: Option<&str>| s(name).or(default.map(str::to_owned));
    let crypto = [
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    ];
    if crypto.contains(&op) {
        let alg = if op == "ReEncrypt" {
            with_default("DestinationEncryptionAlgorithm", Some("SYMMETRIC_DEFAULT"))
        } else {
            with_default("EncryptionAlgorithm", Some("SYMMETRIC_DEFAULT"))
        };
        put("kms:EncryptionAlgorithm", alg.into_iter().collect());
    }
    for (field, key) in [
        ("SigningAlgorithm", "kms:SigningAlgorithm"),
        ("MessageType", "kms:MessageType"),
        ("MacAlgorithm", "kms:MacAlgorithm"),
        ("KeyAgreementAlgorithm", "kms:KeyAgreementAlgorithm"),
        ("KeyPairSpec", "kms:DataKeyPairSpec"),
    ] {
        if let Some(v) = s(field) {
            put(key, vec![v]);
        }
    }
    if op == "Sign" || op == "Verify" {
        put(
            "kms:MessageType",
            vec![s("MessageType").unwrap_or_else(|| "RAW".into())],
        );
    }
    if op == "CreateKey" {
        let spec = s("KeySpec")
            .or_else(|| s("CustomerMasterKeySpec"))
            .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
        put("kms:KeySpec", vec![spec.clone()]);
        put("kms:CustomerMasterKeySpec", vec![spec]);
        let usage = s("KeyUsage").unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
        put("kms:KeyUsage", vec![usage.clone()]);
        put("kms:CustomerMasterKeyUsage", vec![usage]);
        put(
            "kms:KeyOrigin",
            vec![s("Origin").unwrap_or_else(|| "AWS_KMS".into())],
        );
    }
    if op == "CreateKey" || op == "PutKeyPolicy" {
        let bypass = body
            .get("BypassPolicyLockoutSafetyCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        put(
            "kms:BypassPolicyLockoutSafetyCheck",
            vec![bypass.to_string()],
        );
    }
    if let Some(tags) = body.get("Tags").and_then(Value::as_array) {
        let mut names = Vec::new();
        for t in tags {
            if let (Some(k), Some(v)) = (
                t.get("TagKey").and_then(Value::as_str),
                t.get("TagValue").and_then(Value::as_str),
            ) {
                put(&format!("aws:RequestTag/{k}"), vec![v.to_owned()]);
                names.push(k.to_owned());
            }
        }
        put("aws:TagKeys", names);
    }
    if let Some(names) = body.get("TagKeys").and_then(Value::as_array) {
        put(
            "aws:TagKeys",
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
        );
    }
    keys
}

/// Adds the key's own properties, tags and (when a policy tests them: they cost a storage
/// read) aliases.
fn key_keys(
    kms: &Kms,
    key: &KeyRecord,
    with_aliases: bool,
    keys: &mut BTreeMap<String, Vec<String>>,
) {
    let mut put = |k: &str, v: Vec<String>| {
        keys.entry(k.to_ascii_lowercase()).or_insert(v);
    };
    put("kms:KeySpec", vec![key.key_spec.clone()]);
    put("kms:CustomerMasterKeySpec", vec![key.key_spec.clone()]);
    put("kms:KeyUsage", vec![key.key_usage.clone()]);
    put("kms:CustomerMasterKeyUsage", vec![key.key_usage.clone()]);
    put("kms:KeyOrigin", vec![key.origin.clone()]);
    put("kms:MultiRegion", vec![key.multi_region.to_string()]);
    for (k, v) in &key.tags {
        put(&format!("aws:ResourceTag/{k}"), vec![v.clone()]);
    }
    if !with_aliases {
        return;
    }
    if let Ok(page) = kms.storage.list_aliases(
        &key.account_id,
        &key.region,
        Some(key.key_id.as_str()),
        None,
        1000,
    ) {
        let names: Vec<String> = page.items.into_iter().map(|a| a.alias_name).collect();
        if !names.is_empty() {
            put("kms:ResourceAliases", names);
        }
    }
}

/// Key policies parsed for evaluation, by their text (so a PutKeyPolicy needs no
/// invalidation): parsing a long policy on every request cost more than the rest of an
/// Encrypt (BENCHMARKS.md, "Authorization cost on Encrypt").
static PARSED_POLICIES: LazyLock<Mutex<HashMap<String, Arc<Policy>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// At most this many parsed policies are kept (each text is at most 32 KB); when full, the
/// cache starts over.
const MAX_PARSED_POLICIES: usize = 256;

fn parsed_key_policy(text: &str) -> Result<Arc<Policy>, super::PolicyParseError> {
    if let Some(p) = PARSED_POLICIES
        .lock()
        .ok()
        .and_then(|cache| cache.get(text).cloned())
    {
        return Ok(p);
    }
    let parsed = Arc::new(Policy::parse(text)?);
    if let Ok(mut cache) = PARSED_POLICIES.lock() {
        if cache.len() >= MAX_PARSED_POLICIES {
            cache.clear();
        }
        cache.insert(text.to_owned(), parsed.clone());
    }
    Ok(parsed)
}

/// One authorization check of a request.
struct Check<'a> {
    kms: &'a Kms,
    caller: &'a Caller,
    base: BTreeMap<String, Vec<String>>,
}

impl Check<'_> {
    fn request(&self, action: &str, resource: &str, resource_account: Option<&str>) -> Request {
        Request {
            action: format!("kms:{action}"),
            resource: resource.to_owned(),
            principal_arn: self.caller.principal_arn.clone(),
            principal_account: self.caller.account_id.clone(),
            resource_account: resource_account.map(str::to_owned),
            partition: self.caller.partition.to_owned(),
            via_service_principal: None,
            keys: self.base.clone(),
        }
    }

    fn finish(&self, req: &Request, decision: Decision, on: &str) -> Result<(), KmsError> {
        match denial(decision, &self.caller.principal_arn, &req.action, on) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Identity policies alone (resource `*`, alias ARNs).
    fn identity_only(&self, action: &str, resource: &str) -> Result<(), KmsError> {
        let req = self.request(action, resource, None);
        let d = evaluate(&req, None, &self.caller.identity, &[]);
        self.finish(&req, d, &format!("resource: {resource}"))
    }

    /// The key policy and identity policies, on `key`.
    fn on_key(&self, action: &str, key: &KeyRecord, shown: Option<&str>) -> Result<(), KmsError> {
        let mut req = self.request(action, &key.arn, Some(&key.account_id));
        let policy = match parsed_key_policy(&key.policy) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(key = %key.arn, error = %e, "a stored key policy does not parse");
                return Err(KmsError::internal("An internal error occurred."));
            }
        };
        const ALIASES: &str = "kms:resourcealiases";
        let with_aliases =
            policy.tests_key(ALIASES) || self.caller.identity.iter().any(|p| p.tests_key(ALIASES));
        key_keys(self.kms, key, with_aliases, &mut req.keys);
        let d = evaluate(&req, Some(&policy), &self.caller.identity, &[]);
        let on = shown.map_or_else(|| format!("resource: {}", key.arn), str::to_owned);
        self.finish(&req, d, &on)
    }

    fn find(&self, reference: &str) -> Option<KeyRecord> {
        self.kms
            .find_key(self.caller, reference, KeyRef::KeyOrAlias)
            .ok()
    }

    fn with_request_alias(&mut self, reference: &str) {
        let alias = if reference.starts_with("alias/") {
            Some(reference.to_owned())
        } else if reference.starts_with("arn:") {
            reference
                .split_once(":alias/")
                .map(|(_, a)| format!("alias/{a}"))
        } else {
            None
        };
        if let Some(a) = alias {
            self.base.insert("kms:requestalias".into(), vec![a]);
        }
    }

    fn key_from_ciphertext(&self, body: &Value) -> Option<KeyRecord> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body.get("CiphertextBlob")?.as_str()?)
            .ok()?;
        let id = crate::blob::blob_key_id(&blob).ok()?.to_owned();
        self.find(&id)
    }
}

/// Decides whether `caller` may run `operation` with `body`; `Err` is the
/// `AccessDeniedException` to answer. Unknown operations and references are left to the
/// operation (see the module documentation).
pub fn authorize(kms: &Kms, operation: &str, caller: &Caller, body: &[u8]) -> Result<(), KmsError> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    let mut check = Check {
        kms,
        caller,
        base: request_keys(operation, caller, &body, kms.clock.now_ms()),
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    if STAR_OPERATIONS.contains(&operation) {
        return check.identity_only(operation, "*");
    }
    if KEY_OPERATIONS.contains(&operation) {
        let Some(reference) = field("KeyId") else {
            return Ok(());
        };
        check.with_request_alias(&reference);
        return match check.find(&reference) {
            Some(key) => check.on_key(operation, &key, None),
            None => Ok(()),
        };
    }
    match operation {
        "Decrypt" => {
            if let Some(reference) = field("KeyId") {
                check.with_request_alias(&reference);
                match check.find(&reference) {
                    Some(key) => check.on_key("Decrypt", &key, None),
                    None => Ok(()),
                }
            } else {
                match check.key_from_ciphertext(&body) {
                    Some(key) => check.on_key(
                        "Decrypt",
                        &key,
                        Some("the resource associated with this ciphertext"),
                    ),
                    None => Ok(()),
                }
            }
        }
        "ReEncrypt" => {
            let source = match field("SourceKeyId") {
                Some(r) => check.find(&r),
                None => check.key_from_ciphertext(&body),
            };
            if let Some(key) = &source {
                check.on_key("ReEncryptFrom", key, None)?;
            }
            if let Some(r) = field("DestinationKeyId") {
                check.with_request_alias(&r);
                if let Some(dest) = check.find(&r) {
                    check.on_key("ReEncryptTo", &dest, None)?;
                }
            }
            Ok(())
        }
        "CreateAlias" | "UpdateAlias" | "DeleteAlias" => {
            let Some(alias) = field("AliasName") else {
                return Ok(());
            };
            let alias_arn = kms.alias_arn(caller, &alias);
            check.identity_only(operation, &alias_arn)?;
            // The key the alias points at now (UpdateAlias, DeleteAlias) and the new target.
            if operation != "CreateAlias"
                && let Some(current) = check.find(&alias)
            {
                check.on_key(operation, &current, None)?;
            }
            if let Some(target) = field("TargetKeyId").and_then(|t| check.find(&t)) {
                check.on_key(operation, &target, None)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The lockout safety check made by the evaluator: whether `policy_text`, as the key
/// policy, with the caller's identity policies, lets the caller call `PutKeyPolicy` on the
/// key (`key_arn`, or at CreateKey every key of the caller's account and Region) in the
/// context of this request.
pub fn can_put_key_policy(
    kms: &Kms,
    caller: &Caller,
    policy_text: &str,
    key_arn: Option<&str>,
) -> bool {
    let Ok(policy) = Policy::parse(policy_text) else {
        return false;
    };
    let resource = key_arn.map_or_else(
        || {
            format!(
                "arn:{}:kms:{}:{}:key/*",
                caller.partition, caller.region, caller.account_id
            )
        },
        str::to_owned,
    );
    let body = serde_json::json!({"PolicyName": "default"});
    let check = Check {
        kms,
        caller,
        base: request_keys("PutKeyPolicy", caller, &body, kms.clock.now_ms()),
    };
    let req = check.request("PutKeyPolicy", &resource, Some(&caller.account_id));
    evaluate(&req, Some(&policy), &caller.identity, &[]) == Decision::Allow
}
