//! GenerateMac and VerifyMac with `HMAC_224/256/384/512` keys (RFC 2104 HMAC, aws-lc-rs).
//!
//! Each spec takes exactly the `MacAlgorithm` of its list in [`crate::catalogue::algorithms`]
//! (`Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.` otherwise, AWS's text);
//! the MAC is the raw tag. Validation order as for Sign: model constraints, the key (lookup,
//! state, usage), the algorithm, then `DryRun`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::asymmetric::{
    MAX_MESSAGE_LEN, blob, check_blob, check_echoed_blob, check_grant_tokens, dry_run, finish,
};
use crate::auth::Caller;
use crate::catalogue::{KeySpec, KeyUsage, algorithms};
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms};
use crate::storage::KeyRecord;

/// The model's `MacAlgorithmSpec`, in its order.
const MAC_ALGORITHMS: [&str; 4] = [
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];
/// The most bytes a `Mac` may have (`CiphertextType`).
const MAX_MAC_LEN: usize = 6144;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MacInput {
    key_id: Option<String>,
    message: Option<String>,
    mac_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
    /// VerifyMac only.
    mac: Option<String>,
}

/// A GenerateMac or VerifyMac request, validated against the model.
struct MacRequest<'a> {
    key_id: &'a str,
    message: Zeroizing<Vec<u8>>,
    algorithm: &'a str,
    mac: Option<Zeroizing<Vec<u8>>>,
}

fn mac_request(input: &MacInput, verify: bool) -> Result<MacRequest<'_>, KmsError> {
    let mut v = Violations::new();
    let message = blob("Message", input.message.as_deref())?;
    let mac = blob("Mac", input.mac.as_deref())?;
    let mut sensitive = Vec::new();
    sensitive.extend(check_blob(
        &mut v,
        "message",
        message.as_deref().map(|m| &m[..]),
        MAX_MESSAGE_LEN,
    ));
    if verify {
        // Not sensitive in the model: its length is echoed as AWS does for blobs.
        check_echoed_blob(&mut v, "mac", mac.as_deref().map(|m| &m[..]), MAX_MAC_LEN);
    }
    match input.mac_algorithm.as_deref() {
        None => v.add("null", "macAlgorithm", "Member must not be null"),
        Some(a) => v.enum_value(a, "macAlgorithm", &MAC_ALGORITHMS),
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    let key_id = input.key_id.as_deref();
    match key_id {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    finish(v, sensitive)?;
    Ok(MacRequest {
        key_id: key_id.unwrap_or_default(),
        message: message.unwrap_or_default(),
        algorithm: input.mac_algorithm.as_deref().unwrap_or_default(),
        mac,
    })
}

/// Looks up and judges the key, checks the algorithm against its spec, and returns the HMAC
/// key (the unsealed secret).
fn mac_key(
    kms: &Kms,
    caller: &Caller,
    request: &MacRequest<'_>,
    op: Operation,
) -> Result<(KeyRecord, aws_lc_rs::hmac::Key), KmsError> {
    let key = kms.find_key(caller, request.key_id, KeyRef::KeyOrAlias)?;
    kms.check_usable(&key, op)?;
    let spec = KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))?;
    if !algorithms(spec, KeyUsage::GenerateVerifyMac)
        .all()
        .contains(&request.algorithm)
    {
        return Err(KmsError::client(
            "InvalidKeyUsageException",
            format!(
                "Algorithm {} is incompatible with key spec {spec}.",
                request.algorithm
            ),
        ));
    }
    let algorithm = match spec {
        KeySpec::Hmac224 => aws_lc_rs::hmac::HMAC_SHA224,
        KeySpec::Hmac256 => aws_lc_rs::hmac::HMAC_SHA256,
        KeySpec::Hmac384 => aws_lc_rs::hmac::HMAC_SHA384,
        KeySpec::Hmac512 => aws_lc_rs::hmac::HMAC_SHA512,
        _ => {
            return Err(KmsError::internal(format!(
                "{} is not an HMAC key",
                key.arn
            )));
        }
    };
    let sealed = key
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} has no key material.", key.arn)))?;
    let secret = crate::sealing::unseal_material(&kms.root, &key.arn, sealed)?;
    let hmac_key = aws_lc_rs::hmac::Key::new(algorithm, &secret);
    Ok((key, hmac_key))
}

/// `GenerateMac`.
pub(super) fn generate_mac(kms: &Kms, caller: &Caller, input: MacInput) -> Result<Value, KmsError> {
    let request = mac_request(&input, false)?;
    let (key, hmac_key) = mac_key(kms, caller, &request, Operation::GenerateMac)?;
    dry_run(input.dry_run)?;
    let tag = aws_lc_rs::hmac::sign(&hmac_key, &request.message);
    Ok(json!({
        "Mac": STANDARD.encode(tag.as_ref()),
        "MacAlgorithm": request.algorithm,
        "KeyId": key.arn,
    }))
}

/// `VerifyMac`: a MAC that does not verify is `KMSInvalidMacException` with an empty message,
/// as AWS answers, never `MacValid: false`. The comparison is constant-time (aws-lc-rs).
pub(super) fn verify_mac(kms: &Kms, caller: &Caller, input: MacInput) -> Result<Value, KmsError> {
    let request = mac_request(&input, true)?;
    let (key, hmac_key) = mac_key(kms, caller, &request, Operation::VerifyMac)?;
    dry_run(input.dry_run)?;
    let mac = request.mac.as_deref().map_or(&[][..], |m| &m[..]);
    if aws_lc_rs::hmac::verify(&hmac_key, &request.message, mac).is_err() {
        return Err(KmsError::client("KMSInvalidMacException", ""));
    }
    Ok(json!({
        "KeyId": key.arn,
        "MacValid": true,
        "MacAlgorithm": request.algorithm,
    }))
}
