//! CreateKey end to end: the real `kms-frontend` over HTTPS, driven by boto3 (and, where boto3
//! cannot send the request, by botocore's own SigV4 signer over urllib).
//!
//! Expectations come from the reference (`kms-api.md` §1-2 and the CreateKey API page), never
//! from the front end's code: enum orders, golden `KeyMetadata` field sets and algorithm lists
//! are written out here.
//!
//! - `create_key_error_table`: one row per error condition of the CreateKey page and of
//!   `kms-api.md` §2.2-2.3 (or the reason it cannot be produced here), then ListKeys shows
//!   that only the accepted rows left a key behind.
//! - `key_quota_is_enforced`: `[limits] max_keys_per_region` per account and Region.
//! - `key_metadata_golden_fields_per_spec_and_origin`: every KeySpec × allowed KeyUsage.
//! - `default_key_policy_and_lockout_use_the_caller`: the default policy and the lockout check.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend, TestPrincipal};

const ACCOUNT: &str = "111122223333";
const OTHER_ACCOUNT: &str = "444455556666";
const REGION: &str = "us-east-1";
const CHINA: &str = "cn-north-1";

/// `KeySpec` enum in the model's order (`kms-api.md` §2.1: the 13 `CustomerMasterKeySpec`
/// values, then ML_DSA_44/65/87, ECC_NIST_EDWARDS25519, ML_KEM_512/768/1024).
const KEY_SPECS: [&str; 20] = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];
/// The deprecated `CustomerMasterKeySpec` enum (CreateKey page, "Valid Values").
const CMK_SPECS: [&str; 13] = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
];
const KEY_USAGES: [&str; 5] = [
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
];
const ORIGINS: [&str; 4] = ["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

/// The model pattern of `Policy`, as AWS prints it in the constraint message.
const POLICY_PATTERN: &str = r"[\u0009\u000A\u000D\u0020-\u00FF]+";
/// The model pattern of `XksKeyId`.
const XKS_KEY_ID_PATTERN: &str = "^[a-zA-Z0-9-_.]+$";

// ---------------------------------------------------------------------------------------
// Python helpers shared by the scripts (appended after the fixture's prelude).

/// Clients, a raw-body capture, policy builders and a botocore-signed raw request.
const HELPERS: &str = r#"
import os, ssl, time, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

ACCOUNT = '111122223333'
ROOT = 'arn:aws:iam::111122223333:root'
ALICE = 'arn:aws:iam::111122223333:user/alice'
BOB = 'arn:aws:iam::111122223333:user/bob'
NO_RETRY = Config(retries={'max_attempts': 1})
RAW = {}

def _grab(http_response, **kw):
    RAW['last'] = http_response.content

def client(region=None, key=None, secret=None, validate=True):
    kw = {}
    if region:
        kw['region_name'] = region
    if key:
        kw['aws_access_key_id'] = key
        kw['aws_secret_access_key'] = secret
    c = boto3.client('kms', config=Config(retries={'max_attempts': 1}, parameter_validation=validate), **kw)
    c.meta.events.register('after-call.kms', _grab)
    return c

def call_on(c, op, **kw):
    """{'ok': <the response body exactly as sent on the wire>} or the error."""
    RAW.pop('last', None)
    try:
        getattr(c, op)(**kw)
        return {'ok': json.loads(RAW['last'])}
    except botocore.exceptions.ClientError as e:
        return {'error': e.response['Error'].get('Code'), 'message': e.response['Error'].get('Message'), 'status': e.response['ResponseMetadata'].get('HTTPStatusCode')}

def signed(target, body, region=None):
    """POST / with a body and X-Amz-Target that boto3 would never send, signed by botocore."""
    region = region or os.environ['AWS_REGION']
    url = os.environ['AWS_ENDPOINT_URL_KMS'] + '/'
    req = AWSRequest(method='POST', url=url, data=body, headers={'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': target})
    SigV4Auth(boto3.Session().get_credentials(), 'kms', region).add_auth(req)
    ctx = ssl.create_default_context(cafile=os.environ['AWS_CA_BUNDLE'])
    r = urllib.request.Request(url, data=body.encode(), headers=dict(req.headers.items()), method='POST')
    try:
        with urllib.request.urlopen(r, context=ctx) as resp:
            return {'ok': json.loads(resp.read())}
    except urllib.error.HTTPError as e:
        b = json.loads(e.read() or b'{}')
        return {'error': b.get('__type'), 'message': b.get('message', b.get('Message')), 'status': e.code}

def stmt(principal, action, effect='Allow', **extra):
    s = {'Effect': effect, 'Principal': {'AWS': principal}, 'Action': action, 'Resource': '*'}
    s.update(extra)
    return s

def policy(*statements):
    return json.dumps({'Version': '2012-10-17', 'Statement': list(statements)})

ADMIN = policy(stmt(ROOT, 'kms:*', Sid='EnableIAMUserPermissions'))

def admin_policy_of_bytes(n):
    """A valid key policy (kms:* for the account root) of exactly n UTF-8 bytes (long Sid)."""
    base = len(policy(stmt(ROOT, 'kms:*', Sid='')).encode())
    p = policy(stmt(ROOT, 'kms:*', Sid='S' * (n - base)))
    assert len(p.encode()) == n, len(p.encode())
    return p

def list_key_ids(c):
    ids, marker = [], None
    while True:
        kw = {'Limit': 1000}
        if marker:
            kw['Marker'] = marker
        r = c.list_keys(**kw)
        ids += [k['KeyId'] for k in r['Keys']]
        if not r.get('Truncated'):
            return ids
        marker = r['NextMarker']
"#;

fn script(body: &str) -> String {
    format!("{HELPERS}\n{body}")
}

fn principal<'a>(fe: &'a RunningFrontend, name: &str) -> &'a TestPrincipal {
    fe.fixture
        .principals
        .iter()
        .find(|p| p.arn.ends_with(&format!(":user/{name}")))
        .unwrap_or_else(|| panic!("fixture principal {name}"))
}

// ---------------------------------------------------------------------------------------
// Messages in AWS's formats (`kms-api.md` §1.3).

