//! The KMS front end's key lifecycle through the real server, driven by boto3 and the AWS
//! CLI: lookups by id/ARN/alias, paging, aliases, enable/disable, deletion windows on an
//! advanceable clock, tags, key policies, symmetric cryptography, accounts and Regions,
//! persistence across kill -9, and the authentication errors AWS names.

use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use testkit::client::XksClient;
use testkit::frontend::FrontendFixture;

fn ok(v: &Value) -> &Value {
    assert!(v.get("ok").is_some(), "expected success, got {v}");
    &v["ok"]
}

#[track_caller]
fn err(v: &Value, code: &str) {
    assert_eq!(v["error"].as_str(), Some(code), "{v}");
    assert_eq!(v["status"].as_u64(), Some(400), "{v}");
}

#[test]
fn lookups_aliases_paging_and_state_changes() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
keys = [call('create_key', Description=f'k{i}')['ok']['KeyMetadata'] for i in range(5)]
k = keys[0]
out['by_id'] = call('describe_key', KeyId=k['KeyId'])
out['by_arn'] = call('describe_key', KeyId=k['Arn'])
out['alias_create'] = call('create_alias', AliasName='alias/app', TargetKeyId=k['KeyId'])
out['alias_again'] = call('create_alias', AliasName='alias/app', TargetKeyId=keys[1]['KeyId'])
out['alias_bad_prefix'] = call('create_alias', AliasName='app', TargetKeyId=k['KeyId'])
out['alias_reserved'] = call('create_alias', AliasName='alias/aws/x', TargetKeyId=k['KeyId'])
out['alias_to_alias'] = call('create_alias', AliasName='alias/other', TargetKeyId='alias/app')
out['by_alias'] = call('describe_key', KeyId='alias/app')
out['by_alias_arn'] = call('describe_key', KeyId=k['Arn'].split(':key/')[0] + ':alias/app')
out['missing'] = call('describe_key', KeyId='00000000-0000-4000-8000-000000000000')
out['missing_alias'] = call('describe_key', KeyId='alias/none')
out['update_alias'] = call('update_alias', AliasName='alias/app', TargetKeyId=keys[1]['KeyId'])
out['after_update'] = call('describe_key', KeyId='alias/app')
out['aliases'] = call('list_aliases')
out['aliases_for_key'] = call('list_aliases', KeyId=keys[1]['KeyId'])
out['delete_alias'] = call('delete_alias', AliasName='alias/app')
out['delete_alias_again'] = call('delete_alias', AliasName='alias/app')
pages, marker = [], None
while True:
    kw = {'Limit': 2}
    if marker: kw['Marker'] = marker
    r = call('list_keys', **kw)['ok']
    pages.append([x['KeyId'] for x in r['Keys']])
    if not r['Truncated']: break
    marker = r['NextMarker']
