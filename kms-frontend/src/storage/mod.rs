//! Storage of KMS keys (metadata and sealed key material), aliases, tags and external custom
//! key stores, per account and region.
//!
//! [`Storage`] is the contract; [`SqliteStorage`] is the embedded default (one SQLite file in
//! WAL mode, `synchronous = FULL`); `PgStorage` (feature `postgres`, on by default) is the
//! same contract on PostgreSQL, for a fleet of front ends on one database.
//!
//! Rules every backend keeps:
//! - Uniqueness (key ids, alias names, tag keys of a key, the external key of a custom key
//!   store; custom key store ids, names, proxy URIs and VPC endpoint services), the reference
//!   of a key to its custom key store, and the per-region key and custom key store limits are
//!   enforced by the database, inside transactions, never by process memory: several
//!   processes may share one database.
//! - Every write is one transaction: it happens entirely or not at all, and is durable once
//!   the call returns `Ok`.
//! - Key material and proxy credentials arrive sealed by the caller and are stored as opaque
//!   bytes; nothing here prints them ([`KeyRecord`]'s and [`CustomKeyStoreRecord`]'s `Debug`
//!   show their length only).
//! - Listing markers are opaque strings produced by the backend; a marker is only meaningful
//!   to the same listing (same account, region and filter) that produced it.
//!
//! The trait is synchronous. Writes wait for the disk, so async callers run them in
//! `tokio::task::spawn_blocking`; the cryptographic operations call the read methods
//! directly from their tasks (see `Kms::handle`).

use std::fmt;

mod group_commit;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgStorage;
pub use sqlite::SqliteStorage;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_grants;
#[cfg(test)]
mod tests_last_usage;
#[cfg(test)]
mod tests_leases;
#[cfg(test)]
mod tests_materials;
#[cfg(test)]
mod tests_multi_region;

pub use crate::catalogue::{ConnectionState, KeyState};

/// Where a key lives: its account, Region and key id (the primary key every backend uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAddress<'a> {
    /// The owning AWS account id.
    pub account_id: &'a str,
    /// The AWS region.
    pub region: &'a str,
    /// The key id.
    pub key_id: &'a str,
}

/// The deletion date and waiting period of a key scheduled for deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledDeletion {
    /// When the key is due to be deleted, milliseconds since the Unix epoch.
    pub date_ms: i64,
    /// The waiting period, in days.
    pub window_days: u32,
}

/// A KMS key as stored: its metadata, its sealed key material (if any) and its tags.
///
/// Everything is written by [`Storage::create_key`]; afterwards each mutable part has its own
/// narrow, conditional write ([`Storage::transition_key_state`] for the state and deletion
/// date, [`Storage::set_key_description`], [`Storage::set_key_policy`],
/// [`Storage::tag_key`] and [`Storage::untag_key`]), so concurrent changes to different
/// parts of one key never undo each other, and every change applies only if the key is
/// still in the state the caller decided it from.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The owning AWS account id.
    pub account_id: String,
    /// The AWS region the key lives in.
    pub region: String,
    /// The key id (a UUID, or `mrk-…` for multi-Region keys); unique in (account, region).
    pub key_id: String,
    /// The key ARN.
    pub arn: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub creation_date_ms: i64,
    /// The key description (may be empty).
    pub description: String,
    /// The key spec (`SYMMETRIC_DEFAULT`, `RSA_2048`, …).
    pub key_spec: String,
    /// The key usage (`ENCRYPT_DECRYPT`, `SIGN_VERIFY`, …).
    pub key_usage: String,
    /// The origin (`AWS_KMS`, `EXTERNAL`, `EXTERNAL_KEY_STORE`, …).
    pub origin: String,
    /// The key state as stored (never `Unavailable`: that is derived from the custom key
    /// store's connection state).
    pub key_state: KeyState,
    /// When a key in `PendingDeletion` is due to be deleted, milliseconds since the Unix epoch.
    pub deletion_date_ms: Option<i64>,
    /// The waiting period, in days, of a key in `PendingDeletion`.
    pub pending_window_days: Option<u32>,
    /// Whether this is a multi-Region key.
    pub multi_region: bool,
    /// The custom key store (`cks-…`) of a key in an external key store; the store must exist
    /// in the same account and region when the key is created, and cannot be deleted while
    /// the key exists.
    pub custom_key_store_id: Option<String>,
    /// The external key id in the external key store; unique within one custom key store.
    pub xks_key_id: Option<String>,
    /// The key policy document (JSON text).
    pub policy: String,
    /// The key material, sealed by the caller; opaque here and never printed.
    pub sealed_material: Option<Vec<u8>>,
    /// An identifier of the current key material (for imported or rotated material).
    pub material_id: Option<String>,
    /// The tags, as (tag key, tag value), in insertion order; tag keys are unique.
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("account_id", &self.account_id)
            .field("region", &self.region)
            .field("key_id", &self.key_id)
            .field("arn", &self.arn)
            .field("creation_date_ms", &self.creation_date_ms)
            .field("description", &self.description)
            .field("key_spec", &self.key_spec)
            .field("key_usage", &self.key_usage)
            .field("origin", &self.origin)
            .field("key_state", &self.key_state)
            .field("deletion_date_ms", &self.deletion_date_ms)
            .field("pending_window_days", &self.pending_window_days)
            .field("multi_region", &self.multi_region)
            .field("custom_key_store_id", &self.custom_key_store_id)
            .field("xks_key_id", &self.xks_key_id)
            .field("policy", &self.policy)
            .field(
                "sealed_material",
                &self
                    .sealed_material
                    .as_ref()
                    .map(|m| format!("<{} bytes>", m.len())),
            )
            .field("material_id", &self.material_id)
            .field("tags", &self.tags)
            .finish()
    }
}

