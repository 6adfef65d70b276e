//! The XKS Proxy API v1 through the real `xks-proxy` binary over HTTPS: every operation's
//! success path, every error name the spec defines, the limits at and just past each
//! boundary, the order of checks, 405, 16-byte-IV ciphertexts, key disable and rotate, the
//! reference proxy's AAD variant, deep health, and the plain-HTTP opt-in.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};
use testkit::client::{XksClient, http_client};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks::{self, b64, unb64};

const KEY: &str = "key-1";

fn start_default() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("main", "/tenant-1").with_keys(&[KEY]))
        .start()
}

async fn encrypt(
    p: &RunningProxy,
    c: &XksClient,
    key: &str,
    pt: &[u8],
    aad: Option<&[u8]>,
) -> Value {
    c.post_json(
        &p.api_url(0, &format!("keys/{key}/encrypt")),
        &xks::encrypt(pt, aad, true),
    )
    .await
    .ok()
    .clone()
}

#[tokio::test]
async fn every_operation_succeeds_over_h2_and_http1() {
    let p = start_default();
    let h2 = p.client(0);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let h1 = XksClient::with_http(
        http_client(&p.fixture.pki.ca_pem, None, true),
        &akid,
        &secret,
    );
    for (c, version) in [
        (&h2, reqwest::Version::HTTP_2),
        (&h1, reqwest::Version::HTTP_11),
    ] {
        // Health: all required fields, a deep check that is ACTIVE.
        let r = c.post_json(&p.api_url(0, "health"), &xks::health()).await;
        assert_eq!(r.version, version);
        let h = r.ok();
        assert!(h["xksProxyFleetSize"].as_u64().is_some_and(|n| n >= 1));
        for f in ["xksProxyVendor", "xksProxyModel", "ekmVendor"] {
            assert!(h[f].as_str().is_some_and(|s| !s.is_empty()), "{f}");
        }
        let fleet = h["ekmFleetDetails"].as_array().expect("fleet");
        assert!((1..=10).contains(&fleet.len()));
        assert_eq!(fleet[0]["healthStatus"], "ACTIVE");
        assert!(fleet[0]["id"].is_string() && fleet[0]["model"].is_string());
        assert_eq!(r.headers["content-type"], "application/json");

        // GetKeyMetadata.
        let m = c
            .post_json(
                &p.api_url(0, &format!("keys/{KEY}/metadata")),
                &xks::metadata(),
            )
            .await;
        assert_eq!(
            m.ok(),
            &json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
        );

        // Encrypt and Decrypt, with and without AAD and CDIV.
        for aad in [None, Some(&b"project=nile"[..]), Some(&b""[..])] {
            for cdiv in [false, true] {
                let pt = testkit::random_bytes(33);
                let body = xks::encrypt(&pt, aad, cdiv);
                let e = c
                    .post_json(&p.api_url(0, &format!("keys/{KEY}/encrypt")), &body)
                    .await;
                let e = e.ok().clone();
                let ct = unb64(&e["ciphertext"]);
                let iv = unb64(&e["initializationVector"]);
                let tag = unb64(&e["authenticationTag"]);
                let cm = unb64(&e["ciphertextMetadata"]);
                assert_eq!(ct.len(), pt.len());
                assert_eq!(iv.len(), 12);
                assert_eq!(tag.len(), 16);
                assert_eq!(
                    cm,
                    vec![0x01, 0x01],
                    "format byte (spec AAD) + key version 1"
                );
                if cdiv {
                    // Recomputed independently: SHA-256(AAD || CM || IV || CT || TAG).
                    let mut h = Sha256::new();
                    h.update(aad.unwrap_or_default());
                    h.update(&cm);
                    h.update(&iv);
                    h.update(&ct);
                    h.update(&tag);
                    assert_eq!(
                        unb64(&e["ciphertextDataIntegrityValue"]),
                        h.finalize().to_vec()
                    );
                } else {
                    assert!(e.get("ciphertextDataIntegrityValue").is_none());
                }
                let d = c
                    .post_json(
                        &p.api_url(0, &format!("keys/{KEY}/decrypt")),
                        &xks::decrypt_of(&e, aad),
                    )
                    .await;
                assert_eq!(unb64(&d.ok()["plaintext"]), pt);
            }
        }
    }
}

#[tokio::test]
async fn every_encrypt_uses_a_fresh_iv() {
    let p = start_default();
    let c = p.client(0);
    let mut ivs = std::collections::HashSet::new();
    for _ in 0..50 {
        let e = encrypt(&p, &c, KEY, b"same plaintext", None).await;
        assert!(ivs.insert(unb64(&e["initializationVector"])), "IV reused");
    }
}

