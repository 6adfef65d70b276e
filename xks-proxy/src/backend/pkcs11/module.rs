//! The loaded PKCS#11 module, shared by every backend of the process that names the same
//! file; its generations, finding the token, and recovery (drop the sessions, reopen one,
//! or finalize and re-initialise the module).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use super::ckr::{ckr_name, describe, is_fatal, rv_of};
use super::config::TokenSelector;
use super::session::{Fail, Inner, Pooled, Step, fail_text, retire};
use super::{Pkcs11Error, lock, write};
use crate::backend::{BackendError, BackendIdentity};

/// How long a failed module re-initialisation is remembered before it is tried again.
const REINIT_BACKOFF: Duration = Duration::from_secs(1);

/// Loaded modules by canonical path: one per process and file, shared by backends.
static MODULES: Mutex<BTreeMap<PathBuf, Weak<Module>>> = Mutex::new(BTreeMap::new());

pub(super) struct Module {
    /// Canonical path (registry key).
    pub(super) key: PathBuf,
    /// Path as configured (what is loaded).
    pub(super) path: PathBuf,
    /// Read-locked by every PKCS#11 call; write-locked to re-initialise.
    pub(super) state: RwLock<ModuleState>,
    pub(super) reinits: AtomicU64,
}

pub(super) struct ModuleState {
    /// `None` after a re-initialisation failed.
    pub(super) ctx: Option<Pkcs11>,
    /// Bumped by every re-initialisation; sessions and handles of older generations are dead.
    pub(super) generation: u64,
    /// The last failed re-initialisation.
    pub(super) failed: Option<(Instant, String)>,
}

impl ModuleState {
    /// The generation whose sessions may still be closed: the current one, if the module is
    /// initialised. (Closing a handle of any other generation could close a newer session
    /// that reuses its number.)
    pub(super) fn live_generation(&self) -> Option<u64> {
        self.ctx.is_some().then_some(self.generation)
    }
}

fn load_module(path: &Path) -> Result<Pkcs11, String> {
    let ctx = Pkcs11::new(path).map_err(|e| e.to_string())?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised by someone else in this process: use it as it is.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(describe(&e)),
    }
}

impl Module {
    pub(super) fn get(path: &Path) -> Result<Arc<Self>, Pkcs11Error> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut registry = lock(&MODULES);
        if let Some(m) = registry.get(&key).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let ctx = load_module(path).map_err(|reason| Pkcs11Error::Module {
            path: path.to_path_buf(),
            reason,
        })?;
        let m = Arc::new(Self {
            key: key.clone(),
            path: path.to_path_buf(),
            state: RwLock::new(ModuleState {
                ctx: Some(ctx),
                generation: 0,
                failed: None,
            }),
            reinits: AtomicU64::new(0),
        });
        registry.insert(key, Arc::downgrade(&m));
        Ok(m)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let mut registry = lock(&MODULES);
        // A new Module for the same file may already be registered (it found this one dead):
        // it uses the initialised library, so it must not be finalized under it.
        let replaced = registry
            .get(&self.key)
            .is_some_and(|w| w.strong_count() > 0);
        if !replaced {
            registry.remove(&self.key);
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(ctx) = state.ctx.take()
            && !replaced
            && let Err(e) = ctx.finalize()
        {
            tracing::debug!(module = %self.path.display(), error = %describe(&e), "C_Finalize failed");
        }
    }
}

