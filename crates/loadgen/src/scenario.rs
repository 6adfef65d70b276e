//! Scenarios: which requests are sent, the setup they need, and how a response is judged.
//!
//! Every request is built unsigned ([`Prepared::request`]) and signed by the runner right
//! before it is sent, with a fresh `X-Amz-Date` (see [`sign_and_build`]); nothing is ever
//! replayed. Bodies carry a fresh `kmsRequestId` (XKS) per request.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigv4_auth::SigningParams;

use crate::target::Target;

/// The `awsPrincipalArn` sent in XKS request metadata.
pub const PRINCIPAL_ARN: &str = "arn:aws:iam::111122223333:user/xks-load";
/// The `kmsKeyArn` sent in XKS request metadata.
pub const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// The `xks-mixed` operation mix, out of [`MIX_PERIOD`] consecutive requests: 9 Encrypt,
/// 9 Decrypt, 1 GetKeyMetadata, 1 GetHealthStatus (45 % / 45 % / 5 % / 5 %), interleaved
/// deterministically by request sequence number. This approximates what KMS sends an
/// external key store: mostly Encrypt/Decrypt (GenerateDataKey and Encrypt both become XKS
/// Encrypt), with periodic health checks and the occasional metadata lookup.
pub const MIX: [XksOp; MIX_PERIOD as usize] = {
    use XksOp::{Decrypt as D, Encrypt as E, Health as H, Metadata as M};
    [E, D, E, D, E, D, E, D, M, E, D, E, D, E, D, E, D, E, D, H]
};
/// Length of the [`MIX`] cycle.
pub const MIX_PERIOD: u64 = 20;

/// One XKS operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XksOp {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

impl XksOp {
    /// The operation's name as reported.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "GetHealthStatus",
            Self::Metadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        }
    }
}

/// Options of the XKS Encrypt-based scenarios.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptOptions {
    /// Plaintext size in bytes (random, fixed for the run). XKS allows up to 4,300.
    pub size: usize,
    /// Size of the additional authenticated data in bytes (random, fixed), if any.
    pub aad_size: Option<usize>,
    /// Ask for a ciphertext data integrity value (`SHA_256`).
    pub cdiv: bool,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        Self {
            size: 32,
            aad_size: None,
            cdiv: false,
        }
    }
}

/// `Origin` of keys made by `kms-create-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOrigin {
    /// Key material made by KMS.
    #[serde(rename = "AWS_KMS")]
    AwsKms,
    /// A key in an external key store.
    #[serde(rename = "EXTERNAL_KEY_STORE")]
    ExternalKeyStore {
        /// The custom key store id (`cks-...`).
        custom_key_store_id: String,
        /// The external key id; `{seq}` is replaced by the request's sequence number, so each
        /// request can name a different external key (a custom key store lets one external
        /// key back only one KMS key: reuse gives `XksKeyAlreadyInUseException`).
        xks_key_id: String,
    },
}

