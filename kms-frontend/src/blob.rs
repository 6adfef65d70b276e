//! The ciphertext blob of symmetric encryption with `AWS_KMS` key material, and the inner
//! AES-GCM layer of double encryption (see `crate::xks`).
//!
//! Ciphertext blob (what `Encrypt` returns and `Decrypt` accepts):
//!
//! ```text
//! 0       format (0x05: AWS_KMS symmetric key, AES-256-GCM, context encoding v2, names
//!         its key material; 0x03: the same without the material id, and 0x01: with
//!         context encoding v1, both only read)
//! 1       key id length n, then n bytes of key id (ASCII)
//! ..+32   format 0x05 only: the key material id (its 64 hex characters as 32 bytes)
//! ..+12   IV
//! ..      ciphertext || 16-byte tag
//! ```
//!
//! The GCM AAD is the header (format + key id, + material id) followed by the canonical
//! encryption context: pairs sorted by key, each as length + key + length + value, so the
//! order in which a caller lists its pairs does not matter.
//!
//! How a ciphertext finds its material: a 0x05 blob names the material version it was
//! made with (the key's current one then; see `storage::KeyMaterialRecord`), so a key
//! keeps decrypting what every earlier material made after rotations and re-imports. The
//! formats 0x01 and 0x03 were written when every key had exactly one material, which
//! became the key's first version (`seq` 1) when the database was migrated: they decrypt
//! with that one.
//!
//! Context encoding v2 (formats 0x03 and 0x04) writes each length as BE32: every string
//! the front end can accept is shorter than 4 GiB, so the encoding is injective. v1
//! (formats 0x01 and 0x02, written before) wrote BE16 lengths clamped at 65,535, so a
//! value longer than that could spell further pairs: two different contexts had the same
//! AAD. Blobs of the v1 formats still decrypt (with the v1 encoding, which their tag was
//! made over); the format byte is part of the AAD, so a v2 blob relabelled as v1 fails.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use crate::protocol::KmsError;
use crate::sealing::cipher;

/// Format byte of a blob made with `AWS_KMS` symmetric key material that names its
/// material version (context encoding v2); what `Encrypt` writes.
pub const FORMAT_AWS_KMS_SYMMETRIC_VERSIONED: u8 = 0x05;

/// Format byte of a blob made with `AWS_KMS` symmetric key material (context encoding v2),
/// without a material id: read, no longer written.
pub const FORMAT_AWS_KMS_SYMMETRIC: u8 = 0x03;

/// Format byte of the first blob format (context encoding v1): read, never written.
pub const FORMAT_AWS_KMS_SYMMETRIC_V1: u8 = 0x01;

/// How an encryption context is turned into AAD bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextEncoding {
    /// BE16 lengths clamped at 65,535 (not injective): only to open blobs written with it.
    V1,
    /// BE32 lengths (injective for every context the front end accepts).
    V2,
}

