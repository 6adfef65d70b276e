//! The embedded SQLite implementation of [`Storage`].
//!
//! - One database file, in WAL mode with `synchronous = FULL`: a committed write survives a
//!   crash or a power loss. Every write runs in a `BEGIN IMMEDIATE` transaction, so checks
//!   (the key count) and the insert they guard are atomic, even between processes.
//! - Uniqueness is the schema's: primary keys on (account, region, key id), (account, region,
//!   alias name) and (account, region, key id, tag key), and a UNIQUE index on (account,
//!   region, custom key store, external key id). SQLite's NULLs are distinct in a UNIQUE
//!   index, so keys without a custom key store or external key never collide.
//! - Custom key stores: primary key (account, region, id) and UNIQUE indexes on (account,
//!   region, name), (account, region, endpoint, path) and (account, region, VPC endpoint
//!   service name) (partial: only where the name is present).
//! - Foreign keys tie aliases and tags to their key (`ON DELETE CASCADE`). Triggers tie keys
//!   to their custom key store (a key's store must exist in its account and region; a store
//!   holding keys cannot be deleted; a store's id cannot change): triggers rather than a
//!   foreign key because SQLite cannot add a foreign key to the existing `keys` table of a
//!   version-1 database without rebuilding it. The triggers run inside the writing
//!   statement, so a key creation and a store deletion racing each other are serialized by
//!   the write lock and the loser sees the winner's row.
//! - Contention: each connection waits up to [`BUSY_TIMEOUT`] for locks, and an operation
//!   that still meets `SQLITE_BUSY`/`SQLITE_LOCKED` is retried whole (a fresh transaction)
//!   until [`RETRY_DEADLINE`]; only then is it reported as [`StorageError::Backend`].
//! - Each [`SqliteStorage`] keeps up to [`MAX_IDLE_CONNECTIONS`] idle connections; callers
//!   beyond that open short-lived ones.
//! - The `schema_version` table records the schema; a database written by a newer version is
//!   refused. Schemas are built by the migrations of [`schema`], applied in order under the write lock: a
//!   new database runs them all, an older one the missing ones, so both end up identical.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, Row, Transaction, TransactionBehavior};

use super::group_commit::{Pending, WriteQueue, apply_batch};
use super::{
    AliasRecord, ConnectionState, CustomKeyStoreRecord, GrantRecord, KeyAddress, KeyMaterialRecord,
    KeyRecord, KeyState, KeyUsageRecord, MaterialChange, MultiRegionSet, Page, RotationRecord,
    ScheduledDeletion, Storage, StorageError,
};

mod aliases;
mod custom_key_stores;
mod grants;
mod key_materials;
mod key_usage;
mod keys;
mod leases;
mod multi_region;
mod schema;

#[cfg(test)]
pub(super) use schema::{SCHEMA_V1, SCHEMA_VERSION};

/// How long one SQLite call waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation is retried (whole) while the database stays busy.
const RETRY_DEADLINE: Duration = Duration::from_secs(20);

/// Idle connections kept per [`SqliteStorage`]: at least as many as requests run at once
/// under load, because a connection opened past the pool parses the schema again and a
/// profile showed that dominating every operation when the pool held only 4.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// Why an attempt failed: a raw SQLite error (maybe retryable) or a final answer.
#[derive(Debug)]
pub(super) enum Failure {
    Sql(rusqlite::Error),
    Storage(StorageError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

impl Failure {
    pub(super) fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Sql(e) if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        )
    }

    pub(super) fn into_storage(self) -> StorageError {
        match self {
            Self::Storage(e) => e,
            Self::Sql(e) => backend(&e),
        }
    }
}

fn backend(e: &rusqlite::Error) -> StorageError {
    if let rusqlite::Error::FromSqlConversionFailure(_, _, inner) = e
        && let Some(unknown) = inner.downcast_ref::<UnknownValue>()
    {
        return StorageError::UnknownValue {
            column: unknown.column,
            value: unknown.value.clone(),
        };
    }
    StorageError::Backend(format!("sqlite: {e}"))
}

