//! Encapsulate and Decapsulate with `ML_KEM_512/768/1024` keys (FIPS 203, aws-lc-rs `kem`;
//! not in the China Regions, where such keys cannot be created).
//!
//! Encapsulate returns a fresh 32-byte shared secret and its ciphertext (768 / 1,088 / 1,568
//! bytes). Decapsulate answers `InvalidCiphertextException` for a ciphertext of the wrong
//! length; any other ciphertext decapsulates, to a pseudo-random value when it was made with
//! another key or altered (FIPS 203 implicit rejection), as the model documents.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::asymmetric::{blob, check_echoed_blob, check_grant_tokens, dry_run};
use crate::auth::Caller;
use crate::catalogue::{KeySpec, KeyUsage, algorithms};
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms};
use crate::storage::KeyRecord;

/// The most bytes a `SharedSecretCiphertextBlob` may have (`CiphertextType`).
const MAX_CIPHERTEXT_LEN: usize = 6144;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KemInput {
    key_id: Option<String>,
    encapsulation_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
    /// Decapsulate only.
    shared_secret_ciphertext_blob: Option<String>,
}

/// The aws-lc-rs algorithm and ciphertext length of an ML-KEM spec.
fn parameters(
    spec: KeySpec,
) -> Option<(
    &'static aws_lc_rs::kem::Algorithm<aws_lc_rs::kem::AlgorithmId>,
    usize,
)> {
    use aws_lc_rs::kem::{ML_KEM_512, ML_KEM_768, ML_KEM_1024};
    match spec {
        KeySpec::MlKem512 => Some((&ML_KEM_512, 768)),
        KeySpec::MlKem768 => Some((&ML_KEM_768, 1088)),
        KeySpec::MlKem1024 => Some((&ML_KEM_1024, 1568)),
        _ => None,
    }
}

/// An ML-KEM key judged usable, with its unsealed secret.
struct KemKey {
    key: KeyRecord,
    spec: KeySpec,
    algorithm: &'static aws_lc_rs::kem::Algorithm<aws_lc_rs::kem::AlgorithmId>,
    ciphertext_len: usize,
    secret: Zeroizing<Vec<u8>>,
}

/// The error for stored ML-KEM material that does not load (never the caller's fault).
fn unusable(key: &KeyRecord) -> KmsError {
    tracing::error!(key = %key.arn, "stored ML-KEM key material is unusable");
    KmsError::internal("An internal error occurred.")
}

/// Validates the request, looks up and judges the key, checks the algorithm, and returns the
/// key with its secret.
fn kem_key(
    kms: &Kms,
    caller: &Caller,
    input: &KemInput,
    ciphertext: Option<&[u8]>,
    op: Operation,
) -> Result<KemKey, KmsError> {
    let mut v = Violations::new();
    if op == Operation::Decapsulate {
        check_echoed_blob(
            &mut v,
            "sharedSecretCiphertextBlob",
            ciphertext,
            MAX_CIPHERTEXT_LEN,
        );
    }
    match input.encapsulation_algorithm.as_deref() {
        None => v.add("null", "encapsulationAlgorithm", "Member must not be null"),
        Some(a) => v.enum_value(a, "encapsulationAlgorithm", &["ML_KEM"]),
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    match input.key_id.as_deref() {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    v.finish()?;
    let key = kms.find_key(
        caller,
        input.key_id.as_deref().unwrap_or_default(),
        KeyRef::KeyOrAlias,
    )?;
    kms.check_usable(&key, op)?;
    let spec = KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))?;
    let algorithm = input.encapsulation_algorithm.as_deref().unwrap_or_default();
    if !algorithms(spec, KeyUsage::EncapsulateDecapsulate)
        .all()
        .contains(&algorithm)
    {
        return Err(KmsError::client(
            "InvalidKeyUsageException",
            format!("Algorithm {algorithm} is incompatible with key spec {spec}."),
        ));
    }
    let (algorithm, ciphertext_len) = parameters(spec)
        .ok_or_else(|| KmsError::internal(format!("{} is not an ML-KEM key", key.arn)))?;
    let sealed = key
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} has no key material.", key.arn)))?;
    let secret = crate::sealing::unseal_material(&kms.root, &key.arn, sealed)?;
    Ok(KemKey {
        key,
        spec,
        algorithm,
        ciphertext_len,
        secret,
    })
}

/// `Encapsulate`: with the encapsulation key (inside the expanded decapsulation key).
pub(super) fn encapsulate(kms: &Kms, caller: &Caller, input: KemInput) -> Result<Value, KmsError> {
    let k = kem_key(kms, caller, &input, None, Operation::Encapsulate)?;
    dry_run(input.dry_run)?;
    let ek = crate::material::ml_kem_encapsulation_key(k.spec, &k.secret)
        .map_err(|_| unusable(&k.key))?;
    let (ciphertext, shared) = aws_lc_rs::kem::EncapsulationKey::new(k.algorithm, ek)
        .map_err(|_| unusable(&k.key))?
        .encapsulate()
        .map_err(|_| KmsError::internal("An internal error occurred."))?;
    let shared = Zeroizing::new(shared.as_ref().to_vec());
    Ok(json!({
        "KeyId": k.key.arn,
        "SharedSecret": STANDARD.encode(&shared[..]),
        "SharedSecretCiphertextBlob": STANDARD.encode(ciphertext.as_ref()),
        "EncapsulationAlgorithm": "ML_KEM",
    }))
}

/// `Decapsulate`.
pub(super) fn decapsulate(kms: &Kms, caller: &Caller, input: KemInput) -> Result<Value, KmsError> {
    let ciphertext = blob(
        "SharedSecretCiphertextBlob",
        input.shared_secret_ciphertext_blob.as_deref(),
    )?;
    let ciphertext = ciphertext.as_deref().map(|c| &c[..]);
    let k = kem_key(kms, caller, &input, ciphertext, Operation::Decapsulate)?;
    let ciphertext = ciphertext.unwrap_or_default();
    if ciphertext.len() != k.ciphertext_len {
        return Err(KmsError::client(
            "InvalidCiphertextException",
            format!(
                "The ciphertext length is {} bytes; key spec {} takes {}.",
                ciphertext.len(),
                k.spec,
                k.ciphertext_len
            ),
        ));
    }
    dry_run(input.dry_run)?;
    let dk =
        crate::material::ml_kem_expanded_key(k.spec, &k.secret).map_err(|_| unusable(&k.key))?;
    let shared = aws_lc_rs::kem::DecapsulationKey::new(k.algorithm, dk)
        .map_err(|_| unusable(&k.key))?
        .decapsulate(aws_lc_rs::kem::Ciphertext::from(ciphertext))
        .map_err(|_| KmsError::internal("An internal error occurred."))?;
    let shared = Zeroizing::new(shared.as_ref().to_vec());
    Ok(json!({
        "KeyId": k.key.arn,
        "SharedSecret": STANDARD.encode(&shared[..]),
        "EncapsulationAlgorithm": "ML_KEM",
    }))
}
