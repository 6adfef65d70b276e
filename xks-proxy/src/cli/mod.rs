//! The command line: `serve`, `init`, `keys ...`, `tls self-signed`, `credentials generate`,
//! `check-config`.
//!
//! Thin over the library: each command parses its arguments, calls library code and prints.
//! Nothing here prints key material or secrets.
//!
//! - this module: the commands, `serve`, `init`, `check-config`, errors and logging;
//! - [`keys`]: `keys ...` for every backend (embedded store, PKCS#11, Transit);
//! - `credentials`: SigV4 credentials and the KMS console file;
//! - `tls`: a private CA and server certificate for local use.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::ProxyConfig;
use crate::keystore::StoreError;
use crate::local;

mod credentials;
pub mod keys;
mod tls;

pub use credentials::{CredentialsAction, CredentialsArgs};
pub use keys::{KeysAction, KeysArgs, Usage};
pub use tls::{TlsAction, TlsArgs};

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
        Command::Keys(args) => keys::keys(args),
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
                    keys::key_store_config(&cfg, Some(&name))?
                        .path_prefix
                        .clone()
                }
                (None, None) => String::new(),
            };
            credentials::generate_credentials(&out_dir, &prefix)
        }
        Command::Tls(TlsArgs {
            action:
                TlsAction::SelfSigned {
                    out_dir,
                    dns_names,
                    ips,
                },
        }) => tls::self_signed(&out_dir, &dns_names, &ips),
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
    service_config::init_logging(&cfg.logging.level, cfg.logging.format);
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