/// A stored text value that is none of its enum's values; carried through rusqlite's
/// conversion error and turned into [`StorageError::UnknownValue`] by [`backend`].
#[derive(Debug, thiserror::Error)]
#[error("unknown {column} value {value:?}")]
struct UnknownValue {
    column: &'static str,
    value: String,
}

/// Reads text column `idx` (named `column`) as an enum the catalogue defines: the database
/// keeps the wire spelling, the program only ever sees the enum.
fn enum_column<T>(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let value: String = row.get(idx)?;
    parse(&value).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            Box::new(UnknownValue { column, value }),
        )
    })
}

/// The extended result code and message of a constraint violation, if `e` is one.
fn constraint(e: &rusqlite::Error) -> Option<(i32, &str)> {
    match e {
        rusqlite::Error::SqliteFailure(err, msg) if err.code == ErrorCode::ConstraintViolation => {
            Some((err.extended_code, msg.as_deref().unwrap_or("")))
        }
        _ => None,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the database stays busy past
/// [`RETRY_DEADLINE`].
fn retry_busy<T>(mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T, StorageError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(f) if f.is_busy() && start.elapsed() < RETRY_DEADLINE => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(f) => return Err(f.into_storage()),
        }
    }
}

/// Limit + 1 (to learn whether another page follows), as an SQL integer.
fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit.max(1).saturating_add(1)).unwrap_or(i64::MAX)
}

