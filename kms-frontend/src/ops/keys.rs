//! CreateKey and the key lifecycle: DescribeKey, ListKeys, UpdateKeyDescription,
//! EnableKey/DisableKey, ScheduleKeyDeletion/CancelKeyDeletion.

use serde::Deserialize;
use serde_json::{Value, json};

use super::paging;
use crate::auth::Caller;
use crate::catalogue::{
    self, ConnectionState, KeyMetadataView, KeySpec, KeyState, KeyUsage, Origin,
};
use crate::key_state::Operation;
use crate::policy::{self, PolicyContext};
use crate::protocol::{KmsError, Violations, latin1_text};
use crate::service::{KeyRef, Kms, raced, storage_error};
use crate::storage::{CustomKeyStoreRecord, KeyRecord, ScheduledDeletion, StorageError};

/// A tag as the wire carries it (both members required by the model).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireTag {
    pub(super) tag_key: Option<String>,
    pub(super) tag_value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateKeyInput {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    customer_master_key_spec: Option<String>,
    key_spec: Option<String>,
    origin: Option<String>,
    custom_key_store_id: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    tags: Option<Vec<WireTag>>,
    multi_region: Option<bool>,
    xks_key_id: Option<String>,
}

fn xks_key_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Model constraints of tags (lengths), then the semantic tag rules (duplicates, count,
/// reserved prefix) as `TagException`.
pub(super) fn check_tags(v: &mut Violations, tags: &[WireTag]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let n = i + 1;
        match &t.tag_key {
            Some(k) => v.length(k, &format!("tags.{n}.member.tagKey"), 1, 128),
            None => v.add(
                "null",
                &format!("tags.{n}.member.tagKey"),
                "Member must not be null",
            ),
        }
        match &t.tag_value {
            Some(val) => v.length(val, &format!("tags.{n}.member.tagValue"), 0, 256),
            None => v.add(
                "null",
                &format!("tags.{n}.member.tagValue"),
                "Member must not be null",
            ),
        }
        out.push((
            t.tag_key.clone().unwrap_or_default(),
            t.tag_value.clone().unwrap_or_default(),
        ));
    }
    out
}

/// The semantic tag rules AWS answers with `TagException`.
pub(super) fn tag_rules(tags: &[(String, String)], existing: usize) -> Result<(), KmsError> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in tags {
        if !seen.insert(k.as_str()) {
            return Err(KmsError::client("TagException", "Duplicate tag keys"));
        }
    }
    if tags.len() + existing > 50 {
        return Err(KmsError::client("TagException", "Too many tags"));
    }
    if tags.iter().any(|(k, _)| {
        k.as_bytes()
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"aws:"))
    }) {
        return Err(KmsError::client(
            "TagException",
            "Tags beginning with aws: are reserved",
        ));
    }
    Ok(())
}

/// Validates a policy for `caller` and maps problems to AWS's errors. The lockout safety
/// check is also made by the authorization evaluator: the new policy with the caller's
/// identity policies must allow the caller's next `PutKeyPolicy` on the key (`key_arn`;
/// `None` at CreateKey, when the key has no ARN yet).
pub(super) fn check_policy(
    kms: &Kms,
    caller: &Caller,
    text: &str,
    bypass: bool,
    key_arn: Option<&str>,
) -> Result<(), KmsError> {
    let exists = |arn: &str| kms.callers.principal_exists(arn);
    let ctx = PolicyContext {
        partition: caller.partition,
        account_id: &caller.account_id,
        caller_arn: &caller.principal_arn,
        principal_exists: &exists,
    };
    let error = |e: policy::PolicyError| KmsError::client(e.kms_error_type(), e.to_string());
    policy::validate(text, &ctx, bypass).map_err(error)?;
    if !bypass && !crate::authz::context::can_put_key_policy(kms, caller, text, key_arn) {
        return Err(error(policy::PolicyError::Lockout));
    }
    Ok(())
}