out['pages'] = pages
out['bad_limit'] = call('list_keys', Limit=0)
out['desc'] = call('update_key_description', KeyId=k['KeyId'], Description='new')
out['desc_after'] = call('describe_key', KeyId=k['KeyId'])
out['disable'] = call('disable_key', KeyId=k['KeyId'])
out['disabled'] = call('describe_key', KeyId=k['KeyId'])
out['enc_disabled'] = call('encrypt', KeyId=k['KeyId'], Plaintext=b'x')
out['enable'] = call('enable_key', KeyId=k['KeyId'])
out['enabled'] = call('describe_key', KeyId=k['KeyId'])
out['enable_by_alias'] = call('enable_key', KeyId='alias/whatever')
out['keys'] = [x['KeyId'] for x in keys]
print(json.dumps(out, default=str))
"#;
    let out = f.boto3(f.alice(), "us-east-1", script, &[]);
    let id = out["keys"][0].as_str().expect("id").to_owned();
    for form in ["by_id", "by_arn", "by_alias", "by_alias_arn"] {
        assert_eq!(
            ok(&out[form])["KeyMetadata"]["KeyId"],
            id.as_str(),
            "{form}"
        );
    }
    err(&out["alias_again"], "AlreadyExistsException");
    err(&out["alias_bad_prefix"], "InvalidAliasNameException");
    err(&out["alias_to_alias"], "NotFoundException");
    assert!(
        out["alias_reserved"]["error"].is_string(),
        "{}",
        out["alias_reserved"]
    );
    err(&out["missing"], "NotFoundException");
    err(&out["missing_alias"], "NotFoundException");
    assert_eq!(
        ok(&out["after_update"])["KeyMetadata"]["KeyId"],
        out["keys"][1]
    );
    let aliases = ok(&out["aliases"])["Aliases"]
        .as_array()
        .expect("aliases")
        .clone();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0]["AliasName"], "alias/app");
    assert!(
        aliases[0]["AliasArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":111122223333:alias/app"))
    );
    assert_eq!(
        ok(&out["aliases_for_key"])["Aliases"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    ok(&out["delete_alias"]);
    err(&out["delete_alias_again"], "NotFoundException");
    // Paging: 2 + 2 + 1, every key exactly once, in a stable order.
    let pages: Vec<Vec<String>> = serde_json::from_value(out["pages"].clone()).expect("pages");
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let mut all: Vec<String> = pages.concat();
    all.sort();
    let mut want: Vec<String> = serde_json::from_value(out["keys"].clone()).expect("keys");
    want.sort();
    assert_eq!(all, want);
    let bad = &out["bad_limit"];
    err(bad, "ValidationException");
    assert!(bad["message"].as_str().is_some_and(|m| m.contains("at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1")), "{bad}");
    assert_eq!(ok(&out["desc_after"])["KeyMetadata"]["Description"], "new");
    assert_eq!(ok(&out["disabled"])["KeyMetadata"]["KeyState"], "Disabled");
    assert_eq!(ok(&out["disabled"])["KeyMetadata"]["Enabled"], false);
    err(&out["enc_disabled"], "DisabledException");
    assert_eq!(ok(&out["enabled"])["KeyMetadata"]["KeyState"], "Enabled");
    err(&out["enable_by_alias"], "NotFoundException");
}

#[tokio::test]
async fn deletion_windows_run_on_the_service_clock() {
    let f = FrontendFixture::new().start();
    let make = r#"
k = call('create_key')['ok']['KeyMetadata']['KeyId']
ct = call('encrypt', KeyId=k, Plaintext=b'secret')['ok']['CiphertextBlob']
out = {'key': k, 'ct': ct.hex()}
out['too_short'] = call('schedule_key_deletion', KeyId=k, PendingWindowInDays=6)
out['too_long'] = call('schedule_key_deletion', KeyId=k, PendingWindowInDays=31)
out['schedule'] = call('schedule_key_deletion', KeyId=k, PendingWindowInDays=7)
out['described'] = call('describe_key', KeyId=k)
out['encrypt_pending'] = call('encrypt', KeyId=k, Plaintext=b'x')
out['decrypt_pending'] = call('decrypt', CiphertextBlob=bytes.fromhex(out['ct']))
out['cancel'] = call('cancel_key_deletion', KeyId=k)
out['after_cancel'] = call('describe_key', KeyId=k)
out['cancel_again'] = call('cancel_key_deletion', KeyId=k)
out['enable'] = call('enable_key', KeyId=k)
out['default_window'] = call('schedule_key_deletion', KeyId=k)
print(json.dumps(out, default=str))
"#;
    let out = f.boto3(f.alice(), "us-east-1", make, &[]);
    err(&out["too_short"], "ValidationException");
    err(&out["too_long"], "ValidationException");
    let s = ok(&out["schedule"]);
    assert_eq!(s["KeyState"], "PendingDeletion");
    assert_eq!(s["PendingWindowInDays"], 7);
    let d = &ok(&out["described"])["KeyMetadata"];
    assert_eq!(d["KeyState"], "PendingDeletion");
    assert_eq!(d["Enabled"], false);
    assert!(
        d["DeletionDate"].is_string() || d["DeletionDate"].is_number(),
        "{d}"
    );
    err(&out["encrypt_pending"], "KMSInvalidStateException");
    err(&out["decrypt_pending"], "KMSInvalidStateException");
    assert!(
        out["encrypt_pending"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is pending deletion"))
    );
    assert_eq!(
        ok(&out["after_cancel"])["KeyMetadata"]["KeyState"],
        "Disabled"
    );
    err(&out["cancel_again"], "KMSInvalidStateException");
    assert_eq!(ok(&out["default_window"])["PendingWindowInDays"], 30);

    // 29 days later the key still exists; after 30 it is gone for good.
    let key = out["key"].as_str().expect("key").to_owned();
    f.advance_clock(29 * 86_400).await;
    let check = "print(json.dumps(call('describe_key', KeyId=sys.argv[1]), default=str))";
    let still = f.boto3(f.alice(), "us-east-1", check, &[&key]);
    assert_eq!(ok(&still)["KeyMetadata"]["KeyState"], "PendingDeletion");
    f.advance_clock(86_400 + 60).await;
    let gone = f.boto3(f.alice(), "us-east-1", check, &[&key]);
    err(&gone, "NotFoundException");
    let listed = f.boto3(
        f.alice(),
        "us-east-1",
        "print(json.dumps(call('list_keys')))",
        &[],
    );
    assert_eq!(ok(&listed)["Keys"].as_array().map(Vec::len), Some(0));
}

#[test]
fn tags_and_key_policies() {
    let f = FrontendFixture::new().start();
    let script = r#"
k = call('create_key', Tags=[{'TagKey': 'team', 'TagValue': 'a'}])['ok']['KeyMetadata']['KeyId']
out = {}
out['tag'] = call('tag_resource', KeyId=k, Tags=[{'TagKey': 'team', 'TagValue': 'b'}, {'TagKey': 'env', 'TagValue': ''}])
out['list'] = call('list_resource_tags', KeyId=k)
out['reserved'] = call('tag_resource', KeyId=k, Tags=[{'TagKey': 'aws:x', 'TagValue': 'v'}])
out['too_many'] = call('tag_resource', KeyId=k, Tags=[{'TagKey': f't{i}', 'TagValue': 'v'} for i in range(49)])
out['untag'] = call('untag_resource', KeyId=k, TagKeys=['team'])
out['list2'] = call('list_resource_tags', KeyId=k)
out['policy'] = call('get_key_policy', KeyId=k, PolicyName='default')
out['policy_names'] = call('list_key_policies', KeyId=k)
out['other_policy'] = call('get_key_policy', KeyId=k, PolicyName='other')
locked = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Principal': {'AWS': 'arn:aws:iam::111122223333:root'}, 'Action': 'kms:Decrypt', 'Resource': '*'}]})
out['malformed'] = call('put_key_policy', KeyId=k, PolicyName='default', Policy='{"Statement": 5}')
out['lockout'] = call('put_key_policy', KeyId=k, PolicyName='default', Policy=locked)
out['bypass'] = call('put_key_policy', KeyId=k, PolicyName='default', Policy=locked, BypassPolicyLockoutSafetyCheck=True)
out['policy2'] = call('get_key_policy', KeyId=k, PolicyName='default')
print(json.dumps(out, default=str))
"#;
    let out = f.boto3(f.alice(), "us-east-1", script, &[]);
    ok(&out["tag"]);
    let tags: Vec<(String, String)> = ok(&out["list"])["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            (
                t["TagKey"].as_str().unwrap_or("").to_owned(),
                t["TagValue"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        vec![("team".into(), "b".into()), ("env".into(), String::new())]
    );
    err(&out["reserved"], "TagException");
    err(&out["too_many"], "TagException");
    assert_eq!(ok(&out["list2"])["Tags"].as_array().map(Vec::len), Some(1));
    let policy: Value =
        serde_json::from_str(ok(&out["policy"])["Policy"].as_str().expect("policy")).expect("json");
    assert_eq!(
        policy["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:root"
    );
    assert_eq!(policy["Statement"][0]["Action"], "kms:*");
    assert_eq!(ok(&out["policy_names"])["PolicyNames"], json!(["default"]));
    err(&out["other_policy"], "NotFoundException");
    err(&out["lockout"], "MalformedPolicyDocumentException");
    assert!(
        out["lockout"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("will not allow you to update the key policy"))
    );
    ok(&out["bypass"]);
    // The bypassed policy is in force: it grants the account kms:Decrypt only, so alice
    // can no longer even read it.
    err(&out["policy2"], "AccessDeniedException");
    assert!(out["policy2"]["message"].as_str().is_some_and(|m| {
        m.ends_with("because no resource-based policy allows the kms:GetKeyPolicy action")
    }));
    err(&out["malformed"], "MalformedPolicyDocumentException");
}

#[test]
fn symmetric_cryptography_binds_the_key_and_the_encryption_context() {
    let f = FrontendFixture::new().start();
    let script = r#"
a = call('create_key')['ok']['KeyMetadata']['KeyId']
b = call('create_key')['ok']['KeyMetadata']['KeyId']
h = call('create_key', KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['ok']['KeyMetadata']['KeyId']
call('create_alias', AliasName='alias/a', TargetKeyId=a)
out = {}
e = call('encrypt', KeyId='alias/a', Plaintext=b'hello world', EncryptionContext={'b': '2', 'a': '1'})['ok']
out['enc_keyid'] = e['KeyId']
ct = e['CiphertextBlob']
out['dec'] = call('decrypt', CiphertextBlob=ct, EncryptionContext={'a': '1', 'b': '2'})
out['dec_plain'] = out['dec']['ok']['Plaintext'].decode() if 'ok' in out['dec'] else None
out['dec_wrong_ctx'] = call('decrypt', CiphertextBlob=ct, EncryptionContext={'a': '1'})
out['dec_no_ctx'] = call('decrypt', CiphertextBlob=ct)
out['dec_wrong_key'] = call('decrypt', CiphertextBlob=ct, EncryptionContext={'a': '1', 'b': '2'}, KeyId=b)
out['dec_right_key'] = call('decrypt', CiphertextBlob=ct, EncryptionContext={'a': '1', 'b': '2'}, KeyId='alias/a')
bad = bytearray(ct); bad[-1] ^= 1
out['dec_tampered'] = call('decrypt', CiphertextBlob=bytes(bad), EncryptionContext={'a': '1', 'b': '2'})
out['dec_garbage'] = call('decrypt', CiphertextBlob=b'garbage')
gdk = call('generate_data_key', KeyId=a, KeySpec='AES_256', EncryptionContext={'x': 'y'})['ok']
out['gdk_len'] = len(gdk['Plaintext'])
out['gdk_back'] = call('decrypt', CiphertextBlob=gdk['CiphertextBlob'], EncryptionContext={'x': 'y'})['ok']['Plaintext'] == gdk['Plaintext']
out['gdk_128'] = len(call('generate_data_key', KeyId=a, KeySpec='AES_128')['ok']['Plaintext'])
out['gdk_bytes'] = len(call('generate_data_key', KeyId=a, NumberOfBytes=64)['ok']['Plaintext'])
out['gdk_both'] = call('generate_data_key', KeyId=a, NumberOfBytes=64, KeySpec='AES_256')
out['gdk_neither'] = call('generate_data_key', KeyId=a)
wp = call('generate_data_key_without_plaintext', KeyId=a, KeySpec='AES_256')['ok']
out['wp_has_plaintext'] = 'Plaintext' in wp
out['wp_len'] = len(call('decrypt', CiphertextBlob=wp['CiphertextBlob'])['ok']['Plaintext'])
re = call('re_encrypt', CiphertextBlob=ct, SourceEncryptionContext={'a': '1', 'b': '2'}, DestinationKeyId=b, DestinationEncryptionContext={'z': '9'})['ok']
out['re_source'] = re['SourceKeyId']
out['re_dest'] = re['KeyId']
out['re_back'] = call('decrypt', CiphertextBlob=re['CiphertextBlob'], EncryptionContext={'z': '9'})['ok']['Plaintext'].decode()
out['enc_hmac'] = call('encrypt', KeyId=h, Plaintext=b'x')
out['enc_too_big'] = call('encrypt', KeyId=a, Plaintext=b'x' * 4097)
out['enc_max'] = len(call('encrypt', KeyId=a, Plaintext=b'x' * 4096)['ok']['CiphertextBlob'])
out['random'] = len(call('generate_random', NumberOfBytes=32)['ok']['Plaintext'])
out['random_big'] = call('generate_random', NumberOfBytes=1025)
out['dry_run'] = call('encrypt', KeyId=a, Plaintext=b'x', DryRun=True)
ext = call('create_key', Origin='EXTERNAL')['ok']['KeyMetadata']
out['ext_state'] = ext['KeyState']
out['enc_pending_import'] = call('encrypt', KeyId=ext['KeyId'], Plaintext=b'x')
out['enable_pending_import'] = call('enable_key', KeyId=ext['KeyId'])
out['a'] = a; out['b'] = b
print(json.dumps(out, default=str))
"#;
    let out = f.boto3(f.alice(), "us-east-1", script, &[]);
    let a = out["a"].as_str().expect("a");
    assert!(out["enc_keyid"].as_str().is_some_and(|k| k.ends_with(a)));
    assert_eq!(
        out["dec_plain"], "hello world",
        "context order does not matter"
    );
    for case in ["dec_wrong_ctx", "dec_no_ctx", "dec_tampered", "dec_garbage"] {
        err(&out[case], "InvalidCiphertextException");
    }
    err(&out["dec_wrong_key"], "IncorrectKeyException");
    ok(&out["dec_right_key"]);
    assert_eq!(out["gdk_len"], 32);
    assert_eq!(out["gdk_back"], true);
    assert_eq!(out["gdk_128"], 16);
    assert_eq!(out["gdk_bytes"], 64);
    err(&out["gdk_both"], "ValidationException");
    err(&out["gdk_neither"], "ValidationException");
    assert_eq!(out["wp_has_plaintext"], false);
    assert_eq!(out["wp_len"], 32);
    assert!(out["re_source"].as_str().is_some_and(|k| k.ends_with(a)));
    assert!(
        out["re_dest"]
            .as_str()
            .is_some_and(|k| k.ends_with(out["b"].as_str().unwrap_or("?")))
    );
    assert_eq!(out["re_back"], "hello world");
    err(&out["enc_hmac"], "InvalidKeyUsageException");
    err(&out["enc_too_big"], "ValidationException");
    assert!(
        out["enc_max"].as_u64().is_some_and(|n| n <= 6144),
        "{}",
        out["enc_max"]
    );
    assert_eq!(out["random"], 32);
    err(&out["random_big"], "ValidationException");
    err(&out["dry_run"], "DryRunOperationException");
    assert_eq!(out["ext_state"], "PendingImport");
    err(&out["enc_pending_import"], "KMSInvalidStateException");
    assert!(
        out["enc_pending_import"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is pending import"))
    );
    err(&out["enable_pending_import"], "KMSInvalidStateException");
}

#[test]
fn accounts_and_regions_are_separate_and_china_uses_aws_cn() {
    let f = FrontendFixture::new().start();
    let create = "print(json.dumps(call('create_key', Description='x'), default=str))";
    let alice_key = f.boto3(f.alice(), "us-east-1", create, &[]);
    let arn = ok(&alice_key)["KeyMetadata"]["Arn"]
        .as_str()
        .expect("arn")
        .to_owned();
    assert!(arn.starts_with("arn:aws:kms:us-east-1:111122223333:key/"));
    let id = ok(&alice_key)["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("id")
        .to_owned();
    let describe = "print(json.dumps(call('describe_key', KeyId=sys.argv[1]), default=str))";
    // Bob (same account) sees it; carol (another account) and another Region do not.
    ok(&f.boto3(&f.fixture.principals[1], "us-east-1", describe, &[&id]));
    err(
        &f.boto3(&f.fixture.principals[2], "us-east-1", describe, &[&id]),
        "NotFoundException",
    );
    err(
        &f.boto3(f.alice(), "eu-west-1", describe, &[&id]),
        "NotFoundException",
    );
    let cn = f.boto3(f.alice(), "cn-north-1", create, &[]);
    assert!(
        ok(&cn)["KeyMetadata"]["Arn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws-cn:kms:cn-north-1:111122223333:key/"))
    );
}

#[test]
fn the_aws_cli_drives_the_front_end() {
    let f = FrontendFixture::new().start();
    let out = f.aws_cli(
        f.alice(),
        "eu-west-1",
        &[
            "create-key",
            "--description",
            "from the cli",
            "--tags",
            "TagKey=a,TagValue=b",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = v["KeyMetadata"]["KeyId"].as_str().expect("id").to_owned();
    assert_eq!(v["KeyMetadata"]["Description"], "from the cli");
    let out = f.aws_cli(
        f.alice(),
        "eu-west-1",
        &[
            "create-alias",
            "--alias-name",
            "alias/cli",
            "--target-key-id",
            &id,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f.aws_cli(
        f.alice(),
        "eu-west-1",
        &[
            "generate-data-key",
            "--key-id",
            "alias/cli",
            "--key-spec",
            "AES_256",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Errors reach the CLI as AWS formats them.
    let out = f.aws_cli(
        f.alice(),
        "eu-west-1",
        &["describe-key", "--key-id", "alias/nope"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "An error occurred (NotFoundException) when calling the DescribeKey operation"
        ),
        "{stderr}"
    );
}

#[test]
fn keys_and_ciphertexts_survive_kill_9() {
    let f = FrontendFixture::new().start();
    let make = r#"
k = call('create_key')['ok']['KeyMetadata']['KeyId']
call('create_alias', AliasName='alias/durable', TargetKeyId=k)
ct = call('encrypt', KeyId=k, Plaintext=b'durable data', EncryptionContext={'c': '1'})['ok']['CiphertextBlob']
print(json.dumps({'key': k, 'ct': ct.hex()}))
"#;
    let made = f.boto3(f.alice(), "us-east-1", make, &[]);
    let f = f.restart(false);
    let check = r#"
out = {}
out['dec'] = call('decrypt', CiphertextBlob=bytes.fromhex(sys.argv[1]), EncryptionContext={'c': '1'})
out['plain'] = out['dec']['ok']['Plaintext'].decode() if 'ok' in out['dec'] else None
out['alias'] = call('describe_key', KeyId='alias/durable')
print(json.dumps(out, default=str))
"#;
    let out = f.boto3(
        f.alice(),
        "us-east-1",
        check,
        &[made["ct"].as_str().expect("ct")],
    );
    assert_eq!(out["plain"], "durable data", "{out}");
    assert_eq!(ok(&out["alias"])["KeyMetadata"]["KeyId"], made["key"]);
    // Key material is stored sealed: the database never holds the plaintext data key bytes
    // in a recognisable form (spot check: the ciphertext's key id is there, 'durable data' is not).
    // (The SQLite file; on PostgreSQL the rows are checked by the storage conformance tests.)
    if !f.fixture.storage.is_postgres() {
        let db = std::fs::read(f.fixture.home.path().join("data/kms.sqlite")).expect("db");
        assert!(!db.windows(12).any(|w| w == b"durable data"));
    }
}

#[tokio::test]
async fn callers_are_authenticated_as_aws_does() {
    let f = FrontendFixture::new().start();
    let alice = f.alice().clone();
    let list = "print(json.dumps(call('list_keys')))";
    ok(&f.boto3(&alice, "us-east-1", list, &[]));
    let mut wrong = alice.clone();
    wrong.secret = testkit::random_secret();
    let r = f.boto3(&wrong, "us-east-1", list, &[]);
    assert_eq!(r["error"], "InvalidSignatureException", "{r}");
    let mut unknown = alice.clone();
    unknown.access_key_id = "AKIAUNKNOWNUNKNOWN22".into();
    let r = f.boto3(&unknown, "us-east-1", list, &[]);
    assert_eq!(r["error"], "UnrecognizedClientException", "{r}");

    // A request signed 20 minutes ago (AWS allows 15) and one without a signature.
    let c = XksClient::new(&f.fixture.pki.ca_pem, &alice.access_key_id, &alice.secret);
    let mut c = c;
    c.service = "kms".into();
    let target = |parts: &mut http::request::Parts, _: &mut Vec<u8>| {
        parts.headers.insert(
            "x-amz-target",
            http::HeaderValue::from_static("TrentService.ListKeys"),
        );
    };
    let url = format!("{}/", f.endpoint());
    let signed_target = |parts: &mut http::request::Parts, body: &mut Vec<u8>| {
        target(parts, body);
        // Re-signed so that the signature covers the operation's name.
        let credential = sigv4_auth::Credential::new(
            &alice.access_key_id,
            sigv4_auth::SigningSecret::new(&alice.secret),
        );
        sigv4_auth::sign(
            parts,
            body,
            &sigv4_auth::SigningParams {
                credential: &credential,
                region: "us-east-1",
                service: "kms",
                time: SystemTime::now(),
            },
        )
        .expect("sign");
    };
    let r = c
        .send(
            "POST",
            &url,
            b"{}".to_vec(),
            SystemTime::now(),
            signed_target,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    let r = c
        .send(
            "POST",
            &url,
            b"{}".to_vec(),
            SystemTime::now() - Duration::from_secs(1200),
            target,
        )
        .await;
    assert_eq!(
        (r.status, r.json["__type"].as_str()),
        (400, Some("InvalidSignatureException")),
        "{}",
        String::from_utf8_lossy(&r.raw)
    );
    assert!(
        r.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("Signature expired"))
    );
    let r = c.send_unsigned("POST", &url, b"{}".to_vec()).await;
    assert_eq!(r.json["__type"], "MissingAuthenticationTokenException");
    // Malformed Authorization header.
    let r = c
        .send(
            "POST",
            &url,
            b"{}".to_vec(),
            SystemTime::now(),
            |parts, _| {
                parts.headers.insert(
                    "authorization",
                    http::HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=broken"),
                );
            },
        )
        .await;
    assert_eq!(
        r.json["__type"],
        "IncompleteSignatureException",
        "{}",
        String::from_utf8_lossy(&r.raw)
    );
    // Unknown operation; response headers as AWS sends them.
    let r = c
        .send(
            "POST",
            &url,
            b"{}".to_vec(),
            SystemTime::now(),
            |parts, _| {
                parts.headers.insert(
                    "x-amz-target",
                    http::HeaderValue::from_static("TrentService.NoSuchThing"),
                );
            },
        )
        .await;
    assert_eq!(r.json["__type"], "UnknownOperationException");
    assert!(r.headers.contains_key("x-amzn-requestid"));
    assert_eq!(r.headers["content-type"], "application/x-amz-json-1.1");
}
