//! Front-end configuration: one TOML file, parsed raw, then validated with every problem
//! reported together. Relative paths are relative to the config file's directory.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Defaults, documented where they are defined.
pub mod defaults {
    /// KMS keys per account and Region (AWS's default quota).
    pub const MAX_KEYS_PER_REGION: u64 = 100_000;

    /// `[storage]` with a PostgreSQL `url`.
    pub mod postgres {
        /// Connections per process: enough for the blocking pool's concurrent requests on a
        /// small host; a fleet of N processes opens up to N times this many.
        pub const POOL_SIZE: usize = 16;
        /// The largest `pool_size` accepted.
        pub const MAX_POOL_SIZE: usize = 1024;
        /// The server-side statement timeout: a request fails after this, rather than
        /// waiting on a lock or a stalled server indefinitely.
        pub const STATEMENT_TIMEOUT_MS: u64 = 5_000;
        /// Opening one connection (TCP, TLS, authentication), or waiting for a free one.
        pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
        /// The smallest timeout accepted.
        pub const MIN_TIMEOUT_MS: u64 = 10;
        /// The largest timeout accepted.
        pub const MAX_TIMEOUT_MS: u64 = 600_000;
    }

    /// The Regions served unless the top-level `regions` says otherwise: AWS KMS's
    /// commercial, China and GovCloud Regions (botocore's endpoints.json).
    pub const SERVED_REGIONS: &[&str] = &[
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "cn-north-1",
        "cn-northwest-1",
        "us-gov-east-1",
        "us-gov-west-1",
    ];
}

pub use service_config::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Regions served at all (default: [`defaults::SERVED_REGIONS`]).
    regions: Option<Vec<String>>,
    server: RawServer,
    storage: RawStorage,
    root_key: RawRootKey,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    xks: RawXks,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    identity_policies: Vec<RawIdentityPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    require_signed_target: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityPolicy {
    name: String,
    document: Option<String>,
    document_file: Option<PathBuf>,
    #[serde(default)]
    principals: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXks {
    trusted_ca_bundle: Option<PathBuf>,
    #[serde(default)]
    resolve: std::collections::BTreeMap<String, String>,
    client_certificate_chain: Option<PathBuf>,
    client_private_key: Option<PathBuf>,
    timeout_ms: Option<u64>,
    health_check_interval_seconds: Option<u64>,
    allow_private_endpoints: Option<bool>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate_chain: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    /// The SQLite database file (the default backend).
    path: Option<PathBuf>,
    /// A PostgreSQL connection URL instead (`postgres://user@host:port/db`), no password in it.
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    tls_ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    statement_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootKey {
    file: Option<PathBuf>,
    env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_keys_per_region: Option<u64>,
    max_grants_per_key: Option<u64>,
    max_grants_per_grantee: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    arn: String,
    access_key_id: String,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    #[serde(default)]
    policies: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS files, or `None` for plain HTTP (explicit opt-in).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `[server]` connection limits, deadlines and the in-flight limit.
    pub server_limits: https_server::ServerLimits,
    /// The storage backend: an SQLite file or a PostgreSQL database (`[storage]`).
    pub storage: StorageSettings,
    /// The root key sealing key material.
    pub root_key: root_key::RootKeySource,
    /// KMS keys per account and Region.
    pub max_keys_per_region: u64,
    /// Grants per key and per grantee on a key (`[limits] max_grants_per_key`,
    /// `max_grants_per_grantee`).
    pub grant_limits: crate::grants::GrantLimits,
    /// Log filter.
    pub log_level: String,
    /// Accounts and their principals.
    pub accounts: Vec<Account>,
    /// How the front end reaches XKS proxies.
    pub xks: XksSettings,
    /// The admin listener (`/metrics`, `/ping`; plain HTTP, keep it on loopback), if any.
    pub admin_listen: Option<SocketAddr>,
    /// The Regions a credential scope may name (each account's `regions` narrows it).
    pub served_regions: Vec<String>,
    /// Whether `x-amz-target` must be among the signed headers (`[auth]`; default true).
    pub require_signed_target: bool,
    /// Identity policies (the stand-in for IAM): name → JSON document.
    pub identity_policies: std::collections::BTreeMap<String, String>,
}

/// Where keys, aliases and custom key stores are stored (`[storage]`: `path` or `url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// One SQLite file (`path`), the default: one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`url`), which several front ends may share.
    Postgres(PostgresSettings),
}

/// A PostgreSQL database as `[storage]` names it. The password never appears in the URL
/// or here: only where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres://user@host[:port]/database[?options]`, without a password.
    pub url: String,
    /// Where the password is read from at start-up, if the server wants one.
    pub password: Option<SecretSource>,
    /// The CA (PEM) the server's certificate must chain to: TLS is then required and the
    /// certificate and host name verified (rustls). Without it the connection is plain.
    pub tls_ca_file: Option<PathBuf>,
    /// Connections per process (each request holds one for one transaction).
    pub pool_size: usize,
    /// The server-side `statement_timeout`, and the bound on waiting for one answer.
    pub statement_timeout: std::time::Duration,
    /// The bound on opening one connection (TCP, TLS and authentication), and on waiting
    /// for a free pooled connection.
    pub connect_timeout: std::time::Duration,
}

