//! The official Rust SDK (`aws-sdk-kms`) against the real `kms-frontend` process.
//!
//! The SDK deserializes every response into its generated shapes and is strict about them
//! (required members, number and date formats, error `__type`s), so each call here is also a
//! check that the front end's JSON is what AWS would send. The client trusts only the test
//! CA (its own `aws-smithy-http-client` with rustls/aws-lc), never retries, and signs for
//! `us-east-1`.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyMetadata, KeySpec, KeyUsageType, OriginType, Tag};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use testkit::frontend::{FrontendFixture, RunningFrontend};

const REGION: &str = "us-east-1";

/// An SDK client for `endpoint` that trusts only the test CA and signs with the given keys.
pub(crate) fn client_with(fe: &RunningFrontend, access_key_id: &str, secret: &str) -> Client {
    let ca = std::fs::read(&fe.fixture.pki.ca_pem).expect("read the test CA");
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(ca))
        .build()
        .expect("TLS context");
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(tls)
        .build_https();
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret,
            None,
            None,
            "frontend_sdk",
        ))
        .endpoint_url(fe.endpoint())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// The SDK client of alice (account 111122223333).
pub(crate) fn alice(fe: &RunningFrontend) -> Client {
    let p = fe.alice();
    client_with(fe, &p.access_key_id, &p.secret)
}

/// Unwraps an SDK result; on error, panics with the whole error chain and the server log
/// (a response the SDK could not parse shows up here as a `ResponseError`).
fn ok<T, E>(fe: &RunningFrontend, what: &str, r: Result<T, E>) -> T
where
    E: std::error::Error + 'static,
{
    r.unwrap_or_else(|e| {
        panic!(
            "{what} failed: {}\n--- server log ---\n{}",
            DisplayErrorContext(&e),
            fe.logs()
        )
    })
}

/// Unwraps an expected SDK error, panicking if the call succeeded.
fn err<T: std::fmt::Debug, E>(what: &str, r: Result<T, E>) -> E {
    match r {
        Ok(v) => panic!("{what} unexpectedly succeeded: {v:?}"),
        Err(e) => e,
    }
}

fn key_arn(account: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{account}:key/{key_id}")
}

fn now_secs() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("seconds fit i64")
}

/// One kind of key CreateKey must accept, with what its `KeyMetadata` must say.
#[derive(Debug)]
struct KeyCase {
    spec: &'static str,
    usage: &'static str,
    origin: &'static str,
    multi_region: bool,
    /// The algorithm list of the usage (the other lists must be empty), in AWS's order.
    algorithms: &'static [&'static str],
}

const RSA_SIGNING: &[&str] = &[
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
];

const fn case(
    spec: &'static str,
    usage: &'static str,
    algorithms: &'static [&'static str],
) -> KeyCase {
    KeyCase {
        spec,
        usage,
        origin: "AWS_KMS",
        multi_region: false,
        algorithms,
    }
}

const CASES: &[KeyCase] = &[
    case(
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        &["SYMMETRIC_DEFAULT"],
    ),
    case("HMAC_224", "GENERATE_VERIFY_MAC", &["HMAC_SHA_224"]),
    case("HMAC_256", "GENERATE_VERIFY_MAC", &["HMAC_SHA_256"]),
    case("HMAC_384", "GENERATE_VERIFY_MAC", &["HMAC_SHA_384"]),
    case("HMAC_512", "GENERATE_VERIFY_MAC", &["HMAC_SHA_512"]),
    case("RSA_2048", "SIGN_VERIFY", RSA_SIGNING),
    case(
        "RSA_2048",
        "ENCRYPT_DECRYPT",
        &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
    ),
    case("RSA_3072", "SIGN_VERIFY", RSA_SIGNING),
    case(
        "RSA_3072",
        "ENCRYPT_DECRYPT",
        &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
    ),
    case("ECC_NIST_P256", "SIGN_VERIFY", &["ECDSA_SHA_256"]),
    case("ECC_NIST_P384", "SIGN_VERIFY", &["ECDSA_SHA_384"]),
    case("ECC_NIST_P521", "SIGN_VERIFY", &["ECDSA_SHA_512"]),
    case("ECC_SECG_P256K1", "SIGN_VERIFY", &["ECDSA_SHA_256"]),
    case("ECC_NIST_P256", "KEY_AGREEMENT", &["ECDH"]),
    case(
        "ECC_NIST_EDWARDS25519",
        "SIGN_VERIFY",
        &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
    ),
    case("ML_DSA_44", "SIGN_VERIFY", &["ML_DSA_SHAKE_256"]),
    case("ML_KEM_512", "ENCAPSULATE_DECAPSULATE", &["ML_KEM"]),
    KeyCase {
        multi_region: true,
        ..case(
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            &["SYMMETRIC_DEFAULT"],
        )
    },
    KeyCase {
        origin: "EXTERNAL",
        ..case(
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            &["SYMMETRIC_DEFAULT"],
        )
    },
];

