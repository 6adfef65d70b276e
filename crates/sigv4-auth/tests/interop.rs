//! Interop: requests signed by independent SigV4 implementations verify with this crate.
//!
//! - botocore (`SigV4Auth`), run through `python3`: the machine running the tests must have
//!   it (`pip install botocore`); without it these tests fail, they never skip.
//! - curl (`--aws-sigv4`), against a small hyper server that verifies what it receives, over
//!   HTTP/1.1 and over h2c (where the host comes from `:authority`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sigv4_auth::{
    Authorization, Credential, SigningSecret, Verified, Verifier, VerifierConfig, VerifyError,
};

/// An access key id as the XKS spec wants it: 20+ characters of [A-Z2-7].
const AKID: &str = "AKIAXKSINTEROP234567ABCD";
/// A secret of 44 characters (the XKS spec wants 43 to 64).
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY+xks";
/// Another secret of the same length.
const WRONG_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY+xkz";

const XKS_BODY: &str = r#"{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}"#;

fn credential() -> Credential {
    Credential::new(AKID, SigningSecret::new(SECRET))
}

// ---------------------------------------------------------------------------------------
// botocore
// ---------------------------------------------------------------------------------------

const BOTOCORE_SCRIPT: &str = r#"
import json
import sys

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError as error:
    sys.stderr.write("botocore is not installed (pip install botocore): %s\n" % error)
    sys.exit(3)

config = json.load(sys.stdin)
request = AWSRequest(
    method=config["method"],
    url=config["url"],
    data=config["body"].encode("utf-8"),
    headers=dict(config["headers"]),
)
credentials = Credentials(config["access_key_id"], config["secret"])
SigV4Auth(credentials, config["service"], config["region"]).add_auth(request)
json.dump([[name, value] for name, value in request.headers.items()], sys.stdout)
"#;

