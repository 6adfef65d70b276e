//! Clients that misbehave, against the real proxy: early rejections must arrive whole over
//! h2 (curl's nghttp2 and hyper's h2 client), and slow clients (tricklers of TLS records or
//! request headers, stalled h2 bodies) must not take the proxy away from legitimate callers.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::raw::{H2Connection, Target, TrickleKind, Trickler, read_h2_body};
use testkit::xks;

const KEY: &str = "hostile-key";

/// One kind of request that the proxy rejects before it needs the body.
struct EarlyRejection {
    /// What it is, for failure messages.
    what: &'static str,
    /// curl options of this transfer (besides URL, TLS and body).
    curl_options: Vec<String>,
    /// Path after the base URL.
    path: String,
    /// Expected status.
    status: u16,
    /// Expected `errorName` (`None`: the spec's 405 has no body).
    error_name: Option<&'static str>,
}

fn early_rejections(p: &RunningProxy) -> Vec<EarlyRejection> {
    let prefix = &p.fixture.stores[0].prefix;
    let stranger = format!(
        "user = \"{}:{}\"\naws-sigv4 = \"aws:amz:us-east-1:kms-xks-proxy\"",
        testkit::random_access_key_id(),
        testkit::random_secret()
    );
    vec![
        EarlyRejection {
            what: "unknown access key id",
            curl_options: vec![stranger.clone()],
            path: format!("{prefix}/kms/xks/v1/keys/{KEY}/encrypt"),
            status: 401,
            error_name: Some("AuthenticationFailedException"),
        },
        EarlyRejection {
            what: "unknown access key id on an unknown prefix",
            curl_options: vec![stranger],
            path: "/unknown/kms/xks/v1/health".into(),
            status: 401,
            error_name: Some("AuthenticationFailedException"),
        },
        EarlyRejection {
            what: "no Authorization header",
            curl_options: vec![],
            path: format!("{prefix}/kms/xks/v1/health"),
            status: 401,
            error_name: Some("AuthenticationFailedException"),
        },
        EarlyRejection {
            what: "unparsable Authorization header",
            curl_options: vec!["header = \"authorization: AWS4-HMAC-SHA256 nonsense\"".into()],
            path: format!("{prefix}/kms/xks/v1/health"),
            status: 401,
            error_name: Some("AuthenticationFailedException"),
        },
        EarlyRejection {
            what: "PUT on a path that is not an API path",
            curl_options: vec!["request = \"PUT\"".into()],
            path: "/not/an/api/path".into(),
            status: 404,
            error_name: Some("InvalidUriPathException"),
        },
        EarlyRejection {
            what: "PUT on an API path",
            curl_options: vec!["request = \"PUT\"".into()],
            path: format!("{prefix}/kms/xks/v1/health"),
            status: 405,
            error_name: None,
        },
    ]
}