impl KeyRecord {
    /// The key's [`KeyAddress`].
    pub fn address(&self) -> KeyAddress<'_> {
        KeyAddress {
            account_id: &self.account_id,
            region: &self.region,
            key_id: &self.key_id,
        }
    }
}

/// An alias (`alias/…`) of a KMS key in one account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// The owning AWS account id.
    pub account_id: String,
    /// The AWS region.
    pub region: String,
    /// The alias name, `alias/` prefix included; unique in (account, region).
    pub alias_name: String,
    /// The key id (not ARN) of the key the alias points at, in the same account and region.
    pub target_key_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub creation_date_ms: i64,
    /// Last time the alias was created or re-pointed, milliseconds since the Unix epoch.
    pub last_updated_ms: i64,
}

/// An external custom key store as stored.
///
/// The immutable fields (`account_id`, `region`, `id`, `store_type`, `creation_date_ms`) are
/// written by [`Storage::create_custom_key_store`] only; the connection state
/// (`connection_state`, `connection_error_code`) changes only through
/// [`Storage::set_connection_state`].
#[derive(Clone, PartialEq, Eq)]
pub struct CustomKeyStoreRecord {
    /// The owning AWS account id.
    pub account_id: String,
    /// The AWS region.
    pub region: String,
    /// The custom key store id: `cks-` and 17 lower-case hex digits (generated by the caller);
    /// unique in (account, region).
    pub id: String,
    /// The custom key store name; unique in (account, region).
    pub name: String,
    /// The store type (`EXTERNAL_KEY_STORE`).
    pub store_type: String,
    /// The proxy endpoint, `https://host`.
    pub uri_endpoint: String,
    /// The proxy path prefix, `[/prefix]/kms/xks/v1`; (endpoint, path) is unique in
    /// (account, region), so stores may share an endpoint under different paths.
    pub uri_path: String,
    /// How KMS reaches the proxy: `PUBLIC_ENDPOINT` or `VPC_ENDPOINT_SERVICE`.
    pub connectivity: String,
    /// The VPC endpoint service name of a `VPC_ENDPOINT_SERVICE` store (`None` otherwise, not
    /// an empty string); unique in (account, region) when present.
    pub vpc_endpoint_service_name: Option<String>,
    /// The account owning the VPC endpoint service, when given.
    pub vpc_endpoint_service_owner: Option<String>,
    /// The access key id of the proxy credential.
    pub access_key_id: String,
    /// The proxy credential's secret access key, sealed by the caller; opaque here and never
    /// printed.
    pub sealed_secret: Vec<u8>,
    /// The connection state.
    pub connection_state: ConnectionState,
    /// The connection error code of a `FAILED` store.
    pub connection_error_code: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub creation_date_ms: i64,
}