/// A secret read at start-up from an owner-only file or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file readable by its owner only (`root_key::read_secret_file`).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// How the front end reaches XKS proxies.
#[derive(Debug, Clone)]
pub struct XksSettings {
    /// PEM bundle of the CAs proxy certificates must chain to (None: the public web PKI).
    pub trusted_ca_bundle: Option<PathBuf>,
    /// Host name → socket address overrides (like curl --resolve); TLS still verifies the name.
    pub resolve: Vec<(String, SocketAddr)>,
    /// Client certificate chain and key for proxies that require mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Budget of one proxy call (KMS: 250 ms).
    pub timeout: std::time::Duration,
    /// How often CONNECTED stores are health-checked.
    pub health_check_interval: std::time::Duration,
    /// Whether proxy endpoints may be loopback or private addresses (link-local and cloud
    /// metadata addresses are refused whatever this says).
    pub allow_private_endpoints: bool,
}

/// An AWS account served by this front end.
#[derive(Debug, Clone)]
pub struct Account {
    /// 12-digit account id.
    pub id: String,
    /// Regions served (empty: any).
    pub regions: Vec<String>,
    /// IAM principals that may call.
    pub principals: Vec<Principal>,
}

/// An IAM principal with a SigV4 credential.
#[derive(Clone)]
pub struct Principal {
    /// Its ARN, e.g. `arn:aws:iam::111122223333:user/alice`.
    pub arn: String,
    /// Its access key id.
    pub access_key_id: String,
    /// Its secret access key.
    pub secret: Zeroizing<String>,
    /// Names of the identity policies attached to it (none: allow-all, see the README).
    pub policies: Vec<String>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("arn", &self.arn)
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .field("policies", &self.policies)
            .finish()
    }
}

/// Makes a configured path absolute: relative paths are relative to the config file's
/// directory.
struct Resolver {
    base: PathBuf,
}

impl Resolver {
    fn for_config(path: &Path) -> Self {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Self { base }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }
}

/// `[limits]`' grant quotas: AWS's 50,000 grants per key by default; the per-grantee quota
/// defaults to the per-key one (AWS dropped its own in 2021). Each must be at least 1.
fn grant_limits(raw: &RawLimits, problems: &mut Vec<String>) -> crate::grants::GrantLimits {
    let defaults = crate::grants::GrantLimits::default();
    let per_key = raw.max_grants_per_key.unwrap_or(defaults.per_key);
    let per_grantee = raw.max_grants_per_grantee.unwrap_or(per_key);
    for (name, v) in [
        ("max_grants_per_key", per_key),
        ("max_grants_per_grantee", per_grantee),
    ] {
        if v == 0 {
            problems.push(format!("limits.{name}: must be at least 1"));
        }
    }
    crate::grants::GrantLimits {
        per_key,
        per_grantee,
    }
}

