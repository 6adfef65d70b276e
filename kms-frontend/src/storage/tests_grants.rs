//! Conformance tests of the grant methods of [`Storage`], on every backend
//! (`backends::conformance!` at the end).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::tests::backends;
use super::tests::fixtures::{delete_now, plain_key};
use super::{GrantConstraints, GrantRecord, KeyRecord, Storage};
use super::{KeyAddress, StorageError};

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const CAROL: &str = "arn:aws:iam::444455556666:user/carol";

fn key(key_id: &str) -> KeyRecord {
    KeyRecord {
        material_id: Some("m-1".to_owned()),
        ..plain_key(ACCT, REGION, key_id)
    }
}

fn addr(key_id: &str) -> KeyAddress<'_> {
    KeyAddress {
        account_id: ACCT,
        region: REGION,
        key_id,
    }
}

fn grant(key_id: &str, n: u8, grantee: &str) -> GrantRecord {
    GrantRecord {
        account_id: ACCT.to_owned(),
        region: REGION.to_owned(),
        key_id: key_id.to_owned(),
        grant_id: format!("{n:02x}").repeat(32),
        name: None,
        grantee_principal: grantee.to_owned(),
        retiring_principal: Some(CAROL.to_owned()),
        issuing_account: format!("arn:aws:iam::{ACCT}:root"),
        operations: vec!["Decrypt".to_owned(), "Encrypt".to_owned()],
        constraints: Some(GrantConstraints {
            encryption_context_equals: None,
            encryption_context_subset: Some(BTreeMap::from([("Dept".to_owned(), "IT".to_owned())])),
        }),
        creation_date_ms: 1_700_000_000_000 + i64::from(n),
    }
}

/// A grant round-trips whole; lookups by key, id and grantee find exactly it; deleting it
/// (once) removes it.
fn check_create_get_delete(s: &dyn Storage) {
    s.create_key(&key("k1"), 100).unwrap();
    let g = grant("k1", 1, BOB);
    assert_eq!(s.create_grant(&g, 10, 10).unwrap(), g);
    assert_eq!(
        s.get_grant(addr("k1"), &g.grant_id).unwrap(),
        Some(g.clone())
    );
    assert_eq!(s.get_grant(addr("k2"), &g.grant_id).unwrap(), None);
    assert_eq!(
        s.grants_for_grantees(addr("k1"), &["x", BOB]).unwrap(),
        vec![g.clone()]
    );
    assert!(
        s.grants_for_grantees(addr("k1"), &[CAROL])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.create_grant(&grant("missing", 2, BOB), 10, 10),
        Err(StorageError::NotFound)
    );
    s.delete_grant(addr("k1"), &g.grant_id).unwrap();
    assert_eq!(s.get_grant(addr("k1"), &g.grant_id).unwrap(), None);
    assert_eq!(
        s.delete_grant(addr("k1"), &g.grant_id),
        Err(StorageError::NotFound)
    );
}

/// A name with the same parameters returns the existing grant; with other parameters it
/// is a new grant.
fn check_idempotent_names(s: &dyn Storage) {
    s.create_key(&key("k1"), 100).unwrap();
    let mut first = grant("k1", 1, BOB);
    first.name = Some("backup".into());
    assert_eq!(s.create_grant(&first, 10, 10).unwrap(), first);
    let mut again = grant("k1", 2, BOB);
    again.name = Some("backup".into());
    again.operations.reverse();
    assert_eq!(
        s.create_grant(&again, 10, 10).unwrap().grant_id,
        first.grant_id
    );
    let mut other = again.clone();
    other.operations = vec!["Encrypt".into()];
    assert_eq!(
        s.create_grant(&other, 10, 10).unwrap().grant_id,
        other.grant_id
    );
    assert_eq!(
        s.list_grants(addr("k1"), None, None, None, 100)
            .unwrap()
            .items
            .len(),
        2
    );
}

/// The per-key and per-grantee quotas; an idempotent repeat is answered even at the quota.
fn check_limits(s: &dyn Storage) {
    s.create_key(&key("k1"), 100).unwrap();
    let mut named = grant("k1", 1, BOB);
    named.name = Some("n".into());
    s.create_grant(&named, 3, 2).unwrap();
    s.create_grant(&grant("k1", 2, BOB), 3, 2).unwrap();
    assert!(matches!(
        s.create_grant(&grant("k1", 3, BOB), 3, 2),
        Err(StorageError::LimitExceeded(_))
    ));
    s.create_grant(&grant("k1", 4, CAROL), 3, 2).unwrap();
    assert!(matches!(
        s.create_grant(&grant("k1", 5, CAROL), 3, 2),
        Err(StorageError::LimitExceeded(_))
    ));
    let mut repeat = named.clone();
    repeat.grant_id = "ff".repeat(32);
    assert_eq!(
        s.create_grant(&repeat, 3, 2).unwrap().grant_id,
        named.grant_id
    );
    s.delete_grant(addr("k1"), &named.grant_id).unwrap();
    s.create_grant(&grant("k1", 6, BOB), 3, 2).unwrap();
}

