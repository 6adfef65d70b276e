//! Aliases: one row each, pointing at a key of the same account and Region (a foreign key).

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::{AliasRecord, Page, StorageError};
use super::{Conn, Failure, PgStorage, constraint, fetch_limit};

/// Maps a failed alias write: the name taken, or the target key missing.
fn alias_failure(e: tokio_postgres::Error, alias_name: &str) -> Failure {
    match constraint(&e) {
        Some((c, "aliases_pkey")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Storage(StorageError::AlreadyExists(format!("alias {alias_name}")))
        }
        Some((c, "aliases_target")) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            Failure::Storage(StorageError::NotFound)
        }
        _ => Failure::Pg(e),
    }
}

fn alias_from_row(row: &Row) -> Result<AliasRecord, Failure> {
    Ok(AliasRecord {
        account_id: row.try_get(0)?,
        region: row.try_get(1)?,
        alias_name: row.try_get(2)?,
        target_key_id: row.try_get(3)?,
        creation_date_ms: row.try_get(4)?,
        last_updated_ms: row.try_get(5)?,
    })
}

pub(super) fn create_alias(s: &PgStorage, alias: &AliasRecord) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        tx.execute(
            "INSERT INTO aliases (account_id, region, alias_name, target_key_id, \
             creation_date_ms, last_updated_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &alias.account_id,
                &alias.region,
                &alias.alias_name,
                &alias.target_key_id,
                &alias.creation_date_ms,
                &alias.last_updated_ms,
            ],
        )
        .await
        .map_err(|e| alias_failure(e, &alias.alias_name))?;
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn get_alias(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
) -> Result<Option<AliasRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            "SELECT account_id, region, alias_name, target_key_id, creation_date_ms, \
             last_updated_ms FROM aliases \
             WHERE account_id = $1 AND region = $2 AND alias_name = $3",
            &[&account_id, &region, &alias_name],
        )
        .await?
        .first()
        .map(alias_from_row)
        .transpose()
    })
}

pub(super) fn update_alias(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
    target_key_id: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let changed = tx
            .execute(
                "UPDATE aliases SET target_key_id = $4, last_updated_ms = $5 \
                 WHERE account_id = $1 AND region = $2 AND alias_name = $3",
                &[&account_id, &region, &alias_name, &target_key_id, &now_ms],
            )
            .await
            .map_err(|e| alias_failure(e, alias_name))?;
        if changed == 0 {
            return Err(StorageError::NotFound.into());
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn delete_alias(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let deleted = tx
            .execute(
                "DELETE FROM aliases WHERE account_id = $1 AND region = $2 AND alias_name = $3",
                &[&account_id, &region, &alias_name],
            )
            .await?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn list_aliases(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    key_id: Option<&str>,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<AliasRecord>, StorageError> {
    let limit = limit.max(1);
    s.run(async |conn: &mut Conn| {
        // NULL parameters switch a filter off; one statement serves every combination.
        let rows = conn
            .query(
                "SELECT account_id, region, alias_name, target_key_id, creation_date_ms, \
                 last_updated_ms FROM aliases \
                 WHERE account_id = $1 AND region = $2 \
                   AND ($4::TEXT IS NULL OR target_key_id = $4) \
                   AND ($5::TEXT IS NULL OR alias_name > $5) \
                 ORDER BY alias_name LIMIT $3",
                &[&account_id, &region, &fetch_limit(limit), &key_id, &marker],
            )
            .await?;
        let mut aliases = rows
            .iter()
            .map(alias_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_marker = if aliases.len() > limit {
            aliases.truncate(limit);
            aliases.last().map(|a| a.alias_name.clone())
        } else {
            None
        };
        Ok(Page {
            items: aliases,
            next_marker,
        })
    })
}
