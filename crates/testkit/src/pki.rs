//! A test PKI on disk: a CA and a server certificate for `localhost`, `127.0.0.1` and
//! `xks.test`.

use service_tls::pki::{CertificateAuthority, IssuedCertificate};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Files of a test PKI.
#[derive(Debug)]
pub struct TestPki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// CA certificate PEM file.
    pub ca_pem: PathBuf,
    /// Server chain PEM file.
    pub server_chain: PathBuf,
    /// Server key PEM file.
    pub server_key: PathBuf,
}

impl TestPki {
    /// Generates the PKI into `dir`.
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ca = CertificateAuthority::generate("xks test CA").expect("CA");
        let server = ca
            .issue_server(
                &["localhost", "xks.test"],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )
            .expect("server cert");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.cert_pem()).expect("write ca");
        let (server_chain, server_key) = write_leaf(dir, "server", &server, &ca);
        Self {
            ca,
            ca_pem,
            server_chain,
            server_key,
        }
    }
}

/// Writes a leaf's chain and key as `<name>.pem` and `<name>.key` (0600).
pub fn write_leaf(
    dir: &Path,
    name: &str,
    leaf: &IssuedCertificate,
    ca: &CertificateAuthority,
) -> (PathBuf, PathBuf) {
    let chain = dir.join(format!("{name}.pem"));
    std::fs::write(&chain, leaf.chain_pem(ca)).expect("write chain");
    let key = dir.join(format!("{name}.key"));
    service_tls::pki::write_private_pem(&key, &leaf.key_pem).expect("write key");
    (chain, key)
}
