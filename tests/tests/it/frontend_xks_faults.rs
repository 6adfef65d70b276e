//! The front end and the proxy together when things go wrong: every kind of proxy failure
//! (stopped, slow, wrong credential, wrong path, bad TLS, unusable external key, malformed or
//! altered answers, secondary authorization) as AWS KMS reports it per operation
//! (kms-api.md §3.5-3.8), XksKeyId uniqueness under concurrency, credential rotation under
//! load, and the AWS CLI happy path. The real proxy is in the path; faults come from the
//! intercepting relay, from stopping or reconfiguring the proxy, or from restarting the front
//! end with `xks.test` pointing at a server with a bad certificate.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::client::XksClient;
use testkit::frontend::{FrontendFixture, RunningFrontend};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::relay::{RelayMode, XksRelay};

const REGION: &str = "us-east-1";

/// `[xks]` settings of a front end trusting `ca` and resolving each `(host, port)`.
fn xks_toml(ca: &Path, timeout_ms: u64, resolve: &[(&str, u16)]) -> String {
    let mut t = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\ntimeout_ms = {timeout_ms}\n[xks.resolve]\n",
        ca.display()
    );
    for (host, port) in resolve {
        t.push_str(&format!("\"{host}\" = \"127.0.0.1:{port}\"\n"));
    }
    t
}

fn start_frontend(ca: &Path, timeout_ms: u64, resolve: &[(&str, u16)]) -> RunningFrontend {
    let mut f = FrontendFixture::new();
    f.extra_toml = xks_toml(ca, timeout_ms, resolve);
    f.start()
}

/// Restarts a front end on the same home (same database, principals and TLS) with other
/// `[xks]` settings: how a test points `xks.test` at another server.
fn restart_frontend(
    mut f: RunningFrontend,
    ca: &Path,
    timeout_ms: u64,
    resolve: &[(&str, u16)],
) -> RunningFrontend {
    let mut fixture = std::mem::replace(&mut f.fixture, FrontendFixture::new());
    drop(f);
    fixture.extra_toml = xks_toml(ca, timeout_ms, resolve);
    fixture.start()
}

/// A proxy with one key store `/tenant` and external keys, and a front end that reaches it
/// as `https://xks.test` (through `port`, the proxy's or a relay's).
fn stack_with(
    port_for: impl FnOnce(&RunningProxy) -> u16,
    p: RunningProxy,
    timeout_ms: u64,
) -> (RunningProxy, RunningFrontend) {
    let port = port_for(&p);
    let f = start_frontend(&p.fixture.pki.ca_pem, timeout_ms, &[("xks.test", port)]);
    (p, f)
}

fn proxy() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1", "ext-2"]))
        .start()
}

/// Python helpers: create, connect and probe stores. `S` (argv[1], JSON) carries the ids
/// and credentials the script needs.
const STORE_HELPERS: &str = r#"
import time, os
S = json.loads(sys.argv[1])
def create_store(name='xks', path='/tenant/kms/xks/v1', endpoint='https://xks.test', akid=None, secret=None):
    return call('create_custom_key_store', CustomKeyStoreName=name, CustomKeyStoreType='EXTERNAL_KEY_STORE',
        XksProxyUriEndpoint=endpoint, XksProxyUriPath=path, XksProxyConnectivity='PUBLIC_ENDPOINT',
        XksProxyAuthenticationCredential={'AccessKeyId': akid or S['akid'], 'RawSecretAccessKey': secret or S['secret']})
def state(store_id):
    return call('describe_custom_key_stores', CustomKeyStoreId=store_id)['ok']['CustomKeyStores'][0]
def wait_state(store_id, want, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        s = state(store_id)
        if s['ConnectionState'] in want: return s
        time.sleep(0.05)
    return state(store_id)
def connect(store_id):
    r = call('connect_custom_key_store', CustomKeyStoreId=store_id)
    return r, wait_state(store_id, ('CONNECTED', 'FAILED'))
def snapshot():
    stores = call('describe_custom_key_stores')['ok']['CustomKeyStores']
    keys = sorted(k['KeyId'] for k in call('list_keys')['ok']['Keys'])
    return {'stores': stores, 'keys': keys}
def timed(op, **kw):
    t = time.time()
    r = call(op, **kw)
    r['seconds'] = time.time() - t
    return r
def probe(create=None, conn=True, crypto=True, create_key=True):
    """One fault, every KMS operation it affects; `unchanged` says nothing was written."""
    out = {}
    before = snapshot()
    if create is not None:
        kw = dict(name='probe', path='/fresh/kms/xks/v1', akid=S['fresh_akid'], secret=S['fresh_secret'])
        kw.update(create)
        t = time.time()
        out['create'] = create_store(**kw)
        out['create']['seconds'] = time.time() - t
    if conn:
        out['connect_call'], st = connect(S['conn_sid'])
        out['connect'] = {'state': st['ConnectionState'], 'code': st.get('ConnectionErrorCode')}
        out['disconnect'] = call('disconnect_custom_key_store', CustomKeyStoreId=S['conn_sid'])
    if crypto:
        out['encrypt'] = timed('encrypt', KeyId=S['kid'], Plaintext=b'fault probe')
        out['decrypt'] = timed('decrypt', CiphertextBlob=bytes.fromhex(S['blob']))
    if create_key:
        out['create_key'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=S['main_sid'], XksKeyId='ext-3')
    after = snapshot()
    out['unchanged'] = before == after
    if before != after:
        out['before'], out['after'] = before, after
    return out
"#;

fn py(f: &RunningFrontend, s: &Value, body: &str) -> Value {
    let script = format!("{STORE_HELPERS}\n{body}");
    let run = || f.boto3(f.alice(), REGION, &script, &[&s.to_string()]);
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(run),
        Err(_) => run(),
    }
}

