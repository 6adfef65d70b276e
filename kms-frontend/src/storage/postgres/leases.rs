//! Leases (issue 20): which process of the fleet runs a periodic job, such as polling one
//! XKS proxy. Taking or renewing one is a single conditional upsert: PostgreSQL locks the
//! row and re-checks the condition on its latest version, so two processes never both win.

use super::super::StorageError;
use super::{Conn, PgStorage};

pub(super) fn acquire_lease(
    s: &PgStorage,
    name: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<bool, StorageError> {
    let expires_ms = now_ms.saturating_add(ttl_ms.max(0));
    s.run(async |conn: &mut Conn| {
        let changed = conn
            .execute(
                "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET \
                     holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms \
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms <= $4",
                &[&name, &holder, &expires_ms, &now_ms],
            )
            .await?;
        Ok(changed == 1)
    })
}

pub(super) fn release_lease(s: &PgStorage, name: &str, holder: &str) -> Result<(), StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
        Ok(())
    })
}
