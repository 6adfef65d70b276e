//! The rustls server configuration of both services, loaded from PEM files.
//!
//! [`load_server_config`] reads a certificate chain and its private key, and optionally turns on
//! mTLS ([`ClientAuthSettings`]): a client certificate is then required, must chain to the
//! given CA bundle, must be within its validity period, and its subject CN or one of its DNS
//! SANs must be one of the accepted names (see [`ClientAuthSettings::accepted_names`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;

use crate::client_auth::{AcceptedName, NameCheckingClientVerifier};
pub use crate::client_auth::{ClientCertRejected, ClientNameRejected};
use crate::provider::{PROTOCOL_VERSIONS, alpn_protocols, crypto_provider};
use crate::{TlsError, pem};

/// The files a TLS server is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM file with the private key of the server certificate: PKCS#8 (`PRIVATE KEY`), SEC1
    /// (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), unencrypted.
    pub private_key: PathBuf,
    /// mTLS settings; `None` means no client certificate is asked for.
    pub client_auth: Option<ClientAuthSettings>,
}

/// mTLS: which client certificates the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSettings {
    /// PEM file with the CA certificates client certificates must chain to.
    pub ca_bundle: PathBuf,
    /// Names a client certificate must present as its subject CN or as a DNS SAN, e.g.
    /// `cks.kms.eu-west-1.amazonaws.com`. Compared ignoring ASCII case; a leading `*.` matches
    /// exactly one label (`*.example.com` matches `a.example.com`, not `a.b.example.com` nor
    /// `example.com`). Must not be empty.
    pub accepted_names: Vec<String>,
}

/// Why a TLS private key file is more exposed than it should be: `Some` with a sentence to
/// log when its group or others may read or write it, `None` when only its owner may (or it
/// cannot be inspected: loading reports that). Callers warn rather than refuse, so installs
/// made before this check keep starting.
pub fn private_key_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the TLS private key file {} has permissions {mode:o}: its group or others may read it; use chmod 600",
            path.display()
        )
    })
}

/// Builds the server configuration: aws-lc-rs, TLS 1.3 and 1.2, AEAD ECDHE suites only
/// ([`CIPHER_SUITES`](crate::CIPHER_SUITES)), ALPN `h2` then `http/1.1`, and mTLS when
/// `files.client_auth` is set.
///
/// Errors name the file and the problem; they never include key material.
pub fn load_server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    const CHAIN: &str = "certificate chain";
    const KEY: &str = "private key";
    let chain_pem = pem::read_file(CHAIN, &files.cert_chain)?;
    let chain = pem::certificates(&chain_pem)
        .map_err(|problem| invalid_file(CHAIN, &files.cert_chain, problem))?;
    let key_pem = pem::read_file(KEY, &files.private_key)?;
    let key = pem::private_key(&key_pem)
        .map_err(|problem| invalid_file(KEY, &files.private_key, problem))?;

    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Invalid {
            what: "TLS protocol versions",
            problem: e.to_string(),
        })?;
    let builder = match &files.client_auth {
        None => builder.with_no_client_auth(),
        Some(settings) => {
            builder.with_client_cert_verifier(Arc::new(client_verifier(settings, provider)?))
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid_file(
            KEY,
            &files.private_key,
            format!(
                "cannot be used with the certificate chain {}: {e}",
                files.cert_chain.display()
            ),
        )
    })?;
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}

