//! The flows of AWS's XKS proxy test client (`test-xks-proxy`, 49 cases: health, key
//! metadata, encrypt/decrypt with and without AAD and CDIV, 4 KiB plaintext with 8 KiB AAD,
//! encrypt-only, decrypt-only and no-usage keys), sent as that client sends them: one curl
//! process per request, `--aws-sigv4`, `Content-Type:application/json`, the body inline.
//! Over h2 and HTTP/1.1, on the embedded store and on a PKCS#11 store (SoftHSMv2), 20 rounds
//! in a row; a single failed case (or a curl transfer error, such as an h2 stream that was
//! not closed cleanly) fails the test.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::Command;
use testkit::kms_backends::SoftHsm;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks::{b64, request_id, unb64};
use xks_api::ErrorName;

const ROUNDS: usize = 20;
const PREFIX: &str = "/conformance/tenant";
const KEY: &str = "conformance-key";
const ENCRYPT_ONLY: &str = "encrypt-only-key";
const DECRYPT_ONLY: &str = "decrypt-only-key";
const NO_USAGE: &str = "no-usage-key";
const MISSING_KEY: &str = "non_existing_key";

#[derive(Debug, Clone, Copy)]
enum Http {
    H2,
    H1,
}

impl Http {
    fn flag(self) -> &'static str {
        match self {
            Self::H2 => "--http2",
            Self::H1 => "--http1.1",
        }
    }

    /// What curl's `%{http_version}` reports.
    fn version(self) -> &'static str {
        match self {
            Self::H2 => "2",
            Self::H1 => "1.1",
        }
    }
}

/// One proxy under test and the way curl reaches it.
struct Conformance<'a> {
    proxy: &'a RunningProxy,
    http: Http,
    akid: String,
    secret: String,
}

/// What one curl request got back.
struct Answer {
    status: u16,
    body: Value,
    raw: String,
}

impl Answer {
    #[track_caller]
    fn expect_error(&self, name: ErrorName, case: &str) {
        assert_eq!(
            (self.status, self.body["errorName"].as_str()),
            (name.http_status(), Some(name.as_str())),
            "{case}: {}",
            self.raw
        );
    }

    #[track_caller]
    fn expect_ok(&self, field: &str, case: &str) -> &Value {
        assert!(
            self.status == 200 && !self.body[field].is_null(),
            "{case}: expected 200 with {field}, got {} {}",
            self.status,
            self.raw
        );
        &self.body
    }
}

fn request_metadata(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": op,
        "kmsRequestId": request_id(),
        "kmsViaService": "ebs",
    })
}

fn health_body() -> Value {
    json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": request_id()}})
}

