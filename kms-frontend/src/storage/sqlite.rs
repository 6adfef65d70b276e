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
//!   refused. Schemas are built by [`MIGRATIONS`], applied in order under the write lock: a
//!   new database runs them all, an older one the missing ones, so both end up identical.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};
use rusqlite::{ffi, params};

use super::group_commit::{Pending, WriteQueue, apply_batch};
use super::{
    AliasRecord, CONNECTION_STATE_CONNECTED, CustomKeyStoreRecord, KEY_STATE_PENDING_DELETION,
    KeyRecord, Page, Storage, StorageError,
};

/// The schema version this code writes and understands.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// How long one SQLite call waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation is retried (whole) while the database stays busy.
const RETRY_DEADLINE: Duration = Duration::from_secs(20);

/// Idle connections kept per [`SqliteStorage`]: at least as many as requests run at once
/// under load, because a connection opened past the pool parses the schema again and a
/// profile showed that dominating every operation when the pool held only 4.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// The schema, version 1 (keys, tags, aliases). Frozen: existing databases were built by it.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE keys (
    account_id          TEXT    NOT NULL,
    region              TEXT    NOT NULL,
    key_id              TEXT    NOT NULL,
    arn                 TEXT    NOT NULL,
    creation_date_ms    INTEGER NOT NULL,
    description         TEXT    NOT NULL,
    key_spec            TEXT    NOT NULL,
    key_usage           TEXT    NOT NULL,
    origin              TEXT    NOT NULL,
    key_state           TEXT    NOT NULL,
    deletion_date_ms    INTEGER,
    pending_window_days INTEGER,
    multi_region        INTEGER NOT NULL,
    custom_key_store_id TEXT,
    xks_key_id          TEXT,
    policy              TEXT    NOT NULL,
    sealed_material     BLOB,
    material_id         TEXT,
    PRIMARY KEY (account_id, region, key_id)
);
CREATE UNIQUE INDEX keys_xks_key_id
    ON keys (account_id, region, custom_key_store_id, xks_key_id);
