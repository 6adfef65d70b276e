//! One suite over the three key backends (embedded sealed store, PKCS#11 on SoftHSMv2,
//! Vault/OpenBao Transit), each behind the real `xks-proxy` binary over HTTPS with SigV4;
//! then what only some backends have: ciphertexts that move between the embedded store and
//! an HSM holding the same key bytes, Transit key rotation, and an OpenBao outage.
//!
//! SoftHSMv2 and OpenBao are required: a missing one fails these tests (never skips).

use serde_json::{Value, json};
use testkit::client::XksClient;
use testkit::kms_backends::{OpenBao, SoftHsm};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks::{self, b64, unb64};

const KEY: &str = "key-1";
const HEALTH_KEY: &str = "xks-proxy-health";

/// A running proxy over one backend, with what keeps that backend alive.
struct Stack {
    proxy: RunningProxy,
    _hsm: Option<SoftHsm>,
    bao: Option<OpenBao>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Embedded,
    Pkcs11,
    Transit,
}

fn stack(kind: Kind) -> Stack {
    let mut fixture = ProxyFixture::new();
    let status = fixture.path().join("key-status.toml");
    let status = status.display().to_string();
    let spec = StoreSpec::new("main", "/tenant-1").with_keys(&[KEY, HEALTH_KEY]);
    let (spec, hsm, bao) = match kind {
        Kind::Embedded => (spec, None, None),
        Kind::Pkcs11 => {
            let hsm = SoftHsm::new();
            fixture
                .env
                .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
            (
                spec.with_backend(hsm.backend_toml(&status)),
                Some(hsm),
                None,
            )
        }
        Kind::Transit => {
            let bao = OpenBao::start();
            (
                spec.with_backend(bao.backend_toml(&status)),
                None,
                Some(bao),
            )
        }
    };
    Stack {
        proxy: fixture.store(spec).start(),
        _hsm: hsm,
        bao,
    }
}

/// A SoftHSM token and a proxy fixture whose processes see it; the status file path for
/// `SoftHsm::backend_toml`.
fn hsm_fixture() -> (SoftHsm, ProxyFixture, String) {
    let hsm = SoftHsm::new();
    let mut fixture = ProxyFixture::new();
    fixture
        .env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    let status = fixture.path().join("key-status.toml").display().to_string();
    (hsm, fixture, status)
}

/// A file in the fixture's home holding 32 random key bytes (base64), for `keys import`.
fn key_material(fixture: &ProxyFixture) -> String {
    let material = fixture.path().join("material.b64");
    std::fs::write(&material, b64(&testkit::random_bytes(32))).expect("material");
    material.display().to_string()
}

async fn encrypt(p: &RunningProxy, c: &XksClient, pt: &[u8], aad: Option<&[u8]>) -> Value {
    c.post_json(
        &p.api_url(0, &format!("keys/{KEY}/encrypt")),
        &xks::encrypt(pt, aad, true),
    )
    .await
    .ok()
    .clone()
}

async fn decrypt(p: &RunningProxy, c: &XksClient, enc: &Value, aad: Option<&[u8]>) -> Vec<u8> {
    unb64(
        &c.post_json(
            &p.api_url(0, &format!("keys/{KEY}/decrypt")),
            &xks::decrypt_of(enc, aad),
        )
        .await
        .ok()["plaintext"],
    )
}

