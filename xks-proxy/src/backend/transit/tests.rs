//! Unit tests of the Transit backend's pure parts: config, ciphertext format, error
//! classification, request bodies, secrets kept out of `Debug`.

use super::*;
use super::{config::*, wire::*};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::borrow::Cow;
use std::path::PathBuf;

fn write_private(path: &Path, text: &str) {
    root_key::write_new_private_file(path, text.as_bytes()).expect("write 0600 file");
}

fn token_cfg(address: &str, token_file: &str) -> TransitConfig {
    TransitConfig {
        address: address.to_owned(),
        mount: DEFAULT_MOUNT.to_owned(),
        auth: TransitAuth::Token {
            token_file: Some(PathBuf::from(token_file)),
            token_env: None,
        },
        ca_bundle: None,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        health_key: DEFAULT_HEALTH_KEY.to_owned(),
    }
}

#[test]
fn parses_a_real_transit_ciphertext() {
    // From OpenBao 2.7.2: "hello" under a fresh aes256-gcm96 key.
    let c = parse_transit_ciphertext("vault:v1:k/CoV3TwT5WyHdM/jk1LYPpmbgv0SAxRG4Dkd9R198ft")
        .expect("parse");
    assert_eq!(c.version, 1);
    assert_eq!(c.iv.len(), 12);
    assert_eq!(c.ciphertext.len(), 5);
    assert_eq!(c.tag.len(), 16);
}

#[test]
fn format_and_parse_are_inverse() {
    let iv: Vec<u8> = (0..12).collect();
    let ct: Vec<u8> = (100..137).collect();
    let tag: Vec<u8> = (200..216).collect();
    let s = format_transit_ciphertext(42, &iv, &ct, &tag);
    assert!(s.starts_with("vault:v42:"));
    let c = parse_transit_ciphertext(&s).expect("parse");
    assert_eq!(
        c,
        TransitCiphertext {
            version: 42,
            iv: iv.clone(),
            ciphertext: ct,
            tag: tag.clone()
        }
    );
    // Empty ciphertext: nonce and tag only.
    let s = format_transit_ciphertext(7, &iv, &[], &tag);
    let c = parse_transit_ciphertext(&s).expect("parse empty");
    assert!(c.ciphertext.is_empty());
    assert_eq!(c.version, 7);
}

#[test]
fn parser_rejects_malformed_ciphertexts() {
    use CiphertextFormatError as E;
    let body28 = STANDARD.encode([0u8; 28]);
    let body27 = STANDARD.encode([0u8; 27]);
    let cases: &[(&str, E)] = &[
        ("", E::Prefix),
        ("vault:v1", E::Prefix),
        ("vault:1:AAAA", E::Prefix),
        ("vlt:v1:AAAA", E::Prefix),
        ("vault:v:AAAA", E::Version),
        ("vault:v0:AAAA", E::Version),
        ("vault:v-1:AAAA", E::Version),
        ("vault:v+1:AAAA", E::Version),
        ("vault:v 1:AAAA", E::Version),
        ("vault:v4294967296:AAAA", E::Version),
        ("vault:v1:***", E::Base64),
        ("vault:v1:AAAA AAAA", E::Base64),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_transit_ciphertext(input),
            Err(want.clone()),
            "{input}"
        );
    }
    assert_eq!(
        parse_transit_ciphertext(&format!("vault:v1:{body27}")),
        Err(E::TooShort(27))
    );
    assert!(parse_transit_ciphertext(&format!("vault:v1:{body28}")).is_ok());
    assert!(parse_transit_ciphertext(&format!("vault:v4294967295:{body28}")).is_ok());
}

#[test]
fn key_specs() {
    assert_eq!(key_spec_for("aes256-gcm96"), "AES_256");
    assert_eq!(key_spec_for("aes128-gcm96"), "AES_128");
    assert_eq!(key_spec_for("chacha20-poly1305"), "CHACHA20_POLY1305");
    assert_eq!(key_spec_for("rsa-2048"), "RSA_2048");
    assert_eq!(key_spec_for("ecdsa-p256"), "ECDSA_P256");
    assert_eq!(key_spec_for("hmac"), "HMAC");
}

