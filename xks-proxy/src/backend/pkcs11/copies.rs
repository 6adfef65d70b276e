//! Session copies of token keys ([`Pkcs11Config::session_key_copies`]).
//!
//! Encrypt and Decrypt use a session-object copy of the key (`C_CopyObject` with
//! `CKA_TOKEN = false`) instead of the token object. Why: SoftHSMv2 re-checks a token object's
//! file on every use (an `open`, an `fcntl` lock and a read per call), while a session object
//! lives in memory; on this project's test machine that is ~20 µs against ~5 µs per
//! `C_EncryptInit` + `C_Encrypt`, and most of the PKCS#11 store's latency tail.
//!
//! The rules, each kept by one function here or in `keys.rs`:
//! - **One holder.** Every copy lives in one session of this backend, the holder, opened for
//!   that purpose (so a backend uses `pool_size + 1` sessions). Closing the holder destroys
//!   all copies at once. The proxy never destroys a single copy: `C_DestroyObject` on a handle
//!   number that has gone stale could name another object, even a token key.
//! - **A copy is used only while it is known to be the key.** It is made when the key's facts
//!   are read from the token object, and used only while those facts are fresh (within
//!   `key_facts_ttl`) and its holder is the current one (`serial`). So a change an HSM
//!   administrator makes to the token key (usage flags, deletion) reaches Encrypt and Decrypt
//!   within `key_facts_ttl`, as it reaches the proxy's own usage check.
//! - **Anything that shows a copy may be wrong ends the holder**: the token key's usages
//!   differ from the copy's, its handle turned invalid (deleted), a copy handle failed, a
//!   recovery, the backend dropped. Copies are then made again from the token, one per key on
//!   its next facts read; until then operations use the token object.
//! - **Copies are no weaker than the key.** `C_CopyObject` can only tighten `CKA_SENSITIVE`
//!   and `CKA_EXTRACTABLE`, and the copy is private to this process's logged-in sessions.
//! - **A token that will not copy** is used directly: a key whose `CKA_COPYABLE` is false
//!   (`CKR_ACTION_PROHIBITED`, or a template error) is marked and never asked again in this
//!   module generation; `CKR_FUNCTION_NOT_SUPPORTED` turns copies off for the backend.
//!
//! The health check always uses the token object: it is there to show the token works.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::ckr::{describe, rv_of};
use super::lock;
use super::session::{Inner, Pooled, fail_text, retire};
use crate::keystore::KeyUsages;

/// After the holder could not be opened, how long before trying again.
const HOLDER_RETRY: Duration = Duration::from_secs(10);

/// What a cached key knows about its session copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyCopy {
    /// None made yet (or the last one belonged to a holder that is gone).
    None,
    /// A copy in the holder with this serial, made when the key allowed `usages`.
    Made {
        handle: ObjectHandle,
        holder: u64,
        usages: KeyUsages,
    },
    /// The token refused to copy this key: use the token object.
    Refused,
}

/// The session that holds the copies.
struct Holder {
    serial: u64,
    generation: u64,
    session: Session,
}

/// The copies' holder and switches of one backend.
pub(super) struct KeyCopies {
    enabled: AtomicBool,
    /// Serial of the current holder; 0 when there is none.
    current: AtomicU64,
    /// The module generation the current holder was opened in.
    current_generation: AtomicU64,
    next_serial: AtomicU64,
    holder: Mutex<Option<Holder>>,
    /// When opening a holder last failed.
    open_failed_at: Mutex<Option<Instant>>,
}

/// What [`Inner::copy_key`] got.
pub(super) enum CopyOutcome {
    /// A copy, in the holder with this serial.
    Made(ObjectHandle, u64),
    /// The token will not copy this key.
    Refused,
    /// Not now (no holder, or a failure that says nothing about the key).
    Skipped,
}

impl KeyCopies {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled: AtomicBool::new(enabled),
            current: AtomicU64::new(0),
            current_generation: AtomicU64::new(0),
            next_serial: AtomicU64::new(1),
            holder: Mutex::new(None),
            open_failed_at: Mutex::new(None),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The copy's handle if its holder is the current one.
    pub(super) fn usable(&self, copy: &KeyCopy) -> Option<ObjectHandle> {
        match *copy {
            KeyCopy::Made { handle, holder, .. }
                if holder == self.current.load(Ordering::Acquire) =>
            {
                Some(handle)
            }
            _ => None,
        }
    }

