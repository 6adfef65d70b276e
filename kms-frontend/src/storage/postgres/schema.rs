//! The PostgreSQL schema: the versions, their migrations (the same version numbers as the
//! SQLite schema's, so one number means the same tables on both backends), and creating or
//! migrating the schema when a process opens the database.

use super::super::StorageError;
use super::{Conn, Failure};

/// The schema version this code writes and understands: the last migration's.
pub(in crate::storage) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock (a fixed number) held by the transaction creating or migrating the
/// schema, so processes starting together migrate once and the others wait for it.
const MIGRATION_LOCK: i64 = 0x6b6d_735f_7363_6865;

/// Version 1: keys, tags, aliases. Frozen: existing databases were built by it. Text
/// columns compare bytewise (`COLLATE "C"`), as SQLite's do, so listings and their markers
/// do not depend on the database's locale.
pub(in crate::storage) const SCHEMA_V1: &str = r#"
CREATE TABLE keys (
    account_id          TEXT COLLATE "C"    NOT NULL,
    region              TEXT COLLATE "C"    NOT NULL,
    key_id              TEXT COLLATE "C"    NOT NULL,
    arn                 TEXT COLLATE "C"    NOT NULL,
    creation_date_ms    BIGINT  NOT NULL,
    description         TEXT COLLATE "C"    NOT NULL,
    key_spec            TEXT COLLATE "C"    NOT NULL,
    key_usage           TEXT COLLATE "C"    NOT NULL,
    origin              TEXT COLLATE "C"    NOT NULL,
    key_state           TEXT COLLATE "C"    NOT NULL,
    deletion_date_ms    BIGINT,
    pending_window_days BIGINT,
    multi_region        BOOLEAN NOT NULL,
    custom_key_store_id TEXT,
    xks_key_id          TEXT,
    policy              TEXT COLLATE "C"    NOT NULL,
    sealed_material     BYTEA,
    material_id         TEXT,
    CONSTRAINT keys_pkey PRIMARY KEY (account_id, region, key_id)
);
CREATE UNIQUE INDEX keys_xks_key_id
    ON keys (account_id, region, custom_key_store_id, xks_key_id);