#[test]
fn decrypt_errors_are_classified() {
    let c = |m| classify_decrypt_400(m, "k", 3);
    assert!(matches!(
        c("cipher: message authentication failed"),
        BackendError::InvalidCiphertext
    ));
    assert!(matches!(
        c("invalid ciphertext length"),
        BackendError::InvalidCiphertext
    ));
    assert!(matches!(
        c("invalid ciphertext: no prefix"),
        BackendError::InvalidCiphertext
    ));
    assert!(matches!(
        c("invalid ciphertext: version is too new"),
        BackendError::UnknownKeyVersion(3)
    ));
    assert!(matches!(
        c("ciphertext or signature version is disallowed by policy (too old)"),
        BackendError::UnknownKeyVersion(3)
    ));
    assert!(matches!(
        c("no such key version"),
        BackendError::UnknownKeyVersion(3)
    ));
    assert!(matches!(c("encryption key not found"), BackendError::KeyNotFound(k) if k == "k"));
    assert!(matches!(c("something else"), BackendError::Failure(_)));
}

#[test]
fn encrypt_errors_are_classified() {
    let c = |m| classify_encrypt_400(m, "k", 2);
    assert!(matches!(
        c("requested version for encryption is higher than the latest key version"),
        BackendError::Failure(m) if m.contains("key version 2")
    ));
    assert!(matches!(
        c("encryption key not found"),
        BackendError::KeyNotFound(_)
    ));
    assert!(matches!(c("plaintext too big"), BackendError::Failure(_)));
}