#[tokio::test]
async fn the_proxy_answers_the_spec_limits_at_and_past_each_boundary() {
    let p = start_default();
    let c = p.client(0);
    let enc = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let dec = p.api_url(0, &format!("keys/{KEY}/decrypt"));

    // Plaintext: the spec minimum (4300), our maximum (8192), one past it.
    for (n, ok) in [(0, true), (4300, true), (8192, true), (8193, false)] {
        let r = c
            .post_json(&enc, &xks::encrypt(&vec![7u8; n], None, false))
            .await;
        if ok {
            assert_eq!(unb64(&r.ok()["ciphertext"]).len(), n);
        } else {
            r.assert_error(501, "UnsupportedOperationException");
        }
    }
    // AAD: the spec minimum (8192), our maximum (16384), one past it; on decrypt too.
    for (n, ok) in [(8192, true), (16384, true), (16385, false)] {
        let aad = vec![1u8; n];
        let r = c
            .post_json(&enc, &xks::encrypt(b"x", Some(&aad), false))
            .await;
        if ok {
            let e = r.ok().clone();
            let d = c.post_json(&dec, &xks::decrypt_of(&e, Some(&aad))).await;
            assert_eq!(unb64(&d.ok()["plaintext"]), b"x");
        } else {
            r.assert_error(501, "UnsupportedOperationException");
            let e = encrypt(&p, &c, KEY, b"x", None).await;
            c.post_json(&dec, &xks::decrypt_of(&e, Some(&aad)))
                .await
                .assert_error(501, "UnsupportedOperationException");
        }
    }
    // Ciphertext: 4300 and 8192 decrypt; 8193 is over the maximum.
    for n in [4300, 8192] {
        let pt = testkit::random_bytes(n);
        let e = encrypt(&p, &c, KEY, &pt, None).await;
        let d = c.post_json(&dec, &xks::decrypt_of(&e, None)).await;
        assert_eq!(unb64(&d.ok()["plaintext"]), pt);
    }
    let mut e = encrypt(&p, &c, KEY, b"abc", None).await;
    e["ciphertext"] = json!(b64(&[0u8; 8193]));
    c.post_json(&dec, &xks::decrypt_of(&e, None))
        .await
        .assert_error(501, "UnsupportedOperationException");

    // IV 12/16 accepted (wrong IV then fails authentication), others rejected as invalid.
    let good = encrypt(&p, &c, KEY, b"abc", None).await;
    for (len, name) in [
        (11, "ValidationException"),
        (12, "InvalidCiphertextException"),
        (13, "ValidationException"),
        (15, "ValidationException"),
        (16, "InvalidCiphertextException"),
        (17, "ValidationException"),
    ] {
        let mut e = good.clone();
        e["initializationVector"] = json!(b64(&vec![9u8; len]));
        c.post_json(&dec, &xks::decrypt_of(&e, None))
            .await
            .assert_error(400, name);
    }
    // Tag exactly 16.
    for len in [15, 17, 0] {
        let mut e = good.clone();
        e["authenticationTag"] = json!(b64(&vec![9u8; len]));
        c.post_json(&dec, &xks::decrypt_of(&e, None))
            .await
            .assert_error(400, "ValidationException");
    }
    // Metadata at most 20 bytes: 20 passes validation (and is not ours), 21 does not.
    let mut e = good.clone();
    e["ciphertextMetadata"] = json!(b64(&[0x01; 20]));
    c.post_json(&dec, &xks::decrypt_of(&e, None))
        .await
        .assert_error(400, "InvalidCiphertextException");
    e["ciphertextMetadata"] = json!(b64(&[0x01; 21]));
    c.post_json(&dec, &xks::decrypt_of(&e, None))
        .await
        .assert_error(400, "ValidationException");
    // The original still decrypts: nothing above changed state.
    let d = c.post_json(&dec, &xks::decrypt_of(&good, None)).await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"abc");

    // A body far past any limit is refused without being read whole.
    let huge = vec![b'a'; 2 * 1024 * 1024];
    c.post_bytes(&enc, huge)
        .await
        .assert_error(501, "UnsupportedOperationException");
}

