//! Keys and their tags: creation (quota under the `key_counts` row lock), reads (a key and
//! its tags in one statement), listings, deletion, and the narrow conditional writes, each
//! under the key's row lock.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::{KeyAddress, KeyRecord, KeyState, Page, ScheduledDeletion, StorageError};
use super::{Conn, Failure, PgStorage, Tx, constraint, enum_column, fetch_limit};

/// A key's columns and its tags (keys and values, in order), in the order [`key_from_row`]
/// reads them; one statement, so one snapshot.
macro_rules! select_key {
    ($where:literal) => {
        concat!(
            "SELECT k.account_id, k.region, k.key_id, k.arn, k.creation_date_ms, \
             k.description, k.key_spec, k.key_usage, k.origin, k.key_state, \
             k.deletion_date_ms, k.pending_window_days, k.multi_region, \
             k.custom_key_store_id, k.xks_key_id, k.policy, k.sealed_material, k.material_id, \
             COALESCE((SELECT array_agg(t.tag_key ORDER BY t.position) FROM key_tags t \
                 WHERE t.account_id = k.account_id AND t.region = k.region \
                   AND t.key_id = k.key_id), ARRAY[]::TEXT[]), \
             COALESCE((SELECT array_agg(t.tag_value ORDER BY t.position) FROM key_tags t \
                 WHERE t.account_id = k.account_id AND t.region = k.region \
                   AND t.key_id = k.key_id), ARRAY[]::TEXT[]) \
             FROM keys k ",
            $where
        )
    };
}

fn key_from_row(row: &Row) -> Result<KeyRecord, Failure> {
    let window: Option<i64> = row.try_get(11)?;
    let tag_keys: Vec<String> = row.try_get(18)?;
    let tag_values: Vec<String> = row.try_get(19)?;
    Ok(KeyRecord {
        account_id: row.try_get(0)?,
        region: row.try_get(1)?,
        key_id: row.try_get(2)?,
        arn: row.try_get(3)?,
        creation_date_ms: row.try_get(4)?,
        description: row.try_get(5)?,
        key_spec: row.try_get(6)?,
        key_usage: row.try_get(7)?,
        origin: row.try_get(8)?,
        key_state: enum_column(row, 9, "key_state", KeyState::parse)?,
        deletion_date_ms: row.try_get(10)?,
        pending_window_days: window
            .map(|w| {
                u32::try_from(w).map_err(|_| StorageError::UnknownValue {
                    column: "pending_window_days",
                    value: w.to_string(),
                })
            })
            .transpose()?,
        multi_region: row.try_get(12)?,
        custom_key_store_id: row.try_get(13)?,
        xks_key_id: row.try_get(14)?,
        policy: row.try_get(15)?,
        sealed_material: row.try_get(16)?,
        material_id: row.try_get(17)?,
        tags: tag_keys.into_iter().zip(tag_values).collect(),
    })
}

