//! Symmetric cryptography with `AWS_KMS` key material: Encrypt, Decrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext, ReEncrypt, and GenerateRandom.
//!
//! All but GenerateRandom are `async`: with a key in an external key store they await the
//! proxy, and they run as tasks on the runtime (see [`crate::service::Kms::handle`]). What
//! they do before and after is CPU work and storage reads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use super::keys::required_key_id;
use crate::auth::Caller;
use crate::catalogue::{KeyState, Origin};
use crate::key_state::{Operation, refusal};
use crate::protocol::{KmsError, Violations};
use crate::sealing;
use crate::service::{KeyRef, Kms};
use crate::storage::KeyRecord;

/// A base64 blob member; wrong base64 is a `SerializationException`, as AWS answers.
fn blob(member: &str, value: Option<&str>) -> Result<Option<Zeroizing<Vec<u8>>>, KmsError> {
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

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A plaintext or data key as a response member: the base64 text is allocated once at its
/// size and moved (not copied) into the value, which `protocol::ok` wipes after serializing.
fn secret_b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

/// `EncryptionContext` (string map): keys and values, validated.
fn context(
    v: &mut Violations,
    member: &str,
    ctx: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let ctx = ctx.unwrap_or_default();
    for k in ctx.keys() {
        if k.is_empty() {
            v.add(
                k,
                member,
                "Map keys must have length greater than or equal to 1",
            );
        }
    }
    ctx
}

fn material(kms: &Kms, key: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let sealed = key
        .sealed_material
        .as_ref()
        .ok_or_else(|| KmsError::invalid_state(format!("{} has no key material.", key.arn)))?;
    sealing::unseal_material(&kms.root, &key.arn, sealed)
}

async fn encrypt_with(
    kms: &Kms,
    caller: &Caller,
    key: &KeyRecord,
    plaintext: &[u8],
    ctx: &BTreeMap<String, String>,
    op: Operation,
) -> Result<Vec<u8>, KmsError> {
    let m = material(kms, key)?;
    if key.origin == Origin::ExternalKeyStore.as_str() {
        return xks_encrypt(kms, caller, key, &m, plaintext, ctx, op).await;
    }
    crate::blob::encrypt_blob(&key.key_id, &m, plaintext, ctx)
}

/// The store, proxy target secret and request metadata for a proxy call on `key`.
fn proxy_call_parts(
    kms: &Kms,
    caller: &Caller,
    key: &KeyRecord,
    op: Operation,
) -> Result<
    (
        crate::storage::CustomKeyStoreRecord,
        Zeroizing<String>,
        xks_api::types::RequestMetadata,
    ),
    KmsError,
> {
    // The store may have disconnected since the key was judged usable.
    let unavailable = || refusal(key, KeyState::Unavailable, op);
    let store_id = key.custom_key_store_id.as_deref().ok_or_else(unavailable)?;
    let store = kms
        .storage
        .get_custom_key_store(&key.account_id, &key.region, store_id)
        .map_err(crate::service::storage_error)?
        .filter(|s| s.connection_state == crate::catalogue::ConnectionState::Connected)
        .ok_or_else(unavailable)?;
    let secret = crate::ops::target_secret(kms, &store)?;
    let meta = xks_api::types::RequestMetadata {
        kms_request_id: caller.request_id.clone(),
        kms_operation: op.as_str().to_owned(),
        aws_principal_arn: Some(caller.principal_arn.clone()),
        aws_source_vpc: None,
        aws_source_vpce: None,
        kms_key_arn: Some(key.arn.clone()),
        kms_via_service: None,
    };
    Ok((store, secret, meta))
}

/// Double encryption: the inner layer with the KMS key material, the outer one by the
/// proxy with the external key (see `crate::xks` for the blob).
async fn xks_encrypt(
    kms: &Kms,
    caller: &Caller,
    key: &KeyRecord,
    material: &[u8],
    plaintext: &[u8],
    ctx: &BTreeMap<String, String>,
    op: Operation,
) -> Result<Vec<u8>, KmsError> {
    let format = crate::xks::FORMAT_XKS;
    let canonical = crate::blob::canonical_context(ctx, crate::xks::context_encoding(format));
    let mut inner_aad = crate::xks::header(format, &key.key_id)?;
    inner_aad.extend_from_slice(&canonical);
    let (inner_iv, inner) = crate::blob::inner_seal(material, &inner_aad, plaintext)?;
    let proxy_aad = crate::xks::proxy_aad(format, &key.key_id, &canonical)?;
    let (store, secret, meta) = proxy_call_parts(kms, caller, key, op)?;
    let target = crate::xks_client::ProxyTarget {
        uri_endpoint: &store.uri_endpoint,
        uri_path: &store.uri_path,
        access_key_id: &store.access_key_id,
        secret: &secret,
        region: &caller.region,
    };
    let xks_key_id = key.xks_key_id.as_deref().unwrap_or_default();
    let out = kms
        .xks
        .encrypt(&target, xks_key_id, meta, &inner, &proxy_aad)
        .await
        .map_err(|e| crate::xks::surface(crate::xks::CallSite::Crypto, &e))?;
    let mut proxy_tag = [0u8; 16];
    proxy_tag.copy_from_slice(out.authentication_tag.as_slice());
    crate::xks::XksBlob {
        format,
        key_id: key.key_id.clone(),
        inner_iv,
        proxy_iv: out.initialization_vector.0,
        proxy_tag,
        metadata: out.ciphertext_metadata.map(|m| m.0).unwrap_or_default(),
        proxy_ciphertext: out.ciphertext.0,
    }
    .encode()
}

/// Removes both layers of a double-encryption blob.
async fn xks_decrypt(
    kms: &Kms,
    caller: &Caller,
    key: &KeyRecord,
    blob: &crate::xks::XksBlob,
    ctx: &BTreeMap<String, String>,
    op: Operation,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    // An old (v1) blob is opened with the encoding its tags were made over.
    let canonical = crate::blob::canonical_context(ctx, crate::xks::context_encoding(blob.format));
    let proxy_aad = crate::xks::proxy_aad(blob.format, &key.key_id, &canonical)?;
    let (store, secret, meta) = proxy_call_parts(kms, caller, key, op)?;
    let target = crate::xks_client::ProxyTarget {
        uri_endpoint: &store.uri_endpoint,
        uri_path: &store.uri_path,
        access_key_id: &store.access_key_id,
        secret: &secret,
        region: &caller.region,
    };
    let xks_key_id = key.xks_key_id.as_deref().unwrap_or_default();
    let metadata = (!blob.metadata.is_empty()).then_some(&blob.metadata[..]);
    let inner = kms
        .xks
        .decrypt(
            &target,
            xks_key_id,
            meta,
            &blob.proxy_ciphertext,
            metadata,
            &blob.proxy_iv,
            &blob.proxy_tag,
            &proxy_aad,
        )
        .await
        .map_err(|e| crate::xks::surface(crate::xks::CallSite::Crypto, &e))?;
    let m = material(kms, key)?;
    let mut inner_aad = crate::xks::header(blob.format, &key.key_id)?;
    inner_aad.extend_from_slice(&canonical);
    crate::blob::inner_open(&m, &blob.inner_iv, &inner_aad, &inner)
}

fn check_algorithm(v: &mut Violations, member: &str, alg: Option<&str>) -> Result<(), KmsError> {
    if let Some(a) = alg {
        let all = [
            "SYMMETRIC_DEFAULT",
            "RSAES_OAEP_SHA_1",
            "RSAES_OAEP_SHA_256",
            "SM2PKE",
        ];
        v.enum_value(a, member, &all);
        if all.contains(&a) && a != "SYMMETRIC_DEFAULT" {
            return Err(KmsError::client(
                "InvalidKeyUsageException",
                format!(
                    "The encryption algorithm {a} is not valid for a symmetric encryption key."
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct EncryptInput {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
    encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
}

fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::client(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun option is set.",
        ));
    }
    Ok(())
}

pub(super) async fn encrypt(
    kms: &Kms,
    caller: &Caller,
    input: EncryptInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    // The base64 text is moved out of the parsed request (not copied) and wiped here.
    let plaintext_b64 = input.plaintext.map(Zeroizing::new);
    let plaintext = blob("Plaintext", plaintext_b64.as_ref().map(|p| p.as_str()))?;
    match &plaintext {
        None => v.add("null", "plaintext", "Member must not be null"),
        Some(p) => v.range(p.len() as i64, "plaintext", 1, 4096),
    }
    let algo = check_algorithm(
        &mut v,
        "encryptionAlgorithm",
        input.encryption_algorithm.as_deref(),
    );
    let ctx = context(&mut v, "encryptionContext", input.encryption_context);
    v.finish()?;
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOrAlias)?;
    kms.check_usable(&key, Operation::Encrypt)?;
    algo?;
    dry_run(input.dry_run)?;
    let blob = encrypt_with(
        kms,
        caller,
        &key,
        plaintext.as_deref().map_or(&[][..], |p| &p[..]),
        &ctx,
        Operation::Encrypt,
    )
    .await?;
    Ok(
        json!({"CiphertextBlob": b64(&blob), "KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
    )
}

/// Decrypts a blob for `caller`; `expected` is the KeyId the caller named, if any.
async fn open_blob(
    kms: &Kms,
    caller: &Caller,
    blob: &[u8],
    ctx: &BTreeMap<String, String>,
    expected: Option<&str>,
    op: Operation,
) -> Result<(KeyRecord, Zeroizing<Vec<u8>>), KmsError> {
    let xks_blob = match crate::xks::blob_format(blob) {
        Some(f) if crate::xks::is_xks_format(f) => Some(crate::xks::XksBlob::decode(blob)?),
        _ => None,
    };
    let named = match &xks_blob {
        Some(b) => b.key_id.as_str(),
        None => crate::blob::blob_key_id(blob)?,
    };
    let key = kms.find_key(caller, named, KeyRef::KeyOnly).map_err(|e| {
        if e.name == "NotFoundException" {
            KmsError::client(
                "InvalidCiphertextException",
                "The ciphertext refers to a KMS key that does not exist or that you cannot use.",
            )
        } else {
            e
        }
    })?;
    if let Some(want) = expected {
        let wanted = kms.find_key(caller, want, KeyRef::KeyOrAlias)?;
        if wanted.key_id != key.key_id {
            return Err(KmsError::client(
                "IncorrectKeyException",
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            ));
        }
    }
    kms.check_usable(&key, op)?;
    if let Some(b) = &xks_blob {
        if key.origin != Origin::ExternalKeyStore.as_str() {
            return Err(KmsError::client(
                "InvalidCiphertextException",
                "The ciphertext is not valid.",
            ));
        }
        let plaintext = xks_decrypt(kms, caller, &key, b, ctx, op).await?;
        return Ok((key, plaintext));
    }
    if key.origin == Origin::ExternalKeyStore.as_str() {
        return Err(KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext is not valid.",
        ));
    }
    let m = material(kms, &key)?;
    let plaintext = crate::blob::decrypt_blob(blob, &m, ctx)?;
    Ok((key, plaintext))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DecryptInput {
    ciphertext_blob: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    dry_run: Option<bool>,
}

fn ciphertext(v: &mut Violations, member: &str, value: Option<&Zeroizing<Vec<u8>>>) {
    match value {
        None => v.add("null", member, "Member must not be null"),
        Some(c) => v.range(c.len() as i64, member, 1, 6144),
    }
}

pub(super) async fn decrypt(
    kms: &Kms,
    caller: &Caller,
    input: DecryptInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let blob = blob("CiphertextBlob", input.ciphertext_blob.as_deref())?;
    ciphertext(&mut v, "ciphertextBlob", blob.as_ref());
    if let Some(k) = &input.key_id {
        v.length(k, "keyId", 1, 2048);
    }
    let algo = check_algorithm(
        &mut v,
        "encryptionAlgorithm",
        input.encryption_algorithm.as_deref(),
    );
    let ctx = context(&mut v, "encryptionContext", input.encryption_context);
    v.finish()?;
    algo?;
    let (key, plaintext) = open_blob(
        kms,
        caller,
        blob.as_deref().map_or(&[][..], |b| &b[..]),
        &ctx,
        input.key_id.as_deref(),
        Operation::Decrypt,
    )
    .await?;
    dry_run(input.dry_run)?;
    let mut out = json!({"KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"});
    out["Plaintext"] = secret_b64(&plaintext);
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DataKeyInput {
    key_id: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
    recipient: Option<Value>,
}

pub(super) async fn generate_data_key(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyInput,
    with_plaintext: bool,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let key_id = required_key_id(input.key_id.as_deref());
    if let Some(n) = input.number_of_bytes {
        v.range(n, "numberOfBytes", 1, 1024);
    }
    if let Some(s) = &input.key_spec {
        v.enum_value(s, "keySpec", &["AES_256", "AES_128"]);
    }
    let ctx = context(&mut v, "encryptionContext", input.encryption_context);
    v.finish()?;
    let n = match (input.number_of_bytes, input.key_spec.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(KmsError::validation(
                "Please specify either number of bytes or key spec.",
            ));
        }
        (None, None) => {
            return Err(KmsError::validation(
                "Please specify either number of bytes or key spec.",
            ));
        }
        (Some(n), None) => usize::try_from(n).unwrap_or(1),
        (None, Some(spec)) => {
            if spec == "AES_128" {
                16
            } else {
                32
            }
        }
    };
    if input.recipient.is_some() && !with_plaintext {
        return Err(KmsError::validation(
            "Recipient is not valid for GenerateDataKeyWithoutPlaintext.",
        ));
    }
    if input.recipient.is_some() {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            "Recipient (Nitro Enclaves attestation) is not supported by this front end.",
        ));
    }
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOrAlias)?;
    let op = if with_plaintext {
        Operation::GenerateDataKey
    } else {
        Operation::GenerateDataKeyWithoutPlaintext
    };
    kms.check_usable(&key, op)?;
    dry_run(input.dry_run)?;
    let mut data_key = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut data_key)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let blob = encrypt_with(kms, caller, &key, &data_key, &ctx, op).await?;
    let mut out = json!({"CiphertextBlob": b64(&blob), "KeyId": key.arn});
    if with_plaintext {
        out["Plaintext"] = secret_b64(&data_key);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReEncryptInput {
    ciphertext_blob: Option<String>,
    source_encryption_context: Option<BTreeMap<String, String>>,
    source_key_id: Option<String>,
    destination_key_id: Option<String>,
    destination_encryption_context: Option<BTreeMap<String, String>>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
}

pub(super) async fn re_encrypt(
    kms: &Kms,
    caller: &Caller,
    input: ReEncryptInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let blob = blob("CiphertextBlob", input.ciphertext_blob.as_deref())?;
    ciphertext(&mut v, "ciphertextBlob", blob.as_ref());
    let dest_id = required_key_id(input.destination_key_id.as_deref()).map_err(|mut e| {
        e.message = e.message.replace("'keyId'", "'destinationKeyId'");
        e
    });
    let src_algo = check_algorithm(
        &mut v,
        "sourceEncryptionAlgorithm",
        input.source_encryption_algorithm.as_deref(),
    );
    let dst_algo = check_algorithm(
        &mut v,
        "destinationEncryptionAlgorithm",
        input.destination_encryption_algorithm.as_deref(),
    );
    let src_ctx = context(
        &mut v,
        "sourceEncryptionContext",
        input.source_encryption_context,
    );
    let dst_ctx = context(
        &mut v,
        "destinationEncryptionContext",
        input.destination_encryption_context,
    );
    v.finish()?;
    src_algo?;
    dst_algo?;
    let dest = kms.find_key(caller, dest_id?, KeyRef::KeyOrAlias)?;
    let (source, plaintext) = open_blob(
        kms,
        caller,
        blob.as_deref().map_or(&[][..], |b| &b[..]),
        &src_ctx,
        input.source_key_id.as_deref(),
        Operation::ReEncrypt,
    )
    .await?;
    kms.check_usable(&dest, Operation::ReEncrypt)?;
    dry_run(input.dry_run)?;
    let out = encrypt_with(
        kms,
        caller,
        &dest,
        &plaintext,
        &dst_ctx,
        Operation::ReEncrypt,
    )
    .await?;
    Ok(json!({
        "CiphertextBlob": b64(&out),
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RandomInput {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<Value>,
}

pub(super) fn generate_random(
    kms: &Kms,
    caller: &Caller,
    input: RandomInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    if let Some(n) = input.number_of_bytes {
        v.range(n, "numberOfBytes", 1, 1024);
    }
    if let Some(id) = &input.custom_key_store_id {
        v.length(id, "customKeyStoreId", 1, 64);
    }
    v.finish()?;
    let Some(n) = input.number_of_bytes else {
        return Err(KmsError::validation("NumberOfBytes is required."));
    };
    if let Some(id) = &input.custom_key_store_id {
        let exists = kms
            .storage
            .get_custom_key_store(&caller.account_id, &caller.region, id)
            .map_err(crate::service::storage_error)?
            .is_some();
        // Only external key stores can exist here, and KMS refuses GenerateRandom on them.
        return Err(if exists {
            KmsError::client(
                "UnsupportedOperationException",
                format!("GenerateRandom is not supported in external key store {id}."),
            )
        } else {
            KmsError::client(
                "CustomKeyStoreNotFoundException",
                format!("Custom key store {id} is not found."),
            )
        });
    }
    if input.recipient.is_some() {
        return Err(KmsError::client(
            "UnsupportedOperationException",
            "Recipient (Nitro Enclaves attestation) is not supported by this front end.",
        ));
    }
    let mut bytes = Zeroizing::new(vec![0u8; usize::try_from(n).unwrap_or(1)]);
    getrandom::fill(&mut bytes)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    Ok(json!({"Plaintext": secret_b64(&bytes)}))
}
