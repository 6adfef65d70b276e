//! External custom key stores: uniqueness (naming the clash), the quota, the connection
//! state's compare-and-set, and the refusal to delete a store that still holds keys.

use rusqlite::{OptionalExtension, Row, Transaction, ffi, params};

use super::super::{ConnectionState, CustomKeyStoreRecord, Page, StorageError};
use super::schema::TRIGGER_STORE_HAS_KEYS;
use super::{Failure, SqliteStorage, constraint, enum_column, fetch_limit};

/// The columns of `custom_key_stores`, in the order [`store_from_row`] reads them.
const STORE_COLUMNS: &str = "account_id, region, id, name, store_type, uri_endpoint, uri_path, \
     connectivity, vpc_endpoint_service_name, vpc_endpoint_service_owner, access_key_id, \
     sealed_secret, connection_state, connection_error_code, creation_date_ms";

fn store_from_row(row: &Row<'_>) -> rusqlite::Result<CustomKeyStoreRecord> {
    Ok(CustomKeyStoreRecord {
        account_id: row.get(0)?,
        region: row.get(1)?,
        id: row.get(2)?,
        name: row.get(3)?,
        store_type: row.get(4)?,
        uri_endpoint: row.get(5)?,
        uri_path: row.get(6)?,
        connectivity: row.get(7)?,
        vpc_endpoint_service_name: row.get(8)?,
        vpc_endpoint_service_owner: row.get(9)?,
        access_key_id: row.get(10)?,
        sealed_secret: row.get(11)?,
        connection_state: enum_column(row, 12, "connection_state", ConnectionState::parse)?,
        connection_error_code: row.get(13)?,
        creation_date_ms: row.get(14)?,
    })
}

/// Maps a failed write of `store` to `custom_key_stores`: a uniqueness violation becomes
/// `AlreadyExists` of [`first_clash`]. SQLite reports whichever index it happened to check
/// first, so the clash is named by looking it up in a fixed order (the constraints did the
/// refusing; this only names it). With `updating`, the store's own row is no clash.
fn store_clash(
    tx: &Transaction<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
    e: rusqlite::Error,
) -> Failure {
    if !matches!(
        constraint(&e),
        Some((
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE,
            _
        ))
    ) {
        return Failure::Sql(e);
    }
    match first_clash(tx, store, updating) {
        Ok(Some(what)) => Failure::Storage(StorageError::AlreadyExists(what.to_owned())),
        Ok(None) => Failure::Sql(e),
        Err(lookup) => Failure::Sql(lookup),
    }
}

/// The first of `"id"`, `"name"`, `"endpoint"`, `"vpc endpoint service"` that another store
/// of the account and region already has, if any.
fn first_clash(
    tx: &Transaction<'_>,
    store: &CustomKeyStoreRecord,
    updating: bool,
) -> rusqlite::Result<Option<&'static str>> {
    if !updating && store_exists(tx, &store.account_id, &store.region, &store.id)? {
        return Ok(Some("id"));
    }
    let other_has = |condition: &str, a: &dyn rusqlite::ToSql, b: &dyn rusqlite::ToSql| {
        tx.prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM custom_key_stores \
             WHERE account_id = ?1 AND region = ?2 AND id <> ?3 AND {condition})"
        ))?
        .query_row(
            params![store.account_id, store.region, store.id, a, b],
            |r| r.get::<_, bool>(0),
        )
    };
    let none = rusqlite::types::Null;
    if other_has("name = ?4 AND ?5 IS NULL", &store.name, &none)? {
        return Ok(Some("name"));
    }
    if other_has(
        "uri_endpoint = ?4 AND uri_path = ?5",
        &store.uri_endpoint,
        &store.uri_path,
    )? {
        return Ok(Some("endpoint"));
    }
    if other_has(
        "vpc_endpoint_service_name = ?4 AND ?5 IS NULL",
        &store.vpc_endpoint_service_name,
        &none,
    )? {
        return Ok(Some("vpc endpoint service"));
    }
    Ok(None)
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
fn store_exists(
    tx: &Transaction<'_>,
    account_id: &str,
    region: &str,
    id: &str,
) -> rusqlite::Result<bool> {
    tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM custom_key_stores \
         WHERE account_id = ?1 AND region = ?2 AND id = ?3)",
    )?
    .query_row(params![account_id, region, id], |r| r.get(0))
}

pub(super) fn create_custom_key_store(
    s: &SqliteStorage,
    store: &CustomKeyStoreRecord,
    max_stores: u64,
) -> Result<(), StorageError> {
    s.write(|tx| {
        // Insert first: a clash with another store is reported even at the quota.
        tx.prepare_cached(&format!(
            "INSERT INTO custom_key_stores ({STORE_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?
        .execute(params![
            store.account_id,
            store.region,
            store.id,
            store.name,
            store.store_type,
            store.uri_endpoint,
            store.uri_path,
            store.connectivity,
            store.vpc_endpoint_service_name,
            store.vpc_endpoint_service_owner,
            store.access_key_id,
            store.sealed_secret,
            store.connection_state.as_str(),
            store.connection_error_code,
            store.creation_date_ms,
        ])
        .map_err(|e| store_clash(tx, store, false, e))?;
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM custom_key_stores WHERE account_id = ?1 AND region = ?2",
            params![store.account_id, store.region],
            |r| r.get(0),
        )?;
        let before = u64::try_from(count).unwrap_or(0).saturating_sub(1);
        if before >= max_stores {
            // Dropping the transaction rolls the insert back.
            return Err(StorageError::LimitExceeded(format!(
                "The account already has {before} custom key stores in this Region; \
                 the quota is {max_stores}."
            ))
            .into());
        }
        Ok(())
    })
}

pub(super) fn get_custom_key_store(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                 WHERE account_id = ?1 AND region = ?2 AND id = ?3"
            ))?
            .query_row(params![account_id, region, id], store_from_row)
            .optional()?)
    })
}

