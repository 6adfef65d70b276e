//! Sign and Verify with the key material of asymmetric signing keys.
//!
//! Two tables decide what a request may ask, and the operations read nothing else:
//! - which signing algorithms a key spec allows: the `SigningAlgorithms` list of
//!   [`catalogue::algorithms`], the list DescribeKey and GetPublicKey show;
//! - what each algorithm accepts ([`SIGNING_ALGORITHMS`], from the Sign/Verify documentation
//!   of the service model): `RAW` messages, `DIGEST`s of which length, `EXTERNAL_MU`.
//!
//! Libraries (no hand-written primitives): aws-lc-rs signs and verifies RSA (PSS with MGF1 of
//! the same hash and a salt as long as the digest, as AWS documents; PKCS #1 v1.5), ECDSA (DER
//! `Ecdsa-Sig-Value`), Ed25519 and ML-DSA over a message. aws-lc-rs has no safe API for
//! Ed25519ph nor for ML-DSA from an external μ: `ed25519-dalek` does `ED25519_PH_SHA_512` and
//! the `ml-dsa` crate does `EXTERNAL_MU` (FIPS 204 §6.2). The `sm2` crate does SM2DSA with the
//! distinguishing ID AWS uses (`1234567812345678`) and DER signatures.
//!
//! [`catalogue::algorithms`]: crate::catalogue::algorithms

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, PqdsaKeyPair,
    PqdsaSigningAlgorithm, RsaEncoding, UnparsedPublicKey, VerificationAlgorithm,
};
use zeroize::Zeroizing;

use crate::catalogue::{KeySpec, KeyUsage, algorithms};

/// The distinguishing ID KMS uses for SM2DSA (not settable; Verify documentation).
pub const SM2_DISTINGUISHING_ID: &str = "1234567812345678";

/// The length of an ML-DSA external μ (FIPS 204 §6.2).
pub const EXTERNAL_MU_LEN: usize = 64;

/// `MessageType`: how the `Message` member is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// `RAW`: the message itself; the algorithm hashes it.
    Raw,
    /// `DIGEST`: the message's digest, already hashed.
    Digest,
    /// `EXTERNAL_MU`: the 64-byte ML-DSA representative μ.
    ExternalMu,
}

impl MessageType {
    /// The model's enum values, in its order.
    pub const ALL: [&'static str; 3] = ["RAW", "DIGEST", "EXTERNAL_MU"];

    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Digest => "DIGEST",
            Self::ExternalMu => "EXTERNAL_MU",
        }
    }

    /// Parses a wire value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "RAW" => Some(Self::Raw),
            "DIGEST" => Some(Self::Digest),
            "EXTERNAL_MU" => Some(Self::ExternalMu),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    RsaPss,
    RsaPkcs1,
    Ecdsa,
    Ed25519,
    Ed25519Ph,
    MlDsa,
    Sm2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
    Shake256,
    Sm3,
}

/// What one signing algorithm accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningAlgorithm {
    /// The `SigningAlgorithmSpec` value.
    pub name: &'static str,
    scheme: Scheme,
    hash: Hash,
    /// Whether `MessageType` `RAW` is accepted.
    pub raw: bool,
    /// The digest length `MessageType` `DIGEST` must have; `None` when `DIGEST` is refused.
    pub digest_len: Option<usize>,
    /// Whether `MessageType` `EXTERNAL_MU` (64 bytes) is accepted.
    pub external_mu: bool,
}

const fn alg(
    name: &'static str,
    scheme: Scheme,
    hash: Hash,
    raw: bool,
    digest_len: Option<usize>,
    external_mu: bool,
) -> SigningAlgorithm {
    SigningAlgorithm {
        name,
        scheme,
        hash,
        raw,
        digest_len,
        external_mu,
    }
}

