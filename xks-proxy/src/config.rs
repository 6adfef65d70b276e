//! Configuration: one TOML file, parsed raw, then validated into a ready-to-run form.
//!
//! Every problem is collected and reported together, so an operator fixes a config in one
//! pass. Relative paths are relative to the config file's directory. Secrets never appear
//! inline unless `[dev] allow_inline_secrets = true`.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xks_api::AadConstruction;
use xks_api::limits;

use crate::keystore::RootKeySource;

/// Defaults, documented where they are defined.
pub mod defaults {
    /// Largest plaintext accepted (bytes); the spec requires at least 4300.
    pub const MAX_PLAINTEXT_BYTES: usize = 8192;
    /// Largest ciphertext accepted (bytes); the spec requires at least 4300.
    pub const MAX_CIPHERTEXT_BYTES: usize = 8192;
    /// Largest AAD accepted (bytes); the spec requires at least 8192, the wire allows 65535.
    pub const MAX_AAD_BYTES: usize = 16384;
    /// Per-call backend deadline, below KMS's 250 ms budget.
    pub const BACKEND_DEADLINE_MS: u64 = 200;
    /// How long a deep health result is reused (the spec allows at most 60 s).
    pub const HEALTH_CACHE_SECONDS: u64 = 10;
    /// Requests per second per key store (AWS's default quota per external key store).
    pub const REQUESTS_PER_SECOND: u32 = 1800;
    /// How often watched files are checked for changes (milliseconds; 0 disables).
    pub const RELOAD_POLL_MS: u64 = 1000;
    /// The admin listener's address: loopback only.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    /// The SigV4 service name KMS signs with.
    pub const SIGV4_SERVICE: &str = "kms-xks-proxy";
}

pub use service_config::{ConfigError, LogFormat};

// ---------------------------------------------------------------------------------------
// Raw form: what the TOML says.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default)]
    dev: RawDev,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    authorization: RawAuthorization,
    #[serde(default)]
    key_stores: Vec<RawKeyStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    #[serde(default)]
    allow_plaintext_http: bool,
    tls: Option<RawTls>,
    max_connections: Option<usize>,
    max_in_flight_requests: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    request_header_timeout_ms: Option<u64>,
    request_body_timeout_ms: Option<u64>,
    max_concurrent_streams: Option<u32>,
    reload_poll_ms: Option<u64>,
    worker_threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    policy_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    ca_bundle: PathBuf,
    accepted_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate_chain: PathBuf,
    private_key: PathBuf,
    client_auth: Option<RawClientAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_plaintext_bytes: Option<usize>,
    max_ciphertext_bytes: Option<usize>,
    max_aad_bytes: Option<usize>,
    backend_deadline_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    cache_seconds: Option<u64>,
    fleet_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDev {
    #[serde(default)]
    allow_inline_secrets: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyStore {
    name: String,
    #[serde(default)]
    path_prefix: String,
    aad_construction: Option<String>,
    #[serde(default)]
    regions: Vec<String>,
    requests_per_second: Option<u32>,
    backend: RawBackend,
    #[serde(default)]
    credentials: Vec<RawCredential>,
    fault_injection: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum RawBackend {
    Embedded {
        store: PathBuf,
        root_key_file: Option<PathBuf>,
        root_key_env: Option<String>,
    },
    Pkcs11(RawPkcs11),
    Transit {
        transit: crate::backend::transit::TransitConfig,
        key_status_file: PathBuf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token: crate::backend::pkcs11::TokenSelector,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    pool_size: Option<usize>,
    session_wait_ms: Option<u64>,
    health_key_label: Option<String>,
    key_facts_cache_ms: Option<u64>,
    inline_calls: Option<bool>,
    session_key_copies: Option<bool>,
    #[serde(default)]
    capabilities: crate::backend::pkcs11::HsmCapabilities,
    key_status_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    access_key_id: String,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    secret: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Validated form.

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Listener settings.
    pub server: ServerConfig,
    /// Size limits and deadlines.
    pub limits: Limits,
    /// Health settings.
    pub health: HealthConfig,
    /// Log settings.
    pub logging: LoggingConfig,
    /// Logical key stores.
    pub key_stores: Vec<KeyStoreConfig>,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Secondary authorization policy file, if any (never applied to health).
    pub authorization_policy: Option<PathBuf>,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS files, or `None` for plain HTTP (explicit opt-in only).
    pub tls: Option<TlsFiles>,
    /// Connection limits, deadlines, the h2 stream limit and the in-flight limit (counted
    /// from the verified signature, health exempt): the `[server]` limit settings both
    /// services share (`https_server::ServerLimitSettings`).
    pub limits: https_server::ServerLimits,
    /// How often config, credential, policy and TLS files are checked for changes
    /// (`None`: only SIGHUP reloads).
    pub reload_poll: Option<Duration>,
    /// Async worker threads (`None`: Tokio's default, `$TOKIO_WORKER_THREADS` or one per
    /// CPU). Read at start only: a reload does not change it. Backend calls that block (PKCS#11)
    /// run on separate blocking threads whatever this is. On a small machine shared with
    /// other busy processes, fewer workers can serve more: measured on 2 shared vCPUs, 1
    /// worker nearly doubled the embedded backend's requests per second over 2.
    pub worker_threads: Option<usize>,
}

/// The admin listener (`/metrics`, `/ping`), plain HTTP, loopback by default.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address, or `None` when disabled.
    pub listen: Option<SocketAddr>,
}

/// mTLS: which client certificates the listener accepts.
#[derive(Debug, Clone)]
pub struct ClientAuthFiles {
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca_bundle: PathBuf,
    /// Accepted client names (certificate CN or DNS SAN), e.g. `cks.kms.eu-west-1.amazonaws.com`.
    pub accepted_names: Vec<String>,
}

/// Server certificate files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub certificate_chain: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// mTLS settings, when client certificates are required.
    pub client_auth: Option<ClientAuthFiles>,
}

/// Size limits and deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest plaintext (bytes).
    pub max_plaintext_bytes: usize,
    /// Largest ciphertext (bytes).
    pub max_ciphertext_bytes: usize,
    /// Largest AAD (bytes).
    pub max_aad_bytes: usize,
    /// Deadline for each backend call.
    pub backend_deadline: Duration,
}

