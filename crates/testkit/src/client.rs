//! An HTTPS client that signs every request with SigV4 (service `kms-xks-proxy`) using the
//! `sigv4-auth` signer, which is built on the `aws-sigv4` crate.

use http::request::Parts;
use sigv4_auth::{Credential, SigningParams, SigningSecret};
use std::path::Path;
use std::time::SystemTime;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body parsed as JSON (`Null` when empty or not JSON).
    pub json: serde_json::Value,
    /// The raw body.
    pub raw: Vec<u8>,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// HTTP version used.
    pub version: http::Version,
}

impl Reply {
    /// `errorName` of an error body, or "" when absent.
    pub fn error_name(&self) -> &str {
        self.json["errorName"].as_str().unwrap_or("")
    }

    /// Asserts status and errorName, with the body in the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, name: &str) {
        assert_eq!(
            (self.status, self.error_name()),
            (status, name),
            "body: {}",
            String::from_utf8_lossy(&self.raw)
        );
        let msg = self.json["errorMessage"].as_str().unwrap_or("");
        assert!(
            msg.len() < 512 && msg.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "errorMessage must be < 512 printable ASCII: {msg:?}"
        );
    }

    /// Asserts 200 and returns the JSON.
    #[track_caller]
    pub fn ok(&self) -> &serde_json::Value {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.raw)
        );
        &self.json
    }
}

fn json_request_parts(method: &str, url: &str) -> Parts {
    http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(())
        .expect("request")
        .into_parts()
        .0
}

/// A SigV4-signing XKS client.
#[derive(Debug, Clone)]
pub struct XksClient {
    http: reqwest::Client,
    credential: std::sync::Arc<Credential>,
    /// Region of the credential scope.
    pub region: String,
    /// Service of the credential scope.
    pub service: String,
}

/// Builds a reqwest client that trusts only `ca_pem` (and optionally presents an identity).
pub fn http_client(
    ca_pem: &Path,
    identity: Option<&service_tls::client::ClientIdentity>,
    http1_only: bool,
) -> reqwest::Client {
    let pem = std::fs::read_to_string(ca_pem).expect("read CA");
    let cfg = service_tls::client::client_config(
        &service_tls::client::RootCertificates::Pem(pem),
        identity,
    )
    .expect("client TLS config");
    let mut cfg = (*cfg).clone();
    if http1_only {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .timeout(std::time::Duration::from_secs(30));
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("reqwest client")
}

impl XksClient {
    /// A client trusting `ca_pem`, signing with `akid`/`secret` for region `us-east-1`.
    pub fn new(ca_pem: &Path, akid: &str, secret: &str) -> Self {
        Self::with_http(http_client(ca_pem, None, false), akid, secret)
    }

    /// A client over a given reqwest client.
    pub fn with_http(http: reqwest::Client, akid: &str, secret: &str) -> Self {
        Self {
            http,
            credential: std::sync::Arc::new(Credential::new(akid, SigningSecret::new(secret))),
            region: "us-east-1".into(),
            service: "kms-xks-proxy".into(),
        }
    }

    /// The same client signing for another region.
    pub fn in_region(mut self, region: &str) -> Self {
        self.region = region.into();
        self
    }

    /// The same client signing with other credentials.
    pub fn with_credential(mut self, akid: &str, secret: &str) -> Self {
        self.credential = std::sync::Arc::new(Credential::new(akid, SigningSecret::new(secret)));
        self
    }

    /// POSTs JSON, signed.
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Reply {
        self.send(
            "POST",
            url,
            body.to_string().into_bytes(),
            SystemTime::now(),
            |_, _| {},
        )
        .await
    }

    /// POSTs raw bytes, signed.
    pub async fn post_bytes(&self, url: &str, body: Vec<u8>) -> Reply {
        self.send("POST", url, body, SystemTime::now(), |_, _| {})
            .await
    }

    /// Signs a request at `time`, lets `tamper` change it after signing, then sends it.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Vec<u8>,
        time: SystemTime,
        tamper: impl FnOnce(&mut Parts, &mut Vec<u8>),
    ) -> Reply {
        let mut parts = json_request_parts(method, url);
        sigv4_auth::sign(
            &mut parts,
            &body,
            &SigningParams {
                credential: &self.credential,
                region: &self.region,
                service: &self.service,
                time,
            },
        )
        .expect("sign");
        let mut body = body;
        tamper(&mut parts, &mut body);
        self.send_parts(parts, body).await
    }

    /// Sends a request without signing it.
    pub async fn send_unsigned(&self, method: &str, url: &str, body: Vec<u8>) -> Reply {
        self.send_parts(json_request_parts(method, url), body).await
    }

    /// POSTs JSON, signed; a transport failure (e.g. TLS refused) is an `Err`, not a panic.
    pub async fn try_post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Reply, reqwest::Error> {
        let body = body.to_string().into_bytes();
        let mut parts = json_request_parts("POST", url);
        sigv4_auth::sign(
            &mut parts,
            &body,
            &SigningParams {
                credential: &self.credential,
                region: &self.region,
                service: &self.service,
                time: SystemTime::now(),
            },
        )
        .expect("sign");
        self.try_send_parts(parts, body).await
    }

    async fn send_parts(&self, parts: Parts, body: Vec<u8>) -> Reply {
        self.try_send_parts(parts, body)
            .await
            .expect("send request")
    }

    async fn try_send_parts(&self, parts: Parts, body: Vec<u8>) -> Result<Reply, reqwest::Error> {
        let url = parts.uri.to_string();
        let mut req = self.http.request(parts.method.clone(), url);
        for (k, v) in &parts.headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await?.to_vec();
        let json = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
        Ok(Reply {
            status,
            json,
            raw,
            headers,
            version,
        })
    }
}
