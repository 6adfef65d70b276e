//! Keys and their tags: creation (grouped commits), reads, listings, deletion, and the
//! narrow conditional writes: each changes only the columns its operation owns, and only if
//! the key is still in a state the caller decided from (checked under the write lock).

use rusqlite::{OptionalExtension, Row, Transaction, ffi, params};

use super::super::{KeyAddress, KeyRecord, KeyState, Page, ScheduledDeletion, StorageError};
use super::schema::TRIGGER_STORE_NOT_FOUND;
use super::{Failure, SqliteStorage, constraint, enum_column, fetch_limit};

/// The columns of `keys`, in the order [`key_from_row`] reads them.
pub(super) const KEY_COLUMNS: &str = "account_id, region, key_id, arn, creation_date_ms, description, \
     key_spec, key_usage, origin, key_state, deletion_date_ms, pending_window_days, \
     multi_region, custom_key_store_id, xks_key_id, policy, sealed_material, material_id";

pub(super) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
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
        key_state: enum_column(row, 9, "key_state", KeyState::parse)?,
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
pub(super) fn insert_key(
    tx: &Transaction<'_>,
    key: &KeyRecord,
    max_keys: u64,
) -> Result<(), Failure> {
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
        key.key_state.as_str(),
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

pub(super) fn create_key(
    s: &SqliteStorage,
    key: &KeyRecord,
    max_keys: u64,
) -> Result<(), StorageError> {
    let key = key.clone();
    s.write_queued(move |tx| insert_key(tx, &key, max_keys))
}

pub(super) fn get_key(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> Result<Option<KeyRecord>, StorageError> {
    s.read(|tx| {
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

pub(super) fn delete_key_if_due(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let state: Option<(String, Option<i64>)> = tx
            .prepare_cached(
                "SELECT key_state, deletion_date_ms FROM keys
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            )?
            .query_row(params![key.account_id, key.region, key.key_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match state {
            None => return Err(StorageError::NotFound.into()),
            Some((state, Some(date)))
                if state == KeyState::PendingDeletion.as_str() && date <= now_ms => {}
            Some(_) => return Err(StorageError::StateChanged.into()),
        }
        // Aliases, tags and everything else of the key cascade with it.
        tx.execute(
            "DELETE FROM keys WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            params![key.account_id, key.region, key.key_id],
        )?;
        Ok(())
    })
}

pub(super) fn list_keys(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<KeyRecord>, StorageError> {
    let limit = limit.max(1);
    s.read(|tx| {
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

pub(super) fn keys_due_for_deletion(
    s: &SqliteStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String)>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(
                "SELECT account_id, region, key_id FROM keys \
                 WHERE key_state = ?1 AND deletion_date_ms IS NOT NULL \
                   AND deletion_date_ms <= ?2 \
                 ORDER BY deletion_date_ms, account_id, region, key_id",
            )?
            .query_map(params![KeyState::PendingDeletion.as_str(), now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Refuses the write unless the key exists ([`StorageError::NotFound`]) and its state is one
/// of `from` ([`StorageError::StateChanged`]). Runs inside the write transaction, so the
/// state cannot change between this check and the write that follows it.
fn guard_state(
    tx: &Transaction<'_>,
    key: KeyAddress<'_>,
    from: &[KeyState],
) -> Result<(), Failure> {
    let state = tx
        .prepare_cached(
            "SELECT key_state FROM keys WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
        )?
        .query_row(params![key.account_id, key.region, key.key_id], |r| {
            enum_column(r, 0, "key_state", KeyState::parse)
        })
        .optional()?
        .ok_or(StorageError::NotFound)?;
    if !from.contains(&state) {
        return Err(StorageError::StateChanged.into());
    }
    Ok(())
}

pub(super) fn transition_key_state(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    to: KeyState,
    deletion: Option<ScheduledDeletion>,
) -> Result<(), StorageError> {
    s.write(|tx| {
        guard_state(tx, key, from)?;
        tx.prepare_cached(
            "UPDATE keys SET key_state = ?4, deletion_date_ms = ?5, pending_window_days = ?6 \
             WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
        )?
        .execute(params![
            key.account_id,
            key.region,
            key.key_id,
            to.as_str(),
            deletion.map(|d| d.date_ms),
            deletion.map(|d| d.window_days),
        ])?;
        Ok(())
    })
}

/// A text column of `keys` that one operation owns and sets alone.
#[derive(Debug, Clone, Copy)]
pub(super) enum Column {
    /// `description` (UpdateKeyDescription).
    Description,
    /// `policy` (PutKeyPolicy).
    Policy,
}

pub(super) fn set_key_column(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    column: Column,
    value: &str,
) -> Result<(), StorageError> {
    // Separate statements per column: a column name is never a bound value.
    let sql = match column {
        Column::Description => {
            "UPDATE keys SET description = ?4 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3"
        }
        Column::Policy => {
            "UPDATE keys SET policy = ?4 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3"
        }
    };
    s.write(|tx| {
        guard_state(tx, key, from)?;
        tx.prepare_cached(sql)?
            .execute(params![key.account_id, key.region, key.key_id, value])?;
        Ok(())
    })
}

pub(super) fn tag_key(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    tags: &[(String, String)],
    max_tags: usize,
) -> Result<(), StorageError> {
    let mut seen = std::collections::HashSet::new();
    if let Some((repeated, _)) = tags.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(StorageError::Conflict(format!(
            "duplicate tag key {repeated:?}"
        )));
    }
    s.write(|tx| {
        guard_state(tx, key, from)?;
        let existing = load_tags(tx, key.account_id, key.region, key.key_id)?;
        let added = tags
            .iter()
            .filter(|(k, _)| !existing.iter().any(|(e, _)| e == k))
            .count();
        if existing.len() + added > max_tags {
            return Err(
                StorageError::LimitExceeded(format!("a key has at most {max_tags} tags")).into(),
            );
        }
        // A new tag goes after the last one; an existing one keeps its position.
        let mut stmt = tx.prepare_cached(
            "INSERT INTO key_tags (account_id, region, key_id, position, tag_key, tag_value) \
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(position), -1) + 1 FROM key_tags \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3), ?4, ?5) \
             ON CONFLICT (account_id, region, key_id, tag_key) \
             DO UPDATE SET tag_value = excluded.tag_value",
        )?;
        for (tag_key, tag_value) in tags {
            stmt.execute(params![
                key.account_id,
                key.region,
                key.key_id,
                tag_key,
                tag_value
            ])?;
        }
        Ok(())
    })
}

pub(super) fn untag_key(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    tag_keys: &[String],
) -> Result<(), StorageError> {
    s.write(|tx| {
        guard_state(tx, key, from)?;
        let mut stmt = tx.prepare_cached(
            "DELETE FROM key_tags \
             WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND tag_key = ?4",
        )?;
        for tag_key in tag_keys {
            stmt.execute(params![key.account_id, key.region, key.key_id, tag_key])?;
        }
        Ok(())
    })
}
