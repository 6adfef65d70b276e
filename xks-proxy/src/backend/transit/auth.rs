//! Authentication to Vault: where the token (or AppRole secret id) comes from, logins,
//! `403` re-authentication, and the background task that looks the token up and renews it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use zeroize::Zeroizing;

use super::TransitError;
use super::client::{ADMIN_TIMEOUT, Inner};
use super::config::{TransitAuth, config_error, mount_path, resolve};
use super::wire::{AuthResponse, LoginRequest, LookupResponse, detail, status_error, unreadable};
use crate::backend::BackendError;

/// First retry delay of the token maintenance task after a failure; doubles up to the max.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay of the token maintenance task.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long the maintenance task sleeps when the token never expires.
const IDLE: Duration = Duration::from_secs(3600);
/// Shortest pause between two maintenance steps.
const MIN_STEP: Duration = Duration::from_millis(10);

/// Where a secret (token or AppRole secret id) is read from.
#[derive(Debug, Clone)]
pub(super) enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    fn pick(
        store: &str,
        what: &str,
        file: Option<&PathBuf>,
        env: Option<&String>,
        base_dir: &Path,
    ) -> Result<Self, TransitError> {
        match (file, env) {
            (Some(f), None) => Ok(Self::File(resolve(base_dir, f))),
            (None, Some(e)) if !e.is_empty() => Ok(Self::Env(e.clone())),
            (None, Some(_)) => Err(config_error(store, format!("{what}_env is empty"))),
            _ => Err(config_error(
                store,
                format!("set exactly one of auth.{what}_file and auth.{what}_env"),
            )),
        }
    }

    pub(super) fn describe(&self, what: &str) -> String {
        match self {
            Self::File(p) => format!("{what} file {}", p.display()),
            Self::Env(v) => format!("{what} ${v}"),
        }
    }

    /// Reads the secret; a file must be readable by its owner only.
    pub(super) fn read(&self, store: &str, what: &str) -> Result<SecretString, TransitError> {
        let fail = |reason: String| TransitError::Credential {
            store: store.to_owned(),
            what: self.describe(what),
            reason,
        };
        // Read zeroizing and trimmed, owner-only files checked on the opened file.
        let raw = match self {
            Self::File(path) => {
                root_key::read_secret_file(path).map_err(|e| fail(e.to_string()))?
            }
            Self::Env(var) => root_key::read_secret_env(var)
                .ok_or_else(|| fail("the environment variable is not set".to_owned()))?,
        };
        let trimmed = raw.as_str();
        if trimmed.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "it contains spaces or characters outside printable ASCII".to_owned(),
            ));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Reads a token into a header value marked sensitive.
    fn read_token(&self, store: &str) -> Result<HeaderValue, TransitError> {
        token_header(&self.read(store, "token")?).map_err(|reason| TransitError::Credential {
            store: store.to_owned(),
            what: self.describe("token"),
            reason,
        })
    }
}

