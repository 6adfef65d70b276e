//! The front end's client to XKS proxies: calls them the way AWS KMS does.
//!
//! Every call is a SigV4-signed (service [`SIGNING_SERVICE`], the caller's Region) JSON
//! `POST` over HTTPS to `{uri_endpoint}{uri_path}/health` or
//! `{uri_endpoint}{uri_path}/keys/{id}/{metadata|encrypt|decrypt}`, answered within one total
//! budget ([`DEFAULT_TIMEOUT`], KMS's 250 ms). One [`XksClient`] holds one `reqwest` client,
//! so connections (HTTP/2 or HTTP/1.1, by ALPN) are reused across calls and key stores.
//!
//! Successful answers are validated before they are returned (sizes, counts, the
//! ciphertext data integrity value of every encrypt). Failures are sorted into the five
//! kinds of [`XksCallError`], each of which maps to the `ConnectionErrorCode` KMS reports
//! ([`XksCallError::connection_error_code`]):
//!
//! | Failure | Variant | `connection_error_code` |
//! |---|---|---|
//! | proxy 401 `AuthenticationFailedException` | `Proxy` | `INVALID_CREDENTIALS` |
//! | proxy 403 `AccessDeniedException` | `Proxy` | `XKS_PROXY_ACCESS_DENIED` |
//! | proxy 404 `InvalidUriPathException` | `Proxy` | `XKS_PROXY_INVALID_CONFIGURATION` |
//! | proxy 429 `ThrottlingException` | `Proxy` | `XKS_PROXY_NOT_REACHABLE` |
//! | proxy 503 `DependencyTimeoutException` | `Proxy` | `XKS_PROXY_TIMED_OUT` |
//! | any other proxy error name | `Proxy` | `XKS_PROXY_INVALID_RESPONSE` |
//! | no answer within the budget | `Timeout` | `XKS_PROXY_TIMED_OUT` |
//! | TCP refused/reset, DNS, connection lost | `Unreachable` | `XKS_PROXY_NOT_REACHABLE` |
//! | TLS handshake failure (CA, name, expiry, version) | `Tls` | `XKS_PROXY_INVALID_TLS_CONFIGURATION` |
//! | non-JSON, wrong shape, unknown `errorName`, failed validation, too large | `InvalidResponse` | `XKS_PROXY_INVALID_RESPONSE` |
//!
//! Throttling and DependencyTimeout are the two proxy errors KMS reports at
//! Create/UpdateCustomKeyStore as `XksProxyUriUnreachableException` (kms-api.md §3.7/3.8);
//! Throttling is reported as "not reachable" and DependencyTimeout as "timed out" (the proxy
//! answered that its key manager did not answer in time). The key-level names
//! (`KeyNotFoundException`, `InvalidStateException`, `InvalidKeyUsageException`,
//! `InvalidCiphertextException`, `UnsupportedOperationException`) and `ValidationException`
//! / `InternalException` get `XKS_PROXY_INVALID_RESPONSE`: they say nothing wrong about the
//! connection, and callers that care (CreateKey's `XksKeyNotFoundException`,
//! `XksKeyInvalidConfigurationException`) match on [`XksCallError::Proxy`]'s `name` first.
//!
//! Where a proxy may be: never a link-local or cloud metadata address (169.254.0.0/16,
//! fe80::/10, fd00:ec2::254), and, unless [`XksClientConfig::allow_private_endpoints`],
//! never a loopback or private one either ([`EndpointPolicy`]). The rule is applied to the
//! addresses actually connected to, before connecting: an IP endpoint when the URL is
//! formed, a host name's addresses (from DNS or a [`XksClientConfig::resolve`] entry) in the
//! client's resolver, so a name that resolves to a refused address is refused too. A refused
//! endpoint is `Unreachable` (`XKS_PROXY_NOT_REACHABLE`, `XksProxyUriUnreachableException`
//! at Create/UpdateCustomKeyStore): KMS could not reach such an address either, it is not a
//! wrong proxy configuration (`XKS_PROXY_INVALID_CONFIGURATION` means the proxy answered
//! that the URI path is wrong).
//!
//! Requests that cannot be formed at all (an endpoint that is not `https://host`, a URI path
//! that is not `[/prefix]/kms/xks/v1`, a key id outside the XKS alphabet) never leave the
//! process: a non-HTTPS endpoint is `Tls`, anything else `Unreachable`.
//!
//! What this module never does: log or print a secret (the SigV4 secret and plaintexts are
//! not in any `Debug` output or error message), follow redirects, use an HTTP proxy, or
//! speak plain HTTP.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_TYPE;
use serde::Serialize;
use serde::de::DeserializeOwned;
use service_tls::client::{ClientIdentity, RootCertificates};
use sigv4_auth::{Credential, SigningParams, SigningSecret};
use xks_api::cdiv::{self, CdivInput};
use xks_api::key_id::{API_PATH_SUFFIX, XksKeyId, validate_path_prefix};
use xks_api::limits;
use xks_api::types::{
    AES_GCM, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse,
    GetKeyMetadataRequest, GetKeyMetadataResponse, HealthRequest, HealthResponse, RequestMetadata,
};
use xks_api::{Base64Bytes, ErrorBody, ErrorName, SecretBytes};
use zeroize::Zeroizing;

/// The SigV4 service name of every XKS call.
pub const SIGNING_SERVICE: &str = "kms-xks-proxy";

/// KMS's budget for one proxy call (250 ms), the default [`XksClientConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(limits::KMS_CALL_BUDGET_MS);

/// The largest response body read; a longer one is an [`XksCallError::InvalidResponse`].
///
/// The largest legitimate answer (an encrypt of a few kilobytes, base64) is far smaller.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The `User-Agent` of every call.
const USER_AGENT: &str = concat!("kms-frontend-xks-client/", env!("CARGO_PKG_VERSION"));

/// How an [`XksClient`] connects to proxies.
#[derive(Debug, Clone)]
pub struct XksClientConfig {
    /// The CA certificates a proxy's server certificate must chain to (a private CA bundle
    /// for local setups; the front end would put the spec's trusted public CAs here).
    pub trust: RootCertificates,
    /// Host name → socket address overrides, like curl's `--resolve`: the port of the address
    /// is used because endpoints carry none. TLS still verifies the certificate against the
    /// host name of the endpoint.
    pub resolve: Vec<(String, SocketAddr)>,
    /// The client certificate presented to proxies that require mTLS.
    pub client_identity: Option<ClientIdentity>,
    /// The budget of one call, connection set-up and reading the answer included.
    pub timeout: Duration,
    /// Whether loopback and private addresses may be called (see [`EndpointPolicy`]).
    pub allow_private_endpoints: bool,
}

