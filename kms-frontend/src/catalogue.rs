//! The catalogue of the KMS API's vocabulary: key specs, key usages, origins, key states,
//! custom key store connection states, the algorithm lists of `KeyMetadata`, the
//! `KeyMetadata` JSON shape with AWS's presence rules, key ids and ARNs.
//!
//! Facts come from the botocore KMS service model (the "model") and the AWS recordings
//! summarised in `kms-api.md` §2; where AWS's behaviour is not confirmed by a source the code
//! says **UNVERIFIED**.
//!
//! Enum values are listed in the model's order, because AWS renders that order in
//! `ValidationException` messages (`Member must satisfy enum value set: [..]`).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Renders a list of enum values as AWS does in `ValidationException` messages:
/// `[A, B, C]` (comma + space, in the order given).
pub fn enum_values<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(value);
    }
    out.push(']');
    out
}

/// Defines a wire enum: the Rust enum, `ALL` (model order), `as_str`, `parse`,
/// `allowed_values` and `Display`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of the AWS service model.
            pub const ALL: &'static [Self] = &[$( Self::$variant, )+];

            /// The value as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )+
                }
            }

            /// Parses the wire value (exact and case-sensitive, as AWS is); `None` otherwise.
            pub fn parse(value: &str) -> Option<Self> {
                match value {
                    $( $wire => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// Every value rendered as in AWS's `ValidationException` messages,
            /// e.g. `[A, B, C]`.
            pub fn allowed_values() -> String {
                enum_values(Self::ALL.iter().map(|v| v.as_str()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// The type of key material of a KMS key (`KeySpec`).
    ///
    /// Order: the model's `KeySpec` enum. The 17 values up to `ECC_NIST_EDWARDS25519` are in
    /// botocore 1.43's order; the three `ML_KEM_*` values follow it as in botocore 1.44.5 per
    /// `kms-api.md` §2.1 (their position at the end is inferred from that listing).
    KeySpec {
        /// RSA key pair, 2048-bit modulus.
        Rsa2048 => "RSA_2048",
        /// RSA key pair, 3072-bit modulus.
        Rsa3072 => "RSA_3072",
        /// RSA key pair, 4096-bit modulus.
        Rsa4096 => "RSA_4096",
        /// NIST P-256 (secp256r1) key pair.
        EccNistP256 => "ECC_NIST_P256",
        /// NIST P-384 (secp384r1) key pair.
        EccNistP384 => "ECC_NIST_P384",
        /// NIST P-521 (secp521r1) key pair.
        EccNistP521 => "ECC_NIST_P521",
        /// secp256k1 key pair.
        EccSecgP256k1 => "ECC_SECG_P256K1",
        /// Symmetric encryption key (AES-256-GCM; SM4 in China Regions, not modelled here).
        SymmetricDefault => "SYMMETRIC_DEFAULT",
        /// HMAC key with SHA-224.
        Hmac224 => "HMAC_224",
        /// HMAC key with SHA-256.
        Hmac256 => "HMAC_256",
        /// HMAC key with SHA-384.
        Hmac384 => "HMAC_384",
        /// HMAC key with SHA-512.
        Hmac512 => "HMAC_512",
        /// SM2 key pair (China Regions only).
        Sm2 => "SM2",
        /// ML-DSA-44 key pair (FIPS 204).
        MlDsa44 => "ML_DSA_44",
        /// ML-DSA-65 key pair (FIPS 204).
        MlDsa65 => "ML_DSA_65",
        /// ML-DSA-87 key pair (FIPS 204).
        MlDsa87 => "ML_DSA_87",
        /// Ed25519 key pair.
        EccNistEdwards25519 => "ECC_NIST_EDWARDS25519",
        /// ML-KEM-512 key pair (FIPS 203; not in China Regions).
        MlKem512 => "ML_KEM_512",
        /// ML-KEM-768 key pair (FIPS 203; not in China Regions).
        MlKem768 => "ML_KEM_768",
        /// ML-KEM-1024 key pair (FIPS 203; not in China Regions).
        MlKem1024 => "ML_KEM_1024",
    }
}

wire_enum! {
    /// The cryptographic operations a KMS key is for (`KeyUsage`), in the model's order
    /// (`ENCAPSULATE_DECAPSULATE` is the newest value and comes last).
    KeyUsage {
        /// Sign and Verify.
        SignVerify => "SIGN_VERIFY",
        /// Encrypt, Decrypt, ReEncrypt and the data key operations.
        EncryptDecrypt => "ENCRYPT_DECRYPT",
        /// GenerateMac and VerifyMac.
        GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        /// DeriveSharedSecret.
        KeyAgreement => "KEY_AGREEMENT",
        /// Encapsulate and Decapsulate (ML-KEM).
        EncapsulateDecapsulate => "ENCAPSULATE_DECAPSULATE",
    }
}

wire_enum! {
    /// The source of a KMS key's material (`Origin`).
    Origin {
        /// KMS generated the key material.
        AwsKms => "AWS_KMS",
        /// The key material is imported (or not yet imported).
        External => "EXTERNAL",
        /// The key material lives in an AWS CloudHSM key store.
        AwsCloudhsm => "AWS_CLOUDHSM",
        /// The key is in an external key store (XKS): KMS material plus an external key.
        ExternalKeyStore => "EXTERNAL_KEY_STORE",
    }
}

wire_enum! {
    /// The state of a KMS key (`KeyState`).
    KeyState {
        /// Being created (e.g. a replica key).
        Creating => "Creating",
        /// Usable.
        Enabled => "Enabled",
        /// Disabled by DisableKey.
        Disabled => "Disabled",
        /// Scheduled for deletion.
        PendingDeletion => "PendingDeletion",
        /// An `EXTERNAL` key without key material.
        PendingImport => "PendingImport",
        /// A multi-Region primary scheduled for deletion that still has replicas.
        PendingReplicaDeletion => "PendingReplicaDeletion",
        /// A key in a custom key store that is not connected.
        Unavailable => "Unavailable",
        /// Being updated (e.g. UpdatePrimaryRegion).
        Updating => "Updating",
    }
}

wire_enum! {
    /// The connection state of a custom key store (`ConnectionStateType`).
    ConnectionState {
        /// Usable: the proxy answered the connect's health check.
        Connected => "CONNECTED",
        /// ConnectCustomKeyStore is running.
        Connecting => "CONNECTING",
        /// The last connect failed; see the store's `ConnectionErrorCode`.
        Failed => "FAILED",
        /// Initial state, and after DisconnectCustomKeyStore.
        Disconnected => "DISCONNECTED",
        /// DisconnectCustomKeyStore is running.
        Disconnecting => "DISCONNECTING",
    }
}

impl KeySpec {
    /// Whether the value belongs to the deprecated `CustomerMasterKeySpec` enum (the 13 older
    /// values; not the ML-DSA, ML-KEM and Ed25519 specs).
    pub const fn is_customer_master_key_spec_value(self) -> bool {
        !matches!(
            self,
            Self::MlDsa44
                | Self::MlDsa65
                | Self::MlDsa87
                | Self::EccNistEdwards25519
                | Self::MlKem512
                | Self::MlKem768
                | Self::MlKem1024
        )
    }

    /// Parses a `CustomerMasterKeySpec` value (only the 13 values of that deprecated enum).
    pub fn parse_customer_master_key_spec(value: &str) -> Option<Self> {
        Self::parse(value).filter(|spec| spec.is_customer_master_key_spec_value())
    }

    /// The `CustomerMasterKeySpec` enum rendered as in AWS's `ValidationException` messages.
    pub fn customer_master_key_spec_allowed_values() -> String {
        enum_values(
            Self::ALL
                .iter()
                .filter(|spec| spec.is_customer_master_key_spec_value())
                .map(|spec| spec.as_str()),
        )
    }

    /// The key usages CreateKey accepts with this spec (`kms-api.md` §2.3, from the model's
    /// `KeyUsage` documentation). The first entry is not a default: only `SYMMETRIC_DEFAULT`
    /// may omit `KeyUsage`.
    pub const fn allowed_usages(self) -> &'static [KeyUsage] {
        use KeyUsage::{
            EncapsulateDecapsulate, EncryptDecrypt, GenerateVerifyMac, KeyAgreement, SignVerify,
        };
        match self {
            Self::SymmetricDefault => &[EncryptDecrypt],
            Self::Hmac224 | Self::Hmac256 | Self::Hmac384 | Self::Hmac512 => &[GenerateVerifyMac],
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => &[EncryptDecrypt, SignVerify],
            Self::EccNistP256 | Self::EccNistP384 | Self::EccNistP521 => {
                &[SignVerify, KeyAgreement]
            }
            Self::EccSecgP256k1
            | Self::EccNistEdwards25519
            | Self::MlDsa44
            | Self::MlDsa65
            | Self::MlDsa87 => &[SignVerify],
            Self::MlKem512 | Self::MlKem768 | Self::MlKem1024 => &[EncapsulateDecapsulate],
            Self::Sm2 => &[EncryptDecrypt, SignVerify, KeyAgreement],
        }
    }

    /// Whether `usage` is valid with this spec.
    pub fn allows_usage(self, usage: KeyUsage) -> bool {
        self.allowed_usages().contains(&usage)
    }

    /// Whether the spec exists only in the China Regions (`SM2`).
    pub const fn china_only(self) -> bool {
        matches!(self, Self::Sm2)
    }

    /// Whether the spec is unavailable in the China Regions (`ML_KEM_*`).
    pub const fn not_in_china(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// Whether this is the symmetric encryption spec (`SYMMETRIC_DEFAULT`).
    pub const fn is_symmetric_encryption(self) -> bool {
        matches!(self, Self::SymmetricDefault)
    }

    /// Whether this is an HMAC spec (`HMAC_*`).
    pub const fn is_hmac(self) -> bool {
        matches!(
            self,
            Self::Hmac224 | Self::Hmac256 | Self::Hmac384 | Self::Hmac512
        )
    }

    /// Whether the spec is a key pair (everything but `SYMMETRIC_DEFAULT` and `HMAC_*`).
    pub const fn is_asymmetric(self) -> bool {
        !self.is_symmetric_encryption() && !self.is_hmac()
    }
}

impl Origin {
    /// Whether the origin is a custom key store (`AWS_CLOUDHSM` or `EXTERNAL_KEY_STORE`).
    pub const fn is_custom_key_store(self) -> bool {
        matches!(self, Self::AwsCloudhsm | Self::ExternalKeyStore)
    }

    /// Whether CreateKey accepts this origin with `spec` and `usage` (Region and multi-Region
    /// rules aside). Assumes nothing about `usage` beyond [`KeySpec::allowed_usages`]:
    /// - `AWS_KMS`: every spec with each of its allowed usages;
    /// - `EXTERNAL`: likewise. The current docs say key material can be imported into all key
    ///   types (GetParametersForImport: "All KMS key types are supported"); AWS recordings
    ///   confirm symmetric, HMAC and ECC signing keys and the docs RSA. Import into
    ///   KEY_AGREEMENT, ML-DSA, ML-KEM and Ed25519 keys is **UNVERIFIED**;
    /// - `AWS_CLOUDHSM`, `EXTERNAL_KEY_STORE`: `SYMMETRIC_DEFAULT` / `ENCRYPT_DECRYPT` only.
    pub fn allows_key_type(self, spec: KeySpec, usage: KeyUsage) -> bool {
        if !spec.allows_usage(usage) {
            return false;
        }
        match self {
            Self::AwsKms | Self::External => true,
            Self::AwsCloudhsm | Self::ExternalKeyStore => spec.is_symmetric_encryption(),
        }
    }

    /// Whether a multi-Region key can have this origin (not in a custom key store).
    pub const fn allows_multi_region(self) -> bool {
        !self.is_custom_key_store()
    }
}

impl KeyState {
    /// `KeyMetadata.Enabled`: true exactly in the `Enabled` state.
    pub const fn is_enabled(self) -> bool {
        matches!(self, Self::Enabled)
    }
}

/// The algorithm lists of a key's `KeyMetadata`; at most one is `Some` (the one matching the
/// key usage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Algorithms {
    /// `EncryptionAlgorithms` (KeyUsage `ENCRYPT_DECRYPT`).
    pub encryption: Option<&'static [&'static str]>,
    /// `SigningAlgorithms` (KeyUsage `SIGN_VERIFY`).
    pub signing: Option<&'static [&'static str]>,
    /// `MacAlgorithms` (KeyUsage `GENERATE_VERIFY_MAC`).
    pub mac: Option<&'static [&'static str]>,
    /// `KeyAgreementAlgorithms` (KeyUsage `KEY_AGREEMENT`).
    pub key_agreement: Option<&'static [&'static str]>,
    /// `EncapsulationAlgorithms` (KeyUsage `ENCAPSULATE_DECAPSULATE`).
    pub encapsulation: Option<&'static [&'static str]>,
}

