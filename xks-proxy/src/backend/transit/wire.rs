//! What goes over the wire to Transit: the `vault:v<N>:` ciphertext format, request
//! bodies, Vault's answers, and how its errors are classified into [`BackendError`]s.
//! Pure: no I/O.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use xks_api::types::{AES_256, KeyStatus};
use zeroize::Zeroizing;

use crate::backend::{BackendError, KeyInfo};
use crate::keystore::KeyUsages;

/// The Transit key type the XKS API can use.
pub(super) const AES256_GCM96: &str = "aes256-gcm96";
/// Transit's nonce length (96 bits).
pub(super) const NONCE_BYTES: usize = 12;
/// AES-GCM tag length.
pub(super) const TAG_BYTES: usize = 16;
/// Longest Vault error message kept in an error (they are logged).
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// A Transit AES-GCM ciphertext split as the XKS wire wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TransitCiphertext {
    pub(super) version: u32,
    pub(super) iv: Vec<u8>,
    pub(super) ciphertext: Vec<u8>,
    pub(super) tag: Vec<u8>,
}

/// Why a string is not a Transit AES-GCM ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CiphertextFormatError {
    #[error("it does not start with 'vault:v<version>:'")]
    Prefix,
    #[error("its key version is not a number from 1 to 4294967295")]
    Version,
    #[error("its body is not standard base64")]
    Base64,
    #[error("its body is {0} bytes, shorter than a 12-byte nonce and a 16-byte tag")]
    TooShort(usize),
}

/// Parses `vault:v<N>:<base64(nonce 12 || ciphertext || tag 16)>`.
pub(super) fn parse_transit_ciphertext(
    s: &str,
) -> Result<TransitCiphertext, CiphertextFormatError> {
    let rest = s
        .strip_prefix("vault:v")
        .ok_or(CiphertextFormatError::Prefix)?;
    let (version, body) = rest.split_once(':').ok_or(CiphertextFormatError::Prefix)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CiphertextFormatError::Version);
    }
    let version: u32 = version
        .parse()
        .map_err(|_| CiphertextFormatError::Version)?;
    if version == 0 {
        return Err(CiphertextFormatError::Version);
    }
    let raw = STANDARD
        .decode(body)
        .map_err(|_| CiphertextFormatError::Base64)?;
    if raw.len() < NONCE_BYTES + TAG_BYTES {
        return Err(CiphertextFormatError::TooShort(raw.len()));
    }
    let (iv, rest) = raw
        .split_at_checked(NONCE_BYTES)
        .ok_or(CiphertextFormatError::TooShort(raw.len()))?;
    let (ciphertext, tag) = rest
        .split_at_checked(rest.len() - TAG_BYTES)
        .ok_or(CiphertextFormatError::TooShort(raw.len()))?;
    Ok(TransitCiphertext {
        version,
        iv: iv.to_vec(),
        ciphertext: ciphertext.to_vec(),
        tag: tag.to_vec(),
    })
}

/// Builds `vault:v<N>:<base64(iv || ciphertext || tag)>` (the inverse of the parser).
pub(super) fn format_transit_ciphertext(
    version: u32,
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> String {
    let mut raw = Vec::with_capacity(iv.len() + ciphertext.len() + tag.len());
    raw.extend_from_slice(iv);
    raw.extend_from_slice(ciphertext);
    raw.extend_from_slice(tag);
    format!("vault:v{version}:{}", STANDARD.encode(raw))
}

/// The XKS key spec of a Transit key type: `aes256-gcm96` → `AES_256`, `aes128-gcm96` →
/// `AES_128`, anything else upper-cased with `-` → `_` (`CHACHA20_POLY1305`, `RSA_2048`), so
/// the proxy can refuse it.
pub(super) fn key_spec_for(transit_type: &str) -> String {
    match transit_type {
        AES256_GCM96 => AES_256.to_owned(),
        "aes128-gcm96" => "AES_128".to_owned(),
        other => other.to_ascii_uppercase().replace('-', "_"),
    }
}

/// The `errors` of a Vault error body, joined and shortened (they end up in logs).
pub(super) fn vault_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let joined = match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|m| tidy_message(m))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "(no error message)".to_owned(),
    };
    let mut short: String = joined.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < joined.len() {
        short.push('…');
    }
    short
}

/// One line from a Vault error, which may be a Go multierror ("1 error occurred:\n\t* …").
fn tidy_message(message: &str) -> String {
    let flat = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let body = match flat.split_once(" occurred: ") {
        Some((count, rest))
            if count
                .split(' ')
                .next()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            rest
        }
        _ => flat.as_str(),
    };
    body.trim_start_matches("* ").replace(" * ", "; ")
}

/// The text of a backend error without the variant's prefix, for nesting in another message.
pub(super) fn detail(e: &BackendError) -> String {
    match e {
        BackendError::Failure(m) | BackendError::Timeout(m) | BackendError::Overloaded(m) => {
            m.clone()
        }
        other => other.to_string(),
    }
}

