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
    /// `GetPublicKey` (any asymmetric key).
    GetPublicKey,
    /// `Sign` (a `SIGN_VERIFY` key).
    Sign,
    /// `Verify` (a `SIGN_VERIFY` key).
    Verify,
    /// `GenerateDataKeyPair` (a symmetric encryption key).
    GenerateDataKeyPair,
    /// `GenerateDataKeyPairWithoutPlaintext` (a symmetric encryption key).
    GenerateDataKeyPairWithoutPlaintext,
    /// `GenerateMac` (a `GENERATE_VERIFY_MAC` key).
    GenerateMac,
    /// `VerifyMac` (a `GENERATE_VERIFY_MAC` key).
    VerifyMac,
    /// `DeriveSharedSecret` (a `KEY_AGREEMENT` key).
    DeriveSharedSecret,
    /// `Encapsulate` (an `ENCAPSULATE_DECAPSULATE` key).
    Encapsulate,
    /// `Decapsulate` (an `ENCAPSULATE_DECAPSULATE` key).
    Decapsulate,
    /// `EnableKeyRotation`.
    EnableKeyRotation,
    /// `DisableKeyRotation`.
    DisableKeyRotation,
    /// `GetKeyRotationStatus`.
    GetKeyRotationStatus,
    /// `RotateKeyOnDemand`.
    RotateKeyOnDemand,
    /// `ListKeyRotations`.
    ListKeyRotations,
    /// `GetParametersForImport`.
    GetParametersForImport,
    /// `ImportKeyMaterial`.
    ImportKeyMaterial,
    /// `DeleteImportedKeyMaterial`.
    DeleteImportedKeyMaterial,
    /// `CreateGrant` (refused for a disabled key, as the cryptographic operations are).
    CreateGrant,
    /// `ReplicateKey`, for the primary key.
    ReplicateKey,
    /// `UpdatePrimaryRegion`, for the primary key and the replica taking its role.
    UpdatePrimaryRegion,
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
            Self::GetPublicKey => "GetPublicKey",
            Self::Sign => "Sign",
            Self::Verify => "Verify",
            Self::GenerateDataKeyPair => "GenerateDataKeyPair",
            Self::GenerateDataKeyPairWithoutPlaintext => "GenerateDataKeyPairWithoutPlaintext",
            Self::GenerateMac => "GenerateMac",
            Self::VerifyMac => "VerifyMac",
            Self::DeriveSharedSecret => "DeriveSharedSecret",
            Self::Encapsulate => "Encapsulate",
            Self::Decapsulate => "Decapsulate",
            Self::EnableKeyRotation => "EnableKeyRotation",
            Self::DisableKeyRotation => "DisableKeyRotation",
            Self::GetKeyRotationStatus => "GetKeyRotationStatus",
            Self::RotateKeyOnDemand => "RotateKeyOnDemand",
            Self::ListKeyRotations => "ListKeyRotations",
            Self::GetParametersForImport => "GetParametersForImport",
            Self::ImportKeyMaterial => "ImportKeyMaterial",
            Self::DeleteImportedKeyMaterial => "DeleteImportedKeyMaterial",
            Self::CreateGrant => "CreateGrant",
            Self::ReplicateKey => "ReplicateKey",
            Self::UpdatePrimaryRegion => "UpdatePrimaryRegion",
        }
    }

    /// Whether the operation uses the key material: those see the key's effective state
    /// (`Unavailable` while its custom key store is not connected) and need a key of the
    /// type [`Operation::accepts`] names.
    pub const fn is_cryptographic(self) -> bool {
        matches!(
            self,
            Self::Encrypt
                | Self::Decrypt
                | Self::GenerateDataKey
                | Self::GenerateDataKeyWithoutPlaintext
                | Self::ReEncrypt
                | Self::GetPublicKey
                | Self::Sign
                | Self::Verify
                | Self::GenerateDataKeyPair
                | Self::GenerateDataKeyPairWithoutPlaintext
                | Self::GenerateMac
                | Self::VerifyMac
                | Self::DeriveSharedSecret
                | Self::Encapsulate
                | Self::Decapsulate
        )
    }

    /// Whether a cryptographic operation may use a key of this spec and usage: each needs
    /// its key usage (Encrypt, Decrypt and ReEncrypt any `ENCRYPT_DECRYPT` key, symmetric or
    /// not), GetPublicKey any key pair, the data key operations a symmetric encryption key.
    pub fn accepts(self, spec: &str, usage: &str) -> bool {
        match self {
            Self::Sign | Self::Verify => usage == KeyUsage::SignVerify.as_str(),
            Self::GenerateMac | Self::VerifyMac => usage == KeyUsage::GenerateVerifyMac.as_str(),
            Self::DeriveSharedSecret => usage == KeyUsage::KeyAgreement.as_str(),
            Self::Encapsulate | Self::Decapsulate => {
                usage == KeyUsage::EncapsulateDecapsulate.as_str()
            }
            Self::Encrypt | Self::Decrypt | Self::ReEncrypt => {
                usage == KeyUsage::EncryptDecrypt.as_str()
            }
            Self::GetPublicKey => KeySpec::parse(spec).is_some_and(KeySpec::is_asymmetric),
            _ => {
                usage == KeyUsage::EncryptDecrypt.as_str()
                    && spec == KeySpec::SymmetricDefault.as_str()
            }
        }
    }
}