/// Inserts `key` and its tags unless the account and Region already hold `max_keys` keys.
pub(super) async fn insert_key(
    tx: &mut Tx<'_>,
    key: &KeyRecord,
    max_keys: u64,
) -> Result<(), Failure> {
    // The count row, locked until commit: concurrent creators in this account and Region
    // (in any process) wait here, so the check and the insert are atomic.
    tx.execute(
        "INSERT INTO key_counts (account_id, region, n) VALUES ($1, $2, 0) \
         ON CONFLICT (account_id, region) DO NOTHING",
        &[&key.account_id, &key.region],
    )
    .await?;
    let count: i64 = tx
        .query_opt(
            "SELECT n FROM key_counts WHERE account_id = $1 AND region = $2 FOR UPDATE",
            &[&key.account_id, &key.region],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if u64::try_from(count).unwrap_or(0) >= max_keys {
        return Err(StorageError::LimitExceeded(format!(
            "The account already has {count} KMS keys in this Region; the quota is {max_keys}."
        ))
        .into());
    }
    let window = key.pending_window_days.map(i64::from);
    tx.execute_in_savepoint(
        "INSERT INTO keys (account_id, region, key_id, arn, creation_date_ms, description, \
         key_spec, key_usage, origin, key_state, deletion_date_ms, pending_window_days, \
         multi_region, custom_key_store_id, xks_key_id, policy, sealed_material, material_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &key.account_id,
            &key.region,
            &key.key_id,
            &key.arn,
            &key.creation_date_ms,
            &key.description,
            &key.key_spec,
            &key.key_usage,
            &key.origin,
            &key.key_state.as_str(),
            &key.deletion_date_ms,
            &window,
            &key.multi_region,
            &key.custom_key_store_id,
            &key.xks_key_id,
            &key.policy,
            &key.sealed_material,
            &key.material_id,
        ],
    )
    .await
    .map_err(|e| match constraint(&e) {
        Some((c, "keys_pkey")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Storage(StorageError::AlreadyExists(format!("key {}", key.key_id)))
        }
        Some((c, "keys_xks_key_id")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Storage(StorageError::XksKeyInUse)
        }
        Some((c, "keys_custom_key_store")) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            Failure::Storage(StorageError::NotFound)
        }
        _ => Failure::Pg(e),
    })?;
    let mut seen = std::collections::HashSet::new();
    for (position, (tag_key, tag_value)) in key.tags.iter().enumerate() {
        if !seen.insert(tag_key.as_str()) {
            return Err(StorageError::Conflict(format!("duplicate tag key {tag_key:?}")).into());
        }
        let position = i64::try_from(position)
            .map_err(|_| StorageError::Conflict("too many tags".to_owned()))?;
        tx.execute(
            "INSERT INTO key_tags (account_id, region, key_id, position, tag_key, tag_value) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &key.account_id,
                &key.region,
                &key.key_id,
                &position,
                tag_key,
                tag_value,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) fn create_key(
    s: &PgStorage,
    key: &KeyRecord,
    max_keys: u64,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        insert_key(&mut tx, key, max_keys).await?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn get_key(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    key_id: &str,
) -> Result<Option<KeyRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            select_key!("WHERE k.account_id = $1 AND k.region = $2 AND k.key_id = $3"),
            &[&account_id, &region, &key_id],
        )
        .await?
        .first()
        .map(key_from_row)
        .transpose()
    })
}

pub(super) fn delete_key_if_due(
    s: &PgStorage,
    key: KeyAddress<'_>,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        // The count row first, as key creation takes it: one lock order, no deadlock with a
        // creation waiting on this key's external key id.
        tx.execute(
            "SELECT n FROM key_counts WHERE account_id = $1 AND region = $2 FOR UPDATE",
            &[&key.account_id, &key.region],
        )
        .await?;
        let row = tx
            .query_opt(
                "SELECT key_state, deletion_date_ms FROM keys
                 WHERE account_id = $1 AND region = $2 AND key_id = $3 FOR UPDATE",
                &[&key.account_id, &key.region, &key.key_id],
            )
            .await?;
        let Some(row) = row else {
            return Err(StorageError::NotFound.into());
        };
        let state: String = row.get(0);
        let date: Option<i64> = row.get(1);
        if state != KeyState::PendingDeletion.as_str() || date.is_none_or(|d| d > now_ms) {
            return Err(StorageError::StateChanged.into());
        }
        // Aliases, tags and everything else of the key cascade with it.
        tx.execute(
            "DELETE FROM keys WHERE account_id = $1 AND region = $2 AND key_id = $3",
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn list_keys(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<KeyRecord>, StorageError> {
    let limit = limit.max(1);
    s.run(async |conn: &mut Conn| {
        let rows = match marker {
            Some(m) => {
                conn.query(
                    select_key!(
                        "WHERE k.account_id = $1 AND k.region = $2 AND k.key_id > $4 \
                         ORDER BY k.key_id LIMIT $3"
                    ),
                    &[&account_id, &region, &fetch_limit(limit), &m],
                )
                .await?
            }
            None => {
                conn.query(
                    select_key!(
                        "WHERE k.account_id = $1 AND k.region = $2 ORDER BY k.key_id LIMIT $3"
                    ),
                    &[&account_id, &region, &fetch_limit(limit)],
                )
                .await?
            }
        };
        let mut keys = rows
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_marker = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| k.key_id.clone())
        } else {
            None
        };
        Ok(Page {
            items: keys,
            next_marker,
        })
    })
}

pub(super) fn keys_due_for_deletion(
    s: &PgStorage,
    now_ms: i64,
) -> Result<Vec<(String, String, String)>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT account_id, region, key_id FROM keys \
             WHERE key_state = $1 AND deletion_date_ms IS NOT NULL AND deletion_date_ms <= $2 \
             ORDER BY deletion_date_ms, account_id, region, key_id",
            &[&KeyState::PendingDeletion.as_str(), &now_ms],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    })
}

