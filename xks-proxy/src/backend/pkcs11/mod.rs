//! The PKCS#11 backend: AES-GCM inside an HSM, through its PKCS#11 module.
//!
//! Keys live in one token and are found by label: the XKS key id is the `CKA_LABEL` of a
//! `CKO_SECRET_KEY` token object. The backend does single-part `CKM_AES_GCM` with the AAD the
//! proxy built, a 128-bit tag, and the IV strategy the HSM needs ([`HsmCapabilities`]).
//!
//! # Threads, sessions and deadlines
//!
//! A call first waits at most [`Pkcs11Config::session_wait`] for one of
//! [`Pkcs11Config::pool_size`] permits (a `tokio::sync::Semaphore`); when none frees up in time
//! it fails with [`BackendError::Overloaded`], which the proxy answers with a 429
//! `ThrottlingException`. The permit and the session move into the blocking task, which gives
//! the session back to the pool and drops the permit when the PKCS#11 call returns, even when
//! the caller has already given up (the proxy's deadline answers 503): a slow HSM call can
//! hold its session only for as long as it really runs. Where the call then runs is decided
//! by [`InlineCalls`]: key operations run on the runtime worker that awaits them while that
//! is safe (a hand-off to the blocking pool costs two thread wake-ups, and on a busy machine
//! the woken thread waits for a CPU: that wait was this backend's latency tail), everything
//! else, and a key operation that waited [`InlineCalls`]'s 2 ms for a free inline slot in
//! vain, on tokio's blocking pool (`spawn_blocking`).
//! Sessions are opened lazily (one at
//! [`Pkcs11Backend::open`], to check the PIN) and logged in as USER.
//!
//! Key handles are cached by label (and re-resolved when the token says a handle is invalid),
//! and so are the facts read from a key for [`Pkcs11Config::key_facts_ttl`]: GetKeyMetadata,
//! and the usage check the proxy makes before every Encrypt and Decrypt, then need no
//! PKCS#11 call and no blocking thread. On SoftHSMv2 that halves the calls of an Encrypt and
//! removes its most expensive one (`C_GetAttributeValue` of five attributes).
//!
//! # Failures
//!
//! - A failed tag check during decrypt (any CKR in [`HsmCapabilities::bad_tag_errors`]; SoftHSM
//!   says `CKR_GENERAL_ERROR`) is [`BackendError::InvalidCiphertext`], after a
//!   `C_GetSessionInfo` shows the session still answers; the session goes back to the pool.
//!   Tampered input never resets anything.
//! - `CKR_KEY_FUNCTION_NOT_PERMITTED` (and `CKR_KEY_TYPE_INCONSISTENT`, a key that cannot do
//!   AES-GCM) is [`BackendError::UsageNotPermitted`].
//! - `CKR_USER_NOT_LOGGED_IN`, or a key lookup that finds nothing in a session that is not
//!   logged in: log in again and retry once. A PIN the token refuses (`CKR_PIN_INCORRECT`,
//!   `CKR_PIN_LOCKED`, ...) is never tried again by this backend, so that it cannot lock the
//!   user PIN by retrying.
//! - `CKR_OBJECT_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`: the cached key handle is dropped
//!   and the key looked up again, once.
//! - A lookup that finds no key is [`BackendError::KeyNotFound`] only if the token still
//!   answers `C_GetTokenInfo`; otherwise it is a recovery as below. (A SoftHSM token deleted
//!   and re-created under a running process looks exactly like that: searches come back empty
//!   and `C_GetTokenInfo` fails with `CKR_GENERAL_ERROR` until the module is re-initialised.)
//! - `CKR_DEVICE_ERROR`, `CKR_DEVICE_REMOVED`, `CKR_SESSION_HANDLE_INVALID`,
//!   `CKR_SESSION_CLOSED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_TOKEN_NOT_RECOGNIZED`,
//!   `CKR_SLOT_ID_INVALID`, `CKR_CRYPTOKI_NOT_INITIALIZED`, or a `CKR_GENERAL_ERROR` outside
//!   decrypt that a probe (`C_GetSessionInfo`, `C_GetTokenInfo`) confirms: recovery. First all
//!   sessions are dropped and one is reopened (the slot is looked up again, SoftHSM renumbers
//!   slots); if that fails, or the retried call fails the same way again, the module is
//!   finalized, loaded again and re-initialised, without a process restart
//!   ([`Pkcs11Backend::reinitializations`] counts these). The failed call is retried after
//!   each step, at most twice.
//! - Anything else is [`BackendError::Failure`] naming the CKR and the function, and the
//!   session is closed rather than reused.
//!
//! # One module per process
//!
//! A PKCS#11 module is initialised once per process, so every backend that names the same
//! module file shares one loaded module (a config reload builds new backends while the old
//! ones still serve; two key stores may use one HSM). Sessions and cached key handles are
//! tagged with the module's generation, so a re-initialisation by one backend makes every
//! other backend drop its old sessions instead of using stale handles. The module is
//! finalized when the last backend using it is dropped.
//!
//! # What runs where
//!
//! The tests drive SoftHSMv2 (proxy-supplied IVs, tag appended). The output shapes of the
//! HSMs that make their own IV (Luna: `ciphertext || tag || IV`; CloudHSM and nShield: the IV
//! written into a 12-byte zero buffer) are parsed by pure functions that are unit-tested on
//! byte strings, but have not run against those HSMs.

