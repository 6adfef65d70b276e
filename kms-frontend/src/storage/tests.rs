#![allow(clippy::unwrap_used)]
//! The storage conformance tests: every test that does not look below the trait runs once
//! per backend (`conformance!` at the end generates `on_sqlite::*` and `on_postgres::*`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use super::{AliasRecord, KeyRecord, KeyState, ScheduledDeletion, SqliteStorage, Storage};
use super::{ConnectionState, CustomKeyStoreRecord};
use super::{
    StorageError,
    sqlite::{SCHEMA_V1, SCHEMA_VERSION},
};

pub(in crate::storage) mod backends;
pub(in crate::storage) mod fixtures;
use fixtures::delete_now;

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";

/// An SQLite database in a temporary directory, for the tests of SQLite itself.
fn sqlite_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sqlite3");
    (dir, path)
}

fn sqlite_open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path).unwrap()
}

/// A fresh, empty database of the backend the running conformance test is for (see
/// `backends::conformance!`); the first value keeps it alive.
fn db() -> (backends::Guard, backends::TestDb) {
    backends::fresh()
}

/// A new storage instance on `db` (each call is another instance, as another process
/// would have).
fn open(db: &backends::TestDb) -> Arc<dyn Storage> {
    Arc::from(db.open_storage().unwrap())
}

fn key(account: &str, region: &str, key_id: &str) -> KeyRecord {
    KeyRecord {
        account_id: account.to_owned(),
        region: region.to_owned(),
        key_id: key_id.to_owned(),
        arn: format!("arn:aws:kms:{region}:{account}:key/{key_id}"),
        creation_date_ms: 1_700_000_000_000,
        description: "a key".to_owned(),
        key_spec: "SYMMETRIC_DEFAULT".to_owned(),
        key_usage: "ENCRYPT_DECRYPT".to_owned(),
        origin: "AWS_KMS".to_owned(),
        key_state: KeyState::Enabled,
        deletion_date_ms: None,
        pending_window_days: None,
        multi_region: false,
        custom_key_store_id: None,
        xks_key_id: None,
        policy: r#"{"Version":"2012-10-17","Statement":[]}"#.to_owned(),
        sealed_material: Some(vec![0xA5; 60]),
        material_id: Some("m-1".to_owned()),
        tags: vec![
            ("zeta".to_owned(), "1".to_owned()),
            ("alpha".to_owned(), "2".to_owned()),
            ("mid".to_owned(), String::new()),
        ],
    }
}

fn xks_key(key_id: &str, cks: &str, xks: &str) -> KeyRecord {
    KeyRecord {
        origin: "EXTERNAL_KEY_STORE".to_owned(),
        custom_key_store_id: Some(cks.to_owned()),
        xks_key_id: Some(xks.to_owned()),
        sealed_material: None,
        material_id: None,
        tags: Vec::new(),
        ..key(ACCT, REGION, key_id)
    }
}

/// A public-endpoint external key store `id` named `id`, with an endpoint of its own.
fn store(account: &str, region: &str, id: &str) -> CustomKeyStoreRecord {
    CustomKeyStoreRecord {
        account_id: account.to_owned(),
        region: region.to_owned(),
        id: id.to_owned(),
        name: format!("name-{id}"),
        store_type: "EXTERNAL_KEY_STORE".to_owned(),
        uri_endpoint: format!("https://{id}.example.com"),
        uri_path: "/kms/xks/v1".to_owned(),
        connectivity: "PUBLIC_ENDPOINT".to_owned(),
        vpc_endpoint_service_name: None,
        vpc_endpoint_service_owner: None,
        access_key_id: "ABCDEFGHIJKLMNOPQRST".to_owned(),
        sealed_secret: vec![0x5A; 48],
        connection_state: ConnectionState::Disconnected,
        connection_error_code: None,
        creation_date_ms: 1_700_000_000_000,
    }
}

/// A VPC-endpoint-service external key store using the service `service`.
fn vpc_store(region: &str, id: &str, service: &str) -> CustomKeyStoreRecord {
    CustomKeyStoreRecord {
        connectivity: "VPC_ENDPOINT_SERVICE".to_owned(),
        vpc_endpoint_service_name: Some(service.to_owned()),
        vpc_endpoint_service_owner: Some(ACCT.to_owned()),
        ..store(ACCT, region, id)
    }
}

/// Creates the stores `ids` in `ACCT`/`REGION` (for keys that live in them).
fn add_stores(s: &dyn Storage, ids: &[&str]) {
    for id in ids {
        s.create_custom_key_store(&store(ACCT, REGION, id), 100)
            .unwrap();
    }
}

/// Schedules the deletion of a key that is `Enabled`, as ScheduleKeyDeletion does.
fn schedule_deletion(s: &dyn Storage, k: &KeyRecord, date_ms: i64, window_days: u32) {
    s.transition_key_state(
        k.address(),
        &[KeyState::Enabled],
        KeyState::PendingDeletion,
        Some(ScheduledDeletion {
            date_ms,
            window_days,
        }),
    )
    .unwrap();
}

fn exists(what: &str) -> Result<(), StorageError> {
    Err(StorageError::AlreadyExists(what.to_owned()))
}

fn alias(region: &str, name: &str, target: &str) -> AliasRecord {
    AliasRecord {
        account_id: ACCT.to_owned(),
        region: region.to_owned(),
        alias_name: name.to_owned(),
        target_key_id: target.to_owned(),
        creation_date_ms: 10,
        last_updated_ms: 10,
    }
}

fn key_crud_round_trip() {
    let (_dir, path) = db();
    let s = open(&path);
    let k = key(ACCT, REGION, "k1");
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);
    s.create_key(&k, 100).unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(k.clone()));
    // Scoped by account and region.
    assert_eq!(s.get_key(ACCT, "us-east-1", "k1").unwrap(), None);
    assert_eq!(s.get_key("444455556666", REGION, "k1").unwrap(), None);

    // Every mutable field changes through its own write; the others stay.
    let mut u = k.clone();
    let at = k.address();
    let enabled = &[KeyState::Enabled][..];
    s.set_key_description(at, enabled, "changed").unwrap();
    u.description = "changed".to_owned();
    s.set_key_policy(at, enabled, "{}").unwrap();
    u.policy = "{}".to_owned();
    // Tags: an existing key keeps its place with the new value, new ones follow in order.
    s.tag_key(
        at,
        enabled,
        &[
            ("b".to_owned(), "x".to_owned()),
            ("alpha".to_owned(), "y".to_owned()),
        ],
        50,
    )
    .unwrap();
    u.tags = vec![
        ("zeta".to_owned(), "1".to_owned()),
        ("alpha".to_owned(), "y".to_owned()),
        ("mid".to_owned(), String::new()),
        ("b".to_owned(), "x".to_owned()),
    ];
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(u.clone()));
    s.untag_key(
        at,
        enabled,
        &["zeta".to_owned(), "mid".to_owned(), "absent".to_owned()],
    )
    .unwrap();
    u.tags = vec![
        ("alpha".to_owned(), "y".to_owned()),
        ("b".to_owned(), "x".to_owned()),
    ];
    s.transition_key_state(
        at,
        enabled,
        KeyState::PendingDeletion,
        Some(ScheduledDeletion {
            date_ms: 1_700_100_000_000,
            window_days: 7,
        }),
    )
    .unwrap();
    u.key_state = KeyState::PendingDeletion;
    u.deletion_date_ms = Some(1_700_100_000_000);
    u.pending_window_days = Some(7);
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(u.clone()));

    // Back to no deletion date and no tags.
    let pending = &[KeyState::PendingDeletion][..];
    s.transition_key_state(at, pending, KeyState::Disabled, None)
        .unwrap();
    u.key_state = KeyState::Disabled;
    u.deletion_date_ms = None;
    u.pending_window_days = None;
    s.untag_key(
        at,
        &[KeyState::Disabled],
        &["alpha".to_owned(), "b".to_owned()],
    )
    .unwrap();
    u.tags.clear();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(u.clone()));

    delete_now(s.as_ref(), ACCT, REGION, "k1").unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);
    assert_eq!(
        delete_now(s.as_ref(), ACCT, REGION, "k1"),
        Err(StorageError::NotFound)
    );
    let gone = u.address();
    let any = KeyState::ALL;
    assert_eq!(
        s.transition_key_state(gone, any, KeyState::Enabled, None),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.set_key_description(gone, any, "x"),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.set_key_policy(gone, any, "{}"),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.tag_key(gone, any, &[], 50), Err(StorageError::NotFound));
    assert_eq!(s.untag_key(gone, any, &[]), Err(StorageError::NotFound));
}

