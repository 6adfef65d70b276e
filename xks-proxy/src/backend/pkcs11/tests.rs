//! Unit tests of the pure parts, and tests against a throw-away SoftHSMv2 token.
//!
//! SoftHSM reads `SOFTHSM2_CONF` from the process environment, and setting it in this
//! process would need `unsafe` (`std::env::set_var`). So each SoftHSM test, run normally,
//! makes a token with testkit's [`SoftHsm`] and runs *itself* again in a child process
//! ([`SoftHsm::run_test_in_child`]: this test binary, filtered to the one test, with
//! `SOFTHSM2_CONF` set); the child ([`SoftHsmChild::current`]) runs the body. The parent
//! fails if SoftHSM is missing or the child fails.

use super::*;
use super::{admin::*, ckr::*, config::*, copies::*, gcm::*, keys::*};
use crate::keystore::KeyUsages;
use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::kms_backends::{
    SOFTHSM_MODULE, SOFTHSM_TOKEN_LABEL, SOFTHSM_USER_PIN, SoftHsm, SoftHsmChild,
};
use xks_api::XksKeyId;
use xks_api::types::{HealthStatus, KeyStatus};
use zeroize::Zeroizing;

// -- unit tests (no HSM) ------------------------------------------------------------------

#[test]
fn ckr_names() {
    assert_eq!(ckr_name(RvError::GeneralError), "CKR_GENERAL_ERROR");
    assert_eq!(
        ckr_name(RvError::KeyFunctionNotPermitted),
        "CKR_KEY_FUNCTION_NOT_PERMITTED"
    );
    assert_eq!(
        ckr_name(RvError::CryptokiNotInitialized),
        "CKR_CRYPTOKI_NOT_INITIALIZED"
    );
    assert_eq!(
        ckr_name(RvError::EncryptedDataInvalid),
        "CKR_ENCRYPTED_DATA_INVALID"
    );
    assert_eq!(ckr_name(RvError::VendorDefined(0x8000_0101)), "0x80000101");
    let e = CkError::Pkcs11(RvError::GeneralError, Function::Decrypt);
    assert_eq!(describe(&e), "CKR_GENERAL_ERROR in C_Decrypt");
}

