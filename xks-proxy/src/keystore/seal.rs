//! Sealing the key store under a root key (AES-256-GCM).
//!
//! Sealed file layout (all integers big-endian):
//!
//! ```text
//! 0..8    magic "XKSSTOR1"
//! 8       layout version (1)
//! 9..17   root key id (HMAC-SHA256(root, "xks-proxy/root-key-id/v1")[..8])
//! 17..25  generation (incremented by every write)
//! 25..37  nonce
//! 37..    AES-256-GCM(seal key, nonce, aad = bytes 0..37, payload) || tag
//! ```
//!
//! The seal key is derived from the root key (`HMAC-SHA256(root, "xks-proxy/keystore-seal/v1")`)
//! so the root key itself never keys a cipher directly.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use super::file::StoreError;

const MAGIC: &[u8; 8] = b"XKSSTOR1";
const LAYOUT_VERSION: u8 = 1;
const HEADER_LEN: usize = 37;
const TAG_LEN: usize = 16;

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// A file holding 32 raw bytes or their base64 encoding; must be readable by its owner only.
    File(PathBuf),
    /// An environment variable holding the base64 encoding of 32 bytes.
    Env(String),
}

/// The 256-bit root key that seals a key store.
pub struct RootKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id={})", hex_id(&self.id()))
    }
}

fn hex_id(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

type HmacSha256 = Hmac<Sha256>;

impl RootKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// A fresh random root key.
    pub fn generate() -> Result<Self, StoreError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut k[..]).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(Self(k))
    }

    /// Loads the root key from its source.
    pub fn load(source: &RootKeySource) -> Result<Self, StoreError> {
        match source {
            RootKeySource::File(path) => {
                check_owner_only(path)?;
                let raw = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::RootKey {
                    source_name: path.display().to_string(),
                    reason: e.to_string(),
                })?);
                Self::parse(&raw, &path.display().to_string())
            }
            RootKeySource::Env(var) => {
                let value =
                    Zeroizing::new(std::env::var(var).map_err(|_| StoreError::RootKey {
                        source_name: format!("${var}"),
                        reason: "the environment variable is not set".into(),
                    })?);
                Self::parse(value.as_bytes(), &format!("${var}"))
            }
        }
    }

    fn parse(raw: &[u8], source_name: &str) -> Result<Self, StoreError> {
        parse_key_bytes(raw, source_name).map(Self)
    }

    /// Writes the key, base64-encoded, to a new file readable by its owner only.
    pub fn write_new_file(&self, path: &Path) -> Result<(), StoreError> {
        let text = Zeroizing::new(format!("{}\n", xks_api::bytes::encode(&self.0[..])));
        super::file::write_new_private_file(path, text.as_bytes())
    }

    /// A short public identifier of this root key (safe to log).
    pub fn id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.derive(b"xks-proxy/root-key-id/v1")[..8]);
        id
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn seal_cipher(&self) -> Aes256Gcm {
        let k = self.derive(b"xks-proxy/keystore-seal/v1");
        // A 32-byte slice is always a valid AES-256 key.
        Aes256Gcm::new_from_slice(&k[..]).unwrap_or_else(|_| unreachable!("32-byte key"))
    }
}

/// Parses 32 key bytes given raw or as base64 (surrounding white space ignored).
pub fn parse_key_bytes(raw: &[u8], source_name: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if raw.len() == 32 {
        key.copy_from_slice(raw);
        return Ok(key);
    }
    let text = std::str::from_utf8(raw).map_err(|_| StoreError::RootKey {
        source_name: source_name.into(),
        reason: "expected 32 raw bytes or base64 of 32 bytes".into(),
    })?;
    let decoded =
        Zeroizing::new(
            xks_api::bytes::decode(text.trim()).map_err(|_| StoreError::RootKey {
                source_name: source_name.into(),
                reason: "expected 32 raw bytes or base64 of 32 bytes".into(),
            })?,
        );
    if decoded.len() != 32 {
        return Err(StoreError::RootKey {
            source_name: source_name.into(),
            reason: format!("decodes to {} bytes, expected 32", decoded.len()),
        });
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// Refuses a secret file that others than its owner may read or write.
pub fn check_owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| StoreError::RootKey {
        source_name: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::RootKey {
            source_name: path.display().to_string(),
            reason: format!(
                "permissions {:o} let others read it; use chmod 600",
                mode & 0o777
            ),
        });
    }
    Ok(())
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
    let tag = root
        .seal_cipher()
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
            expected: hex_id(&root.id()),
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
    root.seal_cipher()
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
        assert!(!format!("{root:?}").contains(&format!("{:?}", &root.0[..4])));
    }

    #[test]
    fn root_key_parsing() {
        let raw = [7u8; 32];
        assert!(RootKey::parse(&raw, "t").is_ok());
        let b64 = format!("{}\n", xks_api::bytes::encode(&raw));
        let k = RootKey::parse(b64.as_bytes(), "t").expect("b64");
        assert_eq!(&k.0[..], &raw[..]);
        assert!(RootKey::parse(b"short", "t").is_err());
        assert!(RootKey::parse(xks_api::bytes::encode(&[1u8; 31]).as_bytes(), "t").is_err());
    }
}
