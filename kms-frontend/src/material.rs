//! Key material for every key spec, from a CSPRNG.
//!
//! Encodings of [`KeyMaterial::secret`]:
//! - `SYMMETRIC_DEFAULT`: 32 random bytes (an AES-256 key; the China Regions' SM4-128 variant
//!   is not modelled);
//! - `HMAC_224/256/384/512`: 28/32/48/64 random bytes (the digest length, as AWS sizes its HMAC
//!   keys);
//! - RSA, ECC (NIST curves, secp256k1), Ed25519, ML-DSA: the PKCS#8 (v1) DER private key that
//!   aws-lc-rs writes (ML-DSA: the 32-byte seed form);
//! - ML-KEM: PKCS#8 DER with the `expandedKey` choice of the ML-KEM private key (RFC 9935 /
//!   draft-ietf-lamps-kyber-certificates), because aws-lc-rs exposes only the expanded
//!   decapsulation key; [`ml_kem_expanded_key`] returns the raw bytes for
//!   `aws_lc_rs::kem::DecapsulationKey::new`;
//! - SM2: PKCS#8 DER (`id-ecPublicKey` with the SM2 curve OID), written by the `sm2` crate.
//!
//! [`KeyMaterial::public_key`] is the SubjectPublicKeyInfo DER of a key pair (what GetPublicKey
//! returns), `None` for symmetric and HMAC keys.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::kem::{DecapsulationKey, ML_KEM_512, ML_KEM_768, ML_KEM_1024};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256K1_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, ML_DSA_44_SIGNING, ML_DSA_65_SIGNING,
    ML_DSA_87_SIGNING, PqdsaKeyPair, PqdsaSigningAlgorithm,
};
use zeroize::Zeroizing;

use crate::catalogue::KeySpec;

/// Why key material could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaterialError {
    /// The random number generator failed.
    #[error("the random number generator failed")]
    Random,
    /// The cryptographic library failed to generate a key pair.
    #[error("generating a {0} key pair failed")]
    Generate(KeySpec),
    /// The cryptographic library failed to encode a generated key.
    #[error("encoding a {0} key failed")]
    Encode(KeySpec),
    /// Stored material does not have the encoding this module writes for the spec.
    #[error("the stored {0} key material is not in the expected encoding")]
    Malformed(KeySpec),
    /// The operation does not apply to this key spec.
    #[error("the operation does not apply to a {0} key")]
    WrongSpec(KeySpec),
}

/// Key material of one KMS key: the secret (raw symmetric bytes or a PKCS#8 DER private key)
/// and, for key pairs, the SubjectPublicKeyInfo DER public key.
///
/// The secret is zeroized on drop and never printed by `Debug`.
pub struct KeyMaterial {
    spec: KeySpec,
    secret: Zeroizing<Vec<u8>>,
    public_key: Option<Vec<u8>>,
}

impl KeyMaterial {
    /// Reassembles key material (e.g. read back from storage). No validation: the caller
    /// vouches that the parts were produced by [`generate`] for `spec` (or imported in the
    /// same encodings).
    pub fn from_parts(
        spec: KeySpec,
        secret: Zeroizing<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Self {
        Self {
            spec,
            secret,
            public_key,
        }
    }

    /// The key spec the material is for.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The secret: raw bytes for `SYMMETRIC_DEFAULT` and `HMAC_*`, else the PKCS#8 DER private
    /// key (see the module documentation).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The SubjectPublicKeyInfo DER public key of a key pair; `None` for symmetric and HMAC.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }

    /// Splits the material into the secret and the public key.
    pub fn into_parts(self) -> (Zeroizing<Vec<u8>>, Option<Vec<u8>>) {
        (self.secret, self.public_key)
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("spec", &self.spec)
            .field(
                "secret",
                &format_args!("<{} bytes redacted>", self.secret.len()),
            )
            .field(
                "public_key",
                &self
                    .public_key
                    .as_ref()
                    .map(|k| format!("<{} bytes>", k.len())),
            )
            .finish()
    }
}

/// The length in bytes of the raw secret of a symmetric spec (`SYMMETRIC_DEFAULT`: 32;
/// `HMAC_224/256/384/512`: 28/32/48/64); `None` for key pairs.
pub const fn symmetric_key_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::SymmetricDefault | KeySpec::Hmac256 => Some(32),
        KeySpec::Hmac224 => Some(28),
        KeySpec::Hmac384 => Some(48),
        KeySpec::Hmac512 => Some(64),
        _ => None,
    }
}

