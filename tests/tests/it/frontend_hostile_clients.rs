//! Hostile callers of the KMS front end, through the running process: slow senders and
//! stalled h2 streams must not take it away from legitimate callers (the `[server]` limits
//! the proxy has), and store endpoints must not point at link-local or cloud metadata
//! addresses (nor, when configured, at loopback or private ones).
//!
//! No test here sends traffic to a non-loopback address: a refused address is refused
//! before any connection, and the tests assert the refusal's message, which names it.

use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use testkit::frontend::{FrontendFixture, RunningFrontend};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::raw::{H2Connection, Target, TrickleKind, Trickler, read_h2_body};

/// A front end with `server_toml` added to its `[server]` section and `extra` top-level
/// TOML.
fn frontend(server_toml: &str, extra: &str) -> RunningFrontend {
    let mut f = FrontendFixture::new();
    f.extra_toml = extra.to_owned();
    write_config_with_server(&f, server_toml);
    RunningFrontend::spawn(f)
}

/// Writes the fixture's config with `server_toml` inserted into its `[server]` section.
fn write_config_with_server(f: &FrontendFixture, server_toml: &str) {
    f.write_config();
    let path = f.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replacen("[server]\n", &format!("[server]\n{server_toml}\n"), 1);
    std::fs::write(&path, text).expect("write config");
}

/// Headers of an Encrypt signed by `p` (SigV4, service `kms`), for a raw h2 stream.
fn signed_encrypt_head(
    f: &RunningFrontend,
    p: &testkit::frontend::TestPrincipal,
    body: &[u8],
) -> http::Request<()> {
    let (mut parts, ()) = http::Request::builder()
        .method("POST")
        .uri(format!("{}/", f.endpoint()))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.Encrypt")
        .header("content-length", body.len())
        .body(())
        .expect("head")
        .into_parts();
    let credential =
        sigv4_auth::Credential::new(&p.access_key_id, sigv4_auth::SigningSecret::new(&p.secret));
    sigv4_auth::sign(
        &mut parts,
        body,
        &sigv4_auth::SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms",
            time: SystemTime::now(),
        },
    )
    .expect("sign");
    http::Request::from_parts(parts, ())
}

fn target(f: &RunningFrontend) -> Target {
    Target::localhost(f.port, &f.fixture.pki.ca_pem)
}

/// Creates a key and encrypts with it `n` times through boto3, off the async runtime.
async fn boto3_encrypts(f: &Arc<RunningFrontend>, n: usize) -> Value {
    let f = f.clone();
    tokio::task::spawn_blocking(move || {
        f.boto3(
            f.alice(),
            "us-east-1",
            &format!(
                "kid = kms.create_key()['KeyMetadata']['KeyId']\nprint(json.dumps([call('encrypt', KeyId=kid, Plaintext=b'legit') for _ in range({n})], default=str))\n"
            ),
            &[],
        )
    })
    .await
    .expect("boto3 task")
}

// ---------------------------------------------------------------------------------------
// Work before authentication

/// 200 h2 streams that send Encrypt headers signed with a known access key id and then
/// stall their bodies hold no in-flight permit (it is taken after the signature check):
/// legitimate boto3 Encrypts succeed promptly with `max_in_flight_requests = 8`. With a
/// stream limit of 100 the 200 streams take two connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_streams_with_a_known_access_key_id_do_not_delay_encrypt() {
    let f = Arc::new(frontend(
        "max_in_flight_requests = 8\nmax_concurrent_streams = 100\nrequest_body_timeout_ms = 60000",
        "",
    ));
    let body = br#"{"KeyId":"alias/none","Plaintext":"AAAA"}"#;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut h2 = H2Connection::connect(&target(&f)).await;
        for _ in 0..100 {
            let (response, stream) = h2.open(signed_encrypt_head(&f, f.alice(), body)).await;
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
    // Give the front end time to start handling all 200.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), boto3_encrypts(&f, 10))
        .await
        .expect("the boto3 Encrypts finished");
    for r in out.as_array().expect("results") {
        assert!(r.get("ok").is_some(), "an Encrypt failed: {r}");
    }
    // boto3's start-up dominates; a wait on a permit would not end before the 60 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answered.load(Ordering::Relaxed),
        0,
        "the stalled streams were answered: they did not stay stalled during the Encrypts"
    );
    drop(streams);
}