fn token_header(token: &SecretString) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(token.expose_secret())
        .map_err(|_| "it is not a valid HTTP header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug)]
pub(super) enum AuthMethod {
    Token(SecretSource),
    AppRole {
        role_id: SecretString,
        secret_id: SecretString,
        secret_source: SecretSource,
        mount: String,
    },
}

impl AuthMethod {
    /// The method `cfg` configures (credential files relative to `base_dir`), with the
    /// token when it is one. Credentials are read now, so that a missing or unreadable one
    /// fails the open.
    pub(super) fn from_config(
        name: &str,
        cfg: &TransitAuth,
        base_dir: &Path,
    ) -> Result<(Self, Option<HeaderValue>), TransitError> {
        match cfg {
            TransitAuth::Token {
                token_file,
                token_env,
            } => {
                let source = SecretSource::pick(
                    name,
                    "token",
                    token_file.as_ref(),
                    token_env.as_ref(),
                    base_dir,
                )?;
                let token = source.read_token(name)?;
                Ok((Self::Token(source), Some(token)))
            }
            TransitAuth::AppRole {
                role_id,
                secret_id_file,
                secret_id_env,
                mount: approle_mount,
            } => {
                if role_id.trim().is_empty() {
                    return Err(config_error(name, "auth.role_id is empty"));
                }
                let approle_mount = mount_path(approle_mount).ok_or_else(|| {
                    config_error(
                        name,
                        format!(
                            "auth.mount '{approle_mount}': use path segments of A-Z a-z 0-9 _ - ."
                        ),
                    )
                })?;
                let source = SecretSource::pick(
                    name,
                    "secret_id",
                    secret_id_file.as_ref(),
                    secret_id_env.as_ref(),
                    base_dir,
                )?;
                let secret_id = source.read(name, "secret id")?;
                Ok((
                    Self::AppRole {
                        role_id: SecretString::from(role_id.trim().to_owned()),
                        secret_id,
                        secret_source: source,
                        mount: approle_mount,
                    },
                    None,
                ))
            }
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Self::Token(s) => format!("token ({})", s.describe("token")),
            Self::AppRole {
                secret_source,
                mount,
                ..
            } => format!(
                "approle at auth/{mount} ({})",
                secret_source.describe("secret id")
            ),
        }
    }
}

/// What Vault said about the token's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) renewable: bool,
    /// Zero: the token does not expire.
    pub(super) ttl: Duration,
    obtained: Instant,
}

/// The current token. Replaced whole; `generation` counts replacements.
#[derive(Debug)]
pub(super) struct TokenState {
    /// `None` until the first AppRole login.
    pub(super) header: Option<HeaderValue>,
    pub(super) generation: u64,
    /// `None` until looked up (token) or logged in (AppRole).
    pub(super) lease: Option<Lease>,
}