/// The behaviour every backend must share, through the proxy's wire API.
async fn common_suite(kind: Kind) {
    let s = stack(kind);
    let p = &s.proxy;
    let c = p.client(0);

    let h = c.post_json(&p.api_url(0, "health"), &xks::health()).await;
    assert_eq!(
        h.ok()["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE",
        "{kind:?}"
    );

    let m = c
        .post_json(
            &p.api_url(0, &format!("keys/{KEY}/metadata")),
            &xks::metadata(),
        )
        .await;
    assert_eq!(
        m.ok(),
        &json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"}),
        "{kind:?}"
    );

    // Round trips with and without AAD, empty and 4 KiB plaintexts.
    for (pt, aad) in [
        (testkit::random_bytes(33), Some(&b"project=nile"[..])),
        (Vec::new(), None),
        (testkit::random_bytes(4096), Some(&b""[..])),
    ] {
        let enc = encrypt(p, &c, &pt, aad).await;
        assert_eq!(unb64(&enc["initializationVector"]).len(), 12, "{kind:?}");
        assert_eq!(unb64(&enc["authenticationTag"]).len(), 16, "{kind:?}");
        assert_eq!(unb64(&enc["ciphertext"]).len(), pt.len(), "{kind:?}");
        if !pt.is_empty() {
            assert_ne!(unb64(&enc["ciphertext"]), pt, "{kind:?}");
        }
        assert_eq!(decrypt(p, &c, &enc, aad).await, pt, "{kind:?}");
    }

    // Wrong AAD and tampered tag or ciphertext: a client error, not a backend failure.
    let enc = encrypt(p, &c, b"secret", Some(b"a")).await;
    let url = p.api_url(0, &format!("keys/{KEY}/decrypt"));
    c.post_json(&url, &xks::decrypt_of(&enc, Some(b"b")))
        .await
        .assert_error(400, "InvalidCiphertextException");
    for field in ["authenticationTag", "ciphertext", "initializationVector"] {
        let mut bad = enc.clone();
        let mut bytes = unb64(&bad[field]);
        bytes[0] ^= 1;
        bad[field] = json!(b64(&bytes));
        c.post_json(&url, &xks::decrypt_of(&bad, Some(b"a")))
            .await
            .assert_error(400, "InvalidCiphertextException");
    }
    // And the backend still works afterwards.
    assert_eq!(decrypt(p, &c, &enc, Some(b"a")).await, b"secret");

    // A key the backend does not hold.
    c.post_json(&p.api_url(0, "keys/no-such-key/metadata"), &xks::metadata())
        .await
        .assert_error(404, "KeyNotFoundException");
    c.post_json(
        &p.api_url(0, "keys/no-such-key/encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(404, "KeyNotFoundException");

    // Disable and enable through the CLI, picked up without a restart.
    p.fixture.keys("main", &["disable", KEY]);
    let mut disabled = false;
    for _ in 0..100 {
        let m = c
            .post_json(
                &p.api_url(0, &format!("keys/{KEY}/metadata")),
                &xks::metadata(),
            )
            .await;
        if m.ok()["keyStatus"] == "DISABLED" {
            disabled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(disabled, "{kind:?}: disable not picked up");
    c.post_json(
        &p.api_url(0, &format!("keys/{KEY}/encrypt")),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(400, "InvalidStateException");
    // Decrypt of existing ciphertext is refused too while disabled.
    c.post_json(&url, &xks::decrypt_of(&enc, Some(b"a")))
        .await
        .assert_error(400, "InvalidStateException");
    p.fixture.keys("main", &["enable", KEY]);
    let mut enabled = false;
    for _ in 0..100 {
        let r = c
            .try_post_json(&url, &xks::decrypt_of(&enc, Some(b"a")))
            .await;
        if r.is_ok_and(|r| r.status == 200) {
            enabled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(enabled, "{kind:?}: enable not picked up");

    // The CLI lists the backend's keys.
    let list = p.fixture.keys("main", &["list"]);
    assert!(list.contains(KEY), "{kind:?}: {list}");
    drop(s.bao);
}

#[tokio::test]
async fn embedded_backend_passes_the_common_suite() {
    common_suite(Kind::Embedded).await;
}

#[tokio::test]
async fn pkcs11_backend_on_softhsm_passes_the_common_suite() {
    common_suite(Kind::Pkcs11).await;
}

#[tokio::test]
async fn transit_backend_on_openbao_passes_the_common_suite() {
    common_suite(Kind::Transit).await;
}

/// `keys create` with several ids and with `--count N --prefix P` on a running proxy: every
/// new key serves at once, `--disabled` applies to all of them, and a request naming an
/// existing key, an id twice or an invalid id creates none of its keys.
async fn bulk_create(kind: Kind) {
    let s = stack(kind);
    let p = &s.proxy;
    let c = p.client(0);
    let f = &p.fixture;
    let out = f.keys(
        "main",
        &[
            "create", "solo-a", "solo-b", "--count", "3", "--prefix", "bulk-",
        ],
    );
    assert!(
        out.contains("5 keys: solo-a, solo-b, bulk-0, bulk-1, bulk-2"),
        "{kind:?}: {out}"
    );
    f.keys(
        "main",
        &["create", "--count", "2", "--prefix", "off-", "--disabled"],
    );
    for id in ["solo-a", "solo-b", "bulk-0", "bulk-1", "bulk-2"] {
        let enc = c
            .post_json(
                &p.api_url(0, &format!("keys/{id}/encrypt")),
                &xks::encrypt(b"bulk", Some(b"ctx"), false),
            )
            .await
            .ok()
            .clone();
        let dec = c
            .post_json(
                &p.api_url(0, &format!("keys/{id}/decrypt")),
                &xks::decrypt_of(&enc, Some(b"ctx")),
            )
            .await;
        assert_eq!(unb64(&dec.ok()["plaintext"]), b"bulk", "{kind:?}: {id}");
    }
    for id in ["off-0", "off-1"] {
        let m = c
            .post_json(
                &p.api_url(0, &format!("keys/{id}/metadata")),
                &xks::metadata(),
            )
            .await;
        assert_eq!(m.ok()["keyStatus"], "DISABLED", "{kind:?}: {id}");
    }

    for (args, says) in [
        (&["create", "fresh-1", "bulk-1", "fresh-2"][..], "bulk-1"),
        (
            &["create", "fresh-1", "--count", "2", "--prefix", "fresh-"][..],
            "twice",
        ),
        (&["create", "fresh-1", "bad/id"][..], "bad/id"),
    ] {
        let mut full = vec!["keys", "--key-store", "main"];
        full.extend_from_slice(args);
        let out = f.cli(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kind:?} {args:?}");
        assert!(stderr.contains(says), "{kind:?} {args:?}: {stderr}");
    }
    // Refused by the command line itself.
    for args in [
        &["create", "--count", "0", "--prefix", "x-"][..],
        &["create", "--prefix", "x-"][..],
        &["create", "--count", "2"][..],
        &["create"][..],
    ] {
        let mut full = vec!["keys", "--key-store", "main"];
        full.extend_from_slice(args);
        assert!(!f.cli(&full).status.success(), "{kind:?} {args:?}");
    }
    let list = f.keys("main", &["list"]);
    assert!(
        list.contains("bulk-2") && list.contains("off-1"),
        "{kind:?}: {list}"
    );
    assert!(!list.contains("fresh-"), "{kind:?}: {list}");
    c.post_json(&p.api_url(0, "keys/fresh-1/metadata"), &xks::metadata())
        .await
        .assert_error(404, "KeyNotFoundException");
    drop(s.bao);
}

#[tokio::test]
async fn embedded_bulk_key_creation() {
    bulk_create(Kind::Embedded).await;
}

#[tokio::test]
async fn pkcs11_bulk_key_creation() {
    bulk_create(Kind::Pkcs11).await;
}

#[tokio::test]
async fn transit_bulk_key_creation() {
    bulk_create(Kind::Transit).await;
}

/// The same key bytes in the embedded store and in SoftHSM: each decrypts what the other
/// encrypted, so a migration between them keeps old ciphertexts readable.
#[tokio::test]
async fn ciphertexts_move_between_embedded_and_pkcs11() {
    let (hsm, fixture, status) = hsm_fixture();
    let m = key_material(&fixture);
    let fixture = fixture
        .store(StoreSpec::new("embedded", "/emb").with_keys(&[HEALTH_KEY]))
        .store(
            StoreSpec::new("hsm", "/hsm")
                .with_keys(&[HEALTH_KEY])
                .with_backend(hsm.backend_toml(&status)),
        );
    fixture.prepare();
    for store in ["embedded", "hsm"] {
        fixture.keys(store, &["import", KEY, "--material-file", &m]);
    }
    let p = RunningProxy::spawn(fixture);
    let (emb, hsm_c) = (p.client(0), p.client(1));
    for (from, to, from_c, to_c) in [(0, 1, &emb, &hsm_c), (1, 0, &hsm_c, &emb)] {
        let pt = testkit::random_bytes(100);
        let enc = from_c
            .post_json(
                &p.api_url(from, &format!("keys/{KEY}/encrypt")),
                &xks::encrypt(&pt, Some(b"ctx"), false),
            )
            .await
            .ok()
            .clone();
        let dec = to_c
            .post_json(
                &p.api_url(to, &format!("keys/{KEY}/decrypt")),
                &xks::decrypt_of(&enc, Some(b"ctx")),
            )
            .await;
        assert_eq!(unb64(&dec.ok()["plaintext"]), pt, "store {from} -> {to}");
    }
}

/// A Transit key rotated inside OpenBao: new ciphertexts use the new version, old ones still
/// decrypt (the version travels in ciphertextMetadata).
#[tokio::test]
async fn transit_rotation_keeps_old_ciphertexts_readable() {
    let s = stack(Kind::Transit);
    let (p, bao) = (&s.proxy, s.bao.as_ref().expect("bao"));
    let c = p.client(0);
    let old = encrypt(p, &c, b"before rotation", Some(b"x")).await;
    bao.request("POST", &format!("/v1/transit/keys/{KEY}/rotate"), "{}");
    let new = encrypt(p, &c, b"after rotation", Some(b"x")).await;
    assert_ne!(
        old["ciphertextMetadata"], new["ciphertextMetadata"],
        "the key version is carried in ciphertextMetadata"
    );
    assert_eq!(decrypt(p, &c, &old, Some(b"x")).await, b"before rotation");
    assert_eq!(decrypt(p, &c, &new, Some(b"x")).await, b"after rotation");
}

/// OpenBao stopped: 500 InternalException and UNAVAILABLE health; restarted on the same
/// address: the same proxy process serves again.
#[tokio::test]
async fn transit_outage_is_a_500_and_recovers_without_a_restart() {
    let mut s = stack(Kind::Transit);
    let c = s.proxy.client(0);
    let pid = s.proxy.pid();
    encrypt(&s.proxy, &c, b"ok", None).await;
    s.bao.as_mut().expect("bao").stop();
    c.post_json(
        &s.proxy.api_url(0, &format!("keys/{KEY}/encrypt")),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(500, "InternalException");
    let h = c
        .post_json(&s.proxy.api_url(0, "health"), &xks::health())
        .await;
    assert!(
        h.status != 200 || h.json["ekmFleetDetails"][0]["healthStatus"] != "ACTIVE",
        "health must not report ACTIVE with OpenBao down: {}",
        String::from_utf8_lossy(&h.raw)
    );

    // A dev server forgets its keys: recreate them as an operator would.
    let bao = s.bao.as_mut().expect("bao");
    bao.restart();
    for k in [KEY, HEALTH_KEY] {
        bao.request(
            "POST",
            &format!("/v1/transit/keys/{k}"),
            r#"{"type":"aes256-gcm96"}"#,
        );
    }
    let enc = encrypt(&s.proxy, &c, b"served again", None).await;
    assert_eq!(decrypt(&s.proxy, &c, &enc, None).await, b"served again");
    assert_eq!(s.proxy.pid(), pid);
}

fn reinit_series() -> &'static str {
    "xks_proxy_backend_reinitializations_total{key_store=\"main\"}"
}

/// Tampered ciphertext through a PKCS#11 store is the caller's error (400
/// InvalidCiphertextException); SoftHSM's CKR_GENERAL_ERROR for it must not make the proxy
/// re-initialise the module, which the metric shows.
#[tokio::test]
async fn pkcs11_tampering_does_not_reinitialise_the_module() {
    let s = stack(Kind::Pkcs11);
    let (p, c) = (&s.proxy, s.proxy.client(0));
    let enc = encrypt(p, &c, b"payload", Some(b"a")).await;
    let metrics = p.metrics().await;
    assert!(metrics.contains(reinit_series()), "{metrics}");
    assert_eq!(p.metric(reinit_series()).await, 0.0);
    let url = p.api_url(0, &format!("keys/{KEY}/decrypt"));
    for i in 0..20 {
        let mut bad = enc.clone();
        let mut tag = unb64(&bad["authenticationTag"]);
        tag[i % 16] ^= 0x80;
        bad["authenticationTag"] = json!(b64(&tag));
        c.post_json(&url, &xks::decrypt_of(&bad, Some(b"a")))
            .await
            .assert_error(400, "InvalidCiphertextException");
    }
    assert_eq!(decrypt(p, &c, &enc, Some(b"a")).await, b"payload");
    assert_eq!(p.metric(reinit_series()).await, 0.0);
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line")
}

/// A pool of one session and a 5 ms wait under 64 concurrent calls: every answer is 200
/// or 429 ThrottlingException (never a 5xx), `/ping` and health keep answering, and the
/// process does not grow a thread per waiting call.
#[tokio::test]
async fn pkcs11_session_pool_exhaustion_is_throttling() {
    let (hsm, fixture, status) = hsm_fixture();
    let backend = hsm.backend_toml_with(&status, ", pool_size = 1, session_wait_ms = 5");
    let p = fixture
        .store(
            StoreSpec::new("main", "/tenant-1")
                .with_keys(&[KEY, HEALTH_KEY])
                .with_backend(backend),
        )
        .start();
    let c = p.client(0);
    let threads_before = thread_count(p.pid());
    let url = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = c.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let pt = testkit::random_bytes(4096);
            c.post_json(&url, &xks::encrypt(&pt, Some(b"x"), false))
                .await
        }));
    }
    let ping = reqwest::get(format!("http://127.0.0.1:{}/ping", p.admin_port))
        .await
        .expect("ping");
    assert_eq!(ping.status(), 200);
    let (mut ok, mut throttled) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => ok += 1,
            _ => {
                r.assert_error(429, "ThrottlingException");
                throttled += 1;
            }
        }
    }
    assert!(
        ok > 0,
        "some calls must get the session ({throttled} throttled)"
    );
    let h = c.post_json(&p.api_url(0, "health"), &xks::health()).await;
    assert_eq!(h.ok()["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");
    // The pool is whole again: a sequence of calls all succeed.
    for _ in 0..10 {
        encrypt(&p, &c, b"after", None).await;
    }
    let threads_after = thread_count(p.pid());
    // PKCS#11 calls wait for a session permit before taking a blocking thread, so 64
    // concurrent calls must not make anything like 64 threads.
    assert!(
        threads_after < 32,
        "threads grew from {threads_before} to {threads_after} under 64 concurrent calls"
    );
    eprintln!(
        "session exhaustion: {ok} ok, {throttled} throttled, threads {threads_before} -> {threads_after}"
    );
}

/// The token is deleted and initialised again and the key re-imported under the same label
/// while the proxy runs: the proxy serves the old ciphertexts again without a restart.
#[tokio::test]
async fn pkcs11_recovers_after_the_token_is_replaced() {
    let (hsm, fixture, status) = hsm_fixture();
    let m = key_material(&fixture);
    let fixture = fixture.store(
        StoreSpec::new("main", "/tenant-1")
            .with_keys(&[HEALTH_KEY])
            .with_backend(hsm.backend_toml(&status)),
    );
    fixture.prepare();
    fixture.keys("main", &["import", KEY, "--material-file", &m]);
    let p = RunningProxy::spawn(fixture);
    let c = p.client(0);
    let pid = p.pid();
    let enc = encrypt(&p, &c, b"survives", Some(b"z")).await;

    hsm.reinitialise_token();
    p.fixture.keys("main", &["create", HEALTH_KEY]);
    p.fixture
        .keys("main", &["import", KEY, "--material-file", &m]);
    // Until the key's facts are read again (`key_facts_cache_ms`, default 1 s), Encrypt and
    // Decrypt may still be served by the session copy of the old token's key; the first
    // read after that finds the token replaced and recovers.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let url = p.api_url(0, &format!("keys/{KEY}/decrypt"));
    let mut served = None;
    for _ in 0..50 {
        let r = c.post_json(&url, &xks::decrypt_of(&enc, Some(b"z"))).await;
        if r.status == 200 {
            served = Some(unb64(&r.json["plaintext"]));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served.as_deref(), Some(&b"survives"[..]));
    assert_eq!(p.pid(), pid);
    assert!(
        p.metric(reinit_series()).await >= 1.0,
        "{}",
        p.metrics().await
    );
}

fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The documented backends example loads and passes `check-config` against a real SoftHSM
/// token and a real OpenBao (only the Vault address and its CA differ from the file).
#[test]
fn the_backends_example_config_passes_check_config() {
    let hsm = SoftHsm::new();
    let bao = OpenBao::start();
    let root = testkit::bins::workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    let text = std::fs::read_to_string(root.join("deploy/xks-proxy.backends.example.toml"))
        .expect("example");
    let text = text
        .replace("https://vault.example.internal:8200", &bao.address)
        .replace("ca_bundle = \"tls/vault-ca.pem\", ", "");
    assert!(
        text.contains(&bao.address),
        "the example names a Vault address"
    );
    std::fs::write(&cfg, text).expect("write config");
    testkit::pki::TestPki::create(&dir.path().join("tls"));
    std::fs::create_dir_all(dir.path().join("keys")).expect("mkdir");
    let s = |f: &str| dir.path().join("secrets").join(f);
    write_private(&s("hsm.pin"), "87654321\n");
    write_private(
        &s("vault.token"),
        &std::fs::read_to_string(&bao.token_file).expect("token"),
    );
    write_private(&s("hsm.secret"), &testkit::random_secret());
    write_private(&s("vault.secret"), &testkit::random_secret());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(testkit::bins::bin("xks-proxy-test"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("SOFTHSM2_CONF", &hsm.conf)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for store in ["hsm", "vault"] {
        run(&["keys", "--key-store", store, "create", HEALTH_KEY]);
    }
    let report = run(&["check-config"]);
    assert_eq!(report.matches("round trip ACTIVE").count(), 2, "{report}");
}
