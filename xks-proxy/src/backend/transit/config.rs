//! The `[key_stores.backend]` settings of a Transit backend and their checks: address,
//! mount, key names, timeouts.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use xks_api::XksKeyId;

use super::TransitError;
use crate::backend::BackendError;

/// Default Transit mount path.
pub(super) const DEFAULT_MOUNT: &str = "transit";
/// Default AppRole mount path.
const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// Default per-call timeout, below KMS's 250 ms budget for a whole proxy call.
pub(super) const DEFAULT_TIMEOUT_MS: u64 = 150;
/// Default name of the Transit key used by the health round trip.
pub(super) const DEFAULT_HEALTH_KEY: &str = "xks-proxy-health";
/// Largest accepted `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 60_000;

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

pub(super) fn config_error(store: &str, problem: impl Into<String>) -> TransitError {
    TransitError::Config {
        store: store.to_owned(),
        problem: problem.into(),
    }
}

pub(super) fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
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
pub(super) fn mount_path(raw: &str) -> Option<String> {
    let trimmed = raw.trim_matches('/');
    trimmed
        .split('/')
        .all(valid_segment)
        .then(|| trimmed.to_owned())
}

/// Whether `name` can be a Transit key name: Vault's rule (a word character at both ends,
/// word characters, `-` and `.` between), which also keeps it a safe URL path segment.
pub(super) fn valid_transit_key_name(name: &str) -> bool {
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
pub(super) fn key_name(key_id: &XksKeyId) -> Result<&str, BackendError> {
    let name = key_id.as_str();
    if valid_transit_key_name(name) {
        Ok(name)
    } else {
        Err(BackendError::KeyNotFound(name.to_owned()))
    }
}

/// Checks a key name for the admin helpers: an XKS key id Transit can hold.
pub(super) fn admin_key_name(name: &str) -> Result<&str, TransitError> {
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

/// The address and mount of a [`TransitConfig`], checked.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// The address without a trailing slash.
    pub(super) base: String,
    /// The Transit mount, without slashes at either end.
    pub(super) mount: String,
}

impl TransitConfig {
    /// Checks the address, the mount, the health key name and the timeout, in that order.
    pub(super) fn endpoint(&self, name: &str) -> Result<Endpoint, TransitError> {
        let address = self.checked_address(name)?;
        let base = address.as_str().trim_end_matches('/').to_owned();
        let mount = mount_path(&self.mount).ok_or_else(|| {
            config_error(
                name,
                format!(
                    "mount '{}': use path segments of A-Z a-z 0-9 _ - .",
                    self.mount
                ),
            )
        })?;
        if !valid_transit_key_name(&self.health_key) {
            return Err(config_error(
                name,
                format!(
                    "health_key '{}' is not a valid Transit key name",
                    self.health_key
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(config_error(
                name,
                format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        Ok(Endpoint { base, mount })
    }

    /// The address: `https`, or plain `http` to a loopback host only (and then no CA
    /// bundle); `scheme://host[:port][/path]`, without credentials, query or fragment.
    fn checked_address(&self, name: &str) -> Result<reqwest::Url, TransitError> {
        let address = reqwest::Url::parse(self.address.trim())
            .map_err(|e| config_error(name, format!("address '{}': {e}", self.address)))?;
        match address.scheme() {
            "https" => {}
            "http" if is_loopback_host(&address) => {
                if self.ca_bundle.is_some() {
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
                        self.address
                    ),
                ));
            }
            other => {
                return Err(config_error(
                    name,
                    format!("address '{}': scheme {other} is not http(s)", self.address),
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
                    self.address
                ),
            ));
        }
        Ok(address)
    }
}
