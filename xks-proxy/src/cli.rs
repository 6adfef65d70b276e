//! The command line: `serve`, `init`, `keys ...`, `tls self-signed`.
//!
//! Thin over the library: each command parses its arguments, calls library code and prints.
//! Nothing here prints key material or secrets.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xks_api::XksKeyId;
use xks_api::types::KeyStatus;

use crate::config::{BackendConfig, KeyStoreConfig, LogFormat, ProxyConfig};
use crate::keystore::format::random_key;
use crate::keystore::seal::parse_key_bytes;
use crate::keystore::{KeyStoreFile, KeyUsages, RootKey, StoreError, StoredKey, StoredVersion};
use crate::local;

/// An AWS KMS External Key Store (XKS) proxy.
#[derive(Debug, Parser)]
#[command(name = "xks-proxy", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy. Without a config, creates a local setup on embedded defaults first.
    Serve(ServeArgs),
    /// Create a local setup on embedded defaults (CA, certificate, root key, key store,
    /// credential) without starting the proxy.
    Init(InitArgs),
    /// Manage keys of an embedded key store.
    Keys(KeysArgs),
    /// TLS helpers for local use.
    Tls(TlsArgs),
    /// Validate everything a start would: the config, TLS files, root keys, key stores,
    /// and a health round trip with each store's test key.
    CheckConfig(CheckConfigArgs),
    /// SigV4 credentials for a key store.
    Credentials(CredentialsArgs),
}

/// `credentials` arguments.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The credentials command.
    #[command(subcommand)]
    pub action: CredentialsAction,
}

