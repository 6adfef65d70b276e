//! Versions of key material and rotation settings: reads, the sweeps' queries, and the one
//! narrow conditional write of a rotation, an import or a deletion of imported material
//! (all its rows in one transaction, applied only if the key is still in the state and on
//! the current material the caller decided from).

use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::super::{
    KeyAddress, KeyMaterialRecord, KeyState, MaterialChange, RotationRecord, StorageError,
};
use super::{Failure, SqliteStorage, enum_column};

/// The columns of `key_materials`, in the order [`material_from_row`] reads them.
const MATERIAL_COLUMNS: &str = "material_id, seq, sealed_material, created_ms, rotation_type, \
     expiration_model, valid_to_ms, description";

fn material_from_row(row: &Row<'_>) -> rusqlite::Result<KeyMaterialRecord> {
    Ok(KeyMaterialRecord {
        material_id: row.get(0)?,
        seq: row.get(1)?,
        sealed_material: row.get(2)?,
        created_ms: row.get(3)?,
        rotation_type: row.get(4)?,
        expiration_model: row.get(5)?,
        valid_to_ms: row.get(6)?,
        description: row.get(7)?,
    })
}

pub(super) fn key_materials(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
) -> Result<Vec<KeyMaterialRecord>, StorageError> {
    s.read(|tx| {
        Ok(tx
            .prepare_cached(&format!(
                "SELECT {MATERIAL_COLUMNS} FROM key_materials \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 ORDER BY seq"
            ))?
            .query_map(
                params![key.account_id, key.region, key.key_id],
                material_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

fn rotation_of(
    tx: &Transaction<'_>,
    key: KeyAddress<'_>,
) -> rusqlite::Result<Option<RotationRecord>> {
    tx.prepare_cached(
        "SELECT enabled, period_days, next_rotation_ms FROM key_rotation \
         WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
    )?
    .query_row(params![key.account_id, key.region, key.key_id], |r| {
        Ok(RotationRecord {
            enabled: r.get(0)?,
            period_days: r.get(1)?,
            next_rotation_ms: r.get(2)?,
        })
    })
    .optional()
}

pub(super) fn key_rotation(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
) -> Result<Option<RotationRecord>, StorageError> {
    s.read(|tx| Ok(rotation_of(tx, key)?))
}

pub(super) fn keys_due_for_rotation(
    s: &SqliteStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String)>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(
                "SELECT r.account_id, r.region, r.key_id FROM key_rotation r \
                 JOIN keys k ON k.account_id = r.account_id AND k.region = r.region \
                   AND k.key_id = r.key_id \
                 WHERE r.enabled = 1 AND r.next_rotation_ms <= ?1 AND k.key_state = ?2 \
                 ORDER BY r.next_rotation_ms, r.account_id, r.region, r.key_id",
            )?
            .query_map(params![now_ms, KeyState::Enabled.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

pub(super) fn materials_due_to_expire(
    s: &SqliteStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String, String)>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(
                "SELECT account_id, region, key_id, material_id FROM key_materials \
                 WHERE valid_to_ms IS NOT NULL AND sealed_material IS NOT NULL \
                   AND valid_to_ms <= ?1 \
                 ORDER BY valid_to_ms, account_id, region, key_id, material_id",
            )?
            .query_map(params![now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// Refuses the write unless the key exists ([`StorageError::NotFound`]), its state is one
/// of `from` and its current material is `current` ([`StorageError::StateChanged`]).
fn guard(
    tx: &Transaction<'_>,
    key: KeyAddress<'_>,
    from: &[KeyState],
    current: Option<&str>,
) -> Result<(), Failure> {
    let (state, material_id) = tx
        .prepare_cached(
            "SELECT key_state, material_id FROM keys \
             WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
        )?
        .query_row(params![key.account_id, key.region, key.key_id], |r| {
            Ok((
                enum_column(r, 0, "key_state", KeyState::parse)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })
        .optional()?
        .ok_or(StorageError::NotFound)?;
    if !from.contains(&state) || material_id.as_deref() != current {
        return Err(StorageError::StateChanged.into());
    }
    Ok(())
}

/// Test builds only: a file `<database>.failpoint` holding `name` aborts the process at
/// the named point of a material write, the way a `kill -9` or a power loss would stop it
/// there (a file rather than the environment, so a test arms it for a running process).
#[cfg(feature = "test-hooks")]
fn failpoint(s: &SqliteStorage, name: &str) {
    let mut armed = s.path.clone().into_os_string();
    armed.push(".failpoint");
    if std::fs::read_to_string(&armed).is_ok_and(|v| v.trim() == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "test-hooks"))]
fn failpoint(_s: &SqliteStorage, _name: &str) {}

pub(super) fn change_key_material(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    current: Option<&str>,
    change: &MaterialChange<'_>,
) -> Result<(), StorageError> {
    let written = s.write(|tx| {
        guard(tx, key, from, current)?;
        if let Some(now) = change.rotation_due_at {
            let due = rotation_of(tx, key)?
                .is_some_and(|r| r.enabled && r.next_rotation_ms.is_some_and(|next| next <= now));
            if !due {
                return Err(StorageError::StateChanged.into());
            }
        }
        if let Some(m) = change.put {
            tx.prepare_cached(
                "INSERT INTO key_materials (account_id, region, key_id, material_id, seq, \
                     sealed_material, created_ms, rotation_type, expiration_model, \
                     valid_to_ms, description) \
                 VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM key_materials \
                     WHERE account_id = ?1 AND region = ?2 AND key_id = ?3), \
                     ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (account_id, region, key_id, material_id) DO UPDATE SET \
                     sealed_material = excluded.sealed_material, \
                     expiration_model = excluded.expiration_model, \
                     valid_to_ms = excluded.valid_to_ms, \
                     description = COALESCE(excluded.description, description), \
                     created_ms = CASE WHEN excluded.rotation_type IS NULL THEN created_ms \
                         ELSE excluded.created_ms END, \
                     rotation_type = COALESCE(excluded.rotation_type, rotation_type)",
            )?
            .execute(params![
                key.account_id,
                key.region,
                key.key_id,
                m.material_id,
                m.sealed_material,
                m.created_ms,
                m.rotation_type,
                m.expiration_model,
                m.valid_to_ms,
                m.description,
            ])?;
        }
        failpoint(s, "key-material-after-put");
        if let Some(id) = change.forget {
            tx.prepare_cached(
                "UPDATE key_materials SET sealed_material = NULL \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND material_id = ?4",
            )?
            .execute(params![key.account_id, key.region, key.key_id, id])?;
            tx.prepare_cached(
                "UPDATE keys SET sealed_material = NULL \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND material_id = ?4",
            )?
            .execute(params![key.account_id, key.region, key.key_id, id])?;
        }
        if let Some(id) = change.make_current {
            let changed = tx
                .prepare_cached(
                    "UPDATE keys SET material_id = m.material_id, \
                         sealed_material = m.sealed_material \
                     FROM key_materials m \
                     WHERE keys.account_id = ?1 AND keys.region = ?2 AND keys.key_id = ?3 \
                       AND m.account_id = ?1 AND m.region = ?2 AND m.key_id = ?3 \
                       AND m.material_id = ?4 AND m.sealed_material IS NOT NULL",
                )?
                .execute(params![key.account_id, key.region, key.key_id, id])?;
            if changed != 1 {
                return Err(StorageError::Conflict(format!(
                    "key material {id} is not held and cannot be made current"
                ))
                .into());
            }
        }
        if let Some(state) = change.state {
            tx.prepare_cached(
                "UPDATE keys SET key_state = ?4 \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            )?
            .execute(params![
                key.account_id,
                key.region,
                key.key_id,
                state.as_str()
            ])?;
        }
        if let Some(r) = change.rotation {
            tx.prepare_cached(
                "INSERT INTO key_rotation (account_id, region, key_id, enabled, period_days, \
                     next_rotation_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (account_id, region, key_id) DO UPDATE SET \
                     enabled = excluded.enabled, period_days = excluded.period_days, \
                     next_rotation_ms = excluded.next_rotation_ms",
            )?
            .execute(params![
                key.account_id,
                key.region,
                key.key_id,
                r.enabled,
                r.period_days,
                r.next_rotation_ms,
            ])?;
        }
        failpoint(s, "key-material-before-commit");
        Ok(())
    });
    if written.is_ok() {
        failpoint(s, "key-material-after-commit");
    }
    written
}
