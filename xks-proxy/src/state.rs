//! The run-time state built from a validated config: key store services, SigV4 verifiers
//! and the credential table. Built whole, then swapped in whole (so a reload is atomic).

use sigv4_auth::{Credential, SigningSecret, Verifier, VerifierConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::Policy;
use crate::backend::KeyBackend;
use crate::backend::embedded::EmbeddedBackend;
use crate::config::{BackendConfig, KeyStoreConfig, ProxyConfig, defaults};
use crate::keystore::{KeyStoreFile, RootKey, StoreError};
use crate::metrics::Metrics;
use crate::quota::RequestQuota;
use crate::service::{KeyStoreService, KeyStoreSettings};

/// A credential and the key store it belongs to.
#[derive(Debug, Clone)]
pub struct CredentialEntry {
    /// Index into [`ProxyState::stores`].
    pub store: usize,
    /// The credential (with its signing-key cache).
    pub credential: Arc<Credential>,
}

/// Everything a request needs.
#[derive(Debug)]
pub struct ProxyState {
    /// Key stores, in config order.
    pub stores: Vec<Arc<KeyStoreService>>,
    /// One SigV4 verifier per key store (its accepted regions).
    pub verifiers: Vec<Verifier>,
    /// Access key id → credential.
    pub credentials: HashMap<String, CredentialEntry>,
    /// Largest request body read.
    pub max_body_bytes: usize,
    /// Secondary authorization (never applied to health), if configured.
    pub policy: Option<Arc<Policy>>,
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A key store's backend could not be opened.
    #[error("key store '{store}': {source}")]
    Store {
        /// The key store.
        store: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The authorization policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] crate::authz::PolicyError),
}

/// Opens the backend of one key store.
pub fn open_backend(ks: &KeyStoreConfig) -> Result<Arc<dyn KeyBackend>, StoreError> {
    let backend: Box<dyn KeyBackend> = match &ks.backend {
        BackendConfig::Embedded { store, root_key } => {
            let root = RootKey::load(root_key)?;
            Box::new(EmbeddedBackend::open(
                &ks.name,
                KeyStoreFile::new(store, root),
            )?)
        }
        BackendConfig::Pkcs11 {
            config,
            key_status_file,
            ..
        } => {
            let hsm = crate::backend::pkcs11::Pkcs11Backend::open(&ks.name, config.clone())
                .map_err(|e| StoreError::Refused(format!("PKCS#11: {e}")))?;
            Box::new(
                crate::backend::overlay::StatusOverlay::new(Box::new(hsm), key_status_file.clone())
                    .map_err(StoreError::Refused)?,
            )
        }
        BackendConfig::Transit {
            config,
            base_dir,
            key_status_file,
        } => {
            let transit = crate::backend::transit::TransitBackend::open(&ks.name, config, base_dir)
                .map_err(|e| StoreError::Refused(format!("Transit: {e}")))?;
            Box::new(
                crate::backend::overlay::StatusOverlay::new(
                    Box::new(transit),
                    key_status_file.clone(),
                )
                .map_err(StoreError::Refused)?,
            )
        }
    };
    #[cfg(feature = "test-hooks")]
    let backend: Box<dyn KeyBackend> = match &ks.fault_injection {
        Some(plan) => Box::new(crate::backend::faulty::FaultyBackend::new(
            backend,
            plan.clone(),
        )),
        None => backend,
    };
    Ok(Arc::from(backend))
}

impl ProxyState {
    /// Builds the state: opens every backend and indexes every credential; key stores count
    /// into `metrics` (which outlives reloads).
    pub fn build(cfg: &ProxyConfig, metrics: &Arc<Metrics>) -> Result<Self, StateError> {
        let mut stores = Vec::new();
        let mut verifiers = Vec::new();
        let mut credentials = HashMap::new();
        for (i, ks) in cfg.key_stores.iter().enumerate() {
            let backend = open_backend(ks).map_err(|source| StateError::Store {
                store: ks.name.clone(),
                source,
            })?;
            stores.push(Arc::new(KeyStoreService::new(
                KeyStoreSettings {
                    name: ks.name.clone(),
                    path_prefix: ks.path_prefix.clone(),
                    construction: ks.aad_construction,
                    quota: RequestQuota::new(ks.requests_per_second),
                    limits: cfg.limits,
                    health: cfg.health,
                },
                backend,
                metrics.clone(),
            )));
            verifiers.push(Verifier::new(VerifierConfig {
                service: defaults::SIGV4_SERVICE.to_owned(),
                accepted_regions: (!ks.regions.is_empty()).then(|| ks.regions.clone()),
                max_clock_skew: Duration::from_secs(xks_api::limits::MAX_CLOCK_SKEW_SECS as u64),
            }));
            for c in &ks.credentials {
                credentials.insert(
                    c.access_key_id.clone(),
                    CredentialEntry {
                        store: i,
                        credential: Arc::new(Credential::new(
                            c.access_key_id.clone(),
                            SigningSecret::new(c.secret.to_string()),
                        )),
                    },
                );
            }
        }
        let policy = match &cfg.authorization_policy {
            Some(path) => {
                let p = Policy::load(path)?;
                tracing::info!(policy = %path.display(), rules = ?p.rule_names(), "secondary authorization enabled");
                Some(Arc::new(p))
            }
            None => None,
        };
        Ok(Self {
            stores,
            verifiers,
            credentials,
            max_body_bytes: cfg.limits.max_body_bytes(),
            policy,
        })
    }
}