pub(super) fn find_slot(ctx: &Pkcs11, token: &TokenSelector) -> Result<Slot, Fail> {
    let not_found = Fail::TokenMissing;
    match token {
        TokenSelector::Label(label) => {
            let want = label.trim_end();
            let mut found = Vec::new();
            for slot in ctx.get_slots_with_initialized_token()? {
                match ctx.get_token_info(slot) {
                    Ok(info) if info.label().trim_end() == want => found.push(slot),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            rv_of(&e),
                            Some(RvError::TokenNotPresent | RvError::TokenNotRecognized)
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match found.as_slice() {
                [slot] => Ok(*slot),
                [] => Err(not_found(format!("no initialised token labelled '{want}'"))),
                many => Err(not_found(format!(
                    "{} tokens are labelled '{want}'; select one by slot id",
                    many.len()
                ))),
            }
        }
        TokenSelector::SlotId(id) => {
            let slot = Slot::try_from(*id)?;
            match ctx.get_token_info(slot) {
                Ok(_) => Ok(slot),
                Err(e) => match rv_of(&e) {
                    Some(RvError::SlotIdInvalid) => Err(not_found(format!("no slot {id}"))),
                    Some(RvError::TokenNotPresent | RvError::TokenNotRecognized) => {
                        Err(not_found(format!("no usable token in slot {id}")))
                    }
                    _ => Err(e.into()),
                },
            }
        }
    }
}

pub(super) fn identity_of(ctx: &Pkcs11, slot: Slot) -> Result<BackendIdentity, CkError> {
    let info = ctx.get_token_info(slot)?;
    Ok(BackendIdentity {
        vendor: info.manufacturer_id().trim().to_owned(),
        model: format!(
            "{} (firmware {})",
            info.model().trim(),
            info.firmware_version()
        ),
    })
}

impl Inner {
    /// Maps a failed PKCS#11 call in `op` to the next step.
    pub(super) fn classify<T>(&self, ctx: &Pkcs11, err: CkError, pooled: Pooled) -> Step<T> {
        let generation = pooled.generation;
        let what = describe(&err);
        if let CkError::Pkcs11(rv, Function::Decrypt) = &err
            && self.caps.is_bad_tag(&ckr_name(*rv))
        {
            // The usual meaning is a tag that did not verify. Only a session that stopped
            // answering makes it a device failure instead.
            return match pooled.session.get_session_info() {
                Err(probe) if rv_of(&probe).is_some_and(is_fatal) => {
                    retire(pooled);
                    Step::Recover {
                        generation,
                        reason: format!(
                            "{what}, and the session stopped answering ({})",
                            describe(&probe)
                        ),
                    }
                }
                _ => {
                    self.put_back(pooled);
                    Step::Done(Err(BackendError::InvalidCiphertext))
                }
            };
        }
        match rv_of(&err) {
            Some(RvError::KeyFunctionNotPermitted) => {
                self.put_back(pooled);
                Step::Done(Err(BackendError::UsageNotPermitted(format!(
                    "the HSM does not allow this operation with the key ({what})"
                ))))
            }
            Some(RvError::KeyTypeInconsistent) => {
                self.put_back(pooled);
                Step::Done(Err(BackendError::UsageNotPermitted(format!(
                    "the key cannot do AES-GCM ({what})"
                ))))
            }
            Some(RvError::UserNotLoggedIn) => self.relogin(pooled),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid) => {
                self.put_back(pooled);
                Step::Relookup
            }
            Some(rv) if is_fatal(rv) => {
                retire(pooled);
                Step::Recover {
                    generation,
                    reason: what,
                }
            }
            Some(RvError::GeneralError) => {
                let probe = match pooled.session.get_session_info() {
                    Err(e) => Err(describe(&e)),
                    Ok(_) => self.probe_token(ctx, generation),
                };
                if let Err(p) = probe {
                    retire(pooled);
                    Step::Recover {
                        generation,
                        reason: format!("{what}; probe: {p}"),
                    }
                } else {
                    drop(pooled);
                    Step::Done(Err(BackendError::Failure(what)))
                }
            }
            _ => {
                // The session may be left with an operation active: close it, open another.
                drop(pooled);
                Step::Done(Err(BackendError::Failure(what)))
            }
        }
    }

    /// `C_GetTokenInfo` on the token's slot.
    pub(super) fn probe_token(&self, ctx: &Pkcs11, generation: u64) -> Result<(), String> {
        let slot = self.slot(ctx, generation).map_err(|f| fail_text(&f))?;
        ctx.get_token_info(slot).map(drop).map_err(|e| describe(&e))
    }

    /// Opens a session in the current generation and checks the token answers.
    fn open_and_probe(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, String> {
        let p = self
            .open_session(ctx, generation)
            .map_err(|f| fail_text(&f))?;
        let checked = self
            .slot(ctx, generation)
            .map_err(|f| fail_text(&f))
            .and_then(|slot| identity_of(ctx, slot).map_err(|e| describe(&e)));
        match checked {
            Ok(id) => {
                *lock(&self.identity) = id;
                Ok(p)
            }
            Err(e) => {
                retire(p);
                Err(e)
            }
        }
    }

    /// Drops all sessions and reopens one; with `force_reinit`, or if that fails, finalizes
    /// and re-initialises the module. Nothing is done if the module's generation or this
    /// backend's recovery epoch moved past `seen` meanwhile (another call already recovered).
    pub(super) fn recover(
        &self,
        seen: (u64, u64),
        force_reinit: bool,
        reason: &str,
    ) -> Result<(), BackendError> {
        let mut state = write(&self.module.state);
        if state.generation != seen.0 || self.epoch.load(Ordering::Acquire) != seen.1 {
            return Ok(());
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // No call runs while the write lock is held, so every session of this backend is idle.
        let idle = std::mem::take(&mut *lock(&self.idle));
        for p in idle {
            if state.live_generation() == Some(p.generation) {
                retire(p);
            } else {
                std::mem::forget(p.session);
            }
        }
        self.end_copy_holder(state.live_generation());
        lock(&self.handles).clear();
        *lock(&self.slot) = None;

        if !force_reinit && let Some(ctx) = state.ctx.as_ref() {
            match self.open_and_probe(ctx, state.generation) {
                Ok(p) => {
                    self.put_back(p);
                    tracing::warn!(key_store = %self.name, reason,
                        "PKCS#11 failure: sessions dropped and reopened");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(key_store = %self.name, reason, error = %e,
                        "PKCS#11 failure: no session can be opened; re-initialising the module");
                }
            }
        }
        if state.ctx.is_none()
            && let Some((at, e)) = &state.failed
            && at.elapsed() < REINIT_BACKOFF
        {
            return Err(BackendError::Failure(format!(
                "the PKCS#11 module is unavailable: {e}"
            )));
        }
        if let Some(ctx) = state.ctx.take()
            && let Err(e) = ctx.finalize()
        {
            tracing::debug!(key_store = %self.name, error = %describe(&e), "C_Finalize failed");
        }
        // Whatever happens next, sessions and handles of the old generation are dead.
        state.generation += 1;
        let ctx = match load_module(&self.module.path) {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::error!(key_store = %self.name, module = %self.module.path.display(),
                    error = %e, "the PKCS#11 module could not be re-initialised");
                state.failed = Some((Instant::now(), e.clone()));
                return Err(BackendError::Failure(format!(
                    "the PKCS#11 module could not be re-initialised: {e}"
                )));
            }
        };
        state.failed = None;
        self.module.reinits.fetch_add(1, Ordering::Relaxed);
        let opened = self.open_and_probe(&ctx, state.generation);
        state.ctx = Some(ctx);
        match opened {
            Ok(p) => {
                self.put_back(p);
                tracing::warn!(key_store = %self.name, reason, "PKCS#11 module re-initialised");
                Ok(())
            }
            Err(e) => {
                tracing::error!(key_store = %self.name, reason, error = %e,
                    "the token is unusable after re-initialising the PKCS#11 module");
                Err(BackendError::Failure(format!(
                    "the {} is unusable after re-initialising the PKCS#11 module: {e}",
                    self.token
                )))
            }
        }
    }
}