fn duplicate_key_id_is_already_exists() {
    let (_dir, path) = db();
    let s = open(&path);
    s.create_key(&key(ACCT, REGION, "k1"), 100).unwrap();
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k1"), 100),
        Err(StorageError::AlreadyExists(_))
    ));
    // The same id in another region or account is another key.
    s.create_key(&key(ACCT, "us-east-1", "k1"), 100).unwrap();
    s.create_key(&key("444455556666", REGION, "k1"), 100)
        .unwrap();
}

fn duplicate_tag_keys_are_refused_atomically() {
    let (_dir, path) = db();
    let s = open(&path);
    let mut k = key(ACCT, REGION, "k1");
    k.tags.push(("alpha".to_owned(), "again".to_owned()));
    assert!(matches!(
        s.create_key(&k, 100),
        Err(StorageError::Conflict(_))
    ));
    // Nothing was created.
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);

    let good = key(ACCT, REGION, "k1");
    s.create_key(&good, 100).unwrap();
    let bad = [
        ("new".to_owned(), "1".to_owned()),
        ("t".to_owned(), "1".to_owned()),
        ("t".to_owned(), "2".to_owned()),
    ];
    assert!(matches!(
        s.tag_key(good.address(), &[KeyState::Enabled], &bad, 50),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(good));
}

fn debug_hides_sealed_material() {
    let mut k = key(ACCT, REGION, "k1");
    k.sealed_material = Some(vec![0xDE, 0xAD, 0xBE, 0xEF, 0x42]);
    let shown = format!("{k:?}");
    assert!(shown.contains("<5 bytes>"), "{shown}");
    // The bytes, in decimal (Vec's Debug) or hex, are nowhere.
    assert!(!shown.contains("222, 173"), "{shown}");
    assert!(!shown.to_ascii_lowercase().contains("deadbeef"), "{shown}");
}

fn list_keys_pages_with_markers() {
    let (_dir, path) = db();
    let s = open(&path);
    let mut ids: Vec<String> = (0..23)
        .map(|i| format!("key-{:03}", (i * 7) % 23))
        .collect();
    for id in &ids {
        s.create_key(&key(ACCT, REGION, id), 1000).unwrap();
    }
    // Other accounts and regions are not listed.
    s.create_key(&key(ACCT, "us-east-1", "key-000x"), 1000)
        .unwrap();
    s.create_key(&key("444455556666", REGION, "key-000y"), 1000)
        .unwrap();
    ids.sort();

    for limit in [1, 2, 5, 22, 23, 24, 1000] {
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.list_keys(ACCT, REGION, marker.as_deref(), limit).unwrap();
            pages += 1;
            assert!(page.items.len() <= limit);
            assert!(!page.items.is_empty());
            for k in &page.items {
                assert_eq!(k.tags.len(), 3, "tags come with listed keys");
                assert_eq!(k.tags[0].0, "zeta");
            }
            seen.extend(page.items.into_iter().map(|k| k.key_id));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, ids, "limit {limit}");
        assert_eq!(pages, ids.len().div_ceil(limit), "limit {limit}");
    }

    let empty = s.list_keys(ACCT, "ap-south-1", None, 10).unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_marker, None);
}

fn aliases_crud_uniqueness_and_listing() {
    let (_dir, path) = db();
    let s = open(&path);
    for (region, id) in [(REGION, "k1"), (REGION, "k2"), ("us-east-1", "k1")] {
        s.create_key(&key(ACCT, region, id), 100).unwrap();
    }
    let a = alias(REGION, "alias/app", "k1");
    s.create_alias(&a).unwrap();
    assert_eq!(s.get_alias(ACCT, REGION, "alias/app").unwrap(), Some(a));
    // Unique per account and region.
    assert!(matches!(
        s.create_alias(&alias(REGION, "alias/app", "k2")),
        Err(StorageError::AlreadyExists(_))
    ));
    s.create_alias(&alias("us-east-1", "alias/app", "k1"))
        .unwrap();
    let other_account = AliasRecord {
        account_id: "444455556666".to_owned(),
        ..alias(REGION, "alias/app", "k9")
    };
    s.create_key(&key("444455556666", REGION, "k9"), 100)
        .unwrap();
    s.create_alias(&other_account).unwrap();
    // The target key must exist in the same account and region.
    assert_eq!(
        s.create_alias(&alias(REGION, "alias/none", "missing")),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.create_alias(&alias(REGION, "alias/cross", "k9")),
        Err(StorageError::NotFound)
    );

    // Update.
    s.update_alias(ACCT, REGION, "alias/app", "k2", 99).unwrap();
    let got = s.get_alias(ACCT, REGION, "alias/app").unwrap().unwrap();
    assert_eq!(got.target_key_id, "k2");
    assert_eq!(got.creation_date_ms, 10);
    assert_eq!(got.last_updated_ms, 99);
    assert_eq!(
        s.update_alias(ACCT, REGION, "alias/nope", "k2", 99),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.update_alias(ACCT, REGION, "alias/app", "missing", 99),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.get_alias(ACCT, REGION, "alias/app")
            .unwrap()
            .unwrap()
            .target_key_id,
        "k2"
    );

    // Listing, with and without a key filter, across pages.
    let mut names = Vec::new();
    for i in 0..9 {
        let name = format!("alias/n{i}");
        let target = if i % 3 == 0 { "k1" } else { "k2" };
        s.create_alias(&alias(REGION, &name, target)).unwrap();
        names.push((name, target));
    }
    let list_all = |key_id: Option<&str>, limit: usize| {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = s
                .list_aliases(ACCT, REGION, key_id, marker.as_deref(), limit)
                .unwrap();
            assert!(page.items.len() <= limit);
            out.extend(page.items.into_iter().map(|a| a.alias_name));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return out,
            }
        }
    };
    let mut all: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    all.push("alias/app".to_owned());
    all.sort();
    let mut k1: Vec<String> = names
        .iter()
        .filter(|(_, t)| *t == "k1")
        .map(|(n, _)| n.clone())
        .collect();
    k1.sort();
    for limit in [1, 2, 3, 4, 10, 11, 1000] {
        assert_eq!(list_all(None, limit), all, "limit {limit}");
        assert_eq!(list_all(Some("k1"), limit), k1, "limit {limit}");
    }
    assert_eq!(list_all(Some("missing"), 5), Vec::<String>::new());

    // Delete.
    s.delete_alias(ACCT, REGION, "alias/app").unwrap();
    assert_eq!(s.get_alias(ACCT, REGION, "alias/app").unwrap(), None);
    assert_eq!(
        s.delete_alias(ACCT, REGION, "alias/app"),
        Err(StorageError::NotFound)
    );
    // Other regions and accounts untouched.
    assert!(
        s.get_alias(ACCT, "us-east-1", "alias/app")
            .unwrap()
            .is_some()
    );
    assert!(
        s.get_alias("444455556666", REGION, "alias/app")
            .unwrap()
            .is_some()
    );
}

fn delete_key_frees_xks_id_and_removes_aliases_and_tags() {
    let (_dir, path) = db();
    let s = open(&path);
    add_stores(&*s, &["cks-1"]);
    let mut k = xks_key("k1", "cks-1", "ext-1");
    k.tags = vec![("t".to_owned(), "v".to_owned())];
    s.create_key(&k, 100).unwrap();
    s.create_key(&key(ACCT, REGION, "other"), 100).unwrap();
    s.create_alias(&alias(REGION, "alias/a", "k1")).unwrap();
    s.create_alias(&alias(REGION, "alias/b", "k1")).unwrap();
    s.create_alias(&alias(REGION, "alias/keep", "other"))
        .unwrap();
    assert_eq!(
        s.create_key(&xks_key("k2", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );

    delete_now(s.as_ref(), ACCT, REGION, "k1").unwrap();
    assert_eq!(s.get_alias(ACCT, REGION, "alias/a").unwrap(), None);
    assert_eq!(s.get_alias(ACCT, REGION, "alias/b").unwrap(), None);
    assert!(s.get_alias(ACCT, REGION, "alias/keep").unwrap().is_some());
    let listed = s.list_aliases(ACCT, REGION, None, None, 100).unwrap();
    assert_eq!(listed.items.len(), 1);

    // The external key is free again, and a re-created k1 has no old tags.
    s.create_key(&xks_key("k2", "cks-1", "ext-1"), 100).unwrap();
    s.create_key(&xks_key("k1", "cks-1", "ext-other"), 100)
        .unwrap();
    assert!(
        s.get_key(ACCT, REGION, "k1")
            .unwrap()
            .unwrap()
            .tags
            .is_empty()
    );
}

fn create_key_limit_exceeded() {
    let (_dir, path) = db();
    let s = open(&path);
    for i in 0..3 {
        s.create_key(&key(ACCT, REGION, &format!("k{i}")), 3)
            .unwrap();
    }
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k3"), 3),
        Err(StorageError::LimitExceeded(_))
    ));
    // Keys pending deletion count too.
    let pending = s.get_key(ACCT, REGION, "k0").unwrap().unwrap();
    schedule_deletion(&*s, &pending, 5, 7);
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k3"), 3),
        Err(StorageError::LimitExceeded(_))
    ));
    // Per account and region.
    s.create_key(&key(ACCT, "us-east-1", "k3"), 3).unwrap();
    s.create_key(&key("444455556666", REGION, "k3"), 3).unwrap();
    // Room again after a deletion.
    delete_now(s.as_ref(), ACCT, REGION, "k0").unwrap();
    s.create_key(&key(ACCT, REGION, "k3"), 3).unwrap();
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k4"), 0),
        Err(StorageError::LimitExceeded(_))
    ));
}