#[tokio::test]
async fn aad_up_to_65535_bytes_when_configured_and_never_beyond() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "").with_keys(&[KEY]))
        .extra("[limits]\nmax_aad_bytes = 65535\n")
        .start();
    let c = p.client(0);
    let enc = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let aad = vec![3u8; 65535];
    let e = c
        .post_json(&enc, &xks::encrypt(b"pt", Some(&aad), true))
        .await
        .ok()
        .clone();
    let d = c
        .post_json(
            &p.api_url(0, &format!("keys/{KEY}/decrypt")),
            &xks::decrypt_of(&e, Some(&aad)),
        )
        .await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"pt");
    let too_long = vec![3u8; 65536];
    c.post_json(&enc, &xks::encrypt(b"pt", Some(&too_long), false))
        .await
        .assert_error(501, "UnsupportedOperationException");
    // A config asking for more than the 2-byte length field can carry is refused at start.
    let f = ProxyFixture::new()
        .store(StoreSpec::new("main", ""))
        .extra("[limits]\nmax_aad_bytes = 65536\n");
    f.write_config();
    let out = f.cli(&["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_aad_bytes"));
}

#[tokio::test]
async fn tampering_with_any_byte_is_an_invalid_ciphertext() {
    let p = start_default();
    let c = p.client(0);
    let dec = p.api_url(0, &format!("keys/{KEY}/decrypt"));
    let aad = b"context".to_vec();
    let good = encrypt(&p, &c, KEY, b"sixteen byte msg", Some(&aad)).await;
    for field in [
        "ciphertext",
        "initializationVector",
        "authenticationTag",
        "ciphertextMetadata",
    ] {
        let bytes = unb64(&good[field]);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            let mut e = good.clone();
            e[field] = json!(b64(&t));
            c.post_json(&dec, &xks::decrypt_of(&e, Some(&aad)))
                .await
                .assert_error(400, "InvalidCiphertextException");
        }
    }
    for i in 0..aad.len() {
        let mut t = aad.clone();
        t[i] ^= 0x80;
        c.post_json(&dec, &xks::decrypt_of(&good, Some(&t)))
            .await
            .assert_error(400, "InvalidCiphertextException");
    }
    // Moving bytes between AAD and metadata, or dropping either, is detected.
    c.post_json(&dec, &xks::decrypt_of(&good, None))
        .await
        .assert_error(400, "InvalidCiphertextException");
    let mut no_meta = good.clone();
    no_meta
        .as_object_mut()
        .expect("object")
        .remove("ciphertextMetadata");
    c.post_json(&dec, &xks::decrypt_of(&no_meta, Some(&aad)))
        .await
        .assert_error(400, "InvalidCiphertextException");
    // Unknown format byte; a key version the key does not have.
    for meta in [vec![0x07, 0x01], vec![0x01, 0x09], vec![0x01, 0x81, 0x00]] {
        let mut e = good.clone();
        e["ciphertextMetadata"] = json!(b64(&meta));
        c.post_json(&dec, &xks::decrypt_of(&e, Some(&aad)))
            .await
            .assert_error(400, "InvalidCiphertextException");
    }
    let d = c.post_json(&dec, &xks::decrypt_of(&good, Some(&aad))).await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"sixteen byte msg");
}

#[tokio::test]
async fn a_ciphertext_with_a_16_byte_iv_decrypts() {
    let f = ProxyFixture::new().store(StoreSpec::new("main", ""));
    f.prepare();
    let key_file = f.path().join("key.bin");
    std::fs::write(&key_file, (0u8..32).collect::<Vec<u8>>()).expect("write");
    f.keys(
        "main",
        &[
            "import",
            "vector-key",
            "--material-file",
            key_file.to_str().expect("utf8"),
        ],
    );
    let p = RunningProxy::spawn(f);
    // Vector derived by hand with Python's `cryptography` (OpenSSL) AES-GCM, key 00..1f,
    // IV 10..1f (16 bytes), AAD per the spec with our metadata 01 01:
    // BE16(33) || "project=nile,department=marketing" || 02 || 01 01.
    let body = json!({
        "requestMetadata": xks::meta("Decrypt"),
        "ciphertext": "wj9WDIhRbMAZZ/pI",
        "ciphertextMetadata": b64(&[1, 1]),
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": b64(b"project=nile,department=marketing"),
        "initializationVector": b64(&(0x10u8..0x20).collect::<Vec<u8>>()),
        "authenticationTag": "taiPF2S6L7CJNgnhhlT5pg==",
    });
    let d = p
        .client(0)
        .post_json(&p.api_url(0, "keys/vector-key/decrypt"), &body)
        .await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"Hello World!");
}