/// Every `SigningAlgorithmSpec` of the model, in its enum order, with the message types it
/// takes (Sign's `MessageType` documentation): `DIGEST` must be as long as the algorithm's
/// hash; Ed25519 takes `RAW` only with `ED25519_SHA_512` and `DIGEST` (a SHA-512 digest,
/// prehashed again by KMS) only with `ED25519_PH_SHA_512`; ML-DSA takes `RAW` and
/// `EXTERNAL_MU`, not `DIGEST`; SM2DSA's digest is SM3(Z ‖ M).
pub const SIGNING_ALGORITHMS: [SigningAlgorithm; 13] = {
    use Hash::*;
    use Scheme::*;
    [
        alg("RSASSA_PSS_SHA_256", RsaPss, Sha256, true, Some(32), false),
        alg("RSASSA_PSS_SHA_384", RsaPss, Sha384, true, Some(48), false),
        alg("RSASSA_PSS_SHA_512", RsaPss, Sha512, true, Some(64), false),
        alg(
            "RSASSA_PKCS1_V1_5_SHA_256",
            RsaPkcs1,
            Sha256,
            true,
            Some(32),
            false,
        ),
        alg(
            "RSASSA_PKCS1_V1_5_SHA_384",
            RsaPkcs1,
            Sha384,
            true,
            Some(48),
            false,
        ),
        alg(
            "RSASSA_PKCS1_V1_5_SHA_512",
            RsaPkcs1,
            Sha512,
            true,
            Some(64),
            false,
        ),
        alg("ECDSA_SHA_256", Ecdsa, Sha256, true, Some(32), false),
        alg("ECDSA_SHA_384", Ecdsa, Sha384, true, Some(48), false),
        alg("ECDSA_SHA_512", Ecdsa, Sha512, true, Some(64), false),
        alg("SM2DSA", Sm2, Sm3, true, Some(32), false),
        alg("ML_DSA_SHAKE_256", MlDsa, Shake256, true, None, true),
        alg("ED25519_SHA_512", Ed25519, Sha512, true, None, false),
        alg(
            "ED25519_PH_SHA_512",
            Ed25519Ph,
            Sha512,
            false,
            Some(64),
            false,
        ),
    ]
};

/// The model's `SigningAlgorithmSpec` enum values, in order.
pub fn algorithm_names() -> Vec<&'static str> {
    SIGNING_ALGORITHMS.iter().map(|a| a.name).collect()
}

/// Why a request cannot be signed or verified as asked, or why signing failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningError {
    /// The key spec does not allow the algorithm (`InvalidKeyUsageException`).
    #[error("Algorithm {0} is incompatible with key spec {1}.")]
    IncompatibleAlgorithm(String, KeySpec),
    /// The algorithm does not take this message type (`ValidationException`).
    #[error("Message type {0} is incompatible with algorithm {1}.")]
    MessageTypeForAlgorithm(&'static str, &'static str),
    /// The key spec does not take this message type (`ValidationException`; ML-DSA `DIGEST`).
    #[error("Message type {0} is incompatible with key spec {1}.")]
    MessageTypeForSpec(&'static str, KeySpec),
    /// A `DIGEST` or `EXTERNAL_MU` of the wrong length (`ValidationException`).
    #[error("Digest is invalid length for algorithm {0}.")]
    DigestLength(&'static str),
    /// The stored key material could not be read (an internal error).
    #[error("the stored {0} key material is unusable")]
    Material(KeySpec),
    /// The library failed to sign (an internal error).
    #[error("signing with a {0} key failed")]
    Failed(KeySpec),
}

impl SigningError {
    /// Whether the error is the caller's (a 400 answer) rather than an internal failure.
    pub const fn is_client_error(&self) -> bool {
        !matches!(self, Self::Material(_) | Self::Failed(_))
    }

    /// The AWS error name of a client error.
    pub const fn aws_name(&self) -> &'static str {
        match self {
            Self::IncompatibleAlgorithm(..) => "InvalidKeyUsageException",
            _ => "ValidationException",
        }
    }
}

/// Checks that `spec` allows `algorithm` and that the algorithm takes `message_type` with a
/// message of `len` bytes; returns the algorithm's row.
///
/// # Errors
/// The [`SigningError`] AWS answers for the first rule broken.
pub fn check(
    spec: KeySpec,
    algorithm: &str,
    message_type: MessageType,
    len: usize,
) -> Result<&'static SigningAlgorithm, SigningError> {
    let allowed = algorithms(spec, KeyUsage::SignVerify)
        .signing
        .unwrap_or(&[]);
    let row = SIGNING_ALGORITHMS
        .iter()
        .find(|a| a.name == algorithm && allowed.contains(&a.name))
        .ok_or_else(|| SigningError::IncompatibleAlgorithm(algorithm.to_owned(), spec))?;
    let mt = message_type.as_str();
    match message_type {
        MessageType::Raw if !row.raw => Err(SigningError::MessageTypeForAlgorithm(mt, row.name)),
        MessageType::Raw => Ok(row),
        MessageType::Digest => match row.digest_len {
            None if row.scheme == Scheme::MlDsa => Err(SigningError::MessageTypeForSpec(mt, spec)),
            None => Err(SigningError::MessageTypeForAlgorithm(mt, row.name)),
            Some(n) if n != len => Err(SigningError::DigestLength(row.name)),
            Some(_) => Ok(row),
        },
        MessageType::ExternalMu if !row.external_mu => {
            Err(SigningError::MessageTypeForAlgorithm(mt, row.name))
        }
        MessageType::ExternalMu if len != EXTERNAL_MU_LEN => {
            Err(SigningError::DigestLength(row.name))
        }
        MessageType::ExternalMu => Ok(row),
    }
}

