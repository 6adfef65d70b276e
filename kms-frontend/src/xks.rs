//! External key stores on the front end's side: how each proxy failure surfaces for each
//! KMS operation (the failure table, defined once here), and the ciphertext blob of double
//! encryption.
//!
//! Double-encryption blob (format 0x04; 0x02 is the first version, only read):
//!
//! ```text
//! 0        format 0x04 (EXTERNAL_KEY_STORE key, double encryption, context encoding v2;
//!          0x02: the same with context encoding v1, see `crate::blob`)
//! 1        key id length n, then the key id
//! ..+12    inner IV (AES-256-GCM with the KMS key material)
//! ..+1     proxy IV length (12 or 16), then the proxy IV
//! ..+16    proxy authentication tag
//! ..+1     ciphertextMetadata length (0..=20), then the metadata
//! ..       proxy ciphertext (the inner ciphertext || inner tag, encrypted by the proxy)
//! ```
//!
//! The inner layer's AAD is the header (format + key id) followed by the canonical
//! encryption context; the AAD sent to the proxy is the header followed by SHA-256 of the
//! canonical encryption context (both in the encoding the format names), so it is at most 2 + 255 + 32 bytes for any context (far
//! within the proxy's 8192) and still binds both. A 4096-byte plaintext gives a 4112-byte
//! proxy plaintext (within the proxy's 4300) and a blob of at most 4,473 bytes (within 6144).

use sha2::{Digest, Sha256};

use crate::protocol::KmsError;
use crate::xks_client::XksCallError;
use xks_api::ErrorName;

/// Format byte of a double-encryption blob (context encoding v2); what encryption writes.
pub const FORMAT_XKS: u8 = 0x04;

/// Format byte of the first double-encryption blob (context encoding v1): read, never
/// written.
pub const FORMAT_XKS_V1: u8 = 0x02;

/// Whether `format` is a double-encryption blob (either version).
pub fn is_xks_format(format: u8) -> bool {
    format == FORMAT_XKS || format == FORMAT_XKS_V1
}

/// The context encoding a double-encryption blob format uses.
pub fn context_encoding(format: u8) -> crate::blob::ContextEncoding {
    if format == FORMAT_XKS_V1 {
        crate::blob::ContextEncoding::V1
    } else {
        crate::blob::ContextEncoding::V2
    }
}

/// Which KMS operation family a proxy call served (the failure table differs per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSite {
    /// CreateCustomKeyStore / UpdateCustomKeyStore (health check).
    ManageStore,
    /// CreateKey (GetKeyMetadata).
    CreateKey,
    /// Encrypt, Decrypt, GenerateDataKey*, ReEncrypt.
    Crypto,
}

/// The KMS error a proxy failure becomes (kms-api.md §3.8). The proxy's own message goes
/// into ours, as KMS writes it to the caller's logs.
pub fn surface(site: CallSite, e: &XksCallError) -> KmsError {
    let cause = describe(e);
    match site {
        CallSite::Crypto => KmsError::invalid_state(format!(
            "The external key store proxy failed the request: {cause}"
        )),
        CallSite::CreateKey => match e {
            XksCallError::Proxy {
                name: ErrorName::KeyNotFoundException,
                ..
            } => KmsError::client(
                "XksKeyNotFoundException",
                format!("The external key store proxy could not find the external key: {cause}"),
            ),
            XksCallError::Proxy {
                name: ErrorName::InvalidStateException | ErrorName::InvalidKeyUsageException,
                ..
            } => KmsError::client("XksKeyInvalidConfigurationException", cause),
            XksCallError::Proxy {
                name: ErrorName::AccessDeniedException,
                ..
            } => KmsError::invalid_state(format!(
                "The external key store proxy denied access: {cause}"
            )),
            _ => KmsError::client(
                "CustomKeyStoreInvalidStateException",
                format!("The external key store proxy could not serve CreateKey: {cause}"),
            ),
        },
        CallSite::ManageStore => match e {
            XksCallError::Proxy {
                name: ErrorName::AuthenticationFailedException,
                ..
            } => KmsError::client(
                "XksProxyIncorrectAuthenticationCredentialException",
                format!(
                    "The external key store proxy rejected the authentication credential: {cause}"
                ),
            ),
            XksCallError::Proxy {
                name: ErrorName::InvalidUriPathException,
                ..
            } => KmsError::client(
                "XksProxyInvalidConfigurationException",
                format!("The external key store proxy URI path is not valid: {cause}"),
            ),
            XksCallError::Proxy {
                name: ErrorName::UnsupportedOperationException,
                ..
            } => KmsError::client("UnsupportedOperationException", cause),
            XksCallError::Proxy {
                name: ErrorName::ThrottlingException | ErrorName::DependencyTimeoutException,
                ..
            }
            | XksCallError::Timeout
            | XksCallError::Unreachable(_)
            | XksCallError::Tls(_) => KmsError::client(
                "XksProxyUriUnreachableException",
                format!("KMS cannot communicate with the external key store proxy: {cause}"),
            ),
            _ => KmsError::client(
                "XksProxyInvalidResponseException",
                format!(
                    "KMS cannot interpret the response from the external key store proxy: {cause}"
                ),
            ),
        },
    }
}

