//! Authorization through the running front end: key policies, identity policies (the
//! config's stand-in for IAM) and cross-account use decide every request, with AWS's
//! `AccessDeniedException` wording; requests that could be re-aimed (the operation name
//! not signed) or that name an unserved Region are refused and change nothing.
//!
//! Principals: alice and bob in account 111122223333, carol in 444455556666
//! (`testkit::frontend::FrontendFixture::new`).

use serde_json::{Value, json};
use std::time::SystemTime;
use testkit::frontend::{FrontendFixture, RunningFrontend, TestPrincipal};

const REGION: &str = "us-east-1";
const A: &str = "111122223333";

/// Identity policies: bob may only Encrypt/DescribeKey/CreateKey and is denied DescribeKey
/// on one tag; carol may use keys of account A for a few cryptographic operations.
const IDENTITY_POLICIES: &str = r#"
[[identity_policies]]
name = "bob-encrypt-only"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:DescribeKey","kms:CreateKey"],"Resource":"*"}]}'''
principals = ["arn:aws:iam::111122223333:user/bob"]

[[identity_policies]]
name = "no-describe-of-secret-keys"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:DescribeKey","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/Class":"secret"}}}]}'''
principals = ["arn:aws:iam::111122223333:user/bob"]

[[identity_policies]]
name = "no-encrypt-with-frozen-keys"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"kms:ResourceAliases":"alias/frozen"}}}]}'''
principals = ["arn:aws:iam::111122223333:user/bob"]

[[identity_policies]]
name = "carol-uses-account-a-keys"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey","kms:ScheduleKeyDeletion"],"Resource":"arn:aws:kms:*:111122223333:key/*"}]}'''
principals = ["arn:aws:iam::444455556666:user/carol"]
"#;

fn start() -> RunningFrontend {
    let mut f = FrontendFixture::new();
    f.extra_toml = IDENTITY_POLICIES.into();
    f.start()
}

/// Runs one call as `p`: `{"ok": ...}` or `{"error", "message", "status"}`.
fn call(fe: &RunningFrontend, p: &TestPrincipal, op: &str, args: &Value) -> Value {
    fe.boto3(
        p,
        REGION,
        "import base64\nkw = json.loads(sys.argv[2])\nfor k in ('Plaintext', 'CiphertextBlob'):\n    if k in kw: kw[k] = base64.b64decode(kw[k])\nr = call(sys.argv[1], **kw)\nif 'ok' in r:\n    r['ok'] = {k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in r['ok'].items()}\nprint(json.dumps(r, default=str))\n",
        &[op, &args.to_string()],
    )
}

fn ok(r: &Value) -> &Value {
    r.get("ok")
        .unwrap_or_else(|| panic!("expected success: {r}"))
}

/// Asserts an `AccessDeniedException` (HTTP 400) with exactly `message`.
fn denied(r: &Value, message: &str) {
    assert_eq!(r["error"], "AccessDeniedException", "{r}");
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["message"], message, "{r}");
}

