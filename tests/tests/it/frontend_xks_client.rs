//! The front end's XKS client (`kms_frontend::xks_client`) calling proxies as AWS KMS does.
//!
//! Against the real `xks-proxy` (reached as `https://xks.test` through the client's resolve
//! map): health, metadata, encrypt/decrypt round trips, the proxy's error answers, transport
//! failures (nothing listening, an untrusted CA, a host name the certificate does not cover,
//! a proxy slower than the budget) and connection reuse. Against a fake HTTPS proxy written
//! here (tokio-rustls, raw HTTP/1.1): answers that are not valid XKS answers, and an expired
//! server certificate.
//!
//! Expected classifications come from kms-api.md §3.6 (ConnectionErrorCode values) and the
//! XKS spec (response rules), not from the client's code.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kms_frontend::xks_client::{ProxyTarget, XksCallError, XksClient, XksClientConfig};
use serde_json::json;
use service_tls::client::{ClientIdentity, RootCertificates};
use service_tls::pki::{CertValidity, CertificateAuthority, ServerCertRequest};
use sha2::{Digest, Sha256};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xks_api::ErrorName;
use xks_api::types::{HealthStatus, KeyStatus, RequestMetadata};

const REGION: &str = "us-east-1";
const KEY: &str = "k1";
const PATH: &str = "/s/kms/xks/v1";
const HOST: &str = "xks.test";
const ENDPOINT: &str = "https://xks.test";
/// A budget for calls that must succeed on a busy 2-core test machine.
const GENEROUS: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Helpers

fn health_meta() -> RequestMetadata {
    RequestMetadata {
        kms_request_id: testkit::xks::request_id(),
        kms_operation: "KmsHealthCheck".into(),
        aws_principal_arn: None,
        aws_source_vpc: None,
        aws_source_vpce: None,
        kms_key_arn: None,
        kms_via_service: None,
    }
}

fn key_meta(op: &str) -> RequestMetadata {
    RequestMetadata {
        kms_operation: op.into(),
        aws_principal_arn: Some("arn:aws:iam::111122223333:user/alice".into()),
        kms_key_arn: Some(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        ),
        ..health_meta()
    }
}

fn proxy_with(spec: StoreSpec, extra: &str) -> RunningProxy {
    ProxyFixture::new().store(spec).extra(extra).start()
}

fn proxy() -> RunningProxy {
    proxy_with(StoreSpec::new("s", "/s").with_keys(&[KEY]), "")
}

