//! The evaluator's decision table: each row is a key policy, identity policies, a request
//! and the decision AWS makes (`../shared/reference/kms-authz.md` §1, §4).

use super::evaluate::{Decision, Grant, Request, evaluate};
use super::parse::Policy;

const A: &str = "111122223333";
const B: &str = "444455556666";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const CAROL: &str = "arn:aws:iam::444455556666:user/carol";
const SESSION: &str = "arn:aws:sts::111122223333:assumed-role/Admin/s1";

const ROOT_A: &str = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;
const ALLOW_ALL: &str = r#"{"Effect":"Allow","Action":"kms:*","Resource":"*"}"#;

use Decision::{
    Allow as OK, ExplicitDenyIdentity as DI, ExplicitDenyResource as DR, NoIdentityAllow as NI,
    NoResourceAllow as NR,
};

/// One row.
struct Case {
    name: &'static str,
    /// Key policy statements (`None`: a `*` resource, identity policies alone).
    key: Option<&'static [&'static str]>,
    /// One identity policy per entry (its statements).
    identity: &'static [&'static str],
    caller: &'static str,
    action: &'static str,
    resource: &'static str,
    keys: &'static [(&'static str, &'static [&'static str])],
    service: Option<&'static str>,
    grants: &'static [(&'static str, &'static str)],
    want: Decision,
}

const BASE: Case = Case {
    name: "",
    key: Some(&[ROOT_A]),
    identity: &[ALLOW_ALL],
    caller: ALICE,
    action: "Decrypt",
    resource: KEY,
    keys: &[],
    service: None,
    grants: &[],
    want: OK,
};

fn doc(statements: &[&str]) -> Policy {
    let text = format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    );
    Policy::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn run(c: &Case) -> Decision {
    let account = |arn: &str| arn.split(':').nth(4).unwrap_or_default().to_owned();
    let req = Request {
        action: format!("kms:{}", c.action),
        resource: c.resource.to_owned(),
        principal_arn: c.caller.to_owned(),
        principal_account: account(c.caller),
        resource_account: (c.resource != "*").then(|| account(c.resource)),
        partition: "aws".into(),
        via_service_principal: c.service.map(str::to_owned),
        keys: c
            .keys
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.iter().map(|s| (*s).to_owned()).collect(),
                )
            })
            .collect(),
    };
    let key = c.key.map(doc);
    let identity: Vec<Policy> = c.identity.iter().map(|s| doc(&[s])).collect();
    let grants: Vec<Grant> = c
        .grants
        .iter()
        .map(|(g, op)| Grant {
            grantee: (*g).to_owned(),
            operations: vec![(*op).to_owned()],
        })
        .collect();
    evaluate(&req, key.as_ref(), &identity, &grants)
}

/// A key policy statement allowing `kms:*` on `*` to everyone in account A, with `cond`.
macro_rules! cond {
    ($effect:literal, $cond:literal) => {
        concat!(
            r#"{"Effect":""#,
            $effect,
            r#"","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":"#,
            $cond,
            "}"
        )
    };
}

const DENY_ALICE_DECRYPT: &str = r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Decrypt","Resource":"*"}"#;
const ALICE_ONLY: &str = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}"#;
const CAROL_ONLY: &str = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:user/carol"},"Action":"kms:Decrypt","Resource":"*"}"#;
const ROOT_B: &str = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":["kms:Decrypt","kms:Encrypt"],"Resource":"*"}"#;
const EVERYONE: &str = r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}"#;
const EVERYONE_AWS: &str =
    r#"{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}"#;
const CAROL_ID_KEY: &str = r#"{"Effect":"Allow","Action":["kms:Decrypt","kms:Encrypt"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}"#;

fn allow_action(action: &str) -> String {
    format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:user/alice"}},"Action":{action},"Resource":"*"}}"#
    )
}

