//! The embedded backend: AES-256-GCM in process, keys from the sealed key-store file.
//!
//! The backend keeps an in-memory snapshot of the store and notices writes by other
//! processes (the CLI) by checking the file's identity before each key lookup, so a running
//! server sees created, disabled and rotated keys at once, without a restart.

use aes_gcm::aead::AeadInOut;
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::consts::U16;
use aes_gcm::{Aes256Gcm, AesGcm, KeyInit, Nonce, Tag};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use xks_api::XksKeyId;
use xks_api::types::{AES_256, HealthStatus, KeyStatus};
use zeroize::Zeroizing;

use super::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};
use crate::keystore::file::FileIdentity;
use crate::keystore::{KeyStoreFile, KeyUsages, StoreContents, StoreError};

type Aes256Gcm16 = AesGcm<Aes256, U16>;

struct LiveVersion {
    version: u32,
    material: Zeroizing<[u8; 32]>,
    gcm: Aes256Gcm,
}

impl LiveVersion {
    fn new(version: u32, material: &Zeroizing<[u8; 32]>) -> Self {
        Self {
            version,
            material: material.clone(),
            // A 32-byte slice is always a valid AES-256 key.
            gcm: Aes256Gcm::new_from_slice(&material[..])
                .unwrap_or_else(|_| unreachable!("32-byte key")),
        }
    }

    fn encrypt(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<EncryptOutput, BackendError> {
        let mut ciphertext = plaintext.to_vec();
        let tag = self
            .gcm
            .encrypt_inout_detached(&Nonce::from(*iv), aad, (&mut ciphertext[..]).into())
            .map_err(|_| BackendError::Failure("AES-GCM refused the input size".into()))?;
        Ok(EncryptOutput {
            ciphertext,
            iv: iv.to_vec(),
            tag: tag.to_vec(),
        })
    }

    fn decrypt(&self, input: &DecryptInput<'_>) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let tag = Tag::try_from(input.tag).map_err(|_| BackendError::InvalidCiphertext)?;
        let mut buf = Zeroizing::new(input.ciphertext.to_vec());
        let ok = match input.iv.len() {
            12 => {
                let nonce =
                    Nonce::try_from(input.iv).map_err(|_| BackendError::InvalidCiphertext)?;
                self.gcm
                    .decrypt_inout_detached(&nonce, input.aad, (&mut buf[..]).into(), &tag)
            }
            16 => {
                let gcm = Aes256Gcm16::new_from_slice(&self.material[..])
                    .map_err(|_| BackendError::Failure("bad key length".into()))?;
                let nonce = aes_gcm::aead::Nonce::<Aes256Gcm16>::try_from(input.iv)
                    .map_err(|_| BackendError::InvalidCiphertext)?;
                gcm.decrypt_inout_detached(&nonce, input.aad, (&mut buf[..]).into(), &tag)
            }
            _ => return Err(BackendError::InvalidCiphertext),
        };
        ok.map_err(|_| BackendError::InvalidCiphertext)?;
        Ok(buf)
    }
}

struct LiveKey {
    status: KeyStatus,
    usages: KeyUsages,
    versions: Vec<LiveVersion>,
}

impl LiveKey {
    fn version(&self, v: u32) -> Option<&LiveVersion> {
        self.versions
            .binary_search_by_key(&v, |x| x.version)
            .ok()
            .and_then(|i| self.versions.get(i))
    }
}

#[derive(Default)]
struct Snapshot {
    identity: Option<FileIdentity>,
    generation: u64,
    keys: Arc<HashMap<XksKeyId, LiveKey>>,
    health_key: Option<Arc<LiveVersion>>,
    /// Set when the latest attempt to read the store failed; the previous keys keep serving.
    load_error: Option<String>,
}

impl Snapshot {
    fn from_contents(identity: Option<FileIdentity>, c: &StoreContents) -> Self {
        let keys = c
            .keys
            .iter()
            .map(|(id, k)| {
                let versions = k
                    .versions
                    .iter()
                    .map(|v| LiveVersion::new(v.version, &v.material))
                    .collect();
                (
                    id.clone(),
                    LiveKey {
                        status: k.status,
                        usages: k.usages,
                        versions,
                    },
                )
            })
            .collect();
        Self {
            identity,
            generation: c.generation,
            keys: Arc::new(keys),
            health_key: Some(Arc::new(LiveVersion::new(0, &c.health_key))),
            load_error: None,
        }
    }
}

/// The embedded backend over one key-store file.
pub struct EmbeddedBackend {
    store: KeyStoreFile,
    name: String,
    snapshot: ArcSwap<Snapshot>,
    reload: Mutex<()>,
}

impl fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("store", &self.store.path())
            .field("generation", &self.snapshot.load().generation)
            .finish()
    }
}

