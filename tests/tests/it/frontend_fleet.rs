//! A fleet: two or three front-end processes on one PostgreSQL database (a schema of its
//! own on `KMS_TEST_POSTGRES_URL`), sharing the root key, the principals and the proxy
//! settings, each with its own listen addresses and TLS certificate, driven by boto3. What
//! one process writes, every other sees at once; invariants hold across processes because
//! the database enforces them; periodic work is done by one process, not by each.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend, TestStorage};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};

/// A proxy with one key store `/tenant` holding `ext-1` and `ext-2`.
fn proxy() -> RunningProxy {
    ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1", "ext-2"]))
        .start()
}

/// `n` front ends on one fresh PostgreSQL schema, reaching `p` as `https://xks.test`, with
/// `xks_extra` added to their `[xks]` section.
fn fleet(n: usize, p: &RunningProxy, xks_extra: &str) -> Vec<RunningFrontend> {
    let mut first = FrontendFixture::new();
    first.storage = TestStorage::postgres();
    first.extra_toml = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\n{xks_extra}\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{}\"\n",
        p.fixture.pki.ca_pem.display(),
        p.port
    );
    let others: Vec<FrontendFixture> = (1..n).map(|_| first.fleet_member()).collect();
    let mut running = vec![first.start()];
    running.extend(others.into_iter().map(FrontendFixture::start));
    running
}

/// The `[endpoint, CA bundle]` pairs of the fleet, for the Python helpers (argv[1]).
fn endpoints(fleet: &[RunningFrontend]) -> String {
    let pairs: Vec<Value> = fleet
        .iter()
        .map(|f| json!([f.endpoint(), f.fixture.pki.ca_pem.display().to_string()]))
        .collect();
    Value::Array(pairs).to_string()
}

/// Python helpers: `clients[i]` talks to front end `i`; `on(i, op, **kw)` calls it;
/// the proxy credential is argv[2], argv[3].
const HELPERS: &str = r#"
import threading, time
EPS = json.loads(sys.argv[1])
AKID, SECRET = sys.argv[2], sys.argv[3]
cfg = Config(retries={'max_attempts': 1}, parameter_validation=False, max_pool_connections=64)
clients = [boto3.client('kms', endpoint_url=e, verify=ca, config=cfg) for e, ca in EPS]
def on(i, op, **kw):
    try:
        r = getattr(clients[i], op)(**kw)
        r.pop('ResponseMetadata', None)
        return {'ok': r}
    except botocore.exceptions.ClientError as e:
        return {'error': e.response['Error'].get('Code'), 'message': e.response['Error'].get('Message')}
def create_store(i):
    return on(i, 'create_custom_key_store', CustomKeyStoreName='fleet', CustomKeyStoreType='EXTERNAL_KEY_STORE',
        XksProxyUriEndpoint='https://xks.test', XksProxyUriPath='/tenant/kms/xks/v1',
        XksProxyConnectivity='PUBLIC_ENDPOINT',
        XksProxyAuthenticationCredential={'AccessKeyId': AKID, 'RawSecretAccessKey': SECRET})
def state(i, sid):
    return on(i, 'describe_custom_key_stores', CustomKeyStoreId=sid)['ok']['CustomKeyStores'][0]['ConnectionState']
def connect(i, sid, timeout=10):
    on(i, 'connect_custom_key_store', CustomKeyStoreId=sid)
    end = time.time() + timeout
    while time.time() < end and state(i, sid) not in ('CONNECTED', 'FAILED'):
        time.sleep(0.05)
    return state(i, sid)
"#;

fn run(fleet: &[RunningFrontend], p: &RunningProxy, body: &str) -> Value {
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let f = &fleet[0];
    f.boto3(
        f.alice(),
        "us-east-1",
        &format!("{HELPERS}\n{body}"),
        &[&endpoints(fleet), &akid, &secret],
    )
}

