//! Grants through the running front end, driven by boto3 as three principals: alice and bob
//! in account 111122223333 (the keys' account), carol in 444455556666. The keys' policies
//! name alice alone, so whatever bob and carol may do comes from grants.
//!
//! CreateGrant and its tokens (usable at once, unforgeable), use with and without a token,
//! constraints (Equals vs Subset), operations not granted, explicit Denies, key states,
//! operations that do not fit the key, retire by each allowed party and refusal for the
//! others, revoke, idempotent names, quotas, paging, cross-account use by key ARN, and grants
//! deleted with their key.

use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend, TestPrincipal};

const REGION: &str = "us-east-1";
const A: &str = "111122223333";

/// bob may use keys and list grants but holds no `kms:RetireGrant`; carol may only list
/// the grants she can retire: her use of account A's keys comes from grants alone.
const IDENTITY_POLICIES: &str = r#"
[[identity_policies]]
name = "bob-uses-keys"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey","kms:DescribeKey","kms:ListGrants","kms:ListRetirableGrants","kms:RevokeGrant"],"Resource":"*"}]}'''
principals = ["arn:aws:iam::111122223333:user/bob"]

[[identity_policies]]
name = "carol-lists-retirable-grants"
document = '''{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:ListRetirableGrants","Resource":"*"}]}'''
principals = ["arn:aws:iam::444455556666:user/carol"]
"#;

const PLAINTEXT: &str = "aGVsbG8="; // "hello"

struct Stack {
    fe: RunningFrontend,
    alice: TestPrincipal,
    bob: TestPrincipal,
    carol: TestPrincipal,
}

fn start(limits: &str) -> Stack {
    let mut f = FrontendFixture::new();
    f.extra_toml = format!("{limits}\n{IDENTITY_POLICIES}");
    let fe = f.start();
    let p = fe.fixture.principals.clone();
    Stack {
        alice: p[0].clone(),
        bob: p[1].clone(),
        carol: p[2].clone(),
        fe,
    }
}

impl Stack {
    /// Runs one call as `p`: `{"ok": ...}` or `{"error", "message", "status"}`.
    fn call(&self, p: &TestPrincipal, op: &str, args: &Value) -> Value {
        self.fe.boto3(
            p,
            REGION,
            "import base64\nkw = json.loads(sys.argv[2])\nfor k in ('Plaintext', 'CiphertextBlob'):\n    if k in kw: kw[k] = base64.b64decode(kw[k])\nr = call(sys.argv[1], **kw)\nif 'ok' in r:\n    r['ok'] = {k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in r['ok'].items()}\nprint(json.dumps(r, default=str))\n",
            &[op, &args.to_string()],
        )
    }

    /// A key whose policy names alice alone.
    fn alice_key(&self, extra: &Value) -> String {
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": self.alice.arn}, "Action": "kms:*", "Resource": "*"}
        ]});
        let mut args = json!({"Policy": policy.to_string()});
        if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        let r = self.call(&self.alice, "create_key", &args);
        ok(&r)["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap_or_else(|| panic!("no key ARN: {r}"))
            .to_owned()
    }

    /// Alice creates a grant; returns (GrantId, GrantToken).
    fn grant(&self, args: &Value) -> (String, String) {
        let r = self.call(&self.alice, "create_grant", args);
        let o = ok(&r);
        let field = |f: &str| {
            o[f].as_str()
                .unwrap_or_else(|| panic!("no {f}: {r}"))
                .to_owned()
        };
        (field("GrantId"), field("GrantToken"))
    }

    fn encrypt(&self, p: &TestPrincipal, key: &str, extra: &Value) -> Value {
        let mut args = json!({"KeyId": key, "Plaintext": PLAINTEXT});
        if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        self.call(p, "encrypt", &args)
    }

    fn grant_ids(&self, p: &TestPrincipal, key: &str) -> Vec<String> {
        let r = self.call(p, "list_grants", &json!({"KeyId": key}));
        ok(&r)["Grants"]
            .as_array()
            .unwrap_or_else(|| panic!("no Grants: {r}"))
            .iter()
            .filter_map(|g| g["GrantId"].as_str().map(str::to_owned))
            .collect()
    }
}

