//! Root keys: the 256-bit keys under which both services seal what they store (the proxy's
//! embedded key store, the front end's key material and custom key store secrets).
//!
//! A root key comes from a file readable by its owner only (32 raw bytes or their base64) or
//! from an environment variable (base64). It never keys a cipher directly: users derive a
//! purpose-bound key with [`RootKey::derive`]. Its public identifier ([`RootKey::id`]) lets a
//! sealed file say which root key it needs without revealing anything about it.
//!
//! Architecture invariant: key bytes live only in `Zeroizing` buffers; `Debug` and errors
//! show the id and the source's name, never the key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub mod secret_file;
pub use secret_file::{read_secret_env, read_secret_file};

/// Where a root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// A file holding 32 raw bytes or their base64 encoding; must be readable by its owner only.
    File(PathBuf),
    /// An environment variable holding the base64 encoding of 32 bytes.
    Env(String),
}

/// Why a root key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// The source could not be read or holds no valid key.
    #[error("{source_name}: {reason}")]
    Load {
        /// The file path or `$VARIABLE`.
        source_name: String,
        /// What is wrong (never the key).
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// Writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// A 256-bit root key.
pub struct RootKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id={})", self.id_hex())
    }
}

type HmacSha256 = Hmac<Sha256>;

impl RootKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// A fresh random root key.
    pub fn generate() -> Result<Self, RootKeyError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut k[..]).map_err(|e| RootKeyError::Random(e.to_string()))?;
        Ok(Self(k))
    }

    /// Loads the root key from its source.
    pub fn load(source: &RootKeySource) -> Result<Self, RootKeyError> {
        match source {
            RootKeySource::File(path) => {
                let name = format!("root key {}", path.display());
                check_owner_only(path).map_err(|e| match e {
                    RootKeyError::Load { reason, .. } => RootKeyError::Load {
                        source_name: name.clone(),
                        reason,
                    },
                    other => other,
                })?;
                let raw = Zeroizing::new(std::fs::read(path).map_err(|e| RootKeyError::Load {
                    source_name: name.clone(),
                    reason: e.to_string(),
                })?);
                parse_key_bytes(&raw, &name).map(Self)
            }
            RootKeySource::Env(var) => {
                let name = format!("root key ${var}");
                let value = Zeroizing::new(std::env::var(var).map_err(|_| RootKeyError::Load {
                    source_name: name.clone(),
                    reason: "the environment variable is not set".into(),
                })?);
                parse_key_bytes(value.as_bytes(), &name).map(Self)
            }
        }
    }

    /// Writes the key, base64-encoded, to a new file readable by its owner only.
    pub fn write_new_file(&self, path: &Path) -> Result<(), RootKeyError> {
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(&self.0[..])));
        write_new_private_file(path, text.as_bytes()).map_err(|source| RootKeyError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// A short public identifier of this root key (safe to log and to store).
    pub fn id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.derive(b"xks-stack/root-key-id/v1")[..8]);
        id
    }

    /// [`id`](Self::id) as lower-case hex.
    pub fn id_hex(&self) -> String {
        self.id().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key for one purpose: `HMAC-SHA256(root, label)`. Different labels give
    /// independent keys, so no two uses share a cipher key.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }
}

/// Parses 32 key bytes given raw or as base64 (surrounding white space ignored).
pub fn parse_key_bytes(raw: &[u8], source_name: &str) -> Result<Zeroizing<[u8; 32]>, RootKeyError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if raw.len() == 32 {
        key.copy_from_slice(raw);
        return Ok(key);
    }
    let bad = || RootKeyError::Load {
        source_name: source_name.into(),
        reason: "expected 32 raw bytes or base64 of 32 bytes".into(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    let decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| bad())?);
    if decoded.len() != 32 {
        return Err(RootKeyError::Load {
            source_name: source_name.into(),
            reason: format!("decodes to {} bytes, expected 32", decoded.len()),
        });
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// Refuses a secret file that others than its owner may read or write.
pub fn check_owner_only(path: &Path) -> Result<(), RootKeyError> {
    let meta = std::fs::metadata(path).map_err(|e| RootKeyError::Load {
        source_name: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(RootKeyError::Load {
            source_name: path.display().to_string(),
            reason: format!(
                "permissions {:o} let others read it; use chmod 600",
                mode & 0o777
            ),
        });
    }
    Ok(())
}

/// Writes a new file readable by its owner only, durably (created with mode 0600, then
/// fsync). Fails if it exists. Creates missing parent directories.
pub fn write_new_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_raw_and_base64() {
        let raw = [7u8; 32];
        assert_eq!(&parse_key_bytes(&raw, "t").expect("raw")[..], &raw[..]);
        let b64 = format!("{}\n", STANDARD.encode(raw));
        assert_eq!(
            &parse_key_bytes(b64.as_bytes(), "t").expect("b64")[..],
            &raw[..]
        );
        assert!(parse_key_bytes(b"short", "t").is_err());
        assert!(parse_key_bytes(STANDARD.encode([1u8; 31]).as_bytes(), "t").is_err());
    }

    #[test]
    fn files_must_be_private_and_debug_shows_only_the_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        let k = RootKey::generate().expect("rng");
        k.write_new_file(&path).expect("write");
        let loaded = RootKey::load(&RootKeySource::File(path.clone())).expect("load");
        assert_eq!(loaded.id(), k.id());
        assert!(k.write_new_file(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = RootKey::load(&RootKeySource::File(path)).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"));
        let text = STANDARD.encode(&k.0[..]);
        assert!(!format!("{k:?}").contains(&text));
        assert_ne!(k.derive(b"a")[..], k.derive(b"b")[..]);
    }
}