/// A scenario: what each request does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Scenario {
    /// XKS GetHealthStatus.
    XksHealth,
    /// XKS GetKeyMetadata of the target's key.
    XksMetadata,
    /// XKS Encrypt.
    XksEncrypt(EncryptOptions),
    /// XKS Decrypt of one ciphertext made by an Encrypt at setup.
    XksDecrypt(EncryptOptions),
    /// The KMS-shaped [`MIX`] (Encrypt and Decrypt with these options).
    XksMixed(EncryptOptions),
    /// KMS CreateKey (`KeySpec` `SYMMETRIC_DEFAULT`, `KeyUsage` `ENCRYPT_DECRYPT`).
    KmsCreateKey {
        /// The origin, and for external keys the key store and external key id.
        origin: KeyOrigin,
    },
    /// KMS Encrypt.
    KmsEncrypt {
        /// Key id, ARN or alias.
        key_id: String,
        /// Plaintext size in bytes (KMS allows up to 4,096).
        size: usize,
        /// A grant token sent in `GrantTokens` with every request (the caller authorized
        /// by a grant), if any.
        grant_token: Option<String>,
    },
    /// KMS Decrypt of one ciphertext made by an Encrypt at setup.
    KmsDecrypt {
        /// Key id, ARN or alias.
        key_id: String,
        /// Plaintext size in bytes.
        size: usize,
    },
    /// KMS GenerateDataKey (`KeySpec` `AES_256`).
    KmsGenerateDataKey {
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// KMS Sign of a random `size`-byte message (`MessageType` `RAW`).
    KmsSign {
        /// Key id, ARN or alias of a `SIGN_VERIFY` key.
        key_id: String,
        /// Message size in bytes (KMS allows up to 4,096).
        size: usize,
        /// The `SigningAlgorithm`.
        algorithm: String,
    },
    /// KMS Verify of one signature made by a Sign at setup.
    KmsVerify {
        /// Key id, ARN or alias of a `SIGN_VERIFY` key.
        key_id: String,
        /// Message size in bytes.
        size: usize,
        /// The `SigningAlgorithm`.
        algorithm: String,
    },
    /// KMS Decrypt with an asymmetric `ENCRYPT_DECRYPT` key of one ciphertext made by an
    /// Encrypt at setup.
    KmsDecryptAsymmetric {
        /// Key id, ARN or alias of an RSA (or SM2) `ENCRYPT_DECRYPT` key.
        key_id: String,
        /// Plaintext size in bytes (within the algorithm's limit, e.g. 190 for RSA_2048 OAEP
        /// SHA-256).
        size: usize,
        /// The `EncryptionAlgorithm`.
        algorithm: String,
    },
    /// KMS GenerateMac of a random `size`-byte message.
    KmsGenerateMac {
        /// Key id, ARN or alias of an HMAC key.
        key_id: String,
        /// Message size in bytes (KMS allows up to 4,096).
        size: usize,
        /// The `MacAlgorithm`.
        algorithm: String,
    },
    /// KMS DeriveSharedSecret (ECDH) with the key's own public key, fetched at setup, as
    /// the peer's (the cost is that of any peer key on the curve).
    KmsDeriveSharedSecret {
        /// Key id, ARN or alias of a `KEY_AGREEMENT` key.
        key_id: String,
    },
}

impl Scenario {
    /// The scenario's command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::XksHealth => "xks-health",
            Self::XksMetadata => "xks-metadata",
            Self::XksEncrypt(_) => "xks-encrypt",
            Self::XksDecrypt(_) => "xks-decrypt",
            Self::XksMixed(_) => "xks-mixed",
            Self::KmsCreateKey { .. } => "kms-create-key",
            Self::KmsEncrypt { .. } => "kms-encrypt",
            Self::KmsDecrypt { .. } => "kms-decrypt",
            Self::KmsGenerateDataKey { .. } => "kms-generate-data-key",
            Self::KmsSign { .. } => "kms-sign",
            Self::KmsVerify { .. } => "kms-verify",
            Self::KmsDecryptAsymmetric { .. } => "kms-decrypt-asymmetric",
            Self::KmsGenerateMac { .. } => "kms-generate-mac",
            Self::KmsDeriveSharedSecret { .. } => "kms-derive-shared-secret",
        }
    }

    /// Whether the scenario drives an XKS proxy (else a KMS endpoint).
    pub fn is_xks(&self) -> bool {
        matches!(
            self,
            Self::XksHealth
                | Self::XksMetadata
                | Self::XksEncrypt(_)
                | Self::XksDecrypt(_)
                | Self::XksMixed(_)
        )
    }
}

/// A scenario could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The scenario is for the other kind of target.
    #[error("scenario {scenario} needs a{} target", if *.xks { "n XKS" } else { " KMS" })]
    WrongTarget {
        /// The scenario's name.
        scenario: &'static str,
        /// Whether it needs an XKS target.
        xks: bool,
    },
    /// The setup request (e.g. the Encrypt before a Decrypt run) failed.
    #[error("setup request {operation} failed: {problem}")]
    Request {
        /// The operation.
        operation: &'static str,
        /// What went wrong (status and error name, or the transport error).
        problem: String,
    },
    /// A request could not be signed or built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The HTTP client could not be configured.
    #[error(transparent)]
    Client(#[from] crate::target::ClientError),
}

