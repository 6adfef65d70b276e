//! Asymmetric keys end to end: GetPublicKey, Sign, Verify, GenerateDataKeyPair(+WithoutPlaintext)
//! against the real `kms-frontend` over HTTPS, driven by boto3 and the AWS CLI v1.
//!
//! Every signature the front end makes is verified outside it with the public key from
//! GetPublicKey, by implementations the front end does not use: Python `cryptography`
//! (OpenSSL 4 inside the wheel: RSA, ECDSA, Ed25519, ML-DSA), PyCryptodome (Ed25519ph) and the
//! `openssl` command (SM2 with the distinguishing ID `1234567812345678`). The expected
//! algorithm lists and message-type rules are written out here from the reference
//! (`kms-keys-in-use.md` §2, the Sign/Verify documentation of the botocore model), not taken
//! from the front end.
//!
//! - `sign_verify_rsa_ecc_ed25519`, `sign_verify_ml_dsa`, `sign_verify_sm2_in_china`: every
//!   spec × every one of the 13 algorithms × RAW/DIGEST/EXTERNAL_MU: allowed combinations sign,
//!   verify in KMS and outside, a changed message is `KMSInvalidSignatureException`; the others
//!   answer the documented error.
//! - `sign_verify_errors_states_and_key_ids`: limits, usage, key states, aliases/ARNs, DryRun,
//!   GrantTokens, GetPublicKey of every usage.
//! - `data_key_pairs_for_every_spec`: GenerateDataKeyPair(+WithoutPlaintext), private key
//!   decrypted through KMS matches the public key outside.
//! - `aws_cli_v1_sign_verify_get_public_key_and_data_key_pair`: the `fileb://` idiom.

use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend};

const REGION: &str = "us-east-1";
const CHINA: &str = "cn-north-1";

/// The `SigningAlgorithmSpec` enum of the model, in its order.
const ALGORITHMS: [&str; 13] = [
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];

const RSA: &[&str] = &[
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
];

/// The `SigningAlgorithms` of each SIGN_VERIFY spec (`kms-api.md` §2.4).
fn allowed(spec: &str) -> &'static [&'static str] {
    match spec {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => RSA,
        "ECC_NIST_P256" | "ECC_SECG_P256K1" => &["ECDSA_SHA_256"],
        "ECC_NIST_P384" => &["ECDSA_SHA_384"],
        "ECC_NIST_P521" => &["ECDSA_SHA_512"],
        "ECC_NIST_EDWARDS25519" => &["ED25519_SHA_512", "ED25519_PH_SHA_512"],
        "ML_DSA_44" | "ML_DSA_65" | "ML_DSA_87" => &["ML_DSA_SHAKE_256"],
        "SM2" => &["SM2DSA"],
        other => panic!("no signing list for {other}"),
    }
}

/// What Sign answers for an algorithm and message type (with a message of the right
/// length): `ok` or the error name (kms-keys-in-use.md §2 and the model's MessageType docs).
fn expected(spec: &str, alg: &str, message_type: &str) -> &'static str {
    if !allowed(spec).contains(&alg) {
        return "InvalidKeyUsageException";
    }
    let ok = match message_type {
        "RAW" => alg != "ED25519_PH_SHA_512",
        "DIGEST" => !matches!(alg, "ED25519_SHA_512" | "ML_DSA_SHAKE_256"),
        "EXTERNAL_MU" => alg == "ML_DSA_SHAKE_256",
        other => panic!("message type {other}"),
    };
    if ok { "ok" } else { "ValidationException" }
}

/// Python: inputs for each message type and verification outside the front end.
const HELPERS: &str = r#"
import base64, hashlib, os, subprocess, tempfile
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, ec
from cryptography.exceptions import InvalidSignature

def hash_of(alg):
    for suffix, h in (('SHA_256', hashes.SHA256()), ('SHA_384', hashes.SHA384()), ('SHA_512', hashes.SHA512())):
        if alg.endswith(suffix):
            return h
    return None

def digest(h, m):
    d = hashes.Hash(h)
    d.update(m)
    return d.finalize()

# SM2 (GB/T 32918.2): Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA); DIGEST = SM3(Z || M).
SM2_A = bytes.fromhex('FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC')
SM2_B = bytes.fromhex('28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93')
SM2_GX = bytes.fromhex('32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7')
SM2_GY = bytes.fromhex('BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0')
SM2_ID = b'1234567812345678'

def sm3(b):
    return hashlib.new('sm3', b).digest()

def sm2_digest(spki, m):
    point = spki[-65:]  # uncompressed point 04 || x || y at the end of the SPKI
    assert point[0] == 4
    z = sm3(len(SM2_ID * 8).to_bytes(2, 'big') + SM2_ID + SM2_A + SM2_B + SM2_GX + SM2_GY + point[1:])
    return sm3(z + m)

def ml_dsa_mu(spki, m):
    # FIPS 204 §6.2 / Algorithm 7: tr = H(pk, 64); mu = H(tr || 0 || 0 || M, 64) (empty context)
    pk = serialization.load_der_public_key(spki).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tr = hashlib.shake_256(pk).digest(64)
    return hashlib.shake_256(tr + b'\x00\x00' + m).digest(64)