/// Generates new key material for `spec` from a CSPRNG (aws-lc's for everything but SM2, the
/// operating system's through `getrandom` for SM2).
///
/// RSA-4096 generation takes a noticeable time (up to seconds in debug builds); callers on an
/// async runtime should generate on a blocking thread.
///
/// # Errors
/// [`MaterialError`] if the RNG or the key generation or encoding fails.
pub fn generate(spec: KeySpec) -> Result<KeyMaterial, MaterialError> {
    if let Some(len) = symmetric_key_len(spec) {
        return random_secret(spec, len);
    }
    match spec {
        KeySpec::Rsa2048 => rsa(spec, KeySize::Rsa2048),
        KeySpec::Rsa3072 => rsa(spec, KeySize::Rsa3072),
        KeySpec::Rsa4096 => rsa(spec, KeySize::Rsa4096),
        KeySpec::EccNistP256 => ecdsa(spec, &ECDSA_P256_SHA256_ASN1_SIGNING),
        KeySpec::EccNistP384 => ecdsa(spec, &ECDSA_P384_SHA384_ASN1_SIGNING),
        KeySpec::EccNistP521 => ecdsa(spec, &ECDSA_P521_SHA512_ASN1_SIGNING),
        KeySpec::EccSecgP256k1 => ecdsa(spec, &ECDSA_P256K1_SHA256_ASN1_SIGNING),
        KeySpec::EccNistEdwards25519 => ed25519(spec),
        KeySpec::MlDsa44 => ml_dsa(spec, &ML_DSA_44_SIGNING),
        KeySpec::MlDsa65 => ml_dsa(spec, &ML_DSA_65_SIGNING),
        KeySpec::MlDsa87 => ml_dsa(spec, &ML_DSA_87_SIGNING),
        KeySpec::MlKem512 | KeySpec::MlKem768 | KeySpec::MlKem1024 => ml_kem(spec),
        KeySpec::Sm2 => sm2(),
        // Handled by `symmetric_key_len` above.
        KeySpec::SymmetricDefault
        | KeySpec::Hmac224
        | KeySpec::Hmac256
        | KeySpec::Hmac384
        | KeySpec::Hmac512 => Err(MaterialError::WrongSpec(spec)),
    }
}

fn random_secret(spec: KeySpec, len: usize) -> Result<KeyMaterial, MaterialError> {
    let mut secret = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| MaterialError::Random)?;
    Ok(KeyMaterial::from_parts(spec, secret, None))
}

/// The material of a key pair: its PKCS#8 private key (zeroized on drop) and its X.509
/// SubjectPublicKeyInfo.
fn pair_material(spec: KeySpec, private_pkcs8: &[u8], public_x509: &[u8]) -> KeyMaterial {
    KeyMaterial::from_parts(
        spec,
        Zeroizing::new(private_pkcs8.to_vec()),
        Some(public_x509.to_vec()),
    )
}

fn rsa(spec: KeySpec, size: KeySize) -> Result<KeyMaterial, MaterialError> {
    let key_pair = RsaKeyPair::generate(size).map_err(|_| MaterialError::Generate(spec))?;
    let private: Pkcs8V1Der<'static> =
        key_pair.as_der().map_err(|_| MaterialError::Encode(spec))?;
    let public: PublicKeyX509Der<'static> = key_pair
        .public_key()
        .as_der()
        .map_err(|_| MaterialError::Encode(spec))?;
    Ok(pair_material(spec, private.as_ref(), public.as_ref()))
}

fn ecdsa(
    spec: KeySpec,
    algorithm: &'static EcdsaSigningAlgorithm,
) -> Result<KeyMaterial, MaterialError> {
    let key_pair = EcdsaKeyPair::generate(algorithm).map_err(|_| MaterialError::Generate(spec))?;
    let private = key_pair
        .to_pkcs8v1()
        .map_err(|_| MaterialError::Encode(spec))?;
    let public: PublicKeyX509Der<'static> = key_pair
        .public_key()
        .as_der()
        .map_err(|_| MaterialError::Encode(spec))?;
    Ok(pair_material(spec, private.as_ref(), public.as_ref()))
}

fn ed25519(spec: KeySpec) -> Result<KeyMaterial, MaterialError> {
    let key_pair = Ed25519KeyPair::generate().map_err(|_| MaterialError::Generate(spec))?;
    // PKCS#8 v1 (RFC 8410, what `openssl genpkey -algorithm ED25519` writes).
    let private = key_pair
        .to_pkcs8v1()
        .map_err(|_| MaterialError::Encode(spec))?;
    let public: PublicKeyX509Der<'static> = key_pair
        .public_key()
        .as_der()
        .map_err(|_| MaterialError::Encode(spec))?;
    Ok(pair_material(spec, private.as_ref(), public.as_ref()))
}

fn ml_dsa(
    spec: KeySpec,
    algorithm: &'static PqdsaSigningAlgorithm,
) -> Result<KeyMaterial, MaterialError> {
    let key_pair = PqdsaKeyPair::generate(algorithm).map_err(|_| MaterialError::Generate(spec))?;
    let private = key_pair
        .to_pkcs8v1()
        .map_err(|_| MaterialError::Encode(spec))?;
    let public: PublicKeyX509Der<'static> = key_pair
        .public_key()
        .as_der()
        .map_err(|_| MaterialError::Encode(spec))?;
    Ok(pair_material(spec, private.as_ref(), public.as_ref()))
}

