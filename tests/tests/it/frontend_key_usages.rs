//! The non-signing key usages end to end, against the real `kms-frontend` over HTTPS:
//! asymmetric Encrypt/Decrypt/ReEncrypt (RSAES_OAEP_SHA_1/256, SM2PKE), GenerateMac/VerifyMac,
//! DeriveSharedSecret (ECDH) through boto3 and the AWS CLI v1, and Encapsulate/Decapsulate
//! (ML-KEM) through aws-sdk-rust and through botocore pinned to 1.44.8 (the default install
//! predates them; `scripts/test` puts the pinned one under `target/python`).
//!
//! Not checked outside: HMAC tags (the key never leaves KMS and ImportKeyMaterial is not
//! served yet, so no one else holds it) and SM2 ECDH (neither `cryptography` nor the
//! `openssl` command derive on the SM2 curve here): both sides of two KMS keys must agree.
//!
//! Results are checked outside the front end, by implementations it does not use: Python
//! `cryptography` (OpenSSL inside the wheel) encrypts with the public key from GetPublicKey
//! (RSA-OAEP), computes ECDH from the KMS public key and the peer's private key, and
//! encapsulates with the ML-KEM-768/1024 public key; the `openssl` command encrypts SM2PKE.
//! Limits and error texts are written out here from the reference (`kms-keys-in-use.md` §3-4,
//! the botocore model's documentation), not taken from the front end.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use testkit::frontend::{FrontendFixture, RunningFrontend};

const REGION: &str = "us-east-1";
const CHINA: &str = "cn-north-1";

fn start() -> RunningFrontend {
    FrontendFixture::new().start()
}

fn ok(v: &Value) -> &Value {
    v.get("ok")
        .unwrap_or_else(|| panic!("expected success, got {v}"))
}

fn err<'a>(v: &'a Value, code: &str) -> &'a str {
    assert_eq!(v["error"], code, "{v}");
    assert_eq!(v["status"], 400, "{v}");
    v["message"].as_str().unwrap_or_default()
}

/// The OAEP plaintext limits AWS documents (Encrypt documentation; k − 2·hLen − 2).
fn oaep_max(spec: &str, alg: &str) -> usize {
    match (spec, alg) {
        ("RSA_2048", "RSAES_OAEP_SHA_1") => 214,
        ("RSA_2048", _) => 190,
        ("RSA_3072", "RSAES_OAEP_SHA_1") => 342,
        ("RSA_3072", _) => 318,
        ("RSA_4096", "RSAES_OAEP_SHA_1") => 470,
        _ => 446,
    }
}

const RSA_SCRIPT: &str = r#"
import base64, os
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

def oaep(alg):
    h = hashes.SHA1() if alg == 'RSAES_OAEP_SHA_1' else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)

out = {}
for spec in json.loads(sys.argv[1]):
    k = kms.create_key(KeySpec=spec, KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']['Arn']
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=k)['PublicKey'])
    r = {'arn': k, 'cases': {}}
    for alg in ('RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'):
        limit = int(json.loads(sys.argv[2])[spec + ' ' + alg])
        m = os.urandom(limit)
        c = {}
        e = call('encrypt', KeyId=k, Plaintext=m, EncryptionAlgorithm=alg)
        c['encrypt'] = {x: v for x, v in e['ok'].items() if x != 'CiphertextBlob'} if 'ok' in e else e
        if 'ok' in e:
            blob = e['ok']['CiphertextBlob']
            c['blob_len'] = len(blob)
            d = call('decrypt', KeyId=k, CiphertextBlob=blob, EncryptionAlgorithm=alg)
            c['decrypt_same'] = d['ok']['Plaintext'] == m if 'ok' in d else d
            c['decrypt_meta'] = {x: v for x, v in d['ok'].items() if x != 'Plaintext'} if 'ok' in d else d
        outside = pub.encrypt(m, oaep(alg))
        d = call('decrypt', KeyId=k, CiphertextBlob=outside, EncryptionAlgorithm=alg)
        c['outside_decrypts'] = d['ok']['Plaintext'] == m if 'ok' in d else d
        other = 'RSAES_OAEP_SHA_256' if alg == 'RSAES_OAEP_SHA_1' else 'RSAES_OAEP_SHA_1'
        c['other_algorithm'] = call('decrypt', KeyId=k, CiphertextBlob=outside, EncryptionAlgorithm=other)
        c['over'] = call('encrypt', KeyId=k, Plaintext=m + b'x', EncryptionAlgorithm=alg)
        r['cases'][alg] = c
    out[spec] = r
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// Every RSA spec × both OAEP algorithms: the largest plaintext encrypts in KMS and
/// decrypts; a ciphertext made outside with the public key decrypts in KMS; one byte more is
/// the documented ValidationException; the other OAEP hash does not decrypt.
#[test]
fn rsa_oaep_every_spec_and_algorithm() {
    let fe = start();
    let specs = ["RSA_2048", "RSA_3072", "RSA_4096"];
    let mut limits = serde_json::Map::new();
    for spec in specs {
        for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
            limits.insert(format!("{spec} {alg}"), json!(oaep_max(spec, alg)));
        }
    }
    let out = fe.boto3(
        fe.alice(),
        REGION,
        RSA_SCRIPT,
        &[
            &json!(specs).to_string(),
            &Value::Object(limits).to_string(),
        ],
    );
    for spec in specs {
        let arn = &out[spec]["arn"];
        let modulus = match spec {
            "RSA_2048" => 256,
            "RSA_3072" => 384,
            _ => 512,
        };
        for alg in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] {
            let c = &out[spec]["cases"][alg];
            assert_eq!(
                c["encrypt"],
                json!({"KeyId": arn, "EncryptionAlgorithm": alg}),
                "{spec} {alg}"
            );
            assert_eq!(c["blob_len"], modulus, "{spec} {alg}: raw RSA output");
            assert_eq!(c["decrypt_same"], true, "{spec} {alg}");
            assert_eq!(
                c["decrypt_meta"],
                json!({"KeyId": arn, "EncryptionAlgorithm": alg}),
                "{spec} {alg}"
            );
            assert_eq!(
                c["outside_decrypts"], true,
                "{spec} {alg}: encrypted outside"
            );
            err(&c["other_algorithm"], "InvalidCiphertextException");
            assert_eq!(
                err(&c["over"], "ValidationException"),
                format!(
                    "Algorithm {alg} and key spec {spec} cannot encrypt data larger than {} bytes.",
                    oaep_max(spec, alg)
                ),
                "{spec} {alg}"
            );
        }
    }
}

