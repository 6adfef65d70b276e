//! Multi-Region keys through the running front end (issue 19), driven by boto3 across
//! several Regions of one front end: replicas with every material version, ciphertexts,
//! signatures and MACs accepted by every member in its own Region, `Creating` and
//! `Updating` as AWS shows them, UpdatePrimaryRegion then replication from the new primary,
//! the deletion order of a primary and its replicas, authorization in both Regions, and all
//! of it after restarts of the front end (graceful, and kill -9 in the middle of a step).

use serde_json::Value;
use testkit::frontend::{FrontendFixture, RunningFrontend};

const R1: &str = "us-east-1";
const R2: &str = "eu-west-1";
const R3: &str = "ap-southeast-2";
const R4: &str = "us-west-2";

/// Helpers every script gets: a client per Region, `at(region, op, **kw)` answering
/// `{"ok": …}` or `{"error", "message"}`, and `wait_state`, a bounded wait (15 s) for a
/// key's state (the asynchronous steps take seconds, as AWS's do).
const PRELUDE: &str = r#"
import base64, time
def client(r):
    return boto3.client('kms', region_name=r, config=Config(retries={'max_attempts': 1}, parameter_validation=False))
C = {}
def at(r, op, **kw):
    if r not in C: C[r] = client(r)
    try:
        x = getattr(C[r], op)(**kw)
        x.pop('ResponseMetadata', None)
        return {'ok': x}
    except botocore.exceptions.ClientError as e:
        return {'error': e.response['Error'].get('Code'), 'message': e.response['Error'].get('Message')}
def must(r, op, **kw):
    x = at(r, op, **kw)
    if 'ok' not in x: raise SystemExit(f'{op} in {r}: {x}')
    return x['ok']
def state(r, key):
    return must(r, 'describe_key', KeyId=key)['KeyMetadata']['KeyState']
def wait_state(r, key, want):
    deadline = time.time() + 15
    while True:
        s = state(r, key)
        if s == want or time.time() > deadline: return s
        time.sleep(0.2)
def out(v):
    print(json.dumps(v, default=lambda b: base64.b64encode(b).decode() if isinstance(b, bytes) else str(b)))
"#;

fn run(f: &RunningFrontend, script: &str, args: &[&str]) -> Value {
    f.boto3(f.alice(), R1, &format!("{PRELUDE}{script}"), args)
}

#[track_caller]
fn ok(v: &Value) -> &Value {
    assert!(v.get("ok").is_some(), "expected success, got {v}");
    &v["ok"]
}

#[track_caller]
fn err(v: &Value, code: &str) {
    assert_eq!(v["error"].as_str(), Some(code), "{v}");
}

fn arn(region: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:111122223333:key/{key_id}")
}