impl EmbeddedBackend {
    /// Opens the store and loads it; fails if it cannot be read now.
    pub fn open(name: &str, store: KeyStoreFile) -> Result<Self, StoreError> {
        let identity = store.identity()?;
        let contents = store.read()?;
        Ok(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::from_contents(identity, &contents)),
            store,
            name: name.to_owned(),
            reload: Mutex::new(()),
        })
    }

    /// Number of keys currently loaded.
    pub fn key_count(&self) -> usize {
        self.snapshot.load().keys.len()
    }

    /// Reloads the snapshot if the file changed since it was read.
    fn refresh(&self) -> Arc<Snapshot> {
        let current = self.snapshot.load_full();
        let now = match self.store.identity() {
            Ok(id) => id,
            Err(e) => return self.keep_with_error(&current, e.to_string()),
        };
        if now == current.identity {
            return current;
        }
        // One reader reloads; the others wait briefly and then see its result.
        let _guard = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let latest = self.snapshot.load_full();
        if latest.identity == now && latest.load_error.is_none() {
            return latest;
        }
        match self.store.read() {
            Ok(contents) => {
                let fresh = Arc::new(Snapshot::from_contents(now, &contents));
                tracing::info!(
                    key_store = %self.name,
                    generation = contents.generation,
                    keys = contents.keys.len(),
                    "key store reloaded"
                );
                self.snapshot.store(fresh.clone());
                fresh
            }
            Err(e) => self.keep_with_error(&latest, e.to_string()),
        }
    }

    fn keep_with_error(&self, current: &Arc<Snapshot>, error: String) -> Arc<Snapshot> {
        if current.load_error.as_deref() == Some(error.as_str()) {
            return current.clone();
        }
        tracing::error!(key_store = %self.name, error = %error, "key store cannot be read; serving the last good copy");
        let kept = Arc::new(Snapshot {
            // The old identity stays, so the next request tries to read the file again.
            identity: current.identity,
            generation: current.generation,
            keys: current.keys.clone(),
            health_key: current.health_key.clone(),
            load_error: Some(error),
        });
        self.snapshot.store(kept.clone());
        kept
    }

    fn with_version<T>(
        &self,
        key_id: &XksKeyId,
        version: u32,
        f: impl FnOnce(&LiveVersion) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let snap = self.snapshot.load();
        let key = snap
            .keys
            .get(key_id)
            .ok_or_else(|| BackendError::KeyNotFound(key_id.to_string()))?;
        let v = key
            .version(version)
            .ok_or(BackendError::UnknownKeyVersion(version))?;
        f(v)
    }

    fn directory_writable(&self) -> Result<(), String> {
        let dir = match self.store.path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let probe = dir.join(format!(".xks-proxy-write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"probe")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("key store directory {} is not writable: {e}", dir.display()))
    }
}

impl KeyBackend for EmbeddedBackend {
    fn identity(&self) -> BackendIdentity {
        BackendIdentity {
            vendor: "xks-stack".into(),
            model: format!(
                "embedded sealed key store (xks-proxy {})",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }

    fn iv_source(&self) -> IvSource {
        IvSource::Proxy
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        Box::pin(async move {
            let snap = self.refresh();
            let key = snap
                .keys
                .get(key_id)
                .ok_or_else(|| BackendError::KeyNotFound(key_id.to_string()))?;
            Ok(KeyInfo {
                key_spec: AES_256.to_owned(),
                status: key.status,
                usages: key.usages,
                current_version: key.versions.last().map_or(0, |v| v.version),
            })
        })
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        Box::pin(async move {
            let iv = input.iv.ok_or_else(|| {
                BackendError::Failure("the embedded backend needs a proxy IV".into())
            })?;
            self.with_version(input.key_id, input.version, |v| {
                v.encrypt(&iv, input.aad, input.plaintext)
            })
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(
            async move { self.with_version(input.key_id, input.version, |v| v.decrypt(&input)) },
        )
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        Box::pin(async move {
            let snap = self.refresh();
            let Some(hk) = snap.health_key.as_ref() else {
                return Ok(BackendHealth {
                    status: HealthStatus::Unavailable,
                    detail: snap
                        .load_error
                        .clone()
                        .unwrap_or_else(|| "no health key".into()),
                });
            };
            let mut probe = [0u8; 32];
            let mut iv = [0u8; 12];
            getrandom::fill(&mut probe)
                .and_then(|()| getrandom::fill(&mut iv))
                .map_err(|e| BackendError::Failure(format!("random source failed: {e}")))?;
            let aad = b"xks-proxy health check";
            let out = hk.encrypt(&iv, aad, &probe)?;
            let back = hk.decrypt(&DecryptInput {
                key_id: &health_key_id(),
                version: 0,
                iv: &out.iv,
                aad,
                ciphertext: &out.ciphertext,
                tag: &out.tag,
            })?;
            if back[..] != probe[..] {
                return Ok(BackendHealth {
                    status: HealthStatus::Unavailable,
                    detail: "health key round trip returned different data".into(),
                });
            }
            if let Some(err) = &snap.load_error {
                return Ok(BackendHealth {
                    status: HealthStatus::Degraded,
                    detail: format!("serving the last good copy of the key store: {err}"),
                });
            }
            if let Err(detail) = self.directory_writable() {
                return Ok(BackendHealth {
                    status: HealthStatus::Degraded,
                    detail,
                });
            }
            Ok(BackendHealth {
                status: HealthStatus::Active,
                detail: format!("round trip ok, generation {}", snap.generation),
            })
        })
    }
}

fn health_key_id() -> XksKeyId {
    // A constant that satisfies the key id rules; only used in a local DecryptInput.
    XksKeyId::parse("health").unwrap_or_else(|_| unreachable!("valid id"))
}