fn describe(e: &XksCallError) -> String {
    match e {
        XksCallError::Proxy { name, message } if message.is_empty() => {
            format!("proxy answered {name}")
        }
        XksCallError::Proxy { name, message } => format!("proxy answered {name}: {message}"),
        other => other.to_string(),
    }
}

/// The parts of a double-encryption blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksBlob {
    /// The format byte ([`FORMAT_XKS`], or [`FORMAT_XKS_V1`] for a blob read back).
    pub format: u8,
    /// The KMS key id.
    pub key_id: String,
    /// The inner layer's IV.
    pub inner_iv: [u8; 12],
    /// The proxy's IV (12 or 16 bytes).
    pub proxy_iv: Vec<u8>,
    /// The proxy's tag.
    pub proxy_tag: [u8; 16],
    /// The proxy's ciphertextMetadata (may be empty).
    pub metadata: Vec<u8>,
    /// The proxy's ciphertext.
    pub proxy_ciphertext: Vec<u8>,
}

/// The header (format + key id) both layers' AADs start with.
pub fn header(format: u8, key_id: &str) -> Result<Vec<u8>, KmsError> {
    let n = u8::try_from(key_id.len()).map_err(|_| KmsError::internal("key id too long"))?;
    let mut h = vec![format, n];
    h.extend_from_slice(key_id.as_bytes());
    Ok(h)
}

/// The AAD sent to the proxy: header || SHA-256(canonical encryption context).
pub fn proxy_aad(format: u8, key_id: &str, canonical_context: &[u8]) -> Result<Vec<u8>, KmsError> {
    let mut a = header(format, key_id)?;
    a.extend_from_slice(&Sha256::digest(canonical_context));
    Ok(a)
}

impl XksBlob {
    /// Serializes the blob.
    pub fn encode(&self) -> Result<Vec<u8>, KmsError> {
        let mut b = header(self.format, &self.key_id)?;
        b.extend_from_slice(&self.inner_iv);
        let ivlen = u8::try_from(self.proxy_iv.len()).map_err(|_| KmsError::internal("bad IV"))?;
        b.push(ivlen);
        b.extend_from_slice(&self.proxy_iv);
        b.extend_from_slice(&self.proxy_tag);
        let mlen =
            u8::try_from(self.metadata.len()).map_err(|_| KmsError::internal("bad metadata"))?;
        b.push(mlen);
        b.extend_from_slice(&self.metadata);
        b.extend_from_slice(&self.proxy_ciphertext);
        Ok(b)
    }