#[tokio::test]
async fn the_reference_proxy_aad_variant_decrypts_its_ciphertexts() {
    let mut spec = StoreSpec::new("migrated", "/migrated");
    spec.aad_construction = Some("reference-digest");
    let f = ProxyFixture::new()
        .store(spec)
        .store(StoreSpec::new("plain", "/plain"));
    f.prepare();
    let key_file = f.path().join("key.bin");
    std::fs::write(&key_file, (0u8..32).collect::<Vec<u8>>()).expect("write");
    for store in ["migrated", "plain"] {
        f.keys(
            store,
            &[
                "import",
                "foo",
                "--material-file",
                key_file.to_str().expect("utf8"),
            ],
        );
    }
    let p = RunningProxy::spawn(f);
    // Vector derived by hand from the reference notes (xks-proxy-api.md §4.2) with Python's
    // `cryptography`: key 00..1f, IV 00..0b, no ciphertextMetadata (the reference's
    // default), GCM AAD = BE16(33) || SHA-256("project=nile,department=marketing") || 00.
    let body = json!({
        "requestMetadata": xks::meta("Decrypt"),
        "ciphertext": "D2e6d6rFlXT/LfOq",
        "encryptionAlgorithm": "AES_GCM",
        "additionalAuthenticatedData": b64(b"project=nile,department=marketing"),
        "initializationVector": b64(&(0u8..12).collect::<Vec<u8>>()),
        "authenticationTag": "WdOD39Mw7MOTotY7BIAKZQ==",
    });
    let migrated = p.client(0);
    let d = migrated
        .post_json(&p.api_url(0, "keys/foo/decrypt"), &body)
        .await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"Hello World!");
    // The same bytes under the spec construction do not authenticate.
    p.client(1)
        .post_json(&p.api_url(1, "keys/foo/decrypt"), &body)
        .await
        .assert_error(400, "InvalidCiphertextException");
    // New ciphertexts in the migrated store name the variant in their metadata and round-trip.
    let aad = b"ctx".to_vec();
    let e = migrated
        .post_json(
            &p.api_url(0, "keys/foo/encrypt"),
            &xks::encrypt(b"new", Some(&aad), true),
        )
        .await
        .ok()
        .clone();
    assert_eq!(unb64(&e["ciphertextMetadata"]), vec![0x02, 0x01]);
    let d = migrated
        .post_json(
            &p.api_url(0, "keys/foo/decrypt"),
            &xks::decrypt_of(&e, Some(&aad)),
        )
        .await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"new");
    // And because the metadata names the construction, the other store decrypts them too.
    let d = p
        .client(1)
        .post_json(
            &p.api_url(1, "keys/foo/decrypt"),
            &xks::decrypt_of(&e, Some(&aad)),
        )
        .await;
    assert_eq!(unb64(&d.ok()["plaintext"]), b"new");
}