CREATE INDEX keys_deletion ON keys (key_state, deletion_date_ms);
CREATE TABLE key_tags (
    account_id TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    tag_key    TEXT    NOT NULL,
    tag_value  TEXT    NOT NULL,
    PRIMARY KEY (account_id, region, key_id, tag_key),
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX key_tags_order ON key_tags (account_id, region, key_id, position);
CREATE TABLE aliases (
    account_id       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    alias_name       TEXT    NOT NULL,
    target_key_id    TEXT    NOT NULL,
    creation_date_ms INTEGER NOT NULL,
    last_updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (account_id, region, alias_name),
    FOREIGN KEY (account_id, region, target_key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX aliases_target ON aliases (account_id, region, target_key_id, alias_name);
";

/// Version 1 → 2: external custom key stores, and the triggers tying keys to them. Existing
/// keys are not checked (version 1 never stored keys in custom key stores).
const SCHEMA_V2: &str = "
CREATE TABLE custom_key_stores (
    account_id                 TEXT    NOT NULL,
    region                     TEXT    NOT NULL,
    id                         TEXT    NOT NULL,
    name                       TEXT    NOT NULL,
    store_type                 TEXT    NOT NULL,
    uri_endpoint               TEXT    NOT NULL,
    uri_path                   TEXT    NOT NULL,
    connectivity               TEXT    NOT NULL,
    vpc_endpoint_service_name  TEXT,
    vpc_endpoint_service_owner TEXT,
    access_key_id              TEXT    NOT NULL,
    sealed_secret              BLOB    NOT NULL,
    connection_state           TEXT    NOT NULL,
    connection_error_code      TEXT,
    creation_date_ms           INTEGER NOT NULL,
    PRIMARY KEY (account_id, region, id)
);
CREATE UNIQUE INDEX custom_key_stores_name
    ON custom_key_stores (account_id, region, name);
CREATE UNIQUE INDEX custom_key_stores_uri
    ON custom_key_stores (account_id, region, uri_endpoint, uri_path);
CREATE UNIQUE INDEX custom_key_stores_vpc_service
    ON custom_key_stores (account_id, region, vpc_endpoint_service_name)
    WHERE vpc_endpoint_service_name IS NOT NULL;
CREATE INDEX custom_key_stores_created
    ON custom_key_stores (account_id, region, creation_date_ms, id);
CREATE INDEX custom_key_stores_state ON custom_key_stores (connection_state);
CREATE TRIGGER keys_custom_key_store_insert BEFORE INSERT ON keys
WHEN NEW.custom_key_store_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM custom_key_stores s
    WHERE s.account_id = NEW.account_id AND s.region = NEW.region
      AND s.id = NEW.custom_key_store_id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store not found');
END;
CREATE TRIGGER keys_custom_key_store_update
BEFORE UPDATE OF account_id, region, custom_key_store_id ON keys
WHEN NEW.custom_key_store_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM custom_key_stores s
    WHERE s.account_id = NEW.account_id AND s.region = NEW.region
      AND s.id = NEW.custom_key_store_id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store not found');
END;
CREATE TRIGGER custom_key_stores_delete BEFORE DELETE ON custom_key_stores
WHEN EXISTS (
    SELECT 1 FROM keys k
    WHERE k.account_id = OLD.account_id AND k.region = OLD.region
      AND k.custom_key_store_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store has keys');
END;
CREATE TRIGGER custom_key_stores_id_immutable
BEFORE UPDATE OF account_id, region, id ON custom_key_stores
WHEN NEW.account_id IS NOT OLD.account_id OR NEW.region IS NOT OLD.region
    OR NEW.id IS NOT OLD.id
BEGIN
    SELECT RAISE(ABORT, 'custom key store id is immutable');
END;
";

/// Version 2 → 3: the number of keys per account and Region, kept by triggers, so the
/// quota check of a key creation is one lookup instead of a scan of every key.
const SCHEMA_V3: &str = "
CREATE TABLE key_counts (
    account_id TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, region)
) WITHOUT ROWID;
INSERT INTO key_counts (account_id, region, n)
    SELECT account_id, region, COUNT(*) FROM keys GROUP BY account_id, region;
CREATE TRIGGER keys_count_insert AFTER INSERT ON keys
BEGIN
    INSERT INTO key_counts (account_id, region, n) VALUES (NEW.account_id, NEW.region, 1)
        ON CONFLICT (account_id, region) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER keys_count_delete AFTER DELETE ON keys
BEGIN
    UPDATE key_counts SET n = n - 1
    WHERE account_id = OLD.account_id AND region = OLD.region;
END;
CREATE TRIGGER keys_account_region_immutable
BEFORE UPDATE OF account_id, region ON keys
WHEN NEW.account_id IS NOT OLD.account_id OR NEW.region IS NOT OLD.region
BEGIN
    SELECT RAISE(ABORT, 'a key cannot move between accounts or Regions');
END;
";

/// The schema migrations: (version reached, DDL), in order. A new database runs them all.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)];

/// The message of the trigger refusing a key whose custom key store does not exist.
const TRIGGER_STORE_NOT_FOUND: &str = "custom key store not found";

/// The message of the trigger refusing to delete a custom key store holding keys.
const TRIGGER_STORE_HAS_KEYS: &str = "custom key store has keys";

/// The columns of `keys`, in the order [`key_from_row`] reads them.
const KEY_COLUMNS: &str = "account_id, region, key_id, arn, creation_date_ms, description, \
     key_spec, key_usage, origin, key_state, deletion_date_ms, pending_window_days, \
     multi_region, custom_key_store_id, xks_key_id, policy, sealed_material, material_id";

/// The columns of `aliases`, in the order [`alias_from_row`] reads them.
const ALIAS_COLUMNS: &str =
    "account_id, region, alias_name, target_key_id, creation_date_ms, last_updated_ms";

/// The columns of `custom_key_stores`, in the order [`store_from_row`] reads them.
const STORE_COLUMNS: &str = "account_id, region, id, name, store_type, uri_endpoint, uri_path, \
     connectivity, vpc_endpoint_service_name, vpc_endpoint_service_owner, access_key_id, \
     sealed_secret, connection_state, connection_error_code, creation_date_ms";

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
    StorageError::Backend(format!("sqlite: {e}"))
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
        init_schema(&mut conn)?;
    }
    Ok(conn)
}

/// Creates the schema in an empty database, or checks the version of an existing one.
fn init_schema(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let version: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0);
    if version == SCHEMA_VERSION {
        return Ok(tx.commit()?);
    }
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this program's ({SCHEMA_VERSION})"
        ))
        .into());
    }
    if version < 0 {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is not supported (expected {SCHEMA_VERSION})"
        ))
        .into());
    }
    for (reached, ddl) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        tx.execute_batch(ddl)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [reached],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        account_id: row.get(0)?,
        region: row.get(1)?,
        key_id: row.get(2)?,
        arn: row.get(3)?,
        creation_date_ms: row.get(4)?,
        description: row.get(5)?,
        key_spec: row.get(6)?,
        key_usage: row.get(7)?,
        origin: row.get(8)?,
        key_state: row.get(9)?,
        deletion_date_ms: row.get(10)?,
        pending_window_days: row.get(11)?,
        multi_region: row.get(12)?,
        custom_key_store_id: row.get(13)?,
        xks_key_id: row.get(14)?,
        policy: row.get(15)?,
        sealed_material: row.get(16)?,
        material_id: row.get(17)?,
        tags: Vec::new(),
    })
}

