//! Encrypt, Decrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, ReEncrypt, and
//! GenerateRandom. Encrypt, Decrypt and ReEncrypt dispatch on the key's spec: symmetric keys
//! use the blob of [`crate::blob`] (or double encryption in an external key store),
//! asymmetric `ENCRYPT_DECRYPT` keys [`crate::asymmetric_encryption`] (RSA-OAEP, SM2PKE).
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
use crate::asymmetric_encryption::{self, EncryptionError};
use crate::auth::Caller;
use crate::catalogue::{KeySpec, KeyState, Origin};
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
    let (material_id, m) = sealing::current_material(&kms.root, key)?;
    if key.origin == Origin::ExternalKeyStore.as_str() {
        return xks_encrypt(kms, caller, key, &m, plaintext, ctx, op).await;
    }
    crate::blob::encrypt_blob(&key.key_id, material_id, &m, plaintext, ctx)
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

/// `EncryptionAlgorithm` (and ReEncrypt's two): an `EncryptionAlgorithmSpec` value. Whether
/// it suits the key is judged once the key is known ([`symmetric_algorithm`],
/// [`asymmetric_algorithm`]).
fn check_algorithm(v: &mut Violations, member: &str, alg: Option<&str>) {
    if let Some(a) = alg {
        v.enum_value(a, member, &asymmetric_encryption::ALGORITHM_NAMES);
    }
}

/// A symmetric encryption key takes only `SYMMETRIC_DEFAULT` (or no algorithm).
fn symmetric_algorithm(alg: Option<&str>) -> Result<(), KmsError> {
    match alg {
        Some(a) if a != asymmetric_encryption::SYMMETRIC_DEFAULT => Err(KmsError::client(
            "InvalidKeyUsageException",
            format!("The encryption algorithm {a} is not valid for a symmetric encryption key."),
        )),
        _ => Ok(()),
    }
}

fn spec_of(key: &KeyRecord) -> Result<KeySpec, KmsError> {
    KeySpec::parse(&key.key_spec)
        .ok_or_else(|| KmsError::internal(format!("{} has an unknown key spec", key.arn)))
}

fn encryption_error(e: EncryptionError) -> KmsError {
    match e.aws_name() {
        Some("ValidationException") => KmsError::validation(e.to_string()),
        Some("InvalidCiphertextException") => KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext is not valid for this KMS key and encryption algorithm.",
        ),
        Some(name) => KmsError::client(name, e.to_string()),
        None => {
            tracing::error!(error = %e, "asymmetric encryption failed");
            KmsError::internal("An internal error occurred.")
        }
    }
}

/// The algorithm of a request on an asymmetric `ENCRYPT_DECRYPT` key: one of the spec's list
/// (`Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_4096.` when absent, as AWS
/// answers Encrypt), and no encryption context: the model documents it as valid only with
/// symmetric keys. The error for a context sent anyway is **UNVERIFIED**; this answers
/// `ValidationException`, as for any parameter the key cannot take.
fn asymmetric_algorithm(
    spec: KeySpec,
    alg: Option<&str>,
    ctx: &BTreeMap<String, String>,
    member: &str,
) -> Result<asymmetric_encryption::Algorithm, KmsError> {
    let algorithm = asymmetric_encryption::algorithm_for(spec, alg).map_err(encryption_error)?;
    if !ctx.is_empty() {
        return Err(KmsError::validation(format!(
            "{member} is not supported with asymmetric KMS keys: algorithm {} takes no encryption context.",
            algorithm.as_str()
        )));
    }
    Ok(algorithm)
}

/// Encrypts with the public half of an asymmetric key (RSA-OAEP, SM2PKE): the ciphertext is
/// the algorithm's own, with no blob around it (AWS's format for asymmetric keys).
fn asymmetric_encrypt(
    kms: &Kms,
    key: &KeyRecord,
    spec: KeySpec,
    algorithm: asymmetric_encryption::Algorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let secret = material(kms, key)?;
    asymmetric_encryption::encrypt(spec, &secret, algorithm, plaintext).map_err(encryption_error)
}