/// The parameters of an ML-KEM spec: the aws-lc-rs algorithm, the last arc of its OID
/// (`2.16.840.1.101.3.4.4.n`), and the expanded decapsulation key length.
fn ml_kem_params(spec: KeySpec) -> Option<(&'static aws_lc_rs::kem::Algorithm, u8, usize)> {
    match spec {
        KeySpec::MlKem512 => Some((&ML_KEM_512, 1, 1632)),
        KeySpec::MlKem768 => Some((&ML_KEM_768, 2, 2400)),
        KeySpec::MlKem1024 => Some((&ML_KEM_1024, 3, 3168)),
        _ => None,
    }
}

/// The DER `AlgorithmIdentifier` of an ML-KEM parameter set (OID, parameters absent).
fn ml_kem_algorithm_identifier(oid_last_arc: u8) -> [u8; 13] {
    [
        0x30,
        0x0b, // SEQUENCE
        0x06,
        0x09,
        0x60,
        0x86,
        0x48,
        0x01,
        0x65,
        0x03,
        0x04,
        0x04,
        oid_last_arc, // OID
    ]
}

/// A DER tag and definite length (`len` < 2^32).
fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out
}

/// Everything of our ML-KEM PKCS#8 encoding before the expanded key:
/// `SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { OCTET STRING expandedKey } }`.
fn ml_kem_pkcs8_prefix(oid_last_arc: u8, key_len: usize) -> Vec<u8> {
    let inner = der_header(0x04, key_len);
    let outer = der_header(0x04, inner.len() + key_len);
    let algorithm = ml_kem_algorithm_identifier(oid_last_arc);
    let version = [0x02, 0x01, 0x00];
    let content_len = version.len() + algorithm.len() + outer.len() + inner.len() + key_len;
    let mut prefix = der_header(0x30, content_len);
    prefix.extend_from_slice(&version);
    prefix.extend_from_slice(&algorithm);
    prefix.extend_from_slice(&outer);
    prefix.extend_from_slice(&inner);
    prefix
}

/// SubjectPublicKeyInfo DER of an ML-KEM encapsulation key.
fn ml_kem_spki(oid_last_arc: u8, encapsulation_key: &[u8]) -> Vec<u8> {
    let algorithm = ml_kem_algorithm_identifier(oid_last_arc);
    let bit_string = der_header(0x03, encapsulation_key.len() + 1);
    let content_len = algorithm.len() + bit_string.len() + 1 + encapsulation_key.len();
    let mut spki = der_header(0x30, content_len);
    spki.extend_from_slice(&algorithm);
    spki.extend_from_slice(&bit_string);
    spki.push(0x00); // no unused bits
    spki.extend_from_slice(encapsulation_key);
    spki
}

fn ml_kem(spec: KeySpec) -> Result<KeyMaterial, MaterialError> {
    let (algorithm, arc, key_len) = ml_kem_params(spec).ok_or(MaterialError::WrongSpec(spec))?;
    let key = DecapsulationKey::generate(algorithm).map_err(|_| MaterialError::Generate(spec))?;
    let expanded = key.key_bytes().map_err(|_| MaterialError::Encode(spec))?;
    let expanded = expanded.as_ref();
    if expanded.len() != key_len {
        return Err(MaterialError::Encode(spec));
    }
    let encapsulation_key = key
        .encapsulation_key()
        .and_then(|k| k.key_bytes())
        .map_err(|_| MaterialError::Encode(spec))?;

    let prefix = ml_kem_pkcs8_prefix(arc, key_len);
    // Sized up front so the secret is never reallocated (and left behind) while written.
    let mut secret = Zeroizing::new(Vec::with_capacity(prefix.len() + key_len));
    secret.extend_from_slice(&prefix);
    secret.extend_from_slice(expanded);
    let public = ml_kem_spki(arc, encapsulation_key.as_ref());
    Ok(KeyMaterial::from_parts(spec, secret, Some(public)))
}

/// The raw expanded ML-KEM decapsulation key inside the PKCS#8 secret this module writes for
/// an `ML_KEM_*` key, as `aws_lc_rs::kem::DecapsulationKey::new` takes it.
///
/// # Errors
/// [`MaterialError::WrongSpec`] for a non-ML-KEM spec, [`MaterialError::Malformed`] if `pkcs8`
/// is not this module's encoding for `spec`.
pub fn ml_kem_expanded_key(spec: KeySpec, pkcs8: &[u8]) -> Result<&[u8], MaterialError> {
    let (_, arc, key_len) = ml_kem_params(spec).ok_or(MaterialError::WrongSpec(spec))?;
    let prefix = ml_kem_pkcs8_prefix(arc, key_len);
    match pkcs8.strip_prefix(prefix.as_slice()) {
        Some(key) if key.len() == key_len => Ok(key),
        _ => Err(MaterialError::Malformed(spec)),
    }
}

/// The raw ML-KEM encapsulation key inside the PKCS#8 secret of an `ML_KEM_*` key, as
/// `aws_lc_rs::kem::EncapsulationKey::new` takes it. FIPS 203 §7.1: dk = dk_PKE (384·k
/// bytes) ‖ ek (384·k + 32) ‖ H(ek) ‖ z, with k = 2/3/4 (aws-lc-rs cannot rebuild the
/// encapsulation key from `dk` alone).
///
/// # Errors
/// As [`ml_kem_expanded_key`].
pub fn ml_kem_encapsulation_key(spec: KeySpec, pkcs8: &[u8]) -> Result<&[u8], MaterialError> {
    let (_, arc, _) = ml_kem_params(spec).ok_or(MaterialError::WrongSpec(spec))?;
    let k = usize::from(arc) + 1;
    ml_kem_expanded_key(spec, pkcs8)?
        .get(384 * k..384 * k + 384 * k + 32)
        .ok_or(MaterialError::Malformed(spec))
}