/// The per-connection h2 stream limit is the configured one, advertised in SETTINGS.
#[tokio::test]
async fn the_h2_stream_limit_is_configured() {
    let f = frontend("max_concurrent_streams = 7", "");
    let h2 = H2Connection::connect(&target(&f)).await;
    assert_eq!(
        h2.server_max_concurrent_streams(Duration::from_secs(5))
            .await,
        7
    );
}

/// A signed Encrypt whose body stalls is answered at the body deadline (400
/// ValidationException naming it) instead of holding its stream.
#[tokio::test]
async fn a_stalled_body_is_answered_at_the_body_deadline() {
    let f = frontend("request_body_timeout_ms = 1000", "");
    let mut h2 = H2Connection::connect(&target(&f)).await;
    let body = br#"{"KeyId":"alias/none","Plaintext":"AAAA"}"#;
    let (response, _stream) = h2.open(signed_encrypt_head(&f, f.alice(), body)).await;
    let response = tokio::time::timeout(Duration::from_secs(3), response)
        .await
        .expect("answered within 3 s")
        .expect("an answer, not a reset");
    assert_eq!(response.status(), 400);
    let raw = read_h2_body(&mut response.into_body())
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&raw).expect("JSON error body");
    assert_eq!(json["__type"], "ValidationException", "{json}");
    assert!(
        json.to_string().contains("did not arrive within 1000 ms"),
        "{json}"
    );
}

/// Three connections that send their request headers a byte a second cannot hold the
/// three connection slots: the 1 s accept-to-headers deadline closes them and a boto3
/// Encrypt succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_tricklers_do_not_take_every_connection() {
    let f = Arc::new(frontend(
        "max_connections = 3\nidle_timeout_seconds = 3\nrequest_header_timeout_ms = 1000",
        "",
    ));
    let tricklers: Vec<Trickler> = (0..3)
        .map(|_| Trickler::start(&target(&f), TrickleKind::Headers, Duration::from_secs(1)))
        .collect();
    for t in &tricklers {
        t.wait_ready(Duration::from_secs(5)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), boto3_encrypts(&f, 1))
        .await
        .expect("the boto3 Encrypt finished");
    assert!(out[0].get("ok").is_some(), "{out}");
    for t in &tricklers {
        let after = t.closed_after().expect("the server closed the trickler");
        assert!(
            after < Duration::from_secs(2),
            "closed only after {after:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Where a store endpoint may point

const STORE_HELPERS: &str = r#"
AKID, SECRET = sys.argv[1], sys.argv[2]
def create_store(endpoint, name='xks', connectivity='PUBLIC_ENDPOINT'):
    kw = {}
    if connectivity == 'VPC_ENDPOINT_SERVICE':
        kw['XksProxyVpcEndpointServiceName'] = 'com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0'
    return call('create_custom_key_store', CustomKeyStoreName=name, CustomKeyStoreType='EXTERNAL_KEY_STORE',
        XksProxyUriEndpoint=endpoint, XksProxyUriPath='/tenant/kms/xks/v1', XksProxyConnectivity=connectivity,
        XksProxyAuthenticationCredential={'AccessKeyId': AKID, 'RawSecretAccessKey': SECRET}, **kw)
"#;

fn proxy() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1"]))
        .start()
}

/// `[xks]` trusting the proxy's CA, `xks.test` → the proxy, `metadata.test` → the EC2
/// metadata address (never connected to: the tests assert it is refused first).
fn xks_toml(p: &RunningProxy, extra: &str) -> String {
    format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\n{extra}\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{}\"\n\"metadata.test\" = \"169.254.169.254:443\"\n",
        p.fixture.pki.ca_pem.display(),
        p.port
    )
}

fn run(f: &RunningFrontend, p: &RunningProxy, body: &str) -> Value {
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    f.boto3(
        f.alice(),
        "us-east-1",
        &format!("{STORE_HELPERS}\n{body}"),
        &[&akid, &secret],
    )
}

#[track_caller]
fn refused(v: &Value, why: &str) {
    assert_eq!(
        v["error"].as_str(),
        Some("XksProxyUriUnreachableException"),
        "{v}"
    );
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(why) && message.contains("not called"),
        "the refusal names the rule: {v}"
    );
}

