//! Conformance tests of the last-usage methods of [`Storage`], on every backend
//! (`backends::conformance!` at the end).
#![allow(clippy::unwrap_used)]

use super::tests::backends;
use super::tests::fixtures::{delete_now, plain_key};
use super::{KeyAddress, KeyRecord, KeyUsageRecord, Storage};

const ACCT: &str = "111122223333";
const REGION: &str = "eu-west-1";

fn key(key_id: &str) -> KeyRecord {
    plain_key(ACCT, REGION, key_id)
}

fn usage(key_id: &str, operation: &str, timestamp_ms: i64) -> KeyUsageRecord {
    KeyUsageRecord {
        account_id: ACCT.to_owned(),
        region: REGION.to_owned(),
        key_id: key_id.to_owned(),
        operation: operation.to_owned(),
        timestamp_ms,
        request_id: format!("req-{timestamp_ms}"),
        event_id: format!("evt-{timestamp_ms}"),
    }
}

fn address(key_id: &str) -> KeyAddress<'_> {
    KeyAddress {
        account_id: ACCT,
        region: REGION,
        key_id,
    }
}

/// A storage on a fresh database of the test's backend; the first value keeps it alive.
fn open() -> (backends::Guard, Box<dyn Storage>) {
    let (guard, db) = backends::fresh();
    let s = db.open_storage().unwrap();
    (guard, s)
}

fn the_newest_use_wins_in_any_order() {
    let (_dir, s) = open();
    s.create_key(&key("k1"), 100).unwrap();
    assert_eq!(s.key_last_usage(address("k1")).unwrap(), None);

    s.record_key_usages(&[usage("k1", "Encrypt", 20)]).unwrap();
    // An older use flushed late (another process, a retried batch) does not move it back.
    s.record_key_usages(&[usage("k1", "Decrypt", 10)]).unwrap();
    assert_eq!(
        s.key_last_usage(address("k1")).unwrap(),
        Some(usage("k1", "Encrypt", 20))
    );
    s.record_key_usages(&[usage("k1", "Sign", 30)]).unwrap();
    assert_eq!(
        s.key_last_usage(address("k1")).unwrap(),
        Some(usage("k1", "Sign", 30))
    );
}

fn uses_of_missing_keys_are_dropped_and_deleting_a_key_deletes_its_use() {
    let (_dir, s) = open();
    s.create_key(&key("k1"), 100).unwrap();
    // One batch with a key that does not exist: the others are still recorded.
    s.record_key_usages(&[usage("gone", "Encrypt", 5), usage("k1", "Encrypt", 6)])
        .unwrap();
    assert_eq!(s.key_last_usage(address("gone")).unwrap(), None);
    assert_eq!(
        s.key_last_usage(address("k1")).unwrap(),
        Some(usage("k1", "Encrypt", 6))
    );
    delete_now(s.as_ref(), ACCT, REGION, "k1").unwrap();
    // A key created again under the same id starts with no history.
    s.create_key(&key("k1"), 100).unwrap();
    assert_eq!(s.key_last_usage(address("k1")).unwrap(), None);
    s.record_key_usages(&[]).unwrap();
}

fn tracking_started_when_the_database_was_made_and_stays() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (_guard, db) = backends::fresh();
    let started = db
        .open_storage()
        .unwrap()
        .usage_tracking_start_ms()
        .unwrap();
    assert!(
        (before - 1_000..=before + 60_000).contains(&started),
        "{started} vs {before}"
    );
    let again = db
        .open_storage()
        .unwrap()
        .usage_tracking_start_ms()
        .unwrap();
    assert_eq!(again, started);
}

backends::conformance!(
    the_newest_use_wins_in_any_order,
    uses_of_missing_keys_are_dropped_and_deleting_a_key_deletes_its_use,
    tracking_started_when_the_database_was_made_and_stays,
);
