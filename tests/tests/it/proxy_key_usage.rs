//! Key usages and the health key through the proxy's wire API, on each key backend
//! (embedded sealed store, PKCS#11 on SoftHSMv2, Transit on OpenBao) behind the real
//! `xks-proxy` binary over HTTPS with SigV4 (testkit's `XksClient`, aws-sigv4):
//!
//! - an Encrypt asking for a CDIV needs DECRYPT too (the proxy proves the ciphertext
//!   decrypts before answering): on an encrypt-only key it is 400 InvalidKeyUsageException;
//! - a key with no usage (`keys create --usage none`; a derived key in Transit, which cannot
//!   express usages otherwise) refuses Encrypt and Decrypt with InvalidKeyUsageException and
//!   reports `keyUsage: []` in GetKeyMetadata;
//! - the PKCS#11 and Transit health keys are not API keys: KeyNotFoundException, while health
//!   still reports ACTIVE;
//! - `keys list` prints the same table for every backend, and `--json` the same fields.
//!
//! SoftHSMv2 and OpenBao are required: a missing one fails these tests (never skips).

use serde_json::{Value, json};
use testkit::client::XksClient;
use testkit::kms_backends::{OpenBao, SoftHsm};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks::{self, unb64};

const KEY: &str = "key-1";
const ENCRYPT_ONLY: &str = "enc-only";
const DECRYPT_ONLY: &str = "dec-only";
const NO_USAGE: &str = "no-usage";
const HEALTH_KEY: &str = "xks-proxy-health";
/// The `keys list` header, the same for every backend (split on blanks).
const HEADER: &str = "KEY ID STATUS USAGES KEY SPEC VERSION";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Pkcs11,
    Transit,
}

/// A running proxy over one backend, with what keeps that backend alive.
struct Stack {
    proxy: RunningProxy,
    _hsm: Option<SoftHsm>,
    _bao: Option<OpenBao>,
}

/// A store `main` with `key-1` (both usages), and where the backend can express it an
/// encrypt-only, a decrypt-only and a no-usage key. PKCS#11 and Transit also get their
/// health key; the embedded store has its own inside the store file.
fn stack(kind: Kind) -> Stack {
    let mut fixture = ProxyFixture::new();
    let status = fixture.path().join("key-status.toml").display().to_string();
    let spec = StoreSpec::new("main", "/tenant-1").with_keys(&[KEY]);
    let (spec, hsm, bao) = match kind {
        Kind::Embedded => (spec, None, None),
        Kind::Pkcs11 => {
            let hsm = SoftHsm::new();
            fixture
                .env
                .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
            let spec = spec
                .with_keys(&[HEALTH_KEY])
                .with_backend(hsm.backend_toml(&status));
            (spec, Some(hsm), None)
        }
        Kind::Transit => {
            let bao = OpenBao::start();
            let spec = spec
                .with_keys(&[HEALTH_KEY])
                .with_backend(bao.backend_toml(&status));
            (spec, None, Some(bao))
        }
    };
    let fixture = fixture.store(spec);
    fixture.prepare();
    match &bao {
        None => {
            fixture.keys("main", &["create", ENCRYPT_ONLY, "--usage", "encrypt"]);
            fixture.keys("main", &["create", DECRYPT_ONLY, "--usage", "decrypt"]);
            fixture.keys("main", &["create", NO_USAGE, "--usage", "none"]);
        }
        Some(bao) => {
            // Transit AES keys always allow both; a derived key needs a per-call context
            // the XKS API does not carry, so the proxy gives it no usage.
            let out = bao.request(
                "POST",
                &format!("/v1/transit/keys/{NO_USAGE}"),
                r#"{"type":"aes256-gcm96","derived":true}"#,
            );
            assert!(!out.contains("errors"), "{out}");
        }
    }
    Stack {
        proxy: RunningProxy::spawn(fixture),
        _hsm: hsm,
        _bao: bao,
    }
}

fn url(p: &RunningProxy, key: &str, op: &str) -> String {
    p.api_url(0, &format!("keys/{key}/{op}"))
}

async fn encrypt_ok(p: &RunningProxy, c: &XksClient, key: &str, cdiv: bool) -> Value {
    c.post_json(
        &url(p, key, "encrypt"),
        &xks::encrypt(b"payload", Some(b"ctx"), cdiv),
    )
    .await
    .ok()
    .clone()
}

