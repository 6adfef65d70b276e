//! Versions of key material and rotation (issue 18) through boto3: on-demand and automatic
//! rotation (driven by the test clock), what keys that do not rotate answer, the
//! `kms:RotationPeriodInDays` condition key, old ciphertexts (including a blob and a
//! database written before material versions) decrypting after rotations, and a process
//! killed in the middle of a rotation.

use std::os::unix::fs::PermissionsExt;

use testkit::frontend::{FrontendFixture, RunningFrontend};

const REGION: &str = "us-east-1";

/// Python helpers: `advance(seconds)` moves the front end's clock (its test hook also runs
/// the time-driven sweeps at once); `material(k)` is the key's CurrentKeyMaterialId;
/// `dec(blob, ctx)` the plaintext a Decrypt returns (or the error code).
const HELPERS: &str = r#"
import os, ssl, urllib.request
def advance(seconds):
    ctx = ssl.create_default_context(cafile=os.environ['AWS_CA_BUNDLE'])
    req = urllib.request.Request(os.environ['AWS_ENDPOINT_URL_KMS'] + '/_test/advance-clock',
                                 data=json.dumps({'seconds': seconds}).encode(), method='POST')
    urllib.request.urlopen(req, context=ctx).read()
def material(k):
    return kms.describe_key(KeyId=k)['KeyMetadata'].get('CurrentKeyMaterialId')
def dec(blob, ctx=None):
    r = call('decrypt', CiphertextBlob=blob, EncryptionContext=ctx or {})
    return r['ok']['Plaintext'].decode() if 'ok' in r else r['error']
DAY = 86400
"#;

fn run(f: &RunningFrontend, script: &str, args: &[&str]) -> serde_json::Value {
    f.boto3(f.alice(), REGION, &format!("{HELPERS}{script}"), args)
}

#[test]
fn on_demand_rotation_makes_new_material_current_and_old_ciphertexts_keep_decrypting() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
k = kms.create_key()['KeyMetadata']['KeyId']
ctx = {'purpose': 'rotation'}
m1 = material(k)
c1 = kms.encrypt(KeyId=k, Plaintext=b'before', EncryptionContext=ctx)['CiphertextBlob']
dk1 = kms.generate_data_key(KeyId=k, KeySpec='AES_256')
out['rotate'] = call('rotate_key_on_demand', KeyId=k)
m2 = material(k)
c2 = kms.encrypt(KeyId=k, Plaintext=b'after', EncryptionContext=ctx)['CiphertextBlob']
out['m1_m2_differ'] = m1 != m2 and len(m2) == 64
out['format'] = c2[0]
out['dec'] = [dec(c1, ctx), dec(c2, ctx), dec(c1, {'purpose': 'other'})]
out['dk1'] = kms.decrypt(CiphertextBlob=dk1['CiphertextBlob'])['Plaintext'] == dk1['Plaintext']
re = kms.re_encrypt(CiphertextBlob=c1, SourceEncryptionContext=ctx, DestinationKeyId=k)['CiphertextBlob']
out['reencrypted'] = dec(re)
rot = kms.list_key_rotations(KeyId=k)['Rotations']
out['rotations'] = [(r['KeyMaterialId'] == m2, r['RotationType'], r['KeyMaterialState'], 'RotationDate' in r) for r in rot]
allm = kms.list_key_rotations(KeyId=k, IncludeKeyMaterial='ALL_KEY_MATERIAL')['Rotations']
out['all'] = [(r['KeyMaterialId'], r.get('RotationType'), r['KeyMaterialState']) for r in allm]
out['m1'] = m1
# 24 more on-demand rotations reach AWS's quota of 25; every ciphertext still decrypts.
blobs = [c1, c2]
for i in range(24):
    kms.rotate_key_on_demand(KeyId=k)
    blobs.append(kms.encrypt(KeyId=k, Plaintext=b'after', EncryptionContext=ctx)['CiphertextBlob'])
out['over'] = call('rotate_key_on_demand', KeyId=k)
out['all_decrypt'] = sorted(set(dec(b, ctx) for b in blobs))
pages, marker = [], None
while True:
    kw = {'KeyId': k, 'Limit': 10}
    if marker: kw['Marker'] = marker
    p = kms.list_key_rotations(**kw)
    pages.append((len(p['Rotations']), p['Truncated']))
    marker = p.get('NextMarker')
    if not p['Truncated']: break