/// Listings page in creation order with opaque markers, filter by id and grantee, and
/// refuse foreign markers; retirable grants are found across keys.
fn check_listings(s: &dyn Storage) {
    s.create_key(&key("k1"), 100).unwrap();
    s.create_key(&key("k2"), 100).unwrap();
    let ids: Vec<String> = (1..=5)
        .map(|n| {
            let who = if n % 2 == 0 { CAROL } else { BOB };
            s.create_grant(&grant("k1", n, who), 100, 100)
                .unwrap()
                .grant_id
        })
        .collect();
    s.create_grant(&grant("k2", 9, BOB), 100, 100).unwrap();
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page = s
            .list_grants(addr("k1"), None, None, marker.as_deref(), 2)
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|g| g.grant_id));
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bobs = s
        .list_grants(addr("k1"), None, Some(BOB), None, 100)
        .unwrap();
    assert_eq!(bobs.items.len(), 3);
    let one = s
        .list_grants(addr("k1"), Some(&ids[1]), None, None, 100)
        .unwrap();
    assert_eq!(one.items.len(), 1);
    assert_eq!(one.items[0].grant_id, ids[1]);
    assert_eq!(
        s.list_grants(addr("k1"), None, None, Some("not a marker"), 10),
        Err(StorageError::NotFound)
    );
    let retirable = s.list_retirable_grants(CAROL, None, 100).unwrap();
    assert_eq!(retirable.items.len(), 6);
    let page = s.list_retirable_grants(CAROL, None, 4).unwrap();
    let rest = s
        .list_retirable_grants(CAROL, page.next_marker.as_deref(), 4)
        .unwrap();
    assert_eq!(page.items.len() + rest.items.len(), 6);
    assert!(rest.next_marker.is_none());
    assert!(
        s.list_retirable_grants(BOB, None, 100)
            .unwrap()
            .items
            .is_empty()
    );
}

/// A key's grants are deleted with it.
fn check_deleted_with_key(s: &dyn Storage) {
    s.create_key(&key("k1"), 100).unwrap();
    let g = s.create_grant(&grant("k1", 1, BOB), 10, 10).unwrap();
    delete_now(s, ACCT, REGION, "k1").unwrap();
    assert_eq!(s.get_grant(addr("k1"), &g.grant_id).unwrap(), None);
    assert!(
        s.list_retirable_grants(CAROL, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    // The same key id created again starts without grants.
    s.create_key(&key("k1"), 100).unwrap();
    assert!(
        s.grants_for_grantees(addr("k1"), &[BOB])
            .unwrap()
            .is_empty()
    );
}

/// A storage on a fresh database of the test's backend; the first value keeps it alive.
fn open() -> (backends::Guard, backends::TestDb, Box<dyn Storage>) {
    let (guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    (guard, db, s)
}

fn grants_create_get_delete() {
    let (_g, _db, s) = open();
    check_create_get_delete(s.as_ref());
}

fn grants_idempotent_names() {
    let (_g, _db, s) = open();
    check_idempotent_names(s.as_ref());
}

fn grants_limits() {
    let (_g, _db, s) = open();
    check_limits(s.as_ref());
}

fn grants_listings() {
    let (_g, _db, s) = open();
    check_listings(s.as_ref());
}

fn grants_deleted_with_key() {
    let (_g, _db, s) = open();
    check_deleted_with_key(s.as_ref());
}

fn grants_survive_reopen() {
    let (_g, db, s) = open();
    s.create_key(&key("k1"), 100).unwrap();
    let g = s.create_grant(&grant("k1", 1, BOB), 10, 10).unwrap();
    drop(s);
    let s = db.open_storage().unwrap();
    assert_eq!(s.get_grant(addr("k1"), &g.grant_id).unwrap(), Some(g));
}

backends::conformance!(
    grants_create_get_delete,
    grants_idempotent_names,
    grants_limits,
    grants_listings,
    grants_deleted_with_key,
    grants_survive_reopen,
);