impl Algorithms {
    /// The `KeyMetadata` member name and list of the one present list, if any.
    pub fn metadata_field(&self) -> Option<(&'static str, &'static [&'static str])> {
        [
            ("EncryptionAlgorithms", self.encryption),
            ("SigningAlgorithms", self.signing),
            ("MacAlgorithms", self.mac),
            ("KeyAgreementAlgorithms", self.key_agreement),
            ("EncapsulationAlgorithms", self.encapsulation),
        ]
        .into_iter()
        .find_map(|(name, list)| list.map(|list| (name, list)))
    }

    /// Every algorithm of the present list (empty when none is present).
    pub fn all(&self) -> &'static [&'static str] {
        self.metadata_field().map_or(&[], |(_, list)| list)
    }
}

/// The `KeyMetadata` member name of the algorithm list for `usage`.
pub const fn algorithms_field_name(usage: KeyUsage) -> &'static str {
    match usage {
        KeyUsage::EncryptDecrypt => "EncryptionAlgorithms",
        KeyUsage::SignVerify => "SigningAlgorithms",
        KeyUsage::GenerateVerifyMac => "MacAlgorithms",
        KeyUsage::KeyAgreement => "KeyAgreementAlgorithms",
        KeyUsage::EncapsulateDecapsulate => "EncapsulationAlgorithms",
    }
}

