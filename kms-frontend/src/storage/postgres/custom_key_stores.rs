//! External custom key stores: uniqueness (naming the clash), the quota (under an advisory
//! lock per account and Region), the connection state's compare-and-set, and the refusal
//! to delete a store that still holds keys (the keys' foreign key).

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::{ConnectionState, CustomKeyStoreRecord, Page, StorageError};
use super::{Conn, Failure, PgStorage, Tx, constraint, enum_column, fetch_limit};

/// The columns of `custom_key_stores`, in the order [`store_from_row`] reads them.
macro_rules! select_store {
    ($where:literal) => {
        concat!(
            "SELECT account_id, region, id, name, store_type, uri_endpoint, uri_path, \
             connectivity, vpc_endpoint_service_name, vpc_endpoint_service_owner, \
             access_key_id, sealed_secret, connection_state, connection_error_code, \
             creation_date_ms FROM custom_key_stores ",
            $where
        )
    };
}

/// The advisory lock namespace (first key) of the custom key store quota; the second key
/// is a hash of the account and Region.
const STORE_QUOTA_LOCK: i32 = 0x0063_6b73;

fn store_from_row(row: &Row) -> Result<CustomKeyStoreRecord, Failure> {
    Ok(CustomKeyStoreRecord {
        account_id: row.try_get(0)?,
        region: row.try_get(1)?,
        id: row.try_get(2)?,
        name: row.try_get(3)?,
        store_type: row.try_get(4)?,
        uri_endpoint: row.try_get(5)?,
        uri_path: row.try_get(6)?,
        connectivity: row.try_get(7)?,
        vpc_endpoint_service_name: row.try_get(8)?,
        vpc_endpoint_service_owner: row.try_get(9)?,
        access_key_id: row.try_get(10)?,
        sealed_secret: row.try_get(11)?,
        connection_state: enum_column(row, 12, "connection_state", ConnectionState::parse)?,
        connection_error_code: row.try_get(13)?,
        creation_date_ms: row.try_get(14)?,
    })
}

/// Maps a failed write of `store`: a uniqueness violation becomes `AlreadyExists` of
/// [`first_clash`], looked up in a fixed order (PostgreSQL reports whichever index it
/// checked first; the constraints did the refusing, this only names it). With `updating`,
/// the store's own row is no clash.
async fn store_clash(
    tx: &mut Tx<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
    e: tokio_postgres::Error,
) -> Failure {
    if !matches!(constraint(&e), Some((c, _)) if *c == SqlState::UNIQUE_VIOLATION) {
        return Failure::Pg(e);
    }
    match first_clash(tx, store, updating).await {
        Ok(Some(what)) => Failure::Storage(StorageError::AlreadyExists(what.to_owned())),
        Ok(None) => Failure::Pg(e),
        Err(lookup) => Failure::Pg(lookup),
    }
}

/// The first of `"id"`, `"name"`, `"endpoint"`, `"vpc endpoint service"` that another store
/// of the account and region already has, if any.
async fn first_clash(
    tx: &mut Tx<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
) -> Result<Option<&'static str>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT \
               EXISTS (SELECT 1 FROM custom_key_stores \
                 WHERE account_id = $1 AND region = $2 AND id = $3), \
               EXISTS (SELECT 1 FROM custom_key_stores \
                 WHERE account_id = $1 AND region = $2 AND id <> $3 AND name = $4), \
               EXISTS (SELECT 1 FROM custom_key_stores \
                 WHERE account_id = $1 AND region = $2 AND id <> $3 \
                   AND uri_endpoint = $5 AND uri_path = $6), \
               EXISTS (SELECT 1 FROM custom_key_stores \
                 WHERE account_id = $1 AND region = $2 AND id <> $3 \
                   AND vpc_endpoint_service_name = $7)",
            &[
                &store.account_id,
                &store.region,
                &store.id,
                &store.name,
                &store.uri_endpoint,
                &store.uri_path,
                &store.vpc_endpoint_service_name,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let flags: [bool; 4] = [
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ];
    let names = ["id", "name", "endpoint", "vpc endpoint service"];
    Ok(flags
        .iter()
        .zip(names)
        .enumerate()
        .find(|(i, (set, _))| **set && !(updating && *i == 0))
        .map(|(_, (_, name))| name))
}

