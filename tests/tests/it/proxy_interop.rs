//! Independent clients against the real proxy: curl's `--aws-sigv4` over HTTP/1.1 and h2,
//! and botocore's SigV4 signer with Python's own HTTPS stack.

use std::process::Command;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks::{self, b64, unb64};

fn start() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("main", "/xks/main").with_keys(&["curl-key"]))
        .start()
}

/// Runs curl, returning (status, http version, body).
fn curl(
    p: &RunningProxy,
    http: &str,
    secret: &str,
    suffix: &str,
    body: &str,
) -> (u16, String, String) {
    let (akid, _) = &p.fixture.stores[0].credentials[0];
    let url = format!(
        "https://xks.test:{}{}/kms/xks/v1/{suffix}",
        p.port, p.fixture.stores[0].prefix
    );
    let out = Command::new("curl")
        .args(["-sS", http, "--cacert"])
        .arg(&p.fixture.pki.ca_pem)
        .args(["--resolve", &format!("xks.test:{}:127.0.0.1", p.port)])
        .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"])
        .args(["--user", &format!("{akid}:{secret}")])
        .args(["-H", "content-type: application/json", "-d", body])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(url)
        .output()
        .expect(
            "curl must be installed (apt-get install curl); the README's test command installs it",
        );
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').expect("status line");
    let mut parts = tail.split(' ');
    let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
    (
        status,
        parts.next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[test]
fn curl_aws_sigv4_drives_every_operation_over_http1_and_h2() {
    let p = start();
    let secret = p.fixture.stores[0].credentials[0].1.clone();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (s, v, body) = curl(&p, flag, &secret, "health", &xks::health().to_string());
        assert_eq!((s, v.as_str()), (200, version), "{body}");
        let (s, _, body) = curl(
            &p,
            flag,
            &secret,
            "keys/curl-key/metadata",
            &xks::metadata().to_string(),
        );
        assert_eq!(s, 200, "{body}");
        let aad = b"curl aad";
        let (s, _, body) = curl(
            &p,
            flag,
            &secret,
            "keys/curl-key/encrypt",
            &xks::encrypt(b"from curl", Some(aad), true).to_string(),
        );
        assert_eq!(s, 200, "{body}");
        let e: serde_json::Value = serde_json::from_str(&body).expect("json");
        let (s, _, body) = curl(
            &p,
            flag,
            &secret,
            "keys/curl-key/decrypt",
            &xks::decrypt_of(&e, Some(aad)).to_string(),
        );
        assert_eq!(s, 200, "{body}");
        let d: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(unb64(&d["plaintext"]), b"from curl");
        // A wrong secret is refused.
        let (s, _, body) = curl(
            &p,
            flag,
            &testkit::random_secret(),
            "health",
            &xks::health().to_string(),
        );
        assert_eq!(s, 401, "{body}");
        assert!(body.contains("AuthenticationFailedException"));
    }
}

const BOTOCORE_CLIENT: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError:
    sys.exit("botocore is missing: pip install botocore (the README's test command installs it)")
url, ca, akid, secret, region, body = sys.argv[1:7]
req = AWSRequest(method="POST", url=url, data=body.encode(), headers={"Content-Type": "application/json"})
SigV4Auth(Credentials(akid, secret), "kms-xks-proxy", region).add_auth(req)
out = urllib.request.Request(url, data=body.encode(), headers=dict(req.headers.items()), method="POST")
ctx = ssl.create_default_context(cafile=ca)
try:
    resp = urllib.request.urlopen(out, context=ctx)
    status, text = resp.status, resp.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(json.dumps({"status": status, "body": text}))
"#;

fn botocore(
    p: &RunningProxy,
    region: &str,
    suffix: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, BOTOCORE_CLIENT).expect("write script");
    let (akid, secret) = &p.fixture.stores[0].credentials[0];
    let out = Command::new("python3")
        .arg(&script)
        .arg(p.api_url(0, suffix))
        .arg(&p.fixture.pki.ca_pem)
        .args([akid, secret, region, &body.to_string()])
        .output()
        .expect("python3 must be installed; the README's test command installs it");
    assert!(
        out.status.success(),
        "botocore client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let status = u16::try_from(v["status"].as_u64().expect("status")).expect("u16");
    let body =
        serde_json::from_str(v["body"].as_str().expect("body")).unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn botocore_signed_requests_are_accepted() {
    let p = start();
    let (s, h) = botocore(&p, "eu-west-1", "health", &xks::health());
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");
    let (s, e) = botocore(
        &p,
        "eu-west-1",
        "keys/curl-key/encrypt",
        &xks::encrypt(b"boto", None, false),
    );
    assert_eq!(s, 200, "{e}");
    let (s, d) = botocore(
        &p,
        "ap-southeast-2",
        "keys/curl-key/decrypt",
        &xks::decrypt_of(&e, None),
    );
    assert_eq!(s, 200, "{d}");
    assert_eq!(unb64(&d["plaintext"]), b"boto");
    // What botocore's session encrypted decrypts through our own signer too.
    let r = p
        .client(0)
        .post_json(
            &p.api_url(0, "keys/curl-key/decrypt"),
            &xks::decrypt_of(&e, None),
        )
        .await;
    assert_eq!(unb64(&r.ok()["plaintext"]), b"boto");
    // A botocore request whose signature is for another body is refused.
    let mut tampered = xks::encrypt(b"boto", None, false);
    tampered["plaintext"] = serde_json::json!(b64(b"other"));
    let (s, body) = botocore_tampered(&p, &xks::encrypt(b"boto", None, false), &tampered);
    assert_eq!(s, 401, "{body}");
}

fn botocore_tampered(
    p: &RunningProxy,
    signed: &serde_json::Value,
    sent: &serde_json::Value,
) -> (u16, serde_json::Value) {
    // Sign one body with botocore, send another: the proxy must notice.
    let script = BOTOCORE_CLIENT.replace(
        "out = urllib.request.Request(url, data=body.encode()",
        "body = sys.argv[7]\nout = urllib.request.Request(url, data=body.encode()",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tampered.py");
    std::fs::write(&path, script).expect("write script");
    let (akid, secret) = &p.fixture.stores[0].credentials[0];
    let out = Command::new("python3")
        .arg(&path)
        .arg(p.api_url(0, "keys/curl-key/encrypt"))
        .arg(&p.fixture.pki.ca_pem)
        .args([
            akid,
            secret,
            "us-east-1",
            &signed.to_string(),
            &sent.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let status = u16::try_from(v["status"].as_u64().expect("status")).expect("u16");
    (
        status,
        serde_json::from_str(v["body"].as_str().unwrap_or("")).unwrap_or_default(),
    )
}