fn xks_key_in_use() {
    let (_dir, path) = db();
    let s = open(&path);
    add_stores(&*s, &["cks-1", "cks-2"]);
    s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100).unwrap();
    assert_eq!(
        s.create_key(&xks_key("k2", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );
    // Another external key, or the same one in another key store, is fine.
    s.create_key(&xks_key("k3", "cks-1", "ext-2"), 100).unwrap();
    s.create_key(&xks_key("k4", "cks-2", "ext-1"), 100).unwrap();
    // Keys outside custom key stores never collide.
    s.create_key(&key(ACCT, REGION, "k5"), 100).unwrap();
    s.create_key(&key(ACCT, REGION, "k6"), 100).unwrap();
    // A key pending deletion still holds its external key.
    let k1 = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    schedule_deletion(&*s, &k1, 1, 7);
    assert_eq!(
        s.create_key(&xks_key("k7", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );
    // A duplicate key id is reported as such, not as an external key conflict.
    assert!(matches!(
        s.create_key(&xks_key("k3", "cks-1", "ext-9"), 100),
        Err(StorageError::AlreadyExists(_))
    ));
    assert_eq!(s.get_key(ACCT, REGION, "k7").unwrap(), None);
}

fn keys_due_for_deletion_across_accounts_and_regions() {
    let (_dir, path) = db();
    let s = open(&path);
    let pending = |account: &str, region: &str, id: &str, at: i64| KeyRecord {
        key_state: KeyState::PendingDeletion,
        deletion_date_ms: Some(at),
        pending_window_days: Some(7),
        ..key(account, region, id)
    };
    s.create_key(&pending(ACCT, REGION, "a", 300), 100).unwrap();
    s.create_key(&pending(ACCT, "us-east-1", "b", 100), 100)
        .unwrap();
    s.create_key(&pending("444455556666", REGION, "c", 200), 100)
        .unwrap();
    s.create_key(&pending(ACCT, REGION, "later", 1000), 100)
        .unwrap();
    // Not pending deletion, even with a date.
    let mut enabled = key(ACCT, REGION, "enabled");
    enabled.deletion_date_ms = Some(1);
    s.create_key(&enabled, 100).unwrap();

    assert_eq!(s.keys_due_for_deletion(99).unwrap(), vec![]);
    assert_eq!(
        s.keys_due_for_deletion(300).unwrap(),
        vec![
            (ACCT.to_owned(), "us-east-1".to_owned(), "b".to_owned()),
            ("444455556666".to_owned(), REGION.to_owned(), "c".to_owned()),
            (ACCT.to_owned(), REGION.to_owned(), "a".to_owned()),
        ]
    );
    assert_eq!(s.keys_due_for_deletion(i64::MAX).unwrap().len(), 4);
}

/// The sweep's delete decides "still due" in its own transaction: a key cancelled or
/// scheduled again after the sweep read it stays, a due one goes with its aliases.
fn delete_key_if_due_only_deletes_what_is_still_due() {
    let (_dir, path) = db();
    let s = open(&path);
    let k = key(ACCT, REGION, "k1");
    s.create_key(&k, 100).unwrap();
    s.create_alias(&alias(REGION, "alias/due", "k1")).unwrap();
    // Not pending deletion at all.
    assert!(matches!(
        s.delete_key_if_due(k.address(), i64::MAX),
        Err(StorageError::StateChanged)
    ));
    schedule_deletion(s.as_ref(), &k, 500, 7);
    // Scheduled, but not yet due at 499.
    assert!(matches!(
        s.delete_key_if_due(k.address(), 499),
        Err(StorageError::StateChanged)
    ));
    // Cancelled after a sweep listed it: it stays.
    s.transition_key_state(
        k.address(),
        &[KeyState::PendingDeletion],
        KeyState::Disabled,
        None,
    )
    .unwrap();
    assert!(matches!(
        s.delete_key_if_due(k.address(), 1_000),
        Err(StorageError::StateChanged)
    ));
    assert!(s.get_key(ACCT, REGION, "k1").unwrap().is_some());
    // Due: deleted, with its alias.
    s.transition_key_state(
        k.address(),
        &[KeyState::Disabled],
        KeyState::PendingDeletion,
        Some(ScheduledDeletion {
            date_ms: 500,
            window_days: 7,
        }),
    )
    .unwrap();
    s.delete_key_if_due(k.address(), 500).unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);
    assert_eq!(s.get_alias(ACCT, REGION, "alias/due").unwrap(), None);
    assert!(matches!(
        s.delete_key_if_due(k.address(), 500),
        Err(StorageError::NotFound)
    ));
}

fn data_persists_across_reopen() {
    let (_dir, path) = db();
    let k = key(ACCT, REGION, "k1");
    let x = xks_key("k2", "cks-1", "ext-1");
    let cks = store(ACCT, REGION, "cks-1");
    {
        let s = open(&path);
        s.create_custom_key_store(&cks, 10).unwrap();
        s.create_key(&k, 100).unwrap();
        s.create_key(&x, 100).unwrap();
        s.create_alias(&alias(REGION, "alias/p", "k1")).unwrap();
    }
    let s = open(&path);
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(k));
    assert_eq!(s.get_key(ACCT, REGION, "k2").unwrap(), Some(x));
    assert_eq!(
        s.get_alias(ACCT, REGION, "alias/p").unwrap(),
        Some(alias(REGION, "alias/p", "k1"))
    );
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-1").unwrap(),
        Some(cks.clone())
    );
    // Constraints survive too.
    assert_eq!(
        s.create_key(&xks_key("k3", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );
    assert_eq!(s.create_custom_key_store(&cks, 10), exists("id"));
    assert_eq!(
        s.delete_custom_key_store(ACCT, REGION, "cks-1"),
        Err(StorageError::Conflict("has keys".to_owned()))
    );
}

#[test]
fn wal_and_full_sync_are_set() {
    let (_dir, path) = sqlite_db();
    let s = sqlite_open(&path);
    assert_eq!(s.synchronous_setting().unwrap(), 2);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path) = sqlite_db();
    drop(sqlite_open(&path));
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(raw);
    match SqliteStorage::open(&path) {
        Err(StorageError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn open_fails_cleanly_on_a_bad_path() {
    let (dir, _path) = sqlite_db();
    let bad = dir.path().join("missing-dir").join("kms.sqlite3");
    assert!(matches!(
        SqliteStorage::open(&bad),
        Err(StorageError::Backend(_))
    ));
}

/// 50 threads, each with its own `SqliteStorage` of the same file, race to bind the same
/// external key: exactly one wins, every other gets `XksKeyInUse`, none sees a lock error.
fn concurrent_xks_binding_from_separate_instances() {
    const THREADS: usize = 50;
    let (_dir, path) = db();
    add_stores(&*open(&path), &["cks-1"]);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let s = path.open_storage()?;
                s.create_key(&xks_key(&format!("key-{i:02}"), "cks-1", "ext-1"), 10_000)
            })
        })
        .collect();
    let results: Vec<Result<(), StorageError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let in_use = results
        .iter()
        .filter(|r| **r == Err(StorageError::XksKeyInUse))
        .count();
    assert_eq!((ok, in_use), (1, THREADS - 1), "{results:?}");

    let s = open(&path);
    let page = s.list_keys(ACCT, REGION, None, 1000).unwrap();
    assert_eq!(page.items.len(), 1);
}

/// The key limit holds under concurrent creators in separate instances.
fn concurrent_creates_respect_the_limit() {
    const THREADS: usize = 20;
    const MAX: u64 = 7;
    let (_dir, path) = db();
    drop(open(&path));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let s = path.open_storage()?;
                barrier.wait();
                s.create_key(&key(ACCT, REGION, &format!("key-{i:02}")), MAX)
            })
        })
        .collect();
    let results: Vec<Result<(), StorageError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(StorageError::LimitExceeded(_))))
        .count();
    assert_eq!((ok, limited), (7, THREADS - 7), "{results:?}");
}