impl FrontendConfig {
    /// Reads and validates a config file: every problem is collected, then reported
    /// together.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = read_raw(path)?;
        let paths = Resolver::for_config(path);
        let mut problems = Vec::new();
        let (listen, tls) = server(&raw.server, &paths, &mut problems);
        let server_limits = server_limits(&raw.server).validate(&mut problems);
        let root_key = root_key_source(raw.root_key, &paths, &mut problems);
        let mut accounts = accounts(raw.accounts, &paths, &mut problems);
        let served_regions = served_regions(raw.regions, &mut problems);
        let identity_policies =
            identity_policies(raw.identity_policies, &mut accounts, &paths, &mut problems);
        let xks = xks_settings(&raw.xks, &paths, &mut problems);
        let grant_limits = grant_limits(&raw.limits, &mut problems);
        let storage = storage_settings(raw.storage, &paths, &mut problems);
        let admin_listen = raw.admin.listen.as_deref().and_then(|a| {
            a.parse::<SocketAddr>()
                .map_err(|_| problems.push(format!("admin.listen: '{a}' is not an address")))
                .ok()
        });
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            listen,
            tls,
            server_limits,
            storage,
            root_key,
            max_keys_per_region: raw
                .limits
                .max_keys_per_region
                .unwrap_or(defaults::MAX_KEYS_PER_REGION),
            grant_limits,
            log_level: raw.logging.level.unwrap_or_else(|| "info".into()),
            accounts,
            xks,
            admin_listen,
            served_regions,
            require_signed_target: raw.auth.require_signed_target.unwrap_or(true),
            identity_policies,
        })
    }
}

/// The file, parsed (no checks beyond the schema's).
fn read_raw(path: &Path) -> Result<Raw, ConfigError> {
    service_config::read_toml(path)
}

