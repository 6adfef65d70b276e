//! The KMS service behind the wire: operation dispatch, key lookup by id, ARN or alias,
//! changes to a key decided from a read and applied only if the key's state is still the
//! one they were decided from ([`Kms::change_key`]), and the mapping of storage errors (in
//! [`storage_error`], the only place).

use std::sync::Arc;

use crate::auth::{Caller, Callers};
use crate::catalogue::{ConnectionState, KeyState};
use crate::clock::Clock;
use crate::key_state::{Operation, usable_key};
use crate::protocol::KmsError;
use crate::storage::{KeyAddress, KeyRecord, Storage, StorageError};

/// Everything the operations need.
#[derive(Debug)]
pub struct Kms {
    /// Key and alias storage.
    pub storage: Arc<dyn Storage>,
    /// The root key sealing key material.
    pub root: root_key::RootKey,
    /// Configured callers (also the principals key policies may name).
    pub callers: Callers,
    /// The service clock.
    pub clock: Clock,
    /// KMS keys per account and Region.
    pub max_keys: u64,
    /// The grant quotas.
    pub grant_limits: crate::grants::GrantLimits,
    /// The client for external key store proxies.
    pub xks: crate::xks_client::XksClient,
    /// Periodic proxy health checks that succeeded.
    pub health_checks_ok: std::sync::atomic::AtomicU64,
    /// Periodic proxy health checks that failed.
    pub health_checks_failed: std::sync::atomic::AtomicU64,
    /// The last use of each key, not yet flushed to storage.
    pub usage: crate::last_usage::UsageTracker,
}

/// How often keys whose deletion window ended are deleted (by a task of the server; the
/// test clock's advance hook sweeps at once). [`Kms::find_key`] hides such a key in between.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Maps a storage error to the KMS error callers see. The only such mapping.
pub fn storage_error(e: StorageError) -> KmsError {
    match e {
        StorageError::NotFound => KmsError::not_found("The requested resource was not found."),
        StorageError::AlreadyExists(what) => {
            KmsError::client("AlreadyExistsException", format!("{what} already exists"))
        }
        StorageError::LimitExceeded(what) => KmsError::client("LimitExceededException", what),
        StorageError::XksKeyInUse => KmsError::client(
            "XksKeyAlreadyInUseException",
            "The external key is already associated with a KMS key in this external key store.",
        ),
        StorageError::Conflict(what) => KmsError::client("ConflictException", what),
        StorageError::StateChanged => KmsError::client(
            "ConflictException",
            "The key changed while the request was processed; retry it.",
        ),
        e @ StorageError::UnknownValue { .. } => KmsError::internal(format!("storage: {e}")),
        StorageError::Backend(what) => KmsError::internal(format!("storage: {what}")),
        // AWS's answer when a dependency does not answer in time: a 503 the SDKs retry.
        StorageError::Timeout(what) => {
            tracing::warn!(error = %what, "storage timed out");
            KmsError {
                name: "DependencyTimeoutException",
                message: "The system timed out while trying to fulfill the request. You can retry the request.".into(),
                status: 503,
            }
        }
    }
}

/// How many times [`Kms::change_key`] decides a change again because the key's state changed
/// under it; each retry means another request's change landed, so this bounds only a
/// pathological stream of changes to one key.
const MAX_DECISIONS: usize = 32;