/// The asymmetric key a Decrypt or ReEncrypt names with its KeyId (`SourceKeyId`), if it
/// names one: such ciphertexts carry no key id, so the request must say which key.
fn named_asymmetric_key(
    kms: &Kms,
    caller: &Caller,
    key_id: Option<&str>,
) -> Result<Option<(KeyRecord, KeySpec)>, KmsError> {
    let Some(id) = key_id else {
        return Ok(None);
    };
    let key = kms.find_key(caller, id, KeyRef::KeyOrAlias)?;
    let spec = spec_of(&key)?;
    Ok(spec.is_asymmetric().then_some((key, spec)))
}

/// Decrypts a ciphertext made with the public half of `key` (in KMS or outside it), on the
/// blocking pool (an RSA private-key operation takes milliseconds). An omitted algorithm
/// cannot decrypt anything: `InvalidCiphertextException`, as AWS answers.
async fn asymmetric_decrypt(
    kms: &Kms,
    key: &KeyRecord,
    spec: KeySpec,
    alg: Option<&str>,
    ctx: &BTreeMap<String, String>,
    member: &str,
    ciphertext: &[u8],
) -> Result<(asymmetric_encryption::Algorithm, Zeroizing<Vec<u8>>), KmsError> {
    if alg.is_none() {
        return Err(encryption_error(EncryptionError::Ciphertext));
    }
    let algorithm = asymmetric_algorithm(spec, alg, ctx, member)?;
    let secret = material(kms, key)?;
    let ciphertext = ciphertext.to_vec();
    let plaintext = tokio::task::spawn_blocking(move || {
        asymmetric_encryption::decrypt(spec, &secret, algorithm, &ciphertext)
    })
    .await
    .map_err(|e| KmsError::internal(format!("decryption task failed: {e}")))?
    .map_err(encryption_error)?;
    Ok((algorithm, plaintext))
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
    check_algorithm(
        &mut v,
        "encryptionAlgorithm",
        input.encryption_algorithm.as_deref(),
    );
    let ctx = context(&mut v, "encryptionContext", input.encryption_context);
    v.finish()?;
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOrAlias)?;
    kms.check_usable(&key, Operation::Encrypt)?;
    let plaintext = plaintext.as_deref().map_or(&[][..], |p| &p[..]);
    let spec = spec_of(&key)?;
    if spec.is_asymmetric() {
        let algorithm = asymmetric_algorithm(
            spec,
            input.encryption_algorithm.as_deref(),
            &ctx,
            "EncryptionContext",
        )?;
        asymmetric_encryption::check_plaintext_len(spec, algorithm, plaintext.len())
            .map_err(encryption_error)?;
        dry_run(input.dry_run)?;
        let blob = asymmetric_encrypt(kms, &key, spec, algorithm, plaintext)?;
        return Ok(json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": key.arn,
            "EncryptionAlgorithm": algorithm.as_str(),
        }));
    }
    symmetric_algorithm(input.encryption_algorithm.as_deref())?;
    dry_run(input.dry_run)?;
    let blob = encrypt_with(kms, caller, &key, plaintext, &ctx, Operation::Encrypt).await?;
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
    algorithm: Option<&str>,
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
    let unknown_key = || {
        KmsError::client(
            "InvalidCiphertextException",
            "The ciphertext refers to a KMS key that does not exist or that you cannot use.",
        )
    };
    let key = match (kms.find_key(caller, named, KeyRef::KeyOnly), expected) {
        (Ok(key), _) => key,
        // The blob names a key id only: another account's key is found through the ARN
        // the request gave (cross-account Decrypt and ReEncrypt).
        (Err(e), Some(want)) if e.name == "NotFoundException" => {
            match kms.find_key(caller, want, KeyRef::KeyOrAlias) {
                Ok(w) if w.key_id == named && w.account_id != caller.account_id => w,
                _ => return Err(unknown_key()),
            }
        }
        (Err(e), _) if e.name == "NotFoundException" => return Err(unknown_key()),
        (Err(e), _) => return Err(e),
    };
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
    // Judged once the blob named a symmetric key: a ciphertext that is not a blob (an
    // asymmetric one sent without its KeyId) is InvalidCiphertextException above.
    symmetric_algorithm(algorithm)?;
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
    let material_id = crate::blob::blob_material_id(blob)?;
    let m = sealing::material_for_ciphertext(
        &kms.root,
        kms.storage.as_ref(),
        &key,
        material_id.as_deref(),
    )?;
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
    check_algorithm(
        &mut v,
        "encryptionAlgorithm",
        input.encryption_algorithm.as_deref(),
    );
    let ctx = context(&mut v, "encryptionContext", input.encryption_context);
    v.finish()?;
    let ciphertext = blob.as_deref().map_or(&[][..], |b| &b[..]);
    if let Some((key, spec)) = named_asymmetric_key(kms, caller, input.key_id.as_deref())? {
        kms.check_usable(&key, Operation::Decrypt)?;
        let (algorithm, plaintext) = asymmetric_decrypt(
            kms,
            &key,
            spec,
            input.encryption_algorithm.as_deref(),
            &ctx,
            "EncryptionContext",
            ciphertext,
        )
        .await?;
        dry_run(input.dry_run)?;
        let mut out = json!({"KeyId": key.arn, "EncryptionAlgorithm": algorithm.as_str()});
        out["Plaintext"] = secret_b64(&plaintext);
        return Ok(out);
    }
    let (key, plaintext) = open_blob(
        kms,
        caller,
        ciphertext,
        &ctx,
        input.key_id.as_deref(),
        input.encryption_algorithm.as_deref(),
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
    check_algorithm(
        &mut v,
        "sourceEncryptionAlgorithm",
        input.source_encryption_algorithm.as_deref(),
    );
    check_algorithm(
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
    let dest = kms.find_key(caller, dest_id?, KeyRef::KeyOrAlias)?;
    let dest_spec = spec_of(&dest)?;
    // The destination's algorithm rules are the caller's mistake whatever the source holds.
    let dest_algorithm = if dest_spec.is_asymmetric() {
        Some(asymmetric_algorithm(
            dest_spec,
            input.destination_encryption_algorithm.as_deref(),
            &dst_ctx,
            "DestinationEncryptionContext",
        )?)
    } else {
        symmetric_algorithm(input.destination_encryption_algorithm.as_deref())?;
        None
    };
    let ciphertext = blob.as_deref().map_or(&[][..], |b| &b[..]);
    let (source, source_algorithm, plaintext) = if let Some((key, spec)) =
        named_asymmetric_key(kms, caller, input.source_key_id.as_deref())?
    {
        kms.check_usable(&key, Operation::ReEncrypt)?;
        let (algorithm, plaintext) = asymmetric_decrypt(
            kms,
            &key,
            spec,
            input.source_encryption_algorithm.as_deref(),
            &src_ctx,
            "SourceEncryptionContext",
            ciphertext,
        )
        .await?;
        (key, algorithm.as_str(), plaintext)
    } else {
        let (key, plaintext) = open_blob(
            kms,
            caller,
            ciphertext,
            &src_ctx,
            input.source_key_id.as_deref(),
            input.source_encryption_algorithm.as_deref(),
            Operation::ReEncrypt,
        )
        .await?;
        (key, asymmetric_encryption::SYMMETRIC_DEFAULT, plaintext)
    };
    kms.check_usable(&dest, Operation::ReEncrypt)?;
    if let Some(algorithm) = dest_algorithm {
        asymmetric_encryption::check_plaintext_len(dest_spec, algorithm, plaintext.len())
            .map_err(encryption_error)?;
    }
    dry_run(input.dry_run)?;
    let (out, dest_algorithm) = match dest_algorithm {
        Some(algorithm) => (
            asymmetric_encrypt(kms, &dest, dest_spec, algorithm, &plaintext)?,
            algorithm.as_str(),
        ),
        None => (
            encrypt_with(
                kms,
                caller,
                &dest,
                &plaintext,
                &dst_ctx,
                Operation::ReEncrypt,
            )
            .await?,
            asymmetric_encryption::SYMMETRIC_DEFAULT,
        ),
    };
    Ok(json!({
        "CiphertextBlob": b64(&out),
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": dest_algorithm,
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
