//! The key backend contract: what a key manager must do for the proxy.
//!
//! The proxy owns AAD construction, `ciphertextMetadata`, the CDIV, key status and usage
//! checks, deadlines and error mapping. A backend only does keyed AES-GCM with a given key
//! version, reports key facts, and runs a health round trip with its dedicated test key,
//! which the proxy keeps out of the XKS API ([`KeyBackend::health_key_id`]).
//!
//! The contract is async (a backend may call a remote key manager), allows blocking backends
//! (they run their work on a blocking pool, never on the runtime's workers), lets the backend
//! choose the IV ([`IvSource::Backend`]) for HSMs that insist on it, and is always called
//! under a per-call deadline by the proxy.

pub mod embedded;
#[cfg(feature = "test-hooks")]
pub mod faulty;
pub mod overlay;
pub mod pkcs11;
pub mod transit;

use std::future::Future;
use std::pin::Pin;
use xks_api::XksKeyId;
use xks_api::types::{HealthStatus, KeyStatus};
use zeroize::Zeroizing;

use crate::keystore::KeyUsages;

/// A boxed future returned by backend calls.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// Who makes the GCM IV on encrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvSource {
    /// The proxy passes a fresh random 12-byte IV.
    Proxy,
    /// The backend generates the IV and returns it.
    Backend,
}

/// Facts about a key the proxy needs before a crypto call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `AES_256`, or `<TYPE>_<bits>` for keys the backend holds but the XKS API cannot use.
    pub key_spec: String,
    /// Status as kept by the proxy.
    pub status: KeyStatus,
    /// Usages as kept by the proxy.
    pub usages: KeyUsages,
    /// The version new encryptions use.
    pub current_version: u32,
}

/// Input of a backend encrypt.
#[derive(Debug)]
pub struct EncryptInput<'a> {
    /// The external key.
    pub key_id: &'a XksKeyId,
    /// The key version to use (as returned by [`KeyBackend::key_info`]).
    pub version: u32,
    /// The IV when [`IvSource::Proxy`], else `None`.
    pub iv: Option<[u8; 12]>,
    /// The full AES-GCM AAD built by the proxy.
    pub aad: &'a [u8],
    /// The plaintext.
    pub plaintext: &'a [u8],
}

/// Output of a backend encrypt, split as the XKS wire wants it.
#[derive(Debug)]
pub struct EncryptOutput {
    /// Same length as the plaintext.
    pub ciphertext: Vec<u8>,
    /// 12 or 16 bytes.
    pub iv: Vec<u8>,
    /// 16 bytes.
    pub tag: Vec<u8>,
}

/// Input of a backend decrypt.
#[derive(Debug)]
pub struct DecryptInput<'a> {
    /// The external key.
    pub key_id: &'a XksKeyId,
    /// The key version named by the ciphertext's metadata.
    pub version: u32,
    /// 12 or 16 bytes.
    pub iv: &'a [u8],
    /// The full AES-GCM AAD built by the proxy.
    pub aad: &'a [u8],
    /// The ciphertext.
    pub ciphertext: &'a [u8],
    /// 16 bytes.
    pub tag: &'a [u8],
}

/// Result of a backend health round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// ACTIVE, DEGRADED or UNAVAILABLE.
    pub status: HealthStatus,
    /// Why, for logs (never sent to KMS).
    pub detail: String,
}

/// Who the backend is, for the health response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendIdentity {
    /// `ekmVendor`.
    pub vendor: String,
    /// `ekmFleetDetails[].model`.
    pub model: String,
}

/// What can go wrong in a backend, in terms the proxy maps to XKS errors in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The key does not exist in the backend.
    #[error("key {0} not found")]
    KeyNotFound(String),
    /// The ciphertext names a key version the backend does not have.
    #[error("key version {0} not found")]
    UnknownKeyVersion(u32),
    /// Authentication of the ciphertext failed (tampered data or wrong AAD).
    #[error("ciphertext failed authentication")]
    InvalidCiphertext,
    /// The backend refused the operation for this key (e.g. usage not permitted).
    #[error("key usage not permitted: {0}")]
    UsageNotPermitted(String),
    /// The backend is overloaded (e.g. no session free in time).
    #[error("backend overloaded: {0}")]
    Overloaded(String),
    /// The backend did not answer in time.
    #[error("backend timed out: {0}")]
    Timeout(String),
    /// Any other backend failure.
    #[error("backend failure: {0}")]
    Failure(String),
}

/// A key manager behind the proxy.
pub trait KeyBackend: Send + Sync + std::fmt::Debug + 'static {
    /// Vendor and model, for the health response.
    fn identity(&self) -> BackendIdentity;

    /// Who makes the IV.
    fn iv_source(&self) -> IvSource;

    /// Facts about `key_id`, or [`BackendError::KeyNotFound`].
    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo>;

    /// AES-GCM encrypt with the given key version.
    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput>;

    /// AES-GCM decrypt with the given key version.
    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>>;

    /// A real encrypt + decrypt with the dedicated health-check key, plus any other checks.
    fn health_check(&self) -> BackendFuture<'_, BackendHealth>;

    /// The id under which the dedicated health-check key is an ordinary key of the key
    /// manager (a PKCS#11 label, a Transit key name), if it is one. The proxy answers
    /// `KeyNotFoundException` for it through the XKS API, as for a key the backend does not
    /// hold: the health key is not an API key. `None` (the default) for a backend whose
    /// health key lives outside the key namespace (the embedded store's).
    fn health_key_id(&self) -> Option<&str> {
        None
    }

    /// How many times the backend has re-initialised its connection to the key manager
    /// (e.g. a PKCS#11 module finalised and loaded again), for backends that can; `None`
    /// for those that have no such thing. Exported as a metric.
    fn reinitializations(&self) -> Option<u64> {
        None
    }
}