async fn assert_health_active(p: &RunningProxy, c: &XksClient, kind: Kind) {
    let h = c.post_json(&p.api_url(0, "health"), &xks::health()).await;
    assert_eq!(
        h.ok()["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE",
        "{kind:?}"
    );
}

/// Encrypt with a CDIV needs DECRYPT: refused on an encrypt-only key before the key manager
/// is asked (the embedded store used to answer 200 with a CDIV it never verified, PKCS#11 a
/// 500 from the verifying decrypt). Without a CDIV the key still encrypts, and the other
/// usage rules hold.
async fn cdiv_needs_decrypt(p: &RunningProxy, c: &XksClient, kind: Kind) {
    c.post_json(
        &url(p, ENCRYPT_ONLY, "encrypt"),
        &xks::encrypt(b"payload", Some(b"ctx"), true),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    let enc = encrypt_ok(p, c, ENCRYPT_ONLY, false).await;
    assert!(
        enc.get("ciphertextDataIntegrityValue").is_none(),
        "{kind:?}: {enc}"
    );
    c.post_json(
        &url(p, ENCRYPT_ONLY, "decrypt"),
        &xks::decrypt_of(&enc, Some(b"ctx")),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    for cdiv in [false, true] {
        c.post_json(
            &url(p, DECRYPT_ONLY, "encrypt"),
            &xks::encrypt(b"payload", None, cdiv),
        )
        .await
        .assert_error(400, "InvalidKeyUsageException");
    }
    // A key with both usages answers the CDIV.
    let enc = encrypt_ok(p, c, KEY, true).await;
    assert_eq!(
        unb64(&enc["ciphertextDataIntegrityValue"]).len(),
        32,
        "{kind:?}"
    );
    let m = c
        .post_json(&url(p, ENCRYPT_ONLY, "metadata"), &xks::metadata())
        .await;
    assert_eq!(m.ok()["keyUsage"], json!(["ENCRYPT"]), "{kind:?}");
}

/// A key with no usage: GetKeyMetadata answers with an empty usage list (the spec allows
/// it; KMS then refuses to use the key), every Encrypt and Decrypt is InvalidKeyUsage.
async fn no_usage_refuses_everything(p: &RunningProxy, c: &XksClient, kind: Kind) {
    let m = c
        .post_json(&url(p, NO_USAGE, "metadata"), &xks::metadata())
        .await;
    assert_eq!(
        m.ok(),
        &json!({"keySpec": "AES_256", "keyUsage": [], "keyStatus": "ENABLED"}),
        "{kind:?}"
    );
    for cdiv in [false, true] {
        c.post_json(
            &url(p, NO_USAGE, "encrypt"),
            &xks::encrypt(b"payload", Some(b"ctx"), cdiv),
        )
        .await
        .assert_error(400, "InvalidKeyUsageException");
    }
    // A well-formed ciphertext (made with another key): refused for the usage, not
    // answered as a bad ciphertext.
    let enc = encrypt_ok(p, c, KEY, false).await;
    c.post_json(
        &url(p, NO_USAGE, "decrypt"),
        &xks::decrypt_of(&enc, Some(b"ctx")),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
}

/// The health key of a PKCS#11 or Transit store answers as a key that does not exist, for
/// every operation, while the health check keeps using it.
async fn health_key_is_not_an_api_key(p: &RunningProxy, c: &XksClient, kind: Kind) {
    c.post_json(&url(p, HEALTH_KEY, "metadata"), &xks::metadata())
        .await
        .assert_error(404, "KeyNotFoundException");
    for cdiv in [false, true] {
        c.post_json(
            &url(p, HEALTH_KEY, "encrypt"),
            &xks::encrypt(b"payload", None, cdiv),
        )
        .await
        .assert_error(404, "KeyNotFoundException");
    }
    let enc = encrypt_ok(p, c, KEY, false).await;
    c.post_json(
        &url(p, HEALTH_KEY, "decrypt"),
        &xks::decrypt_of(&enc, Some(b"ctx")),
    )
    .await
    .assert_error(404, "KeyNotFoundException");
    assert_health_active(p, c, kind).await;
}

/// `keys list`: the shared header, then one row of five fields per API key (no health key),
/// with `-` for no usage; `--json`: an array of objects with the same fields.
fn list_is_the_common_table(p: &RunningProxy, kind: Kind, expect: &[[&str; 5]]) {
    let out = p.fixture.keys("main", &["list"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>().join(" "),
        HEADER,
        "{kind:?}: {out}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let want: Vec<Vec<&str>> = expect.iter().map(|r| r.to_vec()).collect();
    assert_eq!(rows, want, "{kind:?}: {out}");

    let out = p.fixture.keys("main", &["list", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{kind:?}: {e}: {out}"));
    let got: Vec<Value> = v
        .as_array()
        .unwrap_or_else(|| panic!("{kind:?}: not an array: {out}"))
        .iter()
        .map(|k| {
            json!([
                k["keyId"],
                k["status"],
                k["usages"],
                k["keySpec"],
                k["currentVersion"]
            ])
        })
        .collect();
    let want: Vec<Value> = expect
        .iter()
        .map(|[id, status, usages, spec, version]| {
            let usages: Vec<&str> = match *usages {
                "-" => Vec::new(),
                u => u.split(',').collect(),
            };
            let version: u32 = version.parse().expect("version");
            json!([id, status, usages, spec, version])
        })
        .collect();
    assert_eq!(got, want, "{kind:?}: {out}");
}

/// Rows of the keys made by [`stack`] for a backend that can express usages.
const USAGE_ROWS: [[&str; 5]; 4] = [
    [DECRYPT_ONLY, "ENABLED", "DECRYPT", "AES_256", "1"],
    [ENCRYPT_ONLY, "ENABLED", "ENCRYPT", "AES_256", "1"],
    [KEY, "ENABLED", "ENCRYPT,DECRYPT", "AES_256", "1"],
    [NO_USAGE, "ENABLED", "-", "AES_256", "1"],
];

#[tokio::test]
async fn embedded_key_usage_rules() {
    let s = stack(Kind::Embedded);
    let (p, c) = (&s.proxy, s.proxy.client(0));
    cdiv_needs_decrypt(p, &c, Kind::Embedded).await;
    no_usage_refuses_everything(p, &c, Kind::Embedded).await;
    assert_health_active(p, &c, Kind::Embedded).await;
    list_is_the_common_table(p, Kind::Embedded, &USAGE_ROWS);
    // `none` does not combine with a usage.
    let out = p.fixture.cli(&[
        "keys",
        "--key-store",
        "main",
        "create",
        "mixed",
        "--usage",
        "none",
        "--usage",
        "encrypt",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--usage none"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pkcs11_key_usage_rules_on_softhsm() {
    let s = stack(Kind::Pkcs11);
    let (p, c) = (&s.proxy, s.proxy.client(0));
    cdiv_needs_decrypt(p, &c, Kind::Pkcs11).await;
    no_usage_refuses_everything(p, &c, Kind::Pkcs11).await;
    health_key_is_not_an_api_key(p, &c, Kind::Pkcs11).await;
    list_is_the_common_table(p, Kind::Pkcs11, &USAGE_ROWS);
    // The status overlay shows in the same column.
    p.fixture.keys("main", &["disable", DECRYPT_ONLY]);
    let mut rows = USAGE_ROWS;
    rows[0][1] = "DISABLED";
    list_is_the_common_table(p, Kind::Pkcs11, &rows);
}

#[tokio::test]
async fn transit_key_usage_rules_on_openbao() {
    let s = stack(Kind::Transit);
    let (p, c) = (&s.proxy, s.proxy.client(0));
    no_usage_refuses_everything(p, &c, Kind::Transit).await;
    health_key_is_not_an_api_key(p, &c, Kind::Transit).await;
    list_is_the_common_table(
        p,
        Kind::Transit,
        &[
            [KEY, "ENABLED", "ENCRYPT,DECRYPT", "AES_256", "1"],
            [NO_USAGE, "ENABLED", "-", "AES_256", "1"],
        ],
    );
    // Transit cannot make an encrypt-only or no-usage AES key: the CLI says so instead of
    // creating a key with both usages.
    for usage in ["encrypt", "none"] {
        let out = p.fixture.cli(&[
            "keys",
            "--key-store",
            "main",
            "create",
            "other",
            "--usage",
            usage,
        ]);
        assert!(!out.status.success(), "--usage {usage}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Transit"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = p.fixture.keys("main", &["list"]);
    assert!(!list.contains("other"), "{list}");
}