#[test]
fn statuses_are_mapped() {
    let body = br#"{"errors":["permission denied"]}"#;
    assert!(matches!(
        status_error(StatusCode::FORBIDDEN, body),
        BackendError::Failure(m) if m.contains("permission denied")
    ));
    assert!(matches!(
        status_error(StatusCode::TOO_MANY_REQUESTS, b"{}"),
        BackendError::Overloaded(_)
    ));
    assert!(matches!(
        status_error(StatusCode::SERVICE_UNAVAILABLE, br#"{"errors":["Vault is sealed"]}"#),
        BackendError::Failure(m) if m.contains("sealed")
    ));
    assert!(matches!(
        status_error(StatusCode::INTERNAL_SERVER_ERROR, b"not json"),
        BackendError::Failure(m) if m.contains("500") && m.contains("no error message")
    ));
}

#[test]
fn vault_messages_are_joined_and_shortened() {
    assert_eq!(vault_message(br#"{"errors":["a","b"]}"#), "a; b");
    assert_eq!(
        vault_message(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
        "permission denied"
    );
    assert_eq!(
        vault_message(br#"{"errors":["2 errors occurred:\n\t* a\n\t* b\n\n"]}"#),
        "a; b"
    );
    assert_eq!(
        detail(&BackendError::Timeout("no answer".into())),
        "no answer"
    );
    assert_eq!(
        detail(&BackendError::InvalidCiphertext),
        "ciphertext failed authentication"
    );
    let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
    let m = vault_message(long.as_bytes());
    assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS + 1);
}

#[test]
fn ignored_aad_is_refused() {
    let w = vec!["Endpoint ignored these unrecognized parameters: [associated_data]".to_owned()];
    assert!(matches!(
        check_ignored_parameters(Some(&w)),
        Err(BackendError::Failure(m)) if m.contains("1.13")
    ));
    let w = vec!["Endpoint ignored these unrecognized parameters: [key_version]".to_owned()];
    assert!(check_ignored_parameters(Some(&w)).is_err());
    let w = vec!["Endpoint ignored these unrecognized parameters: [bogus]".to_owned()];
    assert!(check_ignored_parameters(Some(&w)).is_ok());
    assert!(check_ignored_parameters(None).is_ok());
}

#[test]
fn bodies_are_valid_json() {
    let body = encrypt_body(b"secret data", b"the aad", 3);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["key_version"], 3);
    let pt = STANDARD
        .decode(v["plaintext"].as_str().expect("plaintext"))
        .expect("b64");
    assert_eq!(pt, b"secret data");
    let aad = STANDARD
        .decode(v["associated_data"].as_str().expect("aad"))
        .expect("b64");
    assert_eq!(aad, b"the aad");

    let body = decrypt_body(5, &[1; 12], &[2; 3], &[3; 16], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let c = parse_transit_ciphertext(v["ciphertext"].as_str().expect("ct")).expect("parse");
    assert_eq!(
        (c.version, c.iv, c.ciphertext, c.tag),
        (5, vec![1; 12], vec![2; 3], vec![3; 16])
    );
    assert_eq!(v["associated_data"], "");
}

#[test]
fn decrypt_answer_borrows_and_decodes() {
    let body = br#"{"data":{"plaintext":"aGVsbG8="},"warnings":null}"#;
    let r: DecryptResponse<'_> = serde_json::from_slice(body).expect("parse");
    assert!(matches!(r.data.plaintext, Cow::Borrowed(_)));
    assert_eq!(
        decode_secret(&r.data.plaintext).expect("b64").as_slice(),
        b"hello"
    );
    // An empty plaintext may come back empty or absent.
    let r: DecryptResponse<'_> = serde_json::from_slice(br#"{"data":{}}"#).expect("parse");
    assert!(decode_secret(&r.data.plaintext).expect("b64").is_empty());
    // A serde error names a position, never the content.
    let e = serde_json::from_slice::<DecryptResponse<'_>>(br#"{"data":{"plaintext":123}}"#)
        .err()
        .expect("error");
    assert!(!unreadable("decrypt", &e).to_string().contains("123"));
}

#[test]
fn sys_health_is_classified() {
    let h = |j: &str| serde_json::from_str::<SysHealth>(j).expect("json");
    let active = h(
        r#"{"initialized":true,"sealed":false,"standby":false,"version":"2.7.2","cluster_name":"c"}"#,
    );
    assert_eq!(classify_sys_health(&active), Ok(None));
    let sealed = h(r#"{"initialized":true,"sealed":true,"standby":true}"#);
    assert!(classify_sys_health(&sealed).is_err_and(|e| e.contains("sealed")));
    let uninit = h(r#"{"initialized":false,"sealed":true,"standby":true}"#);
    assert!(classify_sys_health(&uninit).is_err_and(|e| e.contains("initialized")));
    let standby = h(r#"{"initialized":true,"sealed":false,"standby":true}"#);
    assert!(matches!(classify_sys_health(&standby), Ok(Some(d)) if d.contains("standby")));
    let perf =
        h(r#"{"initialized":true,"sealed":false,"standby":true,"performance_standby":true}"#);
    assert_eq!(classify_sys_health(&perf), Ok(None));
}

#[test]
fn vendors_are_recognised() {
    assert_eq!(vendor_from_health("2.7.2", None), Some("OpenBao"));
    assert_eq!(vendor_from_health("v2.0.0-beta", None), Some("OpenBao"));
    assert_eq!(vendor_from_health("1.15.2", None), Some("HashiCorp Vault"));
    assert_eq!(
        vendor_from_health("1.21.0", Some(false)),
        Some("HashiCorp Vault")
    );
    assert_eq!(
        vendor_from_health("2.0.0+ent", None),
        Some("HashiCorp Vault")
    );
    assert_eq!(vendor_from_health("", None), None);
    assert_eq!(vendor_from_health("dev", None), None);
}

#[test]
fn names_and_mounts() {
    assert!(valid_transit_key_name("k1"));
    assert!(valid_transit_key_name("a.b-c_d"));
    assert!(valid_transit_key_name("_"));
    assert!(!valid_transit_key_name(""));
    assert!(!valid_transit_key_name("a."));
    assert!(!valid_transit_key_name("-a"));
    assert!(!valid_transit_key_name(".."));
    assert!(!valid_transit_key_name("a/b"));
    assert_eq!(mount_path("/transit/").as_deref(), Some("transit"));
    assert_eq!(mount_path("kms/transit").as_deref(), Some("kms/transit"));
    assert_eq!(mount_path("a//b"), None);
    assert_eq!(mount_path("a/../b"), None);
    assert_eq!(mount_path(""), None);
    assert_eq!(mount_path("a b"), None);
    let id = XksKeyId::parse("a.").expect("xks id");
    assert!(matches!(key_name(&id), Err(BackendError::KeyNotFound(_))));
    assert!(matches!(
        admin_key_name("a/b"),
        Err(TransitError::InvalidKeyName { .. })
    ));
    assert!(matches!(
        admin_key_name("-a"),
        Err(TransitError::InvalidKeyName { .. })
    ));
    assert_eq!(admin_key_name("ok-1").expect("valid"), "ok-1");
}

#[test]
fn config_from_toml_with_defaults() {
    let cfg: TransitConfig = toml::from_str(
        r#"
        address = "https://vault:8200"
        auth = { method = "token", token_file = "secrets/token" }
        "#,
    )
    .expect("toml");
    assert_eq!(cfg.mount, "transit");
    assert_eq!(cfg.timeout_ms, 150);
    assert_eq!(cfg.health_key, "xks-proxy-health");
    assert_eq!(cfg.ca_bundle, None);
    assert_eq!(
        cfg.auth,
        TransitAuth::Token {
            token_file: Some("secrets/token".into()),
            token_env: None
        }
    );

    let cfg: TransitConfig = toml::from_str(
        r#"
        address = "http://127.0.0.1:8200"
        mount = "kms/transit"
        ca_bundle = "ca.pem"
        timeout_ms = 200
        health_key = "hk"
        [auth]
        method = "approle"
        role_id = "r-1"
        secret_id_env = "SECRET_ID"
        "#,
    )
    .expect("toml");
    assert_eq!(
        cfg.auth,
        TransitAuth::AppRole {
            role_id: "r-1".into(),
            secret_id_file: None,
            secret_id_env: Some("SECRET_ID".into()),
            mount: "approle".into()
        }
    );
    assert_eq!(cfg.timeout_ms, 200);

    for bad in [
        r#"address = "https://v"
           auth = { method = "token", token_file = "t" }
           timeout = 5"#,
        r#"address = "https://v"
           auth = { method = "token", token_file = "t", extra = 1 }"#,
        r#"address = "https://v"
           auth = { method = "kerberos" }"#,
        r#"auth = { method = "token", token_file = "t" }"#,
    ] {
        assert!(toml::from_str::<TransitConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn config_embeds_in_a_tagged_backend_enum() {
    // The shape the proxy's config uses: `backend = { type = "…", … }`.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
    enum RawBackend {
        #[allow(dead_code)]
        Embedded {
            store: PathBuf,
        },
        Transit(TransitConfig),
    }
    #[derive(Debug, Deserialize)]
    struct Ks {
        backend: RawBackend,
    }
    let ks: Ks = toml::from_str(
        r#"backend = { type = "transit", address = "https://vault:8200", auth = { method = "token", token_env = "VAULT_TOKEN" } }"#,
    )
    .expect("toml");
    let RawBackend::Transit(cfg) = ks.backend else {
        panic!("not transit")
    };
    assert_eq!(cfg.address, "https://vault:8200");
    assert!(
        toml::from_str::<Ks>(
            r#"backend = { type = "transit", address = "https://v", bogus = 1, auth = { method = "token", token_env = "T" } }"#,
        )
        .is_err()
    );
}

#[test]
fn open_validates_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_private(&dir.path().join("token"), "s.sometoken\n");
    let open = |cfg: &TransitConfig| TransitBackend::open("ks", cfg, dir.path());

    // A relative token path is resolved against base_dir; plain http to loopback is fine.
    for address in [
        "http://127.0.0.1:8200",
        "http://localhost:8200/",
        "http://[::1]:8200",
        "https://vault.example:8200",
        "https://vault.example/prefix/",
    ] {
        open(&token_cfg(address, "token")).unwrap_or_else(|e| panic!("{address}: {e}"));
    }
    let b = open(&token_cfg("https://vault.example/prefix/", "token")).expect("open");
    assert_eq!(b.inner.base, "https://vault.example/prefix");
    assert_eq!(
        b.identity().model,
        "transit at https://vault.example/prefix/transit"
    );
    assert_eq!(b.identity().vendor, "Vault/OpenBao Transit");
    assert_eq!(b.iv_source(), IvSource::Backend);

    let problem = |cfg: TransitConfig| match open(&cfg) {
        Ok(_) => panic!("accepted {cfg:?}"),
        Err(e) => e.to_string(),
    };
    assert!(problem(token_cfg("http://vault:8200", "token")).contains("loopback"));
    assert!(problem(token_cfg("ftp://vault", "token")).contains("scheme"));
    assert!(problem(token_cfg("https://u:p@vault", "token")).contains("credentials"));
    assert!(problem(token_cfg("https://vault?x=1", "token")).contains("credentials"));
    assert!(problem(token_cfg("not a url", "token")).contains("address"));
    assert!(problem(token_cfg("https://vault", "missing")).contains("missing"));
    let mut c = token_cfg("https://vault", "token");
    c.mount = "a/../b".into();
    assert!(problem(c).contains("mount"));
    let mut c = token_cfg("https://vault", "token");
    c.health_key = "bad/key".into();
    assert!(problem(c).contains("health_key"));
    let mut c = token_cfg("https://vault", "token");
    c.timeout_ms = 0;
    assert!(problem(c).contains("timeout_ms"));
    let mut c = token_cfg("http://127.0.0.1:1", "token");
    c.ca_bundle = Some("ca.pem".into());
    assert!(problem(c).contains("ca_bundle"));
    let mut c = token_cfg("https://vault", "token");
    c.ca_bundle = Some("no-such-ca.pem".into());
    assert!(problem(c).contains("no-such-ca.pem"));
    let mut c = token_cfg("https://vault", "token");
    c.auth = TransitAuth::Token {
        token_file: Some("token".into()),
        token_env: Some("X".into()),
    };
    assert!(problem(c).contains("exactly one"));
    let mut c = token_cfg("https://vault", "token");
    c.auth = TransitAuth::Token {
        token_file: None,
        token_env: None,
    };
    assert!(problem(c).contains("exactly one"));
    let mut c = token_cfg("https://vault", "token");
    c.auth = TransitAuth::Token {
        token_file: None,
        token_env: Some("XKS_TRANSIT_TEST_SURELY_UNSET_VARIABLE".into()),
    };
    assert!(problem(c).contains("not set"));
    let mut c = token_cfg("https://vault", "token");
    c.auth = TransitAuth::AppRole {
        role_id: " ".into(),
        secret_id_file: Some("token".into()),
        secret_id_env: None,
        mount: "approle".into(),
    };
    assert!(problem(c).contains("role_id"));

    // Token files must be readable by their owner only, and not empty.
    std::fs::write(dir.path().join("open-token"), "s.x").expect("write");
    let p = problem(token_cfg("https://vault", "open-token"));
    assert!(p.contains("chmod 600"), "{p}");
    write_private(&dir.path().join("empty-token"), "\n");
    assert!(problem(token_cfg("https://vault", "empty-token")).contains("empty"));
    write_private(&dir.path().join("spaced-token"), "s.a b");
    assert!(problem(token_cfg("https://vault", "spaced-token")).contains("printable"));

    // A CA bundle is loaded through service-tls.
    let ca = service_tls::pki::CertificateAuthority::generate("Transit Test CA").expect("CA");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write CA");
    let mut c = token_cfg("https://vault", "token");
    c.ca_bundle = Some("ca.pem".into());
    open(&c).expect("open with CA bundle");
    std::fs::write(dir.path().join("bad-ca.pem"), "not a pem").expect("write");
    let mut c = token_cfg("https://vault", "token");
    c.ca_bundle = Some("bad-ca.pem".into());
    assert!(problem(c).contains("bad-ca.pem"));
}

#[test]
fn secrets_never_show_in_debug() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_private(&dir.path().join("token"), "s.SUPERSECRETTOKEN");
    write_private(&dir.path().join("sid"), "SECRETID-123");
    let b = TransitBackend::open("ks", &token_cfg("https://v", "token"), dir.path()).expect("open");
    let shown = format!("{b:?} {:?}", b.inner.token.load());
    assert!(!shown.contains("SUPERSECRET"), "{shown}");
    assert!(shown.contains("Sensitive"), "{shown}");

    let mut cfg = token_cfg("https://v", "token");
    cfg.auth = TransitAuth::AppRole {
        role_id: "ROLE-ID-XYZ".into(),
        secret_id_file: Some("sid".into()),
        secret_id_env: None,
        mount: "approle".into(),
    };
    let b = TransitBackend::open("ks", &cfg, dir.path()).expect("open");
    let shown = format!("{cfg:?} {b:?} {:?}", b.inner.auth);
    assert!(!shown.contains("SECRETID-123"), "{shown}");
    assert!(!shown.contains("ROLE-ID-XYZ"), "{shown}");
}