impl XksClientConfig {
    /// A configuration trusting `trust`, with no overrides, no client certificate and
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(trust: RootCertificates) -> Self {
        Self {
            trust,
            resolve: Vec::new(),
            client_identity: None,
            timeout: DEFAULT_TIMEOUT,
            allow_private_endpoints: true,
        }
    }
}

/// Which addresses a proxy endpoint may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Whether loopback (127.0.0.0/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7)
    /// and shared (100.64/10) addresses are allowed. Link-local and cloud metadata
    /// addresses are refused whatever this says.
    pub allow_private: bool,
}

impl EndpointPolicy {
    /// Why `ip` may not be called, or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        // ::ffff:169.254.169.254 reaches the same host as 169.254.169.254.
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.refusal_v4(v4),
            IpAddr::V6(v6) => self.refusal_v6(v6),
        }
    }

    fn refusal_v4(&self, ip: Ipv4Addr) -> Option<&'static str> {
        if ip.is_link_local() {
            return Some("a link-local or cloud metadata address (169.254.0.0/16)");
        }
        let [a, b, ..] = ip.octets();
        let private = ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_private()
            || (a == 100 && (64..128).contains(&b));
        (private && !self.allow_private)
            .then_some("a loopback or private address (xks.allow_private_endpoints = false)")
    }

    fn refusal_v6(&self, ip: Ipv6Addr) -> Option<&'static str> {
        // fe80::/10, and the metadata service of EC2's IPv6 (Nitro) instances.
        const EC2_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
        if (ip.segments()[0] & 0xffc0) == 0xfe80 || ip == EC2_METADATA {
            return Some("a link-local or cloud metadata address (fe80::/10, fd00:ec2::254)");
        }
        let private =
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00;
        (private && !self.allow_private)
            .then_some("a loopback or private address (xks.allow_private_endpoints = false)")
    }

    /// An [`XksCallError::Unreachable`] for `ip` (of `host`), if it is refused.
    fn check(&self, host: &str, ip: IpAddr) -> Result<(), RefusedAddress> {
        match self.refusal(ip) {
            Some(why) => Err(RefusedAddress {
                host: host.to_owned(),
                ip,
                why,
            }),
            None => Ok(()),
        }
    }
}

/// A proxy endpoint whose address the [`EndpointPolicy`] refuses; no connection was made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the endpoint {host} is {ip}, {why}: not called")]
struct RefusedAddress {
    host: String,
    ip: IpAddr,
    why: &'static str,
}

/// The client's resolver: `[xks.resolve]` overrides, else the system's, then the
/// [`EndpointPolicy`] on every address, so what is connected to has passed it. (reqwest's
/// own overrides would bypass a custom resolver, so they are applied here instead.)
#[derive(Debug)]
struct CheckedResolver {
    overrides: HashMap<String, Vec<SocketAddr>>,
    policy: EndpointPolicy,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let overridden = self.overrides.get(&host).cloned();
        let policy = self.policy;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match overridden {
                Some(addrs) => addrs,
                // Port 0: the connector puts the URL's port (443) in.
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let mut allowed = Vec::with_capacity(addrs.len());
            let mut refused = None;
            for a in addrs {
                match policy.check(&host, a.ip()) {
                    Ok(()) => allowed.push(a),
                    Err(e) => refused = refused.or(Some(e)),
                }
            }
            match refused {
                // One refused address refuses the name: a name that also resolves to the
                // metadata service is not one to send a signed request to.
                Some(e) => Err(Box::new(e) as Box<dyn StdError + Send + Sync>),
                None => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Where a call goes and how it is signed: one external key store's proxy configuration.
#[derive(Clone, Copy)]
pub struct ProxyTarget<'a> {
    /// `https://<host>` (KMS uses port 443; a [`XksClientConfig::resolve`] entry can send the
    /// host elsewhere).
    pub uri_endpoint: &'a str,
    /// `[/<prefix>]/kms/xks/v1`.
    pub uri_path: &'a str,
    /// The SigV4 access key id the proxy knows the key store by.
    pub access_key_id: &'a str,
    /// The SigV4 secret access key. Never printed.
    pub secret: &'a str,
    /// The caller's Region, used in the SigV4 credential scope.
    pub region: &'a str,
}

impl fmt::Debug for ProxyTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyTarget")
            .field("uri_endpoint", &self.uri_endpoint)
            .field("uri_path", &self.uri_path)
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Why a proxy call failed. Each variant maps to a KMS `ConnectionErrorCode`
/// ([`connection_error_code`](Self::connection_error_code)); the front end turns it into the
/// exception of the operation (kms-api.md §3.8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XksCallError {
    /// The proxy answered a well-formed XKS error with a name the spec defines.
    #[error("the XKS proxy answered {name}: {message}")]
    Proxy {
        /// The error name.
        name: ErrorName,
        /// The proxy's `errorMessage` (sanitized to printable ASCII), or "".
        message: String,
    },
    /// No (complete) answer within the call's budget.
    #[error("the XKS proxy did not answer within the time limit")]
    Timeout,
    /// The proxy could not be reached (connection refused or reset, name resolution, the
    /// connection lost mid-call), or the request could not be formed.
    #[error("the XKS proxy is not reachable: {0}")]
    Unreachable(String),
    /// The TLS handshake failed (untrusted CA, wrong host name, expired certificate, no
    /// common protocol version), or TLS cannot be used as configured.
    #[error("TLS with the XKS proxy failed: {0}")]
    Tls(String),
    /// The proxy answered something that is not a valid XKS answer: not JSON, the wrong
    /// shape, an undefined `errorName`, values that fail validation, or a body too large.
    #[error("the XKS proxy's response is invalid: {0}")]
    InvalidResponse(String),
}

impl XksCallError {
    /// The KMS `ConnectionErrorCode` this failure corresponds to (see the module docs for the
    /// table and the choices made for proxy errors the KMS documentation does not pin down).
    pub fn connection_error_code(&self) -> &'static str {
        match self {
            Self::Proxy { name, .. } => match name {
                ErrorName::AuthenticationFailedException => "INVALID_CREDENTIALS",
                ErrorName::AccessDeniedException => "XKS_PROXY_ACCESS_DENIED",
                ErrorName::InvalidUriPathException => "XKS_PROXY_INVALID_CONFIGURATION",
                ErrorName::ThrottlingException => "XKS_PROXY_NOT_REACHABLE",
                ErrorName::DependencyTimeoutException => "XKS_PROXY_TIMED_OUT",
                ErrorName::ValidationException
                | ErrorName::InvalidStateException
                | ErrorName::InvalidCiphertextException
                | ErrorName::InvalidKeyUsageException
                | ErrorName::KeyNotFoundException
                | ErrorName::UnsupportedOperationException
                | ErrorName::InternalException => "XKS_PROXY_INVALID_RESPONSE",
            },
            Self::Timeout => "XKS_PROXY_TIMED_OUT",
            Self::Unreachable(_) => "XKS_PROXY_NOT_REACHABLE",
            Self::Tls(_) => "XKS_PROXY_INVALID_TLS_CONFIGURATION",
            Self::InvalidResponse(_) => "XKS_PROXY_INVALID_RESPONSE",
        }
    }