mod admin;
mod ckr;
mod config;
mod copies;
mod gcm;
mod keys;
mod module;
mod session;

#[cfg(test)]
mod tests;

pub use admin::Pkcs11KeyInfo;
pub use config::{
    DEFAULT_HEALTH_KEY_LABEL, DEFAULT_KEY_FACTS_TTL, DEFAULT_POOL_SIZE, DEFAULT_SESSION_WAIT,
    HsmCapabilities, IvStrategy, Pkcs11Config, TokenSelector,
};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki::session::Session;
use tokio::sync::Semaphore;
use xks_api::XksKeyId;
use xks_api::types::HealthStatus;
use zeroize::Zeroizing;

use crate::backend::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};
use admin::call_failed;
use gcm::GENERATED_IV_BYTES;
use keys::KEY_VERSION;
use module::{Module, find_slot, identity_of};
use session::{Fail, InlineCalls, Inner, Placement, Pooled, fail_text};

const HEALTH_AAD: &[u8] = b"xks-proxy health check";

/// Errors of [`Pkcs11Backend::open`] and of the admin helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The configuration cannot work.
    #[error("invalid PKCS#11 configuration: {0}")]
    Config(String),
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    Module {
        /// The module path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No (single) token matches the selector.
    #[error("{0}")]
    TokenNotFound(String),
    /// The token refused the user PIN.
    #[error("login to the {token} failed: {reason}")]
    Login {
        /// The token.
        token: String,
        /// The CKR name.
        reason: String,
    },
    /// `create_key` / `import_key` with a label a secret key in the token already has.
    #[error("a secret key labelled '{0}' already exists in the token")]
    LabelExists(String),
    /// The label is not a valid XKS key id (1-128 of `A-Z a-z 0-9 - . _`).
    #[error("'{label}' cannot be a key label: {reason}")]
    InvalidLabel {
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
    /// Imported key material has the wrong size.
    #[error("key material is {0} bytes; an XKS key is AES-256 (32 bytes)")]
    MaterialSize(usize),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed: {reason}")]
    Call {
        /// What was being done.
        op: String,
        /// The CKR name and function.
        reason: String,
    },
    /// The module is not usable right now (a re-initialisation failed).
    #[error("the PKCS#11 module is unavailable: {0}")]
    Unavailable(String),
}

// Lock helpers for every file of the backend: a lock poisoned by a panicking thread is
// taken anyway.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// A [`KeyBackend`] over a PKCS#11 module.
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("name", &self.inner.name)
            .field("module", &self.inner.module.path)
            .field("token", &self.inner.token)
            .field("pool_size", &self.inner.pool_size)
            .field("idle_sessions", &self.idle_sessions())
            .field("iv", &self.inner.caps.iv)
            .field("reinitializations", &self.reinitializations())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads the module (or reuses it if another backend of this process loaded the same
    /// file), initialises it (`CKF_OS_LOCKING_OK`), finds the token, and opens and logs in one
    /// session to check the PIN; the other sessions of the pool open when needed.
    ///
    /// Blocking (it loads a library and talks to the HSM): call it at start or from a blocking
    /// context. `name` is the key store's name, for logs.
    pub fn open(name: &str, cfg: Pkcs11Config) -> Result<Self, Pkcs11Error> {
        cfg.validate()?;
        let module = Module::get(&cfg.module)?;
        let inner = Inner {
            name: name.to_owned(),
            module,
            token: cfg.token,
            pin: cfg.pin,
            pool_size: cfg.pool_size,
            session_wait: cfg.session_wait,
            caps: cfg.capabilities,
            health_key_label: cfg.health_key_label,
            key_facts_ttl: cfg.key_facts_ttl,
            slot: Mutex::new(None),
            idle: Mutex::new(Vec::with_capacity(cfg.pool_size)),
            permits: Arc::new(Semaphore::new(cfg.pool_size)),
            handles: Mutex::new(HashMap::new()),
            identity: Mutex::new(BackendIdentity {
                vendor: String::new(),
                model: String::new(),
            }),
            login_refused: Mutex::new(None),
            epoch: AtomicU64::new(0),
            inline: InlineCalls::new(cfg.inline_calls),
            copies: copies::KeyCopies::new(cfg.session_key_copies),
        };
        first_session(&inner)?;
        let id = lock(&inner.identity).clone();
        tracing::info!(key_store = name, module = %inner.module.path.display(), token = %inner.token,
            vendor = %id.vendor, model = %id.model, pool_size = inner.pool_size, "PKCS#11 backend ready");
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Times the module this backend uses was finalized and initialised again to recover from
    /// a failure (shared with the other backends of this process on the same module file).
    pub fn reinitializations(&self) -> u64 {
        self.inner.module.reinits.load(Ordering::Relaxed)
    }

    /// Sessions open and free in the pool now.
    pub fn idle_sessions(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// The maximum number of sessions (and of PKCS#11 calls in flight).
    pub fn pool_size(&self) -> usize {
        self.inner.pool_size
    }

    /// How many PKCS#11 calls ran inline on a runtime worker, and how many on the blocking
    /// pool, since the backend was opened.
    pub fn calls_by_placement(&self) -> (u64, u64) {
        let inline = &self.inner.inline;
        (
            inline.ran_inline.load(Ordering::Relaxed),
            inline.ran_in_pool.load(Ordering::Relaxed),
        )
    }

    /// The label of the health-check key (not reachable through the XKS API).
    pub fn health_key_label(&self) -> &str {
        &self.inner.health_key_label
    }

    /// Waits (bounded) for a session permit, then runs `op` where `placement` and
    /// [`InlineCalls`] allow: inline, or on the blocking pool. The permit and the session
    /// stay with the call until the PKCS#11 call returns.
    async fn run<T: Send + 'static>(
        &self,
        placement: Placement,
        label: Option<String>,
        op: impl FnMut(&Inner, &Session, u64) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = &self.inner;
        let permit = match tokio::time::timeout(
            inner.session_wait,
            Arc::clone(&inner.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(BackendError::Failure(
                    "the PKCS#11 session pool is closed".into(),
                ));
            }
            Err(_) => {
                return Err(BackendError::Overloaded(format!(
                    "all {} PKCS#11 sessions stayed busy for {} ms",
                    inner.pool_size,
                    inner.session_wait.as_millis()
                )));
            }
        };
        if placement == Placement::InlineIfSafe
            && let Some(_slot) = inner.inline.enter().await
        {
            let _permit = permit;
            return inner.call(label.as_deref(), op);
        }
        inner.inline.ran_in_pool.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.call(label.as_deref(), op)
        })
        .await
        .map_err(|e| BackendError::Failure(format!("the PKCS#11 worker failed: {e}")))?
    }
}

