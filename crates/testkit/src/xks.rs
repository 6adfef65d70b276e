//! XKS request bodies as KMS sends them, and small helpers to read responses.

use serde_json::{Value, json};

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    xks_api::bytes::encode(bytes)
}

/// Decodes a base64 JSON string field.
#[track_caller]
pub fn unb64(v: &Value) -> Vec<u8> {
    xks_api::bytes::decode(v.as_str().expect("a base64 string")).expect("valid base64")
}

/// A fresh request id.
pub fn request_id() -> String {
    let b = crate::random_bytes(16);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `requestMetadata` for `op` with every field KMS sends for key operations.
pub fn meta(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::111122223333:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": op,
        "kmsRequestId": request_id(),
    })
}

/// A GetHealthStatus body.
pub fn health() -> Value {
    json!({"requestMetadata": {"kmsRequestId": request_id(), "kmsOperation": "KmsHealthCheck"}})
}

/// A GetKeyMetadata body.
pub fn metadata() -> Value {
    json!({"requestMetadata": {
        "awsPrincipalArn": "arn:aws:iam::111122223333:user/Alice",
        "kmsOperation": "CreateKey",
        "kmsRequestId": request_id(),
    }})
}

/// An Encrypt body.
pub fn encrypt(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut v = json!({
        "requestMetadata": meta("Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(a) = aad {
        v["additionalAuthenticatedData"] = json!(b64(a));
    }
    if cdiv {
        v["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    v
}

/// A Decrypt body for an Encrypt response.
pub fn decrypt_of(encrypted: &Value, aad: Option<&[u8]>) -> Value {
    let mut v = json!({
        "requestMetadata": meta("Decrypt"),
        "ciphertext": encrypted["ciphertext"],
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": encrypted["initializationVector"],
        "authenticationTag": encrypted["authenticationTag"],
    });
    if !encrypted["ciphertextMetadata"].is_null() {
        v["ciphertextMetadata"] = encrypted["ciphertextMetadata"].clone();
    }
    if let Some(a) = aad {
        v["additionalAuthenticatedData"] = json!(b64(a));
    }
    v
}
