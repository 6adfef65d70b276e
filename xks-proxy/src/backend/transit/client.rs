//! The HTTP client of a Transit backend: one exchange under a timeout, authenticated calls
//! with one retry after a `403`, and the Transit operations (keys, encrypt, decrypt,
//! health) built on them.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::Notify;
use xks_api::XksKeyId;
use xks_api::types::HealthStatus;
use zeroize::Zeroizing;

use super::TransitError;
use super::auth::{AuthMethod, TokenState};
use super::config::{Endpoint, TransitConfig, key_name, resolve};
use super::wire::{
    AES256_GCM96, CreateKeyRequest, DecryptResponse, EncryptResponse, KeyData, KeyResponse,
    NONCE_BYTES, SysHealth, TAG_BYTES, check_ignored_parameters, classify_decrypt_400,
    classify_encrypt_400, classify_sys_health, decode_secret, decrypt_body, detail, encrypt_body,
    error_chain, key_info_of, parse_transit_ciphertext, status_error, unreadable, vault_message,
    vendor_from_health,
};
use crate::backend::{BackendError, BackendHealth, EncryptOutput, KeyInfo};

/// Timeout of background (token maintenance) and administrative calls.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The header carrying the token.
const TOKEN_HEADER: &str = "X-Vault-Token";
/// AAD of the health round trip.
const HEALTH_AAD: &[u8] = b"xks-proxy transit health check";

/// An answer from Vault. The body may hold plaintext or a token: it is wiped on drop.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// The shared state of a backend (the maintenance task holds a weak reference).
pub(super) struct Inner {
    pub(super) store: String,
    /// The address without a trailing slash.
    pub(super) base: String,
    /// The Transit mount, without slashes at either end.
    pub(super) mount: String,
    pub(super) health_key: String,
    pub(super) timeout: Duration,
    pub(super) http: reqwest::Client,
    pub(super) auth: AuthMethod,
    pub(super) token: ArcSwap<TokenState>,
    /// Serialises logins and token replacements.
    pub(super) login: tokio::sync::Mutex<()>,
    /// Wakes the maintenance task (new token, or a call succeeded while it was failing).
    pub(super) wake: Arc<Notify>,
    pub(super) maintenance_failing: AtomicBool,
    pub(super) maintenance_problem: Mutex<Option<String>>,
    pub(super) vendor: Mutex<Option<&'static str>>,
}

/// The HTTP client of a backend: redirects off, idle connections kept for 60 s, and
/// `cfg.ca_bundle` (relative to `base_dir`) as the only trust anchors when it is set.
pub(super) fn http_client(
    name: &str,
    cfg: &TransitConfig,
    base_dir: &Path,
) -> Result<reqwest::Client, TransitError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("xks-proxy/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &cfg.ca_bundle {
        let path = resolve(base_dir, ca);
        let pem = std::fs::read_to_string(&path).map_err(|e| TransitError::Client {
            store: name.to_owned(),
            problem: format!("ca_bundle {}: {e}", path.display()),
        })?;
        let tls = service_tls::client::client_config(
            &service_tls::client::RootCertificates::Pem(pem),
            None,
        )
        .map_err(|e| TransitError::Client {
            store: name.to_owned(),
            problem: format!("ca_bundle {}: {e}", path.display()),
        })?;
        builder = builder.tls_backend_preconfigured((*tls).clone());
    }
    builder.build().map_err(|e| TransitError::Client {
        store: name.to_owned(),
        problem: format!("HTTP client: {}", error_chain(&e)),
    })
}

