//! Leases (issue 20): which process of a fleet runs a periodic job, such as polling one
//! XKS proxy. One row per lease; taking or renewing it is one conditional upsert under the
//! write lock, so two processes sharing the file never both hold it.

use rusqlite::params;

use super::super::StorageError;
use super::SqliteStorage;

pub(super) fn acquire_lease(
    s: &SqliteStorage,
    name: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<bool, StorageError> {
    s.write(|tx| {
        // The conflict clause renews a lease this holder has and takes an expired one;
        // a live lease of another holder is left alone (no row changes).
        let changed = tx
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3 + ?4)
                 ON CONFLICT (name) DO UPDATE SET
                     holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?3",
            )?
            .execute(params![name, holder, now_ms, ttl_ms.max(0)])?;
        Ok(changed == 1)
    })
}

pub(super) fn release_lease(
    s: &SqliteStorage,
    name: &str,
    holder: &str,
) -> Result<(), StorageError> {
    s.write(|tx| {
        tx.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
            .execute(params![name, holder])?;
        Ok(())
    })
}
