//! Imported key material (issue 18) through boto3: GetParametersForImport and
//! ImportKeyMaterial for symmetric, HMAC, RSA and ECC keys, their errors, expiry (driven by
//! the test clock), DeleteImportedKeyMaterial and re-import, new material for an on-demand
//! rotation, the condition keys, a process killed during an import, and SM2 wrapping keys
//! (SM2PKE) with SM2 material in a China Region. The material is wrapped by Python
//! `cryptography` (RSA-OAEP; RSA-OAEP + AES key wrap with padding, RFC 5649) or the `openssl`
//! command (SM2PKE, whose DER `SEQUENCE { x, y, C3, C2 }` is AWS's format), never by the
//! front end's code.

use testkit::frontend::{FrontendFixture, RunningFrontend};

const REGION: &str = "us-east-1";
const CHINA: &str = "cn-north-1";

/// Python helpers: `advance(seconds)` moves the front end's clock (and sweeps);
/// `params(k, alg, spec)` calls GetParametersForImport; `wrap(p, material)` wraps like the
/// AWS documentation says for the parameters' algorithm (SM2PKE: `openssl pkeyutl`);
/// `ossl(args, files)` runs the `openssl` command in a directory holding `files`; `imp(k, material, **kw)` does both
/// and imports; `server_now(p)` is the front end's clock (ParametersValidTo − 24 h).
const HELPERS: &str = r#"
import os, ssl, urllib.request, datetime, hmac, hashlib, subprocess, tempfile
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, ec
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
DAY = 86400
def advance(seconds):
    ctx = ssl.create_default_context(cafile=os.environ['AWS_CA_BUNDLE'])
    req = urllib.request.Request(os.environ['AWS_ENDPOINT_URL_KMS'] + '/_test/advance-clock',
                                 data=json.dumps({'seconds': seconds}).encode(), method='POST')
    urllib.request.urlopen(req, context=ctx).read()
def params(k, alg='RSAES_OAEP_SHA_256', spec='RSA_2048'):
    p = kms.get_parameters_for_import(KeyId=k, WrappingAlgorithm=alg, WrappingKeySpec=spec)
    p['alg'] = alg
    return p
def ossl(args, files={}, out=None):
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)
        r = subprocess.run(['openssl'] + args, cwd=d, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError('openssl ' + ' '.join(args) + ': ' + r.stderr.decode())
        if out is None:
            return r.stdout
        with open(os.path.join(d, out), 'rb') as f:
            return f.read()
def wrap(p, material):
    if p['alg'] == 'SM2PKE':
        return ossl(['pkeyutl', '-encrypt', '-pubin', '-keyform', 'DER', '-inkey', 'pub.der',
                     '-in', 'm', '-out', 'ct'], {'pub.der': p['PublicKey'], 'm': material}, 'ct')
    pub = serialization.load_der_public_key(p['PublicKey'])
    h = hashes.SHA256() if p['alg'].endswith('SHA_256') else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)
    if p['alg'].startswith('RSA_AES_KEY_WRAP'):
        k = os.urandom(32)
        return pub.encrypt(k, oaep) + aes_key_wrap_with_padding(k, material)
    return pub.encrypt(material, oaep)
def server_now(p):
    return p['ParametersValidTo'] - datetime.timedelta(days=1)
def imp(k, material, p=None, **kw):
    p = p or params(k)
    if 'ExpirationModel' not in kw:
        kw['ExpirationModel'] = 'KEY_MATERIAL_DOES_NOT_EXPIRE'
    return call('import_key_material', KeyId=k, ImportToken=p['ImportToken'],
                EncryptedKeyMaterial=wrap(p, material), **kw)
def state(k):
    return kms.describe_key(KeyId=k)['KeyMetadata']['KeyState']
def dec(blob):
    r = call('decrypt', CiphertextBlob=blob)
    return r['ok']['Plaintext'].decode() if 'ok' in r else r['error']
"#;

fn run(f: &RunningFrontend, script: &str, args: &[&str]) -> serde_json::Value {
    f.boto3(f.alice(), REGION, &format!("{HELPERS}{script}"), args)
}