fn create_key(fe: &RunningFrontend, p: &TestPrincipal, args: &Value) -> String {
    let r = call(fe, p, "create_key", args);
    ok(&r)["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap_or_else(|| panic!("no key ARN: {r}"))
        .to_owned()
}

fn key_state(fe: &RunningFrontend, arn: &str) -> String {
    let r = call(fe, fe.alice(), "describe_key", &json!({"KeyId": arn}));
    ok(&r)["KeyMetadata"]["KeyState"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn policy(statements: &Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

fn root_statement(account: &str, actions: &Value) -> Value {
    json!({"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": actions, "Resource": "*"})
}

const PLAINTEXT: &str = "aGVsbG8="; // "hello"

#[test]
fn key_policies_and_identity_policies_decide_every_request() {
    let fe = start();
    let (alice, bob) = (fe.alice().clone(), fe.fixture.principals[1].clone());
    let no_identity = |user: &str, action: &str, on: &str| {
        format!(
            "User: arn:aws:iam::{A}:user/{user} is not authorized to perform: kms:{action} on resource: {on} because no identity-based policy allows the kms:{action} action"
        )
    };

    // K1: the default key policy delegates to IAM. alice (no identity policy: allow-all)
    // may do anything; bob only what his identity policies allow.
    let k1 = create_key(&fe, &alice, &json!({}));
    let ct = ok(&call(
        &fe,
        &bob,
        "encrypt",
        &json!({"KeyId": k1, "Plaintext": PLAINTEXT}),
    ))["CiphertextBlob"]
        .clone();
    denied(
        &call(
            &fe,
            &bob,
            "decrypt",
            &json!({"KeyId": k1, "CiphertextBlob": ct}),
        ),
        &no_identity("bob", "Decrypt", &k1),
    );
    denied(
        &call(&fe, &bob, "schedule_key_deletion", &json!({"KeyId": k1})),
        &no_identity("bob", "ScheduleKeyDeletion", &k1),
    );
    assert_eq!(
        key_state(&fe, &k1),
        "Enabled",
        "a refused request changes nothing"
    );
    denied(
        &call(&fe, &bob, "list_keys", &json!({})),
        &no_identity("bob", "ListKeys", "*"),
    );
    let r = call(&fe, &alice, "decrypt", &json!({"CiphertextBlob": ct}));
    assert_eq!(ok(&r)["Plaintext"], PLAINTEXT);

    // A key policy that explicitly denies alice kms:Decrypt: she can no longer decrypt,
    // whether she names the key or lets the ciphertext name it, but still encrypts.
    let deny_alice = json!([
        root_statement(A, &json!("kms:*")),
        {"Effect": "Deny", "Principal": {"AWS": alice.arn}, "Action": "kms:Decrypt", "Resource": "*"}
    ]);
    ok(&call(
        &fe,
        &alice,
        "put_key_policy",
        &json!({"KeyId": k1, "PolicyName": "default", "Policy": policy(&deny_alice)}),
    ));
    denied(
        &call(
            &fe,
            &alice,
            "decrypt",
            &json!({"KeyId": k1, "CiphertextBlob": ct}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:Decrypt on resource: {k1} with an explicit deny in a resource-based policy",
            alice.arn
        ),
    );
    denied(
        &call(&fe, &alice, "decrypt", &json!({"CiphertextBlob": ct})),
        &format!(
            "User: {} is not authorized to perform: kms:Decrypt on the resource associated with this ciphertext with an explicit deny in a resource-based policy",
            alice.arn
        ),
    );
    ok(&call(
        &fe,
        &alice,
        "encrypt",
        &json!({"KeyId": k1, "Plaintext": PLAINTEXT}),
    ));

    // K2: a key policy naming only alice, without delegation to IAM: bob's identity policy
    // does not help him.
    let only_alice = json!([{"Effect": "Allow", "Principal": {"AWS": alice.arn}, "Action": "kms:*", "Resource": "*"}]);
    let k2 = create_key(&fe, &alice, &json!({"Policy": policy(&only_alice)}));
    denied(
        &call(
            &fe,
            &bob,
            "encrypt",
            &json!({"KeyId": k2, "Plaintext": PLAINTEXT}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {k2} because no resource-based policy allows the kms:Encrypt action",
            bob.arn
        ),
    );
    ok(&call(
        &fe,
        &alice,
        "encrypt",
        &json!({"KeyId": k2, "Plaintext": PLAINTEXT}),
    ));

    // An explicit deny in an identity policy, conditioned on the key's tag.
    let k3 = create_key(
        &fe,
        &alice,
        &json!({"Tags": [{"TagKey": "Class", "TagValue": "secret"}]}),
    );
    denied(
        &call(&fe, &bob, "describe_key", &json!({"KeyId": k3})),
        &format!(
            "User: {} is not authorized to perform: kms:DescribeKey on resource: {k3} with an explicit deny in an identity-based policy",
            bob.arn
        ),
    );
    ok(&call(&fe, &bob, "describe_key", &json!({"KeyId": k1})));

    // kms:ResourceAliases: once K1 has the alias alias/frozen, bob may no longer encrypt.
    ok(&call(
        &fe,
        &alice,
        "create_alias",
        &json!({"AliasName": "alias/frozen", "TargetKeyId": k1}),
    ));
    denied(
        &call(
            &fe,
            &bob,
            "encrypt",
            &json!({"KeyId": k1, "Plaintext": PLAINTEXT}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {k1} with an explicit deny in an identity-based policy",
            bob.arn
        ),
    );

    // The lockout safety check asks the evaluator: the account-root policy passes for
    // alice (allow-all identity) but would lock bob out, whose identity policies do not
    // allow kms:PutKeyPolicy.
    let root_only = json!({"Policy": policy(&json!([root_statement(A, &json!("kms:*"))]))});
    let r = call(&fe, &bob, "create_key", &root_only);
    assert_eq!(r["error"], "MalformedPolicyDocumentException", "{r}");
    assert_eq!(
        r["message"],
        "The new key policy will not allow you to update the key policy in the future.",
        "{r}"
    );
    let mut bypassed = root_only.clone();
    bypassed["BypassPolicyLockoutSafetyCheck"] = json!(true);
    ok(&call(&fe, &bob, "create_key", &bypassed));
    ok(&call(&fe, &alice, "create_key", &root_only));

    // aws:SourceIp is the peer address: this client connects from loopback.
    let deny_from = |operator: &str| {
        json!([
            root_statement(A, &json!("kms:*")),
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {operator: {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}}
        ])
    };
    let loopback_denied = create_key(
        &fe,
        &alice,
        &json!({"Policy": policy(&deny_from("IpAddress"))}),
    );
    denied(
        &call(
            &fe,
            &alice,
            "encrypt",
            &json!({"KeyId": loopback_denied, "Plaintext": PLAINTEXT}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {loopback_denied} with an explicit deny in a resource-based policy",
            alice.arn
        ),
    );
    let others_denied = create_key(
        &fe,
        &alice,
        &json!({"Policy": policy(&deny_from("NotIpAddress"))}),
    );
    ok(&call(
        &fe,
        &alice,
        "encrypt",
        &json!({"KeyId": others_denied, "Plaintext": PLAINTEXT}),
    ));
}

#[test]
fn another_accounts_key_is_usable_by_arn_for_cross_account_operations_only() {
    let fe = start();
    let alice = fe.alice().clone();
    let carol = fe.fixture.principals[2].clone();
    // K: account A's key policy lets account B (carol's) use it; carol's identity policy
    // allows Encrypt, Decrypt, DescribeKey and ScheduleKeyDeletion on account A's keys.
    let shared = json!([
        root_statement(A, &json!("kms:*")),
        root_statement(
            "444455556666",
            &json!([
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKey",
                "kms:ScheduleKeyDeletion"
            ])
        )
    ]);
    let k = create_key(&fe, &alice, &json!({"Policy": policy(&shared)}));
    let ct = ok(&call(
        &fe,
        &carol,
        "encrypt",
        &json!({"KeyId": k, "Plaintext": PLAINTEXT}),
    ))["CiphertextBlob"]
        .clone();
    let r = call(
        &fe,
        &carol,
        "decrypt",
        &json!({"KeyId": k, "CiphertextBlob": ct}),
    );
    assert_eq!(ok(&r)["Plaintext"], PLAINTEXT, "{r}");
    let r = call(&fe, &carol, "describe_key", &json!({"KeyId": k}));
    assert_eq!(ok(&r)["KeyMetadata"]["AWSAccountId"], A, "{r}");
    // Allowed by A's key policy but not by carol's identity policy.
    denied(
        &call(
            &fe,
            &carol,
            "generate_data_key",
            &json!({"KeyId": k, "KeySpec": "AES_256"}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:GenerateDataKey on resource: {k} because no identity-based policy allows the kms:GenerateDataKey action",
            carol.arn
        ),
    );
    // A key of account A whose policy does not mention account B.
    let private = create_key(&fe, &alice, &json!({}));
    denied(
        &call(
            &fe,
            &carol,
            "encrypt",
            &json!({"KeyId": private, "Plaintext": PLAINTEXT}),
        ),
        &format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {private} because no resource-based policy allows the kms:Encrypt action",
            carol.arn
        ),
    );
    // ScheduleKeyDeletion is not a cross-account operation, whatever both policies say:
    // the ARN is looked up in carol's own account.
    let r = call(&fe, &carol, "schedule_key_deletion", &json!({"KeyId": k}));
    assert_eq!(r["error"], "NotFoundException", "{r}");
    assert_eq!(key_state(&fe, &k), "Enabled");
    // A key id (not an ARN) always names a key of the caller's account.
    let id = k.rsplit('/').next().unwrap_or_default();
    let r = call(
        &fe,
        &carol,
        "encrypt",
        &json!({"KeyId": id, "Plaintext": PLAINTEXT}),
    );
    assert_eq!(r["error"], "NotFoundException", "{r}");
}

/// Sends `operation` as `p`, signed for `region`; the target header is covered by the
/// signature only when `sign_target`.
async fn send(
    fe: &RunningFrontend,
    p: &TestPrincipal,
    region: &str,
    operation: &str,
    body: &Value,
    sign_target: bool,
) -> testkit::client::Reply {
    let mut c =
        testkit::client::XksClient::new(&fe.fixture.pki.ca_pem, &p.access_key_id, &p.secret)
            .in_region(region);
    c.service = "kms".into();
    let target = http::HeaderValue::from_str(&format!("TrentService.{operation}")).expect("target");
    let credential =
        sigv4_auth::Credential::new(&p.access_key_id, sigv4_auth::SigningSecret::new(&p.secret));
    let region = region.to_owned();
    c.send(
        "POST",
        &format!("{}/", fe.endpoint()),
        body.to_string().into_bytes(),
        SystemTime::now(),
        move |parts, body| {
            parts.headers.insert("x-amz-target", target);
            if sign_target {
                sigv4_auth::sign(
                    parts,
                    body,
                    &sigv4_auth::SigningParams {
                        credential: &credential,
                        region: &region,
                        service: "kms",
                        time: SystemTime::now(),
                    },
                )
                .expect("sign");
            }
        },
    )
    .await
}

async fn key_count(fe: &RunningFrontend, p: &TestPrincipal) -> usize {
    let r = send(fe, p, REGION, "ListKeys", &json!({}), true).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    r.json["Keys"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_that_does_not_cover_the_operation_is_refused_and_changes_nothing() {
    let fe = start();
    let alice = fe.alice().clone();
    let r = send(&fe, &alice, REGION, "CreateKey", &json!({}), true).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    let key = r.json["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The same key's ScheduleKeyDeletion, with the operation name outside the signature
    // (what a captured DisableKey re-aimed at another operation looks like).
    let r = send(
        &fe,
        &alice,
        REGION,
        "ScheduleKeyDeletion",
        &json!({"KeyId": key}),
        false,
    )
    .await;
    assert_eq!(
        (r.status, r.json["__type"].as_str()),
        (400, Some("IncompleteSignatureException")),
        "{}",
        String::from_utf8_lossy(&r.raw)
    );
    assert!(
        r.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("'x-amz-target'")),
        "{}",
        r.json
    );
    let r = send(&fe, &alice, REGION, "CreateKey", &json!({}), false).await;
    assert_eq!(
        r.json["__type"], "IncompleteSignatureException",
        "{}",
        r.json
    );
    assert_eq!(key_count(&fe, &alice).await, 1, "no key was created");
    let r = send(
        &fe,
        &alice,
        REGION,
        "DescribeKey",
        &json!({"KeyId": key}),
        true,
    )
    .await;
    assert_eq!(r.json["KeyMetadata"]["KeyState"], "Enabled", "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_scoped_to_an_unserved_region_is_refused_and_changes_nothing() {
    let fe = start();
    let alice = fe.alice().clone();
    for region in ["moon-base-1", "us-east-1:evil", "xx"] {
        let r = send(&fe, &alice, region, "CreateKey", &json!({}), true).await;
        assert_eq!(
            (
                r.status,
                r.json["__type"].as_str(),
                r.json["message"].as_str()
            ),
            (
                400,
                Some("InvalidSignatureException"),
                Some("Credential should be scoped to a valid region. ")
            ),
            "{region}: {}",
            String::from_utf8_lossy(&r.raw)
        );
    }
    // Served Regions of every partition work.
    for region in ["eu-west-1", "cn-north-1", "us-gov-west-1"] {
        let r = send(&fe, &alice, region, "ListKeys", &json!({}), true).await;
        assert_eq!(
            r.status,
            200,
            "{region}: {}",
            String::from_utf8_lossy(&r.raw)
        );
    }
    assert_eq!(key_count(&fe, &alice).await, 0, "no key was created");
}

#[test]
fn identity_policy_and_region_mistakes_are_config_errors_reported_together() {
    let mut f = FrontendFixture::new();
    f.extra_toml = r#"
[[identity_policies]]
name = "names-a-principal"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}'''

[[identity_policies]]
name = "not-json"
document = "{"

[[identity_policies]]
name = "for-a-stranger"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'''
principals = ["arn:aws:iam::111122223333:user/nobody"]
"#
    .into();
    f.write_config();
    // A top-level key must come before the first table.
    let text = std::fs::read_to_string(f.config_path()).expect("read");
    std::fs::write(
        f.config_path(),
        format!("regions = [\"us-east-1\", \"us-east-1:evil\"]\n{text}"),
    )
    .expect("write");
    let out = std::process::Command::new(testkit::bins::bin("kms-frontend-test"))
        .args(["check-config", "--config"])
        .arg(f.config_path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "identity policy names-a-principal: an identity policy has no Principal",
        "identity policy not-json:",
        "identity policy for-a-stranger: principal arn:aws:iam::111122223333:user/nobody is not configured",
        "regions: 'us-east-1:evil' is not a Region name",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
