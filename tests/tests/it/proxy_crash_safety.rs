//! Crash safety of the embedded key store: a process that dies at any point of a write
//! leaves a store that unseals and holds every key whose command reported success.

use std::process::Stdio;
use std::time::Duration;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks;

/// The failpoints of `xks-proxy`'s key-store write, in order, and whether the write is
/// durable once the process dies there.
const FAILPOINTS: [(&str, bool); 5] = [
    ("store-after-lock", false),
    ("store-after-temp-write", false),
    ("store-after-temp-fsync", false),
    ("store-after-rename", true),
    ("store-after-dir-fsync", true),
];

fn key_ids(f: &ProxyFixture) -> Vec<String> {
    let out = f.keys("s", &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("keys list --json");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["keyId"].as_str().map(str::to_owned))
        .collect()
}

fn temp_files(f: &ProxyFixture) -> Vec<String> {
    std::fs::read_dir(f.path().join("keys"))
        .expect("ls keys")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_crash_after_each_write_step_leaves_a_store_that_unseals() {
    for (failpoint, durable) in FAILPOINTS {
        let f = ProxyFixture::new().store(StoreSpec::new("s", "").with_keys(&["before"]));
        f.prepare();
        let out = f
            .cli_command(&["keys", "--key-store", "s", "create", "new-key"])
            .env("XKS_PROXY_FAILPOINT", failpoint)
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "{failpoint}: the process must die there"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("failpoint {failpoint} reached")),
            "{failpoint}: {stderr}"
        );

        let ids = key_ids(&f);
        assert!(ids.contains(&"before".to_owned()), "{failpoint}: {ids:?}");
        assert_eq!(
            ids.contains(&"new-key".to_owned()),
            durable,
            "{failpoint}: {ids:?}"
        );
        // The next writer cleans up and succeeds.
        f.keys("s", &["create", "after"]);
        assert!(key_ids(&f).contains(&"after".to_owned()));
        assert!(
            temp_files(&f).is_empty(),
            "{failpoint}: {:?}",
            temp_files(&f)
        );
    }
}

/// `keys create --count`: the keys of one command go into the store with one write, so a
/// crash leaves all of them or none.
#[test]
fn a_crash_during_a_bulk_create_leaves_all_or_none_of_its_keys() {
    let bulk: Vec<String> = (0..500).map(|i| format!("bulk-{i}")).collect();
    for (failpoint, durable) in FAILPOINTS {
        let f = ProxyFixture::new().store(StoreSpec::new("s", "").with_keys(&["before"]));
        f.prepare();
        let out = f
            .cli_command(&[
                "keys",
                "--key-store",
                "s",
                "create",
                "--count",
                "500",
                "--prefix",
                "bulk-",
            ])
            .env("XKS_PROXY_FAILPOINT", failpoint)
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "{failpoint}: the process must die there"
        );
        let ids = key_ids(&f);
        assert!(ids.contains(&"before".to_owned()), "{failpoint}: {ids:?}");
        let present = bulk.iter().filter(|k| ids.contains(k)).count();
        assert_eq!(
            present,
            if durable { bulk.len() } else { 0 },
            "{failpoint}: {present} of {} bulk keys",
            bulk.len()
        );
        // The next writer cleans up and succeeds.
        f.keys("s", &["create", "--count", "3", "--prefix", "after-"]);
        assert!(key_ids(&f).contains(&"after-2".to_owned()));
        assert!(
            temp_files(&f).is_empty(),
            "{failpoint}: {:?}",
            temp_files(&f)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_writers_at_random_moments_never_loses_a_committed_key() {
    let f = ProxyFixture::new().store(StoreSpec::new("s", "").with_keys(&["served"]));
    f.prepare();
    let p = RunningProxy::spawn(f);
    let f = &p.fixture;

    // A running server keeps serving while writers die around it.
    let client = p.client(0);
    let url = p.api_url(0, "keys/served/encrypt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut failures = 0u32;
        let mut ok = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let r = client
                .post_json(&url, &xks::encrypt(b"during crashes", None, false))
                .await;
            if r.status == 200 {
                ok += 1
            } else {
                failures += 1
            }
        }
        (ok, failures)
    });

    let mut committed = vec!["served".to_owned()];
    let (mut killed, mut finished) = (0, 0);
    for i in 0..60u64 {
        let id = format!("k-{i}");
        let mut child = f
            .cli_command(&["keys", "--key-store", "s", "create", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Spread the kill over the command's life (start-up, unseal, write, fsync, rename).
        let delay = Duration::from_micros(
            testkit::random_bytes(2)
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>()
                * 40
                + (i % 10) * 300,
        );
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            committed.push(id);
            finished += 1;
        } else {
            killed += 1;
        }
        let ids = key_ids(f);
        for k in &committed {
            assert!(
                ids.contains(k),
                "key {k} was reported created but is missing after a kill: {ids:?}"
            );
        }
    }
    eprintln!("writers killed: {killed}, finished: {finished}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failures) = load.await.expect("load task");
    assert_eq!(
        failures, 0,
        "the server failed requests while writers were killed"
    );
    assert!(ok > 0);
    assert!(
        killed > 0 && finished > 0,
        "the loop must exercise both outcomes: killed {killed}, finished {finished}"
    );
    // The server sees every committed key.
    let c = p.client(0);
    for k in committed.iter().take(5) {
        c.post_json(
            &p.api_url(0, &format!("keys/{k}/encrypt")),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .ok();
    }
}
