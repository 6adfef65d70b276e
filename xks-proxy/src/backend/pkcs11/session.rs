//! The session pool and where PKCS#11 calls run: sessions tagged with their module
//! generation, logins, [`InlineCalls`] (runtime worker or blocking pool), and the retry loop
//! every call goes through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ckr::{describe, is_fatal, is_pin_refusal, rv_of};
use super::config::{HsmCapabilities, TokenSelector};
use super::copies::KeyCopies;
use super::keys::CachedKey;
use super::module::{Module, find_slot};
use super::{lock, read};
use crate::backend::{BackendError, BackendIdentity};

/// A session of the pool, with the module generation it was opened in.
pub(super) struct Pooled {
    pub(super) session: Session,
    pub(super) generation: u64,
}

/// Why a blocking operation stopped.
pub(super) enum Fail {
    /// A PKCS#11 call failed; classified by [`Inner::classify`].
    Ck(CkError),
    /// A final answer for the caller.
    Answer(BackendError),
    /// A key lookup found nothing in a session that is not logged in.
    NotLoggedIn,
    /// The token is not (or no longer) where the selector says.
    TokenMissing(String),
}

impl From<CkError> for Fail {
    fn from(e: CkError) -> Self {
        Self::Ck(e)
    }
}

/// What the retry loop does next.
pub(super) enum Step<T> {
    Done(Result<T, BackendError>),
    Relogin,
    Relookup,
    Recover { generation: u64, reason: String },
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) module: Arc<Module>,
    pub(super) token: TokenSelector,
    pub(super) pin: SecretString,
    pub(super) pool_size: usize,
    pub(super) session_wait: Duration,
    pub(super) caps: HsmCapabilities,
    pub(super) health_key_label: String,
    pub(super) key_facts_ttl: Duration,
    /// The slot of the token, resolved in a module generation.
    pub(super) slot: Mutex<Option<(u64, Slot)>>,
    pub(super) idle: Mutex<Vec<Pooled>>,
    pub(super) permits: Arc<Semaphore>,
    /// Key handles (and the facts last read from them, and their copies) by label.
    pub(super) handles: Mutex<HashMap<String, CachedKey>>,
    /// The session copies of keys and the session that holds them.
    pub(super) copies: KeyCopies,
    pub(super) identity: Mutex<BackendIdentity>,
    /// Set when the token refused the PIN: no further login attempts.
    pub(super) login_refused: Mutex<Option<String>>,
    /// Bumped by every recovery of this backend, so that callers that failed together
    /// recover once.
    pub(super) epoch: AtomicU64,
    /// Which calls may run on a runtime worker.
    pub(super) inline: InlineCalls,
}

/// Where a PKCS#11 call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// On the awaiting runtime worker when [`InlineCalls`] allows it, else the blocking pool.
    InlineIfSafe,
    /// Always on the blocking pool (health checks: their deadline must be able to fire).
    BlockingPool,
}

/// Decides which key operations run inline, on the runtime worker that awaits them, under
/// two guards that keep a hung or slow HSM from stalling the proxy:
/// - at most `workers - 1` calls run inline at once (none on a one-worker or current-thread
///   runtime), so at least one worker never waits on the HSM: health requests are answered,
///   deadlines fire and the calls sent to the blocking pool time out as they should;
/// - an inline call that took longer than [`SLOW_INLINE_CALL`] sends every call to the
///   blocking pool for [`INLINE_COOL_DOWN`], so a token that became slow is not waited on
///   inline again.
///
/// A call that finds every inline slot taken waits for one, without blocking its worker, for
/// at most [`INLINE_SLOT_WAIT`], and only then goes to the blocking pool. On a fast HSM a
/// slot frees within tens of microseconds, and the released slot wakes the waiting task on
/// the worker that released it: cheaper than a hand-off to a blocking thread (two thread
/// wake-ups, each of which may wait for a CPU). Measured: about one call in twenty found the
/// slot taken at 1,800 Encrypts/s on two workers, enough to set the p99.
///
/// The price: an inline call cannot be cut short by the proxy's backend deadline (the
/// answer comes when the HSM returns), and it holds its worker meanwhile. Both are bounded
/// by the guards above.
#[derive(Debug)]
pub(super) struct InlineCalls {
    /// [`Pkcs11Config::inline_calls`].
    enabled: bool,
    /// `workers - 1` slots, made on first use in a multi-thread runtime (`None`: one worker,
    /// nothing runs inline).
    slots: OnceLock<Option<Semaphore>>,
    /// Milliseconds since `started` before which nothing runs inline.
    suspended_until_ms: AtomicU64,
    pub(super) started: Instant,
    /// Calls that ran inline, and calls that went to the blocking pool.
    pub(super) ran_inline: AtomicU64,
    pub(super) ran_in_pool: AtomicU64,
}

