//! Asymmetric KMS keys: GetPublicKey, Sign and Verify.
//!
//! What a key spec allows and what each signing algorithm accepts are the tables of
//! [`crate::catalogue::algorithms`] and [`crate::signing`]; key states and key usages are
//! judged by [`crate::key_state`]. Validation order, as for the symmetric operations: model
//! constraints, then the key (lookup, state, usage), then the algorithm and message type
//! rules, then `DryRun`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::keys::required_key_id;
use crate::auth::Caller;
use crate::catalogue::{KeySpec, KeyUsage, algorithms};
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms};
use crate::signing::{self, MessageType, SigningError};
use crate::storage::KeyRecord;

/// The most bytes a `Message` may have (`PlaintextType`).
pub(super) const MAX_MESSAGE_LEN: usize = 4096;
/// The most bytes a `Signature` may have (`CiphertextType`).
const MAX_SIGNATURE_LEN: usize = 6144;
/// The most grant tokens a request may carry (`GrantTokenList`).
const MAX_GRANT_TOKENS: usize = 10;

/// A base64 blob member; wrong base64 is a `SerializationException`, as AWS answers.
pub(super) fn blob(
    member: &str,
    value: Option<&str>,
) -> Result<Option<Zeroizing<Vec<u8>>>, KmsError> {
    value
        .map(|v| {
            STANDARD.decode(v).map(Zeroizing::new).map_err(|_| {
                KmsError::client(
                    "SerializationException",
                    format!("{member} is not valid base64"),
                )
            })
        })
        .transpose()
}

/// A required blob member of `min..=max` bytes. AWS does not echo the value of a sensitive
/// member in the constraint message, so neither does this.
pub(super) fn check_blob(
    v: &mut Violations,
    member: &str,
    value: Option<&[u8]>,
    max: usize,
) -> Option<String> {
    match value {
        None => {
            v.add("null", member, "Member must not be null");
            None
        }
        Some([]) => Some(format!(
            "Value at '{member}' failed to satisfy constraint: Member must have length greater than or equal to 1"
        )),
        Some(b) if b.len() > max => Some(format!(
            "Value at '{member}' failed to satisfy constraint: Member must have length less than or equal to {max}"
        )),
        Some(_) => None,
    }
}

/// A required blob member of `1..=max` bytes that is not sensitive in the model: AWS echoes
/// its length in the constraint message, as `java.nio.HeapByteBuffer[pos=0 lim=N cap=N]`.
pub(super) fn check_echoed_blob(
    v: &mut Violations,
    member: &str,
    value: Option<&[u8]>,
    max: usize,
) {
    let echoed = |n: usize| format!("java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]");
    match value {
        None => v.add("null", member, "Member must not be null"),
        Some([]) => v.add(
            &echoed(0),
            member,
            "Member must have length greater than or equal to 1",
        ),
        Some(b) if b.len() > max => v.add(
            &echoed(b.len()),
            member,
            &format!("Member must have length less than or equal to {max}"),
        ),
        Some(_) => {}
    }
}

/// Renders the violations together with the sensitive-member ones [`check_blob`] returned.
pub(super) fn finish(v: Violations, sensitive: Vec<String>) -> Result<(), KmsError> {
    let rest = match v.finish() {
        Ok(()) => Vec::new(),
        Err(e) => {
            // "N validation error(s) detected: a; b" → its parts.
            let body = e
                .message
                .split_once("detected: ")
                .map_or(e.message.clone(), |(_, b)| b.to_owned());
            body.split("; Value ")
                .enumerate()
                .map(|(i, p)| {
                    if i == 0 {
                        p.to_owned()
                    } else {
                        format!("Value {p}")
                    }
                })
                .collect()
        }
    };
    let all: Vec<String> = sensitive.into_iter().chain(rest).collect();
    if all.is_empty() {
        return Ok(());
    }
    let n = all.len();
    Err(KmsError::validation(format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        all.join("; ")
    )))
}

/// `GrantTokens`: within the model's limits (the tokens themselves are verified and used by
/// the authorization decision, `authz::context`).
pub(super) fn check_grant_tokens(v: &mut Violations, tokens: Option<&[String]>) {
    if let Some(t) = tokens {
        if t.len() > MAX_GRANT_TOKENS {
            v.add(
                &format!("{t:?}"),
                "grantTokens",
                &format!("Member must have length less than or equal to {MAX_GRANT_TOKENS}"),
            );
        }
        for token in t {
            v.length(token, "grantTokens.member", 1, 8192);
        }
    }
}

/// `DryRun`: everything checked, nothing done.
pub(super) fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::client(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

/// The unsealed PKCS#8 private key of an asymmetric key (zeroized on drop).
fn private_key(kms: &Kms, key: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let sealed = key
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} has no key material.", key.arn)))?;
    crate::sealing::unseal_material(&kms.root, &key.arn, sealed)
}

fn spec_of(key: &KeyRecord) -> Result<KeySpec, KmsError> {
    KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))
}

/// The SubjectPublicKeyInfo of an asymmetric key, derived from its sealed private key.
fn public_key(kms: &Kms, key: &KeyRecord, spec: KeySpec) -> Result<Vec<u8>, KmsError> {
    let secret = private_key(kms, key)?;
    crate::material::public_key_of(spec, &secret).map_err(|e| {
        tracing::error!(key = %key.arn, error = %e, "stored key material is unusable");
        KmsError::internal("An internal error occurred.")
    })
}

