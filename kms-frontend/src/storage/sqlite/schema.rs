//! The SQLite schema: the versions, their migrations, and creating or checking the schema of
//! a database when it is opened.

use rusqlite::{Connection, TransactionBehavior};

use super::super::StorageError;
use super::Failure;

/// The schema version this code writes and understands: the last migration's.
pub(in crate::storage) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The schema, version 1 (keys, tags, aliases). Frozen: existing databases were built by it.
pub(in crate::storage) const SCHEMA_V1: &str = "
CREATE TABLE keys (
    account_id          TEXT    NOT NULL,
    region              TEXT    NOT NULL,
    key_id              TEXT    NOT NULL,
    arn                 TEXT    NOT NULL,
    creation_date_ms    INTEGER NOT NULL,
    description         TEXT    NOT NULL,
    key_spec            TEXT    NOT NULL,
    key_usage           TEXT    NOT NULL,
    origin              TEXT    NOT NULL,
    key_state           TEXT    NOT NULL,
    deletion_date_ms    INTEGER,
    pending_window_days INTEGER,
    multi_region        INTEGER NOT NULL,
    custom_key_store_id TEXT,
    xks_key_id          TEXT,
    policy              TEXT    NOT NULL,
    sealed_material     BLOB,
    material_id         TEXT,
    PRIMARY KEY (account_id, region, key_id)
);
CREATE UNIQUE INDEX keys_xks_key_id
    ON keys (account_id, region, custom_key_store_id, xks_key_id);