/// An inline call slower than this suspends inline calls (SoftHSMv2 answers in ~0.1 ms).
const SLOW_INLINE_CALL: Duration = Duration::from_millis(20);
/// How long inline calls stay suspended after a slow one.
const INLINE_COOL_DOWN: Duration = Duration::from_secs(10);
/// How long a call waits for an inline slot before it goes to the blocking pool.
const INLINE_SLOT_WAIT: Duration = Duration::from_millis(2);

/// A slot of [`InlineCalls`], given back on drop.
pub(super) struct InlineSlot<'a> {
    calls: &'a InlineCalls,
    _permit: SemaphorePermit<'a>,
    since: Instant,
}

impl InlineCalls {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            slots: OnceLock::new(),
            suspended_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            ran_inline: AtomicU64::new(0),
            ran_in_pool: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot when this call may run inline: at once, or after a short wait for one.
    pub(super) async fn enter(&self) -> Option<InlineSlot<'_>> {
        if !self.enabled {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        let slots = self
            .slots
            .get_or_init(|| {
                let limit = handle.metrics().num_workers().saturating_sub(1);
                (limit > 0).then(|| Semaphore::new(limit))
            })
            .as_ref()?;
        if self.now_ms() < self.suspended_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let permit = match slots.try_acquire() {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(INLINE_SLOT_WAIT, slots.acquire())
                .await
                .ok()?
                .ok()?,
        };
        self.ran_inline.fetch_add(1, Ordering::Relaxed);
        Some(InlineSlot {
            calls: self,
            _permit: permit,
            since: Instant::now(),
        })
    }
}

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        let took = self.since.elapsed();
        if took > SLOW_INLINE_CALL {
            let until = self.calls.now_ms()
                + u64::try_from(INLINE_COOL_DOWN.as_millis()).unwrap_or(u64::MAX);
            self.calls
                .suspended_until_ms
                .fetch_max(until, Ordering::Relaxed);
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "a PKCS#11 call was slow: calls go to the blocking pool for the next {} s",
                INLINE_COOL_DOWN.as_secs()
            );
        }
    }
}