/// The Regions of a `MultiRegionConfiguration`'s members, as (primary, replicas).
fn roles(meta: &Value) -> (String, Vec<String>) {
    let c = &meta["MultiRegionConfiguration"];
    let primary = c["PrimaryKey"]["Region"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let replicas = c["ReplicaKeys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["Region"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (primary, replicas)
}

#[test]
fn symmetric_replicas_decrypt_every_version_in_every_region() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
R1, R2, R3 = sys.argv[1:4]
o = {}
k = must(R1, 'create_key', MultiRegion=True, Description='primary')['KeyMetadata']
key = k['KeyId']
o['key'] = key
c0 = must(R1, 'encrypt', KeyId=key, Plaintext=b'first material')['CiphertextBlob']
must(R1, 'rotate_key_on_demand', KeyId=key)
c1 = must(R1, 'encrypt', KeyId=key, Plaintext=b'second material')['CiphertextBlob']
o['replicate'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2, Description='copy',
                    Tags=[{'TagKey': 'site', 'TagValue': 'dublin'}])
o['encrypt_creating'] = at(R2, 'encrypt', KeyId=key, Plaintext=b'x')
o['tag_creating'] = at(R2, 'tag_resource', KeyId=key, Tags=[{'TagKey': 'early', 'TagValue': 'yes'}])
o['replicate3'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R3)
o['states'] = [wait_state(R2, key, 'Enabled'), wait_state(R3, key, 'Enabled')]
o['decrypt'] = {r: [at(r, 'decrypt', CiphertextBlob=c) for c in (c0, c1)] for r in (R2, R3)}
c3 = must(R3, 'encrypt', KeyId=key, Plaintext=b'from sydney')['CiphertextBlob']
o['decrypt_in_primary'] = at(R1, 'decrypt', CiphertextBlob=c3)
o['describe'] = {r: must(r, 'describe_key', KeyId=key)['KeyMetadata'] for r in (R1, R2, R3)}
o['tags2'] = must(R2, 'list_resource_tags', KeyId=key)['Tags']
o['policy2'] = must(R2, 'get_key_policy', KeyId=key, PolicyName='default')['Policy']
# A rotation of the primary reaches its replicas.
must(R1, 'rotate_key_on_demand', KeyId=key)
c4 = must(R1, 'encrypt', KeyId=key, Plaintext=b'third material')['CiphertextBlob']
o['decrypt_rotated'] = [at(r, 'decrypt', CiphertextBlob=c4) for r in (R2, R3)]
o['material_ids'] = [must(r, 'describe_key', KeyId=key)['KeyMetadata'].get('CurrentKeyMaterialId') for r in (R1, R2, R3)]
# What cannot be replicated.
o['again'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2)
o['from_replica'] = at(R2, 'replicate_key', KeyId=key, ReplicaRegion='us-west-2')
o['same_region'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R1)
o['other_partition'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion='cn-north-1')
o['bad_region'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion='Europe')
single = must(R1, 'create_key')['KeyMetadata']
o['single'] = single['Arn']
o['single_replicate'] = at(R1, 'replicate_key', KeyId=single['KeyId'], ReplicaRegion=R2)
o['custom_store'] = at(R1, 'create_key', MultiRegion=True, Origin='EXTERNAL_KEY_STORE',
                       CustomKeyStoreId='cks-1234567890abcdef0', XksKeyId='k1')
o['single_update'] = at(R1, 'update_primary_region', KeyId=single['KeyId'], PrimaryRegion=R2)
out(o)
"#,
        &[R1, R2, R3],
    );
    let key = v["key"].as_str().expect("key id");
    assert!(key.starts_with("mrk-"), "{v}");
    let replica = &ok(&v["replicate"])["ReplicaKeyMetadata"];
    assert_eq!(replica["KeyState"], "Creating", "{v}");
    assert_eq!(replica["Enabled"], false, "{v}");
    assert_eq!(replica["Arn"], arn(R2, key), "{v}");
    assert_eq!(replica["Description"], "copy", "{v}");
    assert!(replica.get("CurrentKeyMaterialId").is_none(), "{v}");
    assert_eq!(
        replica["MultiRegionConfiguration"]["MultiRegionKeyType"],
        "REPLICA"
    );
    assert_eq!(
        ok(&v["replicate"])["ReplicaTags"][0]["TagValue"],
        "dublin",
        "{v}"
    );
    // While Creating: no cryptography, but tags work.
    err(&v["encrypt_creating"], "KMSInvalidStateException");
    assert_eq!(
        v["encrypt_creating"]["message"],
        format!("{} is creating.", arn(R2, key))
    );
    ok(&v["tag_creating"]);
    assert_eq!(
        v["states"],
        serde_json::json!(["Enabled", "Enabled"]),
        "{v}"
    );
    // Every version decrypts in every replica Region, under the replica's ARN.
    for region in [R2, R3] {
        let answers = v["decrypt"][region].as_array().expect("answers");
        for (answer, text) in answers.iter().zip(["first material", "second material"]) {
            assert_eq!(ok(answer)["KeyId"], arn(region, key), "{v}");
            let plain = ok(answer)["Plaintext"].as_str().expect("plaintext");
            assert_eq!(base64_decode(plain), text.as_bytes(), "{region}: {answer}");
        }
    }
    assert_eq!(ok(&v["decrypt_in_primary"])["KeyId"], arn(R1, key));
    // Every member shows the same primary and replicas, and its own role.
    for region in [R1, R2, R3] {
        let meta = &v["describe"][region];
        assert_eq!(
            roles(meta),
            (R1.to_owned(), vec![R2.to_owned(), R3.to_owned()]),
            "{region}: {meta}"
        );
        let kind = if region == R1 { "PRIMARY" } else { "REPLICA" };
        assert_eq!(meta["MultiRegionConfiguration"]["MultiRegionKeyType"], kind);
        assert_eq!(
            meta["MultiRegionConfiguration"]["PrimaryKey"]["Arn"],
            arn(R1, key)
        );
        assert_eq!(meta["MultiRegion"], true);
    }
    assert_eq!(v["describe"][R1]["Description"], "primary");
    assert_eq!(v["describe"][R2]["Description"], "copy");
    assert_eq!(
        v["tags2"],
        serde_json::json!([{"TagKey": "site", "TagValue": "dublin"}, {"TagKey": "early", "TagValue": "yes"}])
    );
    assert!(
        v["policy2"].as_str().unwrap_or_default().contains("kms:*"),
        "the replica gets the default key policy: {v}"
    );
    for answer in v["decrypt_rotated"].as_array().expect("answers") {
        assert_eq!(
            base64_decode(ok(answer)["Plaintext"].as_str().unwrap_or_default()),
            b"third material"
        );
    }
    let ids = v["material_ids"].as_array().expect("ids");
    assert!(
        ids[0].is_string() && ids.iter().all(|i| *i == ids[0]),
        "{v}"
    );
    err(&v["again"], "AlreadyExistsException");
    err(&v["from_replica"], "UnsupportedOperationException");
    assert_eq!(
        v["from_replica"]["message"],
        format!("{} is not a multi-region primary key.", arn(R2, key))
    );
    err(&v["same_region"], "ValidationException");
    err(&v["other_partition"], "ValidationException");
    err(&v["bad_region"], "ValidationException");
    err(&v["single_replicate"], "UnsupportedOperationException");
    assert_eq!(
        v["single_replicate"]["message"],
        format!(
            "{} is not a multi-region key.",
            v["single"].as_str().unwrap_or_default()
        )
    );
    err(&v["custom_store"], "UnsupportedOperationException");
    err(&v["single_update"], "UnsupportedOperationException");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn signatures_and_macs_cross_regions_and_the_primary_moves() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
R1, R2, R3, R4 = sys.argv[1:5]
o = {}
sk = must(R1, 'create_key', MultiRegion=True, KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
hk = must(R1, 'create_key', MultiRegion=True, KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['KeyId']
o['sk'] = sk
for k in (sk, hk):
    for r in (R2, R3):
        must(R1, 'replicate_key', KeyId=k, ReplicaRegion=r)
o['enabled'] = [wait_state(r, k, 'Enabled') for k in (sk, hk) for r in (R2, R3)]
sig = must(R2, 'sign', KeyId=sk, Message=b'ship it', SigningAlgorithm='ECDSA_SHA_256')['Signature']
o['verify'] = {r: at(r, 'verify', KeyId=sk, Message=b'ship it', Signature=sig, SigningAlgorithm='ECDSA_SHA_256') for r in (R1, R3)}
o['public_keys'] = [must(r, 'get_public_key', KeyId=sk)['PublicKey'] for r in (R1, R2, R3)]
mac = must(R3, 'generate_mac', KeyId=hk, Message=b'm', MacAlgorithm='HMAC_SHA_256')['Mac']
o['verify_mac'] = {r: at(r, 'verify_mac', KeyId=hk, Message=b'm', Mac=mac, MacAlgorithm='HMAC_SHA_256') for r in (R1, R2)}
# The primary moves to R2.
o['update'] = at(R1, 'update_primary_region', KeyId=sk, PrimaryRegion=R2)
o['updating'] = [state(R1, sk), state(R2, sk)]
o['sign_updating'] = at(R1, 'sign', KeyId=sk, Message=b'still', SigningAlgorithm='ECDSA_SHA_256')
o['disable_updating'] = at(R2, 'disable_key', KeyId=sk)
o['after'] = [wait_state(R1, sk, 'Enabled'), wait_state(R2, sk, 'Enabled')]
o['describe'] = {r: must(r, 'describe_key', KeyId=sk)['KeyMetadata'] for r in (R1, R2, R3)}
o['old_primary_replicates'] = at(R1, 'replicate_key', KeyId=sk, ReplicaRegion=R4)
o['replicate_from_new'] = at(R2, 'replicate_key', KeyId=sk, ReplicaRegion=R4)
o['r4'] = wait_state(R4, sk, 'Enabled')
sig4 = must(R4, 'sign', KeyId=sk, Message=b'from oregon', SigningAlgorithm='ECDSA_SHA_256')['Signature']
o['verify4'] = at(R1, 'verify', KeyId=sk, Message=b'from oregon', Signature=sig4, SigningAlgorithm='ECDSA_SHA_256')
o['members'] = must(R3, 'describe_key', KeyId=sk)['KeyMetadata']
# Refusals of UpdatePrimaryRegion.
o['update_to_missing'] = at(R1, 'update_primary_region', KeyId=hk, PrimaryRegion=R4)
o['update_from_replica'] = at(R2, 'update_primary_region', KeyId=hk, PrimaryRegion=R3)
must(R1, 'disable_key', KeyId=hk)
o['update_disabled'] = at(R1, 'update_primary_region', KeyId=hk, PrimaryRegion=R3)
out(o)
"#,
        &[R1, R2, R3, R4],
    );
    let sk = v["sk"].as_str().expect("key");
    assert!(
        v["enabled"]
            .as_array()
            .expect("states")
            .iter()
            .all(|s| s == "Enabled"),
        "{v}"
    );
    for region in [R1, R3] {
        assert_eq!(ok(&v["verify"][region])["SignatureValid"], true, "{v}");
        assert_eq!(ok(&v["verify"][region])["KeyId"], arn(region, sk), "{v}");
    }
    let pks = v["public_keys"].as_array().expect("public keys");
    assert!(pks.iter().all(|p| *p == pks[0]), "one key pair: {v}");
    for region in [R1, R2] {
        assert_eq!(ok(&v["verify_mac"][region])["MacValid"], true, "{v}");
    }
    assert_eq!(ok(&v["update"]), &serde_json::json!({}));
    assert_eq!(
        v["updating"],
        serde_json::json!(["Updating", "Updating"]),
        "{v}"
    );
    ok(&v["sign_updating"]);
    err(&v["disable_updating"], "KMSInvalidStateException");
    assert_eq!(
        v["disable_updating"]["message"],
        format!("{} is updating.", arn(R2, sk))
    );
    assert_eq!(v["after"], serde_json::json!(["Enabled", "Enabled"]), "{v}");
    for region in [R1, R2, R3] {
        let meta = &v["describe"][region];
        assert_eq!(
            roles(meta),
            (R2.to_owned(), vec![R1.to_owned(), R3.to_owned()]),
            "{region}: {meta}"
        );
        let kind = if region == R2 { "PRIMARY" } else { "REPLICA" };
        assert_eq!(meta["MultiRegionConfiguration"]["MultiRegionKeyType"], kind);
    }
    err(
        &v["old_primary_replicates"],
        "UnsupportedOperationException",
    );
    assert_eq!(
        ok(&v["replicate_from_new"])["ReplicaKeyMetadata"]["MultiRegionConfiguration"]["PrimaryKey"]
            ["Region"],
        R2
    );
    assert_eq!(v["r4"], "Enabled");
    assert_eq!(ok(&v["verify4"])["SignatureValid"], true, "{v}");
    assert_eq!(
        roles(&v["members"]),
        (
            R2.to_owned(),
            vec![R1.to_owned(), R3.to_owned(), R4.to_owned()]
        )
    );
    err(&v["update_to_missing"], "NotFoundException");
    err(&v["update_from_replica"], "UnsupportedOperationException");
    err(&v["update_disabled"], "DisabledException");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_is_deleted_only_after_its_replicas() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
R1, R2, R3 = sys.argv[1:4]
o = {}
key = must(R1, 'create_key', MultiRegion=True)['KeyMetadata']['KeyId']
o['key'] = key
for r in (R2, R3):
    must(R1, 'replicate_key', KeyId=key, ReplicaRegion=r)
o['enabled'] = [wait_state(r, key, 'Enabled') for r in (R2, R3)]
c = must(R1, 'encrypt', KeyId=key, Plaintext=b'keep')['CiphertextBlob']
o['schedule'] = at(R1, 'schedule_key_deletion', KeyId=key, PendingWindowInDays=7)
o['primary'] = must(R1, 'describe_key', KeyId=key)['KeyMetadata']
o['encrypt_primary'] = at(R1, 'encrypt', KeyId=key, Plaintext=b'x')
o['replicate_pending'] = at(R1, 'replicate_key', KeyId=key, ReplicaRegion='us-west-2')
o['replica_decrypts'] = at(R2, 'decrypt', CiphertextBlob=c)
o['cancel'] = at(R1, 'cancel_key_deletion', KeyId=key)
o['cancelled'] = state(R1, key)
must(R1, 'schedule_key_deletion', KeyId=key, PendingWindowInDays=7)
o['replica_deletions'] = [at(r, 'schedule_key_deletion', KeyId=key, PendingWindowInDays=7) for r in (R2, R3)]
o['cancel_replica'] = at(R3, 'cancel_key_deletion', KeyId=key)
o['replica_cancelled'] = state(R3, key)
must(R3, 'schedule_key_deletion', KeyId=key, PendingWindowInDays=30)
o['still_waiting'] = state(R1, key)
out(o)
"#,
        &[R1, R2, R3],
    );
    let key = v["key"].as_str().expect("key").to_owned();
    let schedule = ok(&v["schedule"]);
    assert_eq!(schedule["KeyState"], "PendingReplicaDeletion", "{v}");
    assert_eq!(schedule["PendingWindowInDays"], 7);
    assert!(schedule.get("DeletionDate").is_none(), "{v}");
    assert_eq!(v["primary"]["KeyState"], "PendingReplicaDeletion");
    assert_eq!(v["primary"]["PendingDeletionWindowInDays"], 7);
    assert!(v["primary"].get("DeletionDate").is_none());
    err(&v["encrypt_primary"], "KMSInvalidStateException");
    err(&v["replicate_pending"], "KMSInvalidStateException");
    // The replicas are not affected by their primary's schedule.
    ok(&v["replica_decrypts"]);
    ok(&v["cancel"]);
    assert_eq!(v["cancelled"], "Disabled");
    for r in v["replica_deletions"].as_array().expect("answers") {
        assert_eq!(ok(r)["KeyState"], "PendingDeletion", "{v}");
    }
    ok(&v["cancel_replica"]);
    assert_eq!(v["replica_cancelled"], "Disabled");
    assert_eq!(v["still_waiting"], "PendingReplicaDeletion");

    // R2's replica goes after 7 days; R3's after 30: the primary waits for both.
    let probe = r#"
R1, R2, R3, key = sys.argv[1:5]
out({r: at(r, 'describe_key', KeyId=key) for r in (R1, R2, R3)})
"#;
    f.advance_clock(8 * 86_400).await;
    let v = run(&f, probe, &[R1, R2, R3, &key]);
    err(&v[R2], "NotFoundException");
    assert_eq!(
        ok(&v[R1])["KeyMetadata"]["KeyState"],
        "PendingReplicaDeletion",
        "{v}"
    );
    assert_eq!(
        ok(&v[R3])["KeyMetadata"]["KeyState"],
        "PendingDeletion",
        "{v}"
    );

    // A restart changes nothing about who waits for whom. (The test clock starts again
    // from the real time: 31 days from now are past R3's 30-day window.)
    let f = f.restart(true);
    f.advance_clock(31 * 86_400).await;
    let v = run(&f, probe, &[R1, R2, R3, &key]);
    err(&v[R3], "NotFoundException");
    let primary = &ok(&v[R1])["KeyMetadata"];
    assert_eq!(primary["KeyState"], "PendingDeletion", "{v}");
    // The primary's own 7-day window starts once its last replica is gone.
    let date = primary["DeletionDate"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!date.is_empty(), "{v}");
    f.advance_clock(6 * 86_400).await;
    let v = run(&f, probe, &[R1, R2, R3, &key]);
    assert_eq!(
        ok(&v[R1])["KeyMetadata"]["KeyState"],
        "PendingDeletion",
        "{v}"
    );
    f.advance_clock(2 * 86_400).await;
    let v = run(&f, probe, &[R1, R2, R3, &key]);
    err(&v[R1], "NotFoundException");
}