    /// Parses a blob; anything malformed is `InvalidCiphertextException`.
    pub fn decode(blob: &[u8]) -> Result<Self, KmsError> {
        let invalid =
            || KmsError::client("InvalidCiphertextException", "The ciphertext is not valid.");
        let mut r = blob;
        let mut take = |n: usize| -> Result<&[u8], KmsError> {
            if r.len() < n {
                return Err(invalid());
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let format = take(1)?[0];
        if !is_xks_format(format) {
            return Err(invalid());
        }
        let n = usize::from(take(1)?[0]);
        let key_id = std::str::from_utf8(take(n)?)
            .map_err(|_| invalid())?
            .to_owned();
        let mut inner_iv = [0u8; 12];
        inner_iv.copy_from_slice(take(12)?);
        let ivlen = usize::from(take(1)?[0]);
        if ivlen != 12 && ivlen != 16 {
            return Err(invalid());
        }
        let proxy_iv = take(ivlen)?.to_vec();
        let mut proxy_tag = [0u8; 16];
        proxy_tag.copy_from_slice(take(16)?);
        let mlen = usize::from(take(1)?[0]);
        if mlen > 20 {
            return Err(invalid());
        }
        let metadata = take(mlen)?.to_vec();
        let rest = r;
        if rest.len() < 16 {
            return Err(invalid());
        }
        Ok(Self {
            format,
            key_id,
            inner_iv,
            proxy_iv,
            proxy_tag,
            metadata,
            proxy_ciphertext: rest.to_vec(),
        })
    }
}

/// The format byte of any ciphertext blob.
pub fn blob_format(blob: &[u8]) -> Option<u8> {
    blob.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_reject_damage() {
        let b = XksBlob {
            format: FORMAT_XKS,
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            inner_iv: [1; 12],
            proxy_iv: vec![2; 16],
            proxy_tag: [3; 16],
            metadata: vec![1, 1],
            proxy_ciphertext: vec![4; 4112],
        };
        let bytes = b.encode().expect("encode");
        assert!(bytes.len() <= 6144);
        assert_eq!(XksBlob::decode(&bytes).expect("decode"), b);
        for cut in [0, 1, 10, 40, 60, 80] {
            assert!(XksBlob::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut old = bytes.clone();
        old[0] = FORMAT_XKS_V1;
        assert_eq!(XksBlob::decode(&old).expect("v1").format, FORMAT_XKS_V1);
        let mut bad = bytes;
        bad[0] = 1;
        assert!(XksBlob::decode(&bad).is_err());
    }

    #[test]
    fn the_failure_table() {
        let proxy = |name| XksCallError::Proxy {
            name,
            message: String::new(),
        };
        let cases = [
            (
                CallSite::CreateKey,
                proxy(ErrorName::KeyNotFoundException),
                "XksKeyNotFoundException",
            ),
            (
                CallSite::CreateKey,
                proxy(ErrorName::InvalidStateException),
                "XksKeyInvalidConfigurationException",
            ),
            (
                CallSite::CreateKey,
                proxy(ErrorName::InvalidKeyUsageException),
                "XksKeyInvalidConfigurationException",
            ),
            (
                CallSite::CreateKey,
                proxy(ErrorName::AccessDeniedException),
                "KMSInvalidStateException",
            ),
            (
                CallSite::CreateKey,
                proxy(ErrorName::AuthenticationFailedException),
                "CustomKeyStoreInvalidStateException",
            ),
            (
                CallSite::CreateKey,
                XksCallError::Timeout,
                "CustomKeyStoreInvalidStateException",
            ),
            (
                CallSite::ManageStore,
                proxy(ErrorName::AuthenticationFailedException),
                "XksProxyIncorrectAuthenticationCredentialException",
            ),
            (
                CallSite::ManageStore,
                proxy(ErrorName::InvalidUriPathException),
                "XksProxyInvalidConfigurationException",
            ),
            (
                CallSite::ManageStore,
                proxy(ErrorName::ValidationException),
                "XksProxyInvalidResponseException",
            ),
            (
                CallSite::ManageStore,
                proxy(ErrorName::InternalException),
                "XksProxyInvalidResponseException",
            ),
            (
                CallSite::ManageStore,
                proxy(ErrorName::ThrottlingException),
                "XksProxyUriUnreachableException",
            ),
            (
                CallSite::ManageStore,
                XksCallError::Timeout,
                "XksProxyUriUnreachableException",
            ),
            (
                CallSite::ManageStore,
                XksCallError::Tls("x".into()),
                "XksProxyUriUnreachableException",
            ),
            (
                CallSite::ManageStore,
                XksCallError::InvalidResponse("x".into()),
                "XksProxyInvalidResponseException",
            ),
            (
                CallSite::Crypto,
                proxy(ErrorName::InvalidCiphertextException),
                "KMSInvalidStateException",
            ),
            (
                CallSite::Crypto,
                XksCallError::Unreachable("x".into()),
                "KMSInvalidStateException",
            ),
        ];
        for (site, e, want) in cases {
            assert_eq!(surface(site, &e).name, want, "{site:?} {e:?}");
        }
    }
}