#[test]
fn capabilities_defaults_and_bad_tag_names() {
    let c = HsmCapabilities::default();
    assert_eq!(c.iv, IvStrategy::ProxySupplied);
    assert!(c.tag_appended);
    assert!(c.is_bad_tag("CKR_GENERAL_ERROR"));
    assert!(c.is_bad_tag("CKR_ENCRYPTED_DATA_INVALID"));
    assert!(c.is_bad_tag("CKR_FUNCTION_FAILED"));
    assert!(!c.is_bad_tag("CKR_DEVICE_ERROR"));
    let c = HsmCapabilities {
        bad_tag_errors: vec!["ckr_general_error".into(), "0x80000101".into()],
        ..HsmCapabilities::default()
    };
    assert!(c.is_bad_tag("CKR_GENERAL_ERROR"));
    assert!(c.is_bad_tag(&ckr_name(RvError::VendorDefined(0x8000_0101))));
    assert!(c.validate().is_ok());
    let bad = HsmCapabilities {
        bad_tag_errors: vec!["GENERAL_ERROR".into()],
        ..HsmCapabilities::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn iv_source_follows_the_strategy() {
    let mut c = HsmCapabilities::default();
    assert_eq!(c.iv_source(), IvSource::Proxy);
    c.iv = IvStrategy::HsmGenerated;
    assert_eq!(c.iv_source(), IvSource::Backend);
    c.iv = IvStrategy::ZeroIvFilledByHsm;
    assert_eq!(c.iv_source(), IvSource::Backend);
}

#[test]
fn config_pieces_deserialize_from_toml() {
    #[derive(Deserialize)]
    struct Doc {
        token: TokenSelector,
        other: TokenSelector,
        capabilities: HsmCapabilities,
    }
    let d: Doc = toml::from_str(
        r#"
        token = { label = "xks" }
        other = { slot-id = 7 }
        [capabilities]
        iv = "zero-iv-filled-by-hsm"
        tag_appended = false
        "#,
    )
    .expect("toml");
    assert_eq!(d.token, TokenSelector::Label("xks".into()));
    assert_eq!(d.other, TokenSelector::SlotId(7));
    assert_eq!(d.capabilities.iv, IvStrategy::ZeroIvFilledByHsm);
    assert!(!d.capabilities.tag_appended);
    assert_eq!(
        d.capabilities.bad_tag_errors,
        HsmCapabilities::default().bad_tag_errors
    );
    let c: HsmCapabilities = toml::from_str(r#"iv = "hsm-generated""#).expect("toml");
    assert_eq!(c.iv, IvStrategy::HsmGenerated);
    let c: HsmCapabilities = toml::from_str(r#"iv = "proxy-supplied""#).expect("toml");
    assert_eq!(c.iv, IvStrategy::ProxySupplied);
    assert!(toml::from_str::<HsmCapabilities>("can_generate_iv = true").is_err());
    assert!(toml::from_str::<HsmCapabilities>(r#"iv = "luna""#).is_err());
}

#[test]
fn config_debug_hides_the_pin() {
    let cfg = Pkcs11Config::new(
        SOFTHSM_MODULE,
        TokenSelector::Label(SOFTHSM_TOKEN_LABEL.into()),
        SecretString::from("s3cret-pin-9431"),
    );
    let d = format!("{cfg:?}");
    assert!(!d.contains("s3cret-pin-9431"), "{d}");
    assert!(d.contains("REDACTED"), "{d}");
    assert_eq!(cfg.pool_size, 8);
    assert_eq!(cfg.session_wait, Duration::from_millis(50));
    assert_eq!(cfg.health_key_label, "xks-proxy-health");
}

#[test]
fn config_validation() {
    let mut cfg = Pkcs11Config::new("/x.so", TokenSelector::SlotId(0), "1".into());
    cfg.pool_size = 0;
    assert!(matches!(cfg.validate(), Err(Pkcs11Error::Config(_))));
    cfg.pool_size = 1;
    cfg.health_key_label.clear();
    assert!(matches!(cfg.validate(), Err(Pkcs11Error::Config(_))));
}

#[test]
fn missing_module_is_an_open_error() {
    let cfg = Pkcs11Config::new(
        "/nonexistent/libnothing-pkcs11.so",
        TokenSelector::Label("t".into()),
        "1".into(),
    );
    match Pkcs11Backend::open("ks", cfg) {
        Err(Pkcs11Error::Module { path, .. }) => {
            assert_eq!(path, Path::new("/nonexistent/libnothing-pkcs11.so"));
        }
        other => panic!("expected a module error, got {other:?}"),
    }
}

#[test]
fn key_specs() {
    assert_eq!(key_spec(Some(KeyType::AES), Some(32)), "AES_256");
    assert_eq!(key_spec(Some(KeyType::AES), Some(16)), "AES_128");
    assert_eq!(
        key_spec(Some(KeyType::GENERIC_SECRET), Some(32)),
        "GENERIC_SECRET_256"
    );
    assert_eq!(key_spec(Some(KeyType::DES3), None), "DES3_192");
    assert_eq!(key_spec(None, None), "UNKNOWN_0");
}

fn sample(pt: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ct: Vec<u8> = (0..pt).map(|i| i as u8).collect();
    let tag: Vec<u8> = (0..16).map(|i| 0xA0 + i as u8).collect();
    let iv: Vec<u8> = (0..12).map(|i| 0x50 + i as u8).collect();
    (ct, tag, iv)
}

#[test]
fn split_tag_both_orders() {
    let (ct, tag, _) = sample(5);
    let (c, t) = split_tag(&[ct.clone(), tag.clone()].concat(), 5, true).expect("split");
    assert_eq!((c, t), (ct.clone(), tag.clone()));
    let (c, t) = split_tag(&[tag.clone(), ct.clone()].concat(), 5, false).expect("split");
    assert_eq!((c, t), (ct.clone(), tag.clone()));
    assert_eq!(
        join_tag(&ct, &tag, true),
        [ct.clone(), tag.clone()].concat()
    );
    assert_eq!(
        join_tag(&ct, &tag, false),
        [tag.clone(), ct.clone()].concat()
    );
    assert!(split_tag(&ct, 5, true).is_err());
    // Empty plaintext: the output is just the tag.
    let (c, t) = split_tag(&tag, 0, true).expect("split");
    assert!(c.is_empty());
    assert_eq!(t, tag);
}

#[test]
fn luna_shape_ciphertext_tag_iv() {
    let (ct, tag, iv) = sample(32);
    let out = [ct.clone(), tag.clone(), iv.clone()].concat();
    let e = parse_hsm_generated_output(&out, 32, true).expect("parse");
    assert_eq!(
        (e.ciphertext, e.tag, e.iv),
        (ct.clone(), tag.clone(), iv.clone())
    );
    // Tag first.
    let out = [tag.clone(), ct.clone(), iv.clone()].concat();
    let e = parse_hsm_generated_output(&out, 32, false).expect("parse");
    assert_eq!(
        (e.ciphertext, e.tag, e.iv),
        (ct.clone(), tag.clone(), iv.clone())
    );
    // A 16-byte IV is allowed by XKS.
    let iv16 = [iv.clone(), vec![1, 2, 3, 4]].concat();
    let e = parse_hsm_generated_output(&[ct.clone(), tag.clone(), iv16.clone()].concat(), 32, true)
        .expect("parse");
    assert_eq!(e.iv, iv16);
    // No IV appended (the HSM ignored the request), a truncated one, or too short output.
    assert!(parse_hsm_generated_output(&[ct.clone(), tag.clone()].concat(), 32, true).is_err());
    assert!(
        parse_hsm_generated_output(
            &[ct.clone(), tag.clone(), iv[..8].to_vec()].concat(),
            32,
            true
        )
        .is_err()
    );
    assert!(parse_hsm_generated_output(&ct, 32, true).is_err());
    // An all-zero IV is refused.
    assert!(parse_hsm_generated_output(&[ct, tag, vec![0; 12]].concat(), 32, true).is_err());
}

#[test]
fn cloudhsm_shape_iv_written_into_the_buffer() {
    let (ct, tag, iv) = sample(7);
    let out = [ct.clone(), tag.clone()].concat();
    let e = parse_zero_iv_output(&out, &iv, 7, true).expect("parse");
    assert_eq!((e.ciphertext, e.tag, e.iv), (ct, tag, iv.clone()));
    // The HSM did not fill the buffer: never return a zero IV.
    let err = parse_zero_iv_output(&out, &[0; 12], 7, true).expect_err("zero iv");
    assert!(err.to_string().contains("all-zero IV"), "{err}");
    // Wrong sizes.
    assert!(parse_zero_iv_output(&out, &iv[..8], 7, true).is_err());
    assert!(parse_zero_iv_output(&[out, iv.clone()].concat(), &iv, 7, true).is_err());
}

// -- SoftHSM harness ----------------------------------------------------------------------

/// Runs `body` in a child process that sees a fresh SoftHSM token.
fn with_softhsm(test: &str, body: impl FnOnce()) {
    if SoftHsmChild::current().is_some() {
        body();
        return;
    }
    let path = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    SoftHsm::new().run_test_in_child(&format!("{path}::{test}"));
}

fn config(pool: usize, wait: Duration) -> Pkcs11Config {
    let mut c = Pkcs11Config::new(
        SOFTHSM_MODULE,
        TokenSelector::Label(SOFTHSM_TOKEN_LABEL.into()),
        SecretString::from(SOFTHSM_USER_PIN),
    );
    c.pool_size = pool;
    c.session_wait = wait;
    c
}

fn open(pool: usize, wait: Duration) -> Pkcs11Backend {
    Pkcs11Backend::open("test-store", config(pool, wait)).expect("open the SoftHSM token")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn kid(s: &str) -> XksKeyId {
    XksKeyId::parse(s).expect("key id")
}

fn random_iv() -> [u8; 12] {
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv).expect("rng");
    iv
}

async fn enc(
    b: &Pkcs11Backend,
    key: &str,
    aad: &[u8],
    pt: &[u8],
) -> Result<EncryptOutput, BackendError> {
    let id = kid(key);
    b.encrypt(EncryptInput {
        key_id: &id,
        version: 1,
        iv: Some(random_iv()),
        aad,
        plaintext: pt,
    })
    .await
}

async fn dec(
    b: &Pkcs11Backend,
    key: &str,
    aad: &[u8],
    out: &EncryptOutput,
) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    let id = kid(key);
    b.decrypt(DecryptInput {
        key_id: &id,
        version: 1,
        iv: &out.iv,
        aad,
        ciphertext: &out.ciphertext,
        tag: &out.tag,
    })
    .await
}

/// Creates an object with a raw template (for keys the admin helpers would not make).
fn raw_create(b: &Pkcs11Backend, template: Vec<Attribute>) {
    b.admin(|s| {
        s.create_object(&template)
            .map_err(call_failed("C_CreateObject"))
    })
    .expect("create object");
}

// -- SoftHSM tests ------------------------------------------------------------------------

#[test]
fn softhsm_round_trip_with_aad() {
    with_softhsm("softhsm_round_trip_with_aad", || {
        let b = open(4, DEFAULT_SESSION_WAIT);
        b.create_key("k1").expect("create");
        assert_eq!(b.iv_source(), IvSource::Proxy);
        rt().block_on(async {
            let info = b.key_info(&kid("k1")).await.expect("key info");
            assert_eq!(info.key_spec, "AES_256");
            assert_eq!(info.status, KeyStatus::Enabled);
            assert_eq!(info.usages, KeyUsages::BOTH);
            assert_eq!(info.current_version, 1);

            let aad = b"\x00\x05hello\x01\x01";
            let pt = b"thirty-two bytes of data key....";
            let out = enc(&b, "k1", aad, pt).await.expect("encrypt");
            assert_eq!(out.ciphertext.len(), pt.len());
            assert_eq!(out.iv.len(), 12);
            assert_eq!(out.tag.len(), 16);
            assert_ne!(&out.ciphertext[..], &pt[..]);
            let back = dec(&b, "k1", aad, &out).await.expect("decrypt");
            assert_eq!(&back[..], &pt[..]);
            // Empty plaintext and empty AAD.
            let out = enc(&b, "k1", b"", b"").await.expect("encrypt empty");
            assert!(out.ciphertext.is_empty());
            assert!(dec(&b, "k1", b"", &out).await.expect("decrypt").is_empty());

            assert!(matches!(
                b.key_info(&kid("nope")).await,
                Err(BackendError::KeyNotFound(k)) if k == "nope"
            ));
            assert!(matches!(
                enc(&b, "nope", b"", b"x").await,
                Err(BackendError::KeyNotFound(_))
            ));
            let out = enc(&b, "k1", b"", b"x").await.expect("encrypt");
            let id = kid("k1");
            let r = b
                .decrypt(DecryptInput {
                    key_id: &id,
                    version: 2,
                    iv: &out.iv,
                    aad: b"",
                    ciphertext: &out.ciphertext,
                    tag: &out.tag,
                })
                .await;
            assert!(matches!(r, Err(BackendError::UnknownKeyVersion(2))));
        });
        assert_eq!(b.reinitializations(), 0);
    });
}

#[test]
fn softhsm_tampering_is_invalid_ciphertext_and_resets_nothing() {
    with_softhsm(
        "softhsm_tampering_is_invalid_ciphertext_and_resets_nothing",
        || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            b.create_key("k1").expect("create");
            rt().block_on(async {
                let aad = b"the proxy's full AAD";
                let pt = b"secret data key material 32 byte";
                let out = enc(&b, "k1", aad, pt).await.expect("encrypt");
                let idle = b.idle_sessions();
                let mut cases: Vec<(&str, EncryptOutput, Vec<u8>)> = Vec::new();
                let mut t = EncryptOutput {
                    ciphertext: out.ciphertext.clone(),
                    iv: out.iv.clone(),
                    tag: out.tag.clone(),
                };
                t.ciphertext[3] ^= 1;
                cases.push(("ciphertext", t, aad.to_vec()));
                let mut t = EncryptOutput {
                    ciphertext: out.ciphertext.clone(),
                    iv: out.iv.clone(),
                    tag: out.tag.clone(),
                };
                t.tag[15] ^= 0x80;
                cases.push(("tag", t, aad.to_vec()));
                let mut t = EncryptOutput {
                    ciphertext: out.ciphertext.clone(),
                    iv: out.iv.clone(),
                    tag: out.tag.clone(),
                };
                t.iv[0] ^= 1;
                cases.push(("iv", t, aad.to_vec()));
                let t = EncryptOutput {
                    ciphertext: out.ciphertext.clone(),
                    iv: out.iv.clone(),
                    tag: out.tag.clone(),
                };
                cases.push(("aad", t, b"the proxy's full AAE".to_vec()));
                for _round in 0..3 {
                    for (what, t, a) in &cases {
                        let r = dec(&b, "k1", a, t).await;
                        assert!(
                            matches!(r, Err(BackendError::InvalidCiphertext)),
                            "tampered {what}: {r:?}"
                        );
                    }
                }
                assert_eq!(b.reinitializations(), 0);
                assert_eq!(
                    b.idle_sessions(),
                    idle,
                    "the sessions went back to the pool"
                );
                let back = dec(&b, "k1", aad, &out).await.expect("still works");
                assert_eq!(&back[..], &pt[..]);
                let again = enc(&b, "k1", aad, pt).await.expect("encrypt still works");
                assert_eq!(
                    &dec(&b, "k1", aad, &again).await.expect("decrypt")[..],
                    &pt[..]
                );
            });
            assert_eq!(b.reinitializations(), 0);
        },
    );
}

#[test]
fn softhsm_non_aes_keys_report_their_type() {
    with_softhsm("softhsm_non_aes_keys_report_their_type", || {
        let b = open(2, DEFAULT_SESSION_WAIT);
        raw_create(
            &b,
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Value(vec![7; 32]),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Label(b"generic".to_vec()),
            ],
        );
        b.admin(|s| {
            s.generate_key(
                &Mechanism::Des3KeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(b"des3".to_vec()),
                ],
            )
            .map_err(call_failed("C_GenerateKey"))
        })
        .expect("des3 key");
        rt().block_on(async {
            let info = b.key_info(&kid("generic")).await.expect("key info");
            assert_eq!(info.key_spec, "GENERIC_SECRET_256");
            let info = b.key_info(&kid("des3")).await.expect("key info");
            assert_eq!(info.key_spec, "DES3_192");
            assert_eq!(info.usages, KeyUsages::BOTH);
            // AES-GCM with a DES3 key: the key cannot do it.
            let r = enc(&b, "des3", b"", b"data").await;
            assert!(
                matches!(r, Err(BackendError::UsageNotPermitted(_))),
                "{r:?}"
            );
        });
        let listed = b.list_keys().expect("list");
        let g = listed
            .iter()
            .find(|k| k.label == "generic")
            .expect("listed");
        assert_eq!((g.key_type.as_str(), g.bits), ("GENERIC_SECRET", 256));
        let d = listed.iter().find(|k| k.label == "des3").expect("listed");
        assert_eq!(d.key_spec, "DES3_192");
        assert_eq!(b.reinitializations(), 0);
    });
}

#[test]
fn softhsm_key_without_encrypt() {
    with_softhsm("softhsm_key_without_encrypt", || {
        let b = open(2, DEFAULT_SESSION_WAIT);
        raw_create(
            &b,
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(vec![9; 32]),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(true),
                Attribute::Label(b"decrypt-only".to_vec()),
            ],
        );
        rt().block_on(async {
            let info = b.key_info(&kid("decrypt-only")).await.expect("key info");
            assert_eq!(info.key_spec, "AES_256");
            assert!(!info.usages.encrypt);
            assert!(info.usages.decrypt);
            assert_eq!(info.usages.names(), vec!["DECRYPT".to_owned()]);
            let idle = b.idle_sessions();
            // The proxy checks usages first; the HSM refuses too if asked anyway.
            let r = enc(&b, "decrypt-only", b"", b"data").await;
            assert!(
                matches!(r, Err(BackendError::UsageNotPermitted(_))),
                "{r:?}"
            );
            assert_eq!(b.idle_sessions(), idle);
        });
        let k = b.list_keys().expect("list");
        assert_eq!(k.len(), 1);
        assert!(!k[0].encrypt && k[0].decrypt);
    });
}

/// Key facts answer from the cache for `key_facts_ttl`, with no session and no PKCS#11
/// call; with session copies off the HSM still enforces the token key's attributes
/// meanwhile, a deleted key is found missing by the next crypto call, and with a zero TTL
/// every lookup asks the token. (With copies on, see
/// `softhsm_session_copies_follow_the_token_key_within_the_ttl`.)
#[test]
fn softhsm_key_facts_are_cached_and_the_hsm_still_decides() {
    with_softhsm(
        "softhsm_key_facts_are_cached_and_the_hsm_still_decides",
        || {
            let mut cfg = config(1, Duration::from_millis(5));
            cfg.key_facts_ttl = Duration::from_secs(3600);
            cfg.session_key_copies = false;
            let b = Pkcs11Backend::open("cached", cfg).expect("open");
            let mut cfg = config(1, Duration::from_millis(5));
            cfg.key_facts_ttl = Duration::ZERO;
            let fresh = Pkcs11Backend::open("uncached", cfg).expect("open");
            b.create_keys(&["ck", "gone"]).expect("create");
            let handle = |label: &str| {
                b.admin(|s| {
                    s.find_objects(&key_template(label))
                        .map_err(call_failed("C_FindObjects"))
                })
                .expect("find")[0]
            };
            rt().block_on(async {
                for k in ["ck", "gone"] {
                    let info = b.key_info(&kid(k)).await.expect("key info");
                    assert!(info.usages.encrypt && info.usages.decrypt);
                }
                // With the only session permit taken, the cached facts still answer: no
                // PKCS#11 call is made for them.
                let permit = Arc::clone(&b.inner.permits)
                    .try_acquire_owned()
                    .expect("permit");
                assert!(b.key_info(&kid("ck")).await.is_ok());
                assert!(matches!(
                    enc(&b, "ck", b"", b"x").await,
                    Err(BackendError::Overloaded(_))
                ));
                drop(permit);

                let h = handle("ck");
                b.admin(|s| {
                    s.update_attributes(h, &[Attribute::Encrypt(false)])
                        .map_err(call_failed("C_SetAttributeValue"))
                })
                .expect("clear CKA_ENCRYPT");
                let cached = b.key_info(&kid("ck")).await.expect("key info");
                assert!(
                    cached.usages.encrypt,
                    "within the TTL the facts come from the cache"
                );
                let r = enc(&b, "ck", b"", b"data").await;
                assert!(
                    matches!(r, Err(BackendError::UsageNotPermitted(_))),
                    "the HSM refuses anyway: {r:?}"
                );
                let now = fresh.key_info(&kid("ck")).await.expect("key info");
                assert!(!now.usages.encrypt && now.usages.decrypt, "{now:?}");

                let h = handle("gone");
                b.admin(|s| s.destroy_object(h).map_err(call_failed("C_DestroyObject")))
                    .expect("destroy");
                let r = enc(&b, "gone", b"", b"data").await;
                assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
                let r = fresh.key_info(&kid("gone")).await;
                assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
            });
            assert_eq!(b.reinitializations(), 0);
        },
    );
}

/// The session objects labelled `label` this process can see (the copies' holder is one
/// of its sessions, so its copies are among them).
fn session_objects(b: &Pkcs11Backend, label: &str) -> usize {
    b.admin(|s| {
        s.find_objects(&[
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(false),
        ])
        .map_err(call_failed("C_FindObjects"))
    })
    .expect("find session objects")
    .len()
}

/// With session copies on (the default): operations use a copy of the key that is no
/// weaker than it; a change to the token key (usages, deletion) reaches them within the
/// TTL; the copy of a deleted key does not outlive the next facts read; a key the token will
/// not copy is used directly; dropping the backend destroys its copies.
#[test]
fn softhsm_session_copies_follow_the_token_key_within_the_ttl() {
    with_softhsm(
        "softhsm_session_copies_follow_the_token_key_within_the_ttl",
        || {
            let ttl = Duration::from_millis(300);
            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.key_facts_ttl = ttl;
            let b = Pkcs11Backend::open("copies", cfg).expect("open");
            let mut cfg = config(1, DEFAULT_SESSION_WAIT);
            cfg.session_key_copies = false;
            let watcher = Pkcs11Backend::open("watcher", cfg).expect("open");
            b.create_keys(&["ck", "gone", "other"]).expect("create");
            raw_create(
                &b,
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value(vec![7; 32]),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Copyable(false),
                    Attribute::Label(b"no-copy".to_vec()),
                ],
            );
            let token_handle = |label: &str| {
                watcher
                    .admin(|s| {
                        s.find_objects(&key_template(label))
                            .map_err(call_failed("C_FindObjects"))
                    })
                    .expect("find")[0]
            };
            let copy_of = |label: &str| lock(&b.inner.handles).get(label).map(|c| c.copy);
            rt().block_on(async {
                for k in ["ck", "gone", "other", "no-copy"] {
                    b.key_info(&kid(k)).await.expect("key info");
                    assert_eq!(
                        session_objects(&watcher, k),
                        usize::from(k != "no-copy"),
                        "{k}"
                    );
                    let out = enc(&b, k, b"aad", b"secret").await.expect("encrypt");
                    assert_eq!(
                        &dec(&b, k, b"aad", &out).await.expect("decrypt")[..],
                        b"secret"
                    );
                    // The token key decrypts what the copy encrypted: the same key.
                    assert_eq!(
                        &dec(&watcher, k, b"aad", &out).await.expect("decrypt")[..],
                        b"secret"
                    );
                }
                assert_eq!(copy_of("no-copy"), Some(KeyCopy::Refused));
                assert!(matches!(copy_of("ck"), Some(KeyCopy::Made { .. })));
                // The copy is as sensitive and unextractable as the key.
                let Some(KeyCopy::Made { handle, .. }) = copy_of("ck") else {
                    unreachable!()
                };
                let attrs = watcher
                    .admin(|s| {
                        s.get_attributes(
                            handle,
                            &[
                                cryptoki::object::AttributeType::Sensitive,
                                cryptoki::object::AttributeType::Extractable,
                                cryptoki::object::AttributeType::Token,
                            ],
                        )
                        .map_err(call_failed("C_GetAttributeValue"))
                    })
                    .expect("copy attributes");
                assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
                assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
                assert!(attrs.contains(&Attribute::Token(false)), "{attrs:?}");

                // The token key loses ENCRYPT: within the TTL the copy still encrypts (the
                // price of copies), after it the usage check and the HSM both refuse.
                let h = token_handle("ck");
                watcher
                    .admin(|s| {
                        s.update_attributes(h, &[Attribute::Encrypt(false)])
                            .map_err(call_failed("C_SetAttributeValue"))
                    })
                    .expect("clear CKA_ENCRYPT");
                assert!(b.key_info(&kid("ck")).await.expect("info").usages.encrypt);
                assert!(enc(&b, "ck", b"", b"x").await.is_ok());
                std::thread::sleep(ttl);
                let info = b.key_info(&kid("ck")).await.expect("info");
                assert!(!info.usages.encrypt && info.usages.decrypt, "{info:?}");
                // Every copy went with the holder (the copy of "ck" allowed ENCRYPT).
                for k in ["ck", "gone", "other"] {
                    assert_eq!(session_objects(&watcher, k), 0, "{k}");
                }
                let r = enc(&b, "ck", b"", b"x").await;
                assert!(
                    matches!(r, Err(BackendError::UsageNotPermitted(_))),
                    "{r:?}"
                );
                std::thread::sleep(ttl);
                b.key_info(&kid("ck")).await.expect("info");
                assert_eq!(session_objects(&watcher, "ck"), 1, "copied again");
                let r = enc(&b, "ck", b"", b"x").await;
                assert!(
                    matches!(r, Err(BackendError::UsageNotPermitted(_))),
                    "the new copy has the new flags: {r:?}"
                );

                // The token key is deleted: within the TTL its copy still works, then the
                // next facts read finds it gone, and no copy of it is left in the HSM.
                b.key_info(&kid("gone")).await.expect("info");
                let h = token_handle("gone");
                watcher
                    .admin(|s| s.destroy_object(h).map_err(call_failed("C_DestroyObject")))
                    .expect("destroy");
                assert!(enc(&b, "gone", b"", b"x").await.is_ok());
                std::thread::sleep(ttl);
                let r = b.key_info(&kid("gone")).await;
                assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
                let r = enc(&b, "gone", b"", b"x").await;
                assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
                assert_eq!(session_objects(&watcher, "gone"), 0);

                // Other keys get their copies back on their next facts read.
                std::thread::sleep(ttl);
                b.key_info(&kid("other")).await.expect("info");
                assert_eq!(session_objects(&watcher, "other"), 1);
            });
            drop(b);
            assert_eq!(
                session_objects(&watcher, "other"),
                0,
                "dropping the backend destroys its copies"
            );
            assert_eq!(watcher.reinitializations(), 0);
        },
    );
}