fn ok(r: &Value) -> &Value {
    r.get("ok")
        .unwrap_or_else(|| panic!("expected success: {r}"))
}

fn err(r: &Value, code: &str) {
    assert_eq!(r["error"], code, "{r}");
    assert_eq!(r["status"], 400, "{r}");
}

fn no_policy_allows(r: &Value, who: &TestPrincipal, action: &str, key: &str) {
    err(r, "AccessDeniedException");
    assert_eq!(
        r["message"],
        format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {key} because no resource-based policy allows the kms:{action} action",
            who.arn
        ),
        "{r}"
    );
}

#[test]
fn grants_allow_their_grantee_exactly_their_operations_within_their_constraints() {
    let s = start("");
    let (alice, bob) = (&s.alice, &s.bob);
    let k = s.alice_key(&json!({}));
    no_policy_allows(&s.encrypt(bob, &k, &json!({})), bob, "Encrypt", &k);

    // The token works at once, before the grant was ever listed.
    let (grant_id, token) = s.grant(&json!({
        "KeyId": k, "GranteePrincipal": bob.arn,
        "Operations": ["Encrypt", "Decrypt", "DescribeKey"],
    }));
    assert_eq!(grant_id.len(), 64, "{grant_id}");
    let ct = ok(&s.encrypt(bob, &k, &json!({"GrantTokens": [token]})))["CiphertextBlob"].clone();
    // Listed as AWS lists grants, then used without the token.
    let r = s.call(alice, "list_grants", &json!({"KeyId": k}));
    let listed = &ok(&r)["Grants"][0];
    assert_eq!(listed["GrantId"], grant_id, "{r}");
    assert_eq!(listed["KeyId"], k, "{r}");
    assert_eq!(listed["GranteePrincipal"], bob.arn, "{r}");
    assert_eq!(
        listed["IssuingAccount"],
        format!("arn:aws:iam::{A}:root"),
        "{r}"
    );
    let mut ops: Vec<&str> = listed["Operations"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ops.sort_unstable();
    assert_eq!(ops, ["Decrypt", "DescribeKey", "Encrypt"], "{r}");
    assert_eq!(ok(&r)["Truncated"], false, "{r}");
    ok(&s.encrypt(bob, &k, &json!({})));
    let r = s.call(bob, "decrypt", &json!({"CiphertextBlob": ct}));
    assert_eq!(ok(&r)["Plaintext"], PLAINTEXT);
    ok(&s.call(bob, "describe_key", &json!({"KeyId": k})));
    // An operation the grant does not hold.
    no_policy_allows(
        &s.call(
            bob,
            "generate_data_key",
            &json!({"KeyId": k, "KeySpec": "AES_256"}),
        ),
        bob,
        "GenerateDataKey",
        &k,
    );
    // Forged or garbage tokens are refused, whoever presents them.
    let mut forged = token.into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap_or_default();
    for t in [forged.as_str(), "not-a-grant-token"] {
        let r = s.encrypt(bob, &k, &json!({"GrantTokens": [t]}));
        err(&r, "InvalidGrantTokenException");
        err(
            &s.call(
                alice,
                "encrypt",
                &json!({"KeyId": k, "Plaintext": PLAINTEXT, "GrantTokens": [t]}),
            ),
            "InvalidGrantTokenException",
        );
    }

    // Constraints: Equals needs exactly the pairs (keys ignore case, values do not);
    // Subset needs the pairs and allows more.
    let k2 = s.alice_key(&json!({}));
    s.grant(&json!({
        "KeyId": k2, "GranteePrincipal": bob.arn, "Operations": ["Encrypt"],
        "Constraints": {"EncryptionContextEquals": {"Dept": "IT"}},
    }));
    s.grant(&json!({
        "KeyId": k2, "GranteePrincipal": bob.arn, "Operations": ["Decrypt"],
        "Constraints": {"EncryptionContextSubset": {"Dept": "IT"}},
    }));
    for ctx in [json!({"Dept": "IT"}), json!({"dept": "IT"})] {
        ok(&s.encrypt(bob, &k2, &json!({"EncryptionContext": ctx})));
    }
    for ctx in [
        json!({"Dept": "IT", "Project": "x"}),
        json!({"Dept": "it"}),
        json!({}),
    ] {
        no_policy_allows(
            &s.encrypt(bob, &k2, &json!({"EncryptionContext": ctx})),
            bob,
            "Encrypt",
            &k2,
        );
    }
    let wide = json!({"Dept": "IT", "Project": "x"});
    let r = s.encrypt(alice, &k2, &json!({"EncryptionContext": wide}));
    let ct2 = ok(&r)["CiphertextBlob"].clone();
    let r = s.call(
        bob,
        "decrypt",
        &json!({"CiphertextBlob": ct2, "EncryptionContext": wide}),
    );
    assert_eq!(ok(&r)["Plaintext"], PLAINTEXT, "Subset allows extra pairs");
    let r = s.encrypt(alice, &k2, &json!({"EncryptionContext": {"Project": "x"}}));
    let ct3 = ok(&r)["CiphertextBlob"].clone();
    no_policy_allows(
        &s.call(
            bob,
            "decrypt",
            &json!({"KeyId": k2, "CiphertextBlob": ct3, "EncryptionContext": {"Project": "x"}}),
        ),
        bob,
        "Decrypt",
        &k2,
    );

    // An explicit Deny in the key policy beats a grant.
    let deny_bob = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": alice.arn}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": bob.arn}, "Action": "kms:Encrypt", "Resource": "*"}
    ]});
    let k3 = s.alice_key(&json!({}));
    let (_, t3) = s.grant(&json!({"KeyId": k3, "GranteePrincipal": bob.arn, "Operations": ["Encrypt", "DescribeKey"]}));
    ok(&s.encrypt(bob, &k3, &json!({})));
    ok(&s.call(
        alice,
        "put_key_policy",
        &json!({"KeyId": k3, "PolicyName": "default", "Policy": deny_bob.to_string()}),
    ));
    let r = s.encrypt(bob, &k3, &json!({"GrantTokens": [t3]}));
    err(&r, "AccessDeniedException");
    assert_eq!(
        r["message"],
        format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {k3} with an explicit deny in a resource-based policy",
            bob.arn
        ),
        "{r}"
    );
    ok(&s.call(bob, "describe_key", &json!({"KeyId": k3})));

    // Operations must fit the key; constraints need operations with an encryption context.
    let grant = |key: &str, ops: Value, extra: Value| {
        let mut a = json!({"KeyId": key, "GranteePrincipal": bob.arn, "Operations": ops});
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        s.call(alice, "create_grant", &a)
    };
    err(
        &grant(&k, json!(["Sign"]), json!({})),
        "ValidationException",
    );
    err(&grant(&k, json!(["Fly"]), json!({})), "ValidationException");
    let signer = s.alice_key(&json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}));
    err(
        &grant(&signer, json!(["Encrypt"]), json!({})),
        "ValidationException",
    );
    err(
        &grant(
            &signer,
            json!(["Sign"]),
            json!({"Constraints": {"EncryptionContextSubset": {"a": "b"}}}),
        ),
        "ValidationException",
    );
    ok(&grant(&signer, json!(["Sign", "GetPublicKey"]), json!({})));
    let r = s.call(
        bob,
        "sign",
        &json!({"KeyId": signer, "Message": "aGk=", "SigningAlgorithm": "ECDSA_SHA_256"}),
    );
    ok(&r);
    // DryRun checks everything and creates nothing.
    let before = s.grant_ids(alice, &k).len();
    err(
        &grant(&k, json!(["Encrypt"]), json!({"DryRun": true})),
        "DryRunOperationException",
    );
    assert_eq!(s.grant_ids(alice, &k).len(), before);

    // Key states: a disabled key takes no new grant; neither does one pending deletion.
    ok(&s.call(alice, "disable_key", &json!({"KeyId": k3})));
    let r = grant(&k3, json!(["Encrypt"]), json!({}));
    err(&r, "DisabledException");
    assert_eq!(r["message"], format!("{k3} is disabled."), "{r}");
    ok(&s.call(
        alice,
        "schedule_key_deletion",
        &json!({"KeyId": k3, "PendingWindowInDays": 7}),
    ));
    let r = grant(&k3, json!(["Encrypt"]), json!({}));
    err(&r, "KMSInvalidStateException");
    assert_eq!(r["message"], format!("{k3} is pending deletion."), "{r}");
    // Listing works in any state.
    assert_eq!(s.grant_ids(alice, &k3).len(), 1);
}