/// One instance shared by many threads (the server's `spawn_blocking` pattern).
fn shared_instance_across_threads() {
    let (_dir, path) = db();
    let s = open(&path);
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for i in 0..5 {
                    let id = format!("k-{t:02}-{i}");
                    s.create_key(&key(ACCT, REGION, &id), 1000).unwrap();
                    assert!(s.get_key(ACCT, REGION, &id).unwrap().is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        s.list_keys(ACCT, REGION, None, 1000).unwrap().items.len(),
        80
    );
}

/// Writers of one instance share transactions (group commit): each still gets its own
/// outcome, a failing write rolls back only itself, and the quota counts every key once.
fn grouped_creates_settle_each_write_on_its_own() {
    const THREADS: usize = 48;
    let (_dir, path) = db();
    let s = open(&path);
    add_stores(&*s, &["cks-1"]);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let s = Arc::clone(&s);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                // A third clash on one key id, a third on one external key, a third are
                // distinct; the quota (40) stops some of the distinct ones too.
                let record = match i % 3 {
                    0 => key(ACCT, REGION, "same-id"),
                    1 => xks_key(&format!("xks-{i:02}"), "cks-1", "one-external-key"),
                    _ => key(ACCT, REGION, &format!("own-{i:02}")),
                };
                (i % 3, s.create_key(&record, 40))
            })
        })
        .collect();
    let results: Vec<(usize, Result<(), StorageError>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let count = |kind: usize, want: fn(&Result<(), StorageError>) -> bool| {
        results
            .iter()
            .filter(|(k, r)| *k == kind && want(r))
            .count()
    };
    assert_eq!(count(0, |r| r.is_ok()), 1, "{results:?}");
    assert_eq!(
        count(0, |r| matches!(r, Err(StorageError::AlreadyExists(_)))),
        15
    );
    assert_eq!(count(1, |r| r.is_ok()), 1, "{results:?}");
    assert_eq!(count(1, |r| *r == Err(StorageError::XksKeyInUse)), 15);
    assert_eq!(count(2, |r| r.is_ok()), 16, "{results:?}");
    // Every success is stored, nothing else is, and the kept count agrees.
    let stored = s.list_keys(ACCT, REGION, None, 1000).unwrap().items.len();
    assert_eq!(stored, 18);
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "over"), 18),
        Err(StorageError::LimitExceeded(_))
    ));
    s.create_key(&key(ACCT, REGION, "fits"), 19).unwrap();
    delete_now(s.as_ref(), ACCT, REGION, "fits").unwrap();
    s.create_key(&key(ACCT, REGION, "fits-again"), 19).unwrap();
}

// ---- Custom key stores ----

fn custom_key_store_crud_round_trip() {
    let (_dir, path) = db();
    let s = open(&path);
    let c = store(ACCT, REGION, "cks-0123456789abcdef0");
    assert_eq!(s.get_custom_key_store(ACCT, REGION, &c.id).unwrap(), None);
    s.create_custom_key_store(&c, 10).unwrap();
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, &c.id).unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        s.get_custom_key_store_by_name(ACCT, REGION, &c.name)
            .unwrap(),
        Some(c.clone())
    );
    // Scoped by account and region.
    assert_eq!(
        s.get_custom_key_store(ACCT, "us-east-1", &c.id).unwrap(),
        None
    );
    assert_eq!(
        s.get_custom_key_store("444455556666", REGION, &c.id)
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_custom_key_store_by_name(ACCT, "us-east-1", &c.name)
            .unwrap(),
        None
    );
    // The same id again is refused.
    assert_eq!(
        s.create_custom_key_store(
            &CustomKeyStoreRecord {
                name: "other".to_owned(),
                uri_endpoint: "https://other.example.com".to_owned(),
                ..c.clone()
            },
            10
        ),
        exists("id")
    );

    // Every mutable field changes; the immutable ones and the connection state are not written.
    let mut u = c.clone();
    u.name = "renamed".to_owned();
    u.uri_endpoint = "https://moved.example.com".to_owned();
    u.uri_path = "/tenant/kms/xks/v1".to_owned();
    u.connectivity = "VPC_ENDPOINT_SERVICE".to_owned();
    u.vpc_endpoint_service_name = Some("com.amazonaws.vpce.eu-west-1.vpce-svc-0abc".to_owned());
    u.vpc_endpoint_service_owner = Some("999988887777".to_owned());
    u.access_key_id = "ZYXWVUTSRQPONMLKJIHG".to_owned();
    u.sealed_secret = vec![1, 2, 3];
    let mut attempted = u.clone();
    attempted.store_type = "AWS_CLOUDHSM".to_owned();
    attempted.creation_date_ms = 5;
    attempted.connection_error_code = Some("INTERNAL_ERROR".to_owned());
    s.update_custom_key_store(&attempted).unwrap();
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, &c.id).unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        s.get_custom_key_store_by_name(ACCT, REGION, "renamed")
            .unwrap(),
        Some(u)
    );
    assert_eq!(
        s.get_custom_key_store_by_name(ACCT, REGION, &c.name)
            .unwrap(),
        None
    );
    // And back to a public endpoint.
    s.update_custom_key_store(&c).unwrap();
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, &c.id).unwrap(),
        Some(c.clone())
    );

    s.delete_custom_key_store(ACCT, REGION, &c.id).unwrap();
    assert_eq!(s.get_custom_key_store(ACCT, REGION, &c.id).unwrap(), None);
    assert_eq!(
        s.delete_custom_key_store(ACCT, REGION, &c.id),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.update_custom_key_store(&c), Err(StorageError::NotFound));
}

fn update_custom_key_store_is_guarded_by_the_connection_state() {
    let (_dir, path) = db();
    let s = open(&path);
    let c = store(ACCT, REGION, "cks-1");
    s.create_custom_key_store(&c, 10).unwrap();
    // The caller read DISCONNECTED; a concurrent connect moved on.
    assert!(
        s.set_connection_state(
            ACCT,
            REGION,
            "cks-1",
            &[ConnectionState::Disconnected],
            ConnectionState::Connecting,
            None
        )
        .unwrap()
    );
    let stale = CustomKeyStoreRecord {
        uri_endpoint: "https://moved.example.com".to_owned(),
        ..c.clone()
    };
    assert_eq!(
        s.update_custom_key_store(&stale),
        Err(StorageError::Conflict(
            "connection state changed".to_owned()
        ))
    );
    let now = s
        .get_custom_key_store(ACCT, REGION, "cks-1")
        .unwrap()
        .unwrap();
    assert_eq!(now.uri_endpoint, c.uri_endpoint);
    assert_eq!(now.connection_state, ConnectionState::Connecting);
    // Based on the current state, the update applies and keeps the state.
    let fresh = CustomKeyStoreRecord {
        uri_endpoint: "https://moved.example.com".to_owned(),
        ..now
    };
    s.update_custom_key_store(&fresh).unwrap();
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-1").unwrap(),
        Some(fresh)
    );
}

fn custom_key_store_names_are_unique_per_account_and_region() {
    let (_dir, path) = db();
    let s = open(&path);
    s.create_custom_key_store(&store(ACCT, REGION, "cks-1"), 10)
        .unwrap();
    let same_name = CustomKeyStoreRecord {
        name: "name-cks-1".to_owned(),
        ..store(ACCT, REGION, "cks-2")
    };
    assert_eq!(s.create_custom_key_store(&same_name, 10), exists("name"));
    assert_eq!(s.get_custom_key_store(ACCT, REGION, "cks-2").unwrap(), None);
    // The same name in another region or account is fine.
    s.create_custom_key_store(
        &CustomKeyStoreRecord {
            region: "us-east-1".to_owned(),
            ..same_name.clone()
        },
        10,
    )
    .unwrap();
    s.create_custom_key_store(
        &CustomKeyStoreRecord {
            account_id: "444455556666".to_owned(),
            ..same_name.clone()
        },
        10,
    )
    .unwrap();
    // Renaming onto a taken name is refused and changes nothing; a rename frees the old name.
    let two = store(ACCT, REGION, "cks-2");
    s.create_custom_key_store(&two, 10).unwrap();
    assert_eq!(
        s.update_custom_key_store(&CustomKeyStoreRecord {
            uri_path: "/changed/kms/xks/v1".to_owned(),
            ..same_name.clone()
        }),
        exists("name")
    );
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-2").unwrap(),
        Some(two)
    );
    s.update_custom_key_store(&CustomKeyStoreRecord {
        name: "fresh".to_owned(),
        ..store(ACCT, REGION, "cks-1")
    })
    .unwrap();
    s.update_custom_key_store(&same_name).unwrap();
    // Names are case-sensitive.
    s.create_custom_key_store(
        &CustomKeyStoreRecord {
            name: "FRESH".to_owned(),
            ..store(ACCT, REGION, "cks-3")
        },
        10,
    )
    .unwrap();
}