#[test]
fn softhsm_duplicate_label_is_refused() {
    with_softhsm("softhsm_duplicate_label_is_refused", || {
        let b = open(2, DEFAULT_SESSION_WAIT);
        b.create_key("dup").expect("create");
        assert!(matches!(
            b.create_key("dup"),
            Err(Pkcs11Error::LabelExists(l)) if l == "dup"
        ));
        assert!(matches!(
            b.import_key("dup", &[1; 32]),
            Err(Pkcs11Error::LabelExists(_))
        ));
        // A second key with the same label, made behind the admin helpers' back.
        raw_create(
            &b,
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(vec![3; 32]),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(b"dup".to_vec()),
            ],
        );
        rt().block_on(async {
            for _ in 0..2 {
                match b.key_info(&kid("dup")).await {
                    Err(BackendError::Failure(m)) => {
                        assert!(m.contains("label dup matches 2"), "{m}");
                        assert!(m.contains("refusing to guess"), "{m}");
                    }
                    other => panic!("expected a failure, got {other:?}"),
                }
                assert!(matches!(
                    enc(&b, "dup", b"", b"x").await,
                    Err(BackendError::Failure(_))
                ));
            }
        });
        assert!(matches!(
            b.create_key("bad label!"),
            Err(Pkcs11Error::InvalidLabel { .. })
        ));
        assert!(matches!(
            b.import_key("short", &[1; 16]),
            Err(Pkcs11Error::MaterialSize(16))
        ));
    });
}

