//! The proxy's own key status for backends that have none (PKCS#11 HSMs, Transit): a small
//! file per key store listing disabled keys, written atomically by the CLI and re-read by a
//! running proxy when it changes. The wrapped backend's key facts pass through; the status
//! is the proxy's.

use arc_swap::ArcSwap;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xks_api::XksKeyId;
use xks_api::types::KeyStatus;
use zeroize::Zeroizing;

use super::{
    BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput, EncryptOutput,
    IvSource, KeyBackend, KeyInfo,
};

/// The contents of a key status file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyStatusFile {
    /// Ids of disabled keys.
    #[serde(default)]
    pub disabled: BTreeSet<String>,
}

type Identity = Option<(u64, u64, i64, i64)>;

fn identity(path: &Path) -> Identity {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl KeyStatusFile {
    /// Reads the file; a missing file means no key is disabled.
    pub fn read(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the file atomically and durably (temp file, fsync, rename, fsync directory).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&tmp);
        root_key::write_new_private_file(&tmp, text.as_bytes())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))
    }
}

/// A backend whose key status comes from the proxy's key status file.
#[derive(Debug)]
pub struct StatusOverlay {
    inner: Box<dyn KeyBackend>,
    file: PathBuf,
    cache: ArcSwap<(Identity, KeyStatusFile)>,
}

impl StatusOverlay {
    /// Wraps `inner`, reading statuses from `file`.
    pub fn new(inner: Box<dyn KeyBackend>, file: PathBuf) -> Result<Self, String> {
        let status = KeyStatusFile::read(&file)?;
        Ok(Self {
            cache: ArcSwap::from_pointee((identity(&file), status)),
            inner,
            file,
        })
    }

    fn disabled(&self, key_id: &XksKeyId) -> bool {
        let now = identity(&self.file);
        let cur = self.cache.load();
        if cur.0 != now {
            match KeyStatusFile::read(&self.file) {
                Ok(s) => self.cache.store(Arc::new((now, s))),
                Err(e) => {
                    tracing::error!(error = %e, "key status file cannot be read; keeping the last one")
                }
            }
        }
        self.cache.load().1.disabled.contains(key_id.as_str())
    }
}

impl KeyBackend for StatusOverlay {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity()
    }

    fn iv_source(&self) -> IvSource {
        self.inner.iv_source()
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        Box::pin(async move {
            let mut info = self.inner.key_info(key_id).await?;
            if self.disabled(key_id) {
                info.status = KeyStatus::Disabled;
            }
            Ok(info)
        })
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        self.inner.encrypt(input)
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        self.inner.decrypt(input)
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        self.inner.health_check()
    }

    fn reinitializations(&self) -> Option<u64> {
        self.inner.reinitializations()
    }

    fn health_key_id(&self) -> Option<&str> {
        self.inner.health_key_id()
    }
}

/// Disables or enables `key_id` in the status file.
pub fn set_disabled(file: &Path, key_id: &str, disabled: bool) -> Result<(), String> {
    set_disabled_many(file, &[key_id], disabled)
}

/// Disables or enables every key of `key_ids` in the status file, with one write.
pub fn set_disabled_many(file: &Path, key_ids: &[&str], disabled: bool) -> Result<(), String> {
    let mut s = KeyStatusFile::read(file)?;
    for &key_id in key_ids {
        if disabled {
            s.disabled.insert(key_id.to_owned());
        } else {
            s.disabled.remove(key_id);
        }
    }
    s.write(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_round_trips_and_missing_means_none_disabled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("sub/keys.status");
        assert_eq!(
            KeyStatusFile::read(&f).expect("missing is fine"),
            KeyStatusFile::default()
        );
        set_disabled(&f, "k1", true).expect("disable");
        set_disabled(&f, "k2", true).expect("disable");
        set_disabled(&f, "k1", false).expect("enable");
        let s = KeyStatusFile::read(&f).expect("read");
        assert_eq!(
            s.disabled.into_iter().collect::<Vec<_>>(),
            vec!["k2".to_owned()]
        );
        std::fs::write(&f, "not json").expect("write");
        assert!(KeyStatusFile::read(&f).is_err());
    }
}