fn digest_algorithm(hash: Hash) -> Option<&'static digest::Algorithm> {
    match hash {
        Hash::Sha256 => Some(&digest::SHA256),
        Hash::Sha384 => Some(&digest::SHA384),
        Hash::Sha512 => Some(&digest::SHA512),
        Hash::Shake256 | Hash::Sm3 => None,
    }
}

/// A caller's digest as aws-lc-rs's `Digest` (lengths were checked by [`check`]).
fn imported(spec: KeySpec, alg: &SigningAlgorithm, bytes: &[u8]) -> Result<Digest, SigningError> {
    let algorithm = digest_algorithm(alg.hash).ok_or(SigningError::Failed(spec))?;
    Digest::import_less_safe(bytes, algorithm).map_err(|_| SigningError::DigestLength(alg.name))
}

fn rsa_encoding(alg: &SigningAlgorithm) -> &'static dyn RsaEncoding {
    match (alg.scheme, alg.hash) {
        (Scheme::RsaPss, Hash::Sha256) => &sig::RSA_PSS_SHA256,
        (Scheme::RsaPss, Hash::Sha384) => &sig::RSA_PSS_SHA384,
        (Scheme::RsaPss, _) => &sig::RSA_PSS_SHA512,
        (_, Hash::Sha256) => &sig::RSA_PKCS1_SHA256,
        (_, Hash::Sha384) => &sig::RSA_PKCS1_SHA384,
        _ => &sig::RSA_PKCS1_SHA512,
    }
}

fn rsa_verification(alg: &SigningAlgorithm) -> &'static dyn VerificationAlgorithm {
    match (alg.scheme, alg.hash) {
        (Scheme::RsaPss, Hash::Sha256) => &sig::RSA_PSS_2048_8192_SHA256,
        (Scheme::RsaPss, Hash::Sha384) => &sig::RSA_PSS_2048_8192_SHA384,
        (Scheme::RsaPss, _) => &sig::RSA_PSS_2048_8192_SHA512,
        (_, Hash::Sha256) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (_, Hash::Sha384) => &sig::RSA_PKCS1_2048_8192_SHA384,
        _ => &sig::RSA_PKCS1_2048_8192_SHA512,
    }
}

fn ecdsa_algorithms(
    spec: KeySpec,
) -> Result<
    (
        &'static EcdsaSigningAlgorithm,
        &'static dyn VerificationAlgorithm,
    ),
    SigningError,
> {
    match spec {
        KeySpec::EccNistP256 => Ok((
            &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            &sig::ECDSA_P256_SHA256_ASN1,
        )),
        KeySpec::EccSecgP256k1 => Ok((
            &sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
            &sig::ECDSA_P256K1_SHA256_ASN1,
        )),
        KeySpec::EccNistP384 => Ok((
            &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            &sig::ECDSA_P384_SHA384_ASN1,
        )),
        KeySpec::EccNistP521 => Ok((
            &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
            &sig::ECDSA_P521_SHA512_ASN1,
        )),
        _ => Err(SigningError::Material(spec)),
    }
}

fn ml_dsa_algorithms(
    spec: KeySpec,
) -> Result<
    (
        &'static PqdsaSigningAlgorithm,
        &'static dyn VerificationAlgorithm,
    ),
    SigningError,
> {
    match spec {
        KeySpec::MlDsa44 => Ok((&sig::ML_DSA_44_SIGNING, &sig::ML_DSA_44)),
        KeySpec::MlDsa65 => Ok((&sig::ML_DSA_65_SIGNING, &sig::ML_DSA_65)),
        KeySpec::MlDsa87 => Ok((&sig::ML_DSA_87_SIGNING, &sig::ML_DSA_87)),
        _ => Err(SigningError::Material(spec)),
    }
}

