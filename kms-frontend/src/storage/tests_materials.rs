//! Conformance tests of key material versions and rotation settings (issue 18): what every
//! `Storage` backend must do for `key_materials`, `key_rotation`, `change_key_material`,
//! `keys_due_for_rotation` and `materials_due_to_expire`.
//! The behaviour tests run on every backend (`backends::conformance!`); the migration of an
//! existing database is tested per backend.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use super::sqlite::SCHEMA_V1;
use super::tests::backends;
use super::tests::fixtures::{delete_now, plain_key};
use super::{
    KeyMaterialRecord, KeyRecord, KeyState, MaterialChange, RotationRecord, SqliteStorage, Storage,
    StorageError,
};

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sqlite3");
    (dir, path)
}

fn key(key_id: &str, origin: &str, material: Option<(&str, u8)>) -> KeyRecord {
    KeyRecord {
        origin: origin.to_owned(),
        key_state: if material.is_some() {
            KeyState::Enabled
        } else {
            KeyState::PendingImport
        },
        sealed_material: material.map(|(_, b)| vec![b; 60]),
        material_id: material.map(|(id, _)| id.to_owned()),
        ..plain_key(ACCT, REGION, key_id)
    }
}

fn version(id: &str, byte: u8, created_ms: i64, rotation: Option<&str>) -> KeyMaterialRecord {
    KeyMaterialRecord {
        material_id: id.to_owned(),
        seq: 0,
        sealed_material: Some(vec![byte; 60]),
        created_ms,
        rotation_type: rotation.map(str::to_owned),
        expiration_model: None,
        valid_to_ms: None,
        description: None,
    }
}

fn ids(s: &dyn Storage, k: &KeyRecord) -> Vec<(String, i64, bool)> {
    s.key_materials(k.address())
        .unwrap()
        .into_iter()
        .map(|m| (m.material_id, m.seq, m.sealed_material.is_some()))
        .collect()
}

fn a_new_key_s_material_is_its_first_version() {
    let (_guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    let s = s.as_ref();
    let k = key("k1", "AWS_KMS", Some(("m1", 1)));
    s.create_key(&k, 10).unwrap();
    let versions = s.key_materials(k.address()).unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].material_id, "m1");
    assert_eq!(versions[0].seq, 1);
    assert_eq!(versions[0].sealed_material, k.sealed_material);
    assert_eq!(versions[0].created_ms, k.creation_date_ms);
    assert_eq!(versions[0].rotation_type, None);
    // A key waiting for an import has none; neither has a key that does not exist.
    let external = key("k2", "EXTERNAL", None);
    s.create_key(&external, 10).unwrap();
    assert!(s.key_materials(external.address()).unwrap().is_empty());
    assert!(
        s.key_materials(key("nope", "AWS_KMS", None).address())
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.key_rotation(k.address()).unwrap(), None);
}