/// A request could not be signed or built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL or a header is malformed.
    #[error("malformed request: {0}")]
    Http(#[from] http::Error),
    /// SigV4 signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] sigv4_auth::SignError),
    /// reqwest refused the request.
    #[error("request: {0}")]
    Reqwest(#[from] reqwest::Error),
}

/// An unsigned request: method POST, URL, extra headers and body.
#[derive(Debug, Clone)]
pub struct UnsignedRequest {
    /// The operation, for per-operation statistics.
    pub operation: &'static str,
    /// The full URL.
    pub url: Arc<str>,
    /// `X-Amz-Target` for KMS requests.
    pub amz_target: Option<&'static str>,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// Signs `request` with the target's credential at `time` and turns it into a reqwest request.
pub fn sign_and_build(
    target: &Target,
    request: UnsignedRequest,
    time: SystemTime,
) -> Result<reqwest::Request, BuildError> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&*request.url)
        .header(CONTENT_TYPE, HeaderValue::from_static(request.content_type));
    if let Some(amz_target) = request.amz_target {
        builder = builder.header("x-amz-target", HeaderValue::from_static(amz_target));
    }
    let (mut parts, ()) = builder.body(())?.into_parts();
    let (credential, region, service) = target.signing();
    sigv4_auth::sign(
        &mut parts,
        &request.body,
        &SigningParams {
            credential,
            region,
            service,
            time,
        },
    )?;
    Ok(reqwest::Request::try_from(Request::from_parts(
        parts,
        request.body,
    ))?)
}