#[test]
fn one_xks_key_id_gives_one_key_across_the_fleet_and_state_is_shared_at_once() {
    let p = proxy();
    let fleet = fleet(3, &p, "timeout_ms = 2000");
    let out = run(
        &fleet,
        &p,
        r#"
out = {}
sid = create_store(0)['ok']['CustomKeyStoreId']
out['connected_via_0'] = connect(0, sid)
# Connected through process 0: CONNECTED for the others at once (one read each, no wait).
out['seen_by'] = [state(i, sid) for i in range(len(clients))]
# 50 CreateKey calls with the same XksKeyId, released together, spread over the processes.
N = 50
results = [None] * N
barrier = threading.Barrier(N)
def create(i):
    barrier.wait()
    r = on(i % len(clients), 'create_key', Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')
    results[i] = {'via': i % len(clients), 'key': r['ok']['KeyMetadata']['KeyId'] if 'ok' in r else None,
                  'error': r.get('error'), 'message': r.get('message')}
threads = [threading.Thread(target=create, args=(i,)) for i in range(N)]
for t in threads: t.start()
for t in threads: t.join()
out['results'] = results
out['listed'] = [sorted(k['KeyId'] for k in on(i, 'list_keys')['ok']['Keys']) for i in range(len(clients))]
# The XKS key made through one process, used through the others at once.
w = next(r['via'] for r in results if r['key'])
kid = next(r['key'] for r in results if r['key'])
e = on((w + 1) % 3, 'encrypt', KeyId=kid, Plaintext=b'fleet xks', EncryptionContext={'t': '1'})
out['xks_encrypt'] = 'ok' in e
d = on((w + 2) % 3, 'decrypt', CiphertextBlob=e['ok']['CiphertextBlob'], EncryptionContext={'t': '1'})
out['xks_decrypt'] = d['ok']['Plaintext'].decode() if 'ok' in d else d
# An AWS_KMS key: created through 1, used through 2 and 0; disabled through 0, which
# process 1 sees at once.
k = on(1, 'create_key', Description='fleet')['ok']['KeyMetadata']['KeyId']
e = on(2, 'encrypt', KeyId=k, Plaintext=b'fleet kms')
d = on(0, 'decrypt', CiphertextBlob=e['ok']['CiphertextBlob'])
out['kms_decrypt'] = d['ok']['Plaintext'].decode() if 'ok' in d else d
out['alias'] = on(2, 'create_alias', AliasName='alias/fleet', TargetKeyId=k)
out['alias_again'] = on(0, 'create_alias', AliasName='alias/fleet', TargetKeyId=k)
out['by_alias'] = on(1, 'describe_key', KeyId='alias/fleet')['ok']['KeyMetadata']['KeyId'] == k
on(0, 'disable_key', KeyId=k)
out['disabled_elsewhere'] = on(1, 'encrypt', KeyId=k, Plaintext=b'x').get('error')
print(json.dumps(out, default=str))
"#,
    );
    assert_eq!(out["connected_via_0"], "CONNECTED", "{out}");
    assert_eq!(
        out["seen_by"],
        json!(["CONNECTED", "CONNECTED", "CONNECTED"]),
        "{out}"
    );
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 50);
    let created: Vec<&Value> = results.iter().filter(|r| !r["key"].is_null()).collect();
    assert_eq!(created.len(), 1, "exactly one key: {out}");
    for r in results.iter().filter(|r| r["key"].is_null()) {
        assert_eq!(r["error"], "XksKeyAlreadyInUseException", "{r}");
    }
    // Every process answered some of the calls (the spread really was over the fleet).
    for via in 0..3 {
        assert!(results.iter().any(|r| r["via"] == via), "{out}");
    }
    let kid = created[0]["key"].clone();
    assert_eq!(out["listed"], json!([[kid], [kid], [kid]]), "{out}");
    assert_eq!(out["xks_encrypt"], true, "{out}");
    assert_eq!(out["xks_decrypt"], "fleet xks", "{out}");
    assert_eq!(out["kms_decrypt"], "fleet kms", "{out}");
    assert!(out["alias"].get("ok").is_some(), "{out}");
    assert_eq!(
        out["alias_again"]["error"], "AlreadyExistsException",
        "{out}"
    );
    assert_eq!(out["by_alias"], true, "{out}");
    assert_eq!(out["disabled_elsewhere"], "DisabledException", "{out}");
}

/// The periodic health checks counted by each process.
async fn checks(fleet: &[RunningFrontend]) -> Vec<f64> {
    let mut v = Vec::new();
    for f in fleet {
        v.push(
            f.metric("kms_frontend_xks_health_checks_total{result=\"ok\"}")
                .await,
        );
    }
    v
}