/// Credentials commands.
#[derive(Debug, Subcommand)]
pub enum CredentialsAction {
    /// Generate a spec-conformant access key id and secret: writes `<id>.secret` (0600) and
    /// the JSON file the KMS console accepts (0600), and prints the config lines to add.
    Generate {
        /// Directory to write the files to.
        #[arg(long)]
        out_dir: PathBuf,
        /// The key store's URI path prefix (before /kms/xks/v1) for the console file.
        #[arg(long, conflicts_with = "key_store")]
        path_prefix: Option<String>,
        /// Take the path prefix from this key store of the config.
        #[arg(long)]
        key_store: Option<String>,
        /// Config file (default as for `serve`), read only with --key-store.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `check-config` arguments.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file (default as for `serve`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (default: $XKS_PROXY_CONFIG, else $XKS_PROXY_HOME/config.toml, else
    /// ~/.xks-proxy/config.toml, created on first start).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address for a setup created on first start.
    #[arg(long, env = "XKS_PROXY_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the setup in (default: $XKS_PROXY_HOME, else ~/.xks-proxy).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Listen address written to the config.
    #[arg(long, env = "XKS_PROXY_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

/// `keys` arguments.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Config file (default as for `serve`).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Key store name (may be omitted when the config has one key store).
    #[arg(long, global = true)]
    pub key_store: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The key command.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// A key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Usage {
    /// ENCRYPT.
    Encrypt,
    /// DECRYPT.
    Decrypt,
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create an empty key store (with its health-check key).
    Init,
    /// Create keys with fresh random AES-256 material: the ids given, and with `--count N
    /// --prefix P` also P0 .. P{N-1}. Several keys are created together: in the embedded
    /// store with one crash-safe write (all or none); in an HSM or Transit after checking
    /// first that none of the ids exists.
    Create {
        /// Key ids (1-128 characters from A-Z a-z 0-9 - . _).
        #[arg(required_unless_present = "count")]
        key_ids: Vec<String>,
        /// Number of keys named `<prefix><n>` to create (n from 0).
        #[arg(long, requires = "prefix", value_parser = clap::value_parser!(u32).range(1..=MAX_BULK_KEYS))]
        count: Option<u32>,
        /// Prefix of the `--count` key ids.
        #[arg(long, requires = "count")]
        prefix: Option<String>,
        /// Allowed usages (default: encrypt and decrypt).
        #[arg(long = "usage", value_enum)]
        usages: Vec<Usage>,
        /// Create them disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Import existing AES-256 key bytes (32 raw bytes or base64) as a new key.
    Import {
        /// The key id.
        key_id: String,
        /// File holding the key bytes.
        #[arg(long, conflicts_with = "material_env")]
        material_file: Option<PathBuf>,
        /// Environment variable holding the base64 key bytes.
        #[arg(long)]
        material_env: Option<String>,
        /// Allowed usages (default: encrypt and decrypt).
        #[arg(long = "usage", value_enum)]
        usages: Vec<Usage>,
    },
    /// List keys.
    List,
    /// Show one key.
    Show {
        /// The key id.
        key_id: String,
    },
    /// Enable a key.
    Enable {
        /// The key id.
        key_id: String,
    },
    /// Disable a key (requests with it get InvalidStateException).
    Disable {
        /// The key id.
        key_id: String,
    },
    /// Add a new version; new encryptions use it, older versions still decrypt.
    Rotate {
        /// The key id.
        key_id: String,
    },
    /// Write a backup of the sealed store (still sealed; restorable with `restore`).
    Backup {
        /// The backup file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup after checking its integrity and that it unseals under the
    /// configured root key. A running proxy picks it up at once.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Re-seal every key store that uses this store's root key file under a new root key,
    /// then replace the root key file. A running proxy keeps serving throughout and
    /// switches to the new root key when it sees the file change.
    RotateRoot,
}

/// `tls` arguments.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The TLS command.
    #[command(subcommand)]
    pub action: TlsAction,
}

/// TLS commands.
#[derive(Debug, Subcommand)]
pub enum TlsAction {
    /// Create a private CA and a server certificate signed by it (for local use).
    SelfSigned {
        /// Output directory (ca.pem, ca.key, server.pem, server.key).
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS names for the server certificate.
        #[arg(long = "dns-name", default_value = "localhost")]
        dns_names: Vec<String>,
        /// IP addresses for the server certificate.
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
    },
}

/// A command failure, printed as `xks-proxy: <message>` with exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Config problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Key store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Root key or key material problem.
    #[error(transparent)]
    RootKey(#[from] root_key::RootKeyError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The home directory of the local setup.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("XKS_PROXY_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".xks-proxy")
}

fn config_path(explicit: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_owned(), true);
    }
    if let Some(p) = std::env::var_os("XKS_PROXY_CONFIG") {
        return (PathBuf::from(p), true);
    }
    (default_home().join("config.toml"), false)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Init(args) => {
            let home = args.home.unwrap_or_else(default_home);
            if home.join("config.toml").exists() {
                return Err(CliError::Other(format!(
                    "{} already has a config.toml",
                    home.display()
                )));
            }
            let setup =
                local::create(&home, args.listen).map_err(|e| CliError::Other(e.to_string()))?;
            print!("{}", setup.instructions());
            Ok(())
        }
        Command::Keys(args) => keys(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Credentials(CredentialsArgs {
            action:
                CredentialsAction::Generate {
                    out_dir,
                    path_prefix,
                    key_store,
                    config,
                },
        }) => {
            let prefix = match (path_prefix, key_store) {
                (Some(p), _) => p,
                (None, Some(name)) => {
                    let (path, _) = config_path(config.as_deref());
                    let cfg = ProxyConfig::load(&path)?;
                    key_store_config(&cfg, Some(&name))?.path_prefix.clone()
                }
                (None, None) => String::new(),
            };
            generate_credentials(&out_dir, &prefix)
        }
        Command::Tls(TlsArgs {
            action:
                TlsAction::SelfSigned {
                    out_dir,
                    dns_names,
                    ips,
                },
        }) => self_signed(&out_dir, &dns_names, &ips),
    }
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    let (path, explicit) = config_path(args.config.as_deref());
    if !path.exists() && !explicit {
        let home = default_home();
        let setup =
            local::create(&home, args.listen).map_err(|e| CliError::Other(e.to_string()))?;
        print!("{}", setup.instructions());
    }
    let cfg = ProxyConfig::load(&path)?;
    init_logging(&cfg);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.server.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))?;
    runtime
        .block_on(crate::run::run(cfg))
        .map_err(|e| CliError::Other(e.to_string()))
}

fn check_config(args: CheckConfigArgs) -> Result<(), CliError> {
    let (path, _) = config_path(args.config.as_deref());
    let cfg = ProxyConfig::load(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))?;
    let report = runtime
        .block_on(crate::run::check(&cfg))
        .map_err(|e| CliError::Other(e.to_string()))?;
    print!("{report}");
    Ok(())
}