#[test]
fn softhsm_session_exhaustion_is_overloaded() {
    with_softhsm("softhsm_session_exhaustion_is_overloaded", || {
        let b = Arc::new(open(2, Duration::from_millis(1)));
        b.create_key("k1").expect("create");
        assert_eq!(
            b.idle_sessions(),
            1,
            "open() logs in one session; create_key uses its own"
        );
        let big = Arc::new(vec![0x5Au8; 4 << 20]);
        let (ok, overloaded) = rt().block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let b = Arc::clone(&b);
                let big = Arc::clone(&big);
                tasks.push(tokio::spawn(
                    async move { enc(&b, "k1", b"aad", &big).await },
                ));
            }
            let (mut ok, mut overloaded) = (0, 0);
            for t in tasks {
                match t.await.expect("no panic") {
                    Ok(out) => {
                        assert_eq!(out.ciphertext.len(), big.len());
                        ok += 1;
                    }
                    Err(BackendError::Overloaded(m)) => {
                        assert!(m.contains("2 PKCS#11 sessions"), "{m}");
                        overloaded += 1;
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
                assert!(b.idle_sessions() <= 2);
            }
            (ok, overloaded)
        });
        assert!(ok >= 2, "ok {ok}");
        assert!(overloaded >= 1, "overloaded {overloaded}");
        assert_eq!(ok + overloaded, 8);
        // Every permit and every opened session is back. How many sessions were opened
        // depends on how the calls overlapped (a starved CPU may run them one by one).
        assert_eq!(
            b.inner.permits.available_permits(),
            2,
            "all permits returned"
        );
        let idle = b.idle_sessions();
        assert!((1..=2).contains(&idle), "idle sessions {idle}");
        assert_eq!(b.reinitializations(), 0);
    });
}

