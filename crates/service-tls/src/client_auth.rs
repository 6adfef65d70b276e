//! mTLS client authentication: the WebPKI chain check plus a check of the client's name.
//!
//! AWS KMS presents a certificate with CN `cks.kms.<region>.amazonaws.com`, sometimes with no
//! subjectAltName at all, so the name check reads the subject CN as well as the DNS SANs. A
//! client whose certificate is refused fails the handshake with a TLS alert; it never gets as
//! far as an HTTP request.
//!
//! Every refused client certificate (expired or not yet valid, unknown issuer or self-signed,
//! wrong usage, name not accepted) gets the alert `handshake_failure`, as the reference XKS
//! proxy sends and AWS's test client looks for. rustls derives the alert from the verifier's
//! error: `Error::InvalidCertificate(e)` would send e's own alert (`certificate_expired`,
//! `unknown_ca`, `certificate_unknown`, ...), any other variant `handshake_failure`. So the
//! verifier returns `Error::Other` carrying a typed [`ClientCertRejected`], which keeps the
//! reason for the server's log and for callers that inspect it. A client sending no
//! certificate at all is refused by rustls itself with `certificate_required`, and a bad
//! `CertificateVerify` signature keeps `decrypt_error` (RFC 8446 §4.4.3).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;

/// At most this many presented names are quoted in a rejection error.
const MAX_NAMES_IN_ERROR: usize = 8;

/// Why the server refused a client certificate during the handshake.
///
/// It reaches the server's `accept` as `rustls::Error::Other(OtherError(..))` wrapping this
/// type (find it with [`ClientCertRejected::find`]); rustls then sends the alert
/// `handshake_failure` to the client, whatever the reason. Its `Display` names the reason, so
/// a log line of the handshake error says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientCertRejected {
    /// The certificate or its chain failed the WebPKI check (trust anchor, validity period,
    /// clientAuth usage, signatures, encoding): the verifier's error, typically
    /// `rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })` or
    /// `InvalidCertificate(CertificateError::UnknownIssuer)`.
    #[error("client certificate rejected: {0}")]
    Certificate(rustls::Error),
    /// The chain is valid but none of the certificate's names is accepted.
    #[error("client certificate rejected: {0}")]
    Name(ClientNameRejected),
}

impl ClientCertRejected {
    /// The rejection inside a rustls error, if the error is one (`rustls::Error::Other`
    /// carrying a `ClientCertRejected`).
    pub fn find(error: &rustls::Error) -> Option<&Self> {
        match error {
            rustls::Error::Other(OtherError(inner)) => inner.downcast_ref::<Self>(),
            _ => None,
        }
    }

    /// As a rustls error that makes rustls send `handshake_failure` (see the module doc).
    fn into_rustls(self) -> rustls::Error {
        rustls::Error::Other(OtherError(Arc::new(self)))
    }
}

/// A client certificate chains to the configured CA but none of its names (subject CN, DNS
/// SANs) is accepted: the reason inside [`ClientCertRejected::Name`].
#[derive(Debug, thiserror::Error)]
#[error("names {presented:?} match none of the accepted names")]
pub struct ClientNameRejected {
    /// The subject CNs and DNS SANs the client certificate presented (at most 8).
    pub presented: Vec<String>,
}

/// A name a client certificate may present: exact, or `*.<suffix>` matching exactly one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AcceptedName {
    /// The whole name, lower case.
    Exact(String),
    /// What follows `*.`, lower case.
    Wildcard(String),
}

