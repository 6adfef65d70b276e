//! The XKS operations of one logical key store, independent of HTTP.
//!
//! Owns the order of checks inside an operation, AAD construction, `ciphertextMetadata`,
//! the CDIV (hash the output, then prove it decrypts, then answer), per-call deadlines and
//! the mapping of backend errors to XKS errors (in [`backend_error`], the only place).

use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use xks_api::cdiv::{self, CdivInput};
use xks_api::types::{
    AES_GCM, DecryptRequest, DecryptResponse, EkmFleetMember, EncryptRequest, EncryptResponse,
    GetKeyMetadataRequest, GetKeyMetadataResponse, HealthRequest, HealthResponse, HealthStatus,
    KeyStatus, Operation,
};
use xks_api::{
    AadConstruction, Base64Bytes, CiphertextMetadata, ErrorName, SecretBytes, XksError, XksKeyId,
    limits,
};
use zeroize::Zeroizing;

use crate::backend::{BackendError, DecryptInput, EncryptInput, IvSource, KeyBackend, KeyInfo};
use crate::config::{HealthConfig, Limits};
use crate::metrics::{BackendCall, Metrics, StoreMetricsHandle};
use crate::quota::RequestQuota;

/// One logical key store at run time.
#[derive(Debug)]
pub struct KeyStoreService {
    /// Its name.
    pub name: String,
    /// Its URI path prefix.
    pub path_prefix: String,
    /// AAD construction for new ciphertexts and for ciphertexts without metadata.
    pub construction: AadConstruction,
    /// The key backend.
    pub backend: Arc<dyn KeyBackend>,
    /// The request quota.
    pub quota: RequestQuota,
    /// This store's metrics.
    pub metrics_handle: StoreMetricsHandle,
    metrics: Arc<Metrics>,
    limits: Limits,
    health: HealthConfig,
    health_cache: Mutex<Option<(Instant, HealthStatus)>>,
}

/// How a key store service is set up.
#[derive(Debug)]
pub struct KeyStoreSettings {
    /// Its name.
    pub name: String,
    /// Its URI path prefix.
    pub path_prefix: String,
    /// AAD construction.
    pub construction: AadConstruction,
    /// Request quota.
    pub quota: RequestQuota,
    /// Size limits and the backend deadline.
    pub limits: Limits,
    /// Health settings.
    pub health: HealthConfig,
}

fn err(name: ErrorName, message: impl AsRef<str>) -> XksError {
    XksError::new(name, message)
}

/// Maps a backend error to the XKS error the caller sees. The only such mapping.
pub fn backend_error(e: BackendError) -> XksError {
    let name = match &e {
        BackendError::KeyNotFound(_) => ErrorName::KeyNotFoundException,
        BackendError::UnknownKeyVersion(_) | BackendError::InvalidCiphertext => {
            ErrorName::InvalidCiphertextException
        }
        BackendError::UsageNotPermitted(_) => ErrorName::InvalidKeyUsageException,
        BackendError::Overloaded(_) => ErrorName::ThrottlingException,
        BackendError::Timeout(_) => ErrorName::DependencyTimeoutException,
        BackendError::Failure(_) => ErrorName::InternalException,
    };
    err(name, e.to_string())
}

/// What a request wants to do with a key, for [`check_key_use`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// GetKeyMetadata: any key, whatever its status and usages.
    Metadata,
    /// Encrypt; `verify` when the caller asked for a CDIV, which the proxy only returns
    /// after decrypting the new ciphertext, so the key must allow DECRYPT as well.
    Encrypt {
        /// A `ciphertextDataIntegrityValueAlgorithm` was requested.
        verify: bool,
    },
    /// Decrypt.
    Decrypt,
}