const RSA_ENCRYPTION: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];
const RSA_SIGNING: &[&str] = &[
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
];
// UNVERIFIED order: the model lists both Ed25519 algorithms (ED25519_SHA_512 for
// MessageType RAW, ED25519_PH_SHA_512 for DIGEST) but no AWS response was seen; this is the
// model's enum order.
const ED25519_SIGNING: &[&str] = &["ED25519_SHA_512", "ED25519_PH_SHA_512"];
// The only ML-DSA signing algorithm of the model (MessageType RAW, DIGEST or EXTERNAL_MU).
const ML_DSA_SIGNING: &[&str] = &["ML_DSA_SHAKE_256"];

/// The algorithm lists of `KeyMetadata` for a key spec and usage (`kms-api.md` §2.4). All
/// lists are `None` when `usage` is not valid for `spec`.
///
/// Orders confirmed by AWS recordings or the model's examples: RSA encryption and signing,
/// ECDSA, HMAC, symmetric. Single-entry lists (SM2, ECDH, ML-DSA, ML-KEM) have no order to
/// get wrong; the Ed25519 order is **UNVERIFIED**.
pub fn algorithms(spec: KeySpec, usage: KeyUsage) -> Algorithms {
    use KeySpec as S;
    use KeyUsage as U;
    let none = Algorithms::default();
    match (spec, usage) {
        (S::SymmetricDefault, U::EncryptDecrypt) => Algorithms {
            encryption: Some(&["SYMMETRIC_DEFAULT"]),
            ..none
        },
        (S::Hmac224, U::GenerateVerifyMac) => Algorithms {
            mac: Some(&["HMAC_SHA_224"]),
            ..none
        },
        (S::Hmac256, U::GenerateVerifyMac) => Algorithms {
            mac: Some(&["HMAC_SHA_256"]),
            ..none
        },
        (S::Hmac384, U::GenerateVerifyMac) => Algorithms {
            mac: Some(&["HMAC_SHA_384"]),
            ..none
        },
        (S::Hmac512, U::GenerateVerifyMac) => Algorithms {
            mac: Some(&["HMAC_SHA_512"]),
            ..none
        },
        (S::Rsa2048 | S::Rsa3072 | S::Rsa4096, U::EncryptDecrypt) => Algorithms {
            encryption: Some(RSA_ENCRYPTION),
            ..none
        },
        (S::Rsa2048 | S::Rsa3072 | S::Rsa4096, U::SignVerify) => Algorithms {
            signing: Some(RSA_SIGNING),
            ..none
        },
        (S::EccNistP256 | S::EccSecgP256k1, U::SignVerify) => Algorithms {
            signing: Some(&["ECDSA_SHA_256"]),
            ..none
        },
        (S::EccNistP384, U::SignVerify) => Algorithms {
            signing: Some(&["ECDSA_SHA_384"]),
            ..none
        },
        (S::EccNistP521, U::SignVerify) => Algorithms {
            signing: Some(&["ECDSA_SHA_512"]),
            ..none
        },
        (S::EccNistP256 | S::EccNistP384 | S::EccNistP521 | S::Sm2, U::KeyAgreement) => {
            Algorithms {
                key_agreement: Some(&["ECDH"]),
                ..none
            }
        }
        (S::EccNistEdwards25519, U::SignVerify) => Algorithms {
            signing: Some(ED25519_SIGNING),
            ..none
        },
        (S::MlDsa44 | S::MlDsa65 | S::MlDsa87, U::SignVerify) => Algorithms {
            signing: Some(ML_DSA_SIGNING),
            ..none
        },
        (S::MlKem512 | S::MlKem768 | S::MlKem1024, U::EncapsulateDecapsulate) => Algorithms {
            encapsulation: Some(&["ML_KEM"]),
            ..none
        },
        (S::Sm2, U::EncryptDecrypt) => Algorithms {
            encryption: Some(&["SM2PKE"]),
            ..none
        },
        (S::Sm2, U::SignVerify) => Algorithms {
            signing: Some(&["SM2DSA"]),
            ..none
        },
        _ => none,
    }
}

