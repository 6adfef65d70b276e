//! Multi-Region key sets: reading a set, creating a replica with every material version in
//! one transaction, moving the primary conditionally, and the sweep's query for the
//! asynchronous steps that are over. As on SQLite, the set's row (`multi_region_sets`) is
//! made by a trigger with its first member and dropped by another with its last. Writers of
//! a set lock its row first (`FOR UPDATE`), so replica creations and primary moves of one
//! set are serialized across processes.

use tokio_postgres::Row;

use super::super::{
    KeyMaterialRecord, KeyRecord, KeyState, MultiRegionMember, MultiRegionSet, StorageError,
};
use super::{Conn, Failure, PgStorage, Tx, enum_column, keys};

/// The Region of the set's primary, if the set exists, its row locked until commit.
async fn lock_set(
    tx: &mut Tx<'_>,
    account_id: &str,
    key_id: &str,
) -> Result<Option<String>, Failure> {
    Ok(tx
        .query_opt(
            "SELECT primary_region FROM multi_region_sets \
             WHERE account_id = $1 AND key_id = $2 FOR UPDATE",
            &[&account_id, &key_id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// The stored state of one key, if it exists, its row locked until commit (`FOR SHARE`
/// keeps it from changing; `FOR UPDATE` also lets this transaction change it).
async fn state_of(
    tx: &mut Tx<'_>,
    account_id: &str,
    region: &str,
    key_id: &str,
    for_update: bool,
) -> Result<Option<KeyState>, Failure> {
    let sql = if for_update {
        "SELECT key_state FROM keys WHERE account_id = $1 AND region = $2 AND key_id = $3 \
         FOR UPDATE"
    } else {
        "SELECT key_state FROM keys WHERE account_id = $1 AND region = $2 AND key_id = $3 \
         FOR SHARE"
    };
    tx.query_opt(sql, &[&account_id, &region, &key_id])
        .await?
        .map(|r| enum_column(&r, 0, "key_state", KeyState::parse))
        .transpose()
}

pub(super) fn multi_region_set(
    s: &PgStorage,
    account_id: &str,
    key_id: &str,
) -> Result<Option<MultiRegionSet>, StorageError> {
    s.run(async |conn: &mut Conn| {
        // One statement, one snapshot: the set's primary and its members together.
        let rows = conn
            .query(
                "SELECT m.primary_region, k.region, k.arn, k.key_state \
                 FROM multi_region_sets m \
                 LEFT JOIN keys k ON k.account_id = m.account_id AND k.key_id = m.key_id \
                   AND k.multi_region \
                 WHERE m.account_id = $1 AND m.key_id = $2 \
                 ORDER BY k.creation_date_ms, k.region",
                &[&account_id, &key_id],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let primary_region: String = first.try_get(0)?;
        let mut members = Vec::new();
        for r in &rows {
            let Some(region) = r.try_get::<_, Option<String>>(1)? else {
                continue;
            };
            members.push(MultiRegionMember {
                region,
                arn: r.try_get(2)?,
                key_state: enum_column(r, 3, "key_state", KeyState::parse)?,
            });
        }
        Ok(Some(MultiRegionSet {
            primary_region,
            members,
        }))
    })
}

pub(super) fn create_replica_key(
    s: &PgStorage,
    replica: &KeyRecord,
    materials: &[KeyMaterialRecord],
    primary_region_was: &str,
    primary_from: &[KeyState],
    max_keys: u64,
) -> Result<(), StorageError> {
    let (account, key_id) = (replica.account_id.as_str(), replica.key_id.as_str());
    // Inserted without material, so the first-material trigger stays out of it: the
    // versions below keep the primary's order, and the current one is set after them.
    let bare = KeyRecord {
        sealed_material: None,
        material_id: None,
        ..replica.clone()
    };
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        if lock_set(&mut tx, account, key_id).await?.as_deref() != Some(primary_region_was) {
            return Err(StorageError::StateChanged.into());
        }
        let primary_state = state_of(&mut tx, account, primary_region_was, key_id, false).await?;
        if !primary_state.is_some_and(|st| primary_from.contains(&st)) {
            return Err(StorageError::StateChanged.into());
        }
        if state_of(&mut tx, account, &replica.region, key_id, false)
            .await?
            .is_some()
        {
            return Err(StorageError::AlreadyExists(format!(
                "multi-Region key {key_id} in Region {}",
                replica.region
            ))
            .into());
        }
        keys::insert_key(&mut tx, &bare, max_keys).await?;
        for m in materials {
            tx.execute(
                "INSERT INTO key_materials (account_id, region, key_id, material_id, seq, \
                     sealed_material, created_ms, rotation_type, expiration_model, \
                     valid_to_ms, description) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &account,
                    &replica.region,
                    &key_id,
                    &m.material_id,
                    &m.seq,
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
        if replica.material_id.is_some() || replica.sealed_material.is_some() {
            tx.execute(
                "UPDATE keys SET sealed_material = $4, material_id = $5 \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3",
                &[
                    &account,
                    &replica.region,
                    &key_id,
                    &replica.sealed_material,
                    &replica.material_id,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn update_primary_region(
    s: &PgStorage,
    account_id: &str,
    key_id: &str,
    from_region: &str,
    to_region: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let primary = lock_set(&mut tx, account_id, key_id).await?;
        // Both keys' rows in Region order: one lock order for every mover.
        let mut regions = [from_region, to_region];
        regions.sort_unstable();
        for region in regions {
            match state_of(&mut tx, account_id, region, key_id, true).await? {
                None => return Err(StorageError::NotFound.into()),
                Some(KeyState::Enabled) => {}
                Some(_) => return Err(StorageError::StateChanged.into()),
            }
        }
        if primary.as_deref() != Some(from_region) {
            return Err(StorageError::StateChanged.into());
        }
        tx.execute(
            "UPDATE multi_region_sets SET primary_region = $3, updated_ms = $4 \
             WHERE account_id = $1 AND key_id = $2",
            &[&account_id, &key_id, &to_region, &now_ms],
        )
        .await?;
        tx.execute(
            "UPDATE keys SET key_state = $5 \
             WHERE account_id = $1 AND key_id = $2 AND region IN ($3, $4)",
            &[
                &account_id,
                &key_id,
                &from_region,
                &to_region,
                &KeyState::Updating.as_str(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

fn transition_from_row(r: &Row) -> Result<(String, String, String, KeyState), Failure> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        enum_column(r, 3, "key_state", KeyState::parse)?,
    ))
}

pub(super) fn multi_region_transitions_due(
    s: &PgStorage,
    before_ms: i64,
) -> Result<Vec<(String, String, String, KeyState)>, StorageError> {
    s.run(async |conn: &mut Conn| {
        let mut due = conn
            .query(
                "SELECT k.account_id, k.region, k.key_id, k.key_state FROM keys k \
                 LEFT JOIN multi_region_sets m \
                   ON m.account_id = k.account_id AND m.key_id = k.key_id \
                 WHERE (k.key_state = $1 AND k.creation_date_ms <= $3) \
                    OR (k.key_state = $2 AND COALESCE(m.updated_ms, 0) <= $3) \
                 ORDER BY k.account_id, k.key_id, k.region",
                &[
                    &KeyState::Creating.as_str(),
                    &KeyState::Updating.as_str(),
                    &before_ms,
                ],
            )
            .await?
            .iter()
            .map(transition_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let orphaned = conn
            .query(
                "SELECT k.account_id, k.region, k.key_id, k.key_state FROM keys k \
                 WHERE k.key_state = $1 AND NOT EXISTS (SELECT 1 FROM keys o \
                     WHERE o.account_id = k.account_id AND o.key_id = k.key_id \
                       AND o.multi_region AND o.region <> k.region) \
                 ORDER BY k.account_id, k.key_id, k.region",
                &[&KeyState::PendingReplicaDeletion.as_str()],
            )
            .await?
            .iter()
            .map(transition_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        due.extend(orphaned);
        Ok(due)
    })
}