#[test]
fn replication_and_moves_finish_and_work_after_restarts() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
R1, R2, R3 = sys.argv[1:4]
key = must(R1, 'create_key', MultiRegion=True)['KeyMetadata']['KeyId']
c = must(R1, 'encrypt', KeyId=key, Plaintext=b'survives')['CiphertextBlob']
must(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2)
out({'key': key, 'c': c, 'state': state(R2, key)})
"#,
        &[R1, R2, R3],
    );
    assert_eq!(v["state"], "Creating", "{v}");
    let key = v["key"].as_str().expect("key").to_owned();
    let c = v["c"].as_str().expect("ciphertext").to_owned();
    // Killed while the replica is Creating: the restarted front end finishes it.
    let f = f.restart(false);
    let v = run(
        &f,
        r#"
R1, R2, R3, key, c = sys.argv[1:6]
c = base64.b64decode(c)
o = {'r2': wait_state(R2, key, 'Enabled')}
o['decrypt2'] = at(R2, 'decrypt', CiphertextBlob=c)
must(R1, 'replicate_key', KeyId=key, ReplicaRegion=R3)
o['r3'] = wait_state(R3, key, 'Enabled')
o['update'] = at(R1, 'update_primary_region', KeyId=key, PrimaryRegion=R3)
o['updating'] = state(R3, key)
out(o)
"#,
        &[R1, R2, R3, &key, &c],
    );
    assert_eq!(v["r2"], "Enabled", "{v}");
    assert_eq!(ok(&v["decrypt2"])["KeyId"], arn(R2, &key));
    assert_eq!(v["r3"], "Enabled", "{v}");
    ok(&v["update"]);
    assert_eq!(v["updating"], "Updating", "{v}");
    // Killed while the primary moves: the restarted front end finishes the move.
    let f = f.restart(false);
    let v = run(
        &f,
        r#"
R1, R2, R3, key, c = sys.argv[1:6]
c = base64.b64decode(c)
o = {'states': [wait_state(r, key, 'Enabled') for r in (R1, R3)]}
o['describe'] = must(R2, 'describe_key', KeyId=key)['KeyMetadata']
o['decrypt'] = {r: at(r, 'decrypt', CiphertextBlob=c) for r in (R1, R2, R3)}
c3 = must(R3, 'encrypt', KeyId=key, Plaintext=b'new primary')['CiphertextBlob']
o['c3'] = c3
out(o)
"#,
        &[R1, R2, R3, &key, &c],
    );
    assert_eq!(
        v["states"],
        serde_json::json!(["Enabled", "Enabled"]),
        "{v}"
    );
    assert_eq!(
        roles(&v["describe"]),
        (R3.to_owned(), vec![R1.to_owned(), R2.to_owned()]),
        "{v}"
    );
    for region in [R1, R2, R3] {
        let answer = ok(&v["decrypt"][region]);
        assert_eq!(answer["KeyId"], arn(region, &key), "{v}");
        assert_eq!(
            base64_decode(answer["Plaintext"].as_str().unwrap_or_default()),
            b"survives"
        );
    }
    // And after a graceful restart, what the new primary made decrypts in every Region.
    let c3 = v["c3"].as_str().expect("ciphertext").to_owned();
    let f = f.restart(true);
    let v = run(
        &f,
        r#"
R1, R2, R3, c = sys.argv[1:5]
c = base64.b64decode(c)
out({r: at(r, 'decrypt', CiphertextBlob=c) for r in (R1, R2, R3)})
"#,
        &[R1, R2, R3, &c3],
    );
    for region in [R1, R2, R3] {
        assert_eq!(
            base64_decode(ok(&v[region])["Plaintext"].as_str().unwrap_or_default()),
            b"new primary",
            "{v}"
        );
    }
}