/// The algorithm lists of `m` as raw strings (`as_str()` is the wire value, also for a value
/// the SDK maps to `Unknown`), by `KeyMetadata` member name.
fn algorithm_lists(m: &KeyMetadata) -> Vec<(&'static str, Vec<String>)> {
    fn strs<T: AsRef<str>>(list: &[T]) -> Vec<String> {
        list.iter().map(|x| x.as_ref().to_owned()).collect()
    }
    vec![
        ("EncryptionAlgorithms", strs(m.encryption_algorithms())),
        ("SigningAlgorithms", strs(m.signing_algorithms())),
        ("MacAlgorithms", strs(m.mac_algorithms())),
        ("KeyAgreementAlgorithms", strs(m.key_agreement_algorithms())),
        (
            "EncapsulationAlgorithms",
            strs(m.encapsulation_algorithms()),
        ),
    ]
}

fn usage_list_name(usage: &str) -> &'static str {
    match usage {
        "ENCRYPT_DECRYPT" => "EncryptionAlgorithms",
        "SIGN_VERIFY" => "SigningAlgorithms",
        "GENERATE_VERIFY_MAC" => "MacAlgorithms",
        "KEY_AGREEMENT" => "KeyAgreementAlgorithms",
        "ENCAPSULATE_DECAPSULATE" => "EncapsulationAlgorithms",
        other => panic!("no algorithm list for {other}"),
    }
}