fn violation(value: &str, member: &str, constraint: &str) -> String {
    format!("Value '{value}' at '{member}' failed to satisfy constraint: {constraint}")
}

fn one_violation(value: &str, member: &str, constraint: &str) -> String {
    format!(
        "1 validation error detected: {}",
        violation(value, member, constraint)
    )
}

fn enum_constraint(allowed: &[&str]) -> String {
    format!(
        "Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    )
}

fn max_length(n: usize) -> String {
    format!("Member must have length less than or equal to {n}")
}

// ---------------------------------------------------------------------------------------
// The error table

/// How a row's request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// boto3 `create_key(**kwargs)`.
    Boto3,
    /// boto3 with `parameter_validation=False`: botocore then serializes values of the wrong
    /// JSON type as they are (e.g. `"Description": 5`), which its validator would refuse.
    Unvalidated,
    /// A raw `POST /` signed with botocore's `SigV4Auth` and sent with urllib; `kwargs` is
    /// `dict(target=..., body=...)`. For bodies and targets no SDK sends.
    Signed,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Boto3 => "boto3",
            Via::Unvalidated => "unvalidated",
            Via::Signed => "signed",
        }
    }
}

#[derive(Debug)]
enum Msg {
    /// The reference gives no exact text.
    Any,
    Exact(String),
    /// Starts with the first string and contains all the others.
    Parts(Vec<String>),
}