#[test]
fn replication_is_authorized_in_both_regions() {
    let mut f = FrontendFixture::new();
    // bob may do everything but replicate into eu-west-1, and may not create keys at all
    // once his second policy applies to him (carol's account has none of this).
    f.extra_toml = r#"
[[identity_policies]]
name = "bob-all-but-dublin"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"},{"Effect":"Deny","Action":"kms:ReplicateKey","Resource":"*","Condition":{"StringEquals":{"kms:ReplicaRegion":"eu-west-1"}}},{"Effect":"Deny","Action":"kms:UpdatePrimaryRegion","Resource":"*","Condition":{"StringEquals":{"kms:PrimaryRegion":"ap-southeast-2"}}},{"Effect":"Deny","Action":"kms:CreateKey","Resource":"*","Condition":{"Bool":{"kms:MultiRegion":"true"}}}]}'''
principals = ["arn:aws:iam::111122223333:user/bob"]
"#
    .into();
    let f = f.start();
    let bob = f.fixture.principals[1].clone();
    let alice_key = run(
        &f,
        r#"
R1, R2, R3, R4 = sys.argv[1:5]
key = must(R1, 'create_key', MultiRegion=True)['KeyMetadata']['KeyId']
must(R1, 'replicate_key', KeyId=key, ReplicaRegion=R3)
wait_state(R3, key, 'Enabled')
out(key)
"#,
        &[R1, R2, R3, R4],
    );
    let key = alice_key.as_str().expect("key").to_owned();
    let v = f.boto3(
        &bob,
        R1,
        &format!(
            "{PRELUDE}{}",
            r#"
R1, R2, R3, R4, key = sys.argv[1:6]
out({
  'dublin': at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2),
  'oregon': at(R1, 'replicate_key', KeyId=key, ReplicaRegion=R4),
  'move_to_sydney': at(R1, 'update_primary_region', KeyId=key, PrimaryRegion=R3),
})
"#
        ),
        &[R1, R2, R3, R4, &key],
    );
    err(&v["dublin"], "AccessDeniedException");
    // Oregon: ReplicateKey is allowed, the CreateKey it implies there is not.
    err(&v["oregon"], "AccessDeniedException");
    assert!(
        v["oregon"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("kms:CreateKey"),
        "{v}"
    );
    err(&v["move_to_sydney"], "AccessDeniedException");
}