/// Waits (bounded) until `done` holds for the fleet's health-check counts.
async fn wait_checks(
    fleet: &[RunningFrontend],
    within: Duration,
    done: impl Fn(&[f64]) -> bool,
) -> Vec<f64> {
    let end = std::time::Instant::now() + within;
    loop {
        let c = checks(fleet).await;
        if done(&c) || std::time::Instant::now() > end {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_polls_a_proxy_and_another_takes_over_when_it_is_killed() {
    let p = proxy();
    let mut fleet = fleet(2, &p, "health_check_interval_seconds = 1");
    let out = tokio::task::block_in_place(|| {
        run(
            &fleet,
            &p,
            r#"
sid = create_store(1)['ok']['CustomKeyStoreId']
print(json.dumps({'state': connect(1, sid)}))
"#,
        )
    });
    assert_eq!(out["state"], "CONNECTED", "{out}");
    // Six rounds of checks: all by one process (the lease holder), none by the other.
    let c = wait_checks(&fleet, Duration::from_secs(20), |c| {
        c.iter().sum::<f64>() >= 6.0
    })
    .await;
    assert!(c.iter().sum::<f64>() >= 6.0, "no periodic checks: {c:?}");
    let holder = usize::from(c[0] == 0.0);
    assert_eq!(
        c[1 - holder],
        0.0,
        "both processes polled the proxy: {c:?}\n{}",
        fleet[1 - holder].logs()
    );
    // kill -9 the holder: no release, its lease must expire (3 intervals), then the other
    // process polls.
    fleet[holder].kill_hard();
    let survivor = fleet.remove(1 - holder);
    let survivors = [survivor];
    let c = wait_checks(&survivors, Duration::from_secs(15), |c| c[0] >= 2.0).await;
    assert!(
        c[0] >= 2.0,
        "the surviving process did not take over the polling: {c:?}\n{}",
        survivors[0].logs()
    );
    assert!(
        survivors[0]
            .logs()
            .contains("this process now polls the store's proxy"),
        "{}",
        survivors[0].logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deletion_and_rotation_sweeps_act_once_per_key_across_the_fleet() {
    let p = proxy();
    let fleet = fleet(2, &p, "");
    let out = tokio::task::block_in_place(|| {
        run(
            &fleet,
            &p,
            r#"
keys = [on(0, 'create_key')['ok']['KeyMetadata']['KeyId'] for _ in range(8)]
for k in keys:
    on(1, 'schedule_key_deletion', KeyId=k, PendingWindowInDays=7)
r = on(1, 'create_key')['ok']['KeyMetadata']['KeyId']
on(0, 'enable_key_rotation', KeyId=r, RotationPeriodInDays=90)
print(json.dumps({'keys': keys, 'rotating': r}))
"#,
        )
    });
    let keys: Vec<String> = out["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key id").to_owned())
        .collect();
    // Both processes' clocks pass the deletion date, so both sweeps find the keys due.
    for f in &fleet {
        f.advance_clock(8 * 86_400).await;
    }
    let gone = |f: &RunningFrontend| {
        let script =
            "print(json.dumps([call('describe_key', KeyId=k).get('error') for k in sys.argv[1:]]))";
        let args: Vec<&str> = keys.iter().map(String::as_str).collect();
        f.boto3(f.alice(), "us-east-1", script, &args)
    };
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let mut errors = Value::Null;
    while std::time::Instant::now() < end {
        errors = tokio::task::block_in_place(|| gone(&fleet[1]));
        if errors
            .as_array()
            .is_some_and(|e| e.iter().all(|x| x == "NotFoundException"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(errors, json!(vec!["NotFoundException"; keys.len()]));
    // Give the other sweep a round to run too, then count: each key deleted once, by one
    // process, and no process failed on a key the other deleted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs: Vec<String> = fleet.iter().map(RunningFrontend::logs).collect();
    for k in &keys {
        let deleted = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains("key deleted: its deletion window ended") && l.contains(k))
            .count();
        assert_eq!(
            deleted,
            1,
            "{k} deleted {deleted} times:\n{}",
            logs.join("\n")
        );
    }
    for l in &logs {
        assert!(
            !l.contains("could not delete a key"),
            "a sweep failed on a key the other deleted:\n{l}"
        );
    }

    // Automatic rotation falls due in both processes at once: the key rotates once.
    let rotating = out["rotating"].as_str().expect("rotating key").to_owned();
    for f in &fleet {
        f.advance_clock(91 * 86_400).await;
    }
    let rotations = |f: &RunningFrontend| {
        let script =
            "print(json.dumps(len(kms.list_key_rotations(KeyId=sys.argv[1])['Rotations'])))";
        f.boto3(f.alice(), "us-east-1", script, &[&rotating])
    };
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < end
        && tokio::task::block_in_place(|| rotations(&fleet[0])) == json!(0)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        tokio::task::block_in_place(|| rotations(&fleet[1])),
        json!(1)
    );
    let rotated = fleet
        .iter()
        .flat_map(|f| {
            f.logs()
                .lines()
                .filter(|l| l.contains("key rotated automatically") && l.contains(&rotating))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count();
    assert_eq!(rotated, 1, "rotated {rotated} times");
}
