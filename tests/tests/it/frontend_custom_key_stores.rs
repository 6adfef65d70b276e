//! The custom key store APIs through the real front end and proxy: every parameter
//! constraint and error as AWS names them, the state machine's refusals, VPC endpoint
//! service stores, paging, and periodic health checks while CONNECTED.

use serde_json::Value;
use std::time::Duration;
use testkit::frontend::{FrontendFixture, RunningFrontend};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};

fn stack(extra: &str) -> (RunningProxy, RunningFrontend) {
    let p = ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1"]))
        .store(StoreSpec::new("second", "/second").with_keys(&["ext-1"]))
        .start();
    let mut f = FrontendFixture::new();
    f.extra_toml = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\ntimeout_ms = 1000\n{extra}\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{}\"\n",
        p.fixture.pki.ca_pem.display(),
        p.port
    );
    (p, f.start())
}

const HELPERS: &str = r#"
import time
AKID, SECRET, AKID2, SECRET2 = sys.argv[1:5]
def create(name='s', path='/tenant/kms/xks/v1', endpoint='https://xks.test', akid=None, secret=None, connectivity='PUBLIC_ENDPOINT', **kw):
    args = dict(CustomKeyStoreName=name, CustomKeyStoreType='EXTERNAL_KEY_STORE', XksProxyUriEndpoint=endpoint,
        XksProxyUriPath=path, XksProxyConnectivity=connectivity,
        XksProxyAuthenticationCredential={'AccessKeyId': akid or AKID, 'RawSecretAccessKey': secret or SECRET})
    args.update(kw)
    return call('create_custom_key_store', **args)
def state(sid):
    return call('describe_custom_key_stores', CustomKeyStoreId=sid)['ok']['CustomKeyStores'][0]