/// The canonical bytes of an encryption context (order-independent) in `encoding`.
pub fn canonical_context(context: &BTreeMap<String, String>, encoding: ContextEncoding) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        for part in [k, v] {
            match encoding {
                ContextEncoding::V1 => {
                    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                ContextEncoding::V2 => {
                    // A request body is far below 4 GiB, so no accepted string is clamped.
                    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// The length of a material id in a blob (64 hex characters as bytes).
const MATERIAL_ID_LEN: usize = 32;

fn header(format: u8, key_id: &str) -> Result<Vec<u8>, KmsError> {
    let len = u8::try_from(key_id.len()).map_err(|_| KmsError::internal("key id too long"))?;
    let mut h = vec![format, len];
    h.extend_from_slice(key_id.as_bytes());
    Ok(h)
}

/// Whether `format` is a blob of `AWS_KMS` symmetric key material (any version).
pub fn is_symmetric_format(format: u8) -> bool {
    format == FORMAT_AWS_KMS_SYMMETRIC_VERSIONED
        || format == FORMAT_AWS_KMS_SYMMETRIC
        || format == FORMAT_AWS_KMS_SYMMETRIC_V1
}

/// A material id (64 hex characters) as the 32 bytes a blob carries.
fn material_id_bytes(material_id: &str) -> Result<[u8; MATERIAL_ID_LEN], KmsError> {
    let bad = || KmsError::internal("a key material id is not 64 hex characters");
    let hex = material_id.as_bytes();
    if hex.len() != 2 * MATERIAL_ID_LEN {
        return Err(bad());
    }
    let mut out = [0u8; MATERIAL_ID_LEN];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16).ok_or_else(bad);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The length of the header (format, key id and, in format 0x05, material id) of a blob
/// whose key id is `key_id_len` bytes long.
fn header_len(format: u8, key_id_len: usize) -> usize {
    let material = if format == FORMAT_AWS_KMS_SYMMETRIC_VERSIONED {
        MATERIAL_ID_LEN
    } else {
        0
    };
    2 + key_id_len + material
}

/// Encrypts with symmetric key material into a ciphertext blob naming `key_id` and the
/// material's id `material_id` (64 hex characters).
pub fn encrypt_blob(
    key_id: &str,
    material_id: &str,
    material: &[u8],
    plaintext: &[u8],
    context: &BTreeMap<String, String>,
) -> Result<Vec<u8>, KmsError> {
    let mut blob = header(FORMAT_AWS_KMS_SYMMETRIC_VERSIONED, key_id)?;
    blob.extend_from_slice(&material_id_bytes(material_id)?);
    let mut aad = blob.clone();
    aad.extend_from_slice(&canonical_context(context, ContextEncoding::V2));
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let mut body = plaintext.to_vec();
    let tag = cipher(material)?
        .encrypt_inout_detached(&Nonce::from(iv), &aad, (&mut body[..]).into())
        .map_err(|_| KmsError::internal("encryption failed"))?;
    blob.extend_from_slice(&iv);
    blob.extend_from_slice(&body);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The key id a ciphertext blob names, or `InvalidCiphertextException`.
pub fn blob_key_id(blob: &[u8]) -> Result<&str, KmsError> {
    let invalid = || KmsError::client("InvalidCiphertextException", "The ciphertext is not valid.");
    if !blob.first().is_some_and(|f| is_symmetric_format(*f)) {
        return Err(invalid());
    }
    let n = usize::from(*blob.get(1).ok_or_else(invalid)?);
    let id = blob.get(2..2 + n).ok_or_else(invalid)?;
    if blob.len() < header_len(blob[0], n) + 12 + 16 {
        return Err(invalid());
    }
    std::str::from_utf8(id).map_err(|_| invalid())
}

/// The key material id (64 lower-case hex characters) a ciphertext blob names; `None` for
/// the formats written before material versions (they use the key's first material).
/// `InvalidCiphertextException` if `blob` is not a blob.
pub fn blob_material_id(blob: &[u8]) -> Result<Option<String>, KmsError> {
    let key_id = blob_key_id(blob)?;
    if blob[0] != FORMAT_AWS_KMS_SYMMETRIC_VERSIONED {
        return Ok(None);
    }
    let start = 2 + key_id.len();
    let id = &blob[start..start + MATERIAL_ID_LEN];
    Ok(Some(id.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Decrypts a ciphertext blob with the material of the key it names.
pub fn decrypt_blob(
    blob: &[u8],
    material: &[u8],
    context: &BTreeMap<String, String>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let invalid = || {
        KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext or the encryption context is not valid.",
        )
    };
    let key_id = blob_key_id(blob)?;
    let hlen = header_len(blob[0], key_id.len());
    let encoding = if blob[0] == FORMAT_AWS_KMS_SYMMETRIC_V1 {
        ContextEncoding::V1
    } else {
        ContextEncoding::V2
    };
    let mut aad = blob[..hlen].to_vec();
    aad.extend_from_slice(&canonical_context(context, encoding));
    let (iv, rest) = blob[hlen..].split_at(12);
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut out = Zeroizing::new(body.to_vec());
    let nonce = Nonce::try_from(iv).map_err(|_| invalid())?;
    let tag = Tag::try_from(tag).map_err(|_| invalid())?;
    cipher(material)?
        .decrypt_inout_detached(&nonce, &aad, (&mut out[..]).into(), &tag)
        .map_err(|_| invalid())?;
    Ok(out)
}

/// The inner layer of double encryption: AES-256-GCM with the KMS key material. Returns the
/// IV and ciphertext || tag.
pub fn inner_seal(
    material: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; 12], Vec<u8>), KmsError> {
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let mut body = plaintext.to_vec();
    let tag = cipher(material)?
        .encrypt_inout_detached(&Nonce::from(iv), aad, (&mut body[..]).into())
        .map_err(|_| KmsError::internal("encryption failed"))?;
    body.extend_from_slice(&tag);
    Ok((iv, body))
}

/// Opens what [`inner_seal`] made; failure is `InvalidCiphertextException`.
pub fn inner_open(
    material: &[u8],
    iv: &[u8; 12],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let invalid = || {
        KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext or the encryption context is not valid.",
        )
    };
    if sealed.len() < 16 {
        return Err(invalid());
    }
    let (body, tag) = sealed.split_at(sealed.len() - 16);
    let mut out = Zeroizing::new(body.to_vec());
    let tag = Tag::try_from(tag).map_err(|_| invalid())?;
    cipher(material)?
        .decrypt_inout_detached(&Nonce::from(*iv), aad, (&mut out[..]).into(), &tag)
        .map_err(|_| invalid())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATERIAL: &str = "00ff10e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e";

    #[test]
    fn blobs_bind_key_and_context_independent_of_order() {
        let key = [7u8; 32];
        let mut ctx = BTreeMap::new();
        ctx.insert("b".to_owned(), "2".to_owned());
        ctx.insert("a".to_owned(), "1".to_owned());
        let blob = encrypt_blob(
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            MATERIAL,
            &key,
            b"hello",
            &ctx,
        )
        .expect("enc");
        assert_eq!(
            blob_key_id(&blob).expect("id"),
            "1234abcd-12ab-34cd-56ef-1234567890ab"
        );
        assert_eq!(&decrypt_blob(&blob, &key, &ctx).expect("dec")[..], b"hello");
        let mut other = ctx.clone();
        other.insert("a".into(), "x".into());
        assert!(decrypt_blob(&blob, &key, &other).is_err());
        assert!(decrypt_blob(&blob, &key, &BTreeMap::new()).is_err());
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 1;
            assert!(decrypt_blob(&t, &key, &ctx).is_err(), "byte {i}");
        }
        assert!(blob_key_id(b"").is_err() && blob_key_id(&[1, 40, 0]).is_err());
        assert_eq!(
            blob_material_id(&blob).expect("material").as_deref(),
            Some(MATERIAL)
        );
        // A blob relabelled as an older format does not open (the format byte is in the
        // AAD).
        for older in [FORMAT_AWS_KMS_SYMMETRIC, FORMAT_AWS_KMS_SYMMETRIC_V1] {
            let mut relabelled = blob.clone();
            relabelled[0] = older;
            assert!(decrypt_blob(&relabelled, &key, &ctx).is_err());
        }
    }

    #[test]
    fn a_blob_without_a_material_id_still_decrypts_and_names_none() {
        // The format 0x03 as written before material versions: header without material id.
        let key = [5u8; 32];
        let ctx = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let mut blob = header(FORMAT_AWS_KMS_SYMMETRIC, "key-1").expect("header");
        let mut aad = blob.clone();
        aad.extend_from_slice(&canonical_context(&ctx, ContextEncoding::V2));
        let (iv, sealed) = inner_seal(&key, &aad, b"old").expect("seal");
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&sealed);
        assert_eq!(blob_material_id(&blob).expect("parse"), None);
        assert_eq!(blob_key_id(&blob).expect("id"), "key-1");
        assert_eq!(&decrypt_blob(&blob, &key, &ctx).expect("dec")[..], b"old");
        assert!(material_id_bytes("xyz").is_err());
    }

    #[test]
    fn the_v2_context_encoding_is_injective_where_v1_was_not() {
        let long = "x".repeat(65_535);
        let one = BTreeMap::from([("a".to_owned(), format!("{long}\u{0}\u{1}b\u{0}\u{1}c"))]);
        let two = BTreeMap::from([("a".to_owned(), long), ("b".to_owned(), "c".to_owned())]);
        assert_eq!(
            canonical_context(&one, ContextEncoding::V1),
            canonical_context(&two, ContextEncoding::V1)
        );
        assert_ne!(
            canonical_context(&one, ContextEncoding::V2),
            canonical_context(&two, ContextEncoding::V2)
        );
        let key = [9u8; 32];
        let blob = encrypt_blob("k", MATERIAL, &key, b"secret", &one).expect("enc");
        assert!(decrypt_blob(&blob, &key, &two).is_err());
        assert_eq!(
            &decrypt_blob(&blob, &key, &one).expect("dec")[..],
            b"secret"
        );
    }
}