#[derive(Debug)]
enum Expect {
    /// HTTP 200 with a `KeyMetadata`; for a Region prefix check, the expected ARN prefix.
    Created(Option<String>),
    Error {
        code: &'static str,
        status: u16,
        message: Msg,
    },
    /// Not sent; the reason.
    NotProducible(&'static str),
}

#[derive(Debug)]
struct Row {
    name: String,
    region: &'static str,
    via: Via,
    /// A Python expression (evaluated with [`HELPERS`] in scope) giving the CreateKey kwargs.
    kwargs: String,
    expect: Expect,
}

fn row(name: impl Into<String>, kwargs: impl Into<String>, expect: Expect) -> Row {
    Row {
        name: name.into(),
        region: REGION,
        via: Via::Boto3,
        kwargs: kwargs.into(),
        expect,
    }
}

fn created() -> Expect {
    Expect::Created(None)
}

fn err(code: &'static str, message: Msg) -> Expect {
    Expect::Error {
        code,
        status: 400,
        message,
    }
}

fn validation(message: Msg) -> Expect {
    err("ValidationException", message)
}

fn exact(s: impl Into<String>) -> Msg {
    Msg::Exact(s.into())
}

fn not_producible(code: &'static str, reason: &'static str) -> Row {
    row(code, "", Expect::NotProducible(reason))
}

fn error_table() -> Vec<Row> {
    let xks = "Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId='cks-1234567890abcdef0'";
    let mut rows = vec![
        // ---- model constraints (ValidationException, AWS's message format)
        row(
            "KeySpec not in the enum",
            "dict(KeySpec='RSA_1024')",
            validation(exact(one_violation(
                "RSA_1024",
                "keySpec",
                &enum_constraint(&KEY_SPECS),
            ))),
        ),
        row(
            "KeySpec in the wrong case",
            "dict(KeySpec='symmetric_default')",
            validation(exact(one_violation(
                "symmetric_default",
                "keySpec",
                &enum_constraint(&KEY_SPECS),
            ))),
        ),
        row(
            "CustomerMasterKeySpec outside its (older) enum",
            "dict(CustomerMasterKeySpec='ML_DSA_44', KeyUsage='SIGN_VERIFY')",
            validation(exact(one_violation(
                "ML_DSA_44",
                "customerMasterKeySpec",
                &enum_constraint(&CMK_SPECS),
            ))),
        ),
        row(
            "KeyUsage not in the enum",
            "dict(KeyUsage='ENCRYPT')",
            validation(exact(one_violation(
                "ENCRYPT",
                "keyUsage",
                &enum_constraint(&KEY_USAGES),
            ))),
        ),
        row(
            "Origin not in the enum",
            "dict(Origin='AWS')",
            validation(exact(one_violation(
                "AWS",
                "origin",
                &enum_constraint(&ORIGINS),
            ))),
        ),
        row(
            "two violations at once",
            "dict(KeySpec='RSA_1024', Origin='AWS')",
            validation(Msg::Parts(vec![
                "2 validation errors detected: Value '".into(),
                violation("RSA_1024", "keySpec", &enum_constraint(&KEY_SPECS)),
                violation("AWS", "origin", &enum_constraint(&ORIGINS)),
                "]; Value '".into(),
            ])),
        ),
        row(
            "Description of 8193 characters",
            "dict(Description='d' * 8193)",
            validation(exact(one_violation(
                &"d".repeat(8193),
                "description",
                &max_length(8192),
            ))),
        ),
        row(
            "Description of 8192 characters is accepted",
            "dict(Description='d' * 8192)",
            created(),
        ),
        row(
            "Description outside Latin-1 is accepted (the model gives Description no pattern)",
            r"dict(Description='caf\u0113 \u65e5\u672c \U0001F511')",
            created(),
        ),
        // ---- Policy
        row(
            "Policy of 32769 bytes (over the 32 KB quota)",
            "dict(Policy=admin_policy_of_bytes(32769))",
            err("LimitExceededException", Msg::Any),
        ),
        row(
            "Policy of exactly 32768 bytes is accepted",
            "dict(Policy=admin_policy_of_bytes(32768))",
            created(),
        ),
        row(
            "Policy over 131072 characters (model length)",
            "dict(Policy=ADMIN + ' ' * (131073 - len(ADMIN)))",
            validation(Msg::Parts(vec![
                "1 validation error detected: Value '{".into(),
                format!(
                    "' at 'policy' failed to satisfy constraint: {}",
                    max_length(131_072)
                ),
            ])),
        ),
        row(
            "Policy with a character outside the pattern (U+0100)",
            r"dict(Policy=ADMIN.replace('EnableIAMUserPermissions', 'Enable\u0100'))",
            validation(Msg::Parts(vec![
                "1 validation error detected: Value '{".into(),
                format!(
                    "' at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern: {POLICY_PATTERN}"
                ),
            ])),
        ),
        row(
            "Policy that is not JSON",
            "dict(Policy='Version: 2012-10-17')",
            err("MalformedPolicyDocumentException", Msg::Any),
        ),
        row(
            "Policy without Statement",
            "dict(Policy=json.dumps({'Version': '2012-10-17'}))",
            err("MalformedPolicyDocumentException", Msg::Any),
        ),
        row(
            "Policy with Effect 'Permit'",
            "dict(Policy=policy(stmt(ROOT, 'kms:*', effect='Permit')))",
            err("MalformedPolicyDocumentException", Msg::Any),
        ),
        row(
            "Policy naming an unknown IAM user of the account",
            "dict(Policy=policy(stmt(ROOT, 'kms:*'), stmt('arn:aws:iam::111122223333:user/ghost', 'kms:Decrypt')))",
            err(
                "MalformedPolicyDocumentException",
                Msg::Parts(vec![String::new(), "invalid principals".into()]),
            ),
        ),
        row(
            "Policy locking the caller out (alice: kms:Decrypt only)",
            "dict(Policy=policy(stmt(ALICE, 'kms:Decrypt')))",
            err(
                "MalformedPolicyDocumentException",
                exact(
                    "The new key policy will not allow you to update the key policy in the future.",
                ),
            ),
        ),
        row(
            "the same lockout policy with BypassPolicyLockoutSafetyCheck=True is accepted",
            "dict(Policy=policy(stmt(ALICE, 'kms:Decrypt')), BypassPolicyLockoutSafetyCheck=True)",
            created(),
        ),
        row(
            "Policy granting kms:* to the account root is accepted",
            "dict(Policy=ADMIN)",
            created(),
        ),
        // ---- rules between parameters
        row(
            "KeySpec and CustomerMasterKeySpec both given",
            "dict(KeySpec='ECC_NIST_P256', CustomerMasterKeySpec='RSA_2048', KeyUsage='SIGN_VERIFY')",
            validation(Msg::Any),
        ),
        row(
            "non-symmetric KeySpec without KeyUsage (HMAC_256)",
            "dict(KeySpec='HMAC_256')",
            validation(exact(
                "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
            )),
        ),
        row(
            "incompatible pair RSA_2048 + KEY_AGREEMENT",
            "dict(KeySpec='RSA_2048', KeyUsage='KEY_AGREEMENT')",
            validation(exact(
                "KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048",
            )),
        ),
        row(
            "incompatible pair ECC_SECG_P256K1 + KEY_AGREEMENT",
            "dict(KeySpec='ECC_SECG_P256K1', KeyUsage='KEY_AGREEMENT')",
            validation(exact(
                "KeyUsage KEY_AGREEMENT is not compatible with KeySpec ECC_SECG_P256K1",
            )),
        ),
        row(
            "incompatible pair HMAC_256 + ENCRYPT_DECRYPT",
            "dict(KeySpec='HMAC_256', KeyUsage='ENCRYPT_DECRYPT')",
            validation(exact(
                "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec HMAC_256",
            )),
        ),
        row(
            "SM2 outside the China Regions (us-east-1)",
            "dict(KeySpec='SM2', KeyUsage='SIGN_VERIFY')",
            validation(Msg::Any),
        ),
        Row {
            region: CHINA,
            ..row(
                "SM2 in cn-north-1 is accepted (aws-cn ARN)",
                "dict(KeySpec='SM2', KeyUsage='SIGN_VERIFY')",
                Expect::Created(Some(format!("arn:aws-cn:kms:{CHINA}:{ACCOUNT}:key/"))),
            )
        },
        Row {
            region: CHINA,
            ..row(
                "ML_KEM_768 in cn-north-1",
                "dict(KeySpec='ML_KEM_768', KeyUsage='ENCAPSULATE_DECAPSULATE')",
                validation(Msg::Any),
            )
        },
        // ---- custom key stores and XksKeyId
        row(
            "XksKeyId with Origin AWS_KMS",
            "dict(Origin='AWS_KMS', XksKeyId='external-key-1')",
            validation(Msg::Any),
        ),
        row(
            "Origin EXTERNAL_KEY_STORE without XksKeyId",
            format!("dict({xks})"),
            validation(Msg::Any),
        ),
        row(
            "XksKeyId with a character outside the pattern",
            format!("dict({xks}, XksKeyId='key/1')"),
            validation(exact(one_violation(
                "key/1",
                "xksKeyId",
                &format!("Member must satisfy regular expression pattern: {XKS_KEY_ID_PATTERN}"),
            ))),
        ),
        row(
            "XksKeyId of 129 characters",
            format!("dict({xks}, XksKeyId='x' * 129)"),
            validation(exact(one_violation(
                &"x".repeat(129),
                "xksKeyId",
                &max_length(128),
            ))),
        ),
        row(
            "CustomKeyStoreId of 65 characters",
            "dict(Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId='c' * 65, XksKeyId='external-key-1')",
            validation(exact(one_violation(
                &"c".repeat(65),
                "customKeyStoreId",
                &max_length(64),
            ))),
        ),
        row(
            "MultiRegion with Origin EXTERNAL_KEY_STORE",
            format!("dict({xks}, XksKeyId='external-key-1', MultiRegion=True)"),
            err("UnsupportedOperationException", Msg::Any),
        ),
        row(
            "unknown CustomKeyStoreId (EXTERNAL_KEY_STORE)",
            format!("dict({xks}, XksKeyId='external-key-1')"),
            err("CustomKeyStoreNotFoundException", Msg::Any),
        ),
        row(
            "unknown CustomKeyStoreId (AWS_CLOUDHSM)",
            "dict(Origin='AWS_CLOUDHSM', CustomKeyStoreId='cks-1234567890abcdef0')",
            err("CustomKeyStoreNotFoundException", Msg::Any),
        ),
        // ---- Tags
        row(
            "51 tags",
            "dict(Tags=[{'TagKey': 'k%d' % i, 'TagValue': 'v'} for i in range(51)])",
            err("TagException", exact("Too many tags")),
        ),
        row(
            "50 tags are accepted",
            "dict(Tags=[{'TagKey': 'k%d' % i, 'TagValue': 'v'} for i in range(50)])",
            created(),
        ),
        row(
            "duplicate tag keys",
            "dict(Tags=[{'TagKey': 'team', 'TagValue': 'a'}, {'TagKey': 'team', 'TagValue': 'b'}])",
            err("TagException", exact("Duplicate tag keys")),
        ),
        row(
            "tag key aws:x",
            "dict(Tags=[{'TagKey': 'aws:x', 'TagValue': 'v'}])",
            err(
                "TagException",
                exact("Tags beginning with aws: are reserved"),
            ),
        ),
        row(
            "tag key AWS:x",
            "dict(Tags=[{'TagKey': 'AWS:x', 'TagValue': 'v'}])",
            err(
                "TagException",
                exact("Tags beginning with aws: are reserved"),
            ),
        ),
        row(
            "TagKey of 129 characters",
            "dict(Tags=[{'TagKey': 'k' * 129, 'TagValue': 'v'}])",
            validation(exact(one_violation(
                &"k".repeat(129),
                "tags.1.member.tagKey",
                &max_length(128),
            ))),
        ),
        row(
            "TagValue of 257 characters",
            "dict(Tags=[{'TagKey': 'k', 'TagValue': 'v' * 257}])",
            validation(exact(one_violation(
                &"v".repeat(257),
                "tags.1.member.tagValue",
                &max_length(256),
            ))),
        ),
        row(
            "empty TagValue is accepted",
            "dict(Tags=[{'TagKey': 'empty', 'TagValue': ''}])",
            created(),
        ),
        row(
            "non-ASCII tag key ('abc\u{e9}', 5 UTF-8 bytes) is accepted",
            r"dict(Tags=[{'TagKey': 'abc\u00e9', 'TagValue': 'v'}])",
            created(),
        ),
        // ---- the wire
        Row {
            via: Via::Unvalidated,
            ..row(
                "Description of the wrong JSON type (a number)",
                "dict(Description=5)",
                err("SerializationException", Msg::Any),
            )
        },
        Row {
            via: Via::Unvalidated,
            ..row(
                "MultiRegion of the wrong JSON type (a string)",
                "dict(MultiRegion='true')",
                err("SerializationException", Msg::Any),
            )
        },
        Row {
            via: Via::Signed,
            ..row(
                "body that is not JSON",
                "dict(target='TrentService.CreateKey', body='{\"Description\": ')",
                err("SerializationException", Msg::Any),
            )
        },
        Row {
            via: Via::Signed,
            ..row(
                "unknown operation in X-Amz-Target",
                "dict(target='TrentService.CreateKeys', body='{}')",
                err("UnknownOperationException", Msg::Any),
            )
        },
        // ---- errors of the list that cannot be produced here
        not_producible(
            "LimitExceededException (key quota)",
            "needs a fixture with a small quota: provoked in key_quota_is_enforced",
        ),
        not_producible(
            "CustomKeyStoreInvalidStateException",
            "needs an existing custom key store that is not CONNECTED; no custom key store can exist yet (external key stores arrive with issue 5, CloudHSM clusters never)",
        ),
        not_producible(
            "CloudHsmClusterInvalidConfigurationException",
            "no CloudHSM clusters can exist here",
        ),
        not_producible(
            "DependencyTimeoutException",
            "no internal dependency can time out on demand in CreateKey for AWS_KMS keys",
        ),
        not_producible(
            "KMSInternalException",
            "no internal dependency can fail on demand in CreateKey for AWS_KMS keys",
        ),
        not_producible(
            "InvalidArnException",
            "CreateKey has no ARN-valued parameter; ARNs appear only inside the Policy, where invalid or unknown principals are MalformedPolicyDocumentException (kms-api.md 2.2, row 'Policy naming an unknown IAM user'); no source shows a CreateKey request AWS answers with InvalidArnException",
        ),
        not_producible(
            "XksKeyInvalidConfigurationException",
            "external key stores arrive with issue 5; today EXTERNAL_KEY_STORE + any CustomKeyStoreId is CustomKeyStoreNotFoundException",
        ),
        not_producible(
            "XksKeyAlreadyInUseException",
            "external key stores arrive with issue 5; today EXTERNAL_KEY_STORE + any CustomKeyStoreId is CustomKeyStoreNotFoundException",
        ),
        not_producible(
            "XksKeyNotFoundException",
            "external key stores arrive with issue 5; today EXTERNAL_KEY_STORE + any CustomKeyStoreId is CustomKeyStoreNotFoundException",
        ),
    ];
    for r in &mut rows {
        if r.kwargs.is_empty() {
            r.region = "-";
        }
    }
    rows
}

/// Sends every producible row in one Python process; returns the results in row order and
/// the key ids ListKeys shows afterwards per Region.
fn run_rows(fe: &RunningFrontend, rows: &[&Row]) -> (Vec<Value>, BTreeMap<String, Vec<String>>) {
    let spec: Vec<Value> = rows
        .iter()
        .map(|r| json!({"region": r.region, "via": r.via.as_str(), "kwargs": r.kwargs}))
        .collect();
    let regions: BTreeSet<&str> = rows.iter().map(|r| r.region).collect();
    let body = r#"
ROWS = json.loads(sys.argv[1])
REGIONS = json.loads(sys.argv[2])
clients = {r: client(r) for r in REGIONS}
unvalidated = {r: client(r, validate=False) for r in REGIONS}
results = []
for row in ROWS:
    kw = eval(row['kwargs'])
    if row['via'] == 'signed':
        results.append(signed(kw['target'], kw['body'], row['region']))
    elif row['via'] == 'unvalidated':
        results.append(call_on(unvalidated[row['region']], 'create_key', **kw))
    else:
        results.append(call_on(clients[row['region']], 'create_key', **kw))
listed = {r: list_key_ids(clients[r]) for r in REGIONS}
print(json.dumps({'results': results, 'listed': listed}))
"#;
    let spec = Value::Array(spec).to_string();
    let regions = json!(regions).to_string();
    let out = fe.boto3(fe.alice(), REGION, &script(body), &[&spec, &regions]);
    let results = out["results"].as_array().cloned().unwrap_or_default();
    let listed = out["listed"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let ids = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    (k.clone(), ids)
                })
                .collect()
        })
        .unwrap_or_default();
    (results, listed)
}