fn custom_key_store_endpoint_and_path_are_unique() {
    let (_dir, path) = db();
    let s = open(&path);
    let a = store(ACCT, REGION, "cks-a");
    s.create_custom_key_store(&a, 10).unwrap();
    let clash = CustomKeyStoreRecord {
        uri_endpoint: a.uri_endpoint.clone(),
        ..store(ACCT, REGION, "cks-b")
    };
    assert_eq!(s.create_custom_key_store(&clash, 10), exists("endpoint"));
    // The same endpoint with another path, or the same path on another endpoint, is fine.
    let other_path = CustomKeyStoreRecord {
        uri_path: "/tenant-b/kms/xks/v1".to_owned(),
        ..clash.clone()
    };
    s.create_custom_key_store(&other_path, 10).unwrap();
    s.create_custom_key_store(&store(ACCT, REGION, "cks-c"), 10)
        .unwrap();
    // Per account and region.
    s.create_custom_key_store(
        &CustomKeyStoreRecord {
            region: "us-east-1".to_owned(),
            ..clash.clone()
        },
        10,
    )
    .unwrap();
    s.create_custom_key_store(
        &CustomKeyStoreRecord {
            account_id: "444455556666".to_owned(),
            ..clash
        },
        10,
    )
    .unwrap();
    // Moving onto a used endpoint + path is refused.
    let moved = CustomKeyStoreRecord {
        uri_path: a.uri_path,
        ..other_path.clone()
    };
    assert_eq!(s.update_custom_key_store(&moved), exists("endpoint"));
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-b").unwrap(),
        Some(other_path)
    );
}

fn vpc_endpoint_service_names_are_unique() {
    let svc = "com.amazonaws.vpce.eu-west-1.vpce-svc-0123abcd";
    let (_dir, path) = db();
    let s = open(&path);
    s.create_custom_key_store(&vpc_store(REGION, "cks-1", svc), 10)
        .unwrap();
    assert_eq!(
        s.create_custom_key_store(&vpc_store(REGION, "cks-2", svc), 10),
        exists("vpc endpoint service")
    );
    s.create_custom_key_store(&vpc_store(REGION, "cks-2", &format!("{svc}9")), 10)
        .unwrap();
    // Per account and region.
    s.create_custom_key_store(&vpc_store("us-east-1", "cks-3", svc), 10)
        .unwrap();
    // Public stores (no service) never collide with each other.
    s.create_custom_key_store(&store(ACCT, REGION, "cks-4"), 10)
        .unwrap();
    s.create_custom_key_store(&store(ACCT, REGION, "cks-5"), 10)
        .unwrap();
    // Switching a public store onto a used service is refused.
    let switched = CustomKeyStoreRecord {
        connectivity: "VPC_ENDPOINT_SERVICE".to_owned(),
        vpc_endpoint_service_name: Some(svc.to_owned()),
        ..store(ACCT, REGION, "cks-4")
    };
    assert_eq!(
        s.update_custom_key_store(&switched),
        exists("vpc endpoint service")
    );
    // Freed by a switch back to public.
    s.update_custom_key_store(&store(ACCT, REGION, "cks-1"))
        .unwrap();
    s.update_custom_key_store(&switched).unwrap();
}

fn custom_key_store_quota() {
    let (_dir, path) = db();
    let s = open(&path);
    for i in 0..3 {
        s.create_custom_key_store(&store(ACCT, REGION, &format!("cks-{i}")), 3)
            .unwrap();
    }
    assert!(matches!(
        s.create_custom_key_store(&store(ACCT, REGION, "cks-3"), 3),
        Err(StorageError::LimitExceeded(_))
    ));
    assert_eq!(s.get_custom_key_store(ACCT, REGION, "cks-3").unwrap(), None);
    // A clash is reported as such even at the quota.
    assert_eq!(
        s.create_custom_key_store(
            &CustomKeyStoreRecord {
                name: "name-cks-0".to_owned(),
                ..store(ACCT, REGION, "cks-3")
            },
            3
        ),
        exists("name")
    );
    // Stores in any state count.
    assert!(
        s.set_connection_state(
            ACCT,
            REGION,
            "cks-0",
            &[ConnectionState::Disconnected],
            ConnectionState::Failed,
            Some("INTERNAL_ERROR")
        )
        .unwrap()
    );
    assert!(matches!(
        s.create_custom_key_store(&store(ACCT, REGION, "cks-3"), 3),
        Err(StorageError::LimitExceeded(_))
    ));
    // Per account and region.
    s.create_custom_key_store(&store(ACCT, "us-east-1", "cks-3"), 3)
        .unwrap();
    s.create_custom_key_store(&store("444455556666", REGION, "cks-3"), 3)
        .unwrap();
    // Room again after a deletion; a larger quota admits more.
    s.delete_custom_key_store(ACCT, REGION, "cks-0").unwrap();
    s.create_custom_key_store(&store(ACCT, REGION, "cks-3"), 3)
        .unwrap();
    s.create_custom_key_store(&store(ACCT, REGION, "cks-4"), 10)
        .unwrap();
    assert!(matches!(
        s.create_custom_key_store(&store(ACCT, "ap-south-1", "cks-5"), 0),
        Err(StorageError::LimitExceeded(_))
    ));
}

fn set_connection_state_is_compare_and_set() {
    let (_dir, path) = db();
    let s = open(&path);
    let c = store(ACCT, REGION, "cks-1");
    s.create_custom_key_store(&c, 10).unwrap();
    let cas = |from: &[ConnectionState], to: ConnectionState, code: Option<&str>| {
        s.set_connection_state(ACCT, REGION, "cks-1", from, to, code)
    };
    let current = || {
        let got = s
            .get_custom_key_store(ACCT, REGION, "cks-1")
            .unwrap()
            .unwrap();
        (got.connection_state, got.connection_error_code)
    };

    assert_eq!(
        cas(
            &[ConnectionState::Disconnected],
            ConnectionState::Connecting,
            None
        ),
        Ok(true)
    );
    // A second connect finds CONNECTING: no change.
    assert_eq!(
        cas(
            &[ConnectionState::Disconnected],
            ConnectionState::Connecting,
            None
        ),
        Ok(false)
    );
    assert_eq!(
        cas(
            &[ConnectionState::Connected, ConnectionState::Disconnecting],
            ConnectionState::Disconnected,
            None
        ),
        Ok(false)
    );
    assert_eq!(cas(&[], ConnectionState::Connected, None), Ok(false));
    assert_eq!(current(), (ConnectionState::Connecting, None));

    // The connect fails, with an error code.
    assert_eq!(
        cas(
            &[ConnectionState::Connecting],
            ConnectionState::Failed,
            Some("XKS_PROXY_NOT_REACHABLE")
        ),
        Ok(true)
    );
    assert_eq!(
        current(),
        (
            ConnectionState::Failed,
            Some("XKS_PROXY_NOT_REACHABLE".to_owned())
        )
    );
    // Disconnecting clears the code; the other fields never change.
    assert_eq!(
        cas(
            &[
                ConnectionState::Connected,
                ConnectionState::Connecting,
                ConnectionState::Failed
            ],
            ConnectionState::Disconnected,
            None
        ),
        Ok(true)
    );
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-1").unwrap(),
        Some(c)
    );

    // A missing store (or one of another region) is NotFound, whatever `from` is.
    for (region, id) in [(REGION, "cks-missing"), ("us-east-1", "cks-1")] {
        for from in [&[][..], &[ConnectionState::Disconnected][..]] {
            assert_eq!(
                s.set_connection_state(ACCT, region, id, from, ConnectionState::Connecting, None),
                Err(StorageError::NotFound)
            );
        }
    }
}

fn keys_need_an_existing_custom_key_store() {
    let (_dir, path) = db();
    let s = open(&path);
    // No such store at all.
    assert_eq!(
        s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100),
        Err(StorageError::NotFound)
    );
    // A store of the same id in another region or account does not count.
    s.create_custom_key_store(&store(ACCT, "us-east-1", "cks-1"), 10)
        .unwrap();
    s.create_custom_key_store(&store("444455556666", REGION, "cks-1"), 10)
        .unwrap();
    assert_eq!(
        s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);
    add_stores(&*s, &["cks-1"]);
    s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100).unwrap();
}