def wait_state(sid, want, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        s = state(sid)
        if s['ConnectionState'] in want: return s
        time.sleep(0.05)
    return state(sid)
"#;

#[track_caller]
fn err(v: &Value, code: &str) {
    assert_eq!(v["error"].as_str(), Some(code), "{v}");
}

#[track_caller]
fn ok(v: &Value) -> &Value {
    assert!(v.get("ok").is_some(), "expected success, got {v}");
    &v["ok"]
}

#[test]
fn parameters_errors_and_state_rules() {
    let (p, f) = stack("");
    let (a1, s1) = p.fixture.stores[0].credentials[0].clone();
    let (a2, s2) = p.fixture.stores[1].credentials[0].clone();
    let script = format!(
        "{HELPERS}\n{}",
        r#"
out = {}
out['bad_endpoint_scheme'] = create(endpoint='http://xks.test')
out['bad_endpoint_port'] = create(endpoint='https://xks.test:8443')
out['bad_path'] = create(path='/tenant/kms/xks/v1/extra')
out['bad_path_chars'] = create(path='/ten ant/kms/xks/v1')
out['short_akid'] = create(akid='ABC')
out['bad_akid_chars'] = create(akid='AKIA0000000000000000001')
out['short_secret'] = create(secret='short')
out['bad_connectivity'] = create(connectivity='SOMETIMES')
out['long_name'] = create(name='n' * 257)
out['cloudhsm'] = call('create_custom_key_store', CustomKeyStoreName='hsm', CloudHsmClusterId='cluster-234567abcdef', TrustAnchorCertificate='x', KeyStorePassword='1234567')
out['vpc_without_service'] = create(name='v0', connectivity='VPC_ENDPOINT_SERVICE')
out['vpc_bad_service'] = create(name='v1', connectivity='VPC_ENDPOINT_SERVICE', XksProxyVpcEndpointServiceName='not-a-service')
first = create(name='one')
out['first'] = first
sid = first['ok']['CustomKeyStoreId']
out['same_name'] = create(name='one', path='/second/kms/xks/v1', akid=AKID2, secret=SECRET2)
out['same_endpoint_and_path'] = create(name='two')
out['other_path'] = create(name='two', path='/second/kms/xks/v1', akid=AKID2, secret=SECRET2)
out['vpc'] = create(name='vpc', endpoint='https://vpc.xks.test', connectivity='VPC_ENDPOINT_SERVICE', XksProxyVpcEndpointServiceName='com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0')
out['vpc_same_service'] = create(name='vpc2', endpoint='https://vpc2.xks.test', connectivity='VPC_ENDPOINT_SERVICE', XksProxyVpcEndpointServiceName='com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0')
vid = out['vpc']['ok']['CustomKeyStoreId']
call('connect_custom_key_store', CustomKeyStoreId=vid)
out['vpc_connected'] = wait_state(vid, ('CONNECTED', 'FAILED'))
out['connect_failed'] = call('connect_custom_key_store', CustomKeyStoreId=vid)
out['by_name'] = call('describe_custom_key_stores', CustomKeyStoreName='one')
out['both'] = call('describe_custom_key_stores', CustomKeyStoreName='one', CustomKeyStoreId=sid)
out['unknown_id'] = call('describe_custom_key_stores', CustomKeyStoreId='cks-00000000000000000')
pages, marker = [], None
while True:
    kw = {'Limit': 1}
    if marker: kw['Marker'] = marker
    r = call('describe_custom_key_stores', **kw)['ok']
    pages.append([s['CustomKeyStoreName'] for s in r['CustomKeyStores']])
    if not r.get('Truncated'): break
    marker = r['NextMarker']
out['pages'] = pages
out['disconnect_disconnected'] = call('disconnect_custom_key_store', CustomKeyStoreId=sid)
call('connect_custom_key_store', CustomKeyStoreId=sid)
out['connected'] = wait_state(sid, ('CONNECTED', 'FAILED'))
out['update_endpoint_connected'] = call('update_custom_key_store', CustomKeyStoreId=sid, XksProxyUriEndpoint='https://other.xks.test')
out['rename_connected'] = call('update_custom_key_store', CustomKeyStoreId=sid, NewCustomKeyStoreName='renamed')
out['rename_to_taken'] = call('update_custom_key_store', CustomKeyStoreId=sid, NewCustomKeyStoreName='two')
out['delete_connected'] = call('delete_custom_key_store', CustomKeyStoreId=sid)
out['update_unknown'] = call('update_custom_key_store', CustomKeyStoreId='cks-00000000000000000', NewCustomKeyStoreName='x')
out['after'] = state(sid)
print(json.dumps(out, default=str))
"#
    );
    let out = f.boto3(f.alice(), "us-east-1", &script, &[&a1, &s1, &a2, &s2]);
    for (case, code) in [
        ("bad_endpoint_scheme", "ValidationException"),
        ("bad_endpoint_port", "ValidationException"),
        ("bad_path", "ValidationException"),
        ("bad_path_chars", "ValidationException"),
        ("short_akid", "ValidationException"),
        ("bad_akid_chars", "ValidationException"),
        ("short_secret", "ValidationException"),
        ("bad_connectivity", "ValidationException"),
        ("long_name", "ValidationException"),
        ("cloudhsm", "CloudHsmClusterNotFoundException"),
        ("vpc_without_service", "ValidationException"),
        ("vpc_bad_service", "ValidationException"),
        ("same_name", "CustomKeyStoreNameInUseException"),
        ("same_endpoint_and_path", "XksProxyUriInUseException"),
        (
            "vpc_same_service",
            "XksProxyVpcEndpointServiceInUseException",
        ),
        ("connect_failed", "CustomKeyStoreInvalidStateException"),
        ("both", "ValidationException"),
        ("unknown_id", "CustomKeyStoreNotFoundException"),
        (
            "disconnect_disconnected",
            "CustomKeyStoreInvalidStateException",
        ),
        (
            "update_endpoint_connected",
            "CustomKeyStoreInvalidStateException",
        ),
        ("rename_to_taken", "CustomKeyStoreNameInUseException"),
        ("delete_connected", "CustomKeyStoreInvalidStateException"),
        ("update_unknown", "CustomKeyStoreNotFoundException"),
    ] {
        err(&out[case], code);
    }
    // The secret is sensitive: never echoed, even in a validation message.
    assert!(
        !out["short_secret"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("short")
    );
    assert!(out["bad_endpoint_scheme"]["message"].as_str().is_some_and(|m| m.contains("at 'xksProxyUriEndpoint' failed to satisfy constraint: Member must satisfy regular expression pattern: ^https://[a-zA-Z0-9.-]+$")), "{}", out["bad_endpoint_scheme"]);
    ok(&out["first"]);
    ok(&out["other_path"]);
    ok(&out["vpc"]);
    // A VPC endpoint service store cannot connect here: no VPC exists.
    assert_eq!(out["vpc_connected"]["ConnectionState"], "FAILED");
    assert_eq!(
        out["vpc_connected"]["ConnectionErrorCode"],
        "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND"
    );
    assert_eq!(
        out["vpc_connected"]["XksProxyConfiguration"]["VpcEndpointServiceName"],
        "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
    );
    assert_eq!(
        ok(&out["by_name"])["CustomKeyStores"][0]["CustomKeyStoreName"],
        "one"
    );
    let pages: Vec<Vec<String>> = serde_json::from_value(out["pages"].clone()).expect("pages");
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages.iter().all(|p| p.len() == 1));
    assert_eq!(out["connected"]["ConnectionState"], "CONNECTED");
    assert!(out["connected"].get("ConnectionErrorCode").is_none());
    ok(&out["rename_connected"]);
    assert_eq!(out["after"]["CustomKeyStoreName"], "renamed");
    assert_eq!(
        out["after"]["XksProxyConfiguration"]["UriEndpoint"],
        "https://xks.test"
    );
    // Create and Update asked the proxy's health with KMS's operation names.
    let logs = p.logs();
    for op in [
        "CreateCustomKeyStore",
        "ConnectCustomKeyStore",
        "UpdateCustomKeyStore",
    ] {
        assert!(
            logs.contains(&format!("kms_operation=\"{op}\"")),
            "{op} not seen by the proxy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_stores_are_health_checked_periodically() {
    let (p, f) = stack("health_check_interval_seconds = 1");
    let (a1, s1) = p.fixture.stores[0].credentials[0].clone();
    let (a2, s2) = p.fixture.stores[1].credentials[0].clone();
    let script = format!(
        "{HELPERS}\n{}",
        r#"
sid = create()['ok']['CustomKeyStoreId']
call('connect_custom_key_store', CustomKeyStoreId=sid)
print(json.dumps(wait_state(sid, ('CONNECTED', 'FAILED')), default=str))
"#
    );
    let out = tokio::task::block_in_place(|| {
        f.boto3(f.alice(), "us-east-1", &script, &[&a1, &s1, &a2, &s2])
    });
    assert_eq!(out["ConnectionState"], "CONNECTED");
    let mut seen = false;
    for _ in 0..100 {
        if f.metric("kms_frontend_xks_health_checks_total{result=\"ok\"}")
            .await
            >= 2.0
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "no periodic health checks counted: {}", f.logs());
    assert!(p.logs().contains("kms_operation=\"KmsHealthCheck\""));
    // A failing check is counted and logged but does not change the state.
    drop(p);
    let mut failed = false;
    for _ in 0..100 {
        if f.metric("kms_frontend_xks_health_checks_total{result=\"error\"}")
            .await
            >= 1.0
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "{}", f.logs());
    let state = format!(
        "{HELPERS}\nprint(json.dumps(call('describe_custom_key_stores')['ok']['CustomKeyStores'][0], default=str))"
    );
    let s = tokio::task::block_in_place(|| {
        f.boto3(f.alice(), "us-east-1", &state, &[&a1, &s1, &a2, &s2])
    });
    assert_eq!(s["ConnectionState"], "CONNECTED");
}