fn client_verifier(
    settings: &ClientAuthSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<NameCheckingClientVerifier, TlsError> {
    const BUNDLE: &str = "client CA bundle";
    if settings.accepted_names.is_empty() {
        return Err(TlsError::Invalid {
            what: "mTLS accepted client names",
            problem: "the list is empty, so no client could connect".to_owned(),
        });
    }
    let accepted = settings
        .accepted_names
        .iter()
        .map(|name| AcceptedName::parse(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|problem| TlsError::Invalid {
            what: "mTLS accepted client name",
            problem,
        })?;

    let bundle_pem = pem::read_file(BUNDLE, &settings.ca_bundle)?;
    let certs = pem::certificates(&bundle_pem)
        .map_err(|problem| invalid_file(BUNDLE, &settings.ca_bundle, problem))?;
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            invalid_file(
                BUNDLE,
                &settings.ca_bundle,
                format!(
                    "certificate #{} is not a usable trust anchor: {e}",
                    index + 1
                ),
            )
        })?;
    }
    NameCheckingClientVerifier::new(roots, provider, accepted)
        .map_err(|e| invalid_file(BUNDLE, &settings.ca_bundle, e.to_string()))
}

/// The `notAfter` time of the first certificate in `cert_pem` (the end-entity certificate of a
/// chain), e.g. for a certificate-expiry metric.
pub fn cert_not_after(cert_pem: &str) -> Result<OffsetDateTime, TlsError> {
    const WHAT: &str = "certificate PEM";
    let invalid = |problem: String| TlsError::Invalid {
        what: WHAT,
        problem,
    };
    let der = pem::first_certificate(cert_pem.as_bytes()).map_err(invalid)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| invalid("is not a valid X.509 certificate".to_owned()))?;
    OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
        .map_err(|_| invalid("notAfter is out of range".to_owned()))
}