#[test]
fn symmetric_import_errors_expiry_deletion_and_reimport() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
k = kms.create_key(Origin='EXTERNAL')['KeyMetadata']
arn, k = k['Arn'], k['KeyId']
other = kms.create_key(Origin='EXTERNAL')['KeyMetadata']['KeyId']
material = os.urandom(32)
out['pending_encrypt'] = call('encrypt', KeyId=k, Plaintext=b'x')['message']
out['no_material_id_before_import'] = 'CurrentKeyMaterialId' not in kms.describe_key(KeyId=k)['KeyMetadata']
p = params(k)
out['pub_len'] = len(p['PublicKey']) > 250
out['valid_hours'] = round((p['ParametersValidTo'] - server_now(p)).total_seconds() / 3600)
out['non_external'] = call('get_parameters_for_import', KeyId=kms.create_key()['KeyMetadata']['KeyId'],
    WrappingAlgorithm='RSAES_OAEP_SHA_256', WrappingKeySpec='RSA_2048')['error']
out['key_wrap_for_symmetric'] = call('get_parameters_for_import', KeyId=k,
    WrappingAlgorithm='RSA_AES_KEY_WRAP_SHA_256', WrappingKeySpec='RSA_2048')['error']
# Errors, none of which changes the key.
po = params(other)
out['other_token'] = call('import_key_material', KeyId=k, ImportToken=po['ImportToken'],
    EncryptedKeyMaterial=wrap(po, material), ExpirationModel='KEY_MATERIAL_DOES_NOT_EXPIRE')['error']
out['garbage_token'] = call('import_key_material', KeyId=k, ImportToken=b'garbage' * 10,
    EncryptedKeyMaterial=wrap(p, material), ExpirationModel='KEY_MATERIAL_DOES_NOT_EXPIRE')['error']
p2 = params(k)
out['other_public_key'] = call('import_key_material', KeyId=k, ImportToken=p['ImportToken'],
    EncryptedKeyMaterial=wrap(p2, material), ExpirationModel='KEY_MATERIAL_DOES_NOT_EXPIRE')['error']
out['malformed'] = imp(k, os.urandom(16), p)['error']
out['no_valid_to'] = call('import_key_material', KeyId=k, ImportToken=p['ImportToken'],
    EncryptedKeyMaterial=wrap(p, material))['message']
out['still_pending'] = state(k)
# The first import, expiring in 10 days.
valid_to = server_now(p) + datetime.timedelta(days=10)
r = imp(k, material, p, ExpirationModel='KEY_MATERIAL_EXPIRES', ValidTo=valid_to)
out['import'] = sorted(r['ok'].keys())
m = kms.describe_key(KeyId=k)['KeyMetadata']
out['meta'] = [m['KeyState'], m['Enabled'], m['ExpirationModel'],
               abs(m['ValidTo'].timestamp() - valid_to.timestamp()) < 1,
               m.get('CurrentKeyMaterialId') == r['ok']['KeyMaterialId']]
c1 = kms.encrypt(KeyId=k, Plaintext=b'imported')['CiphertextBlob']
out['incorrect'] = imp(k, os.urandom(32))['error']
# A token past its 24 hours.
stale = params(k)
advance(25 * 3600)
out['expired_token'] = imp(k, material, stale)['error']
# Deleting the material: PendingImport; crypto refused, the rest keeps working.
out['delete'] = sorted(call('delete_imported_key_material', KeyId=k)['ok'].keys())
m = kms.describe_key(KeyId=k)['KeyMetadata']
out['after_delete'] = [m['KeyState'], m['Enabled'], 'ExpirationModel' in m,
                      m.get('CurrentKeyMaterialId') == r['ok']['KeyMaterialId']]