impl Limits {
    /// Largest request body worth reading: the largest legal request plus room for metadata.
    pub fn max_body_bytes(&self) -> usize {
        let data = self.max_plaintext_bytes.max(self.max_ciphertext_bytes);
        // 16 KiB covers requestMetadata with several 2048-character ARNs and the JSON framing.
        limits::base64_len(data) + limits::base64_len(self.max_aad_bytes) + 16 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_plaintext_bytes: defaults::MAX_PLAINTEXT_BYTES,
            max_ciphertext_bytes: defaults::MAX_CIPHERTEXT_BYTES,
            max_aad_bytes: defaults::MAX_AAD_BYTES,
            backend_deadline: Duration::from_millis(defaults::BACKEND_DEADLINE_MS),
        }
    }
}

/// Health settings.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// How long a deep-check result is reused.
    pub cache: Duration,
    /// `xksProxyFleetSize`: how many proxy instances serve this endpoint.
    pub fleet_size: u32,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// Output format.
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info`.
    pub level: String,
}

/// Where a SigV4 secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file readable by its owner only.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Inline in the config (development only).
    Inline,
}

/// One SigV4 credential of a key store.
#[derive(Clone)]
pub struct CredentialConfig {
    /// The access key id.
    pub access_key_id: String,
    /// Where the secret came from.
    pub source: SecretSource,
    /// The secret, loaded and checked.
    pub secret: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The key backend of a key store.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// The embedded sealed key store.
    Embedded {
        /// The store file.
        store: PathBuf,
        /// Where its root key comes from.
        root_key: RootKeySource,
    },
    /// A PKCS#11 HSM; key status kept in the proxy's key status file.
    Pkcs11 {
        /// Module, token, PIN (loaded), pool and quirks.
        config: crate::backend::pkcs11::Pkcs11Config,
        /// Where the PIN came from (a file is watched for changes).
        pin_file: Option<PathBuf>,
        /// The proxy's key status file for this store.
        key_status_file: PathBuf,
    },
    /// Vault/OpenBao Transit; key status kept in the proxy's key status file.
    Transit {
        /// Address, mount, authentication, CA.
        config: crate::backend::transit::TransitConfig,
        /// Directory relative paths of `config` are resolved against.
        base_dir: PathBuf,
        /// The proxy's key status file for this store.
        key_status_file: PathBuf,
    },
}

/// One logical key store.
#[derive(Debug, Clone)]
pub struct KeyStoreConfig {
    /// Its name (logs, metrics, CLI).
    pub name: String,
    /// URI path prefix before `/kms/xks/v1` (may be empty).
    pub path_prefix: String,
    /// AAD construction for new ciphertexts and for ciphertexts without metadata.
    pub aad_construction: AadConstruction,
    /// Accepted SigV4 regions; empty means any.
    pub regions: Vec<String>,
    /// Request quota (requests per second); 0 disables it.
    pub requests_per_second: u32,
    /// The key backend.
    pub backend: BackendConfig,
    /// SigV4 credentials (at least one).
    pub credentials: Vec<CredentialConfig>,
    /// Test-only fault injection (builds with `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fault_injection: Option<crate::backend::faulty::FaultPlan>,
}

