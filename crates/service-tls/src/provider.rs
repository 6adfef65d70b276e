//! The cryptography both sides use: aws-lc-rs, TLS 1.3 and 1.2, AEAD ECDHE suites only.
//!
//! Every config in this crate is built with [`crypto_provider`] explicitly, so nothing depends on
//! a process-wide default provider having been installed (or on which one was).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// The cipher suites offered and accepted, most preferred first.
///
/// Only AEAD suites with ephemeral key exchange. The XKS spec asks for at least one of
/// TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 or
/// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384; all four are here.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The protocol versions offered and accepted: TLS 1.3, then TLS 1.2.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ALPN protocols offered (client) and accepted (server), most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The aws-lc-rs provider restricted to [`CIPHER_SUITES`].
///
/// Public so that tests and callers building their own rustls config (for example one limited
/// to TLS 1.2) use the same cryptography.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

/// [`ALPN_PROTOCOLS`] in the form rustls configs hold.
pub(crate) fn alpn_protocols() -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_ecdhe_suites() {
        for suite in CIPHER_SUITES {
            let name = format!("{:?}", suite.suite());
            let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
            let kx = name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_");
            assert!(aead && kx, "{name}");
        }
        assert_eq!(crypto_provider().cipher_suites.len(), CIPHER_SUITES.len());
    }
}
