//! The Vault/OpenBao Transit backend: AES-GCM happens inside a Transit secrets engine.
//!
//! Keys are Transit keys of type `aes256-gcm96`, named like the external key id. The proxy
//! pins the key version (from [`KeyBackend::key_info`], Transit's `latest_version`) and this
//! backend passes it as `key_version`, so the version in `ciphertextMetadata` is the version
//! Transit used; the answer's `vault:v<N>:` prefix is checked against it. Transit makes the
//! 96-bit nonce ([`IvSource::Backend`]); its ciphertext `vault:v<N>:<base64(nonce || ciphertext
//! || tag)>` is split into the XKS `initializationVector`, `ciphertext` and
//! `authenticationTag`, and rebuilt from them on decrypt. The proxy's AAD goes to Transit as
//! `associated_data` (Vault 1.13+, every OpenBao); an answer warning that the parameter was
//! ignored is refused, and the health check proves that a wrong AAD fails to decrypt, so an
//! AAD is never silently dropped.
//!
//! Error mapping (the proxy turns these into XKS errors in `service::backend_error`):
//! - key missing (`404` on the key, `encryption key not found`) → [`BackendError::KeyNotFound`];
//! - `message authentication failed`, `invalid ciphertext…`, a 16-byte IV (Transit only makes
//!   12-byte nonces) → [`BackendError::InvalidCiphertext`];
//! - a ciphertext version that Transit does not have (above `latest_version`, below
//!   `min_decryption_version`, trimmed) → [`BackendError::UnknownKeyVersion`] (the proxy answers
//!   `InvalidCiphertextException` for both; the variant keeps the reason visible in logs);
//! - connection refused, DNS, TLS → [`BackendError::Failure`] ("key manager unreachable");
//!   no answer within `timeout_ms` → [`BackendError::Timeout`]; `429` (a Vault rate-limit
//!   quota) → [`BackendError::Overloaded`]; `403` (after one re-authentication) and `5xx` →
//!   [`BackendError::Failure`].
//!
//! Authentication: a token (0600 file or environment variable), or AppRole. A background task
//! looks the token up, renews it at half its TTL when it is renewable (`renew-self`) and, for
//! AppRole, logs in again when it cannot be renewed further. A call answered `403` triggers
//! one re-authentication (AppRole login, or re-reading a token file that changed, e.g. a Vault
//! Agent sink) and one retry. The token lives only in a header value marked sensitive; no
//! `Debug` output or log line contains it.
//!
//! Recommended Vault policy for the proxy's token: `update` on `<mount>/encrypt/*` and
//! `<mount>/decrypt/*`, `read` on `<mount>/keys/*`, and **no `create`** on
//! `<mount>/encrypt/*`: Transit creates a missing key on encrypt ("upsert") when the token may
//! `create`. (The proxy always reads the key first, so an unknown key id is answered
//! `KeyNotFound` before any encrypt.) The admin helpers ([`TransitBackend::create_key`],
//! [`TransitBackend::rotate_key`], [`TransitBackend::list_keys`]) need `create`/`update` on
//! `<mount>/keys/*` and `list` on `<mount>/keys`, so give the CLI its own token.

mod auth;
mod client;
mod config;
mod wire;

#[cfg(test)]
mod live;
#[cfg(test)]
mod tests;

pub use config::{TransitAuth, TransitConfig};

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use hyper::body::Bytes;
use reqwest::{Method, StatusCode};
use xks_api::XksKeyId;
use zeroize::Zeroizing;

use crate::backend::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};
use auth::{AuthMethod, maintain};
use client::{ADMIN_TIMEOUT, Inner, http_client};
use config::{admin_key_name, key_name};
use wire::{ListResponse, key_info_of, status_error, unreadable, vault_message};

/// Why a Transit backend could not be opened, or an administrative request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// The configuration is not usable.
    #[error("transit backend '{store}': {problem}")]
    Config {
        /// The key store.
        store: String,
        /// What is wrong.
        problem: String,
    },
    /// A token or secret id could not be read.
    #[error("transit backend '{store}': {what}: {reason}")]
    Credential {
        /// The key store.
        store: String,
        /// Which credential (`token file /path`, `secret id $VAR`, …).
        what: String,
        /// Why (never the credential itself).
        reason: String,
    },
    /// The CA bundle or the HTTP client could not be set up.
    #[error("transit backend '{store}': {problem}")]
    Client {
        /// The key store.
        store: String,
        /// What failed.
        problem: String,
    },
    /// An administrative request was refused or failed.
    #[error("transit request failed: {0}")]
    Backend(#[from] BackendError),
    /// [`TransitBackend::create_key`]: a key with this name exists already.
    #[error("transit key '{0}' already exists")]
    KeyExists(String),
    /// A key name Transit or the XKS API cannot use.
    #[error("invalid key name '{name}': {reason}")]
    InvalidKeyName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// How many key creations [`TransitBackend::create_keys`] runs at a time.
pub const BULK_CREATE_CONCURRENCY: usize = 8;

/// A [`KeyBackend`] whose AES-GCM runs inside a Vault/OpenBao Transit secrets engine.
///
/// One `reqwest` client (connection reuse, HTTP/2 over TLS when Vault offers it) serves
/// every call; each call is bounded by `timeout_ms`. Dropping the backend stops its token
/// maintenance task.
pub struct TransitBackend {
    inner: Arc<Inner>,
    maintenance: OnceLock<tokio::task::AbortHandle>,
}

impl fmt::Debug for TransitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitBackend")
            .field("store", &self.inner.store)
            .field("address", &self.inner.base)
            .field("mount", &self.inner.mount)
            .field("auth", &self.inner.auth.describe())
            .field("timeout_ms", &self.inner.timeout.as_millis())
            .finish_non_exhaustive()
    }
}

