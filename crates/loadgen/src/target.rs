//! What is driven (an XKS proxy or a KMS endpoint, with credentials) and how it is reached
//! (TLS trust, optional client certificate, HTTP version, connection reuse).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_tls::{ClientIdentity, RootCertificates};
use sigv4_auth::Credential;

/// The SigV4 service name of the XKS proxy API.
pub const XKS_SERVICE: &str = "kms-xks-proxy";
/// The SigV4 service name of KMS.
pub const KMS_SERVICE: &str = "kms";

/// The endpoint under load.
#[derive(Debug, Clone)]
pub enum Target {
    /// An XKS proxy (Proxy API v1).
    Xks {
        /// The URI base up to and including `/kms/xks/v1`, e.g.
        /// `https://localhost:8443/prefix/kms/xks/v1` (no trailing slash needed).
        url_base: String,
        /// The external key id used by the key operations (`.../keys/<key_id>/encrypt`).
        key_id: String,
        /// The SigV4 credential.
        credential: Arc<Credential>,
        /// The region of the credential scope.
        region: String,
    },
    /// A KMS-compatible endpoint (AWS JSON 1.1, `X-Amz-Target: TrentService.<Op>`).
    Kms {
        /// The endpoint URL, e.g. `https://localhost:4443/` or `http://127.0.0.1:5000`.
        endpoint: String,
        /// The SigV4 credential.
        credential: Arc<Credential>,
        /// The region of the credential scope.
        region: String,
    },
}

impl Target {
    /// An XKS target.
    pub fn xks(url_base: &str, key_id: &str, credential: Credential, region: &str) -> Self {
        Self::Xks {
            url_base: url_base.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            credential: Arc::new(credential),
            region: region.to_owned(),
        }
    }

    /// A KMS target.
    pub fn kms(endpoint: &str, credential: Credential, region: &str) -> Self {
        Self::Kms {
            endpoint: endpoint.to_owned(),
            credential: Arc::new(credential),
            region: region.to_owned(),
        }
    }

    /// `"xks"` or `"kms"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Xks { .. } => "xks",
            Self::Kms { .. } => "kms",
        }
    }

    /// The URL the report names (the XKS URI base or the KMS endpoint).
    pub fn url(&self) -> &str {
        match self {
            Self::Xks { url_base, .. } => url_base,
            Self::Kms { endpoint, .. } => endpoint,
        }
    }

    /// The credential, region and SigV4 service name.
    pub fn signing(&self) -> (&Credential, &str, &'static str) {
        match self {
            Self::Xks {
                credential, region, ..
            } => (credential, region, XKS_SERVICE),
            Self::Kms {
                credential, region, ..
            } => (credential, region, KMS_SERVICE),
        }
    }
}

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// Let ALPN decide (h2 preferred over TLS; HTTP/1.1 over plain HTTP).
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (ALPN `h2`, or prior knowledge over plain HTTP).
    Http2,
}

/// How the target is reached.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// PEM text of the CA certificates trusted for the server certificate (required for
    /// `https://` URLs: the operating system's store is never used).
    pub ca_pem: Option<String>,
    /// A client certificate chain and key for mTLS.
    pub identity: Option<ClientIdentity>,
    /// The HTTP version.
    pub version: HttpVersion,
    /// Timeout of one request (connect + TLS + response).
    pub timeout: Duration,
    /// Open a new connection for every request (a fresh client, so a fresh TCP + TLS
    /// handshake) instead of reusing pooled keep-alive connections.
    pub new_connection_per_request: bool,
    /// Let new connections resume earlier TLS sessions (abbreviated handshakes). Off by
    /// default, so every new connection pays a full handshake.
    pub tls_resumption: bool,
    /// Independent connection pools the workers are spread over (round robin). With HTTP/2
    /// each pool multiplexes everything over one connection, so more pools mean more
    /// connections; with HTTP/1.1 a pool opens a connection per concurrent request anyway.
    pub pools: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            identity: None,
            version: HttpVersion::Auto,
            timeout: Duration::from_secs(30),
            new_connection_per_request: false,
            tls_resumption: false,
            pools: 1,
        }
    }
}

/// A client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration failed (bad CA bundle or client certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] service_tls::TlsError),
    /// reqwest refused the configuration.
    #[error("HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Builds HTTP clients for a target: the pooled ones up front, or a fresh one per request.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: rustls::ClientConfig,
    options: HttpOptions,
    pools: Vec<reqwest::Client>,
}

impl Connector {
    /// Builds the TLS configuration and the connection pools.
    ///
    /// Without a CA bundle, an empty trust store is used: plain `http://` works and every
    /// `https://` request fails with a certificate error.
    pub fn new(options: HttpOptions) -> Result<Self, ClientError> {
        let mut tls = match &options.ca_pem {
            Some(pem) => (*service_tls::client_config(
                &RootCertificates::Pem(pem.clone()),
                options.identity.as_ref(),
            )?)
            .clone(),
            None => rustls::ClientConfig::builder_with_provider(service_tls::crypto_provider())
                .with_protocol_versions(service_tls::PROTOCOL_VERSIONS)
                .map_err(|e| service_tls::TlsError::Invalid {
                    what: "TLS protocol versions",
                    problem: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        if !options.tls_resumption {
            tls.resumption = rustls::client::Resumption::disabled();
        }
        tls.alpn_protocols = match options.version {
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        };
        let mut connector = Self {
            tls,
            options,
            pools: Vec::new(),
        };
        let pools = connector.options.pools.max(1);
        for _ in 0..pools {
            let client = connector.build_client()?;
            connector.pools.push(client);
        }
        Ok(connector)
    }

    /// The options this connector was built with.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    fn build_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .timeout(self.options.timeout)
            .no_proxy()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        builder = match self.options.version {
            HttpVersion::Auto => builder,
            HttpVersion::Http1 => builder.http1_only(),
            HttpVersion::Http2 => builder.http2_prior_knowledge(),
        };
        if self.options.new_connection_per_request {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder.build()
    }

    /// The client for a request of worker `worker`: its pool, or with
    /// `new_connection_per_request` a client of its own (so a connection of its own).
    pub fn client(&self, worker: usize) -> Result<reqwest::Client, ClientError> {
        if self.options.new_connection_per_request {
            return Ok(self.build_client()?);
        }
        let pools = self.pools.len().max(1);
        match self.pools.get(worker % pools) {
            Some(client) => Ok(client.clone()),
            None => Ok(self.build_client()?),
        }
    }
}