out['pages'] = pages
out['bad_marker'] = call('list_key_rotations', KeyId=k, Marker='garbage')['error']
print(json.dumps(out, default=str))
"#;
    let r = run(&f, script, &[]);
    let arn_of = |r: &serde_json::Value| r["rotate"]["ok"]["KeyId"].as_str().map(str::to_owned);
    assert!(
        arn_of(&r).is_some_and(|a| a.starts_with("arn:aws:kms:")),
        "RotateKeyOnDemand answers the key ARN: {r}"
    );
    assert_eq!(r["m1_m2_differ"], true, "{r}");
    assert_eq!(r["format"], 5, "new ciphertexts name their material: {r}");
    assert_eq!(
        r["dec"],
        serde_json::json!(["before", "after", "InvalidCiphertextException"]),
        "{r}"
    );
    assert_eq!(r["dk1"], true, "{r}");
    assert_eq!(r["reencrypted"], "before", "{r}");
    assert_eq!(
        r["rotations"],
        serde_json::json!([[true, "ON_DEMAND", "CURRENT", true]]),
        "{r}"
    );
    let all = r["all"].as_array().expect("all");
    assert_eq!(all.len(), 2, "{r}");
    assert_eq!(
        all[0],
        serde_json::json!([r["m1"], null, "NON_CURRENT"]),
        "{r}"
    );
    assert_eq!(r["over"]["error"], "LimitExceededException", "{r}");
    assert!(
        r["over"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The on-demand rotations limit has been reached")),
        "{r}"
    );
    assert_eq!(
        r["all_decrypt"],
        serde_json::json!(["after", "before"]),
        "{r}"
    );
    assert_eq!(
        r["pages"],
        serde_json::json!([[10, true], [10, true], [5, false]]),
        "{r}"
    );
    assert_eq!(r["bad_marker"], "InvalidMarkerException", "{r}");
}

#[test]
fn automatic_rotation_follows_the_clock_and_skips_disabled_keys() {
    let f = FrontendFixture::new().start();
    let script = r#"
import time
out = {}
k = kms.create_key()['KeyMetadata']['KeyId']
out['bad_period'] = call('enable_key_rotation', KeyId=k, RotationPeriodInDays=89)['error']
out['before'] = call('get_key_rotation_status', KeyId=k)['ok']
kms.enable_key_rotation(KeyId=k, RotationPeriodInDays=90)
st = kms.get_key_rotation_status(KeyId=k)
out['status'] = [st['KeyRotationEnabled'], st['RotationPeriodInDays']]
out['next_in_days'] = round((st['NextRotationDate'].timestamp() - time.time()) / DAY)
c = kms.encrypt(KeyId=k, Plaintext=b'first material')['CiphertextBlob']
m1 = material(k)
advance(89 * DAY)
out['not_yet'] = material(k) == m1
advance(2 * DAY)
m2 = material(k)
out['rotated'] = m2 != m1
st = kms.get_key_rotation_status(KeyId=k)
out['next_after_rotation'] = round((st['NextRotationDate'].timestamp() - time.time()) / DAY)
out['types'] = [r['RotationType'] for r in kms.list_key_rotations(KeyId=k)['Rotations']]
# A disabled key does not rotate; once enabled again it rotates at once (it is overdue).
kms.disable_key(KeyId=k)
out['disabled_rotate'] = call('rotate_key_on_demand', KeyId=k)
out['disabled_enable'] = call('enable_key_rotation', KeyId=k)['error']
advance(120 * DAY)
out['disabled_kept'] = material(k) == m2
kms.enable_key(KeyId=k)
advance(0)
m3 = material(k)
out['rotated_on_enable'] = m3 not in (m1, m2)
# Pending deletion reads false; the setting comes back with CancelKeyDeletion.
kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
out['pending'] = kms.get_key_rotation_status(KeyId=k)['KeyRotationEnabled']
kms.cancel_key_deletion(KeyId=k)
kms.enable_key(KeyId=k)
out['restored'] = kms.get_key_rotation_status(KeyId=k)['KeyRotationEnabled']
# Disabled rotation: nothing happens however long the clock runs.
kms.disable_key_rotation(KeyId=k)
out['off'] = call('get_key_rotation_status', KeyId=k)['ok']
m4 = material(k)
advance(400 * DAY)
out['off_kept'] = material(k) == m4
out['old_decrypts'] = dec(c)
print(json.dumps(out, default=str))
"#;
    let r = run(&f, script, &[]);
    assert_eq!(r["bad_period"], "ValidationException", "{r}");
    let arn = r["before"]["KeyId"].as_str().expect("KeyId").to_owned();
    assert_eq!(
        r["before"],
        serde_json::json!({"KeyId": arn, "KeyRotationEnabled": false}),
        "{r}"
    );
    assert_eq!(r["status"], serde_json::json!([true, 90]), "{r}");
    assert_eq!(r["next_in_days"], 90, "{r}");
    assert_eq!(r["not_yet"], true, "{r}");
    assert_eq!(r["rotated"], true, "{r}");
    assert_eq!(
        r["next_after_rotation"],
        91 + 90,
        "the next rotation is a period after this one (the clock is 91 days ahead): {r}"
    );
    assert_eq!(r["types"], serde_json::json!(["AUTOMATIC"]), "{r}");
    assert_eq!(r["disabled_rotate"]["error"], "DisabledException", "{r}");
    assert_eq!(
        r["disabled_rotate"]["message"],
        format!("{arn} is disabled."),
        "{r}"
    );
    assert_eq!(r["disabled_enable"], "DisabledException", "{r}");
    assert_eq!(r["disabled_kept"], true, "{r}");
    assert_eq!(r["rotated_on_enable"], true, "{r}");
    assert_eq!(r["pending"], false, "{r}");
    assert_eq!(r["restored"], true, "{r}");
    assert_eq!(
        r["off"],
        serde_json::json!({"KeyId": arn, "KeyRotationEnabled": false}),
        "{r}"
    );
    assert_eq!(r["off_kept"], true, "{r}");
    assert_eq!(r["old_decrypts"], "first material", "{r}");
}