    /// Whether a holder should be opened now for `generation` (two atomic loads when there
    /// is one).
    fn wants_holder(&self, generation: u64) -> bool {
        if !self.enabled() {
            return false;
        }
        if self.current.load(Ordering::Acquire) != 0 {
            return self.current_generation.load(Ordering::Acquire) != generation;
        }
        lock(&self.open_failed_at).is_none_or(|at| at.elapsed() >= HOLDER_RETRY)
    }

    /// The current holder's serial (0: none).
    pub(super) fn current_holder(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Opens the holder if copies are on and there is none for `generation`. Called by the
    /// retry loop before each call, where the module is at hand (the caller holds its state
    /// lock in `generation`); cheap when there is nothing to do.
    pub(super) fn ensure_copy_holder(&self, ctx: &Pkcs11, generation: u64) {
        if !self.copies.wants_holder(generation) {
            return;
        }
        let mut holder = lock(&self.copies.holder);
        if holder.as_ref().is_some_and(|h| h.generation == generation) {
            return;
        }
        if let Some(old) = holder.take() {
            // Opened before a re-initialisation: its handle means nothing now.
            std::mem::forget(old.session);
        }
        match self.open_session(ctx, generation) {
            Ok(p) => {
                let serial = self.copies.next_serial.fetch_add(1, Ordering::Relaxed);
                *holder = Some(Holder {
                    serial,
                    generation,
                    session: p.session,
                });
                self.copies
                    .current_generation
                    .store(generation, Ordering::Release);
                self.copies.current.store(serial, Ordering::Release);
                *lock(&self.copies.open_failed_at) = None;
            }
            Err(f) => {
                self.copies.current.store(0, Ordering::Release);
                *lock(&self.copies.open_failed_at) = Some(Instant::now());
                tracing::warn!(key_store = %self.name, error = %fail_text(&f),
                    "cannot open the session that holds key copies; using token objects");
            }
        }
    }

    /// Copies the token key `key` into the holder. The caller holds the module's state lock
    /// in the holder's generation.
    pub(super) fn copy_key(&self, key: ObjectHandle) -> CopyOutcome {
        let holder = lock(&self.copies.holder);
        let Some(h) = holder.as_ref() else {
            return CopyOutcome::Skipped;
        };
        if h.serial != self.copies.current_holder() {
            return CopyOutcome::Skipped;
        }
        match h.session.copy_object(key, &[Attribute::Token(false)]) {
            Ok(copy) => CopyOutcome::Made(copy, h.serial),
            Err(e) => match rv_of(&e) {
                Some(
                    RvError::ActionProhibited
                    | RvError::AttributeReadOnly
                    | RvError::AttributeTypeInvalid
                    | RvError::AttributeValueInvalid
                    | RvError::TemplateInconsistent
                    | RvError::TemplateIncomplete,
                ) => {
                    tracing::debug!(key_store = %self.name, error = %describe(&e),
                        "the token will not copy this key; using the token object");
                    CopyOutcome::Refused
                }
                Some(RvError::FunctionNotSupported) => {
                    self.copies.enabled.store(false, Ordering::Relaxed);
                    tracing::info!(key_store = %self.name,
                        "the PKCS#11 module has no C_CopyObject; using token objects");
                    CopyOutcome::Skipped
                }
                _ => {
                    tracing::warn!(key_store = %self.name, error = %describe(&e),
                        "copying a key into a session object failed; dropping all copies");
                    let generation = h.generation;
                    drop(holder);
                    self.end_copy_holder(Some(generation));
                    CopyOutcome::Skipped
                }
            },
        }
    }

    /// Ends the holder, which destroys every copy. The caller holds the module's state lock;
    /// `live` is its generation if the module is initialised. A holder of another generation
    /// is only forgotten: closing a dead handle could close a newer session that reuses its
    /// number.
    pub(super) fn end_copy_holder(&self, live: Option<u64>) {
        self.copies.current.store(0, Ordering::Release);
        let Some(old) = lock(&self.copies.holder).take() else {
            return;
        };
        if live == Some(old.generation) {
            retire(Pooled {
                session: old.session,
                generation: old.generation,
            });
        } else {
            std::mem::forget(old.session);
        }
    }
}