/// `[server]`: the listen address and the TLS files (`None`: plain HTTP, opted into).
fn server(
    raw: &RawServer,
    paths: &Resolver,
    problems: &mut Vec<String>,
) -> (SocketAddr, Option<(PathBuf, PathBuf)>) {
    let listen = raw.listen.parse().unwrap_or_else(|_| {
        problems.push(format!("server.listen: '{}' is not an address", raw.listen));
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let tls = match (&raw.tls, raw.allow_plaintext_http) {
        (Some(t), false) => Some((
            paths.resolve(&t.certificate_chain),
            paths.resolve(&t.private_key),
        )),
        (None, true) => None,
        (Some(_), true) => {
            problems
                .push("server: set either [server.tls] or allow_plaintext_http, not both".into());
            None
        }
        (None, false) => {
            problems.push(
                "server.tls is required (plain HTTP only with server.allow_plaintext_http = true)"
                    .into(),
            );
            None
        }
    };
    (listen, tls)
}

/// `[server]`'s connection limits, deadlines and in-flight limit, validated by the listener
/// crate (the same keys and rules as the proxy's).
fn server_limits(raw: &RawServer) -> https_server::ServerLimitSettings {
    https_server::ServerLimitSettings {
        max_connections: raw.max_connections,
        max_in_flight_requests: raw.max_in_flight_requests,
        idle_timeout_seconds: raw.idle_timeout_seconds,
        request_header_timeout_ms: raw.request_header_timeout_ms,
        request_body_timeout_ms: raw.request_body_timeout_ms,
        max_concurrent_streams: raw.max_concurrent_streams,
    }
}

/// `[storage]`: exactly one of `path` (SQLite) or `url` (PostgreSQL); the PostgreSQL settings
/// only with `url`, each within its bounds.
fn storage_settings(
    raw: RawStorage,
    paths: &Resolver,
    problems: &mut Vec<String>,
) -> StorageSettings {
    use defaults::postgres as d;
    let pg_only = [
        ("password_file", raw.password_file.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("tls_ca_file", raw.tls_ca_file.is_some()),
        ("pool_size", raw.pool_size.is_some()),
        ("statement_timeout_ms", raw.statement_timeout_ms.is_some()),
        ("connect_timeout_ms", raw.connect_timeout_ms.is_some()),
    ];
    let url = match (raw.path, raw.url) {
        (Some(path), None) => {
            for (name, _) in pg_only.iter().filter(|(_, set)| *set) {
                problems.push(format!("storage.{name} applies only to storage.url"));
            }
            return StorageSettings::Sqlite(paths.resolve(&path));
        }
        (None, Some(url)) => url,
        _ => {
            problems.push("storage: set exactly one of path (SQLite) or url (PostgreSQL)".into());
            return StorageSettings::Sqlite(PathBuf::new());
        }
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.push("storage.url: must start with postgres:// or postgresql://".into());
    }
    // A password in the URL would end up in logs and process listings.
    if url_has_password(&url) {
        problems.push(
            "storage.url: must not contain a password; use storage.password_file or \
             storage.password_env"
                .into(),
        );
    }
    let password = match (raw.password_file, raw.password_env) {
        (None, None) => None,
        (Some(f), None) => Some(SecretSource::File(paths.resolve(&f))),
        (None, Some(v)) => Some(SecretSource::Env(v)),
        (Some(_), Some(_)) => {
            problems.push("storage: set at most one of password_file or password_env".into());
            None
        }
    };
    let pool_size = raw.pool_size.unwrap_or(d::POOL_SIZE);
    if !(1..=d::MAX_POOL_SIZE).contains(&pool_size) {
        problems.push(format!(
            "storage.pool_size: must be 1..={}",
            d::MAX_POOL_SIZE
        ));
    }
    let mut millis = |name: &str, value: Option<u64>, default: u64| {
        let ms = value.unwrap_or(default);
        if !(d::MIN_TIMEOUT_MS..=d::MAX_TIMEOUT_MS).contains(&ms) {
            problems.push(format!(
                "storage.{name}: must be {}..={} ms",
                d::MIN_TIMEOUT_MS,
                d::MAX_TIMEOUT_MS
            ));
        }
        std::time::Duration::from_millis(ms)
    };
    let statement_timeout = millis(
        "statement_timeout_ms",
        raw.statement_timeout_ms,
        d::STATEMENT_TIMEOUT_MS,
    );
    let connect_timeout = millis(
        "connect_timeout_ms",
        raw.connect_timeout_ms,
        d::CONNECT_TIMEOUT_MS,
    );
    StorageSettings::Postgres(PostgresSettings {
        url,
        password,
        tls_ca_file: raw.tls_ca_file.map(|f| paths.resolve(&f)),
        pool_size,
        statement_timeout,
        connect_timeout,
    })
}

/// Whether a `postgres://` URL carries a password (`user:password@`, or `password=` among
/// its options).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority.split('/').next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split('=').next().is_some_and(|k| k == "password"))
    });
    in_userinfo || in_query
}

/// `[root_key]`: exactly one of a file or an environment variable.
fn root_key_source(
    raw: RawRootKey,
    paths: &Resolver,
    problems: &mut Vec<String>,
) -> root_key::RootKeySource {
    match (raw.file, raw.env) {
        (Some(f), None) => root_key::RootKeySource::File(paths.resolve(&f)),
        (None, Some(v)) => root_key::RootKeySource::Env(v),
        _ => {
            problems.push("root_key: set exactly one of file or env".into());
            root_key::RootKeySource::Env(String::new())
        }
    }
}