def message_for(spec, spki, alg, mt, m):
    """The Message to send for a message type: m itself, its digest for the algorithm, or mu."""
    if mt == 'RAW':
        return m
    if mt == 'EXTERNAL_MU':
        return ml_dsa_mu(spki, m) if spec.startswith('ML_DSA') else os.urandom(64)
    if alg == 'SM2DSA':
        return sm2_digest(spki, m) if spec == 'SM2' else os.urandom(32)
    h = hash_of(alg) or hashes.SHA512()
    return digest(h, m)

def openssl_sm2_verify(spki, m, sig):
    with tempfile.TemporaryDirectory() as d:
        for name, data in (('pub.der', spki), ('msg', m), ('sig', sig)):
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)
        r = subprocess.run(['openssl', 'pkeyutl', '-verify', '-pubin', '-keyform', 'DER', '-inkey', 'pub.der',
                            '-rawin', '-in', 'msg', '-sigfile', 'sig', '-digest', 'sm3',
                            '-pkeyopt', 'distid:1234567812345678'], cwd=d, capture_output=True)
        return r.returncode == 0

def outside(spki, alg, mt, m, sent, sig):
    """Verifies with libraries the front end does not use. m is the original message, sent
    what was signed (m, its digest, or mu)."""
    try:
        if alg.startswith('RSASSA_PSS'):
            # MGF1 with the same hash; OpenSSL checks the salt is exactly the digest length.
            h = hash_of(alg)
            pad = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            serialization.load_der_public_key(spki).verify(sig, m, pad, h)
        elif alg.startswith('RSASSA_PKCS1'):
            serialization.load_der_public_key(spki).verify(sig, m, padding.PKCS1v15(), hash_of(alg))
        elif alg.startswith('ECDSA'):
            serialization.load_der_public_key(spki).verify(sig, m, ec.ECDSA(hash_of(alg)))
        elif alg == 'ED25519_SHA_512':
            serialization.load_der_public_key(spki).verify(sig, m)
        elif alg == 'ED25519_PH_SHA_512':
            # Ed25519ph (RFC 8032) over the 64 bytes sent: KMS prehashes them again.
            from Crypto.PublicKey import ECC
            from Crypto.Signature import eddsa
            from Crypto.Hash import SHA512
            eddsa.new(ECC.import_key(spki), 'rfc8032').verify(SHA512.new(sent), sig)
        elif alg == 'ML_DSA_SHAKE_256':
            # Signing mu is signing M: the signature verifies over the original message.
            serialization.load_der_public_key(spki).verify(sig, m)
        elif alg == 'SM2DSA':
            return openssl_sm2_verify(spki, m, sig)
        else:
            return False
        return True
    except (InvalidSignature, ValueError):
        return False

def verify_error(**kw):
    r = call('verify', **kw)
    return r.get('error') or ('valid' if r['ok'].get('SignatureValid') is True else 'not-true')
"#;

/// Signs with every algorithm and message type on one key per spec; prints per case what
/// Sign answered and, for signatures, the KMS and outside verifications.
const SIGN_ALL: &str = r#"
specs = json.loads(sys.argv[1])
algorithms = json.loads(sys.argv[2])
out = {}
for spec in specs:
    k = kms.create_key(KeySpec=spec, KeyUsage='SIGN_VERIFY')['KeyMetadata']['Arn']
    pk = call('get_public_key', KeyId=k)['ok']
    spki = pk['PublicKey']
    r = {'meta': {x: v for x, v in pk.items() if x != 'PublicKey'}, 'cases': {}}
    m = os.urandom(4096)  # the largest RAW message
    for alg in algorithms:
        for mt in ('RAW', 'DIGEST', 'EXTERNAL_MU'):
            sent = message_for(spec, spki, alg, mt, m)
            s = call('sign', KeyId=k, Message=sent, MessageType=mt, SigningAlgorithm=alg)
            case = {'sign': s.get('error') or 'ok', 'message': s.get('message')}
            if 'ok' in s:
                sig = s['ok']['Signature']
                case['key'] = s['ok']['KeyId']
                case['alg'] = s['ok']['SigningAlgorithm']
                case['outside'] = outside(spki, alg, mt, m, sent, sig)
                case['verify'] = verify_error(KeyId=k, Message=sent, MessageType=mt, Signature=sig, SigningAlgorithm=alg)
                changed = bytes([sent[0] ^ 1]) + sent[1:]
                case['changed'] = verify_error(KeyId=k, Message=changed, MessageType=mt, Signature=sig, SigningAlgorithm=alg)
                if mt == 'RAW' and alg.startswith(('RSA', 'ECDSA')):
                    # "A message and its hash digest are considered to be the same message."
                    case['as_digest'] = verify_error(KeyId=k, Message=digest(hash_of(alg), m), MessageType='DIGEST', Signature=sig, SigningAlgorithm=alg)
                if mt == 'RAW' and alg == 'SM2DSA':
                    case['as_digest'] = verify_error(KeyId=k, Message=sm2_digest(spki, m), MessageType='DIGEST', Signature=sig, SigningAlgorithm=alg)
            r['cases'][alg + ' ' + mt] = case
    out[spec] = {'arn': k, **r}
