//! Concurrent changes to one key through the real front end: two boto3 clients released
//! together by a `threading.Barrier`, 500 rounds per pair of operations. After every round
//! the key's state, tags, policy and description must be what the acknowledged operations
//! say, whatever order the server ran them in: no acknowledged change may be undone by a
//! concurrent one (a key that answered DisableKey with 200 and still works, a scheduled
//! deletion silently cancelled, a policy or description reverted).

use serde_json::Value;
use testkit::frontend::{FrontendFixture, RunningFrontend};

/// Rounds per pair of operations.
const ROUNDS: usize = 500;

/// The Python harness: `race(first, second)` runs two calls, one per client and thread,
/// released together; `observe()` reads the key back. Each pair's script defines `reset`,
/// `first`, `second` and runs `rounds`.
const HARNESS: &str = r#"
import threading
cfg = Config(retries={'max_attempts': 1}, parameter_validation=False, max_pool_connections=2)
clients = [boto3.client('kms', config=cfg), boto3.client('kms', config=cfg)]
N = int(sys.argv[1])
key = call('create_key', Description='race')['ok']['KeyMetadata']['KeyId']

def outcome(client, op, kw):
    try:
        getattr(client, op)(**kw)
        return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error'].get('Code') + ': ' + e.response['Error'].get('Message', '')

start = threading.Barrier(3)
done = threading.Barrier(3)
jobs = [None, None]
results = [None, None]

def worker(i):
    while True:
        start.wait()
        job = jobs[i]
        if job is None:
            return
        results[i] = outcome(clients[i], job[0], job[1])
        done.wait()

threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
for t in threads:
    t.start()

def race(a, b):
    jobs[0], jobs[1] = a, b
    start.wait()
    done.wait()
    return list(results)

def observe():
    m = call('describe_key', KeyId=key)['ok']['KeyMetadata']
    tags = call('list_resource_tags', KeyId=key)['ok']['Tags']
    policy = call('get_key_policy', KeyId=key, PolicyName='default')['ok']['Policy']
    return {'state': m['KeyState'], 'description': m['Description'],
            'tags': {t['TagKey']: t['TagValue'] for t in tags},
            'policy_id': json.loads(policy).get('Id')}

rounds = []
for n in range(N):
    reset(n)
    a, b = race(first(n), second(n))
    rounds.append({'round': n, 'first': a, 'second': b, 'after': observe()})
jobs[0] = jobs[1] = None
start.wait()
print(json.dumps(rounds))
"#;

/// Runs `pair` (Python defining `reset(n)`, `first(n)`, `second(n)`) for [`ROUNDS`] rounds
/// and returns one JSON object per round: both outcomes and the key as read afterwards.
fn race(f: &RunningFrontend, pair: &str) -> Vec<Value> {
    // `reset`, `first` and `second` are looked up when the rounds run, after both parts.
    let harness = HARNESS.replacen("\nrounds = []", &format!("\n{pair}\nrounds = []"), 1);
    let out = f.boto3(f.alice(), "us-east-1", &harness, &[&ROUNDS.to_string()]);
    let rounds = out.as_array().expect("one entry per round").clone();
    assert_eq!(rounds.len(), ROUNDS);
    rounds
}

/// Fails with every round whose final state contradicts its acknowledged operations
/// (`check` returns why, or `None`), counting them.
fn assert_consistent(rounds: &[Value], check: impl Fn(&Value) -> Option<String>) {
    let bad: Vec<String> = rounds
        .iter()
        .filter_map(|r| check(r).map(|why| format!("round {}: {why}: {r}", r["round"])))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} rounds ended in a state the acknowledged operations contradict; first ones:\n{}",
        bad.len(),
        rounds.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn acked(r: &Value, which: &str) -> bool {
    r[which] == "ok"
}

