//! Versions of key material and rotation settings: reads, the sweeps' queries, and the one
//! narrow conditional write of a rotation, an import or a deletion of imported material
//! (all its rows in one transaction, under the key's row lock, applied only if the key is
//! still in the state and on the current material the caller decided from), so a rotation
//! or expiry sweep running in several processes acts once per key.

use tokio_postgres::Row;

use super::super::{
    KeyAddress, KeyMaterialRecord, KeyState, MaterialChange, RotationRecord, StorageError,
};
use super::{Conn, Failure, PgStorage, Tx, enum_column};

fn material_from_row(row: &Row) -> Result<KeyMaterialRecord, Failure> {
    Ok(KeyMaterialRecord {
        material_id: row.try_get(0)?,
        seq: row.try_get(1)?,
        sealed_material: row.try_get(2)?,
        created_ms: row.try_get(3)?,
        rotation_type: row.try_get(4)?,
        expiration_model: row.try_get(5)?,
        valid_to_ms: row.try_get(6)?,
        description: row.try_get(7)?,
    })
}

fn rotation_from_row(row: &Row) -> Result<RotationRecord, Failure> {
    let period: Option<i64> = row.try_get(1)?;
    Ok(RotationRecord {
        enabled: row.try_get(0)?,
        period_days: period
            .map(|p| {
                u32::try_from(p).map_err(|_| StorageError::UnknownValue {
                    column: "period_days",
                    value: p.to_string(),
                })
            })
            .transpose()?,
        next_rotation_ms: row.try_get(2)?,
    })
}

const SELECT_ROTATION: &str = "SELECT enabled, period_days, next_rotation_ms FROM key_rotation \
     WHERE account_id = $1 AND region = $2 AND key_id = $3";

pub(super) fn key_materials(
    s: &PgStorage,
    key: KeyAddress<'_>,
) -> Result<Vec<KeyMaterialRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT material_id, seq, sealed_material, created_ms, rotation_type, \
             expiration_model, valid_to_ms, description FROM key_materials \
             WHERE account_id = $1 AND region = $2 AND key_id = $3 ORDER BY seq",
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?
        .iter()
        .map(material_from_row)
        .collect()
    })
}

pub(super) fn key_rotation(
    s: &PgStorage,
    key: KeyAddress<'_>,
) -> Result<Option<RotationRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            SELECT_ROTATION,
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?
        .first()
        .map(rotation_from_row)
        .transpose()
    })
}

pub(super) fn keys_due_for_rotation(
    s: &PgStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String)>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT r.account_id, r.region, r.key_id FROM key_rotation r \
             JOIN keys k ON k.account_id = r.account_id AND k.region = r.region \
               AND k.key_id = r.key_id \
             WHERE r.enabled AND r.next_rotation_ms <= $1 AND k.key_state = $2 \
             ORDER BY r.next_rotation_ms, r.account_id, r.region, r.key_id",
            &[&now_ms, &KeyState::Enabled.as_str()],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    })
}

pub(super) fn materials_due_to_expire(
    s: &PgStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String, String)>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT account_id, region, key_id, material_id FROM key_materials \
             WHERE valid_to_ms IS NOT NULL AND sealed_material IS NOT NULL \
               AND valid_to_ms <= $1 \
             ORDER BY valid_to_ms, account_id, region, key_id, material_id",
            &[&now_ms],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
    })
}

