//! Grants: one row each, tied to their key (deleted with it by a foreign key). Operations
//! and constraints are JSON text, as on SQLite; `seq` (an identity column) is the creation
//! order listings page by, and a listing's marker is the `seq` of its last grant. Creation
//! locks the key's row, so the per-key and per-grantee quotas and the idempotent names hold
//! across processes.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::{GrantConstraints, GrantRecord, KeyAddress, Page, StorageError};
use super::{Conn, Failure, PgStorage, constraint, fetch_limit};

/// The columns of `grants`, in the order [`grant_from_row`] reads them (`seq` last).
macro_rules! select_grants {
    ($where:literal) => {
        concat!(
            "SELECT account_id, region, key_id, grant_id, name, grantee_principal, \
             retiring_principal, issuing_account, operations, constraints, creation_date_ms, \
             seq FROM grants ",
            $where
        )
    };
}

/// A stored JSON column that does not parse: a damaged database.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row,
    idx: usize,
    column: &'static str,
) -> Result<Option<T>, Failure> {
    let Some(text) = row.try_get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|_| {
        Failure::Storage(StorageError::UnknownValue {
            column,
            value: text,
        })
    })
}

/// A grant and its `seq`.
fn grant_from_row(row: &Row) -> Result<(GrantRecord, i64), Failure> {
    Ok((
        GrantRecord {
            account_id: row.try_get(0)?,
            region: row.try_get(1)?,
            key_id: row.try_get(2)?,
            grant_id: row.try_get(3)?,
            name: row.try_get(4)?,
            grantee_principal: row.try_get(5)?,
            retiring_principal: row.try_get(6)?,
            issuing_account: row.try_get(7)?,
            operations: json_column(row, 8, "operations")?.unwrap_or_default(),
            constraints: json_column::<GrantConstraints>(row, 9, "constraints")?,
            creation_date_ms: row.try_get(10)?,
        },
        row.try_get(11)?,
    ))
}

fn grants_from_rows(rows: &[Row]) -> Result<Vec<(GrantRecord, i64)>, Failure> {
    rows.iter().map(grant_from_row).collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v)
        .map_err(|e| Failure::Storage(StorageError::Backend(format!("grant encoding: {e}"))))
}

/// Whether `a` and `b` are the same grant request (CreateGrant's idempotent names).
fn same_parameters(a: &GrantRecord, b: &GrantRecord) -> bool {
    let sorted = |g: &GrantRecord| {
        let mut ops = g.operations.clone();
        ops.sort();
        ops.dedup();
        ops
    };
    a.grantee_principal == b.grantee_principal
        && a.retiring_principal == b.retiring_principal
        && a.issuing_account == b.issuing_account
        && sorted(a) == sorted(b)
        && a.constraints == b.constraints
}

fn count(row: Option<Row>) -> Result<u64, Failure> {
    let n: i64 = row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn create_grant(
    s: &PgStorage,
    grant: &GrantRecord,
    max_per_key: u64,
    max_per_grantee: u64,
) -> Result<GrantRecord, StorageError> {
    let operations = to_json(&grant.operations).map_err(Failure::into_storage)?;
    let constraints = grant
        .constraints
        .as_ref()
        .map(to_json)
        .transpose()
        .map_err(Failure::into_storage)?;
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let key = [&grant.account_id, &grant.region, &grant.key_id];
        // The key's row, locked until commit: grant creations on one key (in any process)
        // are serialized here, so the quotas and the idempotent names are checked and
        // written atomically; a key deleted meanwhile is not found.
        tx.query_opt(
            "SELECT 1 FROM keys WHERE account_id = $1 AND region = $2 AND key_id = $3 \
             FOR NO KEY UPDATE",
            &[key[0], key[1], key[2]],
        )
        .await?
        .ok_or(StorageError::NotFound)?;
        if let Some(name) = &grant.name {
            let named = tx
                .query(
                    select_grants!(
                        "WHERE account_id = $1 AND region = $2 AND key_id = $3 AND name = $4 \
                         ORDER BY seq"
                    ),
                    &[key[0], key[1], key[2], name],
                )
                .await?;
            if let Some((existing, _)) = grants_from_rows(&named)?
                .into_iter()
                .find(|(g, _)| same_parameters(g, grant))
            {
                return Ok(existing);
            }
        }
        let on_key = count(
            tx.query_opt(
                "SELECT COUNT(*) FROM grants \
                 WHERE account_id = $1 AND region = $2 AND key_id = $3",
                &[key[0], key[1], key[2]],
            )
            .await?,
        )?;
        if on_key >= max_per_key {
            return Err(StorageError::LimitExceeded(format!(
                "The key already has {on_key} grants; the quota is {max_per_key} grants per KMS key."
            ))
            .into());
        }
        let for_grantee = count(
            tx.query_opt(
                "SELECT COUNT(*) FROM grants WHERE account_id = $1 AND region = $2 \
                 AND key_id = $3 AND grantee_principal = $4",
                &[key[0], key[1], key[2], &grant.grantee_principal],
            )
            .await?,
        )?;
        if for_grantee >= max_per_grantee {
            return Err(StorageError::LimitExceeded(format!(
                "The key already has {for_grantee} grants for grantee {}; the quota is \
                 {max_per_grantee} grants per grantee on a KMS key.",
                grant.grantee_principal
            ))
            .into());
        }
        tx.execute(
            "INSERT INTO grants (account_id, region, key_id, grant_id, name, grantee_principal, \
             retiring_principal, issuing_account, operations, constraints, creation_date_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &grant.account_id,
                &grant.region,
                &grant.key_id,
                &grant.grant_id,
                &grant.name,
                &grant.grantee_principal,
                &grant.retiring_principal,
                &grant.issuing_account,
                &operations,
                &constraints,
                &grant.creation_date_ms,
            ],
        )
        .await
        .map_err(|e| match constraint(&e) {
            Some((c, "grants_key")) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                Failure::Storage(StorageError::NotFound)
            }
            Some((c, "grants_grant_id")) if *c == SqlState::UNIQUE_VIOLATION => {
                Failure::Storage(StorageError::AlreadyExists("grant id".into()))
            }
            _ => Failure::Pg(e),
        })?;
        tx.commit().await?;
        Ok(grant.clone())
    })
}

