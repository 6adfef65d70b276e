//! Encryption with asymmetric KMS keys: `RSAES_OAEP_SHA_1` and `RSAES_OAEP_SHA_256` with RSA
//! `ENCRYPT_DECRYPT` keys (aws-lc-rs), `SM2PKE` with SM2 keys in the China Regions (the `sm2`
//! crate).
//!
//! Which algorithm a spec allows is the per-family table [`crate::catalogue::algorithms`];
//! this module adds the plaintext limits AWS documents (the Encrypt documentation of the
//! model, `kms-keys-in-use.md` §3) and the cryptography. OAEP uses MGF1 with the same hash and
//! an empty label, as AWS does; the ciphertext is the raw RSA output, so a ciphertext made
//! outside KMS with the public key from GetPublicKey decrypts here. SM2PKE ciphertexts are the
//! DER `SEQUENCE { x, y, C3 (SM3), C2 }` AWS documents.

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use zeroize::Zeroizing;

use crate::catalogue::{KeySpec, KeyUsage, algorithms};

/// `SYMMETRIC_DEFAULT`, the algorithm an Encrypt request without `EncryptionAlgorithm` means.
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

/// Every value of the model's `EncryptionAlgorithmSpec`, in its order.
pub const ALGORITHM_NAMES: [&str; 4] = [
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

/// The most bytes SM2PKE encrypts (the Encrypt documentation).
const SM2PKE_MAX_PLAINTEXT: usize = 1024;

/// Why an asymmetric encryption or decryption was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The algorithm is not one the key spec allows (AWS's text, `kms-keys-in-use.md` §3).
    #[error("Algorithm {0} is incompatible with key spec {1}.")]
    Incompatible(String, KeySpec),
    /// The plaintext is longer than the algorithm and key size allow (AWS's text).
    #[error("Algorithm {0} and key spec {1} cannot encrypt data larger than {2} bytes.")]
    TooLarge(&'static str, KeySpec, usize),
    /// The ciphertext does not decrypt with this key and algorithm.
    #[error("the ciphertext does not decrypt with this key and algorithm")]
    Ciphertext,
    /// The stored key material does not parse.
    #[error("the stored {0} key material is unusable")]
    Material(KeySpec),
    /// The cryptographic library failed.
    #[error("{0} encryption failed")]
    Library(&'static str),
}

impl EncryptionError {
    /// The AWS error name of a refusal the caller caused; `None` for internal failures.
    pub fn aws_name(&self) -> Option<&'static str> {
        match self {
            Self::Incompatible(..) => Some("InvalidKeyUsageException"),
            Self::TooLarge(..) => Some("ValidationException"),
            Self::Ciphertext => Some("InvalidCiphertextException"),
            Self::Material(_) | Self::Library(_) => None,
        }
    }
}

/// An asymmetric encryption algorithm a key spec allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA-OAEP with SHA-1 (and MGF1-SHA-1).
    RsaesOaepSha1,
    /// RSA-OAEP with SHA-256 (and MGF1-SHA-256).
    RsaesOaepSha256,
    /// SM2 public key encryption (GB/T 32918.4), China Regions only.
    Sm2Pke,
}

impl Algorithm {
    /// The name as AWS spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            Self::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            Self::Sm2Pke => "SM2PKE",
        }
    }

    fn oaep(self) -> Option<&'static OaepAlgorithm> {
        match self {
            Self::RsaesOaepSha1 => Some(&OAEP_SHA1_MGF1SHA1),
            Self::RsaesOaepSha256 => Some(&OAEP_SHA256_MGF1SHA256),
            Self::Sm2Pke => None,
        }
    }

    /// The digest length of the OAEP hash.
    const fn hash_len(self) -> usize {
        match self {
            Self::RsaesOaepSha1 => 20,
            Self::RsaesOaepSha256 | Self::Sm2Pke => 32,
        }
    }
}