fn ok(v: &Value) -> &Value {
    assert!(v.get("ok").is_some(), "expected success, got {v}");
    &v["ok"]
}

#[track_caller]
fn err(v: &Value, code: &str) {
    assert_eq!(v["error"].as_str(), Some(code), "{v}");
}

/// What one fault produced, for the summary printed at the end.
#[derive(Debug, Default)]
struct Row {
    fault: String,
    create: String,
    connect: String,
    create_key: String,
    crypto: String,
}

fn outcome(v: &Value) -> String {
    if v.is_null() {
        "-".into()
    } else if let Some(e) = v["error"].as_str() {
        e.to_owned()
    } else if v.get("ok").is_some() {
        "ok".into()
    } else {
        v.to_string()
    }
}

fn row(fault: &str, out: &Value) -> Row {
    let connect = if out["connect"].is_null() {
        "-".into()
    } else {
        format!(
            "{} / {}",
            out["connect"]["state"].as_str().unwrap_or("?"),
            out["connect"]["code"].as_str().unwrap_or("-")
        )
    };
    let crypto = if out["encrypt"].is_null() {
        "-".into()
    } else {
        format!(
            "Encrypt {} ({:.2}s), Decrypt {}",
            outcome(&out["encrypt"]),
            out["encrypt"]["seconds"].as_f64().unwrap_or(-1.0),
            outcome(&out["decrypt"])
        )
    };
    Row {
        fault: fault.into(),
        create: outcome(&out["create"]),
        connect,
        create_key: outcome(&out["create_key"]),
        crypto,
    }
}

/// What the reference (§3.6-3.8) requires of one probe. `None` = not probed.
struct Expect<'a> {
    create: Option<&'a str>,
    connect_code: Option<&'a str>,
    create_key: Option<&'a str>,
    crypto: bool,
}

/// Checks a probe against the reference: the management error, FAILED with the code, the
/// CreateKey error, KMSInvalidStateException for Encrypt and Decrypt (returning no
/// ciphertext or plaintext, well within a few seconds), and nothing written.
#[track_caller]
fn check(fault: &str, out: &Value, want: &Expect<'_>) {
    if let Some(e) = want.create {
        assert_eq!(out["create"]["error"].as_str(), Some(e), "{fault}: {out}");
    }
    if let Some(code) = want.connect_code {
        ok(&out["connect_call"]);
        assert_eq!(
            (
                out["connect"]["state"].as_str(),
                out["connect"]["code"].as_str()
            ),
            (Some("FAILED"), Some(code)),
            "{fault}: {out}"
        );
        ok(&out["disconnect"]);
    }
    if let Some(e) = want.create_key {
        assert_eq!(
            out["create_key"]["error"].as_str(),
            Some(e),
            "{fault}: {out}"
        );
    }
    if want.crypto {
        for op in ["encrypt", "decrypt"] {
            assert_eq!(
                out[op]["error"].as_str(),
                Some("KMSInvalidStateException"),
                "{fault} {op}: {out}"
            );
            assert!(out[op].get("ok").is_none(), "{fault} {op}: {out}");
            let secs = out[op]["seconds"].as_f64().expect("seconds");
            assert!(secs < 5.0, "{fault} {op} took {secs}s");
        }
    }
    assert_eq!(
        out["unchanged"], true,
        "{fault}: something was written: {out}"
    );
}

/// The status of a GetHealthStatus call straight to the proxy.
async fn health_status(p: &RunningProxy, prefix: &str, akid: &str, secret: &str) -> u16 {
    let url = format!("https://localhost:{}{prefix}/kms/xks/v1/health", p.port);
    XksClient::new(&p.fixture.pki.ca_pem, akid, secret)
        .post_json(&url, &testkit::xks::health())
        .await
        .status
}