impl AcceptedName {
    /// Parses an accepted name: ASCII, non-empty dot-separated labels, and `*` only as the
    /// whole first label. The error describes the problem.
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        if !name.is_ascii() {
            return Err(format!("{name:?} is not ASCII"));
        }
        let name = name.to_ascii_lowercase();
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        if rest.is_empty() {
            return Err(format!("{name:?} is empty or only a wildcard"));
        }
        if rest.split('.').any(|label| label.is_empty()) {
            return Err(format!("{name:?} has an empty label"));
        }
        if rest
            .bytes()
            .any(|b| b == b'*' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "{name:?}: a wildcard is allowed only as a leading \"*.\", and no spaces"
            ));
        }
        Ok(if wildcard {
            Self::Wildcard(rest.to_owned())
        } else {
            Self::Exact(rest.to_owned())
        })
    }

    /// Whether a name presented in a certificate matches, ignoring ASCII case. Presented names
    /// are taken literally: a `*` in a certificate is not a wildcard here.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        match self {
            Self::Exact(name) => presented.eq_ignore_ascii_case(name),
            Self::Wildcard(suffix) => presented.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
            }),
        }
    }
}

/// A [`ClientCertVerifier`] that requires a client certificate, verifies its chain with
/// [`WebPkiClientVerifier`] (trust anchors, validity period, clientAuth usage, signatures) and
/// then requires one of its names to be accepted.
#[derive(Debug)]
pub(crate) struct NameCheckingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: Vec<AcceptedName>,
}

impl NameCheckingClientVerifier {
    /// A verifier for clients chaining to `roots` and presenting one of `accepted`.
    pub(crate) fn new(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        accepted: Vec<AcceptedName>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(Self { inner, accepted })
    }

    fn check_names(&self, end_entity: &CertificateDer<'_>) -> Result<(), ClientCertRejected> {
        let mut presented = presented_names(end_entity).map_err(ClientCertRejected::Certificate)?;
        if presented
            .iter()
            .any(|name| self.accepted.iter().any(|a| a.matches(name)))
        {
            return Ok(());
        }
        presented.truncate(MAX_NAMES_IN_ERROR);
        Err(ClientCertRejected::Name(ClientNameRejected { presented }))
    }

    /// The chain check, then the name check.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, ClientCertRejected> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(ClientCertRejected::Certificate)?;
        self.check_names(end_entity)?;
        Ok(verified)
    }
}

/// The subject CNs and the DNS SANs of a certificate.
fn presented_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, rustls::Error> {
    let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad())?;
    let mut names: Vec<String> = x509
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .collect();
    if let Some(san) = x509.subject_alternative_name().map_err(|_| bad())? {
        names.extend(
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                }),
        );
    }
    Ok(names)
}