/// The algorithm `name` (`None`: the request had no `EncryptionAlgorithm`, which means
/// `SYMMETRIC_DEFAULT`) for an asymmetric `ENCRYPT_DECRYPT` key of `spec`, if the spec's
/// list allows it.
///
/// # Errors
/// [`EncryptionError::Incompatible`] when the key spec's list does not have it.
pub fn algorithm_for(spec: KeySpec, name: Option<&str>) -> Result<Algorithm, EncryptionError> {
    let name = name.unwrap_or(SYMMETRIC_DEFAULT);
    let allowed = algorithms(spec, KeyUsage::EncryptDecrypt).all();
    let algorithm = match name {
        "RSAES_OAEP_SHA_1" => Algorithm::RsaesOaepSha1,
        "RSAES_OAEP_SHA_256" => Algorithm::RsaesOaepSha256,
        "SM2PKE" => Algorithm::Sm2Pke,
        _ => return Err(EncryptionError::Incompatible(name.to_owned(), spec)),
    };
    if !allowed.contains(&name) {
        return Err(EncryptionError::Incompatible(name.to_owned(), spec));
    }
    Ok(algorithm)
}

/// The most plaintext bytes `algorithm` encrypts under a key of `spec`: k − 2·hLen − 2 for
/// RSA-OAEP (214/190, 342/318, 470/446 bytes), 1,024 for SM2PKE.
pub const fn max_plaintext(spec: KeySpec, algorithm: Algorithm) -> usize {
    let modulus = match spec {
        KeySpec::Rsa2048 => 256,
        KeySpec::Rsa3072 => 384,
        KeySpec::Rsa4096 => 512,
        _ => return SM2PKE_MAX_PLAINTEXT,
    };
    modulus - 2 * algorithm.hash_len() - 2
}

/// Checks the plaintext length for `algorithm` and `spec`.
///
/// # Errors
/// [`EncryptionError::TooLarge`] over the documented limit.
pub fn check_plaintext_len(
    spec: KeySpec,
    algorithm: Algorithm,
    len: usize,
) -> Result<(), EncryptionError> {
    let max = max_plaintext(spec, algorithm);
    if len > max {
        return Err(EncryptionError::TooLarge(algorithm.as_str(), spec, max));
    }
    Ok(())
}

