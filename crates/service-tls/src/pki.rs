//! A private certificate authority for local use and tests.
//!
//! [`CertificateAuthority::generate`] makes an ECDSA P-256 root; it issues server certificates
//! ([`CertificateAuthority::issue_server`]) and client certificates
//! ([`CertificateAuthority::issue_client`]). A CA written to disk is loaded back with
//! [`CertificateAuthority::from_pem`].
//!
//! Every certificate gets its own distinguished name. OpenSSL-based clients (curl, ab, h2load)
//! report "self-signed certificate" when a leaf's subject equals its issuer, and rcgen's default
//! subject is the same for every certificate; so the CA and the leaves carry different
//! organisation names and the CN is always set.
//!
//! This is not a production CA: there is no revocation and no serial-number registry.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::TlsError;
use crate::pem;

/// The organisation (O) of generated CAs. Differs from [`LEAF_ORGANIZATION`], so a leaf's
/// subject never equals its issuer even when both have the same CN.
pub const CA_ORGANIZATION: &str = "xks-stack local CA";

/// The organisation (O) of certificates issued by a [`CertificateAuthority`].
pub const LEAF_ORGANIZATION: &str = "xks-stack";

/// Lifetime of a generated CA: ten years.
pub const CA_LIFETIME: Duration = Duration::days(3650);

/// Default lifetime of an issued certificate: one year.
pub const LEAF_LIFETIME: Duration = Duration::days(365);

/// How far `not_before` is set in the past, to tolerate clock skew between hosts.
pub const BACKDATE: Duration = Duration::hours(1);

/// The validity period of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertValidity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl CertValidity {
    /// Valid from [`BACKDATE`] ago until `lifetime` from now.
    pub fn from_now(lifetime: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        }
    }
}

/// What to put in a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertRequest {
    /// DNS subject alternative names; the first one is also the subject CN.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addrs: Vec<IpAddr>,
    /// The validity period.
    pub validity: CertValidity,
}

impl ServerCertRequest {
    /// A request for these names, valid for [`LEAF_LIFETIME`].
    pub fn new(dns_names: &[&str], ip_addrs: &[IpAddr]) -> Self {
        Self {
            dns_names: dns_names.iter().map(|n| (*n).to_owned()).collect(),
            ip_addrs: ip_addrs.to_vec(),
            validity: CertValidity::from_now(LEAF_LIFETIME),
        }
    }
}

/// A certificate and its freshly generated private key (ECDSA P-256, PKCS#8).
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate alone (no CA), PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM. Wiped on drop; `Debug` shows no content.
    pub key_pem: Zeroizing<String>,
}

impl IssuedCertificate {
    /// The certificate followed by the CA certificate: what a server or client presents.
    pub fn chain_pem(&self, ca: &CertificateAuthority) -> String {
        concat_pem(&[&self.cert_pem, ca.cert_pem()])
    }
}