/// Finds the token, reads its identity, opens and logs in the first session.
fn first_session(inner: &Inner) -> Result<(), Pkcs11Error> {
    let state = read(&inner.module.state);
    let Some(ctx) = state.ctx.as_ref() else {
        return Err(Pkcs11Error::Unavailable(
            state
                .failed
                .as_ref()
                .map_or_else(|| "not initialised".to_owned(), |(_, e)| e.clone()),
        ));
    };
    let slot = match find_slot(ctx, &inner.token) {
        Ok(s) => s,
        Err(Fail::TokenMissing(m)) => return Err(Pkcs11Error::TokenNotFound(m)),
        Err(f) => {
            return Err(Pkcs11Error::Call {
                op: "finding the token".into(),
                reason: fail_text(&f),
            });
        }
    };
    *lock(&inner.slot) = Some((state.generation, slot));
    *lock(&inner.identity) = identity_of(ctx, slot).map_err(call_failed("C_GetTokenInfo"))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(call_failed("C_OpenSession"))?;
    inner.login(&session).map_err(|f| Pkcs11Error::Login {
        token: inner.token.to_string(),
        reason: fail_text(&f),
    })?;
    inner.put_back(Pooled {
        session,
        generation: state.generation,
    });
    Ok(())
}

/// A PKCS#11 call that hangs, for the test that shows a hung HSM cannot stall health
/// checks: with `XKS_PROXY_TEST_PKCS11_ENCRYPT_STALL_MS` set, every Encrypt's PKCS#11 call
/// first blocks its thread that long (test builds only).
#[cfg(feature = "test-hooks")]
mod test_stall {
    use std::sync::OnceLock;
    use std::time::Duration;