impl Inner {
    /// The state of a backend for key store `name`, before any call; nothing is sent.
    pub(super) fn new(
        name: &str,
        cfg: &TransitConfig,
        endpoint: Endpoint,
        auth: AuthMethod,
        token: Option<HeaderValue>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            store: name.to_owned(),
            base: endpoint.base,
            mount: endpoint.mount,
            health_key: cfg.health_key.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            http,
            auth,
            token: ArcSwap::from_pointee(TokenState {
                header: token,
                generation: 0,
                lease: None,
            }),
            login: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            maintenance_failing: AtomicBool::new(false),
            maintenance_problem: Mutex::new(None),
            vendor: Mutex::new(None),
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    fn transport_error(&self, e: &reqwest::Error, timeout: Duration) -> BackendError {
        if e.is_timeout() {
            BackendError::Timeout(format!(
                "transit at {} did not answer within {} ms",
                self.base,
                timeout.as_millis()
            ))
        } else {
            BackendError::Failure(format!("key manager unreachable: {}", error_chain(e)))
        }
    }

    /// One HTTP exchange, bounded by `timeout` (connect, send, and the whole answer).
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, BackendError> {
        let mut request = self.http.request(method, self.url(path)).timeout(timeout);
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token.clone());
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        Ok(Reply {
            status,
            body: Zeroizing::new(Vec::from(body)),
        })
    }

    /// POSTs to `<mount>/<operation>/<name>`; a 200 is returned, a 400 is classified by
    /// `classify_400` (Vault's message, key name, pinned version), anything else by status.
    async fn crypto_call(
        &self,
        operation: &str,
        name: &str,
        version: u32,
        body: Bytes,
        timeout: Duration,
        classify_400: fn(&str, &str, u32) -> BackendError,
    ) -> Result<Reply, BackendError> {
        let reply = self
            .call(
                Method::POST,
                &format!("{}/{operation}/{name}", self.mount),
                Some(body),
                timeout,
            )
            .await?;
        match reply.status {
            StatusCode::OK => Ok(reply),
            StatusCode::BAD_REQUEST => {
                Err(classify_400(&vault_message(&reply.body), name, version))
            }
            s => Err(status_error(s, &reply.body)),
        }
    }

