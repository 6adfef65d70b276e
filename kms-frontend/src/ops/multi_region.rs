//! Multi-Region keys (issue 19): ReplicateKey, UpdatePrimaryRegion, the members'
//! `MultiRegionConfiguration`, the asynchronous steps (a replica `Creating`, two members
//! `Updating`, a primary waiting in `PendingReplicaDeletion`) and how rotated material
//! reaches the replicas.
//!
//! A set's members are the keys of one account with one `mrk-` id, one per Region of this
//! front end; they share the key material (every version, with the same material ids), so a
//! ciphertext, signature or MAC made by one member is accepted by every other in its own
//! Region. Material is sealed bound to each member's ARN: a replica's copy of every version
//! is unsealed and sealed again in memory (zeroized), never written in plaintext.
//!
//! The asynchronous steps are finished by [`sweep_multi_region`], part of the service's
//! time-driven sweep (every second, and after a restart), once [`ASYNC_STEP_MS`] has passed
//! on the service clock: nothing is held in memory, so a restart loses none of them.

use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::{WireTag, check_policy, check_tags, metadata_with, required_key_id, tag_rules};
use crate::auth::Caller;
use crate::catalogue::{self, MultiRegionConfiguration, Origin};
use crate::key_state::{Operation, usable_key};
use crate::protocol::{KmsError, Violations, latin1_text};
use crate::service::{KeyRef, Kms, storage_error};
use crate::storage::{
    KeyMaterialRecord, KeyRecord, KeyState, MaterialChange, MultiRegionSet, ScheduledDeletion,
    StorageError,
};

/// How long a new replica stays `Creating`, and two members `Updating` after the primary
/// moved, on the service clock (AWS: "seconds").
pub const ASYNC_STEP_MS: i64 = 2_000;

/// The default deletion window (days) a primary gets once its last replica is deleted, when
/// none was recorded.
const DEFAULT_WINDOW_DAYS: u32 = 30;

/// The set `key` belongs to; `None` for a single-Region key (or a set gone meanwhile).
pub(super) fn set_of(kms: &Kms, key: &KeyRecord) -> Result<Option<MultiRegionSet>, KmsError> {
    if !key.multi_region {
        return Ok(None);
    }
    kms.storage
        .multi_region_set(&key.account_id, &key.key_id)
        .map_err(storage_error)
}

/// The `MultiRegionConfiguration` of `key` as its set is now.
pub(super) fn configuration(
    kms: &Kms,
    key: &KeyRecord,
) -> Result<Option<MultiRegionConfiguration>, KmsError> {
    let Some(set) = set_of(kms, key)? else {
        return Ok(None);
    };
    let primary = set
        .members
        .iter()
        .find(|m| m.region == set.primary_region)
        .map_or_else(
            || {
                let arn = key.arn.replacen(
                    &format!(":{}:", key.region),
                    &format!(":{}:", set.primary_region),
                    1,
                );
                (arn, set.primary_region.clone())
            },
            |m| (m.arn.clone(), m.region.clone()),
        );
    Ok(Some(MultiRegionConfiguration {
        is_primary: set.primary_region == key.region,
        primary,
        replicas: set
            .replicas()
            .map(|m| (m.arn.clone(), m.region.clone()))
            .collect(),
    }))
}

/// The error for a key that is not a multi-Region primary (AWS's text for a replica; the
/// single-Region text follows it, AWS's being unrecorded).
fn not_primary(key: &KeyRecord) -> KmsError {
    let text = if key.multi_region {
        format!("{} is not a multi-region primary key.", key.arn)
    } else {
        format!("{} is not a multi-region key.", key.arn)
    };
    KmsError::client("UnsupportedOperationException", text)
}

/// The primary named by `key_id` and its set: single-Region keys and replicas refused.
fn primary_and_set(
    kms: &Kms,
    caller: &Caller,
    key_id: &str,
) -> Result<(KeyRecord, MultiRegionSet), KmsError> {
    let key = kms.find_key(caller, key_id, KeyRef::KeyOnly)?;
    let Some(set) = set_of(kms, &key)? else {
        return Err(not_primary(&key));
    };
    if set.primary_region != key.region {
        return Err(not_primary(&key));
    }
    Ok((key, set))
}

