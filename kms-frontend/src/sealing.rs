//! Key material (and proxy secrets) sealed under the root key: AES-256-GCM with a key
//! derived from the root key, the sealed value bound to what it belongs to (a key ARN, or
//! `cks/<id>` for a custom key store's proxy secret) so it cannot be moved to another.
//!
//! Sealed layout: 12-byte IV || ciphertext || 16-byte tag.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use crate::protocol::KmsError;

/// AES-256-GCM with `key`; a key of another length is stored material gone wrong.
pub(crate) fn cipher(key: &[u8]) -> Result<Aes256Gcm, KmsError> {
    Aes256Gcm::new_from_slice(key)
        .map_err(|_| KmsError::internal("stored key material has the wrong length"))
}

/// Seals key material under a key derived from the root key; `binding` (the key ARN) is
/// authenticated so sealed material cannot be moved to another key.
pub fn seal_material(
    root: &root_key::RootKey,
    binding: &str,
    material: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let key = root.derive(b"kms-frontend/key-material-seal/v1");
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let mut out = iv.to_vec();
    let mut body = material.to_vec();
    let tag = cipher(&key[..])?
        .encrypt_inout_detached(&Nonce::from(iv), binding.as_bytes(), (&mut body[..]).into())
        .map_err(|_| KmsError::internal("sealing failed"))?;
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Unseals what [`seal_material`] made.
pub fn unseal_material(
    root: &root_key::RootKey,
    binding: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    if sealed.len() < 28 {
        return Err(KmsError::internal("sealed key material is truncated"));
    }
    let key = root.derive(b"kms-frontend/key-material-seal/v1");
    let (iv, rest) = sealed.split_at(12);
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut out = Zeroizing::new(body.to_vec());
    let nonce = Nonce::try_from(iv).map_err(|_| KmsError::internal("bad nonce"))?;
    let tag = Tag::try_from(tag).map_err(|_| KmsError::internal("bad tag"))?;
    cipher(&key[..])?
        .decrypt_inout_detached(&nonce, binding.as_bytes(), (&mut out[..]).into(), &tag)
        .map_err(|_| {
            KmsError::internal("stored key material failed authentication (wrong root key?)")
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_binds_the_key_arn() {
        let root = root_key::RootKey::generate().expect("rng");
        let sealed = seal_material(&root, "arn:a", b"material").expect("seal");
        assert_eq!(
            &unseal_material(&root, "arn:a", &sealed).expect("unseal")[..],
            b"material"
        );
        assert!(unseal_material(&root, "arn:b", &sealed).is_err());
    }
}
