//! Key material (and proxy secrets) sealed under the root key: AES-256-GCM with a key
//! derived from the root key, the sealed value bound to what it belongs to (a key ARN, or
//! `cks/<id>` for a custom key store's proxy secret) so it cannot be moved to another.
//!
//! Sealed layout: 12-byte IV || ciphertext || 16-byte tag.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use crate::protocol::KmsError;
use crate::storage::{KeyRecord, Storage};

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

/// The key's current material, unsealed, with its id: what new ciphertexts are made with.
/// A key without material (imported material deleted or not yet imported) is
/// `KMSInvalidStateException`; callers judged its state before, so this is a race.
pub fn current_material<'k>(
    root: &root_key::RootKey,
    key: &'k KeyRecord,
) -> Result<(&'k str, Zeroizing<Vec<u8>>), KmsError> {
    let no_material = || KmsError::invalid_state(format!("{} has no key material.", key.arn));
    let sealed = key.sealed_material.as_ref().ok_or_else(no_material)?;
    let id = key.material_id.as_deref().ok_or_else(no_material)?;
    Ok((id, unseal_material(root, &key.arn, sealed)?))
}

/// The material a ciphertext of `key` was made with: the version `material_id` names, or,
/// for a ciphertext written before material versions (`None`), the key's first material.
/// The current material is taken from the key record without another read. A material the
/// key never had is `InvalidCiphertextException`; one whose imported material is gone is
/// `KMSInvalidStateException` (the key is pending import).
pub fn material_for_ciphertext(
    root: &root_key::RootKey,
    storage: &dyn Storage,
    key: &KeyRecord,
    material_id: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    if let Some(id) = material_id
        && key.material_id.as_deref() == Some(id)
    {
        return current_material(root, key).map(|(_, m)| m);
    }
    let versions = storage
        .key_materials(key.address())
        .map_err(crate::service::storage_error)?;
    let version = match material_id {
        Some(id) => versions.iter().find(|v| v.material_id == id),
        None => versions.first(),
    };
    let Some(version) = version else {
        return Err(KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext or the encryption context is not valid.",
        ));
    };
    let sealed = version
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} is pending import.", key.arn)))?;
    unseal_material(root, &key.arn, sealed)
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
