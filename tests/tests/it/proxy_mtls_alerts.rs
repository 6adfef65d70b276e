//! mTLS refusals as AWS's test client sees them: `curl -v` (OpenSSL) against the real proxy.
//!
//! The reference XKS proxy refuses a client certificate that fails verification (expired,
//! self-signed, from an unknown CA, or a valid chain with a name that is not accepted) with
//! the TLS alert `handshake_failure`, and AWS's test client looks for "TLS alert, handshake
//! failure" in `curl -v` output. A client sending no certificate at all gets TLS 1.3's
//! `certificate_required` (rustls sends it on TLS 1.2 as well). A client with an accepted
//! certificate gets a signed 200, so these tests cannot pass by the proxy refusing everyone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use service_tls::pki::{CertValidity, CertificateAuthority};
use testkit::pki::write_leaf;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks;

/// The name the proxy accepts, as KMS presents it (CN, no SAN).
const ACCEPTED: &str = "cks.kms.eu-west-1.amazonaws.com";
/// The host name of the proxy's server certificate.
const HOST: &str = "xks.test";
/// How curl -v names a received fatal `handshake_failure` alert: OpenSSL's long description,
/// then (level << 8 | description) = (2 << 8 | 40).
const HANDSHAKE_FAILURE: &str = "handshake failure (552)";
/// The same for a fatal `certificate_required` (2 << 8 | 116), which OpenSSL 3.0 has no
/// long description for.
const CERTIFICATE_REQUIRED: &str = "unknown (628)";
/// How many connections in a row must see the alert.
const REPEAT: usize = 5;
/// Bound on waiting for the proxy's log line about a refused handshake.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// A TLS version curl is limited to.
#[derive(Debug, Clone, Copy)]
enum Tls {
    V13,
    V12,
}

impl Tls {
    fn curl_args(self) -> &'static [&'static str] {
        match self {
            Self::V13 => &["--tlsv1.3", "--tls-max", "1.3"],
            Self::V12 => &["--tlsv1.2", "--tls-max", "1.2"],
        }
    }

    /// How curl -v prefixes a record of this version.
    fn trace_name(self) -> &'static str {
        match self {
            Self::V13 => "TLSv1.3",
            Self::V12 => "TLSv1.2",
        }
    }
}

/// A proxy requiring client certificates from `clients_ca` named [`ACCEPTED`].
struct MtlsProxy {
    proxy: RunningProxy,
    clients_ca: CertificateAuthority,
    /// Where the client certificates and keys are written.
    dir: PathBuf,
}

impl MtlsProxy {
    fn start() -> Self {
        let clients_ca = CertificateAuthority::generate("KMS client CA").expect("CA");
        let mut f = ProxyFixture::new().store(StoreSpec::new("main", ""));
        let dir = f.path().join("clients");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ca_file = dir.join("clients-ca.pem");
        std::fs::write(&ca_file, clients_ca.cert_pem()).expect("write");
        f.client_auth = Some((ca_file, vec![ACCEPTED.into()]));
        Self {
            proxy: f.start(),
            clients_ca,
            dir,
        }
    }

    /// Writes a certificate issued by `ca` (with `validity`, or the default) and its key.
    fn issue(
        &self,
        file_name: &str,
        ca: &CertificateAuthority,
        common_name: &str,
        validity: Option<CertValidity>,
    ) -> (PathBuf, PathBuf) {
        let cert = ca
            .issue_client(common_name, &[], validity)
            .expect("client certificate");
        write_leaf(&self.dir, file_name, &cert, ca)
    }