/// A private CA that can issue server and client certificates.
///
/// `Debug` shows the certificate but not the private key.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Generates a self-signed root CA: ECDSA P-256, `CA:true` with path length 0, key usages
    /// keyCertSign and cRLSign, valid for [`CA_LIFETIME`]. Its subject is
    /// `CN=<common_name>, O=`[`CA_ORGANIZATION`].
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        const WHAT: &str = "CA certificate";
        if common_name.is_empty() {
            return Err(invalid("CA common name", "is empty"));
        }
        let key = new_key_pair(WHAT)?;
        let key_pem = Zeroizing::new(key.serialize_pem());

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, CA_ORGANIZATION);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let validity = CertValidity::from_now(CA_LIFETIME);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;

        let cert = params.self_signed(&key).map_err(generate(WHAT))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key (PKCS#8, SEC1 or PKCS#1 PEM), e.g. as
    /// saved from [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
    ///
    /// Fails if the certificate is not a CA certificate or the key does not belong to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        const CERT: &str = "CA certificate PEM";
        const KEY: &str = "CA private key PEM";
        let cert = pem::first_certificate(cert_pem.as_bytes())
            .map_err(|problem| invalid(CERT, problem))?;
        let key = pem::private_key(key_pem.as_bytes()).map_err(|problem| invalid(KEY, problem))?;
        let key = KeyPair::try_from(&key)
            .map_err(|_| invalid(KEY, "is not a usable ECDSA, Ed25519 or RSA key"))?;

        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|_| invalid(CERT, "is not a valid X.509 certificate"))?;
        if !parsed.is_ca() {
            return Err(invalid(
                CERT,
                "is not a CA certificate (basicConstraints CA:true)",
            ));
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(KEY, "does not belong to the CA certificate"));
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| invalid(CERT, format!("cannot be used as an issuer: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: Zeroizing::new(key_pem.to_owned()),
            issuer,
        })
    }

    /// The CA certificate, PEM: the trust anchor to give to peers.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM (for a CA that was loaded, the PEM it was loaded from).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a server certificate valid for [`LEAF_LIFETIME`] for these names; see
    /// [`issue_server_with`](Self::issue_server_with).
    pub fn issue_server(
        &self,
        dns_names: &[&str],
        ip_addrs: &[IpAddr],
    ) -> Result<IssuedCertificate, TlsError> {
        self.issue_server_with(&ServerCertRequest::new(dns_names, ip_addrs))
    }

    /// Issues a server certificate: the names as subject alternative names, CN = the first DNS
    /// name (or the first IP address if there is none), O = [`LEAF_ORGANIZATION`], extended key
    /// usage serverAuth. At least one name is required.
    pub fn issue_server_with(
        &self,
        request: &ServerCertRequest,
    ) -> Result<IssuedCertificate, TlsError> {
        const WHAT: &str = "server certificate";
        let common_name = match (request.dns_names.first(), request.ip_addrs.first()) {
            (Some(dns), _) => dns.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => {
                return Err(invalid(
                    "server certificate request",
                    "needs at least one DNS name or IP address",
                ));
            }
        };
        let mut sans = dns_sans(WHAT, &request.dns_names)?;
        sans.extend(request.ip_addrs.iter().copied().map(SanType::IpAddress));
        self.issue(
            WHAT,
            &common_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            request.validity,
        )
    }

    /// Issues a client certificate: CN = `common_name`, O = [`LEAF_ORGANIZATION`], the DNS
    /// names as subject alternative names (none at all when `dns_names` is empty, like the
    /// certificate AWS KMS presents), extended key usage clientAuth, valid for `validity` or
    /// else [`LEAF_LIFETIME`].
    pub fn issue_client(
        &self,
        common_name: &str,
        dns_names: &[&str],
        validity: Option<CertValidity>,
    ) -> Result<IssuedCertificate, TlsError> {
        const WHAT: &str = "client certificate";
        if common_name.is_empty() {
            return Err(invalid("client certificate common name", "is empty"));
        }
        let sans = dns_sans(WHAT, dns_names)?;
        let validity = validity.unwrap_or_else(|| CertValidity::from_now(LEAF_LIFETIME));
        self.issue(
            WHAT,
            common_name,
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        what: &'static str,
        common_name: &str,
        sans: Vec<SanType>,
        purpose: ExtendedKeyUsagePurpose,
        validity: CertValidity,
    ) -> Result<IssuedCertificate, TlsError> {
        if validity.not_after <= validity.not_before {
            return Err(invalid(
                "certificate validity",
                "not_after is not after not_before",
            ));
        }
        let key = new_key_pair(what)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, LEAF_ORGANIZATION);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate(what))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// Writes a public PEM file (a certificate or chain), replacing any existing file.
pub fn write_public_pem(path: &Path, pem: &str) -> Result<(), TlsError> {
    write_file(path, pem, 0o644)
}

/// Writes a private key PEM file readable by its owner only (mode 0600), replacing any
/// existing file. The mode is also forced on a file that already existed.
pub fn write_private_pem(path: &Path, pem: &str) -> Result<(), TlsError> {
    write_file(path, pem, 0o600)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let error = |error| TlsError::Write {
        path: path.to_path_buf(),
        error,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    // `mode` applies only when the file is created.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// PEM blocks joined into one text, each ending with a newline.
fn concat_pem(blocks: &[&str]) -> String {
    let mut out = String::new();
    for block in blocks {
        out.push_str(block.trim_end());
        out.push('\n');
    }
    out
}

fn new_key_pair(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate(what))
}

fn distinguished_name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

fn dns_sans<S: AsRef<str>>(what: &'static str, names: &[S]) -> Result<Vec<SanType>, TlsError> {
    names
        .iter()
        .map(|name| {
            let name = name.as_ref();
            name.to_owned()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| TlsError::Generate {
                    what,
                    problem: format!("DNS name {name:?} is not ASCII"),
                })
        })
        .collect()
}

