//! Imported key material (origin `EXTERNAL`): GetParametersForImport,
//! ImportKeyMaterial, DeleteImportedKeyMaterial, and the sweep that deletes material whose
//! `ValidTo` has passed on the front end's clock. Rules and texts are AWS's
//! (`kms-keys-in-use.md` §6).
//!
//! The import token is stateless: the wrapping private key, the algorithm, the wrapping key
//! spec and the expiry, sealed under the root key and bound to the key ARN
//! (`sealing::seal_material`). A token of another key, or any other bytes, does not unseal
//! (`InvalidImportTokenException`); one past its `ParametersValidTo` is
//! `ExpiredImportTokenException`; material wrapped under another call's public key does
//! not unwrap with this token's private key (`InvalidCiphertextException`).
//!
//! SM2 wrapping keys (`WrappingKeySpec` `SM2`, `WrappingAlgorithm` `SM2PKE`) exist in the
//! China Regions only, where RSA_AES_KEY_WRAP is not offered; an SM2PKE-wrapped material is
//! the DER `SEQUENCE { x, y, C3, C2 }` ciphertext of `asymmetric_encryption` (what
//! `openssl pkeyutl -encrypt` writes).
//!
//! Material ids of imported material are derived from the key and the material (HMAC
//! under a key derived from the root key), so importing the same material again is
//! recognised (and restores the key), and other material is
//! `IncorrectKeyMaterialException`, even after the sealed material was deleted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::keys::required_key_id;
use crate::asymmetric_encryption::{self, Algorithm};
use crate::auth::Caller;
use crate::catalogue::{KeySpec, KeyState, Origin, epoch_seconds_from_millis};
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms, raced, storage_error};
use crate::storage::{KeyMaterialRecord, KeyRecord, MaterialChange};

/// How long a public key and import token stay valid (AWS: 24 hours).
const PARAMETERS_VALIDITY_MS: i64 = 24 * 3_600_000;

/// The latest `ValidTo` AWS accepts: 365 days ahead.
const MAX_VALIDITY_MS: i64 = 365 * 86_400_000;

const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";

/// The first byte of an import token's sealed payload (its layout version).
const TOKEN_VERSION: u8 = 1;

/// The wrapping algorithms of GetParametersForImport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrapping {
    OaepSha1,
    OaepSha256,
    AesKeyWrapSha1,
    AesKeyWrapSha256,
    Sm2Pke,
}

impl Wrapping {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RSAES_OAEP_SHA_1" => Self::OaepSha1,
            "RSAES_OAEP_SHA_256" => Self::OaepSha256,
            "RSA_AES_KEY_WRAP_SHA_1" => Self::AesKeyWrapSha1,
            "RSA_AES_KEY_WRAP_SHA_256" => Self::AesKeyWrapSha256,
            "SM2PKE" => Self::Sm2Pke,
            _ => return None,
        })
    }

    const fn code(self) -> u8 {
        match self {
            Self::OaepSha1 => 1,
            Self::OaepSha256 => 2,
            Self::AesKeyWrapSha1 => 3,
            Self::AesKeyWrapSha256 => 4,
            Self::Sm2Pke => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            Self::OaepSha1,
            Self::OaepSha256,
            Self::AesKeyWrapSha1,
            Self::AesKeyWrapSha256,
            Self::Sm2Pke,
        ]
        .into_iter()
        .find(|w| w.code() == code)
    }

    /// The public key encryption of the wrapping key (for RSA_AES_KEY_WRAP: of the AES key).
    const fn public_key_algorithm(self) -> Algorithm {
        match self {
            Self::OaepSha1 | Self::AesKeyWrapSha1 => Algorithm::RsaesOaepSha1,
            Self::OaepSha256 | Self::AesKeyWrapSha256 => Algorithm::RsaesOaepSha256,
            Self::Sm2Pke => Algorithm::Sm2Pke,
        }
    }

    /// The name as AWS spells it.
    const fn name(self) -> &'static str {
        match self {
            Self::OaepSha1 => "RSAES_OAEP_SHA_1",
            Self::OaepSha256 => "RSAES_OAEP_SHA_256",
            Self::AesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            Self::AesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
            Self::Sm2Pke => "SM2PKE",
        }
    }

    const fn is_key_wrap(self) -> bool {
        matches!(self, Self::AesKeyWrapSha1 | Self::AesKeyWrapSha256)
    }
}