fn init_logging(cfg: &ProxyConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests driving the library) is harmless: keep the first subscriber.
    let _ = match cfg.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn key_store_config<'a>(
    cfg: &'a ProxyConfig,
    name: Option<&str>,
) -> Result<&'a KeyStoreConfig, CliError> {
    match name {
        Some(n) => cfg.key_stores.iter().find(|k| k.name == n).ok_or_else(|| {
            CliError::Other(format!(
                "no key store named '{n}' in {}",
                cfg.path.display()
            ))
        }),
        None if cfg.key_stores.len() == 1 => Ok(&cfg.key_stores[0]),
        None => Err(CliError::Other(format!(
            "{} has several key stores; name one with --key-store",
            cfg.path.display()
        ))),
    }
}

fn open_store(ks: &KeyStoreConfig) -> Result<KeyStoreFile, CliError> {
    match &ks.backend {
        BackendConfig::Embedded { store, root_key } => {
            Ok(KeyStoreFile::new(store, RootKey::load(root_key)?))
        }
        _ => Err(CliError::Other(format!(
            "key store '{}' does not use the embedded backend",
            ks.name
        ))),
    }
}

/// `keys` for a PKCS#11 key store: keys live in the HSM; status in the proxy's status file.
fn keys_pkcs11(
    action: KeysAction,
    json: bool,
    config: &crate::backend::pkcs11::Pkcs11Config,
    status_file: &Path,
    name: &str,
) -> Result<(), CliError> {
    let hsm = || {
        crate::backend::pkcs11::Pkcs11Backend::open(name, config.clone())
            .map_err(|e| CliError::Other(format!("PKCS#11: {e}")))
    };
    let pk = |e: crate::backend::pkcs11::Pkcs11Error| CliError::Other(format!("PKCS#11: {e}"));
    match action {
        KeysAction::Init => println!("nothing to initialise: keys live in the HSM token"),
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            disabled,
            ..
        } => {
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let labels: Vec<&str> = ids.iter().map(XksKeyId::as_str).collect();
            hsm()?.create_keys(&labels).map_err(pk)?;
            if disabled {
                crate::backend::overlay::set_disabled_many(status_file, &labels, true)
                    .map_err(CliError::Other)?;
            }
            println!(
                "created {} in the HSM (AES-256, sensitive, not extractable)",
                created_text(&ids)
            );
        }
        KeysAction::Import {
            key_id,
            material_file,
            material_env,
            ..
        } => {
            let id = parse_id(&key_id)?;
            let material = read_material(material_file, material_env)?;
            hsm()?.import_key(id.as_str(), &material[..]).map_err(pk)?;
            println!("imported key {id} into the HSM");
        }
        KeysAction::List | KeysAction::Show { .. } => {
            let disabled = crate::backend::overlay::KeyStatusFile::read(status_file)
                .map_err(CliError::Other)?
                .disabled;
            let keys = hsm()?.list_keys().map_err(pk)?;
            let want = match &action {
                KeysAction::Show { key_id } => Some(key_id.clone()),
                _ => None,
            };
            let rows: Vec<serde_json::Value> = keys
                .iter()
                .filter(|k| want.as_ref().is_none_or(|w| *w == k.label))
                .map(|k| {
                    let mut usages = Vec::new();
                    if k.encrypt {
                        usages.push("ENCRYPT");
                    }
                    if k.decrypt {
                        usages.push("DECRYPT");
                    }
                    serde_json::json!({
                        "keyId": k.label,
                        "keySpec": k.key_spec,
                        "status": if disabled.contains(&k.label) { "DISABLED" } else { "ENABLED" },
                        "usages": usages,
                        "currentVersion": 1,
                    })
                })
                .collect();
            if want.is_some() && rows.is_empty() {
                return Err(CliError::Other("no such key in the HSM".into()));
            }
            print_rows(&rows, json, want.is_some());
        }
        KeysAction::Enable { ref key_id } | KeysAction::Disable { ref key_id } => {
            let disable = matches!(action, KeysAction::Disable { .. });
            let id = parse_id(key_id)?;
            crate::backend::overlay::set_disabled(status_file, id.as_str(), disable)
                .map_err(CliError::Other)?;
            println!("{} key {id}", if disable { "disabled" } else { "enabled" });
        }
        KeysAction::Rotate { .. } => {
            return Err(CliError::Other(
                "PKCS#11 keys have a single version: create a new key and move to it".into(),
            ));
        }
        KeysAction::Backup { .. } | KeysAction::Restore { .. } | KeysAction::RotateRoot => {
            return Err(CliError::Other("backups and root keys apply to the embedded key store; back up the HSM with its vendor's tools".into()));
        }
    }
    Ok(())
}

