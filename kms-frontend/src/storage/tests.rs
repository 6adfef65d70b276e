#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use super::{AliasRecord, KEY_STATE_PENDING_DELETION, KeyRecord, SqliteStorage, Storage};
use super::{StorageError, sqlite::SCHEMA_VERSION};

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sqlite3");
    (dir, path)
}

fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path).unwrap()
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
        key_state: "Enabled".to_owned(),
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

#[test]
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

    // Every mutable field changes; immutable ones are ignored.
    let mut u = k;
    u.description = "changed".to_owned();
    u.key_state = KEY_STATE_PENDING_DELETION.to_owned();
    u.deletion_date_ms = Some(1_700_100_000_000);
    u.pending_window_days = Some(7);
    u.policy = "{}".to_owned();
    u.sealed_material = Some(vec![1, 2, 3]);
    u.material_id = Some("m-2".to_owned());
    u.tags = vec![
        ("b".to_owned(), "x".to_owned()),
        ("a".to_owned(), "y".to_owned()),
    ];
    let mut attempted = u.clone();
    attempted.key_spec = "RSA_2048".to_owned();
    attempted.arn = "arn:other".to_owned();
    attempted.multi_region = true;
    attempted.creation_date_ms = 5;
    s.update_key(&attempted).unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(u.clone()));

    // Back to no material and no tags.
    u.sealed_material = None;
    u.material_id = None;
    u.deletion_date_ms = None;
    u.pending_window_days = None;
    u.tags.clear();
    s.update_key(&u).unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(u.clone()));

    s.delete_key(ACCT, REGION, "k1").unwrap();
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), None);
    assert_eq!(
        s.delete_key(ACCT, REGION, "k1"),
        Err(StorageError::NotFound)
    );
    assert_eq!(s.update_key(&u), Err(StorageError::NotFound));
}

#[test]
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

#[test]
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
    let mut bad = good.clone();
    bad.description = "changed".to_owned();
    bad.tags = vec![
        ("t".to_owned(), "1".to_owned()),
        ("t".to_owned(), "2".to_owned()),
    ];
    assert!(matches!(s.update_key(&bad), Err(StorageError::Conflict(_))));
    assert_eq!(s.get_key(ACCT, REGION, "k1").unwrap(), Some(good));
}

#[test]
fn debug_hides_sealed_material() {
    let mut k = key(ACCT, REGION, "k1");
    k.sealed_material = Some(vec![0xDE, 0xAD, 0xBE, 0xEF, 0x42]);
    let shown = format!("{k:?}");
    assert!(shown.contains("<5 bytes>"), "{shown}");
    // The bytes, in decimal (Vec's Debug) or hex, are nowhere.
    assert!(!shown.contains("222, 173"), "{shown}");
    assert!(!shown.to_ascii_lowercase().contains("deadbeef"), "{shown}");
}

#[test]
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

#[test]
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

#[test]
fn delete_key_frees_xks_id_and_removes_aliases_and_tags() {
    let (_dir, path) = db();
    let s = open(&path);
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

    s.delete_key(ACCT, REGION, "k1").unwrap();
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

#[test]
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
    let mut pending = s.get_key(ACCT, REGION, "k0").unwrap().unwrap();
    pending.key_state = KEY_STATE_PENDING_DELETION.to_owned();
    pending.deletion_date_ms = Some(5);
    s.update_key(&pending).unwrap();
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k3"), 3),
        Err(StorageError::LimitExceeded(_))
    ));
    // Per account and region.
    s.create_key(&key(ACCT, "us-east-1", "k3"), 3).unwrap();
    s.create_key(&key("444455556666", REGION, "k3"), 3).unwrap();
    // Room again after a deletion.
    s.delete_key(ACCT, REGION, "k0").unwrap();
    s.create_key(&key(ACCT, REGION, "k3"), 3).unwrap();
    assert!(matches!(
        s.create_key(&key(ACCT, REGION, "k4"), 0),
        Err(StorageError::LimitExceeded(_))
    ));
}

#[test]
fn xks_key_in_use() {
    let (_dir, path) = db();
    let s = open(&path);
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
    let mut k1 = s.get_key(ACCT, REGION, "k1").unwrap().unwrap();
    k1.key_state = KEY_STATE_PENDING_DELETION.to_owned();
    k1.deletion_date_ms = Some(1);
    k1.pending_window_days = Some(7);
    s.update_key(&k1).unwrap();
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

#[test]
fn keys_due_for_deletion_across_accounts_and_regions() {
    let (_dir, path) = db();
    let s = open(&path);
    let pending = |account: &str, region: &str, id: &str, at: i64| KeyRecord {
        key_state: KEY_STATE_PENDING_DELETION.to_owned(),
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

#[test]
fn data_persists_across_reopen() {
    let (_dir, path) = db();
    let k = key(ACCT, REGION, "k1");
    let x = xks_key("k2", "cks-1", "ext-1");
    {
        let s = open(&path);
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
    // Constraints survive too.
    assert_eq!(
        s.create_key(&xks_key("k3", "cks-1", "ext-1"), 100),
        Err(StorageError::XksKeyInUse)
    );
}

#[test]
fn wal_and_full_sync_are_set() {
    let (_dir, path) = db();
    let s = open(&path);
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
    let (_dir, path) = db();
    drop(open(&path));
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
    let (dir, _path) = db();
    let bad = dir.path().join("missing-dir").join("kms.sqlite3");
    assert!(matches!(
        SqliteStorage::open(&bad),
        Err(StorageError::Backend(_))
    ));
}

/// 50 threads, each with its own `SqliteStorage` of the same file, race to bind the same
/// external key: exactly one wins, every other gets `XksKeyInUse`, none sees a lock error.
#[test]
fn concurrent_xks_binding_from_separate_instances() {
    const THREADS: usize = 50;
    let (_dir, path) = db();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let s = SqliteStorage::open(&path)?;
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
#[test]
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
                let s = SqliteStorage::open(&path)?;
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
#[test]
fn shared_instance_across_threads() {
    let (_dir, path) = db();
    let s = Arc::new(open(&path));
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
