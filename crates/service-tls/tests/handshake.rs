//! Real TLS handshakes over loopback: `load_server_config` behind a tokio-rustls acceptor,
//! `client_config` (or a TLS 1.2-only config, or curl) on the other side.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ProtocolVersion, ServerConfig,
    SupportedCipherSuite,
};
use service_tls::pki::{write_private_pem, write_public_pem};
use service_tls::{
    CIPHER_SUITES, CertValidity, CertificateAuthority, ClientAuthSettings, ClientCertRejected,
    ClientIdentity, RootCertificates, ServerTlsFiles, client_config, crypto_provider,
    load_server_config, root_cert_store,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SERVER_NAME: &str = "xks.test";
const KMS_CLIENT_NAME: &str = "cks.kms.eu-west-1.amazonaws.com";
const PING: &[u8; 5] = b"ping!";
const PONG: &[u8; 5] = b"pong!";
/// Generous: the machine is shared and tests run in debug builds. Hitting it fails the test.
const DEADLINE: Duration = Duration::from_secs(30);

/// A CA, a server certificate for `xks.test` and 127.0.0.1, and the files in a temp dir.
struct Setup {
    dir: TempDir,
    ca: CertificateAuthority,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::generate("Handshake Test CA").expect("CA");
        let server = ca
            .issue_server(&[SERVER_NAME], &["127.0.0.1".parse().expect("ip")])
            .expect("server certificate");
        write_public_pem(&dir.path().join("chain.pem"), &server.chain_pem(&ca)).expect("write");
        write_private_pem(&dir.path().join("key.pem"), &server.key_pem).expect("write");
        write_public_pem(&dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, client_auth: Option<ClientAuthSettings>) -> Arc<ServerConfig> {
        load_server_config(&ServerTlsFiles {
            cert_chain: self.path("chain.pem"),
            private_key: self.path("key.pem"),
            client_auth,
        })
        .expect("server config")
    }

    /// A server requiring client certificates from our CA with one of `names`.
    fn mtls_server(&self, names: &[&str]) -> Arc<ServerConfig> {
        self.server(Some(ClientAuthSettings {
            ca_bundle: self.path("ca.pem"),
            accepted_names: names.iter().map(|n| (*n).to_owned()).collect(),
        }))
    }

    fn roots(&self) -> RootCertificates {
        RootCertificates::Pem(self.ca.cert_pem().to_owned())
    }

    fn client(&self, identity: Option<&ClientIdentity>) -> Arc<ClientConfig> {
        client_config(&self.roots(), identity).expect("client config")
    }

    fn identity(&self, common_name: &str, dns_names: &[&str]) -> ClientIdentity {
        let cert = self
            .ca
            .issue_client(common_name, dns_names, None)
            .expect("client certificate");
        ClientIdentity::from_issued(&cert, &self.ca)
    }

    /// A client config limited to TLS 1.2, built from the crate's provider and roots.
    fn tls12_client(&self, identity: Option<&ClientIdentity>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(root_cert_store(&self.roots()).expect("roots"));
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain");
                let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("key");
                builder.with_client_auth_cert(chain, key).expect("identity")
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// What a side saw of a completed handshake.
#[derive(Debug)]
struct Negotiated {
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    suite: Option<SupportedCipherSuite>,
}

impl Negotiated {
    fn of(conn: &rustls::CommonState) -> Self {
        Self {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite(),
        }
    }
}

/// Where the server side failed.
#[derive(Debug)]
enum ServerFailure {
    /// The TLS handshake (`TlsAcceptor::accept`) failed: what a rejected client must cause.
    Accept(io::Error),
    /// The handshake succeeded and something later failed.
    Exchange(io::Error),
}

/// Accepts one connection; after the handshake reads `PING` and answers `PONG`.
async fn start_server(
    config: Arc<ServerConfig>,
) -> (SocketAddr, JoinHandle<Result<Negotiated, ServerFailure>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(ServerFailure::Accept)?;
        let mut tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(ServerFailure::Accept)?;
        let negotiated = Negotiated::of(tls.get_ref().1);
        let exchange = async {
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            if &buf != PING {
                return Err(io::Error::other("unexpected request bytes"));
            }
            tls.write_all(PONG).await?;
            tls.shutdown().await
        };
        exchange.await.map_err(ServerFailure::Exchange)?;
        Ok(negotiated)
    });
    (addr, task)
}

/// Connects, sends `PING` and reads `PONG`. Any failure, including reading no application
/// data at all, is an error.
async fn client_exchange(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<Negotiated> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let negotiated = Negotiated::of(tls.get_ref().1);
    tls.write_all(PING).await?;
    tls.flush().await?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await?;
    if &buf != PONG {
        return Err(io::Error::other("unexpected response bytes"));
    }
    Ok(negotiated)
}

/// One connection between the two configs; both sides' results.
async fn run(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<Negotiated, ServerFailure>, io::Result<Negotiated>) {
    let (addr, server_task) = start_server(server).await;
    let client_result = tokio::time::timeout(DEADLINE, client_exchange(addr, client))
        .await
        .expect("client finished in time");
    let server_result = tokio::time::timeout(DEADLINE, server_task)
        .await
        .expect("server finished in time")
        .expect("server task did not panic");
    (server_result, client_result)
}

async fn assert_accepted(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Negotiated {
    let (server_result, client_result) = run(server, client).await;
    let on_server = server_result.expect("server completes the exchange");
    let on_client = client_result.expect("client completes the exchange");
    assert_eq!(on_server.alpn, on_client.alpn);
    assert_eq!(on_server.version, on_client.version);
    assert_eq!(
        on_server.suite.map(|s| s.suite()),
        on_client.suite.map(|s| s.suite())
    );
    on_client
}

/// The server's accept must fail and the client must read no application data. Returns the
/// rustls error the server saw and the client's error.
async fn assert_rejected_both(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (rustls::Error, io::Error) {
    let (server_result, client_result) = run(server, client).await;
    let client_error = client_result.expect_err("the client must not read any application data");
    let server_error = match server_result {
        Err(ServerFailure::Accept(e)) => e,
        Err(ServerFailure::Exchange(e)) => {
            panic!(
                "the handshake succeeded, the exchange failed later: {e} (client: {client_error})"
            )
        }
        Ok(negotiated) => panic!("the server accepted the client: {negotiated:?}"),
    };
    let server_error = rustls_error(&server_error)
        .unwrap_or_else(|| panic!("not a rustls error: {server_error:?}"))
        .clone();
    (server_error, client_error)
}

/// Like [`assert_rejected_both`], for the server's error only.
async fn assert_rejected(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> rustls::Error {
    assert_rejected_both(server, client).await.0
}

/// The rustls error inside an I/O error of tokio-rustls.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// The server must refuse the client's certificate, and the client must have received the
/// alert `handshake_failure` whatever the reason (what the reference proxy sends and AWS's
/// test client checks). Returns the server's error, which must carry a
/// [`ClientCertRejected`].
async fn assert_refused_certificate(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> rustls::Error {
    let (server_error, client_error) = assert_rejected_both(server, client).await;
    assert!(
        ClientCertRejected::find(&server_error).is_some(),
        "expected a ClientCertRejected, got {server_error:?}"
    );
    assert_eq!(
        rustls_error(&client_error),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
        )),
        "the client's error: {client_error:?}"
    );
    server_error
}

/// The certificate error the WebPKI check gave, from a server's refusal.
fn certificate_error(server_error: &rustls::Error) -> &CertificateError {
    match ClientCertRejected::find(server_error) {
        Some(ClientCertRejected::Certificate(rustls::Error::InvalidCertificate(e))) => e,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

/// The names a server's refusal quotes, when the refusal is for the name.
fn rejected_names(server_error: &rustls::Error) -> &[String] {
    match ClientCertRejected::find(server_error) {
        Some(ClientCertRejected::Name(rejected)) => &rejected.presented,
        other => panic!("expected a name rejection, got {other:?}"),
    }
}

fn assert_aead(suite: Option<SupportedCipherSuite>) {
    let suite = suite.expect("a suite was negotiated");
    assert!(
        CIPHER_SUITES.iter().any(|s| s.suite() == suite.suite()),
        "{suite:?} is not one of ours"
    );
    let name = format!("{:?}", suite.suite());
    assert!(
        name.contains("_GCM_") || name.contains("_CHACHA20_POLY1305_"),
        "{name} is not AEAD"
    );
}

#[tokio::test]
async fn plain_tls_negotiates_tls13_and_h2() {
    let setup = Setup::new();
    let negotiated = assert_accepted(setup.server(None), setup.client(None)).await;
    assert_eq!(negotiated.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(negotiated.version, Some(ProtocolVersion::TLSv1_3));
    assert_aead(negotiated.suite);
}

#[tokio::test]
async fn alpn_falls_back_to_http11_and_works_without_alpn() {
    let setup = Setup::new();
    let mut http11 = (*setup.client(None)).clone();
    http11.alpn_protocols = vec![b"http/1.1".to_vec()];
    let negotiated = assert_accepted(setup.server(None), Arc::new(http11)).await;
    assert_eq!(negotiated.alpn.as_deref(), Some(&b"http/1.1"[..]));

    let mut none = (*setup.client(None)).clone();
    none.alpn_protocols = Vec::new();
    let negotiated = assert_accepted(setup.server(None), Arc::new(none)).await;
    assert_eq!(negotiated.alpn, None);
}

#[tokio::test]
async fn tls12_only_client_connects_with_an_aead_suite() {
    let setup = Setup::new();
    let negotiated = assert_accepted(setup.server(None), setup.tls12_client(None)).await;
    assert_eq!(negotiated.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(negotiated.alpn.as_deref(), Some(&b"h2"[..]));
    assert_aead(negotiated.suite);
}

#[tokio::test]
async fn client_with_an_untrusted_server_ca_fails() {
    let setup = Setup::new();
    let other = CertificateAuthority::generate("Some Other CA").expect("CA");
    let client = client_config(&RootCertificates::Pem(other.cert_pem().to_owned()), None)
        .expect("client config");
    let err = assert_rejected(setup.server(None), client).await;
    // The client rejects the server; the server sees the client's alert.
    assert!(matches!(err, rustls::Error::AlertReceived(_)), "{err:?}");
}

#[tokio::test]
async fn mtls_accepts_a_matching_dns_san() {
    let setup = Setup::new();
    let identity = setup.identity("proxy client", &["xks-client.test"]);
    let negotiated = assert_accepted(
        setup.mtls_server(&["xks-client.test"]),
        setup.client(Some(&identity)),
    )
    .await;
    assert_eq!(negotiated.version, Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn mtls_accepts_a_matching_cn_without_san() {
    let setup = Setup::new();
    let identity = setup.identity(KMS_CLIENT_NAME, &[]);
    assert_accepted(
        setup.mtls_server(&["cks.kms.us-east-1.amazonaws.com", KMS_CLIENT_NAME]),
        setup.client(Some(&identity)),
    )
    .await;
}

#[tokio::test]
async fn mtls_accepts_a_wildcard_and_any_case() {
    let setup = Setup::new();
    let identity = setup.identity("CKS.KMS.EU-WEST-1.AMAZONAWS.COM", &[]);
    assert_accepted(
        setup.mtls_server(&["*.kms.eu-west-1.amazonaws.com"]),
        setup.client(Some(&identity)),
    )
    .await;
}

#[tokio::test]
async fn mtls_rejects_a_wrong_name() {
    let setup = Setup::new();
    let identity = setup.identity("cks.kms.us-east-1.amazonaws.com", &["other.test"]);
    let err = assert_refused_certificate(
        setup.mtls_server(&[KMS_CLIENT_NAME, "*.eu-west-1.amazonaws.com"]),
        setup.client(Some(&identity)),
    )
    .await;
    assert_eq!(
        rejected_names(&err),
        ["cks.kms.us-east-1.amazonaws.com", "other.test"]
    );
    // The log line of a failed handshake (`%error`) says why.
    assert_eq!(
        err.to_string(),
        "other error: client certificate rejected: names [\"cks.kms.us-east-1.amazonaws.com\", \"other.test\"] match none of the accepted names"
    );
}

#[tokio::test]
async fn mtls_rejects_an_expired_certificate() {
    let setup = Setup::new();
    let now = time::OffsetDateTime::now_utc();
    let expired = setup
        .ca
        .issue_client(
            KMS_CLIENT_NAME,
            &[],
            Some(CertValidity {
                not_before: now - time::Duration::days(30),
                not_after: now - time::Duration::days(1),
            }),
        )
        .expect("expired certificate");
    let identity = ClientIdentity::from_issued(&expired, &setup.ca);
    for client in [
        setup.client(Some(&identity)),
        setup.tls12_client(Some(&identity)),
    ] {
        let err = assert_refused_certificate(setup.mtls_server(&[KMS_CLIENT_NAME]), client).await;
        assert!(
            matches!(
                certificate_error(&err),
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("certificate expired"), "{err}");
    }
}

#[tokio::test]
async fn mtls_rejects_a_certificate_from_another_ca() {
    let setup = Setup::new();
    for other_name in ["Other Self-Signed CA", "Handshake Test CA"] {
        // The second has the very same name as the trusted CA, but another key.
        let other = CertificateAuthority::generate(other_name).expect("other CA");
        let cert = other
            .issue_client(KMS_CLIENT_NAME, &[], None)
            .expect("client certificate");
        let identity = ClientIdentity::from_issued(&cert, &other);
        for client in [
            setup.client(Some(&identity)),
            setup.tls12_client(Some(&identity)),
        ] {
            let err =
                assert_refused_certificate(setup.mtls_server(&[KMS_CLIENT_NAME]), client).await;
            assert!(
                matches!(
                    certificate_error(&err),
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                ),
                "{other_name}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn mtls_rejects_a_self_signed_certificate() {
    let setup = Setup::new();
    // A leaf that is its own issuer, otherwise what KMS presents: the accepted name as CN,
    // clientAuth usage, currently valid.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, KMS_CLIENT_NAME);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).expect("self-signed certificate");
    let identity = ClientIdentity {
        cert_chain_pem: cert.pem(),
        key_pem: key.serialize_pem().into(),
    };
    for client in [
        setup.client(Some(&identity)),
        setup.tls12_client(Some(&identity)),
    ] {
        let err = assert_refused_certificate(setup.mtls_server(&[KMS_CLIENT_NAME]), client).await;
        assert!(
            matches!(certificate_error(&err), CertificateError::UnknownIssuer),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn mtls_rejects_a_client_without_certificate() {
    let setup = Setup::new();
    for client in [setup.client(None), setup.tls12_client(None)] {
        let (err, client_error) =
            assert_rejected_both(setup.mtls_server(&[KMS_CLIENT_NAME]), client).await;
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented),
            "{err:?}"
        );
        // rustls itself refuses this case, with TLS 1.3's alert (on TLS 1.2 as well).
        assert_eq!(
            rustls_error(&client_error),
            Some(&rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            "{client_error:?}"
        );
    }
}

#[tokio::test]
async fn mtls_over_tls12_accepts_and_rejects() {
    let setup = Setup::new();
    let good = setup.identity(KMS_CLIENT_NAME, &[]);
    let negotiated = assert_accepted(
        setup.mtls_server(&[KMS_CLIENT_NAME]),
        setup.tls12_client(Some(&good)),
    )
    .await;
    assert_eq!(negotiated.version, Some(ProtocolVersion::TLSv1_2));
    assert_aead(negotiated.suite);

    let wrong = setup.identity("cks.kms.us-east-1.amazonaws.com", &[]);
    let err = assert_refused_certificate(
        setup.mtls_server(&[KMS_CLIENT_NAME]),
        setup.tls12_client(Some(&wrong)),
    )
    .await;
    assert_eq!(rejected_names(&err), ["cks.kms.us-east-1.amazonaws.com"]);
}

/// Serves one fixed HTTP/1.1 response to one connection.
async fn start_http_server(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::other(
                    "connection closed before the request ended",
                ));
            }
            request.extend_from_slice(&buf[..n]);
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            .await?;
        tls.shutdown().await
    });
    (addr, task)
}

/// Runs curl (OpenSSL) against a server; returns curl's output.
async fn curl(
    config: Arc<ServerConfig>,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> std::process::Output {
    let (addr, server) = start_http_server(config).await;
    let port = addr.port();
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["--silent", "--show-error", "--http1.1", "--noproxy", "*"])
        .args(["--max-time", "20"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{SERVER_NAME}:{port}:127.0.0.1"));
    if let Some((cert, key)) = client_cert {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    command.arg(format!("https://{SERVER_NAME}:{port}/"));
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("curl finished in time")
        .expect("curl must be installed (it is part of this test's requirements)");
    let served = tokio::time::timeout(DEADLINE, server)
        .await
        .expect("server finished in time")
        .expect("server task did not panic");
    if output.status.success() {
        served.expect("server side of a successful curl request");
    }
    output
}

#[tokio::test]
async fn curl_with_openssl_accepts_our_chain() {
    let setup = Setup::new();
    let output = curl(setup.server(None), &setup.path("ca.pem"), None).await;
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"ok\n");
}

#[tokio::test]
async fn curl_with_a_client_certificate_passes_mtls() {
    let setup = Setup::new();
    let identity = setup.identity(KMS_CLIENT_NAME, &[]);
    let (cert, key) = (setup.path("client.pem"), setup.path("client-key.pem"));
    write_public_pem(&cert, &identity.cert_chain_pem).expect("write");
    write_private_pem(&key, &identity.key_pem).expect("write");

    let server = setup.mtls_server(&[KMS_CLIENT_NAME]);
    let output = curl(
        Arc::clone(&server),
        &setup.path("ca.pem"),
        Some((&cert, &key)),
    )
    .await;
    assert!(
        output.status.success(),
        "curl with a client certificate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"ok\n");

    // Without the certificate, curl gets no response.
    let output = curl(server, &setup.path("ca.pem"), None).await;
    assert!(
        !output.status.success(),
        "curl without a client certificate succeeded"
    );
    assert!(output.stdout.is_empty());
}