    /// An authenticated exchange; a `403` triggers one re-authentication and one retry.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, BackendError> {
        let (token, generation) = self.current_token(timeout).await?;
        let reply = self
            .send(method.clone(), path, Some(&token), body.clone(), timeout)
            .await?;
        if reply.status != StatusCode::FORBIDDEN {
            self.note_success();
            return Ok(reply);
        }
        match self.reauthenticate(generation, timeout).await {
            Ok(true) => {}
            Ok(false) => return Ok(reply),
            Err(e @ BackendError::Timeout(_)) => return Err(e),
            Err(e) => {
                return Err(BackendError::Failure(format!(
                    "permission denied by transit, and authenticating again failed: {}",
                    detail(&e)
                )));
            }
        }
        let (token, _) = self.current_token(timeout).await?;
        let reply = self.send(method, path, Some(&token), body, timeout).await?;
        if reply.status != StatusCode::FORBIDDEN {
            self.note_success();
        }
        Ok(reply)
    }

    pub(super) fn vendor(&self) -> Option<&'static str> {
        *self.vendor.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn learn_vendor(&self, h: &SysHealth) {
        if let Some(v) = vendor_from_health(&h.version, h.enterprise) {
            *self.vendor.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        }
    }

    // -----------------------------------------------------------------------------------
    // Transit operations.
    // -----------------------------------------------------------------------------------

    pub(super) async fn sys_health(&self, timeout: Duration) -> Result<SysHealth, BackendError> {
        let reply = self
            .send(Method::GET, "sys/health", None, None, timeout)
            .await?;
        match reply.status.as_u16() {
            200 | 429 | 472 | 473 | 474 | 501 | 503 => {
                serde_json::from_slice(&reply.body).map_err(|e| unreadable("sys/health", &e))
            }
            _ => Err(status_error(reply.status, &reply.body)),
        }
    }

    /// `POST <mount>/keys/<name>`: an `aes256-gcm96` key, not exportable, no plaintext
    /// backup. Transit keeps an existing key as it is, so callers check for one first.
    pub(super) async fn post_new_key(&self, name: &str) -> Result<(), TransitError> {
        let body = serde_json::to_vec(&CreateKeyRequest {
            key_type: AES256_GCM96,
            exportable: false,
            allow_plaintext_backup: false,
        })
        .map_err(|_| BackendError::Failure("cannot encode the key request".to_owned()))?;
        let reply = self
            .call(
                Method::POST,
                &format!("{}/keys/{name}", self.mount),
                Some(Bytes::from(body)),
                ADMIN_TIMEOUT,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(status_error(reply.status, &reply.body).into());
        }
        tracing::info!(key_store = %self.store, key = %name, "transit key created");
        Ok(())
    }

    /// The key's facts, `None` when it does not exist.
    pub(super) async fn read_key(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<KeyData>, BackendError> {
        let reply = self
            .call(
                Method::GET,
                &format!("{}/keys/{name}", self.mount),
                None,
                timeout,
            )
            .await?;
        match reply.status {
            StatusCode::OK => {
                let r: KeyResponse =
                    serde_json::from_slice(&reply.body).map_err(|e| unreadable("key", &e))?;
                Ok(Some(r.data))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(status_error(s, &reply.body)),
        }
    }

    pub(super) async fn key_info(&self, key_id: &XksKeyId) -> Result<KeyInfo, BackendError> {
        let name = key_name(key_id)?;
        let key = self
            .read_key(name, self.timeout)
            .await?
            .ok_or_else(|| BackendError::KeyNotFound(name.to_owned()))?;
        Ok(key_info_of(&key))
    }

    pub(super) async fn encrypt_with(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        plaintext: &[u8],
        timeout: Duration,
    ) -> Result<EncryptOutput, BackendError> {
        if version == 0 {
            return Err(BackendError::UnknownKeyVersion(0));
        }
        let reply = self
            .crypto_call(
                "encrypt",
                name,
                version,
                encrypt_body(plaintext, aad, version),
                timeout,
                classify_encrypt_400,
            )
            .await?;
        let r: EncryptResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("encrypt", &e))?;
        check_ignored_parameters(r.warnings.as_deref())?;
        let split = parse_transit_ciphertext(&r.data.ciphertext).map_err(|e| {
            BackendError::Failure(format!("transit returned a ciphertext that {e}"))
        })?;
        if split.version != version {
            return Err(BackendError::Failure(format!(
                "transit encrypted with key version {} instead of the pinned {version}",
                split.version
            )));
        }
        if split.ciphertext.len() != plaintext.len() {
            return Err(BackendError::Failure(format!(
                "transit returned {} ciphertext bytes for {} plaintext bytes; is '{name}' an AES-GCM key?",
                split.ciphertext.len(),
                plaintext.len()
            )));
        }
        Ok(EncryptOutput {
            ciphertext: split.ciphertext,
            iv: split.iv,
            tag: split.tag,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn decrypt_with(
        &self,
        name: &str,
        version: u32,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        timeout: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if version == 0 {
            return Err(BackendError::UnknownKeyVersion(0));
        }
        // Transit only makes (and only accepts) 96-bit nonces and 128-bit tags.
        if iv.len() != NONCE_BYTES || tag.len() != TAG_BYTES {
            return Err(BackendError::InvalidCiphertext);
        }
        let reply = self
            .crypto_call(
                "decrypt",
                name,
                version,
                decrypt_body(version, iv, ciphertext, tag, aad),
                timeout,
                classify_decrypt_400,
            )
            .await?;
        let r: DecryptResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("decrypt", &e))?;
        check_ignored_parameters(r.warnings.as_deref())?;
        decode_secret(&r.data.plaintext).ok_or_else(|| {
            BackendError::Failure("transit returned plaintext that is not base64".to_owned())
        })
    }

    pub(super) async fn health(&self) -> Result<BackendHealth, BackendError> {
        let unavailable = |detail: String| BackendHealth {
            status: HealthStatus::Unavailable,
            detail,
        };
        let (sys, key) = tokio::join!(
            self.sys_health(self.timeout),
            self.read_key(&self.health_key, self.timeout)
        );
        let sys = match sys {
            Ok(sys) => sys,
            Err(e) => return Ok(unavailable(format!("sys/health: {}", detail(&e)))),
        };
        self.learn_vendor(&sys);
        let degraded = match classify_sys_health(&sys) {
            Ok(d) => d,
            Err(why) => return Ok(unavailable(format!("transit at {}: {why}", self.base))),
        };
        let key = match key {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Ok(unavailable(format!(
                    "the health key '{}' does not exist in {}/{}; create it as an {AES256_GCM96} key (e.g. `bao write -f {}/keys/{}`)",
                    self.health_key, self.base, self.mount, self.mount, self.health_key
                )));
            }
            Err(e) => {
                return Ok(unavailable(format!(
                    "cannot read the health key '{}': {}",
                    self.health_key,
                    detail(&e)
                )));
            }
        };
        if key.key_type != AES256_GCM96 {
            return Ok(unavailable(format!(
                "the health key '{}' is of type {}, not {AES256_GCM96}",
                self.health_key, key.key_type
            )));
        }
        if let Err(why) = self.health_round_trip(key.latest_version).await? {
            return Ok(unavailable(why));
        }
        if let Some(problem) = self.problem() {
            return Ok(BackendHealth {
                status: HealthStatus::Degraded,
                detail: format!("round trip ok, but token maintenance is failing: {problem}"),
            });
        }
        if let Some(detail) = degraded {
            return Ok(BackendHealth {
                status: HealthStatus::Degraded,
                detail,
            });
        }
        Ok(BackendHealth {
            status: HealthStatus::Active,
            detail: format!(
                "round trip ok with '{}' v{} ({} {})",
                self.health_key,
                key.latest_version,
                self.vendor().unwrap_or("Vault/OpenBao"),
                sys.version
            ),
        })
    }

    /// The health check's round trip with the health key at `version`: a random probe is
    /// encrypted and decrypted, and a decrypt with another AAD must fail. `Ok(Err(why))`:
    /// health is unavailable, for that reason.
    async fn health_round_trip(&self, version: u32) -> Result<Result<(), String>, BackendError> {
        let mut probe = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut probe[..])
            .map_err(|e| BackendError::Failure(format!("random source failed: {e}")))?;
        // Encrypt, decrypt, and prove the AAD is enforced: a decrypt with another AAD must
        // fail (a server that ignores `associated_data` would accept it).
        let round_trip = async {
            let out = self
                .encrypt_with(
                    &self.health_key,
                    version,
                    HEALTH_AAD,
                    &probe[..],
                    self.timeout,
                )
                .await?;
            let back = self
                .decrypt_with(
                    &self.health_key,
                    version,
                    &out.iv,
                    HEALTH_AAD,
                    &out.ciphertext,
                    &out.tag,
                    self.timeout,
                )
                .await?;
            let other_aad = self
                .decrypt_with(
                    &self.health_key,
                    version,
                    &out.iv,
                    b"xks-proxy transit health check, another AAD",
                    &out.ciphertext,
                    &out.tag,
                    self.timeout,
                )
                .await;
            match other_aad {
                Ok(_) => Ok((back, false)),
                Err(BackendError::InvalidCiphertext) => Ok((back, true)),
                Err(e) => Err(e),
            }
        };
        match round_trip.await {
            Ok((back, true)) if back[..] == probe[..] => Ok(Ok(())),
            Ok((_, false)) => Ok(Err(
                "transit ignores associated_data, so the AAD would not be authenticated; HashiCorp Vault 1.13+ or OpenBao is needed".to_owned(),
            )),
            Ok(_) => Ok(Err(
                "the health key round trip returned different data".to_owned(),
            )),
            Err(e) => Ok(Err(format!(
                "health key '{}' round trip failed: {}",
                self.health_key,
                detail(&e)
            ))),
        }
    }
}