/// What a stored key knows, for rendering its `KeyMetadata` (CreateKey, DescribeKey, ...).
///
/// The optional members are filtered by AWS's presence rules in
/// [`key_metadata_json`](Self::key_metadata_json): a value passed for a field that does not
/// apply to the key (e.g. a deletion date of an `Enabled` key) is not rendered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyMetadataView<'a> {
    /// `AWSAccountId`: the owning account (12 digits).
    pub account_id: &'a str,
    /// The key's Region (the `Region` of `MultiRegionConfiguration.PrimaryKey`).
    pub region: &'a str,
    /// `KeyId`.
    pub key_id: &'a str,
    /// `Arn`: the key ARN.
    pub arn: &'a str,
    /// `CreationDate`: epoch seconds (rendered with millisecond precision).
    pub creation_date: f64,
    /// `KeyState`; `Enabled` is derived from it.
    pub state: KeyState,
    /// `Description` (always rendered, `""` by default).
    pub description: &'a str,
    /// `KeyUsage`.
    pub key_usage: KeyUsage,
    /// `KeySpec` (and `CustomerMasterKeySpec`).
    pub key_spec: KeySpec,
    /// `Origin`.
    pub origin: Origin,
    /// `DeletionDate` (epoch seconds): rendered only in `PendingDeletion`.
    pub deletion_date: Option<f64>,
    /// `PendingDeletionWindowInDays`: rendered only in `PendingReplicaDeletion` (the model:
    /// "present only when the KeyState of the KMS key is PendingReplicaDeletion"; a
    /// single-Region key or replica in `PendingDeletion` shows `DeletionDate` instead).
    pub pending_deletion_window_days: Option<u32>,
    /// `CustomKeyStoreId`: rendered only for `AWS_CLOUDHSM` and `EXTERNAL_KEY_STORE` keys.
    pub custom_key_store_id: Option<&'a str>,
    /// `CloudHsmClusterId`: rendered only for `AWS_CLOUDHSM` keys.
    pub cloud_hsm_cluster_id: Option<&'a str>,
    /// `XksKeyConfiguration.Id`: rendered only for `EXTERNAL_KEY_STORE` keys.
    pub xks_key_id: Option<&'a str>,
    /// `MultiRegion` (always rendered); `MultiRegionConfiguration` only when true: as
    /// `multi_region_configuration` says, or as a primary with no replicas without it.
    pub multi_region: bool,
    /// The multi-Region key's set (its role, its primary, its replicas), when known.
    pub multi_region_configuration: Option<&'a MultiRegionConfiguration>,
    /// `CurrentKeyMaterialId` (64 hex characters): rendered only for `SYMMETRIC_DEFAULT` keys
    /// of origin `AWS_KMS`, or `EXTERNAL` outside `PendingImport`.
    pub current_key_material_id: Option<&'a str>,
    /// `ExpirationModel` (`KEY_MATERIAL_EXPIRES` | `KEY_MATERIAL_DOES_NOT_EXPIRE`): rendered
    /// only for `EXTERNAL` keys outside `PendingImport` (the caller passes it after import).
    pub expiration_model: Option<&'a str>,
    /// `ValidTo` (epoch seconds): rendered only with a rendered `ExpirationModel` of
    /// `KEY_MATERIAL_EXPIRES`.
    pub valid_to: Option<f64>,
}

impl KeyMetadataView<'_> {
    /// The `KeyMetadata` object exactly as AWS returns it (`kms-api.md` §2.4); absent members
    /// are left out, never `null`.
    pub fn key_metadata_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("AWSAccountId".into(), json!(self.account_id));
        m.insert("KeyId".into(), json!(self.key_id));
        m.insert("Arn".into(), json!(self.arn));
        m.insert("CreationDate".into(), date_json(self.creation_date));
        m.insert("Enabled".into(), json!(self.state.is_enabled()));
        m.insert("Description".into(), json!(self.description));
        m.insert("KeyUsage".into(), json!(self.key_usage.as_str()));
        m.insert("KeyState".into(), json!(self.state.as_str()));
        m.insert("Origin".into(), json!(self.origin.as_str()));
        m.insert("KeyManager".into(), json!("CUSTOMER"));
        // CustomerMasterKeySpec mirrors KeySpec. For ML_DSA_*, ML_KEM_* and
        // ECC_NIST_EDWARDS25519, which the deprecated enum lacks, what AWS puts here is
        // UNVERIFIED; mirroring is the documented meaning ("the same value").
        m.insert(
            "CustomerMasterKeySpec".into(),
            json!(self.key_spec.as_str()),
        );
        m.insert("KeySpec".into(), json!(self.key_spec.as_str()));
        if let Some((name, list)) = algorithms(self.key_spec, self.key_usage).metadata_field() {
            m.insert(name.into(), json!(list));
        }
        m.insert("MultiRegion".into(), json!(self.multi_region));
        if self.multi_region {
            let config = match self.multi_region_configuration {
                Some(c) => c.json(),
                None => json!({
                    "MultiRegionKeyType": "PRIMARY",
                    "PrimaryKey": {"Arn": self.arn, "Region": self.region},
                    "ReplicaKeys": [],
                }),
            };
            m.insert("MultiRegionConfiguration".into(), config);
        }
        if self.state == KeyState::PendingDeletion
            && let Some(date) = self.deletion_date
        {
            m.insert("DeletionDate".into(), date_json(date));
        }
        if self.state == KeyState::PendingReplicaDeletion
            && let Some(days) = self.pending_deletion_window_days
        {
            m.insert("PendingDeletionWindowInDays".into(), json!(days));
        }
        if self.origin.is_custom_key_store()
            && let Some(id) = self.custom_key_store_id
        {
            m.insert("CustomKeyStoreId".into(), json!(id));
        }
        if self.origin == Origin::AwsCloudhsm
            && let Some(id) = self.cloud_hsm_cluster_id
        {
            m.insert("CloudHsmClusterId".into(), json!(id));
        }
        if self.origin == Origin::ExternalKeyStore
            && let Some(id) = self.xks_key_id
        {
            m.insert("XksKeyConfiguration".into(), json!({ "Id": id }));
        }
        let imported = self.origin == Origin::External && self.state != KeyState::PendingImport;
        if imported && let Some(model) = self.expiration_model {
            m.insert("ExpirationModel".into(), json!(model));
            if model == "KEY_MATERIAL_EXPIRES"
                && let Some(valid_to) = self.valid_to
            {
                m.insert("ValidTo".into(), date_json(valid_to));
            }
        }
        // An imported key keeps showing its current material id while PendingImport after
        // that material was deleted or expired (`kms-keys-in-use.md` §6); before its first
        // import it has none.
        let has_material_id = self.key_spec.is_symmetric_encryption()
            && matches!(self.origin, Origin::AwsKms | Origin::External);
        if has_material_id && let Some(id) = self.current_key_material_id {
            m.insert("CurrentKeyMaterialId".into(), json!(id));
        }
        Value::Object(m)
    }
}

/// A multi-Region key's `MultiRegionConfiguration`: every member of its set shows the same
/// primary and replicas, and its own role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRegionConfiguration {
    /// Whether the key described is the primary (`PRIMARY`) or a replica (`REPLICA`).
    pub is_primary: bool,
    /// The primary key's (ARN, Region).
    pub primary: (String, String),
    /// Every replica's (ARN, Region), oldest first (a replica lists itself too).
    pub replicas: Vec<(String, String)>,
}

impl MultiRegionConfiguration {
    /// The wire object.
    pub fn json(&self) -> Value {
        let member = |(arn, region): &(String, String)| json!({"Arn": arn, "Region": region});
        json!({
            "MultiRegionKeyType": if self.is_primary { "PRIMARY" } else { "REPLICA" },
            "PrimaryKey": member(&self.primary),
            "ReplicaKeys": self.replicas.iter().map(member).collect::<Vec<_>>(),
        })
    }
}