CREATE INDEX keys_deletion ON keys (key_state, deletion_date_ms);
CREATE TABLE key_tags (
    account_id TEXT COLLATE "C"   NOT NULL,
    region     TEXT COLLATE "C"   NOT NULL,
    key_id     TEXT COLLATE "C"   NOT NULL,
    position   BIGINT NOT NULL,
    tag_key    TEXT COLLATE "C"   NOT NULL,
    tag_value  TEXT COLLATE "C"   NOT NULL,
    CONSTRAINT key_tags_pkey PRIMARY KEY (account_id, region, key_id, tag_key),
    CONSTRAINT key_tags_key FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX key_tags_order ON key_tags (account_id, region, key_id, position);
CREATE TABLE aliases (
    account_id       TEXT COLLATE "C"   NOT NULL,
    region           TEXT COLLATE "C"   NOT NULL,
    alias_name       TEXT COLLATE "C"   NOT NULL,
    target_key_id    TEXT COLLATE "C"   NOT NULL,
    creation_date_ms BIGINT NOT NULL,
    last_updated_ms  BIGINT NOT NULL,
    CONSTRAINT aliases_pkey PRIMARY KEY (account_id, region, alias_name),
    CONSTRAINT aliases_target FOREIGN KEY (account_id, region, target_key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX aliases_target_idx ON aliases (account_id, region, target_key_id, alias_name);
"#;

/// Version 1 → 2: external custom key stores; a foreign key ties a key to its store (a
/// store holding keys cannot be deleted; a key cannot name a store that does not exist).
const SCHEMA_V2: &str = r#"
CREATE TABLE custom_key_stores (
    account_id                 TEXT COLLATE "C"   NOT NULL,
    region                     TEXT COLLATE "C"   NOT NULL,
    id                         TEXT COLLATE "C"   NOT NULL,
    name                       TEXT COLLATE "C"   NOT NULL,
    store_type                 TEXT COLLATE "C"   NOT NULL,
    uri_endpoint               TEXT COLLATE "C"   NOT NULL,
    uri_path                   TEXT COLLATE "C"   NOT NULL,
    connectivity               TEXT COLLATE "C"   NOT NULL,
    vpc_endpoint_service_name  TEXT,
    vpc_endpoint_service_owner TEXT,
    access_key_id              TEXT COLLATE "C"   NOT NULL,
    sealed_secret              BYTEA  NOT NULL,
    connection_state           TEXT COLLATE "C"   NOT NULL,
    connection_error_code      TEXT,
    creation_date_ms           BIGINT NOT NULL,
    CONSTRAINT custom_key_stores_pkey PRIMARY KEY (account_id, region, id)
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
ALTER TABLE keys ADD CONSTRAINT keys_custom_key_store
    FOREIGN KEY (account_id, region, custom_key_store_id)
    REFERENCES custom_key_stores (account_id, region, id);
CREATE INDEX keys_custom_key_store_idx ON keys (account_id, region, custom_key_store_id);
"#;

/// Version 2 → 3: the number of keys per account and Region, kept by triggers (whose
/// functions keep the schema they were created in, whatever a session's `search_path`). A creator
/// locks its row (`FOR UPDATE`) to check the quota, so creations in one account and Region
/// are serialized across processes and cannot pass the quota together.
const SCHEMA_V3: &str = r#"
CREATE TABLE key_counts (
    account_id TEXT COLLATE "C"   NOT NULL,
    region     TEXT COLLATE "C"   NOT NULL,
    n          BIGINT NOT NULL,
    CONSTRAINT key_counts_pkey PRIMARY KEY (account_id, region)
);
INSERT INTO key_counts (account_id, region, n)
    SELECT account_id, region, COUNT(*) FROM keys GROUP BY account_id, region;
CREATE FUNCTION keys_count_insert() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO key_counts (account_id, region, n) VALUES (NEW.account_id, NEW.region, 1)
        ON CONFLICT (account_id, region) DO UPDATE SET n = key_counts.n + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER keys_count_insert AFTER INSERT ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_count_insert();
CREATE FUNCTION keys_count_delete() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE key_counts SET n = n - 1
        WHERE account_id = OLD.account_id AND region = OLD.region;
    RETURN NULL;
END $$;
CREATE TRIGGER keys_count_delete AFTER DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_count_delete();
CREATE FUNCTION keys_account_region_immutable() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.account_id IS DISTINCT FROM OLD.account_id
        OR NEW.region IS DISTINCT FROM OLD.region THEN
        RAISE EXCEPTION 'a key cannot move between accounts or Regions';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keys_account_region_immutable BEFORE UPDATE OF account_id, region ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_account_region_immutable();
"#;

/// Version 3 → 4: grants. Grant ids are unique across keys (a token names one); `seq` is
/// the creation order listings page by; a key's grants are deleted with it. Operations and
/// constraints are JSON text, as on SQLite.
const SCHEMA_V4: &str = r#"
CREATE TABLE grants (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY,
    grant_id           TEXT COLLATE "C" NOT NULL,
    account_id         TEXT COLLATE "C" NOT NULL,
    region             TEXT COLLATE "C" NOT NULL,
    key_id             TEXT COLLATE "C" NOT NULL,
    name               TEXT COLLATE "C",
    grantee_principal  TEXT COLLATE "C" NOT NULL,
    retiring_principal TEXT COLLATE "C",
    issuing_account    TEXT COLLATE "C" NOT NULL,
    operations         TEXT NOT NULL,
    constraints        TEXT,
    creation_date_ms   BIGINT NOT NULL,
    CONSTRAINT grants_pkey PRIMARY KEY (seq),
    CONSTRAINT grants_grant_id UNIQUE (grant_id),
    CONSTRAINT grants_key FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX grants_key_idx ON grants (account_id, region, key_id, seq);
CREATE INDEX grants_grantee ON grants (account_id, region, key_id, grantee_principal, seq);
CREATE INDEX grants_retiring ON grants (retiring_principal, seq)
    WHERE retiring_principal IS NOT NULL;
CREATE INDEX grants_name ON grants (account_id, region, key_id, name)
    WHERE name IS NOT NULL;
"#;

/// Version 4 → 5: versions of key material and rotation settings, as on SQLite:
/// `keys.sealed_material`/`material_id` stay the current material; every material a key
/// ever had is a row of `key_materials`; existing keys' single material becomes their first
/// version, and a trigger records the first material of every new key.
const SCHEMA_V5: &str = r#"
CREATE TABLE key_materials (
    account_id       TEXT COLLATE "C" NOT NULL,
    region           TEXT COLLATE "C" NOT NULL,
    key_id           TEXT COLLATE "C" NOT NULL,
    material_id      TEXT COLLATE "C" NOT NULL,
    seq              BIGINT NOT NULL,
    sealed_material  BYTEA,
    created_ms       BIGINT NOT NULL,
    rotation_type    TEXT,
    expiration_model TEXT,
    valid_to_ms      BIGINT,
    description      TEXT,
    CONSTRAINT key_materials_pkey PRIMARY KEY (account_id, region, key_id, material_id),
    CONSTRAINT key_materials_key FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX key_materials_seq ON key_materials (account_id, region, key_id, seq);
CREATE INDEX key_materials_expiry ON key_materials (valid_to_ms)
    WHERE valid_to_ms IS NOT NULL AND sealed_material IS NOT NULL;
CREATE TABLE key_rotation (
    account_id       TEXT COLLATE "C" NOT NULL,
    region           TEXT COLLATE "C" NOT NULL,
    key_id           TEXT COLLATE "C" NOT NULL,
    enabled          BOOLEAN NOT NULL,
    period_days      BIGINT,
    next_rotation_ms BIGINT,
    CONSTRAINT key_rotation_pkey PRIMARY KEY (account_id, region, key_id),
    CONSTRAINT key_rotation_key FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE INDEX key_rotation_due ON key_rotation (next_rotation_ms) WHERE enabled;
UPDATE keys SET material_id = md5(arn || random()::text) || md5(random()::text || arn)
    WHERE material_id IS NULL AND sealed_material IS NOT NULL;
INSERT INTO key_materials (account_id, region, key_id, material_id, seq, sealed_material,
                           created_ms)
    SELECT account_id, region, key_id, material_id, 1, sealed_material, creation_date_ms
    FROM keys WHERE sealed_material IS NOT NULL;
CREATE FUNCTION keys_first_material() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO key_materials (account_id, region, key_id, material_id, seq,
                               sealed_material, created_ms)
    VALUES (NEW.account_id, NEW.region, NEW.key_id, NEW.material_id, 1,
            NEW.sealed_material, NEW.creation_date_ms);
    RETURN NULL;
END $$;
CREATE TRIGGER keys_first_material AFTER INSERT ON keys
    FOR EACH ROW WHEN (NEW.sealed_material IS NOT NULL AND NEW.material_id IS NOT NULL)
    EXECUTE FUNCTION keys_first_material();
"#;

/// Version 5 → 6: the last successful cryptographic use of each key (GetKeyLastUsage), and
/// when this database began recording it.
const SCHEMA_V6: &str = r#"
CREATE TABLE key_last_usage (
    account_id   TEXT COLLATE "C" NOT NULL,
    region       TEXT COLLATE "C" NOT NULL,
    key_id       TEXT COLLATE "C" NOT NULL,
    operation    TEXT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    request_id   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    CONSTRAINT key_last_usage_pkey PRIMARY KEY (account_id, region, key_id),
    CONSTRAINT key_last_usage_key FOREIGN KEY (account_id, region, key_id)
        REFERENCES keys (account_id, region, key_id) ON DELETE CASCADE
);
CREATE TABLE usage_tracking (started_ms BIGINT NOT NULL);
INSERT INTO usage_tracking (started_ms)
    VALUES ((extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
"#;

/// Version 6 → 7: multi-Region key sets, as on SQLite: the set's row holds the primary's
/// Region and when it last moved; triggers make the set with its first member and drop it
/// with its last.
const SCHEMA_V7: &str = r#"
CREATE TABLE multi_region_sets (
    account_id     TEXT COLLATE "C" NOT NULL,
    key_id         TEXT COLLATE "C" NOT NULL,
    primary_region TEXT COLLATE "C" NOT NULL,
    updated_ms     BIGINT,
    CONSTRAINT multi_region_sets_pkey PRIMARY KEY (account_id, key_id)
);
CREATE INDEX keys_multi_region ON keys (account_id, key_id) WHERE multi_region;
INSERT INTO multi_region_sets (account_id, key_id, primary_region)
    SELECT DISTINCT ON (account_id, key_id) account_id, key_id, region FROM keys
    WHERE multi_region ORDER BY account_id, key_id, creation_date_ms;
CREATE FUNCTION keys_multi_region_set() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO multi_region_sets (account_id, key_id, primary_region)
    VALUES (NEW.account_id, NEW.key_id, NEW.region)
    ON CONFLICT (account_id, key_id) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER keys_multi_region_set AFTER INSERT ON keys
    FOR EACH ROW WHEN (NEW.multi_region) EXECUTE FUNCTION keys_multi_region_set();
CREATE FUNCTION keys_multi_region_set_gone() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM keys WHERE account_id = OLD.account_id
                   AND key_id = OLD.key_id AND multi_region) THEN
        DELETE FROM multi_region_sets
            WHERE account_id = OLD.account_id AND key_id = OLD.key_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keys_multi_region_set_gone AFTER DELETE ON keys
    FOR EACH ROW WHEN (OLD.multi_region) EXECUTE FUNCTION keys_multi_region_set_gone();
"#;

/// Version 7 → 8: leases (issue 20): which process of the fleet runs a periodic job
/// (polling one XKS proxy), until `expires_ms` unless it renews.
const SCHEMA_V8: &str = r#"
CREATE TABLE leases (
    name       TEXT COLLATE "C" NOT NULL,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_ms BIGINT NOT NULL,
    CONSTRAINT leases_pkey PRIMARY KEY (name)
);
"#;

/// The schema migrations: (version reached, DDL), in increasing order. A new database runs
/// them all; an older one runs those above its version.
pub(in crate::storage) const MIGRATIONS: &[(i64, &str)] = &[
    (1, SCHEMA_V1),
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
    (5, SCHEMA_V5),
    (6, SCHEMA_V6),
    (7, SCHEMA_V7),
    (8, SCHEMA_V8),
];

/// Creates the schema of an empty database, or migrates an older one, in one transaction
/// under [`MIGRATION_LOCK`]. Refuses a database of a newer version.
pub(super) async fn init_schema(conn: &mut Conn) -> Result<(), Failure> {
    migrate_to(conn, SCHEMA_VERSION).await
}

/// Applies the migrations up to `target` (tests build older databases with it).
pub(in crate::storage) async fn migrate_to(conn: &mut Conn, target: i64) -> Result<(), Failure> {
    let mut tx = conn.tx().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL PRIMARY KEY)")
        .await?;
    let version: i64 = tx
        .query_opt("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this program's ({SCHEMA_VERSION})"
        ))
        .into());
    }
    for (reached, ddl) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > version && *v <= target)
    {
        tx.batch(ddl).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[reached],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