/// An SM2 key pair. The private scalar `d` is drawn uniformly from `[1, n-2]` as GB/T 32918
/// requires (`1 + d` must be invertible for SM2DSA), by rejection sampling.
fn sm2() -> Result<KeyMaterial, MaterialError> {
    use sm2::elliptic_curve::Generate as _;
    use sm2::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};

    let spec = KeySpec::Sm2;
    // The chance that a draw is n-1 is about 2^-256; the bound only avoids an endless loop on
    // a broken RNG.
    for _ in 0..8 {
        let scalar = sm2::NonZeroScalar::try_generate().map_err(|_| MaterialError::Random)?;
        if bool::from((sm2::Scalar::ONE + *scalar).is_zero()) {
            continue;
        }
        let secret_key = sm2::SecretKey::from(scalar);
        let private = secret_key
            .to_pkcs8_der()
            .map_err(|_| MaterialError::Encode(spec))?;
        let public = secret_key
            .public_key()
            .to_public_key_der()
            .map_err(|_| MaterialError::Encode(spec))?;
        return Ok(KeyMaterial::from_parts(
            spec,
            private.to_bytes(),
            Some(public.into_vec()),
        ));
    }
    Err(MaterialError::Generate(spec))
}

/// Imported key material (ImportKeyMaterial) checked against `spec` and put into this
/// module's encoding: raw bytes of the spec's length for `SYMMETRIC_DEFAULT` and `HMAC_*`
/// (the lengths AWS accepted; `SYMMETRIC_DEFAULT` is 32 bytes in the China Regions too,
/// where AWS takes 16-byte SM4 keys, because this module's China symmetric keys are AES-256
/// like every other), a PKCS#8 private key of the spec's size or curve for RSA, ECC and SM2
/// (re-encoded as PKCS#8 v1, as generated keys are; an SM2 scalar `d` with `1 + d = n`,
/// which SM2DSA cannot use and [`generate`] never draws, is refused). Other specs cannot be
/// imported.
///
/// # Errors
/// [`MaterialError::Malformed`] if the bytes are not such material,
/// [`MaterialError::WrongSpec`] for a spec that cannot be imported,
/// [`MaterialError::Encode`] if re-encoding fails.
pub fn imported_secret(spec: KeySpec, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    if let Some(len) = symmetric_key_len(spec) {
        if bytes.len() != len {
            return Err(MaterialError::Malformed(spec));
        }
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    let ecdsa = |algorithm: &'static EcdsaSigningAlgorithm| {
        let key = EcdsaKeyPair::from_pkcs8(algorithm, bytes)
            .map_err(|_| MaterialError::Malformed(spec))?;
        let der = key.to_pkcs8v1().map_err(|_| MaterialError::Encode(spec))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    };
    let rsa = |bits: usize| {
        let key = RsaKeyPair::from_pkcs8(bytes).map_err(|_| MaterialError::Malformed(spec))?;
        if key.public_modulus_len() * 8 != bits {
            return Err(MaterialError::Malformed(spec));
        }
        let der: Pkcs8V1Der<'static> = key.as_der().map_err(|_| MaterialError::Encode(spec))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    };
    match spec {
        KeySpec::Rsa2048 => rsa(2048),
        KeySpec::Rsa3072 => rsa(3072),
        KeySpec::Rsa4096 => rsa(4096),
        KeySpec::EccNistP256 => ecdsa(&ECDSA_P256_SHA256_ASN1_SIGNING),
        KeySpec::EccNistP384 => ecdsa(&ECDSA_P384_SHA384_ASN1_SIGNING),
        KeySpec::EccNistP521 => ecdsa(&ECDSA_P521_SHA512_ASN1_SIGNING),
        KeySpec::EccSecgP256k1 => ecdsa(&ECDSA_P256K1_SHA256_ASN1_SIGNING),
        KeySpec::Sm2 => imported_sm2(bytes),
        _ => Err(MaterialError::WrongSpec(spec)),
    }
}

/// An imported SM2 private key: PKCS#8 with `id-ecPublicKey` and the SM2 curve (what
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 | openssl pkcs8 -topk8`
/// writes), re-encoded as [`sm2`] writes generated keys.
fn imported_sm2(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    use sm2::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
    let spec = KeySpec::Sm2;
    // from_pkcs8_der refuses another curve, 0 and scalars >= n.
    let secret_key =
        sm2::SecretKey::from_pkcs8_der(bytes).map_err(|_| MaterialError::Malformed(spec))?;
    if bool::from((sm2::Scalar::ONE + *secret_key.to_nonzero_scalar()).is_zero()) {
        return Err(MaterialError::Malformed(spec));
    }
    let der = secret_key
        .to_pkcs8_der()
        .map_err(|_| MaterialError::Encode(spec))?;
    Ok(der.to_bytes())
}

/// The SubjectPublicKeyInfo DER of the key pair whose secret (this module's encoding for
/// `spec`) is `private_pkcs8`: what GetPublicKey returns and Verify checks with (only the
/// sealed secret is stored; the public key is derived from it when needed).
///
/// # Errors
/// [`MaterialError::WrongSpec`] for symmetric and HMAC specs, [`MaterialError::Malformed`] if
/// the secret does not parse, [`MaterialError::Encode`] if encoding fails.
pub fn public_key_of(spec: KeySpec, private_pkcs8: &[u8]) -> Result<Vec<u8>, MaterialError> {
    let ecdsa = |algorithm: &'static EcdsaSigningAlgorithm| -> Result<Vec<u8>, MaterialError> {
        let key = EcdsaKeyPair::from_pkcs8(algorithm, private_pkcs8)
            .map_err(|_| MaterialError::Malformed(spec))?;
        let der: PublicKeyX509Der<'static> = key
            .public_key()
            .as_der()
            .map_err(|_| MaterialError::Encode(spec))?;
        Ok(der.as_ref().to_vec())
    };
    let ml_dsa = |algorithm: &'static PqdsaSigningAlgorithm| -> Result<Vec<u8>, MaterialError> {
        let key = PqdsaKeyPair::from_pkcs8(algorithm, private_pkcs8)
            .map_err(|_| MaterialError::Malformed(spec))?;
        let der: PublicKeyX509Der<'static> = key
            .public_key()
            .as_der()
            .map_err(|_| MaterialError::Encode(spec))?;
        Ok(der.as_ref().to_vec())
    };
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let key = RsaKeyPair::from_pkcs8(private_pkcs8)
                .map_err(|_| MaterialError::Malformed(spec))?;
            let der: PublicKeyX509Der<'static> = key
                .public_key()
                .as_der()
                .map_err(|_| MaterialError::Encode(spec))?;
            Ok(der.as_ref().to_vec())
        }
        KeySpec::EccNistP256 => ecdsa(&ECDSA_P256_SHA256_ASN1_SIGNING),
        KeySpec::EccNistP384 => ecdsa(&ECDSA_P384_SHA384_ASN1_SIGNING),
        KeySpec::EccNistP521 => ecdsa(&ECDSA_P521_SHA512_ASN1_SIGNING),
        KeySpec::EccSecgP256k1 => ecdsa(&ECDSA_P256K1_SHA256_ASN1_SIGNING),
        KeySpec::EccNistEdwards25519 => {
            let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(private_pkcs8)
                .map_err(|_| MaterialError::Malformed(spec))?;
            let der: PublicKeyX509Der<'static> = key
                .public_key()
                .as_der()
                .map_err(|_| MaterialError::Encode(spec))?;
            Ok(der.as_ref().to_vec())
        }
        KeySpec::MlDsa44 => ml_dsa(&ML_DSA_44_SIGNING),
        KeySpec::MlDsa65 => ml_dsa(&ML_DSA_65_SIGNING),
        KeySpec::MlDsa87 => ml_dsa(&ML_DSA_87_SIGNING),
        KeySpec::MlKem512 | KeySpec::MlKem768 | KeySpec::MlKem1024 => {
            let (_, arc, _) = ml_kem_params(spec).ok_or(MaterialError::WrongSpec(spec))?;
            Ok(ml_kem_spki(
                arc,
                ml_kem_encapsulation_key(spec, private_pkcs8)?,
            ))
        }
        KeySpec::Sm2 => {
            use sm2::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
            let secret = sm2::SecretKey::from_pkcs8_der(private_pkcs8)
                .map_err(|_| MaterialError::Malformed(spec))?;
            let der = secret
                .public_key()
                .to_public_key_der()
                .map_err(|_| MaterialError::Encode(spec))?;
            Ok(der.into_vec())
        }
        KeySpec::SymmetricDefault
        | KeySpec::Hmac224
        | KeySpec::Hmac256
        | KeySpec::Hmac384
        | KeySpec::Hmac512 => Err(MaterialError::WrongSpec(spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::kem::{Ciphertext, EncapsulationKey};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::PublicEncryptingKey;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256K1_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
        ECDSA_P521_SHA512_ASN1, ED25519, EcdsaVerificationAlgorithm, ML_DSA_44, ML_DSA_65,
        ML_DSA_87, PqdsaVerificationAlgorithm, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
        UnparsedPublicKey,
    };
    use sm2::pkcs8::der::Decode as _;
    use sm2::pkcs8::der::asn1::OctetStringRef;
    use sm2::pkcs8::spki::SubjectPublicKeyInfoRef;
    use sm2::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, PrivateKeyInfoRef};

    const MESSAGE: &[u8] = b"kms-frontend key material round trip";

    #[test]
    fn the_public_key_derived_from_the_secret_is_the_generated_one() {
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
            KeySpec::MlKem512,
            KeySpec::MlKem768,
            KeySpec::MlKem1024,
            KeySpec::Sm2,
        ] {
            let m = gen_ok(spec);
            let derived = public_key_of(spec, m.secret()).expect("derive");
            assert_eq!(Some(&derived[..]), m.public_key(), "{spec}");
        }
        assert!(public_key_of(KeySpec::SymmetricDefault, &[0; 32]).is_err());
    }

    fn gen_ok(spec: KeySpec) -> KeyMaterial {
        generate(spec).expect("generate")
    }

    fn public(material: &KeyMaterial) -> &[u8] {
        material.public_key().expect("a key pair has a public key")
    }

    /// The algorithm OID of a SubjectPublicKeyInfo and of a PKCS#8 key, parsed independently
    /// of the library that wrote them.
    fn oids(material: &KeyMaterial) -> (String, String) {
        let spki = SubjectPublicKeyInfoRef::from_der(public(material)).expect("SPKI DER");
        let pkcs8 = PrivateKeyInfoRef::try_from(material.secret()).expect("PKCS#8 DER");
        (
            spki.algorithm.oid.to_string(),
            pkcs8.algorithm.oid.to_string(),
        )
    }

    /// All specs but RSA-4096 (slow: generated once, in its own test).
    fn quick_specs() -> impl Iterator<Item = KeySpec> {
        KeySpec::ALL
            .iter()
            .copied()
            .filter(|&s| s != KeySpec::Rsa4096)
    }

    #[test]
    fn every_spec_generates() {
        for spec in quick_specs() {
            let m = gen_ok(spec);
            assert_eq!(m.spec(), spec);
            assert!(!m.secret().is_empty());
            assert_eq!(m.public_key().is_some(), spec.is_asymmetric(), "{spec}");
            if spec.is_asymmetric() {
                // Both halves are DER parseable by an independent parser.
                let (spki_oid, pkcs8_oid) = oids(&m);
                assert_eq!(spki_oid, pkcs8_oid, "{spec}");
            }
        }
    }

    #[test]
    fn symmetric_and_hmac_lengths() {
        for (spec, len) in [
            (KeySpec::SymmetricDefault, 32),
            (KeySpec::Hmac224, 28),
            (KeySpec::Hmac256, 32),
            (KeySpec::Hmac384, 48),
            (KeySpec::Hmac512, 64),
        ] {
            assert_eq!(symmetric_key_len(spec), Some(len));
            let m = gen_ok(spec);
            assert_eq!(m.secret().len(), len, "{spec}");
            assert!(m.public_key().is_none());
            assert!(m.secret().iter().any(|&b| b != 0));
        }
        assert_eq!(symmetric_key_len(KeySpec::Rsa2048), None);
    }

    #[test]
    fn rsa_modulus_sizes_and_signatures() {
        let rng = SystemRandom::new();
        for (spec, bits) in [
            (KeySpec::Rsa2048, 2048),
            (KeySpec::Rsa3072, 3072),
            (KeySpec::Rsa4096, 4096),
        ] {
            let m = gen_ok(spec);
            let public_key = PublicEncryptingKey::from_der(public(&m)).expect("RSA SPKI");
            assert_eq!(public_key.key_size_bits(), bits, "{spec}");
            let key_pair = RsaKeyPair::from_pkcs8(m.secret()).expect("RSA PKCS#8");
            assert_eq!(key_pair.public_modulus_len() * 8, bits);
            assert_eq!(oids(&m).0, "1.2.840.113549.1.1.1");

            let mut signature = vec![0u8; key_pair.public_modulus_len()];
            key_pair
                .sign(&RSA_PKCS1_SHA256, &rng, MESSAGE, &mut signature)
                .expect("sign");
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public(&m))
                .verify(MESSAGE, &signature)
                .expect("verify");
        }
    }

    #[test]
    fn ecdsa_round_trips() {
        let rng = SystemRandom::new();
        let cases: [(
            KeySpec,
            &'static EcdsaSigningAlgorithm,
            &'static EcdsaVerificationAlgorithm,
            &str,
        ); 4] = [
            (
                KeySpec::EccNistP256,
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &ECDSA_P256_SHA256_ASN1,
                "1.2.840.10045.3.1.7",
            ),
            (
                KeySpec::EccNistP384,
                &ECDSA_P384_SHA384_ASN1_SIGNING,
                &ECDSA_P384_SHA384_ASN1,
                "1.3.132.0.34",
            ),
            (
                KeySpec::EccNistP521,
                &ECDSA_P521_SHA512_ASN1_SIGNING,
                &ECDSA_P521_SHA512_ASN1,
                "1.3.132.0.35",
            ),
            (
                KeySpec::EccSecgP256k1,
                &ECDSA_P256K1_SHA256_ASN1_SIGNING,
                &ECDSA_P256K1_SHA256_ASN1,
                "1.3.132.0.10",
            ),
        ];
        for (spec, signing, verification, curve_oid) in cases {
            let m = gen_ok(spec);
            let spki = SubjectPublicKeyInfoRef::from_der(public(&m)).expect("SPKI");
            assert_eq!(spki.algorithm.oid.to_string(), "1.2.840.10045.2.1");
            let curve = spki
                .algorithm
                .parameters_oid()
                .expect("named curve")
                .to_string();
            assert_eq!(curve, curve_oid, "{spec}");

            let key_pair = EcdsaKeyPair::from_pkcs8(signing, m.secret()).expect("PKCS#8");
            let signature = key_pair.sign(&rng, MESSAGE).expect("sign");
            let verifier = UnparsedPublicKey::new(verification, public(&m));
            verifier
                .verify(MESSAGE, signature.as_ref())
                .expect("verify");
            assert!(verifier.verify(b"other", signature.as_ref()).is_err());
        }
    }

    #[test]
    fn ed25519_round_trip() {
        let m = gen_ok(KeySpec::EccNistEdwards25519);
        assert_eq!(oids(&m).0, "1.3.101.112");
        let key_pair = Ed25519KeyPair::from_pkcs8(m.secret()).expect("PKCS#8");
        let signature = key_pair.sign(MESSAGE);
        let verifier = UnparsedPublicKey::new(&ED25519, public(&m));
        verifier
            .verify(MESSAGE, signature.as_ref())
            .expect("verify");
        assert!(verifier.verify(b"other", signature.as_ref()).is_err());
    }

    #[test]
    fn ml_dsa_round_trips() {
        let cases: [(
            KeySpec,
            &'static PqdsaSigningAlgorithm,
            &'static PqdsaVerificationAlgorithm,
            &str,
        ); 3] = [
            (
                KeySpec::MlDsa44,
                &ML_DSA_44_SIGNING,
                &ML_DSA_44,
                "2.16.840.1.101.3.4.3.17",
            ),
            (
                KeySpec::MlDsa65,
                &ML_DSA_65_SIGNING,
                &ML_DSA_65,
                "2.16.840.1.101.3.4.3.18",
            ),
            (
                KeySpec::MlDsa87,
                &ML_DSA_87_SIGNING,
                &ML_DSA_87,
                "2.16.840.1.101.3.4.3.19",
            ),
        ];
        for (spec, signing, verification, oid) in cases {
            let m = gen_ok(spec);
            assert_eq!(oids(&m).0, oid, "{spec}");
            let key_pair = PqdsaKeyPair::from_pkcs8(signing, m.secret()).expect("PKCS#8");
            let mut signature = vec![0u8; signing.signature_len()];
            let len = key_pair.sign(MESSAGE, &mut signature).expect("sign");
            let verifier = UnparsedPublicKey::new(verification, public(&m));
            verifier.verify(MESSAGE, &signature[..len]).expect("verify");
            assert!(verifier.verify(b"other", &signature[..len]).is_err());
        }
    }

    #[test]
    fn ml_kem_round_trips_and_encodings() {
        for (spec, oid, dk_len, ek_len) in [
            (KeySpec::MlKem512, "2.16.840.1.101.3.4.4.1", 1632, 800),
            (KeySpec::MlKem768, "2.16.840.1.101.3.4.4.2", 2400, 1184),
            (KeySpec::MlKem1024, "2.16.840.1.101.3.4.4.3", 3168, 1568),
        ] {
            let m = gen_ok(spec);
            let (algorithm, _, _) = ml_kem_params(spec).expect("ML-KEM spec");

            // SPKI: the OID, no parameters, the raw encapsulation key in the BIT STRING.
            let spki = SubjectPublicKeyInfoRef::from_der(public(&m)).expect("SPKI");
            assert_eq!(spki.algorithm.oid.to_string(), oid);
            assert!(spki.algorithm.parameters.is_none());
            let ek = spki.subject_public_key.as_bytes().expect("octet aligned");
            assert_eq!(ek.len(), ek_len);

            // PKCS#8: the OID, and the private key OCTET STRING holds the expandedKey choice
            // (an OCTET STRING).
            let info = PrivateKeyInfoRef::try_from(m.secret()).expect("PKCS#8");
            assert_eq!(info.algorithm.oid.to_string(), oid);
            assert!(info.algorithm.parameters.is_none());
            assert!(info.public_key.is_none());
            let inner =
                <&OctetStringRef>::from_der(info.private_key.as_bytes()).expect("expandedKey");
            let expanded = ml_kem_expanded_key(spec, m.secret()).expect("expanded key");
            assert_eq!(expanded.len(), dk_len);
            assert_eq!(inner.as_bytes(), expanded);

            // Encapsulate with the stored public key, decapsulate with the stored secret.
            let encapsulation_key = EncapsulationKey::new(algorithm, ek).expect("ek");
            let (ciphertext, sender_secret) = encapsulation_key.encapsulate().expect("encaps");
            let decapsulation_key = DecapsulationKey::new(algorithm, expanded).expect("dk");
            let receiver_secret = decapsulation_key
                .decapsulate(Ciphertext::from(ciphertext.as_ref()))
                .expect("decaps");
            assert_eq!(sender_secret.as_ref(), receiver_secret.as_ref());
            assert_eq!(sender_secret.as_ref().len(), 32);
        }
    }

    #[test]
    fn ml_kem_expanded_key_rejects_other_input() {
        let m = gen_ok(KeySpec::MlKem768);
        assert!(matches!(
            ml_kem_expanded_key(KeySpec::MlKem512, m.secret()),
            Err(MaterialError::Malformed(KeySpec::MlKem512))
        ));
        assert!(matches!(
            ml_kem_expanded_key(KeySpec::MlKem768, &m.secret()[..m.secret().len() - 1]),
            Err(MaterialError::Malformed(_))
        ));
        let mut longer = m.secret().to_vec();
        longer.push(0);
        assert!(ml_kem_expanded_key(KeySpec::MlKem768, &longer).is_err());
        assert!(matches!(
            ml_kem_expanded_key(KeySpec::Rsa2048, m.secret()),
            Err(MaterialError::WrongSpec(KeySpec::Rsa2048))
        ));
    }

    #[test]
    fn sm2_key_is_a_valid_scalar_and_signs() {
        use sm2::dsa::signature::{Signer as _, Verifier as _};

        let m = gen_ok(KeySpec::Sm2);
        let (spki_oid, pkcs8_oid) = oids(&m);
        assert_eq!(spki_oid, "1.2.840.10045.2.1");
        assert_eq!(pkcs8_oid, "1.2.840.10045.2.1");
        let spki = SubjectPublicKeyInfoRef::from_der(public(&m)).expect("SPKI");
        assert_eq!(
            spki.algorithm
                .parameters_oid()
                .expect("named curve")
                .to_string(),
            "1.2.156.10197.1.301"
        );

        // from_pkcs8_der rejects 0 and values >= n.
        let secret_key = sm2::SecretKey::from_pkcs8_der(m.secret()).expect("SM2 PKCS#8");
        let public_key = sm2::PublicKey::from_public_key_der(public(&m)).expect("SM2 SPKI");
        assert_eq!(secret_key.public_key(), public_key);
        let d = secret_key.to_nonzero_scalar();
        assert!(!bool::from((sm2::Scalar::ONE + *d).is_zero()));

        let distid = "1234567812345678";
        let signing_key = sm2::dsa::SigningKey::new(distid, &secret_key).expect("signing key");
        let signature: sm2::dsa::Signature = signing_key.sign(MESSAGE);
        let verifying_key = sm2::dsa::VerifyingKey::new(distid, public_key).expect("verifying key");
        verifying_key.verify(MESSAGE, &signature).expect("verify");
        assert!(verifying_key.verify(b"other", &signature).is_err());
    }

    #[test]
    fn imported_sm2_keys_are_checked_and_re_encoded() {
        let m = gen_ok(KeySpec::Sm2);
        let imported = imported_secret(KeySpec::Sm2, m.secret()).expect("SM2 PKCS#8");
        assert_eq!(
            public_key_of(KeySpec::Sm2, &imported).expect("public key"),
            public(&m)
        );
        // A key on another curve, and bytes that are no key, are not SM2 material.
        let p256 = gen_ok(KeySpec::EccNistP256);
        for other in [p256.secret(), &m.secret()[1..]] {
            assert!(matches!(
                imported_secret(KeySpec::Sm2, other),
                Err(MaterialError::Malformed(KeySpec::Sm2))
            ));
        }
    }

    #[test]
    fn generations_differ() {
        for spec in quick_specs() {
            let a = gen_ok(spec);
            let b = gen_ok(spec);
            assert_ne!(a.secret(), b.secret(), "{spec}");
            if spec.is_asymmetric() {
                assert_ne!(a.public_key(), b.public_key(), "{spec}");
            }
        }
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        for spec in [KeySpec::SymmetricDefault, KeySpec::EccNistP256] {
            let m = gen_ok(spec);
            let text = format!("{m:?}");
            assert!(text.contains("redacted"), "{text}");
            let hex: String = m.secret().iter().map(|b| format!("{b:02x}")).collect();
            let decimal = format!("{:?}", m.secret());
            assert!(!text.contains(&hex[..16]));
            assert!(!text.contains(&decimal[..decimal.len().min(12)]));
            assert!(text.len() < 200, "{text}");
        }
    }

    #[test]
    fn parts_round_trip() {
        let m = gen_ok(KeySpec::EccNistP384);
        let secret = m.secret().to_vec();
        let public_key = m.public_key().map(<[u8]>::to_vec);
        let (s, p) = m.into_parts();
        assert_eq!(*s, secret);
        assert_eq!(p, public_key);
        let again = KeyMaterial::from_parts(KeySpec::EccNistP384, s, p);
        assert_eq!(again.secret(), secret.as_slice());
    }

    #[test]
    fn der_headers() {
        assert_eq!(der_header(0x04, 0), vec![0x04, 0x00]);
        assert_eq!(der_header(0x04, 0x7f), vec![0x04, 0x7f]);
        assert_eq!(der_header(0x04, 0x80), vec![0x04, 0x81, 0x80]);
        assert_eq!(der_header(0x30, 0x0960), vec![0x30, 0x82, 0x09, 0x60]);
        assert_eq!(
            der_header(0x30, 0x01_0000),
            vec![0x30, 0x83, 0x01, 0x00, 0x00]
        );
    }
}