print(json.dumps(out))
"#;

fn start() -> RunningFrontend {
    FrontendFixture::new().start()
}

/// Runs [`SIGN_ALL`] for `specs` in `region` and checks every case against [`expected`].
fn sign_all(fe: &RunningFrontend, region: &str, specs: &[&str]) {
    let script = format!("{HELPERS}{SIGN_ALL}");
    let specs_json = json!(specs).to_string();
    let algs_json = json!(ALGORITHMS).to_string();
    let out = fe.boto3(fe.alice(), region, &script, &[&specs_json, &algs_json]);
    for spec in specs {
        let r = &out[*spec];
        let arn = r["arn"].as_str().expect("arn");
        // GetPublicKey's metadata: KeySpec, KeyUsage, the usage's list, and
        // CustomerMasterKeySpec only for the values of that deprecated enum.
        let mut meta = json!({
            "KeyId": arn,
            "KeySpec": spec,
            "KeyUsage": "SIGN_VERIFY",
            "SigningAlgorithms": allowed(spec),
        });
        if !spec.starts_with("ML_DSA") && *spec != "ECC_NIST_EDWARDS25519" {
            meta["CustomerMasterKeySpec"] = json!(spec);
        }
        assert_eq!(r["meta"], meta, "{spec} GetPublicKey metadata");
        let mut signed = 0;
        for alg in ALGORITHMS {
            for mt in ["RAW", "DIGEST", "EXTERNAL_MU"] {
                let case = &r["cases"][format!("{alg} {mt}")];
                let want = expected(spec, alg, mt);
                assert_eq!(case["sign"], want, "{spec} {alg} {mt}: {case}");
                if want != "ok" {
                    continue;
                }
                signed += 1;
                assert_eq!(case["key"], arn, "{spec} {alg} {mt}");
                assert_eq!(case["alg"], alg, "{spec} {alg} {mt}");
                assert_eq!(
                    case["outside"], true,
                    "{spec} {alg} {mt}: the signature must verify outside KMS"
                );
                assert_eq!(case["verify"], "valid", "{spec} {alg} {mt}");
                assert_eq!(
                    case["changed"], "KMSInvalidSignatureException",
                    "{spec} {alg} {mt}"
                );
                if let Some(d) = case.get("as_digest") {
                    assert_eq!(d, "valid", "{spec} {alg}: RAW-signed, verified as DIGEST");
                }
            }
        }
        assert!(signed > 0, "{spec}: nothing signed");
    }
}

#[test]
fn sign_verify_rsa_ecc_ed25519() {
    let fe = start();
    sign_all(
        &fe,
        REGION,
        &[
            "RSA_2048",
            "RSA_3072",
            "RSA_4096",
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            "ECC_NIST_P521",
            "ECC_SECG_P256K1",
            "ECC_NIST_EDWARDS25519",
        ],
    );
}

#[test]
fn sign_verify_ml_dsa() {
    let fe = start();
    sign_all(&fe, REGION, &["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"]);
}

#[test]
fn sign_verify_sm2_in_china() {
    let fe = start();
    sign_all(&fe, CHINA, &["SM2"]);
}