/// 1,000 early rejections in a row over h2 with curl (one process, one connection reused,
/// each transfer a separate POST-like request with a body): every transfer ends cleanly
/// (curl exit code 0, not 92 "HTTP/2 stream was not closed cleanly") with its status and
/// JSON error body.
#[test]
fn early_rejections_arrive_whole_over_h2_with_curl() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "/xks/main").with_keys(&[KEY]))
        .start();
    let kinds = early_rejections(&p);
    let body_file = p.fixture.path().join("encrypt.json");
    std::fs::write(
        &body_file,
        xks::encrypt(&testkit::random_bytes(64), Some(b"aad"), true).to_string(),
    )
    .expect("write body");
    let mut config = String::new();
    for i in 0..1000 {
        let kind = &kinds[i % kinds.len()];
        if i > 0 {
            config.push_str("next\n");
        }
        let _ = writeln!(
            config,
            "url = \"https://xks.test:{port}{path}\"\nhttp2\ncacert = \"{ca}\"\nresolve = \"xks.test:{port}:127.0.0.1\"\nheader = \"content-type: application/json\"\ndata-binary = \"@{body}\"\nwrite-out = \"\\n@@ %{{http_code}} %{{http_version}} %{{exitcode}}\\n\"",
            port = p.port,
            path = kind.path,
            ca = p.fixture.pki.ca_pem.display(),
            body = body_file.display(),
        );
        for o in &kind.curl_options {
            let _ = writeln!(config, "{o}");
        }
    }
    let config_file = p.fixture.path().join("curl.conf");
    std::fs::write(&config_file, config).expect("write curl config");
    let out = Command::new("curl")
        .args(["-sS", "-K"])
        .arg(&config_file)
        .output()
        .expect(
            "curl must be installed (apt-get install curl); the README's test command installs it",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut transfers = Vec::new();
    let mut rest = stdout.as_ref();
    while let Some((body, tail)) = rest.split_once("\n@@ ") {
        let (status_line, after) = tail.split_once('\n').unwrap_or((tail, ""));
        transfers.push((body.to_owned(), status_line.to_owned()));
        rest = after;
    }
    assert_eq!(
        transfers.len(),
        1000,
        "curl did not report every transfer; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    for (i, (body, status_line)) in transfers.iter().enumerate() {
        let kind = &kinds[i % kinds.len()];
        let fields: Vec<&str> = status_line.split(' ').collect();
        let expected_name = kind.error_name.unwrap_or("");
        let name = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["errorName"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let ok = fields.len() == 3
            && fields[0] == kind.status.to_string()
            && fields[1] == "2"
            && fields[2] == "0"
            && name == expected_name;
        if !ok {
            failures.push(format!(
                "#{i} ({}): status, version, curl exit = {status_line:?}, body {body:?}",
                kind.what
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 early rejections did not arrive whole over h2, e.g.:\n{}\ncurl stderr: {}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n"),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The same 1,000 early rejections with hyper's h2 client (reqwest, ALPN h2), each a
/// separate request with a body on one reused connection.
#[tokio::test]
async fn early_rejections_arrive_whole_over_h2_with_the_rust_client() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "/xks/main").with_keys(&[KEY]))
        .start();
    let http = testkit::client::http_client(&p.fixture.pki.ca_pem, None, false);
    let stranger = testkit::client::XksClient::with_http(
        http.clone(),
        &testkit::random_access_key_id(),
        &testkit::random_secret(),
    );
    let body = xks::encrypt(&testkit::random_bytes(64), Some(b"aad"), true);
    let encrypt = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let mut failures = Vec::new();
    for i in 0..1000 {
        let (what, status, name, reply) = match i % 4 {
            0 => (
                "unknown access key id",
                401,
                "AuthenticationFailedException",
                stranger.try_post_json(&encrypt, &body).await,
            ),
            1 => (
                "no Authorization header",
                401,
                "AuthenticationFailedException",
                raw_post(&http, "POST", &encrypt, &body, None).await,
            ),
            2 => (
                "unparsable Authorization header",
                401,
                "AuthenticationFailedException",
                raw_post(
                    &http,
                    "POST",
                    &encrypt,
                    &body,
                    Some("AWS4-HMAC-SHA256 nonsense"),
                )
                .await,
            ),
            _ => (
                "PUT on a path that is not an API path",
                404,
                "InvalidUriPathException",
                raw_post(
                    &http,
                    "PUT",
                    &format!("{}/not/an/api/path", p.base_url()),
                    &body,
                    None,
                )
                .await,
            ),
        };
        match reply {
            Ok(r) if r.version == http::Version::HTTP_2 && r.status == status => {
                if r.error_name() != name {
                    failures.push(format!("#{i} ({what}): body {:?}", r.json));
                }
            }
            Ok(r) => failures.push(format!("#{i} ({what}): {} {:?}", r.status, r.version)),
            Err(e) => failures.push(format!("#{i} ({what}): {e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 early rejections failed over h2, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

async fn raw_post(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: &serde_json::Value,
    authorization: Option<&str>,
) -> Result<testkit::client::Reply, reqwest::Error> {
    let method = http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp.headers().clone();
    let raw = resp.bytes().await?.to_vec();
    let json = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
    Ok(testkit::client::Reply {
        status,
        json,
        raw,
        headers,
        version,
    })
}

/// A client that sends its body in a second step after the headers (as curl does for
/// larger uploads) still gets every early rejection whole: the server reads the body before
/// answering, so the body is accepted and the stream ends cleanly (no RST_STREAM while the
/// client is sending).
#[tokio::test]
async fn early_rejections_wait_for_a_body_sent_after_the_headers() {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("main", "/xks/main").with_keys(&[KEY]))
        .start();
    let target = Target::localhost(p.port, &p.fixture.pki.ca_pem);
    let mut h2 = H2Connection::connect(&target).await;
    let body = xks::encrypt(b"later", None, false).to_string().into_bytes();
    let encrypt = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let stranger = signed_head(
        &encrypt,
        &body,
        &testkit::random_access_key_id(),
        &testkit::random_secret(),
    );
    let cases = [
        (
            "unknown access key id",
            stranger,
            401,
            Some("AuthenticationFailedException"),
        ),
        (
            "no Authorization header",
            head("POST", &encrypt, &body, None),
            401,
            Some("AuthenticationFailedException"),
        ),
        (
            "unparsable Authorization header",
            head("POST", &encrypt, &body, Some("AWS4-HMAC-SHA256 nonsense")),
            401,
            Some("AuthenticationFailedException"),
        ),
        (
            "PUT on a path that is not an API path",
            head(
                "PUT",
                &format!("{}/not/an/api/path", p.base_url()),
                &body,
                None,
            ),
            404,
            Some("InvalidUriPathException"),
        ),
        (
            "PUT on an API path",
            head("PUT", &encrypt, &body, None),
            405,
            None,
        ),
    ];
    for (what, request, status, error_name) in cases {
        let (response, mut stream) = h2.open(request).await;
        // The body follows the headers a moment later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream
            .send_data(body.clone().into(), true)
            .unwrap_or_else(|e| {
                panic!("{what}: the server reset the stream before the body was sent: {e}")
            });
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response.status().as_u16(), status, "{what}");
        let mut recv = response.into_body();
        let raw = read_h2_body(&mut recv)
            .await
            .unwrap_or_else(|e| panic!("{what}: the answer did not end cleanly: {e}"));
        if let Some(name) = error_name {
            let json: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            assert_eq!(json["errorName"], name, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Slow clients

/// A proxy with three connection slots, a 3 s idle timeout and a 1 s accept-to-headers
/// deadline (plus `extra` `[server]` settings).
fn small_proxy(extra: &str) -> RunningProxy {
    let mut f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    f.server_toml = format!(
        "max_connections = 3\nidle_timeout_seconds = 3\nrequest_header_timeout_ms = 1000\n{extra}"
    );
    f.start()
}

/// Starts three tricklers sending a byte a second, waits until they hold the three
/// connection slots, then asserts a signed health request is answered within 2 s and the
/// tricklers' connections were closed by the server.
async fn signed_request_is_answered_despite(p: &RunningProxy, kind: TrickleKind) {
    let target = Target::localhost(p.port, &p.fixture.pki.ca_pem);
    let tricklers: Vec<Trickler> = (0..3)
        .map(|_| Trickler::start(&target, kind.clone(), Duration::from_secs(1)))
        .collect();
    for t in &tricklers {
        t.wait_ready(Duration::from_secs(5)).await;
    }
    wait_for_open_connections(p, 3).await;
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        p.client(0).post_json(&p.api_url(0, "health"), &xks::health()),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("a signed health request was not answered within 2 s while three {kind:?} tricklers held the connection slots")
    });
    reply.ok();
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server closed the tricklers (not just served the request some other way).
    let deadline = Instant::now() + Duration::from_secs(2);
    while tricklers.iter().any(|t| t.closed_after().is_none()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tricklers {
        let after = t.closed_after().expect("the server closed the trickler");
        assert!(
            after < Duration::from_secs(2),
            "closed only after {after:?}"
        );
    }
}

async fn wait_for_open_connections(p: &RunningProxy, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.metric("xks_proxy_connections_open").await < f64::from(n) {
        assert!(
            Instant::now() < deadline,
            "the proxy did not accept {n} connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three TLS connections that send their request headers a byte a second (which used to
/// reset the idle timer forever) are closed by the 1 s accept-to-headers deadline.
#[tokio::test]
async fn header_tricklers_do_not_take_every_connection() {
    let p = small_proxy("");
    signed_request_is_answered_despite(&p, TrickleKind::Headers).await;
}

/// The same after a complete first request on each connection: the next request's headers
/// have their own deadline on a kept-alive HTTP/1.1 connection.
#[tokio::test]
async fn header_tricklers_on_kept_alive_connections_do_not_take_every_connection() {
    let p = small_proxy("");
    signed_request_is_answered_despite(
        &p,
        TrickleKind::HeadersAfterRequest {
            path: "/ping".into(),
        },
    )
    .await;
}

/// Three connections that send their TLS ClientHello a byte a second are closed by the same
/// deadline (it covers the handshake, which used to have a fixed 10 s).
#[tokio::test]
async fn client_hello_tricklers_do_not_take_every_connection() {
    let p = small_proxy("");
    signed_request_is_answered_despite(&p, TrickleKind::ClientHello).await;
}

/// A request whose body stalls gets an answer at the body deadline (400
/// ValidationException), over h2, instead of holding its stream and connection.
#[tokio::test]
async fn a_stalled_body_is_answered_at_the_body_deadline() {
    let p = small_proxy("request_body_timeout_ms = 1000");
    let target = Target::localhost(p.port, &p.fixture.pki.ca_pem);
    let mut h2 = H2Connection::connect(&target).await;
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let body = xks::health().to_string().into_bytes();
    let (response, _stream) = h2
        .open(signed_head(&p.api_url(0, "health"), &body, &akid, &secret))
        .await;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(2), response)
        .await
        .expect("answered within 2 s")
        .expect("an answer, not a reset");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.status(), 400);
    let raw = read_h2_body(&mut response.into_body())
        .await
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&raw).expect("JSON error body");
    assert_eq!(json["errorName"], "ValidationException", "{json}");
    assert!(
        json["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("did not arrive within 1000 ms")),
        "{json}"
    );
}

/// The per-connection h2 stream limit is the configured one, advertised in SETTINGS.
#[tokio::test]
async fn the_h2_stream_limit_is_configured() {
    let mut f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    f.server_toml = "max_concurrent_streams = 7".into();
    let p = f.start();
    let h2 = H2Connection::connect(&Target::localhost(p.port, &p.fixture.pki.ca_pem)).await;
    assert_eq!(
        h2.server_max_concurrent_streams(Duration::from_secs(5))
            .await,
        7
    );
}

/// 200 h2 streams that send headers with a known access key id and then stall their
/// bodies hold no in-flight permit (it is taken after the signature check): a legitimate
/// Encrypt still succeeds with `max_in_flight_requests = 8`. With a stream limit of 100
/// the 200 streams take two connections.
#[tokio::test]
async fn stalled_h2_bodies_do_not_hold_in_flight_permits() {
    let mut f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    f.server_toml =
        "max_in_flight_requests = 8\nmax_concurrent_streams = 100\nrequest_body_timeout_ms = 60000"
            .into();
    let p = f.start();
    let target = Target::localhost(p.port, &p.fixture.pki.ca_pem);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let encrypt = p.api_url(0, &format!("keys/{KEY}/encrypt"));
    let body = xks::encrypt(b"never sent", None, false)
        .to_string()
        .into_bytes();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut h2 = H2Connection::connect(&target).await;
        for _ in 0..100 {
            let (response, stream) = h2.open(signed_head(&encrypt, &body, &akid, &secret)).await;
            let answered = answered.clone();
            tokio::spawn(async move {
                if response.await.is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
            streams.push(stream);
        }
        connections.push(h2);
    }
    // Give the proxy time to start handling all 200 (a permit taken before the body would
    // be taken by now).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = p.client(0);
    for _ in 0..5 {
        let r = c
            .post_json(&encrypt, &xks::encrypt(b"legit", None, false))
            .await;
        r.ok();
    }
    assert_eq!(
        answered.load(Ordering::Relaxed),
        0,
        "the stalled streams were answered: they did not stay stalled during the Encrypts"
    );
    drop(streams);
}

/// Request headers signed with SigV4 (content-length included), for a raw h2 stream.
fn signed_head(url: &str, body: &[u8], akid: &str, secret: &str) -> http::Request<()> {
    let (mut parts, ()) = head("POST", url, body, None).into_parts();
    let credential = sigv4_auth::Credential::new(akid, sigv4_auth::SigningSecret::new(secret));
    sigv4_auth::sign(
        &mut parts,
        body,
        &sigv4_auth::SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time: SystemTime::now(),
        },
    )
    .expect("sign");
    http::Request::from_parts(parts, ())
}

/// Unsigned request headers with a JSON content type and the body's length.
fn head(method: &str, url: &str, body: &[u8], authorization: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    b.body(()).expect("request head")
}
