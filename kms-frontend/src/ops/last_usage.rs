//! GetKeyLastUsage: the last successful cryptographic use of a key (see
//! [`crate::last_usage`] for how uses are recorded).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::keys::required_key_id;
use crate::auth::Caller;
use crate::clock::epoch_seconds;
use crate::protocol::KmsError;
use crate::service::{KeyRef, Kms, storage_error};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetKeyLastUsageInput {
    key_id: Option<String>,
}

pub(super) fn get_key_last_usage(
    kms: &Kms,
    caller: &Caller,
    input: GetKeyLastUsageInput,
) -> Result<Value, KmsError> {
    let key_id = required_key_id(input.key_id.as_deref())?;
    // Alias names are not accepted; key states do not matter (a disabled or pending-deletion
    // key's history is what this operation is for).
    let key = kms.find_key(caller, key_id, KeyRef::KeyOnly)?;
    let last = kms
        .usage
        .last_usage(kms.storage.as_ref(), key.address())
        .map_err(storage_error)?;
    let tracking_start_ms = kms
        .storage
        .usage_tracking_start_ms()
        .map_err(storage_error)?
        .max(key.creation_date_ms);
    let mut usage = Map::new();
    if let Some(u) = last {
        usage.insert("Operation".into(), json!(u.operation));
        usage.insert("Timestamp".into(), json!(epoch_seconds(u.timestamp_ms)));
        usage.insert("CloudTrailEventId".into(), json!(u.event_id));
        usage.insert("KmsRequestId".into(), json!(u.request_id));
    }
    Ok(json!({
        "KeyId": key.arn,
        "KeyLastUsage": usage,
        "TrackingStartDate": epoch_seconds(tracking_start_ms),
        "KeyCreationDate": epoch_seconds(key.creation_date_ms),
    }))
}
