//! TagResource, UntagResource, ListResourceTags, GetKeyPolicy, PutKeyPolicy, ListKeyPolicies.

use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::{WireTag, check_policy, check_tags, required_key_id, tag_rules};
use super::paging;
use crate::auth::Caller;
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations, latin1_text};
use crate::service::{KeyRef, Kms, raced, storage_error};
use crate::storage::StorageError;

/// The most tags a key may have (AWS's quota).
const MAX_TAGS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct TagInput {
    key_id: Option<String>,
    tags: Option<Vec<WireTag>>,
}

pub(super) fn tag_resource(kms: &Kms, caller: &Caller, input: TagInput) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    if input.tags.is_none() {
        v.add("null", "tags", "Member must not be null");
    }
    let tags = check_tags(&mut v, input.tags.as_deref().unwrap_or_default());
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    kms.change_key(caller, key_id?, Operation::TagResource, |key| {
        let new_keys: std::collections::HashSet<&str> =
            tags.iter().map(|(k, _)| k.as_str()).collect();
        let kept = key
            .tags
            .iter()
            .filter(|(k, _)| !new_keys.contains(k.as_str()))
            .count();
        tag_rules(&tags, kept)?;
        // A tag key that exists gets the new value; new keys are added. The storage checks
        // the count again, atomically with the write, against concurrent TagResources.
        raced(
            kms.storage
                .tag_key(key.address(), &[key.key_state], &tags, MAX_TAGS),
        )
        .map_err(|e| match e {
            StorageError::LimitExceeded(_) => KmsError::client("TagException", "Too many tags"),
            other => storage_error(other),
        })
    })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UntagInput {
    key_id: Option<String>,
    tag_keys: Option<Vec<String>>,
}

pub(super) fn untag_resource(
    kms: &Kms,
    caller: &Caller,
    input: UntagInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match &input.tag_keys {
        None => v.add("null", "tagKeys", "Member must not be null"),
        Some(keys) => {
            for (i, k) in keys.iter().enumerate() {
                v.length(k, &format!("tagKeys.{}.member", i + 1), 1, 128);
            }
        }
    }
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let remove = input.tag_keys.unwrap_or_default();
    kms.change_key(caller, key_id?, Operation::UntagResource, |key| {
        raced(
            kms.storage
                .untag_key(key.address(), &[key.key_state], &remove),
        )
        .map_err(storage_error)
    })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListTagsInput {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub(super) fn list_resource_tags(
    kms: &Kms,
    caller: &Caller,
    input: ListTagsInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = paging(
        &mut v,
        input.limit.map(|l| l.min(50)),
        input.marker.as_deref(),
    );
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    let start = match &input.marker {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= key.tags.len())
            .ok_or_else(|| {
                KmsError::client("InvalidMarkerException", "The marker is not valid.")
            })?,
        None => 0,
    };
    let end = (start + limit).min(key.tags.len());
    let tags: Vec<Value> = key.tags[start..end]
        .iter()
        .map(|(k, val)| json!({"TagKey": k, "TagValue": val}))
        .collect();
    let mut out = json!({"Tags": tags, "Truncated": end < key.tags.len()});
    if end < key.tags.len() {
        out["NextMarker"] = json!(end.to_string());
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PolicyInput {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
}

fn policy_name(v: &mut Violations, name: Option<&str>) -> Result<(), KmsError> {
    if let Some(n) = name {
        v.length(n, "policyName", 1, 128);
        if n != "default" {
            return Err(KmsError::not_found(format!("Policy {n} is not found.")));
        }
    }
    Ok(())
}

pub(super) fn get_key_policy(
    kms: &Kms,
    caller: &Caller,
    input: PolicyInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    let name = policy_name(&mut v, input.policy_name.as_deref());
    v.finish()?;
    name?;
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    Ok(json!({"Policy": key.policy, "PolicyName": "default"}))
}

pub(super) fn put_key_policy(
    kms: &Kms,
    caller: &Caller,
    input: PolicyInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    match &input.policy {
        None => v.add("null", "policy", "Member must not be null"),
        Some(p) => {
            v.length(p, "policy", 1, 131_072);
            v.pattern(
                p,
                "policy",
                latin1_text(p),
                "[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+",
            );
        }
    }
    let name = policy_name(&mut v, input.policy_name.as_deref());
    v.finish()?;
    name?;
    let policy = input.policy.unwrap_or_default();
    let bypass = input.bypass_policy_lockout_safety_check.unwrap_or(false);
    kms.change_key(caller, key_id?, Operation::PutKeyPolicy, |key| {
        check_policy(kms, caller, &policy, bypass, Some(&key.arn))?;
        raced(
            kms.storage
                .set_key_policy(key.address(), &[key.key_state], &policy),
        )
        .map_err(storage_error)
    })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListPoliciesInput {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub(super) fn list_key_policies(
    kms: &Kms,
    caller: &Caller,
    input: ListPoliciesInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    paging(&mut v, input.limit, input.marker.as_deref());
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    Ok(json!({"PolicyNames": ["default"], "Truncated": false}))
}
