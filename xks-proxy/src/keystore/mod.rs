//! The embedded key store: AES-256 keys with versions, sealed under a root key, in one file.
//!
//! Owns the on-disk format ([`format`]), sealing ([`seal`]), crash-safe writes and writer
//! serialization ([`file`]). The store never holds the root key beside the keys: the root
//! key comes from its own file or an environment variable (see [`RootKeySource`]).
//!
//! Invariants:
//! - a write is atomic and durable: readers see the old or the new store, never a mix, and a
//!   write whose command reported success survives a crash (temp file, fsync, rename, fsync
//!   of the directory);
//! - writers (the CLI, several CLIs, a running server) are serialized by an exclusive lock on
//!   a lock file beside the store;
//! - key material lives in `Zeroizing` buffers and is never printed.

pub mod failpoint;
pub mod file;
pub mod format;
pub mod seal;

pub use file::{Backup, KeyStoreFile, StoreError};
pub use format::{KeyUsages, StoreContents, StoredKey, StoredVersion};
pub use seal::{RootKey, RootKeySource};