fn delete_custom_key_store_refused_while_keys_exist() {
    let (_dir, path) = db();
    let s = open(&path);
    add_stores(&*s, &["cks-1", "cks-2"]);
    s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100).unwrap();
    s.create_key(&xks_key("k2", "cks-1", "ext-2"), 100).unwrap();
    s.create_key(&key(ACCT, REGION, "plain"), 100).unwrap();
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-1"),
        Ok(2)
    );
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-2"),
        Ok(0)
    );
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, "us-east-1", "cks-1"),
        Ok(0)
    );
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-missing"),
        Ok(0)
    );

    let has_keys = Err(StorageError::Conflict("has keys".to_owned()));
    assert_eq!(s.delete_custom_key_store(ACCT, REGION, "cks-1"), has_keys);
    // Keys pending deletion still hold the store.
    for id in ["k1", "k2"] {
        let k = s.get_key(ACCT, REGION, id).unwrap().unwrap();
        schedule_deletion(&*s, &k, 1, 7);
    }
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-1"),
        Ok(2)
    );
    assert_eq!(s.delete_custom_key_store(ACCT, REGION, "cks-1"), has_keys);
    delete_now(s.as_ref(), ACCT, REGION, "k1").unwrap();
    assert_eq!(s.delete_custom_key_store(ACCT, REGION, "cks-1"), has_keys);
    assert!(
        s.get_custom_key_store(ACCT, REGION, "cks-1")
            .unwrap()
            .is_some()
    );

    // The empty store, and then the other one once its last key is gone.
    s.delete_custom_key_store(ACCT, REGION, "cks-2").unwrap();
    delete_now(s.as_ref(), ACCT, REGION, "k2").unwrap();
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-1"),
        Ok(0)
    );
    s.delete_custom_key_store(ACCT, REGION, "cks-1").unwrap();
    // No key can join a deleted store; keys outside stores are untouched.
    assert_eq!(
        s.create_key(&xks_key("k3", "cks-1", "ext-3"), 100),
        Err(StorageError::NotFound)
    );
    assert!(s.get_key(ACCT, REGION, "plain").unwrap().is_some());
}

fn list_custom_key_stores_pages_by_creation_then_id() {
    let (_dir, path) = db();
    let s = open(&path);
    let mut expected: Vec<(i64, String)> = Vec::new();
    for i in 0..23 {
        let id = format!("cks-{:02}", (i * 7) % 23);
        // Many equal creation dates: the id breaks ties.
        let ms = 1_000 + (i * 3) % 5;
        let c = CustomKeyStoreRecord {
            creation_date_ms: ms,
            ..store(ACCT, REGION, &id)
        };
        s.create_custom_key_store(&c, 100).unwrap();
        expected.push((ms, id));
    }
    // Other accounts and regions are not listed.
    s.create_custom_key_store(&store(ACCT, "us-east-1", "cks-x"), 100)
        .unwrap();
    s.create_custom_key_store(&store("444455556666", REGION, "cks-y"), 100)
        .unwrap();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    for limit in [1, 2, 5, 22, 23, 24, 1000] {
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s
                .list_custom_key_stores(ACCT, REGION, marker.as_deref(), limit)
                .unwrap();
            pages += 1;
            assert!(page.items.len() <= limit);
            assert!(!page.items.is_empty());
            seen.extend(page.items.into_iter().map(|c| c.id));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
    }
    // A limit of 0 is 1.
    assert_eq!(
        s.list_custom_key_stores(ACCT, REGION, None, 0)
            .unwrap()
            .items
            .len(),
        1
    );

    // A marker stays valid when its store is deleted before the next page.
    let first = s.list_custom_key_stores(ACCT, REGION, None, 5).unwrap();
    s.delete_custom_key_store(ACCT, REGION, &first.items[4].id)
        .unwrap();
    let next = s
        .list_custom_key_stores(ACCT, REGION, first.next_marker.as_deref(), 5)
        .unwrap();
    let ids: Vec<&str> = next.items.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        expected[5..10]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    // Markers this listing never produces.
    for bad in ["garbage", "x:cks-01", "12:", ":cks-01", ""] {
        assert_eq!(
            s.list_custom_key_stores(ACCT, REGION, Some(bad), 5),
            Err(StorageError::NotFound),
            "{bad:?}"
        );
    }
    let empty = s
        .list_custom_key_stores(ACCT, "ap-south-1", None, 10)
        .unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_marker, None);
}

fn connected_custom_key_stores_across_accounts() {
    const OTHER: &str = "444455556666";
    let (_dir, path) = db();
    let s = open(&path);
    let stores = [
        (ACCT, REGION, "cks-b", 20),
        (ACCT, REGION, "cks-a", 20),
        (ACCT, REGION, "cks-early", 10),
        (ACCT, "us-east-1", "cks-c", 5),
        (OTHER, REGION, "cks-d", 1),
        (ACCT, REGION, "cks-off", 1),
        (OTHER, REGION, "cks-failed", 1),
    ];
    for (account, region, id, ms) in stores {
        let c = CustomKeyStoreRecord {
            creation_date_ms: ms,
            ..store(account, region, id)
        };
        s.create_custom_key_store(&c, 10).unwrap();
    }
    assert_eq!(s.connected_custom_key_stores().unwrap(), vec![]);
    for (account, region, id, _) in stores {
        let target = match id {
            "cks-off" => continue,
            "cks-failed" => ConnectionState::Failed,
            _ => ConnectionState::Connected,
        };
        assert!(
            s.set_connection_state(
                account,
                region,
                id,
                &[ConnectionState::Disconnected],
                target,
                None
            )
            .unwrap()
        );
    }
    let got: Vec<(String, String, String)> = s
        .connected_custom_key_stores()
        .unwrap()
        .into_iter()
        .map(|c| {
            assert_eq!(c.connection_state, ConnectionState::Connected);
            (c.account_id, c.region, c.id)
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        (ACCT, REGION, "cks-early"),
        (ACCT, REGION, "cks-a"),
        (ACCT, REGION, "cks-b"),
        (ACCT, "us-east-1", "cks-c"),
        (OTHER, REGION, "cks-d"),
    ]
    .iter()
    .map(|(a, r, i)| ((*a).to_owned(), (*r).to_owned(), (*i).to_owned()))
    .collect();
    assert_eq!(got, want);
}

fn custom_key_store_debug_hides_sealed_secret() {
    let mut c = store(ACCT, REGION, "cks-1");
    c.sealed_secret = vec![0xDE, 0xAD, 0xBE, 0xEF, 0x42];
    let shown = format!("{c:?}");
    assert!(shown.contains("sealed_secret: <5 bytes>"), "{shown}");
    assert!(!shown.contains("222, 173"), "{shown}");
    assert!(!shown.to_ascii_lowercase().contains("deadbeef"), "{shown}");
    assert!(shown.contains("cks-1"), "{shown}");
}

/// The tables, indexes and triggers of a database, as SQLite recorded their DDL.
fn schema_of(path: &Path) -> Vec<(String, String, Option<String>)> {
    let raw = rusqlite::Connection::open(path).unwrap();
    let mut stmt = raw
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
}

/// A version-1 database as the version-1 code created it (same pragmas, DDL and version
/// row), with a key (tagged), an alias, and a key naming a custom key store, which version 1
/// did not check.
fn create_v1_database(path: &Path) {
    let raw = rusqlite::Connection::open(path).unwrap();
    let mode: String = raw
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);",
    )
    .unwrap();
    raw.execute_batch(SCHEMA_V1).unwrap();
    raw.execute_batch(
        "INSERT INTO schema_version (version) VALUES (1);
         INSERT INTO keys VALUES ('111122223333', 'eu-west-1', 'k1', 'arn:k1', 7, 'old key',
             'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', 'Enabled', NULL, NULL, 0,
             NULL, NULL, '{}', x'A5A5', 'm-1');
         INSERT INTO key_tags VALUES ('111122223333', 'eu-west-1', 'k1', 0, 'team', 'blue');
         INSERT INTO aliases VALUES ('111122223333', 'eu-west-1', 'alias/old', 'k1', 8, 9);
         INSERT INTO keys VALUES ('111122223333', 'eu-west-1', 'k-legacy', 'arn:kl', 7, '',
             'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'EXTERNAL_KEY_STORE', 'Enabled', NULL,
             NULL, 0, 'cks-legacy', 'ext-legacy', '{}', NULL, NULL);
         COMMIT;",
    )
    .unwrap();
}

#[test]
fn migration_from_v1() {
    let (dir, path) = sqlite_db();
    create_v1_database(&path);
    let s = sqlite_open(&path);

    // Recorded as the current version, with the version history kept.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let versions: Vec<i64> = raw
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // The migrated schema is exactly a new database's.
    let fresh = dir.path().join("fresh.sqlite3");
    drop(sqlite_open(&fresh));
    assert_eq!(schema_of(&path), schema_of(&fresh));

    // Old data is intact.
    let k1 = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    assert_eq!(k1.description, "old key");
    assert_eq!(k1.sealed_material, Some(vec![0xA5, 0xA5]));
    assert_eq!(k1.tags, vec![("team".to_owned(), "blue".to_owned())]);
    assert_eq!(
        s.get_alias(ACCT, REGION, "alias/old")
            .unwrap()
            .unwrap()
            .target_key_id,
        "k1"
    );
    let legacy = s.get_key(ACCT, REGION, "k-legacy").unwrap().unwrap();
    assert_eq!(legacy.custom_key_store_id.as_deref(), Some("cks-legacy"));

    // The keys already there count toward the quota.
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k-over"), 2),
        Err(StorageError::LimitExceeded(_))
    ));
    s.create_key(&key(ACCT, REGION, "k-fits"), 3).unwrap();

    // The new rules apply.
    s.create_custom_key_store(&store(ACCT, REGION, "cks-1"), 10)
        .unwrap();
    assert_eq!(
        s.create_custom_key_store(
            &CustomKeyStoreRecord {
                name: "name-cks-1".to_owned(),
                ..store(ACCT, REGION, "cks-2")
            },
            10
        ),
        exists("name")
    );
    s.create_key(&xks_key("k2", "cks-1", "ext-1"), 100).unwrap();
    assert_eq!(
        s.create_key(&xks_key("k3", "cks-missing", "ext-1"), 100),
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.delete_custom_key_store(ACCT, REGION, "cks-1"),
        Err(StorageError::Conflict("has keys".to_owned()))
    );
    // The old unique index on external keys is still there.
    assert_eq!(
        s.create_key(&xks_key("k4", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );
    // A key of version 1 naming an unknown store stays readable and deletable.
    delete_now(&s, ACCT, REGION, "k-legacy").unwrap();
    drop(s);

    // Opening again migrates nothing more.
    let s = sqlite_open(&path);
    assert!(
        s.get_custom_key_store(ACCT, REGION, "cks-1")
            .unwrap()
            .is_some()
    );
    let count: i64 = raw
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, SCHEMA_VERSION);
}