/// The embedded SQLite storage: one database file, shareable by several processes and by
/// several `SqliteStorage`s in one process.
pub struct SqliteStorage {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    writes: WriteQueue,
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`: WAL mode, `synchronous = FULL`,
    /// foreign keys on, the schema created or checked. Fails with
    /// [`StorageError::Backend`] if the file cannot be opened or was written by a newer
    /// schema version.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = retry_busy(|| open_connection(path, true))?;
        Ok(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![conn]),
            writes: WriteQueue::default(),
        })
    }

    /// Runs `op` on a pooled connection, retrying it whole while the database is busy.
    fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut Connection) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => retry_busy(|| open_connection(&self.path, false))?,
        };
        let result = retry_busy(|| op(&mut conn));
        // A connection left inside a transaction (a failed rollback) is not reused.
        if conn.is_autocommit() {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        result
    }

    /// Runs `op` in a `BEGIN IMMEDIATE` transaction (the write lock taken up front) and commits.
    fn write<T>(
        &self,
        op: impl FnMut(&Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        let _writer = self.writes.writer();
        self.immediate(op)
    }

    /// Runs `op` in a `BEGIN IMMEDIATE` transaction and commits; the caller holds the
    /// writer lock.
    fn immediate<T>(
        &self,
        mut op: impl FnMut(&Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v = op(&tx)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// Like [`Self::write`], but `op` may share its transaction and commit with other
    /// writers queued at the same time (see [`super::group_commit`]); `op` still sees a
    /// consistent database and its failure rolls back only its own changes.
    fn write_queued<T: Send + 'static>(
        &self,
        op: impl FnMut(&Transaction<'_>) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, StorageError> {
        let pending = Arc::new(Pending::new(op));
        self.writes.push(pending.clone());
        loop {
            let _writer = self.writes.writer();
            if let Some(outcome) = pending.take_outcome() {
                return outcome;
            }
            let batch = self.writes.take_batch();
            if batch.is_empty() {
                // Unreachable: an unsettled write is queued, and no batch runs while we
                // hold the writer lock.
                return Err(StorageError::Backend("a queued write was lost".to_owned()));
            }
            let result = self.immediate(|tx| apply_batch(tx, &batch));
            for write in &batch {
                write.settle(result.as_ref().map(|_| ()));
            }
        }
    }

    /// Runs `op` in a read transaction (one consistent snapshot).
    fn read<T>(
        &self,
        mut op: impl FnMut(&Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let v = op(&tx)?;
            tx.finish()?;
            Ok(v)
        })
    }

    /// The `synchronous` setting of a pooled connection (2 = FULL), for tests.
    #[cfg(test)]
    pub(super) fn synchronous_setting(&self) -> Result<i64, StorageError> {
        self.with_conn(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?))
    }
}

/// Opens and configures one connection; with `init`, creates or checks the schema.
fn open_connection(path: &Path, init: bool) -> Result<Connection, Failure> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Backend(format!(
            "sqlite: cannot enable WAL journal mode (got {mode})"
        ))
        .into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(32);
    // Plans that do not depend on bound values: without this, SQLite marks most cached
    // statements for a full re-prepare whenever a parameter is rebound, and a profile of
    // Encrypt showed that re-parsing as the largest single cost.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if init {
        schema::init_schema(&mut conn)?;
    }
    Ok(conn)
}

impl Storage for SqliteStorage {
    fn create_key(&self, key: &KeyRecord, max_keys: u64) -> Result<(), StorageError> {
        keys::create_key(self, key, max_keys)
    }

    fn get_key(
        &self,
        account_id: &str,
        region: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StorageError> {
        keys::get_key(self, account_id, region, key_id)
    }

    fn transition_key_state(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        to: KeyState,
        deletion: Option<ScheduledDeletion>,
    ) -> Result<(), StorageError> {
        keys::transition_key_state(self, key, from, to, deletion)
    }

    fn set_key_description(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        description: &str,
    ) -> Result<(), StorageError> {
        keys::set_key_column(self, key, from, keys::Column::Description, description)
    }

    fn set_key_policy(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        policy: &str,
    ) -> Result<(), StorageError> {
        keys::set_key_column(self, key, from, keys::Column::Policy, policy)
    }

    fn tag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tags: &[(String, String)],
        max_tags: usize,
    ) -> Result<(), StorageError> {
        keys::tag_key(self, key, from, tags, max_tags)
    }

    fn untag_key(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        tag_keys: &[String],
    ) -> Result<(), StorageError> {
        keys::untag_key(self, key, from, tag_keys)
    }

    fn delete_key_if_due(&self, key: KeyAddress<'_>, now_ms: i64) -> Result<(), StorageError> {
        keys::delete_key_if_due(self, key, now_ms)
    }

    fn list_keys(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StorageError> {
        keys::list_keys(self, account_id, region, marker, limit)
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StorageError> {
        aliases::create_alias(self, alias)
    }

    fn get_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<Option<AliasRecord>, StorageError> {
        aliases::get_alias(self, account_id, region, alias_name)
    }

    fn update_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
        target_key_id: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        aliases::update_alias(self, account_id, region, alias_name, target_key_id, now_ms)
    }

    fn delete_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<(), StorageError> {
        aliases::delete_alias(self, account_id, region, alias_name)
    }

    fn list_aliases(
        &self,
        account_id: &str,
        region: &str,
        key_id: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>, StorageError> {
        aliases::list_aliases(self, account_id, region, key_id, marker, limit)
    }

    fn keys_due_for_deletion(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        keys::keys_due_for_deletion(self, now_ms)
    }

    fn create_custom_key_store(
        &self,
        store: &CustomKeyStoreRecord,
        max_stores: u64,
    ) -> Result<(), StorageError> {
        custom_key_stores::create_custom_key_store(self, store, max_stores)
    }

    fn get_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::get_custom_key_store(self, account_id, region, id)
    }

    fn get_custom_key_store_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::get_custom_key_store_by_name(self, account_id, region, name)
    }

    fn update_custom_key_store(&self, store: &CustomKeyStoreRecord) -> Result<(), StorageError> {
        custom_key_stores::update_custom_key_store(self, store)
    }

    fn set_connection_state(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
        from: &[ConnectionState],
        state: ConnectionState,
        error_code: Option<&str>,
    ) -> Result<bool, StorageError> {
        custom_key_stores::set_connection_state(
            self, account_id, region, id, from, state, error_code,
        )
    }

    fn delete_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        custom_key_stores::delete_custom_key_store(self, account_id, region, id)
    }

    fn list_custom_key_stores(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::list_custom_key_stores(self, account_id, region, marker, limit)
    }

    fn connected_custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>, StorageError> {
        custom_key_stores::connected_custom_key_stores(self)
    }

    fn count_keys_in_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<u64, StorageError> {
        custom_key_stores::count_keys_in_custom_key_store(self, account_id, region, id)
    }

    fn create_grant(
        &self,
        grant: &GrantRecord,
        max_per_key: u64,
        max_per_grantee: u64,
    ) -> Result<GrantRecord, StorageError> {
        grants::create_grant(self, grant, max_per_key, max_per_grantee)
    }

    fn get_grant(
        &self,
        key: KeyAddress<'_>,
        grant_id: &str,
    ) -> Result<Option<GrantRecord>, StorageError> {
        grants::get_grant(self, key, grant_id)
    }

    fn grants_for_grantees(
        &self,
        key: KeyAddress<'_>,
        grantees: &[&str],
    ) -> Result<Vec<GrantRecord>, StorageError> {
        grants::grants_for_grantees(self, key, grantees)
    }

    fn list_grants(
        &self,
        key: KeyAddress<'_>,
        grant_id: Option<&str>,
        grantee: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError> {
        grants::list_grants(self, key, grant_id, grantee, marker, limit)
    }

    fn list_retirable_grants(
        &self,
        retiring_principal: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StorageError> {
        grants::list_retirable_grants(self, retiring_principal, marker, limit)
    }

    fn delete_grant(&self, key: KeyAddress<'_>, grant_id: &str) -> Result<(), StorageError> {
        grants::delete_grant(self, key, grant_id)
    }

    fn key_materials(&self, key: KeyAddress<'_>) -> Result<Vec<KeyMaterialRecord>, StorageError> {
        key_materials::key_materials(self, key)
    }

    fn key_rotation(&self, key: KeyAddress<'_>) -> Result<Option<RotationRecord>, StorageError> {
        key_materials::key_rotation(self, key)
    }

    fn change_key_material(
        &self,
        key: KeyAddress<'_>,
        from: &[KeyState],
        current: Option<&str>,
        change: &MaterialChange<'_>,
    ) -> Result<(), StorageError> {
        key_materials::change_key_material(self, key, from, current, change)
    }

    fn keys_due_for_rotation(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        key_materials::keys_due_for_rotation(self, now_ms)
    }

    fn materials_due_to_expire(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String, String)>, StorageError> {
        key_materials::materials_due_to_expire(self, now_ms)
    }

    fn record_key_usages(&self, usages: &[KeyUsageRecord]) -> Result<(), StorageError> {
        key_usage::record_key_usages(self, usages)
    }

    fn key_last_usage(&self, key: KeyAddress<'_>) -> Result<Option<KeyUsageRecord>, StorageError> {
        key_usage::key_last_usage(self, key)
    }

    fn usage_tracking_start_ms(&self) -> Result<i64, StorageError> {
        key_usage::usage_tracking_start_ms(self)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StorageError> {
        leases::acquire_lease(self, name, holder, now_ms, ttl_ms)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StorageError> {
        leases::release_lease(self, name, holder)
    }

    fn multi_region_set(
        &self,
        account_id: &str,
        key_id: &str,
    ) -> Result<Option<MultiRegionSet>, StorageError> {
        multi_region::multi_region_set(self, account_id, key_id)
    }

    fn create_replica_key(
        &self,
        replica: &KeyRecord,
        materials: &[KeyMaterialRecord],
        primary_region: &str,
        primary_from: &[KeyState],
        max_keys: u64,
    ) -> Result<(), StorageError> {
        multi_region::create_replica_key(
            self,
            replica,
            materials,
            primary_region,
            primary_from,
            max_keys,
        )
    }

    fn update_primary_region(
        &self,
        account_id: &str,
        key_id: &str,
        from_region: &str,
        to_region: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        multi_region::update_primary_region(
            self,
            account_id,
            key_id,
            from_region,
            to_region,
            now_ms,
        )
    }

    fn multi_region_transitions_due(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(String, String, String, KeyState)>, StorageError> {
        multi_region::multi_region_transitions_due(self, before_ms)
    }
}
