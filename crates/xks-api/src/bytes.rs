//! Binary fields as the XKS API carries them: standard, padded base64 (RFC 4648 §4).
//!
//! Decoding is strict (no URL-safe alphabet, no missing padding, no non-canonical trailing
//! bits), so one byte string has exactly one accepted encoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

/// Encodes bytes as standard padded base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64, strictly.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

/// A non-secret binary field (ciphertext, IV, tag, AAD, metadata).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl Base64Bytes {
    /// The decoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Number of decoded bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lengths only: AAD may carry customer data and must not reach logs.
        write!(f, "Base64Bytes(len={})", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor).map(|z| Self(z.to_vec()))
    }
}

/// A secret binary field (plaintext): zeroized on drop, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(len={}, <redacted>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(encode(&self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor).map(Self)
    }
}

struct B64Visitor;

impl Visitor<'_> for B64Visitor {
    type Value = Zeroizing<Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a standard base64 string with padding")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        // Decode straight from the borrowed input into a zeroizing buffer: no intermediate
        // owned copy of the base64 text of a plaintext is made.
        let mut out = Zeroizing::new(vec![0u8; v.len() / 4 * 3 + 3]);
        match STANDARD.decode_slice(v.as_bytes(), &mut out[..]) {
            Ok(n) => {
                out.truncate(n);
                Ok(out)
            }
            Err(_) => Err(E::custom("value is not valid standard base64 with padding")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        let ok: Base64Bytes = serde_json::from_str(r#""SGVsbG8gV29ybGQh""#).expect("valid");
        assert_eq!(ok.as_slice(), b"Hello World!");
        for bad in [
            r#""SGVsbG8""#,     // missing padding
            r#""SGVsbG8_V29""#, // URL-safe alphabet
            r#""SGVsbG9=""#,    // non-canonical trailing bits
            r#""a b=""#,
            "12",
        ] {
            assert!(serde_json::from_str::<Base64Bytes>(bad).is_err(), "{bad}");
        }
        let empty: Base64Bytes = serde_json::from_str(r#""""#).expect("empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s: SecretBytes = serde_json::from_str(r#""c2VjcmV0""#).expect("valid");
        assert_eq!(s.expose(), b"secret");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(serde_json::to_string(&s).expect("ser"), r#""c2VjcmV0""#);
    }
}