const ERRORS: &str = r#"
out = {}
p256 = kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']
k = p256['KeyId']
kms.create_alias(AliasName='alias/signer', TargetKeyId=k)
alias_arn = p256['Arn'].replace(':key/' + k, ':alias/signer')
ed = kms.create_key(KeySpec='ECC_NIST_EDWARDS25519', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
mldsa = kms.create_key(KeySpec='ML_DSA_44', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
rsa_enc = kms.create_key(KeySpec='RSA_2048', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']
ecdh = kms.create_key(KeySpec='ECC_NIST_P384', KeyUsage='KEY_AGREEMENT')['KeyMetadata']['KeyId']
kem = kms.create_key(KeySpec='ML_KEM_768', KeyUsage='ENCAPSULATE_DECAPSULATE')['KeyMetadata']['KeyId']
sym = kms.create_key()['KeyMetadata']['KeyId']
hmac = kms.create_key(KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['KeyId']
m = b'hello'
S = dict(Message=m, SigningAlgorithm='ECDSA_SHA_256')
sig = kms.sign(KeyId=k, **S)['Signature']
out['by_alias'] = call('sign', KeyId='alias/signer', **S)
out['by_alias_arn'] = call('sign', KeyId=alias_arn, **S)
out['by_arn_verify'] = call('verify', KeyId=p256['Arn'], Signature=sig, **S)
out['grant_tokens'] = call('sign', KeyId=k, GrantTokens=['token-a', 'token-b'], **S)
out['too_many_grant_tokens'] = call('sign', KeyId=k, GrantTokens=['t'] * 11, **S)
out['dry_run_sign'] = call('sign', KeyId=k, DryRun=True, **S)
out['dry_run_verify'] = call('verify', KeyId=k, Signature=sig, DryRun=True, **S)
out['dry_run_bad_digest'] = call('sign', KeyId=k, Message=b'x' * 31, MessageType='DIGEST', SigningAlgorithm='ECDSA_SHA_256', DryRun=True)
out['max_message'] = call('sign', KeyId=k, Message=b'a' * 4096, SigningAlgorithm='ECDSA_SHA_256')
out['over_max'] = call('sign', KeyId=k, Message=b'a' * 4097, SigningAlgorithm='ECDSA_SHA_256')
out['verify_over_max'] = call('verify', KeyId=k, Message=b'a' * 4097, Signature=sig, SigningAlgorithm='ECDSA_SHA_256')
out['empty_message'] = call('sign', KeyId=k, Message=b'', SigningAlgorithm='ECDSA_SHA_256')
out['no_algorithm'] = call('sign', KeyId=k, Message=m)
out['unknown_algorithm'] = call('sign', KeyId=k, Message=m, SigningAlgorithm='ECDSA_SHA_1')
out['unknown_type'] = call('sign', KeyId=k, Message=m, MessageType='HASH', SigningAlgorithm='ECDSA_SHA_256')
out['wrong_algorithm'] = call('sign', KeyId=k, Message=m, SigningAlgorithm='ECDSA_SHA_384')
out['digest_short'] = call('sign', KeyId=k, Message=b'x' * 31, MessageType='DIGEST', SigningAlgorithm='ECDSA_SHA_256')
out['verify_digest_long'] = call('verify', KeyId=k, Message=b'x' * 33, MessageType='DIGEST', Signature=sig, SigningAlgorithm='ECDSA_SHA_256')
out['ed_raw_digest'] = call('sign', KeyId=ed, Message=b'x' * 64, MessageType='DIGEST', SigningAlgorithm='ED25519_SHA_512')
out['ed_ph_raw'] = call('sign', KeyId=ed, Message=m, MessageType='RAW', SigningAlgorithm='ED25519_PH_SHA_512')
out['ed_ph_short'] = call('sign', KeyId=ed, Message=b'x' * 32, MessageType='DIGEST', SigningAlgorithm='ED25519_PH_SHA_512')
out['mldsa_digest'] = call('sign', KeyId=mldsa, Message=b'x' * 64, MessageType='DIGEST', SigningAlgorithm='ML_DSA_SHAKE_256')
out['mldsa_mu_short'] = call('sign', KeyId=mldsa, Message=b'x' * 63, MessageType='EXTERNAL_MU', SigningAlgorithm='ML_DSA_SHAKE_256')
out['ecdsa_mu'] = call('sign', KeyId=k, Message=b'x' * 64, MessageType='EXTERNAL_MU', SigningAlgorithm='ECDSA_SHA_256')
out['bad_signature'] = call('verify', KeyId=k, Message=m, Signature=b'\x30\x00', SigningAlgorithm='ECDSA_SHA_256')
out['other_message'] = call('verify', KeyId=k, Message=b'hellp', Signature=sig, SigningAlgorithm='ECDSA_SHA_256')
out['sign_encrypt_key'] = call('sign', KeyId=rsa_enc['KeyId'], Message=m, SigningAlgorithm='RSASSA_PSS_SHA_256')
out['verify_encrypt_key'] = call('verify', KeyId=rsa_enc['KeyId'], Message=m, Signature=sig, SigningAlgorithm='RSASSA_PSS_SHA_256')
out['sign_hmac_key'] = call('sign', KeyId=hmac, Message=m, SigningAlgorithm='ECDSA_SHA_256')
out['sign_symmetric'] = call('sign', KeyId=sym, Message=m, SigningAlgorithm='ECDSA_SHA_256')
out['sign_missing'] = call('sign', KeyId='alias/none', **S)
# GetPublicKey for every asymmetric usage, and refused for keys without a public key
out['gpk_encrypt'] = call('get_public_key', KeyId=rsa_enc['Arn'])
out['gpk_agreement'] = call('get_public_key', KeyId=ecdh)
out['gpk_kem'] = call('get_public_key', KeyId=kem)
out['gpk_symmetric'] = call('get_public_key', KeyId=sym)
out['gpk_hmac'] = call('get_public_key', KeyId=hmac)
out['gpk_alias'] = call('get_public_key', KeyId='alias/signer')
# key states
kms.disable_key(KeyId=k)
out['disabled_sign'] = call('sign', KeyId=k, **S)
out['disabled_verify'] = call('verify', KeyId=k, Signature=sig, **S)
out['disabled_gpk'] = call('get_public_key', KeyId=k)
kms.enable_key(KeyId=k)
out['enabled_again'] = call('sign', KeyId=k, **S)
kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
out['pending_deletion_sign'] = call('sign', KeyId=k, **S)
out['pending_deletion_verify'] = call('verify', KeyId=k, Signature=sig, **S)
out['pending_deletion_gpk'] = call('get_public_key', KeyId=k)
imp = call('create_key', KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY', Origin='EXTERNAL')
if 'ok' in imp:
    ik = imp['ok']['KeyMetadata']['KeyId']
    out['pending_import_state'] = imp['ok']['KeyMetadata']['KeyState']
    out['pending_import_sign'] = call('sign', KeyId=ik, **S)
    out['pending_import_gpk'] = call('get_public_key', KeyId=ik)
else:
    out['pending_import_state'] = imp
out['arns'] = {'p256': p256['Arn'], 'rsa_enc': rsa_enc['Arn']}
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

fn ok(v: &Value) -> &Value {
    v.get("ok")
        .unwrap_or_else(|| panic!("expected success, got {v}"))
}

fn err<'a>(v: &'a Value, code: &str) -> &'a str {
    assert_eq!(v["error"], code, "{v}");
    assert_eq!(v["status"], 400, "{v}");
    v["message"].as_str().unwrap_or_default()
}

#[test]
fn sign_verify_errors_states_and_key_ids() {
    let fe = start();
    let script = format!("{HELPERS}{ERRORS}");
    let out = fe.boto3(fe.alice(), REGION, &script, &[]);
    let p256 = out["arns"]["p256"].as_str().expect("arn");
    let rsa_enc = out["arns"]["rsa_enc"].as_str().expect("arn");
    // A grant token is checked even when the key policy alone allows the call (AWS answers
    // InvalidGrantTokenException for strings it did not issue).
    err(&out["grant_tokens"], "InvalidGrantTokenException");
    for name in ["by_alias", "by_alias_arn", "max_message", "enabled_again"] {
        assert_eq!(ok(&out[name])["KeyId"], p256, "{name}");
        assert_eq!(
            ok(&out[name])["SigningAlgorithm"],
            "ECDSA_SHA_256",
            "{name}"
        );
    }
    assert_eq!(ok(&out["by_arn_verify"])["SignatureValid"], true);
    assert_eq!(ok(&out["gpk_alias"])["KeyId"], p256);
    err(&out["too_many_grant_tokens"], "ValidationException");
    let dry = "The request would have succeeded, but the DryRun option is set.";
    assert_eq!(err(&out["dry_run_sign"], "DryRunOperationException"), dry);
    assert_eq!(err(&out["dry_run_verify"], "DryRunOperationException"), dry);
    // DryRun answers only what would have succeeded.
    err(&out["dry_run_bad_digest"], "ValidationException");
    for name in ["over_max", "verify_over_max"] {
        assert_eq!(
            err(&out[name], "ValidationException"),
            "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096",
            "{name}"
        );
    }
    assert!(
        err(&out["empty_message"], "ValidationException")
            .contains("Member must have length greater than or equal to 1")
    );
    assert!(err(&out["no_algorithm"], "ValidationException").contains(
        "Value 'null' at 'signingAlgorithm' failed to satisfy constraint: Member must not be null"
    ));
    assert!(
        err(&out["unknown_algorithm"], "ValidationException").contains(
            "Member must satisfy enum value set: [RSASSA_PSS_SHA_256, RSASSA_PSS_SHA_384"
        )
    );
    assert!(
        err(&out["unknown_type"], "ValidationException").contains(
            "Value 'HASH' at 'messageType' failed to satisfy constraint: Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]"
        )
    );
    assert_eq!(
        err(&out["wrong_algorithm"], "InvalidKeyUsageException"),
        "Algorithm ECDSA_SHA_384 is incompatible with key spec ECC_NIST_P256."
    );
    for name in ["digest_short", "verify_digest_long"] {
        assert_eq!(
            err(&out[name], "ValidationException"),
            "Digest is invalid length for algorithm ECDSA_SHA_256.",
            "{name}"
        );
    }
    assert_eq!(
        err(&out["ed_raw_digest"], "ValidationException"),
        "Message type DIGEST is incompatible with algorithm ED25519_SHA_512."
    );
    assert_eq!(
        err(&out["ed_ph_raw"], "ValidationException"),
        "Message type RAW is incompatible with algorithm ED25519_PH_SHA_512."
    );
    assert_eq!(
        err(&out["ed_ph_short"], "ValidationException"),
        "Digest is invalid length for algorithm ED25519_PH_SHA_512."
    );
    assert_eq!(
        err(&out["mldsa_digest"], "ValidationException"),
        "Message type DIGEST is incompatible with key spec ML_DSA_44."
    );
    err(&out["mldsa_mu_short"], "ValidationException");
    assert_eq!(
        err(&out["ecdsa_mu"], "ValidationException"),
        "Message type EXTERNAL_MU is incompatible with algorithm ECDSA_SHA_256."
    );
    // A failed verification is an error with an empty message, never SignatureValid: false.
    assert_eq!(
        err(&out["bad_signature"], "KMSInvalidSignatureException"),
        ""
    );
    assert_eq!(
        err(&out["other_message"], "KMSInvalidSignatureException"),
        ""
    );
    assert_eq!(
        err(&out["sign_encrypt_key"], "InvalidKeyUsageException"),
        format!("{rsa_enc} key usage is ENCRYPT_DECRYPT which is not valid for Sign.")
    );
    assert_eq!(
        err(&out["verify_encrypt_key"], "InvalidKeyUsageException"),
        format!("{rsa_enc} key usage is ENCRYPT_DECRYPT which is not valid for Verify.")
    );
    assert!(
        err(&out["sign_hmac_key"], "InvalidKeyUsageException")
            .ends_with("key usage is GENERATE_VERIFY_MAC which is not valid for Sign.")
    );
    err(&out["sign_symmetric"], "InvalidKeyUsageException");
    err(&out["sign_missing"], "NotFoundException");
    // GetPublicKey: every asymmetric usage, with that usage's algorithm list only.
    let enc = ok(&out["gpk_encrypt"]);
    assert_eq!(enc["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(
        enc["EncryptionAlgorithms"],
        json!(["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
    );
    assert_eq!(enc["CustomerMasterKeySpec"], "RSA_2048");
    assert!(enc.get("SigningAlgorithms").is_none());
    let agr = ok(&out["gpk_agreement"]);
    assert_eq!(agr["KeyAgreementAlgorithms"], json!(["ECDH"]));
    assert_eq!(agr["KeyUsage"], "KEY_AGREEMENT");
    // (The installed botocore's model predates EncapsulationAlgorithms, so boto3 drops it.)
    let kem = ok(&out["gpk_kem"]);
    assert_eq!(kem["KeySpec"], "ML_KEM_768");
    assert_eq!(kem["KeyUsage"], "ENCAPSULATE_DECAPSULATE");
    assert!(kem.get("CustomerMasterKeySpec").is_none());
    err(&out["gpk_symmetric"], "UnsupportedOperationException");
    err(&out["gpk_hmac"], "UnsupportedOperationException");
    // Key states (kms-keys-in-use.md §2, last row).
    for name in ["disabled_sign", "disabled_verify", "disabled_gpk"] {
        assert_eq!(
            err(&out[name], "DisabledException"),
            format!("{p256} is disabled."),
            "{name}"
        );
    }
    for name in [
        "pending_deletion_sign",
        "pending_deletion_verify",
        "pending_deletion_gpk",
    ] {
        assert_eq!(
            err(&out[name], "KMSInvalidStateException"),
            format!("{p256} is pending deletion."),
            "{name}"
        );
    }
    assert_eq!(out["pending_import_state"], "PendingImport", "{out}");
    for name in ["pending_import_sign", "pending_import_gpk"] {
        assert!(
            err(&out[name], "KMSInvalidStateException").ends_with("is pending import."),
            "{name}"
        );
    }
}

const DATA_KEY_PAIRS: &str = r#"
from cryptography.hazmat.primitives.serialization import load_der_private_key
specs = json.loads(sys.argv[1])
region = os.environ['AWS_REGION']
sym = kms.create_key()['KeyMetadata']
kms.create_alias(AliasName='alias/pairs', TargetKeyId=sym['KeyId'])
ctx = {'purpose': 'data key pair', 'n': '1'}

def spki_of_private(der):
    """The SubjectPublicKeyInfo of a PKCS#8 private key, computed outside KMS."""
    try:
        return load_der_private_key(der, None).public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:
        # SM2 (the wheel's OpenSSL has no SM2 keys): the openssl command.
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, 'k.der')
            with open(p, 'wb') as f:
                f.write(der)
            r = subprocess.run(['openssl', 'pkey', '-inform', 'DER', '-in', p, '-pubout', '-outform', 'DER'], capture_output=True)
            return r.stdout if r.returncode == 0 else b''

out = {'arn': sym['Arn'], 'pairs': {}}
for spec in specs:
    r = {}
    p = call('generate_data_key_pair', KeyId='alias/pairs', KeyPairSpec=spec, EncryptionContext=ctx)
    if 'error' in p:
        out['pairs'][spec] = p
        continue
    p = p['ok']
    r['fields'] = sorted(p)
    r['key'] = p['KeyId']
    r['spec'] = p['KeyPairSpec']
    r['matches'] = spki_of_private(p['PrivateKeyPlaintext']) == p['PublicKey']
    d = call('decrypt', CiphertextBlob=p['PrivateKeyCiphertextBlob'], EncryptionContext=ctx)
    r['decrypt_equal'] = d.get('ok', {}).get('Plaintext') == p['PrivateKeyPlaintext']
    r['wrong_context'] = call('decrypt', CiphertextBlob=p['PrivateKeyCiphertextBlob'], EncryptionContext={'purpose': 'other'}).get('error')
    w = call('generate_data_key_pair_without_plaintext', KeyId=sym['Arn'], KeyPairSpec=spec, EncryptionContext=ctx)['ok']
    r['wp_fields'] = sorted(w)
    wd = call('decrypt', CiphertextBlob=w['PrivateKeyCiphertextBlob'], EncryptionContext=ctx)['ok']['Plaintext']
    r['wp_matches'] = spki_of_private(wd) == w['PublicKey']
    r['wp_differs'] = w['PublicKey'] != p['PublicKey']
    out['pairs'][spec] = r
rsa = kms.create_key(KeySpec='RSA_2048', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']['KeyId']
out['asymmetric_key'] = call('generate_data_key_pair', KeyId=rsa, KeyPairSpec='ECC_NIST_P256')
out['dry_run'] = call('generate_data_key_pair', KeyId=sym['KeyId'], KeyPairSpec='ECC_NIST_P256', DryRun=True)
out['wp_dry_run'] = call('generate_data_key_pair_without_plaintext', KeyId=sym['KeyId'], KeyPairSpec='ECC_NIST_P256', DryRun=True)
out['unknown_spec'] = call('generate_data_key_pair', KeyId=sym['KeyId'], KeyPairSpec='RSA_1024')
out['no_spec'] = call('generate_data_key_pair', KeyId=sym['KeyId'])
out['grant_tokens'] = call('generate_data_key_pair', KeyId=sym['KeyId'], KeyPairSpec='ECC_NIST_P256', GrantTokens=['t'])
if not region.startswith('cn-'):
    out['sm2_outside_china'] = call('generate_data_key_pair', KeyId=sym['KeyId'], KeyPairSpec='SM2')
kms.disable_key(KeyId=sym['KeyId'])
out['disabled'] = call('generate_data_key_pair', KeyId=sym['KeyId'], KeyPairSpec='ECC_NIST_P256')
kms.enable_key(KeyId=sym['KeyId'])
kms.schedule_key_deletion(KeyId=sym['KeyId'], PendingWindowInDays=7)
out['pending_deletion'] = call('generate_data_key_pair_without_plaintext', KeyId=sym['KeyId'], KeyPairSpec='ECC_NIST_P256')
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

fn data_key_pairs(fe: &RunningFrontend, region: &str, specs: &[&str]) -> Value {
    let script = format!("{HELPERS}{DATA_KEY_PAIRS}");
    let out = fe.boto3(fe.alice(), region, &script, &[&json!(specs).to_string()]);
    let arn = out["arn"].as_str().expect("arn");
    for spec in specs {
        let r = &out["pairs"][*spec];
        assert_eq!(
            r["fields"],
            json!([
                "KeyId",
                "KeyPairSpec",
                "PrivateKeyCiphertextBlob",
                "PrivateKeyPlaintext",
                "PublicKey"
            ]),
            "{spec}: {r}"
        );
        assert_eq!(r["key"], arn, "{spec}");
        assert_eq!(r["spec"], *spec, "{spec}");
        assert_eq!(r["matches"], true, "{spec}: private key matches public key");
        assert_eq!(r["decrypt_equal"], true, "{spec}: Decrypt opens the blob");
        assert_eq!(r["wrong_context"], "InvalidCiphertextException", "{spec}");
        assert_eq!(
            r["wp_fields"],
            json!([
                "KeyId",
                "KeyPairSpec",
                "PrivateKeyCiphertextBlob",
                "PublicKey"
            ]),
            "{spec}"
        );
        assert_eq!(
            r["wp_matches"], true,
            "{spec}: WithoutPlaintext pair matches"
        );
        assert_eq!(r["wp_differs"], true, "{spec}: each pair is new");
    }
    out
}

#[test]
fn data_key_pairs_for_every_spec() {
    let fe = start();
    let out = data_key_pairs(
        &fe,
        REGION,
        &[
            "RSA_2048",
            "RSA_3072",
            "RSA_4096",
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            "ECC_NIST_P521",
            "ECC_SECG_P256K1",
            "ECC_NIST_EDWARDS25519",
        ],
    );
    assert!(
        err(&out["asymmetric_key"], "InvalidKeyUsageException")
            .contains("not valid for GenerateDataKeyPair")
    );
    let dry = "The request would have succeeded, but the DryRun option is set.";
    assert_eq!(err(&out["dry_run"], "DryRunOperationException"), dry);
    assert_eq!(err(&out["wp_dry_run"], "DryRunOperationException"), dry);
    assert!(err(&out["unknown_spec"], "ValidationException").contains(
        "Value 'RSA_1024' at 'keyPairSpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1, SM2, ECC_NIST_EDWARDS25519]"
    ));
    assert!(err(&out["no_spec"], "ValidationException").contains(
        "Value 'null' at 'keyPairSpec' failed to satisfy constraint: Member must not be null"
    ));
    err(&out["grant_tokens"], "InvalidGrantTokenException");
    err(&out["sm2_outside_china"], "ValidationException");
    assert!(err(&out["disabled"], "DisabledException").ends_with("is disabled."));
    assert!(
        err(&out["pending_deletion"], "KMSInvalidStateException").ends_with("is pending deletion.")
    );
}

#[test]
fn data_key_pairs_sm2_in_china() {
    let fe = start();
    data_key_pairs(&fe, CHINA, &["SM2", "ECC_NIST_P256"]);
}

fn cli_json(fe: &RunningFrontend, args: &[&str]) -> Value {
    let out = fe.aws_cli(fe.alice(), REGION, args);
    assert!(
        out.status.success(),
        "aws kms {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the CLI prints JSON")
}

#[test]
fn aws_cli_v1_sign_verify_get_public_key_and_data_key_pair() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let fe = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("message"), b"signed by the AWS CLI v1").expect("write");
    let key = cli_json(
        &fe,
        &[
            "create-key",
            "--key-spec",
            "ECC_NIST_P256",
            "--key-usage",
            "SIGN_VERIFY",
        ],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("key id")
        .to_owned();
    let message = format!("fileb://{}", path("message"));
    let signed = cli_json(
        &fe,
        &[
            "sign",
            "--key-id",
            &key,
            "--message",
            &message,
            "--message-type",
            "RAW",
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    assert_eq!(signed["SigningAlgorithm"], "ECDSA_SHA_256");
    let signature = STANDARD
        .decode(signed["Signature"].as_str().expect("signature"))
        .expect("base64");
    std::fs::write(path("signature"), &signature).expect("write");
    let verified = cli_json(
        &fe,
        &[
            "verify",
            "--key-id",
            &key,
            "--message",
            &message,
            "--signature",
            &format!("fileb://{}", path("signature")),
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    assert_eq!(verified["SignatureValid"], true);
    // A changed message: the CLI exits non-zero with KMSInvalidSignatureException.
    std::fs::write(path("other"), b"signed by someone else").expect("write");
    let refused = fe.aws_cli(
        fe.alice(),
        REGION,
        &[
            "verify",
            "--key-id",
            &key,
            "--message",
            &format!("fileb://{}", path("other")),
            "--signature",
            &format!("fileb://{}", path("signature")),
            "--signing-algorithm",
            "ECDSA_SHA_256",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KMSInvalidSignatureException"));
    // GetPublicKey: the DER public key verifies the signature with the openssl command.
    let public = cli_json(&fe, &["get-public-key", "--key-id", &key]);
    assert_eq!(public["SigningAlgorithms"], json!(["ECDSA_SHA_256"]));
    let der = STANDARD
        .decode(public["PublicKey"].as_str().expect("public key"))
        .expect("base64");
    std::fs::write(path("public.der"), der).expect("write");
    let openssl = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-keyform",
            "DER",
            "-verify",
            &path("public.der"),
            "-signature",
            &path("signature"),
            &path("message"),
        ])
        .output()
        .expect("openssl must be installed");
    assert!(
        openssl.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    // GenerateDataKeyPair, and Decrypt of its blob given back as fileb://.
    let sym = cli_json(&fe, &["create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("key id")
        .to_owned();
    let pair = cli_json(
        &fe,
        &[
            "generate-data-key-pair",
            "--key-id",
            &sym,
            "--key-pair-spec",
            "ECC_NIST_P384",
            "--encryption-context",
            "app=cli",
        ],
    );
    assert_eq!(pair["KeyPairSpec"], "ECC_NIST_P384");
    let blob = STANDARD
        .decode(pair["PrivateKeyCiphertextBlob"].as_str().expect("blob"))
        .expect("base64");
    std::fs::write(path("blob"), blob).expect("write");
    let opened = cli_json(
        &fe,
        &[
            "decrypt",
            "--ciphertext-blob",
            &format!("fileb://{}", path("blob")),
            "--encryption-context",
            "app=cli",
        ],
    );
    assert_eq!(opened["Plaintext"], pair["PrivateKeyPlaintext"]);
}

/// AWS's rule: no data key pairs under a key in a custom key store.
#[test]
fn data_key_pair_under_an_external_key_store_key_is_unsupported() {
    use testkit::proxy::{ProxyFixture, StoreSpec};
    let p = ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&["ext-1"]))
        .start();
    let mut f = FrontendFixture::new();
    f.extra_toml = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\ntimeout_ms = 250\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{}\"\n",
        p.fixture.pki.ca_pem.display(),
        p.port
    );
    let fe = f.start();
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    let out = fe.boto3(
        fe.alice(),
        REGION,
        r#"
import time
sid = kms.create_custom_key_store(CustomKeyStoreName='xks', CustomKeyStoreType='EXTERNAL_KEY_STORE',
    XksProxyUriEndpoint='https://xks.test', XksProxyUriPath='/tenant/kms/xks/v1', XksProxyConnectivity='PUBLIC_ENDPOINT',
    XksProxyAuthenticationCredential={'AccessKeyId': sys.argv[1], 'RawSecretAccessKey': sys.argv[2]})['CustomKeyStoreId']
kms.connect_custom_key_store(CustomKeyStoreId=sid)
end = time.time() + 10
while time.time() < end and kms.describe_custom_key_stores(CustomKeyStoreId=sid)['CustomKeyStores'][0]['ConnectionState'] != 'CONNECTED':
    time.sleep(0.05)
k = kms.create_key(Origin='EXTERNAL_KEY_STORE', CustomKeyStoreId=sid, XksKeyId='ext-1')['KeyMetadata']['Arn']
out = {'arn': k}
out['pair'] = call('generate_data_key_pair', KeyId=k, KeyPairSpec='ECC_NIST_P256')
out['pair_wp'] = call('generate_data_key_pair_without_plaintext', KeyId=k, KeyPairSpec='RSA_2048')
out['encrypt'] = call('encrypt', KeyId=k, Plaintext=b'the key works')
print(json.dumps(out, default=lambda b: len(b)))
"#,
        &[&akid, &secret],
    );
    let arn = out["arn"].as_str().expect("arn");
    assert!(ok(&out["encrypt"]).get("CiphertextBlob").is_some());
    for (name, op) in [
        ("pair", "GenerateDataKeyPair"),
        ("pair_wp", "GenerateDataKeyPairWithoutPlaintext"),
    ] {
        assert_eq!(
            err(&out[name], "UnsupportedOperationException"),
            format!("{arn} is in a custom key store, which is not valid for {op}.")
        );
    }
}