/// Signs `message` (read as `message_type`) with the PKCS#8 private key of a `spec` key, by
/// `alg` (a row [`check`] returned for the same spec, type and message).
///
/// # Errors
/// [`SigningError::Material`] if the key does not parse, [`SigningError::Failed`] if the
/// library fails.
pub fn sign(
    spec: KeySpec,
    private_pkcs8: &[u8],
    alg: &SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, SigningError> {
    match alg.scheme {
        Scheme::RsaPss | Scheme::RsaPkcs1 => {
            let key =
                RsaKeyPair::from_pkcs8(private_pkcs8).map_err(|_| SigningError::Material(spec))?;
            let mut out = vec![0u8; key.public_modulus_len()];
            let encoding = rsa_encoding(alg);
            if message_type == MessageType::Digest {
                let d = imported(spec, alg, message)?;
                key.sign_digest(encoding, &d, &mut out)
                    .map_err(|_| SigningError::Failed(spec))?;
            } else {
                let rng = SystemRandom::new();
                key.sign(encoding, &rng, message, &mut out)
                    .map_err(|_| SigningError::Failed(spec))?;
            }
            Ok(out)
        }
        Scheme::Ecdsa => {
            let (signing, _) = ecdsa_algorithms(spec)?;
            let key = EcdsaKeyPair::from_pkcs8(signing, private_pkcs8)
                .map_err(|_| SigningError::Material(spec))?;
            let signature = if message_type == MessageType::Digest {
                key.sign_digest(&imported(spec, alg, message)?)
                    .map_err(|_| SigningError::Failed(spec))?
            } else {
                key.sign(&SystemRandom::new(), message)
                    .map_err(|_| SigningError::Failed(spec))?
            };
            Ok(signature.as_ref().to_vec())
        }
        Scheme::Ed25519 => {
            let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(private_pkcs8)
                .map_err(|_| SigningError::Material(spec))?;
            Ok(key.sign(message).as_ref().to_vec())
        }
        Scheme::Ed25519Ph => {
            use ed25519_dalek::pkcs8::DecodePrivateKey as _;
            use sha2::Digest as _;
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(private_pkcs8)
                .map_err(|_| SigningError::Material(spec))?;
            // KMS applies the Ed25519ph prehash (SHA-512) to the digest the caller sent.
            let prehash = sha2::Sha512::new_with_prefix(message);
            let signature = key
                .sign_prehashed(prehash, None)
                .map_err(|_| SigningError::Failed(spec))?;
            Ok(signature.to_bytes().to_vec())
        }
        Scheme::MlDsa if message_type == MessageType::ExternalMu => {
            ml_dsa_mu::sign(spec, private_pkcs8, message)
        }
        Scheme::MlDsa => {
            let (signing, _) = ml_dsa_algorithms(spec)?;
            let key = PqdsaKeyPair::from_pkcs8(signing, private_pkcs8)
                .map_err(|_| SigningError::Material(spec))?;
            let mut out = vec![0u8; signing.signature_len()];
            let n = key
                .sign(message, &mut out)
                .map_err(|_| SigningError::Failed(spec))?;
            out.truncate(n);
            Ok(out)
        }
        Scheme::Sm2 => {
            use sm2::dsa::signature::Signer as _;
            use sm2::dsa::signature::hazmat::PrehashSigner as _;
            use sm2::pkcs8::DecodePrivateKey as _;
            let secret = sm2::SecretKey::from_pkcs8_der(private_pkcs8)
                .map_err(|_| SigningError::Material(spec))?;
            let key = sm2::dsa::SigningKey::new(SM2_DISTINGUISHING_ID, &secret)
                .map_err(|_| SigningError::Material(spec))?;
            let signature: sm2::dsa::Signature = if message_type == MessageType::Digest {
                key.sign_prehash(message)
                    .map_err(|_| SigningError::Failed(spec))?
            } else {
                key.try_sign(message)
                    .map_err(|_| SigningError::Failed(spec))?
            };
            Ok(signature.to_der().to_vec())
        }
    }
}

/// Whether `signature` is a valid signature of `message` (read as `message_type`) by the
/// SubjectPublicKeyInfo `public_spki` of a `spec` key and `alg` (a row [`check`] returned).
///
/// # Errors
/// [`SigningError::Material`] if the stored public key does not parse.
pub fn verify(
    spec: KeySpec,
    public_spki: &[u8],
    alg: &SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, SigningError> {
    let with = |verification: &'static dyn VerificationAlgorithm| -> Result<bool, SigningError> {
        let key = UnparsedPublicKey::new(verification, public_spki);
        Ok(if message_type == MessageType::Digest {
            key.verify_digest(&imported(spec, alg, message)?, signature)
                .is_ok()
        } else {
            key.verify(message, signature).is_ok()
        })
    };
    match alg.scheme {
        Scheme::RsaPss | Scheme::RsaPkcs1 => with(rsa_verification(alg)),
        Scheme::Ecdsa => with(ecdsa_algorithms(spec)?.1),
        Scheme::Ed25519 => with(&sig::ED25519),
        Scheme::Ed25519Ph => {
            use ed25519_dalek::pkcs8::DecodePublicKey as _;
            use sha2::Digest as _;
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(public_spki)
                .map_err(|_| SigningError::Material(spec))?;
            let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                return Ok(false);
            };
            let prehash = sha2::Sha512::new_with_prefix(message);
            Ok(key.verify_prehashed(prehash, None, &signature).is_ok())
        }
        Scheme::MlDsa if message_type == MessageType::ExternalMu => {
            ml_dsa_mu::verify(spec, public_spki, message, signature)
        }
        Scheme::MlDsa => with(ml_dsa_algorithms(spec)?.1),
        Scheme::Sm2 => {
            use sm2::dsa::signature::Verifier as _;
            use sm2::dsa::signature::hazmat::PrehashVerifier as _;
            use sm2::pkcs8::DecodePublicKey as _;
            let public = sm2::PublicKey::from_public_key_der(public_spki)
                .map_err(|_| SigningError::Material(spec))?;
            let key = sm2::dsa::VerifyingKey::new(SM2_DISTINGUISHING_ID, public)
                .map_err(|_| SigningError::Material(spec))?;
            let Ok(signature) = sm2::dsa::Signature::from_der(signature) else {
                return Ok(false);
            };
            Ok(if message_type == MessageType::Digest {
                key.verify_prehash(message, &signature).is_ok()
            } else {
                key.verify(message, &signature).is_ok()
            })
        }
    }
}

