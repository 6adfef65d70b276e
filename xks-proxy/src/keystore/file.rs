//! The key-store file: crash-safe writes, serialized writers, change detection for readers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::failpoint;
use super::format::StoreContents;
use super::seal::{self, RootKey};

/// Errors of the embedded key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store file does not exist.
    #[error("key store {0} does not exist (create it with `xks-proxy keys init`)")]
    Missing(PathBuf),
    /// The store file already exists.
    #[error("key store {0} already exists")]
    AlreadyExists(PathBuf),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The root key could not be loaded.
    #[error(transparent)]
    RootKey(#[from] root_key::RootKeyError),
    /// The store was sealed under another root key.
    #[error("key store is sealed under root key {found}, but root key {expected} was given")]
    WrongRootKey {
        /// Id of the given root key.
        expected: String,
        /// Id in the store header.
        found: String,
    },
    /// The store is damaged or not a key store.
    #[error("key store is damaged: {0}")]
    Corrupt(String),
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// A key operation was refused (no such key, key exists, ...).
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

const BACKUP_MAGIC: &[u8; 12] = b"XKSBACKUP01\n";

/// A key store backup and what it holds.
#[derive(Debug)]
pub struct Backup {
    /// The backup file's bytes (empty in a restore report).
    pub bytes: Vec<u8>,
    /// The store generation it holds.
    pub generation: u64,
    /// How many keys it holds.
    pub keys: usize,
}

/// Identity of the store file as last read: a write always replaces the file (rename), so a
/// changed inode, size or modification time means there is something new to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// A sealed key-store file and the root key that opens it.
#[derive(Debug)]
pub struct KeyStoreFile {
    path: PathBuf,
    root: RootKey,
}

impl KeyStoreFile {
    /// A handle on the store at `path`, sealed under `root`. Nothing is read yet.
    pub fn new(path: impl Into<PathBuf>, root: RootKey) -> Self {
        Self {
            path: path.into(),
            root,
        }
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root key (for re-sealing).
    pub fn root(&self) -> &RootKey {
        &self.root
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The current identity of the file, or `None` if it does not exist.
    pub fn identity(&self) -> Result<Option<FileIdentity>, StoreError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some(FileIdentity {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }

    /// Reads and unseals the store (no lock needed: writes replace the file atomically).
    pub fn read(&self) -> Result<StoreContents, StoreError> {
        let sealed = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(self.path.clone()));
            }
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let unsealed = seal::unseal(&self.root, &sealed)?;
        StoreContents::decode(unsealed.generation, &unsealed.payload)
    }

    /// Creates a new, empty store. Fails if one exists.
    pub fn create(&self) -> Result<(), StoreError> {
        let dir = self.dir();
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        let _lock = self.lock()?;
        if self.identity()?.is_some() {
            return Err(StoreError::AlreadyExists(self.path.clone()));
        }
        let contents = StoreContents::new_empty()?;
        self.write_locked(&contents, 1)
    }

    /// Applies `change` to the store under the writer lock and writes the result durably.
    /// Nothing is written if `change` fails.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut StoreContents) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let mut contents = self.read()?;
        let out = change(&mut contents)?;
        let next = contents.generation + 1;
        self.write_locked(&contents, next)?;
        Ok(out)
    }

    /// Writes `contents` sealed under `new_root` and makes it this store's root key.
    pub fn reseal(&mut self, new_root: RootKey) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let contents = self.read()?;
        let next = contents.generation + 1;
        let old = std::mem::replace(&mut self.root, new_root);
        if let Err(e) = self.write_locked(&contents, next) {
            self.root = old;
            return Err(e);
        }
        Ok(())
    }

    /// A backup of the store: the sealed bytes (still protected by the root key) with a
    /// magic and a SHA-256 so that a damaged or foreign file is refused at restore. Taken
    /// under the writer lock, so it is one consistent generation.
    pub fn backup(&self) -> Result<Backup, StoreError> {
        let _lock = self.lock()?;
        let sealed = std::fs::read(&self.path).map_err(io_err(&self.path))?;
        // Prove the backup is usable before handing it out.
        let unsealed = seal::unseal(&self.root, &sealed)?;
        let contents = StoreContents::decode(unsealed.generation, &unsealed.payload)?;
        let mut bytes = Vec::with_capacity(BACKUP_MAGIC.len() + 32 + sealed.len());
        bytes.extend_from_slice(BACKUP_MAGIC);
        bytes.extend_from_slice(&Sha256::digest(&sealed));
        bytes.extend_from_slice(&sealed);
        Ok(Backup {
            bytes,
            generation: contents.generation,
            keys: contents.keys.len(),
        })
    }

    /// Restores a backup made by [`backup`](Self::backup): checks its integrity and that it
    /// unseals under this store's root key, then replaces the store crash-safely.
    pub fn restore(&self, backup: &[u8]) -> Result<Backup, StoreError> {
        let body = backup
            .strip_prefix(BACKUP_MAGIC.as_slice())
            .ok_or_else(|| StoreError::Corrupt("not an xks-proxy key store backup".into()))?;
        if body.len() < 32 {
            return Err(StoreError::Corrupt("the backup is truncated".into()));
        }
        let (digest, sealed) = body.split_at(32);
        if Sha256::digest(sealed).as_slice() != digest {
            return Err(StoreError::Corrupt(
                "the backup failed its integrity check (SHA-256 mismatch)".into(),
            ));
        }
        let unsealed = seal::unseal(&self.root, sealed)?;
        let contents = StoreContents::decode(unsealed.generation, &unsealed.payload)?;
        let _lock = self.lock()?;
        self.write_sealed_locked(sealed)?;
        Ok(Backup {
            bytes: Vec::new(),
            generation: contents.generation,
            keys: contents.keys.len(),
        })
    }

    fn lock(&self) -> Result<File, StoreError> {
        let lock_path = self.lock_path();
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        f.lock().map_err(io_err(&lock_path))?;
        failpoint::hit("store-after-lock");
        Ok(f)
    }

    /// Seals and writes under the lock.
    fn write_locked(&self, contents: &StoreContents, generation: u64) -> Result<(), StoreError> {
        let payload = contents.encode();
        let sealed = seal::seal(&self.root, generation, &payload)?;
        self.write_sealed_locked(&sealed)
    }

    /// Writes sealed bytes under the lock: temp file, fsync, rename over the store, fsync
    /// the directory.
    fn write_sealed_locked(&self, sealed: &[u8]) -> Result<(), StoreError> {
        let dir = self.dir();
        self.remove_stale_temp_files();
        let tmp = self.temp_path();
        {
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(sealed).map_err(io_err(&tmp))?;
            failpoint::hit("store-after-temp-write");
            f.sync_all().map_err(io_err(&tmp))?;
            failpoint::hit("store-after-temp-fsync");
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        failpoint::hit("store-after-rename");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        failpoint::hit("store-after-dir-fsync");
        Ok(())
    }

    fn temp_prefix(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(".{name}.tmp-")
    }

    fn temp_path(&self) -> PathBuf {
        self.dir()
            .join(format!("{}{}", self.temp_prefix(), std::process::id()))
    }

    /// Removes temp files left by writers that crashed (only ever called under the lock).
    fn remove_stale_temp_files(&self) {
        let prefix = self.temp_prefix();
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Writes a new file readable by its owner only, durably. Fails if it exists.
pub fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    root_key::write_new_private_file(path, bytes).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::format::{KeyUsages, StoredKey, StoredVersion, random_key};
    use xks_api::XksKeyId;
    use xks_api::types::KeyStatus;

    fn add_key(c: &mut StoreContents, id: &str) -> Result<(), StoreError> {
        c.keys.insert(
            XksKeyId::parse(id).map_err(|e| StoreError::Refused(e.to_string()))?,
            StoredKey {
                status: KeyStatus::Enabled,
                usages: KeyUsages::BOTH,
                created: 0,
                versions: vec![StoredVersion {
                    version: 1,
                    created: 0,
                    material: random_key()?,
                }],
            },
        );
        Ok(())
    }

    #[test]
    fn create_update_read_and_identity_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.store");
        let store = KeyStoreFile::new(&path, RootKey::generate().expect("rng"));
        assert!(matches!(store.read(), Err(StoreError::Missing(_))));
        store.create().expect("create");
        assert!(matches!(store.create(), Err(StoreError::AlreadyExists(_))));
        let id1 = store.identity().expect("stat");
        store.update(|c| add_key(c, "a")).expect("update");
        let id2 = store.identity().expect("stat");
        assert_ne!(id1, id2);
        let c = store.read().expect("read");
        assert_eq!(c.generation, 2);
        assert_eq!(c.keys.len(), 1);
        // A failing change writes nothing.
        let r: Result<(), _> = store.update(|_| Err(StoreError::Refused("no".into())));
        assert!(r.is_err());
        assert_eq!(store.identity().expect("stat"), id2);
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn concurrent_writers_are_serialized() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.store");
        let root_bytes = random_key().expect("rng");
        KeyStoreFile::new(&path, RootKey::from_bytes(root_bytes.clone()))
            .create()
            .expect("create");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                let rb = root_bytes.clone();
                std::thread::spawn(move || {
                    let s = KeyStoreFile::new(&path, RootKey::from_bytes(rb));
                    for i in 0..5 {
                        s.update(|c| add_key(c, &format!("k{t}-{i}")))
                            .expect("update");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        let s = KeyStoreFile::new(&path, RootKey::from_bytes(root_bytes));
        let c = s.read().expect("read");
        assert_eq!(c.keys.len(), 40, "every writer's key is present");
        assert_eq!(c.generation, 41);
    }

    #[test]
    fn backup_and_restore_with_integrity_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.store");
        let root = random_key().expect("rng");
        let store = KeyStoreFile::new(&path, RootKey::from_bytes(root));
        store.create().expect("create");
        store.update(|c| add_key(c, "a")).expect("update");
        let backup = store.backup().expect("backup");
        assert_eq!((backup.generation, backup.keys), (2, 1));
        store.update(|c| add_key(c, "b")).expect("update");
        // Every flipped byte is refused, and nothing is written.
        let before = store.identity().expect("stat");
        for i in [0, 12, 20, 44, backup.bytes.len() - 1] {
            let mut bad = backup.bytes.clone();
            bad[i] ^= 1;
            assert!(store.restore(&bad).is_err(), "byte {i}");
        }
        assert_eq!(store.identity().expect("stat"), before);
        // A backup under another root key is refused.
        let other = KeyStoreFile::new(
            dir.path().join("o.store"),
            RootKey::generate().expect("rng"),
        );
        other.create().expect("create");
        assert!(matches!(
            store.restore(&other.backup().expect("backup").bytes),
            Err(StoreError::WrongRootKey { .. })
        ));
        let report = store.restore(&backup.bytes).expect("restore");
        assert_eq!(report.keys, 1);
        assert_eq!(store.read().expect("read").keys.len(), 1);
    }

    #[test]
    fn reseal_under_a_new_root_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.store");
        let mut store = KeyStoreFile::new(&path, RootKey::generate().expect("rng"));
        store.create().expect("create");
        store.update(|c| add_key(c, "a")).expect("update");
        let new_root = random_key().expect("rng");
        store
            .reseal(RootKey::from_bytes(new_root.clone()))
            .expect("reseal");
        let reopened = KeyStoreFile::new(&path, RootKey::from_bytes(new_root));
        assert_eq!(reopened.read().expect("read").keys.len(), 1);
    }
}