fn ca_of(p: &RunningProxy) -> RootCertificates {
    RootCertificates::Pem(std::fs::read_to_string(&p.fixture.pki.ca_pem).expect("read CA"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn client(trust: RootCertificates, resolve: &[(&str, u16)], timeout: Duration) -> XksClient {
    XksClient::new(XksClientConfig {
        trust,
        resolve: resolve
            .iter()
            .map(|(host, port)| ((*host).to_owned(), local(*port)))
            .collect(),
        client_identity: None,
        timeout,
        allow_private_endpoints: true,
    })
    .expect("XKS client")
}

/// A client for the proxy's `xks.test` name.
fn client_for(p: &RunningProxy, timeout: Duration) -> XksClient {
    client(ca_of(p), &[(HOST, p.port)], timeout)
}

fn target(p: &RunningProxy) -> ProxyTarget<'_> {
    let (akid, secret) = &p.fixture.stores[0].credentials[0];
    ProxyTarget {
        uri_endpoint: ENDPOINT,
        uri_path: PATH,
        access_key_id: akid,
        secret,
        region: REGION,
    }
}

#[track_caller]
fn assert_proxy_error<T: std::fmt::Debug>(r: Result<T, XksCallError>, name: ErrorName, code: &str) {
    let err = r.expect_err("the call must fail");
    assert_eq!(err.proxy_error_name(), Some(name), "{err:?}");
    assert_eq!(err.connection_error_code(), code, "{err:?}");
}

// ---------------------------------------------------------------------------------------
// The real proxy: successes

#[tokio::test]
async fn health_metadata_and_round_trips_against_the_real_proxy() {
    let p = proxy();
    let c = client_for(&p, GENEROUS);
    let t = target(&p);

    let h = c.health(&t, health_meta()).await.expect("health");
    assert!(h.xks_proxy_fleet_size > 0);
    assert!(!h.xks_proxy_vendor.is_empty() && !h.ekm_vendor.is_empty());
    assert_eq!(h.ekm_fleet_details.len(), 1);
    assert_eq!(h.ekm_fleet_details[0].health_status, HealthStatus::Active);

    let m = c
        .get_key_metadata(&t, KEY, key_meta("CreateKey"))
        .await
        .expect("metadata");
    assert_eq!(m.key_spec, "AES_256");
    assert!(m.key_usage.iter().any(|u| u == "ENCRYPT"));
    assert!(m.key_usage.iter().any(|u| u == "DECRYPT"));
    assert_eq!(m.key_status, KeyStatus::Enabled);

    // With AAD (and the proxy's ciphertextMetadata carried back), and without AAD.
    for (plaintext, aad) in [
        (
            testkit::random_bytes(4112),
            b"\x02\x05key-1 and a context digest".to_vec(),
        ),
        (b"inner ciphertext".to_vec(), Vec::new()),
        (Vec::new(), b"aad only".to_vec()),
    ] {
        let e = c
            .encrypt(&t, KEY, key_meta("Encrypt"), &plaintext, &aad)
            .await
            .expect("encrypt");
        assert_eq!(e.ciphertext.len(), plaintext.len());
        if !plaintext.is_empty() {
            assert_ne!(
                e.ciphertext.as_slice(),
                plaintext.as_slice(),
                "not encrypted"
            );
        }
        assert!(e.ciphertext_data_integrity_value.is_some());
        let metadata = e.ciphertext_metadata.as_ref().map(|m| m.as_slice());
        let back = c
            .decrypt(
                &t,
                KEY,
                key_meta("Decrypt"),
                e.ciphertext.as_slice(),
                metadata,
                e.initialization_vector.as_slice(),
                e.authentication_tag.as_slice(),
                &aad,
            )
            .await
            .expect("decrypt");
        assert_eq!(back.as_slice(), plaintext.as_slice());

        // The AAD is bound: other AAD is the proxy's InvalidCiphertextException.
        let r = c
            .decrypt(
                &t,
                KEY,
                key_meta("Decrypt"),
                e.ciphertext.as_slice(),
                metadata,
                e.initialization_vector.as_slice(),
                e.authentication_tag.as_slice(),
                b"other aad",
            )
            .await;
        assert_proxy_error(
            r,
            ErrorName::InvalidCiphertextException,
            "XKS_PROXY_INVALID_RESPONSE",
        );
    }
}

// ---------------------------------------------------------------------------------------
// The real proxy: error answers

#[tokio::test]
async fn proxy_error_answers_become_proxy_errors_with_kms_connection_codes() {
    let p = proxy();
    let c = client_for(&p, GENEROUS);
    let t = target(&p);

    let r = c
        .get_key_metadata(&t, "no-such-key", key_meta("CreateKey"))
        .await;
    assert_proxy_error(
        r,
        ErrorName::KeyNotFoundException,
        "XKS_PROXY_INVALID_RESPONSE",
    );
    let r = c
        .encrypt(&t, "no-such-key", key_meta("Encrypt"), b"x", b"")
        .await;
    assert_proxy_error(
        r,
        ErrorName::KeyNotFoundException,
        "XKS_PROXY_INVALID_RESPONSE",
    );

    let wrong_secret = testkit::random_secret();
    let bad = ProxyTarget {
        secret: &wrong_secret,
        ..t
    };
    assert_proxy_error(
        c.health(&bad, health_meta()).await,
        ErrorName::AuthenticationFailedException,
        "INVALID_CREDENTIALS",
    );
    assert_proxy_error(
        c.get_key_metadata(&bad, KEY, key_meta("CreateKey")).await,
        ErrorName::AuthenticationFailedException,
        "INVALID_CREDENTIALS",
    );

    let unknown_akid = testkit::random_access_key_id();
    let bad = ProxyTarget {
        access_key_id: &unknown_akid,
        ..t
    };
    assert_proxy_error(
        c.health(&bad, health_meta()).await,
        ErrorName::AuthenticationFailedException,
        "INVALID_CREDENTIALS",
    );

    for path in ["/other/kms/xks/v1", "/kms/xks/v1"] {
        let bad = ProxyTarget {
            uri_path: path,
            ..t
        };
        assert_proxy_error(
            c.health(&bad, health_meta()).await,
            ErrorName::InvalidUriPathException,
            "XKS_PROXY_INVALID_CONFIGURATION",
        );
    }

    // The client still works after all those errors.
    c.health(&t, health_meta()).await.expect("health");
}

// ---------------------------------------------------------------------------------------
// Transport failures

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let closed = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ca = CertificateAuthority::generate("unused CA").expect("CA");
    let c = client(
        RootCertificates::Pem(ca.cert_pem().to_owned()),
        &[(HOST, closed)],
        GENEROUS,
    );
    let t = ProxyTarget {
        uri_endpoint: ENDPOINT,
        uri_path: PATH,
        access_key_id: "AKIDAKIDAKIDAKIDAKID",
        secret: "unused-secret-unused-secret-unused-secret-12",
        region: REGION,
    };
    let err = c
        .health(&t, health_meta())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, XksCallError::Unreachable(_)), "{err:?}");
    assert_eq!(err.connection_error_code(), "XKS_PROXY_NOT_REACHABLE");
    assert!(!format!("{err} {err:?}").contains(t.secret));
}