/// An HTTP status Vault answered that is not the operation's own answer.
pub(super) fn status_error(status: StatusCode, body: &[u8]) -> BackendError {
    let message = vault_message(body);
    match status.as_u16() {
        403 => BackendError::Failure(format!("permission denied by transit: {message}")),
        429 => BackendError::Overloaded(format!("transit rate limit reached: {message}")),
        503 => BackendError::Failure(format!(
            "transit unavailable (503, sealed or no active node): {message}"
        )),
        s => BackendError::Failure(format!("transit answered {s}: {message}")),
    }
}

/// A `400` to a decrypt.
pub(super) fn classify_decrypt_400(message: &str, name: &str, version: u32) -> BackendError {
    let m = message.to_ascii_lowercase();
    if m.contains("encryption key not found") || m == "key not found" {
        BackendError::KeyNotFound(name.to_owned())
    } else if m.contains("version is too new") || m.contains("too old") || m.contains("key version")
    {
        // Above latest_version, below min_decryption_version, or trimmed.
        BackendError::UnknownKeyVersion(version)
    } else if m.contains("message authentication failed") || m.contains("invalid ciphertext") {
        BackendError::InvalidCiphertext
    } else {
        BackendError::Failure(format!("transit refused the decryption: {message}"))
    }
}

/// A `400` to an encrypt (the version was pinned from `key_info`, so a refused version is a
/// race with a key change on the Vault side, not the caller's fault).
pub(super) fn classify_encrypt_400(message: &str, name: &str, version: u32) -> BackendError {
    let m = message.to_ascii_lowercase();
    if m.contains("encryption key not found") || m == "key not found" {
        BackendError::KeyNotFound(name.to_owned())
    } else if m.contains("version") {
        BackendError::Failure(format!(
            "transit refused key version {version} for encryption: {message}"
        ))
    } else {
        BackendError::Failure(format!("transit refused the encryption: {message}"))
    }
}

/// Refuses an answer whose warnings say Vault ignored a parameter that carries security
/// (Vault before 1.13 does not know `associated_data` and would drop the AAD silently).
pub(super) fn check_ignored_parameters(warnings: Option<&[String]>) -> Result<(), BackendError> {
    let ignored = warnings.unwrap_or_default().iter().find(|w| {
        let w = w.to_ascii_lowercase();
        w.contains("ignored") && (w.contains("associated_data") || w.contains("key_version"))
    });
    match ignored {
        None => Ok(()),
        Some(w) => Err(BackendError::Failure(format!(
            "transit does not support a required parameter ({w}); HashiCorp Vault 1.13+ or OpenBao is needed"
        ))),
    }
}