fn a_rotation_adds_a_version_and_makes_it_current_only_from_the_state_read() {
    let (_guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    let s = s.as_ref();
    let k = key("k1", "AWS_KMS", Some(("m1", 1)));
    s.create_key(&k, 10).unwrap();
    let v2 = version("m2", 2, 1_800_000_000_000, Some("ON_DEMAND"));
    let rotate = MaterialChange {
        put: Some(&v2),
        make_current: Some("m2"),
        ..MaterialChange::default()
    };
    // Decided from a stale current material or state: nothing changes.
    for (from, current) in [
        (&[KeyState::Enabled][..], Some("m0")),
        (&[KeyState::Disabled][..], Some("m1")),
    ] {
        assert_eq!(
            s.change_key_material(k.address(), from, current, &rotate),
            Err(StorageError::StateChanged)
        );
        assert_eq!(ids(s, &k), vec![("m1".to_owned(), 1, true)]);
    }
    s.change_key_material(k.address(), &[KeyState::Enabled], Some("m1"), &rotate)
        .unwrap();
    let now = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(now.material_id.as_deref(), Some("m2"));
    assert_eq!(now.sealed_material, Some(vec![2; 60]));
    assert_eq!(
        ids(s, &k),
        vec![("m1".to_owned(), 1, true), ("m2".to_owned(), 2, true)]
    );
    let v2_read = &s.key_materials(k.address()).unwrap()[1];
    assert_eq!(v2_read.rotation_type.as_deref(), Some("ON_DEMAND"));
    assert_eq!(v2_read.created_ms, 1_800_000_000_000);
    // The same rotation decided from the old material is refused now.
    assert_eq!(
        s.change_key_material(k.address(), &[KeyState::Enabled], Some("m1"), &rotate),
        Err(StorageError::StateChanged)
    );
    assert_eq!(
        s.change_key_material(
            key("nope", "AWS_KMS", None).address(),
            &[KeyState::Enabled],
            None,
            &rotate
        ),
        Err(StorageError::NotFound)
    );
    // Deleting the key deletes its versions and settings.
    delete_now(s, ACCT, REGION, "k1").unwrap();
    assert!(s.key_materials(k.address()).unwrap().is_empty());
}

fn forgotten_imported_material_can_be_restored_and_a_failed_write_changes_nothing() {
    let (_guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    let s = s.as_ref();
    let k = key("k1", "EXTERNAL", None);
    s.create_key(&k, 10).unwrap();
    let imported = KeyMaterialRecord {
        expiration_model: Some("KEY_MATERIAL_EXPIRES".to_owned()),
        valid_to_ms: Some(2_000),
        description: Some("first".to_owned()),
        ..version("m1", 7, 1_000, None)
    };
    s.change_key_material(
        k.address(),
        &[KeyState::PendingImport],
        None,
        &MaterialChange {
            put: Some(&imported),
            make_current: Some("m1"),
            state: Some(KeyState::Enabled),
            ..MaterialChange::default()
        },
    )
    .unwrap();
    let read = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(
        (read.key_state, read.material_id.as_deref()),
        (KeyState::Enabled, Some("m1"))
    );
    assert_eq!(read.sealed_material, Some(vec![7; 60]));
    assert_eq!(
        s.materials_due_to_expire(1_999).unwrap(),
        Vec::<(String, String, String, String)>::new()
    );
    assert_eq!(
        s.materials_due_to_expire(2_000).unwrap(),
        vec![(ACCT.into(), REGION.into(), "k1".into(), "m1".into())]
    );
    // Expiry: the material is forgotten (the row and its id stay), the key waits for import.
    s.change_key_material(
        k.address(),
        &[KeyState::Enabled],
        Some("m1"),
        &MaterialChange {
            forget: Some("m1"),
            state: Some(KeyState::PendingImport),
            ..MaterialChange::default()
        },
    )
    .unwrap();
    let read = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(read.key_state, KeyState::PendingImport);
    assert_eq!(read.sealed_material, None);
    assert_eq!(read.material_id.as_deref(), Some("m1"));
    assert_eq!(ids(s, &k), vec![("m1".to_owned(), 1, false)]);
    assert!(s.materials_due_to_expire(i64::MAX).unwrap().is_empty());
    // Making forgotten material current fails whole: the state change beside it is undone.
    assert!(matches!(
        s.change_key_material(
            k.address(),
            &[KeyState::PendingImport],
            Some("m1"),
            &MaterialChange {
                make_current: Some("m1"),
                state: Some(KeyState::Enabled),
                ..MaterialChange::default()
            },
        ),
        Err(StorageError::Conflict(_))
    ));
    let read = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(read.key_state, KeyState::PendingImport);
    // Re-importing the same material restores it, keeps its place and its description.
    let again = KeyMaterialRecord {
        expiration_model: Some("KEY_MATERIAL_DOES_NOT_EXPIRE".to_owned()),
        valid_to_ms: None,
        description: None,
        ..version("m1", 7, 9_000, None)
    };
    s.change_key_material(
        k.address(),
        &[KeyState::PendingImport],
        Some("m1"),
        &MaterialChange {
            put: Some(&again),
            make_current: Some("m1"),
            state: Some(KeyState::Enabled),
            ..MaterialChange::default()
        },
    )
    .unwrap();
    let read = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(read.key_state, KeyState::Enabled);
    assert_eq!(read.sealed_material, Some(vec![7; 60]));
    let m = &s.key_materials(k.address()).unwrap()[0];
    assert_eq!((m.seq, m.created_ms), (1, 1_000));
    assert_eq!(m.description.as_deref(), Some("first"));
    assert_eq!(
        m.expiration_model.as_deref(),
        Some("KEY_MATERIAL_DOES_NOT_EXPIRE")
    );
}

fn rotation_settings_and_the_due_rotations() {
    let (_guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    let s = s.as_ref();
    let a = key("a", "AWS_KMS", Some(("ma", 1)));
    let b = key("b", "AWS_KMS", Some(("mb", 2)));
    s.create_key(&a, 10).unwrap();
    s.create_key(&b, 10).unwrap();
    let enable = |k: &KeyRecord, next: i64| {
        s.change_key_material(
            k.address(),
            &[KeyState::Enabled],
            k.material_id.as_deref(),
            &MaterialChange {
                rotation: Some(RotationRecord {
                    enabled: true,
                    period_days: Some(90),
                    next_rotation_ms: Some(next),
                }),
                ..MaterialChange::default()
            },
        )
        .unwrap();
    };
    enable(&a, 5_000);
    enable(&b, 4_000);
    assert_eq!(
        s.key_rotation(a.address()).unwrap(),
        Some(RotationRecord {
            enabled: true,
            period_days: Some(90),
            next_rotation_ms: Some(5_000)
        })
    );
    assert!(s.keys_due_for_rotation(3_999).unwrap().is_empty());
    let due: Vec<String> = s
        .keys_due_for_rotation(5_000)
        .unwrap()
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    assert_eq!(due, vec!["b".to_owned(), "a".to_owned()]);
    // A disabled key is not due (it rotates once enabled again, if still due).
    s.transition_key_state(b.address(), &[KeyState::Enabled], KeyState::Disabled, None)
        .unwrap();
    assert_eq!(s.keys_due_for_rotation(5_000).unwrap().len(), 1);
    // The sweep's guard: a rotation applies only while it is still due.
    let v2 = version("ma2", 3, 5_000, Some("AUTOMATIC"));
    let sweep = |due_at: i64| MaterialChange {
        put: Some(&v2),
        make_current: Some("ma2"),
        rotation_due_at: Some(due_at),
        rotation: Some(RotationRecord {
            enabled: true,
            period_days: Some(90),
            next_rotation_ms: Some(due_at + 90 * 86_400_000),
        }),
        ..MaterialChange::default()
    };
    assert_eq!(
        s.change_key_material(a.address(), &[KeyState::Enabled], Some("ma"), &sweep(4_999)),
        Err(StorageError::StateChanged)
    );
    s.change_key_material(a.address(), &[KeyState::Enabled], Some("ma"), &sweep(5_000))
        .unwrap();
    assert!(s.keys_due_for_rotation(5_000).unwrap().is_empty());
    assert_eq!(
        s.get_key(ACCT, REGION, "a")
            .unwrap()
            .unwrap()
            .material_id
            .as_deref(),
        Some("ma2")
    );
}

#[test]
fn migration_makes_each_existing_key_s_material_its_first_version() {
    let (_dir, path) = db();
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(SCHEMA_V1).unwrap();
        raw.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        for (id, material_id, sealed) in [
            ("sym", Some("aa"), Some(vec![1u8; 4])),
            ("rsa", None, Some(vec![2u8; 4])),
            ("ext", None, None),
        ] {
            raw.execute(
                "INSERT INTO keys (account_id, region, key_id, arn, creation_date_ms, \
                 description, key_spec, key_usage, origin, key_state, multi_region, policy, \
                 sealed_material, material_id) \
                 VALUES (?1, ?2, ?3, 'arn', 42, '', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', \
                 'AWS_KMS', 'Enabled', 0, '{}', ?4, ?5)",
                rusqlite::params![ACCT, REGION, id, sealed, material_id],
            )
            .unwrap();
        }
    }
    let s = SqliteStorage::open(&path).unwrap();
    let sym = s.get_key(ACCT, REGION, "sym").unwrap().unwrap();
    let versions = s.key_materials(sym.address()).unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].material_id, "aa");
    assert_eq!(versions[0].sealed_material, Some(vec![1u8; 4]));
    assert_eq!((versions[0].seq, versions[0].created_ms), (1, 42));
    // A key that had no material id gets one (64 hex characters), the same in both places.
    let rsa = s.get_key(ACCT, REGION, "rsa").unwrap().unwrap();
    let id = rsa.material_id.clone().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(s.key_materials(rsa.address()).unwrap()[0].material_id, id);
    let ext = s.get_key(ACCT, REGION, "ext").unwrap().unwrap();
    assert_eq!(ext.material_id, None);
    assert!(s.key_materials(ext.address()).unwrap().is_empty());
}

