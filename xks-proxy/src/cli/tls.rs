//! `tls self-signed`: a private CA and a server certificate for local use.

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use super::CliError;

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

pub(super) fn self_signed(
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
    Ok(())
}