    /// The proxy's error name, for a [`Proxy`](Self::Proxy) error.
    pub fn proxy_error_name(&self) -> Option<ErrorName> {
        match self {
            Self::Proxy { name, .. } => Some(*name),
            _ => None,
        }
    }
}

/// A client calling XKS proxies as KMS does. Cheap to share (`Arc` it, or clone the
/// front end's handle); all calls share one connection pool.
#[derive(Debug, Clone)]
pub struct XksClient {
    http: reqwest::Client,
    timeout: Duration,
    policy: EndpointPolicy,
}

impl XksClient {
    /// Builds the client: rustls from [`service_tls::client::client_config`] (TLS 1.3/1.2,
    /// ALPN `h2` then `http/1.1`), HTTPS only, no redirects, no HTTP proxy, the `resolve`
    /// overrides and the per-call `timeout`.
    ///
    /// # Errors
    ///
    /// [`XksCallError::Tls`] when the trust bundle or the client identity is unusable.
    pub fn new(cfg: XksClientConfig) -> Result<Self, XksCallError> {
        let tls = service_tls::client::client_config(&cfg.trust, cfg.client_identity.as_ref())
            .map_err(|e| XksCallError::Tls(format!("client TLS configuration: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(cfg.timeout)
            .user_agent(USER_AGENT);
        let mut overrides: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for (host, addr) in &cfg.resolve {
            overrides.entry(host.clone()).or_default().push(*addr);
        }
        let policy = EndpointPolicy {
            allow_private: cfg.allow_private_endpoints,
        };
        builder = builder.dns_resolver(Arc::new(CheckedResolver { overrides, policy }));
        let http = builder
            .build()
            .map_err(|e| XksCallError::Tls(format!("cannot build the HTTPS client: {e}")))?;
        Ok(Self {
            http,
            timeout: cfg.timeout,
            policy,
        })
    }

    /// Refuses `endpoint` (a URL) when its host is an IP address the [`EndpointPolicy`]
    /// refuses. Host names are checked when they are resolved, on every call; this check
    /// covers IP endpoints, which are connected to without resolving.
    ///
    /// # Errors
    ///
    /// [`XksCallError::Unreachable`] naming the address and why it is refused.
    pub fn check_endpoint(&self, endpoint: &str) -> Result<(), XksCallError> {
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            // Not a URL: forming the request reports it.
            return Ok(());
        };
        // The URL parser normalises IPv4 forms (`2852039166`, `0xa9.254.169.254`) to dotted
        // quads and writes IPv6 in brackets.
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        self.policy
            .check(host, ip)
            .map_err(|e| XksCallError::Unreachable(e.to_string()))
    }

    /// GetHealthStatus: `POST {endpoint}{path}/health`, response validated
    /// ([`validate_health`]).
    ///
    /// # Errors
    ///
    /// See [`XksCallError`].
    pub async fn health(
        &self,
        t: &ProxyTarget<'_>,
        meta: RequestMetadata,
    ) -> Result<HealthResponse, XksCallError> {
        let url = operation_url(t, None, "health")?;
        let body = HealthRequest {
            request_metadata: meta,
        };
        let response: HealthResponse = self.call(t, &url, &body).await?;
        validate_health(&response)?;
        Ok(response)
    }

    /// GetKeyMetadata: `POST {endpoint}{path}/keys/{key_id}/metadata`, response validated
    /// ([`validate_key_metadata`]). Whether the key is usable (AES_256, ENCRYPT and DECRYPT,
    /// ENABLED) is the caller's decision.
    ///
    /// # Errors
    ///
    /// See [`XksCallError`].
    pub async fn get_key_metadata(
        &self,
        t: &ProxyTarget<'_>,
        key_id: &str,
        meta: RequestMetadata,
    ) -> Result<GetKeyMetadataResponse, XksCallError> {
        let url = operation_url(t, Some(key_id), "metadata")?;
        let body = GetKeyMetadataRequest {
            request_metadata: meta,
        };
        let response: GetKeyMetadataResponse = self.call(t, &url, &body).await?;
        validate_key_metadata(&response)?;
        Ok(response)
    }

    /// Encrypt: `POST {endpoint}{path}/keys/{key_id}/encrypt` with `AES_GCM`, `aad` (sent
    /// only when not empty) and always `ciphertextDataIntegrityValueAlgorithm: SHA_256`; the
    /// response is validated, CDIV included ([`validate_encrypt`]).
    ///
    /// `plaintext` is what the proxy sees: KMS passes its own (inner) ciphertext here.
    ///
    /// # Errors
    ///
    /// See [`XksCallError`].
    pub async fn encrypt(
        &self,
        t: &ProxyTarget<'_>,
        key_id: &str,
        meta: RequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<EncryptResponse, XksCallError> {
        let url = operation_url(t, Some(key_id), "encrypt")?;
        let body = EncryptRequest {
            request_metadata: meta,
            plaintext: SecretBytes::new(plaintext.to_vec()),
            encryption_algorithm: AES_GCM.to_owned(),
            additional_authenticated_data: optional_bytes(aad),
            ciphertext_data_integrity_value_algorithm: Some(cdiv::SHA_256.to_owned()),
        };
        let response: EncryptResponse = self.call(t, &url, &body).await?;
        validate_encrypt(&response, plaintext.len(), aad)?;
        Ok(response)
    }

    /// Decrypt: `POST {endpoint}{path}/keys/{key_id}/decrypt` with `AES_GCM` and the parts
    /// of an earlier encrypt answer; the plaintext must be as long as the ciphertext.
    ///
    /// `metadata` and `aad` are sent only when not empty (`None` and `Some(&[])` are the
    /// same: both contribute a zero length to the proxy's GCM AAD), as
    /// [`encrypt`](Self::encrypt) does for `aad`.
    ///
    /// # Errors
    ///
    /// See [`XksCallError`].
    #[allow(clippy::too_many_arguments)]
    pub async fn decrypt(
        &self,
        t: &ProxyTarget<'_>,
        key_id: &str,
        meta: RequestMetadata,
        ciphertext: &[u8],
        metadata: Option<&[u8]>,
        iv: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, XksCallError> {
        let url = operation_url(t, Some(key_id), "decrypt")?;
        let body = DecryptRequest {
            request_metadata: meta,
            ciphertext: Base64Bytes(ciphertext.to_vec()),
            ciphertext_metadata: metadata.and_then(optional_bytes),
            encryption_algorithm: AES_GCM.to_owned(),
            additional_authenticated_data: optional_bytes(aad),
            initialization_vector: Base64Bytes(iv.to_vec()),
            authentication_tag: Base64Bytes(tag.to_vec()),
        };
        let response: DecryptResponse = self.call(t, &url, &body).await?;
        validate_decrypt(&response, ciphertext.len())?;
        Ok(Zeroizing::new(response.plaintext.expose().to_vec()))
    }

    /// Serializes, signs and sends `body` to `url`, within the call's budget, and parses a
    /// 200 answer as `R` (or the error answer as an [`XksCallError`]).
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        t: &ProxyTarget<'_>,
        url: &str,
        body: &B,
    ) -> Result<R, XksCallError> {
        self.check_endpoint(url)?;
        // The body may carry a plaintext in base64: keep our copy in a wiped buffer.
        let mut json = Zeroizing::new(Vec::with_capacity(256));
        serde_json::to_writer(&mut *json, body)
            .map_err(|e| XksCallError::Unreachable(format!("request not sent: {e}")))?;
        let headers = signed_headers(t, url, &json)?;
        let request = self
            .http
            .post(url)
            .headers(headers)
            .body(json.to_vec())
            .build()
            .map_err(|e| XksCallError::Unreachable(format!("request not sent: {e}")))?;
        let exchange = async {
            let mut response = self
                .http
                .execute(request)
                .await
                .map_err(|e| classify_reqwest(&e))?;
            let status = response.status().as_u16();
            let raw = read_capped(&mut response).await?;
            Ok::<_, XksCallError>((status, raw))
        };
        let (status, raw) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_elapsed| XksCallError::Timeout)??;
        parse_response(status, &raw)
    }
}

/// `Some(bytes)` unless empty: empty AAD or metadata is not sent (absent and empty mean the
/// same thing in the GCM AAD and the CDIV, and encrypt and decrypt then agree).
fn optional_bytes(bytes: &[u8]) -> Option<Base64Bytes> {
    (!bytes.is_empty()).then(|| Base64Bytes(bytes.to_vec()))
}

/// The URL of an operation, after checking the endpoint, the path and the key id.
fn operation_url(
    t: &ProxyTarget<'_>,
    key_id: Option<&str>,
    operation: &str,
) -> Result<String, XksCallError> {
    let not_sent = |why: String| XksCallError::Unreachable(format!("request not sent: {why}"));
    let endpoint = t.uri_endpoint.strip_suffix('/').unwrap_or(t.uri_endpoint);
    let parsed = reqwest::Url::parse(endpoint)
        .map_err(|e| not_sent(format!("the endpoint {endpoint:?} is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(XksCallError::Tls(format!(
            "the endpoint {endpoint:?} is not https:// (XKS proxies are called over HTTPS only)"
        )));
    }
    let shape_ok = parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.path() == "/"
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if !shape_ok {
        return Err(not_sent(format!(
            "the endpoint {endpoint:?} must be https://<host> and nothing else"
        )));
    }
    let prefix = t.uri_path.strip_suffix(API_PATH_SUFFIX).ok_or_else(|| {
        not_sent(format!(
            "the URI path {:?} does not end with {API_PATH_SUFFIX}",
            t.uri_path
        ))
    })?;
    validate_path_prefix(prefix)
        .map_err(|e| not_sent(format!("the URI path {:?}: {e}", t.uri_path)))?;
    match key_id {
        None => Ok(format!("{endpoint}{}/{operation}", t.uri_path)),
        Some(id) => {
            XksKeyId::parse(id).map_err(|e| not_sent(format!("external key id: {e}")))?;
            if id == "." || id == ".." {
                return Err(not_sent(format!(
                    "external key id {id:?} cannot be a URI path segment"
                )));
            }
            Ok(format!("{endpoint}{}/keys/{id}/{operation}", t.uri_path))
        }
    }
}

/// `Content-Type`, `Host`, `X-Amz-Date` and `Authorization` for a POST of `body` to `url`.
fn signed_headers(
    t: &ProxyTarget<'_>,
    url: &str,
    body: &[u8],
) -> Result<http::HeaderMap, XksCallError> {
    let not_sent = |why: String| XksCallError::Unreachable(format!("request not sent: {why}"));
    let (mut parts, ()) = http::Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(())
        .map_err(|e| not_sent(e.to_string()))?
        .into_parts();
    let credential = Credential::new(t.access_key_id, SigningSecret::new(t.secret));
    sigv4_auth::sign(
        &mut parts,
        body,
        &SigningParams {
            credential: &credential,
            region: t.region,
            service: SIGNING_SERVICE,
            time: SystemTime::now(),
        },
    )
    .map_err(|e| not_sent(format!("cannot sign: {e}")))?;
    Ok(parts.headers)
}

/// Reads the body, failing as soon as it exceeds [`MAX_RESPONSE_BYTES`].
async fn read_capped(response: &mut reqwest::Response) -> Result<Zeroizing<Vec<u8>>, XksCallError> {
    let too_large = || {
        XksCallError::InvalidResponse(format!(
            "the body is larger than {MAX_RESPONSE_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_reqwest(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turns a status and body into the typed 200 answer or the call's error.
///
/// 200: the body must parse as `R` (shape only; values are validated by the caller).
/// Otherwise: `{"errorName": <a name the spec defines>, "errorMessage"?: ...}` is a
/// [`XksCallError::Proxy`]; anything else is [`XksCallError::InvalidResponse`].
fn parse_response<R: DeserializeOwned>(status: u16, raw: &[u8]) -> Result<R, XksCallError> {
    if status == 200 {
        return serde_json::from_slice(raw).map_err(|e| {
            XksCallError::InvalidResponse(format!("200 answer of the wrong shape: {e}"))
        });
    }
    Err(error_from_body(status, raw))
}

/// The error a non-200 answer stands for.
fn error_from_body(status: u16, raw: &[u8]) -> XksCallError {
    let body: ErrorBody = match serde_json::from_slice(raw) {
        Ok(body) => body,
        Err(_) if raw.is_empty() => {
            return XksCallError::InvalidResponse(format!("HTTP {status} without a body"));
        }
        Err(e) => {
            return XksCallError::InvalidResponse(format!(
                "HTTP {status} without an XKS error body: {e}"
            ));
        }
    };
    match ErrorName::parse(&body.error_name) {
        Some(name) => XksCallError::Proxy {
            name,
            message: xks_api::error::sanitize_message(
                body.error_message.as_deref().unwrap_or_default(),
            ),
        },
        None => XksCallError::InvalidResponse(format!(
            "HTTP {status} with an errorName the XKS API does not define: {:?}",
            xks_api::error::sanitize_message(&body.error_name)
        )),
    }
}

fn invalid(what: impl Into<String>) -> XksCallError {
    XksCallError::InvalidResponse(what.into())
}

/// Validates a GetHealthStatus answer: `xksProxyFleetSize` > 0, 1 to 10 `ekmFleetDetails`,
/// and non-empty vendor, model and fleet member strings.
///
/// # Errors
///
/// [`XksCallError::InvalidResponse`] naming the first violation.
pub fn validate_health(r: &HealthResponse) -> Result<(), XksCallError> {
    if r.xks_proxy_fleet_size == 0 {
        return Err(invalid("health: xksProxyFleetSize is 0"));
    }
    let n = r.ekm_fleet_details.len();
    if n == 0 || n > limits::MAX_EKM_FLEET_DETAILS {
        return Err(invalid(format!(
            "health: ekmFleetDetails has {n} entries; 1 to {} are allowed",
            limits::MAX_EKM_FLEET_DETAILS
        )));
    }
    for (field, value) in [
        ("xksProxyVendor", &r.xks_proxy_vendor),
        ("xksProxyModel", &r.xks_proxy_model),
        ("ekmVendor", &r.ekm_vendor),
    ] {
        if value.is_empty() {
            return Err(invalid(format!("health: {field} is empty")));
        }
    }
    for (i, member) in r.ekm_fleet_details.iter().enumerate() {
        if member.id.is_empty() || member.model.is_empty() {
            return Err(invalid(format!(
                "health: ekmFleetDetails[{i}] has an empty id or model"
            )));
        }
    }
    Ok(())
}

/// Validates a GetKeyMetadata answer: a non-empty `keySpec`, at most 10 `keyUsage` entries
/// (`keyStatus` is ENABLED or DISABLED by its type).
///
/// # Errors
///
/// [`XksCallError::InvalidResponse`] naming the first violation.
pub fn validate_key_metadata(r: &GetKeyMetadataResponse) -> Result<(), XksCallError> {
    if r.key_spec.is_empty() {
        return Err(invalid("metadata: keySpec is empty"));
    }
    if r.key_usage.len() > limits::MAX_KEY_USAGES {
        return Err(invalid(format!(
            "metadata: keyUsage has {} entries; at most {} are allowed",
            r.key_usage.len(),
            limits::MAX_KEY_USAGES
        )));
    }
    Ok(())
}

/// Validates an Encrypt answer to a request with `plaintext_len` bytes and `aad`: ciphertext
/// as long as the plaintext, a 12- or 16-byte IV, a 16-byte tag, at most 20 bytes of
/// `ciphertextMetadata`, and a `ciphertextDataIntegrityValue` equal to
/// SHA-256(AAD ‖ metadata ‖ IV ‖ ciphertext ‖ tag).
///
/// # Errors
///
/// [`XksCallError::InvalidResponse`] naming the first violation.
pub fn validate_encrypt(
    r: &EncryptResponse,
    plaintext_len: usize,
    aad: &[u8],
) -> Result<(), XksCallError> {
    if r.ciphertext.len() != plaintext_len {
        return Err(invalid(format!(
            "encrypt: ciphertext is {} bytes for a {plaintext_len}-byte plaintext",
            r.ciphertext.len()
        )));
    }
    if !limits::IV_LENGTHS.contains(&r.initialization_vector.len()) {
        return Err(invalid(format!(
            "encrypt: initializationVector is {} bytes; 12 or 16 are allowed",
            r.initialization_vector.len()
        )));
    }
    if r.authentication_tag.len() != limits::TAG_BYTES {
        return Err(invalid(format!(
            "encrypt: authenticationTag is {} bytes; {} are required",
            r.authentication_tag.len(),
            limits::TAG_BYTES
        )));
    }
    if let Some(m) = &r.ciphertext_metadata
        && m.len() > limits::MAX_CIPHERTEXT_METADATA_BYTES
    {
        return Err(invalid(format!(
            "encrypt: ciphertextMetadata is {} bytes; at most {} are allowed",
            m.len(),
            limits::MAX_CIPHERTEXT_METADATA_BYTES
        )));
    }
    let Some(received) = &r.ciphertext_data_integrity_value else {
        return Err(invalid(
            "encrypt: ciphertextDataIntegrityValue is missing although SHA_256 was requested",
        ));
    };
    let expected = cdiv::compute(&CdivInput {
        aad: Some(aad),
        metadata: r.ciphertext_metadata.as_ref().map(Base64Bytes::as_slice),
        iv: r.initialization_vector.as_slice(),
        ciphertext: r.ciphertext.as_slice(),
        tag: r.authentication_tag.as_slice(),
    });
    if received.as_slice() != expected.as_slice() {
        return Err(invalid(
            "encrypt: ciphertextDataIntegrityValue does not match the answer (corrupted in transit or at the proxy)",
        ));
    }
    Ok(())
}

/// Validates a Decrypt answer to a request with `ciphertext_len` bytes of ciphertext: the
/// plaintext must be exactly as long.
///
/// # Errors
///
/// [`XksCallError::InvalidResponse`] naming the violation (lengths only).
pub fn validate_decrypt(r: &DecryptResponse, ciphertext_len: usize) -> Result<(), XksCallError> {
    if r.plaintext.len() != ciphertext_len {
        return Err(invalid(format!(
            "decrypt: plaintext is {} bytes for a {ciphertext_len}-byte ciphertext",
            r.plaintext.len()
        )));
    }
    Ok(())
}

/// Classifies a transport error of `reqwest`; a TLS failure names the URL called.
fn classify_reqwest(err: &reqwest::Error) -> XksCallError {
    match (classify_transport(err, err.is_timeout()), err.url()) {
        (XksCallError::Tls(what), Some(url)) => {
            XksCallError::Tls(format!("{what} (calling {url})"))
        }
        (classified, _) => classified,
    }
}

/// Classifies a transport failure from its error chain: a timeout anywhere → `Timeout`; a
/// `rustls::Error` anywhere (directly, or inside an `io::Error` as tokio-rustls reports
/// handshake failures), or a TLS alert from the peer → `Tls`; a hyper parse error (the peer
/// did not speak HTTP) → `InvalidResponse`; anything else (refused, reset, DNS, closed) →
/// `Unreachable`.
///
/// One case cannot always be told apart: with TLS 1.3 a server rejects a client certificate
/// only after the client has finished its handshake and started sending, so the client sees
/// either the server's alert (`Tls`) or, when the connection is torn down first, a closed
/// connection (`Unreachable`).
fn classify_transport(err: &(dyn StdError + 'static), timed_out: bool) -> XksCallError {
    let description = describe_chain(err);
    if timed_out {
        return XksCallError::Timeout;
    }
    let mut found = TransportCause::Other;
    visit_chain(err, &mut |e| {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            found = TransportCause::Tls(tls.to_string());
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            found = TransportCause::TimedOut;
            return true;
        }
        // h2 wraps the connection's io::Error so that the rustls::Error inside cannot be
        // reached (its source() skips it); its message still carries rustls's wording for a
        // TLS alert, e.g. a TLS 1.3 server rejecting our client certificate after the
        // handshake ("received fatal alert: CertificateRequired").
        let text = e.to_string();
        if let Some(at) = text.find(RUSTLS_ALERT_TEXT) {
            found = TransportCause::Tls(text[at..].to_owned());
            return true;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                found = TransportCause::TimedOut;
                return true;
            }
            if h.is_parse() || h.is_parse_status() {
                found = TransportCause::NotHttp;
                return true;
            }
        }
        false
    });
    match found {
        TransportCause::Tls(what) => XksCallError::Tls(what),
        TransportCause::TimedOut => XksCallError::Timeout,
        TransportCause::NotHttp => {
            XksCallError::InvalidResponse(format!("the answer is not valid HTTP ({description})"))
        }
        TransportCause::Other => XksCallError::Unreachable(description),
    }
}

/// How rustls describes a fatal alert received from the peer (`rustls::Error::AlertReceived`).
const RUSTLS_ALERT_TEXT: &str = "received fatal alert";

enum TransportCause {
    Tls(String),
    TimedOut,
    NotHttp,
    Other,
}

/// Calls `f` on every error of the chain starting at `err`, looking inside `io::Error`s
/// (whose `source()` skips the wrapped error itself), until `f` returns true.
fn visit_chain(
    err: &(dyn StdError + 'static),
    f: &mut dyn FnMut(&(dyn StdError + 'static)) -> bool,
) {
    let mut next = Some(err);
    let mut depth = 0;
    while let Some(e) = next {
        if f(e) || depth > 32 {
            return;
        }
        depth += 1;
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
}

/// "outer: inner: innermost", without repeating messages a wrapper already includes.
fn describe_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    visit_chain(err, &mut |e| {
        let text = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        false
    });
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xks_api::types::{EkmFleetMember, HealthStatus, KeyStatus};

    fn target<'a>(endpoint: &'a str, path: &'a str) -> ProxyTarget<'a> {
        ProxyTarget {
            uri_endpoint: endpoint,
            uri_path: path,
            access_key_id: "AKIDAKIDAKIDAKIDAKID",
            secret: "very-secret-value-0123456789abcdefghijklmnop",
            region: "us-east-1",
        }
    }

    fn health() -> HealthResponse {
        HealthResponse {
            xks_proxy_fleet_size: 1,
            xks_proxy_vendor: "v".into(),
            xks_proxy_model: "m".into(),
            ekm_vendor: "e".into(),
            ekm_fleet_details: vec![EkmFleetMember {
                id: "id".into(),
                model: "model".into(),
                health_status: HealthStatus::Active,
            }],
        }
    }

    fn encrypt_answer(aad: &[u8], pt_len: usize, metadata: Option<Vec<u8>>) -> EncryptResponse {
        let ciphertext = vec![7u8; pt_len];
        let iv = vec![1u8; 12];
        let tag = vec![2u8; 16];
        let value = cdiv::compute(&CdivInput {
            aad: Some(aad),
            metadata: metadata.as_deref(),
            iv: &iv,
            ciphertext: &ciphertext,
            tag: &tag,
        });
        EncryptResponse {
            ciphertext: Base64Bytes(ciphertext),
            initialization_vector: Base64Bytes(iv),
            authentication_tag: Base64Bytes(tag),
            ciphertext_metadata: metadata.map(Base64Bytes),
            ciphertext_data_integrity_value: Some(Base64Bytes(value.to_vec())),
        }
    }

    fn invalid_text(r: Result<(), XksCallError>) -> String {
        match r {
            Err(XksCallError::InvalidResponse(m)) => m,
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
    }

    #[test]
    fn urls_follow_the_spec_layout() {
        let t = target("https://xks.example.com", "/p/kms/xks/v1");
        assert_eq!(
            operation_url(&t, None, "health").expect("url"),
            "https://xks.example.com/p/kms/xks/v1/health"
        );
        assert_eq!(
            operation_url(&t, Some("k.1_a-b"), "encrypt").expect("url"),
            "https://xks.example.com/p/kms/xks/v1/keys/k.1_a-b/encrypt"
        );
        let t = target("https://xks.example.com/", "/kms/xks/v1");
        assert_eq!(
            operation_url(&t, Some("k"), "metadata").expect("url"),
            "https://xks.example.com/kms/xks/v1/keys/k/metadata"
        );
    }

    #[test]
    fn unformable_requests_are_refused_before_sending() {
        let ok_path = "/kms/xks/v1";
        assert!(matches!(
            operation_url(&target("http://xks.example.com", ok_path), None, "health"),
            Err(XksCallError::Tls(_))
        ));
        for endpoint in [
            "xks.example.com",
            "https://xks.example.com/extra",
            "https://user:pw@xks.example.com",
            "https://xks.example.com?q=1",
        ] {
            assert!(
                matches!(
                    operation_url(&target(endpoint, ok_path), None, "health"),
                    Err(XksCallError::Unreachable(_))
                ),
                "{endpoint}"
            );
        }
        for path in [
            "/kms/xks/v2",
            "kms/xks/v1",
            "/a//kms/xks/v1",
            "/a b/kms/xks/v1",
        ] {
            assert!(
                matches!(
                    operation_url(&target("https://x.example", path), None, "health"),
                    Err(XksCallError::Unreachable(_))
                ),
                "{path}"
            );
        }
        for id in ["", ".", "..", "a/b", "../health", "a%2F"] {
            assert!(
                matches!(
                    operation_url(&target("https://x.example", ok_path), Some(id), "encrypt"),
                    Err(XksCallError::Unreachable(_))
                ),
                "{id:?}"
            );
        }
    }

    #[test]
    fn requests_are_signed_for_kms_xks_proxy_in_the_callers_region() {
        let t = ProxyTarget {
            region: "eu-west-3",
            ..target("https://xks.example.com", "/kms/xks/v1")
        };
        let headers =
            signed_headers(&t, "https://xks.example.com/kms/xks/v1/health", b"{}").expect("signed");
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .expect("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDAKIDAKIDAKIDAKID/"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-3/kms-xks-proxy/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("host"), "{auth}");
        assert!(auth.contains("x-amz-date"), "{auth}");
        assert_eq!(
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok()),
            Some("xks.example.com")
        );
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let t = target("https://xks.example.com", "/kms/xks/v1");
        let text = format!("{t:?}");
        assert!(!text.contains(t.secret), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn health_validation() {
        assert_eq!(validate_health(&health()), Ok(()));
        let mut h = health();
        h.xks_proxy_fleet_size = 0;
        assert!(invalid_text(validate_health(&h)).contains("xksProxyFleetSize"));
        let mut h = health();
        h.ekm_fleet_details.clear();
        assert!(invalid_text(validate_health(&h)).contains("ekmFleetDetails has 0"));
        let mut h = health();
        let member = h.ekm_fleet_details[0].clone();
        h.ekm_fleet_details = vec![member; 11];
        assert!(invalid_text(validate_health(&h)).contains("11 entries"));
        let mut h = health();
        let member = h.ekm_fleet_details[0].clone();
        h.ekm_fleet_details = vec![member; 10];
        assert_eq!(validate_health(&h), Ok(()));
        let mut h = health();
        h.ekm_vendor.clear();
        assert!(invalid_text(validate_health(&h)).contains("ekmVendor"));
        let mut h = health();
        h.ekm_fleet_details[0].id.clear();
        assert!(invalid_text(validate_health(&h)).contains("ekmFleetDetails[0]"));
    }

    #[test]
    fn metadata_validation() {
        let mut m = GetKeyMetadataResponse {
            key_spec: "AES_256".into(),
            key_usage: vec!["ENCRYPT".into(), "DECRYPT".into()],
            key_status: KeyStatus::Enabled,
        };
        assert_eq!(validate_key_metadata(&m), Ok(()));
        m.key_usage = vec!["SIGN".into(); 10];
        assert_eq!(validate_key_metadata(&m), Ok(()));
        m.key_usage.push("VERIFY".into());
        assert!(invalid_text(validate_key_metadata(&m)).contains("keyUsage has 11"));
        m.key_usage.clear();
        m.key_spec.clear();
        assert!(invalid_text(validate_key_metadata(&m)).contains("keySpec"));
        // An unknown status or a missing field is a shape error.
        let err = parse_response::<GetKeyMetadataResponse>(
            200,
            br#"{"keySpec":"AES_256","keyUsage":[],"keyStatus":"PENDING"}"#,
        )
        .expect_err("unknown status");
        assert!(matches!(err, XksCallError::InvalidResponse(_)), "{err:?}");
        let err = parse_response::<GetKeyMetadataResponse>(
            200,
            br#"{"keySpec":"AES_256","keyUsage":[]}"#,
        )
        .expect_err("missing status");
        assert!(matches!(err, XksCallError::InvalidResponse(_)), "{err:?}");
    }

    #[test]
    fn encrypt_validation() {
        let aad = b"header and context";
        let ok = encrypt_answer(aad, 32, Some(b"meta".to_vec()));
        assert_eq!(validate_encrypt(&ok, 32, aad), Ok(()));
        assert_eq!(
            validate_encrypt(&encrypt_answer(b"", 5, None), 5, b""),
            Ok(())
        );
        let mut iv16 = encrypt_answer(b"", 5, None);
        iv16.initialization_vector = Base64Bytes(vec![3; 16]);
        iv16.ciphertext_data_integrity_value = Some(Base64Bytes(
            cdiv::compute(&CdivInput {
                aad: None,
                metadata: None,
                iv: &[3; 16],
                ciphertext: &[7; 5],
                tag: &[2; 16],
            })
            .to_vec(),
        ));
        assert_eq!(validate_encrypt(&iv16, 5, b""), Ok(()));

        assert!(invalid_text(validate_encrypt(&ok, 31, aad)).contains("ciphertext is 32 bytes"));
        let mut r = ok.clone();
        r.initialization_vector = Base64Bytes(vec![0; 8]);
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("initializationVector is 8"));
        let mut r = ok.clone();
        r.authentication_tag = Base64Bytes(vec![0; 12]);
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("authenticationTag is 12"));
        let r = encrypt_answer(aad, 32, Some(vec![0; 21]));
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("ciphertextMetadata is 21"));
        assert_eq!(
            validate_encrypt(&encrypt_answer(aad, 32, Some(vec![0; 20])), 32, aad),
            Ok(())
        );
        let mut r = ok.clone();
        r.ciphertext_data_integrity_value = None;
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("missing"));
        // The CDIV covers the request's AAD, the metadata and every byte of the answer.
        assert!(invalid_text(validate_encrypt(&ok, 32, b"other aad")).contains("does not match"));
        let mut r = ok.clone();
        r.ciphertext.0[0] ^= 1;
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("does not match"));
        let mut r = ok.clone();
        r.ciphertext_metadata = Some(Base64Bytes(b"metb".to_vec()));
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("does not match"));
        let mut r = ok;
        r.ciphertext_metadata = None;
        assert!(invalid_text(validate_encrypt(&r, 32, aad)).contains("does not match"));
    }

    #[test]
    fn decrypt_validation() {
        let r = DecryptResponse {
            plaintext: SecretBytes::new(b"secret plaintext".to_vec()),
        };
        assert_eq!(validate_decrypt(&r, 16), Ok(()));
        let text = invalid_text(validate_decrypt(&r, 17));
        assert!(text.contains("16 bytes for a 17-byte"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn error_bodies_are_classified() {
        let err = parse_response::<HealthResponse>(
            404,
            br#"{"errorName":"KeyNotFoundException","errorMessage":"no key\n"}"#,
        )
        .expect_err("error");
        assert_eq!(
            err,
            XksCallError::Proxy {
                name: ErrorName::KeyNotFoundException,
                message: "no key?".into()
            }
        );
        let err = parse_response::<HealthResponse>(
            401,
            br#"{"errorName":"AuthenticationFailedException"}"#,
        )
        .expect_err("error");
        assert_eq!(
            err,
            XksCallError::Proxy {
                name: ErrorName::AuthenticationFailedException,
                message: String::new()
            }
        );
        for (status, body) in [
            (500, &b"<html>oops</html>"[..]),
            (405, b""),
            (400, br#"{"errorName":"NoSuchException"}"#),
            (400, br#"{"message":"not an XKS body"}"#),
            (200, b"not json"),
            (200, br#"{"errorName":"ValidationException"}"#),
            (204, b""),
        ] {
            let err = parse_response::<HealthResponse>(status, body).expect_err("error");
            assert!(
                matches!(err, XksCallError::InvalidResponse(_)),
                "{status} {body:?}: {err:?}"
            );
            assert_eq!(err.connection_error_code(), "XKS_PROXY_INVALID_RESPONSE");
        }
    }

    #[test]
    fn endpoint_policy_ranges() {
        let open = EndpointPolicy {
            allow_private: true,
        };
        let shared = EndpointPolicy {
            allow_private: false,
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for always in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(open.refusal(ip(always)).is_some(), "{always}");
            assert!(shared.refusal(ip(always)).is_some(), "{always}");
        }
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fc00::1",
            "fd12::1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
        ] {
            assert!(open.refusal(ip(private)).is_none(), "{private}");
            assert!(shared.refusal(ip(private)).is_some(), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert!(shared.refusal(ip(public)).is_none(), "{public}");
        }
    }

    #[test]
    fn connection_error_codes() {
        let proxy = |name| XksCallError::Proxy {
            name,
            message: String::new(),
        };
        let table = [
            (
                ErrorName::AuthenticationFailedException,
                "INVALID_CREDENTIALS",
            ),
            (ErrorName::AccessDeniedException, "XKS_PROXY_ACCESS_DENIED"),
            (
                ErrorName::InvalidUriPathException,
                "XKS_PROXY_INVALID_CONFIGURATION",
            ),
            (ErrorName::ThrottlingException, "XKS_PROXY_NOT_REACHABLE"),
            (ErrorName::DependencyTimeoutException, "XKS_PROXY_TIMED_OUT"),
            (ErrorName::ValidationException, "XKS_PROXY_INVALID_RESPONSE"),
            (ErrorName::InternalException, "XKS_PROXY_INVALID_RESPONSE"),
            (
                ErrorName::KeyNotFoundException,
                "XKS_PROXY_INVALID_RESPONSE",
            ),
            (
                ErrorName::UnsupportedOperationException,
                "XKS_PROXY_INVALID_RESPONSE",
            ),
        ];
        for (name, code) in table {
            assert_eq!(proxy(name).connection_error_code(), code, "{name}");
            assert_eq!(proxy(name).proxy_error_name(), Some(name));
        }
        assert_eq!(
            XksCallError::Timeout.connection_error_code(),
            "XKS_PROXY_TIMED_OUT"
        );
        assert_eq!(
            XksCallError::Unreachable(String::new()).connection_error_code(),
            "XKS_PROXY_NOT_REACHABLE"
        );
        assert_eq!(
            XksCallError::Tls(String::new()).connection_error_code(),
            "XKS_PROXY_INVALID_TLS_CONFIGURATION"
        );
        assert_eq!(XksCallError::Timeout.proxy_error_name(), None);
    }

    /// An error wrapping another, like hyper's and reqwest's wrappers.
    #[derive(Debug)]
    struct Wrapper(&'static str, Box<dyn StdError + Send + Sync>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn transport_errors_are_classified_from_their_chain() {
        // tokio-rustls reports handshake failures as io::Error(InvalidData, rustls::Error),
        // and io::Error::source() skips the wrapped error: it must still be found.
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let err = Wrapper(
            "error sending request",
            Box::new(Wrapper(
                "client error (Connect)",
                Box::new(io::Error::new(io::ErrorKind::InvalidData, bad_cert)),
            )),
        );
        match classify_transport(&err, false) {
            XksCallError::Tls(m) => assert_eq!(m, "invalid peer certificate: UnknownIssuer"),
            other => panic!("{other:?}"),
        }
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(matches!(
            classify_transport(&name, false),
            XksCallError::Tls(_)
        ));

        let refused = Wrapper(
            "client error (Connect)",
            Box::new(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "Connection refused",
            )),
        );
        match classify_transport(&refused, false) {
            XksCallError::Unreachable(m) => {
                assert_eq!(m, "client error (Connect): Connection refused");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify_transport(&refused, true), XksCallError::Timeout);
        let timed_out = Wrapper(
            "client error (Connect)",
            Box::new(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
        );
        assert_eq!(classify_transport(&timed_out, false), XksCallError::Timeout);
        // h2 hides the io::Error's inner rustls::Error; its text still names the alert.
        let h2_like = Wrapper(
            "client error (SendRequest)",
            Box::new(Wrapper(
                "connection error: received fatal alert: CertificateRequired",
                Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
            )),
        );
        assert_eq!(
            classify_transport(&h2_like, false),
            XksCallError::Tls("received fatal alert: CertificateRequired".into())
        );
        let plain = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            classify_transport(&plain, false),
            XksCallError::Unreachable(_)
        ));
    }

    #[test]
    fn a_bad_trust_bundle_is_a_tls_error() {
        let err = XksClient::new(XksClientConfig::new(RootCertificates::Pem(
            "not a certificate".into(),
        )))
        .expect_err("no CA");
        assert!(matches!(err, XksCallError::Tls(_)), "{err:?}");
        assert_eq!(
            XksClientConfig::new(RootCertificates::Pem(String::new())).timeout,
            DEFAULT_TIMEOUT
        );
    }
}
