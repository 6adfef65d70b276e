//! TLS for both services: rustls server and client configurations, PEM loading, and a local
//! private CA for development and tests.
//!
//! What lives here:
//! - [`server`]: [`load_server_config`] builds the HTTPS server's rustls config from PEM files,
//!   with optional mTLS that checks the client's chain *and* its name (CN or DNS SAN), as the
//!   XKS spec asks for AWS KMS's `cks.kms.<region>.amazonaws.com` certificate;
//! - [`client`]: [`client_config`] builds a rustls client config (the front end's proxy client,
//!   tests) trusting a private CA bundle and optionally presenting a client certificate;
//! - [`pki`]: [`CertificateAuthority`] generates a CA and issues server and client
//!   certificates (ECDSA P-256), including expired ones for tests;
//! - [`provider`]: the one [`crypto_provider`] every config uses — aws-lc-rs, TLS 1.3 and 1.2,
//!   AEAD ECDHE [`CIPHER_SUITES`] only, ALPN `h2` then `http/1.1`;
//! - [`error`]: the crate's error type, [`TlsError`].
//!
//! Architecture invariants:
//! - no process-wide crypto provider is installed or relied upon: configs carry theirs;
//! - private key material never appears in `Debug` output or in error messages, and is held in
//!   `Zeroizing` buffers; private key files are written with mode 0600.
//!
//! Deliberately absent: certificate hot reload, revocation (CRL/OCSP), trusting the operating
//! system's root store, and any socket or HTTP handling (callers wrap the configs in
//! `tokio_rustls` or their HTTP server).

pub mod client;
pub mod error;
pub mod pki;
pub mod provider;
pub mod server;

mod client_auth;
mod pem;

pub use client::{ClientIdentity, RootCertificates, client_config, root_cert_store};
pub use error::TlsError;
pub use pki::{CertValidity, CertificateAuthority, IssuedCertificate, ServerCertRequest};
pub use provider::{ALPN_PROTOCOLS, CIPHER_SUITES, PROTOCOL_VERSIONS, crypto_provider};
pub use server::{
    ClientAuthSettings, ClientCertRejected, ClientNameRejected, ServerTlsFiles, cert_not_after,
    load_server_config,
};