impl ProxyConfig {
    /// Every file whose change should reload the configuration: the config itself, TLS
    /// files, secret files and the authorization policy. (Key-store files are watched by
    /// their backends.)
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        if let Some(tls) = &self.server.tls {
            files.push(tls.certificate_chain.clone());
            files.push(tls.private_key.clone());
            if let Some(ca) = &tls.client_auth {
                files.push(ca.ca_bundle.clone());
            }
        }
        if let Some(p) = &self.authorization_policy {
            files.push(p.clone());
        }
        for ks in &self.key_stores {
            for c in &ks.credentials {
                if let SecretSource::File(f) = &c.source {
                    files.push(f.clone());
                }
            }
            match &ks.backend {
                BackendConfig::Embedded {
                    root_key: RootKeySource::File(f),
                    ..
                } => files.push(f.clone()),
                BackendConfig::Pkcs11 {
                    pin_file: Some(f), ..
                } => files.push(f.clone()),
                _ => {}
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = service_config::read_toml(path)?;
        Self::from_raw(raw, path)
    }

    /// Validates config text; `path` names the file and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::from_raw(service_config::parse_toml(text, path)?, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let mut v = Validator {
            base,
            problems: Vec::new(),
            access_key_ids: HashSet::new(),
        };
        let cfg = v.config(raw);
        if v.problems.is_empty() {
            Ok(ProxyConfig {
                path: path.to_owned(),
                ..cfg
            })
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: v.problems,
            })
        }
    }
}

struct Validator {
    base: PathBuf,
    problems: Vec<String>,
    access_key_ids: HashSet<String>,
}

impl Validator {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn config(&mut self, raw: RawConfig) -> ProxyConfig {
        let server = self.server(raw.server);
        let admin = self.admin(raw.admin);
        let authorization_policy = raw.authorization.policy_file.map(|p| self.resolve(&p));
        let limits = self.limits(&raw.limits);
        let health = self.health(raw.health);
        let logging = self.logging(raw.logging);
        let key_stores = self.key_stores(raw.key_stores, raw.dev.allow_inline_secrets);
        ProxyConfig {
            path: PathBuf::new(),
            server,
            admin,
            authorization_policy,
            limits,
            health,
            logging,
            key_stores,
        }
    }