#[tokio::test]
async fn tls_failures_are_invalid_tls_configuration() {
    let p = proxy();
    let t = target(&p);

    // A client trusting another CA.
    let other_ca = CertificateAuthority::generate("another CA").expect("CA");
    let c = client(
        RootCertificates::Pem(other_ca.cert_pem().to_owned()),
        &[(HOST, p.port)],
        GENEROUS,
    );
    let err = c.health(&t, health_meta()).await.expect_err("untrusted CA");
    assert!(
        matches!(&err, XksCallError::Tls(m) if m.contains("UnknownIssuer")),
        "{err:?}"
    );
    assert_eq!(
        err.connection_error_code(),
        "XKS_PROXY_INVALID_TLS_CONFIGURATION"
    );

    // A host name the certificate does not cover (the right CA, the right socket).
    let c = client(ca_of(&p), &[("other.test", p.port)], GENEROUS);
    let other = ProxyTarget {
        uri_endpoint: "https://other.test",
        ..t
    };
    let err = c
        .health(&other, health_meta())
        .await
        .expect_err("wrong host name");
    assert!(
        matches!(&err, XksCallError::Tls(m) if m.contains("not valid for name")),
        "{err:?}"
    );
    assert_eq!(
        err.connection_error_code(),
        "XKS_PROXY_INVALID_TLS_CONFIGURATION"
    );

    // The same client reaches the proxy by a covered name.
    let c = client(
        ca_of(&p),
        &[("other.test", p.port), (HOST, p.port)],
        GENEROUS,
    );
    c.health(&t, health_meta()).await.expect("health");

    // Plain HTTP is never spoken.
    let plain = ProxyTarget {
        uri_endpoint: "http://xks.test",
        ..t
    };
    let err = c.health(&plain, health_meta()).await.expect_err("http://");
    assert!(matches!(err, XksCallError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn mtls_proxies_get_the_client_identity() {
    let clients_ca = CertificateAuthority::generate("KMS client CA").expect("CA");
    let mut f = ProxyFixture::new().store(StoreSpec::new("s", "/s").with_keys(&[KEY]));
    let ca_file = f.path().join("tls/clients-ca.pem");
    std::fs::write(&ca_file, clients_ca.cert_pem()).expect("write");
    f.client_auth = Some((ca_file, vec!["cks.kms.us-east-1.amazonaws.com".into()]));
    let p = f.start();
    let t = target(&p);

    // KMS's certificate: CN=cks.kms.<region>.amazonaws.com, no SAN.
    let kms = clients_ca
        .issue_client("cks.kms.us-east-1.amazonaws.com", &[], None)
        .expect("client cert");
    let with_identity = XksClient::new(XksClientConfig {
        client_identity: Some(ClientIdentity::from_issued(&kms, &clients_ca)),
        resolve: vec![(HOST.into(), local(p.port))],
        timeout: GENEROUS,
        ..XksClientConfig::new(ca_of(&p))
    })
    .expect("client");
    with_identity
        .health(&t, health_meta())
        .await
        .expect("mTLS health");

    // Without a client certificate the proxy refuses the connection. With TLS 1.3 it does so
    // after our side of the handshake is complete: the client sees the proxy's alert (Tls)
    // or, when the connection is torn down before the alert is read, a lost connection
    // (Unreachable). Never anything else.
    let without = client_for(&p, GENEROUS);
    for _ in 0..5 {
        let err = without
            .health(&t, health_meta())
            .await
            .expect_err("no client certificate");
        match &err {
            XksCallError::Tls(m) => {
                assert!(m.contains("CertificateRequired"), "{m}");
                assert_eq!(
                    err.connection_error_code(),
                    "XKS_PROXY_INVALID_TLS_CONFIGURATION"
                );
            }
            XksCallError::Unreachable(_) => {
                assert_eq!(err.connection_error_code(), "XKS_PROXY_NOT_REACHABLE");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_proxy_answering_after_the_budget_is_timed_out() {
    let mut spec = StoreSpec::new("s", "/s").with_keys(&[KEY]);
    spec.fault_injection = Some("slow_keys = [\"k1\"]\nslow_ms = 200".into());
    let p = proxy_with(spec, "[limits]\nbackend_deadline_ms = 249\n");
    let t = target(&p);

    // With time to spare, the slow key answers (after ~200 ms, within the proxy's deadline).
    let patient = client_for(&p, GENEROUS);
    patient
        .get_key_metadata(&t, KEY, key_meta("CreateKey"))
        .await
        .expect("slow but within the proxy's deadline");

    // With 50 ms, the client gives up first. Warm the connection up so the budget is spent
    // waiting for the answer, not on the handshake.
    let hasty = client_for(&p, Duration::from_millis(50));
    let mut warmed = false;
    for _ in 0..20 {
        if hasty.health(&t, health_meta()).await.is_ok() {
            warmed = true;
            break;
        }
    }
    assert!(warmed, "health never answered within 50 ms");
    let started = Instant::now();
    let err = hasty
        .get_key_metadata(&t, KEY, key_meta("CreateKey"))
        .await
        .expect_err("too slow");
    let elapsed = started.elapsed();
    assert_eq!(err, XksCallError::Timeout);
    assert_eq!(err.connection_error_code(), "XKS_PROXY_TIMED_OUT");
    assert!(
        elapsed < Duration::from_millis(190),
        "gave up after {elapsed:?}, not after the 50 ms budget"
    );
    // The encrypt of that key too: the budget covers every call.
    let err = hasty
        .encrypt(&t, KEY, key_meta("Encrypt"), b"x", b"")
        .await
        .expect_err("too slow");
    assert_eq!(err, XksCallError::Timeout);
}

#[tokio::test]
async fn calls_through_one_client_share_one_connection() {
    let p = proxy();
    let c = client_for(&p, GENEROUS);
    let t = target(&p);
    let before = p.metric("xks_proxy_connections_accepted_total").await;
    for i in 0..20 {
        if i % 2 == 0 {
            c.health(&t, health_meta()).await.expect("health");
        } else {
            let e = c
                .encrypt(&t, KEY, key_meta("Encrypt"), b"data", b"aad")
                .await
                .expect("encrypt");
            assert_eq!(e.ciphertext.len(), 4);
        }
    }
    let after = p.metric("xks_proxy_connections_accepted_total").await;
    assert_eq!(
        after - before,
        1.0,
        "20 sequential calls opened {} connections",
        after - before
    );
}

// ---------------------------------------------------------------------------------------
// A fake proxy for answers the real one never gives

/// What the fake proxy does with one request.
enum Answer {
    /// An HTTP/1.1 response with this status and body.
    Http(u16, Vec<u8>),
    /// These bytes, then close.
    Raw(Vec<u8>),
}

type Responder = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// An HTTPS server (HTTP/1.1 only) for `xks.test` answering by request path.
struct FakeProxy {
    port: u16,
    ca_pem: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_proxy(validity: Option<CertValidity>, respond: Responder) -> FakeProxy {
    let ca = CertificateAuthority::generate("fake proxy CA").expect("CA");
    let mut request = ServerCertRequest::new(&[HOST], &[]);
    if let Some(v) = validity {
        request.validity = v;
    }
    let leaf = ca.issue_server_with(&request).expect("server cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (chain, key) = testkit::pki::write_leaf(dir.path(), "fake", &leaf, &ca);
    let config = service_tls::load_server_config(&service_tls::ServerTlsFiles {
        cert_chain: chain,
        private_key: key,
        client_auth: None,
    })
    .expect("server TLS config");
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, respond) = (acceptor.clone(), Arc::clone(&respond));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Some(path) = read_request(&mut tls).await else {
                    return;
                };
                let bytes = match respond(&path) {
                    Answer::Http(status, body) => {
                        let mut out = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        out.extend_from_slice(&body);
                        out
                    }
                    Answer::Raw(bytes) => bytes,
                };
                let _ = tls.write_all(&bytes).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    FakeProxy {
        port,
        ca_pem: ca.cert_pem().to_owned(),
        _dir: dir,
        task,
    }
}

/// Reads one HTTP/1.1 request (headers, then `content-length` bytes); returns its path.
async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(path)
}

const PLAINTEXT_LEN: usize = 32;
const FAKE_AAD: &[u8] = b"aad sent by the client";

/// An encrypt answer with these parts and the CDIV over `cdiv_aad` (None: no CDIV).
fn encrypt_body(ct_len: usize, iv_len: usize, cdiv_aad: Option<&[u8]>) -> Vec<u8> {
    let (ct, iv, tag) = (vec![0xc7; ct_len], vec![0x1f; iv_len], vec![0x7a; 16]);
    let mut body = json!({
        "ciphertext": B64.encode(&ct),
        "initializationVector": B64.encode(&iv),
        "authenticationTag": B64.encode(&tag),
    });
    if let Some(aad) = cdiv_aad {
        let digest = Sha256::new()
            .chain_update(aad)
            .chain_update(&iv)
            .chain_update(&ct)
            .chain_update(&tag)
            .finalize();
        body["ciphertextDataIntegrityValue"] = json!(B64.encode(digest));
    }
    body.to_string().into_bytes()
}

fn fake_answers(path: &str) -> Answer {
    let key = path
        .strip_prefix("/kms/xks/v1/keys/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    match (path, key) {
        ("/kms/xks/v1/health", _) => Answer::Http(
            200,
            json!({
                "xksProxyFleetSize": 0, "xksProxyVendor": "v", "xksProxyModel": "m",
                "ekmVendor": "e",
                "ekmFleetDetails": [{"id": "1", "model": "m", "healthStatus": "ACTIVE"}]
            })
            .to_string()
            .into_bytes(),
        ),
        (_, "good") => Answer::Http(200, encrypt_body(PLAINTEXT_LEN, 12, Some(FAKE_AAD))),
        (_, "not-json") => Answer::Http(200, b"<html>hello from a web server</html>".to_vec()),
        (_, "short-ciphertext") => {
            Answer::Http(200, encrypt_body(PLAINTEXT_LEN - 1, 12, Some(FAKE_AAD)))
        }
        (_, "iv-8") => Answer::Http(200, encrypt_body(PLAINTEXT_LEN, 8, Some(FAKE_AAD))),
        (_, "wrong-cdiv") => Answer::Http(200, encrypt_body(PLAINTEXT_LEN, 12, Some(b""))),
        (_, "no-cdiv") => Answer::Http(200, encrypt_body(PLAINTEXT_LEN, 12, None)),
        (_, "unknown-error") => Answer::Http(
            400,
            br#"{"errorName":"FancyNewException","errorMessage":"?"}"#.to_vec(),
        ),
        (_, "throttled") => Answer::Http(
            429,
            br#"{"errorName":"ThrottlingException","errorMessage":"slow down"}"#.to_vec(),
        ),
        (_, "html-error") => Answer::Http(502, b"<html>Bad Gateway</html>".to_vec()),
        (_, "method-not-allowed") => Answer::Http(405, Vec::new()),
        (_, "huge") => {
            // No content-length: the body runs until the connection closes.
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            connection: close\r\n\r\n{\"ciphertext\":\""
                .to_vec();
            out.extend(std::iter::repeat_n(b'A', 100 * 1024));
            Answer::Raw(out)
        }
        (_, "not-http") => Answer::Raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        _ => Answer::Http(404, br#"{"errorName":"KeyNotFoundException"}"#.to_vec()),
    }
}

fn fake_target() -> ProxyTarget<'static> {
    ProxyTarget {
        uri_endpoint: ENDPOINT,
        uri_path: "/kms/xks/v1",
        access_key_id: "AKIDAKIDAKIDAKIDAKID",
        secret: "fake-secret-fake-secret-fake-secret-fake-12",
        region: REGION,
    }
}

#[tokio::test]
async fn invalid_answers_are_invalid_responses() {
    let fake = fake_proxy(None, Arc::new(fake_answers)).await;
    let c = client(
        RootCertificates::Pem(fake.ca_pem.clone()),
        &[(HOST, fake.port)],
        GENEROUS,
    );
    let t = fake_target();
    let plaintext = [0x42u8; PLAINTEXT_LEN];

    // The fake itself works: a valid answer is accepted.
    let ok = c
        .encrypt(&t, "good", key_meta("Encrypt"), &plaintext, FAKE_AAD)
        .await
        .expect("a valid answer");
    assert_eq!(ok.initialization_vector.len(), 12);

    for (key, expected) in [
        ("not-json", "wrong shape"),
        (
            "short-ciphertext",
            "ciphertext is 31 bytes for a 32-byte plaintext",
        ),
        ("iv-8", "initializationVector is 8 bytes"),
        ("wrong-cdiv", "ciphertextDataIntegrityValue does not match"),
        ("no-cdiv", "ciphertextDataIntegrityValue is missing"),
        ("unknown-error", "FancyNewException"),
        ("html-error", "HTTP 502"),
        ("method-not-allowed", "HTTP 405 without a body"),
        ("huge", "larger than"),
        ("not-http", "not valid HTTP"),
    ] {
        let err = c
            .encrypt(&t, key, key_meta("Encrypt"), &plaintext, FAKE_AAD)
            .await
            .expect_err(key);
        match &err {
            XksCallError::InvalidResponse(m) => {
                assert!(m.contains(expected), "{key}: {m:?} lacks {expected:?}");
            }
            other => panic!("{key}: expected InvalidResponse, got {other:?}"),
        }
        assert_eq!(
            err.connection_error_code(),
            "XKS_PROXY_INVALID_RESPONSE",
            "{key}"
        );
    }

    // A health answer with fleet size 0.
    let err = c.health(&t, health_meta()).await.expect_err("fleet size 0");
    assert!(
        matches!(&err, XksCallError::InvalidResponse(m) if m.contains("xksProxyFleetSize")),
        "{err:?}"
    );

    // A well-formed error with a defined name is the proxy's error, whatever the body says.
    assert_proxy_error(
        c.encrypt(&t, "throttled", key_meta("Encrypt"), &plaintext, FAKE_AAD)
            .await,
        ErrorName::ThrottlingException,
        "XKS_PROXY_NOT_REACHABLE",
    );
    let err = c
        .get_key_metadata(&t, "anything-else", key_meta("CreateKey"))
        .await
        .expect_err("404");
    assert_eq!(
        err,
        XksCallError::Proxy {
            name: ErrorName::KeyNotFoundException,
            message: String::new()
        }
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_invalid_tls_configuration() {
    let now = time::OffsetDateTime::now_utc();
    let expired = CertValidity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let fake = fake_proxy(Some(expired), Arc::new(fake_answers)).await;
    let c = client(
        RootCertificates::Pem(fake.ca_pem.clone()),
        &[(HOST, fake.port)],
        GENEROUS,
    );
    let err = c
        .encrypt(
            &fake_target(),
            "good",
            key_meta("Encrypt"),
            &[0; 32],
            FAKE_AAD,
        )
        .await
        .expect_err("expired");
    assert!(
        matches!(&err, XksCallError::Tls(m) if m.contains("expired")),
        "{err:?}"
    );
    assert_eq!(
        err.connection_error_code(),
        "XKS_PROXY_INVALID_TLS_CONFIGURATION"
    );
}