/// Checks a freshly created key's metadata against its case.
fn check_metadata(c: &KeyCase, account: &str, m: &KeyMetadata) {
    let what = format!("{c:?}");
    let key_id = m.key_id();
    if c.multi_region {
        let hex = key_id
            .strip_prefix("mrk-")
            .unwrap_or_else(|| panic!("{what}: {key_id}"));
        assert_eq!(hex.len(), 32, "{what}: {key_id}");
    } else {
        assert_eq!(key_id.len(), 36, "{what}: {key_id}");
    }
    assert_eq!(m.aws_account_id(), Some(account), "{what}");
    let arn = key_arn(account, key_id);
    assert_eq!(m.arn(), Some(arn.as_str()), "{what}");
    let created = m.creation_date().expect("CreationDate").secs();
    assert!(
        (created - now_secs()).abs() < 300,
        "{what}: CreationDate {created}"
    );
    assert_eq!(m.description(), Some(""), "{what}");

    assert_eq!(m.key_spec().map(KeySpec::as_str), Some(c.spec), "{what}");
    // The deprecated CustomerMasterKeySpec mirrors KeySpec; the SDK's older enum has no
    // ML_DSA_*, ML_KEM_* or ECC_NIST_EDWARDS25519, which it keeps as `Unknown` raw strings.
    #[allow(deprecated)]
    let customer_master_key_spec = m.customer_master_key_spec().map(|s| s.as_str());
    assert_eq!(customer_master_key_spec, Some(c.spec), "{what}");
    assert_eq!(
        m.key_usage().map(KeyUsageType::as_str),
        Some(c.usage),
        "{what}"
    );
    assert_eq!(m.origin().map(OriginType::as_str), Some(c.origin), "{what}");
    assert_eq!(
        m.key_manager().map(|k| k.as_str()),
        Some("CUSTOMER"),
        "{what}"
    );
    let external = c.origin == "EXTERNAL";
    let state = if external { "PendingImport" } else { "Enabled" };
    assert_eq!(m.key_state().map(|s| s.as_str()), Some(state), "{what}");
    assert_eq!(m.enabled(), !external, "{what}");

    let wanted = usage_list_name(c.usage);
    for (name, list) in algorithm_lists(m) {
        if name == wanted {
            assert_eq!(list, c.algorithms, "{what}: {name}");
        } else {
            assert!(list.is_empty(), "{what}: unexpected {name} {list:?}");
        }
    }

    assert_eq!(m.multi_region(), Some(c.multi_region), "{what}");
    match m.multi_region_configuration() {
        None => assert!(!c.multi_region, "{what}: no MultiRegionConfiguration"),
        Some(cfg) => {
            assert!(c.multi_region, "{what}: unexpected {cfg:?}");
            assert_eq!(
                cfg.multi_region_key_type().map(|t| t.as_str()),
                Some("PRIMARY"),
                "{what}"
            );
            let primary = cfg.primary_key().expect("PrimaryKey");
            assert_eq!(primary.arn(), Some(arn.as_str()), "{what}");
            assert_eq!(primary.region(), Some(REGION), "{what}");
            assert!(cfg.replica_keys().is_empty(), "{what}");
        }
    }

    // Symmetric AWS_KMS keys name their key material; nothing else does at creation.
    let material = m.current_key_material_id();
    if c.spec == "SYMMETRIC_DEFAULT" && !external {
        let id = material.unwrap_or_else(|| panic!("{what}: no CurrentKeyMaterialId"));
        assert_eq!(id.len(), 64, "{what}: {id}");
        assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()), "{what}: {id}");
    } else {
        assert_eq!(material, None, "{what}");
    }
    for (name, present) in [
        ("DeletionDate", m.deletion_date().is_some()),
        ("ValidTo", m.valid_to().is_some()),
        ("ExpirationModel", m.expiration_model().is_some()),
        ("CustomKeyStoreId", m.custom_key_store_id().is_some()),
        ("CloudHsmClusterId", m.cloud_hsm_cluster_id().is_some()),
        ("XksKeyConfiguration", m.xks_key_configuration().is_some()),
        (
            "PendingDeletionWindowInDays",
            m.pending_deletion_window_in_days().is_some(),
        ),
    ] {
        assert!(!present, "{what}: unexpected {name}");
    }
}

#[tokio::test]
async fn create_key_and_describe_key_parse_for_every_key_type() {
    let fe = FrontendFixture::new().start();
    let kms = alice(&fe);
    let account = fe.alice().account.clone();
    for c in CASES {
        let created = ok(
            &fe,
            &format!("CreateKey {c:?}"),
            kms.create_key()
                .key_spec(KeySpec::from(c.spec))
                .key_usage(KeyUsageType::from(c.usage))
                .origin(OriginType::from(c.origin))
                .multi_region(c.multi_region)
                .send()
                .await,
        );
        assert!(created.request_id().is_some(), "{c:?}: no x-amzn-RequestId");
        let m = created.key_metadata().expect("KeyMetadata");
        check_metadata(c, &account, m);

        // DescribeKey by id and by ARN round-trips the same metadata.
        for key in [m.key_id().to_owned(), key_arn(&account, m.key_id())] {
            let described = ok(
                &fe,
                &format!("DescribeKey {key}"),
                kms.describe_key().key_id(&key).send().await,
            );
            assert_eq!(described.key_metadata(), Some(m), "{c:?} via {key}");
        }
    }
}

