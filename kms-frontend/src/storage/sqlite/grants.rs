//! Grants: one row each, tied to their key (deleted with it). Operations and constraints are
//! stored as JSON text; `seq` (the row id) is the creation order listings page by, and a
//! listing's marker is the `seq` of its last grant.

use rusqlite::{OptionalExtension, Row, Transaction, ffi, params};

use super::super::{GrantConstraints, GrantRecord, KeyAddress, Page, StorageError};
use super::{Failure, SqliteStorage, constraint, fetch_limit};

/// The columns of `grants`, in the order [`grant_from_row`] reads them (`seq` last).
const GRANT_COLUMNS: &str = "account_id, region, key_id, grant_id, name, grantee_principal, \
     retiring_principal, issuing_account, operations, constraints, creation_date_ms, seq";

/// A stored JSON column that does not parse: a damaged database.
#[derive(Debug, thiserror::Error)]
#[error("the stored {column} of a grant is not valid JSON: {reason}")]
struct BadJson {
    column: &'static str,
    reason: String,
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
) -> rusqlite::Result<Option<T>> {
    let Some(text) = row.get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            Box::new(BadJson {
                column,
                reason: e.to_string(),
            }),
        )
    })
}

/// A grant and its `seq`.
fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<(GrantRecord, i64)> {
    Ok((
        GrantRecord {
            account_id: row.get(0)?,
            region: row.get(1)?,
            key_id: row.get(2)?,
            grant_id: row.get(3)?,
            name: row.get(4)?,
            grantee_principal: row.get(5)?,
            retiring_principal: row.get(6)?,
            issuing_account: row.get(7)?,
            operations: json_column(row, 8, "operations")?.unwrap_or_default(),
            constraints: json_column::<GrantConstraints>(row, 9, "constraints")?,
            creation_date_ms: row.get(10)?,
        },
        row.get(11)?,
    ))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v)
        .map_err(|e| Failure::Storage(StorageError::Backend(format!("grant encoding: {e}"))))
}

/// Whether `a` and `b` are the same grant request (CreateGrant's idempotent names).
fn same_parameters(a: &GrantRecord, b: &GrantRecord) -> bool {
    let mut ops_a = a.operations.clone();
    let mut ops_b = b.operations.clone();
    ops_a.sort();
    ops_a.dedup();
    ops_b.sort();
    ops_b.dedup();
    a.grantee_principal == b.grantee_principal
        && a.retiring_principal == b.retiring_principal
        && a.issuing_account == b.issuing_account
        && ops_a == ops_b
        && a.constraints == b.constraints
}

fn count(tx: &Transaction<'_>, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<u64, Failure> {
    let n: i64 = tx.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn create_grant(
    s: &SqliteStorage,
    grant: &GrantRecord,
    max_per_key: u64,
    max_per_grantee: u64,
) -> Result<GrantRecord, StorageError> {
    s.write(|tx| {
        let key = (&grant.account_id, &grant.region, &grant.key_id);
        if let Some(name) = &grant.name {
            let named = tx
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS} FROM grants \
                     WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND name = ?4 \
                     ORDER BY seq"
                ))?
                .query_map(params![key.0, key.1, key.2, name], grant_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if let Some((existing, _)) = named.into_iter().find(|(g, _)| same_parameters(g, grant))
            {
                return Ok(existing);
            }
        }
        let on_key = count(
            tx,
            "SELECT COUNT(*) FROM grants WHERE account_id = ?1 AND region = ?2 AND key_id = ?3",
            &[key.0, key.1, key.2],
        )?;
        if on_key >= max_per_key {
            return Err(StorageError::LimitExceeded(format!(
                "The key already has {on_key} grants; the quota is {max_per_key} grants per KMS key."
            ))
            .into());
        }
        let for_grantee = count(
            tx,
            "SELECT COUNT(*) FROM grants WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 \
             AND grantee_principal = ?4",
            &[key.0, key.1, key.2, &grant.grantee_principal],
        )?;
        if for_grantee >= max_per_grantee {
            return Err(StorageError::LimitExceeded(format!(
                "The key already has {for_grantee} grants for grantee {}; the quota is \
                 {max_per_grantee} grants per grantee on a KMS key.",
                grant.grantee_principal
            ))
            .into());
        }
        let operations = to_json(&grant.operations)?;
        let constraints = grant.constraints.as_ref().map(to_json).transpose()?;
        tx.prepare_cached(
            "INSERT INTO grants (account_id, region, key_id, grant_id, name, grantee_principal, \
             retiring_principal, issuing_account, operations, constraints, creation_date_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            grant.account_id,
            grant.region,
            grant.key_id,
            grant.grant_id,
            grant.name,
            grant.grantee_principal,
            grant.retiring_principal,
            grant.issuing_account,
            operations,
            constraints,
            grant.creation_date_ms,
        ])
        .map_err(|e| match constraint(&e) {
            Some((ffi::SQLITE_CONSTRAINT_FOREIGNKEY, _)) => Failure::Storage(StorageError::NotFound),
            Some((ffi::SQLITE_CONSTRAINT_UNIQUE, _)) => {
                Failure::Storage(StorageError::AlreadyExists("grant id".into()))
            }
            _ => Failure::Sql(e),
        })?;
        Ok(grant.clone())
    })
}