const RSA_ERRORS: &str = r#"
import base64, os
out = {}
rsa = kms.create_key(KeySpec='RSA_2048', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']
signer = kms.create_key(KeySpec='RSA_2048', KeyUsage='SIGN_VERIFY')['KeyMetadata']
other = kms.create_key(KeySpec='RSA_2048', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']
sym = kms.create_key()['KeyMetadata']
kms.create_alias(AliasName='alias/rsa-enc', TargetKeyId=rsa['KeyId'])
k = rsa['Arn']
A = dict(EncryptionAlgorithm='RSAES_OAEP_SHA_256')
m = b'asymmetric plaintext'
c = kms.encrypt(KeyId=k, Plaintext=m, **A)['CiphertextBlob']
out['no_algorithm'] = call('encrypt', KeyId=k, Plaintext=m)
out['symmetric_default'] = call('encrypt', KeyId=k, Plaintext=m, EncryptionAlgorithm='SYMMETRIC_DEFAULT')
out['sm2pke_on_rsa'] = call('encrypt', KeyId=k, Plaintext=m, EncryptionAlgorithm='SM2PKE')
out['rsa_alg_on_symmetric'] = call('encrypt', KeyId=sym['Arn'], Plaintext=m, **A)
out['context'] = call('encrypt', KeyId=k, Plaintext=m, EncryptionContext={'a': 'b'}, **A)
out['decrypt_context'] = call('decrypt', KeyId=k, CiphertextBlob=c, EncryptionContext={'a': 'b'}, **A)
out['decrypt_no_algorithm'] = call('decrypt', KeyId=k, CiphertextBlob=c)
out['decrypt_no_key'] = call('decrypt', CiphertextBlob=c, **A)
out['decrypt_other_key'] = call('decrypt', KeyId=other['Arn'], CiphertextBlob=c, **A)
out['by_alias'] = call('encrypt', KeyId='alias/rsa-enc', Plaintext=m, **A)
out['decrypt_by_alias_arn'] = call('decrypt', KeyId=k.replace(':key/' + rsa['KeyId'], ':alias/rsa-enc'), CiphertextBlob=c, **A)
out['grant_tokens'] = call('decrypt', KeyId=k, CiphertextBlob=c, GrantTokens=['token'], **A)
out['dry_run'] = call('encrypt', KeyId=k, Plaintext=m, DryRun=True, **A)
out['dry_run_decrypt'] = call('decrypt', KeyId=k, CiphertextBlob=c, DryRun=True, **A)
out['sign_key'] = call('encrypt', KeyId=signer['Arn'], Plaintext=m, **A)
out['data_key'] = call('generate_data_key', KeyId=k, KeySpec='AES_256')
kms.disable_key(KeyId=k)
out['disabled_encrypt'] = call('encrypt', KeyId=k, Plaintext=m, **A)
out['disabled_decrypt'] = call('decrypt', KeyId=k, CiphertextBlob=c, **A)
kms.enable_key(KeyId=k)
# ReEncrypt: symmetric -> RSA -> RSA -> symmetric, with each side's algorithm.
s1 = kms.encrypt(KeyId=sym['Arn'], Plaintext=m, EncryptionContext={'app': 'x'})['CiphertextBlob']
r1 = call('re_encrypt', CiphertextBlob=s1, SourceEncryptionContext={'app': 'x'}, DestinationKeyId=k, DestinationEncryptionAlgorithm='RSAES_OAEP_SHA_1')
out['sym_to_rsa'] = {x: v for x, v in r1['ok'].items() if x != 'CiphertextBlob'} if 'ok' in r1 else r1
r1c = r1['ok']['CiphertextBlob']
out['sym_to_rsa_decrypts'] = kms.decrypt(KeyId=k, CiphertextBlob=r1c, EncryptionAlgorithm='RSAES_OAEP_SHA_1')['Plaintext'] == m
r2 = call('re_encrypt', CiphertextBlob=r1c, SourceKeyId=k, SourceEncryptionAlgorithm='RSAES_OAEP_SHA_1', DestinationKeyId=other['Arn'], DestinationEncryptionAlgorithm='RSAES_OAEP_SHA_256')
out['rsa_to_rsa'] = {x: v for x, v in r2['ok'].items() if x != 'CiphertextBlob'} if 'ok' in r2 else r2
r2c = r2['ok']['CiphertextBlob']
r3 = call('re_encrypt', CiphertextBlob=r2c, SourceKeyId=other['Arn'], SourceEncryptionAlgorithm='RSAES_OAEP_SHA_256', DestinationKeyId=sym['Arn'], DestinationEncryptionContext={'to': 'sym'})
out['rsa_to_sym'] = {x: v for x, v in r3['ok'].items() if x != 'CiphertextBlob'} if 'ok' in r3 else r3
out['rsa_to_sym_decrypts'] = kms.decrypt(CiphertextBlob=r3['ok']['CiphertextBlob'], EncryptionContext={'to': 'sym'})['Plaintext'] == m
out['re_no_dest_algorithm'] = call('re_encrypt', CiphertextBlob=s1, SourceEncryptionContext={'app': 'x'}, DestinationKeyId=k)
out['re_dest_context'] = call('re_encrypt', CiphertextBlob=s1, SourceEncryptionContext={'app': 'x'}, DestinationKeyId=k, DestinationEncryptionAlgorithm='RSAES_OAEP_SHA_1', DestinationEncryptionContext={'a': 'b'})
out['re_no_source_key'] = call('re_encrypt', CiphertextBlob=r1c, SourceEncryptionAlgorithm='RSAES_OAEP_SHA_1', DestinationKeyId=sym['Arn'])
# 4,096 bytes encrypted under a symmetric key cannot move under RSA_2048 (190 bytes max).
big = kms.encrypt(KeyId=sym['Arn'], Plaintext=os.urandom(4096))['CiphertextBlob']
out['re_too_large'] = call('re_encrypt', CiphertextBlob=big, DestinationKeyId=k, DestinationEncryptionAlgorithm='RSAES_OAEP_SHA_256')
out['arns'] = {'rsa': k, 'other': other['Arn'], 'sym': sym['Arn'], 'signer': signer['Arn']}
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// Algorithm rules, encryption context, key ids, DryRun, GrantTokens, usage and state
/// errors, and ReEncrypt between symmetric and RSA keys both ways and RSA to RSA.
#[test]
fn rsa_oaep_errors_and_re_encrypt() {
    let fe = start();
    let out = fe.boto3(fe.alice(), REGION, RSA_ERRORS, &[]);
    let rsa = out["arns"]["rsa"].as_str().expect("arn");
    let other = out["arns"]["other"].as_str().expect("arn");
    let sym = out["arns"]["sym"].as_str().expect("arn");
    let signer = out["arns"]["signer"].as_str().expect("arn");
    // sops#684: AWS's answer to Encrypt with an RSA key and no algorithm.
    for name in ["no_algorithm", "symmetric_default"] {
        assert_eq!(
            err(&out[name], "InvalidKeyUsageException"),
            "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048.",
            "{name}"
        );
    }
    assert_eq!(
        err(&out["sm2pke_on_rsa"], "InvalidKeyUsageException"),
        "Algorithm SM2PKE is incompatible with key spec RSA_2048."
    );
    err(&out["rsa_alg_on_symmetric"], "InvalidKeyUsageException");
    err(&out["context"], "ValidationException");
    err(&out["decrypt_context"], "ValidationException");
    for name in [
        "decrypt_no_algorithm",
        "decrypt_no_key",
        "decrypt_other_key",
    ] {
        err(&out[name], "InvalidCiphertextException");
    }
    assert_eq!(ok(&out["by_alias"])["KeyId"], rsa);
    assert_eq!(ok(&out["decrypt_by_alias_arn"])["KeyId"], rsa);
    // A token KMS did not issue is refused, even where the key policy allows the call.
    err(&out["grant_tokens"], "InvalidGrantTokenException");
    for name in ["dry_run", "dry_run_decrypt"] {
        err(&out[name], "DryRunOperationException");
    }
    assert_eq!(
        err(&out["sign_key"], "InvalidKeyUsageException"),
        format!("{signer} key usage is SIGN_VERIFY which is not valid for Encrypt.")
    );
    err(&out["data_key"], "InvalidKeyUsageException");
    for name in ["disabled_encrypt", "disabled_decrypt"] {
        assert_eq!(
            err(&out[name], "DisabledException"),
            format!("{rsa} is disabled."),
            "{name}"
        );
    }
    assert_eq!(
        out["sym_to_rsa"],
        json!({"SourceKeyId": sym, "KeyId": rsa,
               "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
               "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_1"})
    );
    assert_eq!(out["sym_to_rsa_decrypts"], true);
    assert_eq!(
        out["rsa_to_rsa"],
        json!({"SourceKeyId": rsa, "KeyId": other,
               "SourceEncryptionAlgorithm": "RSAES_OAEP_SHA_1",
               "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
    );
    assert_eq!(
        out["rsa_to_sym"],
        json!({"SourceKeyId": other, "KeyId": sym,
               "SourceEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
               "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
    );
    assert_eq!(out["rsa_to_sym_decrypts"], true);
    err(&out["re_no_dest_algorithm"], "InvalidKeyUsageException");
    err(&out["re_dest_context"], "ValidationException");
    err(&out["re_no_source_key"], "InvalidCiphertextException");
    assert_eq!(
        err(&out["re_too_large"], "ValidationException"),
        "Algorithm RSAES_OAEP_SHA_256 and key spec RSA_2048 cannot encrypt data larger than 190 bytes."
    );
}

const SM2PKE: &str = r#"
import base64, os, subprocess, tempfile
k = kms.create_key(KeySpec='SM2', KeyUsage='ENCRYPT_DECRYPT')['KeyMetadata']['Arn']
pub = kms.get_public_key(KeyId=k)
out = {'meta': {x: v for x, v in pub.items() if x in ('EncryptionAlgorithms', 'KeyUsage')}}
m = os.urandom(1024)
e = kms.encrypt(KeyId=k, Plaintext=m, EncryptionAlgorithm='SM2PKE')
out['roundtrip'] = kms.decrypt(KeyId=k, CiphertextBlob=e['CiphertextBlob'], EncryptionAlgorithm='SM2PKE')['Plaintext'] == m
out['over'] = call('encrypt', KeyId=k, Plaintext=m + b'x', EncryptionAlgorithm='SM2PKE')
out['oaep'] = call('encrypt', KeyId=k, Plaintext=m, EncryptionAlgorithm='RSAES_OAEP_SHA_256')
with tempfile.TemporaryDirectory() as d:
    open(os.path.join(d, 'pub.der'), 'wb').write(pub['PublicKey'])
    open(os.path.join(d, 'msg'), 'wb').write(m[:100])
    r = subprocess.run(['openssl', 'pkeyutl', '-encrypt', '-pubin', '-keyform', 'DER', '-inkey', 'pub.der',
                        '-in', 'msg', '-out', 'ct'], cwd=d, capture_output=True)
    out['openssl'] = r.returncode == 0 or r.stderr.decode()
    if r.returncode == 0:
        ct = open(os.path.join(d, 'ct'), 'rb').read()
        out['outside_decrypts'] = kms.decrypt(KeyId=k, CiphertextBlob=ct, EncryptionAlgorithm='SM2PKE')['Plaintext'] == m[:100]
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// SM2PKE in a China Region: 1,024 bytes round trip, 1,025 refused, and a ciphertext made
/// by the `openssl` command with the public key decrypts in KMS.
#[test]
fn sm2pke_in_china() {
    let fe = start();
    let out = fe.boto3(fe.alice(), CHINA, SM2PKE, &[]);
    assert_eq!(
        out["meta"],
        json!({"EncryptionAlgorithms": ["SM2PKE"], "KeyUsage": "ENCRYPT_DECRYPT"})
    );
    assert_eq!(out["roundtrip"], true);
    assert!(
        err(&out["over"], "ValidationException")
            .ends_with("cannot encrypt data larger than 1024 bytes.")
    );
    err(&out["oaep"], "InvalidKeyUsageException");
    assert_eq!(out["openssl"], true, "{out}");
    assert_eq!(out["outside_decrypts"], true);
}

const MAC: &str = r#"
import base64, os
algs = ['HMAC_SHA_224', 'HMAC_SHA_256', 'HMAC_SHA_384', 'HMAC_SHA_512']
out = {'specs': {}}
m = os.urandom(4096)
for spec in ['HMAC_224', 'HMAC_256', 'HMAC_384', 'HMAC_512']:
    k = kms.create_key(KeySpec=spec, KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['Arn']
    r = {'arn': k}
    for alg in algs:
        g = call('generate_mac', KeyId=k, Message=m, MacAlgorithm=alg)
        c = {'generate': g.get('error') or 'ok', 'message': g.get('message')}
        if 'ok' in g:
            mac = g['ok']['Mac']
            c['len'] = len(mac)
            c['meta'] = {x: v for x, v in g['ok'].items() if x != 'Mac'}
            c['deterministic'] = kms.generate_mac(KeyId=k, Message=m, MacAlgorithm=alg)['Mac'] == mac
            c['verify'] = call('verify_mac', KeyId=k, Message=m, MacAlgorithm=alg, Mac=mac)
            c['changed_message'] = call('verify_mac', KeyId=k, Message=b'x' + m[1:], MacAlgorithm=alg, Mac=mac)
            c['changed_mac'] = call('verify_mac', KeyId=k, Message=m, MacAlgorithm=alg, Mac=bytes([mac[0] ^ 1]) + mac[1:])
            c['truncated_mac'] = call('verify_mac', KeyId=k, Message=m, MacAlgorithm=alg, Mac=mac[:-1])
        r[alg] = c
    out['specs'][spec] = r
k = kms.create_key(KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']
k2 = kms.create_key(KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['Arn']
kms.create_alias(AliasName='alias/mac', TargetKeyId=k['KeyId'])
S = dict(MacAlgorithm='HMAC_SHA_256', Message=b'hello')
mac = kms.generate_mac(KeyId=k['Arn'], **S)['Mac']
out['other_key'] = call('verify_mac', KeyId=k2, Mac=mac, **S)
out['alias'] = call('generate_mac', KeyId='alias/mac', **S)
out['grant_tokens'] = call('verify_mac', KeyId='alias/mac', Mac=mac, GrantTokens=['t'], **S)
out['dry_run'] = call('generate_mac', KeyId=k['Arn'], DryRun=True, **S)
out['dry_run_verify'] = call('verify_mac', KeyId=k['Arn'], Mac=mac, DryRun=True, **S)
out['over'] = call('generate_mac', KeyId=k['Arn'], MacAlgorithm='HMAC_SHA_256', Message=os.urandom(4097))
out['empty'] = call('generate_mac', KeyId=k['Arn'], MacAlgorithm='HMAC_SHA_256', Message=b'')
out['no_algorithm'] = call('generate_mac', KeyId=k['Arn'], Message=b'x')
sym = kms.create_key()['KeyMetadata']['Arn']
out['symmetric'] = call('generate_mac', KeyId=sym, **S)
out['verify_symmetric'] = call('verify_mac', KeyId=sym, Mac=mac, **S)
out['encrypt_with_hmac'] = call('encrypt', KeyId=k['Arn'], Plaintext=b'x')
kms.disable_key(KeyId=k['Arn'])
out['disabled'] = call('generate_mac', KeyId=k['Arn'], **S)
kms.schedule_key_deletion(KeyId=k['Arn'], PendingWindowInDays=7)
out['pending'] = call('verify_mac', KeyId=k['Arn'], Mac=mac, **S)
out['arns'] = {'k': k['Arn'], 'sym': sym}
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// Every HMAC spec × every MacAlgorithm: only the matching one works (the tag is the
/// digest length, deterministic, verifies; anything changed is `KMSInvalidMacException`);
/// limits, key ids, DryRun, usage and state errors.
#[test]
fn generate_verify_mac_every_spec_and_algorithm() {
    let fe = start();
    let out = fe.boto3(fe.alice(), REGION, MAC, &[]);
    for (spec, matching, len) in [
        ("HMAC_224", "HMAC_SHA_224", 28),
        ("HMAC_256", "HMAC_SHA_256", 32),
        ("HMAC_384", "HMAC_SHA_384", 48),
        ("HMAC_512", "HMAC_SHA_512", 64),
    ] {
        let r = &out["specs"][spec];
        for alg in [
            "HMAC_SHA_224",
            "HMAC_SHA_256",
            "HMAC_SHA_384",
            "HMAC_SHA_512",
        ] {
            let c = &r[alg];
            if alg != matching {
                assert_eq!(c["generate"], "InvalidKeyUsageException", "{spec} {alg}");
                assert_eq!(
                    c["message"],
                    format!("Algorithm {alg} is incompatible with key spec {spec}.")
                );
                continue;
            }
            assert_eq!(c["generate"], "ok", "{spec} {alg}: {c}");
            assert_eq!(c["len"], len, "{spec}");
            assert_eq!(
                c["meta"],
                json!({"KeyId": r["arn"], "MacAlgorithm": alg}),
                "{spec}"
            );
            assert_eq!(c["deterministic"], true, "{spec}");
            assert_eq!(
                ok(&c["verify"]),
                &json!({"KeyId": r["arn"], "MacValid": true, "MacAlgorithm": alg})
            );
            for changed in ["changed_message", "changed_mac", "truncated_mac"] {
                assert_eq!(
                    err(&c[changed], "KMSInvalidMacException"),
                    "",
                    "{spec} {changed}"
                );
            }
        }
    }
    let k = out["arns"]["k"].as_str().expect("arn");
    let sym = out["arns"]["sym"].as_str().expect("arn");
    err(&out["other_key"], "KMSInvalidMacException");
    assert_eq!(ok(&out["alias"])["KeyId"], k);
    err(&out["grant_tokens"], "InvalidGrantTokenException");
    err(&out["dry_run"], "DryRunOperationException");
    err(&out["dry_run_verify"], "DryRunOperationException");
    assert_eq!(
        err(&out["over"], "ValidationException"),
        "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
    err(&out["empty"], "ValidationException");
    assert!(err(&out["no_algorithm"], "ValidationException").contains("'macAlgorithm'"));
    assert_eq!(
        err(&out["symmetric"], "InvalidKeyUsageException"),
        format!("{sym} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.")
    );
    assert_eq!(
        err(&out["verify_symmetric"], "InvalidKeyUsageException"),
        format!("{sym} key usage is ENCRYPT_DECRYPT which is not valid for VerifyMac.")
    );
    err(&out["encrypt_with_hmac"], "InvalidKeyUsageException");
    assert_eq!(
        err(&out["disabled"], "DisabledException"),
        format!("{k} is disabled.")
    );
    assert_eq!(
        err(&out["pending"], "KMSInvalidStateException"),
        format!("{k} is pending deletion.")
    );
}

const ECDH: &str = r#"
import base64
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CURVES = {'ECC_NIST_P256': ec.SECP256R1(), 'ECC_NIST_P384': ec.SECP384R1(), 'ECC_NIST_P521': ec.SECP521R1()}
def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

out = {'specs': {}}
for spec, curve in CURVES.items():
    k = kms.create_key(KeySpec=spec, KeyUsage='KEY_AGREEMENT')['KeyMetadata']['Arn']
    kms_pub = serialization.load_der_public_key(kms.get_public_key(KeyId=k)['PublicKey'])
    peer = ec.generate_private_key(curve)
    d = call('derive_shared_secret', KeyId=k, KeyAgreementAlgorithm='ECDH', PublicKey=spki(peer))
    r = {'arn': k}
    if 'ok' in d:
        r['meta'] = {x: v for x, v in d['ok'].items() if x != 'SharedSecret'}
        r['equal'] = d['ok']['SharedSecret'] == peer.exchange(ec.ECDH(), kms_pub)
        r['len'] = len(d['ok']['SharedSecret'])
    else:
        r['meta'] = d
    other = [c for s, c in CURVES.items() if s != spec][0]
    r['other_curve'] = call('derive_shared_secret', KeyId=k, KeyAgreementAlgorithm='ECDH', PublicKey=spki(ec.generate_private_key(other)))
    r['k1'] = call('derive_shared_secret', KeyId=k, KeyAgreementAlgorithm='ECDH', PublicKey=spki(ec.generate_private_key(ec.SECP256K1())))
    out['specs'][spec] = r
k = kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='KEY_AGREEMENT')['KeyMetadata']
kms.create_alias(AliasName='alias/ecdh', TargetKeyId=k['KeyId'])
P = spki(ec.generate_private_key(ec.SECP256R1()))
out['malformed'] = call('derive_shared_secret', KeyId=k['Arn'], KeyAgreementAlgorithm='ECDH', PublicKey=b'not a key')
out['raw_point'] = call('derive_shared_secret', KeyId=k['Arn'], KeyAgreementAlgorithm='ECDH', PublicKey=P[-65:])
out['alias'] = call('derive_shared_secret', KeyId='alias/ecdh', KeyAgreementAlgorithm='ECDH', PublicKey=P)
out['dry_run'] = call('derive_shared_secret', KeyId=k['Arn'], KeyAgreementAlgorithm='ECDH', PublicKey=P, DryRun=True)
out['no_algorithm'] = call('derive_shared_secret', KeyId=k['Arn'], PublicKey=P)
out['bad_algorithm'] = call('derive_shared_secret', KeyId=k['Arn'], KeyAgreementAlgorithm='DH', PublicKey=P)
signer = kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['Arn']
out['sign_key'] = call('derive_shared_secret', KeyId=signer, KeyAgreementAlgorithm='ECDH', PublicKey=P)
out['sign_with_agreement_key'] = call('sign', KeyId=k['Arn'], Message=b'm', SigningAlgorithm='ECDSA_SHA_256')
kms.disable_key(KeyId=k['Arn'])
out['disabled'] = call('derive_shared_secret', KeyId=k['Arn'], KeyAgreementAlgorithm='ECDH', PublicKey=P)
out['arns'] = {'k': k['Arn'], 'signer': signer}
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// ECDH on every NIST curve: DeriveSharedSecret equals what `cryptography` computes from the
/// KMS public key and the peer's private key; other curves, malformed keys, usage, state,
/// key ids and DryRun answer as documented.
#[test]
fn derive_shared_secret_every_curve() {
    let fe = start();
    let out = fe.boto3(fe.alice(), REGION, ECDH, &[]);
    for (spec, len) in [
        ("ECC_NIST_P256", 32),
        ("ECC_NIST_P384", 48),
        ("ECC_NIST_P521", 66),
    ] {
        let r = &out["specs"][spec];
        assert_eq!(
            r["meta"],
            json!({"KeyId": r["arn"], "KeyAgreementAlgorithm": "ECDH", "KeyOrigin": "AWS_KMS"}),
            "{spec}"
        );
        assert_eq!(
            r["equal"], true,
            "{spec}: the shared secret computed outside"
        );
        assert_eq!(r["len"], len, "{spec}");
        err(&r["other_curve"], "ValidationException");
        err(&r["k1"], "ValidationException");
    }
    let k = out["arns"]["k"].as_str().expect("arn");
    let signer = out["arns"]["signer"].as_str().expect("arn");
    assert_eq!(err(&out["malformed"], "ValidationException"), "");
    assert_eq!(err(&out["raw_point"], "ValidationException"), "");
    assert_eq!(ok(&out["alias"])["KeyId"], k);
    err(&out["dry_run"], "DryRunOperationException");
    assert!(err(&out["no_algorithm"], "ValidationException").contains("'keyAgreementAlgorithm'"));
    err(&out["bad_algorithm"], "ValidationException");
    assert_eq!(
        err(&out["sign_key"], "InvalidKeyUsageException"),
        format!("{signer} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret.")
    );
    err(&out["sign_with_agreement_key"], "InvalidKeyUsageException");
    assert_eq!(
        err(&out["disabled"], "DisabledException"),
        format!("{k} is disabled.")
    );
}

const SM2_ECDH: &str = r#"
import base64
a = kms.create_key(KeySpec='SM2', KeyUsage='KEY_AGREEMENT')['KeyMetadata']['Arn']
b = kms.create_key(KeySpec='SM2', KeyUsage='KEY_AGREEMENT')['KeyMetadata']['Arn']
pa = kms.get_public_key(KeyId=a)['PublicKey']
pb = kms.get_public_key(KeyId=b)['PublicKey']
ab = call('derive_shared_secret', KeyId=a, KeyAgreementAlgorithm='ECDH', PublicKey=pb)
ba = call('derive_shared_secret', KeyId=b, KeyAgreementAlgorithm='ECDH', PublicKey=pa)
p256 = kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='KEY_AGREEMENT')['KeyMetadata']['Arn']
out = {'ab': ab, 'ba': ba,
       'nist_peer': call('derive_shared_secret', KeyId=a, KeyAgreementAlgorithm='ECDH', PublicKey=kms.get_public_key(KeyId=p256)['PublicKey']),
       'sm2_peer_on_nist': call('derive_shared_secret', KeyId=p256, KeyAgreementAlgorithm='ECDH', PublicKey=pa)}
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// SM2 key agreement in a China Region: both sides of two KMS key pairs derive the same
/// 32-byte secret; a NIST peer key is refused and the other way round.
#[test]
fn derive_shared_secret_sm2_in_china() {
    let fe = start();
    let out = fe.boto3(fe.alice(), CHINA, SM2_ECDH, &[]);
    let ab = ok(&out["ab"])["SharedSecret"].as_str().expect("secret");
    assert_eq!(ok(&out["ba"])["SharedSecret"], ab);
    assert_eq!(STANDARD.decode(ab).expect("base64").len(), 32);
    err(&out["nist_peer"], "ValidationException");
    err(&out["sm2_peer_on_nist"], "ValidationException");
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

fn key_of(fe: &RunningFrontend, spec: &str, usage: &str) -> String {
    cli_json(
        fe,
        &["create-key", "--key-spec", spec, "--key-usage", usage],
    )["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("key id")
        .to_owned()
}

/// The AWS CLI v1 with `fileb://`: encrypt with an RSA key (decrypted again), generate-mac
/// and verify-mac, derive-shared-secret with a peer key made by `openssl` (the secret equals
/// `openssl pkeyutl -derive` from the KMS public key).
#[test]
fn aws_cli_v1_rsa_encrypt_mac_and_derive_shared_secret() {
    let fe = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let fileb = |name: &str| format!("fileb://{}", path(name));
    std::fs::write(path("plaintext"), b"encrypted by the AWS CLI v1").expect("write");

    let rsa = key_of(&fe, "RSA_3072", "ENCRYPT_DECRYPT");
    let enc = cli_json(
        &fe,
        &[
            "encrypt",
            "--key-id",
            &rsa,
            "--plaintext",
            &fileb("plaintext"),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
        ],
    );
    assert_eq!(enc["EncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
    let blob = STANDARD
        .decode(enc["CiphertextBlob"].as_str().expect("blob"))
        .expect("base64");
    assert_eq!(blob.len(), 384);
    std::fs::write(path("blob"), blob).expect("write");
    let dec = cli_json(
        &fe,
        &[
            "decrypt",
            "--key-id",
            &rsa,
            "--ciphertext-blob",
            &fileb("blob"),
            "--encryption-algorithm",
            "RSAES_OAEP_SHA_256",
        ],
    );
    assert_eq!(
        STANDARD
            .decode(dec["Plaintext"].as_str().expect("plaintext"))
            .expect("base64"),
        b"encrypted by the AWS CLI v1"
    );

    let hmac = key_of(&fe, "HMAC_384", "GENERATE_VERIFY_MAC");
    let mac = cli_json(
        &fe,
        &[
            "generate-mac",
            "--key-id",
            &hmac,
            "--message",
            &fileb("plaintext"),
            "--mac-algorithm",
            "HMAC_SHA_384",
        ],
    );
    let tag = STANDARD
        .decode(mac["Mac"].as_str().expect("mac"))
        .expect("base64");
    assert_eq!(tag.len(), 48);
    std::fs::write(path("mac"), tag).expect("write");
    let verified = cli_json(
        &fe,
        &[
            "verify-mac",
            "--key-id",
            &hmac,
            "--message",
            &fileb("plaintext"),
            "--mac",
            &fileb("mac"),
            "--mac-algorithm",
            "HMAC_SHA_384",
        ],
    );
    assert_eq!(verified["MacValid"], true);
    let refused = fe.aws_cli(
        fe.alice(),
        REGION,
        &[
            "verify-mac",
            "--key-id",
            &hmac,
            "--message",
            &fileb("blob"),
            "--mac",
            &fileb("mac"),
            "--mac-algorithm",
            "HMAC_SHA_384",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KMSInvalidMacException"));

    // ECDH: a peer key pair made by openssl; its public key goes in as fileb://.
    let ecdh = key_of(&fe, "ECC_NIST_P384", "KEY_AGREEMENT");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        "peer.pem",
    ]);
    openssl(&[
        "pkey", "-in", "peer.pem", "-pubout", "-outform", "DER", "-out", "peer.der",
    ]);
    let derived = cli_json(
        &fe,
        &[
            "derive-shared-secret",
            "--key-id",
            &ecdh,
            "--key-agreement-algorithm",
            "ECDH",
            "--public-key",
            &fileb("peer.der"),
        ],
    );
    assert_eq!(derived["KeyAgreementAlgorithm"], "ECDH");
    let secret = STANDARD
        .decode(derived["SharedSecret"].as_str().expect("secret"))
        .expect("base64");
    let public = cli_json(&fe, &["get-public-key", "--key-id", &ecdh]);
    std::fs::write(
        path("kms.der"),
        STANDARD
            .decode(public["PublicKey"].as_str().expect("public key"))
            .expect("base64"),
    )
    .expect("write");
    openssl(&[
        "pkey", "-pubin", "-inform", "DER", "-in", "kms.der", "-out", "kms.pem",
    ]);
    let outside = openssl(&[
        "pkeyutl", "-derive", "-inkey", "peer.pem", "-peerkey", "kms.pem",
    ]);
    assert_eq!(secret, outside, "openssl derives the same secret");
}

// ---- ML-KEM through aws-sdk-rust (the installed botocore has no Encapsulate/Decapsulate).

use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncapsulationAlgorithmSpec, KeySpec, KeyUsageType};

/// Encapsulates with the public key in Python `cryptography` (OpenSSL, not the front end's
/// aws-lc-rs): prints base64 `shared_secret ciphertext`.
fn encapsulate_outside(spki: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let script = "import sys, base64\nfrom cryptography.hazmat.primitives import serialization\n\
        k = serialization.load_der_public_key(base64.b64decode(sys.argv[1]))\n\
        ss, ct = k.encapsulate()\nprint(base64.b64encode(ss).decode(), base64.b64encode(ct).decode())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &STANDARD.encode(spki)])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "cryptography ML-KEM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut parts = text
        .split_whitespace()
        .map(|p| STANDARD.decode(p).expect("base64"));
    let ss = parts.next().expect("secret");
    let ct = parts.next().expect("ciphertext");
    (ss, ct)
}

/// ML-KEM 512/768/1024 through aws-sdk-rust: Encapsulate returns 32 bytes and the documented
/// ciphertext length, Decapsulate gives the same secret back; a ciphertext encapsulated
/// outside (Python `cryptography`, 768 and 1024: it has no ML-KEM-512) decapsulates to the
/// secret computed outside; a wrong length is `InvalidCiphertextException`; an altered or
/// another key's ciphertext gives a different 32-byte value (implicit rejection).
#[tokio::test(flavor = "multi_thread")]
async fn encapsulate_decapsulate_every_ml_kem_spec() {
    let fe = start();
    let kms = crate::frontend_sdk::alice(&fe);
    let alg = EncapsulationAlgorithmSpec::MlKem;
    let mut previous = None;
    for (spec, ct_len) in [
        (KeySpec::MlKem512, 768),
        (KeySpec::MlKem768, 1088),
        (KeySpec::MlKem1024, 1568),
    ] {
        let key = kms
            .create_key()
            .key_spec(spec.clone())
            .key_usage(KeyUsageType::EncapsulateDecapsulate)
            .send()
            .await
            .expect("create key");
        let arn = key
            .key_metadata()
            .expect("metadata")
            .arn()
            .expect("arn")
            .to_owned();
        let enc = kms
            .encapsulate()
            .key_id(&arn)
            .encapsulation_algorithm(alg.clone())
            .send()
            .await
            .expect("encapsulate");
        assert_eq!(enc.key_id(), Some(arn.as_str()));
        assert_eq!(enc.encapsulation_algorithm(), Some(&alg));
        let ss = enc.shared_secret().expect("secret").as_ref().to_vec();
        let ct = enc
            .shared_secret_ciphertext_blob()
            .expect("ciphertext")
            .as_ref()
            .to_vec();
        assert_eq!(ss.len(), 32, "{spec:?}");
        assert_eq!(ct.len(), ct_len, "{spec:?}");
        let decapsulate = |c: Vec<u8>, id: String| {
            let kms = kms.clone();
            let alg = alg.clone();
            async move {
                kms.decapsulate()
                    .key_id(id)
                    .shared_secret_ciphertext_blob(Blob::new(c))
                    .encapsulation_algorithm(alg)
                    .send()
                    .await
            }
        };
        let dec = decapsulate(ct.clone(), arn.clone())
            .await
            .expect("decapsulate");
        assert_eq!(dec.shared_secret().expect("secret").as_ref(), &ss[..]);
        assert_eq!(dec.key_id(), Some(arn.as_str()));
        let mut altered = ct.clone();
        altered[0] ^= 1;
        let rejected = decapsulate(altered, arn.clone())
            .await
            .expect("implicit rejection");
        let rejected = rejected.shared_secret().expect("secret").as_ref().to_vec();
        assert_eq!(rejected.len(), 32);
        assert_ne!(rejected, ss, "{spec:?}: altered ciphertext");
        for bad in [ct_len - 1, ct_len + 1] {
            let e = decapsulate(vec![1; bad], arn.clone())
                .await
                .expect_err("wrong length");
            assert_eq!(
                e.code(),
                Some("InvalidCiphertextException"),
                "{spec:?} {bad}"
            );
        }
        if spec != KeySpec::MlKem512 {
            let public = kms
                .get_public_key()
                .key_id(&arn)
                .send()
                .await
                .expect("public key");
            let spki = public.public_key().expect("spki").as_ref().to_vec();
            let (outside_ss, outside_ct) = encapsulate_outside(&spki);
            let dec = decapsulate(outside_ct, arn.clone())
                .await
                .expect("decapsulate");
            assert_eq!(
                dec.shared_secret().expect("secret").as_ref(),
                &outside_ss[..],
                "{spec:?}: encapsulated outside"
            );
        }
        previous = Some((arn, ct, ss));
    }
    // The ciphertext of another ML_KEM_1024 key: a different 32-byte value, no error.
    let (kem, ct, ss) = previous.expect("the ML_KEM_1024 key");
    let other = kms
        .create_key()
        .key_spec(KeySpec::MlKem1024)
        .key_usage(KeyUsageType::EncapsulateDecapsulate)
        .send()
        .await
        .expect("create key");
    let other = other
        .key_metadata()
        .expect("metadata")
        .arn()
        .expect("arn")
        .to_owned();
    let foreign = kms
        .decapsulate()
        .key_id(&other)
        .shared_secret_ciphertext_blob(Blob::new(ct))
        .encapsulation_algorithm(alg.clone())
        .send()
        .await
        .expect("implicit rejection");
    let foreign = foreign.shared_secret().expect("secret").as_ref().to_vec();
    assert_eq!(foreign.len(), 32);
    assert_ne!(foreign, ss);
    // Errors: usage, algorithm required, DryRun, disabled.
    let sym = kms.create_key().send().await.expect("symmetric");
    let sym = sym
        .key_metadata()
        .expect("metadata")
        .arn()
        .expect("arn")
        .to_owned();
    let e = kms
        .encapsulate()
        .key_id(&sym)
        .encapsulation_algorithm(alg.clone())
        .send()
        .await
        .expect_err("symmetric key");
    assert_eq!(e.code(), Some("InvalidKeyUsageException"));
    assert_eq!(
        e.message(),
        Some(
            format!("{sym} key usage is ENCRYPT_DECRYPT which is not valid for Encapsulate.")
                .as_str()
        )
    );
    let e = kms
        .encapsulate()
        .key_id(&kem)
        .encapsulation_algorithm(alg.clone())
        .dry_run(true)
        .send()
        .await
        .expect_err("dry run");
    assert_eq!(e.code(), Some("DryRunOperationException"));
    kms.disable_key()
        .key_id(&kem)
        .send()
        .await
        .expect("disable");
    let e = kms
        .decapsulate()
        .key_id(&kem)
        .shared_secret_ciphertext_blob(Blob::new(vec![0; 1568]))
        .encapsulation_algorithm(alg.clone())
        .send()
        .await
        .expect_err("disabled");
    assert_eq!(e.code(), Some("DisabledException"));
}

/// The botocore release the ML-KEM test pins (the first with Encapsulate/Decapsulate is
/// 1.44.5; the default install here is older). `scripts/test` installs it apart from the
/// system one, so the other suites keep the default botocore.
const PINNED_BOTOCORE: &str = "1.44.8";

const ML_KEM_BOTOCORE: &str = r#"
import base64, json, sys
import botocore, botocore.session
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
assert botocore.__version__ == sys.argv[1], botocore.__version__
kms = botocore.session.get_session().create_client('kms', config=Config(retries={'max_attempts': 1}))

def call(op, **kw):
    try:
        r = getattr(kms, op)(**kw)
        r.pop('ResponseMetadata', None)
        return {'ok': r}
    except botocore.exceptions.ClientError as e:
        return {'error': e.response['Error'].get('Code'), 'message': e.response['Error'].get('Message'), 'status': e.response['ResponseMetadata'].get('HTTPStatusCode')}

out = {}
for spec in ('ML_KEM_512', 'ML_KEM_768', 'ML_KEM_1024'):
    k = kms.create_key(KeySpec=spec, KeyUsage='ENCAPSULATE_DECAPSULATE')['KeyMetadata']['Arn']
    pub = kms.get_public_key(KeyId=k)
    r = {'arn': k, 'algorithms': pub.get('EncapsulationAlgorithms')}
    e = kms.encapsulate(KeyId=k, EncapsulationAlgorithm='ML_KEM')
    r['lens'] = [len(e['SharedSecret']), len(e['SharedSecretCiphertextBlob'])]
    r['meta'] = {x: v for x, v in e.items() if x in ('KeyId', 'EncapsulationAlgorithm')}
    d = kms.decapsulate(KeyId=k, SharedSecretCiphertextBlob=e['SharedSecretCiphertextBlob'], EncapsulationAlgorithm='ML_KEM')
    r['same'] = d['SharedSecret'] == e['SharedSecret']
    if spec != 'ML_KEM_512':  # cryptography has no ML-KEM-512
        ss, ct = serialization.load_der_public_key(pub['PublicKey']).encapsulate()
        d = kms.decapsulate(KeyId=k, SharedSecretCiphertextBlob=ct, EncapsulationAlgorithm='ML_KEM')
        r['outside'] = d['SharedSecret'] == ss
    r['short'] = call('decapsulate', KeyId=k, SharedSecretCiphertextBlob=e['SharedSecretCiphertextBlob'][:-1], EncapsulationAlgorithm='ML_KEM')
    out[spec] = r
print(json.dumps(out, default=lambda b: base64.b64encode(b).decode()))
"#;

/// Encapsulate/Decapsulate through botocore pinned to a release whose model has them:
/// every ML-KEM spec, ciphertexts encapsulated outside (Python `cryptography`) decapsulate
/// to the secret computed outside, a short ciphertext is `InvalidCiphertextException`.
#[test]
fn ml_kem_through_pinned_botocore() {
    let dir = testkit::bins::workspace_root()
        .join("target/python")
        .join(format!("botocore-{PINNED_BOTOCORE}"));
    assert!(
        dir.join("botocore").is_dir(),
        "botocore {PINNED_BOTOCORE} is missing: run scripts/test, or `python3 -m pip install --no-deps --target {} botocore=={PINNED_BOTOCORE}`",
        dir.display()
    );
    let fe = start();
    let out = std::process::Command::new("python3")
        .args(["-c", ML_KEM_BOTOCORE, PINNED_BOTOCORE])
        .envs(fe.client_env(fe.alice(), REGION))
        .env("PYTHONPATH", &dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "botocore script failed:\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        fe.logs()
    );
    let out: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for (spec, ct_len) in [
        ("ML_KEM_512", 768),
        ("ML_KEM_768", 1088),
        ("ML_KEM_1024", 1568),
    ] {
        let r = &out[spec];
        assert_eq!(r["algorithms"], json!(["ML_KEM"]), "{spec}");
        assert_eq!(r["lens"], json!([32, ct_len]), "{spec}");
        assert_eq!(
            r["meta"],
            json!({"KeyId": r["arn"], "EncapsulationAlgorithm": "ML_KEM"}),
            "{spec}"
        );
        assert_eq!(r["same"], true, "{spec}");
        if spec != "ML_KEM_512" {
            assert_eq!(r["outside"], true, "{spec}: encapsulated outside");
        }
        err(&r["short"], "InvalidCiphertextException");
    }
}