/// Signs a request with botocore and returns the headers it ends up with.
fn botocore_sign(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    service: &str,
    region: &str,
) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("sign_with_botocore.py");
    std::fs::write(&script, BOTOCORE_SCRIPT).expect("write the script");
    let config = serde_json::json!({
        "method": "POST",
        "url": url,
        "headers": headers,
        "body": body,
        "service": service,
        "region": region,
        "access_key_id": AKID,
        "secret": SECRET,
    });

    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("these tests need python3 with botocore (pip install botocore): {e}")
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(config.to_string().as_bytes())
            .expect("write the config");
    }
    let output = child.wait_with_output().expect("python3 runs");
    assert!(
        output.status.success(),
        "signing with botocore failed (these tests need python3 with botocore: pip install botocore): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "botocore's output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The request as an HTTP/1.1 server sees it: origin-form target, Host header (which
/// botocore signs from the URL but leaves to the HTTP client to send).
fn server_side_parts(host: &str, path: &str, headers: &[(String, String)]) -> Parts {
    let mut parts = Request::post(path)
        .header("host", host)
        .body(())
        .expect("request")
        .into_parts()
        .0;
    for (name, value) in headers {
        parts.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    parts
}

fn verify(
    verifier: &Verifier,
    parts: &Parts,
    credential: &Credential,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let auth = Authorization::parse(&parts.headers)?;
    verifier.verify(parts, &auth, credential, body, SystemTime::now())
}

#[test]
fn botocore_signed_xks_request_verifies() {
    let path = "/prefix/kms/xks/v1/keys/k1/encrypt";
    let headers = botocore_sign(
        &format!("https://xks.example.com{path}"),
        &[("Content-Type", "application/json")],
        XKS_BODY,
        "kms-xks-proxy",
        "eu-west-1",
    );
    let parts = server_side_parts("xks.example.com", path, &headers);
    let auth = Authorization::parse(&parts.headers).expect("botocore's Authorization parses");
    assert_eq!(auth.access_key_id(), AKID);
    assert_eq!(auth.region(), "eu-west-1");
    assert_eq!(auth.service(), "kms-xks-proxy");
    assert_eq!(auth.signed_headers(), "content-type;host;x-amz-date");

    let verifier = Verifier::new(VerifierConfig {
        accepted_regions: Some(vec!["eu-west-1".to_owned()]),
        ..VerifierConfig::new("kms-xks-proxy")
    });
    let credential = credential();
    let verified = verify(&verifier, &parts, &credential, XKS_BODY.as_bytes())
        .expect("botocore's signature verifies");
    assert_eq!(verified.access_key_id, AKID);
    assert_eq!(verified.region, "eu-west-1");

    // Tampering is caught.
    let mut tampered = XKS_BODY.as_bytes().to_vec();
    tampered[20] ^= 0x01;
    assert_eq!(
        verify(&verifier, &parts, &credential, &tampered),
        Err(VerifyError::SignatureMismatch)
    );
    let other = server_side_parts(
        "xks.example.com",
        "/prefix/kms/xks/v1/keys/k2/encrypt",
        &headers,
    );
    assert_eq!(
        verify(&verifier, &other, &credential, XKS_BODY.as_bytes()),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        verify(
            &verifier,
            &parts,
            &Credential::new(AKID, SigningSecret::new(WRONG_SECRET)),
            XKS_BODY.as_bytes()
        ),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn botocore_signed_kms_request_verifies() {
    let body = r#"{"KeyId":"alias/example","Plaintext":"SGVsbG8="}"#;
    let headers = botocore_sign(
        "https://kms.eu-west-1.example.com/",
        &[
            ("X-Amz-Target", "TrentService.Encrypt"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        body,
        "kms",
        "eu-west-1",
    );
    let parts = server_side_parts("kms.eu-west-1.example.com", "/", &headers);
    let auth = Authorization::parse(&parts.headers).expect("botocore's Authorization parses");
    assert_eq!(
        auth.signed_headers(),
        "content-type;host;x-amz-date;x-amz-target"
    );
    let verifier = Verifier::new(VerifierConfig::new("kms"));
    let credential = credential();
    verify(&verifier, &parts, &credential, body.as_bytes()).expect("botocore's signature verifies");

    let mut retargeted = parts;
    retargeted.headers.insert(
        "x-amz-target",
        HeaderValue::from_static("TrentService.Decrypt"),
    );
    assert_eq!(
        verify(&verifier, &retargeted, &credential, body.as_bytes()),
        Err(VerifyError::SignatureMismatch)
    );
}

// ---------------------------------------------------------------------------------------
// curl against a verifying hyper server
// ---------------------------------------------------------------------------------------

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    had_host_header: bool,
    authority: Option<String>,
    outcome: Result<Verified, VerifyError>,
}

struct Server {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(
    request: Request<Incoming>,
    verifier: Arc<Verifier>,
    credential: Arc<Credential>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<String>, Infallible> {
    let (parts, body) = request.into_parts();
    let outcome = match Authorization::parse(&parts.headers) {
        Err(error) => Err(error),
        // A real server looks the id up here, before reading the body.
        Ok(auth) if auth.access_key_id() != credential.access_key_id() => {
            Err(VerifyError::AccessKeyIdMismatch)
        }
        Ok(auth) => match body.collect().await {
            Ok(body) => verifier.verify(
                &parts,
                &auth,
                &credential,
                &body.to_bytes(),
                SystemTime::now(),
            ),
            Err(_) => Err(VerifyError::SignatureMismatch),
        },
    };
    let response = match &outcome {
        Ok(_) => Response::new("verified".to_owned()),
        Err(error) => {
            let mut response = Response::new(error.to_string());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    };
    seen.lock().expect("lock").push(Seen {
        version: parts.version,
        had_host_header: parts.headers.contains_key(http::header::HOST),
        authority: parts.uri.authority().map(|a| a.to_string()),
        outcome,
    });
    Ok(response)
}

async fn start_server(verifier: Verifier, credential: Credential) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let verifier = Arc::new(verifier);
    let credential = Arc::new(credential);
    let server_seen = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let verifier = Arc::clone(&verifier);
            let credential = Arc::clone(&credential);
            let seen = Arc::clone(&server_seen);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    handle(
                        request,
                        Arc::clone(&verifier),
                        Arc::clone(&credential),
                        Arc::clone(&seen),
                    )
                });
                // A connection error only means curl went away.
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { address, seen }
}

/// What curl reported.
#[derive(Debug)]
struct CurlResult {
    status: u16,
    http_version: String,
    body: String,
}

async fn curl(
    server: &Server,
    path: &str,
    secret: &str,
    http2: bool,
    body_file: &std::path::Path,
) -> CurlResult {
    let mut command = tokio::process::Command::new("curl");
    command
        .arg("--silent")
        .arg("--show-error")
        .args(["--max-time", "30"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"])
        .args(["--user", &format!("{AKID}:{secret}")])
        .args(["--header", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .args(["--write-out", "\n%{http_code} %{http_version}"])
        .arg(if http2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        })
        .arg(format!("http://{}{path}", server.address));
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("these tests need curl (7.75 or later) on PATH: {e}"));
    assert!(
        output.status.success(),
        "curl failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status_line) = stdout.rsplit_once('\n').expect("status line");
    let (status, http_version) = status_line.split_once(' ').expect("status and version");
    CurlResult {
        status: status.parse().expect("status code"),
        http_version: http_version.to_owned(),
        body: body.to_owned(),
    }
}

async fn curl_round(http2: bool) {
    let server = start_server(
        Verifier::new(VerifierConfig {
            accepted_regions: Some(vec!["us-east-1".to_owned()]),
            ..VerifierConfig::new("kms-xks-proxy")
        }),
        credential(),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, XKS_BODY).expect("write the body");
    let path = "/tenant-1/kms/xks/v1/keys/key.1_x-2/encrypt";
    let expected_version = if http2 { "2" } else { "1.1" };

    let good = curl(&server, path, SECRET, http2, &body_file).await;
    assert_eq!(good.http_version, expected_version, "{good:?}");
    assert_eq!(good.status, 200, "curl's signature must verify: {good:?}");
    assert_eq!(good.body, "verified");

    let bad = curl(&server, path, WRONG_SECRET, http2, &body_file).await;
    assert_eq!(bad.status, 401, "a wrong secret must be rejected: {bad:?}");
    assert_eq!(bad.body, VerifyError::SignatureMismatch.to_string());

    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        if http2 {
            // The case this exercises: no Host header, the host comes from `:authority`.
            assert_eq!(request.version, Version::HTTP_2, "{request:?}");
            assert!(!request.had_host_header, "{request:?}");
            assert_eq!(
                request.authority.as_deref(),
                Some(server.address.to_string().as_str()),
                "{request:?}"
            );
        } else {
            assert_eq!(request.version, Version::HTTP_11, "{request:?}");
            assert!(request.had_host_header, "{request:?}");
        }
    }
    let verified = seen[0].outcome.as_ref().expect("verified");
    assert_eq!(verified.access_key_id, AKID);
    assert_eq!(verified.region, "us-east-1");
    assert_eq!(seen[1].outcome, Err(VerifyError::SignatureMismatch));
}

#[tokio::test]
async fn curl_signed_request_verifies_over_http1() {
    curl_round(false).await;
}

#[tokio::test]
async fn curl_signed_request_verifies_over_h2c() {
    curl_round(true).await;
}