/// ML-DSA from an external μ, with the `ml-dsa` crate (hedged signing, FIPS 204 §3.4).
mod ml_dsa_mu {
    use ml_dsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
    use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, SigningKey, VerifyingKey};

    use super::{KeySpec, SigningError, Zeroizing};

    macro_rules! per_spec {
        ($spec:expr, $f:ident ( $($arg:expr),* )) => {
            match $spec {
                KeySpec::MlDsa44 => $f::<MlDsa44>($($arg),*),
                KeySpec::MlDsa65 => $f::<MlDsa65>($($arg),*),
                KeySpec::MlDsa87 => $f::<MlDsa87>($($arg),*),
                other => Err(SigningError::Material(other)),
            }
        };
    }

    pub(super) fn sign(spec: KeySpec, pkcs8: &[u8], mu: &[u8]) -> Result<Vec<u8>, SigningError> {
        per_spec!(spec, sign_with(spec, pkcs8, mu))
    }

    pub(super) fn verify(
        spec: KeySpec,
        spki: &[u8],
        mu: &[u8],
        signature: &[u8],
    ) -> Result<bool, SigningError> {
        per_spec!(spec, verify_with(spec, spki, mu, signature))
    }

    fn sign_with<P>(spec: KeySpec, pkcs8: &[u8], mu: &[u8]) -> Result<Vec<u8>, SigningError>
    where
        P: ml_dsa::MlDsaParams,
        SigningKey<P>: ml_dsa::pkcs8::DecodePrivateKey,
    {
        let key =
            SigningKey::<P>::from_pkcs8_der(pkcs8).map_err(|_| SigningError::Material(spec))?;
        let mu = Zeroizing::new(mu.to_vec());
        let mu = mu[..].try_into().map_err(|_| SigningError::Failed(spec))?;
        let mut rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
        let signature = key
            .expanded_key()
            .sign_mu_randomized(mu, &mut rng)
            .map_err(|_| SigningError::Failed(spec))?;
        Ok(signature.encode().to_vec())
    }

    fn verify_with<P>(
        spec: KeySpec,
        spki: &[u8],
        mu: &[u8],
        signature: &[u8],
    ) -> Result<bool, SigningError>
    where
        P: ml_dsa::MlDsaParams,
        VerifyingKey<P>: ml_dsa::pkcs8::DecodePublicKey,
    {
        let key = VerifyingKey::<P>::from_public_key_der(spki)
            .map_err(|_| SigningError::Material(spec))?;
        let Ok(mu) = mu.try_into() else {
            return Ok(false);
        };
        let Ok(encoded) = signature.try_into() else {
            return Ok(false);
        };
        let Some(signature) = ml_dsa::Signature::<P>::decode(encoded) else {
            return Ok(false);
        };
        Ok(key.verify_mu(mu, &signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material;

    const MESSAGE: &[u8] = b"kms-frontend signing round trip";

    fn digest_of(alg: &SigningAlgorithm, m: &[u8]) -> Vec<u8> {
        // SM3 and SHAKE256 digests are exercised end to end (tests/it/frontend_signing.rs).
        digest_algorithm(alg.hash).map_or_else(Vec::new, |a| digest::digest(a, m).as_ref().to_vec())
    }

    #[test]
    fn every_allowed_algorithm_signs_and_verifies_every_message_type_it_takes() {
        for spec in [
            KeySpec::Rsa2048,
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
            KeySpec::EccNistEdwards25519,
            KeySpec::MlDsa44,
            KeySpec::MlDsa65,
            KeySpec::MlDsa87,
            KeySpec::Sm2,
        ] {
            let m = material::generate(spec).expect("generate");
            let public = m.public_key().expect("public key");
            for name in algorithms(spec, KeyUsage::SignVerify)
                .signing
                .expect("list")
            {
                let row = SIGNING_ALGORITHMS
                    .iter()
                    .find(|a| a.name == *name)
                    .expect("row");
                let mut inputs = Vec::new();
                if row.raw {
                    inputs.push((MessageType::Raw, MESSAGE.to_vec()));
                }
                if row.digest_len.is_some() && row.scheme != Scheme::Sm2 {
                    inputs.push((MessageType::Digest, digest_of(row, MESSAGE)));
                }
                if row.external_mu {
                    inputs.push((MessageType::ExternalMu, vec![7u8; 64]));
                }
                for (mt, input) in inputs {
                    let row = check(spec, name, mt, input.len()).expect("allowed");
                    let s = sign(spec, m.secret(), row, mt, &input).expect("sign");
                    assert!(
                        verify(spec, public, row, mt, &input, &s).expect("verify"),
                        "{spec} {name} {mt:?}"
                    );
                    let mut bad = s.clone();
                    if let Some(b) = bad.last_mut() {
                        *b ^= 1;
                    }
                    assert!(!verify(spec, public, row, mt, &input, &bad).expect("verify"));
                }
            }
        }
    }

    #[test]
    fn message_type_rules_follow_the_model() {
        use SigningError as E;
        assert_eq!(
            check(KeySpec::Rsa2048, "ECDSA_SHA_256", MessageType::Raw, 1),
            Err(E::IncompatibleAlgorithm(
                "ECDSA_SHA_256".into(),
                KeySpec::Rsa2048
            ))
        );
        assert_eq!(
            check(
                KeySpec::Rsa2048,
                "RSASSA_PSS_SHA_256",
                MessageType::Digest,
                48
            ),
            Err(E::DigestLength("RSASSA_PSS_SHA_256"))
        );
        assert_eq!(
            check(
                KeySpec::EccNistEdwards25519,
                "ED25519_SHA_512",
                MessageType::Digest,
                64
            ),
            Err(E::MessageTypeForAlgorithm("DIGEST", "ED25519_SHA_512"))
        );
        assert_eq!(
            check(
                KeySpec::EccNistEdwards25519,
                "ED25519_PH_SHA_512",
                MessageType::Raw,
                64
            ),
            Err(E::MessageTypeForAlgorithm("RAW", "ED25519_PH_SHA_512"))
        );
        assert_eq!(
            check(
                KeySpec::MlDsa44,
                "ML_DSA_SHAKE_256",
                MessageType::Digest,
                64
            ),
            Err(E::MessageTypeForSpec("DIGEST", KeySpec::MlDsa44))
        );
        assert_eq!(
            check(
                KeySpec::MlDsa44,
                "ML_DSA_SHAKE_256",
                MessageType::ExternalMu,
                32
            ),
            Err(E::DigestLength("ML_DSA_SHAKE_256"))
        );
        assert_eq!(
            check(
                KeySpec::EccNistP256,
                "ECDSA_SHA_256",
                MessageType::ExternalMu,
                64
            ),
            Err(E::MessageTypeForAlgorithm("EXTERNAL_MU", "ECDSA_SHA_256"))
        );
    }
}