#[test]
fn keys_that_do_not_rotate_answer_as_aws_does() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
rsa = kms.create_key(KeySpec='RSA_2048', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']['KeyId']
hmac = kms.create_key(KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['KeyId']
ext = kms.create_key(Origin='EXTERNAL')['KeyMetadata']
out['rsa_rotate'] = call('rotate_key_on_demand', KeyId=rsa)
out['rsa_enable'] = call('enable_key_rotation', KeyId=rsa)['error']
out['rsa_status'] = call('get_key_rotation_status', KeyId=rsa)['ok']['KeyRotationEnabled']
out['rsa_list'] = call('list_key_rotations', KeyId=rsa)['error']
out['hmac_enable'] = call('enable_key_rotation', KeyId=hmac)['error']
out['hmac_disable'] = call('disable_key_rotation', KeyId=hmac)['error']
out['ext_enable'] = call('enable_key_rotation', KeyId=ext['KeyId'])['error']
out['ext_rotate'] = call('rotate_key_on_demand', KeyId=ext['KeyId'])
out['ext_arn'] = ext['Arn']
out['alias'] = call('rotate_key_on_demand', KeyId='alias/none')['error']
print(json.dumps(out))
"#;
    let r = run(&f, script, &[]);
    assert_eq!(
        r["rsa_rotate"]["error"], "UnsupportedOperationException",
        "{r}"
    );
    assert_eq!(r["rsa_rotate"]["message"], "", "AWS's empty message: {r}");
    for field in ["rsa_enable", "hmac_enable", "hmac_disable", "ext_enable"] {
        assert_eq!(r[field], "UnsupportedOperationException", "{field}: {r}");
    }
    assert_eq!(r["rsa_status"], false, "{r}");
    assert_eq!(r["rsa_list"], "UnsupportedOperationException", "{r}");
    assert_eq!(r["ext_rotate"]["error"], "KMSInvalidStateException", "{r}");
    assert_eq!(
        r["ext_rotate"]["message"],
        format!(
            "{} is pending import.",
            r["ext_arn"].as_str().unwrap_or("?")
        ),
        "{r}"
    );
    assert_eq!(r["alias"], "NotFoundException", "{r}");
}

#[test]
fn the_rotation_period_condition_key_is_evaluated() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
k = kms.create_key()['KeyMetadata']
policy = {
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
     "Action": "kms:*", "Resource": "*"},
    {"Sid": "long periods only", "Effect": "Deny", "Principal": {"AWS": "*"},
     "Action": "kms:EnableKeyRotation", "Resource": "*",
     "Condition": {"NumericLessThan": {"kms:RotationPeriodInDays": "180"}}}
  ]
}
kms.put_key_policy(KeyId=k['KeyId'], PolicyName='default', Policy=json.dumps(policy))
out['short'] = call('enable_key_rotation', KeyId=k['KeyId'], RotationPeriodInDays=100).get('error')
out['long'] = call('enable_key_rotation', KeyId=k['KeyId'], RotationPeriodInDays=200)
print(json.dumps(out))
"#;
    let r = run(&f, script, &[]);
    assert_eq!(r["short"], "AccessDeniedException", "{r}");
    assert_eq!(r["long"], serde_json::json!({"ok": {}}), "{r}");
}