/// A date as a JSON number of epoch seconds with millisecond precision (never `null`: a
/// non-finite value, which would be a bug, renders as 0).
fn date_json(epoch_seconds: f64) -> Value {
    let rounded = (epoch_seconds * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(rounded).map_or_else(|| json!(0), Value::Number)
}

/// Epoch seconds (as `KeyMetadata` dates carry them) from epoch milliseconds.
pub fn epoch_seconds_from_millis(epoch_millis: i64) -> f64 {
    epoch_millis as f64 / 1000.0
}

/// The current time as epoch seconds with millisecond precision.
pub fn now_epoch_seconds() -> f64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    epoch_seconds_from_millis(millis)
}

/// The exact sorted set of `KeyMetadata` member names right after CreateKey (the "golden
/// field set"): state `Enabled`, or `PendingImport` for `EXTERNAL`; a CloudHSM key has its
/// `CloudHsmClusterId`, an XKS key its `XksKeyConfiguration`, a symmetric `AWS_KMS` key its
/// `CurrentKeyMaterialId`. The combination is assumed valid (see [`Origin::allows_key_type`]).
pub fn expected_fields(
    spec: KeySpec,
    usage: KeyUsage,
    origin: Origin,
    multi_region: bool,
) -> Vec<&'static str> {
    let mut fields = vec![
        "AWSAccountId",
        "Arn",
        "CreationDate",
        "CustomerMasterKeySpec",
        "Description",
        "Enabled",
        "KeyId",
        "KeyManager",
        "KeySpec",
        "KeyState",
        "KeyUsage",
        "MultiRegion",
        "Origin",
        algorithms_field_name(usage),
    ];
    if multi_region {
        fields.push("MultiRegionConfiguration");
    }
    if origin.is_custom_key_store() {
        fields.push("CustomKeyStoreId");
    }
    match origin {
        Origin::AwsKms if spec.is_symmetric_encryption() => fields.push("CurrentKeyMaterialId"),
        Origin::AwsCloudhsm => fields.push("CloudHsmClusterId"),
        Origin::ExternalKeyStore => fields.push("XksKeyConfiguration"),
        // EXTERNAL starts in PendingImport: no ExpirationModel, no CurrentKeyMaterialId.
        Origin::AwsKms | Origin::External => {}
    }
    fields.sort_unstable();
    fields
}

/// A new key id: a lower-case hyphenated UUID v4, or for a multi-Region key `mrk-` and 32
/// lower-case hex digits.
pub fn new_key_id(multi_region: bool) -> String {
    let uuid = uuid::Uuid::new_v4();
    if multi_region {
        format!("mrk-{}", uuid.simple())
    } else {
        uuid.hyphenated().to_string()
    }
}

/// The AWS partition of a Region: `aws-cn` for `cn-*`, `aws-us-gov` for `us-gov-*`, the ISO
/// partitions for their Regions, else `aws`.
pub fn partition_for_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else {
        "aws"
    }
}

/// A key ARN: `arn:<partition>:kms:<region>:<account>:key/<key_id>`.
pub fn key_arn(partition: &str, region: &str, account: &str, key_id: &str) -> String {
    format!("arn:{partition}:kms:{region}:{account}:key/{key_id}")
}