pub(super) fn get_grant(
    s: &PgStorage,
    key: KeyAddress<'_>,
    grant_id: &str,
) -> Result<Option<GrantRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        let rows = conn
            .query(
                select_grants!(
                    "WHERE grant_id = $4 AND account_id = $1 AND region = $2 AND key_id = $3"
                ),
                &[&key.account_id, &key.region, &key.key_id, &grant_id],
            )
            .await?;
        Ok(grants_from_rows(&rows)?.into_iter().next().map(|(g, _)| g))
    })
}

pub(super) fn grants_for_grantees(
    s: &PgStorage,
    key: KeyAddress<'_>,
    grantees: &[&str],
) -> Result<Vec<GrantRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        // One statement for every name (the caller's ARN, role, account), one round trip.
        let rows = conn
            .query(
                select_grants!(
                    "WHERE account_id = $1 AND region = $2 AND key_id = $3 \
                     AND grantee_principal = ANY($4) ORDER BY seq"
                ),
                &[&key.account_id, &key.region, &key.key_id, &grantees],
            )
            .await?;
        Ok(grants_from_rows(&rows)?
            .into_iter()
            .map(|(g, _)| g)
            .collect())
    })
}

/// The `seq` a marker stands for; [`StorageError::NotFound`] for any other text.
fn marker_seq(marker: Option<&str>) -> Result<i64, StorageError> {
    marker.map_or(Ok(0), |m| {
        m.parse::<i64>()
            .ok()
            .filter(|n| *n > 0 && m == n.to_string())
            .ok_or(StorageError::NotFound)
    })
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
    s: &PgStorage,
    key: KeyAddress<'_>,
    grant_id: Option<&str>,
    grantee: Option<&str>,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<GrantRecord>, StorageError> {
    let limit = limit.max(1);
    let after = marker_seq(marker)?;
    s.run(async |conn: &mut Conn| {
        let rows = conn
            .query(
                select_grants!(
                    "WHERE account_id = $1 AND region = $2 AND key_id = $3 AND seq > $4 \
                     AND ($5::TEXT IS NULL OR grant_id = $5) \
                     AND ($6::TEXT IS NULL OR grantee_principal = $6) \
                     ORDER BY seq LIMIT $7"
                ),
                &[
                    &key.account_id,
                    &key.region,
                    &key.key_id,
                    &after,
                    &grant_id,
                    &grantee,
                    &fetch_limit(limit),
                ],
            )
            .await?;
        Ok(page(grants_from_rows(&rows)?, limit))
    })
}

pub(super) fn list_retirable_grants(
    s: &PgStorage,
    retiring_principal: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<GrantRecord>, StorageError> {
    let limit = limit.max(1);
    let after = marker_seq(marker)?;
    s.run(async |conn: &mut Conn| {
        let rows = conn
            .query(
                select_grants!("WHERE retiring_principal = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                &[&retiring_principal, &after, &fetch_limit(limit)],
            )
            .await?;
        Ok(page(grants_from_rows(&rows)?, limit))
    })
}

pub(super) fn delete_grant(
    s: &PgStorage,
    key: KeyAddress<'_>,
    grant_id: &str,
) -> Result<(), StorageError> {
    s.run(async |conn: &mut Conn| {
        let deleted = conn
            .execute(
                "DELETE FROM grants \
                 WHERE grant_id = $4 AND account_id = $1 AND region = $2 AND key_id = $3",
                &[&key.account_id, &key.region, &key.key_id, &grant_id],
            )
            .await?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        Ok(())
    })
}
