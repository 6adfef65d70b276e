//! Multi-Region key sets (issue 19): reading a set, creating a replica with every material
//! version in one transaction, moving the primary conditionally, and the sweep's query for
//! the asynchronous steps that are over.
//!
//! The set's row (`multi_region_sets`) is made by a trigger when its first key is inserted
//! and dropped by another with its last member, so every multi-Region key has one.

use rusqlite::{OptionalExtension, Transaction, params};

use super::super::{
    KeyMaterialRecord, KeyRecord, KeyState, MultiRegionMember, MultiRegionSet, StorageError,
};
use super::{Failure, SqliteStorage, enum_column, keys};

/// The Region of the set's primary, if the set exists.
fn primary_region(
    tx: &Transaction<'_>,
    account_id: &str,
    key_id: &str,
) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached(
        "SELECT primary_region FROM multi_region_sets WHERE account_id = ?1 AND key_id = ?2",
    )?
    .query_row(params![account_id, key_id], |r| r.get(0))
    .optional()
}

/// The stored state of one key, if it exists.
fn state_of(
    tx: &Transaction<'_>,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> rusqlite::Result<Option<KeyState>> {
    tx.prepare_cached(
        "SELECT key_state FROM keys WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
    )?
    .query_row(params![account_id, region, key_id], |r| {
        enum_column(r, 0, "key_state", KeyState::parse)
    })
    .optional()
}

pub(super) fn multi_region_set(
    s: &SqliteStorage,
    account_id: &str,
    key_id: &str,
) -> Result<Option<MultiRegionSet>, StorageError> {
    s.read(|tx| {
        let Some(primary_region) = primary_region(tx, account_id, key_id)? else {
            return Ok(None);
        };
        let members = tx
            .prepare_cached(
                "SELECT region, arn, key_state FROM keys \
                 WHERE account_id = ?1 AND key_id = ?2 AND multi_region = 1 \
                 ORDER BY creation_date_ms, region",
            )?
            .query_map(params![account_id, key_id], |r| {
                Ok(MultiRegionMember {
                    region: r.get(0)?,
                    arn: r.get(1)?,
                    key_state: enum_column(r, 2, "key_state", KeyState::parse)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(MultiRegionSet {
            primary_region,
            members,
        }))
    })
}

pub(super) fn create_replica_key(
    s: &SqliteStorage,
    replica: &KeyRecord,
    materials: &[KeyMaterialRecord],
    primary_region_was: &str,
    primary_from: &[KeyState],
    max_keys: u64,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let (account, key_id) = (replica.account_id.as_str(), replica.key_id.as_str());
        if primary_region(tx, account, key_id)?.as_deref() != Some(primary_region_was) {
            return Err(StorageError::StateChanged.into());
        }
        let primary_state = state_of(tx, account, primary_region_was, key_id)?;
        if !primary_state.is_some_and(|st| primary_from.contains(&st)) {
            return Err(StorageError::StateChanged.into());
        }
        if state_of(tx, account, &replica.region, key_id)?.is_some() {
            return Err(StorageError::AlreadyExists(format!(
                "multi-Region key {key_id} in Region {}",
                replica.region
            ))
            .into());
        }
        // Inserted without material, so the first-material trigger stays out of it: the
        // versions below keep the primary's order, and the current one is set after them.
        let bare = KeyRecord {
            sealed_material: None,
            material_id: None,
            ..replica.clone()
        };
        keys::insert_key(tx, &bare, max_keys)?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO key_materials (account_id, region, key_id, material_id, seq, \
                 sealed_material, created_ms, rotation_type, expiration_model, valid_to_ms, \
                 description) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for m in materials {
            insert.execute(params![
                account,
                replica.region,
                key_id,
                m.material_id,
                m.seq,
                m.sealed_material,
                m.created_ms,
                m.rotation_type,
                m.expiration_model,
                m.valid_to_ms,
                m.description,
            ])?;
        }
        if replica.material_id.is_some() || replica.sealed_material.is_some() {
            tx.prepare_cached(
                "UPDATE keys SET sealed_material = ?4, material_id = ?5 \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            )?
            .execute(params![
                account,
                replica.region,
                key_id,
                replica.sealed_material,
                replica.material_id,
            ])?;
        }
        Ok(())
    })
}

pub(super) fn update_primary_region(
    s: &SqliteStorage,
    account_id: &str,
    key_id: &str,
    from_region: &str,
    to_region: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.write(|tx| {
        for region in [from_region, to_region] {
            match state_of(tx, account_id, region, key_id)? {
                None => return Err(StorageError::NotFound.into()),
                Some(KeyState::Enabled) => {}
                Some(_) => return Err(StorageError::StateChanged.into()),
            }
        }
        let moved = tx
            .prepare_cached(
                "UPDATE multi_region_sets SET primary_region = ?4, updated_ms = ?5 \
                 WHERE account_id = ?1 AND key_id = ?2 AND primary_region = ?3",
            )?
            .execute(params![account_id, key_id, from_region, to_region, now_ms])?;
        if moved != 1 {
            return Err(StorageError::StateChanged.into());
        }
        tx.prepare_cached(
            "UPDATE keys SET key_state = ?5 \
             WHERE account_id = ?1 AND key_id = ?2 AND region IN (?3, ?4)",
        )?
        .execute(params![
            account_id,
            key_id,
            from_region,
            to_region,
            KeyState::Updating.as_str()
        ])?;
        Ok(())
    })
}

pub(super) fn multi_region_transitions_due(
    s: &SqliteStorage,
    before_ms: i64,
) -> Result<Vec<(String, String, String, KeyState)>, StorageError> {
    s.read(|tx| {
        let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, String, String, KeyState)> {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                enum_column(r, 3, "key_state", KeyState::parse)?,
            ))
        };
        // Uses the `keys_deletion` index (key_state first): cheap when nothing is due.
        let mut due = tx
            .prepare_cached(
                "SELECT k.account_id, k.region, k.key_id, k.key_state FROM keys k \
                 LEFT JOIN multi_region_sets m \
                   ON m.account_id = k.account_id AND m.key_id = k.key_id \
                 WHERE (k.key_state = ?1 AND k.creation_date_ms <= ?3) \
                    OR (k.key_state = ?2 AND COALESCE(m.updated_ms, 0) <= ?3) \
                 ORDER BY k.account_id, k.key_id, k.region",
            )?
            .query_map(
                params![
                    KeyState::Creating.as_str(),
                    KeyState::Updating.as_str(),
                    before_ms
                ],
                row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let orphaned = tx
            .prepare_cached(
                "SELECT k.account_id, k.region, k.key_id, k.key_state FROM keys k \
                 WHERE k.key_state = ?1 AND NOT EXISTS (SELECT 1 FROM keys o \
                     WHERE o.account_id = k.account_id AND o.key_id = k.key_id \
                       AND o.multi_region = 1 AND o.region <> k.region) \
                 ORDER BY k.account_id, k.key_id, k.region",
            )?
            .query_map(params![KeyState::PendingReplicaDeletion.as_str()], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        due.extend(orphaned);
        Ok::<_, Failure>(due)
    })
}