#[tokio::test]
async fn list_keys_pages_with_markers_and_list_aliases_shows_new_aliases() {
    let fe = FrontendFixture::new().start();
    let kms = alice(&fe);
    let account = fe.alice().account.clone();

    let mut created = Vec::new();
    for i in 0..5 {
        let out = ok(
            &fe,
            "CreateKey",
            kms.create_key()
                .description(format!("key {i}"))
                .send()
                .await,
        );
        created.push(out.key_metadata().expect("KeyMetadata").key_id().to_owned());
    }

    // Limit 2: pages of 2, 2, 1; Truncated and NextMarker on all but the last.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let out = ok(
            &fe,
            "ListKeys",
            kms.list_keys()
                .limit(2)
                .set_marker(marker.clone())
                .send()
                .await,
        );
        pages.push(out.keys().len());
        for k in out.keys() {
            let id = k.key_id().expect("KeyId").to_owned();
            assert_eq!(k.key_arn(), Some(key_arn(&account, &id).as_str()));
            seen.push(id);
        }
        assert_eq!(out.truncated(), out.next_marker().is_some(), "{out:?}");
        match out.next_marker() {
            Some(m) if out.truncated() => marker = Some(m.to_owned()),
            _ => break,
        }
        assert!(pages.len() < 10, "ListKeys does not end: {pages:?}");
    }
    assert_eq!(pages, [2, 2, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates: {seen:?}");
    assert_eq!(unique, created.iter().collect::<HashSet<_>>());

    // Aliases: create two, list them all and by key, then page with limit 1.
    for (name, target) in [
        ("alias/sdk-one", &created[0]),
        ("alias/sdk-two", &created[1]),
    ] {
        ok(
            &fe,
            "CreateAlias",
            kms.create_alias()
                .alias_name(name)
                .target_key_id(target)
                .send()
                .await,
        );
    }
    let out = ok(&fe, "ListAliases", kms.list_aliases().send().await);
    assert!(!out.truncated());
    assert_eq!(out.next_marker(), None);
    let ours: Vec<_> = out
        .aliases()
        .iter()
        .filter(|a| a.alias_name().is_some_and(|n| n.starts_with("alias/sdk-")))
        .collect();
    assert_eq!(ours.len(), 2, "{out:?}");
    for (a, target) in ours.iter().zip(&created) {
        let name = a.alias_name().expect("AliasName");
        assert_eq!(
            a.alias_arn(),
            Some(
                format!(
                    "arn:aws:kms:{REGION}:{account}:alias/{}",
                    &name["alias/".len()..]
                )
                .as_str()
            )
        );
        assert_eq!(a.target_key_id(), Some(target.as_str()), "{a:?}");
        let made = a.creation_date().expect("CreationDate").secs();
        assert!((made - now_secs()).abs() < 300, "{a:?}");
        assert!(a.last_updated_date().is_some(), "{a:?}");
    }

    let by_key = ok(
        &fe,
        "ListAliases by key",
        kms.list_aliases().key_id(&created[1]).send().await,
    );
    let names: Vec<_> = by_key
        .aliases()
        .iter()
        .filter_map(|a| a.alias_name())
        .collect();
    assert_eq!(names, ["alias/sdk-two"]);

    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10 {
        let out = ok(
            &fe,
            "ListAliases paged",
            kms.list_aliases()
                .limit(1)
                .set_marker(marker.clone())
                .send()
                .await,
        );
        assert!(out.aliases().len() <= 1);
        names.extend(
            out.aliases()
                .iter()
                .filter_map(|a| a.alias_name())
                .map(str::to_owned),
        );
        assert_eq!(out.truncated(), out.next_marker().is_some(), "{out:?}");
        marker = out.next_marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(marker, None, "ListAliases does not end");
    assert!(names.contains(&"alias/sdk-one".to_owned()), "{names:?}");
    assert!(names.contains(&"alias/sdk-two".to_owned()), "{names:?}");

    // DescribeKey through an alias resolves to the target.
    let d = ok(
        &fe,
        "DescribeKey by alias",
        kms.describe_key().key_id("alias/sdk-two").send().await,
    );
    assert_eq!(
        d.key_metadata().map(KeyMetadata::key_id),
        Some(created[1].as_str())
    );
}

const CONTEXT: &[(&str, &str)] = &[
    ("purpose", "sdk-test"),
    ("tenant", "alice"),
    ("department", "10"),
    ("region", REGION),
];

/// The same encryption context twice, built in opposite insertion orders and iterating
/// (hence serialized by the SDK) in different orders.
fn contexts() -> (HashMap<String, String>, HashMap<String, String>) {
    let build = |pairs: &mut dyn Iterator<Item = &(&str, &str)>| -> HashMap<String, String> {
        pairs
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    for _ in 0..100 {
        let a = build(&mut CONTEXT.iter());
        let b = build(&mut CONTEXT.iter().rev());
        if a.keys().ne(b.keys()) {
            assert_eq!(a, b);
            return (a, b);
        }
    }
    panic!("no two differently ordered HashMaps in 100 tries");
}

#[tokio::test]
async fn symmetric_operations_round_trip_with_reordered_encryption_context() {
    let fe = FrontendFixture::new().start();
    let kms = alice(&fe);
    let account = fe.alice().account.clone();
    let (ctx, reordered) = contexts();

    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = ok(&fe, "CreateKey", kms.create_key().send().await);
        keys.push(out.key_metadata().expect("KeyMetadata").key_id().to_owned());
    }
    let (k1, k2) = (&keys[0], &keys[1]);
    let (arn1, arn2) = (key_arn(&account, k1), key_arn(&account, k2));

    // Encrypt / Decrypt.
    let plaintext = b"the SDK parses every response".to_vec();
    let enc = ok(
        &fe,
        "Encrypt",
        kms.encrypt()
            .key_id(k1)
            .plaintext(Blob::new(plaintext.clone()))
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await,
    );
    assert_eq!(enc.key_id(), Some(arn1.as_str()));
    assert_eq!(
        enc.encryption_algorithm().map(|a| a.as_str()),
        Some("SYMMETRIC_DEFAULT")
    );
    let blob = enc.ciphertext_blob().expect("CiphertextBlob").clone();
    for key_id in [None, Some(k1.clone()), Some(arn1.clone())] {
        let dec = ok(
            &fe,
            "Decrypt",
            kms.decrypt()
                .ciphertext_blob(blob.clone())
                .set_key_id(key_id)
                .set_encryption_context(Some(reordered.clone()))
                .send()
                .await,
        );
        assert_eq!(dec.plaintext().map(Blob::as_ref), Some(&plaintext[..]));
        assert_eq!(dec.key_id(), Some(arn1.as_str()));
        assert_eq!(
            dec.encryption_algorithm().map(|a| a.as_str()),
            Some("SYMMETRIC_DEFAULT")
        );
    }

    // GenerateDataKey (by KeySpec and by NumberOfBytes), decrypted under the other order.
    for (spec, bytes, len) in [
        (Some(DataKeySpec::Aes256), None, 32),
        (Some(DataKeySpec::Aes128), None, 16),
        (None, Some(64), 64),
    ] {
        let dk = ok(
            &fe,
            "GenerateDataKey",
            kms.generate_data_key()
                .key_id(k1)
                .set_key_spec(spec)
                .set_number_of_bytes(bytes)
                .set_encryption_context(Some(ctx.clone()))
                .send()
                .await,
        );
        assert_eq!(dk.key_id(), Some(arn1.as_str()));
        let key = dk.plaintext().expect("Plaintext").as_ref().to_vec();
        assert_eq!(key.len(), len);
        let dec = ok(
            &fe,
            "Decrypt data key",
            kms.decrypt()
                .ciphertext_blob(dk.ciphertext_blob().expect("CiphertextBlob").clone())
                .set_encryption_context(Some(reordered.clone()))
                .send()
                .await,
        );
        assert_eq!(dec.plaintext().map(Blob::as_ref), Some(&key[..]));
    }

    // GenerateDataKeyWithoutPlaintext.
    let dk = ok(
        &fe,
        "GenerateDataKeyWithoutPlaintext",
        kms.generate_data_key_without_plaintext()
            .key_id(k2)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(reordered.clone()))
            .send()
            .await,
    );
    assert_eq!(dk.key_id(), Some(arn2.as_str()));
    let dec = ok(
        &fe,
        "Decrypt data key without plaintext",
        kms.decrypt()
            .ciphertext_blob(dk.ciphertext_blob().expect("CiphertextBlob").clone())
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await,
    );
    assert_eq!(dec.plaintext().map(|p| p.as_ref().len()), Some(32));
    assert_eq!(dec.key_id(), Some(arn2.as_str()));

    // ReEncrypt k1 → k2, the source context in the other order and a new destination context.
    let mut dest_ctx = reordered.clone();
    dest_ctx.insert("stage".into(), "re-encrypted".into());
    let re = ok(
        &fe,
        "ReEncrypt",
        kms.re_encrypt()
            .ciphertext_blob(blob.clone())
            .set_source_encryption_context(Some(reordered.clone()))
            .source_key_id(k1)
            .destination_key_id(k2)
            .set_destination_encryption_context(Some(dest_ctx.clone()))
            .send()
            .await,
    );
    assert_eq!(re.source_key_id(), Some(arn1.as_str()));
    assert_eq!(re.key_id(), Some(arn2.as_str()));
    assert_eq!(
        re.source_encryption_algorithm().map(|a| a.as_str()),
        Some("SYMMETRIC_DEFAULT")
    );
    assert_eq!(
        re.destination_encryption_algorithm().map(|a| a.as_str()),
        Some("SYMMETRIC_DEFAULT")
    );
    let dec = ok(
        &fe,
        "Decrypt re-encrypted",
        kms.decrypt()
            .ciphertext_blob(re.ciphertext_blob().expect("CiphertextBlob").clone())
            .set_encryption_context(Some(dest_ctx))
            .send()
            .await,
    );
    assert_eq!(dec.plaintext().map(Blob::as_ref), Some(&plaintext[..]));
    assert_eq!(dec.key_id(), Some(arn2.as_str()));

    // GenerateRandom.
    let r1 = ok(
        &fe,
        "GenerateRandom",
        kms.generate_random().number_of_bytes(32).send().await,
    );
    let r2 = ok(
        &fe,
        "GenerateRandom",
        kms.generate_random().number_of_bytes(32).send().await,
    );
    let (r1, r2) = (
        r1.plaintext().expect("Plaintext"),
        r2.plaintext().expect("Plaintext"),
    );
    assert_eq!(r1.as_ref().len(), 32);
    assert_eq!(r2.as_ref().len(), 32);
    assert_ne!(r1, r2);
}

#[tokio::test]
async fn modeled_errors_have_their_sdk_shapes() {
    let fe = FrontendFixture::new().start();
    let kms = alice(&fe);

    // NotFoundException: a key id and an alias that do not exist.
    for missing in [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/no-such-alias",
    ] {
        let e = err(
            "DescribeKey missing",
            kms.describe_key().key_id(missing).send().await,
        );
        let se = e
            .as_service_error()
            .unwrap_or_else(|| panic!("{}", DisplayErrorContext(&e)));
        assert!(
            se.is_not_found_exception(),
            "{missing}: {}",
            DisplayErrorContext(&e)
        );
        assert_eq!(e.code(), Some("NotFoundException"));
        assert!(e.message().is_some_and(|m| !m.is_empty()), "{e:?}");
    }

    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = ok(&fe, "CreateKey", kms.create_key().send().await);
        keys.push(out.key_metadata().expect("KeyMetadata").key_id().to_owned());
    }
    let (k1, k2) = (&keys[0], &keys[1]);
    let enc = ok(
        &fe,
        "Encrypt",
        kms.encrypt()
            .key_id(k1)
            .plaintext(Blob::new(b"secret".to_vec()))
            .encryption_context("purpose", "errors")
            .send()
            .await,
    );
    let blob = enc.ciphertext_blob().expect("CiphertextBlob").clone();

    // InvalidCiphertextException: the wrong encryption context, and none at all.
    for ctx in [
        Some(HashMap::from([("purpose".to_owned(), "other".to_owned())])),
        None,
    ] {
        let e = err(
            "Decrypt with the wrong context",
            kms.decrypt()
                .ciphertext_blob(blob.clone())
                .set_encryption_context(ctx)
                .send()
                .await,
        );
        assert!(
            e.as_service_error()
                .is_some_and(|s| s.is_invalid_ciphertext_exception()),
            "{}",
            DisplayErrorContext(&e)
        );
        assert_eq!(e.code(), Some("InvalidCiphertextException"));
    }

    // IncorrectKeyException: naming another key than the ciphertext's.
    let e = err(
        "Decrypt naming another key",
        kms.decrypt()
            .ciphertext_blob(blob.clone())
            .key_id(k2)
            .encryption_context("purpose", "errors")
            .send()
            .await,
    );
    assert!(
        e.as_service_error()
            .is_some_and(|s| s.is_incorrect_key_exception()),
        "{}",
        DisplayErrorContext(&e)
    );
    assert_eq!(e.code(), Some("IncorrectKeyException"));

    // DisabledException: Encrypt with a disabled key.
    ok(&fe, "DisableKey", kms.disable_key().key_id(k2).send().await);
    let d = ok(
        &fe,
        "DescribeKey",
        kms.describe_key().key_id(k2).send().await,
    );
    let m = d.key_metadata().expect("KeyMetadata");
    assert_eq!(m.key_state().map(|s| s.as_str()), Some("Disabled"));
    assert!(!m.enabled());
    let e = err(
        "Encrypt with a disabled key",
        kms.encrypt()
            .key_id(k2)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
    );
    assert!(
        e.as_service_error()
            .is_some_and(|s| s.is_disabled_exception()),
        "{}",
        DisplayErrorContext(&e)
    );
    assert_eq!(e.code(), Some("DisabledException"));

    // ValidationException (not modeled for CreateKey: an unhandled error with its code).
    for (spec, usage) in [
        ("HMAC_256", "ENCRYPT_DECRYPT"),
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
        ("ML_KEM_512", "SIGN_VERIFY"),
    ] {
        let e = err(
            "CreateKey with an incompatible KeySpec/KeyUsage",
            kms.create_key()
                .key_spec(KeySpec::from(spec))
                .key_usage(KeyUsageType::from(usage))
                .send()
                .await,
        );
        assert_eq!(
            e.code(),
            Some("ValidationException"),
            "{spec}/{usage}: {}",
            DisplayErrorContext(&e)
        );
        assert!(e.message().is_some_and(|m| !m.is_empty()), "{e:?}");
    }
    // Nothing was stored by the rejected requests.
    let listed = ok(&fe, "ListKeys", kms.list_keys().send().await);
    assert_eq!(listed.keys().len(), 2);
}