impl Inner {
    /// A call succeeded: if token maintenance is failing, let it retry now.
    pub(super) fn note_success(&self) {
        if self.maintenance_failing.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// The token to send, logging in first if there is none yet (AppRole before its first
    /// login).
    pub(super) async fn current_token(
        &self,
        timeout: Duration,
    ) -> Result<(HeaderValue, u64), BackendError> {
        if let Some(found) = self.loaded_token() {
            return Ok(found);
        }
        let _guard = self.login.lock().await;
        if let Some(found) = self.loaded_token() {
            return Ok(found);
        }
        match &self.auth {
            AuthMethod::AppRole { .. } => self.login_approle(timeout).await?,
            AuthMethod::Token(source) => {
                let header = source
                    .read_token(&self.store)
                    .map_err(|e| BackendError::Failure(e.to_string()))?;
                self.install_token(header, None);
            }
        }
        self.loaded_token()
            .ok_or_else(|| BackendError::Failure("no transit token".to_owned()))
    }

    fn loaded_token(&self) -> Option<(HeaderValue, u64)> {
        let state = self.token.load();
        state.header.clone().map(|h| (h, state.generation))
    }

    /// Replaces the token (the caller holds the login lock).
    fn install_token(&self, header: HeaderValue, lease: Option<Lease>) {
        let generation = self.token.load().generation + 1;
        self.token.store(Arc::new(TokenState {
            header: Some(header),
            generation,
            lease,
        }));
        self.wake.notify_one();
    }

    /// Records what Vault said about the token of `generation`, unless it was replaced.
    async fn set_lease(&self, generation: u64, lease: Lease) {
        let _guard = self.login.lock().await;
        let current = self.token.load_full();
        if current.generation == generation {
            self.token.store(Arc::new(TokenState {
                header: current.header.clone(),
                generation,
                lease: Some(lease),
            }));
        }
    }

    /// After a `403` with the token of `failed_generation`: get a new token if possible.
    /// `Ok(true)` means a retry can use a different token.
    pub(super) async fn reauthenticate(
        &self,
        failed_generation: u64,
        timeout: Duration,
    ) -> Result<bool, BackendError> {
        let _guard = self.login.lock().await;
        if self.token.load().generation != failed_generation {
            return Ok(true);
        }
        match &self.auth {
            AuthMethod::AppRole { .. } => {
                self.login_approle(timeout).await?;
                Ok(true)
            }
            AuthMethod::Token(source @ SecretSource::File(_)) => {
                let fresh = source
                    .read_token(&self.store)
                    .map_err(|e| BackendError::Failure(e.to_string()))?;
                let same = self
                    .token
                    .load()
                    .header
                    .as_ref()
                    .is_some_and(|h| h.as_bytes() == fresh.as_bytes());
                if same {
                    return Ok(false);
                }
                tracing::info!(key_store = %self.store, "transit token file changed; using the new token");
                self.install_token(fresh, None);
                Ok(true)
            }
            AuthMethod::Token(SecretSource::Env(_)) => Ok(false),
        }
    }

    /// AppRole login (the caller holds the login lock).
    async fn login_approle(&self, timeout: Duration) -> Result<(), BackendError> {
        let AuthMethod::AppRole {
            role_id,
            secret_id: opened_with,
            secret_source,
            mount,
        } = &self.auth
        else {
            return Err(BackendError::Failure(
                "AppRole login without AppRole settings".to_owned(),
            ));
        };
        // Read the secret id again, so it can be replaced without a reload; keep the one
        // read at open if that fails.
        let fresh = secret_source.read(&self.store, "secret id");
        let secret_id = match &fresh {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key_store = %self.store, error = %e, "cannot read the AppRole secret id again; using the one read at start");
                opened_with
            }
        };
        let mut body = Zeroizing::new(Vec::with_capacity(
            role_id.expose_secret().len() + secret_id.expose_secret().len() + 64,
        ));
        serde_json::to_writer(
            &mut *body,
            &LoginRequest {
                role_id: role_id.expose_secret(),
                secret_id: secret_id.expose_secret(),
            },
        )
        .map_err(|_| BackendError::Failure("cannot encode the AppRole login".to_owned()))?;
        let reply = self
            .send(
                Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(Bytes::from_owner(body)),
                timeout,
            )
            .await?;
        if reply.status != StatusCode::OK {
            let e = status_error(reply.status, &reply.body);
            tracing::warn!(key_store = %self.store, error = %e, "transit AppRole login failed");
            return Err(BackendError::Failure(format!(
                "AppRole login failed: {}",
                detail(&e)
            )));
        }
        let auth: AuthResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("AppRole login", &e))?;
        let header = token_header(&SecretString::from(auth.auth.client_token.into_owned()))
            .map_err(|e| BackendError::Failure(format!("AppRole login returned a token {e}")))?;
        let lease = Lease {
            renewable: auth.auth.renewable,
            ttl: Duration::from_secs(auth.auth.lease_duration),
            obtained: Instant::now(),
        };
        self.install_token(header, Some(lease));
        tracing::info!(
            key_store = %self.store,
            ttl_s = auth.auth.lease_duration,
            renewable = auth.auth.renewable,
            "transit AppRole login"
        );
        Ok(())
    }

    async fn lookup_self(&self, timeout: Duration) -> Result<Lease, BackendError> {
        let reply = self
            .call(Method::GET, "auth/token/lookup-self", None, timeout)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        let r: LookupResponse =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("token lookup", &e))?;
        Ok(Lease {
            renewable: r.data.renewable,
            ttl: Duration::from_secs(u64::try_from(r.data.ttl).unwrap_or(0)),
            obtained: Instant::now(),
        })
    }

    /// `renew-self` with the token of `generation`.
    async fn renew_self(
        &self,
        token: &HeaderValue,
        timeout: Duration,
    ) -> Result<Lease, BackendError> {
        let reply = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(token),
                Some(Bytes::from_static(b"{}")),
                timeout,
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        let r: AuthResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("token renewal", &e))?;
        Ok(Lease {
            renewable: r.auth.renewable,
            ttl: Duration::from_secs(r.auth.lease_duration),
            obtained: Instant::now(),
        })
    }

    /// One step of token maintenance; returns how long to wait before the next one.
    async fn maintenance_step(&self) -> Result<Duration, BackendError> {
        if self.vendor().is_none()
            && let Ok(h) = self.sys_health(ADMIN_TIMEOUT).await
        {
            self.learn_vendor(&h);
        }
        let (header, generation, lease) = {
            let s = self.token.load();
            (s.header.clone(), s.generation, s.lease)
        };
        let Some(header) = header else {
            // AppRole before its first login.
            self.current_token(ADMIN_TIMEOUT).await?;
            return Ok(Duration::ZERO);
        };
        let Some(lease) = lease else {
            let lease = self.lookup_self(ADMIN_TIMEOUT).await?;
            tracing::info!(
                key_store = %self.store,
                renewable = lease.renewable,
                ttl_s = lease.ttl.as_secs(),
                "transit token looked up"
            );
            self.set_lease(generation, lease).await;
            return Ok(Duration::ZERO);
        };
        if lease.ttl.is_zero() {
            return Ok(IDLE);
        }
        let now = Instant::now();
        let due = lease.obtained + lease.ttl / 2;
        if now < due {
            return Ok(due - now);
        }
        let remaining = (lease.obtained + lease.ttl).saturating_duration_since(now);
        let approle = matches!(self.auth, AuthMethod::AppRole { .. });
        if !lease.renewable {
            if approle && self.reauthenticate(generation, ADMIN_TIMEOUT).await? {
                return Ok(Duration::ZERO);
            }
            return Err(BackendError::Failure(format!(
                "the transit token cannot be renewed and expires in {} s; replace it and reload",
                remaining.as_secs()
            )));
        }
        match self.renew_self(&header, ADMIN_TIMEOUT).await {
            Ok(renewed) => {
                // Renewal capped by the token's max TTL: it did not extend the lifetime.
                let capped = renewed.ttl <= remaining + Duration::from_secs(1);
                if capped && approle {
                    self.reauthenticate(generation, ADMIN_TIMEOUT).await?;
                } else if capped {
                    tracing::warn!(
                        key_store = %self.store,
                        ttl_s = renewed.ttl.as_secs(),
                        "the transit token reached its max TTL; replace it before it expires"
                    );
                    self.set_lease(
                        generation,
                        Lease {
                            renewable: false,
                            ..renewed
                        },
                    )
                    .await;
                } else {
                    tracing::debug!(key_store = %self.store, ttl_s = renewed.ttl.as_secs(), "transit token renewed");
                    self.set_lease(generation, renewed).await;
                }
                Ok(Duration::ZERO)
            }
            Err(e) => {
                tracing::warn!(key_store = %self.store, error = %e, "transit token renewal failed");
                if self.reauthenticate(generation, ADMIN_TIMEOUT).await? {
                    Ok(Duration::ZERO)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn record_problem(&self, e: &BackendError, retry: Duration) {
        tracing::warn!(
            key_store = %self.store,
            error = %e,
            retry_s = retry.as_secs(),
            "transit token maintenance failed"
        );
        self.maintenance_failing.store(true, Ordering::Relaxed);
        *self
            .maintenance_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn clear_problem(&self) {
        if self.maintenance_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(key_store = %self.store, "transit token maintenance recovered");
            *self
                .maintenance_problem
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub(super) fn problem(&self) -> Option<String> {
        self.maintenance_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(super) async fn maintain(inner: Weak<Inner>, wake: Arc<Notify>) {
    let mut backoff = RETRY_MIN;
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match inner.maintenance_step().await {
                Ok(wait) => {
                    backoff = RETRY_MIN;
                    inner.clear_problem();
                    wait
                }
                Err(e) => {
                    let wait = backoff;
                    inner.record_problem(&e, wait);
                    backoff = (backoff * 2).min(RETRY_MAX);
                    wait
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(MIN_STEP)) => {}
            () = wake.notified() => {}
        }
    }
}
