//! The symmetric ciphertext blob's encryption-context encoding: two different contexts never
//! share an AAD (they did when a value was longer than 65,535 bytes), and a blob written
//! by the first format (kept in `tests/fixtures/frontend-v1-blob/`, made by the front end
//! before the change) still decrypts.

use std::os::unix::fs::PermissionsExt;
use testkit::frontend::FrontendFixture;

#[test]
fn contexts_that_shared_an_encoding_no_longer_decrypt_each_others_ciphertexts() {
    let f = FrontendFixture::new().start();
    let script = r#"
long = "x" * 65535
one = {"a": long + "\u0000\u0001b\u0000\u0001c"}
two = {"a": long, "b": "c"}
key = kms.create_key()['KeyMetadata']['KeyId']
blob = kms.encrypt(KeyId=key, Plaintext=b"cross-context secret", EncryptionContext=one)['CiphertextBlob']
print(json.dumps({
    "format": blob[0],
    "same": call('decrypt', CiphertextBlob=blob, EncryptionContext=one).get('ok', {}).get('Plaintext', b'').decode(),
    "other": call('decrypt', CiphertextBlob=blob, EncryptionContext=two).get('error'),
}))
"#;
    let r = f.boto3(f.alice(), "us-east-1", script, &[]);
    assert_eq!(r["same"], "cross-context secret", "{r}");
    assert_eq!(r["other"], "InvalidCiphertextException", "{r}");
    assert_eq!(
        r["format"], 5,
        "Encrypt writes the current blob format (0x05: it names its key material): {r}"
    );
}

#[test]
fn a_blob_written_by_the_first_format_still_decrypts() {
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
ok = call('decrypt', CiphertextBlob=blob, EncryptionContext=meta['encryption_context'])
wrong = call('decrypt', CiphertextBlob=blob, EncryptionContext={'purpose': 'other'})
print(json.dumps({
    "format": blob[0],
    "plaintext": base64.b64encode(ok['ok']['Plaintext']).decode() if 'ok' in ok else ok,
    "key": ok.get('ok', {}).get('KeyId'),
    "wrong": wrong.get('error'),
}))
"#;
    let r = f.boto3(f.alice(), "us-east-1", script, &[&meta.to_string()]);
    assert_eq!(r["format"], 1, "the fixture is a first-format blob: {r}");
    assert_eq!(r["plaintext"], meta["plaintext_b64"], "{r}");
    assert_eq!(r["key"], meta["key_arn"], "{r}");
    assert_eq!(r["wrong"], "InvalidCiphertextException", "{r}");
}