/// CreateKey: validate the request, resolve the key type and the origin (and custom key
/// store), check the tags and the policy, ask the proxy about an external key, then build
/// and store the record. Nothing is stored before the last step.
pub(super) fn create_key(
    kms: &Kms,
    caller: &Caller,
    input: CreateKeyInput,
) -> Result<Value, KmsError> {
    let tags = validate_create_key(&input)?;
    let (spec, usage) = key_type(caller, &input)?;
    let (origin, xks_store) = resolve_origin(kms, caller, &input, spec)?;
    tag_rules(&tags, 0)?;
    let policy_text = create_key_policy(kms, caller, &input)?;
    // The external key must exist and meet KMS's requirements (asked of the proxy).
    if let Some(store) = &xks_store {
        check_external_key(
            kms,
            caller,
            store,
            input.xks_key_id.as_deref().unwrap_or_default(),
        )?;
    }
    let record = build_record(
        kms,
        caller,
        input,
        NewKey {
            spec,
            usage,
            origin,
            xks_store,
            policy: policy_text,
            tags,
        },
    )?;
    store_record(kms, caller, &record)?;
    Ok(json!({ "KeyMetadata": metadata(&record) }))
}

/// CreateKey's model constraints, all reported together; returns the tags.
fn validate_create_key(input: &CreateKeyInput) -> Result<Vec<(String, String)>, KmsError> {
    let mut v = Violations::new();
    if let Some(p) = &input.policy {
        v.length(p, "policy", 1, 131_072);
        v.pattern(
            p,
            "policy",
            latin1_text(p),
            "[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+",
        );
    }
    if let Some(d) = &input.description {
        // The model gives Description a length and no pattern.
        v.length(d, "description", 0, 8192);
    }
    if let Some(u) = &input.key_usage {
        v.enum_value(
            u,
            "keyUsage",
            &KeyUsage::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        );
    }
    if let Some(s) = &input.key_spec {
        v.enum_value(
            s,
            "keySpec",
            &KeySpec::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        );
    }
    if let Some(s) = &input.customer_master_key_spec {
        let allowed: Vec<&str> = KeySpec::ALL
            .iter()
            .filter(|x| x.is_customer_master_key_spec_value())
            .map(|x| x.as_str())
            .collect();
        v.enum_value(s, "customerMasterKeySpec", &allowed);
    }
    if let Some(o) = &input.origin {
        v.enum_value(
            o,
            "origin",
            &Origin::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        );
    }
    if let Some(id) = &input.custom_key_store_id {
        v.length(id, "customKeyStoreId", 1, 64);
    }
    if let Some(x) = &input.xks_key_id {
        v.length(x, "xksKeyId", 1, 128);
        v.pattern(x, "xksKeyId", xks_key_id_ok(x), "^[a-zA-Z0-9-_.]+$");
    }
    let tags = check_tags(&mut v, input.tags.as_deref().unwrap_or_default());
    v.finish()?;
    Ok(tags)
}

/// The key spec and usage: the rules between KeySpec, CustomerMasterKeySpec, KeyUsage and
/// the caller's partition.
fn key_type(caller: &Caller, input: &CreateKeyInput) -> Result<(KeySpec, KeyUsage), KmsError> {
    if input.key_spec.is_some() && input.customer_master_key_spec.is_some() {
        return Err(KmsError::validation(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.",
        ));
    }
    let spec = input
        .key_spec
        .as_deref()
        .or(input.customer_master_key_spec.as_deref())
        .and_then(KeySpec::parse)
        .unwrap_or(KeySpec::SymmetricDefault);
    let china = caller.partition == "aws-cn";
    if spec.china_only() && !china {
        return Err(KmsError::validation(format!(
            "KeySpec {} is only available in the China Regions.",
            spec.as_str()
        )));
    }
    if spec.not_in_china() && china {
        return Err(KmsError::validation(format!(
            "KeySpec {} is not available in the China Regions.",
            spec.as_str()
        )));
    }
    let usage = match input.key_usage.as_deref().and_then(KeyUsage::parse) {
        Some(u) => u,
        None if spec.is_symmetric_encryption() => KeyUsage::EncryptDecrypt,
        None => {
            return Err(KmsError::validation(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
            ));
        }
    };
    if !spec.allows_usage(usage) {
        return Err(KmsError::validation(format!(
            "KeyUsage {} is not compatible with KeySpec {}",
            usage.as_str(),
            spec.as_str()
        )));
    }
    Ok((spec, usage))
}

