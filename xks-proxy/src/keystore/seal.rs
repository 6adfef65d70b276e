//! Sealing the key store under a root key (AES-256-GCM).
//!
//! Sealed file layout (all integers big-endian):
//!
//! ```text
//! 0..8    magic "XKSSTOR1"
//! 8       layout version (1)
//! 9..17   root key id (`RootKey::id`)
//! 17..25  generation (incremented by every write)
//! 25..37  nonce
//! 37..    AES-256-GCM(seal key, nonce, aad = bytes 0..37, payload) || tag
//! ```
//!
//! The seal key is derived from the root key (`HMAC-SHA256(root, "xks-proxy/keystore-seal/v1")`)
//! so the root key itself never keys a cipher directly. Root keys themselves (loading,
//! generation, ids) live in the shared `root-key` crate.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::file::StoreError;

const MAGIC: &[u8; 8] = b"XKSSTOR1";
const LAYOUT_VERSION: u8 = 1;
const HEADER_LEN: usize = 37;
const TAG_LEN: usize = 16;

pub use root_key::{RootKey, RootKeySource, check_owner_only, parse_key_bytes};

fn seal_cipher(root: &RootKey) -> Aes256Gcm {
    let k = root.derive(b"xks-proxy/keystore-seal/v1");
    // A 32-byte slice is always a valid AES-256 key.
    Aes256Gcm::new_from_slice(&k[..]).unwrap_or_else(|_| unreachable!("32-byte key"))
}

/// Seals `payload` (the encoded store) as generation `generation`.
pub fn seal(root: &RootKey, generation: u64, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(LAYOUT_VERSION);
    out.extend_from_slice(&root.id());
    out.extend_from_slice(&generation.to_be_bytes());
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
    out.extend_from_slice(&nonce);
    debug_assert_eq!(out.len(), HEADER_LEN);
    let header = out.clone();
    out.extend_from_slice(payload);
    let tag = seal_cipher(root)
        .encrypt_inout_detached(
            &Nonce::from(nonce),
            &header,
            (&mut out[HEADER_LEN..]).into(),
        )
        .map_err(|_| StoreError::Corrupt("payload too large to seal".into()))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// What unsealing found.
#[derive(Debug)]
pub struct Unsealed {
    /// The generation in the header.
    pub generation: u64,
    /// The decrypted payload.
    pub payload: Zeroizing<Vec<u8>>,
}

/// Checks the header and decrypts a sealed store.
pub fn unseal(root: &RootKey, sealed: &[u8]) -> Result<Unsealed, StoreError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..8] != MAGIC {
        return Err(StoreError::Corrupt("not an xks-proxy key store".into()));
    }
    if sealed[8] != LAYOUT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "unsupported key store layout version {}",
            sealed[8]
        )));
    }
    if sealed[9..17] != root.id() {
        return Err(StoreError::WrongRootKey {
            expected: root.id_hex(),
            found: sealed[9..17].iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    let mut gen_bytes = [0u8; 8];
    gen_bytes.copy_from_slice(&sealed[17..25]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[25..37]);
    let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - TAG_LEN);
    let mut payload = Zeroizing::new(body.to_vec());
    let tag = aes_gcm::Tag::try_from(tag).map_err(|_| StoreError::Corrupt("bad tag".into()))?;
    seal_cipher(root)
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            &sealed[..HEADER_LEN],
            (&mut payload[..]).into(),
            &tag,
        )
        .map_err(|_| StoreError::Corrupt("the key store failed authentication".into()))?;
    Ok(Unsealed {
        generation: u64::from_be_bytes(gen_bytes),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let root = RootKey::generate().expect("rng");
        let sealed = seal(&root, 7, b"payload").expect("seal");
        let u = unseal(&root, &sealed).expect("unseal");
        assert_eq!(u.generation, 7);
        assert_eq!(&u.payload[..], b"payload");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(unseal(&root, &t).is_err(), "byte {i}");
        }
        let other = RootKey::generate().expect("rng");
        assert!(matches!(
            unseal(&other, &sealed),
            Err(StoreError::WrongRootKey { .. })
        ));
    }
}
