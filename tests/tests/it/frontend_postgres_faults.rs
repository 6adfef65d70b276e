//! The front end on PostgreSQL when the database goes away mid-run. A TCP relay between
//! the front end and PostgreSQL (`testkit::relay::TcpRelay`) is the fault injector: cut,
//! it plays a stopped server (connections reset, new ones closed); stalled, a hung one
//! (nothing answers). The machine's PostgreSQL is never touched. AWS's answers are expected
//! within a bounded time (`KMSInternalException` for a server that is gone,
//! `DependencyTimeoutException` for one that does not answer), nothing half-written, and
//! the front end serving again by itself once the database is back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend, TestStorage};
use testkit::relay::{TcpRelay, TcpRelayMode};

/// The longest any request may take while the database is down: the configured connect
/// timeout (1 s) plus statement timeout (1 s), with room for a loaded machine.
const BOUND_S: f64 = 4.0;

/// A front end on a fresh PostgreSQL schema, reaching the server through a relay, with
/// short timeouts.
fn front_end_via_relay() -> (TcpRelay, RunningFrontend) {
    let mut f = FrontendFixture::new();
    f.storage = TestStorage::postgres();
    let TestStorage::Postgres(target) = &mut f.storage else {
        unreachable!("just set to PostgreSQL")
    };
    let relay = TcpRelay::start(&target.schema.server.address);
    target.via = Some(relay.address());
    target.extra = "statement_timeout_ms = 1000\nconnect_timeout_ms = 1000\npool_size = 4\n".into();
    (relay, f.start())
}

/// Python: `timed(op, **kw)` is `call` plus how long the answer took (`s`) and its status.
const TIMED: &str = r#"
import time
def timed(op, **kw):
    t = time.monotonic()
    r = call(op, **kw)
    r['s'] = time.monotonic() - t
    return r
"#;

fn run(f: &RunningFrontend, body: &str, args: &[&str]) -> Value {
    f.boto3(f.alice(), "us-east-1", &format!("{TIMED}\n{body}"), args)
}

/// Sets up a key with an alias and a ciphertext; returns (key id, ciphertext hex).
fn key_and_ciphertext(f: &RunningFrontend) -> (String, String) {
    let out = run(
        f,
        r#"
k = call('create_key', Description='before')['ok']['KeyMetadata']['KeyId']
call('create_alias', AliasName='alias/before', TargetKeyId=k)
ct = call('encrypt', KeyId=k, Plaintext=b'kept')['ok']['CiphertextBlob'].hex()
print(json.dumps({'key': k, 'ct': ct}))
"#,
        &[],
    );
    (
        out["key"].as_str().expect("key").to_owned(),
        out["ct"].as_str().expect("ct").to_owned(),
    )
}

/// The writes tried while the database is away, each timed: none may land.
const WRITES_DURING_FAULT: &str = r#"
k, = sys.argv[1:2]
out = {}
out['encrypt'] = timed('encrypt', KeyId=k, Plaintext=b'x')
# By alias: a failed alias lookup is the database's failure, never "alias not found".
out['encrypt_by_alias'] = timed('encrypt', KeyId='alias/before', Plaintext=b'x')
out['describe'] = timed('describe_key', KeyId=k)
out['create_key'] = timed('create_key', Description='during', Tags=[{'TagKey': 't', 'TagValue': 'v'}])
out['schedule_deletion'] = timed('schedule_key_deletion', KeyId=k, PendingWindowInDays=7)
out['alias'] = timed('create_alias', AliasName='alias/during', TargetKeyId=k)
out['tag'] = timed('tag_resource', KeyId=k, Tags=[{'TagKey': 'during', 'TagValue': 'v'}])
print(json.dumps(out, default=str))
"#;

/// After the database is back: waits (bounded) for the first success, then reads
/// everything the failed writes could have touched.
const AFTER_RECOVERY: &str = r#"
k, ct = sys.argv[1], bytes.fromhex(sys.argv[2])
out = {}
end = time.time() + 10
first = None
while time.time() < end:
    r = call('decrypt', CiphertextBlob=ct)
    if 'ok' in r:
        first = r['ok']['Plaintext'].decode()
        break
    time.sleep(0.1)
out['decrypt'] = first
out['keys'] = [x['KeyId'] for x in call('list_keys')['ok']['Keys']]
m = call('describe_key', KeyId=k)['ok']['KeyMetadata']
out['state'] = m['KeyState']
out['aliases'] = sorted(a['AliasName'] for a in call('list_aliases')['ok']['Aliases'] if not a['AliasName'].startswith('alias/aws/'))
out['tags'] = call('list_resource_tags', KeyId=k)['ok']['Tags']
out['new_key'] = 'ok' in call('create_key', Description='after')
print(json.dumps(out, default=str))
"#;

/// Every request failed with `error` (and `status`) within [`BOUND_S`].
#[track_caller]
fn all_failed(out: &Value, error: &str, status: u16) {
    let calls = out.as_object().expect("calls");
    assert_eq!(calls.len(), 7, "{out}");
    for (name, r) in calls {
        assert_eq!(r["error"], error, "{name}: {r}");
        assert_eq!(r["status"], status, "{name}: {r}");
        let s = r["s"].as_f64().expect("seconds");
        assert!(s < BOUND_S, "{name} took {s} s: {r}");
    }
}

/// Nothing tried during the fault landed, and the front end serves again by itself.
#[track_caller]
fn recovered_with_nothing_half_written(f: &RunningFrontend, key: &str, ct: &str) {
    let out = run(f, AFTER_RECOVERY, &[key, ct]);
    assert_eq!(
        out["decrypt"],
        "kept",
        "not serving again: {out}\n{}",
        f.logs()
    );
    assert_eq!(out["keys"], json!([key]), "{out}");
    assert_eq!(out["state"], "Enabled", "{out}");
    assert_eq!(out["aliases"], json!(["alias/before"]), "{out}");
    assert_eq!(out["tags"], json!([]), "{out}");
    assert_eq!(out["new_key"], true, "{out}");
}

#[test]
fn a_stopped_database_gives_internal_errors_at_once_and_the_front_end_recovers() {
    let (relay, f) = front_end_via_relay();
    let (key, ct) = key_and_ciphertext(&f);
    relay.set_mode(TcpRelayMode::Cut);
    let started = Instant::now();
    let out = run(&f, WRITES_DURING_FAULT, &[&key]);
    all_failed(&out, "KMSInternalException", 500);
    assert!(started.elapsed() < Duration::from_secs(30));
    relay.set_mode(TcpRelayMode::Forward);
    recovered_with_nothing_half_written(&f, &key, &ct);
}

#[test]
fn a_hanging_database_gives_dependency_timeouts_and_the_front_end_recovers() {
    let (relay, f) = front_end_via_relay();
    let (key, ct) = key_and_ciphertext(&f);
    relay.set_mode(TcpRelayMode::Stall);
    let out = run(&f, WRITES_DURING_FAULT, &[&key]);
    all_failed(&out, "DependencyTimeoutException", 503);
    // The hung server comes back (restarted: the connections held during the hang are
    // gone, and nothing they carried reaches it).
    relay.set_mode(TcpRelayMode::Forward);
    recovered_with_nothing_half_written(&f, &key, &ct);
}