#[test]
fn softhsm_timed_out_call_gives_its_session_back() {
    with_softhsm("softhsm_timed_out_call_gives_its_session_back", || {
        // The blocking-pool path: an inline call cannot be timed out (see the next test).
        let mut cfg = config(1, Duration::from_millis(5));
        cfg.inline_calls = false;
        let b = Pkcs11Backend::open("test-store", cfg).expect("open the SoftHSM token");
        b.create_key("k1").expect("create");
        let rt = rt();
        rt.block_on(async {
            assert_eq!(b.idle_sessions(), 1);
            let big = vec![1u8; 64 << 20];
            let r = tokio::time::timeout(Duration::from_millis(1), enc(&b, "k1", b"", &big)).await;
            assert!(r.is_err(), "the call should still be running after 1 ms");
            // The blocking task still holds the only session: callers are throttled...
            let busy = enc(&b, "k1", b"", b"x").await;
            assert!(matches!(busy, Err(BackendError::Overloaded(_))), "{busy:?}");
            // ...until it finishes and gives the session back.
            let started = Instant::now();
            while b.idle_sessions() == 0 || b.inner.permits.available_permits() == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "session leaked"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let out = enc(&b, "k1", b"", b"x").await.expect("works again");
            assert_eq!(&dec(&b, "k1", b"", &out).await.expect("decrypt")[..], b"x");
        });
        assert_eq!(b.idle_sessions(), 1);
    });
}