/// Locks the key's row until commit and refuses the write unless the key exists
/// ([`StorageError::NotFound`]), its state is one of `from` and its current material is
/// `current` ([`StorageError::StateChanged`]).
async fn guard(
    tx: &mut Tx<'_>,
    key: KeyAddress<'_>,
    from: &[KeyState],
    current: Option<&str>,
) -> Result<(), Failure> {
    let row = tx
        .query_opt(
            "SELECT key_state, material_id FROM keys \
             WHERE account_id = $1 AND region = $2 AND key_id = $3 FOR UPDATE",
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?
        .ok_or(StorageError::NotFound)?;
    let state = enum_column(&row, 0, "key_state", KeyState::parse)?;
    let material_id: Option<String> = row.try_get(1)?;
    if !from.contains(&state) || material_id.as_deref() != current {
        return Err(StorageError::StateChanged.into());
    }
    Ok(())
}

pub(super) fn change_key_material(
    s: &PgStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    current: Option<&str>,
    change: &MaterialChange<'_>,
) -> Result<(), StorageError> {
    let k = [key.account_id, key.region, key.key_id];
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        guard(&mut tx, key, from, current).await?;
        if let Some(now) = change.rotation_due_at {
            let rotation = tx
                .query_opt(SELECT_ROTATION, &[&k[0], &k[1], &k[2]])
                .await?
                .as_ref()
                .map(rotation_from_row)
                .transpose()?;
            let due = rotation
                .is_some_and(|r| r.enabled && r.next_rotation_ms.is_some_and(|next| next <= now));
            if !due {
                return Err(StorageError::StateChanged.into());
            }
        }
        if let Some(m) = change.put {
            tx.execute(
                "INSERT INTO key_materials AS m (account_id, region, key_id, material_id, seq, \
                     sealed_material, created_ms, rotation_type, expiration_model, \
                     valid_to_ms, description) \
                 VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM key_materials \
                     WHERE account_id = $1 AND region = $2 AND key_id = $3), \
                     $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (account_id, region, key_id, material_id) DO UPDATE SET \
                     sealed_material = EXCLUDED.sealed_material, \
                     expiration_model = EXCLUDED.expiration_model, \
                     valid_to_ms = EXCLUDED.valid_to_ms, \
                     description = COALESCE(EXCLUDED.description, m.description), \
                     created_ms = CASE WHEN EXCLUDED.rotation_type IS NULL THEN m.created_ms \
                         ELSE EXCLUDED.created_ms END, \
                     rotation_type = COALESCE(EXCLUDED.rotation_type, m.rotation_type)",
                &[
                    &k[0],
                    &k[1],
                    &k[2],
                    &m.material_id,
                    &m.sealed_material,
                    &m.created_ms,
                    &m.rotation_type,
                    &m.expiration_model,
                    &m.valid_to_ms,
                    &m.description,
                ],
            )
            .await?;
        }
        if let Some(id) = change.forget {
            tx.execute(
                "UPDATE key_materials SET sealed_material = NULL \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3 AND material_id = $4",
                &[&k[0], &k[1], &k[2], &id],
            )
            .await?;
            tx.execute(
                "UPDATE keys SET sealed_material = NULL \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3 AND material_id = $4",
                &[&k[0], &k[1], &k[2], &id],
            )
            .await?;
        }
        if let Some(id) = change.make_current {
            let changed = tx
                .execute(
                    "UPDATE keys SET material_id = m.material_id, \
                         sealed_material = m.sealed_material \
                     FROM key_materials m \
                     WHERE keys.account_id = $1 AND keys.region = $2 AND keys.key_id = $3 \
                       AND m.account_id = $1 AND m.region = $2 AND m.key_id = $3 \
                       AND m.material_id = $4 AND m.sealed_material IS NOT NULL",
                    &[&k[0], &k[1], &k[2], &id],
                )
                .await?;
            if changed != 1 {
                return Err(StorageError::Conflict(format!(
                    "key material {id} is not held and cannot be made current"
                ))
                .into());
            }
        }
        if let Some(state) = change.state {
            tx.execute(
                "UPDATE keys SET key_state = $4 \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3",
                &[&k[0], &k[1], &k[2], &state.as_str()],
            )
            .await?;
        }
        if let Some(r) = change.rotation {
            let period = r.period_days.map(i64::from);
            tx.execute(
                "INSERT INTO key_rotation (account_id, region, key_id, enabled, period_days, \
                     next_rotation_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (account_id, region, key_id) DO UPDATE SET \
                     enabled = EXCLUDED.enabled, period_days = EXCLUDED.period_days, \
                     next_rotation_ms = EXCLUDED.next_rotation_ms",
                &[
                    &k[0],
                    &k[1],
                    &k[2],
                    &r.enabled,
                    &period,
                    &r.next_rotation_ms,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}