pub(super) fn logged_in(session: &Session) -> Result<bool, CkError> {
    Ok(matches!(
        session.get_session_info()?.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

/// Gives up a session that may be dead: closed if it still answers, else forgotten (closing
/// a dead handle could close a newer session that reuses its number).
pub(super) fn retire(p: Pooled) {
    if p.session.get_session_info().is_ok() {
        drop(p.session);
    } else {
        std::mem::forget(p.session);
    }
}

impl Inner {
    pub(super) fn put_back(&self, p: Pooled) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.pool_size {
            idle.push(p);
        }
    }

    pub(super) fn slot(&self, ctx: &Pkcs11, generation: u64) -> Result<Slot, Fail> {
        if let Some((g, s)) = *lock(&self.slot)
            && g == generation
        {
            return Ok(s);
        }
        let s = find_slot(ctx, &self.token)?;
        *lock(&self.slot) = Some((generation, s));
        Ok(s)
    }

    pub(super) fn login(&self, session: &Session) -> Result<(), Fail> {
        if let Some(why) = lock(&self.login_refused).as_ref() {
            return Err(Fail::Answer(BackendError::Failure(format!(
                "the token refused the PIN earlier ({why}); not trying again so as not to lock it; \
                 fix the PIN and reload"
            ))));
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => {
                if rv_of(&e).is_some_and(is_pin_refusal) {
                    let why = describe(&e);
                    tracing::error!(key_store = %self.name, token = %self.token, error = %why,
                        "the token refused the PIN; no further login attempts");
                    *lock(&self.login_refused) = Some(why);
                }
                Err(e.into())
            }
        }
    }

    pub(super) fn open_session(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, Fail> {
        let slot = self.slot(ctx, generation)?;
        let session = ctx.open_rw_session(slot)?;
        self.login(&session)?;
        Ok(Pooled {
            session,
            generation,
        })
    }

    fn take_session(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, Fail> {
        loop {
            let next = lock(&self.idle).pop();
            match next {
                Some(p) if p.generation == generation => return Ok(p),
                // Opened before a re-initialisation: its handle means nothing now.
                Some(p) => std::mem::forget(p.session),
                None => return self.open_session(ctx, generation),
            }
        }
    }

    /// Runs `op` with a session, with the retries and recoveries described in the module docs.
    /// Blocking: runs on the blocking pool.
    pub(super) fn call<T>(
        &self,
        label: Option<&str>,
        mut op: impl FnMut(&Self, &Session, u64) -> Result<T, Fail>,
    ) -> Result<T, BackendError> {
        let (mut relogins, mut relookups, mut recoveries) = (0u8, 0u8, 0u8);
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            match self.attempt(&mut op) {
                Step::Done(r) => return r,
                Step::Relogin => {
                    relogins += 1;
                    if relogins > 1 {
                        return Err(BackendError::Failure(
                            "the token reports CKR_USER_NOT_LOGGED_IN right after a login".into(),
                        ));
                    }
                }
                Step::Relookup => {
                    relookups += 1;
                    let had_copy = {
                        let has_copy = |c: &CachedKey| self.copies.usable(&c.copy).is_some();
                        let mut handles = lock(&self.handles);
                        match label {
                            Some(l) => handles.remove(l).is_some_and(|c| has_copy(&c)),
                            // A drain dropped early still empties the map.
                            None => handles.drain().any(|(_, c)| has_copy(&c)),
                        }
                    };
                    if had_copy {
                        // The token key may be gone (its copy must not outlive it), or the
                        // copy's handle failed: either way no copy is trusted any more.
                        let state = read(&self.module.state);
                        self.end_copy_holder(state.live_generation());
                    }
                    if relookups > 1 {
                        return Err(BackendError::Failure(
                            "the key handle is invalid right after a fresh lookup \
                             (CKR_OBJECT_HANDLE_INVALID)"
                                .into(),
                        ));
                    }
                }
                Step::Recover { generation, reason } => {
                    recoveries += 1;
                    if recoveries > 2 {
                        return Err(BackendError::Failure(format!(
                            "the PKCS#11 token still fails after re-initialising the module: {reason}"
                        )));
                    }
                    self.recover((generation, epoch), recoveries > 1, &reason)?;
                }
            }
        }
    }

    fn attempt<T>(&self, op: &mut impl FnMut(&Self, &Session, u64) -> Result<T, Fail>) -> Step<T> {
        let state = read(&self.module.state);
        let generation = state.generation;
        let Some(ctx) = state.ctx.as_ref() else {
            let reason = state
                .failed
                .as_ref()
                .map_or_else(|| "module not initialised".to_owned(), |(_, e)| e.clone());
            return Step::Recover { generation, reason };
        };
        self.ensure_copy_holder(ctx, generation);
        let pooled = match self.take_session(ctx, generation) {
            Ok(p) => p,
            Err(fail) => return self.lease_failure(fail, generation),
        };
        match op(self, &pooled.session, generation) {
            Ok(v) => {
                self.put_back(pooled);
                Step::Done(Ok(v))
            }
            Err(Fail::Answer(BackendError::KeyNotFound(key))) => {
                // A search also comes back empty when the token was replaced under this
                // process (SoftHSM: the old token's objects vanish and C_GetTokenInfo fails):
                // only a token that still answers makes it a missing key.
                match self.probe_token(ctx, generation) {
                    Ok(()) => {
                        self.put_back(pooled);
                        Step::Done(Err(BackendError::KeyNotFound(key)))
                    }
                    Err(reason) => {
                        retire(pooled);
                        Step::Recover {
                            generation,
                            reason: format!(
                                "key {key} not found and the token does not answer ({reason})"
                            ),
                        }
                    }
                }
            }
            Err(Fail::Answer(e)) => {
                self.put_back(pooled);
                Step::Done(Err(e))
            }
            Err(Fail::NotLoggedIn) => self.relogin(pooled),
            Err(Fail::Ck(err)) => self.classify(ctx, err, pooled),
            Err(fail @ Fail::TokenMissing(_)) => {
                self.put_back(pooled);
                self.lease_failure(fail, generation)
            }
        }
    }

    pub(super) fn relogin<T>(&self, pooled: Pooled) -> Step<T> {
        match self.login(&pooled.session) {
            Ok(()) => {
                self.put_back(pooled);
                Step::Relogin
            }
            Err(fail) => {
                let generation = pooled.generation;
                retire(pooled);
                self.lease_failure(fail, generation)
            }
        }
    }

    /// No session could be had (opening or logging in failed).
    fn lease_failure<T>(&self, fail: Fail, generation: u64) -> Step<T> {
        match fail {
            Fail::TokenMissing(reason) => Step::Recover { generation, reason },
            Fail::Ck(e) if rv_of(&e).is_some_and(is_fatal) => Step::Recover {
                generation,
                reason: describe(&e),
            },
            Fail::Answer(e) => Step::Done(Err(e)),
            other => Step::Done(Err(BackendError::Failure(format!(
                "cannot open a PKCS#11 session on the {}: {}",
                self.token,
                fail_text(&other)
            )))),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        let state = read(&self.module.state);
        // Closing the holder destroys this backend's key copies in the HSM.
        self.end_copy_holder(state.live_generation());
        for p in idle {
            if state.live_generation() == Some(p.generation) {
                drop(p.session);
            } else {
                std::mem::forget(p.session);
            }
        }
    }
}

pub(super) fn fail_text(f: &Fail) -> String {
    match f {
        Fail::Ck(e) => describe(e),
        Fail::Answer(e) => e.to_string(),
        Fail::TokenMissing(m) => m.clone(),
        Fail::NotLoggedIn => "the session is not logged in".into(),
    }
}