fn alias_from_row(row: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    Ok(AliasRecord {
        account_id: row.get(0)?,
        region: row.get(1)?,
        alias_name: row.get(2)?,
        target_key_id: row.get(3)?,
        creation_date_ms: row.get(4)?,
        last_updated_ms: row.get(5)?,
    })
}

fn store_from_row(row: &Row<'_>) -> rusqlite::Result<CustomKeyStoreRecord> {
    Ok(CustomKeyStoreRecord {
        account_id: row.get(0)?,
        region: row.get(1)?,
        id: row.get(2)?,
        name: row.get(3)?,
        store_type: row.get(4)?,
        uri_endpoint: row.get(5)?,
        uri_path: row.get(6)?,
        connectivity: row.get(7)?,
        vpc_endpoint_service_name: row.get(8)?,
        vpc_endpoint_service_owner: row.get(9)?,
        access_key_id: row.get(10)?,
        sealed_secret: row.get(11)?,
        connection_state: row.get(12)?,
        connection_error_code: row.get(13)?,
        creation_date_ms: row.get(14)?,
    })
}

/// Maps a failed write of `store` to `custom_key_stores`: a uniqueness violation becomes
/// `AlreadyExists` of [`first_clash`]. SQLite reports whichever index it happened to check
/// first, so the clash is named by looking it up in a fixed order (the constraints did the
/// refusing; this only names it). With `updating`, the store's own row is no clash.
fn store_clash(
    tx: &Transaction<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
    e: rusqlite::Error,
) -> Failure {
    if !matches!(
        constraint(&e),
        Some((
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE,
            _
        ))
    ) {
        return Failure::Sql(e);
    }
    match first_clash(tx, store, updating) {
        Ok(Some(what)) => Failure::Storage(StorageError::AlreadyExists(what.to_owned())),
        Ok(None) => Failure::Sql(e),
        Err(lookup) => Failure::Sql(lookup),
    }
}

/// The first of `"id"`, `"name"`, `"endpoint"`, `"vpc endpoint service"` that another store
/// of the account and region already has, if any.
fn first_clash(
    tx: &Transaction<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
) -> rusqlite::Result<Option<&'static str>> {
    if !updating && store_exists(tx, &store.account_id, &store.region, &store.id)? {
        return Ok(Some("id"));
    }
    let other_has = |condition: &str, a: &dyn rusqlite::ToSql, b: &dyn rusqlite::ToSql| {
        tx.prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM custom_key_stores \
             WHERE account_id = ?1 AND region = ?2 AND id <> ?3 AND {condition})"
        ))?
        .query_row(
            params![store.account_id, store.region, store.id, a, b],
            |r| r.get::<_, bool>(0),
        )
    };
    let none = rusqlite::types::Null;
    if other_has("name = ?4 AND ?5 IS NULL", &store.name, &none)? {
        return Ok(Some("name"));
    }
    if other_has(
        "uri_endpoint = ?4 AND uri_path = ?5",
        &store.uri_endpoint,
        &store.uri_path,
    )? {
        return Ok(Some("endpoint"));
    }
    if other_has(
        "vpc_endpoint_service_name = ?4 AND ?5 IS NULL",
        &store.vpc_endpoint_service_name,
        &none,
    )? {
        return Ok(Some("vpc endpoint service"));
    }
    Ok(None)
}