    /// Runs `curl -v` with a signed health request, presenting `identity` if given.
    fn curl(&self, tls: Tls, identity: Option<&(PathBuf, PathBuf)>) -> Curl {
        let (akid, secret) = &self.proxy.fixture.stores[0].credentials[0];
        let port = self.proxy.port;
        let mut command = Command::new("curl");
        command
            .args(["-v", "--silent", "--show-error", "--noproxy", "*"])
            .args(["--max-time", "20"])
            .args(tls.curl_args())
            .arg("--cacert")
            .arg(&self.proxy.fixture.pki.ca_pem)
            .args(["--resolve", &format!("{HOST}:{port}:127.0.0.1")])
            .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"])
            .args(["--user", &format!("{akid}:{secret}")])
            .args(["-H", "content-type: application/json"])
            .args(["-d", &xks::health().to_string()])
            .args(["-w", "\n%{http_code}"]);
        if let Some((cert, key)) = identity {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command.arg(format!("https://{HOST}:{port}/kms/xks/v1/health"));
        Curl::run(command)
    }

    /// The proxy's log lines about failed handshakes so far.
    fn failed_handshakes(&self) -> Vec<String> {
        self.proxy
            .logs()
            .lines()
            .filter(|l| l.contains("TLS handshake failed"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) for the proxy's log line about the handshake failure after the `seen`
    /// first ones, and returns it.
    fn next_failed_handshake(&self, seen: usize) -> String {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            if let Some(line) = self.failed_handshakes().into_iter().nth(seen) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no new \"TLS handshake failed\" line within {LOG_WAIT:?}; logs:\n{}",
                self.proxy.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What curl did.
struct Curl {
    output: Output,
    /// curl's stderr: the verbose trace and the final error.
    trace: String,
    /// The HTTP status curl reports (`000` when there was no response).
    http_code: String,
    body: String,
}

impl Curl {
    fn run(mut command: Command) -> Self {
        let output = command.output().expect(
            "curl must be installed (apt-get install curl); the README's test command installs it",
        );
        let trace = String::from_utf8_lossy(&output.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, http_code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        Self {
            http_code: http_code.to_owned(),
            body: body.to_owned(),
            output,
            trace,
        }
    }

    /// The alerts curl received, as its trace names them after "(IN), TLS alert, ", each with
    /// the record version curl printed before it, e.g. `("TLSv1.3", "handshake failure (552)")`.
    fn received_alerts(&self) -> Vec<(String, String)> {
        self.trace
            .lines()
            .filter_map(|line| {
                let (before, alert) = line.split_once(" (IN), TLS alert, ")?;
                let version = before.trim_start_matches(['*', ' ']);
                Some((
                    version.to_owned(),
                    alert.trim_end_matches(':').trim().to_owned(),
                ))
            })
            .collect()
    }

    /// Asserts that curl got no HTTP response and received exactly one alert, `alert`, in a
    /// record of version `tls`.
    fn assert_refused_with(&self, what: &str, tls: Tls, alert: &str) {
        assert!(
            !self.output.status.success() && self.http_code == "000",
            "{what} over {tls:?}: expected no HTTP response, got {} {} (curl {:?})\n{}",
            self.http_code,
            self.body,
            self.output.status,
            self.trace
        );
        assert_eq!(
            self.received_alerts(),
            [(tls.trace_name().to_owned(), alert.to_owned())],
            "{what} over {tls:?}: curl's trace:\n{}",
            self.trace
        );
    }
}

/// One refused client certificate: a name for messages, the files, and what the proxy's log
/// line must say about why.
struct Refused {
    what: &'static str,
    identity: (PathBuf, PathBuf),
    reason: &'static str,
}

/// A certificate that is its own issuer (made by OpenSSL, independently of our PKI code),
/// otherwise what KMS presents: CN [`ACCEPTED`], clientAuth usage, currently valid.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("self-signed.pem"), dir.join("self-signed.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-new", "-nodes", "-days", "30"])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-subj", &format!("/CN={ACCEPTED}")])
        .args(["-addext", "extendedKeyUsage=clientAuth"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command must be installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn refused_client_certificates_get_handshake_failure_on_tls13_and_tls12() {
    let p = MtlsProxy::start();
    let now = time::OffsetDateTime::now_utc();
    let stranger_ca = CertificateAuthority::generate("Unknown client CA").expect("CA");
    let refused = [
        Refused {
            what: "expired",
            identity: p.issue(
                "expired",
                &p.clients_ca,
                ACCEPTED,
                Some(CertValidity {
                    not_before: now - time::Duration::days(30),
                    not_after: now - time::Duration::days(1),
                }),
            ),
            reason: "invalid peer certificate: certificate expired",
        },
        Refused {
            what: "self-signed",
            identity: self_signed(&p.dir),
            reason: "invalid peer certificate: UnknownIssuer",
        },
        Refused {
            what: "unknown CA",
            identity: p.issue("stranger", &stranger_ca, ACCEPTED, None),
            reason: "invalid peer certificate: UnknownIssuer",
        },
        Refused {
            what: "name not accepted",
            identity: p.issue(
                "wrong-name",
                &p.clients_ca,
                "cks.kms.us-east-1.amazonaws.com",
                None,
            ),
            reason: "names [\"cks.kms.us-east-1.amazonaws.com\"] match none of the accepted names",
        },
    ];

    for tls in [Tls::V13, Tls::V12] {
        for case in refused.iter().flat_map(|case| [case; REPEAT]) {
            let seen = p.failed_handshakes().len();
            let curl = p.curl(tls, Some(&case.identity));
            curl.assert_refused_with(case.what, tls, HANDSHAKE_FAILURE);
            // OpenSSL's own error for the alert, as curl reports it last.
            assert!(
                curl.trace.contains("alert handshake failure"),
                "{} over {tls:?}: {}",
                case.what,
                curl.trace
            );
            // The proxy's log still says why, whatever the alert.
            let line = p.next_failed_handshake(seen);
            assert!(
                line.contains(&format!("client certificate rejected: {}", case.reason)),
                "{} over {tls:?}: the proxy logged {line:?}",
                case.what
            );
        }
    }
}

#[test]
fn no_client_certificate_gets_certificate_required() {
    let p = MtlsProxy::start();
    // Several times each: with TLS 1.3 the client has sent its request when the alert comes,
    // and it must read the alert every time, not a reset connection.
    for tls in [Tls::V13, Tls::V12]
        .into_iter()
        .flat_map(|tls| [tls; REPEAT])
    {
        let seen = p.failed_handshakes().len();
        let curl = p.curl(tls, None);
        curl.assert_refused_with("no certificate", tls, CERTIFICATE_REQUIRED);
        // OpenSSL 3.0 has no long description for alert 116 in the trace, but its error has.
        assert!(
            curl.trace.contains("tlsv13 alert certificate required"),
            "{tls:?}: {}",
            curl.trace
        );
        let line = p.next_failed_handshake(seen);
        assert!(line.contains("peer sent no certificates"), "{line}");
    }
}

#[test]
fn an_accepted_certificate_gets_a_signed_answer_on_tls13_and_tls12() {
    let p = MtlsProxy::start();
    let kms = p.issue("kms", &p.clients_ca, ACCEPTED, None);
    for tls in [Tls::V13, Tls::V12] {
        let curl = p.curl(tls, Some(&kms));
        assert!(
            curl.output.status.success() && curl.http_code == "200",
            "{tls:?}: {} {}\n{}",
            curl.http_code,
            curl.body,
            curl.trace
        );
        let body: serde_json::Value = serde_json::from_str(&curl.body).expect("JSON health");
        assert!(body["xksProxyFleetSize"].as_u64().is_some(), "{body}");
        assert!(
            curl.trace
                .contains(&format!("SSL connection using {}", tls.trace_name())),
            "{tls:?}: {}",
            curl.trace
        );
        assert_eq!(curl.received_alerts(), [], "{tls:?}: {}", curl.trace);
    }
}