/// Metadata and link-local endpoints are refused at Create and Update, whether given as an
/// IP (in any IPv4 spelling) or as a host name that resolves there, for public and VPC
/// stores, while the local proxy stays allowed by default.
#[test]
fn metadata_endpoints_are_refused_at_create_and_update() {
    let p = proxy();
    let f = frontend("", &xks_toml(&p, ""));
    let out = run(
        &f,
        &p,
        r#"
out = {}
out['ip'] = create_store('https://169.254.169.254', name='a')
out['decimal_ip'] = create_store('https://2852039166', name='b')
out['link_local'] = create_store('https://169.254.10.1', name='c')
out['name'] = create_store('https://metadata.test', name='d')
out['vpc_ip'] = create_store('https://169.254.169.254', name='e', connectivity='VPC_ENDPOINT_SERVICE')
ok = create_store('https://xks.test', name='local')
out['local'] = ok
sid = ok['ok']['CustomKeyStoreId']
out['update_ip'] = call('update_custom_key_store', CustomKeyStoreId=sid, XksProxyUriEndpoint='https://169.254.169.254')
out['update_name'] = call('update_custom_key_store', CustomKeyStoreId=sid, XksProxyUriEndpoint='https://metadata.test')
out['after'] = call('describe_custom_key_stores', CustomKeyStoreId=sid)['ok']['CustomKeyStores'][0]['XksProxyConfiguration']['UriEndpoint']
print(json.dumps(out, default=str))
"#,
    );
    for k in [
        "ip",
        "decimal_ip",
        "link_local",
        "name",
        "vpc_ip",
        "update_ip",
        "update_name",
    ] {
        refused(&out[k], "link-local or cloud metadata address");
    }
    assert!(out["local"].get("ok").is_some(), "{}", out["local"]);
    assert_eq!(
        out["after"], "https://xks.test",
        "the refused update changed nothing"
    );
}

/// `[xks] allow_private_endpoints = false` refuses loopback endpoints (the local proxy,
/// whether by IP or by an `[xks.resolve]` name) at Create.
#[test]
fn private_endpoints_can_be_refused() {
    let p = proxy();
    let f = frontend("", &xks_toml(&p, "allow_private_endpoints = false"));
    let out = run(
        &f,
        &p,
        r#"
out = {'ip': create_store('https://127.0.0.1', name='a'), 'name': create_store('https://xks.test', name='b'),
       'metadata': create_store('https://169.254.169.254', name='c')}
print(json.dumps(out, default=str))
"#,
    );
    refused(&out["ip"], "loopback or private address");
    refused(&out["name"], "loopback or private address");
    refused(&out["metadata"], "link-local or cloud metadata address");
}

/// At connect time the rule gives the store `XKS_PROXY_NOT_REACHABLE`, the code AWS
/// documents for a proxy KMS cannot reach (and the one matching Create's
/// `XksProxyUriUnreachableException`); `XKS_PROXY_INVALID_CONFIGURATION` would say the
/// proxy answered that the URI path is wrong. A store created while loopback was allowed
/// fails to connect once the same database is served with `allow_private_endpoints =
/// false`.
#[test]
fn a_refused_endpoint_fails_at_connect_with_not_reachable() {
    let p = proxy();
    let mut f = FrontendFixture::new();
    f.extra_toml = xks_toml(&p, "");
    write_config_with_server(&f, "");
    let mut running = RunningFrontend::spawn(f);
    let out = run(
        &running,
        &p,
        "print(json.dumps({'sid': create_store('https://xks.test')['ok']['CustomKeyStoreId']}))\n",
    );
    let sid = out["sid"].as_str().expect("store id").to_owned();
    running.kill_hard();
    let mut f = std::mem::replace(&mut running.fixture, FrontendFixture::new());
    drop(running);
    f.extra_toml = xks_toml(&p, "allow_private_endpoints = false");
    write_config_with_server(&f, "");
    let running = RunningFrontend::spawn(f);
    let out = run(
        &running,
        &p,
        &format!(
            r#"
import time
sid = '{sid}'
out = {{'connect': call('connect_custom_key_store', CustomKeyStoreId=sid)}}
end = time.time() + 10
while time.time() < end:
    s = call('describe_custom_key_stores', CustomKeyStoreId=sid)['ok']['CustomKeyStores'][0]
    if s['ConnectionState'] in ('CONNECTED', 'FAILED'): break
    time.sleep(0.05)
out['state'] = s
print(json.dumps(out, default=str))
"#
        ),
    );
    assert_eq!(out["state"]["ConnectionState"], "FAILED", "{out}");
    assert_eq!(
        out["state"]["ConnectionErrorCode"], "XKS_PROXY_NOT_REACHABLE",
        "{out}"
    );
}