#[test]
fn decision_table() {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let one = |s: &'static str| -> &'static [&'static str] { Box::leak(Box::new([s])) };
    let two = |a: &'static str, b: &'static str| -> &'static [&'static str] {
        Box::leak(Box::new([a, b]))
    };
    let cases: Vec<Case> = vec![
        // Root delegation and identity policies.
        Case {
            name: "root delegation + allow-all identity",
            ..BASE
        },
        Case {
            name: "root delegation, no identity policy",
            identity: &[],
            want: NI,
            ..BASE
        },
        Case {
            name: "root delegation, identity allows another action",
            identity: &[r#"{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}"#],
            want: NI,
            ..BASE
        },
        Case {
            name: "root delegation, identity allows this action on the key ARN",
            identity: &[CAROL_ID_KEY],
            ..BASE
        },
        Case {
            name: "root delegation, identity allows another key only",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ],
            want: NI,
            ..BASE
        },
        Case {
            name: "identity resource wildcard in ARN segments",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:*:111122223333:key/*"}"#,
            ],
            ..BASE
        },
        Case {
            name: "identity alias ARN never covers a key",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:alias/*"}"#,
            ],
            want: NI,
            ..BASE
        },
        Case {
            name: "bare account id principal delegates",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            ..BASE
        },
        Case {
            name: "bare account id principal, no identity",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            want: NI,
            ..BASE
        },
        Case {
            name: "two identity policies, the second allows",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}"#,
                r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}"#,
            ],
            ..BASE
        },
        // Key policy naming the caller.
        Case {
            name: "key policy names the caller, no identity",
            key: Some(&[ALICE_ONLY]),
            identity: &[],
            ..BASE
        },
        Case {
            name: "key policy names someone else",
            key: Some(&[ALICE_ONLY]),
            caller: BOB,
            want: NR,
            ..BASE
        },
        Case {
            name: "key policy names the caller, identity denies",
            key: Some(&[ALICE_ONLY]),
            identity: &[r#"{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#],
            want: DI,
            ..BASE
        },
        Case {
            name: "Principal * same account, no identity",
            key: Some(&[EVERYONE]),
            identity: &[],
            ..BASE
        },
        Case {
            name: "empty statement list",
            key: Some(&[]),
            want: NR,
            ..BASE
        },
        Case {
            name: "assumed-role session matches its role",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Admin"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            caller: SESSION,
            ..BASE
        },
        Case {
            name: "assumed-role session matches its session ARN",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/Admin/s1"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            caller: SESSION,
            ..BASE
        },
        Case {
            name: "assumed-role session, another role",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Other"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            caller: SESSION,
            want: NR,
            ..BASE
        },
        Case {
            name: "assumed-role session through root delegation",
            caller: SESSION,
            ..BASE
        },
        // Explicit deny.
        Case {
            name: "key policy deny beats root allow",
            key: Some(&[ROOT_A, DENY_ALICE_DECRYPT]),
            want: DR,
            ..BASE
        },
        Case {
            name: "key policy deny of another principal",
            key: Some(&[ROOT_A, DENY_ALICE_DECRYPT]),
            caller: BOB,
            ..BASE
        },
        Case {
            name: "key policy deny of another action",
            key: Some(&[ROOT_A, DENY_ALICE_DECRYPT]),
            action: "Encrypt",
            ..BASE
        },
        Case {
            name: "key policy deny of *",
            key: Some(&[
                ALICE_ONLY,
                r#"{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}"#,
            ]),
            want: DR,
            ..BASE
        },
        Case {
            name: "identity deny beats key policy naming the caller",
            key: Some(&[ALICE_ONLY]),
            identity: &[
                ALLOW_ALL,
                r#"{"Effect":"Deny","Action":"kms:*","Resource":"*"}"#,
            ],
            want: DI,
            ..BASE
        },
        Case {
            name: "resource deny reported before identity deny",
            key: Some(&[DENY_ALICE_DECRYPT]),
            identity: &[r#"{"Effect":"Deny","Action":"kms:*","Resource":"*"}"#],
            want: DR,
            ..BASE
        },
        Case {
            name: "identity deny on another key",
            identity: &[
                ALLOW_ALL,
                r#"{"Effect":"Deny","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ],
            ..BASE
        },
        // Resource `*` operations.
        Case {
            name: "CreateKey allowed by identity",
            key: None,
            action: "CreateKey",
            resource: "*",
            ..BASE
        },
        Case {
            name: "CreateKey without identity policy",
            key: None,
            identity: &[],
            action: "CreateKey",
            resource: "*",
            want: NI,
            ..BASE
        },
        Case {
            name: "ListKeys denied by identity",
            key: None,
            identity: &[
                ALLOW_ALL,
                r#"{"Effect":"Deny","Action":"kms:List*","Resource":"*"}"#,
            ],
            action: "ListKeys",
            resource: "*",
            want: DI,
            ..BASE
        },
        Case {
            name: "identity statement on a key ARN does not cover *",
            key: None,
            identity: &[CAROL_ID_KEY],
            action: "CreateKey",
            resource: "*",
            want: NI,
            ..BASE
        },
        // Action / NotAction.
        Case {
            name: "action exact",
            key: Some(one(leak(allow_action(r#""kms:Decrypt""#)))),
            identity: &[],
            ..BASE
        },
        Case {
            name: "action case-insensitive",
            key: Some(one(leak(allow_action(r#""KMS:decrypt""#)))),
            identity: &[],
            ..BASE
        },
        Case {
            name: "action wildcard *",
            key: Some(one(leak(allow_action(r#""kms:Gen*""#)))),
            identity: &[],
            action: "GenerateDataKey",
            ..BASE
        },
        Case {
            name: "action wildcard does not cover",
            key: Some(one(leak(allow_action(r#""kms:Gen*""#)))),
            identity: &[],
            want: NR,
            ..BASE
        },
        Case {
            name: "action wildcard ?",
            key: Some(one(leak(allow_action(r#""kms:?ncrypt""#)))),
            identity: &[],
            action: "Encrypt",
            ..BASE
        },
        Case {
            name: "action list",
            key: Some(one(leak(allow_action(r#"["kms:Encrypt","kms:Decrypt"]"#)))),
            identity: &[],
            ..BASE
        },
        Case {
            name: "action * of any service",
            key: Some(one(leak(allow_action(r#""*""#)))),
            identity: &[],
            ..BASE
        },
        Case {
            name: "NotAction allow covers others",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:Decrypt","Resource":"*"}"#,
            ]),
            identity: &[],
            action: "Encrypt",
            ..BASE
        },
        Case {
            name: "NotAction allow excludes its action",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"NotAction":"kms:Decrypt","Resource":"*"}"#,
            ]),
            identity: &[],
            want: NR,
            ..BASE
        },
        Case {
            name: "NotAction deny hits others",
            key: Some(&[
                ROOT_A,
                r#"{"Effect":"Deny","Principal":"*","NotAction":"kms:Encrypt","Resource":"*"}"#,
            ]),
            want: DR,
            ..BASE
        },
        Case {
            name: "NotAction deny spares its action",
            key: Some(&[
                ROOT_A,
                r#"{"Effect":"Deny","Principal":"*","NotAction":"kms:Encrypt","Resource":"*"}"#,
            ]),
            action: "Encrypt",
            ..BASE
        },
        Case {
            name: "statement without Action never applies",
            key: Some(&[r#"{"Effect":"Allow","Principal":"*","Resource":"*"}"#]),
            want: NR,
            ..BASE
        },
        Case {
            name: "statement without Resource never applies",
            key: Some(&[r#"{"Effect":"Allow","Principal":"*","Action":"kms:*"}"#]),
            want: NR,
            ..BASE
        },
        Case {
            name: "identity NotAction",
            identity: &[r#"{"Effect":"Allow","NotAction":"kms:Schedule*","Resource":"*"}"#],
            ..BASE
        },
        Case {
            name: "identity NotAction excludes",
            identity: &[r#"{"Effect":"Allow","NotAction":"kms:Schedule*","Resource":"*"}"#],
            action: "ScheduleKeyDeletion",
            want: NI,
            ..BASE
        },
        // Resource / NotResource.
        Case {
            name: "key policy resource is the key ARN",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ]),
            identity: &[],
            ..BASE
        },
        Case {
            name: "key policy resource is another key",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ]),
            identity: &[],
            want: NR,
            ..BASE
        },
        Case {
            name: "NotResource another key covers this one",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ]),
            identity: &[],
            ..BASE
        },
        Case {
            name: "NotResource this key",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:*:*:key/1234*"}"#,
            ]),
            identity: &[],
            want: NR,
            ..BASE
        },
        Case {
            name: "identity NotResource this key",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ],
            want: NI,
            ..BASE
        },
        Case {
            name: "identity NotResource another key",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ],
            resource: KEY,
            ..BASE
        },
        Case {
            name: "the other key itself",
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:*","NotResource":"arn:aws:kms:us-east-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"}"#,
            ],
            resource: OTHER_KEY,
            want: NI,
            ..BASE
        },
        // NotPrincipal.
        Case {
            name: "Deny NotPrincipal alice hits bob",
            key: Some(&[
                ROOT_A,
                r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            caller: BOB,
            want: DR,
            ..BASE
        },
        Case {
            name: "Deny NotPrincipal alice spares alice",
            key: Some(&[
                ROOT_A,
                r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            ..BASE
        },
        Case {
            name: "Deny NotPrincipal account root does not spare its users",
            key: Some(&[
                ROOT_A,
                r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            want: DR,
            ..BASE
        },
        Case {
            name: "Deny NotPrincipal account root hits other accounts",
            key: Some(&[
                EVERYONE,
                r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            caller: CAROL,
            want: DR,
            ..BASE
        },
        Case {
            name: "Allow NotPrincipal bob lets alice in",
            key: Some(&[
                r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            ..BASE
        },
        Case {
            name: "Allow NotPrincipal bob keeps bob out",
            key: Some(&[
                r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/bob"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            identity: &[],
            caller: BOB,
            want: NR,
            ..BASE
        },
        // Service principals.
        Case {
            name: "service principal, direct call",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"Service":"logs.amazonaws.com"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            want: NR,
            ..BASE
        },
        Case {
            name: "service principal, call via that service",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"Service":"logs.amazonaws.com"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            service: Some("logs.amazonaws.com"),
            ..BASE
        },
        Case {
            name: "service principal, call via another service",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":{"Service":"logs.amazonaws.com"},"Action":"kms:*","Resource":"*"}"#,
            ]),
            service: Some("s3.amazonaws.com"),
            want: NR,
            ..BASE
        },
        // Cross-account.
        Case {
            name: "cross-account: B root allowed, B identity allows",
            key: Some(&[ROOT_A, ROOT_B]),
            identity: &[CAROL_ID_KEY],
            caller: CAROL,
            ..BASE
        },
        Case {
            name: "cross-account: B root allowed, no B identity",
            key: Some(&[ROOT_A, ROOT_B]),
            identity: &[],
            caller: CAROL,
            want: NI,
            ..BASE
        },
        Case {
            name: "cross-account: B root allowed, B identity for another action",
            key: Some(&[ROOT_A, ROOT_B]),
            identity: &[CAROL_ID_KEY],
            caller: CAROL,
            action: "DescribeKey",
            want: NR,
            ..BASE
        },
        Case {
            name: "cross-account: only A root allowed",
            key: Some(&[ROOT_A]),
            caller: CAROL,
            want: NR,
            ..BASE
        },
        Case {
            name: "cross-account: carol named, no identity",
            key: Some(&[CAROL_ONLY]),
            identity: &[],
            caller: CAROL,
            want: NI,
            ..BASE
        },
        Case {
            name: "cross-account: carol named, identity allows",
            key: Some(&[CAROL_ONLY]),
            identity: &[CAROL_ID_KEY],
            caller: CAROL,
            ..BASE
        },
        Case {
            name: "cross-account: Principal AWS * needs B identity",
            key: Some(&[EVERYONE_AWS]),
            identity: &[],
            caller: CAROL,
            want: NI,
            ..BASE
        },
        Case {
            name: "cross-account: Principal AWS * with B identity",
            key: Some(&[EVERYONE_AWS]),
            caller: CAROL,
            ..BASE
        },
        Case {
            name: "cross-account: B identity deny",
            key: Some(&[ROOT_B]),
            identity: &[
                ALLOW_ALL,
                r#"{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#,
            ],
            caller: CAROL,
            want: DI,
            ..BASE
        },
        // String operators.
        Case {
            name: "StringEquals context value",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["IT"])],
            ..BASE
        },
        Case {
            name: "StringEquals other value",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["HR"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "StringEquals absent key",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            want: NR,
            ..BASE
        },
        Case {
            name: "StringEqualsIfExists absent key",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEqualsIfExists":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "StringEqualsIfExists present, other value",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEqualsIfExists":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["HR"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "StringNotEquals absent key",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringNotEquals":{"kms:EncryptionContext:Dept":"IT"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "StringNotEquals same value",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringNotEquals":{"kms:EncryptionContext:Dept":["IT","HR"]}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["HR"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "StringEqualsIgnoreCase",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Dept":"it"}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["IT"])],
            ..BASE
        },
        Case {
            name: "StringNotEqualsIgnoreCase",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:Dept":"it"}}"#
            )]),
            keys: &[("kms:EncryptionContext:Dept", &["IT"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "StringLike on aws:PrincipalArn",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/a*"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            ..BASE
        },
        Case {
            name: "StringNotLike excludes",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/a*"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            want: NR,
            ..BASE
        },
        Case {
            name: "StringNotLike admits",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/a*"}}"#
            )]),
            caller: BOB,
            keys: &[("aws:PrincipalArn", &[BOB])],
            ..BASE
        },
        Case {
            name: "values are OR-ed",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:EncryptionAlgorithm":["RSAES_OAEP_SHA_256","SYMMETRIC_DEFAULT"]}}"#
            )]),
            keys: &[("kms:EncryptionAlgorithm", &["SYMMETRIC_DEFAULT"])],
            ..BASE
        },
        Case {
            name: "keys are AND-ed",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:EncryptionAlgorithm":"RSAES_OAEP_SHA_256"}}"#
            )]),
            keys: &[
                ("kms:CallerAccount", &[A]),
                ("kms:EncryptionAlgorithm", &["SYMMETRIC_DEFAULT"]),
            ],
            want: NR,
            ..BASE
        },
        Case {
            name: "operators are AND-ed",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:CallerAccount":"111122223333"},"Bool":{"aws:SecureTransport":"true"}}"#
            )]),
            keys: &[("kms:CallerAccount", &[A])],
            want: NR,
            ..BASE
        },
        Case {
            name: "condition key names are case-insensitive",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"KMS:CALLERACCOUNT":"111122223333"}}"#
            )]),
            keys: &[("kms:CallerAccount", &[A])],
            ..BASE
        },
        Case {
            name: "unknown condition key is absent",
            key: Some(&[cond!("Allow", r#"{"StringEquals":{"kms:NoSuchKey":"x"}}"#)]),
            want: NR,
            ..BASE
        },
        // Arn operators.
        Case {
            name: "ArnLike",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/alice"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            ..BASE
        },
        Case {
            name: "ArnEquals with wildcard segment",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::1111*:user/alice"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            ..BASE
        },
        Case {
            name: "ArnNotEquals",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/alice"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            want: NR,
            ..BASE
        },
        Case {
            name: "ArnNotLike absent key",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnNotLike":{"kms:GrantConstraintSourceArn":"arn:*"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "ArnLike needs six parts",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*"}}"#
            )]),
            keys: &[("aws:PrincipalArn", &[ALICE])],
            want: NR,
            ..BASE
        },
        Case {
            name: "ArnLikeIfExists absent key",
            key: Some(&[cond!(
                "Allow",
                r#"{"ArnLikeIfExists":{"aws:SourceArn":"arn:aws:s3:::b"}}"#
            )]),
            ..BASE
        },
        // Bool and Null.
        Case {
            name: "Bool true",
            key: Some(&[cond!("Allow", r#"{"Bool":{"aws:SecureTransport":"true"}}"#)]),
            keys: &[("aws:SecureTransport", &["true"])],
            ..BASE
        },
        Case {
            name: "Bool false vs true",
            key: Some(&[cond!("Allow", r#"{"Bool":{"aws:SecureTransport":false}}"#)]),
            keys: &[("aws:SecureTransport", &["true"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "deny on bypass lockout check",
            key: Some(&[
                ROOT_A,
                cond!(
                    "Deny",
                    r#"{"Bool":{"kms:BypassPolicyLockoutSafetyCheck":"true"}}"#
                ),
            ]),
            action: "PutKeyPolicy",
            keys: &[("kms:BypassPolicyLockoutSafetyCheck", &["true"])],
            want: DR,
            ..BASE
        },
        Case {
            name: "BoolIfExists absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"BoolIfExists":{"kms:GrantIsForAWSResource":"true"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "Null false, present",
            key: Some(&[cond!(
                "Allow",
                r#"{"Null":{"kms:EncryptionContextKeys":"false"}}"#
            )]),
            keys: &[("kms:EncryptionContextKeys", &["Dept"])],
            ..BASE
        },
        Case {
            name: "Null false, absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"Null":{"kms:EncryptionContextKeys":"false"}}"#
            )]),
            want: NR,
            ..BASE
        },
        Case {
            name: "Null true, absent",
            key: Some(&[cond!("Allow", r#"{"Null":{"kms:ViaService":"true"}}"#)]),
            ..BASE
        },
        Case {
            name: "Deny Null true on a missing context entry",
            key: Some(&[
                ROOT_A,
                cond!("Deny", r#"{"Null":{"kms:EncryptionContext:Dept":"true"}}"#),
            ]),
            want: DR,
            ..BASE
        },
        // Numeric.
        Case {
            name: "NumericLessThan",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericLessThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":10}}"#
            )]),
            action: "ScheduleKeyDeletion",
            keys: &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])],
            ..BASE
        },
        Case {
            name: "NumericGreaterThanEquals equal",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericGreaterThanEquals":{"kms:ScheduleKeyDeletionPendingWindowInDays":"7"}}"#
            )]),
            keys: &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])],
            ..BASE
        },
        Case {
            name: "NumericGreaterThan equal",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericGreaterThan":{"kms:ScheduleKeyDeletionPendingWindowInDays":"7"}}"#
            )]),
            keys: &[("kms:ScheduleKeyDeletionPendingWindowInDays", &["7"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "NumericNotEquals",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericNotEquals":{"kms:RotationPeriodInDays":"365"}}"#
            )]),
            keys: &[("kms:RotationPeriodInDays", &["365"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "NumericLessThanEqualsIfExists absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericLessThanEqualsIfExists":{"kms:RotationPeriodInDays":"365"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "Numeric on a non-number",
            key: Some(&[cond!(
                "Allow",
                r#"{"NumericEquals":{"kms:RotationPeriodInDays":"365"}}"#
            )]),
            keys: &[("kms:RotationPeriodInDays", &["many"])],
            want: NR,
            ..BASE
        },
        // Date.
        Case {
            name: "DateLessThan",
            key: Some(&[cond!(
                "Allow",
                r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#
            )]),
            keys: &[("aws:CurrentTime", &["2026-12-02T16:00:00Z"])],
            ..BASE
        },
        Case {
            name: "DateGreaterThan",
            key: Some(&[cond!(
                "Allow",
                r#"{"DateGreaterThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#
            )]),
            keys: &[("aws:CurrentTime", &["2026-12-02T16:00:00Z"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "DateNotEquals",
            key: Some(&[cond!(
                "Allow",
                r#"{"DateNotEquals":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#
            )]),
            keys: &[("aws:CurrentTime", &["2026-12-02T16:00:00Z"])],
            ..BASE
        },
        Case {
            name: "DateGreaterThanEquals epoch seconds",
            key: Some(&[cond!(
                "Allow",
                r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"1700000000"}}"#
            )]),
            keys: &[("aws:CurrentTime", &["2026-12-02T16:00:00Z"])],
            ..BASE
        },
        Case {
            name: "DateLessThanIfExists absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"DateLessThanIfExists":{"kms:ValidTo":"2030-01-01T00:00:00Z"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "Deny after a date",
            key: Some(&[
                ROOT_A,
                cond!(
                    "Deny",
                    r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01T00:00:00+00:00"}}"#
                ),
            ]),
            keys: &[("aws:CurrentTime", &["2026-12-02T16:00:00Z"])],
            want: DR,
            ..BASE
        },
        // IP addresses.
        Case {
            name: "IpAddress in range",
            key: Some(&[cond!(
                "Allow",
                r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#
            )]),
            keys: &[("aws:SourceIp", &["10.1.2.3"])],
            ..BASE
        },
        Case {
            name: "IpAddress out of range",
            key: Some(&[cond!(
                "Allow",
                r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.1"]}}"#
            )]),
            keys: &[("aws:SourceIp", &["192.0.2.1"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "IpAddress single address",
            key: Some(&[cond!(
                "Allow",
                r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.1"]}}"#
            )]),
            keys: &[("aws:SourceIp", &["127.0.0.1"])],
            ..BASE
        },
        Case {
            name: "NotIpAddress",
            key: Some(&[cond!(
                "Allow",
                r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#
            )]),
            keys: &[("aws:SourceIp", &["192.0.2.1"])],
            ..BASE
        },
        Case {
            name: "IpAddress absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#
            )]),
            want: NR,
            ..BASE
        },
        Case {
            name: "IpAddress IPv6",
            key: Some(&[cond!(
                "Allow",
                r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#
            )]),
            keys: &[("aws:SourceIp", &["2001:db8::1"])],
            ..BASE
        },
        // Multi-valued keys.
        Case {
            name: "ForAnyValue matches one",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}"#
            )]),
            keys: &[("kms:EncryptionContextKeys", &["Dept", "Proj"])],
            ..BASE
        },
        Case {
            name: "ForAnyValue absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}"#
            )]),
            want: NR,
            ..BASE
        },
        Case {
            name: "ForAllValues subset",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Proj"]}}"#
            )]),
            keys: &[("kms:EncryptionContextKeys", &["Dept"])],
            ..BASE
        },
        Case {
            name: "ForAllValues extra value",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Dept","Proj"]}}"#
            )]),
            keys: &[("kms:EncryptionContextKeys", &["Dept", "Other"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "ForAllValues absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":"Dept"}}"#
            )]),
            ..BASE
        },
        Case {
            name: "ForAnyValue:StringLike on aws:TagKeys",
            key: None,
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:TagResource","Resource":"*","Condition":{"ForAnyValue:StringLike":{"aws:TagKeys":"Proj*"}}}"#,
            ],
            action: "TagResource",
            resource: "*",
            keys: &[("aws:TagKeys", &["ProjA"])],
            ..BASE
        },
        Case {
            name: "ForAllValues:StringNotEquals",
            key: Some(&[cond!(
                "Allow",
                r#"{"ForAllValues:StringNotEquals":{"aws:TagKeys":"Owner"}}"#
            )]),
            keys: &[("aws:TagKeys", &["Env", "Owner"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "kms:ResourceAliases",
            key: None,
            identity: two(
                ALLOW_ALL,
                r#"{"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"ForAnyValue:StringEquals":{"kms:ResourceAliases":"alias/finance"}}}"#,
            ),
            action: "Decrypt",
            resource: "*",
            keys: &[("kms:ResourceAliases", &["alias/x", "alias/finance"])],
            want: DI,
            ..BASE
        },
        // Condition keys of each kind.
        Case {
            name: "kms:RequestAlias",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:RequestAlias":"alias/app"}}"#
            )]),
            keys: &[("kms:RequestAlias", &["alias/app"])],
            ..BASE
        },
        Case {
            name: "kms:ViaService absent",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#
            )]),
            want: NR,
            ..BASE
        },
        Case {
            name: "kms:KeySpec and kms:KeyUsage",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:KeySpec":"SYMMETRIC_DEFAULT","kms:KeyUsage":"ENCRYPT_DECRYPT"}}"#
            )]),
            keys: &[
                ("kms:KeySpec", &["SYMMETRIC_DEFAULT"]),
                ("kms:KeyUsage", &["ENCRYPT_DECRYPT"]),
            ],
            ..BASE
        },
        Case {
            name: "kms:KeyOrigin",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:KeyOrigin":"EXTERNAL_KEY_STORE"}}"#
            )]),
            keys: &[("kms:KeyOrigin", &["AWS_KMS"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "kms:CustomerMasterKeySpec on CreateKey",
            key: None,
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:CreateKey","Resource":"*","Condition":{"StringEquals":{"kms:CustomerMasterKeySpec":"SYMMETRIC_DEFAULT"}}}"#,
            ],
            action: "CreateKey",
            resource: "*",
            keys: &[("kms:CustomerMasterKeySpec", &["RSA_2048"])],
            want: NI,
            ..BASE
        },
        Case {
            name: "kms:SigningAlgorithm and kms:MessageType",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:SigningAlgorithm":"ECDSA_SHA_256","kms:MessageType":"RAW"}}"#
            )]),
            action: "Sign",
            keys: &[
                ("kms:SigningAlgorithm", &["ECDSA_SHA_256"]),
                ("kms:MessageType", &["RAW"]),
            ],
            ..BASE
        },
        Case {
            name: "kms:MacAlgorithm",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:MacAlgorithm":"HMAC_SHA_256"}}"#
            )]),
            action: "GenerateMac",
            keys: &[("kms:MacAlgorithm", &["HMAC_SHA_512"])],
            want: NR,
            ..BASE
        },
        Case {
            name: "kms:KeyAgreementAlgorithm",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"kms:KeyAgreementAlgorithm":"ECDH"}}"#
            )]),
            action: "DeriveSharedSecret",
            keys: &[("kms:KeyAgreementAlgorithm", &["ECDH"])],
            ..BASE
        },
        Case {
            name: "aws:ResourceTag",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringEquals":{"aws:ResourceTag/Env":"prod"}}"#
            )]),
            keys: &[("aws:ResourceTag/Env", &["prod"])],
            ..BASE
        },
        Case {
            name: "aws:RequestTag on CreateKey",
            key: None,
            identity: &[
                r#"{"Effect":"Allow","Action":"kms:CreateKey","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/Env":"prod"}}}"#,
            ],
            action: "CreateKey",
            resource: "*",
            keys: &[("aws:RequestTag/Env", &["prod"])],
            ..BASE
        },
        Case {
            name: "aws:PrincipalAccount cross-account",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"444455556666"}}}"#,
            ]),
            caller: CAROL,
            keys: &[("aws:PrincipalAccount", &[B])],
            ..BASE
        },
        Case {
            name: "kms:CallerAccount excludes",
            key: Some(&[
                r#"{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"444455556666"}}}"#,
            ]),
            keys: &[("kms:CallerAccount", &[A])],
            want: NR,
            ..BASE
        },
        Case {
            name: "unknown operator never holds",
            key: Some(&[cond!(
                "Allow",
                r#"{"StringMaybe":{"kms:CallerAccount":"111122223333"}}"#
            )]),
            keys: &[("kms:CallerAccount", &[A])],
            want: NR,
            ..BASE
        },
        Case {
            name: "there is no NullIfExists",
            key: Some(&[cond!(
                "Allow",
                r#"{"NullIfExists":{"kms:ViaService":"true"}}"#
            )]),
            want: NR,
            ..BASE
        },
        // Grants (only allow; a deny still wins).
        Case {
            name: "grant allows without a policy statement",
            key: Some(&[]),
            identity: &[],
            grants: &[(ALICE, "Decrypt")],
            ..BASE
        },
        Case {
            name: "grant for another operation",
            key: Some(&[]),
            identity: &[],
            grants: &[(ALICE, "Encrypt")],
            want: NR,
            ..BASE
        },
        Case {
            name: "deny beats a grant",
            key: Some(&[DENY_ALICE_DECRYPT]),
            grants: &[(ALICE, "Decrypt")],
            want: DR,
            ..BASE
        },
    ];
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let got = run(c);
            (got != c.want).then(|| format!("{}: got {got:?}, want {:?}", c.name, c.want))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
