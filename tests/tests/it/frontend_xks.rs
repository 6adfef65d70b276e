//! The front end and the proxy together, as AWS KMS and an XKS proxy work: external key
//! stores, CreateKey with EXTERNAL_KEY_STORE, and double encryption, driven by boto3 and the
//! AWS CLI over HTTPS, with the real proxy in the path (proved by its logs and by an
//! intercepting relay that records what the proxy receives).

use serde_json::Value;
use testkit::frontend::{FrontendFixture, RunningFrontend};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::relay::XksRelay;

/// A proxy with one key store `/tenant` and external keys, and a front end that reaches it
/// as `https://xks.test` (through `port`, the proxy's or a relay's).
fn stack_with(
    port_for: impl FnOnce(&RunningProxy) -> u16,
    p: RunningProxy,
) -> (RunningProxy, RunningFrontend) {
    let port = port_for(&p);
    let mut f = FrontendFixture::new();
    f.extra_toml = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\ntimeout_ms = 250\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{port}\"\n",
        p.fixture.pki.ca_pem.display()
    );
    (p, f.start())
}

fn proxy() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1", "ext-2"]))
        .start()
}

/// Python helpers: create and connect a store, with the proxy credential from argv.
const STORE_HELPERS: &str = r#"
import time
AKID, SECRET = sys.argv[1], sys.argv[2]
def create_store(name='xks', path='/tenant/kms/xks/v1', endpoint='https://xks.test', akid=None, secret=None):
    return call('create_custom_key_store', CustomKeyStoreName=name, CustomKeyStoreType='EXTERNAL_KEY_STORE',
        XksProxyUriEndpoint=endpoint, XksProxyUriPath=path, XksProxyConnectivity='PUBLIC_ENDPOINT',
        XksProxyAuthenticationCredential={'AccessKeyId': akid or AKID, 'RawSecretAccessKey': secret or SECRET})
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
"#;

fn creds(p: &RunningProxy) -> (String, String) {
    p.fixture.stores[0].credentials[0].clone()
}

fn script(body: &str) -> String {
    format!("{STORE_HELPERS}\n{body}")
}

fn ok(v: &Value) -> &Value {
    assert!(v.get("ok").is_some(), "expected success, got {v}");
    &v["ok"]
}

#[track_caller]
fn err(v: &Value, code: &str) {
    assert_eq!(v["error"].as_str(), Some(code), "{v}");
}

