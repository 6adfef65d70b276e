//! GetKeyLastUsage end to end, through boto3 against the real `kms-frontend` over HTTPS:
//! which operations count as a use (successful cryptographic operations only), the request
//! and audit-event ids it reports (the `x-amzn-RequestId` boto3 saw, and the `event_id` of
//! the request's log line), both keys of a ReEncrypt, TrackingStartDate against
//! KeyCreationDate, alias names refused as AWS documents, and durability: a use survives a
//! graceful restart and, once a flush interval has passed, a kill -9.

use serde_json::Value;
use testkit::frontend::FrontendFixture;

const REGION: &str = "us-east-1";

fn ok(v: &Value) -> &Value {
    v.get("ok")
        .unwrap_or_else(|| panic!("expected success, got {v}"))
}

const USES: &str = r#"
import uuid
out = {}
sym = call('create_key')['ok']['KeyMetadata']
other = call('create_key')['ok']['KeyMetadata']['KeyId']
sig = call('create_key', KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['ok']['KeyMetadata']['KeyId']
k = sym['KeyId']
out['fresh'] = call('get_key_last_usage', KeyId=k)
out['created'] = sym['CreationDate'].timestamp()
# Reading a key is not using it.
call('describe_key', KeyId=k)
call('get_public_key', KeyId=sig)
out['after_reads'] = call('get_key_last_usage', KeyId=k)
out['sig_after_get_public_key'] = call('get_key_last_usage', KeyId=sig)
# A successful Encrypt is a use; its request id is reported.
r = kms.encrypt(KeyId=k, Plaintext=b'x', EncryptionContext={'a': 'b'})
out['encrypt_request_id'] = r['ResponseMetadata']['RequestId']
ct = r['CiphertextBlob']
out['after_encrypt'] = call('get_key_last_usage', KeyId=k)
# A failed Decrypt (wrong context) is not.
out['bad_decrypt'] = call('decrypt', CiphertextBlob=ct, EncryptionContext={'a': 'c'})
out['after_failed_decrypt'] = call('get_key_last_usage', KeyId=k)
# ReEncrypt uses both keys.
r = kms.re_encrypt(CiphertextBlob=ct, SourceEncryptionContext={'a': 'b'}, DestinationKeyId=other)
out['reencrypt_request_id'] = r['ResponseMetadata']['RequestId']
out['source_after_reencrypt'] = call('get_key_last_usage', KeyId=k)
out['dest_after_reencrypt'] = call('get_key_last_usage', KeyId=sym['Arn'].replace(k, other))
# Sign on an asymmetric key.
call('sign', KeyId=sig, Message=b'm', SigningAlgorithm='ECDSA_SHA_256')
out['sig_after_sign'] = call('get_key_last_usage', KeyId=sig)
# Disabled keys still answer (their history is what the operation is for).
call('disable_key', KeyId=sig)
out['disabled'] = call('get_key_last_usage', KeyId=sig)
# Alias names are not accepted; unknown keys are not found.
call('create_alias', AliasName='alias/used', TargetKeyId=k)
out['alias'] = call('get_key_last_usage', KeyId='alias/used')
out['unknown'] = call('get_key_last_usage', KeyId=str(uuid.uuid4()))
out['missing'] = call('get_key_last_usage')
out['keys'] = {'sym': k, 'other': other, 'sig': sig, 'arn': sym['Arn']}
print(json.dumps(out, default=lambda d: d.timestamp()))
"#;

#[test]
fn successful_cryptographic_operations_are_uses() {
    let f = FrontendFixture::new().start();
    let out = f.boto3(f.alice(), REGION, USES, &[]);
    let keys = &out["keys"];

    // A new key: no use, and tracking started when the key was created.
    let fresh = ok(&out["fresh"]);
    assert_eq!(fresh["KeyId"], keys["arn"], "{out}");
    assert_eq!(fresh["KeyLastUsage"], serde_json::json!({}), "{out}");
    assert_eq!(
        fresh["TrackingStartDate"], fresh["KeyCreationDate"],
        "{out}"
    );
    assert_eq!(fresh["KeyCreationDate"], out["created"], "{out}");
    assert_eq!(
        ok(&out["after_reads"])["KeyLastUsage"],
        serde_json::json!({})
    );
    assert_eq!(
        ok(&out["sig_after_get_public_key"])["KeyLastUsage"],
        serde_json::json!({})
    );

    // Encrypt: operation, request id, an event id, a timestamp not before the key's creation.
    let used = &ok(&out["after_encrypt"])["KeyLastUsage"];
    assert_eq!(used["Operation"], "Encrypt", "{out}");
    assert_eq!(used["KmsRequestId"], out["encrypt_request_id"], "{out}");
    let event = used["CloudTrailEventId"].as_str().expect("event id");
    assert_eq!(event.len(), 36, "a UUID: {event}");
    assert!(
        used["Timestamp"].as_f64() >= out["created"].as_f64(),
        "{out}"
    );
    // The event id is the one the request's log line carries.
    let log = f.logs();
    let line = log
        .lines()
        .find(|l| l.contains(out["encrypt_request_id"].as_str().unwrap_or("?")))
        .unwrap_or_else(|| panic!("no log line for the Encrypt:\n{log}"));
    assert!(line.contains(event), "{line}");

    assert_eq!(
        out["bad_decrypt"]["error"], "InvalidCiphertextException",
        "{out}"
    );
    assert_eq!(
        ok(&out["after_failed_decrypt"])["KeyLastUsage"]["Operation"],
        "Encrypt",
        "a failed Decrypt is not a use: {out}"
    );

    for which in ["source_after_reencrypt", "dest_after_reencrypt"] {
        let u = &ok(&out[which])["KeyLastUsage"];
        assert_eq!(u["Operation"], "ReEncrypt", "{which}: {out}");
        assert_eq!(
            u["KmsRequestId"], out["reencrypt_request_id"],
            "{which}: {out}"
        );
    }
    assert_eq!(
        ok(&out["sig_after_sign"])["KeyLastUsage"]["Operation"],
        "Sign"
    );
    assert_eq!(ok(&out["disabled"])["KeyLastUsage"]["Operation"], "Sign");

    assert_eq!(out["alias"]["error"], "NotFoundException", "{out}");
    assert_eq!(out["unknown"]["error"], "NotFoundException", "{out}");
    assert_eq!(out["missing"]["error"], "ValidationException", "{out}");
}

const ENCRYPT: &str = r#"
k = sys.argv[1] if len(sys.argv) > 1 else call('create_key')['ok']['KeyMetadata']['KeyId']
r = kms.encrypt(KeyId=k, Plaintext=b'x')
print(json.dumps({'key': k, 'request_id': r['ResponseMetadata']['RequestId']}))
"#;

const LAST: &str = r#"
print(json.dumps(call('get_key_last_usage', KeyId=sys.argv[1]), default=lambda d: d.timestamp()))
"#;

#[test]
fn uses_survive_restarts() {
    let f = FrontendFixture::new().start();
    let first = f.boto3(f.alice(), REGION, ENCRYPT, &[]);
    let key = first["key"].as_str().expect("key");

    // A graceful stop flushes what is pending.
    let f = f.restart(true);
    let last = f.boto3(f.alice(), REGION, LAST, &[key]);
    assert_eq!(
        ok(&last)["KeyLastUsage"]["KmsRequestId"],
        first["request_id"],
        "{last}"
    );

    // Without a goodbye, a use is on disk once a flush interval has passed.
    let second = f.boto3(f.alice(), REGION, ENCRYPT, &[key]);
    std::thread::sleep(kms_frontend::last_usage::FLUSH_INTERVAL * 3);
    let f = f.restart(false);
    let last = f.boto3(f.alice(), REGION, LAST, &[key]);
    assert_eq!(
        ok(&last)["KeyLastUsage"]["KmsRequestId"],
        second["request_id"],
        "{last}"
    );
}