/// The outcome of a conditional key write for [`Kms::change_key`]: `Ok(None)` when the key's
/// state changed (or the key vanished) under it, so the change must be decided again on a
/// fresh read.
pub fn raced<T>(write: Result<T, StorageError>) -> Result<Option<T>, StorageError> {
    match write {
        Ok(v) => Ok(Some(v)),
        Err(StorageError::StateChanged | StorageError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Which forms of key reference an operation accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef {
    /// Key id or key ARN only.
    KeyOnly,
    /// Key id, key ARN, alias name or alias ARN.
    KeyOrAlias,
}

impl Kms {
    /// Runs one operation for an authenticated caller. The cryptographic operations run as
    /// tasks on the runtime: besides CPU work they only read storage (WAL reads, which do
    /// not wait for writers) and await the proxy, a round trip a blocking thread would sit
    /// through (a profile showed the thread hand-offs costing more than the work). All
    /// others may write, and wait for the disk, so they run on the blocking pool. Either
    /// way a panic becomes an internal error whose text stays in the log.
    pub async fn handle(
        self: &Arc<Self>,
        operation: String,
        caller: Caller,
        body: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<serde_json::Value, KmsError> {
        let kms = self.clone();
        let name = operation.clone();
        let (request_id, event_id) = (caller.request_id.clone(), caller.event_id.clone());
        // Every operation is an authorization decision first (`crate::authz`), made where
        // the operation runs (it reads the key and its policy from storage).
        let crypto = crate::ops::CRYPTO_OPERATIONS.contains(&operation.as_str());
        let joined = if crypto && self.storage.reads_block() {
            // Reads wait on a database server: the whole operation runs on the blocking
            // pool, and awaits the proxy from there, so a slow or stopped database never
            // holds a runtime worker.
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                crate::authz::context::authorize(&kms, &operation, &caller, &body)?;
                runtime.block_on(crate::ops::dispatch_crypto(
                    &kms, &operation, &caller, &body,
                ))
            })
            .await
        } else if crypto {
            tokio::spawn(async move {
                crate::authz::context::authorize(&kms, &operation, &caller, &body)?;
                crate::ops::dispatch_crypto(&kms, &operation, &caller, &body).await
            })
            .await
        } else {
            tokio::task::spawn_blocking(move || {
                crate::authz::context::authorize(&kms, &operation, &caller, &body)?;
                crate::ops::dispatch(&kms, &operation, &caller, &body)
            })
            .await
        };
        let answer = joined.map_err(|e| {
            tracing::error!(error = %e, "an operation failed unexpectedly");
            KmsError::internal("An internal error occurred.")
        })??;
        self.usage
            .record_answer(&name, &answer, &request_id, &event_id, self.clock.now_ms());
        Ok(answer)
    }

    /// A key's state as callers see it: keys of a custom key store that is not CONNECTED are
    /// `Unavailable` (except while pending deletion).
    pub fn effective_state(&self, key: &KeyRecord) -> KeyState {
        if let Some(store_id) = &key.custom_key_store_id
            && key.key_state != KeyState::PendingDeletion
        {
            let connected = self
                .storage
                .get_custom_key_store(&key.account_id, &key.region, store_id)
                .ok()
                .flatten()
                .is_some_and(|s| s.connection_state == ConnectionState::Connected);
            if !connected {
                return KeyState::Unavailable;
            }
        }
        key.key_state
    }

    /// Whether `key` may be used for `op` (see [`usable_key`]); cryptographic operations
    /// see its [`Kms::effective_state`], the others its stored state.
    pub fn check_usable(&self, key: &KeyRecord, op: Operation) -> Result<(), KmsError> {
        let state = if op.is_cryptographic() {
            self.effective_state(key)
        } else {
            key.key_state
        };
        usable_key(key, state, op)
    }

    /// Changes the key `reference` (a key id or ARN) for `op`: reads it, checks that its
    /// state allows `op`, and runs `write`, which must make its storage write conditional
    /// on the state it was given (`&[key.key_state]`) and report a lost race through
    /// [`raced`] (`Ok(None)`). Then the key is read and judged again, as AWS would judge it
    /// now: a concurrent change either lands first and the decision is made from it (for
    /// example DisableKey losing to ScheduleKeyDeletion answers "pending deletion"), or
    /// lands after. Returns the key as read for the write that succeeded, and its result.
    pub fn change_key<T>(
        &self,
        caller: &Caller,
        reference: &str,
        op: Operation,
        mut write: impl FnMut(&KeyRecord) -> Result<Option<T>, KmsError>,
    ) -> Result<(KeyRecord, T), KmsError> {
        for _ in 0..MAX_DECISIONS {
            let key = self.find_key(caller, reference, KeyRef::KeyOnly)?;
            self.check_usable(&key, op)?;
            if let Some(v) = write(&key)? {
                return Ok((key, v));
            }
        }
        Err(storage_error(StorageError::StateChanged))
    }

    /// Deletes keys whose deletion window has ended.
    pub fn sweep_deletions(&self) {
        let now = self.clock.now_ms();
        if let Ok(due) = self.storage.keys_due_for_deletion(now) {
            for (account, region, key_id) in due {
                if key_id.starts_with("mrk-")
                    && let Ok(Some(key)) = self.storage.get_key(&account, &region, &key_id)
                    && crate::ops::hold_primary_with_replicas(self, &key)
                {
                    continue;
                }
                let address = KeyAddress {
                    account_id: &account,
                    region: &region,
                    key_id: &key_id,
                };
                match self.storage.delete_key_if_due(address, now) {
                    Ok(()) => {
                        tracing::info!(%account, %region, %key_id, "key deleted: its deletion window ended");
                    }
                    // Another process of a fleet on the same database swept it first: the
                    // database let exactly one delete happen.
                    Err(StorageError::NotFound) => {
                        tracing::debug!(%key_id, "key already deleted by another process");
                    }
                    // Cancelled or scheduled again since the query: it stays.
                    Err(StorageError::StateChanged) => {
                        tracing::info!(%key_id, "key not deleted: its deletion was cancelled or moved");
                    }
                    Err(e) => {
                        tracing::warn!(%key_id, error = %e, "could not delete a key whose deletion window ended");
                    }
                }
            }
        }
    }

    /// Everything the service clock drives: deletions whose window ended, automatic
    /// rotations that are due, imported material whose `ValidTo` passed. Each part is one
    /// indexed query when nothing is due.
    pub fn sweep_time_driven(&self) {
        self.sweep_deletions();
        crate::ops::sweep_rotations(self);
        crate::ops::sweep_expired_material(self);
        crate::ops::sweep_multi_region(self);
    }

    /// Finds a key by the reference a caller gave.
    pub fn find_key(
        &self,
        caller: &Caller,
        reference: &str,
        accepts: KeyRef,
    ) -> Result<KeyRecord, KmsError> {
        let not_found = |what: &str| KmsError::not_found(format!("{what} is not found."));
        let mut account = caller.account_id.as_str();
        let key_id = if let Some(rest) = reference.strip_prefix("arn:") {
            // arn:<partition>:kms:<region>:<account>:key/<id> or ...:alias/<name>
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() != 5 || parts[1] != "kms" {
                return Err(KmsError::not_found(format!("Invalid arn {reference}")));
            }
            // Another account's key only by ARN, and only for the operations AWS documents
            // as "Cross-account use: Yes" (the authorization decision then needs that
            // account's key policy and the caller's identity policy).
            if parts[2] != caller.region
                || (parts[3] != caller.account_id && !caller.cross_account)
                || parts[0] != caller.partition
            {
                return Err(not_found(reference));
            }
            account = parts[3];
            if let Some(id) = parts[4].strip_prefix("key/") {
                id.to_owned()
            } else if let Some(alias) = parts[4].strip_prefix("alias/") {
                if accepts == KeyRef::KeyOnly {
                    return Err(not_found(reference));
                }
                self.alias_target_in(account, &caller.region, &format!("alias/{alias}"))?
                    .ok_or_else(|| not_found(reference))?
            } else {
                return Err(KmsError::not_found(format!("Invalid arn {reference}")));
            }
        } else if reference.starts_with("alias/") {
            if accepts == KeyRef::KeyOnly {
                return Err(not_found(reference));
            }
            self.alias_target_in(&caller.account_id, &caller.region, reference)?
                .ok_or_else(|| {
                    KmsError::not_found(format!(
                        "Alias {} is not found.",
                        self.alias_arn(caller, reference)
                    ))
                })?
        } else {
            reference.to_owned()
        };
        let key = self
            .storage
            .get_key(account, &caller.region, &key_id)
            .map_err(storage_error)?
            .ok_or_else(|| {
                KmsError::not_found(format!(
                    "Key '{}' does not exist",
                    crate::catalogue::key_arn(caller.partition, &caller.region, account, &key_id)
                ))
            })?;
        // A key whose deletion window has ended is gone, even before the sweeper runs.
        if key.key_state == KeyState::PendingDeletion
            && key
                .deletion_date_ms
                .is_some_and(|d| d <= self.clock.now_ms())
        {
            let _ = self
                .storage
                .delete_key_if_due(key.address(), self.clock.now_ms());
            return Err(KmsError::not_found(format!(
                "Key '{}' does not exist",
                key.arn
            )));
        }
        Ok(key)
    }

    /// The key id an alias points at; a storage failure is an error, not "no such alias".
    fn alias_target_in(
        &self,
        account: &str,
        region: &str,
        alias: &str,
    ) -> Result<Option<String>, KmsError> {
        Ok(self
            .storage
            .get_alias(account, region, alias)
            .map_err(storage_error)?
            .map(|a| a.target_key_id))
    }

    /// The ARN of an alias.
    pub fn alias_arn(&self, caller: &Caller, alias: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:{alias}",
            caller.partition, caller.region, caller.account_id
        )
    }
}