/// The listing marker following `store`: its creation date and id (the listing order).
fn store_marker(store: &CustomKeyStoreRecord) -> String {
    format!("{}:{}", store.creation_date_ms, store.id)
}

/// The (creation date, id) a [`store_marker`] encodes; `NotFound` if it is not one.
fn parse_store_marker(marker: &str) -> Result<(i64, &str), StorageError> {
    let (ms, id) = marker.split_once(':').ok_or(StorageError::NotFound)?;
    let ms = ms.parse::<i64>().map_err(|_| StorageError::NotFound)?;
    if id.is_empty() {
        return Err(StorageError::NotFound);
    }
    Ok((ms, id))
}

/// Whether the custom key store exists.
async fn store_exists(
    tx: &mut Tx<'_>,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    tx.query_opt(
        "SELECT 1 FROM custom_key_stores WHERE account_id = $1 AND region = $2 AND id = $3",
        &[&account_id, &region, &id],
    )
    .await
    .map(|r| r.is_some())
}

pub(super) fn create_custom_key_store(
    s: &PgStorage,
    store: &CustomKeyStoreRecord,
    max_stores: u64,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        // Creations in one account and Region, in any process, take turns here, so the
        // count below cannot miss a concurrent creation.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))",
            &[&STORE_QUOTA_LOCK, &store.account_id, &store.region],
        )
        .await?;
        // Insert first: a clash with another store is reported even at the quota.
        let inserted = tx
            .execute_in_savepoint(
                "INSERT INTO custom_key_stores (account_id, region, id, name, store_type, \
                 uri_endpoint, uri_path, connectivity, vpc_endpoint_service_name, \
                 vpc_endpoint_service_owner, access_key_id, sealed_secret, connection_state, \
                 connection_error_code, creation_date_ms) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &[
                    &store.account_id,
                    &store.region,
                    &store.id,
                    &store.name,
                    &store.store_type,
                    &store.uri_endpoint,
                    &store.uri_path,
                    &store.connectivity,
                    &store.vpc_endpoint_service_name,
                    &store.vpc_endpoint_service_owner,
                    &store.access_key_id,
                    &store.sealed_secret,
                    &store.connection_state.as_str(),
                    &store.connection_error_code,
                    &store.creation_date_ms,
                ],
            )
            .await;
        if let Err(e) = inserted {
            return Err(store_clash(&mut tx, store, false, e).await);
        }
        let count: i64 = tx
            .query_opt(
                "SELECT COUNT(*) FROM custom_key_stores WHERE account_id = $1 AND region = $2",
                &[&store.account_id, &store.region],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let before = u64::try_from(count).unwrap_or(0).saturating_sub(1);
        if before >= max_stores {
            // Dropping the transaction rolls the insert back.
            return Err(StorageError::LimitExceeded(format!(
                "The account already has {before} custom key stores in this Region; \
                 the quota is {max_stores}."
            ))
            .into());
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn get_custom_key_store(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            select_store!("WHERE account_id = $1 AND region = $2 AND id = $3"),
            &[&account_id, &region, &id],
        )
        .await?
        .first()
        .map(store_from_row)
        .transpose()
    })
}

pub(super) fn get_custom_key_store_by_name(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    name: &str,
) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            select_store!("WHERE account_id = $1 AND region = $2 AND name = $3"),
            &[&account_id, &region, &name],
        )
        .await?
        .first()
        .map(store_from_row)
        .transpose()
    })
}

