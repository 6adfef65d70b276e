//! The last successful cryptographic use of each key: one row per key, only ever moved
//! forward in time, whichever process flushes last.

use super::super::{KeyAddress, KeyUsageRecord, StorageError};
use super::{Conn, PgStorage};

pub(super) fn record_key_usages(
    s: &PgStorage,
    usages: &[KeyUsageRecord],
) -> Result<(), StorageError> {
    if usages.is_empty() {
        return Ok(());
    }
    // One lock order for every flushing process (no deadlock between two batches).
    let mut sorted: Vec<&KeyUsageRecord> = usages.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.account_id, &a.region, &a.key_id).cmp(&(&b.account_id, &b.region, &b.key_id))
    });
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        for u in &sorted {
            // `FOR KEY SHARE` holds off a concurrent deletion of the key until commit (one
            // deleted meanwhile is not found, and its usage is dropped instead of failing
            // the batch); the conflict clause keeps the newest use.
            tx.execute(
                "INSERT INTO key_last_usage AS u \
                     (account_id, region, key_id, operation, timestamp_ms, request_id, event_id) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 \
                 WHERE EXISTS (SELECT 1 FROM keys \
                               WHERE account_id = $1 AND region = $2 AND key_id = $3 \
                               FOR KEY SHARE) \
                 ON CONFLICT (account_id, region, key_id) DO UPDATE SET \
                     operation = EXCLUDED.operation, \
                     timestamp_ms = EXCLUDED.timestamp_ms, \
                     request_id = EXCLUDED.request_id, \
                     event_id = EXCLUDED.event_id \
                 WHERE EXCLUDED.timestamp_ms >= u.timestamp_ms",
                &[
                    &u.account_id,
                    &u.region,
                    &u.key_id,
                    &u.operation,
                    &u.timestamp_ms,
                    &u.request_id,
                    &u.event_id,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn key_last_usage(
    s: &PgStorage,
    key: KeyAddress<'_>,
) -> Result<Option<KeyUsageRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT operation, timestamp_ms, request_id, event_id FROM key_last_usage \
             WHERE account_id = $1 AND region = $2 AND key_id = $3",
            &[&key.account_id, &key.region, &key.key_id],
        )
        .await?
        .first()
        .map(|r| {
            Ok(KeyUsageRecord {
                account_id: key.account_id.to_owned(),
                region: key.region.to_owned(),
                key_id: key.key_id.to_owned(),
                operation: r.try_get(0)?,
                timestamp_ms: r.try_get(1)?,
                request_id: r.try_get(2)?,
                event_id: r.try_get(3)?,
            })
        })
        .transpose()
    })
}

pub(super) fn usage_tracking_start_ms(s: &PgStorage) -> Result<i64, StorageError> {
    s.run(async |conn: &mut Conn| {
        let rows = conn
            .query("SELECT MIN(started_ms) FROM usage_tracking", &[])
            .await?;
        Ok(rows
            .first()
            .map(|r| r.try_get::<_, Option<i64>>(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    })
}