    pub(super) fn encrypt() {
        static STALL: OnceLock<Option<Duration>> = OnceLock::new();
        let stall = STALL.get_or_init(|| {
            std::env::var("XKS_PROXY_TEST_PKCS11_ENCRYPT_STALL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        });
        if let Some(d) = stall {
            std::thread::sleep(*d);
        }
    }
}

impl KeyBackend for Pkcs11Backend {
    fn identity(&self) -> BackendIdentity {
        lock(&self.inner.identity).clone()
    }

    fn iv_source(&self) -> IvSource {
        self.inner.caps.iv_source()
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        Box::pin(async move {
            if let Some(info) = self.inner.cached_key_info(key_id.as_str()) {
                return Ok(info);
            }
            let label = key_id.as_str().to_owned();
            self.run(
                Placement::InlineIfSafe,
                Some(label.clone()),
                move |inner, s, g| {
                    let h = inner.key_handle(s, g, &label)?;
                    inner.key_info(s, g, &label, h)
                },
            )
            .await
        })
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        Box::pin(async move {
            if input.version != KEY_VERSION {
                return Err(BackendError::UnknownKeyVersion(input.version));
            }
            let label = input.key_id.as_str().to_owned();
            let iv = input.iv;
            let aad = input.aad.to_vec();
            let plaintext = Zeroizing::new(input.plaintext.to_vec());
            self.run(
                Placement::InlineIfSafe,
                Some(label.clone()),
                move |inner, s, g| {
                    #[cfg(feature = "test-hooks")]
                    test_stall::encrypt();
                    let h = inner.operation_handle(s, g, &label)?;
                    inner.gcm_encrypt(s, h, iv, &aad, &plaintext)
                },
            )
            .await
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            if input.version != KEY_VERSION {
                return Err(BackendError::UnknownKeyVersion(input.version));
            }
            let label = input.key_id.as_str().to_owned();
            let iv = input.iv.to_vec();
            let aad = input.aad.to_vec();
            let ciphertext = input.ciphertext.to_vec();
            let tag = input.tag.to_vec();
            self.run(
                Placement::InlineIfSafe,
                Some(label.clone()),
                move |inner, s, g| {
                    let h = inner.operation_handle(s, g, &label)?;
                    inner.gcm_decrypt(s, h, &iv, &aad, &ciphertext, &tag)
                },
            )
            .await
        })
    }

    fn reinitializations(&self) -> Option<u64> {
        Some(Pkcs11Backend::reinitializations(self))
    }

    fn health_key_id(&self) -> Option<&str> {
        Some(&self.inner.health_key_label)
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        Box::pin(async move {
            let label = self.inner.health_key_label.clone();
            let mut probe = Zeroizing::new([0u8; 32]);
            let mut iv = [0u8; GENERATED_IV_BYTES];
            getrandom::fill(&mut probe[..])
                .and_then(|()| getrandom::fill(&mut iv))
                .map_err(|e| BackendError::Failure(format!("random source failed: {e}")))?;
            let iv = (self.inner.caps.iv == IvStrategy::ProxySupplied).then_some(iv);
            let l = label.clone();
            let outcome = self
                .run(
                    Placement::BlockingPool,
                    Some(label.clone()),
                    move |inner, s, g| {
                        let h = inner.key_handle(s, g, &l)?;
                        let out = inner.gcm_encrypt(s, h, iv, HEALTH_AAD, &probe[..])?;
                        let back = inner.gcm_decrypt(
                            s,
                            h,
                            &out.iv,
                            HEALTH_AAD,
                            &out.ciphertext,
                            &out.tag,
                        )?;
                        Ok(back[..] == probe[..])
                    },
                )
                .await;
            let token = &self.inner.token;
            let (status, detail) = match outcome {
                Ok(true) => (
                    HealthStatus::Active,
                    format!("round trip ok with key '{label}' in the {token}"),
                ),
                Ok(false) => (
                    HealthStatus::Unavailable,
                    format!("the round trip with key '{label}' returned different data"),
                ),
                Err(BackendError::KeyNotFound(_)) => (
                    HealthStatus::Unavailable,
                    format!(
                        "no health key: the {token} has no secret key labelled '{label}'; \
                         create an AES-256 key with that label (or set health_key_label)"
                    ),
                ),
                Err(BackendError::Overloaded(m)) => (HealthStatus::Degraded, m),
                Err(e) => (
                    HealthStatus::Unavailable,
                    format!("the {token} cannot be used: {e}"),
                ),
            };
            Ok(BackendHealth { status, detail })
        })
    }
}
