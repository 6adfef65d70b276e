//! Which key states allow which operation, and the error AWS answers when one does not: the
//! only place these rules and messages are written.
//!
//! Operations decide from a read of the key ([`usable_key`]); the write that follows is
//! conditional on the state they decided from (see `Kms::change_key`), so a decision is
//! never applied to a key whose state changed in between.

use crate::catalogue::{KeySpec, KeyState, KeyUsage};
use crate::protocol::KmsError;
use crate::storage::KeyRecord;

/// An operation that depends on the state of the key it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
    /// `GenerateDataKey`.
    GenerateDataKey,
    /// `GenerateDataKeyWithoutPlaintext`.
    GenerateDataKeyWithoutPlaintext,
    /// `ReEncrypt` (both the source and the destination key).
    ReEncrypt,
    /// `EnableKey`.
    EnableKey,
    /// `DisableKey`.
    DisableKey,
    /// `ScheduleKeyDeletion`.
    ScheduleKeyDeletion,
    /// `CancelKeyDeletion`.
    CancelKeyDeletion,
    /// `UpdateKeyDescription`.
    UpdateKeyDescription,
    /// `TagResource`.
    TagResource,
    /// `UntagResource`.
    UntagResource,
    /// `PutKeyPolicy`.
    PutKeyPolicy,
    /// `CreateAlias` and `UpdateAlias`, for the target key.
    PointAlias,
}

impl Operation {
    /// The operation's name as AWS spells it (also the XKS `kmsOperation`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext",
            Self::ReEncrypt => "ReEncrypt",
            Self::EnableKey => "EnableKey",
            Self::DisableKey => "DisableKey",
            Self::ScheduleKeyDeletion => "ScheduleKeyDeletion",
            Self::CancelKeyDeletion => "CancelKeyDeletion",
            Self::UpdateKeyDescription => "UpdateKeyDescription",
            Self::TagResource => "TagResource",
            Self::UntagResource => "UntagResource",
            Self::PutKeyPolicy => "PutKeyPolicy",
            Self::PointAlias => "CreateAlias",
        }
    }

    /// Whether the operation uses the key material: those see the key's effective state
    /// (`Unavailable` while its custom key store is not connected) and need a symmetric
    /// encryption key.
    pub const fn is_cryptographic(self) -> bool {
        matches!(
            self,
            Self::Encrypt
                | Self::Decrypt
                | Self::GenerateDataKey
                | Self::GenerateDataKeyWithoutPlaintext
                | Self::ReEncrypt
        )
    }
}

/// Whether `key`, seen in `state` (its effective state for cryptographic operations, the
/// stored one otherwise), may be used for `op`; if not, the error AWS answers.
pub fn usable_key(key: &KeyRecord, state: KeyState, op: Operation) -> Result<(), KmsError> {
    let allowed = match op {
        _ if op.is_cryptographic() => state == KeyState::Enabled,
        Operation::EnableKey | Operation::DisableKey => {
            matches!(state, KeyState::Enabled | KeyState::Disabled)
        }
        Operation::CancelKeyDeletion => state == KeyState::PendingDeletion,
        _ => state != KeyState::PendingDeletion,
    };
    if !allowed {
        return Err(refusal(key, state, op));
    }
    if op.is_cryptographic()
        && (key.key_usage != KeyUsage::EncryptDecrypt.as_str()
            || key.key_spec != KeySpec::SymmetricDefault.as_str())
    {
        return Err(KmsError::client(
            "InvalidKeyUsageException",
            format!(
                "{} key usage is {} with key spec {}, which is not valid for {}.",
                key.arn,
                key.key_usage,
                key.key_spec,
                op.as_str()
            ),
        ));
    }
    Ok(())
}

/// The error AWS answers when `op` finds `key` in `state`, a state that does not allow it.
pub fn refusal(key: &KeyRecord, state: KeyState, op: Operation) -> KmsError {
    let arn = &key.arn;
    match state {
        _ if op == Operation::CancelKeyDeletion => KmsError::invalid_state(format!(
            "{arn} is not pending deletion (current KeyState: {state})."
        )),
        KeyState::Disabled if op.is_cryptographic() => {
            KmsError::client("DisabledException", format!("{arn} is disabled."))
        }
        KeyState::PendingDeletion => KmsError::invalid_state(format!("{arn} is pending deletion.")),
        KeyState::PendingImport => KmsError::invalid_state(format!("{arn} is pending import.")),
        KeyState::Unavailable => KmsError::invalid_state(format!("{arn} is unavailable.")),
        other => KmsError::invalid_state(format!("{arn} is {other}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: KeyState) -> KeyRecord {
        KeyRecord {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            key_id: "k".into(),
            arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            creation_date_ms: 0,
            description: String::new(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            key_state: state,
            deletion_date_ms: None,
            pending_window_days: None,
            multi_region: false,
            custom_key_store_id: None,
            xks_key_id: None,
            policy: "{}".into(),
            sealed_material: None,
            material_id: None,
            tags: Vec::new(),
        }
    }

    fn answer(state: KeyState, op: Operation) -> Option<(String, String)> {
        usable_key(&key(state), state, op)
            .err()
            .map(|e| (e.name.to_string(), e.message))
    }

    #[test]
    fn every_state_and_operation_has_its_answer() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        let invalid = |what: &str| {
            Some((
                "KMSInvalidStateException".to_owned(),
                format!("{arn} is {what}."),
            ))
        };
        assert_eq!(answer(KeyState::Enabled, Operation::Encrypt), None);
        assert_eq!(
            answer(KeyState::Disabled, Operation::Decrypt),
            Some((
                "DisabledException".to_owned(),
                format!("{arn} is disabled.")
            ))
        );
        assert_eq!(
            answer(KeyState::PendingDeletion, Operation::ReEncrypt),
            invalid("pending deletion")
        );
        assert_eq!(
            answer(KeyState::Unavailable, Operation::GenerateDataKey),
            invalid("unavailable")
        );
        assert_eq!(
            answer(KeyState::PendingImport, Operation::EnableKey),
            invalid("pending import")
        );
        assert_eq!(
            answer(KeyState::PendingDeletion, Operation::DisableKey),
            invalid("pending deletion")
        );
        assert_eq!(answer(KeyState::Disabled, Operation::EnableKey), None);
        assert_eq!(answer(KeyState::Disabled, Operation::TagResource), None);
        assert_eq!(
            answer(KeyState::Disabled, Operation::CancelKeyDeletion),
            invalid("not pending deletion (current KeyState: Disabled)")
        );
        for op in [
            Operation::ScheduleKeyDeletion,
            Operation::UpdateKeyDescription,
            Operation::TagResource,
            Operation::UntagResource,
            Operation::PutKeyPolicy,
            Operation::PointAlias,
        ] {
            assert_eq!(
                answer(KeyState::PendingDeletion, op),
                invalid("pending deletion")
            );
            assert_eq!(answer(KeyState::Enabled, op), None);
        }
        let mut hmac = key(KeyState::Enabled);
        hmac.key_spec = "HMAC_256".into();
        hmac.key_usage = "GENERATE_VERIFY_MAC".into();
        let e = usable_key(&hmac, KeyState::Enabled, Operation::Encrypt)
            .expect_err("an HMAC key cannot encrypt");
        assert_eq!(e.name, "InvalidKeyUsageException");
        assert_eq!(
            e.message,
            format!(
                "{arn} key usage is GENERATE_VERIFY_MAC with key spec HMAC_256, which is not valid for Encrypt."
            )
        );
    }
}