backends::conformance!(
    a_new_key_s_material_is_its_first_version,
    a_rotation_adds_a_version_and_makes_it_current_only_from_the_state_read,
    forgotten_imported_material_can_be_restored_and_a_failed_write_changes_nothing,
    rotation_settings_and_the_due_rotations,
);

/// The PostgreSQL migration to version 5 (a database of version 4 with keys in it).
#[cfg(feature = "postgres")]
#[test]
fn postgres_migration_makes_each_existing_key_s_material_its_first_version() {
    use super::tests::backends::pg::{Schema, admin};
    let schema = Schema::create();
    let settings = schema.settings();
    super::postgres::migrate_for_tests(&settings, 4);
    for (id, material_id, sealed) in [
        ("sym", "'aa'", "'\\x01010101'::BYTEA"),
        ("rsa", "NULL", "'\\x02020202'::BYTEA"),
        ("ext", "NULL", "NULL"),
    ] {
        admin(&format!(
            "INSERT INTO {schema}.keys (account_id, region, key_id, arn, creation_date_ms, \
             description, key_spec, key_usage, origin, key_state, multi_region, policy, \
             sealed_material, material_id) \
             VALUES ('{ACCT}', '{REGION}', '{id}', 'arn', 42, '', 'SYMMETRIC_DEFAULT', \
             'ENCRYPT_DECRYPT', 'AWS_KMS', 'Enabled', false, '{{}}', {sealed}, {material_id})",
            schema = schema.name
        ));
    }
    let s = super::PgStorage::open(&settings).unwrap();
    let sym = s.get_key(ACCT, REGION, "sym").unwrap().unwrap();
    let versions = s.key_materials(sym.address()).unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].material_id, "aa");
    assert_eq!(versions[0].sealed_material, Some(vec![1u8; 4]));
    assert_eq!((versions[0].seq, versions[0].created_ms), (1, 42));
    let rsa = s.get_key(ACCT, REGION, "rsa").unwrap().unwrap();
    let id = rsa.material_id.clone().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(s.key_materials(rsa.address()).unwrap()[0].material_id, id);
    let ext = s.get_key(ACCT, REGION, "ext").unwrap().unwrap();
    assert_eq!(ext.material_id, None);
    assert!(s.key_materials(ext.address()).unwrap().is_empty());
}