impl Drop for TransitBackend {
    fn drop(&mut self) {
        if let Some(task) = self.maintenance.get() {
            task.abort();
        }
    }
}

impl TransitBackend {
    /// Opens a Transit backend for key store `name`: validates `cfg`, reads the token (or the
    /// AppRole secret id) and the CA bundle (relative paths against `base_dir`; credential
    /// files must be mode 0600) and builds the HTTP client. Nothing is sent yet: when called
    /// inside a Tokio runtime, a background task logs in (AppRole) or looks the token up, and
    /// renews it; otherwise that starts with the first call. A Vault that is down at start
    /// therefore does not stop the proxy: calls fail and health reports UNAVAILABLE until it
    /// answers.
    pub fn open(name: &str, cfg: &TransitConfig, base_dir: &Path) -> Result<Self, TransitError> {
        let endpoint = cfg.endpoint(name)?;
        let (auth, token) = AuthMethod::from_config(name, &cfg.auth, base_dir)?;
        let http = http_client(name, cfg, base_dir)?;
        let inner = Arc::new(Inner::new(name, cfg, endpoint, auth, token, http));
        tracing::info!(
            key_store = %name,
            address = %inner.base,
            mount = %inner.mount,
            auth = %inner.auth.describe(),
            "transit backend opened"
        );
        let backend = Self {
            inner,
            maintenance: OnceLock::new(),
        };
        backend.start_maintenance();
        Ok(backend)
    }

    /// Starts the token maintenance task once, when a Tokio runtime is available.
    fn start_maintenance(&self) {
        if self.maintenance.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime
            .spawn(maintain(
                Arc::downgrade(&self.inner),
                self.inner.wake.clone(),
            ))
            .abort_handle();
        if let Err(duplicate) = self.maintenance.set(task) {
            duplicate.abort();
        }
    }

    /// Creates Transit key `name` (type `aes256-gcm96`, not exportable, no plaintext
    /// backup). Fails with [`TransitError::KeyExists`] if it exists (Transit itself would
    /// silently keep the existing key, whatever its type).
    pub async fn create_key(&self, name: &str) -> Result<(), TransitError> {
        let name = admin_key_name(name)?;
        let inner = &self.inner;
        if inner.read_key(name, ADMIN_TIMEOUT).await?.is_some() {
            return Err(TransitError::KeyExists(name.to_owned()));
        }
        inner.post_new_key(name).await
    }