#[tokio::test]
async fn authentication_errors_have_their_codes() {
    let fe = FrontendFixture::new().start();
    let p = fe.alice().clone();

    let wrong_secret = client_with(&fe, &p.access_key_id, &testkit::random_secret());
    let e = err(
        "ListKeys with a wrong secret",
        wrong_secret.list_keys().send().await,
    );
    assert_eq!(
        e.code(),
        Some("InvalidSignatureException"),
        "{}",
        DisplayErrorContext(&e)
    );
    assert!(e.message().is_some_and(|m| !m.is_empty()), "{e:?}");
    let e = err(
        "Encrypt with a wrong secret",
        wrong_secret
            .encrypt()
            .key_id("alias/any")
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
    );
    assert_eq!(
        e.code(),
        Some("InvalidSignatureException"),
        "{}",
        DisplayErrorContext(&e)
    );

    let unknown = client_with(&fe, "AKIAUNKNOWNUNKNOWN23", &p.secret);
    let e = err(
        "ListKeys with an unknown access key",
        unknown.list_keys().send().await,
    );
    assert_eq!(
        e.code(),
        Some("UnrecognizedClientException"),
        "{}",
        DisplayErrorContext(&e)
    );
    assert!(e.message().is_some_and(|m| !m.is_empty()), "{e:?}");
    let e = err(
        "DescribeKey with an unknown access key",
        unknown.describe_key().key_id("alias/any").send().await,
    );
    assert_eq!(
        e.code(),
        Some("UnrecognizedClientException"),
        "{}",
        DisplayErrorContext(&e)
    );

    // The right credentials still work on the same server.
    let kms = alice(&fe);
    ok(&fe, "ListKeys", kms.list_keys().send().await);
}