/// Encrypts `plaintext` with the public half of the key whose secret (the encoding of
/// [`crate::material`]) is `private_pkcs8`.
///
/// # Errors
/// [`EncryptionError`]: too large a plaintext, unusable material, a library failure.
pub fn encrypt(
    spec: KeySpec,
    private_pkcs8: &[u8],
    algorithm: Algorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptionError> {
    check_plaintext_len(spec, algorithm, plaintext.len())?;
    match algorithm.oaep() {
        Some(oaep) => {
            let private = PrivateDecryptingKey::from_pkcs8(private_pkcs8)
                .map_err(|_| EncryptionError::Material(spec))?;
            let public = OaepPublicEncryptingKey::new(private.public_key())
                .map_err(|_| EncryptionError::Material(spec))?;
            let mut out = vec![0u8; public.ciphertext_size()];
            let written = public
                .encrypt(oaep, plaintext, &mut out, None)
                .map_err(|_| EncryptionError::Library(algorithm.as_str()))?
                .len();
            out.truncate(written);
            Ok(out)
        }
        None => sm2_encrypt(private_pkcs8, plaintext),
    }
}

/// Decrypts `ciphertext` with the key whose secret is `private_pkcs8`.
///
/// # Errors
/// [`EncryptionError::Ciphertext`] when it does not decrypt; unusable material.
pub fn decrypt(
    spec: KeySpec,
    private_pkcs8: &[u8],
    algorithm: Algorithm,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
    match algorithm.oaep() {
        Some(oaep) => {
            let private = PrivateDecryptingKey::from_pkcs8(private_pkcs8)
                .map_err(|_| EncryptionError::Material(spec))?;
            let private = OaepPrivateDecryptingKey::new(private)
                .map_err(|_| EncryptionError::Material(spec))?;
            let mut out = Zeroizing::new(vec![0u8; private.min_output_size()]);
            let len = private
                .decrypt(oaep, ciphertext, &mut out, None)
                .map_err(|_| EncryptionError::Ciphertext)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => sm2_decrypt(private_pkcs8, ciphertext),
    }
}

fn sm2_secret(private_pkcs8: &[u8]) -> Result<sm2::SecretKey, EncryptionError> {
    use sm2::pkcs8::DecodePrivateKey as _;
    sm2::SecretKey::from_pkcs8_der(private_pkcs8)
        .map_err(|_| EncryptionError::Material(KeySpec::Sm2))
}

fn sm2_encrypt(private_pkcs8: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
    let public = sm2_secret(private_pkcs8)?.public_key();
    let key = sm2::pke::EncryptingKey::new(public);
    key.encrypt_der(&mut getrandom::SysRng, plaintext)
        .map_err(|_| EncryptionError::Library("SM2PKE"))
}

fn sm2_decrypt(
    private_pkcs8: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
    let key = sm2::pke::DecryptingKey::new(sm2_secret(private_pkcs8)?);
    key.decrypt_der(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| EncryptionError::Ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_the_documented_ones() {
        use Algorithm::{RsaesOaepSha1 as Sha1, RsaesOaepSha256 as Sha256};
        for (spec, sha1, sha256) in [
            (KeySpec::Rsa2048, 214, 190),
            (KeySpec::Rsa3072, 342, 318),
            (KeySpec::Rsa4096, 470, 446),
        ] {
            assert_eq!(max_plaintext(spec, Sha1), sha1, "{spec}");
            assert_eq!(max_plaintext(spec, Sha256), sha256, "{spec}");
        }
        assert_eq!(max_plaintext(KeySpec::Sm2, Algorithm::Sm2Pke), 1024);
        assert_eq!(
            check_plaintext_len(KeySpec::Rsa2048, Sha256, 191)
                .expect_err("over")
                .to_string(),
            "Algorithm RSAES_OAEP_SHA_256 and key spec RSA_2048 cannot encrypt data larger than 190 bytes."
        );
    }

    #[test]
    fn algorithms_follow_the_spec_table() {
        assert_eq!(
            algorithm_for(KeySpec::Rsa2048, Some("RSAES_OAEP_SHA_1")).ok(),
            Some(Algorithm::RsaesOaepSha1)
        );
        assert_eq!(
            algorithm_for(KeySpec::Rsa4096, None)
                .expect_err("no algorithm")
                .to_string(),
            "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_4096."
        );
        assert!(algorithm_for(KeySpec::Rsa2048, Some("SM2PKE")).is_err());
        assert!(algorithm_for(KeySpec::Sm2, Some("RSAES_OAEP_SHA_256")).is_err());
        assert_eq!(
            algorithm_for(KeySpec::Sm2, Some("SM2PKE")).ok(),
            Some(Algorithm::Sm2Pke)
        );
    }

    #[test]
    fn round_trips_and_refuses_other_ciphertexts() {
        for (spec, algorithm) in [
            (KeySpec::Rsa2048, Algorithm::RsaesOaepSha1),
            (KeySpec::Rsa2048, Algorithm::RsaesOaepSha256),
            (KeySpec::Sm2, Algorithm::Sm2Pke),
        ] {
            let m = crate::material::generate(spec).expect("generate");
            let plaintext = vec![7u8; max_plaintext(spec, algorithm)];
            let c = encrypt(spec, m.secret(), algorithm, &plaintext).expect("encrypt");
            let p = decrypt(spec, m.secret(), algorithm, &c).expect("decrypt");
            assert_eq!(&p[..], &plaintext[..], "{spec} {algorithm:?}");
            let mut altered = c.clone();
            altered[10] ^= 1;
            assert!(decrypt(spec, m.secret(), algorithm, &altered).is_err());
        }
    }
}