#[test]
fn imported_material_is_imported_into_each_member() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
import os
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
R1, R2 = sys.argv[1:3]
def imp(r, key, material):
    p = must(r, 'get_parameters_for_import', KeyId=key, WrappingAlgorithm='RSAES_OAEP_SHA_256', WrappingKeySpec='RSA_2048')
    pub = serialization.load_der_public_key(p['PublicKey'])
    h = hashes.SHA256()
    wrapped = pub.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None))
    return at(r, 'import_key_material', KeyId=key, ImportToken=p['ImportToken'], EncryptedKeyMaterial=wrapped, ExpirationModel='KEY_MATERIAL_DOES_NOT_EXPIRE')
o = {}
key = must(R1, 'create_key', MultiRegion=True, Origin='EXTERNAL')['KeyMetadata']['KeyId']
material = os.urandom(32)
o['import1'] = imp(R1, key, material)
must(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2)
o['replica'] = wait_state(R2, key, 'PendingImport')
o['import2'] = imp(R2, key, material)
c = must(R1, 'encrypt', KeyId=key, Plaintext=b'imported')['CiphertextBlob']
o['decrypt2'] = at(R2, 'decrypt', CiphertextBlob=c)
out(o)
"#,
        &[R1, R2],
    );
    assert_eq!(v["replica"], "PendingImport", "{v}");
    // The same bytes have the same material id in every member.
    assert_eq!(
        ok(&v["import1"])["KeyMaterialId"],
        ok(&v["import2"])["KeyMaterialId"],
        "{v}"
    );
    assert_eq!(
        base64_decode(ok(&v["decrypt2"])["Plaintext"].as_str().unwrap_or_default()),
        b"imported"
    );
}