/// The listing marker following `store`: its creation date and id (the listing order).
fn store_marker(store: &CustomKeyStoreRecord) -> String {
    format!("{}:{}", store.creation_date_ms, store.id)
}

/// The (creation date, id) a [`store_marker`] encodes; `NotFound` if it is not one.
fn parse_store_marker(marker: &str) -> Result<(i64, &str), StorageError> {
    let (ms, id) = marker.split_once(':').ok_or(StorageError::NotFound)?;
    let ms = ms.parse::<i64>().map_err(|_| StorageError::NotFound)?;
    if id.is_empty() {
        return Err(StorageError::NotFound);
    }
    Ok((ms, id))
}

/// Whether the custom key store exists.
fn store_exists(
    tx: &Transaction<'_>,
    account_id: &str,
    region: &str,
    id: &str,
) -> rusqlite::Result<bool> {
    tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM custom_key_stores \
         WHERE account_id = ?1 AND region = ?2 AND id = ?3)",
    )?
    .query_row(params![account_id, region, id], |r| r.get(0))
}

/// The tags of a key, in insertion order.
fn load_tags(
    tx: &Transaction<'_>,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT tag_key, tag_value FROM key_tags \
         WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 ORDER BY position",
    )?;
    let rows = stmt.query_map(params![account_id, region, key_id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

/// Replaces the tags of `key` (which must exist) by `key.tags`.
fn store_tags(tx: &Transaction<'_>, key: &KeyRecord) -> Result<(), Failure> {
    tx.execute(
        "DELETE FROM key_tags WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
        params![key.account_id, key.region, key.key_id],
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO key_tags (account_id, region, key_id, position, tag_key, tag_value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (position, (tag_key, tag_value)) in key.tags.iter().enumerate() {
        let position = i64::try_from(position)
            .map_err(|_| StorageError::Conflict("too many tags".to_owned()))?;
        stmt.execute(params![
            key.account_id,
            key.region,
            key.key_id,
            position,
            tag_key,
            tag_value
        ])
        .map_err(|e| match constraint(&e) {
            Some((ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE, _)) => {
                Failure::Storage(StorageError::Conflict(format!(
                    "duplicate tag key {tag_key:?}"
                )))
            }
            _ => Failure::Sql(e),
        })?;
    }
    Ok(())
}

/// Inserts `key` (with its tags) unless the account and Region already hold `max_keys`
/// keys; the count comes from `key_counts`, kept by triggers, not from a scan.
fn insert_key(tx: &Transaction<'_>, key: &KeyRecord, max_keys: u64) -> Result<(), Failure> {
    let count: i64 = tx
        .prepare_cached("SELECT n FROM key_counts WHERE account_id = ?1 AND region = ?2")?
        .query_row(params![key.account_id, key.region], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if u64::try_from(count).unwrap_or(0) >= max_keys {
        return Err(StorageError::LimitExceeded(format!(
            "The account already has {count} KMS keys in this Region; the quota is {max_keys}."
        ))
        .into());
    }
    tx.prepare_cached(&format!(
        "INSERT INTO keys ({KEY_COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?
    .execute(params![
        key.account_id,
        key.region,
        key.key_id,
        key.arn,
        key.creation_date_ms,
        key.description,
        key.key_spec,
        key.key_usage,
        key.origin,
        key.key_state,
        key.deletion_date_ms,
        key.pending_window_days,
        key.multi_region,
        key.custom_key_store_id,
        key.xks_key_id,
        key.policy,
        key.sealed_material,
        key.material_id,
    ])
    .map_err(|e| match constraint(&e) {
        Some((ffi::SQLITE_CONSTRAINT_PRIMARYKEY, _)) => {
            Failure::Storage(StorageError::AlreadyExists(format!("key {}", key.key_id)))
        }
        Some((ffi::SQLITE_CONSTRAINT_UNIQUE, msg)) if msg.contains("xks_key_id") => {
            Failure::Storage(StorageError::XksKeyInUse)
        }
        Some((ffi::SQLITE_CONSTRAINT_TRIGGER, TRIGGER_STORE_NOT_FOUND)) => {
            Failure::Storage(StorageError::NotFound)
        }
        _ => Failure::Sql(e),
    })?;
    store_tags(tx, key)
}

impl Storage for SqliteStorage {
    fn create_key(&self, key: &KeyRecord, max_keys: u64) -> Result<(), StorageError> {
        let key = key.clone();
        self.write_queued(move |tx| insert_key(tx, &key, max_keys))
    }

    fn get_key(
        &self,
        account_id: &str,
        region: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StorageError> {
        self.read(|tx| {
            let key = tx
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM keys \
                     WHERE account_id = ?1 AND region = ?2 AND key_id = ?3"
                ))?
                .query_row(params![account_id, region, key_id], key_from_row)
                .optional()?;
            let Some(mut key) = key else {
                return Ok(None);
            };
            key.tags = load_tags(tx, account_id, region, key_id)?;
            Ok(Some(key))
        })
    }

    fn update_key(&self, key: &KeyRecord) -> Result<(), StorageError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE keys SET description = ?4, key_state = ?5, deletion_date_ms = ?6, \
                     pending_window_days = ?7, policy = ?8, sealed_material = ?9, \
                     material_id = ?10 \
                     WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
                )?
                .execute(params![
                    key.account_id,
                    key.region,
                    key.key_id,
                    key.description,
                    key.key_state,
                    key.deletion_date_ms,
                    key.pending_window_days,
                    key.policy,
                    key.sealed_material,
                    key.material_id,
                ])?;
            if changed == 0 {
                return Err(StorageError::NotFound.into());
            }
            store_tags(tx, key)
        })
    }

    fn delete_key(&self, account_id: &str, region: &str, key_id: &str) -> Result<(), StorageError> {
        self.write(|tx| {
            // The foreign keys cascade too; the explicit deletes do not depend on them.
            tx.execute(
                "DELETE FROM aliases WHERE account_id = ?1 AND region = ?2 AND target_key_id = ?3",
                params![account_id, region, key_id],
            )?;
            tx.execute(
                "DELETE FROM key_tags WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
                params![account_id, region, key_id],
            )?;
            let deleted = tx.execute(
                "DELETE FROM keys WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
                params![account_id, region, key_id],
            )?;
            if deleted == 0 {
                return Err(StorageError::NotFound.into());
            }
            Ok(())
        })
    }

    fn list_keys(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StorageError> {
        let limit = limit.max(1);
        self.read(|tx| {
            // Separate statements with and without a marker keep the range on the primary key.
            let after = if marker.is_some() {
                "AND key_id > ?4"
            } else {
                "AND ?4 IS NULL"
            };
            let mut keys = tx
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM keys \
                     WHERE account_id = ?1 AND region = ?2 {after} ORDER BY key_id LIMIT ?3"
                ))?
                .query_map(
                    params![account_id, region, fetch_limit(limit), marker],
                    key_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next_marker = if keys.len() > limit {
                keys.truncate(limit);
                keys.last().map(|k| k.key_id.clone())
            } else {
                None
            };
            for key in &mut keys {
                key.tags = load_tags(tx, account_id, region, &key.key_id)?;
            }
            Ok(Page {
                items: keys,
                next_marker,
            })
        })
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StorageError> {
        self.write(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?
            .execute(params![
                alias.account_id,
                alias.region,
                alias.alias_name,
                alias.target_key_id,
                alias.creation_date_ms,
                alias.last_updated_ms,
            ])
            .map_err(|e| match constraint(&e) {
                Some((ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE, _)) => {
                    Failure::Storage(StorageError::AlreadyExists(format!(
                        "alias {}",
                        alias.alias_name
                    )))
                }
                Some((ffi::SQLITE_CONSTRAINT_FOREIGNKEY, _)) => {
                    Failure::Storage(StorageError::NotFound)
                }
                _ => Failure::Sql(e),
            })?;
            Ok(())
        })
    }

    fn get_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<Option<AliasRecord>, StorageError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ALIAS_COLUMNS} FROM aliases \
                     WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3"
                ))?
                .query_row(params![account_id, region, alias_name], alias_from_row)
                .optional()?)
        })
    }

    fn update_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
        target_key_id: &str,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE aliases SET target_key_id = ?4, last_updated_ms = ?5 \
                     WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3",
                    params![account_id, region, alias_name, target_key_id, now_ms],
                )
                .map_err(|e| match constraint(&e) {
                    Some((ffi::SQLITE_CONSTRAINT_FOREIGNKEY, _)) => {
                        Failure::Storage(StorageError::NotFound)
                    }
                    _ => Failure::Sql(e),
                })?;
            if changed == 0 {
                return Err(StorageError::NotFound.into());
            }
            Ok(())
        })
    }

    fn delete_alias(
        &self,
        account_id: &str,
        region: &str,
        alias_name: &str,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM aliases WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3",
                params![account_id, region, alias_name],
            )?;
            if deleted == 0 {
                return Err(StorageError::NotFound.into());
            }
            Ok(())
        })
    }

    fn list_aliases(
        &self,
        account_id: &str,
        region: &str,
        key_id: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<AliasRecord>, StorageError> {
        let limit = limit.max(1);
        self.with_conn(|conn| {
            // Separate statements per filter keep the ranges on the indexes.
            let target = if key_id.is_some() {
                "AND target_key_id = ?4"
            } else {
                "AND ?4 IS NULL"
            };
            let after = if marker.is_some() {
                "AND alias_name > ?5"
            } else {
                "AND ?5 IS NULL"
            };
            let mut aliases = conn
                .prepare_cached(&format!(
                    "SELECT {ALIAS_COLUMNS} FROM aliases \
                     WHERE account_id = ?1 AND region = ?2 {target} {after} \
                     ORDER BY alias_name LIMIT ?3"
                ))?
                .query_map(
                    params![account_id, region, fetch_limit(limit), key_id, marker],
                    alias_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next_marker = if aliases.len() > limit {
                aliases.truncate(limit);
                aliases.last().map(|a| a.alias_name.clone())
            } else {
                None
            };
            Ok(Page {
                items: aliases,
                next_marker,
            })
        })
    }

    fn keys_due_for_deletion(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT account_id, region, key_id FROM keys \
                     WHERE key_state = ?1 AND deletion_date_ms IS NOT NULL \
                       AND deletion_date_ms <= ?2 \
                     ORDER BY deletion_date_ms, account_id, region, key_id",
                )?
                .query_map(params![KEY_STATE_PENDING_DELETION, now_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn create_custom_key_store(
        &self,
        store: &CustomKeyStoreRecord,
        max_stores: u64,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            // Insert first: a clash with another store is reported even at the quota.
            tx.prepare_cached(&format!(
                "INSERT INTO custom_key_stores ({STORE_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ))?
            .execute(params![
                store.account_id,
                store.region,
                store.id,
                store.name,
                store.store_type,
                store.uri_endpoint,
                store.uri_path,
                store.connectivity,
                store.vpc_endpoint_service_name,
                store.vpc_endpoint_service_owner,
                store.access_key_id,
                store.sealed_secret,
                store.connection_state,
                store.connection_error_code,
                store.creation_date_ms,
            ])
            .map_err(|e| store_clash(tx, store, false, e))?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM custom_key_stores WHERE account_id = ?1 AND region = ?2",
                params![store.account_id, store.region],
                |r| r.get(0),
            )?;
            let before = u64::try_from(count).unwrap_or(0).saturating_sub(1);
            if before >= max_stores {
                // Dropping the transaction rolls the insert back.
                return Err(StorageError::LimitExceeded(format!(
                    "The account already has {before} custom key stores in this Region; \
                     the quota is {max_stores}."
                ))
                .into());
            }
            Ok(())
        })
    }

    fn get_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                     WHERE account_id = ?1 AND region = ?2 AND id = ?3"
                ))?
                .query_row(params![account_id, region, id], store_from_row)
                .optional()?)
        })
    }

    fn get_custom_key_store_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                     WHERE account_id = ?1 AND region = ?2 AND name = ?3"
                ))?
                .query_row(params![account_id, region, name], store_from_row)
                .optional()?)
        })
    }

    fn update_custom_key_store(&self, store: &CustomKeyStoreRecord) -> Result<(), StorageError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE custom_key_stores SET name = ?5, uri_endpoint = ?6, uri_path = ?7, \
                     connectivity = ?8, vpc_endpoint_service_name = ?9, \
                     vpc_endpoint_service_owner = ?10, access_key_id = ?11, sealed_secret = ?12 \
                     WHERE account_id = ?1 AND region = ?2 AND id = ?3 \
                       AND connection_state = ?4",
                )?
                .execute(params![
                    store.account_id,
                    store.region,
                    store.id,
                    store.connection_state,
                    store.name,
                    store.uri_endpoint,
                    store.uri_path,
                    store.connectivity,
                    store.vpc_endpoint_service_name,
                    store.vpc_endpoint_service_owner,
                    store.access_key_id,
                    store.sealed_secret,
                ])
                .map_err(|e| store_clash(tx, store, true, e))?;
            if changed == 0 {
                return Err(
                    if store_exists(tx, &store.account_id, &store.region, &store.id)? {
                        StorageError::Conflict("connection state changed".to_owned())
                    } else {
                        StorageError::NotFound
                    }
                    .into(),
                );
            }
            Ok(())
        })
    }

    fn set_connection_state(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
        from: &[&str],
        state: &str,
        error_code: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.write(|tx| {
            if from.is_empty() {
                return if store_exists(tx, account_id, region, id)? {
                    Ok(false)
                } else {
                    Err(StorageError::NotFound.into())
                };
            }
            let placeholders = (0..from.len())
                .map(|i| format!("?{}", i + 6))
                .collect::<Vec<_>>()
                .join(", ");
            let mut values: Vec<&dyn rusqlite::ToSql> =
                vec![&account_id, &region, &id, &state, &error_code];
            values.extend(from.iter().map(|f| f as &dyn rusqlite::ToSql));
            let changed = tx
                .prepare_cached(&format!(
                    "UPDATE custom_key_stores \
                     SET connection_state = ?4, connection_error_code = ?5 \
                     WHERE account_id = ?1 AND region = ?2 AND id = ?3 \
                       AND connection_state IN ({placeholders})"
                ))?
                .execute(values.as_slice())?;
            if changed == 0 && !store_exists(tx, account_id, region, id)? {
                return Err(StorageError::NotFound.into());
            }
            Ok(changed > 0)
        })
    }

    fn delete_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            // The trigger refuses the delete while a key references the store, in this very
            // statement, under the write lock.
            let deleted = tx
                .execute(
                    "DELETE FROM custom_key_stores \
                     WHERE account_id = ?1 AND region = ?2 AND id = ?3",
                    params![account_id, region, id],
                )
                .map_err(|e| match constraint(&e) {
                    Some((ffi::SQLITE_CONSTRAINT_TRIGGER, TRIGGER_STORE_HAS_KEYS)) => {
                        Failure::Storage(StorageError::Conflict("has keys".to_owned()))
                    }
                    _ => Failure::Sql(e),
                })?;
            if deleted == 0 {
                return Err(StorageError::NotFound.into());
            }
            Ok(())
        })
    }

    fn list_custom_key_stores(
        &self,
        account_id: &str,
        region: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<CustomKeyStoreRecord>, StorageError> {
        let limit = limit.max(1);
        let after = marker.map(parse_store_marker).transpose()?;
        let (after_ms, after_id) = after.unzip();
        self.with_conn(|conn| {
            // Separate statements with and without a marker keep the range on the index.
            let range = if after.is_some() {
                "AND (creation_date_ms, id) > (?4, ?5)"
            } else {
                "AND ?4 IS NULL AND ?5 IS NULL"
            };
            let mut stores = conn
                .prepare_cached(&format!(
                    "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                     WHERE account_id = ?1 AND region = ?2 {range} \
                     ORDER BY creation_date_ms, id LIMIT ?3"
                ))?
                .query_map(
                    params![account_id, region, fetch_limit(limit), after_ms, after_id],
                    store_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next_marker = if stores.len() > limit {
                stores.truncate(limit);
                stores.last().map(store_marker)
            } else {
                None
            };
            Ok(Page {
                items: stores,
                next_marker,
            })
        })
    }

    fn connected_custom_key_stores(&self) -> Result<Vec<CustomKeyStoreRecord>, StorageError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {STORE_COLUMNS} FROM custom_key_stores WHERE connection_state = ?1 \
                     ORDER BY account_id, region, creation_date_ms, id"
                ))?
                .query_map([CONNECTION_STATE_CONNECTED], store_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn count_keys_in_custom_key_store(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
    ) -> Result<u64, StorageError> {
        self.with_conn(|conn| {
            let count: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM keys \
                     WHERE account_id = ?1 AND region = ?2 AND custom_key_store_id = ?3",
                )?
                .query_row(params![account_id, region, id], |r| r.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }
}