out['crypto'] = [call('encrypt', KeyId=k, Plaintext=b'x')['error'], dec(c1)]
out['still_works'] = [
    'ok' in call('tag_resource', KeyId=k, Tags=[{'TagKey': 't', 'TagValue': 'v'}]),
    'ok' in call('create_alias', AliasName='alias/imported', TargetKeyId=k),
    'ok' in call('update_key_description', KeyId=k, Description='d'),
    'ok' in call('get_parameters_for_import', KeyId=k, WrappingAlgorithm='RSAES_OAEP_SHA_1', WrappingKeySpec='RSA_3072'),
]
out['enable'] = call('enable_key', KeyId=k)['error']
# Re-importing the same material restores the key and its old ciphertexts.
out['reimport'] = 'ok' in imp(k, material)
m = kms.describe_key(KeyId=k)['KeyMetadata']
out['restored'] = [m['KeyState'], m['ExpirationModel'], 'ValidTo' in m, dec(c1)]
# Expiry on the clock: material valid for 2 days is gone after 3.
p = params(k)
imp(k, material, p, ExpirationModel='KEY_MATERIAL_EXPIRES', ValidTo=server_now(p) + datetime.timedelta(days=2))
advance(DAY)
out['day1'] = [state(k), dec(c1)]
advance(2 * DAY)
out['expired'] = [state(k), dec(c1)]
# A key pending deletion stays so when its material is deleted.
imp(k, material)
kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
call('delete_imported_key_material', KeyId=k)
out['pending_deletion'] = state(k)
out['arn'] = arn
print(json.dumps(out, default=str))
"#;
    let r = run(&f, script, &[]);
    let arn = r["arn"].as_str().expect("arn").to_owned();
    assert_eq!(
        r["pending_encrypt"],
        format!("{arn} is pending import."),
        "{r}"
    );
    assert_eq!(r["no_material_id_before_import"], true, "{r}");
    assert_eq!(r["pub_len"], true, "{r}");
    assert_eq!(r["valid_hours"], 24, "{r}");
    assert_eq!(r["non_external"], "UnsupportedOperationException", "{r}");
    assert_eq!(r["key_wrap_for_symmetric"], "ValidationException", "{r}");
    assert_eq!(r["other_token"], "InvalidImportTokenException", "{r}");
    assert_eq!(r["garbage_token"], "InvalidImportTokenException", "{r}");
    assert_eq!(r["other_public_key"], "InvalidCiphertextException", "{r}");
    assert_eq!(r["malformed"], "InvalidCiphertextException", "{r}");
    assert_eq!(
        r["no_valid_to"],
        "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES",
        "{r}"
    );
    assert_eq!(r["still_pending"], "PendingImport", "{r}");
    assert_eq!(
        r["import"],
        serde_json::json!(["KeyId", "KeyMaterialId"]),
        "{r}"
    );
    assert_eq!(
        r["meta"],
        serde_json::json!(["Enabled", true, "KEY_MATERIAL_EXPIRES", true, true]),
        "{r}"
    );
    assert_eq!(r["incorrect"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(r["expired_token"], "ExpiredImportTokenException", "{r}");
    assert_eq!(
        r["delete"],
        serde_json::json!(["KeyId", "KeyMaterialId"]),
        "{r}"
    );
    assert_eq!(
        r["after_delete"],
        serde_json::json!(["PendingImport", false, false, true]),
        "{r}"
    );
    assert_eq!(
        r["crypto"],
        serde_json::json!(["KMSInvalidStateException", "KMSInvalidStateException"]),
        "{r}"
    );
    assert_eq!(
        r["still_works"],
        serde_json::json!([true, true, true, true]),
        "{r}"
    );
    assert_eq!(r["enable"], "KMSInvalidStateException", "{r}");
    assert_eq!(r["reimport"], true, "{r}");
    assert_eq!(
        r["restored"],
        serde_json::json!(["Enabled", "KEY_MATERIAL_DOES_NOT_EXPIRE", false, "imported"]),
        "{r}"
    );
    assert_eq!(r["day1"], serde_json::json!(["Enabled", "imported"]), "{r}");
    assert_eq!(
        r["expired"],
        serde_json::json!(["PendingImport", "KMSInvalidStateException"]),
        "{r}"
    );
    assert_eq!(r["pending_deletion"], "PendingDeletion", "{r}");
}

#[test]
fn hmac_rsa_and_ecc_material_is_imported_and_used() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
# HMAC: RSA-OAEP with SHA-1; the MAC is the one Python computes with the same key.
h = kms.create_key(Origin='EXTERNAL', KeySpec='HMAC_256', KeyUsage='GENERATE_VERIFY_MAC')['KeyMetadata']['KeyId']
hk = os.urandom(32)
out['hmac_import'] = 'ok' in imp(h, hk, params(h, 'RSAES_OAEP_SHA_1', 'RSA_4096'))
mac = kms.generate_mac(KeyId=h, Message=b'msg', MacAlgorithm='HMAC_SHA_256')['Mac']
out['hmac'] = mac == hmac.new(hk, b'msg', hashlib.sha256).digest()
# RSA: only RSA_AES_KEY_WRAP; the public key is the imported one; signatures verify.
r = kms.create_key(Origin='EXTERNAL', KeySpec='RSA_2048', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
out['rsa_oaep'] = call('get_parameters_for_import', KeyId=r, WrappingAlgorithm='RSAES_OAEP_SHA_256', WrappingKeySpec='RSA_4096')['error']
rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
der = rk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
out['rsa_wrong_size'] = imp(r, rsa.generate_private_key(public_exponent=65537, key_size=3072).private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    params(r, 'RSA_AES_KEY_WRAP_SHA_256', 'RSA_3072'))['error']
out['rsa_import'] = 'ok' in imp(r, der, params(r, 'RSA_AES_KEY_WRAP_SHA_256', 'RSA_3072'))
spki = rk.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
out['rsa_public'] = kms.get_public_key(KeyId=r)['PublicKey'] == spki
sig = kms.sign(KeyId=r, Message=b'm', SigningAlgorithm='RSASSA_PSS_SHA_256')['Signature']
rk.public_key().verify(sig, b'm', padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
out['rsa_sign'] = True
out['rsa_other'] = imp(r, rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    params(r, 'RSA_AES_KEY_WRAP_SHA_1', 'RSA_2048'))['error']
# ECC P-256: RSA-OAEP works; ECDSA signatures verify with the imported public key.
e = kms.create_key(Origin='EXTERNAL', KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
ek = ec.generate_private_key(ec.SECP256R1())
eder = ek.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
out['ecc_wrong_curve'] = imp(e, ec.generate_private_key(ec.SECP384R1()).private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))['error']
out['ecc_import'] = 'ok' in imp(e, eder, params(e, 'RSAES_OAEP_SHA_256', 'RSA_2048'))
sig = kms.sign(KeyId=e, Message=b'm', SigningAlgorithm='ECDSA_SHA_256')['Signature']
ek.public_key().verify(sig, b'm', ec.ECDSA(hashes.SHA256()))
out['ecc_sign'] = True
p521 = kms.create_key(Origin='EXTERNAL', KeySpec='ECC_NIST_P521', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId']
out['p521_rsa2048_oaep'] = call('get_parameters_for_import', KeyId=p521, WrappingAlgorithm='RSAES_OAEP_SHA_256', WrappingKeySpec='RSA_2048')['error']
out['asym_import_type'] = imp(e, eder, ImportType='EXISTING_KEY_MATERIAL')['error']
print(json.dumps(out))
"#;
    let r = run(&f, script, &[]);
    for field in [
        "hmac_import",
        "hmac",
        "rsa_import",
        "rsa_public",
        "rsa_sign",
        "ecc_import",
        "ecc_sign",
    ] {
        assert_eq!(r[field], true, "{field}: {r}");
    }
    assert_eq!(r["rsa_oaep"], "ValidationException", "{r}");
    assert_eq!(r["p521_rsa2048_oaep"], "ValidationException", "{r}");
    assert_eq!(r["rsa_wrong_size"], "InvalidCiphertextException", "{r}");
    assert_eq!(r["ecc_wrong_curve"], "InvalidCiphertextException", "{r}");
    assert_eq!(r["rsa_other"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(r["asym_import_type"], "ValidationException", "{r}");
}

#[test]
fn new_imported_material_becomes_current_by_on_demand_rotation() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
k = kms.create_key(Origin='EXTERNAL')['KeyMetadata']['KeyId']
m1, m2, m3 = os.urandom(32), os.urandom(32), os.urandom(32)
id1 = imp(k, m1, KeyMaterialDescription='first')['ok']['KeyMaterialId']
c1 = kms.encrypt(KeyId=k, Plaintext=b'one')['CiphertextBlob']
out['nothing_pending'] = call('rotate_key_on_demand', KeyId=k)['message']
id2 = imp(k, m2, ImportType='NEW_KEY_MATERIAL', KeyMaterialDescription='second')['ok']['KeyMaterialId']
out['ids'] = [len(id1), id1 != id2]
out['current_before'] = kms.describe_key(KeyId=k)['KeyMetadata']['CurrentKeyMaterialId'] == id1
second_new = imp(k, m3, ImportType='NEW_KEY_MATERIAL')
out['second_new'] = [second_new['error'], id2 in second_new['message']]
out['again_as_new'] = imp(k, m1, ImportType='NEW_KEY_MATERIAL')['error']
out['wrong_id'] = imp(k, m1, ImportType='EXISTING_KEY_MATERIAL', KeyMaterialId=id2)['error']
allm = kms.list_key_rotations(KeyId=k, IncludeKeyMaterial='ALL_KEY_MATERIAL')['Rotations']
out['listed'] = [(r['KeyMaterialState'], r['ImportState'], r.get('KeyMaterialDescription')) for r in allm]
kms.rotate_key_on_demand(KeyId=k)
out['current_after'] = kms.describe_key(KeyId=k)['KeyMetadata']['CurrentKeyMaterialId'] == id2
c2 = kms.encrypt(KeyId=k, Plaintext=b'two')['CiphertextBlob']
out['dec'] = [dec(c1), dec(c2)]
out['rotations'] = [(r['KeyMaterialId'] == id2, r['RotationType']) for r in kms.list_key_rotations(KeyId=k)['Rotations']]
# Deleting the older material takes the key to PendingImport until it is imported again.
kms.delete_imported_key_material(KeyId=k, KeyMaterialId=id1)
out['older_deleted'] = [state(k), dec(c2)]
imp(k, m1, ImportType='EXISTING_KEY_MATERIAL', KeyMaterialId=id1)
out['older_back'] = [state(k), dec(c1), dec(c2)]
print(json.dumps(out))
"#;
    let r = run(&f, script, &[]);
    assert!(
        r["nothing_pending"]
            .as_str()
            .is_some_and(|m| m.starts_with("No available key material pending rotation")),
        "{r}"
    );
    assert_eq!(r["ids"], serde_json::json!([64, true]), "{r}");
    assert_eq!(r["current_before"], true, "{r}");
    assert_eq!(
        r["second_new"],
        serde_json::json!(["KMSInvalidStateException", true]),
        "{r}"
    );
    assert_eq!(r["again_as_new"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(r["wrong_id"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(
        r["listed"],
        serde_json::json!([
            ["CURRENT", "IMPORTED", "first"],
            ["PENDING_ROTATION", "IMPORTED", "second"]
        ]),
        "{r}"
    );
    assert_eq!(r["current_after"], true, "{r}");
    assert_eq!(r["dec"], serde_json::json!(["one", "two"]), "{r}");
    assert_eq!(
        r["rotations"],
        serde_json::json!([[true, "ON_DEMAND"]]),
        "{r}"
    );
    assert_eq!(
        r["older_deleted"],
        serde_json::json!(["PendingImport", "KMSInvalidStateException"]),
        "{r}"
    );
    assert_eq!(
        r["older_back"],
        serde_json::json!(["Enabled", "one", "two"]),
        "{r}"
    );
}

#[test]
fn the_wrapping_and_expiration_condition_keys_are_evaluated() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
k = kms.create_key(Origin='EXTERNAL')['KeyMetadata']['KeyId']
policy = {
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
     "Action": "kms:*", "Resource": "*"},
    {"Sid": "sha256 only", "Effect": "Deny", "Principal": {"AWS": "*"},
     "Action": "kms:GetParametersForImport", "Resource": "*",
     "Condition": {"StringEquals": {"kms:WrappingAlgorithm": "RSAES_OAEP_SHA_1"}}},
    {"Sid": "big wrapping keys", "Effect": "Deny", "Principal": {"AWS": "*"},
     "Action": "kms:GetParametersForImport", "Resource": "*",
     "Condition": {"StringEquals": {"kms:WrappingKeySpec": "RSA_2048"}}},
    {"Sid": "expiring material", "Effect": "Deny", "Principal": {"AWS": "*"},
     "Action": "kms:ImportKeyMaterial", "Resource": "*",
     "Condition": {"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}}}
  ]
}
kms.put_key_policy(KeyId=k, PolicyName='default', Policy=json.dumps(policy))
out['sha1'] = call('get_parameters_for_import', KeyId=k, WrappingAlgorithm='RSAES_OAEP_SHA_1', WrappingKeySpec='RSA_3072').get('error')
out['rsa2048'] = call('get_parameters_for_import', KeyId=k, WrappingAlgorithm='RSAES_OAEP_SHA_256', WrappingKeySpec='RSA_2048').get('error')
p = params(k, 'RSAES_OAEP_SHA_256', 'RSA_3072')
material = os.urandom(32)
out['forever'] = imp(k, material, p).get('error')
out['expiring'] = 'ok' in imp(k, material, p, ExpirationModel='KEY_MATERIAL_EXPIRES',
    ValidTo=server_now(p) + datetime.timedelta(days=30))
print(json.dumps(out))
"#;
    let r = run(&f, script, &[]);
    assert_eq!(r["sha1"], "AccessDeniedException", "{r}");
    assert_eq!(r["rsa2048"], "AccessDeniedException", "{r}");
    assert_eq!(r["forever"], "AccessDeniedException", "{r}");
    assert_eq!(r["expiring"], true, "{r}");
}

#[test]
fn a_process_killed_during_an_import_leaves_the_key_pending_import_or_imported() {
    let f = FrontendFixture::new().start();
    let setup = r#"
k = kms.create_key(Origin='EXTERNAL')['KeyMetadata']['KeyId']
print(json.dumps({'key': k}))
"#;
    let key = run(&f, setup, &[])["key"].as_str().expect("key").to_owned();
    let import = r#"
material = bytes.fromhex(sys.argv[2])
try:
    r = imp(sys.argv[1], material)
    ok = 'ok' in r
except Exception:
    ok = False
print(json.dumps({'ok': ok}))
"#;
    let check = r#"
k = sys.argv[1]
out = {'state': state(k)}
if out['state'] == 'Enabled':
    out['round_trip'] = dec(kms.encrypt(KeyId=k, Plaintext=b'rt')['CiphertextBlob'])
print(json.dumps(out))
"#;
    let material = "42".repeat(32);
    let file = f.fixture.home.path().join("data/kms.sqlite.failpoint");
    let mut f = f;
    for (point, lands) in [
        ("key-material-before-commit", false),
        ("key-material-after-commit", true),
    ] {
        std::fs::write(&file, point).expect("arm failpoint");
        let r = run(&f, import, &[&key, &material]);
        assert_eq!(
            r["ok"], false,
            "{point}: answered although the process aborted"
        );
        std::fs::remove_file(&file).expect("disarm failpoint");
        f.kill_hard();
        let fixture = std::mem::replace(&mut f.fixture, FrontendFixture::new());
        drop(f);
        f = RunningFrontend::spawn(fixture);
        let r = run(&f, check, &[&key]);
        if lands {
            assert_eq!(r["state"], "Enabled", "{point}: {r}");
            assert_eq!(r["round_trip"], "rt", "{point}: {r}");
        } else {
            assert_eq!(r["state"], "PendingImport", "{point}: {r}");
        }
    }
    // Importing the same material again (EXISTING) still works after both crashes.
    let r = run(&f, import, &[&key, &material]);
    assert_eq!(r["ok"], true, "{r}");
}

/// SM2 key pairs made by the `openssl` command: `key(n)` writes `n.pem` and returns the
/// PKCS#8 DER private key and the SPKI DER public key.
const SM2_HELPERS: &str = r#"
def openssl_key(*genpkey):
    pem = ossl(['genpkey'] + list(genpkey) + ['-out', 'k.pem'], {}, 'k.pem')
    der = ossl(['pkcs8', '-topk8', '-nocrypt', '-in', 'k.pem', '-outform', 'DER'], {'k.pem': pem})
    spki = ossl(['pkey', '-in', 'k.pem', '-pubout', '-outform', 'DER'], {'k.pem': pem})
    return pem, der, spki
def sm2_key():
    return openssl_key('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:SM2')
def sm2_params(k):
    return params(k, 'SM2PKE', 'SM2')
"#;

/// In a China Region (`cn-north-1`): SM2 wrapping keys (`SM2` / `SM2PKE`) wrap SM2 private
/// keys made by `openssl` into SM2 keys of every usage (SIGN_VERIFY: the SM2DSA signature
/// verifies with `openssl`; ENCRYPT_DECRYPT: a ciphertext made by `openssl` decrypts;
/// KEY_AGREEMENT: the public key is the imported one), symmetric material (which then
/// encrypts and decrypts) and an RSA key; RSA wrapping keys with RSA-OAEP still work there.
/// Refused: SM2 wrapping outside China, RSA_AES_KEY_WRAP in China, mixed pairs, another
/// curve, a tampered wrapping.
///
/// AWS documents neither the error of a wrapping offered in other Regions nor which SM2PKE
/// combinations it accepts (`kms-keys-in-use.md` §6, UNVERIFIED). A real client expects
/// what the front end answers: ValidationException, as CreateKey answers a key spec of the
/// wrong Regions, and SM2PKE for every kind of material, since it has no length limit and
/// is the only wrapping an RSA key can use in China. Symmetric material is 32 bytes here
/// (AWS takes 16-byte SM4 keys in China): the front end's China symmetric keys are AES-256.
#[test]
fn sm2_wrapping_imports_sm2_symmetric_and_rsa_material_in_china() {
    let f = FrontendFixture::new().start();
    let script = r#"
out = {}
def create(spec, usage=None):
    kw = {'KeyUsage': usage} if usage else {}
    return kms.create_key(Origin='EXTERNAL', KeySpec=spec, **kw)['KeyMetadata']['KeyId']
# The wrapping key is an SPKI on the SM2 curve.
s = create('SM2', 'SIGN_VERIFY')
p = sm2_params(s)
out['wrapping_key_curve'] = 'ASN1 OID: SM2' in ossl(['pkey', '-pubin', '-inform', 'DER', '-in', 'pub.der',
    '-text_pub', '-noout'], {'pub.der': p['PublicKey']}).decode()
# SIGN_VERIFY: the wrong curve and a tampered wrapping are refused; the key then signs
# with the imported private key.
out['p256_into_sm2'] = imp(s, openssl_key('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256')[1], p)['error']
pem, der, spki = sm2_key()
bad = bytearray(wrap(p, der))
bad[-1] ^= 1
out['tampered'] = call('import_key_material', KeyId=s, ImportToken=p['ImportToken'], EncryptedKeyMaterial=bytes(bad),
    ExpirationModel='KEY_MATERIAL_DOES_NOT_EXPIRE')['error']
out['sign_import'] = 'ok' in imp(s, der, p)
out['sign_public'] = kms.get_public_key(KeyId=s)['PublicKey'] == spki
sig = kms.sign(KeyId=s, Message=b'message', SigningAlgorithm='SM2DSA')['Signature']
ossl(['pkeyutl', '-verify', '-pubin', '-keyform', 'DER', '-inkey', 'pub.der', '-rawin', '-in', 'msg',
      '-sigfile', 'sig', '-digest', 'sm3', '-pkeyopt', 'distid:1234567812345678'],
     {'pub.der': spki, 'msg': b'message', 'sig': sig})
out['sign_verifies_outside'] = True
out['sign_other'] = imp(s, sm2_key()[1], sm2_params(s))['error']
# ENCRYPT_DECRYPT: wrapped once with SM2PKE and once with RSA-OAEP (RSA wrapping keys stay
# available in China); a ciphertext openssl makes with the public key decrypts in KMS.
e = create('SM2', 'ENCRYPT_DECRYPT')
pem, der, spki = sm2_key()
out['encrypt_import_oaep'] = 'ok' in imp(e, der, params(e, 'RSAES_OAEP_SHA_256', 'RSA_3072'))
out['encrypt_reimport_sm2pke'] = 'ok' in imp(e, der, sm2_params(e))
ct = ossl(['pkeyutl', '-encrypt', '-pubin', '-keyform', 'DER', '-inkey', 'pub.der', '-in', 'm', '-out', 'ct'],
          {'pub.der': spki, 'm': b'secret'}, 'ct')
out['encrypt_decrypts'] = kms.decrypt(KeyId=e, CiphertextBlob=ct, EncryptionAlgorithm='SM2PKE')['Plaintext'] == b'secret'
# KEY_AGREEMENT: the public key is the imported one.
a = create('SM2', 'KEY_AGREEMENT')
pem, der, spki = sm2_key()
out['agreement_import'] = 'ok' in imp(a, der, sm2_params(a))
out['agreement_public'] = kms.get_public_key(KeyId=a)['PublicKey'] == spki
# Symmetric material wrapped with SM2PKE encrypts and decrypts; other material is refused.
y = create('SYMMETRIC_DEFAULT')
material = os.urandom(32)
out['symmetric_import'] = 'ok' in imp(y, material, sm2_params(y))
blob = kms.encrypt(KeyId=y, Plaintext=b'imported')['CiphertextBlob']
out['symmetric_roundtrip'] = kms.decrypt(CiphertextBlob=blob)['Plaintext'] == b'imported'
out['symmetric_other'] = imp(y, os.urandom(32), sm2_params(y))['error']
out['symmetric_same'] = 'ok' in imp(y, material, sm2_params(y))
# RSA (no RSA_AES_KEY_WRAP in China): SM2PKE wraps the whole PKCS#8 key.
r = create('RSA_2048', 'SIGN_VERIFY')
pem, der, spki = openssl_key('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048')
out['rsa_import'] = 'ok' in imp(r, der, sm2_params(r))
out['rsa_public'] = kms.get_public_key(KeyId=r)['PublicKey'] == spki
# Refusals in China: RSA_AES_KEY_WRAP, and pairs mixing SM2 and RSA.
ecc = create('ECC_NIST_P256', 'SIGN_VERIFY')
def gp(k, alg, spec):
    r = call('get_parameters_for_import', KeyId=k, WrappingAlgorithm=alg, WrappingKeySpec=spec)
    return r.get('error', 'ok'), r.get('message')
out['key_wrap_in_china'] = gp(ecc, 'RSA_AES_KEY_WRAP_SHA_256', 'RSA_4096')
out['sm2pke_with_rsa'] = gp(ecc, 'SM2PKE', 'RSA_2048')
out['oaep_with_sm2'] = gp(ecc, 'RSAES_OAEP_SHA_256', 'SM2')
print(json.dumps(out))
"#;
    let r = f.boto3(
        f.alice(),
        CHINA,
        &format!("{HELPERS}{SM2_HELPERS}{script}"),
        &[],
    );
    for field in [
        "wrapping_key_curve",
        "sign_import",
        "sign_public",
        "sign_verifies_outside",
        "encrypt_import_oaep",
        "encrypt_reimport_sm2pke",
        "encrypt_decrypts",
        "agreement_import",
        "agreement_public",
        "symmetric_import",
        "symmetric_roundtrip",
        "symmetric_same",
        "rsa_import",
        "rsa_public",
    ] {
        assert_eq!(r[field], true, "{field}: {r}");
    }
    assert_eq!(r["p256_into_sm2"], "InvalidCiphertextException", "{r}");
    assert_eq!(r["tampered"], "InvalidCiphertextException", "{r}");
    assert_eq!(r["sign_other"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(r["symmetric_other"], "IncorrectKeyMaterialException", "{r}");
    assert_eq!(
        r["key_wrap_in_china"],
        serde_json::json!([
            "ValidationException",
            "Wrapping algorithm RSA_AES_KEY_WRAP_SHA_256 is not available in the China Regions."
        ]),
        "{r}"
    );
    for field in ["sm2pke_with_rsa", "oaep_with_sm2"] {
        assert_eq!(r[field][0], "ValidationException", "{field}: {r}");
    }

    // Outside China neither the SM2 wrapping key nor SM2PKE is offered.
    let script = r#"
k = kms.create_key(Origin='EXTERNAL')['KeyMetadata']['KeyId']
print(json.dumps({alg + '/' + spec: call('get_parameters_for_import', KeyId=k, WrappingAlgorithm=alg,
                                         WrappingKeySpec=spec).get('error', 'ok')
                  for alg, spec in [('SM2PKE', 'SM2'), ('RSAES_OAEP_SHA_256', 'SM2'), ('SM2PKE', 'RSA_2048')]}))
"#;
    let r = run(&f, script, &[]);
    assert_eq!(
        r,
        serde_json::json!({
            "SM2PKE/SM2": "ValidationException",
            "RSAES_OAEP_SHA_256/SM2": "ValidationException",
            "SM2PKE/RSA_2048": "ValidationException",
        })
    );
}
