//! The embedded SQLite implementation of [`Storage`].
//!
//! - One database file, in WAL mode with `synchronous = FULL`: a committed write survives a
//!   crash or a power loss. Every write runs in a `BEGIN IMMEDIATE` transaction, so checks
//!   (the key count) and the insert they guard are atomic, even between processes.
//! - Uniqueness is the schema's: primary keys on (account, region, key id), (account, region,
//!   alias name) and (account, region, key id, tag key), and a UNIQUE index on (account,
//!   region, custom key store, external key id). SQLite's NULLs are distinct in a UNIQUE
//!   index, so keys without a custom key store or external key never collide.
//! - Foreign keys tie aliases and tags to their key (`ON DELETE CASCADE`).
//! - Contention: each connection waits up to [`BUSY_TIMEOUT`] for locks, and an operation
//!   that still meets `SQLITE_BUSY`/`SQLITE_LOCKED` is retried whole (a fresh transaction)
//!   until [`RETRY_DEADLINE`]; only then is it reported as [`StorageError::Backend`].
//! - Each [`SqliteStorage`] keeps up to [`MAX_IDLE_CONNECTIONS`] idle connections; callers
//!   beyond that open short-lived ones.
//! - The `schema_version` table records the schema; a database written by a newer version is
//!   refused.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};
use rusqlite::{ffi, params};

use super::{AliasRecord, KEY_STATE_PENDING_DELETION, KeyRecord, Page, Storage, StorageError};

/// The schema version this code writes and understands.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long one SQLite call waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation is retried (whole) while the database stays busy.
const RETRY_DEADLINE: Duration = Duration::from_secs(20);

/// Idle connections kept per [`SqliteStorage`].
const MAX_IDLE_CONNECTIONS: usize = 4;

/// The schema, version 1.
const SCHEMA_V1: &str = "
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

/// The columns of `keys`, in the order [`key_from_row`] reads them.
const KEY_COLUMNS: &str = "account_id, region, key_id, arn, creation_date_ms, description, \
     key_spec, key_usage, origin, key_state, deletion_date_ms, pending_window_days, \
     multi_region, custom_key_store_id, xks_key_id, policy, sealed_material, material_id";

/// The columns of `aliases`, in the order [`alias_from_row`] reads them.
const ALIAS_COLUMNS: &str =
    "account_id, region, alias_name, target_key_id, creation_date_ms, last_updated_ms";

/// Why an attempt failed: a raw SQLite error (maybe retryable) or a final answer.
#[derive(Debug)]
enum Failure {
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
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Sql(e) if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        )
    }

    fn into_storage(self) -> StorageError {
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
        mut op: impl FnMut(&Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, StorageError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v = op(&tx)?;
            tx.commit()?;
            Ok(v)
        })
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
    if init {
        init_schema(&mut conn)?;
    }
    Ok(conn)
}

/// Creates the schema in an empty database, or checks the version of an existing one.
fn init_schema(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let version: Option<i64> =
        tx.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    match version {
        None => {
            tx.execute_batch(SCHEMA_V1)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StorageError::Backend(format!(
                "database schema version {v} is newer than this program's ({SCHEMA_VERSION})"
            ))
            .into());
        }
        Some(v) => {
            return Err(StorageError::Backend(format!(
                "database schema version {v} is not supported (expected {SCHEMA_VERSION})"
            ))
            .into());
        }
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

impl Storage for SqliteStorage {
    fn create_key(&self, key: &KeyRecord, max_keys: u64) -> Result<(), StorageError> {
        self.write(|tx| {
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM keys WHERE account_id = ?1 AND region = ?2",
                params![key.account_id, key.region],
                |r| r.get(0),
            )?;
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
                _ => Failure::Sql(e),
            })?;
            store_tags(tx, key)
        })
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
}