/// `[[accounts]]`: at least one; ids of 12 digits, each once; access key ids unique across
/// all accounts.
fn accounts(raw: Vec<RawAccount>, paths: &Resolver, problems: &mut Vec<String>) -> Vec<Account> {
    let mut accounts = Vec::new();
    let mut akids = HashSet::new();
    let mut ids = HashSet::new();
    if raw.is_empty() {
        problems.push("at least one [[accounts]] entry is required".into());
    }
    for a in raw {
        if a.id.len() != 12 || !a.id.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!("account '{}': the id must be 12 digits", a.id));
        }
        if !ids.insert(a.id.clone()) {
            problems.push(format!("account {} is configured twice", a.id));
        }
        let mut principals = Vec::new();
        for p in a.principals {
            if !akids.insert(p.access_key_id.clone()) {
                problems.push(format!(
                    "access key id {} is configured twice",
                    p.access_key_id
                ));
            }
            if !p.arn.starts_with("arn:") || !p.arn.contains(&format!(":iam::{}:", a.id)) {
                problems.push(format!(
                    "principal {}: must be an IAM ARN in account {}",
                    p.arn, a.id
                ));
            }
            if let Some(secret) = principal_secret(&p, paths, problems) {
                principals.push(Principal {
                    arn: p.arn,
                    access_key_id: p.access_key_id,
                    secret,
                    policies: p.policies,
                });
            }
        }
        accounts.push(Account {
            id: a.id,
            regions: a.regions,
            principals,
        });
    }
    accounts
}

/// The top-level `regions`: names of the shape `xx-name-1` (they end up inside ARNs),
/// default [`defaults::SERVED_REGIONS`].
fn served_regions(raw: Option<Vec<String>>, problems: &mut Vec<String>) -> Vec<String> {
    let Some(list) = raw else {
        return defaults::SERVED_REGIONS
            .iter()
            .map(|r| (*r).to_owned())
            .collect();
    };
    for r in &list {
        if !crate::auth::region_shaped(r) {
            problems.push(format!(
                "regions: '{r}' is not a Region name like us-east-1"
            ));
        }
    }
    if list.is_empty() {
        problems.push("regions: the list is empty (no request could be served)".into());
    }
    list
}

/// `[[identity_policies]]`: unique names, exactly one of `document` / `document_file`, a
/// valid policy document; attached by `principals = [...]` here or `policies = [...]` on a
/// principal, both naming what exists.
fn identity_policies(
    raw: Vec<RawIdentityPolicy>,
    accounts: &mut [Account],
    paths: &Resolver,
    problems: &mut Vec<String>,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for p in raw {
        let text = match (&p.document, &p.document_file) {
            (Some(d), None) => Some(d.clone()),
            (None, Some(f)) => {
                let f = paths.resolve(f);
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        problems.push(format!("identity policy {}: {}: {e}", p.name, f.display()));
                    })
                    .ok()
            }
            _ => {
                problems.push(format!(
                    "identity policy {}: set exactly one of document or document_file",
                    p.name
                ));
                None
            }
        };
        let Some(text) = text else { continue };
        match crate::authz::Policy::parse(&text) {
            Err(e) => {
                problems.push(format!("identity policy {}: {e}", p.name));
                continue;
            }
            Ok(parsed) if parsed.names_principals() => {
                problems.push(format!(
                    "identity policy {}: an identity policy has no Principal or NotPrincipal",
                    p.name
                ));
                continue;
            }
            Ok(parsed) => {
                if let Some(op) = parsed.unknown_operator() {
                    problems.push(format!(
                        "identity policy {}: unknown condition operator {op}",
                        p.name
                    ));
                    continue;
                }
            }
        }
        for arn in &p.principals {
            let found = accounts
                .iter_mut()
                .flat_map(|a| a.principals.iter_mut())
                .find(|q| &q.arn == arn);
            match found {
                Some(q) => {
                    if !q.policies.contains(&p.name) {
                        q.policies.push(p.name.clone());
                    }
                }
                None => problems.push(format!(
                    "identity policy {}: principal {arn} is not configured",
                    p.name
                )),
            }
        }
        if out.insert(p.name.clone(), text).is_some() {
            problems.push(format!("identity policy {} is configured twice", p.name));
        }
    }
    for q in accounts.iter().flat_map(|a| a.principals.iter()) {
        for name in &q.policies {
            if !out.contains_key(name) {
                problems.push(format!(
                    "principal {}: identity policy {name} is not configured",
                    q.arn
                ));
            }
        }
    }
    out
}