/// Rotation of a multi-Region key is managed on the primary: a replica refuses
/// Enable/DisableKeyRotation and RotateKeyOnDemand as it refuses ReplicateKey, and shows the
/// primary's setting in GetKeyRotationStatus.
#[test]
fn rotation_is_managed_on_the_primary_only() {
    let f = FrontendFixture::new().start();
    let script = r#"
k = must(R1, 'create_key', MultiRegion=True)['KeyMetadata']['KeyId']
must(R1, 'replicate_key', KeyId=k, ReplicaRegion=R2)
r = {'replica_state': wait_state(R2, k, 'Enabled')}
r['status_before'] = at(R2, 'get_key_rotation_status', KeyId=k)
must(R1, 'enable_key_rotation', KeyId=k, RotationPeriodInDays=180)
r['status_after'] = at(R2, 'get_key_rotation_status', KeyId=k)
r['enable'] = at(R2, 'enable_key_rotation', KeyId=k)
r['disable'] = at(R2, 'disable_key_rotation', KeyId=k)
r['on_demand'] = at(R2, 'rotate_key_on_demand', KeyId=k)
r['primary_on_demand'] = at(R1, 'rotate_key_on_demand', KeyId=k)
r['key'] = k
out(r)
"#
    .replace("R1", &format!("'{R1}'"))
    .replace("R2", &format!("'{R2}'"));
    let r = run(&f, &script, &[]);
    assert_eq!(r["replica_state"], "Enabled", "{r}");
    assert_eq!(ok(&r["status_before"])["KeyRotationEnabled"], false, "{r}");
    let after = ok(&r["status_after"]);
    assert_eq!(after["KeyRotationEnabled"], true, "{r}");
    assert_eq!(after["RotationPeriodInDays"], 180, "{r}");
    let replica_arn = arn(R2, r["key"].as_str().unwrap_or_default());
    for op in ["enable", "disable", "on_demand"] {
        err(&r[op], "UnsupportedOperationException");
        assert_eq!(
            r[op]["message"],
            format!("{replica_arn} is not a multi-region primary key."),
            "{op}: {r}"
        );
    }
    ok(&r["primary_on_demand"]);
}