/// Appends `base64(input)` to `out` without reallocating when `out` has the capacity.
fn push_base64(out: &mut Vec<u8>, input: &[u8]) {
    let start = out.len();
    let n = base64::encoded_len(input.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = out
        .get_mut(start..)
        .and_then(|tail| STANDARD.encode_slice(input, tail).ok())
        .unwrap_or(0);
    out.truncate(start + written);
}

fn b64_len(n: usize) -> usize {
    base64::encoded_len(n, true).unwrap_or(0)
}

/// The JSON body of an encrypt; wiped when the HTTP stack drops it.
pub(super) fn encrypt_body(plaintext: &[u8], aad: &[u8], version: u32) -> Bytes {
    let mut body = Zeroizing::new(Vec::with_capacity(
        b64_len(plaintext.len()) + b64_len(aad.len()) + 80,
    ));
    body.extend_from_slice(br#"{"plaintext":""#);
    push_base64(&mut body, plaintext);
    body.extend_from_slice(br#"","associated_data":""#);
    push_base64(&mut body, aad);
    body.extend_from_slice(format!(r#"","key_version":{version}}}"#).as_bytes());
    Bytes::from_owner(body)
}

/// The JSON body of a decrypt.
pub(super) fn decrypt_body(
    version: u32,
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Bytes {
    let transit = format_transit_ciphertext(version, iv, ciphertext, tag);
    let mut body = Vec::with_capacity(transit.len() + b64_len(aad.len()) + 48);
    body.extend_from_slice(br#"{"ciphertext":""#);
    body.extend_from_slice(transit.as_bytes());
    body.extend_from_slice(br#"","associated_data":""#);
    push_base64(&mut body, aad);
    body.extend_from_slice(br#""}"#);
    Bytes::from(body)
}

/// Decodes base64 plaintext into a buffer that is wiped on drop (and never reallocated).
pub(super) fn decode_secret(b64: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(b64.len())));
    STANDARD.decode_vec(b64, &mut out).ok()?;
    Some(out)
}

/// The JSON body of `GET /v1/sys/health` (every status code carries one).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct SysHealth {
    #[serde(default)]
    pub(super) initialized: bool,
    #[serde(default)]
    pub(super) sealed: bool,
    #[serde(default)]
    pub(super) standby: bool,
    #[serde(default)]
    pub(super) performance_standby: bool,
    #[serde(default)]
    pub(super) version: String,
    /// Only HashiCorp Vault 1.16+ sends it.
    #[serde(default)]
    pub(super) enterprise: Option<bool>,
}

/// Whether the node can serve, from `sys/health`: `Err` = unavailable, `Ok(Some)` = serving
/// but degraded, `Ok(None)` = fine.
pub(super) fn classify_sys_health(h: &SysHealth) -> Result<Option<String>, String> {
    if !h.initialized {
        Err("Vault is not initialized".to_owned())
    } else if h.sealed {
        Err("Vault is sealed".to_owned())
    } else if h.standby && !h.performance_standby {
        Ok(Some(
            "answered by a standby node (requests are forwarded to the active node)".to_owned(),
        ))
    } else {
        Ok(None)
    }
}

/// The vendor behind a `sys/health` answer. HashiCorp Vault 1.16+ sends an `enterprise`
/// field; enterprise builds carry `+ent`/`+prem`; HashiCorp Vault is 0.x/1.x while OpenBao
/// started at 2.0.
pub(super) fn vendor_from_health(version: &str, enterprise: Option<bool>) -> Option<&'static str> {
    if enterprise.is_some() || version.contains("+ent") || version.contains("+prem") {
        return Some("HashiCorp Vault");
    }
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    Some(if major >= 2 {
        "OpenBao"
    } else {
        "HashiCorp Vault"
    })
}

/// The message of a reqwest error with its sources (no secret: the token is in a header).
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Vault answers.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct KeyResponse {
    pub(super) data: KeyData,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct KeyData {
    #[serde(rename = "type")]
    pub(super) key_type: String,
    pub(super) latest_version: u32,
    #[serde(default)]
    supports_encryption: bool,
    #[serde(default)]
    supports_decryption: bool,
    /// Derived (and convergent) keys need a per-call context the XKS API does not carry.
    #[serde(default)]
    pub(super) derived: bool,
}

/// The facts the proxy uses from a Transit key. Derived (and convergent) keys allow no
/// usage: they need a per-call context the XKS API does not carry.
pub(super) fn key_info_of(key: &KeyData) -> KeyInfo {
    let usable = !key.derived;
    KeyInfo {
        key_spec: key_spec_for(&key.key_type),
        status: KeyStatus::Enabled,
        usages: KeyUsages {
            encrypt: usable && key.supports_encryption,
            decrypt: usable && key.supports_decryption,
        },
        current_version: key.latest_version,
    }
}

#[derive(Deserialize)]
pub(super) struct EncryptResponse<'a> {
    #[serde(borrow)]
    pub(super) data: EncryptData<'a>,
    #[serde(default)]
    pub(super) warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(super) struct EncryptData<'a> {
    #[serde(borrow)]
    pub(super) ciphertext: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct DecryptResponse<'a> {
    #[serde(borrow)]
    pub(super) data: DecryptData<'a>,
    #[serde(default)]
    pub(super) warnings: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(super) struct DecryptData<'a> {
    /// Borrowed from the (wiped) body, so the plaintext is not copied.
    #[serde(borrow, default)]
    pub(super) plaintext: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct AuthResponse<'a> {
    #[serde(borrow)]
    pub(super) auth: AuthData<'a>,
}

#[derive(Deserialize)]
pub(super) struct AuthData<'a> {
    #[serde(borrow)]
    pub(super) client_token: Cow<'a, str>,
    #[serde(default)]
    pub(super) lease_duration: u64,
    #[serde(default)]
    pub(super) renewable: bool,
}

#[derive(Deserialize)]
pub(super) struct LookupResponse {
    pub(super) data: LookupData,
}

#[derive(Deserialize)]
pub(super) struct LookupData {
    #[serde(default)]
    pub(super) ttl: i64,
    #[serde(default)]
    pub(super) renewable: bool,
}

#[derive(Deserialize)]
pub(super) struct ListResponse {
    pub(super) data: ListData,
}

#[derive(Deserialize)]
pub(super) struct ListData {
    #[serde(default)]
    pub(super) keys: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct LoginRequest<'a> {
    pub(super) role_id: &'a str,
    pub(super) secret_id: &'a str,
}

#[derive(Serialize)]
pub(super) struct CreateKeyRequest {
    #[serde(rename = "type")]
    pub(super) key_type: &'static str,
    pub(super) exportable: bool,
    pub(super) allow_plaintext_backup: bool,
}

pub(super) fn unreadable(what: &str, e: &serde_json::Error) -> BackendError {
    // The position only: serde's message may quote the (secret) content.
    BackendError::Failure(format!(
        "unreadable transit {what} answer (JSON error at line {} column {})",
        e.line(),
        e.column()
    ))
}