/// 20 threads, each with its own `SqliteStorage` of the same file, create stores with the
/// same name (different ids and endpoints): exactly one wins, every other gets
/// `AlreadyExists("name")`, none sees a lock error.
fn concurrent_same_name_stores_from_separate_instances() {
    const THREADS: usize = 20;
    let (_dir, path) = db();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let s = path.open_storage()?;
                let c = CustomKeyStoreRecord {
                    name: "shared".to_owned(),
                    ..store(ACCT, REGION, &format!("cks-{i:02}"))
                };
                s.create_custom_key_store(&c, 100)
            })
        })
        .collect();
    let results: Vec<Result<(), StorageError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let taken = results.iter().filter(|r| **r == exists("name")).count();
    assert_eq!((ok, taken), (1, THREADS - 1), "{results:?}");
    let s = open(&path);
    let page = s.list_custom_key_stores(ACCT, REGION, None, 100).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name, "shared");
}

/// The quota holds under concurrent creators in separate instances.
fn concurrent_store_creates_respect_the_quota() {
    const THREADS: usize = 12;
    let (_dir, path) = db();
    drop(open(&path));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let s = path.open_storage()?;
                barrier.wait();
                s.create_custom_key_store(&store(ACCT, REGION, &format!("cks-{i:02}")), 10)
            })
        })
        .collect();
    let results: Vec<Result<(), StorageError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(StorageError::LimitExceeded(_))))
        .count();
    assert_eq!((ok, limited), (10, THREADS - 10), "{results:?}");
}

/// Concurrent connects (compare-and-set DISCONNECTED → CONNECTING) from separate instances:
/// exactly one changes the state.
fn concurrent_connection_state_changes_from_separate_instances() {
    const THREADS: usize = 20;
    let (_dir, path) = db();
    add_stores(&*open(&path), &["cks-1"]);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let s = path.open_storage()?;
                barrier.wait();
                s.set_connection_state(
                    ACCT,
                    REGION,
                    "cks-1",
                    &[ConnectionState::Disconnected],
                    ConnectionState::Connecting,
                    None,
                )
            })
        })
        .collect();
    let results: Vec<Result<bool, StorageError>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let changed = results.iter().filter(|r| **r == Ok(true)).count();
    let unchanged = results.iter().filter(|r| **r == Ok(false)).count();
    assert_eq!((changed, unchanged), (1, THREADS - 1), "{results:?}");
}

/// A key created into a store while another instance deletes that store: one of the two
/// wins, and no key is ever left pointing at a deleted store.
#[test]
fn concurrent_key_creation_and_store_deletion() {
    const ROUNDS: usize = 25;
    let (_dir, path) = sqlite_db();
    let setup = sqlite_open(&path);
    let creator = Arc::new(sqlite_open(&path));
    let deleter = Arc::new(SqliteStorage::open(&path).unwrap());
    let (mut created, mut deleted) = (0, 0);
    for round in 0..ROUNDS {
        let cks = format!("cks-{round:02}");
        add_stores(&setup, &[&cks]);
        let barrier = Arc::new(Barrier::new(2));
        let create = {
            let (s, b, cks) = (Arc::clone(&creator), Arc::clone(&barrier), cks.clone());
            thread::spawn(move || {
                b.wait();
                s.create_key(&xks_key(&format!("key-{cks}"), &cks, "ext"), 10_000)
            })
        };
        let delete = {
            let (s, b, cks) = (Arc::clone(&deleter), Arc::clone(&barrier), cks.clone());
            thread::spawn(move || {
                b.wait();
                s.delete_custom_key_store(ACCT, REGION, &cks)
            })
        };
        let (c, d) = (create.join().unwrap(), delete.join().unwrap());
        match (&c, &d) {
            (Ok(()), Err(StorageError::Conflict(what))) if what == "has keys" => created += 1,
            (Err(StorageError::NotFound), Ok(())) => deleted += 1,
            other => panic!("round {round}: {other:?}"),
        }
        let store_exists = setup
            .get_custom_key_store(ACCT, REGION, &cks)
            .unwrap()
            .is_some();
        let keys = setup
            .count_keys_in_custom_key_store(ACCT, REGION, &cks)
            .unwrap();
        assert_eq!(
            (store_exists, keys),
            if c.is_ok() { (true, 1) } else { (false, 0) }
        );
    }
    assert_eq!(created + deleted, ROUNDS);
    // No orphan anywhere.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let orphans: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM keys k WHERE k.custom_key_store_id IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM custom_key_stores s WHERE s.account_id = k.account_id \
              AND s.region = k.region AND s.id = k.custom_key_store_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn the_store_id_of_a_store_cannot_change_under_its_keys() {
    // Defence in depth below the trait: raw SQL cannot orphan keys either.
    let (_dir, path) = sqlite_db();
    let s = sqlite_open(&path);
    add_stores(&s, &["cks-1"]);
    s.create_key(&xks_key("k1", "cks-1", "ext-1"), 100).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    for sql in [
        "UPDATE custom_key_stores SET id = 'cks-2' WHERE id = 'cks-1'",
        "UPDATE keys SET custom_key_store_id = 'cks-none' WHERE key_id = 'k1'",
        "DELETE FROM custom_key_stores WHERE id = 'cks-1'",
    ] {
        assert!(raw.execute(sql, []).is_err(), "{sql}");
    }
    assert_eq!(
        s.count_keys_in_custom_key_store(ACCT, REGION, "cks-1"),
        Ok(1)
    );
    // Unrelated columns of a store still change.
    raw.execute(
        "UPDATE custom_key_stores SET name = 'n2' WHERE id = 'cks-1'",
        [],
    )
    .unwrap();
}

/// When several unique rules clash at once, the answer is id, then name, then endpoint, then
/// VPC endpoint service (not whichever index SQLite happened to check first).
fn clash_precedence_is_id_name_endpoint_vpc_service() {
    let svc = "com.amazonaws.vpce.eu-west-1.vpce-svc-0123abcd";
    let (_dir, path) = db();
    let s = open(&path);
    let a = vpc_store(REGION, "cks-a", svc);
    s.create_custom_key_store(&a, 10).unwrap();
    assert_eq!(s.create_custom_key_store(&a, 10), exists("id"));
    let mut b = CustomKeyStoreRecord {
        id: "cks-b".to_owned(),
        ..a.clone()
    };
    assert_eq!(s.create_custom_key_store(&b, 10), exists("name"));
    b.name = "b".to_owned();
    assert_eq!(s.create_custom_key_store(&b, 10), exists("endpoint"));
    b.uri_path = "/b/kms/xks/v1".to_owned();
    assert_eq!(
        s.create_custom_key_store(&b, 10),
        exists("vpc endpoint service")
    );
    b.vpc_endpoint_service_name = None;
    s.create_custom_key_store(&b, 10).unwrap();
    // The same order for updates; the store's own values are never a clash.
    let onto_a = CustomKeyStoreRecord {
        id: "cks-b".to_owned(),
        ..a.clone()
    };
    assert_eq!(s.update_custom_key_store(&onto_a), exists("name"));
    s.update_custom_key_store(&a).unwrap();
}

fn key_writes_apply_only_from_the_states_they_were_decided_from() {
    let (_dir, path) = db();
    let s = open(&path);
    let k = key(ACCT, REGION, "k1");
    s.create_key(&k, 100).unwrap();
    let at = k.address();
    // Decided from Disabled, but the key is Enabled: every write is refused, nothing changes.
    let stale = &[KeyState::Disabled][..];
    let changed = Err(StorageError::StateChanged);
    assert_eq!(
        s.transition_key_state(at, stale, KeyState::Enabled, None),
        changed
    );
    assert_eq!(s.set_key_description(at, stale, "x"), changed);
    assert_eq!(s.set_key_policy(at, stale, "x"), changed);
    assert_eq!(
        s.tag_key(at, stale, &[("n".to_owned(), "v".to_owned())], 50),
        changed
    );
    assert_eq!(s.untag_key(at, stale, &["zeta".to_owned()]), changed);
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(k.clone()));
    // Any of several states will do.
    s.transition_key_state(
        at,
        &[KeyState::Disabled, KeyState::Enabled],
        KeyState::Disabled,
        None,
    )
    .unwrap();
    assert_eq!(
        s.get_key(ACCT, REGION, "k1").unwrap().unwrap().key_state,
        KeyState::Disabled
    );
}

