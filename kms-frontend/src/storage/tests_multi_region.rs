//! Conformance tests of multi-Region key sets (issue 19): what every `Storage` backend must
//! do for `multi_region_set`, `create_replica_key`, `update_primary_region` and
//! `multi_region_transitions_due`, run on every backend (`backends::conformance!`).

#![allow(clippy::unwrap_used)]

use super::tests::backends;
use super::tests::fixtures::{delete_now, plain_key};
use super::{
    KeyMaterialRecord, KeyRecord, KeyState, MaterialChange, ScheduledDeletion, Storage,
    StorageError,
};

const ACCT: &str = "111122223333";
const MRK: &str = "mrk-0123456789abcdef0123456789abcdef";

/// A storage on a fresh database of the test's backend; the first value keeps it alive.
fn open() -> (backends::Guard, Box<dyn Storage>) {
    let (guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    (guard, s)
}

fn key(region: &str, key_id: &str, state: KeyState, created_ms: i64) -> KeyRecord {
    KeyRecord {
        creation_date_ms: created_ms,
        key_state: state,
        multi_region: key_id.starts_with("mrk-"),
        sealed_material: Some(vec![1; 60]),
        material_id: Some("m1".to_owned()),
        tags: vec![("team".to_owned(), region.to_owned())],
        ..plain_key(ACCT, region, key_id)
    }
}

/// A primary in us-east-1 rotated once: versions m1 (first) and m2 (current).
fn primary(s: &dyn Storage) -> KeyRecord {
    let k = key("us-east-1", MRK, KeyState::Enabled, 1_000);
    s.create_key(&k, 10).unwrap();
    let m2 = KeyMaterialRecord {
        material_id: "m2".to_owned(),
        seq: 0,
        sealed_material: Some(vec![2; 60]),
        created_ms: 2_000,
        rotation_type: Some("ON_DEMAND".to_owned()),
        expiration_model: None,
        valid_to_ms: None,
        description: None,
    };
    s.change_key_material(
        k.address(),
        &[KeyState::Enabled],
        Some("m1"),
        &MaterialChange {
            put: Some(&m2),
            make_current: Some("m2"),
            ..MaterialChange::default()
        },
    )
    .unwrap();
    s.get_key(ACCT, "us-east-1", MRK).unwrap().unwrap()
}

/// The primary's versions as a replica in `region` gets them (re-sealed: here, new bytes).
fn replica_of(s: &dyn Storage, p: &KeyRecord, region: &str) -> (KeyRecord, Vec<KeyMaterialRecord>) {
    let versions: Vec<KeyMaterialRecord> = s
        .key_materials(p.address())
        .unwrap()
        .into_iter()
        .map(|m| KeyMaterialRecord {
            sealed_material: m
                .sealed_material
                .map(|b| b.iter().map(|x| x + 100).collect()),
            ..m
        })
        .collect();
    let mut r = key(region, MRK, KeyState::Creating, 3_000);
    r.sealed_material = Some(vec![102; 60]);
    r.material_id = Some("m2".to_owned());
    (r, versions)
}

fn a_set_has_its_primary_and_members() {
    let (_dir, s) = open();
    assert_eq!(s.multi_region_set(ACCT, MRK).unwrap(), None);
    let single = key(
        "us-east-1",
        "1234abcd-0000-4000-8000-000000000000",
        KeyState::Enabled,
        1,
    );
    s.create_key(&single, 10).unwrap();
    assert_eq!(s.multi_region_set(ACCT, &single.key_id).unwrap(), None);
    let p = primary(s.as_ref());
    let set = s.multi_region_set(ACCT, MRK).unwrap().unwrap();
    assert_eq!(set.primary_region, "us-east-1");
    assert_eq!(set.members.len(), 1);
    assert_eq!(set.members[0].arn, p.arn);
    assert_eq!(set.replicas().count(), 0);
}

fn a_replica_gets_every_version_in_one_write() {
    let (_dir, s) = open();
    let p = primary(s.as_ref());
    let (r, versions) = replica_of(s.as_ref(), &p, "eu-west-1");
    s.create_replica_key(&r, &versions, "us-east-1", &[KeyState::Enabled], 10)
        .unwrap();
    let stored = s.get_key(ACCT, "eu-west-1", MRK).unwrap().unwrap();
    assert_eq!(stored.key_state, KeyState::Creating);
    assert_eq!(stored.material_id.as_deref(), Some("m2"));
    assert_eq!(stored.sealed_material, Some(vec![102; 60]));
    assert_eq!(stored.tags, r.tags);
    let copied: Vec<(String, i64, Option<Vec<u8>>)> = s
        .key_materials(stored.address())
        .unwrap()
        .into_iter()
        .map(|m| (m.material_id, m.seq, m.sealed_material))
        .collect();
    assert_eq!(
        copied,
        vec![
            ("m1".to_owned(), 1, Some(vec![101; 60])),
            ("m2".to_owned(), 2, Some(vec![102; 60])),
        ]
    );
    let set = s.multi_region_set(ACCT, MRK).unwrap().unwrap();
    assert_eq!(set.primary_region, "us-east-1");
    let regions: Vec<&str> = set.replicas().map(|m| m.region.as_str()).collect();
    assert_eq!(regions, ["eu-west-1"]);

    // One member per Region, whatever its state.
    s.transition_key_state(
        stored.address(),
        &[KeyState::Creating],
        KeyState::PendingDeletion,
        Some(ScheduledDeletion {
            date_ms: 9,
            window_days: 7,
        }),
    )
    .unwrap();
    assert!(matches!(
        s.create_replica_key(&r, &versions, "us-east-1", &[KeyState::Enabled], 10),
        Err(StorageError::AlreadyExists(_))
    ));
    // The primary must still be where, and in a state, the caller decided from.
    let (r2, v2) = replica_of(s.as_ref(), &p, "ap-south-1");
    assert_eq!(
        s.create_replica_key(&r2, &v2, "eu-west-1", &[KeyState::Enabled], 10),
        Err(StorageError::StateChanged)
    );
    assert_eq!(
        s.create_replica_key(&r2, &v2, "us-east-1", &[KeyState::Disabled], 10),
        Err(StorageError::StateChanged)
    );
    assert_eq!(s.get_key(ACCT, "ap-south-1", MRK).unwrap(), None);
    assert!(s.key_materials(r2.address()).unwrap().is_empty());
    // The quota counts replicas like any key.
    assert!(matches!(
        s.create_replica_key(&r2, &v2, "us-east-1", &[KeyState::Enabled], 0),
        Err(StorageError::LimitExceeded(_))
    ));
}

fn the_primary_moves_only_from_where_it_is() {
    let (_dir, s) = open();
    let p = primary(s.as_ref());
    let (r, versions) = replica_of(s.as_ref(), &p, "eu-west-1");
    s.create_replica_key(&r, &versions, "us-east-1", &[KeyState::Enabled], 10)
        .unwrap();
    // A replica still Creating cannot take the role.
    assert_eq!(
        s.update_primary_region(ACCT, MRK, "us-east-1", "eu-west-1", 5_000),
        Err(StorageError::StateChanged)
    );
    s.transition_key_state(r.address(), &[KeyState::Creating], KeyState::Enabled, None)
        .unwrap();
    assert_eq!(
        s.update_primary_region(ACCT, MRK, "ap-south-1", "eu-west-1", 5_000),
        Err(StorageError::NotFound)
    );
    s.update_primary_region(ACCT, MRK, "us-east-1", "eu-west-1", 5_000)
        .unwrap();
    let set = s.multi_region_set(ACCT, MRK).unwrap().unwrap();
    assert_eq!(set.primary_region, "eu-west-1");
    assert!(
        set.members
            .iter()
            .all(|m| m.key_state == KeyState::Updating)
    );
    // A second move decided from the old primary finds it moved.
    assert_eq!(
        s.update_primary_region(ACCT, MRK, "us-east-1", "eu-west-1", 6_000),
        Err(StorageError::StateChanged)
    );
}

fn asynchronous_steps_fall_due_and_sets_go_with_their_last_member() {
    let (_dir, s) = open();
    let p = primary(s.as_ref());
    let (r, versions) = replica_of(s.as_ref(), &p, "eu-west-1");
    s.create_replica_key(&r, &versions, "us-east-1", &[KeyState::Enabled], 10)
        .unwrap();
    let creating = |at| s.multi_region_transitions_due(at).unwrap();
    assert!(creating(2_999).is_empty());
    assert_eq!(
        creating(3_000),
        vec![(
            ACCT.to_owned(),
            "eu-west-1".to_owned(),
            MRK.to_owned(),
            KeyState::Creating
        )]
    );
    s.transition_key_state(r.address(), &[KeyState::Creating], KeyState::Enabled, None)
        .unwrap();
    s.update_primary_region(ACCT, MRK, "us-east-1", "eu-west-1", 5_000)
        .unwrap();
    assert!(creating(4_999).is_empty());
    assert_eq!(creating(5_000).len(), 2);
    for region in ["us-east-1", "eu-west-1"] {
        let k = s.get_key(ACCT, region, MRK).unwrap().unwrap();
        s.transition_key_state(k.address(), &[KeyState::Updating], KeyState::Enabled, None)
            .unwrap();
    }
    // The primary (now eu-west-1) waits for its replica's deletion.
    let new_primary = s.get_key(ACCT, "eu-west-1", MRK).unwrap().unwrap();
    s.transition_key_state(
        new_primary.address(),
        &[KeyState::Enabled],
        KeyState::PendingReplicaDeletion,
        Some(ScheduledDeletion {
            date_ms: 0,
            window_days: 7,
        }),
    )
    .unwrap();
    assert!(creating(i64::MAX).is_empty());
    delete_now(s.as_ref(), ACCT, "us-east-1", MRK).unwrap();
    assert_eq!(
        creating(0),
        vec![(
            ACCT.to_owned(),
            "eu-west-1".to_owned(),
            MRK.to_owned(),
            KeyState::PendingReplicaDeletion
        )]
    );
    delete_now(s.as_ref(), ACCT, "eu-west-1", MRK).unwrap();
    assert_eq!(s.multi_region_set(ACCT, MRK).unwrap(), None);
}

backends::conformance!(
    a_set_has_its_primary_and_members,
    a_replica_gets_every_version_in_one_write,
    the_primary_moves_only_from_where_it_is,
    asynchronous_steps_fall_due_and_sets_go_with_their_last_member,
);
