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
use super::{Decision, Grant, Policy, Request, denial, evaluate};
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
    // Decided by the grant it retires (`authorize_retire`, called by the operation).
    "RetireGrant",
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
    // Rotation and import (issue 18): the request's values, ImportKeyMaterial's
    // ExpirationModel with its default.
    if op == "EnableKeyRotation"
        && let Some(days) = body.get("RotationPeriodInDays").and_then(Value::as_i64)
    {
        put("kms:RotationPeriodInDays", vec![days.to_string()]);
    }
    if op == "GetParametersForImport" {
        for (field, key) in [
            ("WrappingAlgorithm", "kms:WrappingAlgorithm"),
            ("WrappingKeySpec", "kms:WrappingKeySpec"),
        ] {
            if let Some(v) = s(field) {
                put(key, vec![v]);
            }
        }
    }
    if op == "ImportKeyMaterial" {
        put(
            "kms:ExpirationModel",
            vec![s("ExpirationModel").unwrap_or_else(|| "KEY_MATERIAL_EXPIRES".into())],
        );
        if let Some(t) = body.get("ValidTo").and_then(Value::as_f64) {
            put("kms:ValidTo", vec![(t.floor() as i64).to_string()]);
        }
    }
    if op == "CreateGrant" {
        grant_request_keys(body, &mut put);
    }
    // Multi-Region keys (issue 19): the Region a replica goes to, the Region the primary
    // moves to.
    if op == "ReplicateKey"
        && let Some(r) = s("ReplicaRegion")
    {
        put("kms:ReplicaRegion", vec![r]);
    }
    if op == "UpdatePrimaryRegion"
        && let Some(r) = s("PrimaryRegion")
    {
        put("kms:PrimaryRegion", vec![r]);
    }
    if matches!(op, "CreateGrant" | "ListGrants" | "RevokeGrant") {
        // Only calls an integrated AWS service makes for a principal set it to true; this
        // front end has no such callers.
        put("kms:GrantIsForAWSResource", vec!["false".into()]);
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
        let multi_region = body
            .get("MultiRegion")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        put("kms:MultiRegion", vec![multi_region.to_string()]);
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

/// CreateGrant's condition keys: the grant's operations, principals, constraint type and
/// the constraint's encryption context (`kms:EncryptionContext:<k>`, as AWS supplies them).
fn grant_request_keys(body: &Value, put: &mut impl FnMut(&str, Vec<String>)) {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    put("kms:GrantOperations", strings(body.get("Operations")));
    for (field, key) in [
        ("GranteePrincipal", "kms:GranteePrincipal"),
        ("RetiringPrincipal", "kms:RetiringPrincipal"),
    ] {
        if let Some(v) = body.get(field).and_then(Value::as_str) {
            put(key, vec![v.to_owned()]);
        }
    }
    let Some(constraints) = body.get("Constraints").and_then(Value::as_object) else {
        return;
    };
    let mut types = Vec::new();
    let mut names = Vec::new();
    for kind in ["EncryptionContextEquals", "EncryptionContextSubset"] {
        let Some(pairs) = constraints.get(kind).and_then(Value::as_object) else {
            continue;
        };
        types.push(kind.to_owned());
        for (k, v) in pairs {
            if let Some(v) = v.as_str() {
                put(&format!("kms:EncryptionContext:{k}"), vec![v.to_owned()]);
            }
            names.push(k.clone());
        }
    }
    if !types.is_empty() {
        put("kms:GrantConstraintType", types);
        put("kms:EncryptionContextKeys", names);
    }
}

/// Adds the key's own properties, tags and (when a policy tests them: they cost a storage
/// read) aliases and multi-Region role. A failed read is an error, never a missing value: a
/// Deny conditioned on an absent key would not apply, so deciding without it could allow
/// what the policy denies.
fn key_keys(
    kms: &Kms,
    key: &KeyRecord,
    with_aliases: bool,
    with_region_role: bool,
    keys: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), KmsError> {
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
    // A multi-Region key's role costs a storage read: only when a policy tests it.
    if key.multi_region
        && with_region_role
        && let Some(set) = kms
            .storage
            .multi_region_set(&key.account_id, &key.key_id)
            .map_err(crate::service::storage_error)?
    {
        let role = if set.primary_region == key.region {
            "PRIMARY"
        } else {
            "REPLICA"
        };
        put("kms:MultiRegionKeyType", vec![role.to_owned()]);
    }
    if !with_aliases {
        return Ok(());
    }
    let page = kms
        .storage
        .list_aliases(
            &key.account_id,
            &key.region,
            Some(key.key_id.as_str()),
            None,
            1000,
        )
        .map_err(crate::service::storage_error)?;
    let names: Vec<String> = page.items.into_iter().map(|a| a.alias_name).collect();
    if !names.is_empty() {
        put("kms:ResourceAliases", names);
    }
    Ok(())
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
    /// The request body (grant constraints read its encryption context; CreateGrant's
    /// grant parameters).
    body: &'a Value,
    /// The grants the request's `GrantTokens` name (verified).
    tokens: Vec<crate::grants::TokenClaims>,
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
        const ROLE: &str = "kms:multiregionkeytype";
        let tested = |name: &str| {
            policy.tests_key(name) || self.caller.identity.iter().any(|p| p.tests_key(name))
        };
        key_keys(self.kms, key, tested(ALIASES), tested(ROLE), &mut req.keys)?;
        let mut d = evaluate(&req, Some(&policy), &self.caller.identity, &[]);
        // Grants only allow, so they are read only when the policies refused without an
        // explicit Deny (a caller the policies allow pays nothing for them).
        if matches!(d, Decision::NoResourceAllow | Decision::NoIdentityAllow) {
            let grants = self.applicable_grants(action, key, &req)?;
            if !grants.is_empty() {
                d = evaluate(&req, Some(&policy), &self.caller.identity, &grants);
            }
        }
        let on = shown.map_or_else(|| format!("resource: {}", key.arn), str::to_owned);
        self.finish(&req, d, &on)
    }

    /// The grants on `key` that allow this request to the caller (`crate::grants::
    /// grant_allows` decides each), as the evaluator takes them: the caller's grants by
    /// grantee name, and those its grant tokens name.
    fn applicable_grants(
        &self,
        action: &str,
        key: &KeyRecord,
        req: &Request,
    ) -> Result<Vec<Grant>, KmsError> {
        let names = crate::grants::grantee_names(self.caller);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut records = self
            .kms
            .storage
            .grants_for_grantees(key.address(), &names)
            .map_err(crate::service::storage_error)?;
        for claims in self.tokens.iter().filter(|c| c.key_arn == key.arn) {
            if records.iter().any(|g| g.grant_id == claims.grant_id) {
                continue;
            }
            // A token of a grant since retired or revoked names nothing.
            if let Some(g) = self
                .kms
                .storage
                .get_grant(key.address(), &claims.grant_id)
                .map_err(crate::service::storage_error)?
            {
                records.push(g);
            }
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let identity_allows = evaluate(req, None, &self.caller.identity, &[]) == Decision::Allow;
        let context_field = match action {
            "ReEncryptFrom" => "SourceEncryptionContext",
            "ReEncryptTo" => "DestinationEncryptionContext",
            _ => "EncryptionContext",
        };
        let child_ops: Vec<String> = self
            .body
            .get("Operations")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let child_constraints = grant_constraints(self.body);
        let grant_use = crate::grants::GrantUse {
            caller: self.caller,
            operation: action,
            encryption_context: self.body.get(context_field).and_then(Value::as_object),
            child: (action == "CreateGrant")
                .then_some((&child_ops[..], child_constraints.as_ref())),
            identity_allows,
        };
        Ok(records
            .iter()
            .filter(|g| crate::grants::grant_allows(g, &grant_use))
            .map(|g| Grant {
                grantee: req.principal_arn.clone(),
                operations: g.operations.clone(),
            })
            .collect())
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
    let tokens = match verified_tokens(kms, &body) {
        _ if !crate::grants::TOKEN_OPERATIONS.contains(&operation) => Vec::new(),
        Ok(tokens) => tokens,
        // The model lists InvalidGrantTokenException for every operation taking tokens but
        // DescribeKey, which uses the valid ones and ignores the rest.
        Err(_) if operation == "DescribeKey" => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut check = Check {
        kms,
        caller,
        base: request_keys(operation, caller, &body, kms.clock.now_ms()),
        body: &body,
        tokens,
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
        body: &body,
        tokens: Vec::new(),
    };
    let req = check.request("PutKeyPolicy", &resource, Some(&caller.account_id));
    evaluate(&req, Some(&policy), &caller.identity, &[]) == Decision::Allow
}

/// ReplicateKey's and UpdatePrimaryRegion's checks beyond the key named by `KeyId` (which
/// [`authorize`] made): `operation` on `key`, another member of the set, with the
/// request's condition keys (UpdatePrimaryRegion is authorized in both Regions).
pub fn authorize_member(
    kms: &Kms,
    caller: &Caller,
    operation: &str,
    key: &KeyRecord,
    body: &Value,
) -> Result<(), KmsError> {
    let check = Check {
        kms,
        caller,
        base: request_keys(operation, caller, body, kms.clock.now_ms()),
        body,
        tokens: Vec::new(),
    };
    check.on_key(operation, key, None)
}

/// ReplicateKey's identity-policy checks in the replica's Region (`caller` as if it called
/// there): `kms:CreateKey`, and `kms:TagResource` when the request tags the replica.
pub fn authorize_replica_creation(
    kms: &Kms,
    caller: &Caller,
    body: &Value,
) -> Result<(), KmsError> {
    let mut base = request_keys("ReplicateKey", caller, body, kms.clock.now_ms());
    // The key created there is a multi-Region key.
    base.insert("kms:multiregion".into(), vec!["true".into()]);
    let check = Check {
        kms,
        caller,
        base,
        body,
        tokens: Vec::new(),
    };
    check.identity_only("CreateKey", "*")?;
    if body
        .get("Tags")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        check.identity_only("TagResource", "*")?;
    }
    Ok(())
}

/// The `Constraints` of a CreateGrant body, as stored grants hold them.
fn grant_constraints(body: &Value) -> Option<crate::storage::GrantConstraints> {
    let c = body.get("Constraints")?.as_object()?;
    let pairs = |kind: &str| -> Option<BTreeMap<String, String>> {
        c.get(kind)?.as_object().map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
    };
    let out = crate::storage::GrantConstraints {
        encryption_context_equals: pairs("EncryptionContextEquals"),
        encryption_context_subset: pairs("EncryptionContextSubset"),
    };
    (out.encryption_context_equals.is_some() || out.encryption_context_subset.is_some())
        .then_some(out)
}

/// The request's `GrantTokens`, verified: any token that is not one this front end issued
/// is `InvalidGrantTokenException`. Members the model refuses (too many, too long, not
/// strings) are left to the operation's validation.
fn verified_tokens(kms: &Kms, body: &Value) -> Result<Vec<crate::grants::TokenClaims>, KmsError> {
    let Some(tokens) = body.get("GrantTokens").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    if tokens.len() > MAX_GRANT_TOKENS {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for t in tokens {
        let Some(t) = t.as_str() else {
            return Ok(Vec::new());
        };
        if t.is_empty() || t.len() > crate::grants::MAX_TOKEN_LEN {
            return Ok(Vec::new());
        }
        out.push(
            crate::grants::verify_token(&kms.root, t)
                .map_err(|_| crate::grants::invalid_token())?,
        );
    }
    Ok(out)
}

/// At most this many `GrantTokens` in a request (the model's bound).
const MAX_GRANT_TOKENS: usize = 10;

/// RetireGrant's decision, made by the operation once it found the grant: an explicit
/// `Deny` of `kms:RetireGrant` (key policy or identity policies) refuses; otherwise
/// `crate::grants::may_retire` decides (the retiring principal, the grantee of a grant
/// that includes RetireGrant, or a principal of the issuing account whose identity
/// policies allow `kms:RetireGrant` on the key).
pub fn authorize_retire(
    kms: &Kms,
    caller: &Caller,
    key: &KeyRecord,
    grant: &crate::storage::GrantRecord,
) -> Result<(), KmsError> {
    let body = serde_json::json!({});
    let check = Check {
        kms,
        caller,
        base: request_keys("RetireGrant", caller, &body, kms.clock.now_ms()),
        body: &body,
        tokens: Vec::new(),
    };
    let mut req = check.request("RetireGrant", &key.arn, Some(&key.account_id));
    key_keys(kms, key, false, false, &mut req.keys)?;
    let policy = parsed_key_policy(&key.policy).map_err(|e| {
        tracing::error!(key = %key.arn, error = %e, "a stored key policy does not parse");
        KmsError::internal("An internal error occurred.")
    })?;
    let on = format!("resource: {}", key.arn);
    if let d @ (Decision::ExplicitDenyResource | Decision::ExplicitDenyIdentity) =
        evaluate(&req, Some(&policy), &caller.identity, &[])
    {
        return check.finish(&req, d, &on);
    }
    let identity_allows = evaluate(&req, None, &caller.identity, &[]) == Decision::Allow;
    if crate::grants::may_retire(grant, caller, identity_allows) {
        Ok(())
    } else {
        check.finish(&req, Decision::NoResourceAllow, &on)
    }
}