fn signing_error(e: SigningError) -> KmsError {
    if e.is_client_error() {
        let message = e.to_string();
        if e.aws_name() == "ValidationException" {
            KmsError::validation(message)
        } else {
            KmsError::client("InvalidKeyUsageException", message)
        }
    } else {
        tracing::error!(error = %e, "signing failed");
        KmsError::internal("An internal error occurred.")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetPublicKeyInput {
    key_id: Option<String>,
    grant_tokens: Option<Vec<String>>,
}

/// `GetPublicKey`: the key's SubjectPublicKeyInfo with the metadata AWS sends beside it.
pub(super) fn get_public_key(
    kms: &Kms,
    caller: &Caller,
    input: GetPublicKeyInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    v.finish()?;
    let key_id = required_key_id(input.key_id.as_deref())?;
    let key = kms.find_key(caller, key_id, KeyRef::KeyOrAlias)?;
    kms.check_usable(&key, Operation::GetPublicKey)?;
    let spec = spec_of(&key)?;
    let public = public_key(kms, &key, spec)?;
    let mut out = json!({
        "KeyId": key.arn,
        "PublicKey": STANDARD.encode(&public),
        "KeySpec": spec.as_str(),
        "KeyUsage": key.key_usage,
    });
    // Only for the 13 values of the deprecated enum (ML-DSA, ML-KEM, Ed25519 have none).
    if spec.is_customer_master_key_spec_value() {
        out["CustomerMasterKeySpec"] = json!(spec.as_str());
    }
    if let Some(usage) = KeyUsage::parse(&key.key_usage)
        && let Some((name, list)) = algorithms(spec, usage).metadata_field()
    {
        out[name] = json!(list);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SignInput {
    key_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    grant_tokens: Option<Vec<String>>,
    signing_algorithm: Option<String>,
    dry_run: Option<bool>,
    /// Verify only.
    signature: Option<String>,
}

/// A Sign or Verify request, validated against the model.
struct SignRequest<'a> {
    key_id: &'a str,
    message: Zeroizing<Vec<u8>>,
    message_type: MessageType,
    algorithm: &'a str,
    signature: Option<Zeroizing<Vec<u8>>>,
}

fn sign_request(input: &SignInput, verify: bool) -> Result<SignRequest<'_>, KmsError> {
    let mut v = Violations::new();
    let message = blob("Message", input.message.as_deref())?;
    let signature = blob("Signature", input.signature.as_deref())?;
    let mut sensitive = Vec::new();
    sensitive.extend(check_blob(
        &mut v,
        "message",
        message.as_deref().map(|m| &m[..]),
        MAX_MESSAGE_LEN,
    ));
    if verify {
        // Not sensitive in the model: a signature's length is echoed as AWS does for blobs.
        check_echoed_blob(
            &mut v,
            "signature",
            signature.as_deref().map(|s| &s[..]),
            MAX_SIGNATURE_LEN,
        );
    }
    if let Some(mt) = input.message_type.as_deref() {
        v.enum_value(mt, "messageType", &MessageType::ALL);
    }
    let names = signing::algorithm_names();
    match input.signing_algorithm.as_deref() {
        None => v.add("null", "signingAlgorithm", "Member must not be null"),
        Some(a) => v.enum_value(a, "signingAlgorithm", &names),
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    let key_id = input.key_id.as_deref();
    match key_id {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    finish(v, sensitive)?;
    Ok(SignRequest {
        key_id: key_id.unwrap_or_default(),
        message: message.unwrap_or_default(),
        message_type: input
            .message_type
            .as_deref()
            .and_then(MessageType::parse)
            .unwrap_or(MessageType::Raw),
        algorithm: input.signing_algorithm.as_deref().unwrap_or_default(),
        signature,
    })
}

/// Looks up and judges the key of a Sign or Verify request, and checks the algorithm and
/// message type rules for its spec.
fn signing_key(
    kms: &Kms,
    caller: &Caller,
    request: &SignRequest<'_>,
    op: Operation,
) -> Result<(KeyRecord, KeySpec, &'static signing::SigningAlgorithm), KmsError> {
    let key = kms.find_key(caller, request.key_id, KeyRef::KeyOrAlias)?;
    kms.check_usable(&key, op)?;
    let spec = spec_of(&key)?;
    let alg = signing::check(
        spec,
        request.algorithm,
        request.message_type,
        request.message.len(),
    )
    .map_err(signing_error)?;
    Ok((key, spec, alg))
}

/// `Sign`.
pub(super) fn sign(kms: &Kms, caller: &Caller, input: SignInput) -> Result<Value, KmsError> {
    let request = sign_request(&input, false)?;
    let (key, spec, alg) = signing_key(kms, caller, &request, Operation::Sign)?;
    dry_run(input.dry_run)?;
    let secret = private_key(kms, &key)?;
    let signature = signing::sign(spec, &secret, alg, request.message_type, &request.message)
        .map_err(signing_error)?;
    Ok(json!({
        "KeyId": key.arn,
        "Signature": STANDARD.encode(&signature),
        "SigningAlgorithm": alg.name,
    }))
}

/// `Verify`: a signature that does not verify is `KMSInvalidSignatureException` (empty
/// message, as AWS answers), never `SignatureValid: false`.
pub(super) fn verify(kms: &Kms, caller: &Caller, input: SignInput) -> Result<Value, KmsError> {
    let request = sign_request(&input, true)?;
    let (key, spec, alg) = signing_key(kms, caller, &request, Operation::Verify)?;
    dry_run(input.dry_run)?;
    let public = public_key(kms, &key, spec)?;
    let signature = request.signature.as_deref().map_or(&[][..], |s| &s[..]);
    let valid = signing::verify(
        spec,
        &public,
        alg,
        request.message_type,
        &request.message,
        signature,
    )
    .map_err(signing_error)?;
    if !valid {
        return Err(KmsError::client("KMSInvalidSignatureException", ""));
    }
    Ok(json!({
        "KeyId": key.arn,
        "SignatureValid": true,
        "SigningAlgorithm": alg.name,
    }))
}
