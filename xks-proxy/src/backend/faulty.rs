//! A fault-injecting wrapper around a real backend (feature `test-hooks` only).
//!
//! Lets the end-to-end suite provoke the errors a healthy backend never produces
//! (InternalException, DependencyTimeoutException, ThrottlingException from the backend)
//! through the real server, per key id, while every other key is served normally.

use std::collections::HashSet;
use std::time::Duration;
use xks_api::XksKeyId;
use zeroize::Zeroizing;

use super::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};

/// Which keys misbehave, and how.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Keys whose crypto calls fail with a backend failure.
    #[serde(default)]
    pub failing_keys: HashSet<String>,
    /// Keys whose calls sleep for `slow_ms` first.
    #[serde(default)]
    pub slow_keys: HashSet<String>,
    /// How long slow keys sleep.
    #[serde(default)]
    pub slow_ms: u64,
    /// Keys whose crypto calls report an overloaded backend.
    #[serde(default)]
    pub overloaded_keys: HashSet<String>,
    /// Make the health round trip fail.
    #[serde(default)]
    pub failing_health: bool,
}

/// The wrapper.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Box<dyn KeyBackend>,
    plan: FaultPlan,
}

impl FaultyBackend {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: Box<dyn KeyBackend>, plan: FaultPlan) -> Self {
        tracing::warn!("fault injection is active for this key store (test build)");
        Self { inner, plan }
    }

    async fn before(&self, key_id: &XksKeyId, crypto: bool) -> Result<(), BackendError> {
        if self.plan.slow_keys.contains(key_id.as_str()) {
            tokio::time::sleep(Duration::from_millis(self.plan.slow_ms)).await;
        }
        if crypto && self.plan.failing_keys.contains(key_id.as_str()) {
            return Err(BackendError::Failure("injected backend failure".into()));
        }
        if crypto && self.plan.overloaded_keys.contains(key_id.as_str()) {
            return Err(BackendError::Overloaded("injected: no session free".into()));
        }
        Ok(())
    }
}

impl KeyBackend for FaultyBackend {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity()
    }

    fn iv_source(&self) -> IvSource {
        self.inner.iv_source()
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        Box::pin(async move {
            self.before(key_id, false).await?;
            self.inner.key_info(key_id).await
        })
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        Box::pin(async move {
            self.before(input.key_id, true).await?;
            self.inner.encrypt(input).await
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            self.before(input.key_id, true).await?;
            self.inner.decrypt(input).await
        })
    }

    fn reinitializations(&self) -> Option<u64> {
        self.inner.reinitializations()
    }

    fn health_key_id(&self) -> Option<&str> {
        self.inner.health_key_id()
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        Box::pin(async move {
            if self.plan.failing_health {
                return Err(BackendError::Failure("injected health failure".into()));
            }
            self.inner.health_check().await
        })
    }
}
