//! A hung HSM cannot stall the proxy. PKCS#11 key operations may run on the runtime worker
//! that awaits them (to spare a thread hand-off); these tests make every Encrypt's PKCS#11
//! call hang (a test-build hook blocks the calling thread) and show that health requests are
//! still answered at once, with one runtime worker and with two.

use std::time::{Duration, Instant};
use testkit::kms_backends::SoftHsm;
use testkit::proxy::{ProxyFixture, StoreSpec};
use testkit::xks;

const KEY: &str = "stall-key";

async fn health_stays_answerable_while_encrypts_hang(workers: usize) {
    let hsm = SoftHsm::new();
    let mut f = ProxyFixture::new();
    f.env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    f.env.push((
        "XKS_PROXY_TEST_PKCS11_ENCRYPT_STALL_MS".into(),
        "4000".into(),
    ));
    f.server_toml = format!("worker_threads = {workers}\n");
    let status = f.path().join("key-status.toml").display().to_string();
    let p = f
        .store(
            StoreSpec::new("hsm", "/hsm")
                .with_keys(&[KEY])
                .with_backend(hsm.backend_toml(&status)),
        )
        .start();
    let c = p.client(0);
    let url = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let health_url = p.api_url(0, "health");
    assert_eq!(c.post_json(&health_url, &xks::health()).await.status, 200);

    // Six Encrypts whose PKCS#11 calls hang for 4 s each.
    let hung: Vec<_> = (0..6)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                c.post_json(&url, &xks::encrypt(b"x", None, false))
                    .await
                    .status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let r = c.post_json(&health_url, &xks::health()).await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "health took {:?} while HSM calls hang ({workers} workers)",
            started.elapsed()
        );
    }
    for h in hung {
        // Each either finished late or ran into the backend deadline: never a hang forever.
        let status = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("a hung Encrypt never finished")
            .expect("join");
        assert!([200, 503, 429].contains(&status), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hsm_call_does_not_stall_health_with_two_workers() {
    health_stays_answerable_while_encrypts_hang(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hsm_call_does_not_stall_health_with_one_worker() {
    health_stays_answerable_while_encrypts_hang(1).await;
}