/// Which key status and usages allow which use, and the error each refusal gets. The only
/// such rule: every backend's key facts go through it before any cryptographic call.
///
/// A disabled key is `InvalidStateException` (checked first); a missing usage is
/// `InvalidKeyUsageException`; GetKeyMetadata is always allowed (it reports both).
pub fn check_key_use(key_id: &XksKeyId, info: &KeyInfo, use_: KeyUse) -> Result<(), XksError> {
    let (needs_encrypt, needs_decrypt) = match use_ {
        KeyUse::Metadata => return Ok(()),
        KeyUse::Encrypt { verify } => (true, verify),
        KeyUse::Decrypt => (false, true),
    };
    if info.status != KeyStatus::Enabled {
        return Err(err(
            ErrorName::InvalidStateException,
            format!("key {key_id} is disabled"),
        ));
    }
    if needs_encrypt && !info.usages.encrypt {
        return Err(err(
            ErrorName::InvalidKeyUsageException,
            format!("key {key_id} does not allow Encrypt"),
        ));
    }
    if needs_decrypt && !info.usages.decrypt {
        let message = if needs_encrypt {
            format!(
                "key {key_id} does not allow Decrypt, which an Encrypt with \
                 ciphertextDataIntegrityValueAlgorithm needs to verify the ciphertext"
            )
        } else {
            format!("key {key_id} does not allow Decrypt")
        };
        return Err(err(ErrorName::InvalidKeyUsageException, message));
    }
    Ok(())
}

fn check_algorithm(alg: &str) -> Result<(), XksError> {
    if alg == AES_GCM {
        Ok(())
    } else {
        Err(err(
            ErrorName::UnsupportedOperationException,
            format!("encryptionAlgorithm '{alg}' is not supported; use AES_GCM"),
        ))
    }
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), XksError> {
    if len > max {
        return Err(err(
            ErrorName::UnsupportedOperationException,
            format!("{what} is {len} bytes; this proxy accepts at most {max}"),
        ));
    }
    Ok(())
}