impl fmt::Debug for CustomKeyStoreRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomKeyStoreRecord")
            .field("account_id", &self.account_id)
            .field("region", &self.region)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("store_type", &self.store_type)
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .field("connectivity", &self.connectivity)
            .field("vpc_endpoint_service_name", &self.vpc_endpoint_service_name)
            .field(
                "vpc_endpoint_service_owner",
                &self.vpc_endpoint_service_owner,
            )
            .field("access_key_id", &self.access_key_id)
            .field(
                "sealed_secret",
                &format_args!("<{} bytes>", self.sealed_secret.len()),
            )
            .field("connection_state", &self.connection_state)
            .field("connection_error_code", &self.connection_error_code)
            .field("creation_date_ms", &self.creation_date_ms)
            .finish()
    }
}

/// The encryption context constraints of a grant (pairs as given; keys compare
/// case-insensitively, values case-sensitively, when the grant is evaluated).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantConstraints {
    /// The request's encryption context must be exactly these pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<std::collections::BTreeMap<String, String>>,
    /// The request's encryption context must include these pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<std::collections::BTreeMap<String, String>>,
}

/// A grant on a KMS key, as stored (written whole by [`Storage::create_grant`], deleted by
/// [`Storage::delete_grant`] or with its key; never changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The key's account.
    pub account_id: String,
    /// The key's Region.
    pub region: String,
    /// The key id.
    pub key_id: String,
    /// The grant id (64 lower-case hex digits, generated by the caller); unique.
    pub grant_id: String,
    /// The grant's name, if it was given one.
    pub name: Option<String>,
    /// Who may use the grant.
    pub grantee_principal: String,
    /// Who may retire the grant, if named.
    pub retiring_principal: Option<String>,
    /// The account that created the grant, as `arn:<partition>:iam::<account>:root`.
    pub issuing_account: String,
    /// The operations granted (AWS's names: `Encrypt`, `ReEncryptFrom`, …), sorted, unique.
    pub operations: Vec<String>,
    /// The encryption context constraints, if any.
    pub constraints: Option<GrantConstraints>,
    /// Creation time, milliseconds since the Unix epoch.
    pub creation_date_ms: i64,
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The key, alias or custom key store does not exist (for alias writes: or its target key
    /// does not; for key creation: or the key's custom key store does not; for listings of
    /// custom key stores: the marker is not valid).
    #[error("not found")]
    NotFound,
    /// A key with this id, an alias with this name, or a custom key store with this id,
    /// name, endpoint + path or VPC endpoint service already exists; the payload says which
    /// (for custom key stores exactly `"id"`, `"name"`, `"endpoint"` or
    /// `"vpc endpoint service"`).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A quota was reached (the number of keys, or of custom key stores, in an account and
    /// region); the payload says which.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// Another key of the same custom key store (in any state, `PendingDeletion` included)
    /// already uses this external key.
    #[error("the external key is already associated with a KMS key in this custom key store")]
    XksKeyInUse,
    /// The write contradicts the stored state or itself (for example a repeated tag key,
    /// `"has keys"` for a custom key store that still holds keys, or
    /// `"connection state changed"` for an update based on a stale connection state).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A conditional key write found the key in a state other than the ones it was
    /// decided from: nothing changed; the caller reads the key again and decides again.
    #[error("the key state changed")]
    StateChanged,
    /// A stored value is not one this program knows (e.g. a key state written by a newer
    /// version, or a damaged database).
    #[error("unknown {column} value {value:?} in the database")]
    UnknownValue {
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// The database failed (I/O, corruption, a newer schema, a server that is down…).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The database did not answer within the configured bounds (a stalled server, a lock
    /// held past the statement timeout, no free connection in time). A write either
    /// committed whole or not at all; which one is not known to the caller.
    #[error("storage timed out: {0}")]
    Timeout(String),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page, in listing order.
    pub items: Vec<T>,
    /// The marker to pass to get the next page; `None` when this is the last page.
    pub next_marker: Option<String>,
}

/// The storage contract of the front end. Implementations are shared between threads; every
/// method is blocking and atomic (one transaction).
///
/// Listing `limit`s are the caller's (KMS allows 1..=1000); a `limit` of 0 is treated as 1.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Whether a read may wait on the network (a database server): then async callers run
    /// every call on the blocking pool, reads included, so a slow or stopped database
    /// never holds a runtime worker (see `Kms::handle`). `false` (the default): reads are
    /// local and short, and the cryptographic operations call them inline.
    fn reads_block(&self) -> bool {
        false
    }

    /// Inserts a new key, with its tags. Atomically: fails with
    /// [`StorageError::LimitExceeded`] if the (account, region) already has `max_keys` keys (in
    /// any state), with [`StorageError::NotFound`] if `custom_key_store_id` is set and no such
    /// custom key store exists in the (account, region) (its connection state is not
    /// checked here), with [`StorageError::AlreadyExists`] if the key id is taken in the
    /// (account, region), with [`StorageError::XksKeyInUse`] if another key of the same
    /// custom key store (same account, region and `custom_key_store_id`; any state,
    /// `PendingDeletion` included) has the same `xks_key_id`, and with
    /// [`StorageError::Conflict`] if a tag key repeats.
    fn create_key(&self, key: &KeyRecord, max_keys: u64) -> Result<(), StorageError>;

    /// The key `key_id` of the account and region, with its tags, if it exists.
    fn get_key(
        &self,
        account_id: &str,
        region: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StorageError>;

    /// Sets the key's state to `to`, and its deletion date and waiting period to
    /// `deletion` (`None` clears them), only if its current state is one of `from`.
    /// [`StorageError::StateChanged`] (nothing changed) otherwise, [`StorageError::NotFound`]
    /// if the key does not exist.
    fn transition_key_state(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        to: KeyState,
        deletion: Option<ScheduledDeletion>,
    ) -> Result<(), StorageError>;

    /// Sets the key's description only if its state is one of `from`; errors as for
    /// [`Storage::transition_key_state`].
    fn set_key_description(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        description: &str,
    ) -> Result<(), StorageError>;

    /// Sets the key's policy only if its state is one of `from`; errors as for
    /// [`Storage::transition_key_state`].
    fn set_key_policy(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        policy: &str,
    ) -> Result<(), StorageError>;

    /// Adds `tags` to the key (a tag key it has gets the new value and keeps its place; new
    /// ones follow the existing tags, in order) only if its state is one of `from`.
    /// Atomically: [`StorageError::Conflict`] if a tag key repeats in `tags`,
    /// [`StorageError::LimitExceeded`] if the key would have more than `max_tags` tags;
    /// otherwise errors as for [`Storage::transition_key_state`]. Nothing changes on error.
    fn tag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tags: &[(String, String)],
        max_tags: usize,
    ) -> Result<(), StorageError>;

    /// Removes the tags named by `tag_keys` (absent ones are ignored) only if the key's
    /// state is one of `from`; errors as for [`Storage::transition_key_state`].
    fn untag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tag_keys: &[String],
    ) -> Result<(), StorageError>;

    /// Deletes a key whose deletion window has ended, with everything that is its own (aliases,
    /// tags, grants, material versions, …; its `xks_key_id` becomes free again), but only if
    /// it is still `PendingDeletion` with a deletion date at or before `now_ms` (decided in the
    /// same transaction): a CancelKeyDeletion or a new schedule that landed after the caller
    /// read the key wins. There is no unconditional delete: a key is deleted only this way. [`StorageError::StateChanged`] (nothing deleted) if it is not
    /// due, [`StorageError::NotFound`] if it does not exist.
    fn delete_key_if_due(&self, key: KeyAddress<'_>, now_ms: i64) -> Result<(), StorageError>;

    /// Keys of an account and region ordered by key id, after `marker` (exclusive; a marker
    /// from a previous page of this listing), at most `limit` of them.
    fn list_keys(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StorageError>;

    /// Creates an alias. [`StorageError::AlreadyExists`] if the name exists in the (account,
    /// region); [`StorageError::NotFound`] if the target key does not exist there.
    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StorageError>;

    /// The alias `alias_name` of the account and region, if it exists.
    fn get_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<Option<AliasRecord>, StorageError>;

    /// Points an existing alias at `target_key_id` and sets its last-updated time to `now_ms`.
    /// [`StorageError::NotFound`] if the alias or the target key does not exist.
    fn update_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
        target_key_id: &str,
        now_ms: i64,
    ) -> Result<(), StorageError>;

    /// Deletes an alias. [`StorageError::NotFound`] if it does not exist.
    fn delete_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<(), StorageError>;

    /// Aliases of an account and region ordered by name, optionally only those pointing at
    /// `key_id`, after `marker` (exclusive), at most `limit` of them.
    fn list_aliases(
        &self,
        account_id: &str,
        region: &str,
        key_id: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>, StorageError>;

    /// Keys in [`KeyState::PendingDeletion`] whose `deletion_date_ms <= now_ms`, across all
    /// accounts and regions, as (account, region, key id), earliest deletion date first.
    fn keys_due_for_deletion(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError>;

    /// Inserts a new custom key store. Atomically: fails with
    /// [`StorageError::AlreadyExists`] (`"id"`, `"name"`, `"endpoint"` or
    /// `"vpc endpoint service"`) if the id, the name, the (endpoint, path) pair or the VPC
    /// endpoint service name is taken in the (account, region), and otherwise with
    /// [`StorageError::LimitExceeded`] if the (account, region) already has `max_stores`
    /// custom key stores (any type and state; KMS's default quota is 10). A name clash is
    /// thus reported as such even at the quota.
    fn create_custom_key_store(
        &self,
        store: &CustomKeyStoreRecord,
        max_stores: u64,
    ) -> Result<(), StorageError>;

    /// The custom key store `id` of the account and region, if it exists.
    fn get_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError>;

    /// The custom key store named `name` in the account and region, if it exists.
    fn get_custom_key_store_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError>;

    /// Replaces a custom key store's mutable fields (`name`, `uri_endpoint`, `uri_path`,
    /// `connectivity`, `vpc_endpoint_service_name`, `vpc_endpoint_service_owner`,
    /// `access_key_id`, `sealed_secret`); the immutable fields and the connection state of
    /// `store` are not written.
    ///
    /// `store.connection_state` is the state the caller read: the update applies only if the
    /// stored state is still that one, so checks such as "the endpoint changes only while
    /// DISCONNECTED" hold atomically against a concurrent connect; otherwise
    /// [`StorageError::Conflict`]`("connection state changed")` and nothing changes.
    /// [`StorageError::NotFound`] if the store does not exist, [`StorageError::AlreadyExists`]
    /// as for [`Storage::create_custom_key_store`] on a clash with another store.
    fn update_custom_key_store(&self, store: &CustomKeyStoreRecord) -> Result<(), StorageError>;

    /// Compare-and-set of the connection state: sets `connection_state` to `state` and
    /// `connection_error_code` to `error_code` only if the current state is one of `from`;
    /// returns whether it changed (an empty `from` never changes anything).
    /// [`StorageError::NotFound`] if the store does not exist.
    fn set_connection_state(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
        from: &[ConnectionState],
        state: ConnectionState,
        error_code: Option<&str>,
    ) -> Result<bool, StorageError>;

    /// Deletes a custom key store. [`StorageError::Conflict`]`("has keys")` if any KMS key (in
    /// any state, `PendingDeletion` included) still belongs to it — checked by the database
    /// atomically with the delete, so a concurrent [`Storage::create_key`] into the store
    /// either lands first (and the delete is refused) or fails with
    /// [`StorageError::NotFound`]. [`StorageError::NotFound`] if the store does not exist.
    /// The connection state is not checked here.
    fn delete_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<(), StorageError>;

    /// Custom key stores of an account and region ordered by creation date, then id, after
    /// `marker` (exclusive; a marker from a previous page of this listing, still valid if that
    /// store was deleted since), at most `limit` of them. [`StorageError::NotFound`] if the
    /// marker is not one this listing produces.
    fn list_custom_key_stores(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<CustomKeyStoreRecord>, StorageError>;

    /// Every custom key store in [`ConnectionState::Connected`], across all accounts and
    /// regions (for periodic health checks), ordered by account, region, creation date and id.
    fn connected_custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>, StorageError>;

    /// The number of KMS keys (any state) of the custom key store `id` of the account and
    /// region; 0 if the store does not exist.
    fn count_keys_in_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<u64, StorageError>;

    // Grants (issue 17; see `storage/sqlite/grants.rs`).

    /// Inserts `grant` on its key and returns it, or, when `grant.name` is set and the key
    /// already has a grant of that name with the same grantee, retiring principal,
    /// operations (as a set), constraints and issuing account, returns that grant instead
    /// and writes nothing (CreateGrant's idempotent names). Atomically: fails with
    /// [`StorageError::NotFound`] if the key does not exist, and with
    /// [`StorageError::LimitExceeded`] if a new grant would exceed `max_per_key` grants on
    /// the key or `max_per_grantee` grants for its grantee on the key. Grants are deleted
    /// with their key.
    fn create_grant(
        &self,
        grant: &GrantRecord,
        max_per_key: u64,
        max_per_grantee: u64,
    ) -> Result<GrantRecord, StorageError>;

    /// The grant `grant_id` on the key, if both exist.
    fn get_grant(
        &self,
        key: KeyAddress<'_>,
        grant_id: &str,
    ) -> Result<Option<GrantRecord>, StorageError>;

    /// The grants on the key whose grantee principal is one of `grantees` (the caller's
    /// names: its ARN, its role, its account), in creation order: what authorization reads.
    fn grants_for_grantees(
        &self,
        key: KeyAddress<'_>,
        grantees: &[&str],
    ) -> Result<Vec<GrantRecord>, StorageError>;

    /// Grants on the key in creation order, optionally only the one with `grant_id` and/or
    /// those of `grantee`, after `marker` (exclusive; a marker of a previous page of this
    /// listing), at most `limit`. [`StorageError::NotFound`] if the marker is not one a
    /// grant listing produces.
    fn list_grants(
        &self,
        key: KeyAddress<'_>,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError>;

    /// Grants of any key (any account and Region) whose retiring principal is
    /// `retiring_principal`, in creation order, after `marker`, at most `limit`;
    /// [`StorageError::NotFound`] for a marker no grant listing produces.
    fn list_retirable_grants(
        &self,
        retiring_principal: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError>;

    /// Deletes the grant `grant_id` on the key (RetireGrant, RevokeGrant).
    /// [`StorageError::NotFound`] if there is no such grant on the key.
    fn delete_grant(&self, key: KeyAddress<'_>, grant_id: &str) -> Result<(), StorageError>;

    // Key material versions and rotation (issue 18; see `storage/sqlite/key_materials.rs`).

    /// Every material version of the key, oldest first (the first material has `seq` 1);
    /// empty if the key has none or does not exist.
    fn key_materials(&self, key: KeyAddress<'_>) -> Result<Vec<KeyMaterialRecord>, StorageError>;

    /// The key's automatic rotation settings; `None` if rotation was never enabled.
    fn key_rotation(&self, key: KeyAddress<'_>) -> Result<Option<RotationRecord>, StorageError>;

    /// The narrow write of everything a rotation, an import or a deletion of imported
    /// material changes, in one transaction (a crash leaves all of it or none of it),
    /// applied only if the key's state is one of `from`, its current material id is
    /// `current` (as read by the caller) and, with [`MaterialChange::rotation_due_at`],
    /// automatic rotation is still enabled and due; [`StorageError::StateChanged`]
    /// otherwise (nothing changed), [`StorageError::NotFound`] if the key does not exist.
    fn change_key_material(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        current: Option<&str>,
        change: &MaterialChange<'_>,
    ) -> Result<(), StorageError>;

    /// Keys in [`KeyState::Enabled`] with automatic rotation enabled and due
    /// (`next_rotation_ms <= now_ms`), across all accounts and regions, as
    /// (account, region, key id), earliest first.
    fn keys_due_for_rotation(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError>;

    /// Imported materials still held whose `valid_to_ms <= now_ms`, across all accounts and
    /// regions, as (account, region, key id, material id), earliest first.
    fn materials_due_to_expire(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String, String)>, StorageError>;

    // Last usage (GetKeyLastUsage).

    /// Records the last successful cryptographic use of keys: for each key that still
    /// exists, keeps the newest of the stored and the given usage (by timestamp), so
    /// records flushed late or by several processes never move a key's last use back.
    /// Usages of keys that no longer exist are dropped.
    fn record_key_usages(&self, usages: &[KeyUsageRecord]) -> Result<(), StorageError>;

    /// The last recorded use of the key, if any.
    fn key_last_usage(&self, key: KeyAddress<'_>) -> Result<Option<KeyUsageRecord>, StorageError>;

    /// When this database began recording key usage, milliseconds since the Unix epoch.
    fn usage_tracking_start_ms(&self) -> Result<i64, StorageError>;

    // Leases (issue 20; see `storage/sqlite/leases.rs`): which process of a fleet sharing
    // the database runs a periodic job, such as polling one XKS proxy.

    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`, if it is free,
    /// expired (its expiry `<= now_ms`) or already `holder`'s; returns whether `holder` holds
    /// it now. Atomic across processes: at most one holder at any time (given clocks that
    /// agree to well within `ttl_ms`).
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError>;

    /// Gives up the lease `name` if `holder` holds it (a graceful shutdown), so another
    /// process may take it at once instead of after it expires.
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StorageError>;

    // Multi-Region keys (issue 19; see `storage/sqlite/multi_region.rs`). A set's members
    // are the multi-Region keys of one account with one key id, one per Region. Backends
    // that do not hold multi-Region sets yet answer [`StorageError::Backend`].

    /// The multi-Region key set `key_id` of the account: its primary's Region and its
    /// members (oldest first); `None` if no multi-Region key of that id exists.
    fn multi_region_set(
        &self,
        account_id: &str,
        key_id: &str,
    ) -> Result<Option<MultiRegionSet>, StorageError> {
        let _ = (account_id, key_id);
        Err(multi_region_unsupported())
    }

    /// Inserts the replica `replica` of a multi-Region key (with its tags) and its
    /// material versions `materials` (same ids and order as the primary's, sealed for the
    /// replica; the version named by `replica.material_id` is its current one), all in one
    /// transaction. Atomically: [`StorageError::StateChanged`] unless the set's primary is
    /// still in `primary_region` and in one of the states `primary_from`;
    /// [`StorageError::AlreadyExists`] if the set already has a member in the replica's
    /// Region (in any state); otherwise errors as for [`Storage::create_key`].
    fn create_replica_key(
        &self,
        replica: &KeyRecord,
        materials: &[KeyMaterialRecord],
        primary_region: &str,
        primary_from: &[KeyState],
        max_keys: u64,
    ) -> Result<(), StorageError> {
        let _ = (replica, materials, primary_region, primary_from, max_keys);
        Err(multi_region_unsupported())
    }

    /// Moves the primary of the set `key_id` from `from_region` to `to_region` and puts
    /// both keys in [`KeyState::Updating`] (the set records `now_ms` as the move's time),
    /// atomically and only if the primary is still in `from_region` and both keys are
    /// [`KeyState::Enabled`]; [`StorageError::StateChanged`] otherwise (nothing changed),
    /// [`StorageError::NotFound`] if either key does not exist.
    fn update_primary_region(
        &self,
        account_id: &str,
        key_id: &str,
        from_region: &str,
        to_region: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let _ = (account_id, key_id, from_region, to_region, now_ms);
        Err(multi_region_unsupported())
    }

    /// Multi-Region keys whose asynchronous step is over, across all accounts and Regions,
    /// as (account, region, key id, state): keys in [`KeyState::Creating`] created at or
    /// before `before_ms`, keys in [`KeyState::Updating`] whose set moved at or before
    /// `before_ms`, and primaries in [`KeyState::PendingReplicaDeletion`] whose set has no
    /// other member left.
    fn multi_region_transitions_due(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(String, String, String, KeyState)>, StorageError> {
        let _ = before_ms;
        Err(multi_region_unsupported())
    }
}

/// A multi-Region key set: where its primary is, and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRegionSet {
    /// The Region of the primary key.
    pub primary_region: String,
    /// Every member, the primary included, oldest first.
    pub members: Vec<MultiRegionMember>,
}

impl MultiRegionSet {
    /// The members other than the primary (the replicas), oldest first.
    pub fn replicas(&self) -> impl Iterator<Item = &MultiRegionMember> {
        self.members
            .iter()
            .filter(|m| m.region != self.primary_region)
    }
}

/// One member of a [`MultiRegionSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiRegionMember {
    /// The member's Region.
    pub region: String,
    /// The member's key ARN.
    pub arn: String,
    /// The member's stored state.
    pub key_state: KeyState,
}

/// The error of a backend that does not hold multi-Region key sets yet.
fn multi_region_unsupported() -> StorageError {
    StorageError::Backend("multi-Region keys are not supported by this storage backend yet".into())
}

/// The last successful cryptographic use of one key (GetKeyLastUsage's `KeyLastUsage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsageRecord {
    /// The owning AWS account id.
    pub account_id: String,
    /// The AWS region.
    pub region: String,
    /// The key id.
    pub key_id: String,
    /// The operation (`Encrypt`, `Sign`, …).
    pub operation: String,
    /// When it succeeded, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The request id (`x-amzn-RequestId`) of its request.
    pub request_id: String,
    /// The id of the request's audit event (its `event_id` in the request log).
    pub event_id: String,
}

/// One version of a key's material.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterialRecord {
    /// The key material id (64 lower-case hex characters); unique within the key.
    pub material_id: String,
    /// The order of the versions (1 for the first); assigned by the storage on insert.
    pub seq: i64,
    /// The material, sealed by the caller; `None` once imported material was deleted or
    /// expired (the row stays, so a re-import is recognised and old ciphertexts decrypt
    /// again).
    pub sealed_material: Option<Vec<u8>>,
    /// When the version was made (the rotation date), milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// `AUTOMATIC` or `ON_DEMAND` for a version made by a rotation; `None` for the first
    /// material and for imported material not yet made current.
    pub rotation_type: Option<String>,
    /// `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE` for imported material.
    pub expiration_model: Option<String>,
    /// When imported material expires, milliseconds since the Unix epoch.
    pub valid_to_ms: Option<i64>,
    /// The `KeyMaterialDescription` of imported material.
    pub description: Option<String>,
}

impl fmt::Debug for KeyMaterialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterialRecord")
            .field("material_id", &self.material_id)
            .field("seq", &self.seq)
            .field(
                "sealed_material",
                &self
                    .sealed_material
                    .as_ref()
                    .map(|m| format!("<{} bytes>", m.len())),
            )
            .field("created_ms", &self.created_ms)
            .field("rotation_type", &self.rotation_type)
            .field("expiration_model", &self.expiration_model)
            .field("valid_to_ms", &self.valid_to_ms)
            .field("description", &self.description)
            .finish()
    }
}

/// A key's automatic rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationRecord {
    /// Whether automatic rotation is enabled.
    pub enabled: bool,
    /// The rotation period in days (kept while disabled, so GetKeyRotationStatus can show
    /// nothing and a re-enable without a period uses the default).
    pub period_days: Option<u32>,
    /// When the next automatic rotation is due, milliseconds since the Unix epoch.
    pub next_rotation_ms: Option<i64>,
}

/// What [`Storage::change_key_material`] writes; every part is optional and all of it
/// lands in one transaction.
#[derive(Debug, Clone, Default)]
pub struct MaterialChange<'a> {
    /// A material version to insert (its `seq` is assigned: one past the newest) or, if the
    /// key has one with the same id, to update (sealed material, expiration, the
    /// description if given, and `rotation_type` with `created_ms` if a rotation type is
    /// given: imported material made current by a rotation; `seq` is kept).
    pub put: Option<&'a KeyMaterialRecord>,
    /// Makes this material the key's current one (its sealed material is copied into the
    /// key); when it was made by a rotation, `put` says so with its `rotation_type`.
    pub make_current: Option<&'a str>,
    /// Forgets the sealed material of this version (deleted or expired imported material);
    /// the key's copy too when it is the current one.
    pub forget: Option<&'a str>,
    /// The key's new state.
    pub state: Option<KeyState>,
    /// The key's new rotation settings.
    pub rotation: Option<RotationRecord>,
    /// Applies the change only if automatic rotation is enabled and due at this time
    /// (milliseconds since the Unix epoch): the sweep's guard against a concurrent
    /// DisableKeyRotation or rotation.
    pub rotation_due_at: Option<i64>,
}