/// Rewrites the proxy config, sends SIGHUP and waits until `prefix` answers `want` to the
/// given credential.
async fn reload(p: &RunningProxy, prefix: &str, akid: &str, secret: &str, want: u16) {
    p.fixture.write_config();
    testkit::signal_process(p.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = health_status(p, prefix, akid, secret).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy's reload did not take effect ({prefix}: {got}, want {want}):\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_failures_surface_as_aws_does() {
    // Three key stores on the proxy: `tenant` (the connected store with an XKS key),
    // `conn` (a disconnected store used to see ConnectionErrorCode) and `fresh` (for
    // CreateCustomKeyStore attempts, which never collide with an existing store).
    let fixture = ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1", "ext-2", "ext-3"]))
        .store(StoreSpec::new("conn", "/conn"))
        .store(StoreSpec::new("fresh", "/fresh"));
    fixture.prepare();
    fixture.keys("tenant", &["create", "ext-dec", "--usage", "decrypt"]);
    let mut p = RunningProxy::spawn(fixture);
    let ca = p.fixture.pki.ca_pem.clone();
    let relay = XksRelay::start("xks.test", &p.fixture.pki.ca, p.port, &ca).await;
    // The front end reaches `xks.test` through the relay; `wrong.test` is the proxy itself,
    // whose certificate does not name it.
    let good = [("xks.test", relay.port), ("wrong.test", p.port)];
    let mut f = start_frontend(&ca, 250, &good);
    let cred = |i: usize| p.fixture.stores[i].credentials[0].clone();
    let ((akid, secret), (conn_akid, conn_secret), (fresh_akid, fresh_secret)) =
        (cred(0), cred(1), cred(2));
    let mut rows = Vec::new();

    // Set-up, and a baseline probe that shows every probed operation works without a fault.
    let setup = py(
        &f,
        &json!({"akid": akid, "secret": secret, "conn_akid": conn_akid, "conn_secret": conn_secret,
                "fresh_akid": fresh_akid, "fresh_secret": fresh_secret}),
        r#"
out = {}
main = create_store(name='main')['ok']['CustomKeyStoreId']
out['main_connect'] = connect(main)[1]['ConnectionState']
kid = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=main, XksKeyId='ext-1')['ok']['KeyMetadata']['KeyId']
blob = kms.encrypt(KeyId=kid, Plaintext=b'stored before the faults')['CiphertextBlob']
conn = create_store(name='conn', path='/conn/kms/xks/v1', akid=S['conn_akid'], secret=S['conn_secret'])['ok']['CustomKeyStoreId']
control = create_store(name='probe', path='/fresh/kms/xks/v1', akid=S['fresh_akid'], secret=S['fresh_secret'])
out['control'] = control
out['control_delete'] = call('delete_custom_key_store', CustomKeyStoreId=control['ok']['CustomKeyStoreId'])
S.update({'main_sid': main, 'conn_sid': conn, 'kid': kid, 'blob': blob.hex()})
out['baseline'] = probe(conn=True, crypto=True, create_key=False)
out['S'] = S
print(json.dumps(out, default=str))
"#,
    );
    assert_eq!(setup["main_connect"], "CONNECTED", "{setup}");
    ok(&setup["control"]);
    ok(&setup["control_delete"]);
    let base = &setup["baseline"];
    assert_eq!(base["connect"]["state"], "CONNECTED", "{base}");
    ok(&base["encrypt"]);
    assert_eq!(
        ok(&base["decrypt"])["Plaintext"],
        "b'stored before the faults'"
    );
    assert_eq!(base["unchanged"], true, "{base}");
    let s = setup["S"].clone();
    rows.push(row("none (baseline)", base));

    // Every fault below is checked against the same reference rows (§3.8): the management
    // operations get the Xks* exception, Connect ends FAILED with the code, CreateKey gets
    // CustomKeyStoreInvalidStateException, crypto gets KMSInvalidStateException.
    let cks = "CustomKeyStoreInvalidStateException";
    let full = "print(json.dumps(probe(create={}), default=str))";

    // (b) The proxy answers after 1 s; the budget is 250 ms.
    relay.set_mode(RelayMode::Delay(Duration::from_secs(1)));
    let out = py(&f, &s, full);
    relay.set_mode(RelayMode::Forward);
    rows.push(row("(b) proxy slower than the budget", &out));
    check(
        "slow proxy",
        &out,
        &Expect {
            create: Some("XksProxyUriUnreachableException"),
            connect_code: Some("XKS_PROXY_TIMED_OUT"),
            create_key: Some(cks),
            crypto: true,
        },
    );

    // (g) A 200 answer that is not JSON.
    relay.set_mode(RelayMode::Respond(200, "not json".into()));
    let out = py(&f, &s, full);
    relay.set_mode(RelayMode::Forward);
    rows.push(row("(g) malformed JSON", &out));
    check(
        "malformed JSON",
        &out,
        &Expect {
            create: Some("XksProxyInvalidResponseException"),
            connect_code: Some("XKS_PROXY_INVALID_RESPONSE"),
            create_key: Some(cks),
            crypto: true,
        },
    );

    // (h) Encrypt answers with an invalid field: a 3-byte IV, a wrong integrity value, a
    // ciphertext shorter than the plaintext. Encrypt fails and returns no ciphertext.
    let altered = [
        ("initializationVector", json!("AAAA")),
        (
            "ciphertextDataIntegrityValue",
            json!(testkit::xks::b64(&[7u8; 32])),
        ),
        ("ciphertext", json!(testkit::xks::b64(b"short"))),
    ];
    for (field, value) in altered {
        relay.set_mode(RelayMode::AlterField(field.into(), value));
        let out = py(
            &f,
            &s,
            "out = probe(conn=False, create_key=False)\nout.pop('decrypt')\nprint(json.dumps(out, default=str))",
        );
        relay.set_mode(RelayMode::Forward);
        rows.push(row(&format!("(h) Encrypt answer: bad {field}"), &out));
        err(&out["encrypt"], "KMSInvalidStateException");
        assert!(out["encrypt"].get("ok").is_none(), "{out}");
        assert_eq!(out["unchanged"], true, "{out}");
    }

    // (c) A secret the proxy does not know, and an access key id it does not know.
    let wrong_secret = testkit::random_secret();
    let out = py(
        &f,
        &json!({"s": s, "wrong": wrong_secret, "unknown": testkit::random_access_key_id()}),
        r#"
S = S['s'] | {'wrong': S['wrong'], 'unknown': S['unknown']}
out = probe(create={'secret': S['wrong']}, conn=False, crypto=False, create_key=False)
out['create_unknown_akid'] = create_store(name='probe2', path='/fresh/kms/xks/v1', akid=S['unknown'], secret=S['wrong'])
before = state(S['main_sid'])
out['update'] = call('update_custom_key_store', CustomKeyStoreId=S['main_sid'],
    XksProxyAuthenticationCredential={'AccessKeyId': before['XksProxyConfiguration']['AccessKeyId'], 'RawSecretAccessKey': S['wrong']})
out['update_unknown_akid'] = call('update_custom_key_store', CustomKeyStoreId=S['main_sid'],
    XksProxyAuthenticationCredential={'AccessKeyId': S['unknown'], 'RawSecretAccessKey': S['wrong']})
out['update_unchanged'] = state(S['main_sid']) == before
out['still_works'] = call('decrypt', CiphertextBlob=bytes.fromhex(S['blob']))
print(json.dumps(out, default=str))
"#,
    );
    rows.push(row("(c) wrong credential (create)", &out));
    check(
        "wrong credential",
        &out,
        &Expect {
            create: Some("XksProxyIncorrectAuthenticationCredentialException"),
            connect_code: None,
            create_key: None,
            crypto: false,
        },
    );
    err(
        &out["create_unknown_akid"],
        "XksProxyIncorrectAuthenticationCredentialException",
    );
    err(
        &out["update"],
        "XksProxyIncorrectAuthenticationCredentialException",
    );
    err(
        &out["update_unknown_akid"],
        "XksProxyIncorrectAuthenticationCredentialException",
    );
    assert_eq!(out["update_unchanged"], true, "{out}");
    ok(&out["still_works"]);
    rows.push(Row {
        fault: "(c) UpdateCKS credential -> wrong".into(),
        create: outcome(&out["update"]),
        connect: "(store stays CONNECTED, unchanged)".into(),
        create_key: "-".into(),
        crypto: format!("Decrypt {}", outcome(&out["still_works"])),
    });

    // (c) The proxy stops accepting the stores' credentials (rotated on the proxy side): the
    // connection code and the CreateKey and crypto errors of an authentication failure.
    for i in [0, 1] {
        p.fixture.stores[i].credentials[0].1 = testkit::random_secret();
    }
    reload(&p, "/tenant", &akid, &secret, 401).await;
    let out = py(&f, &s, "print(json.dumps(probe(), default=str))");
    rows.push(row("(c) credential no longer accepted", &out));
    p.fixture.stores[0].credentials[0].1 = secret.clone();
    p.fixture.stores[1].credentials[0].1 = conn_secret.clone();
    reload(&p, "/tenant", &akid, &secret, 200).await;
    assert_eq!(
        health_status(&p, "/conn", &conn_akid, &conn_secret).await,
        200
    );
    check(
        "credential no longer accepted",
        &out,
        &Expect {
            create: None,
            connect_code: Some("INVALID_CREDENTIALS"),
            create_key: Some(cks),
            crypto: true,
        },
    );

    // (d) A URI path the proxy does not serve for this credential.
    let out = py(
        &f,
        &s,
        r#"
out = probe(create={'path': '/other/kms/xks/v1'}, conn=False, crypto=False, create_key=False)
before = state(S['main_sid'])
out['update'] = call('update_custom_key_store', CustomKeyStoreId=S['main_sid'], XksProxyUriPath='/other/kms/xks/v1')
out['update_unchanged'] = state(S['main_sid']) == before
out['still_works'] = call('decrypt', CiphertextBlob=bytes.fromhex(S['blob']))
print(json.dumps(out, default=str))
"#,
    );
    rows.push(row("(d) wrong path (create)", &out));
    check(
        "wrong path",
        &out,
        &Expect {
            create: Some("XksProxyInvalidConfigurationException"),
            connect_code: None,
            create_key: None,
            crypto: false,
        },
    );
    err(&out["update"], "XksProxyInvalidConfigurationException");
    assert_eq!(out["update_unchanged"], true, "{out}");
    ok(&out["still_works"]);
    rows.push(Row {
        fault: "(d) UpdateCKS path -> /other".into(),
        create: outcome(&out["update"]),
        connect: "(store stays CONNECTED, unchanged)".into(),
        create_key: "-".into(),
        crypto: format!("Decrypt {}", outcome(&out["still_works"])),
    });

    // (d) The proxy moves the stores to other paths: what a stale path gives at Connect,
    // CreateKey and crypto.
    p.fixture.stores[0].prefix = "/moved-tenant".into();
    p.fixture.stores[1].prefix = "/moved-conn".into();
    reload(&p, "/tenant", &akid, &secret, 404).await;
    let out = py(&f, &s, "print(json.dumps(probe(), default=str))");
    rows.push(row("(d) path no longer served", &out));
    p.fixture.stores[0].prefix = "/tenant".into();
    p.fixture.stores[1].prefix = "/conn".into();
    reload(&p, "/tenant", &akid, &secret, 200).await;
    assert_eq!(
        health_status(&p, "/conn", &conn_akid, &conn_secret).await,
        200
    );
    check(
        "path no longer served",
        &out,
        &Expect {
            create: None,
            connect_code: Some("XKS_PROXY_INVALID_CONFIGURATION"),
            create_key: Some(cks),
            crypto: true,
        },
    );

    // (e) A certificate that does not name the endpoint (`wrong.test` is the proxy itself):
    // create fails; changing a disconnected store's endpoint to it fails and changes nothing.
    let out = py(
        &f,
        &s,
        r#"
out = probe(create={'endpoint': 'https://wrong.test'}, conn=False, crypto=False, create_key=False)
before = state(S['conn_sid'])
out['update'] = call('update_custom_key_store', CustomKeyStoreId=S['conn_sid'], XksProxyUriEndpoint='https://wrong.test')
out['update_unchanged'] = state(S['conn_sid']) == before
out['update_connected'] = call('update_custom_key_store', CustomKeyStoreId=S['main_sid'], XksProxyUriEndpoint='https://wrong.test')
print(json.dumps(out, default=str))
"#,
    );
    rows.push(row("(e) endpoint wrong.test (create)", &out));
    check(
        "wrong-name endpoint",
        &out,
        &Expect {
            create: Some("XksProxyUriUnreachableException"),
            connect_code: None,
            create_key: None,
            crypto: false,
        },
    );
    err(&out["update"], "XksProxyUriUnreachableException");
    assert_eq!(out["update_unchanged"], true, "{out}");
    err(&out["update_connected"], cks);
    rows.push(Row {
        fault: "(e) UpdateCKS endpoint -> wrong.test".into(),
        create: outcome(&out["update"]),
        connect: "(store stays DISCONNECTED, unchanged)".into(),
        create_key: "-".into(),
        crypto: "-".into(),
    });

    // (e) `xks.test` served with a certificate from an untrusted CA, then with a trusted
    // certificate for another name: the front end restarts pointing `xks.test` at such a
    // relay, so the connection code, CreateKey and crypto errors can be seen too.
    let other_ca = service_tls::pki::CertificateAuthority::generate("untrusted CA").expect("CA");
    let untrusted = XksRelay::start("xks.test", &other_ca, p.port, &ca).await;
    let misnamed = XksRelay::start("other.test", &p.fixture.pki.ca, p.port, &ca).await;
    for (fault, port) in [
        ("(e) untrusted CA", untrusted.port),
        ("(e) certificate for another name", misnamed.port),
    ] {
        f = restart_frontend(f, &ca, 250, &[("xks.test", port), ("wrong.test", p.port)]);
        let out = py(&f, &s, full);
        rows.push(row(fault, &out));
        check(
            fault,
            &out,
            &Expect {
                create: Some("XksProxyUriUnreachableException"),
                connect_code: Some("XKS_PROXY_INVALID_TLS_CONFIGURATION"),
                create_key: Some(cks),
                crypto: true,
            },
        );
    }
    f = restart_frontend(f, &ca, 250, &good);

    // (f) The external key is disabled on the proxy; another only allows DECRYPT.
    p.fixture.keys("tenant", &["disable", "ext-2"]);
    let out = py(
        &f,
        &s,
        r#"
before = snapshot()
out = {}
out['disabled'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=S['main_sid'], XksKeyId='ext-2')
out['decrypt_only'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=S['main_sid'], XksKeyId='ext-dec')
out['unchanged'] = snapshot() == before
print(json.dumps(out, default=str))
"#,
    );
    p.fixture.keys("tenant", &["enable", "ext-2"]);
    rows.push(Row {
        fault: "(f) external key DISABLED".into(),
        create: "-".into(),
        connect: "-".into(),
        create_key: outcome(&out["disabled"]),
        crypto: "-".into(),
    });
    rows.push(Row {
        fault: "(f) external key usage DECRYPT only".into(),
        create: "-".into(),
        connect: "-".into(),
        create_key: outcome(&out["decrypt_only"]),
        crypto: "-".into(),
    });
    err(&out["disabled"], "XksKeyInvalidConfigurationException");
    assert_eq!(
        out["disabled"]["message"],
        "The status of the external key must be ENABLED. The status of specified external key is DISABLED.",
        "{out}"
    );
    err(&out["decrypt_only"], "XksKeyInvalidConfigurationException");
    let msg = out["decrypt_only"]["message"].as_str().unwrap_or("");
    let usage = msg
        .strip_prefix("The key usage of the external key must include ENCRYPT and DECRYPT. The key use of specified external key is ")
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(
        usage.contains("DECRYPT") && !usage.contains("ENCRYPT"),
        "{msg}"
    );
    assert_eq!(out["unchanged"], true, "{out}");

    // (a) The proxy is stopped: nothing listens on its port any more. The front end reaches
    // it directly for this one (through the relay, a dead proxy would be the relay's 502).
    f = restart_frontend(f, &ca, 250, &[("xks.test", p.port), ("wrong.test", p.port)]);
    let alive = py(
        &f,
        &s,
        "print(json.dumps(call('decrypt', CiphertextBlob=bytes.fromhex(S['blob'])), default=str))",
    );
    ok(&alive);
    let port = p.port;
    testkit::signal_process(p.pid(), "KILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the proxy did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = py(&f, &s, full);
    rows.push(row("(a) proxy stopped", &out));
    check(
        "proxy stopped",
        &out,
        &Expect {
            create: Some("XksProxyUriUnreachableException"),
            connect_code: Some("XKS_PROXY_NOT_REACHABLE"),
            create_key: Some(cks),
            crypto: true,
        },
    );
    drop((f, p, relay, untrusted, misnamed));

    // (i) The proxy's secondary authorization denies the caller: health is never subject to
    // it (the store connects), CreateKey gets KMSInvalidStateException (the spec's row for
    // AccessDenied), and so does Encrypt with a key the policy let alice create but not use.
    let mut fixture = ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1", "ext-2"]));
    fixture.policy = Some(
        "[[allow]]\nname = \"nobody\"\nprincipals = [\"arn:aws:iam::999999999999:root\"]\n\n\
         [[allow]]\nname = \"create-ext-2-only\"\nprincipals = [\"arn:aws:iam::111122223333:user/alice\"]\n\
         key_ids = [\"ext-2\"]\noperations = [\"CreateKey\"]\n"
            .into(),
    );
    let (p, f) = stack_with(|p| p.port, fixture.start(), 250);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let out = py(
        &f,
        &json!({"akid": akid, "secret": secret}),
        r#"
out = {}
sid = create_store()
out['create'] = sid
sid = sid['ok']['CustomKeyStoreId']
r, st = connect(sid)
out['connect'] = {'state': st['ConnectionState'], 'code': st.get('ConnectionErrorCode')}
before = snapshot()
out['create_key'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
out['unchanged'] = snapshot() == before
allowed = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-2')
out['allowed'] = allowed
out['encrypt'] = timed('encrypt', KeyId=allowed['ok']['KeyMetadata']['KeyId'], Plaintext=b'x')
print(json.dumps(out, default=str))
"#,
    );
    rows.push(row("(i) proxy 403 AccessDenied", &out));
    ok(&out["create"]);
    assert_eq!(out["connect"]["state"], "CONNECTED", "{out}");
    err(&out["create_key"], "KMSInvalidStateException");
    assert_eq!(out["unchanged"], true, "{out}");
    ok(&out["allowed"]);
    err(&out["encrypt"], "KMSInvalidStateException");
    let logs = p.logs();
    assert!(
        logs.contains("AccessDenied") || logs.contains("denied"),
        "{logs}"
    );

    let mut table = String::from("\nfault | Create/UpdateCKS | Connect | CreateKey | crypto\n");
    for r in &rows {
        table.push_str(&format!(
            "{} | {} | {} | {} | {}\n",
            r.fault, r.create, r.connect, r.create_key, r.crypto
        ));
    }
    eprintln!("{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_key_id_uniqueness_under_50_concurrent_create_key_calls() {
    // A generous proxy budget: the property is uniqueness, not latency on a busy 2-core
    // machine (50 first calls race into the proxy at once).
    let (p, f) = stack_with(|p| p.port, proxy(), 5000);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let out = py(
        &f,
        &json!({"akid": akid, "secret": secret}),
        r#"
import threading, collections
from concurrent.futures import ThreadPoolExecutor
sid = create_store()['ok']['CustomKeyStoreId']
assert connect(sid)[1]['ConnectionState'] == 'CONNECTED'
N = 50
cfg = Config(retries={'max_attempts': 1}, parameter_validation=False, max_pool_connections=2)
clients = [boto3.session.Session().client('kms', config=cfg) for _ in range(N)]
barrier = threading.Barrier(N)
def one(c):
    barrier.wait()
    try:
        return ('ok', c.create_key(Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')['KeyMetadata']['KeyId'])
    except botocore.exceptions.ClientError as e:
        return (e.response['Error']['Code'], e.response['Error'].get('Message'))
with ThreadPoolExecutor(max_workers=N) as ex:
    results = list(ex.map(one, clients))
counts = collections.Counter(r[0] for r in results)
created = [r[1] for r in results if r[0] == 'ok']
others = [r for r in results if r[0] not in ('ok', 'XksKeyAlreadyInUseException')]
keys = [k['KeyId'] for k in kms.list_keys()['Keys']]
in_store = [k for k in keys if kms.describe_key(KeyId=k)['KeyMetadata'].get('CustomKeyStoreId') == sid]
print(json.dumps({'counts': counts, 'created': created, 'others': others[:5], 'keys': keys, 'in_store': in_store}))
"#,
    );
    assert_eq!(out["counts"]["ok"], 1, "{out}");
    assert_eq!(out["counts"]["XksKeyAlreadyInUseException"], 49, "{out}");
    assert_eq!(out["others"], json!([]), "{out}");
    assert_eq!(out["in_store"], out["created"], "{out}");
    assert_eq!(out["keys"], out["created"], "{out}");
}

/// The load: encrypt + decrypt with an XKS key in a loop until `stop` appears in the
/// directory (or 60 s), counting successes per phase (the marker files the test writes).
const LOAD: &str = r#"
import json, os, sys, time, boto3, botocore
from botocore.config import Config
kms = boto3.client('kms', config=Config(retries={'max_attempts': 1}))
kid, d = sys.argv[1], sys.argv[2]
phases = ['start', 'added', 'updated', 'removed']
ok = {p: 0 for p in phases}
fails, worst = [], 0.0
end = time.time() + 60
while time.time() < end and not os.path.exists(os.path.join(d, 'stop')):
    phase = [p for p in phases if p == 'start' or os.path.exists(os.path.join(d, p))][-1]
    t = time.time()
    try:
        pt = os.urandom(48)
        blob = kms.encrypt(KeyId=kid, Plaintext=pt, EncryptionContext={'phase': phase})['CiphertextBlob']
        if kms.decrypt(CiphertextBlob=blob, EncryptionContext={'phase': phase})['Plaintext'] != pt:
            raise ValueError('round trip changed the data')
        ok[phase] += 1
        if sum(ok.values()) == 1:
            open(os.path.join(d, 'running'), 'w').close()
    except Exception as e:
        fails.append(phase + ': ' + repr(e)[:300])
    worst = max(worst, time.time() - t)
print(json.dumps({'ok': ok, 'fails': fails, 'worst_round_trip_s': worst, 'timed_out': time.time() >= end}))
"#;

async fn wait_for_file(path: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the load script exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_rotation_under_continuous_load_has_zero_failures() {
    // A 2 s budget: the property is that the handover loses no request, not latency on a
    // shared 2-core machine; the worst round trip is reported.
    let (mut p, f) = stack_with(|p| p.port, proxy(), 2000);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let setup = py(
        &f,
        &json!({"akid": akid, "secret": secret}),
        r#"
sid = create_store()['ok']['CustomKeyStoreId']
st = connect(sid)[1]['ConnectionState']
kid = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')['ok']['KeyMetadata']['KeyId']
print(json.dumps({'sid': sid, 'state': st, 'kid': kid}))
"#,
    );
    assert_eq!(setup["state"], "CONNECTED", "{setup}");
    let (sid, kid) = (
        setup["sid"].as_str().expect("sid").to_owned(),
        setup["kid"].as_str().expect("kid").to_owned(),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("load.py");
    std::fs::write(&script, LOAD).expect("write load script");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script)
        .arg(&kid)
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in f.client_env(f.alice(), REGION) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("python3");
    let mark = |name: &str| std::fs::write(dir.path().join(name), b"").expect("marker");
    wait_for_file(&dir.path().join("running"), &mut child).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. The proxy accepts a second credential (both work).
    let (new_akid, new_secret) = (testkit::random_access_key_id(), testkit::random_secret());
    p.fixture.stores[0]
        .credentials
        .push((new_akid.clone(), new_secret.clone()));
    reload(&p, "/tenant", &new_akid, &new_secret, 200).await;
    assert_eq!(health_status(&p, "/tenant", &akid, &secret).await, 200);
    mark("added");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. The store switches to it while CONNECTED.
    let upd = py(
        &f,
        &json!({"akid": new_akid, "secret": new_secret, "sid": sid}),
        r#"
r = call('update_custom_key_store', CustomKeyStoreId=S['sid'],
    XksProxyAuthenticationCredential={'AccessKeyId': S['akid'], 'RawSecretAccessKey': S['secret']})
print(json.dumps({'update': r, 'after': state(S['sid'])}, default=str))
"#,
    );
    ok(&upd["update"]);
    assert_eq!(upd["after"]["ConnectionState"], "CONNECTED", "{upd}");
    mark("updated");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. The proxy forgets the old credential.
    p.fixture.stores[0].credentials.remove(0);
    reload(&p, "/tenant", &akid, &secret, 401).await;
    assert_eq!(
        health_status(&p, "/tenant", &new_akid, &new_secret).await,
        200
    );
    mark("removed");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    mark("stop");

    let output = tokio::task::block_in_place(|| child.wait_with_output()).expect("load script");
    assert!(
        output.status.success(),
        "load script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let load: Value = serde_json::from_slice(&output.stdout).expect("load JSON");
    eprintln!("rotation load: {load}");
    assert_eq!(load["fails"], json!([]), "{load}");
    assert_eq!(load["timed_out"], false, "{load}");
    for phase in ["start", "added", "updated", "removed"] {
        assert!(
            load["ok"][phase].as_u64().is_some_and(|n| n > 0),
            "no successful round trip in phase {phase}: {load}"
        );
    }

    let after = py(
        &f,
        &json!({"akid": new_akid, "secret": new_secret, "sid": sid}),
        "print(json.dumps(state(S['sid']), default=str))",
    );
    assert_eq!(
        after["XksProxyConfiguration"]["AccessKeyId"],
        new_akid.as_str(),
        "{after}"
    );
    assert_eq!(after["ConnectionState"], "CONNECTED", "{after}");
}

fn cli_json(f: &RunningFrontend, args: &[&str]) -> Value {
    let out = f.aws_cli(f.alice(), REGION, args);
    assert!(
        out.status.success(),
        "aws kms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return json!({});
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "aws kms {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_aws_cli_creates_and_uses_an_external_key_store() {
    let (p, f) = stack_with(|p| p.port, proxy(), 250);
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let credential = format!("AccessKeyId={akid},RawSecretAccessKey={secret}");
    let created = cli_json(
        &f,
        &[
            "create-custom-key-store",
            "--custom-key-store-name",
            "cli-store",
            "--custom-key-store-type",
            "EXTERNAL_KEY_STORE",
            // CLI v1 fetches any parameter value that starts with https:// (its
            // `cli_follow_urlparam`); JSON input is taken as is.
            "--cli-input-json",
            r#"{"XksProxyUriEndpoint": "https://xks.test"}"#,
            "--xks-proxy-uri-path",
            "/tenant/kms/xks/v1",
            "--xks-proxy-connectivity",
            "PUBLIC_ENDPOINT",
            "--xks-proxy-authentication-credential",
            &credential,
        ],
    );
    let sid = created["CustomKeyStoreId"]
        .as_str()
        .expect("CustomKeyStoreId")
        .to_owned();
    assert!(sid.starts_with("cks-"), "{created}");
    cli_json(
        &f,
        &["connect-custom-key-store", "--custom-key-store-id", &sid],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        let d = cli_json(
            &f,
            &["describe-custom-key-stores", "--custom-key-store-id", &sid],
        );
        let s = d["CustomKeyStores"][0].clone();
        if s["ConnectionState"] == "CONNECTED" || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(store["ConnectionState"], "CONNECTED", "{store}");
    assert_eq!(store["XksProxyConfiguration"]["AccessKeyId"], akid.as_str());
    assert!(!store.to_string().contains(&secret));

    let key = cli_json(
        &f,
        &[
            "create-key",
            "--origin",
            "EXTERNAL_KEY_STORE",
            "--custom-key-store-id",
            &sid,
            "--xks-key-id",
            "ext-1",
        ],
    );
    let md = &key["KeyMetadata"];
    assert_eq!(md["Origin"], "EXTERNAL_KEY_STORE", "{key}");
    assert_eq!(md["XksKeyConfiguration"]["Id"], "ext-1", "{key}");
    assert_eq!(md["CustomKeyStoreId"], sid.as_str(), "{key}");
    let kid = md["KeyId"].as_str().expect("KeyId").to_owned();

    // CLI v1: --plaintext is taken as text; the output blob is base64.
    let enc = cli_json(
        &f,
        &[
            "encrypt",
            "--key-id",
            &kid,
            "--plaintext",
            "hello from the CLI",
        ],
    );
    let blob = testkit::xks::unb64(&enc["CiphertextBlob"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let blob_file = dir.path().join("blob.bin");
    std::fs::write(&blob_file, &blob).expect("write blob");
    let fileb = format!("fileb://{}", blob_file.display());
    let dec = cli_json(&f, &["decrypt", "--ciphertext-blob", &fileb]);
    assert_eq!(
        testkit::xks::unb64(&dec["Plaintext"]),
        b"hello from the CLI",
        "{dec}"
    );
    assert_eq!(dec["KeyId"], md["Arn"], "{dec}");

    cli_json(
        &f,
        &["disconnect-custom-key-store", "--custom-key-store-id", &sid],
    );
    let del = f.aws_cli(
        f.alice(),
        REGION,
        &["delete-custom-key-store", "--custom-key-store-id", &sid],
    );
    assert!(!del.status.success());
    let stderr = String::from_utf8_lossy(&del.stderr);
    assert!(
        stderr.contains("CustomKeyStoreHasCMKsException"),
        "{stderr}"
    );
}
