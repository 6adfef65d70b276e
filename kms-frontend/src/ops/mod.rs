//! The KMS operations, one module per family, dispatched by `X-Amz-Target`.

mod aliases;
mod asymmetric;
mod crypto;
mod custom_key_stores;
mod data_key_pairs;
mod grants;
mod import;
mod kem;
mod key_agreement;
mod keys;
mod last_usage;
mod mac;
mod multi_region;
mod rotation;
mod tags_policies;

pub use custom_key_stores::{MAX_CUSTOM_KEY_STORES, health_check, target_secret};
pub use import::{expiration_of, sweep_expired_material};
pub use multi_region::{
    ASYNC_STEP_MS, hold_primary_with_replicas, sweep_multi_region, sync_replica_materials,
};
pub use rotation::sweep_rotations;

use serde_json::Value;

use crate::auth::Caller;
use crate::protocol::{KmsError, parse};
use crate::service::Kms;

/// Runs `operation` (the part after `TrentService.`), on a blocking thread; the
/// [`CRYPTO_OPERATIONS`] go through [`dispatch_crypto`] instead.
pub fn dispatch(
    kms: &std::sync::Arc<Kms>,
    operation: &str,
    caller: &Caller,
    body: &[u8],
) -> Result<Value, KmsError> {
    match operation {
        "CreateCustomKeyStore" => custom_key_stores::create(kms, caller, parse(body)?),
        "DescribeCustomKeyStores" => custom_key_stores::describe(kms, caller, parse(body)?),
        "ConnectCustomKeyStore" => custom_key_stores::connect(kms, caller, parse(body)?),
        "DisconnectCustomKeyStore" => custom_key_stores::disconnect(kms, caller, parse(body)?),
        "UpdateCustomKeyStore" => custom_key_stores::update(kms, caller, parse(body)?),
        "DeleteCustomKeyStore" => custom_key_stores::delete(kms, caller, parse(body)?),
        "CreateKey" => keys::create_key(kms, caller, parse(body)?),
        "DescribeKey" => keys::describe_key(kms, caller, parse(body)?),
        "CreateGrant" => grants::create_grant(kms, caller, parse(body)?),
        "ListGrants" => grants::list_grants(kms, caller, parse(body)?),
        "ListRetirableGrants" => grants::list_retirable_grants(kms, caller, parse(body)?),
        "RetireGrant" => grants::retire_grant(kms, caller, parse(body)?),
        "RevokeGrant" => grants::revoke_grant(kms, caller, parse(body)?),
        "GetKeyLastUsage" => last_usage::get_key_last_usage(kms, caller, parse(body)?),
        "ListKeys" => keys::list_keys(kms, caller, parse(body)?),
        "UpdateKeyDescription" => keys::update_key_description(kms, caller, parse(body)?),
        "EnableKey" => keys::set_enabled(kms, caller, parse(body)?, true),
        "DisableKey" => keys::set_enabled(kms, caller, parse(body)?, false),
        "ScheduleKeyDeletion" => keys::schedule_key_deletion(kms, caller, parse(body)?),
        "CancelKeyDeletion" => keys::cancel_key_deletion(kms, caller, parse(body)?),
        "CreateAlias" => aliases::create_alias(kms, caller, parse(body)?),
        "UpdateAlias" => aliases::update_alias(kms, caller, parse(body)?),
        "DeleteAlias" => aliases::delete_alias(kms, caller, parse(body)?),
        "ListAliases" => aliases::list_aliases(kms, caller, parse(body)?),
        "TagResource" => tags_policies::tag_resource(kms, caller, parse(body)?),
        "UntagResource" => tags_policies::untag_resource(kms, caller, parse(body)?),
        "ListResourceTags" => tags_policies::list_resource_tags(kms, caller, parse(body)?),
        "GetKeyPolicy" => tags_policies::get_key_policy(kms, caller, parse(body)?),
        "PutKeyPolicy" => tags_policies::put_key_policy(kms, caller, parse(body)?),
        "ListKeyPolicies" => tags_policies::list_key_policies(kms, caller, parse(body)?),
        "GenerateRandom" => crypto::generate_random(kms, caller, parse(body)?),
        // Asymmetric: CPU work (RSA, key pair generation), so on the blocking pool.
        "GetPublicKey" => asymmetric::get_public_key(kms, caller, parse(body)?),
        "Sign" => asymmetric::sign(kms, caller, parse(body)?),
        "Verify" => asymmetric::verify(kms, caller, parse(body)?),
        "GenerateDataKeyPair" => {
            data_key_pairs::generate_data_key_pair(kms, caller, parse(body)?, true)
        }
        "GenerateDataKeyPairWithoutPlaintext" => {
            data_key_pairs::generate_data_key_pair(kms, caller, parse(body)?, false)
        }
        "GenerateMac" => mac::generate_mac(kms, caller, parse(body)?),
        "VerifyMac" => mac::verify_mac(kms, caller, parse(body)?),
        "DeriveSharedSecret" => key_agreement::derive_shared_secret(kms, caller, parse(body)?),
        "Encapsulate" => kem::encapsulate(kms, caller, parse(body)?),
        "Decapsulate" => kem::decapsulate(kms, caller, parse(body)?),
        "EnableKeyRotation" => rotation::enable_key_rotation(kms, caller, parse(body)?),
        "DisableKeyRotation" => rotation::disable_key_rotation(kms, caller, parse(body)?),
        "GetKeyRotationStatus" => rotation::get_key_rotation_status(kms, caller, parse(body)?),
        "RotateKeyOnDemand" => rotation::rotate_key_on_demand(kms, caller, parse(body)?),
        "ListKeyRotations" => rotation::list_key_rotations(kms, caller, parse(body)?),
        "GetParametersForImport" => import::get_parameters_for_import(kms, caller, parse(body)?),
        "ImportKeyMaterial" => import::import_key_material(kms, caller, parse(body)?),
        "DeleteImportedKeyMaterial" => {
            import::delete_imported_key_material(kms, caller, parse(body)?)
        }
        "ReplicateKey" => multi_region::replicate_key(kms, caller, &parse(body)?, parse(body)?),
        "UpdatePrimaryRegion" => {
            multi_region::update_primary_region(kms, caller, &parse(body)?, parse(body)?)
        }
        _ => Err(unknown_operation(operation)),
    }
}