#[test]
fn disable_key_and_tag_resource_both_stick() {
    let f = FrontendFixture::new().start();
    let rounds = race(
        &f,
        r#"
def reset(n):
    assert 'ok' in call('enable_key', KeyId=key)
    assert 'ok' in call('untag_resource', KeyId=key, TagKeys=['round'])
def first(n):
    return ('disable_key', {'KeyId': key})
def second(n):
    return ('tag_resource', {'KeyId': key, 'Tags': [{'TagKey': 'round', 'TagValue': str(n)}]})
"#,
    );
    // From Enabled both operations are valid in either order, so both must succeed and
    // both effects must remain.
    assert_consistent(&rounds, |r| {
        let n = r["round"].to_string();
        if !acked(r, "first") || !acked(r, "second") {
            return Some("an operation valid in either order was refused".into());
        }
        if r["after"]["state"] != "Disabled" {
            return Some("DisableKey answered 200 but the key is not Disabled".into());
        }
        if r["after"]["tags"]["round"].as_str() != Some(n.as_str()) {
            return Some("TagResource answered 200 but its tag is missing".into());
        }
        None
    });
}

#[test]
fn schedule_key_deletion_and_enable_key_never_revive_the_key() {
    let f = FrontendFixture::new().start();
    let rounds = race(
        &f,
        r#"
def reset(n):
    state = call('describe_key', KeyId=key)['ok']['KeyMetadata']['KeyState']
    if state == 'PendingDeletion':
        assert 'ok' in call('cancel_key_deletion', KeyId=key)
    assert 'ok' in call('disable_key', KeyId=key)
def first(n):
    return ('schedule_key_deletion', {'KeyId': key, 'PendingWindowInDays': 7})
def second(n):
    return ('enable_key', {'KeyId': key})
"#,
    );
    // From Disabled: ScheduleKeyDeletion always succeeds; EnableKey succeeds if it runs
    // first and is refused (pending deletion) if it runs second. Either way the key ends
    // PendingDeletion.
    assert_consistent(&rounds, |r| {
        if !acked(r, "first") {
            return Some("ScheduleKeyDeletion from Disabled was refused".into());
        }
        if !acked(r, "second") {
            let refusal = r["second"].as_str().unwrap_or_default();
            if !refusal.starts_with("KMSInvalidStateException: ")
                || !refusal.ends_with(" is pending deletion.")
            {
                return Some("EnableKey was refused with something else than AWS's error".into());
            }
        }
        if r["after"]["state"] != "PendingDeletion" {
            return Some(
                "ScheduleKeyDeletion answered 200 but the key is not PendingDeletion".into(),
            );
        }
        None
    });
    let enable_refused = rounds.iter().filter(|r| !acked(r, "second")).count();
    // A record of how often each order happened, not an assertion.
    eprintln!("EnableKey refused in {enable_refused} of {ROUNDS} rounds (it ran second)");
}

#[test]
fn put_key_policy_and_update_key_description_both_stick() {
    let f = FrontendFixture::new().start();
    let rounds = race(
        &f,
        r#"
base = json.loads(call('get_key_policy', KeyId=key, PolicyName='default')['ok']['Policy'])
def reset(n):
    pass
def first(n):
    policy = dict(base, Id=f'round-{n}')
    return ('put_key_policy', {'KeyId': key, 'PolicyName': 'default', 'Policy': json.dumps(policy)})
def second(n):
    return ('update_key_description', {'KeyId': key, 'Description': f'round-{n}'})
"#,
    );
    assert_consistent(&rounds, |r| {
        let want = format!("round-{}", r["round"]);
        if !acked(r, "first") || !acked(r, "second") {
            return Some("an operation valid in either order was refused".into());
        }
        if r["after"]["policy_id"].as_str() != Some(want.as_str()) {
            return Some("PutKeyPolicy answered 200 but its policy was replaced".into());
        }
        if r["after"]["description"].as_str() != Some(want.as_str()) {
            return Some(
                "UpdateKeyDescription answered 200 but its description was replaced".into(),
            );
        }
        None
    });
}