fn concurrent_state_transitions_from_one_state_have_one_winner() {
    let (_dir, path) = db();
    let s = open(&path);
    let k = key(ACCT, REGION, "k1");
    s.create_key(&k, 100).unwrap();
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [KeyState::Disabled, KeyState::PendingDeletion]
            .into_iter()
            .map(|to| {
                let (s, barrier, k) = (s.clone(), barrier.clone(), k.clone());
                thread::spawn(move || {
                    barrier.wait();
                    s.transition_key_state(k.address(), &[KeyState::Enabled], to, None)
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.contains(&Err(StorageError::StateChanged)),
            "round {round}: {outcomes:?}"
        );
        s.transition_key_state(k.address(), KeyState::ALL, KeyState::Enabled, None)
            .unwrap();
    }
}

fn the_tag_quota_counts_only_new_tag_keys() {
    let (_dir, path) = db();
    let s = open(&path);
    let k = key(ACCT, REGION, "k1");
    s.create_key(&k, 100).unwrap();
    let enabled = &[KeyState::Enabled][..];
    // 3 tags exist; overwriting one and adding one makes 4.
    let four = [
        ("zeta".to_owned(), "9".to_owned()),
        ("new".to_owned(), "1".to_owned()),
    ];
    assert!(matches!(
        s.tag_key(k.address(), enabled, &four, 3),
        Err(StorageError::LimitExceeded(_))
    ));
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(k.clone()));
    s.tag_key(k.address(), enabled, &four, 4).unwrap();
    assert_eq!(
        s.get_key(ACCT, REGION, "k1").unwrap().unwrap().tags.len(),
        4
    );
}

#[test]
fn an_unknown_state_in_the_database_is_a_typed_error() {
    let (_dir, path) = sqlite_db();
    let s = sqlite_open(&path);
    s.create_key(&key(ACCT, REGION, "k1"), 100).unwrap();
    s.create_custom_key_store(&store(ACCT, REGION, "cks-1"), 10)
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE keys SET key_state = 'Hibernating'", [])
        .unwrap();
    raw.execute(
        "UPDATE custom_key_stores SET connection_state = 'PAUSED'",
        [],
    )
    .unwrap();
    assert_eq!(
        s.get_key(ACCT, REGION, "k1"),
        Err(StorageError::UnknownValue {
            column: "key_state",
            value: "Hibernating".to_owned()
        })
    );
    assert_eq!(
        s.get_custom_key_store(ACCT, REGION, "cks-1"),
        Err(StorageError::UnknownValue {
            column: "connection_state",
            value: "PAUSED".to_owned()
        })
    );
}

backends::conformance!(
    key_crud_round_trip,
    duplicate_key_id_is_already_exists,
    duplicate_tag_keys_are_refused_atomically,
    debug_hides_sealed_material,
    list_keys_pages_with_markers,
    aliases_crud_uniqueness_and_listing,
    delete_key_frees_xks_id_and_removes_aliases_and_tags,
    create_key_limit_exceeded,
    xks_key_in_use,
    keys_due_for_deletion_across_accounts_and_regions,
    delete_key_if_due_only_deletes_what_is_still_due,
    data_persists_across_reopen,
    concurrent_xks_binding_from_separate_instances,
    concurrent_creates_respect_the_limit,
    shared_instance_across_threads,
    grouped_creates_settle_each_write_on_its_own,
    custom_key_store_crud_round_trip,
    update_custom_key_store_is_guarded_by_the_connection_state,
    custom_key_store_names_are_unique_per_account_and_region,
    custom_key_store_endpoint_and_path_are_unique,
    vpc_endpoint_service_names_are_unique,
    custom_key_store_quota,
    set_connection_state_is_compare_and_set,
    keys_need_an_existing_custom_key_store,
    delete_custom_key_store_refused_while_keys_exist,
    list_custom_key_stores_pages_by_creation_then_id,
    connected_custom_key_stores_across_accounts,
    custom_key_store_debug_hides_sealed_secret,
    concurrent_same_name_stores_from_separate_instances,
    concurrent_store_creates_respect_the_quota,
    concurrent_connection_state_changes_from_separate_instances,
    clash_precedence_is_id_name_endpoint_vpc_service,
    key_writes_apply_only_from_the_states_they_were_decided_from,
    concurrent_state_transitions_from_one_state_have_one_winner,
    the_tag_quota_counts_only_new_tag_keys,
);

/// PostgreSQL's own schema tests: migrations from an empty database and from the previous
/// version, and the refusal of a newer schema.
#[cfg(feature = "postgres")]
mod postgres_schema {
    use super::super::postgres::SCHEMA_VERSION;
    use super::backends::pg::{Schema, admin};
    use super::{ACCT, KeyState, REGION, Storage, StorageError, key};

    /// The tables and columns of a schema, with their types, for comparing two schemas.
    fn columns_of(schema: &str) -> String {
        // The admin helper has no result rows; copy the catalogue into a table instead.
        let table = format!("cols_{}", uuid::Uuid::new_v4().simple());
        admin(&format!(
            "CREATE TABLE public.{table} AS SELECT string_agg(table_name || '.' || column_name \
             || ':' || data_type || ':' || is_nullable, ',' ORDER BY table_name, column_name) \
             AS cols FROM information_schema.columns WHERE table_schema = '{schema}'"
        ));
        let out = super::super::postgres::query_text_for_tests(&format!(
            "SELECT cols FROM public.{table}"
        ));
        admin(&format!("DROP TABLE public.{table}"));
        out
    }

    #[test]
    fn migrations_from_empty_and_from_the_previous_version_agree() {
        // From empty.
        let fresh = Schema::create();
        let s = super::super::PgStorage::open(&fresh.settings()).unwrap();
        s.create_key(&key(ACCT, REGION, "k1"), 10).unwrap();
        drop(s);
        // From the previous version, with data in it.
        let old = Schema::create();
        let settings = old.settings();
        super::super::postgres::migrate_for_tests(&settings, SCHEMA_VERSION - 1);
        admin(&format!(
            "INSERT INTO {}.keys (account_id, region, key_id, arn, creation_date_ms, \
             description, key_spec, key_usage, origin, key_state, multi_region, policy) \
             VALUES ('{ACCT}', '{REGION}', 'old', 'arn', 1, '', 'SYMMETRIC_DEFAULT', \
             'ENCRYPT_DECRYPT', 'AWS_KMS', 'Enabled', false, '{{}}')",
            old.name
        ));
        let s = super::super::PgStorage::open(&settings).unwrap();
        assert_eq!(
            s.get_key(ACCT, REGION, "old").unwrap().unwrap().key_state,
            KeyState::Enabled
        );
        // The migrated data keeps the invariants the new version adds (the key count).
        assert!(matches!(
            s.create_key(&key(ACCT, REGION, "k2"), 1),
            Err(StorageError::LimitExceeded(_))
        ));
        s.create_key(&key(ACCT, REGION, "k2"), 2).unwrap();
        assert_eq!(columns_of(&fresh.name), columns_of(&old.name));
        assert_eq!(
            super::super::postgres::query_text_for_tests(&format!(
                "SELECT string_agg(version::TEXT, ',' ORDER BY version) \
                 FROM {}.schema_version",
                old.name
            )),
            (1..=SCHEMA_VERSION)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let schema = Schema::create();
        drop(super::super::PgStorage::open(&schema.settings()).unwrap());
        admin(&format!(
            "INSERT INTO {}.schema_version (version) VALUES ({})",
            schema.name,
            SCHEMA_VERSION + 1
        ));
        match super::super::PgStorage::open(&schema.settings()) {
            Err(StorageError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_unreachable_database_fails_within_the_connect_timeout() {
        let mut settings = Schema::create().settings();
        // A port nothing listens on (a closed port refuses at once; the bound is the point).
        settings.url = "postgres://kms@127.0.0.1:9/kms".to_owned();
        settings.connect_timeout = std::time::Duration::from_millis(500);
        let start = std::time::Instant::now();
        assert!(matches!(
            super::super::PgStorage::open(&settings),
            Err(StorageError::Backend(_))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(3));
    }
}