/// Whether `key`, seen in `state` (its effective state for cryptographic operations, the
/// stored one otherwise), may be used for `op`; if not, the error AWS answers.
pub fn usable_key(key: &KeyRecord, state: KeyState, op: Operation) -> Result<(), KmsError> {
    let allowed = match op {
        // A multi-Region key whose primary is moving keeps working (AWS's key-state table).
        _ if op.is_cryptographic() => matches!(state, KeyState::Enabled | KeyState::Updating),
        // Multi-Region keys (`kms-keys-in-use.md` §7): a replica being created takes its
        // names, tags, policy, description and deletion schedule, nothing that needs its
        // material or its enabled state; a key whose primary is moving takes neither
        // another move nor a change of its enabled state or deletion schedule.
        Operation::EnableKey
        | Operation::DisableKey
        | Operation::EnableKeyRotation
        | Operation::DisableKeyRotation
        | Operation::RotateKeyOnDemand
        | Operation::ListKeyRotations
        | Operation::GetKeyRotationStatus
        | Operation::GetParametersForImport
        | Operation::ImportKeyMaterial
        | Operation::DeleteImportedKeyMaterial
            if state == KeyState::Creating =>
        {
            false
        }
        Operation::ScheduleKeyDeletion
        | Operation::GetParametersForImport
        | Operation::DeleteImportedKeyMaterial
            if state == KeyState::Updating =>
        {
            false
        }
        Operation::ReplicateKey | Operation::UpdatePrimaryRegion => state == KeyState::Enabled,
        Operation::EnableKey | Operation::DisableKey => {
            matches!(state, KeyState::Enabled | KeyState::Disabled)
        }
        Operation::CancelKeyDeletion => matches!(
            state,
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
        ),
        // AWS's key-state table: Disabled, PendingDeletion, PendingImport and Creating refuse
        // CreateGrant; every other state allows it.
        Operation::CreateGrant => !matches!(
            state,
            KeyState::Disabled
                | KeyState::PendingDeletion
                | KeyState::PendingReplicaDeletion
                | KeyState::PendingImport
                | KeyState::Creating
        ),
        // Rotation makes material: only for a usable key (AWS's key-state table).
        Operation::EnableKeyRotation
        | Operation::DisableKeyRotation
        | Operation::RotateKeyOnDemand => state == KeyState::Enabled,
        // The status reads `false` while the key is pending deletion (kept for a cancel);
        // deleting imported material leaves a key pending deletion so.
        Operation::GetKeyRotationStatus | Operation::DeleteImportedKeyMaterial => true,
        // Import (and GetParametersForImport) works in PendingImport, Enabled and Disabled.
        // A primary waiting for its replicas' deletion is as good as pending deletion.
        _ => !matches!(
            state,
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
        ),
    };
    if !allowed {
        return Err(refusal(key, state, op));
    }
    if op.is_cryptographic() && !op.accepts(&key.key_spec, &key.key_usage) {
        return Err(wrong_key_type(key, op));
    }
    Ok(())
}

/// The error AWS answers when `op` names a key of a type it cannot use.
fn wrong_key_type(key: &KeyRecord, op: Operation) -> KmsError {
    match op {
        // AWS's text for Sign, GenerateMac, DeriveSharedSecret and Encrypt
        // (kms-keys-in-use.md §2-§4, recorded); the operations beside them follow it.
        Operation::Sign
        | Operation::Verify
        | Operation::Encrypt
        | Operation::Decrypt
        | Operation::ReEncrypt
        | Operation::GenerateMac
        | Operation::VerifyMac
        | Operation::DeriveSharedSecret
        | Operation::Encapsulate
        | Operation::Decapsulate => KmsError::client(
            "InvalidKeyUsageException",
            format!(
                "{} key usage is {} which is not valid for {}.",
                key.arn,
                key.key_usage,
                op.as_str()
            ),
        ),
        // The model lists UnsupportedOperationException for a key without a public key;
        // the text is ours (AWS's is unrecorded).
        Operation::GetPublicKey => KmsError::client(
            "UnsupportedOperationException",
            format!(
                "{} key spec is {}, which has no public key; GetPublicKey needs an asymmetric KMS key.",
                key.arn, key.key_spec
            ),
        ),
        _ => KmsError::client(
            "InvalidKeyUsageException",
            format!(
                "{} key usage is {} with key spec {}, which is not valid for {}.",
                key.arn,
                key.key_usage,
                key.key_spec,
                op.as_str()
            ),
        ),
    }
}