/// The other operations the front end serves: their responses parse too.
#[tokio::test]
async fn key_management_responses_parse() {
    let fe = FrontendFixture::new().start();
    let kms = alice(&fe);
    let account = fe.alice().account.clone();
    let out = ok(&fe, "CreateKey", kms.create_key().send().await);
    let key_id = out.key_metadata().expect("KeyMetadata").key_id().to_owned();
    let arn = key_arn(&account, &key_id);

    ok(
        &fe,
        "UpdateKeyDescription",
        kms.update_key_description()
            .key_id(&key_id)
            .description("described by the SDK")
            .send()
            .await,
    );
    ok(
        &fe,
        "TagResource",
        kms.tag_resource()
            .key_id(&key_id)
            .tags(
                Tag::builder()
                    .tag_key("team")
                    .tag_value("sdk")
                    .build()
                    .expect("tag"),
            )
            .send()
            .await,
    );
    let tags = ok(
        &fe,
        "ListResourceTags",
        kms.list_resource_tags().key_id(&key_id).send().await,
    );
    let pairs: Vec<(&str, &str)> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key(), t.tag_value()))
        .collect();
    assert_eq!(pairs, [("team", "sdk")]);
    assert!(!tags.truncated());
    ok(
        &fe,
        "UntagResource",
        kms.untag_resource()
            .key_id(&key_id)
            .tag_keys("team")
            .send()
            .await,
    );

    let policy = ok(
        &fe,
        "GetKeyPolicy",
        kms.get_key_policy().key_id(&key_id).send().await,
    );
    assert_eq!(policy.policy_name(), Some("default"));
    let text = policy.policy().expect("Policy").to_owned();
    assert!(text.contains(&account), "{text}");
    ok(
        &fe,
        "PutKeyPolicy",
        kms.put_key_policy()
            .key_id(&key_id)
            .policy(&text)
            .send()
            .await,
    );
    let names = ok(
        &fe,
        "ListKeyPolicies",
        kms.list_key_policies().key_id(&key_id).send().await,
    );
    assert_eq!(names.policy_names(), ["default"]);
    assert!(!names.truncated());

    ok(
        &fe,
        "CreateAlias",
        kms.create_alias()
            .alias_name("alias/sdk-managed")
            .target_key_id(&key_id)
            .send()
            .await,
    );
    let other = ok(&fe, "CreateKey", kms.create_key().send().await);
    let other_id = other
        .key_metadata()
        .expect("KeyMetadata")
        .key_id()
        .to_owned();
    ok(
        &fe,
        "UpdateAlias",
        kms.update_alias()
            .alias_name("alias/sdk-managed")
            .target_key_id(&other_id)
            .send()
            .await,
    );
    let d = ok(
        &fe,
        "DescribeKey by alias",
        kms.describe_key().key_id("alias/sdk-managed").send().await,
    );
    assert_eq!(
        d.key_metadata().map(KeyMetadata::key_id),
        Some(other_id.as_str())
    );
    ok(
        &fe,
        "DeleteAlias",
        kms.delete_alias()
            .alias_name("alias/sdk-managed")
            .send()
            .await,
    );

    ok(
        &fe,
        "DisableKey",
        kms.disable_key().key_id(&key_id).send().await,
    );
    ok(
        &fe,
        "EnableKey",
        kms.enable_key().key_id(&key_id).send().await,
    );

    let scheduled = ok(
        &fe,
        "ScheduleKeyDeletion",
        kms.schedule_key_deletion()
            .key_id(&key_id)
            .pending_window_in_days(7)
            .send()
            .await,
    );
    assert_eq!(scheduled.key_id(), Some(arn.as_str()));
    assert_eq!(
        scheduled.key_state().map(|s| s.as_str()),
        Some("PendingDeletion")
    );
    assert_eq!(scheduled.pending_window_in_days(), Some(7));
    let deletion = scheduled.deletion_date().expect("DeletionDate").secs();
    assert!(
        (deletion - now_secs() - 7 * 86_400).abs() < 300,
        "DeletionDate {deletion}"
    );
    let d = ok(
        &fe,
        "DescribeKey pending deletion",
        kms.describe_key().key_id(&key_id).send().await,
    );
    let m = d.key_metadata().expect("KeyMetadata");
    assert_eq!(m.key_state().map(|s| s.as_str()), Some("PendingDeletion"));
    assert_eq!(m.deletion_date().map(|t| t.secs()), Some(deletion));
    assert_eq!(m.description(), Some("described by the SDK"));
    assert!(!m.enabled());

    let cancelled = ok(
        &fe,
        "CancelKeyDeletion",
        kms.cancel_key_deletion().key_id(&key_id).send().await,
    );
    assert_eq!(cancelled.key_id(), Some(arn.as_str()));
    let d = ok(
        &fe,
        "DescribeKey after cancel",
        kms.describe_key().key_id(&key_id).send().await,
    );
    let m = d.key_metadata().expect("KeyMetadata");
    assert_eq!(m.key_state().map(|s| s.as_str()), Some("Disabled"));
    assert_eq!(m.deletion_date(), None);
}