fn short(s: &str) -> String {
    if s.chars().count() > 160 {
        let head: String = s.chars().take(157).collect();
        format!("{head}...")
    } else {
        s.to_owned()
    }
}

/// Compares one result with its row's expectation; `None` when it matches.
fn check_row(row: &Row, got: &Value) -> Option<String> {
    let describe = || {
        if let Some(m) = got.get("ok") {
            format!("200 KeyMetadata.Arn={}", m["KeyMetadata"]["Arn"])
        } else {
            format!(
                "{} {} {:?}",
                got["status"],
                got["error"].as_str().unwrap_or("?"),
                short(got["message"].as_str().unwrap_or(""))
            )
        }
    };
    match &row.expect {
        Expect::NotProducible(_) => None,
        Expect::Created(prefix) => {
            let Some(md) = got.get("ok").map(|o| &o["KeyMetadata"]) else {
                return Some(format!("expected success, got {}", describe()));
            };
            let arn = md["Arn"].as_str().unwrap_or_default();
            let key_id = md["KeyId"].as_str().unwrap_or_default();
            if key_id.is_empty() || !arn.ends_with(&format!(":key/{key_id}")) {
                return Some(format!("a success without a proper KeyMetadata: {md}"));
            }
            match prefix {
                Some(p) if !arn.starts_with(p.as_str()) => {
                    Some(format!("expected an ARN starting {p}, got {arn}"))
                }
                _ => None,
            }
        }
        Expect::Error {
            code,
            status,
            message,
        } => {
            let got_code = got["error"].as_str().unwrap_or("(success)");
            let got_status = got["status"].as_u64().unwrap_or(200);
            let got_message = got["message"].as_str().unwrap_or("");
            if got_code != *code || got_status != u64::from(*status) {
                return Some(format!("expected {status} {code}, got {}", describe()));
            }
            let ok = match message {
                Msg::Any => true,
                Msg::Exact(m) => got_message == m,
                Msg::Parts(parts) => {
                    parts
                        .first()
                        .is_none_or(|p| got_message.starts_with(p.as_str()))
                        && parts.iter().all(|p| got_message.contains(p.as_str()))
                }
            };
            (!ok).then(|| {
                format!(
                    "message mismatch:\n      expected {}\n      got      {:?}",
                    short(&format!("{message:?}")),
                    short(got_message)
                )
            })
        }
    }
}

