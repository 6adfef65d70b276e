//! The rustls client configuration: the front end's client to the proxy, and tests.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use crate::pki::{CertificateAuthority, IssuedCertificate};
use crate::provider::{PROTOCOL_VERSIONS, alpn_protocols, crypto_provider};
use crate::{TlsError, pem};

/// Which server certificates a client trusts.
///
/// Only a private bundle for now; trusting the operating system's store would need another
/// dependency (`rustls-native-certs` or `rustls-platform-verifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootCertificates {
    /// The CA certificates in this PEM text, and nothing else.
    Pem(String),
}

/// A client certificate chain and its private key, for mTLS.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// PEM: the client certificate first, then any intermediates.
    pub cert_chain_pem: String,
    /// The private key, PEM (PKCS#8, SEC1 or PKCS#1). Wiped on drop; `Debug` shows no content.
    pub key_pem: Zeroizing<String>,
}

impl ClientIdentity {
    /// The identity of a certificate issued by `ca`, presenting the chain leaf + CA.
    pub fn from_issued(cert: &IssuedCertificate, ca: &CertificateAuthority) -> Self {
        Self {
            cert_chain_pem: cert.chain_pem(ca),
            key_pem: cert.key_pem.clone(),
        }
    }
}

/// Builds a client configuration: aws-lc-rs, TLS 1.3 and 1.2, AEAD ECDHE suites only
/// ([`CIPHER_SUITES`](crate::CIPHER_SUITES)), ALPN `h2` then `http/1.1`, server certificates
/// verified against `roots`, and `identity` presented when the server asks for a client
/// certificate.
pub fn client_config(
    roots: &RootCertificates,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_cert_store(roots)?;
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Invalid {
            what: "TLS protocol versions",
            problem: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain =
                pem::certificates(identity.cert_chain_pem.as_bytes()).map_err(|problem| {
                    TlsError::Invalid {
                        what: "client certificate chain PEM",
                        problem,
                    }
                })?;
            let key = pem::private_key(identity.key_pem.as_bytes()).map_err(|problem| {
                TlsError::Invalid {
                    what: "client private key PEM",
                    problem,
                }
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Invalid {
                    what: "client private key PEM",
                    problem: format!("cannot be used with the client certificate chain: {e}"),
                })?
        }
    };
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}

/// The trust anchors of `roots`, for callers that build their own rustls configuration.
pub fn root_cert_store(roots: &RootCertificates) -> Result<RootCertStore, TlsError> {
    const WHAT: &str = "root CA bundle PEM";
    match roots {
        RootCertificates::Pem(bundle) => {
            let certs =
                pem::certificates(bundle.as_bytes()).map_err(|problem| TlsError::Invalid {
                    what: WHAT,
                    problem,
                })?;
            let mut store = RootCertStore::empty();
            for (index, cert) in certs.into_iter().enumerate() {
                store.add(cert).map_err(|e| TlsError::Invalid {
                    what: WHAT,
                    problem: format!(
                        "certificate #{} is not a usable trust anchor: {e}",
                        index + 1
                    ),
                })?;
            }
            Ok(store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_and_without_identity() {
        let ca = CertificateAuthority::generate("Client Test CA").expect("CA");
        let roots = RootCertificates::Pem(ca.cert_pem().to_owned());
        let config = client_config(&roots, None).expect("no identity");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!config.client_auth_cert_resolver.has_certs());

        let cert = ca.issue_client("client.test", &[], None).expect("client");
        let identity = ClientIdentity::from_issued(&cert, &ca);
        let config = client_config(&roots, Some(&identity)).expect("identity");
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn bad_inputs_are_errors_without_key_content() {
        let ca = CertificateAuthority::generate("Client Test CA").expect("CA");
        let roots = RootCertificates::Pem(ca.cert_pem().to_owned());
        assert!(client_config(&RootCertificates::Pem(String::new()), None).is_err());

        let cert = ca.issue_client("client.test", &[], None).expect("client");
        let other = ca.issue_client("other.test", &[], None).expect("client");
        let mismatched = ClientIdentity {
            cert_chain_pem: cert.cert_pem,
            key_pem: other.key_pem,
        };
        let err = client_config(&roots, Some(&mismatched)).expect_err("key of another cert");
        let message = format!("{err} {err:?} {mismatched:?}");
        assert!(!message.contains("PRIVATE KEY"), "{message}");
    }
}