    /// Creates Transit keys `names` as [`create_key`](Self::create_key) does. Every name is
    /// checked first (valid, not given twice, not an existing key: one LIST instead of a
    /// read per key), so a refused request creates nothing; then up to
    /// [`BULK_CREATE_CONCURRENCY`] creations run at a time. A failure part-way leaves the
    /// keys created before it, and no new creation starts after it.
    pub async fn create_keys(&self, names: &[&str]) -> Result<(), TransitError> {
        let mut unique = std::collections::HashSet::with_capacity(names.len());
        for &name in names {
            admin_key_name(name)?;
            if !unique.insert(name) {
                return Err(TransitError::InvalidKeyName {
                    name: name.to_owned(),
                    reason: "given twice".to_owned(),
                });
            }
        }
        let existing: std::collections::HashSet<String> =
            self.list_keys().await?.into_iter().collect();
        if let Some(taken) = names.iter().find(|n| existing.contains(**n)) {
            return Err(TransitError::KeyExists((*taken).to_owned()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = names.iter();
        let mut first_error = None;
        loop {
            while tasks.len() < BULK_CREATE_CONCURRENCY && first_error.is_none() {
                let Some(&name) = pending.next() else { break };
                let inner = Arc::clone(&self.inner);
                let name = name.to_owned();
                tasks.spawn(async move { inner.post_new_key(&name).await });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(TransitError::Backend(BackendError::Failure(
                        format!("a key creation task failed: {e}"),
                    )));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Rotates Transit key `name`; returns its new latest version (which new encryptions use
    /// from then on; older versions keep decrypting).
    pub async fn rotate_key(&self, name: &str) -> Result<u32, TransitError> {
        let name = admin_key_name(name)?;
        let inner = &self.inner;
        let reply = inner
            .call(
                Method::POST,
                &format!("{}/keys/{name}/rotate", inner.mount),
                Some(Bytes::from_static(b"{}")),
                ADMIN_TIMEOUT,
            )
            .await?;
        if !reply.status.is_success() {
            let message = vault_message(&reply.body);
            if reply.status == StatusCode::BAD_REQUEST && message.contains("not found") {
                return Err(BackendError::KeyNotFound(name.to_owned()).into());
            }
            return Err(status_error(reply.status, &reply.body).into());
        }
        let key = inner
            .read_key(name, ADMIN_TIMEOUT)
            .await?
            .ok_or_else(|| BackendError::KeyNotFound(name.to_owned()))?;
        tracing::info!(key_store = %inner.store, key = %name, version = key.latest_version, "transit key rotated");
        Ok(key.latest_version)
    }

    /// The name of the health-check key (not reachable through the XKS API).
    pub fn health_key_name(&self) -> &str {
        &self.inner.health_key
    }

    /// The facts of Transit key `name` as the proxy sees them (spec, usages, latest
    /// version; status `ENABLED`, the proxy's status file says otherwise), or `None` when
    /// the mount has no such key.
    pub async fn key_facts(&self, name: &str) -> Result<Option<KeyInfo>, TransitError> {
        let name = admin_key_name(name)?;
        Ok(self
            .inner
            .read_key(name, ADMIN_TIMEOUT)
            .await?
            .as_ref()
            .map(key_info_of))
    }

    /// Every key in the mount that the XKS API can name (a valid XKS key id), with its
    /// facts as in [`key_facts`](Self::key_facts), sorted by name. Up to
    /// [`BULK_CREATE_CONCURRENCY`] keys are read at a time. A key deleted between the listing
    /// and its read is left out.
    pub async fn describe_keys(&self) -> Result<Vec<(String, KeyInfo)>, TransitError> {
        let names: Vec<String> = self
            .list_keys()
            .await?
            .into_iter()
            .filter(|n| admin_key_name(n).is_ok())
            .collect();
        let mut out = Vec::with_capacity(names.len());
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = names.into_iter();
        loop {
            while tasks.len() < BULK_CREATE_CONCURRENCY {
                let Some(name) = pending.next() else { break };
                let inner = Arc::clone(&self.inner);
                tasks.spawn(async move {
                    let key = inner.read_key(&name, ADMIN_TIMEOUT).await;
                    (name, key)
                });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((name, Ok(Some(key))))) => out.push((name, key_info_of(&key))),
                Some(Ok((_, Ok(None)))) => {}
                Some(Ok((_, Err(e)))) => return Err(e.into()),
                Some(Err(e)) => {
                    return Err(TransitError::Backend(BackendError::Failure(format!(
                        "a key read task failed: {e}"
                    ))));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The names of the keys in the Transit mount (all of them, sorted; not only AES ones).
    pub async fn list_keys(&self) -> Result<Vec<String>, TransitError> {
        let inner = &self.inner;
        let reply = inner
            .call(
                Method::GET,
                &format!("{}/keys?list=true", inner.mount),
                None,
                ADMIN_TIMEOUT,
            )
            .await?;
        match reply.status {
            StatusCode::OK => {
                let r: ListResponse =
                    serde_json::from_slice(&reply.body).map_err(|e| unreadable("key list", &e))?;
                let mut keys = r.data.keys;
                keys.sort();
                Ok(keys)
            }
            // Vault answers 404 to a LIST with nothing in it.
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            s => Err(status_error(s, &reply.body).into()),
        }
    }
}

impl KeyBackend for TransitBackend {
    fn identity(&self) -> BackendIdentity {
        BackendIdentity {
            vendor: self
                .inner
                .vendor()
                .unwrap_or("Vault/OpenBao Transit")
                .to_owned(),
            model: format!("transit at {}/{}", self.inner.base, self.inner.mount),
        }
    }

    fn iv_source(&self) -> IvSource {
        IvSource::Backend
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        self.start_maintenance();
        Box::pin(self.inner.key_info(key_id))
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        self.start_maintenance();
        // `input.iv` is ignored: Transit makes the nonce (IvSource::Backend).
        Box::pin(async move {
            let name = key_name(input.key_id)?;
            self.inner
                .encrypt_with(
                    name,
                    input.version,
                    input.aad,
                    input.plaintext,
                    self.inner.timeout,
                )
                .await
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        self.start_maintenance();
        Box::pin(async move {
            let name = key_name(input.key_id)?;
            self.inner
                .decrypt_with(
                    name,
                    input.version,
                    input.iv,
                    input.aad,
                    input.ciphertext,
                    input.tag,
                    self.inner.timeout,
                )
                .await
        })
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        self.start_maintenance();
        Box::pin(self.inner.health())
    }

    fn health_key_id(&self) -> Option<&str> {
        Some(&self.inner.health_key)
    }
}