/// The KMS JSON 1.1 content type.
pub const KMS_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A scenario after its setup, ready to produce requests.
pub struct Prepared {
    target: Target,
    scenario: Scenario,
    run_nonce: String,
    plaintext_b64: String,
    aad_b64: Option<String>,
    /// The Decrypt body's fixed fields (XKS: from the setup Encrypt; KMS: `CiphertextBlob`).
    decrypt_fields: serde_json::Map<String, Value>,
    urls: Urls,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("target", &self.target.url())
            .field("scenario", &self.scenario.name())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Urls {
    health: Arc<str>,
    metadata: Arc<str>,
    encrypt: Arc<str>,
    decrypt: Arc<str>,
    kms: Arc<str>,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    // A failing random source only makes the payload less random; it is not secret.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Prepared {
    /// Checks the scenario against the target and runs its setup request, if any, with
    /// `client` (e.g. the Encrypt whose ciphertext a Decrypt run decrypts).
    pub async fn setup(
        target: Target,
        scenario: Scenario,
        client: &reqwest::Client,
    ) -> Result<Self, SetupError> {
        let is_xks_target = matches!(target, Target::Xks { .. });
        if scenario.is_xks() != is_xks_target {
            return Err(SetupError::WrongTarget {
                scenario: scenario.name(),
                xks: scenario.is_xks(),
            });
        }
        // Sizes are not checked here: the server's limits are part of what is measured.
        let (size, aad_size) = match &scenario {
            Scenario::XksEncrypt(o) | Scenario::XksDecrypt(o) | Scenario::XksMixed(o) => {
                (o.size, o.aad_size)
            }
            Scenario::KmsEncrypt { size, .. }
            | Scenario::KmsDecrypt { size, .. }
            | Scenario::KmsSign { size, .. }
            | Scenario::KmsVerify { size, .. }
            | Scenario::KmsDecryptAsymmetric { size, .. }
            | Scenario::KmsGenerateMac { size, .. } => (*size, None),
            _ => (0, None),
        };
        let urls = match &target {
            Target::Xks {
                url_base, key_id, ..
            } => {
                let key =
                    |op: &str| -> Arc<str> { format!("{url_base}/keys/{key_id}/{op}").into() };
                Urls {
                    health: format!("{url_base}/health").into(),
                    metadata: key("metadata"),
                    encrypt: key("encrypt"),
                    decrypt: key("decrypt"),
                    kms: "".into(),
                }
            }
            Target::Kms { endpoint, .. } => Urls {
                health: "".into(),
                metadata: "".into(),
                encrypt: "".into(),
                decrypt: "".into(),
                kms: endpoint.as_str().into(),
            },
        };
        let mut prepared = Self {
            target,
            scenario,
            run_nonce: hex(&random_bytes(6)),
            plaintext_b64: xks_api::bytes::encode(&random_bytes(size)),
            aad_b64: aad_size.map(|n| xks_api::bytes::encode(&random_bytes(n))),
            decrypt_fields: serde_json::Map::new(),
            urls,
        };
        prepared.decrypt_fields = match &prepared.scenario {
            Scenario::XksDecrypt(_) | Scenario::XksMixed(_) => {
                let response = prepared
                    .setup_call(client, prepared.xks_request(XksOp::Encrypt, 0))
                    .await?;
                let mut fields = serde_json::Map::new();
                for name in [
                    "ciphertext",
                    "initializationVector",
                    "authenticationTag",
                    "ciphertextMetadata",
                ] {
                    if let Some(value) = response.get(name).filter(|v| v.is_string()) {
                        fields.insert(name.to_owned(), value.clone());
                    }
                }
                if !fields.contains_key("ciphertext") {
                    return Err(SetupError::Request {
                        operation: "Encrypt",
                        problem: "the response has no ciphertext".to_owned(),
                    });
                }
                fields
            }
            Scenario::KmsDecrypt { key_id, .. } => {
                let body = json!({"KeyId": key_id, "Plaintext": prepared.plaintext_b64});
                prepared
                    .setup_field(
                        client,
                        "Encrypt",
                        "TrentService.Encrypt",
                        body,
                        "CiphertextBlob",
                    )
                    .await?
            }
            Scenario::KmsVerify {
                key_id, algorithm, ..
            } => {
                let body = json!({"KeyId": key_id, "Message": prepared.plaintext_b64, "SigningAlgorithm": algorithm});
                prepared
                    .setup_field(client, "Sign", "TrentService.Sign", body, "Signature")
                    .await?
            }
            Scenario::KmsDecryptAsymmetric {
                key_id, algorithm, ..
            } => {
                let body = json!({"KeyId": key_id, "Plaintext": prepared.plaintext_b64, "EncryptionAlgorithm": algorithm});
                prepared
                    .setup_field(
                        client,
                        "Encrypt",
                        "TrentService.Encrypt",
                        body,
                        "CiphertextBlob",
                    )
                    .await?
            }
            Scenario::KmsDeriveSharedSecret { key_id } => {
                let body = json!({"KeyId": key_id});
                prepared
                    .setup_field(
                        client,
                        "GetPublicKey",
                        "TrentService.GetPublicKey",
                        body,
                        "PublicKey",
                    )
                    .await?
            }
            _ => serde_json::Map::new(),
        };
        Ok(prepared)
    }

    /// Makes one setup call and keeps one string field of its answer (a ciphertext, a
    /// signature, a public key) as the only field the measured requests add.
    async fn setup_field(
        &self,
        client: &reqwest::Client,
        operation: &'static str,
        amz_target: &'static str,
        body: Value,
        field: &'static str,
    ) -> Result<serde_json::Map<String, Value>, SetupError> {
        let response = self
            .setup_call(client, self.kms_request(operation, amz_target, body))
            .await?;
        let Some(value) = response.get(field).filter(|v| v.is_string()) else {
            return Err(SetupError::Request {
                operation,
                problem: format!("the response has no {field}"),
            });
        };
        let mut fields = serde_json::Map::new();
        fields.insert(field.to_owned(), value.clone());
        Ok(fields)
    }

    async fn setup_call(
        &self,
        client: &reqwest::Client,
        request: UnsignedRequest,
    ) -> Result<Value, SetupError> {
        let operation = request.operation;
        let request = sign_and_build(&self.target, request, SystemTime::now())?;
        let response = client
            .execute(request)
            .await
            .map_err(|e| SetupError::Request {
                operation,
                problem: format!("{} ({e})", transport_error_name(&e)),
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| SetupError::Request {
            operation,
            problem: format!("{} ({e})", transport_error_name(&e)),
        })?;
        if !status.is_success() {
            return Err(SetupError::Request {
                operation,
                problem: format!("{status}: {}", error_name(&self.target, status, &body)),
            });
        }
        serde_json::from_slice(&body).map_err(|e| SetupError::Request {
            operation,
            problem: format!("the response is not JSON: {e}"),
        })
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn request_id(&self, seq: u64) -> String {
        format!("xks-load-{}-{seq}", self.run_nonce)
    }

    fn xks_request(&self, op: XksOp, seq: u64) -> UnsignedRequest {
        let kms_request_id = self.request_id(seq);
        let (url, body) = match op {
            XksOp::Health => (
                &self.urls.health,
                json!({"requestMetadata": {
                    "kmsRequestId": kms_request_id,
                    "kmsOperation": "KmsHealthCheck",
                }}),
            ),
            XksOp::Metadata => (
                &self.urls.metadata,
                json!({"requestMetadata": {
                    "awsPrincipalArn": PRINCIPAL_ARN,
                    "kmsOperation": "DescribeKey",
                    "kmsRequestId": kms_request_id,
                }}),
            ),
            XksOp::Encrypt | XksOp::Decrypt => {
                let operation = op.name();
                let mut body = json!({
                    "requestMetadata": {
                        "awsPrincipalArn": PRINCIPAL_ARN,
                        "kmsKeyArn": KMS_KEY_ARN,
                        "kmsOperation": operation,
                        "kmsRequestId": kms_request_id,
                    },
                    "encryptionAlgorithm": "AES_GCM",
                });
                if let Some(aad) = &self.aad_b64 {
                    body["additionalAuthenticatedData"] = json!(aad);
                }
                let url = if op == XksOp::Encrypt {
                    body["plaintext"] = json!(self.plaintext_b64);
                    if self.encrypt_options().is_some_and(|o| o.cdiv) {
                        body["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
                    }
                    &self.urls.encrypt
                } else {
                    for (name, value) in &self.decrypt_fields {
                        body[name.as_str()] = value.clone();
                    }
                    &self.urls.decrypt
                };
                (url, body)
            }
        };
        UnsignedRequest {
            operation: op.name(),
            url: Arc::clone(url),
            amz_target: None,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    fn encrypt_options(&self) -> Option<&EncryptOptions> {
        match &self.scenario {
            Scenario::XksEncrypt(o) | Scenario::XksDecrypt(o) | Scenario::XksMixed(o) => Some(o),
            _ => None,
        }
    }

    fn kms_request(
        &self,
        operation: &'static str,
        amz_target: &'static str,
        body: Value,
    ) -> UnsignedRequest {
        UnsignedRequest {
            operation,
            url: Arc::clone(&self.urls.kms),
            amz_target: Some(amz_target),
            content_type: KMS_CONTENT_TYPE,
            body: body.to_string().into_bytes(),
        }
    }

    /// The unsigned request number `seq` (0, 1, 2, ... across the whole run).
    pub fn request(&self, seq: u64) -> UnsignedRequest {
        match &self.scenario {
            Scenario::XksHealth => self.xks_request(XksOp::Health, seq),
            Scenario::XksMetadata => self.xks_request(XksOp::Metadata, seq),
            Scenario::XksEncrypt(_) => self.xks_request(XksOp::Encrypt, seq),
            Scenario::XksDecrypt(_) => self.xks_request(XksOp::Decrypt, seq),
            Scenario::XksMixed(_) => self.xks_request(MIX[(seq % MIX_PERIOD) as usize], seq),
            Scenario::KmsCreateKey { origin } => {
                let mut body = json!({
                    "KeySpec": "SYMMETRIC_DEFAULT",
                    "KeyUsage": "ENCRYPT_DECRYPT",
                    "Description": format!("xks-load {}", self.request_id(seq)),
                });
                match origin {
                    KeyOrigin::AwsKms => body["Origin"] = json!("AWS_KMS"),
                    KeyOrigin::ExternalKeyStore {
                        custom_key_store_id,
                        xks_key_id,
                    } => {
                        body["Origin"] = json!("EXTERNAL_KEY_STORE");
                        body["CustomKeyStoreId"] = json!(custom_key_store_id);
                        body["XksKeyId"] = json!(xks_key_id.replace("{seq}", &seq.to_string()));
                    }
                }
                self.kms_request("CreateKey", "TrentService.CreateKey", body)
            }
            Scenario::KmsEncrypt {
                key_id,
                grant_token,
                ..
            } => {
                let mut body = json!({"KeyId": key_id, "Plaintext": self.plaintext_b64});
                if let Some(t) = grant_token {
                    body["GrantTokens"] = json!([t]);
                }
                self.kms_request("Encrypt", "TrentService.Encrypt", body)
            }
            Scenario::KmsDecrypt { key_id, .. } => {
                let mut body = json!({"KeyId": key_id});
                for (name, value) in &self.decrypt_fields {
                    body[name.as_str()] = value.clone();
                }
                self.kms_request("Decrypt", "TrentService.Decrypt", body)
            }
            Scenario::KmsGenerateDataKey { key_id } => self.kms_request(
                "GenerateDataKey",
                "TrentService.GenerateDataKey",
                json!({"KeyId": key_id, "KeySpec": "AES_256"}),
            ),
            Scenario::KmsSign { key_id, algorithm, .. } => self.kms_request(
                "Sign",
                "TrentService.Sign",
                json!({"KeyId": key_id, "Message": self.plaintext_b64, "SigningAlgorithm": algorithm}),
            ),
            Scenario::KmsVerify { key_id, algorithm, .. } => {
                let mut body = json!({"KeyId": key_id, "Message": self.plaintext_b64, "SigningAlgorithm": algorithm});
                for (name, value) in &self.decrypt_fields {
                    body[name.as_str()] = value.clone();
                }
                self.kms_request("Verify", "TrentService.Verify", body)
            }
            Scenario::KmsDecryptAsymmetric {
                key_id, algorithm, ..
            } => {
                let mut body = json!({"KeyId": key_id, "EncryptionAlgorithm": algorithm});
                for (name, value) in &self.decrypt_fields {
                    body[name.as_str()] = value.clone();
                }
                self.kms_request("Decrypt", "TrentService.Decrypt", body)
            }
            Scenario::KmsGenerateMac { key_id, algorithm, .. } => self.kms_request(
                "GenerateMac",
                "TrentService.GenerateMac",
                json!({"KeyId": key_id, "Message": self.plaintext_b64, "MacAlgorithm": algorithm}),
            ),
            Scenario::KmsDeriveSharedSecret { key_id } => {
                let mut body = json!({"KeyId": key_id, "KeyAgreementAlgorithm": "ECDH"});
                for (name, value) in &self.decrypt_fields {
                    body[name.as_str()] = value.clone();
                }
                self.kms_request(
                    "DeriveSharedSecret",
                    "TrentService.DeriveSharedSecret",
                    body,
                )
            }
        }
    }
}

/// The name of a failed response: XKS `errorName`, KMS `__type` (without any
/// `namespace#` prefix), or `HTTP <status>` when the body has neither.
pub fn error_name(target: &Target, status: http::StatusCode, body: &[u8]) -> String {
    let field = match target {
        Target::Xks { .. } => "errorName",
        Target::Kms { .. } => "__type",
    };
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(Value::as_str).map(str::to_owned))
        .map(|name| match name.rsplit_once('#') {
            Some((_, short)) => short.to_owned(),
            None => name,
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
}

/// The name of a transport failure: `transport:<kind>` with kind `timeout`, `connect`,
/// `body`, `decode`, `request` or `other`.
pub fn transport_error_name(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "transport:timeout"
    } else if error.is_connect() {
        "transport:connect"
    } else if error.is_body() {
        "transport:body"
    } else if error.is_decode() {
        "transport:decode"
    } else if error.is_request() {
        "transport:request"
    } else {
        "transport:other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigv4_auth::{Credential, SigningSecret};

    fn xks_target() -> Target {
        Target::xks(
            "https://localhost:8443/p/kms/xks/v1/",
            "k1",
            Credential::new("AKIDEXAMPLE", SigningSecret::new("secret")),
            "us-east-1",
        )
    }

    fn no_server_client() -> reqwest::Client {
        crate::target::Connector::new(crate::target::HttpOptions::default())
            .expect("connector")
            .client(0)
            .expect("client")
    }

    #[tokio::test]
    async fn kms_request_bodies_and_headers() {
        let kms = Target::kms(
            "http://127.0.0.1:1",
            Credential::new("AKIDEXAMPLE", SigningSecret::new("secret")),
            "eu-west-1",
        );
        let origin = KeyOrigin::ExternalKeyStore {
            custom_key_store_id: "cks-1234567890abcdef0".into(),
            xks_key_id: "bench-{seq}".into(),
        };
        // CreateKey needs no setup request, so no server is contacted.
        let prepared = Prepared::setup(kms, Scenario::KmsCreateKey { origin }, &no_server_client())
            .await
            .expect("setup");
        let request = prepared.request(7);
        assert_eq!(request.amz_target, Some("TrentService.CreateKey"));
        assert_eq!(request.content_type, KMS_CONTENT_TYPE);
        let body: Value = serde_json::from_slice(&request.body).expect("JSON");
        assert_eq!(body["XksKeyId"], "bench-7");
        assert_eq!(body["Origin"], "EXTERNAL_KEY_STORE");
        assert_eq!(body["CustomKeyStoreId"], "cks-1234567890abcdef0");
        assert_eq!(body["KeySpec"], "SYMMETRIC_DEFAULT");
        let signed = sign_and_build(prepared.target(), request, SystemTime::now()).expect("sign");
        let auth = signed.headers()["authorization"].to_str().expect("ASCII");
        assert!(auth.contains("/eu-west-1/kms/aws4_request"), "{auth}");
        assert!(
            auth.contains("x-amz-target"),
            "X-Amz-Target is signed: {auth}"
        );
        assert_eq!(signed.headers()["x-amz-target"], "TrentService.CreateKey");
    }

    #[tokio::test]
    async fn xks_scenarios_need_an_xks_target() {
        let kms = Target::kms(
            "http://127.0.0.1:1",
            Credential::new("AKIDEXAMPLE", SigningSecret::new("secret")),
            "us-east-1",
        );
        let err = Prepared::setup(kms, Scenario::XksHealth, &no_server_client())
            .await
            .expect_err("wrong target");
        assert!(err.to_string().contains("XKS"), "{err}");
    }

    #[test]
    fn mix_is_45_45_5_5() {
        let count = |op| MIX.iter().filter(|&&o| o == op).count();
        assert_eq!(count(XksOp::Encrypt), 9);
        assert_eq!(count(XksOp::Decrypt), 9);
        assert_eq!(count(XksOp::Metadata), 1);
        assert_eq!(count(XksOp::Health), 1);
    }

    #[test]
    fn error_names() {
        let xks = xks_target();
        let status = http::StatusCode::BAD_REQUEST;
        assert_eq!(
            error_name(&xks, status, br#"{"errorName":"ValidationException"}"#),
            "ValidationException"
        );
        assert_eq!(error_name(&xks, status, b"not json"), "HTTP 400");
        let kms = Target::kms(
            "http://127.0.0.1:5000",
            Credential::new("AKIDEXAMPLE", SigningSecret::new("secret")),
            "us-east-1",
        );
        assert_eq!(
            error_name(
                &kms,
                status,
                br#"{"__type":"com.amazonaws.kms#NotFoundException","message":"x"}"#
            ),
            "NotFoundException"
        );
        assert_eq!(
            error_name(&kms, status, br#"{"__type":"KMSInvalidStateException"}"#),
            "KMSInvalidStateException"
        );
    }

    #[test]
    fn requests_are_signed_fresh_with_the_right_service() {
        let target = xks_target();
        let request = UnsignedRequest {
            operation: "Encrypt",
            url: "https://localhost:8443/p/kms/xks/v1/keys/k1/encrypt".into(),
            amz_target: None,
            content_type: "application/json",
            body: b"{}".to_vec(),
        };
        let t1 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let t2 = t1 + std::time::Duration::from_secs(1);
        let a = sign_and_build(&target, request.clone(), t1).expect("sign");
        let b = sign_and_build(&target, request, t2).expect("sign");
        let auth = |r: &reqwest::Request| {
            r.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .expect("authorization")
        };
        assert!(auth(&a).contains("/us-east-1/kms-xks-proxy/aws4_request"));
        assert_ne!(auth(&a), auth(&b), "a later request gets a new signature");
        assert_eq!(
            a.headers().get("x-amz-date").expect("date"),
            "20231114T221320Z"
        );
    }
}