    /// `[server]`: the listener, TLS, connection limits and deadlines.
    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let tls = self.server_tls(raw.tls, raw.allow_plaintext_http);
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            self.problem(format!(
                "server.listen: '{}' is not an address like 127.0.0.1:8443",
                raw.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let limits = https_server::ServerLimitSettings {
            max_connections: raw.max_connections,
            max_in_flight_requests: raw.max_in_flight_requests,
            idle_timeout_seconds: raw.idle_timeout_seconds,
            request_header_timeout_ms: raw.request_header_timeout_ms,
            request_body_timeout_ms: raw.request_body_timeout_ms,
            max_concurrent_streams: raw.max_concurrent_streams,
        }
        .validate(&mut self.problems);
        let reload_poll = match raw.reload_poll_ms.unwrap_or(defaults::RELOAD_POLL_MS) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        let worker_threads = raw.worker_threads;
        if worker_threads == Some(0) {
            self.problem("server.worker_threads: at least 1");
        }
        ServerConfig {
            listen,
            tls,
            limits,
            reload_poll,
            worker_threads,
        }
    }

    /// `[server.tls]`, or the explicit plain-HTTP opt-in.
    fn server_tls(
        &mut self,
        raw_tls: Option<RawTls>,
        allow_plaintext_http: bool,
    ) -> Option<TlsFiles> {
        match (raw_tls, allow_plaintext_http) {
            (Some(t), false) => Some(TlsFiles {
                certificate_chain: self.resolve(&t.certificate_chain),
                private_key: self.resolve(&t.private_key),
                client_auth: t.client_auth.map(|c| {
                    if c.accepted_names.is_empty() {
                        self.problem("server.tls.client_auth.accepted_names: name at least one accepted client name");
                    }
                    ClientAuthFiles {
                        ca_bundle: self.resolve(&c.ca_bundle),
                        accepted_names: c.accepted_names,
                    }
                }),
            }),
            (Some(_), true) => {
                self.problem("server: set either [server.tls] or allow_plaintext_http, not both");
                None
            }
            (None, true) => None,
            (None, false) => {
                self.problem(
                    "server.tls is required (plain HTTP only with server.allow_plaintext_http = true, for TLS-terminating load balancers)",
                );
                None
            }
        }
    }

    /// `[admin]`: loopback by default, or disabled.
    fn admin(&mut self, raw: RawAdmin) -> AdminConfig {
        AdminConfig {
            listen: if raw.disabled {
                None
            } else {
                let text = raw.listen.as_deref().unwrap_or(defaults::ADMIN_LISTEN);
                match text.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.problem(format!(
                            "admin.listen: '{text}' is not an address like 127.0.0.1:9090"
                        ));
                        None
                    }
                }
            },
        }
    }

    /// `[health]`.
    fn health(&mut self, raw: RawHealth) -> HealthConfig {
        let health = HealthConfig {
            cache: Duration::from_secs(raw.cache_seconds.unwrap_or(defaults::HEALTH_CACHE_SECONDS)),
            fleet_size: raw.fleet_size.unwrap_or(1),
        };
        if health.cache.as_secs() > limits::MAX_HEALTH_CACHE_SECS {
            self.problem(
                "health.cache_seconds: at most 60 (the spec's limit for a cached deep check)",
            );
        }
        if health.fleet_size == 0 {
            self.problem("health.fleet_size: must be at least 1");
        }
        health
    }

    /// `[logging]`.
    fn logging(&mut self, raw: RawLogging) -> LoggingConfig {
        LoggingConfig {
            format: match raw.format.as_deref().map(LogFormat::parse) {
                None => LogFormat::Text,
                Some(Some(format)) => format,
                Some(None) => {
                    self.problem(format!(
                        "logging.format: '{}' is not 'text' or 'json'",
                        raw.format.as_deref().unwrap_or_default()
                    ));
                    LogFormat::Text
                }
            },
            level: raw.level.unwrap_or_else(|| "info".into()),
        }
    }

    /// Every `[[key_stores]]`, with names and path prefixes unique.
    fn key_stores(&mut self, raw: Vec<RawKeyStore>, allow_inline: bool) -> Vec<KeyStoreConfig> {
        if raw.is_empty() {
            self.problem("at least one [[key_stores]] entry is required");
        }
        let key_stores: Vec<_> = raw
            .into_iter()
            .map(|ks| self.key_store(ks, allow_inline))
            .collect();
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        for ks in &key_stores {
            if !names.insert(ks.name.clone()) {
                self.problem(format!("key store name '{}' is used twice", ks.name));
            }
            if !prefixes.insert(ks.path_prefix.clone()) {
                self.problem(format!(
                    "key store '{}': path_prefix '{}' is used by another key store",
                    ks.name, ks.path_prefix
                ));
            }
        }
        key_stores
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let l = Limits {
            max_plaintext_bytes: raw
                .max_plaintext_bytes
                .unwrap_or(defaults::MAX_PLAINTEXT_BYTES),
            max_ciphertext_bytes: raw
                .max_ciphertext_bytes
                .unwrap_or(defaults::MAX_CIPHERTEXT_BYTES),
            max_aad_bytes: raw.max_aad_bytes.unwrap_or(defaults::MAX_AAD_BYTES),
            backend_deadline: Duration::from_millis(
                raw.backend_deadline_ms
                    .unwrap_or(defaults::BACKEND_DEADLINE_MS),
            ),
        };
        let min = limits::MIN_SUPPORTED_DATA_BYTES;
        if l.max_plaintext_bytes < min {
            self.problem(format!(
                "limits.max_plaintext_bytes: at least {min} (spec minimum)"
            ));
        }
        if l.max_ciphertext_bytes < min {
            self.problem(format!(
                "limits.max_ciphertext_bytes: at least {min} (spec minimum)"
            ));
        }
        if l.max_plaintext_bytes > 1 << 20 || l.max_ciphertext_bytes > 1 << 20 {
            self.problem("limits: plaintext and ciphertext maxima above 1 MiB are not supported");
        }
        if l.max_aad_bytes < limits::MIN_SUPPORTED_AAD_BYTES
            || l.max_aad_bytes > limits::MAX_AAD_BYTES
        {
            self.problem(format!(
                "limits.max_aad_bytes: between {} (spec minimum) and {} (2-byte length field)",
                limits::MIN_SUPPORTED_AAD_BYTES,
                limits::MAX_AAD_BYTES
            ));
        }
        let ms = l.backend_deadline.as_millis();
        if ms == 0 || ms >= u128::from(limits::KMS_CALL_BUDGET_MS) {
            self.problem(
                "limits.backend_deadline_ms: between 1 and 249 (KMS gives a proxy call 250 ms)",
            );
        }
        l
    }

    fn key_store(&mut self, raw: RawKeyStore, allow_inline: bool) -> KeyStoreConfig {
        let name = raw.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.problem(format!(
                "key store name '{name}': use 1+ characters from a-z A-Z 0-9 - _"
            ));
        }
        if let Err(e) = xks_api::key_id::validate_path_prefix(&raw.path_prefix) {
            self.problem(format!(
                "key store '{name}': path_prefix '{}': {e}",
                raw.path_prefix
            ));
        }
        let aad_construction = match raw.aad_construction.as_deref().unwrap_or("spec") {
            "spec" => AadConstruction::Spec,
            "reference-digest" => AadConstruction::ReferenceDigest,
            other => {
                self.problem(format!(
                    "key store '{name}': aad_construction '{other}' is not 'spec' or 'reference-digest'"
                ));
                AadConstruction::Spec
            }
        };
        for r in &raw.regions {
            if r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                self.problem(format!(
                    "key store '{name}': region '{r}' is not a region name"
                ));
            }
        }
        let backend = self.backend(&name, raw.backend);
        if raw.credentials.is_empty() {
            self.problem(format!(
                "key store '{name}': at least one [[key_stores.credentials]] is required"
            ));
        }
        let credentials = raw
            .credentials
            .into_iter()
            .filter_map(|c| self.credential(&name, c, allow_inline))
            .collect();
        #[cfg(feature = "test-hooks")]
        let fault_injection = raw.fault_injection.and_then(|v| {
            v.try_into()
                .map_err(|e| self.problem(format!("key store '{name}': fault_injection: {e}")))
                .ok()
        });
        #[cfg(not(feature = "test-hooks"))]
        if raw.fault_injection.is_some() {
            self.problem(format!(
                "key store '{name}': fault_injection exists only in test builds (feature test-hooks)"
            ));
        }
        KeyStoreConfig {
            name,
            path_prefix: raw.path_prefix,
            aad_construction,
            regions: raw.regions,
            requests_per_second: raw
                .requests_per_second
                .unwrap_or(defaults::REQUESTS_PER_SECOND),
            backend,
            credentials,
            #[cfg(feature = "test-hooks")]
            fault_injection,
        }
    }

    /// The key store's `backend = { type = ... }`.
    fn backend(&mut self, name: &str, raw: RawBackend) -> BackendConfig {
        match raw {
            RawBackend::Embedded {
                store,
                root_key_file,
                root_key_env,
            } => self.embedded_backend(name, &store, root_key_file, root_key_env),
            RawBackend::Pkcs11(raw) => self.pkcs11_backend(name, raw),
            RawBackend::Transit {
                transit,
                key_status_file,
            } => BackendConfig::Transit {
                config: transit,
                base_dir: self.base.clone(),
                key_status_file: self.resolve(&key_status_file),
            },
        }
    }

    fn embedded_backend(
        &mut self,
        name: &str,
        store: &Path,
        root_key_file: Option<PathBuf>,
        root_key_env: Option<String>,
    ) -> BackendConfig {
        let store = self.resolve(store);
        let root_key = match (root_key_file, root_key_env) {
            (Some(f), None) => {
                let f = self.resolve(&f);
                if f.parent() == store.parent() {
                    self.problem(format!(
                        "key store '{name}': the root key file must not be in the key store's directory ({})",
                        f.parent().map(|p| p.display().to_string()).unwrap_or_default()
                    ));
                }
                RootKeySource::File(f)
            }
            (None, Some(v)) => RootKeySource::Env(v),
            _ => {
                self.problem(format!(
                    "key store '{name}': set exactly one of backend.root_key_file or backend.root_key_env"
                ));
                RootKeySource::Env(String::new())
            }
        };
        BackendConfig::Embedded { store, root_key }
    }

    fn pkcs11_backend(&mut self, name: &str, raw: RawPkcs11) -> BackendConfig {
        let pin = self.pkcs11_pin(name, raw.pin_file.as_deref(), raw.pin_env.as_deref());
        let mut config = crate::backend::pkcs11::Pkcs11Config::new(
            self.resolve(&raw.module),
            raw.token,
            secrecy::SecretString::from(pin.as_deref().map_or("", |p| p.as_str())),
        );
        if let Some(n) = raw.pool_size {
            config.pool_size = n;
        }
        if let Some(ms) = raw.session_wait_ms {
            config.session_wait = Duration::from_millis(ms);
        }
        if let Some(l) = raw.health_key_label {
            config.health_key_label = l;
        }
        if let Some(ms) = raw.key_facts_cache_ms {
            config.key_facts_ttl = Duration::from_millis(ms);
        }
        if let Some(inline) = raw.inline_calls {
            config.inline_calls = inline;
        }
        if let Some(copies) = raw.session_key_copies {
            config.session_key_copies = copies;
        }
        config.capabilities = raw.capabilities;
        BackendConfig::Pkcs11 {
            config,
            pin_file: raw.pin_file.map(|f| self.resolve(&f)),
            key_status_file: self.resolve(&raw.key_status_file),
        }
    }

    /// The HSM user PIN, read into a zeroizing buffer from its file or variable.
    fn pkcs11_pin(
        &mut self,
        name: &str,
        pin_file: Option<&Path>,
        pin_env: Option<&str>,
    ) -> Option<zeroize::Zeroizing<String>> {
        match (pin_file, pin_env) {
            (Some(f), None) => match root_key::read_secret_file(&self.resolve(f)) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(format!("key store '{name}': PIN file: {e}"));
                    None
                }
            },
            (None, Some(v)) => {
                let pin = root_key::read_secret_env(v);
                if pin.is_none() {
                    self.problem(format!(
                        "key store '{name}': environment variable {v} (the HSM PIN) is not set"
                    ));
                }
                pin
            }
            _ => {
                self.problem(format!(
                    "key store '{name}': set exactly one of backend.pin_file or backend.pin_env"
                ));
                None
            }
        }
    }

    fn credential(
        &mut self,
        store: &str,
        raw: RawCredential,
        allow_inline: bool,
    ) -> Option<CredentialConfig> {
        let akid = raw.access_key_id;
        if !self.access_key_ids.insert(akid.clone()) {
            self.problem(format!(
                "access key id {akid} is configured twice (ids must be unambiguous)"
            ));
        }
        if !valid_access_key_id(&akid) {
            self.problem(format!(
                "key store '{store}': access key id '{akid}' must be 20-30 characters from A-Z 2-7"
            ));
        }
        let (source, secret) = match (raw.secret_file, raw.secret_env, raw.secret) {
            (Some(f), None, None) => {
                let f = self.resolve(&f);
                match root_key::read_secret_file(&f) {
                    Ok(s) => (SecretSource::File(f), s),
                    Err(e) => {
                        self.problem(format!(
                            "key store '{store}': credential {akid}: secret file: {e}"
                        ));
                        return None;
                    }
                }
            }
            (None, Some(var), None) => match root_key::read_secret_env(&var) {
                Some(s) => (SecretSource::Env(var), s),
                None => {
                    self.problem(format!(
                        "key store '{store}': credential {akid}: environment variable {var} is not set"
                    ));
                    return None;
                }
            },
            (None, None, Some(s)) => {
                if !allow_inline {
                    self.problem(format!(
                        "key store '{store}': credential {akid}: inline secrets need [dev] allow_inline_secrets = true; use secret_file or secret_env"
                    ));
                }
                (SecretSource::Inline, zeroize::Zeroizing::new(s))
            }
            _ => {
                self.problem(format!(
                    "key store '{store}': credential {akid}: set exactly one of secret_file, secret_env, secret"
                ));
                return None;
            }
        };
        if !valid_secret(&secret) {
            self.problem(format!(
                "key store '{store}': credential {akid}: the secret must be 43-64 characters from a-z A-Z 0-9 / + ="
            ));
        }
        Some(CredentialConfig {
            access_key_id: akid,
            source,
            secret,
        })
    }
}

