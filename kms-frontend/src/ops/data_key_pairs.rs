//! GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: a fresh key pair whose
//! PKCS#8 private key is encrypted under a symmetric encryption KMS key, as a ciphertext
//! blob that Decrypt opens with the same encryption context.
//!
//! Only keys with `AWS_KMS` material: a key in a custom key store is refused with
//! `UnsupportedOperationException` (the operation documentation). `Recipient` (Nitro
//! attestation) is not supported.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::asymmetric::{check_grant_tokens, dry_run};
use crate::auth::Caller;
use crate::catalogue::KeySpec;
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms};

/// A `DataKeyPairSpec` value: the key spec of the pair and where it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DataKeyPairSpec {
    /// The wire value (the same text as the `KeySpec` of that key type).
    pub name: &'static str,
    /// The key spec whose material `crate::material::generate` makes.
    pub spec: KeySpec,
}

/// The `DataKeyPairSpec` enum of the model, in its order. SM2 only in the China Regions
/// (`KeySpec::china_only`).
pub(super) const DATA_KEY_PAIR_SPECS: [DataKeyPairSpec; 9] = [
    pair("RSA_2048", KeySpec::Rsa2048),
    pair("RSA_3072", KeySpec::Rsa3072),
    pair("RSA_4096", KeySpec::Rsa4096),
    pair("ECC_NIST_P256", KeySpec::EccNistP256),
    pair("ECC_NIST_P384", KeySpec::EccNistP384),
    pair("ECC_NIST_P521", KeySpec::EccNistP521),
    pair("ECC_SECG_P256K1", KeySpec::EccSecgP256k1),
    pair("SM2", KeySpec::Sm2),
    pair("ECC_NIST_EDWARDS25519", KeySpec::EccNistEdwards25519),
];

const fn pair(name: &'static str, spec: KeySpec) -> DataKeyPairSpec {
    DataKeyPairSpec { name, spec }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GenerateDataKeyPairInput {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
    recipient: Option<Value>,
}

/// `GenerateDataKeyPair` (`with_plaintext`) or `GenerateDataKeyPairWithoutPlaintext`.
pub(super) fn generate_data_key_pair(
    kms: &Kms,
    caller: &Caller,
    input: GenerateDataKeyPairInput,
    with_plaintext: bool,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match input.key_id.as_deref() {
        None => v.add("null", "keyId", "Member must not be null"),
        Some(k) => v.length(k, "keyId", 1, 2048),
    }
    let names: Vec<&str> = DATA_KEY_PAIR_SPECS.iter().map(|p| p.name).collect();
    match input.key_pair_spec.as_deref() {
        None => v.add("null", "keyPairSpec", "Member must not be null"),
        Some(s) => v.enum_value(s, "keyPairSpec", &names),
    }
    let ctx = input.encryption_context.unwrap_or_default();
    for k in ctx.keys().filter(|k| k.is_empty()) {
        v.add(
            k,
            "encryptionContext",
            "Map keys must have length greater than or equal to 1",
        );
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    v.finish()?;
    let op = if with_plaintext {
        Operation::GenerateDataKeyPair
    } else {
        Operation::GenerateDataKeyPairWithoutPlaintext
    };
    let pair_spec = DATA_KEY_PAIR_SPECS
        .iter()
        .find(|p| Some(p.name) == input.key_pair_spec.as_deref())
        .ok_or_else(|| KmsError::internal("validated key pair spec not found"))?;
    let china = caller.partition == "aws-cn";
    if pair_spec.spec.china_only() && !china {
        return Err(KmsError::validation(format!(
            "KeyPairSpec {} is only available in the China Regions.",
            pair_spec.name
        )));
    }
    let key = kms.find_key(
        caller,
        input.key_id.as_deref().unwrap_or_default(),
        KeyRef::KeyOrAlias,
    )?;
    if key.custom_key_store_id.is_some() {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            format!(
                "{} is in a custom key store, which is not valid for {}.",
                key.arn,
                op.as_str()
            ),
        ));
    }
    kms.check_usable(&key, op)?;
    // The WithoutPlaintext request has no Recipient member: there it is ignored like any
    // unknown member.
    if with_plaintext && input.recipient.is_some() {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            "Recipient (attested environments) is not supported by this KMS front end.",
        ));
    }
    dry_run(input.dry_run)?;
    let pair = crate::material::generate(pair_spec.spec).map_err(|e| {
        tracing::error!(error = %e, "data key pair generation failed");
        KmsError::internal("An internal error occurred.")
    })?;
    let (private, public) = pair.into_parts();
    let public = public.ok_or_else(|| KmsError::internal("a key pair has a public key"))?;
    let (material_id, wrapping) = crate::sealing::current_material(&kms.root, &key)?;
    let blob = crate::blob::encrypt_blob(&key.key_id, material_id, &wrapping, &private, &ctx)?;
    let mut out = json!({
        "PrivateKeyCiphertextBlob": STANDARD.encode(&blob),
        "PublicKey": STANDARD.encode(&public),
        "KeyId": key.arn,
        "KeyPairSpec": pair_spec.name,
    });
    if with_plaintext {
        out["PrivateKeyPlaintext"] = json!(STANDARD.encode(&private[..]));
    }
    Ok(out)
}