/// Locks the key's row until commit and refuses the write unless the key exists
/// ([`StorageError::NotFound`]) and its state is one of `from` ([`StorageError::StateChanged`]).
/// Writers of one key, in any process, are serialized by this lock, so the state cannot
/// change between this check and the write that follows it.
async fn guard_state(
    tx: &mut Tx<'_>,
    key: KeyAddress<'_>,
    from: &[KeyState],
) -> Result<(), Failure> {
    let row = tx
        .query_opt(
            "SELECT key_state FROM keys WHERE account_id = $1 AND region = $2 AND key_id = $3 \
             FOR UPDATE",
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?
        .ok_or(StorageError::NotFound)?;
    let state = enum_column(&row, 0, "key_state", KeyState::parse)?;
    if !from.contains(&state) {
        return Err(StorageError::StateChanged.into());
    }
    Ok(())
}

pub(super) fn transition_key_state(
    s: &PgStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    to: KeyState,
    deletion: Option<ScheduledDeletion>,
) -> Result<(), StorageError> {
    let date = deletion.map(|d| d.date_ms);
    let window = deletion.map(|d| i64::from(d.window_days));
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        guard_state(&mut tx, key, from).await?;
        tx.execute(
            "UPDATE keys SET key_state = $4, deletion_date_ms = $5, pending_window_days = $6 \
             WHERE account_id = $1 AND region = $2 AND key_id = $3",
            &[
                &key.account_id,
                &key.region,
                &key.key_id,
                &to.as_str(),
                &date,
                &window,
            ],
        )
        .await?;
        tx.commit().await?;
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
    s: &PgStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    column: Column,
    value: &str,
) -> Result<(), StorageError> {
    // Separate statements per column: a column name is never a bound value.
    let sql = match column {
        Column::Description => {
            "UPDATE keys SET description = $4 WHERE account_id = $1 AND region = $2 AND key_id = $3"
        }
        Column::Policy => {
            "UPDATE keys SET policy = $4 WHERE account_id = $1 AND region = $2 AND key_id = $3"
        }
    };
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        guard_state(&mut tx, key, from).await?;
        tx.execute(sql, &[&key.account_id, &key.region, &key.key_id, &value])
            .await?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn tag_key(
    s: &PgStorage,
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
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        guard_state(&mut tx, key, from).await?;
        let existing: Vec<String> = tx
            .query(
                "SELECT tag_key FROM key_tags \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3",
                &[&key.account_id, &key.region, &key.key_id],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let added = tags
            .iter()
            .filter(|(k, _)| !existing.iter().any(|e| e == k))
            .count();
        if existing.len() + added > max_tags {
            return Err(
                StorageError::LimitExceeded(format!("a key has at most {max_tags} tags")).into(),
            );
        }
        // A new tag goes after the last one; an existing one keeps its position.
        for (tag_key, tag_value) in tags {
            tx.execute(
                "INSERT INTO key_tags (account_id, region, key_id, position, tag_key, tag_value) \
                 VALUES ($1, $2, $3, (SELECT COALESCE(MAX(position), -1) + 1 FROM key_tags \
                     WHERE account_id = $1 AND region = $2 AND key_id = $3), $4, $5) \
                 ON CONFLICT (account_id, region, key_id, tag_key) \
                 DO UPDATE SET tag_value = EXCLUDED.tag_value",
                &[
                    &key.account_id,
                    &key.region,
                    &key.key_id,
                    tag_key,
                    tag_value,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn untag_key(
    s: &PgStorage,
    key: KeyAddress<'_>,
    from: &[KeyState],
    tag_keys: &[String],
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        guard_state(&mut tx, key, from).await?;
        tx.execute(
            "DELETE FROM key_tags \
             WHERE account_id = $1 AND region = $2 AND key_id = $3 AND tag_key = ANY($4)",
            &[&key.account_id, &key.region, &key.key_id, &tag_keys],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    })
}