/// The deletion sweep never deletes a primary that has replicas. Through the API that state
/// cannot be reached on purpose (ReplicateKey refuses a primary pending deletion); it arises
/// when a ReplicateKey commits between ScheduleKeyDeletion's read of the set and its write.
/// The test makes it directly in the SQLite database (so this test is SQLite-only:
/// `scripts/test` leaves it out of the PostgreSQL pass): once the window ends, the primary
/// is held in `PendingReplicaDeletion`, not deleted, and the replica keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn a_primary_that_gained_a_replica_is_held_not_swept_sqlite_state() {
    let f = FrontendFixture::new().start();
    let v = run(
        &f,
        r#"
R1, R2 = sys.argv[1:3]
key = must(R1, 'create_key', MultiRegion=True)['KeyMetadata']['KeyId']
must(R1, 'replicate_key', KeyId=key, ReplicaRegion=R2)
out({'key': key, 'replica': wait_state(R2, key, 'Enabled'),
     'ct': must(R2, 'encrypt', KeyId=key, Plaintext=b'kept')['CiphertextBlob']})
"#,
        &[R1, R2],
    );
    assert_eq!(v["replica"], "Enabled", "{v}");
    let key = v["key"].as_str().expect("key").to_owned();
    // The race's outcome: the primary pending deletion (window ends in 7 days) with a replica.
    let db = f.fixture.home.path().join("data/kms.sqlite");
    let due_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 7 * 86_400_000;
    let edit = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             n = c.execute(\"UPDATE keys SET key_state = 'PendingDeletion', deletion_date_ms = ?, \
             pending_window_days = 7 WHERE key_id = ? AND region = ?\", \
             (int(sys.argv[2]), sys.argv[3], sys.argv[4])).rowcount\n\
             c.commit()\n\
             assert n == 1, n",
        ])
        .arg(&db)
        .arg(due_ms.to_string())
        .arg(&key)
        .arg(R1)
        .output()
        .expect("python3");
    assert!(edit.status.success(), "{edit:?}");

    f.advance_clock(8 * 86_400).await;
    let probe = r#"
R1, R2, key, ct = sys.argv[1:5]
out({'primary': at(R1, 'describe_key', KeyId=key),
     'replica': at(R2, 'decrypt', CiphertextBlob=base64.b64decode(ct))})
"#;
    let ct = v["ct"].as_str().expect("ct");
    let v = run(&f, probe, &[R1, R2, &key, ct]);
    let primary = &ok(&v["primary"])["KeyMetadata"];
    assert_eq!(primary["KeyState"], "PendingReplicaDeletion", "{v}");
    assert_eq!(primary["PendingDeletionWindowInDays"], 7, "{v}");
    assert_eq!(ok(&v["replica"])["Plaintext"], "a2VwdA==", "{v}");
}