/// `keys` for a Transit key store: keys live in Vault/OpenBao; status in the status file.
fn keys_transit(
    action: KeysAction,
    json: bool,
    config: &crate::backend::transit::TransitConfig,
    base_dir: &Path,
    status_file: &Path,
    name: &str,
) -> Result<(), CliError> {
    let tr = |e: crate::backend::transit::TransitError| CliError::Other(format!("Transit: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let backend =
        || crate::backend::transit::TransitBackend::open(name, config, base_dir).map_err(tr);
    match action {
        KeysAction::Init => println!("nothing to initialise: keys live in Transit"),
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            disabled,
            ..
        } => {
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let names: Vec<&str> = ids.iter().map(XksKeyId::as_str).collect();
            let b = backend()?;
            match names.as_slice() {
                [one] => runtime.block_on(b.create_key(one)).map_err(tr)?,
                many => runtime.block_on(b.create_keys(many)).map_err(tr)?,
            }
            if disabled {
                crate::backend::overlay::set_disabled_many(status_file, &names, true)
                    .map_err(CliError::Other)?;
            }
            println!("created Transit {} (aes256-gcm96)", created_text(&ids));
        }
        KeysAction::Rotate { key_id } => {
            let id = parse_id(&key_id)?;
            let b = backend()?;
            let v = runtime.block_on(b.rotate_key(id.as_str())).map_err(tr)?;
            println!("rotated Transit key {id}: version {v} now encrypts");
        }
        KeysAction::List | KeysAction::Show { .. } => {
            let disabled = crate::backend::overlay::KeyStatusFile::read(status_file)
                .map_err(CliError::Other)?
                .disabled;
            let b = backend()?;
            let names = runtime.block_on(b.list_keys()).map_err(tr)?;
            let want = match &action {
                KeysAction::Show { key_id } => Some(key_id.clone()),
                _ => None,
            };
            let rows: Vec<serde_json::Value> = names
                .iter()
                .filter(|n| want.as_ref().is_none_or(|w| w == *n))
                .map(|n| serde_json::json!({"keyId": n, "status": if disabled.contains(n) { "DISABLED" } else { "ENABLED" }}))
                .collect();
            if want.is_some() && rows.is_empty() {
                return Err(CliError::Other("no such Transit key".into()));
            }
            print_rows(&rows, json, want.is_some());
        }
        KeysAction::Enable { ref key_id } | KeysAction::Disable { ref key_id } => {
            let disable = matches!(action, KeysAction::Disable { .. });
            let id = parse_id(key_id)?;
            crate::backend::overlay::set_disabled(status_file, id.as_str(), disable)
                .map_err(CliError::Other)?;
            println!("{} key {id}", if disable { "disabled" } else { "enabled" });
        }
        KeysAction::Import { .. }
        | KeysAction::Backup { .. }
        | KeysAction::Restore { .. }
        | KeysAction::RotateRoot => {
            return Err(CliError::Other(
                "not available for Transit key stores: use Vault/OpenBao's own tools".into(),
            ));
        }
    }
    Ok(())
}

fn print_rows(rows: &[serde_json::Value], json: bool, single: bool) {
    match (json, single) {
        (true, true) => println!("{}", rows.first().cloned().unwrap_or_default()),
        (true, false) => println!("{}", serde_json::Value::Array(rows.to_vec())),
        (false, _) => {
            for r in rows {
                println!("{r}");
            }
        }
    }
}

fn read_material(
    material_file: Option<PathBuf>,
    material_env: Option<String>,
) -> Result<zeroize::Zeroizing<[u8; 32]>, CliError> {
    match (material_file, material_env) {
        (Some(f), None) => {
            let raw = zeroize::Zeroizing::new(
                std::fs::read(&f).map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?,
            );
            Ok(parse_key_bytes(
                &raw,
                &format!("key material {}", f.display()),
            )?)
        }
        (None, Some(var)) => {
            let v =
                zeroize::Zeroizing::new(std::env::var(&var).map_err(|_| {
                    CliError::Other(format!("environment variable {var} is not set"))
                })?);
            Ok(parse_key_bytes(
                v.as_bytes(),
                &format!("key material ${var}"),
            )?)
        }
        _ => Err(CliError::Other(
            "give the key bytes with --material-file or --material-env".into(),
        )),
    }
}

fn usages(list: &[Usage]) -> KeyUsages {
    if list.is_empty() {
        return KeyUsages::BOTH;
    }
    KeyUsages {
        encrypt: list.contains(&Usage::Encrypt),
        decrypt: list.contains(&Usage::Decrypt),
    }
}

fn parse_id(s: &str) -> Result<XksKeyId, StoreError> {
    XksKeyId::parse(s).map_err(|e| StoreError::Refused(format!("key id '{s}': {e}")))
}

/// Upper bound of `keys create --count`.
const MAX_BULK_KEYS: i64 = 1_000_000;

/// The ids `keys create` makes: those listed, then `<prefix>0 .. <prefix>{count-1}`. Every
/// one is checked before anything is created, and none may be given twice.
fn create_ids(
    key_ids: &[String],
    count: Option<u32>,
    prefix: Option<&str>,
) -> Result<Vec<XksKeyId>, CliError> {
    let generated: Vec<String> = match (count, prefix) {
        (Some(n), Some(p)) => (0..n).map(|i| format!("{p}{i}")).collect(),
        _ => Vec::new(),
    };
    let mut seen = std::collections::HashSet::with_capacity(key_ids.len() + generated.len());
    let mut ids = Vec::with_capacity(key_ids.len() + generated.len());
    for raw in key_ids.iter().chain(&generated) {
        let id = parse_id(raw)?;
        if !seen.insert(id.clone()) {
            return Err(StoreError::Refused(format!("key id {id} is given twice")).into());
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(CliError::Other(
            "give the key ids, or --count with --prefix".into(),
        ));
    }
    Ok(ids)
}

/// `key k1`, `3 keys: a, b, c`, `10000 keys: k0, k1, ..., k9999`.
fn created_text(ids: &[XksKeyId]) -> String {
    match ids {
        [one] => format!("key {one}"),
        few if few.len() <= 5 => {
            let names: Vec<&str> = few.iter().map(XksKeyId::as_str).collect();
            format!("{} keys: {}", few.len(), names.join(", "))
        }
        [first, second, .., last] => format!("{} keys: {first}, {second}, ..., {last}", ids.len()),
        _ => "no keys".to_owned(),
    }
}

fn keys(args: KeysArgs) -> Result<(), CliError> {
    let (path, _) = config_path(args.config.as_deref());
    let cfg = ProxyConfig::load(&path)?;
    let ks = key_store_config(&cfg, args.key_store.as_deref())?;
    match &ks.backend {
        BackendConfig::Pkcs11 {
            config,
            key_status_file,
            ..
        } => return keys_pkcs11(args.action, args.json, config, key_status_file, &ks.name),
        BackendConfig::Transit {
            config,
            base_dir,
            key_status_file,
        } => {
            return keys_transit(
                args.action,
                args.json,
                config,
                base_dir,
                key_status_file,
                &ks.name,
            );
        }
        BackendConfig::Embedded { .. } => {}
    }
    let store = open_store(ks)?;
    let now = local::now_secs();
    match args.action {
        KeysAction::Init => {
            store.create()?;
            println!("created key store {}", store.path().display());
        }
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            usages: u,
            disabled,
        } => {
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let text = created_text(&ids);
            let new = ids
                .into_iter()
                .map(|id| Ok((id, random_key()?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            insert_new(&store, new, usages(&u), disabled, now)?;
            println!("created {text}");
        }
        KeysAction::Import {
            key_id,
            material_file,
            material_env,
            usages: u,
        } => {
            let id = parse_id(&key_id)?;
            let material = match (material_file, material_env) {
                (Some(f), None) => {
                    let raw = zeroize::Zeroizing::new(
                        std::fs::read(&f)
                            .map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?,
                    );
                    parse_key_bytes(&raw, &format!("key material {}", f.display()))?
                }
                (None, Some(var)) => {
                    let v = zeroize::Zeroizing::new(std::env::var(&var).map_err(|_| {
                        CliError::Other(format!("environment variable {var} is not set"))
                    })?);
                    parse_key_bytes(v.as_bytes(), &format!("key material ${var}"))?
                }
                _ => {
                    return Err(CliError::Other(
                        "give the key bytes with --material-file or --material-env".into(),
                    ));
                }
            };
            insert_new(&store, vec![(id.clone(), material)], usages(&u), false, now)?;
            println!("imported key {id}");
        }
        KeysAction::List => {
            let c = store.read()?;
            if args.json {
                let list: Vec<_> = c.keys.iter().map(|(id, k)| key_json(id, k)).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<40} {:<9} {:<16} {:>8}",
                    "KEY ID", "STATUS", "USAGES", "VERSION"
                );
                for (id, k) in &c.keys {
                    println!(
                        "{:<40} {:<9} {:<16} {:>8}",
                        id.as_str(),
                        status_name(k.status),
                        k.usages.names().join(","),
                        k.current_version()
                    );
                }
            }
        }
        KeysAction::Show { key_id } => {
            let id = parse_id(&key_id)?;
            let c = store.read()?;
            let k = c
                .keys
                .get(&id)
                .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
            let j = key_json(&id, k);
            if args.json {
                println!("{j}");
            } else {
                println!("{j:#}");
            }
        }
        KeysAction::Enable { key_id } => {
            set_status(&store, &key_id, KeyStatus::Enabled)?;
            println!("enabled key {key_id}");
        }
        KeysAction::Disable { key_id } => {
            set_status(&store, &key_id, KeyStatus::Disabled)?;
            println!("disabled key {key_id}");
        }
        KeysAction::Rotate { key_id } => {
            let id = parse_id(&key_id)?;
            let v = store.update(|c| {
                let k = c
                    .keys
                    .get_mut(&id)
                    .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
                let next = k.current_version() + 1;
                k.versions.push(StoredVersion {
                    version: next,
                    created: now,
                    material: random_key()?,
                });
                Ok(next)
            })?;
            println!("rotated key {id}: version {v} now encrypts");
        }
        KeysAction::Backup { out } => {
            let b = store.backup()?;
            crate::keystore::file::write_new_private_file(&out, &b.bytes)?;
            println!(
                "wrote backup {} of key store '{}': generation {}, {} keys (sealed under the current root key)",
                out.display(),
                ks.name,
                b.generation,
                b.keys
            );
        }
        KeysAction::Restore { from } => {
            let bytes = std::fs::read(&from)
                .map_err(|e| CliError::Other(format!("{}: {e}", from.display())))?;
            let r = store.restore(&bytes)?;
            println!(
                "restored key store '{}' from {}: generation {}, {} keys",
                ks.name,
                from.display(),
                r.generation,
                r.keys
            );
        }
        KeysAction::RotateRoot => rotate_root(&cfg, ks)?,
    }
    Ok(())
}

/// Re-seals every store sharing `ks`'s root key file under a new root key, then replaces
/// the file. Resumable: a rotation interrupted after writing `<root>.new` continues with it.
fn rotate_root(cfg: &ProxyConfig, ks: &KeyStoreConfig) -> Result<(), CliError> {
    use crate::keystore::RootKeySource;
    let BackendConfig::Embedded { root_key, .. } = &ks.backend else {
        return Err(CliError::Other(
            "rotate-root applies to key stores with the embedded backend".into(),
        ));
    };
    let RootKeySource::File(root_path) = root_key else {
        return Err(CliError::Other(
            "rotate-root needs backend.root_key_file; with root_key_env, re-seal by restoring a backup under the new key".into(),
        ));
    };
    let mut pending = root_path.clone().into_os_string();
    pending.push(".new");
    let pending = PathBuf::from(pending);
    let new_root = if pending.exists() {
        println!(
            "resuming an interrupted rotation with {}",
            pending.display()
        );
        RootKey::load(&RootKeySource::File(pending.clone()))?
    } else {
        let k = RootKey::generate()?;
        k.write_new_file(&pending)?;
        k
    };
    let new_id = new_root.id();
    let mut resealed = Vec::new();
    for other in &cfg.key_stores {
        let BackendConfig::Embedded { store, root_key } = &other.backend else {
            continue;
        };
        if root_key != &RootKeySource::File(root_path.clone()) {
            continue;
        }
        let mut file = KeyStoreFile::new(store, RootKey::load(root_key)?);
        match file.reseal(RootKey::load(&RootKeySource::File(pending.clone()))?) {
            Ok(()) => resealed.push(other.name.clone()),
            // Already re-sealed by an interrupted run.
            Err(StoreError::WrongRootKey { found, .. })
                if found
                    == new_id
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>() =>
            {
                resealed.push(other.name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::rename(&pending, root_path)
        .map_err(|e| CliError::Other(format!("{}: {e}", root_path.display())))?;
    if let Some(dir) = root_path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    println!(
        "re-sealed key stores {} under a new root key; {} now holds it",
        resealed.join(", "),
        root_path.display()
    );
    Ok(())
}

fn generate_credentials(out_dir: &Path, path_prefix: &str) -> Result<(), CliError> {
    xks_api::key_id::validate_path_prefix(path_prefix)
        .map_err(|e| CliError::Other(format!("--path-prefix: {e}")))?;
    let akid = local::generate_access_key_id()?;
    let secret = local::generate_secret()?;
    let secret_file = out_dir.join(format!("{akid}.secret"));
    crate::keystore::file::write_new_private_file(
        &secret_file,
        format!("{}\n", secret.as_str()).as_bytes(),
    )?;
    let console = out_dir.join(format!("{akid}.kms-console.json"));
    let json = zeroize::Zeroizing::new(local::console_json(path_prefix, &akid, &secret));
    crate::keystore::file::write_new_private_file(&console, json.as_bytes())?;
    println!(
        "access key id {akid}
secret in {secret} (0600); KMS console file {console} (0600, holds the secret)
add to the key store in the proxy config:

[[key_stores.credentials]]
access_key_id = \"{akid}\"
secret_file = \"{secret}\"",
        secret = secret_file.display(),
        console = console.display()
    );
    Ok(())
}

fn status_name(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Enabled => "ENABLED",
        KeyStatus::Disabled => "DISABLED",
    }
}

fn key_json(id: &XksKeyId, k: &StoredKey) -> serde_json::Value {
    serde_json::json!({
        "keyId": id.as_str(),
        "keySpec": "AES_256",
        "status": status_name(k.status),
        "usages": k.usages.names(),
        "currentVersion": k.current_version(),
        "versions": k.versions.iter().map(|v| serde_json::json!({"version": v.version, "created": v.created})).collect::<Vec<_>>(),
        "created": k.created,
    })
}

/// Adds new keys to the embedded store in one crash-safe write: all of them, or none if
/// any id exists already.
fn insert_new(
    store: &KeyStoreFile,
    keys: Vec<(XksKeyId, zeroize::Zeroizing<[u8; 32]>)>,
    usages: KeyUsages,
    disabled: bool,
    now: u64,
) -> Result<(), StoreError> {
    store.update(|c| {
        if let Some((id, _)) = keys.iter().find(|(id, _)| c.keys.contains_key(id)) {
            return Err(StoreError::Refused(format!("key {id} already exists")));
        }
        for (id, material) in keys {
            c.keys.insert(
                id,
                StoredKey {
                    status: if disabled {
                        KeyStatus::Disabled
                    } else {
                        KeyStatus::Enabled
                    },
                    usages,
                    created: now,
                    versions: vec![StoredVersion {
                        version: 1,
                        created: now,
                        material,
                    }],
                },
            );
        }
        Ok(())
    })
}

fn set_status(store: &KeyStoreFile, key_id: &str, status: KeyStatus) -> Result<(), StoreError> {
    let id = parse_id(key_id)?;
    store.update(|c| {
        let k = c
            .keys
            .get_mut(&id)
            .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
        k.status = status;
        Ok(())
    })
}

fn self_signed(
    out_dir: &Path,
    dns_names: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(), CliError> {
    use crate::keystore::file::write_new_private_file;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| CliError::Other(format!("{}: {e}", out_dir.display())))?;
    let ca = service_tls::pki::CertificateAuthority::generate("xks-proxy private CA")
        .map_err(|e| CliError::Other(e.to_string()))?;
    let names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    let leaf = ca
        .issue_server(&names, ips)
        .map_err(|e| CliError::Other(e.to_string()))?;
    let w = |name: &str, text: &str| {
        let p = out_dir.join(name);
        std::fs::write(&p, text).map_err(|e| CliError::Other(format!("{}: {e}", p.display())))
    };
    w("ca.pem", ca.cert_pem())?;
    w("server.pem", &leaf.chain_pem(&ca))?;
    write_new_private_file(&out_dir.join("ca.key"), ca.key_pem().as_bytes())?;
    write_new_private_file(&out_dir.join("server.key"), leaf.key_pem.as_bytes())?;
    println!(
        "wrote {dir}/ca.pem (trust this), {dir}/server.pem and {dir}/server.key (for [server.tls]), {dir}/ca.key",
        dir = out_dir.display()
    );
    let _ = Arc::new(());
    Ok(())
}

/// The whole program: parse the command line, run, print the error and set the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xks-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