/// The operations [`dispatch_crypto`] serves (the ones that may call an XKS proxy).
pub const CRYPTO_OPERATIONS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncrypt",
];

/// Runs one of [`CRYPTO_OPERATIONS`]; any other name is an unknown operation.
pub async fn dispatch_crypto(
    kms: &Kms,
    operation: &str,
    caller: &Caller,
    body: &[u8],
) -> Result<Value, KmsError> {
    match operation {
        "Encrypt" => crypto::encrypt(kms, caller, parse(body)?).await,
        "Decrypt" => crypto::decrypt(kms, caller, parse(body)?).await,
        "GenerateDataKey" => crypto::generate_data_key(kms, caller, parse(body)?, true).await,
        "GenerateDataKeyWithoutPlaintext" => {
            crypto::generate_data_key(kms, caller, parse(body)?, false).await
        }
        "ReEncrypt" => crypto::re_encrypt(kms, caller, parse(body)?).await,
        _ => Err(unknown_operation(operation)),
    }
}

/// Every operation of the current service model that this front end does not serve yet.
const MODELED_BUT_UNSERVED: &[&str] = &[];

fn unknown_operation(operation: &str) -> KmsError {
    if MODELED_BUT_UNSERVED.contains(&operation) {
        KmsError::client(
            "UnsupportedOperationException",
            format!("{operation} is not supported by this KMS front end yet."),
        )
    } else {
        KmsError::client("UnknownOperationException", "")
    }
}

/// A `Limit` (1..1000, default 100) and `Marker` (1..1024) pair, validated.
fn paging(v: &mut crate::protocol::Violations, limit: Option<i64>, marker: Option<&str>) -> usize {
    if let Some(l) = limit {
        v.range(l, "limit", 1, 1000);
    }
    if let Some(m) = marker {
        v.length(m, "marker", 1, 1024);
    }
    usize::try_from(limit.unwrap_or(100).clamp(1, 1000)).unwrap_or(100)
}