impl KeyStoreService {
    /// A key store service over `backend`, counting into `metrics`.
    pub fn new(
        settings: KeyStoreSettings,
        backend: Arc<dyn KeyBackend>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics_handle: metrics.ensure_key_store(&settings.name),
            metrics,
            name: settings.name,
            path_prefix: settings.path_prefix,
            construction: settings.construction,
            backend,
            quota: settings.quota,
            limits: settings.limits,
            health: settings.health,
            health_cache: Mutex::new(None),
        }
    }

    fn record_reinitializations(&self) {
        if let Some(n) = self.backend.reinitializations() {
            self.metrics
                .backend_reinitializations(&self.metrics_handle, n);
        }
    }

    async fn deadline<T>(
        &self,
        call: BackendCall,
        what: &str,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, XksError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.limits.backend_deadline, fut).await;
        // Answers about the caller's input are not backend errors.
        let ok = matches!(
            outcome,
            Ok(Ok(_)
                | Err(BackendError::KeyNotFound(_)
                    | BackendError::InvalidCiphertext
                    | BackendError::UnknownKeyVersion(_)))
        );
        self.metrics
            .backend_call(&self.metrics_handle, call, ok, started.elapsed());
        self.record_reinitializations();
        match outcome {
            Ok(r) => r.map_err(backend_error),
            Err(_) => Err(err(
                ErrorName::DependencyTimeoutException,
                format!(
                    "the key backend did not answer {what} within {} ms",
                    self.limits.backend_deadline.as_millis()
                ),
            )),
        }
    }

    /// The algorithm and the sizes are within what this proxy implements (else 501).
    fn check_supported(
        &self,
        algorithm: &str,
        (what, len, max): (&str, usize, usize),
        aad: Option<&[u8]>,
    ) -> Result<(), XksError> {
        check_algorithm(algorithm)?;
        check_len(what, len, max)?;
        check_len(
            "additionalAuthenticatedData",
            aad.map_or(0, <[u8]>::len),
            self.limits.max_aad_bytes,
        )
    }

    /// The key's facts, once the key may be used for `use_` (see [`check_key_use`]). The
    /// backend's reserved health-check key is refused here, before any backend call, with
    /// the same answer as a key the backend does not hold.
    async fn usable_key(&self, key_id: &XksKeyId, use_: KeyUse) -> Result<KeyInfo, XksError> {
        if self.backend.health_key_id() == Some(key_id.as_str()) {
            return Err(backend_error(BackendError::KeyNotFound(key_id.to_string())));
        }
        let info = self
            .deadline(
                BackendCall::KeyInfo,
                "a key lookup",
                self.backend.key_info(key_id),
            )
            .await?;
        check_key_use(key_id, &info, use_)?;
        Ok(info)
    }

    /// GetKeyMetadata.
    pub async fn get_key_metadata(
        &self,
        key_id: &XksKeyId,
        req: &GetKeyMetadataRequest,
    ) -> Result<GetKeyMetadataResponse, XksError> {
        require(&req.request_metadata, Operation::GetKeyMetadata)?;
        let info = self.usable_key(key_id, KeyUse::Metadata).await?;
        Ok(GetKeyMetadataResponse {
            key_spec: info.key_spec,
            key_usage: info.usages.names(),
            key_status: info.status,
        })
    }

    /// Encrypt.
    pub async fn encrypt(
        &self,
        key_id: &XksKeyId,
        req: &EncryptRequest,
    ) -> Result<EncryptResponse, XksError> {
        require(&req.request_metadata, Operation::Encrypt)?;
        let want_cdiv = match req.ciphertext_data_integrity_value_algorithm.as_deref() {
            None => false,
            Some(cdiv::SHA_256) => true,
            Some(other) => {
                return Err(err(
                    ErrorName::UnsupportedOperationException,
                    format!(
                        "ciphertextDataIntegrityValueAlgorithm '{other}' is not supported; use SHA_256"
                    ),
                ));
            }
        };
        let info = self
            .usable_key(key_id, KeyUse::Encrypt { verify: want_cdiv })
            .await?;
        let aad = req
            .additional_authenticated_data
            .as_ref()
            .map(Base64Bytes::as_slice);
        self.check_supported(
            &req.encryption_algorithm,
            (
                "plaintext",
                req.plaintext.len(),
                self.limits.max_plaintext_bytes,
            ),
            aad,
        )?;

        let metadata = CiphertextMetadata::new(self.construction, info.current_version).encode();
        let gcm_aad = self
            .construction
            .build(aad, &metadata)
            .map_err(|e| err(ErrorName::ValidationException, e.to_string()))?;
        let iv = match self.backend.iv_source() {
            IvSource::Proxy => {
                let mut iv = [0u8; limits::GENERATED_IV_BYTES];
                getrandom::fill(&mut iv).map_err(|e| {
                    err(
                        ErrorName::InternalException,
                        format!("random source failed: {e}"),
                    )
                })?;
                Some(iv)
            }
            IvSource::Backend => None,
        };
        let out = self
            .deadline(
                BackendCall::Encrypt,
                "encrypt",
                self.backend.encrypt(EncryptInput {
                    key_id,
                    version: info.current_version,
                    iv,
                    aad: &gcm_aad,
                    plaintext: req.plaintext.expose(),
                }),
            )
            .await?;
        if out.ciphertext.len() != req.plaintext.len()
            || !limits::IV_LENGTHS.contains(&out.iv.len())
            || out.tag.len() != limits::TAG_BYTES
        {
            return Err(err(
                ErrorName::InternalException,
                "the key backend returned a malformed AES-GCM result",
            ));
        }
        let cdiv_value = if want_cdiv {
            // Spec order: hash what we are about to return, then prove it decrypts.
            let value = cdiv::compute(&CdivInput {
                aad,
                metadata: Some(&metadata),
                iv: &out.iv,
                ciphertext: &out.ciphertext,
                tag: &out.tag,
            });
            let back = self
                .deadline(
                    BackendCall::Decrypt,
                    "the verifying decrypt",
                    self.backend.decrypt(DecryptInput {
                        key_id,
                        version: info.current_version,
                        iv: &out.iv,
                        aad: &gcm_aad,
                        ciphertext: &out.ciphertext,
                        tag: &out.tag,
                    }),
                )
                .await
                .map_err(|e| {
                    err(
                        ErrorName::InternalException,
                        format!("the ciphertext did not decrypt back: {}", e.message),
                    )
                })?;
            if !bool::from(back.as_slice().ct_eq(req.plaintext.expose())) {
                return Err(err(
                    ErrorName::InternalException,
                    "the ciphertext decrypted to different data",
                ));
            }
            Some(Base64Bytes(value.to_vec()))
        } else {
            None
        };
        Ok(EncryptResponse {
            ciphertext: Base64Bytes(out.ciphertext),
            initialization_vector: Base64Bytes(out.iv),
            authentication_tag: Base64Bytes(out.tag),
            ciphertext_metadata: Some(Base64Bytes(metadata)),
            ciphertext_data_integrity_value: cdiv_value,
        })
    }

    /// Decrypt.
    pub async fn decrypt(
        &self,
        key_id: &XksKeyId,
        req: &DecryptRequest,
    ) -> Result<DecryptResponse, XksError> {
        require(&req.request_metadata, Operation::Decrypt)?;
        let iv_len = req.initialization_vector.len();
        if !limits::IV_LENGTHS.contains(&iv_len) {
            return Err(err(
                ErrorName::ValidationException,
                format!("initializationVector is {iv_len} bytes; it must be 12 or 16"),
            ));
        }
        let tag_len = req.authentication_tag.len();
        if tag_len != limits::TAG_BYTES {
            return Err(err(
                ErrorName::ValidationException,
                format!("authenticationTag is {tag_len} bytes; it must be 16"),
            ));
        }
        let raw_metadata = req.ciphertext_metadata.as_ref().map(Base64Bytes::as_slice);
        if let Some(m) = raw_metadata.filter(|m| m.len() > limits::MAX_CIPHERTEXT_METADATA_BYTES) {
            return Err(err(
                ErrorName::ValidationException,
                format!(
                    "ciphertextMetadata is {} bytes; at most 20 are allowed",
                    m.len()
                ),
            ));
        }
        self.usable_key(key_id, KeyUse::Decrypt).await?;
        let aad = req
            .additional_authenticated_data
            .as_ref()
            .map(Base64Bytes::as_slice);
        self.check_supported(
            &req.encryption_algorithm,
            (
                "ciphertext",
                req.ciphertext.len(),
                self.limits.max_ciphertext_bytes,
            ),
            aad,
        )?;

        let meta = match raw_metadata {
            None => CiphertextMetadata::absent(self.construction),
            Some(m) => CiphertextMetadata::decode(m)
                .map_err(|e| err(ErrorName::InvalidCiphertextException, e.to_string()))?,
        };
        let gcm_aad = meta
            .construction
            .build(aad, raw_metadata.unwrap_or_default())
            .map_err(|e| err(ErrorName::ValidationException, e.to_string()))?;
        let plaintext: Zeroizing<Vec<u8>> = self
            .deadline(
                BackendCall::Decrypt,
                "decrypt",
                self.backend.decrypt(DecryptInput {
                    key_id,
                    version: meta.key_version,
                    iv: req.initialization_vector.as_slice(),
                    aad: &gcm_aad,
                    ciphertext: req.ciphertext.as_slice(),
                    tag: req.authentication_tag.as_slice(),
                }),
            )
            .await?;
        if plaintext.len() != req.ciphertext.len() {
            return Err(err(
                ErrorName::InternalException,
                "the key backend returned plaintext of the wrong length",
            ));
        }
        Ok(DecryptResponse {
            plaintext: SecretBytes::from(plaintext),
        })
    }

    /// GetHealthStatus: a deep check, cached for at most the configured time.
    pub async fn health(&self, req: &HealthRequest) -> Result<HealthResponse, XksError> {
        require(&req.request_metadata, Operation::Health)?;
        let status = {
            let mut cache = self.health_cache.lock().await;
            match *cache {
                Some((at, status)) if at.elapsed() < self.health.cache => status,
                _ => {
                    let status = self.deep_check().await;
                    self.metrics.health_check(&self.metrics_handle, status);
                    *cache = Some((Instant::now(), status));
                    status
                }
            }
        };
        let id = self.backend.identity();
        Ok(HealthResponse {
            xks_proxy_fleet_size: self.health.fleet_size,
            xks_proxy_vendor: "xks-stack".into(),
            xks_proxy_model: format!("xks-proxy {}", env!("CARGO_PKG_VERSION")),
            ekm_vendor: id.vendor,
            ekm_fleet_details: vec![EkmFleetMember {
                id: self.name.clone(),
                model: id.model,
                health_status: status,
            }],
        })
    }

    async fn deep_check(&self) -> HealthStatus {
        let budget = self.limits.backend_deadline.max(Duration::from_millis(1));
        let started = Instant::now();
        let outcome = tokio::time::timeout(budget, self.backend.health_check()).await;
        let ok = matches!(&outcome, Ok(Ok(h)) if h.status == HealthStatus::Active);
        self.metrics.backend_call(
            &self.metrics_handle,
            BackendCall::Health,
            ok,
            started.elapsed(),
        );
        self.record_reinitializations();
        match outcome {
            Ok(Ok(h)) => {
                if h.status != HealthStatus::Active {
                    tracing::warn!(key_store = %self.name, status = ?h.status, detail = %h.detail, "deep health check");
                }
                h.status
            }
            Ok(Err(e)) => {
                tracing::warn!(key_store = %self.name, error = %e, "deep health check failed");
                HealthStatus::Unavailable
            }
            Err(_) => {
                tracing::warn!(key_store = %self.name, "deep health check timed out");
                HealthStatus::Unavailable
            }
        }
    }
}