/// The shortest principal secret accepted (AWS secret access keys are 40 characters; an
/// empty or short secret would make the credential guessable or public).
pub const MIN_PRINCIPAL_SECRET_CHARS: usize = 16;

/// A principal's secret, from exactly one of an owner-only file or an environment variable,
/// read into zeroizing buffers (no unwiped copy is left behind) and at least
/// [`MIN_PRINCIPAL_SECRET_CHARS`] characters long.
fn principal_secret(
    p: &RawPrincipal,
    paths: &Resolver,
    problems: &mut Vec<String>,
) -> Option<Zeroizing<String>> {
    let (secret, origin) = match (&p.secret_file, &p.secret_env) {
        (Some(f), None) => {
            let f = paths.resolve(f);
            match root_key::read_secret_file(&f) {
                Ok(s) => (s, format!("secret file {}", f.display())),
                Err(e) => {
                    problems.push(format!("principal {}: secret file: {e}", p.arn));
                    return None;
                }
            }
        }
        (None, Some(v)) => match root_key::read_secret_env(v) {
            Some(s) => (s, format!("environment variable {v}")),
            None => {
                problems.push(format!(
                    "principal {}: environment variable {v} is not set",
                    p.arn
                ));
                return None;
            }
        },
        _ => {
            problems.push(format!(
                "principal {}: set exactly one of secret_file or secret_env",
                p.arn
            ));
            return None;
        }
    };
    let chars = secret.chars().count();
    if chars == 0 {
        problems.push(format!(
            "principal {}: the {origin} is empty (anyone could sign as this principal)",
            p.arn
        ));
        return None;
    }
    if chars < MIN_PRINCIPAL_SECRET_CHARS {
        problems.push(format!(
            "principal {}: the {origin} holds {chars} characters; at least \
             {MIN_PRINCIPAL_SECRET_CHARS} are required",
            p.arn
        ));
        return None;
    }
    Some(secret)
}

/// `[xks]`: how the front end reaches proxies.
fn xks_settings(raw: &RawXks, paths: &Resolver, problems: &mut Vec<String>) -> XksSettings {
    let mut resolve_map = Vec::new();
    for (host, addr) in &raw.resolve {
        match addr.parse::<SocketAddr>() {
            Ok(a) => resolve_map.push((host.clone(), a)),
            Err(_) => problems.push(format!(
                "xks.resolve.{host}: '{addr}' is not an address like 127.0.0.1:8443"
            )),
        }
    }
    let client_identity = match (&raw.client_certificate_chain, &raw.client_private_key) {
        (Some(c), Some(k)) => Some((paths.resolve(c), paths.resolve(k))),
        (None, None) => None,
        _ => {
            problems.push(
                "xks: set both client_certificate_chain and client_private_key, or neither".into(),
            );
            None
        }
    };
    XksSettings {
        trusted_ca_bundle: raw.trusted_ca_bundle.as_deref().map(|p| paths.resolve(p)),
        resolve: resolve_map,
        client_identity,
        timeout: std::time::Duration::from_millis(raw.timeout_ms.unwrap_or(250)),
        health_check_interval: std::time::Duration::from_secs(
            raw.health_check_interval_seconds.unwrap_or(60).max(1),
        ),
        // Local proxies, compose networks and `[xks.resolve]` entries are the operator's
        // own: allowed unless a shared deployment turns them off.
        allow_private_endpoints: raw.allow_private_endpoints.unwrap_or(true),
    }
}