/// The origin, and for a key in a custom key store that store, which must exist and be
/// connected.
fn resolve_origin(
    kms: &Kms,
    caller: &Caller,
    input: &CreateKeyInput,
    spec: KeySpec,
) -> Result<(Origin, Option<CustomKeyStoreRecord>), KmsError> {
    let origin = input
        .origin
        .as_deref()
        .and_then(Origin::parse)
        .unwrap_or(Origin::AwsKms);
    match (origin, &input.xks_key_id) {
        (Origin::ExternalKeyStore, None) => {
            return Err(KmsError::validation(
                "XksKeyId is required when the Origin is EXTERNAL_KEY_STORE.",
            ));
        }
        (o, Some(_)) if o != Origin::ExternalKeyStore => {
            return Err(KmsError::validation(
                "XksKeyId is valid only when the Origin is EXTERNAL_KEY_STORE.",
            ));
        }
        _ => {}
    }
    if !origin.is_custom_key_store() {
        if input.custom_key_store_id.is_some() {
            return Err(KmsError::validation(
                "CustomKeyStoreId is valid only when the Origin is AWS_CLOUDHSM or EXTERNAL_KEY_STORE.",
            ));
        }
        return Ok((origin, None));
    }
    if input.multi_region.unwrap_or(false) {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            "You cannot create a multi-Region key in a custom key store.",
        ));
    }
    if spec != KeySpec::SymmetricDefault {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            format!(
                "KeySpec {} is not supported in a custom key store; only SYMMETRIC_DEFAULT is.",
                spec.as_str()
            ),
        ));
    }
    let Some(store_id) = &input.custom_key_store_id else {
        return Err(KmsError::validation(format!(
            "CustomKeyStoreId is required when the Origin is {}.",
            origin.as_str()
        )));
    };
    let store = kms
        .storage
        .get_custom_key_store(&caller.account_id, &caller.region, store_id)
        .map_err(storage_error)?
        .ok_or_else(|| {
            KmsError::client(
                "CustomKeyStoreNotFoundException",
                format!("Custom key store {store_id} is not found."),
            )
        })?;
    if origin == Origin::AwsCloudhsm {
        // Only external key stores can exist here (no CloudHSM clusters).
        return Err(KmsError::client(
            "UnsupportedOperationException",
            format!(
                "Origin AWS_CLOUDHSM needs an AWS CloudHSM key store; {store_id} is an external key store."
            ),
        ));
    }
    if store.connection_state != ConnectionState::Connected {
        return Err(KmsError::client(
            "CustomKeyStoreInvalidStateException",
            format!(
                "Custom key store {store_id} is not connected (ConnectionState {}).",
                store.connection_state
            ),
        ));
    }
    Ok((origin, Some(store)))
}

/// The key policy: the caller's, validated, or the default one.
fn create_key_policy(
    kms: &Kms,
    caller: &Caller,
    input: &CreateKeyInput,
) -> Result<String, KmsError> {
    match &input.policy {
        Some(p) => {
            check_policy(
                kms,
                caller,
                p,
                input.bypass_policy_lockout_safety_check.unwrap_or(false),
                None,
            )?;
            Ok(p.clone())
        }
        None => Ok(policy::default_policy(caller.partition, &caller.account_id)),
    }
}

/// What CreateKey decided about a new key, before it has an id.
struct NewKey {
    spec: KeySpec,
    usage: KeyUsage,
    origin: Origin,
    xks_store: Option<CustomKeyStoreRecord>,
    policy: String,
    tags: Vec<(String, String)>,
}

