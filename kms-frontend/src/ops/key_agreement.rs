//! DeriveSharedSecret: ECDH with a `KEY_AGREEMENT` key (ECC_NIST_P256/P384/P521, and SM2 in
//! the China Regions) and the peer's DER SubjectPublicKeyInfo; the raw shared secret (the
//! x-coordinate of d·Q, 32/48/66 bytes) comes back, as AWS returns it.
//!
//! NIST curves use aws-lc-rs (`agreement`); SM2, which aws-lc-rs does not offer, uses the
//! `sm2` crate's curve arithmetic (the same d·Q). The peer key must be an SPKI on the key's
//! curve: a malformed one is `ValidationException` with an empty message (recorded AWS
//! behaviour, `kms-keys-in-use.md` §4); one on another curve also `ValidationException`, with
//! a message (AWS's answer for that case is **UNVERIFIED**).

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

/// The most bytes a `PublicKey` may have (`PublicKeyType`).
const MAX_PUBLIC_KEY_LEN: usize = 8192;
/// `id-ecPublicKey` (RFC 5480).
const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// The named-curve OID of a `KEY_AGREEMENT` spec.
fn curve_oid(spec: KeySpec) -> Option<&'static str> {
    match spec {
        KeySpec::EccNistP256 => Some("1.2.840.10045.3.1.7"),
        KeySpec::EccNistP384 => Some("1.3.132.0.34"),
        KeySpec::EccNistP521 => Some("1.3.132.0.35"),
        KeySpec::Sm2 => Some("1.2.156.10197.1.301"),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DeriveSharedSecretInput {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<String>,
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
    recipient: Option<Value>,
}

/// A malformed peer key: AWS answers `ValidationException` with an empty message.
fn malformed() -> KmsError {
    KmsError::validation("")
}

/// The named curve of a DER SubjectPublicKeyInfo (`None`: not an EC key or not DER).
fn peer_curve(spki: &[u8]) -> Option<String> {
    use sm2::pkcs8::der::Decode as _;
    let info = sm2::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(spki).ok()?;
    if info.algorithm.oid.to_string() != ID_EC_PUBLIC_KEY {
        return None;
    }
    info.algorithm.parameters_oid().ok().map(|o| o.to_string())
}

/// ECDH on a NIST curve with aws-lc-rs.
fn nist_ecdh(
    spec: KeySpec,
    private_pkcs8: &[u8],
    peer_spki: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    use aws_lc_rs::agreement::{
        ECDH_P256, ECDH_P384, ECDH_P521, PrivateKey, UnparsedPublicKey, agree,
    };
    let algorithm = match spec {
        KeySpec::EccNistP256 => &ECDH_P256,
        KeySpec::EccNistP384 => &ECDH_P384,
        _ => &ECDH_P521,
    };
    let private = PrivateKey::from_private_key_der(algorithm, private_pkcs8).map_err(|_| {
        tracing::error!(%spec, "stored key material is unusable for ECDH");
        KmsError::internal("An internal error occurred.")
    })?;
    // aws-lc checks the point is on the curve; a point that is not is malformed.
    agree(
        &private,
        UnparsedPublicKey::new(algorithm, peer_spki),
        malformed(),
        |secret| Ok(Zeroizing::new(secret.to_vec())),
    )
}

/// ECDH on the SM2 curve: x(d·Q) with the `sm2` crate's arithmetic.
fn sm2_ecdh(private_pkcs8: &[u8], peer_spki: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    use sm2::elliptic_curve::point::AffineCoordinates as _;
    use sm2::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
    let secret = sm2::SecretKey::from_pkcs8_der(private_pkcs8).map_err(|_| {
        tracing::error!("stored SM2 key material is unusable for ECDH");
        KmsError::internal("An internal error occurred.")
    })?;
    let peer = sm2::PublicKey::from_public_key_der(peer_spki).map_err(|_| malformed())?;
    let shared = (peer.to_projective() * *secret.to_nonzero_scalar()).to_affine();
    Ok(Zeroizing::new(shared.x().as_slice().to_vec()))
}

/// `DeriveSharedSecret`.
pub(super) fn derive_shared_secret(
    kms: &Kms,
    caller: &Caller,
    input: DeriveSharedSecretInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let peer = blob("PublicKey", input.public_key.as_deref())?;
    check_echoed_blob(
        &mut v,
        "publicKey",
        peer.as_deref().map(|p| &p[..]),
        MAX_PUBLIC_KEY_LEN,
    );
    match input.key_agreement_algorithm.as_deref() {
        None => v.add("null", "keyAgreementAlgorithm", "Member must not be null"),
        Some(a) => v.enum_value(a, "keyAgreementAlgorithm", &["ECDH"]),
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    match input.key_id.as_deref() {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    v.finish()?;
    if input.recipient.is_some() {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            "Recipient (Nitro Enclaves attestation) is not supported by this front end.",
        ));
    }
    let key = kms.find_key(
        caller,
        input.key_id.as_deref().unwrap_or_default(),
        KeyRef::KeyOrAlias,
    )?;
    kms.check_usable(&key, Operation::DeriveSharedSecret)?;
    let spec = KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))?;
    let algorithm = input.key_agreement_algorithm.as_deref().unwrap_or_default();
    if !algorithms(spec, KeyUsage::KeyAgreement)
        .all()
        .contains(&algorithm)
    {
        return Err(KmsError::client(
            "InvalidKeyUsageException",
            format!("Algorithm {algorithm} is incompatible with key spec {spec}."),
        ));
    }
    let peer = peer.as_deref().map_or(&[][..], |p| &p[..]);
    let want = curve_oid(spec)
        .ok_or_else(|| KmsError::internal(format!("{} has no key agreement curve", key.arn)))?;
    match peer_curve(peer) {
        None => return Err(malformed()),
        Some(curve) if curve != want => {
            return Err(KmsError::validation(format!(
                "The public key is not on the curve of key spec {spec}."
            )));
        }
        Some(_) => {}
    }
    dry_run(input.dry_run)?;
    let sealed = key
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} has no key material.", key.arn)))?;
    let secret = crate::sealing::unseal_material(&kms.root, &key.arn, sealed)?;
    let shared = if spec == KeySpec::Sm2 {
        sm2_ecdh(&secret, peer)?
    } else {
        nist_ecdh(spec, &secret, peer)?
    };
    Ok(json!({
        "KeyId": key.arn,
        "SharedSecret": STANDARD.encode(&shared[..]),
        "KeyAgreementAlgorithm": algorithm,
        "KeyOrigin": key.origin,
    }))
}