#[tokio::test]
async fn disable_enable_and_rotate_take_effect_without_restart() {
    let p = start_default();
    let c = p.client(0);
    let f = &p.fixture;
    let meta_url = p.api_url(0, &format!("keys/{KEY}/metadata"));
    let dec = p.api_url(0, &format!("keys/{KEY}/decrypt"));
    let v1 = encrypt(&p, &c, KEY, b"made with v1", None).await;

    f.keys("main", &["disable", KEY]);
    let m = c.post_json(&meta_url, &xks::metadata()).await;
    assert_eq!(m.ok()["keyStatus"], "DISABLED");
    c.post_json(
        &p.api_url(0, &format!("keys/{KEY}/encrypt")),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(400, "InvalidStateException");
    c.post_json(&dec, &xks::decrypt_of(&v1, None))
        .await
        .assert_error(400, "InvalidStateException");

    f.keys("main", &["enable", KEY]);
    assert_eq!(
        c.post_json(&meta_url, &xks::metadata()).await.ok()["keyStatus"],
        "ENABLED"
    );

    let out = f.keys("main", &["rotate", KEY]);
    assert!(out.contains("version 2"), "{out}");
    let v2 = encrypt(&p, &c, KEY, b"made with v2", None).await;
    assert_eq!(unb64(&v2["ciphertextMetadata"]), vec![0x01, 0x02]);
    for (e, pt) in [(&v1, &b"made with v1"[..]), (&v2, &b"made with v2"[..])] {
        let d = c.post_json(&dec, &xks::decrypt_of(e, None)).await;
        assert_eq!(unb64(&d.ok()["plaintext"]), pt);
    }
    // A key created while the server runs is served at once.
    f.keys("main", &["create", "late-key"]);
    encrypt(&p, &c, "late-key", b"hi", None).await;
    // The CLI never prints key material: list/show output carries no 32-byte base64 blobs.
    let listing = f.keys("main", &["list", "--json"]);
    let v: Value = serde_json::from_str(&listing).expect("json");
    let ids: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["keyId"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![KEY, "late-key"],
        "only the configured keys, no health-check key"
    );
    assert_eq!(v[0]["currentVersion"], 2);
    let show = f.keys("main", &["show", KEY]);
    assert!(!show.contains("material"), "{show}");
}

#[tokio::test]
async fn every_error_name_of_the_spec_is_produced_by_the_server() {
    let mut faulty =
        StoreSpec::new("faulty", "/faulty").with_keys(&["broken", "slow", "busy", "fine"]);
    faulty.fault_injection = Some(
        "failing_keys = [\"broken\"]\nslow_keys = [\"slow\"]\nslow_ms = 1000\noverloaded_keys = [\"busy\"]".into(),
    );
    let mut limited = StoreSpec::new("limited", "/limited").with_keys(&[KEY]);
    limited.requests_per_second = Some(5);
    let mut f = ProxyFixture::new()
        .store(StoreSpec::new("main", "/main").with_keys(&[KEY]))
        .store(faulty)
        .store(limited);
    f.policy = Some(
        "[[allow]]\nname = \"alice\"\nprincipals = [\"arn:aws:iam::111122223333:user/Alice\"]\n"
            .into(),
    );
    f.prepare();
    f.keys("main", &["create", "decrypt-only", "--usage", "decrypt"]);
    f.keys("main", &["create", "encrypt-only", "--usage", "encrypt"]);
    f.keys("main", &["create", "off", "--disabled"]);
    let p = RunningProxy::spawn(f);
    let c = p.client(0);
    let url = |key: &str, op: &str| p.api_url(0, &format!("keys/{key}/{op}"));
    let mut seen = std::collections::BTreeSet::new();

    // 400 ValidationException: malformed JSON, wrong types, missing fields, bad base64.
    for body in [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"requestMetadata": xks::meta("Encrypt"), "encryptionAlgorithm": "AES_GCM"}).to_string(),
        json!({"requestMetadata": xks::meta("Encrypt"), "plaintext": 5, "encryptionAlgorithm": "AES_GCM"}).to_string(),
        json!({"requestMetadata": xks::meta("Encrypt"), "plaintext": "not base64!", "encryptionAlgorithm": "AES_GCM"}).to_string(),
        json!({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "Encrypt", "kmsKeyArn": "k"}, "plaintext": "AA==", "encryptionAlgorithm": "AES_GCM"}).to_string(),
    ] {
        c.post_bytes(&url(KEY, "encrypt"), body.into_bytes())
            .await
            .assert_error(400, "ValidationException");
    }
    c.post_json(&p.api_url(0, "health"), &json!({}))
        .await
        .assert_error(400, "ValidationException");
    seen.insert("ValidationException");

    // 400 InvalidStateException.
    c.post_json(&url("off", "encrypt"), &xks::encrypt(b"x", None, false))
        .await
        .assert_error(400, "InvalidStateException");
    seen.insert("InvalidStateException");

    // 400 InvalidCiphertextException.
    let mut e = encrypt(&p, &c, KEY, b"x", None).await;
    e["authenticationTag"] = json!(b64(&[0u8; 16]));
    c.post_json(&url(KEY, "decrypt"), &xks::decrypt_of(&e, None))
        .await
        .assert_error(400, "InvalidCiphertextException");
    seen.insert("InvalidCiphertextException");

    // 400 InvalidKeyUsageException, both directions.
    c.post_json(
        &url("decrypt-only", "encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    // An Encrypt with a CDIV needs DECRYPT too (the proxy decrypts to verify); without one
    // an encrypt-only key encrypts.
    c.post_json(
        &url("encrypt-only", "encrypt"),
        &xks::encrypt(b"x", None, true),
    )
    .await
    .assert_error(400, "InvalidKeyUsageException");
    let e = c
        .post_json(
            &url("encrypt-only", "encrypt"),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .ok()
        .clone();
    c.post_json(&url("encrypt-only", "decrypt"), &xks::decrypt_of(&e, None))
        .await
        .assert_error(400, "InvalidKeyUsageException");
    let m = c
        .post_json(&url("decrypt-only", "metadata"), &xks::metadata())
        .await;
    assert_eq!(m.ok()["keyUsage"], json!(["DECRYPT"]));
    seen.insert("InvalidKeyUsageException");

    // 401 AuthenticationFailedException: unsigned, wrong secret, unknown access key id.
    c.send_unsigned("POST", &url(KEY, "encrypt"), b"{}".to_vec())
        .await
        .assert_error(401, "AuthenticationFailedException");
    let (akid, _) = p.fixture.stores[0].credentials[0].clone();
    c.clone()
        .with_credential(&akid, &testkit::random_secret())
        .post_json(&url(KEY, "encrypt"), &xks::encrypt(b"x", None, false))
        .await
        .assert_error(401, "AuthenticationFailedException");
    c.clone()
        .with_credential(&testkit::random_access_key_id(), &testkit::random_secret())
        .post_json(&url(KEY, "encrypt"), &xks::encrypt(b"x", None, false))
        .await
        .assert_error(401, "AuthenticationFailedException");
    seen.insert("AuthenticationFailedException");

    // 403 AccessDeniedException: secondary authorization (another principal).
    let mut body = xks::encrypt(b"x", None, false);
    body["requestMetadata"]["awsPrincipalArn"] = json!("arn:aws:iam::111122223333:user/Mallory");
    c.post_json(&url(KEY, "encrypt"), &body)
        .await
        .assert_error(403, "AccessDeniedException");
    seen.insert("AccessDeniedException");

    // 404 KeyNotFoundException and InvalidUriPathException.
    c.post_json(
        &url("no-such-key", "encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(404, "KeyNotFoundException");
    seen.insert("KeyNotFoundException");
    c.post_json(
        &p.api_url(1, "keys/broken/encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(404, "InvalidUriPathException");
    seen.insert("InvalidUriPathException");

    // 429 ThrottlingException: over the store's quota, and a backend that is overloaded.
    let limited = p.client(2);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = limited
            .post_json(
                &p.api_url(2, &format!("keys/{KEY}/metadata")),
                &xks::metadata(),
            )
            .await;
        if r.status == 429 {
            r.assert_error(429, "ThrottlingException");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    // Health is exempt from the quota.
    limited
        .post_json(&p.api_url(2, "health"), &xks::health())
        .await
        .ok();
    let faulty = p.client(1);
    faulty
        .post_json(
            &p.api_url(1, "keys/busy/encrypt"),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .assert_error(429, "ThrottlingException");
    seen.insert("ThrottlingException");

    // 501 UnsupportedOperationException: unknown algorithms, sizes over the maximum.
    let mut body = xks::encrypt(b"x", None, false);
    body["encryptionAlgorithm"] = json!("AES_CBC");
    c.post_json(&url(KEY, "encrypt"), &body)
        .await
        .assert_error(501, "UnsupportedOperationException");
    let mut body = xks::encrypt(b"x", None, false);
    body["ciphertextDataIntegrityValueAlgorithm"] = json!("MD5");
    c.post_json(&url(KEY, "encrypt"), &body)
        .await
        .assert_error(501, "UnsupportedOperationException");
    seen.insert("UnsupportedOperationException");

    // 503 DependencyTimeoutException: a backend slower than the 200 ms deadline.
    faulty
        .post_json(
            &p.api_url(1, "keys/slow/encrypt"),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .assert_error(503, "DependencyTimeoutException");
    seen.insert("DependencyTimeoutException");

    // 500 InternalException: a backend failure.
    faulty
        .post_json(
            &p.api_url(1, "keys/broken/encrypt"),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .assert_error(500, "InternalException");
    seen.insert("InternalException");
    // The faulty store still serves its healthy key.
    encrypt_ok(&faulty, &p.api_url(1, "keys/fine/encrypt")).await;

    let all: std::collections::BTreeSet<&str> =
        xks_api::ErrorName::ALL.iter().map(|n| n.as_str()).collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "error names never produced: {missing:?}"
    );
}

async fn encrypt_ok(c: &XksClient, url: &str) {
    c.post_json(url, &xks::encrypt(b"x", None, false))
        .await
        .ok();
}

#[tokio::test]
async fn checks_run_in_the_specified_order() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("a", "/a").with_keys(&[KEY]))
        .store(StoreSpec::new("b", "/b").with_keys(&[KEY]))
        .start();
    let a = p.client(0);
    let enc_a = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    // 1. GET on an API URI → 405 before anything else (no signature, bad signature, valid one).
    for r in [
        a.send_unsigned("GET", &enc_a, vec![]).await,
        a.send_unsigned("GET", &p.api_url(0, "health"), vec![])
            .await,
        a.send_unsigned(
            "GET",
            &format!("{}/unknown/kms/xks/v1/health", p.base_url()),
            vec![],
        )
        .await,
        a.send("GET", &enc_a, vec![], SystemTime::now(), |_, _| {})
            .await,
        a.send("PUT", &enc_a, vec![], SystemTime::now(), |_, _| {})
            .await,
    ] {
        assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(&r.raw));
        assert_eq!(r.headers["allow"], "POST");
    }
    // 2. Unknown credential or bad signature → 401, whatever the path.
    let stranger = a
        .clone()
        .with_credential(&testkit::random_access_key_id(), &testkit::random_secret());
    for path in [
        enc_a.clone(),
        format!("{}/nope/kms/xks/v1/health", p.base_url()),
        format!("{}/x", p.base_url()),
    ] {
        stranger
            .post_json(&path, &xks::health())
            .await
            .assert_error(401, "AuthenticationFailedException");
    }
    // 3. Valid credential, path outside its key store → 404 InvalidUriPathException.
    for path in [
        p.api_url(1, "health"),
        p.api_url(1, &format!("keys/{KEY}/encrypt")),
        format!("{}/a/other", p.base_url()),
    ] {
        a.post_json(&path, &xks::encrypt(b"x", None, false))
            .await
            .assert_error(404, "InvalidUriPathException");
    }
    // 4. Own store, key it does not have → 404 KeyNotFoundException (also for ids no key can have).
    for key in ["missing", "bad%20id", &"k".repeat(129)] {
        a.post_json(
            &p.api_url(0, &format!("keys/{key}/encrypt")),
            &xks::encrypt(b"x", None, false),
        )
        .await
        .assert_error(404, "KeyNotFoundException");
    }
}

#[tokio::test]
async fn signatures_bind_every_signed_element() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("a", "/a").with_keys(&[KEY]))
        .start();
    let c = p.client(0);
    let url = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let body = xks::encrypt(b"x", None, false).to_string().into_bytes();
    let now = SystemTime::now();
    // Untampered: accepted.
    assert_eq!(
        c.send("POST", &url, body.clone(), now, |_, _| {})
            .await
            .status,
        200
    );
    // One body byte.
    c.send("POST", &url, body.clone(), now, |_, b| {
        let i = b.len() - 3;
        b[i] ^= 1;
    })
    .await
    .assert_error(401, "AuthenticationFailedException");
    // The date (the signature was made for another second).
    c.send("POST", &url, body.clone(), now, |parts, _| {
        parts.headers.insert(
            "x-amz-date",
            http::HeaderValue::from_static("20260101T000000Z"),
        );
    })
    .await
    .assert_error(401, "AuthenticationFailedException");
    // A signed header's value.
    c.send("POST", &url, body.clone(), now, |parts, _| {
        parts
            .headers
            .insert("content-type", http::HeaderValue::from_static("text/plain"));
    })
    .await
    .assert_error(401, "AuthenticationFailedException");
    // Outside the ±5 min skew window, even with a valid signature.
    for skew in [Duration::from_secs(310), Duration::from_secs(3600)] {
        c.send("POST", &url, body.clone(), now - skew, |_, _| {})
            .await
            .assert_error(401, "AuthenticationFailedException");
        c.send("POST", &url, body.clone(), now + skew, |_, _| {})
            .await
            .assert_error(401, "AuthenticationFailedException");
    }
    assert_eq!(
        c.send(
            "POST",
            &url,
            body.clone(),
            now - Duration::from_secs(290),
            |_, _| {}
        )
        .await
        .status,
        200
    );
    // Another service in the scope.
    let mut other = c.clone();
    other.service = "kms".into();
    other
        .post_json(&url, &xks::encrypt(b"x", None, false))
        .await
        .assert_error(401, "AuthenticationFailedException");
}

#[tokio::test]
async fn accepted_regions_are_enforced() {
    let mut spec = StoreSpec::new("eu", "").with_keys(&[KEY]);
    spec.regions = vec!["eu-west-1".into(), "eu-central-1".into()];
    let p = ProxyFixture::new().store(spec).start();
    let c = p.client(0);
    for (region, status) in [
        ("eu-west-1", 200),
        ("eu-central-1", 200),
        ("us-east-1", 401),
    ] {
        let r = c
            .clone()
            .in_region(region)
            .post_json(&p.api_url(0, "health"), &xks::health())
            .await;
        assert_eq!(
            r.status,
            status,
            "{region}: {}",
            String::from_utf8_lossy(&r.raw)
        );
    }
}

#[tokio::test]
async fn unknown_fields_and_future_kms_operations_are_accepted() {
    let p = start_default();
    let c = p.client(0);
    let mut body = xks::encrypt(b"x", None, false);
    body["requestMetadata"]["kmsOperation"] = json!("SomeFutureOperation");
    body["requestMetadata"]["awsSourceVpc"] = json!("vpc-123");
    body["requestMetadata"]["sourceIdentity"] = json!({"nested": true});
    body["futureField"] = json!([1, 2, 3]);
    body["requestMetadata"]["awsPrincipalArn"] = json!(format!(
        "arn:aws:iam::111122223333:role/{}",
        "r".repeat(2000)
    ));
    c.post_json(&p.api_url(0, &format!("keys/{KEY}/encrypt")), &body)
        .await
        .ok();
}

#[tokio::test]
async fn deep_health_reports_degraded_and_unavailable() {
    let mut failing = StoreSpec::new("down", "/down");
    failing.fault_injection = Some("failing_health = true".into());
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "/main").with_keys(&[KEY]))
        .store(failing)
        .extra("[health]\ncache_seconds = 0\n")
        .start();
    let c = p.client(0);
    let status = |v: &Value| {
        v["ekmFleetDetails"][0]["healthStatus"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        status(
            c.post_json(&p.api_url(0, "health"), &xks::health())
                .await
                .ok()
        ),
        "ACTIVE"
    );
    let down = p
        .client(1)
        .post_json(&p.api_url(1, "health"), &xks::health())
        .await;
    assert_eq!(status(down.ok()), "UNAVAILABLE");

    // The store file becomes unreadable: the proxy keeps serving from the last good copy and
    // says it is impaired.
    let store = p.fixture.store_file(0);
    let saved = std::fs::read(&store).expect("read store");
    std::fs::write(&store, b"garbage").expect("corrupt store");
    assert_eq!(
        status(
            c.post_json(&p.api_url(0, "health"), &xks::health())
                .await
                .ok()
        ),
        "DEGRADED"
    );
    encrypt(&p, &c, KEY, b"still served", None).await;
    std::fs::write(&store, saved).expect("restore");
    assert_eq!(
        status(
            c.post_json(&p.api_url(0, "health"), &xks::health())
                .await
                .ok()
        ),
        "ACTIVE"
    );
}

#[tokio::test]
async fn health_results_are_cached_within_the_configured_age() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "").with_keys(&[KEY]))
        .extra("[health]\ncache_seconds = 60\n")
        .start();
    let c = p.client(0);
    let status = |v: &Value| {
        v["ekmFleetDetails"][0]["healthStatus"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        status(
            c.post_json(&p.api_url(0, "health"), &xks::health())
                .await
                .ok()
        ),
        "ACTIVE"
    );
    std::fs::write(p.fixture.store_file(0), b"garbage").expect("corrupt");
    // Within 60 s the cached deep-check result is answered.
    assert_eq!(
        status(
            c.post_json(&p.api_url(0, "health"), &xks::health())
                .await
                .ok()
        ),
        "ACTIVE"
    );
}

#[tokio::test]
async fn plain_http_only_by_explicit_opt_in_and_with_a_warning() {
    let mut f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    f.plaintext_http = true;
    let p = f.start();
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let c = XksClient::with_http(reqwest::Client::new(), &akid, &secret);
    let r = c
        .post_json(
            &format!("{}/kms/xks/v1/health", p.base_url()),
            &xks::health(),
        )
        .await;
    r.ok();
    assert!(p.logs().contains("serving plain HTTP"), "{}", p.logs());

    // Without TLS and without the opt-in, the proxy refuses to start.
    let f = ProxyFixture::new().store(StoreSpec::new("main", ""));
    f.write_config();
    let text = std::fs::read_to_string(f.config_path()).expect("read");
    let without_tls = text.replace(
        "[server.tls]\ncertificate_chain = \"tls/server.pem\"\nprivate_key = \"tls/server.key\"\n",
        "",
    );
    std::fs::write(f.config_path(), without_tls).expect("write");
    let out = f.cli(&["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_plaintext_http"));
}

#[tokio::test]
async fn key_stores_are_isolated() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("a", "/org/a").with_keys(&["only-in-a"]))
        .store(StoreSpec::new("b", "/org/b").with_keys(&["only-in-b"]))
        .start();
    let (a, b) = (p.client(0), p.client(1));
    encrypt_ok(&a, &p.api_url(0, "keys/only-in-a/encrypt")).await;
    encrypt_ok(&b, &p.api_url(1, "keys/only-in-b/encrypt")).await;
    a.post_json(
        &p.api_url(0, "keys/only-in-b/encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(404, "KeyNotFoundException");
    // A ciphertext of store a is not decryptable in store b even under the same key id name.
    b.post_json(
        &p.api_url(0, "keys/only-in-a/encrypt"),
        &xks::encrypt(b"x", None, false),
    )
    .await
    .assert_error(404, "InvalidUriPathException");
}