pub(super) fn get_custom_key_store_by_name(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    name: &str,
) -> Result<Option<CustomKeyStoreRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                 WHERE account_id = ?1 AND region = ?2 AND name = ?3"
            ))?
            .query_row(params![account_id, region, name], store_from_row)
            .optional()?)
    })
}

pub(super) fn update_custom_key_store(
    s: &SqliteStorage,
    store: &CustomKeyStoreRecord,
) -> Result<(), StorageError> {
    s.write(|tx| {
        let changed = tx
            .prepare_cached(
                "UPDATE custom_key_stores SET name = ?5, uri_endpoint = ?6, uri_path = ?7, \
                 connectivity = ?8, vpc_endpoint_service_name = ?9, \
                 vpc_endpoint_service_owner = ?10, access_key_id = ?11, sealed_secret = ?12 \
                 WHERE account_id = ?1 AND region = ?2 AND id = ?3 \
                   AND connection_state = ?4",
            )?
            .execute(params![
                store.account_id,
                store.region,
                store.id,
                store.connection_state.as_str(),
                store.name,
                store.uri_endpoint,
                store.uri_path,
                store.connectivity,
                store.vpc_endpoint_service_name,
                store.vpc_endpoint_service_owner,
                store.access_key_id,
                store.sealed_secret,
            ])
            .map_err(|e| store_clash(tx, store, true, e))?;
        if changed == 0 {
            return Err(
                if store_exists(tx, &store.account_id, &store.region, &store.id)? {
                    StorageError::Conflict("connection state changed".to_owned())
                } else {
                    StorageError::NotFound
                }
                .into(),
            );
        }
        Ok(())
    })
}

pub(super) fn set_connection_state(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    id: &str,
    from: &[ConnectionState],
    state: ConnectionState,
    error_code: Option<&str>,
) -> Result<bool, StorageError> {
    let state_text = state.as_str();
    let from_text: Vec<&str> = from.iter().map(|f| f.as_str()).collect();
    s.write(|tx| {
        if from.is_empty() {
            return if store_exists(tx, account_id, region, id)? {
                Ok(false)
            } else {
                Err(StorageError::NotFound.into())
            };
        }
        let placeholders = (0..from.len())
            .map(|i| format!("?{}", i + 6))
            .collect::<Vec<_>>()
            .join(", ");
        let mut values: Vec<&dyn rusqlite::ToSql> =
            vec![&account_id, &region, &id, &state_text, &error_code];
        values.extend(from_text.iter().map(|f| f as &dyn rusqlite::ToSql));
        let changed = tx
            .prepare_cached(&format!(
                "UPDATE custom_key_stores \
                 SET connection_state = ?4, connection_error_code = ?5 \
                 WHERE account_id = ?1 AND region = ?2 AND id = ?3 \
                   AND connection_state IN ({placeholders})"
            ))?
            .execute(values.as_slice())?;
        if changed == 0 && !store_exists(tx, account_id, region, id)? {
            return Err(StorageError::NotFound.into());
        }
        Ok(changed > 0)
    })
}

pub(super) fn delete_custom_key_store(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<(), StorageError> {
    s.write(|tx| {
        // The trigger refuses the delete while a key references the store, in this very
        // statement, under the write lock.
        let deleted = tx
            .execute(
                "DELETE FROM custom_key_stores \
                 WHERE account_id = ?1 AND region = ?2 AND id = ?3",
                params![account_id, region, id],
            )
            .map_err(|e| match constraint(&e) {
                Some((ffi::SQLITE_CONSTRAINT_TRIGGER, TRIGGER_STORE_HAS_KEYS)) => {
                    Failure::Storage(StorageError::Conflict("has keys".to_owned()))
                }
                _ => Failure::Sql(e),
            })?;
        if deleted == 0 {
            return Err(StorageError::NotFound.into());
        }
        Ok(())
    })
}

pub(super) fn list_custom_key_stores(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    marker: Option<&str>,
    limit: usize,
) -> Result<Page<CustomKeyStoreRecord>, StorageError> {
    let limit = limit.max(1);
    let after = marker.map(parse_store_marker).transpose()?;
    let (after_ms, after_id) = after.unzip();
    s.with_conn(|conn| {
        // Separate statements with and without a marker keep the range on the index.
        let range = if after.is_some() {
            "AND (creation_date_ms, id) > (?4, ?5)"
        } else {
            "AND ?4 IS NULL AND ?5 IS NULL"
        };
        let mut stores = conn
            .prepare_cached(&format!(
                "SELECT {STORE_COLUMNS} FROM custom_key_stores \
                 WHERE account_id = ?1 AND region = ?2 {range} \
                 ORDER BY creation_date_ms, id LIMIT ?3"
            ))?
            .query_map(
                params![account_id, region, fetch_limit(limit), after_ms, after_id],
                store_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
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
    s: &SqliteStorage,
) -> Result<Vec<CustomKeyStoreRecord>, StorageError> {
    s.with_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {STORE_COLUMNS} FROM custom_key_stores WHERE connection_state = ?1 \
                 ORDER BY account_id, region, creation_date_ms, id"
            ))?
            .query_map([ConnectionState::Connected.as_str()], store_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

pub(super) fn count_keys_in_custom_key_store(
    s: &SqliteStorage,
    account_id: &str,
    region: &str,
    id: &str,
) -> Result<u64, StorageError> {
    s.with_conn(|conn| {
        let count: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM keys \
                 WHERE account_id = ?1 AND region = ?2 AND custom_key_store_id = ?3",
            )?
            .query_row(params![account_id, region, id], |r| r.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    })
}