#[test]
fn a_database_and_a_blob_written_before_material_versions_survive_rotation() {
    let dir = testkit::bins::workspace_root().join("tests/fixtures/frontend-v1-blob");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blob.json")).expect("read blob.json"))
            .expect("blob.json");
    let fixture = FrontendFixture::new();
    let home = fixture.home.path();
    std::fs::create_dir_all(home.join("data")).expect("mkdir");
    std::fs::copy(dir.join("kms.sqlite"), home.join("data/kms.sqlite")).expect("copy db");
    let root = home.join("secrets/root.key");
    std::fs::copy(dir.join("root.key"), &root).expect("copy root key");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let f = fixture.start();
    let script = r#"
import base64
meta = json.loads(sys.argv[1])
blob = base64.b64decode(meta['ciphertext_blob_b64'])
ctx = meta['encryption_context']
k = meta['key_arn']
out = {'m1': material(k)}
out['rotate'] = 'ok' in call('rotate_key_on_demand', KeyId=k)
out['m2'] = material(k)
fresh = kms.encrypt(KeyId=k, Plaintext=b'new material', EncryptionContext=ctx)['CiphertextBlob']
out['old'] = base64.b64encode(kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)['Plaintext']).decode()
out['new'] = dec(fresh, ctx)
out['all'] = [r['KeyMaterialState'] for r in kms.list_key_rotations(KeyId=k, IncludeKeyMaterial='ALL_KEY_MATERIAL')['Rotations']]
print(json.dumps(out))
"#;
    let r = run(&f, script, &[&meta.to_string()]);
    assert!(
        r["m1"].as_str().is_some_and(|m| m.len() == 64),
        "the migrated key has a material id: {r}"
    );
    assert_eq!(r["rotate"], true, "{r}");
    assert_ne!(r["m1"], r["m2"], "{r}");
    assert_eq!(r["old"], meta["plaintext_b64"], "{r}");
    assert_eq!(r["new"], "new material", "{r}");
    assert_eq!(
        r["all"],
        serde_json::json!(["NON_CURRENT", "CURRENT"]),
        "{r}"
    );
}

/// Arms a failpoint of the material write (test builds only): the process aborts there.
fn arm(f: &RunningFrontend, point: Option<&str>) {
    let file = f.fixture.home.path().join("data/kms.sqlite.failpoint");
    match point {
        Some(p) => std::fs::write(&file, p).expect("arm failpoint"),
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
}

#[test]
fn a_process_killed_during_a_rotation_leaves_the_old_or_the_new_material() {
    let f = FrontendFixture::new().start();
    let setup = r#"
k = kms.create_key()['KeyMetadata']['KeyId']
c = kms.encrypt(KeyId=k, Plaintext=b'kept', EncryptionContext={'a': 'b'})['CiphertextBlob']
print(json.dumps({'key': k, 'ct': c.hex(), 'm': material(k)}))
"#;
    let made = run(&f, setup, &[]);
    let key = made["key"].as_str().expect("key").to_owned();
    let ct = made["ct"].as_str().expect("ct").to_owned();
    let rotate = r#"
try:
    kms.rotate_key_on_demand(KeyId=sys.argv[1])
    ok = True
except Exception:
    ok = False
print(json.dumps({'ok': ok}))
"#;
    let check = r#"
k, ct = sys.argv[1], bytes.fromhex(sys.argv[2])
fresh = kms.encrypt(KeyId=k, Plaintext=b'fresh')['CiphertextBlob']
print(json.dumps({'m': material(k), 'old': dec(ct, {'a': 'b'}), 'fresh': dec(fresh),
  'rotations': len(kms.list_key_rotations(KeyId=k)['Rotations'])}))
"#;
    let mut f = f;
    let mut material = made["m"].clone();
    let mut rotations = 0;
    // Killed before the commit: the old state. Killed after it: the new one. Either way
    // the key decrypts every ciphertext it made, and keeps working.
    for (point, lands) in [
        ("key-material-after-put", false),
        ("key-material-before-commit", false),
        ("key-material-after-commit", true),
    ] {
        arm(&f, Some(point));
        // The request dies with the process: no answer.
        let r = run(&f, rotate, &[&key]);
        assert_eq!(
            r["ok"], false,
            "{point}: answered although the process aborted"
        );
        arm(&f, None);
        f = f.restart(false);
        let r = run(&f, check, &[&key, &ct]);
        if lands {
            rotations += 1;
            assert_ne!(
                r["m"], material,
                "{point}: the committed rotation is kept: {r}"
            );
        } else {
            assert_eq!(
                r["m"], material,
                "{point}: nothing of the rotation is kept: {r}"
            );
        }
        assert_eq!(r["rotations"], rotations, "{point}: {r}");
        assert_eq!(r["old"], "kept", "{point}: {r}");
        assert_eq!(r["fresh"], "fresh", "{point}: {r}");
        material = r["m"].clone();
    }
    // And the key still rotates.
    let r = run(&f, rotate, &[&key]);
    assert_eq!(r["ok"], true, "{r}");
    let r = run(&f, check, &[&key, &ct]);
    assert_eq!(r["rotations"], rotations + 1, "{r}");
    assert_eq!(r["old"], "kept", "{r}");
}