#[test]
fn store_lifecycle_xks_keys_and_double_encryption() {
    let (p, f) = stack_with(|p| p.port, proxy());
    let (akid, secret) = creds(&p);
    let s = script(
        r#"
out = {}
c = create_store()
out['create'] = c
sid = c['ok']['CustomKeyStoreId']
out['initial'] = state(sid)
out['key_while_disconnected'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
out['connect'], out['connected'] = connect(sid)
k = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1', Description='xks')
out['key'] = k
kid = k['ok']['KeyMetadata']['KeyId']
out['again'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
out['missing_ext'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='no-such-key')
out['not_symmetric'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-2', KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')
normal = call('create_key')['ok']['KeyMetadata']['KeyId']
ids = {}
def rid(op, **kw):
    r = getattr(kms, op)(**kw)
    ids.setdefault(op, []).append(r['ResponseMetadata']['RequestId'])
    return r
big = bytes(range(256)) * 16
e1 = rid('encrypt', KeyId=kid, Plaintext=b'hello xks', EncryptionContext={'b': '2', 'a': '1'})
e2 = rid('encrypt', KeyId=kid, Plaintext=big)
out['blob_len_4096'] = len(e2['CiphertextBlob'])
d1 = rid('decrypt', CiphertextBlob=e1['CiphertextBlob'], EncryptionContext={'a': '1', 'b': '2'})
out['d1'] = d1['Plaintext'].decode()
out['d2_ok'] = rid('decrypt', CiphertextBlob=e2['CiphertextBlob'])['Plaintext'] == big
out['wrong_ctx'] = call('decrypt', CiphertextBlob=e1['CiphertextBlob'], EncryptionContext={'a': '1'})
g = rid('generate_data_key', KeyId=kid, KeySpec='AES_256')
out['gdk_ok'] = rid('decrypt', CiphertextBlob=g['CiphertextBlob'])['Plaintext'] == g['Plaintext']
out['gdk_plain_hex'] = g['Plaintext'].hex()
wp = rid('generate_data_key_without_plaintext', KeyId=kid, NumberOfBytes=64)
out['wp_len'] = len(call('decrypt', CiphertextBlob=wp['CiphertextBlob'])['ok']['Plaintext'])
r1 = rid('re_encrypt', CiphertextBlob=e1['CiphertextBlob'], SourceEncryptionContext={'a': '1', 'b': '2'}, DestinationKeyId=normal)
out['to_normal'] = call('decrypt', CiphertextBlob=r1['CiphertextBlob'])['ok']['Plaintext'].decode()
n = kms.encrypt(KeyId=normal, Plaintext=b'from normal')
r2 = rid('re_encrypt', CiphertextBlob=n['CiphertextBlob'], DestinationKeyId=kid)
out['to_xks'] = call('decrypt', CiphertextBlob=r2['CiphertextBlob'])['ok']['Plaintext'].decode()
out['ids'] = ids
out['describe'] = call('describe_key', KeyId=kid)
out['disconnect'] = call('disconnect_custom_key_store', CustomKeyStoreId=sid)
out['unavailable'] = call('describe_key', KeyId=kid)
out['enc_disconnected'] = call('encrypt', KeyId=kid, Plaintext=b'x')
out['delete_connected_store'] = None
out['connect2'], out['reconnected'] = connect(sid)
out['after_reconnect'] = call('decrypt', CiphertextBlob=e1['CiphertextBlob'], EncryptionContext={'a': '1', 'b': '2'})
out['delete_while_connected'] = call('delete_custom_key_store', CustomKeyStoreId=sid)
out['sid'] = sid
out['kid'] = kid
out['e1'] = e1['CiphertextBlob'].hex()
print(json.dumps(out, default=str))
"#,
    );
    let out = f.boto3(f.alice(), "us-east-1", &s, &[&akid, &secret]);
    let sid = out["sid"].as_str().expect("sid").to_owned();
    assert!(sid.starts_with("cks-") && sid.len() == 21, "{sid}");
    assert_eq!(out["initial"]["ConnectionState"], "DISCONNECTED");
    assert_eq!(
        out["initial"]["XksProxyConfiguration"]["UriPath"],
        "/tenant/kms/xks/v1"
    );
    assert!(
        out["initial"]["XksProxyConfiguration"]
            .get("RawSecretAccessKey")
            .is_none()
    );
    assert!(
        !out["initial"].to_string().contains(&secret),
        "the proxy secret is never returned"
    );
    err(
        &out["key_while_disconnected"],
        "CustomKeyStoreInvalidStateException",
    );
    assert_eq!(
        out["connected"]["ConnectionState"], "CONNECTED",
        "{}",
        out["connected"]
    );
    let md = &ok(&out["key"])["KeyMetadata"];
    assert_eq!(md["Origin"], "EXTERNAL_KEY_STORE");
    assert_eq!(md["CustomKeyStoreId"], sid.as_str());
    assert_eq!(md["XksKeyConfiguration"]["Id"], "ext-1");
    assert_eq!(md["KeyState"], "Enabled");
    assert!(
        md.get("CurrentKeyMaterialId").is_none() && md.get("ExpirationModel").is_none(),
        "{md}"
    );
    err(&out["again"], "XksKeyAlreadyInUseException");
    err(&out["missing_ext"], "XksKeyNotFoundException");
    err(&out["not_symmetric"], "UnsupportedOperationException");
    assert_eq!(out["d1"], "hello xks");
    assert_eq!(out["d2_ok"], true);
    assert!(
        out["blob_len_4096"].as_u64().is_some_and(|n| n <= 6144),
        "{}",
        out["blob_len_4096"]
    );
    err(&out["wrong_ctx"], "KMSInvalidStateException");
    assert_eq!(out["gdk_ok"], true);
    assert_eq!(out["wp_len"], 64);
    assert_eq!(out["to_normal"], "hello xks");
    assert_eq!(out["to_xks"], "from normal");
    assert_eq!(ok(&out["describe"])["KeyMetadata"]["KeyState"], "Enabled");
    ok(&out["disconnect"]);
    assert_eq!(
        ok(&out["unavailable"])["KeyMetadata"]["KeyState"],
        "Unavailable"
    );
    err(&out["enc_disconnected"], "KMSInvalidStateException");
    assert!(
        out["enc_disconnected"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is unavailable"))
    );
    assert_eq!(out["reconnected"]["ConnectionState"], "CONNECTED");
    ok(&out["after_reconnect"]);
    err(
        &out["delete_while_connected"],
        "CustomKeyStoreInvalidStateException",
    );

    // Exactly one proxy call per operation, carrying the front end's request id.
    let logs = p.logs();
    for (op, ids) in out["ids"].as_object().expect("ids") {
        for id in ids.as_array().expect("list") {
            let id = id.as_str().expect("id");
            let n = logs.matches(&format!("kms_request_id=\"{id}\"")).count();
            assert_eq!(n, 1, "{op} {id}: {n} proxy calls");
        }
    }
    // The proxy saw the data key only as KMS's inner ciphertext, never in plaintext.
    let data_key = out["gdk_plain_hex"].as_str().expect("hex");
    assert!(!logs.contains(data_key));

    // Disabling the external key on the proxy makes existing ciphertexts undecryptable.
    p.fixture.keys("tenant", &["disable", "ext-1"]);
    let dec = "print(json.dumps(call('decrypt', CiphertextBlob=bytes.fromhex(sys.argv[3]), EncryptionContext={'a': '1', 'b': '2'}), default=str))";
    let r = f.boto3(
        f.alice(),
        "us-east-1",
        &script(dec),
        &[&akid, &secret, out["e1"].as_str().expect("e1")],
    );
    err(&r, "KMSInvalidStateException");
    p.fixture.keys("tenant", &["enable", "ext-1"]);
    let r = f.boto3(
        f.alice(),
        "us-east-1",
        &script(dec),
        &[&akid, &secret, out["e1"].as_str().expect("e1")],
    );
    ok(&r);
}

#[tokio::test]
async fn deletion_frees_the_external_key_and_the_store() {
    let (p, f) = stack_with(|p| p.port, proxy());
    let (akid, secret) = creds(&p);
    let s = script(
        r#"
sid = create_store()['ok']['CustomKeyStoreId']
connect(sid)
kid = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')['ok']['KeyMetadata']['KeyId']
out = {'sid': sid, 'kid': kid}
out['random_in_store'] = call('generate_random', NumberOfBytes=8, CustomKeyStoreId=sid)
out['random_no_store'] = call('generate_random', NumberOfBytes=8, CustomKeyStoreId='cks-00000000000000000')
out['schedule'] = call('schedule_key_deletion', KeyId=kid, PendingWindowInDays=7)
out['reuse_pending'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
call('disconnect_custom_key_store', CustomKeyStoreId=sid)
out['delete_with_keys'] = call('delete_custom_key_store', CustomKeyStoreId=sid)
print(json.dumps(out, default=str))
"#,
    );
    let out = f.boto3(f.alice(), "us-east-1", &s, &[&akid, &secret]);
    err(&out["random_in_store"], "UnsupportedOperationException");
    err(&out["random_no_store"], "CustomKeyStoreNotFoundException");
    ok(&out["schedule"]);
    err(&out["reuse_pending"], "XksKeyAlreadyInUseException");
    err(&out["delete_with_keys"], "CustomKeyStoreHasCMKsException");
    f.advance_clock(8 * 86_400).await;
    let s2 = script(
        r#"
sid = sys.argv[3]
out = {'gone': call('describe_key', KeyId=sys.argv[4])}
connect(sid)
out['reuse'] = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
kid2 = out['reuse']['ok']['KeyMetadata']['KeyId'] if 'ok' in out['reuse'] else None
if kid2:
    call('schedule_key_deletion', KeyId=kid2, PendingWindowInDays=7)
print(json.dumps(out, default=str))
"#,
    );
    let out2 = f.boto3(
        f.alice(),
        "us-east-1",
        &s2,
        &[
            &akid,
            &secret,
            out["sid"].as_str().expect("sid"),
            out["kid"].as_str().expect("kid"),
        ],
    );
    err(&out2["gone"], "NotFoundException");
    ok(&out2["reuse"]);
    f.advance_clock(8 * 86_400).await;
    let s3 = script(
        r#"
sid = sys.argv[3]
call('disconnect_custom_key_store', CustomKeyStoreId=sid)
out = {'delete': call('delete_custom_key_store', CustomKeyStoreId=sid), 'after': call('describe_custom_key_stores', CustomKeyStoreId=sid)}
print(json.dumps(out, default=str))
"#,
    );
    let out3 = f.boto3(
        f.alice(),
        "us-east-1",
        &s3,
        &[&akid, &secret, out["sid"].as_str().expect("sid")],
    );
    ok(&out3["delete"]);
    err(&out3["after"], "CustomKeyStoreNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_never_sees_plaintext_and_neither_side_alone_can_decrypt() {
    let p = proxy();
    let relay = XksRelay::start("xks.test", &p.fixture.pki.ca, p.port, &p.fixture.pki.ca_pem).await;
    let relay_port = relay.port;
    let (p, f) = stack_with(|_| relay_port, p);
    let (akid, secret) = creds(&p);
    let s = script(
        r#"
sid = create_store()['ok']['CustomKeyStoreId']
connect(sid)
kid = call('create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')['ok']['KeyMetadata']['KeyId']
pt = b'CALLER-PLAINTEXT-7f3a9c' * 4
e = kms.encrypt(KeyId=kid, Plaintext=pt)
g = kms.generate_data_key(KeyId=kid, KeySpec='AES_256')
d = kms.decrypt(CiphertextBlob=e['CiphertextBlob'])
print(json.dumps({'pt': pt.hex(), 'dk': g['Plaintext'].hex(), 'ok': d['Plaintext'] == pt, 'blob': e['CiphertextBlob'].hex()}))
"#,
    );
    let out =
        tokio::task::block_in_place(|| f.boto3(f.alice(), "us-east-1", &s, &[&akid, &secret]));
    assert_eq!(out["ok"], true);
    let bodies = relay.bodies();
    assert!(
        bodies.iter().any(|b| b.path.ends_with("/encrypt")),
        "the relay saw the proxy calls"
    );
    let pt = hex::decode(out["pt"].as_str().expect("pt")).expect("hex");
    let dk = hex::decode(out["dk"].as_str().expect("dk")).expect("hex");
    for b in &bodies {
        let text = String::from_utf8_lossy(&b.body).into_owned();
        let json: Value = serde_json::from_str(&text).expect("proxy request is JSON");
        // What the proxy is asked to encrypt is the inner ciphertext: not the caller's data.
        if json["plaintext"].is_string() {
            let sent = testkit::xks::unb64(&json["plaintext"]);
            // Inner ciphertext || inner tag of the caller's data or of the data key.
            assert!(
                sent.len() == pt.len() + 16 || sent.len() == dk.len() + 16,
                "{}",
                sent.len()
            );
            for secret_bytes in [&pt, &dk] {
                assert!(
                    !sent
                        .windows(16)
                        .any(|w| secret_bytes.windows(16).any(|x| x == w))
                );
            }
        }
        for secret_bytes in [&pt, &dk] {
            assert!(
                !b.body
                    .windows(secret_bytes.len())
                    .any(|w| w == &secret_bytes[..])
            );
            let b64 = testkit::xks::b64(secret_bytes);
            assert!(!text.contains(&b64[..20]));
        }
    }
    // The proxy alone: its decrypt of the outer layer yields only the inner ciphertext.
    let blob = hex::decode(out["blob"].as_str().expect("blob")).expect("hex");
    assert!(!blob.windows(pt.len()).any(|w| w == &pt[..]));
}