fn encrypt_body(plaintext: Option<&[u8]>, aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut v =
        json!({"requestMetadata": request_metadata("Encrypt"), "encryptionAlgorithm": "AES_GCM"});
    if let Some(p) = plaintext {
        v["plaintext"] = json!(b64(p));
    }
    if let Some(a) = aad {
        v["additionalAuthenticatedData"] = json!(b64(a));
    }
    if cdiv {
        v["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    v
}

fn decrypt_body(encrypted: &Value, aad: Option<&[u8]>) -> Value {
    let mut v = json!({
        "requestMetadata": request_metadata("Decrypt"),
        "ciphertext": encrypted["ciphertext"],
        "initializationVector": encrypted["initializationVector"],
        "authenticationTag": encrypted["authenticationTag"],
        "encryptionAlgorithm": "AES_GCM",
    });
    if !encrypted["ciphertextMetadata"].is_null() {
        v["ciphertextMetadata"] = encrypted["ciphertextMetadata"].clone();
    }
    if let Some(a) = aad {
        v["additionalAuthenticatedData"] = json!(b64(a));
    }
    v
}

/// The CDIV as the test client recomputes it: SHA-256 over
/// `[AAD] || [ciphertextMetadata] || IV || ciphertext || tag`.
fn expected_cdiv(encrypted: &Value, aad: Option<&[u8]>) -> Vec<u8> {
    let field = |name: &str| {
        if encrypted[name].is_null() {
            Vec::new()
        } else {
            unb64(&encrypted[name])
        }
    };
    let mut h = Sha256::new();
    h.update(aad.unwrap_or_default());
    for name in [
        "ciphertextMetadata",
        "initializationVector",
        "ciphertext",
        "authenticationTag",
    ] {
        h.update(field(name));
    }
    h.finalize().to_vec()
}

impl Conformance<'_> {
    /// POSTs `body` to `<prefix>/kms/xks/v1/<target>` with curl, signed with the given
    /// credential; curl must complete the transfer (exit 0) over the chosen HTTP version.
    fn post_as(
        &self,
        prefix: &str,
        target: &str,
        body: &Value,
        akid: &str,
        secret: &str,
    ) -> Answer {
        let url = format!(
            "https://localhost:{}{prefix}/kms/xks/v1/{target}",
            self.proxy.port
        );
        let out = Command::new("curl")
            .arg(&url)
            .args(["--silent", "--show-error", self.http.flag()])
            .arg("--cacert")
            .arg(&self.proxy.fixture.pki.ca_pem)
            .args(["-H", "Content-Type:application/json"])
            .args(["--aws-sigv4", "aws:amz:us-east-2:kms-xks-proxy"])
            .args(["--user", &format!("{akid}:{secret}")])
            .args(["--data-binary", &body.to_string()])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .output()
            .expect("curl must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {target} over {:?} failed ({}): {}{stdout}",
            self.http,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (json_text, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let (status, version) = trailer.split_once(' ').unwrap_or((trailer, ""));
        assert_eq!(version, self.http.version(), "{url}: {stdout}");
        Answer {
            status: status.parse().unwrap_or(0),
            body: serde_json::from_str(json_text).unwrap_or(Value::Null),
            raw: stdout,
        }
    }

    fn post(&self, target: &str, body: &Value) -> Answer {
        self.post_as(PREFIX, target, body, &self.akid, &self.secret)
    }

    /// The three ways the test client sends a request that must not be served: an unknown
    /// access key id, a wrong secret, a path prefix the store does not have.
    fn rejected_requests(&self, target: &str, body: &Value, what: &str) {
        self.post_as(
            PREFIX,
            target,
            body,
            &format!("Invalid{}", self.akid),
            &self.secret,
        )
        .expect_error(
            ErrorName::AuthenticationFailedException,
            &format!("{what} with an invalid access key id"),
        );
        self.post_as(
            PREFIX,
            target,
            body,
            &self.akid,
            &format!("Invalid{}", self.secret),
        )
        .expect_error(
            ErrorName::AuthenticationFailedException,
            &format!("{what} with an invalid secret"),
        );
        self.post_as(
            &format!("{PREFIX}/invalid"),
            target,
            body,
            &self.akid,
            &self.secret,
        )
        .expect_error(
            ErrorName::InvalidUriPathException,
            &format!("{what} with an invalid URI prefix"),
        );
    }

    /// test_get_health_status: 6 cases.
    fn health(&self) {
        self.post("health", &health_body())
            .expect_ok("ekmFleetDetails", "GetHealthStatus");
        self.post("health", &json!({})).expect_error(
            ErrorName::ValidationException,
            "health without requestMetadata",
        );
        self.post("health", &json!({"requestMetadata": {}}))
            .expect_error(
                ErrorName::ValidationException,
                "health with empty requestMetadata",
            );
        self.rejected_requests("health", &health_body(), "GetHealthStatus");
    }

    /// test_get_key_metadata: 8 cases.
    fn metadata(&self) {
        let target = format!("keys/{KEY}/metadata");
        for op in ["DescribeKey", "CreateKey"] {
            let a = self.post(&target, &json!({"requestMetadata": request_metadata(op)}));
            let body = a.expect_ok("keyStatus", op);
            assert_eq!(body["keySpec"], "AES_256", "{}", a.raw);
            assert_eq!(body["keyUsage"], json!(["ENCRYPT", "DECRYPT"]), "{}", a.raw);
        }
        self.post(&target, &json!({})).expect_error(
            ErrorName::ValidationException,
            "metadata without requestMetadata",
        );
        self.post(&target, &json!({"requestMetadata": {}}))
            .expect_error(
                ErrorName::ValidationException,
                "metadata with empty requestMetadata",
            );
        self.post(
            &format!("keys/{MISSING_KEY}/metadata"),
            &json!({"requestMetadata": request_metadata("DescribeKey")}),
        )
        .expect_error(ErrorName::KeyNotFoundException, "metadata of a missing key");
        self.rejected_requests(
            &target,
            &json!({"requestMetadata": request_metadata("DescribeKey")}),
            "GetKeyMetadata",
        );
    }

    fn encrypt(&self, key: &str, plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Answer {
        self.post(
            &format!("keys/{key}/encrypt"),
            &encrypt_body(Some(plaintext), aad, cdiv),
        )
    }

    fn decrypt(&self, key: &str, encrypted: &Value, aad: Option<&[u8]>) -> Answer {
        self.post(
            &format!("keys/{key}/decrypt"),
            &decrypt_body(encrypted, aad),
        )
    }

    /// An Encrypt that must succeed, then its Decrypt with `decrypt_aad`.
    fn round_trip(
        &self,
        plaintext: &[u8],
        aad: Option<&[u8]>,
        decrypt_aad: Option<&[u8]>,
        cdiv: bool,
    ) -> Answer {
        let enc = self.encrypt(KEY, plaintext, aad, cdiv);
        let body = enc.expect_ok("ciphertext", "Encrypt").clone();
        if cdiv {
            assert_eq!(
                unb64(&body["ciphertextDataIntegrityValue"]),
                expected_cdiv(&body, aad),
                "the CDIV does not match the test client's computation: {}",
                enc.raw
            );
        }
        self.decrypt(KEY, &body, decrypt_aad)
    }

    /// test_encrypt_decrypt: 21 cases.
    fn encrypt_decrypt(&self) {
        let plaintext = b"plaintext\n";
        let aad: &[u8] = b"project=nile,department=marketing";
        let aad2: &[u8] = b"project=blue,department=finance";
        self.encrypt(MISSING_KEY, plaintext, None, false)
            .expect_error(
                ErrorName::KeyNotFoundException,
                "Encrypt with a missing key",
            );
        self.post(
            &format!("keys/{KEY}/encrypt"),
            &encrypt_body(None, None, false),
        )
        .expect_error(ErrorName::ValidationException, "Encrypt without plaintext");
        self.rejected_requests(
            &format!("keys/{KEY}/encrypt"),
            &encrypt_body(Some(plaintext), None, false),
            "Encrypt",
        );
        for _ in 0..2 {
            self.round_trip(plaintext, Some(aad), None, false)
                .expect_error(
                    ErrorName::InvalidCiphertextException,
                    "Decrypt without the AAD",
                );
        }
        self.round_trip(plaintext, Some(aad), Some(aad2), false)
            .expect_error(
                ErrorName::InvalidCiphertextException,
                "Decrypt with another AAD",
            );
        let plaintext2 = b"Hello World!";
        for (aad, cdiv) in [
            (None, false),
            (Some(aad), false),
            (Some(aad), true),
            (None, true),
        ] {
            let a = self.round_trip(plaintext2, aad, aad, cdiv);
            assert_eq!(
                unb64(&a.expect_ok("plaintext", "Decrypt")["plaintext"]),
                plaintext2
            );
        }
        let large_plaintext = testkit::random_bytes(4096);
        let large_aad = testkit::random_bytes(8192);
        let a = self.round_trip(&large_plaintext, Some(&large_aad), Some(&large_aad), false);
        assert_eq!(
            unb64(&a.expect_ok("plaintext", "large Decrypt")["plaintext"]),
            large_plaintext
        );
    }

    /// test_encrypt_only_key: 6 cases.
    fn encrypt_only_key(&self) {
        let plaintext = b"plaintext\n";
        let aad: &[u8] = b"project=nile,department=marketing";
        for aad in [None, Some(aad)] {
            let enc = self.encrypt(ENCRYPT_ONLY, plaintext, aad, false);
            let body = enc
                .expect_ok("ciphertext", "Encrypt with an encrypt-only key")
                .clone();
            self.decrypt(ENCRYPT_ONLY, &body, aad).expect_error(
                ErrorName::InvalidKeyUsageException,
                "Decrypt with an encrypt-only key",
            );
        }
        for aad in [Some(aad), None] {
            self.encrypt(ENCRYPT_ONLY, plaintext, aad, true)
                .expect_error(
                    ErrorName::InvalidKeyUsageException,
                    "Encrypt with CDIV on an encrypt-only key",
                );
        }
    }

    /// test_decrypt_only_key and test_impotent_key: 4 cases each.
    fn keys_that_cannot_encrypt(&self) {
        let plaintext = b"plaintext\n";
        let aad: &[u8] = b"project=nile,department=marketing";
        for key in [DECRYPT_ONLY, NO_USAGE] {
            for (aad, cdiv) in [
                (Some(aad), false),
                (None, false),
                (Some(aad), true),
                (None, true),
            ] {
                self.encrypt(key, plaintext, aad, cdiv).expect_error(
                    ErrorName::InvalidKeyUsageException,
                    &format!("Encrypt with {key}"),
                );
            }
        }
    }

    /// All 49 cases, in the test client's order.
    fn run_all(&self) {
        self.health();
        self.metadata();
        self.encrypt_decrypt();
        self.encrypt_only_key();
        self.keys_that_cannot_encrypt();
    }
}

/// Creates the four keys the test client needs with the proxy's own CLI.
fn create_keys(f: &ProxyFixture) {
    f.keys("conformance", &["create", KEY]);
    f.keys(
        "conformance",
        &["create", ENCRYPT_ONLY, "--usage", "encrypt"],
    );
    f.keys(
        "conformance",
        &["create", DECRYPT_ONLY, "--usage", "decrypt"],
    );
    f.keys("conformance", &["create", NO_USAGE, "--usage", "none"]);
}

fn run_rounds(proxy: &RunningProxy) {
    let (akid, secret) = proxy.fixture.stores[0].credentials[0].clone();
    for round in 0..ROUNDS {
        for http in [Http::H2, Http::H1] {
            let c = Conformance {
                proxy,
                http,
                akid: akid.clone(),
                secret: secret.clone(),
            };
            eprintln!("round {round}, {http:?}");
            c.run_all();
        }
    }
}

#[test]
fn the_test_clients_flows_pass_twenty_rounds_in_a_row_on_the_embedded_store() {
    let f = ProxyFixture::new().store(StoreSpec::new("conformance", PREFIX));
    f.prepare();
    create_keys(&f);
    let proxy = RunningProxy::spawn(f);
    run_rounds(&proxy);
}

#[test]
fn the_test_clients_flows_pass_twenty_rounds_in_a_row_on_a_pkcs11_store() {
    let hsm = SoftHsm::new();
    let mut f = ProxyFixture::new();
    f.env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    let status = f.path().join("key-status.toml").display().to_string();
    let f = f.store(StoreSpec::new("conformance", PREFIX).with_backend(hsm.backend_toml(&status)));
    f.prepare();
    create_keys(&f);
    let proxy = RunningProxy::spawn(f);
    run_rounds(&proxy);
}