/// The new key's record: a fresh id, and key material generated and sealed (none for
/// `EXTERNAL`, which waits for an import).
fn build_record(
    kms: &Kms,
    caller: &Caller,
    input: CreateKeyInput,
    new: NewKey,
) -> Result<KeyRecord, KmsError> {
    let multi_region = input.multi_region.unwrap_or(false);
    let key_id = catalogue::new_key_id(multi_region);
    let arn = catalogue::key_arn(
        caller.partition,
        &caller.region,
        &caller.account_id,
        &key_id,
    );
    let (state, sealed, material_id) = if new.origin == Origin::External {
        (KeyState::PendingImport, None, None)
    } else {
        let material =
            crate::material::generate(new.spec).map_err(|e| KmsError::internal(e.to_string()))?;
        let sealed = crate::sealing::seal_material(&kms.root, &arn, material.secret())?;
        // Every material has an id (ciphertexts name it; DescribeKey shows it only where
        // AWS does, see `catalogue::KeyMetadataView`).
        (KeyState::Enabled, Some(sealed), Some(material_id(&arn, 1)))
    };
    Ok(KeyRecord {
        account_id: caller.account_id.clone(),
        region: caller.region.clone(),
        key_id,
        arn,
        creation_date_ms: kms.clock.now_ms(),
        description: input.description.unwrap_or_default(),
        key_spec: new.spec.as_str().to_owned(),
        key_usage: new.usage.as_str().to_owned(),
        origin: new.origin.as_str().to_owned(),
        key_state: state,
        deletion_date_ms: None,
        pending_window_days: None,
        multi_region,
        custom_key_store_id: new.xks_store.as_ref().map(|s| s.id.clone()),
        xks_key_id: new.xks_store.as_ref().and(input.xks_key_id),
        policy: new.policy,
        sealed_material: sealed,
        material_id,
        tags: new.tags,
    })
}

/// Stores the new key, mapping the quota and a store deleted meanwhile to AWS's errors.
fn store_record(kms: &Kms, caller: &Caller, record: &KeyRecord) -> Result<(), KmsError> {
    kms.storage
        .create_key(record, kms.max_keys)
        .map_err(|e| match e {
            StorageError::LimitExceeded(_) => KmsError::client(
                "LimitExceededException",
                format!(
                    "The request was rejected because the number of KMS keys in account {} and Region {} would exceed the quota of {}.",
                    caller.account_id, caller.region, kms.max_keys
                ),
            ),
            StorageError::NotFound => KmsError::client(
                "CustomKeyStoreNotFoundException",
                "The custom key store was deleted while the key was being created.",
            ),
            other => storage_error(other),
        })
}

/// Asks the proxy for the external key's metadata (kmsOperation `CreateKey`) and applies
/// KMS's requirements, with AWS's messages.
fn check_external_key(
    kms: &Kms,
    caller: &Caller,
    store: &CustomKeyStoreRecord,
    xks_key_id: &str,
) -> Result<(), KmsError> {
    let secret = crate::ops::target_secret(kms, store)?;
    let target = crate::xks_client::ProxyTarget {
        uri_endpoint: &store.uri_endpoint,
        uri_path: &store.uri_path,
        access_key_id: &store.access_key_id,
        secret: &secret,
        region: &caller.region,
    };
    let meta = xks_api::types::RequestMetadata {
        kms_request_id: caller.request_id.clone(),
        kms_operation: "CreateKey".into(),
        aws_principal_arn: Some(caller.principal_arn.clone()),
        aws_source_vpc: None,
        aws_source_vpce: None,
        kms_key_arn: None,
        kms_via_service: None,
    };
    let m = tokio::runtime::Handle::current()
        .block_on(kms.xks.get_key_metadata(&target, xks_key_id, meta))
        .map_err(|e| crate::xks::surface(crate::xks::CallSite::CreateKey, &e))?;
    let invalid = |msg: String| KmsError::client("XksKeyInvalidConfigurationException", msg);
    if m.key_spec != "AES_256" {
        return Err(invalid(format!(
            "The key spec of the external key must be AES_256. The key spec of specified external key is {}.",
            m.key_spec
        )));
    }
    if m.key_status != xks_api::types::KeyStatus::Enabled {
        return Err(invalid(
            "The status of the external key must be ENABLED. The status of specified external key is DISABLED.".into(),
        ));
    }
    if !(m.key_usage.iter().any(|u| u == "ENCRYPT") && m.key_usage.iter().any(|u| u == "DECRYPT")) {
        return Err(invalid(format!(
            "The key usage of the external key must include ENCRYPT and DECRYPT. The key use of specified external key is {}.",
            m.key_usage.join(", ")
        )));
    }
    Ok(())
}

