//! The last successful cryptographic use of each key: one row per key, only ever moved
//! forward in time.

use rusqlite::{OptionalExtension, params};

use super::super::{KeyAddress, KeyUsageRecord, StorageError};
use super::SqliteStorage;

pub(super) fn record_key_usages(
    s: &SqliteStorage,
    usages: &[KeyUsageRecord],
) -> Result<(), StorageError> {
    if usages.is_empty() {
        return Ok(());
    }
    s.write(|tx| {
        // `WHERE EXISTS` drops the usage of a key deleted since (instead of failing the
        // whole batch on the foreign key); the conflict clause keeps the newest use.
        let mut insert = tx.prepare_cached(
            "INSERT INTO key_last_usage
                 (account_id, region, key_id, operation, timestamp_ms, request_id, event_id)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE EXISTS (SELECT 1 FROM keys
                           WHERE account_id = ?1 AND region = ?2 AND key_id = ?3)
             ON CONFLICT (account_id, region, key_id) DO UPDATE SET
                 operation = excluded.operation,
                 timestamp_ms = excluded.timestamp_ms,
                 request_id = excluded.request_id,
                 event_id = excluded.event_id
             WHERE excluded.timestamp_ms >= key_last_usage.timestamp_ms",
        )?;
        for u in usages {
            insert.execute(params![
                u.account_id,
                u.region,
                u.key_id,
                u.operation,
                u.timestamp_ms,
                u.request_id,
                u.event_id,
            ])?;
        }
        Ok(())
    })
}

pub(super) fn key_last_usage(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
) -> Result<Option<KeyUsageRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(
                "SELECT operation, timestamp_ms, request_id, event_id FROM key_last_usage
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            )?
            .query_row(params![key.account_id, key.region, key.key_id], |r| {
                Ok(KeyUsageRecord {
                    account_id: key.account_id.to_owned(),
                    region: key.region.to_owned(),
                    key_id: key.key_id.to_owned(),
                    operation: r.get(0)?,
                    timestamp_ms: r.get(1)?,
                    request_id: r.get(2)?,
                    event_id: r.get(3)?,
                })
            })
            .optional()?)
    })
}

pub(super) fn usage_tracking_start_ms(s: &SqliteStorage) -> Result<i64, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached("SELECT MIN(started_ms) FROM usage_tracking")?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(0))
    })
}