#[test]
fn grants_are_retired_by_the_parties_aws_names_and_revoked_by_key_policy() {
    let s = start("");
    let (alice, bob, carol) = (&s.alice, &s.bob, &s.carol);
    let k = s.alice_key(&json!({}));
    let retire = |p: &TestPrincipal, grant_id: &str| {
        s.call(p, "retire_grant", &json!({"KeyId": k, "GrantId": grant_id}))
    };

    // The retiring principal (bob, who holds no kms:RetireGrant) retires a grant to carol.
    let (g1, _) = s.grant(&json!({
        "KeyId": k, "GranteePrincipal": carol.arn, "RetiringPrincipal": bob.arn,
        "Operations": ["Encrypt"],
    }));
    ok(&s.encrypt(carol, &k, &json!({})));
    let r = s.call(
        bob,
        "list_retirable_grants",
        &json!({"RetiringPrincipal": bob.arn}),
    );
    let listed: Vec<&Value> = ok(&r)["Grants"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    assert_eq!(listed.len(), 1, "{r}");
    assert_eq!(listed[0]["GrantId"], g1, "{r}");
    assert_eq!(listed[0]["RetiringPrincipal"], bob.arn, "{r}");
    err(
        &s.call(
            carol,
            "list_retirable_grants",
            &json!({"RetiringPrincipal": bob.arn}),
        ),
        "AccessDeniedException",
    );
    no_policy_allows(&retire(carol, &g1), carol, "RetireGrant", &k);
    ok(&retire(bob, &g1));
    no_policy_allows(&s.encrypt(carol, &k, &json!({})), carol, "Encrypt", &k);
    err(&retire(bob, &g1), "NotFoundException");

    // The grantee retires its own grant (by token) only when the grant includes
    // RetireGrant.
    let (g2, t2) = s.grant(&json!({
        "KeyId": k, "GranteePrincipal": carol.arn, "Operations": ["Encrypt", "RetireGrant"],
    }));
    ok(&s.encrypt(carol, &k, &json!({})));
    ok(&s.call(carol, "retire_grant", &json!({"GrantToken": t2})));
    assert!(!s.grant_ids(alice, &k).contains(&g2));
    err(
        &s.call(
            carol,
            "retire_grant",
            &json!({"GrantToken": "bm90IGEgdG9rZW4"}),
        ),
        "InvalidGrantTokenException",
    );
    let (g3, t3) =
        s.grant(&json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Encrypt"]}));
    no_policy_allows(
        &s.call(bob, "retire_grant", &json!({"GrantToken": t3})),
        bob,
        "RetireGrant",
        &k,
    );
    no_policy_allows(&retire(carol, &g3), carol, "RetireGrant", &k);
    // The account that created the grant (alice: its identity policies allow
    // kms:RetireGrant) retires it.
    ok(&retire(alice, &g3));
    no_policy_allows(&s.encrypt(bob, &k, &json!({})), bob, "Encrypt", &k);

    // RevokeGrant is the key policy's to allow: alice may, bob may not (his identity
    // policy alone does not reach a key whose policy does not delegate to IAM).
    let (g4, _) =
        s.grant(&json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Encrypt"]}));
    ok(&s.encrypt(bob, &k, &json!({})));
    no_policy_allows(
        &s.call(bob, "revoke_grant", &json!({"KeyId": k, "GrantId": g4})),
        bob,
        "RevokeGrant",
        &k,
    );
    err(
        &s.call(
            alice,
            "revoke_grant",
            &json!({"KeyId": k, "GrantId": g4, "DryRun": true}),
        ),
        "DryRunOperationException",
    );
    ok(&s.encrypt(bob, &k, &json!({})));
    ok(&s.call(alice, "revoke_grant", &json!({"KeyId": k, "GrantId": g4})));
    no_policy_allows(&s.encrypt(bob, &k, &json!({})), bob, "Encrypt", &k);
    err(
        &s.call(alice, "revoke_grant", &json!({"KeyId": k, "GrantId": g4})),
        "NotFoundException",
    );
    err(
        &s.call(
            alice,
            "revoke_grant",
            &json!({"KeyId": k, "GrantId": "xyz"}),
        ),
        "InvalidGrantIdException",
    );
    assert!(s.grant_ids(alice, &k).is_empty());

    // A grant holding CreateGrant hands on at most its operations, under constraints at
    // least as strict as its own.
    s.grant(&json!({
        "KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Encrypt", "CreateGrant"],
        "Constraints": {"EncryptionContextSubset": {"app": "billing"}},
    }));
    let hand_on = |ops: Value, constraints: Value| {
        let mut a = json!({"KeyId": k, "GranteePrincipal": carol.arn, "Operations": ops});
        if !constraints.is_null() {
            a["Constraints"] = constraints;
        }
        s.call(bob, "create_grant", &a)
    };
    let stricter = json!({"EncryptionContextSubset": {"app": "billing", "team": "x"}});
    ok(&hand_on(json!(["Encrypt"]), stricter.clone()));
    ok(&hand_on(
        json!(["Encrypt"]),
        json!({"EncryptionContextEquals": {"App": "billing"}}),
    ));
    no_policy_allows(
        &hand_on(json!(["Decrypt"]), stricter),
        bob,
        "CreateGrant",
        &k,
    );
    no_policy_allows(
        &hand_on(json!(["Encrypt"]), Value::Null),
        bob,
        "CreateGrant",
        &k,
    );
    no_policy_allows(
        &hand_on(
            json!(["Encrypt"]),
            json!({"EncryptionContextSubset": {"team": "x"}}),
        ),
        bob,
        "CreateGrant",
        &k,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_quotas_paging_cross_account_and_key_deletion() {
    let s = start("[limits]\nmax_grants_per_key = 5\nmax_grants_per_grantee = 3\n");
    let (alice, bob, carol) = (&s.alice, &s.bob, &s.carol);
    let k = s.alice_key(&json!({}));

    // The same name and parameters: the same grant, a new token, both tokens usable.
    let named = json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Encrypt"], "Name": "backup-job"});
    let (id1, t1) = s.grant(&named);
    let (id2, t2) = s.grant(&named);
    assert_eq!(id1, id2);
    assert_ne!(t1, t2);
    for t in [&t1, &t2] {
        ok(&s.encrypt(bob, &k, &json!({"GrantTokens": [t]})));
    }
    let r = s.call(alice, "list_grants", &json!({"KeyId": k, "GrantId": id1}));
    assert_eq!(ok(&r)["Grants"][0]["Name"], "backup-job", "{r}");
    // The same name with other operations is another grant.
    let (id3, _) = s.grant(&json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Encrypt", "Decrypt"], "Name": "backup-job"}));
    assert_ne!(id3, id1);

    // Quotas: 3 grants per grantee, 5 per key; freed by a retirement.
    s.grant(&json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["DescribeKey"]}));
    let r = s.call(
        alice,
        "create_grant",
        &json!({"KeyId": k, "GranteePrincipal": bob.arn, "Operations": ["Decrypt"]}),
    );
    err(&r, "LimitExceededException");
    // An idempotent repeat at the quota still answers its grant.
    assert_eq!(s.grant(&named).0, id1);
    let (c1, _) = s.grant(
        &json!({"KeyId": k, "GranteePrincipal": carol.arn, "Operations": ["Encrypt", "Decrypt"]}),
    );
    s.grant(&json!({"KeyId": k, "GranteePrincipal": carol.arn, "Operations": ["DescribeKey"]}));
    err(
        &s.call(
            alice,
            "create_grant",
            &json!({"KeyId": k, "GranteePrincipal": carol.arn, "Operations": ["Encrypt"]}),
        ),
        "LimitExceededException",
    );

    // Paging: 5 grants, 2 a page, in creation order.
    let mut pages = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut args = json!({"KeyId": k, "Limit": 2});
        if let Some(m) = &marker {
            args["Marker"] = json!(m);
        }
        let r = s.call(alice, "list_grants", &args);
        let page = ok(&r);
        pages.push(page["Grants"].as_array().map_or(0, Vec::len));
        match page["NextMarker"].as_str() {
            Some(m) => {
                assert_eq!(page["Truncated"], true, "{r}");
                marker = Some(m.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, [2, 2, 1]);
    let r = s.call(
        alice,
        "list_grants",
        &json!({"KeyId": k, "GranteePrincipal": carol.arn}),
    );
    assert_eq!(ok(&r)["Grants"].as_array().map_or(0, Vec::len), 2, "{r}");
    err(
        &s.call(
            alice,
            "list_grants",
            &json!({"KeyId": k, "Marker": "bogus"}),
        ),
        "InvalidMarkerException",
    );

    // Cross-account: carol (another account, no identity policy for it) uses the key by
    // its ARN through her grant; by key id it names a key of her own account.
    let ct = ok(&s.encrypt(carol, &k, &json!({})))["CiphertextBlob"].clone();
    let r = s.call(carol, "decrypt", &json!({"KeyId": k, "CiphertextBlob": ct}));
    assert_eq!(ok(&r)["Plaintext"], PLAINTEXT);
    let key_id = k.rsplit('/').next().unwrap_or_default();
    err(&s.encrypt(carol, key_id, &json!({})), "NotFoundException");
    let other = s.alice_key(&json!({}));
    no_policy_allows(
        &s.encrypt(carol, &other, &json!({})),
        carol,
        "Encrypt",
        &other,
    );
    // carol creates nothing on a key whose policy does not let her.
    no_policy_allows(
        &s.call(
            carol,
            "create_grant",
            &json!({"KeyId": k, "GranteePrincipal": carol.arn, "Operations": ["Encrypt"]}),
        ),
        carol,
        "CreateGrant",
        &k,
    );
    ok(&s.call(alice, "retire_grant", &json!({"KeyId": k, "GrantId": c1})));
    let (_, retirable) = s.grant(&json!({"KeyId": k, "GranteePrincipal": carol.arn, "RetiringPrincipal": bob.arn, "Operations": ["Encrypt"]}));
    ok(&s.encrypt(carol, &k, &json!({"GrantTokens": [retirable]})));

    // Deleting the key deletes its grants.
    let count = |r: &Value| ok(r)["Grants"].as_array().map_or(0, Vec::len);
    let r = s.call(
        bob,
        "list_retirable_grants",
        &json!({"RetiringPrincipal": bob.arn}),
    );
    assert_eq!(count(&r), 1, "{r}");
    ok(&s.call(
        alice,
        "schedule_key_deletion",
        &json!({"KeyId": k, "PendingWindowInDays": 7}),
    ));
    s.fe.advance_clock(8 * 86_400).await;
    let r = s.call(
        bob,
        "list_retirable_grants",
        &json!({"RetiringPrincipal": bob.arn}),
    );
    assert_eq!(count(&r), 0, "{r}");
    err(
        &s.call(alice, "list_grants", &json!({"KeyId": k})),
        "NotFoundException",
    );
}

#[test]
fn grant_condition_keys_decide_who_may_create_which_grant() {
    let s = start("");
    let (alice, bob, carol) = (&s.alice, &s.bob, &s.carol);
    // bob may create grants for carol only: Encrypt/Decrypt, retired by him, under an
    // EncryptionContextSubset constraint, and not for an AWS resource.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": alice.arn}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": bob.arn}, "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {
            "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]},
            "StringEquals": {
                "kms:GranteePrincipal": carol.arn,
                "kms:RetiringPrincipal": bob.arn,
                "kms:GrantConstraintType": "EncryptionContextSubset",
                "kms:EncryptionContext:tenant": "t1"
            },
            "Bool": {"kms:GrantIsForAWSResource": "false"}
         }}
    ]});
    let r = s.call(alice, "create_key", &json!({"Policy": policy.to_string()}));
    let k = ok(&r)["KeyMetadata"]["Arn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let subset = json!({"EncryptionContextSubset": {"tenant": "t1"}});
    let good = json!({
        "KeyId": k, "GranteePrincipal": carol.arn, "RetiringPrincipal": bob.arn,
        "Operations": ["Encrypt"], "Constraints": subset,
    });
    let r = s.call(bob, "create_grant", &good);
    let token = ok(&r)["GrantToken"].as_str().unwrap_or_default().to_owned();
    ok(&s.encrypt(
        carol,
        &k,
        &json!({"EncryptionContext": {"tenant": "t1", "doc": "7"}, "GrantTokens": [token]}),
    ));
    let variant = |field: &str, value: Value| {
        let mut a = good.clone();
        if value.is_null() {
            a.as_object_mut().map(|o| o.remove(field));
        } else {
            a[field] = value;
        }
        a
    };
    for (why, args) in [
        (
            "an operation outside the set",
            variant("Operations", json!(["Encrypt", "GenerateDataKey"])),
        ),
        (
            "another grantee",
            variant("GranteePrincipal", json!(alice.arn)),
        ),
        (
            "no retiring principal",
            variant("RetiringPrincipal", Value::Null),
        ),
        ("no constraint", variant("Constraints", Value::Null)),
        (
            "another constraint type",
            variant(
                "Constraints",
                json!({"EncryptionContextEquals": {"tenant": "t1"}}),
            ),
        ),
        (
            "another tenant",
            variant(
                "Constraints",
                json!({"EncryptionContextSubset": {"tenant": "t2"}}),
            ),
        ),
    ] {
        let r = s.call(bob, "create_grant", &args);
        assert_eq!(r["error"], "AccessDeniedException", "{why}: {r}");
    }
}

#[test]
fn a_zero_grant_quota_is_a_config_error() {
    let mut f = FrontendFixture::new();
    f.extra_toml = "[limits]\nmax_grants_per_key = 0\nmax_grants_per_grantee = 0\n".into();
    f.write_config();
    let out = std::process::Command::new(testkit::bins::bin("kms-frontend-test"))
        .args(["check-config", "--config"])
        .arg(f.config_path())
        .output()
        .expect("run check-config");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "limits.max_grants_per_key: must be at least 1",
        "limits.max_grants_per_grantee: must be at least 1",
    ] {
        assert!(stderr.contains(problem), "{stderr}");
    }
}