/// `CurrentKeyMaterialId`: 64 hex characters naming a key's material version.
fn material_id(arn: &str, version: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{arn}/material/{version}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored key's `KeyMetadata`.
pub(super) fn metadata(k: &KeyRecord) -> Value {
    metadata_with(k, None)
}

/// A stored key's `KeyMetadata`, with a multi-Region key's set when known.
pub(super) fn metadata_with(
    k: &KeyRecord,
    multi_region_configuration: Option<&catalogue::MultiRegionConfiguration>,
) -> Value {
    KeyMetadataView {
        account_id: &k.account_id,
        region: &k.region,
        key_id: &k.key_id,
        arn: &k.arn,
        creation_date: catalogue::epoch_seconds_from_millis(k.creation_date_ms),
        state: k.key_state,
        description: &k.description,
        key_usage: KeyUsage::parse(&k.key_usage).unwrap_or(KeyUsage::EncryptDecrypt),
        key_spec: KeySpec::parse(&k.key_spec).unwrap_or(KeySpec::SymmetricDefault),
        origin: Origin::parse(&k.origin).unwrap_or(Origin::AwsKms),
        deletion_date: k.deletion_date_ms.map(catalogue::epoch_seconds_from_millis),
        pending_deletion_window_days: k.pending_window_days,
        custom_key_store_id: k.custom_key_store_id.as_deref(),
        cloud_hsm_cluster_id: None,
        xks_key_id: k.xks_key_id.as_deref(),
        multi_region: k.multi_region,
        multi_region_configuration,
        current_key_material_id: k.material_id.as_deref(),
        expiration_model: None,
        valid_to: None,
    }
    .key_metadata_json()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KeyIdInput {
    key_id: Option<String>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

/// The `KeyId` member: required, 1..2048 characters.
pub(super) fn required_key_id(key_id: Option<&str>) -> Result<&str, KmsError> {
    let mut v = Violations::new();
    match key_id {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    v.finish()?;
    Ok(key_id.unwrap_or_default())
}

pub(super) fn describe_key(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
) -> Result<Value, KmsError> {
    let key_id = required_key_id(input.key_id.as_deref())?;
    let mut key = kms.find_key(caller, key_id, KeyRef::KeyOrAlias)?;
    key.key_state = kms.effective_state(&key);
    let config = super::multi_region::configuration(kms, &key)?;
    if key.key_state == KeyState::Creating {
        // A replica shows its material id once it is created (AWS's answer).
        key.material_id = None;
    }
    let mut m = metadata_with(&key, config.as_ref());
    // Imported material's expiry lives with the material versions (`ops::import`).
    let (model, valid_to) = crate::ops::expiration_of(kms, &key);
    if let Value::Object(fields) = &mut m
        && let Some(model) = model
        && key.key_state != KeyState::PendingImport
    {
        if model == "KEY_MATERIAL_EXPIRES"
            && let Some(valid_to) = valid_to
        {
            fields.insert("ValidTo".into(), json!(valid_to));
        }
        fields.insert("ExpirationModel".into(), json!(model));
    }
    Ok(json!({ "KeyMetadata": m }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListInput {
    limit: Option<i64>,
    marker: Option<String>,
}

pub(super) fn list_keys(kms: &Kms, caller: &Caller, input: ListInput) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = paging(&mut v, input.limit, input.marker.as_deref());
    v.finish()?;
    let page = kms
        .storage
        .list_keys(
            &caller.account_id,
            &caller.region,
            input.marker.as_deref(),
            limit,
        )
        .map_err(|e| match e {
            StorageError::NotFound => {
                KmsError::client("InvalidMarkerException", "The marker is not valid.")
            }
            other => storage_error(other),
        })?;
    let keys: Vec<Value> = page
        .items
        .iter()
        .map(|k| json!({"KeyId": k.key_id, "KeyArn": k.arn}))
        .collect();
    let mut out = json!({"Keys": keys, "Truncated": page.next_marker.is_some()});
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UpdateDescriptionInput {
    key_id: Option<String>,
    description: Option<String>,
}

pub(super) fn update_key_description(
    kms: &Kms,
    caller: &Caller,
    input: UpdateDescriptionInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match &input.description {
        None => v.add("null", "description", "Member must not be null"),
        Some(d) => v.length(d, "description", 0, 8192),
    }
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let description = input.description.unwrap_or_default();
    kms.change_key(caller, key_id?, Operation::UpdateKeyDescription, |key| {
        raced(
            kms.storage
                .set_key_description(key.address(), &[key.key_state], &description),
        )
        .map_err(storage_error)
    })?;
    Ok(json!({}))
}

pub(super) fn set_enabled(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    enable: bool,
) -> Result<Value, KmsError> {
    let key_id = required_key_id(input.key_id.as_deref())?;
    let (op, to) = if enable {
        (Operation::EnableKey, KeyState::Enabled)
    } else {
        (Operation::DisableKey, KeyState::Disabled)
    };
    kms.change_key(caller, key_id, op, |key| {
        raced(
            kms.storage
                .transition_key_state(key.address(), &[key.key_state], to, None),
        )
        .map_err(storage_error)
    })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ScheduleInput {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

pub(super) fn schedule_key_deletion(
    kms: &Kms,
    caller: &Caller,
    input: ScheduleInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    if let Some(d) = input.pending_window_in_days {
        v.range(d, "pendingWindowInDays", 1, 365);
    }
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let days = input.pending_window_in_days.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(KmsError::validation(
            "PendingWindowInDays must be between 7 and 30 days.",
        ));
    }
    let deletion = ScheduledDeletion {
        date_ms: kms.clock.now_ms() + days * 86_400_000,
        window_days: u32::try_from(days).unwrap_or(30),
    };
    let (key, to) = kms.change_key(caller, key_id?, Operation::ScheduleKeyDeletion, |key| {
        // A multi-Region primary with replicas waits for their deletion first.
        let to = super::multi_region::deletion_state(kms, key, deletion)?
            .map_or(KeyState::PendingDeletion, |(state, _)| state);
        raced(
            kms.storage
                .transition_key_state(key.address(), &[key.key_state], to, Some(deletion)),
        )
        .map(|done| done.map(|()| to))
        .map_err(storage_error)
    })?;
    if to == KeyState::PendingReplicaDeletion {
        // No deletion date yet: the window starts when the last replica is deleted.
        return Ok(json!({
            "KeyId": key.arn,
            "KeyState": to.as_str(),
            "PendingWindowInDays": days,
        }));
    }
    Ok(json!({
        "KeyId": key.arn,
        "DeletionDate": catalogue::epoch_seconds_from_millis(deletion.date_ms),
        "KeyState": KeyState::PendingDeletion.as_str(),
        "PendingWindowInDays": days,
    }))
}

pub(super) fn cancel_key_deletion(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
) -> Result<Value, KmsError> {
    let key_id = required_key_id(input.key_id.as_deref())?;
    let (key, ()) = kms.change_key(caller, key_id, Operation::CancelKeyDeletion, |key| {
        // AWS puts a key whose deletion is cancelled into Disabled (an imported key without
        // material back into PendingImport).
        let to = if key.sealed_material.is_some() || key.origin != Origin::External.as_str() {
            KeyState::Disabled
        } else {
            KeyState::PendingImport
        };
        raced(
            kms.storage
                .transition_key_state(key.address(), &[key.key_state], to, None),
        )
        .map_err(storage_error)
    })?;
    Ok(json!({"KeyId": key.arn}))
}
