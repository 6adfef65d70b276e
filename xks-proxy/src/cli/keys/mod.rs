//! `keys ...`: create, import, list, show, enable, disable and rotate keys, and the embedded
//! store's backup, restore and root-key rotation. One set of arguments for every backend;
//! [`keys`] sends each command to the backend of the named key store.

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use xks_api::XksKeyId;

use super::{CliError, config_path};
use crate::config::{BackendConfig, KeyStoreConfig, ProxyConfig};
use crate::keystore::seal::parse_key_bytes;
use crate::keystore::{KeyUsages, StoreError};

mod embedded;
mod external;
mod table;

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

/// A key usage for `--usage` (repeatable; `none` alone makes a key with no usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Usage {
    /// ENCRYPT.
    Encrypt,
    /// DECRYPT.
    Decrypt,
    /// Neither: every Encrypt and Decrypt is refused (InvalidKeyUsageException); not
    /// combinable with the others.
    None,
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
        /// Allowed usages (default: encrypt and decrypt; `none` for neither). Embedded and
        /// PKCS#11 stores only: Transit keys always allow both.
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
    /// List the keys the XKS API serves (valid key ids; not the health-check key), as a
    /// table with the same columns for every backend; `--json` prints a JSON array.
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

pub(super) fn key_store_config<'a>(
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

pub(super) fn keys(args: KeysArgs) -> Result<(), CliError> {
    let (path, _) = config_path(args.config.as_deref());
    let cfg = ProxyConfig::load(&path)?;
    let ks = key_store_config(&cfg, args.key_store.as_deref())?;
    match &ks.backend {
        BackendConfig::Pkcs11 {
            config,
            key_status_file,
            ..
        } => external::keys_pkcs11(args.action, args.json, config, key_status_file, &ks.name),
        BackendConfig::Transit {
            config,
            base_dir,
            key_status_file,
        } => external::keys_transit(
            args.action,
            args.json,
            config,
            base_dir,
            key_status_file,
            &ks.name,
        ),
        BackendConfig::Embedded { .. } => embedded::keys_embedded(args.action, args.json, &cfg, ks),
    }
}

pub(super) fn read_material(
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

/// The usages `--usage` asks for: both when not given, none for `--usage none`.
pub(super) fn usages(list: &[Usage]) -> Result<KeyUsages, CliError> {
    if list.contains(&Usage::None) {
        return if list.iter().all(|u| *u == Usage::None) {
            Ok(KeyUsages::NONE)
        } else {
            Err(CliError::Other(
                "--usage none cannot be combined with --usage encrypt or decrypt".into(),
            ))
        };
    }
    if list.is_empty() {
        return Ok(KeyUsages::BOTH);
    }
    Ok(KeyUsages {
        encrypt: list.contains(&Usage::Encrypt),
        decrypt: list.contains(&Usage::Decrypt),
    })
}

pub(super) fn parse_id(s: &str) -> Result<XksKeyId, StoreError> {
    XksKeyId::parse(s).map_err(|e| StoreError::Refused(format!("key id '{s}': {e}")))
}

/// Upper bound of `keys create --count`.
const MAX_BULK_KEYS: i64 = 1_000_000;

/// The ids `keys create` makes: those listed, then `<prefix>0 .. <prefix>{count-1}`. Every
/// one is checked before anything is created, and none may be given twice.
pub(super) fn create_ids(
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
pub(super) fn created_text(ids: &[XksKeyId]) -> String {
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