/// Key operations run inline on a multi-worker runtime; one that is slow sends the next
/// calls to the blocking pool, where a caller's deadline can cut them short again.
#[test]
fn softhsm_a_slow_inline_call_sends_later_calls_to_the_blocking_pool() {
    with_softhsm(
        "softhsm_a_slow_inline_call_sends_later_calls_to_the_blocking_pool",
        || {
            let b = open(2, Duration::from_millis(500));
            b.create_key("k1").expect("create");
            let rt = rt();
            rt.block_on(async {
                let big = vec![1u8; 64 << 20];
                // Inline: the 1 ms timeout cannot interrupt it, so it completes.
                let first =
                    tokio::time::timeout(Duration::from_millis(1), enc(&b, "k1", b"", &big)).await;
                assert!(first.is_ok(), "the first call ran inline and finished");
                // It took longer than SLOW_INLINE_CALL: the next one runs on the blocking pool,
                // so the caller's timeout fires while it still runs.
                let second =
                    tokio::time::timeout(Duration::from_millis(1), enc(&b, "k1", b"", &big)).await;
                assert!(
                    second.is_err(),
                    "the second call should have left the runtime thread"
                );
            });
        },
    );
}

/// On two workers one call runs inline at a time; a call that finds the slot taken waits
/// for it (briefly) instead of going to the blocking pool, so a burst of concurrent
/// Encrypts on a fast token runs (nearly) all inline. Before the wait, about half of such a
/// burst went to the blocking pool.
#[test]
fn softhsm_concurrent_calls_wait_for_the_inline_slot() {
    with_softhsm("softhsm_concurrent_calls_wait_for_the_inline_slot", || {
        let b = Arc::new(open(8, Duration::from_millis(500)));
        b.create_key("k1").expect("create");
        rt().block_on(async {
            enc(&b, "k1", b"", b"warm").await.expect("encrypt");
            let before = b.calls_by_placement();
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let b = Arc::clone(&b);
                    tokio::spawn(async move { enc(&b, "k1", b"", b"data").await.map(|_| ()) })
                })
                .collect();
            for t in tasks {
                t.await.expect("task").expect("encrypt");
            }
            let (inline, pool) = b.calls_by_placement();
            let (inline, pool) = (inline - before.0, pool - before.1);
            assert_eq!(inline + pool, 200, "every call counted once");
            // A waiter gives up after 2 ms; a stall of the machine may send a few to the pool.
            assert!(pool <= 20, "{pool} of 200 calls went to the blocking pool");
        });
    });
}