fn require(meta: &xks_api::types::RequestMetadata, op: Operation) -> Result<(), XksError> {
    meta.require_key_fields(op).map_err(|field| {
        err(
            ErrorName::ValidationException,
            format!("{field} is required"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendFuture, BackendHealth, BackendIdentity, EncryptOutput};
    use crate::keystore::KeyUsages;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ENCRYPT_ONLY: KeyUsages = KeyUsages {
        encrypt: true,
        decrypt: false,
    };
    const DECRYPT_ONLY: KeyUsages = KeyUsages {
        encrypt: false,
        decrypt: true,
    };

    fn info(status: KeyStatus, usages: KeyUsages) -> KeyInfo {
        KeyInfo {
            key_spec: "AES_256".into(),
            status,
            usages,
            current_version: 1,
        }
    }

    fn outcome(status: KeyStatus, usages: KeyUsages, use_: KeyUse) -> Option<ErrorName> {
        let id = XksKeyId::parse("k").expect("id");
        check_key_use(&id, &info(status, usages), use_)
            .err()
            .map(|e| e.name)
    }

    #[test]
    fn which_usage_allows_which_use() {
        use ErrorName::{InvalidKeyUsageException as Usage, InvalidStateException as State};
        let plain = KeyUse::Encrypt { verify: false };
        let cdiv = KeyUse::Encrypt { verify: true };
        let on = KeyStatus::Enabled;
        for (usages, expect) in [
            (KeyUsages::BOTH, [None, None, None, None]),
            (ENCRYPT_ONLY, [None, None, Some(Usage), Some(Usage)]),
            (DECRYPT_ONLY, [None, Some(Usage), Some(Usage), None]),
            (
                KeyUsages::NONE,
                [None, Some(Usage), Some(Usage), Some(Usage)],
            ),
        ] {
            let got =
                [KeyUse::Metadata, plain, cdiv, KeyUse::Decrypt].map(|u| outcome(on, usages, u));
            assert_eq!(got, expect, "{usages:?}");
        }
        // A disabled key is a state error before any usage question; metadata still answers.
        for usages in [KeyUsages::BOTH, KeyUsages::NONE] {
            let off = KeyStatus::Disabled;
            assert_eq!(outcome(off, usages, KeyUse::Metadata), None);
            for u in [plain, cdiv, KeyUse::Decrypt] {
                assert_eq!(outcome(off, usages, u), Some(State), "{usages:?} {u:?}");
            }
        }
    }

    /// A backend with one key of the given usages and a health key reachable by id, counting
    /// its calls.
    #[derive(Debug)]
    struct Recording {
        usages: KeyUsages,
        key_info: AtomicUsize,
        crypto: AtomicUsize,
        health: AtomicUsize,
    }

    impl KeyBackend for Recording {
        fn identity(&self) -> BackendIdentity {
            BackendIdentity {
                vendor: "test".into(),
                model: "recording".into(),
            }
        }
        fn iv_source(&self) -> IvSource {
            IvSource::Proxy
        }
        fn key_info<'a>(&'a self, _: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
            self.key_info.fetch_add(1, Ordering::SeqCst);
            let usages = self.usages;
            Box::pin(async move { Ok(info(KeyStatus::Enabled, usages)) })
        }
        fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
            self.crypto.fetch_add(1, Ordering::SeqCst);
            let n = input.plaintext.len();
            Box::pin(async move {
                Ok(EncryptOutput {
                    ciphertext: vec![0; n],
                    iv: vec![0; 12],
                    tag: vec![0; 16],
                })
            })
        }
        fn decrypt<'a>(&'a self, _: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
            self.crypto.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(BackendError::UsageNotPermitted("test".into())) })
        }
        fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
            self.health.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(BackendHealth {
                    status: HealthStatus::Active,
                    detail: "ok".into(),
                })
            })
        }
        fn health_key_id(&self) -> Option<&str> {
            Some("the-health-key")
        }
    }

    fn service(usages: KeyUsages) -> (KeyStoreService, Arc<Recording>) {
        let backend = Arc::new(Recording {
            usages,
            key_info: AtomicUsize::new(0),
            crypto: AtomicUsize::new(0),
            health: AtomicUsize::new(0),
        });
        let s = KeyStoreService::new(
            KeyStoreSettings {
                name: "s".into(),
                path_prefix: "/s".into(),
                construction: AadConstruction::Spec,
                quota: RequestQuota::new(0),
                limits: Limits::default(),
                health: HealthConfig {
                    cache: Duration::ZERO,
                    fleet_size: 1,
                },
            },
            backend.clone(),
            Arc::new(Metrics::default()),
        );
        (s, backend)
    }

    fn request<T: serde::de::DeserializeOwned>(op: &str, mut body: serde_json::Value) -> T {
        body["requestMetadata"] = serde_json::json!({
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/k",
            "kmsOperation": op,
            "kmsRequestId": "r-1",
        });
        serde_json::from_value(body).expect("request")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn encrypt_with_cdiv_on_a_key_that_cannot_decrypt_never_reaches_the_backend() {
        let (s, b) = service(ENCRYPT_ONLY);
        let id = XksKeyId::parse("k").expect("id");
        let body = serde_json::json!({"plaintext": "AAAA", "encryptionAlgorithm": "AES_GCM"});
        let mut with_cdiv = body.clone();
        with_cdiv["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256".into();
        let e = rt()
            .block_on(s.encrypt(&id, &request("Encrypt", with_cdiv)))
            .expect_err("refused");
        assert_eq!(e.name, ErrorName::InvalidKeyUsageException, "{}", e.message);
        assert_eq!(b.crypto.load(Ordering::SeqCst), 0);
        // Without a CDIV the same key encrypts.
        rt().block_on(s.encrypt(&id, &request("Encrypt", body)))
            .expect("encrypt");
        assert_eq!(b.crypto.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_backends_health_key_is_not_found_but_still_checks_health() {
        let (s, b) = service(KeyUsages::BOTH);
        let id = XksKeyId::parse("the-health-key").expect("id");
        let r = rt();
        let e = r
            .block_on(s.get_key_metadata(&id, &request("GetKeyMetadata", serde_json::json!({}))))
            .expect_err("hidden");
        assert_eq!(e.name, ErrorName::KeyNotFoundException);
        let body = serde_json::json!({"plaintext": "AAAA", "encryptionAlgorithm": "AES_GCM"});
        let e = r
            .block_on(s.encrypt(&id, &request("Encrypt", body)))
            .expect_err("hidden");
        assert_eq!(e.name, ErrorName::KeyNotFoundException);
        assert_eq!(b.key_info.load(Ordering::SeqCst), 0, "no backend lookup");
        assert_eq!(b.crypto.load(Ordering::SeqCst), 0);
        let h = r
            .block_on(s.health(&request("GetHealthStatus", serde_json::json!({}))))
            .expect("health");
        assert_eq!(h.ekm_fleet_details[0].health_status, HealthStatus::Active);
        assert_eq!(b.health.load(Ordering::SeqCst), 1);
    }
}