/// The error AWS answers when `op` finds `key` in `state`, a state that does not allow it.
pub fn refusal(key: &KeyRecord, state: KeyState, op: Operation) -> KmsError {
    let arn = &key.arn;
    match state {
        _ if op == Operation::CancelKeyDeletion => KmsError::invalid_state(format!(
            "{arn} is not pending deletion (current KeyState: {state})."
        )),
        KeyState::Disabled
            if op.is_cryptographic()
                || matches!(
                    op,
                    Operation::EnableKeyRotation
                        | Operation::DisableKeyRotation
                        | Operation::RotateKeyOnDemand
                        | Operation::CreateGrant
                        | Operation::ReplicateKey
                        | Operation::UpdatePrimaryRegion
                ) =>
        {
            KmsError::client("DisabledException", format!("{arn} is disabled."))
        }
        KeyState::PendingDeletion => KmsError::invalid_state(format!("{arn} is pending deletion.")),
        KeyState::PendingImport => KmsError::invalid_state(format!("{arn} is pending import.")),
        KeyState::Unavailable => KmsError::invalid_state(format!("{arn} is unavailable.")),
        // AWS's texts for Creating and Updating (`kms-keys-in-use.md` §7); the one for
        // PendingReplicaDeletion follows them (unrecorded).
        KeyState::Creating => KmsError::invalid_state(format!("{arn} is creating.")),
        KeyState::Updating => KmsError::invalid_state(format!("{arn} is updating.")),
        KeyState::PendingReplicaDeletion => {
            KmsError::invalid_state(format!("{arn} is pending replica deletion."))
        }
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
        // Sign and Verify need SIGN_VERIFY; GetPublicKey any key pair; data key pairs a
        // symmetric encryption key. All are refused when disabled like the others.
        let mut signer = key(KeyState::Enabled);
        signer.key_spec = "ECC_NIST_P256".into();
        signer.key_usage = "SIGN_VERIFY".into();
        for op in [Operation::Sign, Operation::Verify, Operation::GetPublicKey] {
            assert!(usable_key(&signer, KeyState::Enabled, op).is_ok(), "{op:?}");
            let e = usable_key(&signer, KeyState::Disabled, op).expect_err("disabled");
            assert_eq!(e.name, "DisabledException");
        }
        let e = usable_key(&signer, KeyState::Enabled, Operation::GenerateDataKeyPair)
            .expect_err("a signing key cannot wrap a data key pair");
        assert_eq!(e.name, "InvalidKeyUsageException");
        let e = usable_key(&key(KeyState::Enabled), KeyState::Enabled, Operation::Sign)
            .expect_err("a symmetric key cannot sign");
        assert_eq!(
            e.message,
            format!("{arn} key usage is ENCRYPT_DECRYPT which is not valid for Sign.")
        );
        let e = usable_key(
            &key(KeyState::Enabled),
            KeyState::Enabled,
            Operation::GetPublicKey,
        )
        .expect_err("a symmetric key has no public key");
        assert_eq!(e.name, "UnsupportedOperationException");
        assert!(
            usable_key(
                &key(KeyState::Enabled),
                KeyState::Enabled,
                Operation::GenerateDataKeyPairWithoutPlaintext
            )
            .is_ok()
        );
        let mut hmac = key(KeyState::Enabled);
        hmac.key_spec = "HMAC_256".into();
        hmac.key_usage = "GENERATE_VERIFY_MAC".into();
        let e = usable_key(&hmac, KeyState::Enabled, Operation::Encrypt)
            .expect_err("an HMAC key cannot encrypt");
        assert_eq!(e.name, "InvalidKeyUsageException");
        assert_eq!(
            e.message,
            format!("{arn} key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt.")
        );
        // Encrypt, Decrypt and ReEncrypt take any ENCRYPT_DECRYPT key; the data key
        // operations only a symmetric one. Each new operation needs its own usage.
        let mut rsa = key(KeyState::Enabled);
        rsa.key_spec = "RSA_2048".into();
        for op in [Operation::Encrypt, Operation::Decrypt, Operation::ReEncrypt] {
            assert!(usable_key(&rsa, KeyState::Enabled, op).is_ok(), "{op:?}");
        }
        let e = usable_key(&rsa, KeyState::Enabled, Operation::GenerateDataKey)
            .expect_err("an RSA key cannot make data keys");
        assert_eq!(e.name, "InvalidKeyUsageException");
        for op in [Operation::GenerateMac, Operation::VerifyMac] {
            assert!(usable_key(&hmac, KeyState::Enabled, op).is_ok(), "{op:?}");
            let e = usable_key(&rsa, KeyState::Enabled, op).expect_err("not a MAC key");
            assert_eq!(
                e.message,
                format!(
                    "{arn} key usage is ENCRYPT_DECRYPT which is not valid for {}.",
                    op.as_str()
                )
            );
            let e = usable_key(&hmac, KeyState::Disabled, op).expect_err("disabled");
            assert_eq!(e.name, "DisabledException");
        }
        let mut agreement = key(KeyState::Enabled);
        agreement.key_spec = "ECC_NIST_P256".into();
        agreement.key_usage = "KEY_AGREEMENT".into();
        assert!(usable_key(&agreement, KeyState::Enabled, Operation::DeriveSharedSecret).is_ok());
        let e = usable_key(&signer, KeyState::Enabled, Operation::DeriveSharedSecret)
            .expect_err("a signing key cannot agree");
        assert_eq!(
            e.message,
            format!("{arn} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret.")
        );
        let mut kem = key(KeyState::Enabled);
        kem.key_spec = "ML_KEM_768".into();
        kem.key_usage = "ENCAPSULATE_DECAPSULATE".into();
        for op in [Operation::Encapsulate, Operation::Decapsulate] {
            assert!(usable_key(&kem, KeyState::Enabled, op).is_ok(), "{op:?}");
            let e = usable_key(&agreement, KeyState::Enabled, op).expect_err("not a KEM key");
            assert_eq!(e.name, "InvalidKeyUsageException");
            let e = usable_key(&kem, KeyState::PendingDeletion, op).expect_err("pending");
            assert_eq!(e.name, "KMSInvalidStateException");
        }
    }

    #[test]
    fn multi_region_states_have_their_answers() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        let invalid = |what: &str| {
            Some((
                "KMSInvalidStateException".to_owned(),
                format!("{arn} is {what}."),
            ))
        };
        // A replica being created: names, tags, policy and deletion work; nothing else.
        for op in [
            Operation::TagResource,
            Operation::PutKeyPolicy,
            Operation::PointAlias,
            Operation::UpdateKeyDescription,
            Operation::ScheduleKeyDeletion,
        ] {
            assert_eq!(answer(KeyState::Creating, op), None, "{op:?}");
        }
        for op in [
            Operation::Encrypt,
            Operation::EnableKey,
            Operation::DisableKey,
            Operation::CreateGrant,
            Operation::RotateKeyOnDemand,
            Operation::ImportKeyMaterial,
            Operation::GetParametersForImport,
        ] {
            assert_eq!(
                answer(KeyState::Creating, op),
                invalid("creating"),
                "{op:?}"
            );
        }
        // A primary moving: cryptography works, its enabled state and deletion do not.
        assert_eq!(answer(KeyState::Updating, Operation::Decrypt), None);
        assert_eq!(answer(KeyState::Updating, Operation::TagResource), None);
        for op in [
            Operation::EnableKey,
            Operation::DisableKey,
            Operation::ScheduleKeyDeletion,
            Operation::ReplicateKey,
            Operation::UpdatePrimaryRegion,
        ] {
            assert_eq!(
                answer(KeyState::Updating, op),
                invalid("updating"),
                "{op:?}"
            );
        }
        // A primary waiting for its replicas' deletion is unusable but can be cancelled.
        assert_eq!(
            answer(KeyState::PendingReplicaDeletion, Operation::Encrypt),
            invalid("pending replica deletion")
        );
        assert_eq!(
            answer(KeyState::PendingReplicaDeletion, Operation::ReplicateKey),
            invalid("pending replica deletion")
        );
        assert_eq!(
            answer(
                KeyState::PendingReplicaDeletion,
                Operation::CancelKeyDeletion
            ),
            None
        );
        assert_eq!(answer(KeyState::Enabled, Operation::ReplicateKey), None);
        assert_eq!(
            answer(KeyState::Disabled, Operation::ReplicateKey),
            Some((
                "DisabledException".to_owned(),
                format!("{arn} is disabled.")
            ))
        );
        assert_eq!(
            answer(KeyState::PendingImport, Operation::UpdatePrimaryRegion),
            invalid("pending import")
        );
    }
}