pub(super) fn get_grant(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    grant_id: &str,
) -> Result<Option<GrantRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants \
                 WHERE grant_id = ?4 AND account_id = ?1 AND region = ?2 AND key_id = ?3"
            ))?
            .query_row(
                params![key.account_id, key.region, key.key_id, grant_id],
                grant_from_row,
            )
            .optional()?
            .map(|(g, _)| g))
    })
}

pub(super) fn grants_for_grantees(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    grantees: &[&str],
) -> Result<Vec<GrantRecord>, StorageError> {
    s.with_conn(|conn| {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants \
             WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND grantee_principal = ?4 \
             ORDER BY seq"
        ))?;
        let mut out = Vec::new();
        // One indexed lookup per name: a caller has at most a few (ARN, role, account).
        for grantee in grantees {
            for row in stmt.query_map(
                params![key.account_id, key.region, key.key_id, grantee],
                grant_from_row,
            )? {
                out.push(row?.0);
            }
        }
        Ok(out)
    })
}

/// The `seq` a marker stands for; [`StorageError::NotFound`] for any other text.
fn marker_seq(marker: Option<&str>) -> Result<Option<i64>, Failure> {
    marker
        .map(|m| {
            m.parse::<i64>()
                .ok()
                .filter(|n| *n > 0 && m == n.to_string())
                .ok_or(Failure::Storage(StorageError::NotFound))
        })
        .transpose()
}

fn page(mut rows: Vec<(GrantRecord, i64)>, limit: usize) -> Page<GrantRecord> {
    let next_marker = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, seq)| seq.to_string())
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(g, _)| g).collect(),
        next_marker,
    }
}

pub(super) fn list_grants(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    grant_id: Option<&str>,
    grantee: Option<&str>,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<GrantRecord>, StorageError> {
    let limit = limit.max(1);
    s.with_conn(|conn| {
        let after = marker_seq(marker)?.unwrap_or(0);
        // Separate statements per filter keep the ranges on the indexes.
        let by_id = if grant_id.is_some() {
            "AND grant_id = ?5"
        } else {
            "AND ?5 IS NULL"
        };
        let by_grantee = if grantee.is_some() {
            "AND grantee_principal = ?6"
        } else {
            "AND ?6 IS NULL"
        };
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants \
                 WHERE account_id = ?1 AND region = ?2 AND key_id = ?3 AND seq > ?4 \
                 {by_id} {by_grantee} ORDER BY seq LIMIT ?7"
            ))?
            .query_map(
                params![
                    key.account_id,
                    key.region,
                    key.key_id,
                    after,
                    grant_id,
                    grantee,
                    fetch_limit(limit)
                ],
                grant_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    })
}

pub(super) fn list_retirable_grants(
    s: &SqliteStorage,
    retiring_principal: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<GrantRecord>, StorageError> {
    let limit = limit.max(1);
    s.with_conn(|conn| {
        let after = marker_seq(marker)?.unwrap_or(0);
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants \
                 WHERE retiring_principal = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(
                params![retiring_principal, after, fetch_limit(limit)],
                grant_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    })
}

pub(super) fn delete_grant(
    s: &SqliteStorage,
    key: KeyAddress<'_>,
    grant_id: &str,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let deleted = tx.execute(
            "DELETE FROM grants \
             WHERE grant_id = ?4 AND account_id = ?1 AND region = ?2 AND key_id = ?3",
            params![key.account_id, key.region, key.key_id, grant_id],
        )?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        Ok(())
    })
}