fn invalid_file(what: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::InvalidFile {
        what,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use time::Duration;

    use super::*;
    use crate::pki::{
        CertValidity, CertificateAuthority, ServerCertRequest, write_private_pem, write_public_pem,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        files: ServerTlsFiles,
        ca: CertificateAuthority,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::generate("Server Test CA").expect("CA");
        let leaf = ca.issue_server(&["xks.test"], &[]).expect("leaf");
        let files = ServerTlsFiles {
            cert_chain: dir.path().join("chain.pem"),
            private_key: dir.path().join("key.pem"),
            client_auth: None,
        };
        write_public_pem(&files.cert_chain, &leaf.chain_pem(&ca)).expect("write");
        write_private_pem(&files.private_key, &leaf.key_pem).expect("write");
        write_public_pem(&dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
        Fixture { dir, files, ca }
    }

    fn mtls(dir: &Path, names: &[&str]) -> Option<ClientAuthSettings> {
        Some(ClientAuthSettings {
            ca_bundle: dir.join("ca.pem"),
            accepted_names: names.iter().map(|n| (*n).to_owned()).collect(),
        })
    }

    #[test]
    fn loads_with_and_without_mtls() {
        let mut f = fixture();
        let config = load_server_config(&f.files).expect("plain TLS");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(config.crypto_provider().cipher_suites.len(), 9);

        f.files.client_auth = mtls(f.dir.path(), &["cks.kms.eu-west-1.amazonaws.com"]);
        load_server_config(&f.files).expect("mTLS");
    }

    #[test]
    fn missing_files_are_named() {
        let mut f = fixture();
        f.files.cert_chain = f.dir.path().join("nope.pem");
        let err = load_server_config(&f.files).expect_err("missing chain");
        assert!(matches!(
            err,
            TlsError::Read {
                what: "certificate chain",
                ..
            }
        ));
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn key_errors_name_the_file_but_not_the_content() {
        let f = fixture();
        let key = std::fs::read_to_string(&f.files.private_key).expect("read");
        // Corrupt the base64 body.
        let corrupted = key.replacen('A', "!", 1).replacen('M', "?", 1);
        std::fs::write(&f.files.private_key, &corrupted).expect("write");
        let err = load_server_config(&f.files).expect_err("corrupt key");
        let message = format!("{err} {err:?}");
        assert!(message.contains("key.pem"), "{message}");
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!message.contains(line), "{message}");
        }
        assert!(
            !message.contains('!') && !message.contains('?'),
            "{message}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_rejected() {
        let f = fixture();
        let other = f.ca.issue_server(&["xks.test"], &[]).expect("leaf");
        write_private_pem(&f.files.private_key, &other.key_pem).expect("write");
        let err = load_server_config(&f.files).expect_err("mismatched key");
        assert!(
            matches!(
                err,
                TlsError::InvalidFile {
                    what: "private key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_file_without_certificates_is_rejected() {
        let f = fixture();
        let key = std::fs::read_to_string(&f.files.private_key).expect("read");
        std::fs::write(&f.files.cert_chain, key).expect("write");
        let err = load_server_config(&f.files).expect_err("no certificate");
        assert!(
            matches!(
                err,
                TlsError::InvalidFile {
                    what: "certificate chain",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_mtls_settings_are_rejected() {
        let mut f = fixture();
        f.files.client_auth = mtls(f.dir.path(), &[]);
        assert!(load_server_config(&f.files).is_err(), "no accepted names");
        f.files.client_auth = mtls(f.dir.path(), &["a.*.example"]);
        assert!(load_server_config(&f.files).is_err(), "inner wildcard");
        f.files.client_auth = mtls(f.dir.path(), &["client.test"]);
        if let Some(settings) = &mut f.files.client_auth {
            settings.ca_bundle = f.files.private_key.clone();
        }
        let err = load_server_config(&f.files).expect_err("a key is not a CA bundle");
        assert!(matches!(
            err,
            TlsError::InvalidFile {
                what: "client CA bundle",
                ..
            }
        ));
    }

    #[test]
    fn sec1_and_pkcs1_keys_load() {
        // rcgen writes PKCS#8. The same P-256 key in SEC1 form (`EC PRIVATE KEY`) must load;
        // RSA PKCS#1 goes through the same parser and rustls' key loader.
        let f = fixture();
        let pkcs8 = std::fs::read(&f.files.private_key).expect("read");
        let key = pem::private_key(&pkcs8).expect("pkcs8");
        let rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8_der) = key else {
            panic!("rcgen writes PKCS#8");
        };
        let sec1 = inner_key_of_pkcs8(pkcs8_der.secret_pkcs8_der());
        let sec1_pem = pem_encode("EC PRIVATE KEY", &sec1);
        std::fs::write(&f.files.private_key, sec1_pem).expect("write");
        load_server_config(&f.files).expect("SEC1 key");
    }

    #[test]
    fn pkcs1_rsa_keys_parse_and_load() {
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("RSA key");
        let pkcs1 = inner_key_of_pkcs8(rsa.serialized_der());
        let key =
            pem::private_key(pem_encode("RSA PRIVATE KEY", &pkcs1).as_bytes()).expect("PKCS#1 PEM");
        assert!(matches!(key, rustls_pki_types::PrivateKeyDer::Pkcs1(_)));
        crypto_provider()
            .key_provider
            .load_private_key(key)
            .expect("rustls loads PKCS#1 RSA keys");
    }

    /// The algorithm-specific key inside a PKCS#8 document: SEC1 `ECPrivateKey` for an EC key,
    /// PKCS#1 `RSAPrivateKey` for an RSA key.
    fn inner_key_of_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING, ... }
        let (_, info) = x509_parser::der_parser::parse_der(pkcs8).expect("der");
        let items = info.as_sequence().expect("sequence");
        items[2].as_slice().expect("octet string").to_vec()
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("ascii"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    #[test]
    fn cert_not_after_reads_the_first_certificate() {
        let ca = CertificateAuthority::generate("Expiry CA").expect("CA");
        let not_after = OffsetDateTime::now_utc() + Duration::days(10);
        let mut request = ServerCertRequest::new(&["xks.test"], &[]);
        request.validity = CertValidity {
            not_before: OffsetDateTime::now_utc() - Duration::days(1),
            not_after,
        };
        let leaf = ca.issue_server_with(&request).expect("leaf");
        let read = cert_not_after(&leaf.chain_pem(&ca)).expect("not_after");
        assert_eq!(read.unix_timestamp(), not_after.unix_timestamp());
        assert!(cert_not_after("no pem here").is_err());
    }
}
