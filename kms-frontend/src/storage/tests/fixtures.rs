//! What the conformance test files share: the key record they start from (an enabled
//! `AWS_KMS` symmetric key with sealed material, no tags and no material id; each file
//! overrides what it tests), and deleting a key as the deletion sweep does.

use super::super::{KeyAddress, KeyRecord, KeyState, ScheduledDeletion, Storage, StorageError};

/// A plain key of `account` in `region`.
pub(in crate::storage) fn plain_key(account: &str, region: &str, key_id: &str) -> KeyRecord {
    KeyRecord {
        account_id: account.to_owned(),
        region: region.to_owned(),
        key_id: key_id.to_owned(),
        arn: format!("arn:aws:kms:{region}:{account}:key/{key_id}"),
        creation_date_ms: 1_700_000_000_000,
        description: String::new(),
        key_spec: "SYMMETRIC_DEFAULT".to_owned(),
        key_usage: "ENCRYPT_DECRYPT".to_owned(),
        origin: "AWS_KMS".to_owned(),
        key_state: KeyState::Enabled,
        deletion_date_ms: None,
        pending_window_days: None,
        multi_region: false,
        custom_key_store_id: None,
        xks_key_id: None,
        policy: "{}".to_owned(),
        sealed_material: Some(vec![0xA5; 60]),
        material_id: None,
        tags: Vec::new(),
    }
}

/// Deletes a key in whatever state, the only way storage deletes keys: scheduled for deletion
/// with a date already past, then deleted while due. [`StorageError::NotFound`] if it does
/// not exist.
pub(in crate::storage) fn delete_now(
    s: &dyn Storage,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> Result<(), StorageError> {
    let key = KeyAddress {
        account_id,
        region,
        key_id,
    };
    let past = ScheduledDeletion {
        date_ms: 0,
        window_days: 7,
    };
    s.transition_key_state(key, KeyState::ALL, KeyState::PendingDeletion, Some(past))?;
    s.delete_key_if_due(key, 0)
}