/// An XKS access key id: 20-30 characters from `A-Z 2-7` (spec Appendix A).
pub fn valid_access_key_id(s: &str) -> bool {
    (20..=30).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// An XKS secret access key: 43-64 characters from `a-z A-Z 0-9 / + =`.
pub fn valid_secret(s: &str) -> bool {
    (43..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_problems_are_reported_together() {
        let text = r#"
            [server]
            listen = "nope"
            worker_threads = 0
            [limits]
            max_plaintext_bytes = 100
            max_aad_bytes = 70000
            backend_deadline_ms = 300
            [[key_stores]]
            name = "a"
            path_prefix = "bad/"
            aad_construction = "other"
            backend = { type = "embedded", store = "k/a.store", root_key_file = "k/root.key" }
            [[key_stores.credentials]]
            access_key_id = "lowercase"
            secret = "short"
        "#;
        let err = ProxyConfig::from_toml(text, Path::new("/etc/x.toml")).expect_err("invalid");
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let joined = problems.join("\n");
        for needle in [
            "server.listen",
            "server.tls is required",
            "server.worker_threads",
            "max_plaintext_bytes",
            "max_aad_bytes",
            "backend_deadline_ms",
            "path_prefix",
            "aad_construction",
            "root key file must not be in the key store's directory",
            "access key id",
            "inline secrets",
            "43-64",
        ] {
            assert!(joined.contains(needle), "missing '{needle}' in:\n{joined}");
        }
    }

    #[test]
    fn server_deadlines_and_stream_limit_are_validated() {
        let text = r#"
            [server]
            listen = "127.0.0.1:0"
            allow_plaintext_http = true
            request_header_timeout_ms = 0
            request_body_timeout_ms = 300001
            max_concurrent_streams = 0
        "#;
        let err = ProxyConfig::from_toml(text, Path::new("/etc/x.toml")).expect_err("invalid");
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        let joined = problems.join("\n");
        for needle in [
            "server.request_header_timeout_ms: 0 is not between 1 and 300000 milliseconds",
            "server.request_body_timeout_ms: 300001 is not between 1 and 300000 milliseconds",
            "server.max_concurrent_streams: at least 1",
        ] {
            assert!(joined.contains(needle), "missing '{needle}' in:\n{joined}");
        }
    }

    #[test]
    fn credential_rules() {
        assert!(valid_access_key_id("AKIA2345677ABCDEFGHIJ"));
        assert!(!valid_access_key_id("AKIA0000000000000000"));
        assert!(!valid_access_key_id("SHORT"));
        assert!(valid_secret(&"a".repeat(43)));
        assert!(!valid_secret(&"a".repeat(42)));
        assert!(!valid_secret(&"a".repeat(65)));
        assert!(!valid_secret(&format!("{}-", "a".repeat(43))));
    }
}