fn invalid(what: &'static str, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        what,
        problem: problem.into(),
    }
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |e| TlsError::Generate {
        what,
        problem: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::{CertificateError, RootCertStore};
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;
    use crate::crypto_provider;

    fn first_certificate(pem: &str) -> Result<rustls_pki_types::CertificateDer<'static>, String> {
        pem::first_certificate(pem.as_bytes())
    }

    fn der(pem: &str) -> rustls_pki_types::CertificateDer<'static> {
        first_certificate(pem).expect("PEM holds a certificate")
    }

    fn verify_server(
        ca: &CertificateAuthority,
        leaf: &IssuedCertificate,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(first_certificate(ca.cert_pem()).expect("CA PEM"))
            .expect("CA is a valid trust anchor");
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .expect("verifier");
        let end_entity = first_certificate(&leaf.cert_pem).expect("leaf PEM");
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        verifier
            .verify_server_cert(&end_entity, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn server_certificate_verifies_for_its_names_only() {
        let ca = CertificateAuthority::generate("Test CA").expect("CA");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let leaf = ca
            .issue_server(&["xks.test", "alt.xks.test"], &[ip])
            .expect("leaf");

        verify_server(&ca, &leaf, "xks.test").expect("first DNS name");
        verify_server(&ca, &leaf, "ALT.xks.test").expect("second DNS name, any case");
        verify_server(&ca, &leaf, "127.0.0.1").expect("IP address");
        let err = verify_server(&ca, &leaf, "other.test").expect_err("other name");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn server_certificate_from_another_ca_is_rejected() {
        let ca = CertificateAuthority::generate("Test CA").expect("CA");
        let other = CertificateAuthority::generate("Test CA").expect("other CA");
        let leaf = other.issue_server(&["xks.test"], &[]).expect("leaf");
        // Same CA name: webpki finds the trusted CA by name, then the signature fails.
        let err = verify_server(&ca, &leaf, "xks.test").expect_err("impostor CA");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{err:?}"
        );
        let stranger = CertificateAuthority::generate("Stranger CA").expect("stranger CA");
        let leaf = stranger.issue_server(&["xks.test"], &[]).expect("leaf");
        let err = verify_server(&ca, &leaf, "xks.test").expect_err("unknown issuer");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn expired_server_certificate_is_rejected() {
        let ca = CertificateAuthority::generate("Test CA").expect("CA");
        let now = OffsetDateTime::now_utc();
        let mut request = ServerCertRequest::new(&["xks.test"], &[]);
        request.validity = CertValidity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        };
        let leaf = ca.issue_server_with(&request).expect("leaf");
        let err = verify_server(&ca, &leaf, "xks.test").expect_err("expired");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn from_pem_round_trips_and_keeps_issuing() {
        let ca = CertificateAuthority::generate("Round Trip CA").expect("CA");
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).expect("reload");
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        assert_eq!(reloaded.key_pem(), ca.key_pem());

        // A certificate issued by the reloaded CA chains to the original certificate.
        let leaf = reloaded.issue_server(&["xks.test"], &[]).expect("leaf");
        verify_server(&ca, &leaf, "xks.test").expect("chains to the original CA");

        let (leaf_der, ca_der) = (der(&leaf.cert_pem), der(ca.cert_pem()));
        let (_, leaf_x509) = x509_parser::parse_x509_certificate(&leaf_der).expect("parse");
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).expect("parse");
        assert_eq!(leaf_x509.issuer().as_raw(), ca_x509.subject().as_raw());
        assert_ne!(leaf_x509.subject().as_raw(), ca_x509.subject().as_raw());
    }

    #[test]
    fn from_pem_rejects_a_mismatched_key_or_a_leaf() {
        let ca = CertificateAuthority::generate("CA one").expect("CA");
        let other = CertificateAuthority::generate("CA two").expect("CA");
        let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem())
            .expect_err("key of another CA");
        assert!(err.to_string().contains("does not belong"), "{err}");

        let leaf = ca.issue_server(&["xks.test"], &[]).expect("leaf");
        let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem)
            .expect_err("a leaf is not a CA");
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn ca_and_leaf_names_and_extensions() {
        let ca = CertificateAuthority::generate("Names CA").expect("CA");
        let ca_der = der(ca.cert_pem());
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).expect("parse");
        assert!(ca_x509.is_ca());
        assert_eq!(
            ca_x509.subject().to_string(),
            "CN=Names CA, O=xks-stack local CA"
        );
        let lifetime =
            ca_x509.validity().not_after.timestamp() - ca_x509.validity().not_before.timestamp();
        assert!(lifetime > 9 * 365 * 86_400, "CA lifetime {lifetime}s");

        let client = ca
            .issue_client("cks.kms.eu-west-1.amazonaws.com", &[], None)
            .expect("client");
        let client_der = der(&client.cert_pem);
        let (_, client_x509) = x509_parser::parse_x509_certificate(&client_der).expect("parse");
        assert_eq!(
            client_x509.subject().to_string(),
            "CN=cks.kms.eu-west-1.amazonaws.com, O=xks-stack"
        );
        assert!(
            client_x509
                .subject_alternative_name()
                .expect("ext")
                .is_none()
        );
        let eku = client_x509
            .extended_key_usage()
            .expect("ext")
            .expect("EKU present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);

        let server = ca.issue_server(&["xks.test"], &[]).expect("server");
        let server_der = der(&server.cert_pem);
        let (_, server_x509) = x509_parser::parse_x509_certificate(&server_der).expect("parse");
        let eku = server_x509
            .extended_key_usage()
            .expect("ext")
            .expect("EKU present")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!server_x509.is_ca());
    }

    #[test]
    fn bad_requests_are_errors() {
        let ca = CertificateAuthority::generate("CA").expect("CA");
        assert!(ca.issue_server(&[], &[]).is_err());
        assert!(ca.issue_client("", &[], None).is_err());
        assert!(ca.issue_server(&["bücher.test"], &[]).is_err());
        let now = OffsetDateTime::now_utc();
        let backwards = CertValidity {
            not_before: now,
            not_after: now - Duration::days(1),
        };
        assert!(ca.issue_client("x", &[], Some(backwards)).is_err());
        assert!(CertificateAuthority::generate("").is_err());
    }

    #[test]
    fn debug_output_has_no_private_key() {
        let ca = CertificateAuthority::generate("Debug CA").expect("CA");
        let leaf = ca
            .issue_client("client", &["client.test"], None)
            .expect("leaf");
        assert!(ca.key_pem().contains("PRIVATE KEY"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        let ca_debug = format!("{ca:?} {ca:#?}");
        let leaf_debug = format!("{leaf:?} {leaf:#?}");
        assert!(!ca_debug.contains("PRIVATE KEY"), "{ca_debug}");
        assert!(!leaf_debug.contains("PRIVATE KEY"), "{leaf_debug}");
        // The base64 body of the keys must not show up either.
        for line in ca.key_pem().lines().chain(leaf.key_pem.lines()) {
            if !line.starts_with("-----") && line.len() > 16 {
                assert!(!ca_debug.contains(line) && !leaf_debug.contains(line));
            }
        }
    }

    #[test]
    fn chain_pem_is_leaf_then_ca() {
        let ca = CertificateAuthority::generate("Chain CA").expect("CA");
        let leaf = ca.issue_server(&["xks.test"], &[]).expect("leaf");
        let chain = pem::certificates(leaf.chain_pem(&ca).as_bytes()).expect("chain");
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], first_certificate(&leaf.cert_pem).expect("leaf"));
        assert_eq!(chain[1], first_certificate(ca.cert_pem()).expect("ca"));
    }

    #[test]
    fn private_pem_files_are_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key.pem");
        // An existing, world-readable file gets its mode tightened too.
        std::fs::write(&key_path, "old").expect("write");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private_pem(&key_path, "secret\n").expect("write private");
        let mode = std::fs::metadata(&key_path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&key_path).expect("read"),
            "secret\n"
        );

        let new_key = dir.path().join("new-key.pem");
        write_private_pem(&new_key, "secret\n").expect("write private");
        let mode = std::fs::metadata(&new_key)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
