//! Aliases: one row each, pointing at a key of the same account and Region.

use rusqlite::{OptionalExtension, Row, ffi, params};

use super::super::{AliasRecord, Page, StorageError};
use super::{Failure, SqliteStorage, constraint, fetch_limit};

/// The columns of `aliases`, in the order [`alias_from_row`] reads them.
const ALIAS_COLUMNS: &str =
    "account_id, region, alias_name, target_key_id, creation_date_ms, last_updated_ms";

fn alias_from_row(row: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    Ok(AliasRecord {
        account_id: row.get(0)?,
        region: row.get(1)?,
        alias_name: row.get(2)?,
        target_key_id: row.get(3)?,
        creation_date_ms: row.get(4)?,
        last_updated_ms: row.get(5)?,
    })
}

pub(super) fn create_alias(s: &SqliteStorage, alias: &AliasRecord) -> Result<(), StorageError> {
    s.write(|tx| {
        tx.prepare_cached(&format!(
            "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ))?
        .execute(params![
            alias.account_id,
            alias.region,
            alias.alias_name,
            alias.target_key_id,
            alias.creation_date_ms,
            alias.last_updated_ms,
        ])
        .map_err(|e| match constraint(&e) {
            Some((ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE, _)) => {
                Failure::Storage(StorageError::AlreadyExists(format!(
                    "alias {}",
                    alias.alias_name
                )))
            }
            Some((ffi::SQLITE_CONSTRAINT_FOREIGNKEY, _)) => {
                Failure::Storage(StorageError::NotFound)
            }
            _ => Failure::Sql(e),
        })?;
        Ok(())
    })
}

pub(super) fn get_alias(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
) -> Result<Option<AliasRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {ALIAS_COLUMNS} FROM aliases \
                 WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3"
            ))?
            .query_row(params![account_id, region, alias_name], alias_from_row)
            .optional()?)
    })
}

pub(super) fn update_alias(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
    target_key_id: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let changed = tx
            .execute(
                "UPDATE aliases SET target_key_id = ?4, last_updated_ms = ?5 \
                 WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3",
                params![account_id, region, alias_name, target_key_id, now_ms],
            )
            .map_err(|e| match constraint(&e) {
                Some((ffi::SQLITE_CONSTRAINT_FOREIGNKEY, _)) => {
                    Failure::Storage(StorageError::NotFound)
                }
                _ => Failure::Sql(e),
            })?;
        if changed == 0 {
            return Err(StorageError::NotFound.into());
        }
        Ok(())
    })
}

pub(super) fn delete_alias(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    alias_name: &str,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let deleted = tx.execute(
            "DELETE FROM aliases WHERE account_id = ?1 AND region = ?2 AND alias_name = ?3",
            params![account_id, region, alias_name],
        )?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        Ok(())
    })
}

pub(super) fn list_aliases(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    key_id: Option<&str>,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<AliasRecord>, StorageError> {
    let limit = limit.max(1);
    s.with_conn(|conn| {
        // Separate statements per filter keep the ranges on the indexes.
        let target = if key_id.is_some() {
            "AND target_key_id = ?4"
        } else {
            "AND ?4 IS NULL"
        };
        let after = if marker.is_some() {
            "AND alias_name > ?5"
        } else {
            "AND ?5 IS NULL"
        };
        let mut aliases = conn
            .prepare_cached(&format!(
                "SELECT {ALIAS_COLUMNS} FROM aliases \
                 WHERE account_id = ?1 AND region = ?2 {target} {after} \
                 ORDER BY alias_name LIMIT ?3"
            ))?
            .query_map(
                params![account_id, region, fetch_limit(limit), key_id, marker],
                alias_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
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