#[test]
fn softhsm_recovers_after_the_token_is_reinitialised() {
    with_softhsm("softhsm_recovers_after_the_token_is_reinitialised", || {
        let material = [0x42u8; 32];
        let b = open(3, DEFAULT_SESSION_WAIT);
        b.import_key("rk", &material).expect("import");
        b.import_key(DEFAULT_HEALTH_KEY_LABEL, &[0x11; 32])
            .expect("health key");
        let rt = rt();
        let (aad, pt) = (
            b"aad".as_slice(),
            b"plaintext across a token re-init".as_slice(),
        );
        let out = rt.block_on(async {
            let out = enc(&b, "rk", aad, pt).await.expect("encrypt");
            assert_eq!(
                b.health_check().await.expect("health").status,
                HealthStatus::Active
            );
            out
        });
        assert_eq!(b.reinitializations(), 0);
        let old_identity = b.identity();

        // Under the running backend: delete the token, make a new one with the same label
        // (SoftHSM gives it another slot id), and import the same key bytes again.
        let token = SoftHsmChild::current().expect("runs in the SoftHSM child");
        token.reinitialise_token();
        token.import_aes_key("rk", "01", &material);

        rt.block_on(async {
            let back = dec(&b, "rk", aad, &out)
                .await
                .expect("decrypt after re-init");
            assert_eq!(&back[..], pt);
            assert_eq!(
                b.reinitializations(),
                1,
                "the module was re-initialised once"
            );
            let n = b.reinitializations();
            let again = enc(&b, "rk", aad, pt).await.expect("encrypt");
            assert_eq!(&dec(&b, "rk", aad, &again).await.expect("decrypt")[..], pt);
            // The health key is gone with the old token.
            let h = b.health_check().await.expect("health");
            assert_eq!(h.status, HealthStatus::Unavailable);
            assert!(h.detail.contains(DEFAULT_HEALTH_KEY_LABEL), "{}", h.detail);
            assert_eq!(b.reinitializations(), n, "no further re-initialisation");
        });
        assert_eq!(b.identity(), old_identity);
    });
}

#[test]
fn softhsm_health_check_needs_the_health_key() {
    with_softhsm("softhsm_health_check_needs_the_health_key", || {
        let b = open(2, DEFAULT_SESSION_WAIT);
        let rt = rt();
        let h = rt.block_on(b.health_check()).expect("health");
        assert_eq!(h.status, HealthStatus::Unavailable);
        assert!(h.detail.contains("'xks-proxy-health'"), "{}", h.detail);
        b.create_key(DEFAULT_HEALTH_KEY_LABEL).expect("create");
        let h = rt.block_on(b.health_check()).expect("health");
        assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);

        let mut cfg = config(2, DEFAULT_SESSION_WAIT);
        cfg.health_key_label = "other-health".into();
        let b2 = Pkcs11Backend::open("second", cfg).expect("open");
        let h = rt.block_on(b2.health_check()).expect("health");
        assert_eq!(h.status, HealthStatus::Unavailable);
        assert!(h.detail.contains("'other-health'"), "{}", h.detail);

        let id = b.identity();
        assert_eq!(id.vendor, "SoftHSM project");
        assert!(
            id.model.starts_with("SoftHSM v2 (firmware "),
            "{}",
            id.model
        );
    });
}

#[test]
fn softhsm_relogs_in_after_a_logout() {
    with_softhsm("softhsm_relogs_in_after_a_logout", || {
        let b = open(2, DEFAULT_SESSION_WAIT);
        b.create_key("k1").expect("create");
        b.create_key("k2").expect("create");
        let rt = rt();
        let out = rt.block_on(enc(&b, "k1", b"", b"x")).expect("encrypt");
        for key in ["k1", "k2"] {
            // Logging out one session logs the application out of the token.
            b.admin(|s| s.logout().map_err(call_failed("C_Logout")))
                .expect("logout");
            rt.block_on(async {
                // k1's handle is cached, k2 has not been looked up yet.
                let r = enc(&b, key, b"", b"y").await.expect("encrypt after logout");
                assert_eq!(&dec(&b, key, b"", &r).await.expect("decrypt")[..], b"y");
            });
        }
        assert_eq!(
            &rt.block_on(dec(&b, "k1", b"", &out)).expect("decrypt")[..],
            b"x"
        );
        assert_eq!(b.reinitializations(), 0);
    });
}