/// The key spec of a `WrappingKeySpec`.
fn wrapping_spec(name: &str) -> Option<KeySpec> {
    match name {
        "RSA_2048" => Some(KeySpec::Rsa2048),
        "RSA_3072" => Some(KeySpec::Rsa3072),
        "RSA_4096" => Some(KeySpec::Rsa4096),
        "SM2" => Some(KeySpec::Sm2),
        _ => None,
    }
}

fn unsupported(message: String) -> KmsError {
    KmsError::client("UnsupportedOperationException", message)
}

/// Import applies to keys of origin `EXTERNAL` only.
fn check_origin(key: &KeyRecord) -> Result<(), KmsError> {
    if key.origin != Origin::External.as_str() {
        return Err(unsupported(format!(
            "{} origin is {} which is not valid for this operation.",
            key.arn, key.origin
        )));
    }
    Ok(())
}

fn spec_of(key: &KeyRecord) -> Result<KeySpec, KmsError> {
    KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))
}

/// The binding of a key's import tokens (never the binding of its key material).
fn token_binding(key: &KeyRecord) -> String {
    format!("import-token/{}", key.arn)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ParametersInput {
    key_id: Option<String>,
    wrapping_algorithm: Option<String>,
    wrapping_key_spec: Option<String>,
}

pub(super) fn get_parameters_for_import(
    kms: &Kms,
    caller: &Caller,
    input: ParametersInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    match &input.wrapping_algorithm {
        None => v.add("null", "wrappingAlgorithm", "Member must not be null"),
        Some(a) => v.enum_value(
            a,
            "wrappingAlgorithm",
            &[
                "RSAES_PKCS1_V1_5",
                "RSAES_OAEP_SHA_1",
                "RSAES_OAEP_SHA_256",
                "RSA_AES_KEY_WRAP_SHA_1",
                "RSA_AES_KEY_WRAP_SHA_256",
                "SM2PKE",
            ],
        ),
    }
    match &input.wrapping_key_spec {
        None => v.add("null", "wrappingKeySpec", "Member must not be null"),
        Some(s) => v.enum_value(
            s,
            "wrappingKeySpec",
            &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"],
        ),
    }
    v.finish()?;
    let key_id = key_id?;
    let algorithm_name = input.wrapping_algorithm.unwrap_or_default();
    let spec_name = input.wrapping_key_spec.unwrap_or_default();
    let key = kms.find_key(caller, key_id, KeyRef::KeyOnly)?;
    check_origin(&key)?;
    kms.check_usable(&key, Operation::GetParametersForImport)?;
    let (Some(wrapping), Some(wrapping_spec)) =
        (Wrapping::parse(&algorithm_name), wrapping_spec(&spec_name))
    else {
        // RSAES_PKCS1_V1_5 was withdrawn by AWS.
        return Err(unsupported(format!(
            "Wrapping algorithm {algorithm_name} with wrapping key spec {spec_name} is not supported."
        )));
    };
    check_region(caller, wrapping, wrapping_spec)?;
    check_combination(&key, spec_of(&key)?, wrapping, wrapping_spec)?;
    let pair = crate::material::generate(wrapping_spec).map_err(|e| {
        tracing::error!(error = %e, "wrapping key generation failed");
        KmsError::internal("An internal error occurred.")
    })?;
    let valid_to = kms.clock.now_ms().saturating_add(PARAMETERS_VALIDITY_MS);
    let mut payload = Zeroizing::new(vec![TOKEN_VERSION]);
    payload.extend_from_slice(&valid_to.to_be_bytes());
    payload.push(wrapping.code());
    payload.push(spec_code(wrapping_spec));
    payload.extend_from_slice(pair.secret());
    let token = crate::sealing::seal_material(&kms.root, &token_binding(&key), &payload)?;
    let public = pair
        .public_key()
        .ok_or_else(|| KmsError::internal("a key pair has a public key"))?;
    Ok(json!({
        "KeyId": key.arn,
        "ImportToken": STANDARD.encode(&token),
        "PublicKey": STANDARD.encode(public),
        "ParametersValidTo": epoch_seconds_from_millis(valid_to),
    }))
}

/// The Region rules of the developer guide: SM2 wrapping keys and SM2PKE exist in the China
/// Regions only (like SM2 KMS keys), RSA_AES_KEY_WRAP everywhere but there. AWS documents
/// neither the error nor its text (`kms-keys-in-use.md` §6, UNVERIFIED); the front end
/// answers as CreateKey does for a key spec of the wrong Regions (ValidationException).
fn check_region(
    caller: &Caller,
    wrapping: Wrapping,
    wrapping_spec: KeySpec,
) -> Result<(), KmsError> {
    let china = caller.partition == "aws-cn";
    if !china && (wrapping == Wrapping::Sm2Pke || wrapping_spec == KeySpec::Sm2) {
        return Err(KmsError::validation(
            "Wrapping algorithm SM2PKE and wrapping key spec SM2 are only available in the China Regions.",
        ));
    }
    if china && wrapping.is_key_wrap() {
        return Err(KmsError::validation(format!(
            "Wrapping algorithm {} is not available in the China Regions.",
            wrapping.name()
        )));
    }
    // SM2PKE needs the SM2 wrapping key and the RSA algorithms an RSA one.
    if (wrapping == Wrapping::Sm2Pke) != (wrapping_spec == KeySpec::Sm2) {
        return Err(KmsError::validation(format!(
            "Wrapping algorithm {} cannot be used with wrapping key spec {}.",
            wrapping.name(),
            wrapping_spec.as_str()
        )));
    }
    Ok(())
}

/// AWS's restrictions on wrapping algorithm and key type: symmetric and HMAC material is
/// wrapped with RSA-OAEP; RSA private keys need RSA_AES_KEY_WRAP (too long for OAEP);
/// ECC keys take either, except P-521 under RSA_2048 with OAEP (too long). SM2PKE (China)
/// wraps every kind: it has no length limit, and it is the only way to import an RSA key
/// in the China Regions, which offer no RSA_AES_KEY_WRAP (UNVERIFIED: AWS documents no
/// SM2PKE combinations, `kms-keys-in-use.md` §6).
fn check_combination(
    key: &KeyRecord,
    spec: KeySpec,
    wrapping: Wrapping,
    wrapping_spec: KeySpec,
) -> Result<(), KmsError> {
    let refuse = || {
        Err(KmsError::validation(format!(
            "The wrapping algorithm and wrapping key spec cannot import key material of key spec {} ({}).",
            key.key_spec, key.arn
        )))
    };
    match spec {
        KeySpec::SymmetricDefault
        | KeySpec::Hmac224
        | KeySpec::Hmac256
        | KeySpec::Hmac384
        | KeySpec::Hmac512
            if wrapping.is_key_wrap() =>
        {
            refuse()
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096
            if !wrapping.is_key_wrap() && wrapping != Wrapping::Sm2Pke =>
        {
            refuse()
        }
        KeySpec::EccNistP521 if !wrapping.is_key_wrap() && wrapping_spec == KeySpec::Rsa2048 => {
            refuse()
        }
        _ => Ok(()),
    }
}

/// What an import token holds.
struct Token {
    valid_to_ms: i64,
    wrapping: Wrapping,
    wrapping_spec: KeySpec,
    private_pkcs8: Zeroizing<Vec<u8>>,
}

/// The wrapping key spec's byte in a token.
const fn spec_code(spec: KeySpec) -> u8 {
    match spec {
        KeySpec::Rsa3072 => 2,
        KeySpec::Rsa4096 => 3,
        KeySpec::Sm2 => 4,
        _ => 1,
    }
}

fn spec_from_code(code: u8) -> Option<KeySpec> {
    match code {
        1 => Some(KeySpec::Rsa2048),
        2 => Some(KeySpec::Rsa3072),
        3 => Some(KeySpec::Rsa4096),
        4 => Some(KeySpec::Sm2),
        _ => None,
    }
}

fn open_token(kms: &Kms, key: &KeyRecord, token: &[u8]) -> Result<Token, KmsError> {
    let invalid = || {
        KmsError::client(
            "InvalidImportTokenException",
            "The import token is invalid or does not belong to this KMS key.",
        )
    };
    let payload = crate::sealing::unseal_material(&kms.root, &token_binding(key), token)
        .map_err(|_| invalid())?;
    if payload.first() != Some(&TOKEN_VERSION) || payload.len() < 11 {
        return Err(invalid());
    }
    let mut valid_to = [0u8; 8];
    valid_to.copy_from_slice(&payload[1..9]);
    let wrapping = Wrapping::from_code(payload[9]).ok_or_else(invalid)?;
    let wrapping_spec = spec_from_code(payload[10]).ok_or_else(invalid)?;
    let token = Token {
        valid_to_ms: i64::from_be_bytes(valid_to),
        wrapping,
        wrapping_spec,
        private_pkcs8: Zeroizing::new(payload[11..].to_vec()),
    };
    if token.valid_to_ms < kms.clock.now_ms() {
        return Err(KmsError::client(
            "ExpiredImportTokenException",
            "The import token has expired. Call GetParametersForImport for a new public key and import token.",
        ));
    }
    Ok(token)
}

/// Removes the wrapping: RSA-OAEP or SM2PKE, or for RSA_AES_KEY_WRAP an RSA-OAEP-wrapped AES key
/// (exactly the modulus length) followed by the material wrapped with it by AES key wrap
/// with padding (RFC 5649).
fn unwrap(token: &Token, encrypted: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let wrapping_spec = token.wrapping_spec;
    let invalid = || {
        KmsError::client(
            "InvalidCiphertextException",
            "The encrypted key material could not be unwrapped with the import parameters of this import token.",
        )
    };
    let public_key_decrypt = |ciphertext: &[u8]| {
        asymmetric_encryption::decrypt(
            wrapping_spec,
            &token.private_pkcs8,
            token.wrapping.public_key_algorithm(),
            ciphertext,
        )
        .map_err(|_| invalid())
    };
    if !token.wrapping.is_key_wrap() {
        return public_key_decrypt(encrypted);
    }
    use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrapPadded};
    let rsa_len = match wrapping_spec {
        KeySpec::Rsa3072 => 384,
        KeySpec::Rsa4096 => 512,
        _ => 256,
    };
    if encrypted.len() <= rsa_len {
        return Err(invalid());
    }
    let (wrapped_key, wrapped_material) = encrypted.split_at(rsa_len);
    let aes_key = public_key_decrypt(wrapped_key)?;
    let cipher = match aes_key.len() {
        32 => &AES_256,
        16 => &AES_128,
        _ => return Err(invalid()),
    };
    let kek = AesKek::new(cipher, &aes_key).map_err(|_| invalid())?;
    let mut out = Zeroizing::new(vec![0u8; wrapped_material.len()]);
    let len = kek
        .unwrap_with_padding(wrapped_material, &mut out)
        .map_err(|_| invalid())?
        .len();
    out.truncate(len);
    Ok(out)
}

/// The id of imported `material` for `key`: 64 hex characters of an HMAC under a key
/// derived from the root key, so the same material always has the same id and the id
/// reveals nothing about the material.
fn imported_material_id(kms: &Kms, key: &KeyRecord, material: &[u8]) -> Result<String, KmsError> {
    use hmac::{Hmac, KeyInit, Mac};
    let mac_key = kms.root.derive(b"kms-frontend/imported-material-id/v1");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&mac_key[..])
        .map_err(|_| KmsError::internal("the material id key was refused"))?;
    // The members of a multi-Region key share material ids (ciphertexts name them and
    // work in every Region), so theirs is bound to the key id they share (issue 19).
    let binding = if key.multi_region {
        &key.key_id
    } else {
        &key.arn
    };
    mac.update(binding.as_bytes());
    mac.update(&[0]);
    mac.update(material);
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ImportInput {
    key_id: Option<String>,
    import_token: Option<String>,
    encrypted_key_material: Option<String>,
    valid_to: Option<f64>,
    expiration_model: Option<String>,
    import_type: Option<String>,
    key_material_description: Option<String>,
    key_material_id: Option<String>,
}

fn base64_member(member: &str, value: Option<&str>) -> Result<Option<Vec<u8>>, KmsError> {
    value
        .map(|v| {
            STANDARD.decode(v).map_err(|_| {
                KmsError::client(
                    "SerializationException",
                    format!("{member} is not valid base64"),
                )
            })
        })
        .transpose()
}

pub(super) fn import_key_material(
    kms: &Kms,
    caller: &Caller,
    input: ImportInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    let token = base64_member("ImportToken", input.import_token.as_deref())?;
    let encrypted = base64_member(
        "EncryptedKeyMaterial",
        input.encrypted_key_material.as_deref(),
    )?;
    for (member, value) in [
        ("importToken", &token),
        ("encryptedKeyMaterial", &encrypted),
    ] {
        match value {
            None => v.add("null", member, "Member must not be null"),
            Some(b) => v.range(b.len() as i64, member, 1, 6144),
        }
    }
    if let Some(m) = &input.expiration_model {
        v.enum_value(m, "expirationModel", &[EXPIRES, DOES_NOT_EXPIRE]);
    }
    if let Some(t) = &input.import_type {
        v.enum_value(
            t,
            "importType",
            &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"],
        );
    }
    if let Some(d) = &input.key_material_description {
        v.length(d, "keyMaterialDescription", 0, 256);
    }
    if let Some(id) = &input.key_material_id {
        v.length(id, "keyMaterialId", 64, 64);
    }
    v.finish()?;
    let key_id = key_id?;
    let model = input.expiration_model.as_deref().unwrap_or(EXPIRES);
    let now = kms.clock.now_ms();
    let valid_to_ms = match (model, input.valid_to) {
        (EXPIRES, None) => {
            return Err(KmsError::validation(
                "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES",
            ));
        }
        (EXPIRES, Some(t)) => {
            let ms = (t * 1000.0).round() as i64;
            if ms <= now || ms > now.saturating_add(MAX_VALIDITY_MS) {
                return Err(KmsError::validation(
                    "ValidTo must be in the future and no more than 365 days from now.",
                ));
            }
            Some(ms)
        }
        (_, Some(_)) => {
            return Err(KmsError::validation(
                "A validTo date must not be set if the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
            ));
        }
        (_, None) => None,
    };
    let key = kms.find_key(caller, key_id, KeyRef::KeyOnly)?;
    check_origin(&key)?;
    let spec = spec_of(&key)?;
    let symmetric = spec.is_symmetric_encryption();
    if !symmetric
        && (input.import_type.is_some()
            || input.key_material_description.is_some()
            || input.key_material_id.is_some())
    {
        return Err(KmsError::validation(
            "ImportType, KeyMaterialDescription and KeyMaterialId apply to symmetric encryption keys only.",
        ));
    }
    kms.check_usable(&key, Operation::ImportKeyMaterial)?;
    let token = open_token(kms, &key, token.as_deref().unwrap_or_default())?;
    let unwrapped = unwrap(&token, encrypted.as_deref().unwrap_or_default())?;
    let material = crate::material::imported_secret(spec, &unwrapped).map_err(|_| {
        KmsError::client(
            "InvalidCiphertextException",
            format!(
                "The unwrapped key material is not valid {} key material.",
                key.key_spec
            ),
        )
    })?;
    let material_id = imported_material_id(kms, &key, &material)?;
    let sealed = crate::sealing::seal_material(&kms.root, &key.arn, &material)?;
    let incorrect = |msg: String| KmsError::client("IncorrectKeyMaterialException", msg);
    let (key, ()) = kms.change_key(caller, key_id, Operation::ImportKeyMaterial, |key| {
        let versions = kms
            .storage
            .key_materials(key.address())
            .map_err(storage_error)?;
        let known = versions.iter().find(|m| m.material_id == material_id);
        let new_material = input.import_type.as_deref() == Some("NEW_KEY_MATERIAL");
        if let Some(id) = &input.key_material_id
            && (new_material || id != &material_id)
        {
            return Err(incorrect(format!(
                "The key material does not match the key material id {id} of {}.",
                key.arn
            )));
        }
        let version = KeyMaterialRecord {
            material_id: material_id.clone(),
            seq: 0,
            sealed_material: Some(sealed.clone()),
            created_ms: now,
            rotation_type: None,
            expiration_model: Some(model.to_owned()),
            valid_to_ms,
            description: input.key_material_description.clone(),
        };
        let mut change = MaterialChange {
            put: Some(&version),
            ..MaterialChange::default()
        };
        match known {
            // The same material again (EXISTING_KEY_MATERIAL): restores it.
            Some(_) if new_material => {
                return Err(incorrect(format!(
                    "The key material is already associated with {}.",
                    key.arn
                )));
            }
            Some(_) => {
                if key.material_id.as_deref() == Some(material_id.as_str()) {
                    change.make_current = Some(&material_id);
                }
            }
            // The first material of the key becomes current for good.
            None if versions.is_empty() => {
                if input.import_type.as_deref() == Some("EXISTING_KEY_MATERIAL") {
                    return Err(incorrect(format!(
                        "{} has no key material to import again.",
                        key.arn
                    )));
                }
                change.make_current = Some(&material_id);
            }
            // New material for a later RotateKeyOnDemand (symmetric keys only).
            None if new_material && symmetric => {
                if let Some(pending) = super::rotation::pending_version(key, &versions) {
                    return Err(KmsError::invalid_state(format!(
                        "New key material (id: {material_id}) cannot be imported into KMS key {}, because another key material (id: {}) is pending rotation.",
                        key.arn, pending.material_id
                    )));
                }
            }
            None => {
                return Err(incorrect(format!(
                    "The key material is not the key material previously imported into {}.",
                    key.arn
                )));
            }
        }
        // Enabled once every version holds material; a key pending deletion stays so.
        let all_held = versions
            .iter()
            .all(|m| m.material_id == material_id || m.sealed_material.is_some());
        if key.key_state == KeyState::PendingImport && all_held {
            change.state = Some(KeyState::Enabled);
        }
        raced(kms.storage.change_key_material(
            key.address(),
            &[key.key_state],
            key.material_id.as_deref(),
            &change,
        ))
        .map_err(storage_error)
    })?;
    Ok(json!({"KeyId": key.arn, "KeyMaterialId": material_id}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DeleteInput {
    key_id: Option<String>,
    key_material_id: Option<String>,
}

pub(super) fn delete_imported_key_material(
    kms: &Kms,
    caller: &Caller,
    input: DeleteInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    if let Some(id) = &input.key_material_id {
        v.length(id, "keyMaterialId", 64, 64);
    }
    v.finish()?;
    let key_id = key_id?;
    let key = kms.find_key(caller, key_id, KeyRef::KeyOnly)?;
    check_origin(&key)?;
    let (key, deleted) = kms.change_key(
        caller,
        key_id,
        Operation::DeleteImportedKeyMaterial,
        |key| {
            let Some(id) = input
                .key_material_id
                .clone()
                .or_else(|| key.material_id.clone())
            else {
                // Nothing was ever imported: no effect.
                return Ok(Some(None));
            };
            let versions = kms
                .storage
                .key_materials(key.address())
                .map_err(storage_error)?;
            if !versions.iter().any(|m| m.material_id == id) {
                return Err(KmsError::not_found(format!(
                    "Key material {id} is not found in {}.",
                    key.arn
                )));
            }
            forget(kms, key, &id).map(|done| done.map(|()| Some(id.clone())))
        },
    )?;
    let mut out = json!({"KeyId": key.arn});
    if let Some(id) = deleted {
        out["KeyMaterialId"] = json!(id);
    }
    Ok(out)
}

/// Deletes the sealed copy of imported material `material_id` of `key` (as read) and puts
/// the key into PendingImport (a key pending deletion stays so).
fn forget(kms: &Kms, key: &KeyRecord, material_id: &str) -> Result<Option<()>, KmsError> {
    let state = (key.key_state != KeyState::PendingDeletion).then_some(KeyState::PendingImport);
    raced(kms.storage.change_key_material(
        key.address(),
        &[key.key_state],
        key.material_id.as_deref(),
        &MaterialChange {
            forget: Some(material_id),
            state,
            ..MaterialChange::default()
        },
    ))
    .map_err(storage_error)
}

/// `ExpirationModel` and `ValidTo` (the earliest expiry of any held material) of an
/// imported key for its `KeyMetadata`; the catalogue renders them only outside
/// PendingImport.
pub fn expiration_of(kms: &Kms, key: &KeyRecord) -> (Option<String>, Option<f64>) {
    if key.origin != Origin::External.as_str() {
        return (None, None);
    }
    let Ok(versions) = kms.storage.key_materials(key.address()) else {
        return (None, None);
    };
    let model = versions
        .iter()
        .find(|m| Some(m.material_id.as_str()) == key.material_id.as_deref())
        .and_then(|m| m.expiration_model.clone());
    let valid_to = versions
        .iter()
        .filter(|m| m.sealed_material.is_some())
        .filter_map(|m| m.valid_to_ms)
        .min()
        .map(epoch_seconds_from_millis);
    (model, valid_to)
}

/// Deletes imported material whose `ValidTo` has passed on the service clock (the key goes
/// to PendingImport). Cheap when nothing is due (one indexed query).
pub fn sweep_expired_material(kms: &Kms) {
    let now = kms.clock.now_ms();
    let Ok(due) = kms.storage.materials_due_to_expire(now) else {
        return;
    };
    for (account, region, key_id, material_id) in due {
        for _ in 0..4 {
            let Ok(Some(key)) = kms.storage.get_key(&account, &region, &key_id) else {
                break;
            };
            match forget(kms, &key, &material_id) {
                Ok(Some(())) => {
                    tracing::info!(%account, %region, %key_id, %material_id, "imported key material expired and was deleted");
                    break;
                }
                // The key changed under the sweep: judge it again.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%key_id, error = %e.message, "could not delete expired key material");
                    break;
                }
            }
        }
    }
}