impl ClientCertVerifier for NameCheckingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map_err(ClientCertRejected::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertificateAuthority;

    fn parse(name: &str) -> AcceptedName {
        AcceptedName::parse(name).expect("valid accepted name")
    }

    #[test]
    fn exact_names_ignore_ascii_case() {
        let name = parse("cks.kms.eu-west-1.amazonaws.com");
        assert!(name.matches("cks.kms.eu-west-1.amazonaws.com"));
        assert!(name.matches("CKS.KMS.EU-WEST-1.AMAZONAWS.COM"));
        assert!(!name.matches("cks.kms.eu-west-2.amazonaws.com"));
        assert!(!name.matches("x.cks.kms.eu-west-1.amazonaws.com"));
        assert!(!name.matches("cks.kms.eu-west-1.amazonaws.com."));
        assert!(parse("CKS.Example.COM").matches("cks.example.com"));
    }

    #[test]
    fn wildcards_match_exactly_one_label() {
        let name = parse("*.kms.eu-west-1.amazonaws.com");
        assert!(name.matches("cks.kms.eu-west-1.amazonaws.com"));
        assert!(name.matches("CKS.kms.EU-west-1.amazonaws.com"));
        assert!(!name.matches("kms.eu-west-1.amazonaws.com"));
        assert!(!name.matches("a.cks.kms.eu-west-1.amazonaws.com"));
        assert!(!name.matches(".kms.eu-west-1.amazonaws.com"));
        assert!(!name.matches("cks.kms.eu-west-2.amazonaws.com"));
    }

    #[test]
    fn malformed_accepted_names_are_rejected() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.b",
            "*b.example",
            "b*.example",
            "a..b",
            ".a",
            "a.",
            "bü.example",
            "a b",
            "**.example",
        ] {
            assert!(
                AcceptedName::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn presented_names_are_cn_and_dns_sans() {
        let ca = CertificateAuthority::generate("Names CA").expect("CA");
        let cert = ca
            .issue_client("client.example", &["a.example", "b.example"], None)
            .expect("client");
        let der = crate::pem::first_certificate(cert.cert_pem.as_bytes()).expect("pem");
        assert_eq!(
            presented_names(&der).expect("names"),
            ["client.example", "a.example", "b.example"]
        );

        let cn_only = ca
            .issue_client("cks.kms.eu-west-1.amazonaws.com", &[], None)
            .expect("client");
        let der = crate::pem::first_certificate(cn_only.cert_pem.as_bytes()).expect("pem");
        assert_eq!(
            presented_names(&der).expect("names"),
            ["cks.kms.eu-west-1.amazonaws.com"]
        );
    }

    /// A verifier trusting `ca` and accepting `name`.
    fn verifier(ca: &CertificateAuthority, name: &str) -> NameCheckingClientVerifier {
        let mut roots = RootCertStore::empty();
        roots
            .add(crate::pem::first_certificate(ca.cert_pem().as_bytes()).expect("CA pem"))
            .expect("root");
        NameCheckingClientVerifier::new(roots, crate::crypto_provider(), vec![parse(name)])
            .expect("verifier")
    }

    /// Runs the verifier on a certificate issued by `issuer`.
    fn verify(
        verifier: &NameCheckingClientVerifier,
        issuer: &CertificateAuthority,
        common_name: &str,
        validity: Option<crate::CertValidity>,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let cert = issuer
            .issue_client(common_name, &[], validity)
            .expect("client");
        let der = crate::pem::first_certificate(cert.cert_pem.as_bytes()).expect("pem");
        verifier.verify_client_cert(&der, &[], UnixTime::now())
    }

    /// rustls sends `handshake_failure` for any error but `InvalidCertificate` and
    /// `PeerMisbehaved` (`send_cert_verify_error_alert`): every refusal must be `Other`,
    /// carrying the typed reason.
    #[test]
    fn every_refusal_is_an_other_error_with_the_reason() {
        let ca = CertificateAuthority::generate("Verifier CA").expect("CA");
        let v = verifier(&ca, "client.example");
        assert!(verify(&v, &ca, "CLIENT.example", None).is_ok());

        let err = verify(&v, &ca, "other.example", None).expect_err("wrong name");
        assert!(matches!(err, rustls::Error::Other(_)), "{err:?}");
        match ClientCertRejected::find(&err) {
            Some(ClientCertRejected::Name(n)) => assert_eq!(n.presented, ["other.example"]),
            other => panic!("{other:?}"),
        }

        let now = time::OffsetDateTime::now_utc();
        let expired = crate::CertValidity {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::days(1),
        };
        let err = verify(&v, &ca, "client.example", Some(expired)).expect_err("expired");
        assert!(matches!(err, rustls::Error::Other(_)), "{err:?}");
        assert!(
            matches!(
                ClientCertRejected::find(&err),
                Some(ClientCertRejected::Certificate(
                    rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
                ))
            ),
            "{err:?}"
        );

        let stranger = CertificateAuthority::generate("Stranger CA").expect("CA");
        let err = verify(&v, &stranger, "client.example", None).expect_err("unknown CA");
        assert!(
            matches!(
                ClientCertRejected::find(&err),
                Some(ClientCertRejected::Certificate(
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                ))
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "other error: client certificate rejected: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn find_ignores_other_errors() {
        assert!(ClientCertRejected::find(&rustls::Error::NoCertificatesPresented).is_none());
        let unrelated = rustls::Error::Other(OtherError(Arc::new(std::io::Error::other("x"))));
        assert!(ClientCertRejected::find(&unrelated).is_none());
    }
}