#[test]
fn softhsm_open_errors_and_selectors() {
    with_softhsm("softhsm_open_errors_and_selectors", || {
        let mut cfg = config(2, DEFAULT_SESSION_WAIT);
        cfg.pin = SecretString::from("0000");
        match Pkcs11Backend::open("ks", cfg) {
            Err(Pkcs11Error::Login { reason, .. }) => {
                assert!(reason.contains("CKR_PIN_INCORRECT"), "{reason}");
            }
            other => panic!("expected a login error, got {other:?}"),
        }
        let mut cfg = config(2, DEFAULT_SESSION_WAIT);
        cfg.token = TokenSelector::Label("no-such-token".into());
        assert!(matches!(
            Pkcs11Backend::open("ks", cfg),
            Err(Pkcs11Error::TokenNotFound(m)) if m.contains("no-such-token")
        ));

        // Two backends on one module (as during a reload); by slot id too.
        let a = open(2, DEFAULT_SESSION_WAIT);
        a.create_key("k1").expect("create");
        let slot = lock(&a.inner.slot).map(|(_, s)| s.id()).expect("slot");
        let mut cfg = config(2, DEFAULT_SESSION_WAIT);
        cfg.token = TokenSelector::SlotId(slot);
        let b = Pkcs11Backend::open("by-slot", cfg).expect("open by slot id");
        let mut cfg = config(2, DEFAULT_SESSION_WAIT);
        cfg.token = TokenSelector::SlotId(slot.wrapping_add(12345));
        assert!(matches!(
            Pkcs11Backend::open("ks", cfg),
            Err(Pkcs11Error::TokenNotFound(_))
        ));
        let rt = rt();
        let out = rt
            .block_on(enc(&a, "k1", b"a", b"shared"))
            .expect("encrypt");
        drop(a);
        // The module stays initialised for the backend still using it.
        let back = rt.block_on(dec(&b, "k1", b"a", &out)).expect("decrypt");
        assert_eq!(&back[..], b"shared");
        let keys = b.list_keys().expect("list");
        assert_eq!(
            keys,
            vec![Pkcs11KeyInfo {
                label: "k1".into(),
                key_type: "AES".into(),
                bits: 256,
                key_spec: "AES_256".into(),
                encrypt: true,
                decrypt: true,
            }]
        );
        assert!(format!("{b:?}").contains("by-slot"));
        assert!(!format!("{b:?}").contains(SOFTHSM_USER_PIN));
    });
}

#[test]
fn softhsm_recovers_after_the_module_is_finalized() {
    with_softhsm("softhsm_recovers_after_the_module_is_finalized", || {
        let a = open(2, DEFAULT_SESSION_WAIT);
        let b = open(2, DEFAULT_SESSION_WAIT);
        a.create_key("k1").expect("create");
        let rt = rt();
        let out = rt
            .block_on(enc(&a, "k1", b"a", b"before"))
            .expect("encrypt");
        rt.block_on(b.key_info(&kid("k1")))
            .expect("b caches the handle");
        // C_Finalize under both backends: every call now gets CKR_CRYPTOKI_NOT_INITIALIZED.
        let ctx = read(&a.inner.module.state).ctx.clone().expect("ctx");
        ctx.finalize().expect("C_Finalize");
        let back = rt.block_on(dec(&a, "k1", b"a", &out)).expect("a recovers");
        assert_eq!(&back[..], b"before");
        assert_eq!(a.reinitializations(), 1);
        // b shares the module: it drops its old sessions and handles, no second reset.
        let back = rt.block_on(dec(&b, "k1", b"a", &out)).expect("b recovers");
        assert_eq!(&back[..], b"before");
        assert_eq!(b.reinitializations(), 1);
        let h = rt.block_on(a.health_check()).expect("health");
        assert_eq!(h.status, HealthStatus::Unavailable, "no health key yet");
        a.create_key(DEFAULT_HEALTH_KEY_LABEL).expect("create");
        let h = rt.block_on(b.health_check()).expect("health");
        assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);
        assert_eq!(a.reinitializations(), 1);
    });
}

#[test]
fn softhsm_ciphertexts_match_the_embedded_aes_gcm() {
    with_softhsm("softhsm_ciphertexts_match_the_embedded_aes_gcm", || {
        use aes_gcm::aead::AeadInOut;
        use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
        let material = [0x24u8; 32];
        let b = open(2, DEFAULT_SESSION_WAIT);
        b.import_key("same", &material).expect("import");
        let gcm = Aes256Gcm::new_from_slice(&material).expect("key");
        let (aad, pt) = (
            b"\x00\x03abc\x01\x01".as_slice(),
            b"the same 32 bytes, in two places".as_slice(),
        );
        let rt = rt();
        // HSM → software.
        let out = rt.block_on(enc(&b, "same", aad, pt)).expect("encrypt");
        let iv: [u8; 12] = out.iv.as_slice().try_into().expect("12-byte iv");
        let tag = Tag::try_from(out.tag.as_slice()).expect("tag");
        let mut buf = out.ciphertext;
        gcm.decrypt_inout_detached(&Nonce::from(iv), aad, (&mut buf[..]).into(), &tag)
            .expect("software decrypts the HSM's ciphertext");
        assert_eq!(&buf[..], pt);
        // Software → HSM.
        let iv = random_iv();
        let mut ct = pt.to_vec();
        let tag = gcm
            .encrypt_inout_detached(&Nonce::from(iv), aad, (&mut ct[..]).into())
            .expect("encrypt");
        let sw = EncryptOutput {
            ciphertext: ct,
            iv: iv.to_vec(),
            tag: tag.to_vec(),
        };
        let back = rt
            .block_on(dec(&b, "same", aad, &sw))
            .expect("HSM decrypts");
        assert_eq!(&back[..], pt);
    });
}
