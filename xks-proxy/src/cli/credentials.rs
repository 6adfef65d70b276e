//! `credentials generate`: a spec-conformant SigV4 credential for a key store, written to
//! owner-only files with the JSON file the KMS console accepts.

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use super::CliError;
use crate::local;

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

pub(super) fn generate_credentials(out_dir: &Path, path_prefix: &str) -> Result<(), CliError> {
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