/// `^([a-z]+-){2,3}\d+$` (the model's ReplicaRegion and PrimaryRegion pattern).
fn region_pattern(r: &str) -> bool {
    let mut parts: Vec<&str> = r.split('-').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// A Region member (`ReplicaRegion`, `PrimaryRegion`): required, 1..32, the pattern.
fn check_region(v: &mut Violations, value: Option<&str>, member: &str) {
    match value {
        None => v.add("null", member, "Member must not be null"),
        Some(r) => {
            v.length(r, member, 1, 32);
            v.pattern(r, member, region_pattern(r), "^([a-z]+-){2,3}\\d+$");
        }
    }
}

/// A Region another member of the caller's set may live in: served for the account, in
/// the caller's partition, other than `here`.
fn check_member_region(
    kms: &Kms,
    caller: &Caller,
    region: &str,
    here: &str,
) -> Result<(), KmsError> {
    if region == here {
        return Err(KmsError::validation(format!(
            "The multi-Region key is already in Region {region}."
        )));
    }
    if catalogue::partition_for_region(region) != caller.partition {
        return Err(KmsError::validation(format!(
            "Region {region} is not in partition {}: a multi-Region key stays in one partition.",
            caller.partition
        )));
    }
    if !kms.callers.serves(&caller.account_id, region) {
        return Err(KmsError::validation(format!(
            "Region {region} is not served for account {}.",
            caller.account_id
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReplicateKeyInput {
    key_id: Option<String>,
    replica_region: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
    description: Option<String>,
    tags: Option<Vec<WireTag>>,
}

/// ReplicateKey: a replica of the primary `KeyId` in `ReplicaRegion`, with every version
/// of its material, its own policy, description and tags, `Creating` until the sweep
/// finishes it.
pub(super) fn replicate_key(
    kms: &Kms,
    caller: &Caller,
    body: &Value,
    input: ReplicateKeyInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    check_region(&mut v, input.replica_region.as_deref(), "replicaRegion");
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
        v.length(d, "description", 0, 8192);
    }
    let tags = check_tags(&mut v, input.tags.as_deref().unwrap_or_default());
    v.finish()?;
    let key_id = key_id?;
    let region = input.replica_region.clone().unwrap_or_default();

    let (primary, set) = primary_and_set(kms, caller, key_id)?;
    kms.check_usable(&primary, Operation::ReplicateKey)?;
    check_member_region(kms, caller, &region, &primary.region)?;
    if set.members.iter().any(|m| m.region == region) {
        return Err(already_replicated(&primary, &region));
    }
    // The caller as if it called in the replica's Region: CreateKey (and TagResource) there.
    let there = Caller {
        region: region.clone(),
        ..caller.clone()
    };
    crate::authz::context::authorize_replica_creation(kms, &there, body)?;
    tag_rules(&tags, 0)?;
    let arn = catalogue::key_arn(
        caller.partition,
        &region,
        &primary.account_id,
        &primary.key_id,
    );
    let policy = match &input.policy {
        Some(p) => {
            let bypass = input.bypass_policy_lockout_safety_check.unwrap_or(false);
            check_policy(kms, &there, p, bypass, Some(&arn))?;
            p.clone()
        }
        None => crate::policy::default_policy(caller.partition, &primary.account_id),
    };

    // Imported material is imported into each member (AWS's rule): a replica of an
    // EXTERNAL key starts with none and waits in PendingImport.
    let (versions, sealed_current, material_id) = if primary.origin == Origin::External.as_str() {
        (Vec::new(), None, None)
    } else {
        let (versions, current) = reseal_materials(kms, &primary, &arn)?;
        (versions, current, primary.material_id.clone())
    };
    let replica = KeyRecord {
        account_id: primary.account_id.clone(),
        region: region.clone(),
        key_id: primary.key_id.clone(),
        arn,
        creation_date_ms: kms.clock.now_ms(),
        description: input.description.clone().unwrap_or_default(),
        key_spec: primary.key_spec.clone(),
        key_usage: primary.key_usage.clone(),
        origin: primary.origin.clone(),
        key_state: KeyState::Creating,
        deletion_date_ms: None,
        pending_window_days: None,
        multi_region: true,
        custom_key_store_id: None,
        xks_key_id: None,
        policy,
        sealed_material: sealed_current,
        material_id,
        tags,
    };
    kms.storage
        .create_replica_key(
            &replica,
            &versions,
            &primary.region,
            &[primary.key_state],
            kms.max_keys,
        )
        .map_err(|e| match e {
            StorageError::AlreadyExists(_) => already_replicated(&primary, &region),
            StorageError::LimitExceeded(_) => KmsError::client(
                "LimitExceededException",
                format!(
                    "The request was rejected because the number of KMS keys in account {} and Region {region} would exceed the quota of {}.",
                    primary.account_id, kms.max_keys
                ),
            ),
            // The primary changed (moved, disabled, scheduled for deletion) since it was
            // read: answer as AWS would judge it now.
            StorageError::StateChanged => match kms.find_key(caller, key_id, KeyRef::KeyOnly) {
                Ok(now) => kms
                    .check_usable(&now, Operation::ReplicateKey)
                    .err()
                    .unwrap_or_else(|| not_primary(&now)),
                Err(gone) => gone,
            },
            other => storage_error(other),
        })?;
    let config = configuration(kms, &replica)?;
    // No CurrentKeyMaterialId while the replica is being created (AWS's answer).
    let shown = KeyRecord {
        material_id: None,
        ..replica.clone()
    };
    let tags: Vec<Value> = replica
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    Ok(json!({
        "ReplicaKeyMetadata": metadata_with(&shown, config.as_ref()),
        "ReplicaPolicy": replica.policy,
        "ReplicaTags": tags,
    }))
}

fn already_replicated(primary: &KeyRecord, region: &str) -> KmsError {
    KmsError::client(
        "AlreadyExistsException",
        format!(
            "Multi-Region key {} already has a related key in Region {region}.",
            primary.key_id
        ),
    )
}

/// Every material version of `from`, and its current material, sealed for the member
/// `to_arn` (same ids, order and dates). Versions whose imported material is gone stay
/// without material, as they are in `from`.
fn reseal_materials(
    kms: &Kms,
    from: &KeyRecord,
    to_arn: &str,
) -> Result<(Vec<KeyMaterialRecord>, Option<Vec<u8>>), KmsError> {
    let versions = kms
        .storage
        .key_materials(from.address())
        .map_err(storage_error)?;
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let sealed = v
            .sealed_material
            .as_deref()
            .map(|s| reseal(kms, &from.arn, to_arn, s))
            .transpose()?;
        out.push(KeyMaterialRecord {
            sealed_material: sealed,
            ..v
        });
    }
    let current = from
        .sealed_material
        .as_deref()
        .map(|s| reseal(kms, &from.arn, to_arn, s))
        .transpose()?;
    Ok((out, current))
}

/// Unseals material bound to `from_arn` and seals it bound to `to_arn`; the plaintext lives
/// only in a zeroizing buffer for the moment in between.
fn reseal(kms: &Kms, from_arn: &str, to_arn: &str, sealed: &[u8]) -> Result<Vec<u8>, KmsError> {
    let material = crate::sealing::unseal_material(&kms.root, from_arn, sealed)?;
    crate::sealing::seal_material(&kms.root, to_arn, &material)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UpdatePrimaryRegionInput {
    key_id: Option<String>,
    primary_region: Option<String>,
}

/// UpdatePrimaryRegion: the replica in `PrimaryRegion` becomes the primary and the primary
/// a replica; both are `Updating` until the sweep restores them.
pub(super) fn update_primary_region(
    kms: &Kms,
    caller: &Caller,
    body: &Value,
    input: UpdatePrimaryRegionInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    check_region(&mut v, input.primary_region.as_deref(), "primaryRegion");
    v.finish()?;
    let key_id = key_id?;
    let region = input.primary_region.unwrap_or_default();
    let (primary, _) = primary_and_set(kms, caller, key_id)?;
    kms.check_usable(&primary, Operation::UpdatePrimaryRegion)?;
    check_member_region(kms, caller, &region, &primary.region)?;
    let target = kms
        .storage
        .get_key(&primary.account_id, &region, &primary.key_id)
        .map_err(storage_error)?
        .ok_or_else(|| {
            KmsError::not_found(format!(
                "Key '{}' does not exist",
                catalogue::key_arn(
                    caller.partition,
                    &region,
                    &primary.account_id,
                    &primary.key_id
                )
            ))
        })?;
    // Authorized in both Regions (the primary's by `authz::context::authorize`).
    crate::authz::context::authorize_member(kms, caller, "UpdatePrimaryRegion", &target, body)?;
    usable_key(&target, target.key_state, Operation::UpdatePrimaryRegion)?;
    kms.storage
        .update_primary_region(
            &primary.account_id,
            &primary.key_id,
            &primary.region,
            &region,
            kms.clock.now_ms(),
        )
        .map_err(|e| match e {
            StorageError::StateChanged | StorageError::NotFound => {
                // Judge again on what is stored now.
                let again = kms
                    .find_key(caller, key_id, KeyRef::KeyOnly)
                    .and_then(|now| {
                        kms.check_usable(&now, Operation::UpdatePrimaryRegion)?;
                        primary_and_set(kms, caller, key_id).map(|_| ())
                    });
                again
                    .err()
                    .unwrap_or_else(|| storage_error(StorageError::StateChanged))
            }
            other => storage_error(other),
        })?;
    Ok(json!({}))
}

/// ScheduleKeyDeletion's rule for a primary with replicas: it waits in
/// `PendingReplicaDeletion` (window recorded, no date yet) until its last replica is gone.
/// `Some(deletion)` is the state and schedule to write, `None` for an ordinary deletion.
pub(super) fn deletion_state(
    kms: &Kms,
    key: &KeyRecord,
    deletion: ScheduledDeletion,
) -> Result<Option<(KeyState, ScheduledDeletion)>, KmsError> {
    let Some(set) = set_of(kms, key)? else {
        return Ok(None);
    };
    if set.primary_region != key.region || set.replicas().next().is_none() {
        return Ok(None);
    }
    Ok(Some((KeyState::PendingReplicaDeletion, deletion)))
}

/// The deletion sweep's guard: a primary whose window ended while it has replicas (a
/// ReplicateKey that landed between ScheduleKeyDeletion's read of the set and its write) is
/// not deleted but moved to `PendingReplicaDeletion`, as if it had been scheduled after the
/// replica existed. True when the key was held back. No replica can appear once the primary
/// is `PendingDeletion` (ReplicateKey refuses that state), so checking here is enough.
pub fn hold_primary_with_replicas(kms: &Kms, key: &KeyRecord) -> bool {
    let Ok(Some(set)) = set_of(kms, key) else {
        return false;
    };
    if set.primary_region != key.region || set.replicas().next().is_none() {
        return false;
    }
    let window_days = key.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
    let held = ScheduledDeletion {
        date_ms: key.deletion_date_ms.unwrap_or_default(),
        window_days,
    };
    match kms.storage.transition_key_state(
        key.address(),
        &[KeyState::PendingDeletion],
        KeyState::PendingReplicaDeletion,
        Some(held),
    ) {
        Ok(()) => {
            tracing::info!(key_id = %key.key_id, region = %key.region, "a primary with replicas waits for them before its deletion")
        }
        Err(e) => tracing::debug!(key_id = %key.key_id, error = %e, "primary hold not written"),
    }
    true
}

/// Finishes the asynchronous steps that are over (see the module documentation): a replica
/// `Creating` becomes `Enabled` (`PendingImport` for imported material), members `Updating`
/// become `Enabled`, and a primary in `PendingReplicaDeletion` whose replicas are all
/// deleted becomes `PendingDeletion`, its window starting now. Each write is conditional
/// on the state it was decided from, so a key changed meanwhile is left as it is.
pub fn sweep_multi_region(kms: &Kms) {
    let now = kms.clock.now_ms();
    let due = match kms
        .storage
        .multi_region_transitions_due(now - ASYNC_STEP_MS)
    {
        Ok(due) => due,
        Err(e) => {
            tracing::debug!(error = %e, "multi-Region sweep skipped");
            return;
        }
    };
    for (account, region, key_id, state) in due {
        let Ok(Some(key)) = kms.storage.get_key(&account, &region, &key_id) else {
            continue;
        };
        let (to, deletion) = match state {
            KeyState::Creating if key.origin == Origin::External.as_str() => {
                (KeyState::PendingImport, None)
            }
            KeyState::Creating | KeyState::Updating => (KeyState::Enabled, None),
            KeyState::PendingReplicaDeletion => {
                let days = key.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
                let deletion = ScheduledDeletion {
                    date_ms: now.saturating_add(i64::from(days) * 86_400_000),
                    window_days: days,
                };
                (KeyState::PendingDeletion, Some(deletion))
            }
            _ => continue,
        };
        match kms
            .storage
            .transition_key_state(key.address(), &[state], to, deletion)
        {
            Ok(()) => {
                tracing::info!(%account, %region, %key_id, from = %state, to = %to, "multi-Region key step finished")
            }
            Err(StorageError::StateChanged | StorageError::NotFound) => {}
            Err(e) => tracing::warn!(%key_id, error = %e, "multi-Region key step failed"),
        }
    }
}

/// Brings the replicas of the primary `primary` up to its material: every version they
/// lack is added (sealed for each replica) and the primary's current material made theirs.
/// Called after a rotation of the primary; a replica that cannot take it now (changed
/// meanwhile) is logged and tried again at the next rotation.
pub fn sync_replica_materials(kms: &Kms, primary: &KeyRecord) {
    let Ok(Some(set)) = set_of(kms, primary) else {
        return;
    };
    if set.primary_region != primary.region {
        return;
    }
    // The primary as it is now (the caller's copy predates its rotation).
    let Ok(Some(primary)) =
        kms.storage
            .get_key(&primary.account_id, &primary.region, &primary.key_id)
    else {
        return;
    };
    for member in set.replicas() {
        if let Err(e) = sync_one(kms, &primary, &member.region) {
            tracing::warn!(key = %member.arn, error = %e.message, "a replica did not take its primary's new key material");
        }
    }
}

fn sync_one(kms: &Kms, primary: &KeyRecord, region: &str) -> Result<(), KmsError> {
    let versions = kms
        .storage
        .key_materials(primary.address())
        .map_err(storage_error)?;
    for version in &versions {
        let Some(replica) = kms
            .storage
            .get_key(&primary.account_id, region, &primary.key_id)
            .map_err(storage_error)?
        else {
            return Ok(());
        };
        let held = kms
            .storage
            .key_materials(replica.address())
            .map_err(storage_error)?;
        let make_current = (primary.material_id.as_deref() == Some(version.material_id.as_str())
            && replica.material_id != primary.material_id)
            .then_some(version.material_id.as_str());
        let missing = !held.iter().any(|h| h.material_id == version.material_id);
        if !missing && make_current.is_none() {
            continue;
        }
        let Some(sealed) = version.sealed_material.as_deref() else {
            continue;
        };
        let copy = KeyMaterialRecord {
            sealed_material: Some(reseal(kms, &primary.arn, &replica.arn, sealed)?),
            ..version.clone()
        };
        kms.storage
            .change_key_material(
                replica.address(),
                &[replica.key_state],
                replica.material_id.as_deref(),
                &MaterialChange {
                    put: missing.then_some(&copy),
                    make_current,
                    ..MaterialChange::default()
                },
            )
            .map_err(storage_error)?;
    }
    Ok(())
}
