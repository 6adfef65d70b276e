//! Reading PEM files and parsing PEM text, with errors that never echo the input.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::TlsError;

/// Reads a whole file; the buffer is wiped when dropped since it may hold a private key.
pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|error| TlsError::Read {
            what,
            path: path.to_path_buf(),
            error,
        })
}

/// Every `CERTIFICATE` block of `pem`, in order; other blocks are skipped.
///
/// The error is a description of the problem, fit for a message.
pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(&e))?;
    if certs.is_empty() {
        return Err("contains no CERTIFICATE block".to_owned());
    }
    Ok(certs)
}

/// The first `CERTIFICATE` block of `pem` (the end-entity certificate of a chain).
pub(crate) fn first_certificate(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(cert)) => Ok(cert),
        Some(Err(e)) => Err(describe(&e)),
        None => Err("contains no CERTIFICATE block".to_owned()),
    }
}

/// The first private key of `pem`: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
/// PKCS#1 (`RSA PRIVATE KEY`).
///
/// The error is a description of the problem, fit for a message; it never includes key bytes.
pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound)
            if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") =>
        {
            Err("holds an encrypted private key; only unencrypted keys are supported".to_owned())
        }
        Err(pem::Error::NoItemsFound) => {
            Err("contains no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block".to_owned())
        }
        Err(e) => Err(describe(&e)),
    }
}

/// A fixed description of a PEM error. The parser's own messages can quote input (an offending
/// base64 byte, a header line), which must not happen for key files.
fn describe(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".to_owned(),
        pem::Error::NoItemsFound => "contains no PEM block of the expected kind".to_owned(),
        pem::Error::SectionTooLarge => "a PEM block is too large".to_owned(),
        _ => "is not valid PEM".to_owned(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base64_in_a_key_is_not_echoed() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nSECRET!!bytes\n-----END PRIVATE KEY-----\n";
        let problem = private_key(pem).expect_err("invalid base64 must fail");
        assert!(!problem.contains("SECRET"), "{problem}");
        assert!(!problem.contains('!'), "{problem}");
    }

    #[test]
    fn encrypted_keys_are_named() {
        let pem =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let problem = private_key(pem).expect_err("encrypted keys are unsupported");
        assert!(problem.contains("encrypted"), "{problem}");
    }

    #[test]
    fn a_file_without_certificates_is_rejected() {
        assert!(certificates(b"just text\n").is_err());
        assert!(certificates(b"").is_err());
    }
}