CREATE INDEX keys_deletion ON keys (key_state, deletion_date_ms);
CREATE TABLE key_tags (
    account_id TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    tag_key    TEXT    NOT NULL,
    tag_value  TEXT    NOT NULL,
    PRIMARY KEY (account_id, region, key_id, tag_key),
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX key_tags_order ON key_tags (account_id, region, key_id, position);
CREATE TABLE aliases (
    account_id       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    alias_name       TEXT    NOT NULL,
    target_key_id    TEXT    NOT NULL,
    creation_date_ms INTEGER NOT NULL,
    last_updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (account_id, region, alias_name),
    FOREIGN KEY (account_id, region, target_key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX aliases_target ON aliases (account_id, region, target_key_id, alias_name);
";

/// Version 1 → 2: external custom key stores, and the triggers tying keys to them. Existing
/// keys are not checked (version 1 never stored keys in custom key stores).
const SCHEMA_V2: &str = "
CREATE TABLE custom_key_stores (
    account_id                 TEXT    NOT NULL,
    region                     TEXT    NOT NULL,
    id                         TEXT    NOT NULL,
    name                       TEXT    NOT NULL,
    store_type                 TEXT    NOT NULL,
    uri_endpoint               TEXT    NOT NULL,
    uri_path                   TEXT    NOT NULL,
    connectivity               TEXT    NOT NULL,
    vpc_endpoint_service_name  TEXT,
    vpc_endpoint_service_owner TEXT,
    access_key_id              TEXT    NOT NULL,
    sealed_secret              BLOB    NOT NULL,
    connection_state           TEXT    NOT NULL,
    connection_error_code      TEXT,
    creation_date_ms           INTEGER NOT NULL,
    PRIMARY KEY (account_id, region, id)
);
CREATE UNIQUE INDEX custom_key_stores_name
    ON custom_key_stores (account_id, region, name);
CREATE UNIQUE INDEX custom_key_stores_uri
    ON custom_key_stores (account_id, region, uri_endpoint, uri_path);
CREATE UNIQUE INDEX custom_key_stores_vpc_service
    ON custom_key_stores (account_id, region, vpc_endpoint_service_name)
    WHERE vpc_endpoint_service_name IS NOT NULL;
CREATE INDEX custom_key_stores_created
    ON custom_key_stores (account_id, region, creation_date_ms, id);
CREATE INDEX custom_key_stores_state ON custom_key_stores (connection_state);
CREATE TRIGGER keys_custom_key_store_insert BEFORE INSERT ON keys
WHEN NEW.custom_key_store_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM custom_key_stores s
    WHERE s.account_id = NEW.account_id AND s.region = NEW.region
      AND s.id = NEW.custom_key_store_id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store not found');
END;
CREATE TRIGGER keys_custom_key_store_update
BEFORE UPDATE OF account_id, region, custom_key_store_id ON keys
WHEN NEW.custom_key_store_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM custom_key_stores s
    WHERE s.account_id = NEW.account_id AND s.region = NEW.region
      AND s.id = NEW.custom_key_store_id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store not found');
END;
CREATE TRIGGER custom_key_stores_delete BEFORE DELETE ON custom_key_stores
WHEN EXISTS (
    SELECT 1 FROM keys k
    WHERE k.account_id = OLD.account_id AND k.region = OLD.region
      AND k.custom_key_store_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'custom key store has keys');
END;
CREATE TRIGGER custom_key_stores_id_immutable
BEFORE UPDATE OF account_id, region, id ON custom_key_stores
WHEN NEW.account_id IS NOT OLD.account_id OR NEW.region IS NOT OLD.region
    OR NEW.id IS NOT OLD.id
BEGIN
    SELECT RAISE(ABORT, 'custom key store id is immutable');
END;
";

/// Version 2 → 3: the number of keys per account and Region, kept by triggers, so the
/// quota check of a key creation is one lookup instead of a scan of every key.
const SCHEMA_V3: &str = "
CREATE TABLE key_counts (
    account_id TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, region)
) WITHOUT ROWID;
INSERT INTO key_counts (account_id, region, n)
    SELECT account_id, region, COUNT(*) FROM keys GROUP BY account_id, region;
CREATE TRIGGER keys_count_insert AFTER INSERT ON keys
BEGIN
    INSERT INTO key_counts (account_id, region, n) VALUES (NEW.account_id, NEW.region, 1)
        ON CONFLICT (account_id, region) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER keys_count_delete AFTER DELETE ON keys
BEGIN
    UPDATE key_counts SET n = n - 1
    WHERE account_id = OLD.account_id AND region = OLD.region;
END;
CREATE TRIGGER keys_account_region_immutable
BEFORE UPDATE OF account_id, region ON keys
WHEN NEW.account_id IS NOT OLD.account_id OR NEW.region IS NOT OLD.region
BEGIN
    SELECT RAISE(ABORT, 'a key cannot move between accounts or Regions');
END;
";

/// Version 3 → 4: grants. Grant ids are unique across keys (a token names one); `seq` is
/// the creation order listings page by; a key's grants are deleted with it.
const SCHEMA_V4: &str = "
CREATE TABLE grants (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    grant_id           TEXT    NOT NULL UNIQUE,
    account_id         TEXT    NOT NULL,
    region             TEXT    NOT NULL,
    key_id             TEXT    NOT NULL,
    name               TEXT,
    grantee_principal  TEXT    NOT NULL,
    retiring_principal TEXT,
    issuing_account    TEXT    NOT NULL,
    operations         TEXT    NOT NULL,
    constraints        TEXT,
    creation_date_ms   INTEGER NOT NULL,
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX grants_key ON grants (account_id, region, key_id, seq);
CREATE INDEX grants_grantee ON grants (account_id, region, key_id, grantee_principal, seq);
CREATE INDEX grants_retiring ON grants (retiring_principal, seq)
    WHERE retiring_principal IS NOT NULL;
CREATE INDEX grants_name ON grants (account_id, region, key_id, name)
    WHERE name IS NOT NULL;
";

/// Version 4 → 5: versions of key material and rotation settings. `keys.sealed_material`
/// and `keys.material_id` stay the current material (one row read per Encrypt); every
/// material a key ever had, the current one included, is a row of `key_materials`, so a
/// ciphertext naming an older material still finds it. Existing keys' single material
/// becomes their first version (keys without a material id get a random one), and a
/// trigger records the first material of every new key, so no key is ever without its row.
const SCHEMA_V5: &str = "
CREATE TABLE key_materials (
    account_id       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    key_id           TEXT    NOT NULL,
    material_id      TEXT    NOT NULL,
    seq              INTEGER NOT NULL,
    sealed_material  BLOB,
    created_ms       INTEGER NOT NULL,
    rotation_type    TEXT,
    expiration_model TEXT,
    valid_to_ms      INTEGER,
    description      TEXT,
    PRIMARY KEY (account_id, region, key_id, material_id),
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX key_materials_seq ON key_materials (account_id, region, key_id, seq);
CREATE INDEX key_materials_expiry ON key_materials (valid_to_ms)
    WHERE valid_to_ms IS NOT NULL AND sealed_material IS NOT NULL;
CREATE TABLE key_rotation (
    account_id       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    key_id           TEXT    NOT NULL,
    enabled          INTEGER NOT NULL,
    period_days      INTEGER,
    next_rotation_ms INTEGER,
    PRIMARY KEY (account_id, region, key_id),
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX key_rotation_due ON key_rotation (next_rotation_ms) WHERE enabled = 1;
UPDATE keys SET material_id = lower(hex(randomblob(32)))
    WHERE material_id IS NULL AND sealed_material IS NOT NULL;
INSERT INTO key_materials (account_id, region, key_id, material_id, seq, sealed_material,
                           created_ms)
    SELECT account_id, region, key_id, material_id, 1, sealed_material, creation_date_ms
    FROM keys WHERE sealed_material IS NOT NULL;
CREATE TRIGGER keys_first_material AFTER INSERT ON keys
WHEN NEW.sealed_material IS NOT NULL AND NEW.material_id IS NOT NULL
BEGIN
    INSERT INTO key_materials (account_id, region, key_id, material_id, seq,
                               sealed_material, created_ms)
    VALUES (NEW.account_id, NEW.region, NEW.key_id, NEW.material_id, 1,
            NEW.sealed_material, NEW.creation_date_ms);
END;
";

/// Version 5 → 6: the last successful cryptographic use of each key (GetKeyLastUsage), and
/// when this database began recording it.
const SCHEMA_V6: &str = "
CREATE TABLE key_last_usage (
    account_id   TEXT    NOT NULL,
    region       TEXT    NOT NULL,
    key_id       TEXT    NOT NULL,
    operation    TEXT    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    request_id   TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    PRIMARY KEY (account_id, region, key_id),
    FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE usage_tracking (started_ms INTEGER NOT NULL);
INSERT INTO usage_tracking (started_ms)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
";

/// Version 6 → 7: multi-Region key sets (issue 19). The members of a set are the keys of one
/// account sharing its `mrk-` id, one per Region; this table holds what belongs to the set
/// rather than a member: the primary's Region and when it last moved. A trigger makes the
/// set of every new multi-Region key (a replica joins its existing set), another drops
/// the set with its last member, and an index finds the members of a set by account and id.
const SCHEMA_V7: &str = "
CREATE TABLE multi_region_sets (
    account_id     TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    primary_region TEXT    NOT NULL,
    updated_ms     INTEGER,
    PRIMARY KEY (account_id, key_id)
) WITHOUT ROWID;
CREATE INDEX keys_multi_region ON keys (account_id, key_id) WHERE multi_region = 1;
INSERT OR IGNORE INTO multi_region_sets (account_id, key_id, primary_region)
    SELECT account_id, key_id, region FROM keys WHERE multi_region = 1
    ORDER BY creation_date_ms;
CREATE TRIGGER keys_multi_region_set AFTER INSERT ON keys
WHEN NEW.multi_region = 1
BEGIN
    INSERT OR IGNORE INTO multi_region_sets (account_id, key_id, primary_region)
    VALUES (NEW.account_id, NEW.key_id, NEW.region);
END;
CREATE TRIGGER keys_multi_region_set_gone AFTER DELETE ON keys
WHEN OLD.multi_region = 1 AND NOT EXISTS (
    SELECT 1 FROM keys WHERE account_id = OLD.account_id AND key_id = OLD.key_id
        AND multi_region = 1)
BEGIN
    DELETE FROM multi_region_sets WHERE account_id = OLD.account_id AND key_id = OLD.key_id;
END;
";

/// Version 7 → 8: leases (issue 20): which process of a fleet runs a periodic job (polling
/// one XKS proxy), until `expires_ms` unless it renews.
const SCHEMA_V8: &str = "
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The schema migrations: (version reached, DDL), in increasing order. A new database runs
/// them all; an older one runs those above its version.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, SCHEMA_V1),
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
    (5, SCHEMA_V5),
    (6, SCHEMA_V6),
    (7, SCHEMA_V7),
    (8, SCHEMA_V8),
];

/// The message of the trigger refusing a key whose custom key store does not exist.
pub(super) const TRIGGER_STORE_NOT_FOUND: &str = "custom key store not found";

/// The message of the trigger refusing to delete a custom key store holding keys.
pub(super) const TRIGGER_STORE_HAS_KEYS: &str = "custom key store has keys";

/// Creates the schema in an empty database, or checks the version of an existing one.
pub(super) fn init_schema(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let version: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0);
    if version == SCHEMA_VERSION {
        return Ok(tx.commit()?);
    }
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this program's ({SCHEMA_VERSION})"
        ))
        .into());
    }
    if version < 0 {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is not supported (expected {SCHEMA_VERSION})"
        ))
        .into());
    }
    for (reached, ddl) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        tx.execute_batch(ddl)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [reached],
        )?;
    }
    tx.commit()?;
    Ok(())
}