/// An alias ARN: `arn:<partition>:kms:<region>:<account>:alias/<name>`. `alias_name` may be
/// given with or without its `alias/` prefix.
pub fn alias_arn(partition: &str, region: &str, account: &str, alias_name: &str) -> String {
    let name = alias_name.strip_prefix("alias/").unwrap_or(alias_name);
    format!("arn:{partition}:kms:{region}:{account}:alias/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "us-east-2";
    const MATERIAL_ID: &str = "321c6aa24d88273bf1f355d9fe80ecb3b6725c5e1e66f981b843a473ddfaeac9";

    fn view<'a>(
        spec: KeySpec,
        usage: KeyUsage,
        origin: Origin,
        multi_region: bool,
        key_id: &'a str,
        arn: &'a str,
    ) -> KeyMetadataView<'a> {
        KeyMetadataView {
            account_id: ACCOUNT,
            region: REGION,
            key_id,
            arn,
            creation_date: 1_499_288_695.918,
            state: KeyState::Enabled,
            description: "",
            key_usage: usage,
            key_spec: spec,
            origin,
            deletion_date: None,
            pending_deletion_window_days: None,
            custom_key_store_id: None,
            cloud_hsm_cluster_id: None,
            xks_key_id: None,
            multi_region,
            multi_region_configuration: None,
            current_key_material_id: None,
            expiration_model: None,
            valid_to: None,
        }
    }

    /// The view the CreateKey handler is expected to build right after creation.
    fn created<'a>(
        spec: KeySpec,
        usage: KeyUsage,
        origin: Origin,
        multi_region: bool,
        key_id: &'a str,
        arn: &'a str,
    ) -> KeyMetadataView<'a> {
        let mut v = view(spec, usage, origin, multi_region, key_id, arn);
        match origin {
            Origin::AwsKms => {
                v.current_key_material_id = Some(MATERIAL_ID);
            }
            Origin::External => {
                v.state = KeyState::PendingImport;
            }
            Origin::AwsCloudhsm => {
                v.custom_key_store_id = Some("cks-1234567890abcdef0");
                v.cloud_hsm_cluster_id = Some("cluster-1a23b4cdefg");
            }
            Origin::ExternalKeyStore => {
                v.custom_key_store_id = Some("cks-1234567890abcdef0");
                v.xks_key_id = Some("bb8562717f809024");
            }
        }
        v
    }

    fn field_names(value: &Value) -> Vec<String> {
        let mut names: Vec<String> = value
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort_unstable();
        names
    }

    fn all_valid_combinations() -> Vec<(KeySpec, KeyUsage, Origin, bool)> {
        let mut out = Vec::new();
        for &spec in KeySpec::ALL {
            for &usage in spec.allowed_usages() {
                for &origin in Origin::ALL {
                    if !origin.allows_key_type(spec, usage) {
                        continue;
                    }
                    out.push((spec, usage, origin, false));
                    if origin.allows_multi_region() {
                        out.push((spec, usage, origin, true));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn enum_values_render_like_aws() {
        assert_eq!(
            KeySpec::allowed_values(),
            "[RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, \
             ECC_SECG_P256K1, SYMMETRIC_DEFAULT, HMAC_224, HMAC_256, HMAC_384, HMAC_512, SM2, \
             ML_DSA_44, ML_DSA_65, ML_DSA_87, ECC_NIST_EDWARDS25519, ML_KEM_512, ML_KEM_768, \
             ML_KEM_1024]"
        );
        assert_eq!(
            KeySpec::customer_master_key_spec_allowed_values(),
            "[RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, \
             ECC_SECG_P256K1, SYMMETRIC_DEFAULT, HMAC_224, HMAC_256, HMAC_384, HMAC_512, SM2]"
        );
        assert_eq!(
            KeyUsage::allowed_values(),
            "[SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT, \
             ENCAPSULATE_DECAPSULATE]"
        );
        assert_eq!(
            Origin::allowed_values(),
            "[AWS_KMS, EXTERNAL, AWS_CLOUDHSM, EXTERNAL_KEY_STORE]"
        );
        assert_eq!(
            KeyState::allowed_values(),
            "[Creating, Enabled, Disabled, PendingDeletion, PendingImport, \
             PendingReplicaDeletion, Unavailable, Updating]"
        );
        assert_eq!(enum_values([]), "[]");
        assert_eq!(enum_values(["A"]), "[A]");
    }

    #[test]
    fn parse_round_trips_and_is_exact() {
        assert_eq!(KeySpec::ALL.len(), 20);
        for &v in KeySpec::ALL {
            assert_eq!(KeySpec::parse(v.as_str()), Some(v));
            assert_eq!(v.to_string(), v.as_str());
        }
        for &v in KeyUsage::ALL {
            assert_eq!(KeyUsage::parse(v.as_str()), Some(v));
        }
        for &v in Origin::ALL {
            assert_eq!(Origin::parse(v.as_str()), Some(v));
        }
        for &v in KeyState::ALL {
            assert_eq!(KeyState::parse(v.as_str()), Some(v));
        }
        assert_eq!(KeySpec::parse("symmetric_default"), None);
        assert_eq!(KeySpec::parse(" RSA_2048"), None);
        assert_eq!(KeySpec::parse(""), None);
        assert_eq!(KeyUsage::parse("ENCRYPT"), None);
        assert_eq!(Origin::parse("aws_kms"), None);
        assert_eq!(KeyState::parse("ENABLED"), None);
    }

    #[test]
    fn customer_master_key_spec_has_the_13_older_values() {
        let cmk: Vec<_> = KeySpec::ALL
            .iter()
            .filter(|s| s.is_customer_master_key_spec_value())
            .collect();
        assert_eq!(cmk.len(), 13);
        assert_eq!(
            KeySpec::parse_customer_master_key_spec("SM2"),
            Some(KeySpec::Sm2)
        );
        assert_eq!(KeySpec::parse_customer_master_key_spec("ML_DSA_44"), None);
        assert_eq!(
            KeySpec::parse_customer_master_key_spec("ECC_NIST_EDWARDS25519"),
            None
        );
        assert_eq!(KeySpec::parse_customer_master_key_spec("ML_KEM_768"), None);
    }

    #[test]
    fn allowed_usages_follow_the_table() {
        use KeyUsage as U;
        assert_eq!(
            KeySpec::SymmetricDefault.allowed_usages(),
            &[U::EncryptDecrypt]
        );
        assert_eq!(KeySpec::Hmac384.allowed_usages(), &[U::GenerateVerifyMac]);
        assert_eq!(
            KeySpec::Rsa3072.allowed_usages(),
            &[U::EncryptDecrypt, U::SignVerify]
        );
        assert_eq!(
            KeySpec::EccNistP521.allowed_usages(),
            &[U::SignVerify, U::KeyAgreement]
        );
        assert_eq!(KeySpec::EccSecgP256k1.allowed_usages(), &[U::SignVerify]);
        assert_eq!(
            KeySpec::EccNistEdwards25519.allowed_usages(),
            &[U::SignVerify]
        );
        assert_eq!(KeySpec::MlDsa87.allowed_usages(), &[U::SignVerify]);
        assert_eq!(
            KeySpec::MlKem512.allowed_usages(),
            &[U::EncapsulateDecapsulate]
        );
        assert_eq!(
            KeySpec::Sm2.allowed_usages(),
            &[U::EncryptDecrypt, U::SignVerify, U::KeyAgreement]
        );
        assert!(!KeySpec::Rsa2048.allows_usage(U::KeyAgreement));
        assert!(!KeySpec::Hmac256.allows_usage(U::EncryptDecrypt));
    }

    #[test]
    fn region_flags() {
        for &spec in KeySpec::ALL {
            assert_eq!(spec.china_only(), spec == KeySpec::Sm2);
            assert_eq!(
                spec.not_in_china(),
                matches!(
                    spec,
                    KeySpec::MlKem512 | KeySpec::MlKem768 | KeySpec::MlKem1024
                )
            );
            assert_eq!(
                spec.is_symmetric_encryption(),
                spec == KeySpec::SymmetricDefault
            );
            assert_eq!(
                spec.is_asymmetric(),
                !spec.is_symmetric_encryption() && !spec.is_hmac()
            );
        }
        assert!(KeySpec::Hmac224.is_hmac());
    }

    #[test]
    fn algorithms_exist_exactly_for_allowed_usages() {
        for &spec in KeySpec::ALL {
            for &usage in KeyUsage::ALL {
                let algs = algorithms(spec, usage);
                let present = [
                    algs.encryption,
                    algs.signing,
                    algs.mac,
                    algs.key_agreement,
                    algs.encapsulation,
                ]
                .iter()
                .filter(|l| l.is_some())
                .count();
                if spec.allows_usage(usage) {
                    assert_eq!(present, 1, "{spec} {usage}");
                    let (name, list) = algs.metadata_field().unwrap_or(("", &[]));
                    assert_eq!(name, algorithms_field_name(usage), "{spec} {usage}");
                    assert!(!list.is_empty());
                } else {
                    assert_eq!(present, 0, "{spec} {usage}");
                    assert!(algs.all().is_empty());
                }
            }
        }
    }

    #[test]
    fn algorithm_lists_match_the_reference() {
        use KeySpec as S;
        use KeyUsage as U;
        assert_eq!(
            algorithms(S::SymmetricDefault, U::EncryptDecrypt).encryption,
            Some(&["SYMMETRIC_DEFAULT"][..])
        );
        assert_eq!(
            algorithms(S::Hmac224, U::GenerateVerifyMac).mac,
            Some(&["HMAC_SHA_224"][..])
        );
        assert_eq!(
            algorithms(S::Hmac512, U::GenerateVerifyMac).mac,
            Some(&["HMAC_SHA_512"][..])
        );
        assert_eq!(
            algorithms(S::Rsa4096, U::EncryptDecrypt).encryption,
            Some(&["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"][..])
        );
        assert_eq!(
            algorithms(S::Rsa2048, U::SignVerify).signing,
            Some(
                &[
                    "RSASSA_PKCS1_V1_5_SHA_256",
                    "RSASSA_PKCS1_V1_5_SHA_384",
                    "RSASSA_PKCS1_V1_5_SHA_512",
                    "RSASSA_PSS_SHA_256",
                    "RSASSA_PSS_SHA_384",
                    "RSASSA_PSS_SHA_512"
                ][..]
            )
        );
        assert_eq!(
            algorithms(S::EccSecgP256k1, U::SignVerify).signing,
            Some(&["ECDSA_SHA_256"][..])
        );
        assert_eq!(
            algorithms(S::EccNistP384, U::SignVerify).signing,
            Some(&["ECDSA_SHA_384"][..])
        );
        assert_eq!(
            algorithms(S::EccNistP521, U::SignVerify).signing,
            Some(&["ECDSA_SHA_512"][..])
        );
        assert_eq!(
            algorithms(S::Sm2, U::KeyAgreement).key_agreement,
            Some(&["ECDH"][..])
        );
        assert_eq!(
            algorithms(S::EccNistEdwards25519, U::SignVerify).signing,
            Some(&["ED25519_SHA_512", "ED25519_PH_SHA_512"][..])
        );
        assert_eq!(
            algorithms(S::MlDsa65, U::SignVerify).signing,
            Some(&["ML_DSA_SHAKE_256"][..])
        );
        assert_eq!(
            algorithms(S::MlKem1024, U::EncapsulateDecapsulate).encapsulation,
            Some(&["ML_KEM"][..])
        );
        assert_eq!(
            algorithms(S::Sm2, U::EncryptDecrypt).encryption,
            Some(&["SM2PKE"][..])
        );
        assert_eq!(
            algorithms(S::Sm2, U::SignVerify).signing,
            Some(&["SM2DSA"][..])
        );
    }

    #[test]
    fn origin_rules() {
        use KeySpec as S;
        use KeyUsage as U;
        for origin in [Origin::AwsCloudhsm, Origin::ExternalKeyStore] {
            assert!(origin.allows_key_type(S::SymmetricDefault, U::EncryptDecrypt));
            assert!(!origin.allows_key_type(S::Hmac256, U::GenerateVerifyMac));
            assert!(!origin.allows_key_type(S::Rsa2048, U::EncryptDecrypt));
            assert!(!origin.allows_multi_region());
        }
        assert!(Origin::External.allows_key_type(S::Hmac256, U::GenerateVerifyMac));
        assert!(Origin::External.allows_key_type(S::EccNistP256, U::SignVerify));
        assert!(Origin::External.allows_multi_region());
        assert!(!Origin::AwsKms.allows_key_type(S::Rsa2048, U::KeyAgreement));
    }

    #[test]
    fn golden_field_sets_for_every_valid_combination() {
        let combos = all_valid_combinations();
        // 28 spec/usage pairs, each with AWS_KMS and EXTERNAL single- and multi-Region, plus
        // two custom key store origins for SYMMETRIC_DEFAULT.
        assert_eq!(combos.len(), 28 * 4 + 2);
        for (spec, usage, origin, multi_region) in combos {
            let key_id = new_key_id(multi_region);
            let arn = key_arn("aws", REGION, ACCOUNT, &key_id);
            let v = created(spec, usage, origin, multi_region, &key_id, &arn);
            let json = v.key_metadata_json();
            assert_eq!(
                field_names(&json),
                expected_fields(spec, usage, origin, multi_region),
                "{spec} {usage} {origin} multi_region={multi_region}"
            );
            let obj = json.as_object().cloned().unwrap_or_default();
            assert!(obj.values().all(|v| !v.is_null()));
            assert_eq!(obj["KeySpec"], json!(spec.as_str()));
            assert_eq!(obj["CustomerMasterKeySpec"], json!(spec.as_str()));
            assert_eq!(obj["KeyUsage"], json!(usage.as_str()));
            assert_eq!(obj["Origin"], json!(origin.as_str()));
            assert_eq!(obj["MultiRegion"], json!(multi_region));
            assert_eq!(obj["KeyManager"], json!("CUSTOMER"));
            let expected_state = if origin == Origin::External {
                "PendingImport"
            } else {
                "Enabled"
            };
            assert_eq!(obj["KeyState"], json!(expected_state));
            assert_eq!(obj["Enabled"], json!(origin != Origin::External));
            assert_eq!(
                obj[algorithms_field_name(usage)],
                json!(algorithms(spec, usage).all())
            );
        }
    }

    #[test]
    fn expected_fields_are_sorted_and_unique() {
        for (spec, usage, origin, multi_region) in all_valid_combinations() {
            let fields = expected_fields(spec, usage, origin, multi_region);
            let mut sorted = fields.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(fields, sorted);
        }
    }

    #[test]
    fn symmetric_key_matches_the_aws_example() {
        let arn = "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let v = view(
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            Origin::AwsKms,
            false,
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            arn,
        );
        // The CreateKey page's example response (which predates CurrentKeyMaterialId).
        assert_eq!(
            v.key_metadata_json(),
            json!({
                "AWSAccountId": "111122223333",
                "Arn": arn,
                "CreationDate": 1.499288695918E9,
                "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                "Description": "",
                "Enabled": true,
                "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
                "KeyManager": "CUSTOMER",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "KeyState": "Enabled",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "MultiRegion": false,
                "Origin": "AWS_KMS"
            })
        );
        let text = serde_json::to_string(&v.key_metadata_json()).unwrap_or_default();
        assert!(text.contains("\"CreationDate\":1499288695.918"), "{text}");
    }

    #[test]
    fn xks_key_matches_the_developer_guide_example() {
        let key_id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let arn = key_arn("aws", REGION, ACCOUNT, key_id);
        let mut v = view(
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            Origin::ExternalKeyStore,
            false,
            key_id,
            &arn,
        );
        v.custom_key_store_id = Some("cks-1234567890abcdef0");
        v.xks_key_id = Some("bb8562717f809024");
        // Passed by mistake: must not show for an XKS key.
        v.current_key_material_id = Some(MATERIAL_ID);
        v.expiration_model = Some("KEY_MATERIAL_DOES_NOT_EXPIRE");
        v.cloud_hsm_cluster_id = Some("cluster-1a23b4cdefg");
        assert_eq!(
            v.key_metadata_json(),
            json!({
                "AWSAccountId": ACCOUNT,
                "Arn": arn,
                "CreationDate": 1_499_288_695.918,
                "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                "CustomKeyStoreId": "cks-1234567890abcdef0",
                "Description": "",
                "Enabled": true,
                "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "KeyId": key_id,
                "KeyManager": "CUSTOMER",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "KeyState": "Enabled",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "MultiRegion": false,
                "Origin": "EXTERNAL_KEY_STORE",
                "XksKeyConfiguration": {"Id": "bb8562717f809024"}
            })
        );
    }

    #[test]
    fn multi_region_configuration_names_the_primary() {
        let key_id = new_key_id(true);
        let arn = key_arn("aws", REGION, ACCOUNT, &key_id);
        let v = view(
            KeySpec::Hmac256,
            KeyUsage::GenerateVerifyMac,
            Origin::AwsKms,
            true,
            &key_id,
            &arn,
        );
        let json = v.key_metadata_json();
        assert_eq!(
            json["MultiRegionConfiguration"],
            json!({
                "MultiRegionKeyType": "PRIMARY",
                "PrimaryKey": {"Arn": arn, "Region": REGION},
                "ReplicaKeys": []
            })
        );
        assert_eq!(json["MultiRegion"], json!(true));
    }

    #[test]
    fn state_dependent_fields() {
        let arn = key_arn("aws", REGION, ACCOUNT, "k");
        let mut v = view(
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            Origin::AwsKms,
            false,
            "k",
            &arn,
        );
        v.deletion_date = Some(1_700_000_000.5);
        v.pending_deletion_window_days = Some(7);
        v.current_key_material_id = Some(MATERIAL_ID);

        // Enabled: neither deletion field.
        let json = v.key_metadata_json();
        assert!(json.get("DeletionDate").is_none());
        assert!(json.get("PendingDeletionWindowInDays").is_none());
        assert_eq!(json["CurrentKeyMaterialId"], json!(MATERIAL_ID));

        v.state = KeyState::PendingDeletion;
        let json = v.key_metadata_json();
        assert_eq!(json["DeletionDate"], json!(1_700_000_000.5));
        assert!(json.get("PendingDeletionWindowInDays").is_none());
        assert_eq!(json["Enabled"], json!(false));

        v.state = KeyState::PendingReplicaDeletion;
        let json = v.key_metadata_json();
        assert!(json.get("DeletionDate").is_none());
        assert_eq!(json["PendingDeletionWindowInDays"], json!(7));

        for state in [
            KeyState::Disabled,
            KeyState::Creating,
            KeyState::Unavailable,
            KeyState::Updating,
        ] {
            v.state = state;
            assert_eq!(v.key_metadata_json()["Enabled"], json!(false));
        }
    }

    #[test]
    fn imported_key_fields() {
        let arn = key_arn("aws", REGION, ACCOUNT, "k");
        let mut v = view(
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            Origin::External,
            false,
            "k",
            &arn,
        );
        v.state = KeyState::PendingImport;
        v.expiration_model = Some("KEY_MATERIAL_EXPIRES");
        v.valid_to = Some(1_800_000_000.0);
        v.current_key_material_id = Some(MATERIAL_ID);
        let json = v.key_metadata_json();
        for absent in ["ExpirationModel", "ValidTo"] {
            assert!(json.get(absent).is_none(), "{absent}");
        }
        // Deleted or expired material: PendingImport, the current material id kept.
        assert_eq!(json["CurrentKeyMaterialId"], json!(MATERIAL_ID));
        v.current_key_material_id = None;
        assert!(v.key_metadata_json().get("CurrentKeyMaterialId").is_none());
        v.current_key_material_id = Some(MATERIAL_ID);

        v.state = KeyState::Enabled;
        let json = v.key_metadata_json();
        assert_eq!(json["ExpirationModel"], json!("KEY_MATERIAL_EXPIRES"));
        assert_eq!(json["ValidTo"], json!(1_800_000_000.0));
        assert_eq!(json["CurrentKeyMaterialId"], json!(MATERIAL_ID));

        v.expiration_model = Some("KEY_MATERIAL_DOES_NOT_EXPIRE");
        let json = v.key_metadata_json();
        assert!(json.get("ValidTo").is_none());

        // Imported asymmetric/HMAC keys have no CurrentKeyMaterialId.
        v.key_spec = KeySpec::Hmac256;
        v.key_usage = KeyUsage::GenerateVerifyMac;
        let json = v.key_metadata_json();
        assert!(json.get("CurrentKeyMaterialId").is_none());
        assert_eq!(
            json["ExpirationModel"],
            json!("KEY_MATERIAL_DOES_NOT_EXPIRE")
        );

        // ExpirationModel never for AWS_KMS keys.
        v.origin = Origin::AwsKms;
        assert!(v.key_metadata_json().get("ExpirationModel").is_none());
    }

    #[test]
    fn dates_have_millisecond_precision() {
        assert_eq!(date_json(1_700_000_000.123_456), json!(1_700_000_000.123));
        assert_eq!(date_json(f64::NAN), json!(0));
        assert_eq!(
            epoch_seconds_from_millis(1_700_000_000_123),
            1_700_000_000.123
        );
        let now = now_epoch_seconds();
        assert!(now > 1_700_000_000.0);
        assert_eq!((now * 1000.0).round() / 1000.0, now);
    }

    #[test]
    fn key_ids() {
        for _ in 0..50 {
            let id = new_key_id(false);
            assert_eq!(id.len(), 36);
            let parsed = uuid::Uuid::parse_str(&id).map(|u| u.get_version_num());
            assert_eq!(parsed, Ok(4));
            assert_eq!(id, id.to_lowercase());
            assert_eq!(
                id.char_indices()
                    .filter(|(_, c)| *c == '-')
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
                vec![8, 13, 18, 23]
            );

            let mrk = new_key_id(true);
            let hex = mrk.strip_prefix("mrk-").unwrap_or_default();
            assert_eq!(hex.len(), 32);
            assert!(
                hex.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            );
        }
        assert_ne!(new_key_id(false), new_key_id(false));
        assert_ne!(new_key_id(true), new_key_id(true));
    }

    #[test]
    fn partitions_and_arns() {
        assert_eq!(partition_for_region("us-east-1"), "aws");
        assert_eq!(partition_for_region("eu-west-1"), "aws");
        assert_eq!(partition_for_region("cn-north-1"), "aws-cn");
        assert_eq!(partition_for_region("cn-northwest-1"), "aws-cn");
        assert_eq!(partition_for_region("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_for_region("us-iso-east-1"), "aws-iso");
        assert_eq!(partition_for_region("us-isob-east-1"), "aws-iso-b");
        assert_eq!(
            key_arn(
                "aws",
                "us-east-2",
                ACCOUNT,
                "1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        );
        assert_eq!(
            alias_arn("aws-cn", "cn-north-1", ACCOUNT, "alias/ExampleAlias"),
            "arn:aws-cn:kms:cn-north-1:111122223333:alias/ExampleAlias"
        );
        assert_eq!(
            alias_arn("aws", "us-east-2", ACCOUNT, "ExampleAlias"),
            "arn:aws:kms:us-east-2:111122223333:alias/ExampleAlias"
        );
    }
}