pub(super) fn update_custom_key_store(
    s: &PgStorage,
    store: &CustomKeyStoreRecord,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let changed = tx
            .execute_in_savepoint(
                "UPDATE custom_key_stores SET name = $5, uri_endpoint = $6, uri_path = $7, \
                 connectivity = $8, vpc_endpoint_service_name = $9, \
                 vpc_endpoint_service_owner = $10, access_key_id = $11, sealed_secret = $12 \
                 WHERE account_id = $1 AND region = $2 AND id = $3 \
                   AND connection_state = $4",
                &[
                    &store.account_id,
                    &store.region,
                    &store.id,
                    &store.connection_state.as_str(),
                    &store.name,
                    &store.uri_endpoint,
                    &store.uri_path,
                    &store.connectivity,
                    &store.vpc_endpoint_service_name,
                    &store.vpc_endpoint_service_owner,
                    &store.access_key_id,
                    &store.sealed_secret,
                ],
            )
            .await;
        let changed = match changed {
            Ok(n) => n,
            Err(e) => return Err(store_clash(&mut tx, store, true, e).await),
        };
        if changed == 0 {
            return Err(
                if store_exists(&mut tx, &store.account_id, &store.region, &store.id).await? {
                    StorageError::Conflict("connection state changed".to_owned())
                } else {
                    StorageError::NotFound
                }
                .into(),
            );
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn set_connection_state(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    id: &str,
    from: &[ConnectionState],
    state: ConnectionState,
    error_code: Option<&str>,
) -> Result<bool, StorageError> {
    let from_text: Vec<&str> = from.iter().map(|f| f.as_str()).collect();
    let state_text = state.as_str();
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        let changed = tx
            .execute(
                "UPDATE custom_key_stores SET connection_state = $4, connection_error_code = $5 \
                 WHERE account_id = $1 AND region = $2 AND id = $3 \
                   AND connection_state = ANY($6)",
                &[
                    &account_id,
                    &region,
                    &id,
                    &state_text,
                    &error_code,
                    &from_text,
                ],
            )
            .await?;
        if changed == 0 && !store_exists(&mut tx, account_id, region, id).await? {
            return Err(StorageError::NotFound.into());
        }
        tx.commit().await?;
        Ok(changed > 0)
    })
}

pub(super) fn delete_custom_key_store(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<(), StorageError> {
    s.run(async |conn| {
        let mut tx = conn.tx().await?;
        // The keys' foreign key refuses the delete while a key references the store; a
        // concurrent key creation holds a lock on the store's row, so one of the two waits.
        let deleted = tx
            .execute(
                "DELETE FROM custom_key_stores WHERE account_id = $1 AND region = $2 AND id = $3",
                &[&account_id, &region, &id],
            )
            .await
            .map_err(|e| match constraint(&e) {
                Some((c, "keys_custom_key_store")) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                    Failure::Storage(StorageError::Conflict("has keys".to_owned()))
                }
                _ => Failure::Pg(e),
            })?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        tx.commit().await?;
        Ok(())
    })
}

pub(super) fn list_custom_key_stores(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<CustomKeyStoreRecord>, StorageError> {
    let limit = limit.max(1);
    let after = marker.map(parse_store_marker).transpose()?;
    let (after_ms, after_id) = after.unzip();
    s.run(async |conn: &mut Conn| {
        let rows = conn
            .query(
                select_store!(
                    "WHERE account_id = $1 AND region = $2 \
                       AND ($4::BIGINT IS NULL OR (creation_date_ms, id) > ($4, $5::TEXT)) \
                     ORDER BY creation_date_ms, id LIMIT $3"
                ),
                &[
                    &account_id,
                    &region,
                    &fetch_limit(limit),
                    &after_ms,
                    &after_id,
                ],
            )
            .await?;
        let mut stores = rows
            .iter()
            .map(store_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_marker = if stores.len() > limit {
            stores.truncate(limit);
            stores.last().map(store_marker)
        } else {
            None
        };
        Ok(Page {
            items: stores,
            next_marker,
        })
    })
}

pub(super) fn connected_custom_key_stores(
    s: &PgStorage,
) -> Result<Vec<CustomKeyStoreRecord>, StorageError> {
    s.run(async |conn: &mut Conn| {
        conn.query(
            select_store!(
                "WHERE connection_state = $1 ORDER BY account_id, region, creation_date_ms, id"
            ),
            &[&ConnectionState::Connected.as_str()],
        )
        .await?
        .iter()
        .map(store_from_row)
        .collect()
    })
}

pub(super) fn count_keys_in_custom_key_store(
    s: &PgStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<u64, StorageError> {
    s.run(async |conn: &mut Conn| {
        let count: i64 = conn
            .query(
                "SELECT COUNT(*) FROM keys \
                 WHERE account_id = $1 AND region = $2 AND custom_key_store_id = $3",
                &[&account_id, &region, &id],
            )
            .await?
            .first()
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    })
}