#[test]
fn create_key_error_table() {
    let fe = FrontendFixture::new().start();
    let rows = error_table();
    let sent: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.expect, Expect::NotProducible(_)))
        .collect();
    let (results, listed) = run_rows(&fe, &sent);
    assert_eq!(results.len(), sent.len(), "one result per row");

    let mut failures = Vec::new();
    let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut report = String::from("CreateKey error table:\n");
    let mut results_iter = results.iter();
    for r in &rows {
        let expected = match &r.expect {
            Expect::Created(_) => "200 (key created)".to_owned(),
            Expect::Error { code, status, .. } => format!("{status} {code}"),
            Expect::NotProducible(why) => format!("not producible here: {why}"),
        };
        if matches!(r.expect, Expect::NotProducible(_)) {
            report.push_str(&format!("  [n/a ] {}: {expected}\n", r.name));
            continue;
        }
        let got = results_iter.next().cloned().unwrap_or(Value::Null);
        if let Some(md) = got.get("ok").map(|o| &o["KeyMetadata"])
            && let Some(id) = md["KeyId"].as_str()
        {
            created
                .entry(r.region.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
        let verdict = check_row(r, &got);
        report.push_str(&format!(
            "  [{}] {} ({}, {}): expect {expected}\n",
            if verdict.is_none() { " ok " } else { "FAIL" },
            r.name,
            r.region,
            r.via.as_str()
        ));
        if let Some(why) = verdict {
            failures.push(format!("{}: {why}", r.name));
        }
    }
    println!("{report}");

    // A rejected CreateKey leaves no trace: each Region lists exactly the accepted rows' keys.
    for (region, ids) in &listed {
        let listed: BTreeSet<String> = ids.iter().cloned().collect();
        let expected = created.get(region).cloned().unwrap_or_default();
        if listed != expected {
            failures.push(format!(
                "ListKeys in {region}: listed {listed:?}, but the accepted rows created {expected:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed (the whole table is printed above):\n  - {}",
        failures.len(),
        sent.len() + listed.len(),
        failures.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------
// Quota

#[test]
fn key_quota_is_enforced() {
    let mut fixture = FrontendFixture::new();
    fixture.extra_toml = "[limits]\nmax_keys_per_region = 3\n".into();
    let fe = fixture.start();
    let bob = principal(&fe, "bob");
    let carol = principal(&fe, "carol");
    assert_eq!(carol.account, OTHER_ACCOUNT);
    let body = r#"
alice = client()
bob = client(key=sys.argv[1], secret=sys.argv[2])
carol = client(key=sys.argv[3], secret=sys.argv[4])
alice_west = client('us-west-2')
out = {
    'alice_first_three': [call_on(alice, 'create_key') for _ in range(3)],
    'alice_fourth': call_on(alice, 'create_key'),
    'bob_same_account_and_region': call_on(bob, 'create_key', KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC'),
    'alice_other_region': call_on(alice_west, 'create_key'),
    'carol_other_account': [call_on(carol, 'create_key') for _ in range(3)],
    'carol_fourth': call_on(carol, 'create_key'),
}
out['alice_listed'] = list_key_ids(alice)
out['alice_west_listed'] = list_key_ids(alice_west)
out['carol_listed'] = list_key_ids(carol)
print(json.dumps(out))
"#;
    let out = fe.boto3(
        fe.alice(),
        REGION,
        &script(body),
        &[
            &bob.access_key_id,
            &bob.secret,
            &carol.access_key_id,
            &carol.secret,
        ],
    );
    let key_id = |v: &Value| -> String {
        v["ok"]["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a created key, got {v}"))
            .to_owned()
    };
    let limit = |v: &Value, who: &str| {
        assert_eq!(v["error"], "LimitExceededException", "{who}: {v}");
        assert_eq!(v["status"], 400, "{who}: {v}");
    };
    let ids = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let alice_keys: BTreeSet<String> = out["alice_first_three"]
        .as_array()
        .expect("three results")
        .iter()
        .map(key_id)
        .collect();
    assert_eq!(alice_keys.len(), 3);
    limit(&out["alice_fourth"], "alice's 4th key in us-east-1");
    limit(
        &out["bob_same_account_and_region"],
        "bob, same account and Region",
    );
    assert_eq!(
        ids(&out["alice_listed"]),
        alice_keys,
        "refused keys left no trace"
    );

    let west = key_id(&out["alice_other_region"]);
    assert!(
        out["alice_other_region"]["ok"]["KeyMetadata"]["Arn"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("arn:aws:kms:us-west-2:{ACCOUNT}:key/"))),
        "{}",
        out["alice_other_region"]
    );
    assert_eq!(ids(&out["alice_west_listed"]), BTreeSet::from([west]));

    let carol_keys: BTreeSet<String> = out["carol_other_account"]
        .as_array()
        .expect("three results")
        .iter()
        .map(key_id)
        .collect();
    assert_eq!(carol_keys.len(), 3);
    limit(&out["carol_fourth"], "carol's 4th key");
    assert_eq!(ids(&out["carol_listed"]), carol_keys);
}

// ---------------------------------------------------------------------------------------
// KeyMetadata

/// The KeyMetadata member names right after CreateKey, from `kms-api.md` §2.4: always the
/// thirteen below; the algorithm list of the key usage; `CurrentKeyMaterialId` only for a
/// symmetric key with KMS material (an EXTERNAL key has none before import; HMAC and
/// asymmetric keys never); `MultiRegionConfiguration` only for a multi-Region key. Never
/// DeletionDate, PendingDeletionWindowInDays, ValidTo, ExpirationModel (EXTERNAL before
/// import), CustomKeyStoreId, CloudHsmClusterId or XksKeyConfiguration for these origins.
fn golden_fields(spec: &str, usage: &str, origin: &str, multi_region: bool) -> BTreeSet<String> {
    let mut fields: BTreeSet<String> = [
        "AWSAccountId",
        "Arn",
        "CreationDate",
        "CustomerMasterKeySpec",
        "Description",
        "Enabled",
        "KeyId",
        "KeyManager",
        "KeySpec",
        "KeyState",
        "KeyUsage",
        "MultiRegion",
        "Origin",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    fields.insert(algorithm_field(usage).to_owned());
    if spec == "SYMMETRIC_DEFAULT" && origin == "AWS_KMS" {
        fields.insert("CurrentKeyMaterialId".into());
    }
    if multi_region {
        fields.insert("MultiRegionConfiguration".into());
    }
    fields
}

fn algorithm_field(usage: &str) -> &'static str {
    match usage {
        "ENCRYPT_DECRYPT" => "EncryptionAlgorithms",
        "SIGN_VERIFY" => "SigningAlgorithms",
        "GENERATE_VERIFY_MAC" => "MacAlgorithms",
        "KEY_AGREEMENT" => "KeyAgreementAlgorithms",
        "ENCAPSULATE_DECAPSULATE" => "EncapsulationAlgorithms",
        other => panic!("unknown usage {other}"),
    }
}

/// The algorithm list per KeySpec/KeyUsage (`kms-api.md` §2.4 table). The second value is
/// false where the table says the order is UNVERIFIED (compared as a set then).
fn algorithms(spec: &str, usage: &str) -> (Vec<&'static str>, bool) {
    let ordered = |v: Vec<&'static str>| (v, true);
    match (spec, usage) {
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT") => ordered(vec!["SYMMETRIC_DEFAULT"]),
        ("HMAC_224", _) => ordered(vec!["HMAC_SHA_224"]),
        ("HMAC_256", _) => ordered(vec!["HMAC_SHA_256"]),
        ("HMAC_384", _) => ordered(vec!["HMAC_SHA_384"]),
        ("HMAC_512", _) => ordered(vec!["HMAC_SHA_512"]),
        (s, "ENCRYPT_DECRYPT") if s.starts_with("RSA_") => {
            ordered(vec!["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
        }
        (s, "SIGN_VERIFY") if s.starts_with("RSA_") => ordered(vec![
            "RSASSA_PKCS1_V1_5_SHA_256",
            "RSASSA_PKCS1_V1_5_SHA_384",
            "RSASSA_PKCS1_V1_5_SHA_512",
            "RSASSA_PSS_SHA_256",
            "RSASSA_PSS_SHA_384",
            "RSASSA_PSS_SHA_512",
        ]),
        ("ECC_NIST_P256" | "ECC_SECG_P256K1", "SIGN_VERIFY") => ordered(vec!["ECDSA_SHA_256"]),
        ("ECC_NIST_P384", "SIGN_VERIFY") => ordered(vec!["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", "SIGN_VERIFY") => ordered(vec!["ECDSA_SHA_512"]),
        (_, "KEY_AGREEMENT") => ordered(vec!["ECDH"]),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY") => {
            (vec!["ED25519_SHA_512", "ED25519_PH_SHA_512"], false)
        }
        (s, "SIGN_VERIFY") if s.starts_with("ML_DSA_") => ordered(vec!["ML_DSA_SHAKE_256"]),
        (s, "ENCAPSULATE_DECAPSULATE") if s.starts_with("ML_KEM_") => ordered(vec!["ML_KEM"]),
        ("SM2", "ENCRYPT_DECRYPT") => ordered(vec!["SM2PKE"]),
        ("SM2", "SIGN_VERIFY") => ordered(vec!["SM2DSA"]),
        other => panic!("no algorithm list for {other:?}"),
    }
}

/// Every KeySpec with every allowed KeyUsage (`kms-api.md` §2.3).
fn allowed_usages(spec: &str) -> &'static [&'static str] {
    match spec {
        "SYMMETRIC_DEFAULT" => &["ENCRYPT_DECRYPT"],
        s if s.starts_with("HMAC_") => &["GENERATE_VERIFY_MAC"],
        s if s.starts_with("RSA_") => &["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
        "ECC_NIST_P256" | "ECC_NIST_P384" | "ECC_NIST_P521" => &["SIGN_VERIFY", "KEY_AGREEMENT"],
        "ECC_SECG_P256K1" | "ECC_NIST_EDWARDS25519" => &["SIGN_VERIFY"],
        s if s.starts_with("ML_DSA_") => &["SIGN_VERIFY"],
        s if s.starts_with("ML_KEM_") => &["ENCAPSULATE_DECAPSULATE"],
        "SM2" => &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "KEY_AGREEMENT"],
        other => panic!("unknown spec {other}"),
    }
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

fn is_mrk_id(s: &str) -> bool {
    s.strip_prefix("mrk-").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

#[derive(Debug, Clone)]
struct Case {
    region: &'static str,
    spec: &'static str,
    usage: &'static str,
    origin: &'static str,
    multi_region: bool,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for spec in KEY_SPECS {
        for usage in allowed_usages(spec) {
            cases.push(Case {
                region: if spec == "SM2" { CHINA } else { REGION },
                spec,
                usage,
                origin: "AWS_KMS",
                multi_region: false,
            });
        }
    }
    for (spec, usage) in [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
        ("RSA_2048", "SIGN_VERIFY"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
    ] {
        cases.push(Case {
            region: REGION,
            spec,
            usage,
            origin: "EXTERNAL",
            multi_region: false,
        });
    }
    for (spec, usage, origin) in [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AWS_KMS"),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "EXTERNAL"),
    ] {
        cases.push(Case {
            region: REGION,
            spec,
            usage,
            origin,
            multi_region: true,
        });
    }
    cases
}

fn check_metadata(c: &Case, md: &Value, t0: f64, t1: f64) -> Vec<String> {
    let mut problems = Vec::new();
    let fields: BTreeSet<String> = md
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let golden = golden_fields(c.spec, c.usage, c.origin, c.multi_region);
    if fields != golden {
        let extra: Vec<_> = fields.difference(&golden).collect();
        let missing: Vec<_> = golden.difference(&fields).collect();
        problems.push(format!(
            "field set: unexpected {extra:?}, missing {missing:?}"
        ));
    }
    let mut expect = |what: &str, ok: bool, got: &Value| {
        if !ok {
            problems.push(format!("{what}: got {got}"));
        }
    };
    let external = c.origin == "EXTERNAL";
    expect(
        "AWSAccountId",
        md["AWSAccountId"] == ACCOUNT,
        &md["AWSAccountId"],
    );
    expect("KeySpec", md["KeySpec"] == c.spec, &md["KeySpec"]);
    expect(
        "CustomerMasterKeySpec == KeySpec",
        md["CustomerMasterKeySpec"] == c.spec,
        &md["CustomerMasterKeySpec"],
    );
    expect("KeyUsage", md["KeyUsage"] == c.usage, &md["KeyUsage"]);
    expect("Origin", md["Origin"] == c.origin, &md["Origin"]);
    expect(
        "KeyManager",
        md["KeyManager"] == "CUSTOMER",
        &md["KeyManager"],
    );
    expect("Description", md["Description"] == "", &md["Description"]);
    let (state, enabled) = if external {
        ("PendingImport", false)
    } else {
        ("Enabled", true)
    };
    expect("KeyState", md["KeyState"] == state, &md["KeyState"]);
    expect("Enabled", md["Enabled"] == enabled, &md["Enabled"]);
    expect(
        "MultiRegion",
        md["MultiRegion"] == c.multi_region,
        &md["MultiRegion"],
    );

    let (algs, ordered) = algorithms(c.spec, c.usage);
    let got_algs: Vec<&str> = md[algorithm_field(c.usage)]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let algs_ok = if ordered {
        got_algs == algs
    } else {
        got_algs.len() == algs.len()
            && got_algs.iter().collect::<BTreeSet<_>>() == algs.iter().collect::<BTreeSet<_>>()
    };
    expect(
        algorithm_field(c.usage),
        algs_ok,
        &md[algorithm_field(c.usage)],
    );
    if md.get("CurrentKeyMaterialId").is_some() {
        let id = md["CurrentKeyMaterialId"].as_str().unwrap_or_default();
        expect(
            "CurrentKeyMaterialId is 64 hex characters",
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            &md["CurrentKeyMaterialId"],
        );
    }

    let key_id = md["KeyId"].as_str().unwrap_or_default();
    let id_ok = if c.multi_region {
        is_mrk_id(key_id)
    } else {
        is_uuid_v4(key_id)
    };
    expect(
        if c.multi_region {
            "KeyId is mrk- + 32 hex"
        } else {
            "KeyId is a UUID v4"
        },
        id_ok,
        &md["KeyId"],
    );
    let partition = if c.region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    };
    let arn = format!("arn:{partition}:kms:{}:{ACCOUNT}:key/{key_id}", c.region);
    expect("Arn", md["Arn"] == arn.as_str(), &md["Arn"]);
    if c.multi_region {
        let mrc = json!({
            "MultiRegionKeyType": "PRIMARY",
            "PrimaryKey": {"Arn": arn, "Region": c.region},
            "ReplicaKeys": [],
        });
        expect(
            "MultiRegionConfiguration",
            md["MultiRegionConfiguration"] == mrc,
            &md["MultiRegionConfiguration"],
        );
    }
    let date_ok = md["CreationDate"]
        .as_f64()
        .is_some_and(|d| d >= t0 - 5.0 && d <= t1 + 5.0);
    expect(
        "CreationDate is a JSON number close to now",
        md["CreationDate"].is_number() && date_ok,
        &md["CreationDate"],
    );
    problems
}

#[test]
fn key_metadata_golden_fields_per_spec_and_origin() {
    let fe = FrontendFixture::new().start();
    let cases = cases();
    // 25 spec/usage pairs outside China + 3 SM2 pairs, 4 EXTERNAL keys, 2 multi-Region keys.
    assert_eq!(cases.len(), 28 + 4 + 2);
    let spec: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"region": c.region, "KeySpec": c.spec, "KeyUsage": c.usage,
                   "Origin": c.origin, "MultiRegion": c.multi_region})
        })
        .collect();
    let body = r#"
clients = {}
out = []
for c in json.loads(sys.argv[1]):
    k = clients.setdefault(c['region'], client(c['region']))
    t0 = time.time()
    created = call_on(k, 'create_key', KeySpec=c['KeySpec'], KeyUsage=c['KeyUsage'], Origin=c['Origin'], MultiRegion=c['MultiRegion'])
    t1 = time.time()
    described = None
    if 'ok' in created:
        described = call_on(k, 'describe_key', KeyId=created['ok']['KeyMetadata']['KeyId'])
    out.append({'t0': t0, 't1': t1, 'created': created, 'described': described})
print(json.dumps(out))
"#;
    let out = fe.boto3(
        fe.alice(),
        REGION,
        &script(body),
        &[&Value::Array(spec).to_string()],
    );
    let results = out.as_array().expect("a list");
    assert_eq!(results.len(), cases.len());
    let mut failures = Vec::new();
    for (c, r) in cases.iter().zip(results) {
        let label = format!(
            "{} {} {} {}{}",
            c.region,
            c.spec,
            c.usage,
            c.origin,
            if c.multi_region { " multi-Region" } else { "" }
        );
        let Some(md) = r["created"].get("ok").map(|o| &o["KeyMetadata"]) else {
            failures.push(format!("{label}: CreateKey failed: {}", r["created"]));
            continue;
        };
        let (t0, t1) = (
            r["t0"].as_f64().unwrap_or_default(),
            r["t1"].as_f64().unwrap_or_default(),
        );
        for p in check_metadata(c, md, t0, t1) {
            failures.push(format!("{label}: {p}"));
        }
        if r["described"]["ok"]["KeyMetadata"] != *md {
            failures.push(format!(
                "{label}: DescribeKey returned another KeyMetadata:\n    CreateKey:   {md}\n    DescribeKey: {}",
                r["described"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n  - {}",
        failures.len(),
        failures.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------
// Default policy and the lockout check

#[test]
fn default_key_policy_and_lockout_use_the_caller() {
    let fe = FrontendFixture::new().start();
    let bob = principal(&fe, "bob");
    let body = r#"
alice = client()
alice_cn = client('cn-north-1')
bob = client(key=sys.argv[1], secret=sys.argv[2])
def default_policy(c):
    created = call_on(c, 'create_key')
    key_id = created['ok']['KeyMetadata']['KeyId']
    return call_on(c, 'get_key_policy', KeyId=key_id, PolicyName='default')
# PutKeyPolicy for bob only; alice may merely use the key.
bob_only = policy(stmt(BOB, ['kms:PutKeyPolicy', 'kms:GetKeyPolicy', 'kms:DescribeKey'], Sid='BobAdministers'),
                  stmt(ALICE, ['kms:Encrypt', 'kms:Decrypt'], Sid='AliceUses'))
by_bob = call_on(bob, 'create_key', Policy=bob_only)
bob_policy = None
if 'ok' in by_bob:
    bob_policy = call_on(bob, 'get_key_policy', KeyId=by_bob['ok']['KeyMetadata']['KeyId'], PolicyName='default')
print(json.dumps({
    'default': default_policy(alice),
    'default_cn': default_policy(alice_cn),
    'bob_only': bob_only,
    'by_bob': by_bob,
    'bob_policy': bob_policy,
    'by_alice': call_on(alice, 'create_key', Policy=bob_only),
    'alice_listed': list_key_ids(alice),
}))
"#;
    let out = fe.boto3(
        fe.alice(),
        REGION,
        &script(body),
        &[&bob.access_key_id, &bob.secret],
    );

    for (field, partition) in [("default", "aws"), ("default_cn", "aws-cn")] {
        let text = out[field]["ok"]["Policy"]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: GetKeyPolicy failed: {}", out[field]));
        let policy: Value = serde_json::from_str(text).expect("the default policy is JSON");
        let statements = match &policy["Statement"] {
            Value::Array(s) => s.clone(),
            one => vec![one.clone()],
        };
        let root = format!("arn:{partition}:iam::{ACCOUNT}:root");
        let grants_root = statements.iter().any(|s| {
            s["Effect"] == "Allow"
                && s["Principal"]["AWS"] == root.as_str()
                && s["Action"] == "kms:*"
                && s["Resource"] == "*"
        });
        assert!(grants_root, "{field}: no kms:* for {root}:\n{text}");
        assert_eq!(
            statements[0]["Sid"], "Enable IAM User Permissions",
            "{field}: {text}"
        );
        assert!(
            !statements.iter().any(|s| s["Effect"] == "Deny"),
            "{field}: {text}"
        );
    }

    let by_bob = &out["by_bob"]["ok"]["KeyMetadata"];
    assert!(
        by_bob["KeyId"].is_string(),
        "bob may create a key whose policy lets him call PutKeyPolicy: {}",
        out["by_bob"]
    );
    assert_eq!(
        out["bob_policy"]["ok"]["Policy"], out["bob_only"],
        "GetKeyPolicy returns the policy as given"
    );

    let by_alice = &out["by_alice"];
    assert_eq!(
        by_alice["error"], "MalformedPolicyDocumentException",
        "{by_alice}"
    );
    assert_eq!(by_alice["status"], 400, "{by_alice}");
    assert_eq!(
        by_alice["message"],
        "The new key policy will not allow you to update the key policy in the future."
    );
    // alice's refused key left nothing; her default key and bob's key are listed.
    let listed: BTreeSet<&str> = out["alice_listed"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(by_bob["KeyId"].as_str().unwrap_or_default()));
}
