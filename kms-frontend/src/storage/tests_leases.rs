//! Conformance tests of the lease methods of [`Storage`] (issue 20), on every backend.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use super::tests::backends;

/// One fresh database of the test's backend; the first value keeps it alive.
fn db() -> (backends::Guard, backends::TestDb) {
    backends::fresh()
}

fn a_lease_has_one_holder_until_it_expires() {
    let (_guard, db) = db();
    let s = db.open_storage().unwrap();
    let t0 = 1_700_000_000_000;
    assert!(s.acquire_lease("poll/a", "p1", t0, 3_000).unwrap());
    assert!(!s.acquire_lease("poll/a", "p2", t0 + 1_000, 3_000).unwrap());
    // Renewing moves the expiry: at t0 + 3 s the lease is still p1's.
    assert!(s.acquire_lease("poll/a", "p1", t0 + 2_000, 3_000).unwrap());
    assert!(!s.acquire_lease("poll/a", "p2", t0 + 3_000, 3_000).unwrap());
    // Another lease is independent.
    assert!(s.acquire_lease("poll/b", "p2", t0 + 3_000, 3_000).unwrap());
    // p1 stopped renewing: once expired, p2 takes it over and p1 has lost it.
    assert!(s.acquire_lease("poll/a", "p2", t0 + 5_000, 3_000).unwrap());
    assert!(!s.acquire_lease("poll/a", "p1", t0 + 5_001, 3_000).unwrap());
}

fn releasing_frees_a_lease_for_others_at_once() {
    let (_guard, db) = db();
    let s = db.open_storage().unwrap();
    let t0 = 1_700_000_000_000;
    assert!(s.acquire_lease("poll/a", "p1", t0, 60_000).unwrap());
    // Only the holder can release it.
    s.release_lease("poll/a", "p2").unwrap();
    assert!(!s.acquire_lease("poll/a", "p2", t0 + 1, 60_000).unwrap());
    s.release_lease("poll/a", "p1").unwrap();
    assert!(s.acquire_lease("poll/a", "p2", t0 + 2, 60_000).unwrap());
    // Releasing a lease nobody holds is not an error.
    s.release_lease("poll/none", "p1").unwrap();
}

fn concurrent_takers_across_instances_get_one_lease() {
    let (_guard, db) = db();
    let instances: Vec<_> = (0..2)
        .map(|_| Arc::new(db.open_storage().unwrap()))
        .collect();
    let t0 = 1_700_000_000_000;
    for round in 0..20_i64 {
        let now = t0 + round * 10_000;
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = instances[i % 2].clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    s.acquire_lease("poll/x", &format!("p{i}"), now, 5_000)
                        .unwrap()
                })
            })
            .collect();
        let won = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|w| *w)
            .count();
        // Each round starts after the previous lease expired: exactly one taker wins.
        assert_eq!(won, 1, "round {round}");
    }
}

backends::conformance!(
    a_lease_has_one_holder_until_it_expires,
    releasing_frees_a_lease_for_others_at_once,
    concurrent_takers_across_instances_get_one_lease,
);
