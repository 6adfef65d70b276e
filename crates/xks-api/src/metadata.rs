//! Our `ciphertextMetadata` format.
//!
//! ```text
//! byte 0      format byte: which AAD construction sealed this ciphertext
//! bytes 1..   the key version, unsigned LEB128, minimal (1 to 5 bytes)
//! ```
//!
//! At most 6 bytes, well under the spec's 20. The metadata is itself bound into the GCM AAD,
//! so a changed byte fails authentication. Absent metadata means: the key store's configured
//! construction with the key's first version (ciphertexts from proxies that sent none).

use crate::aad::AadConstruction;

/// Format byte for [`AadConstruction::Spec`].
pub const FORMAT_SPEC_AAD: u8 = 0x01;
/// Format byte for [`AadConstruction::ReferenceDigest`].
pub const FORMAT_REFERENCE_DIGEST_AAD: u8 = 0x02;
/// The first version of every key.
pub const FIRST_KEY_VERSION: u32 = 1;

/// Decoded `ciphertextMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiphertextMetadata {
    /// How the AES-GCM AAD was built.
    pub construction: AadConstruction,
    /// Which version of the external key encrypted the data (1-based).
    pub key_version: u32,
}

/// Why metadata does not name a ciphertext we can decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Empty metadata field (absent is fine, present-but-empty is not ours).
    #[error("ciphertextMetadata is empty")]
    Empty,
    /// The format byte names no construction we know.
    #[error("ciphertextMetadata format byte {0:#04x} is unknown")]
    UnknownFormat(u8),
    /// The key version is missing, zero, too large, non-minimal or followed by extra bytes.
    #[error("ciphertextMetadata key version is malformed")]
    BadVersion,
}

impl CiphertextMetadata {
    /// The metadata for a new ciphertext.
    pub fn new(construction: AadConstruction, key_version: u32) -> Self {
        Self {
            construction,
            key_version,
        }
    }

    /// What absent metadata means for a key store using `construction`.
    pub fn absent(construction: AadConstruction) -> Self {
        Self::new(construction, FIRST_KEY_VERSION)
    }

    /// Encodes to the wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6);
        out.push(match self.construction {
            AadConstruction::Spec => FORMAT_SPEC_AAD,
            AadConstruction::ReferenceDigest => FORMAT_REFERENCE_DIGEST_AAD,
        });
        let mut v = self.key_version;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out
    }

    /// Decodes wire bytes, strictly: every accepted byte string has one meaning and one form.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        let (&format, rest) = bytes.split_first().ok_or(MetadataError::Empty)?;
        let construction = match format {
            FORMAT_SPEC_AAD => AadConstruction::Spec,
            FORMAT_REFERENCE_DIGEST_AAD => AadConstruction::ReferenceDigest,
            other => return Err(MetadataError::UnknownFormat(other)),
        };
        let mut version: u64 = 0;
        let mut consumed = 0;
        for (i, &b) in rest.iter().enumerate() {
            if i >= 5 {
                return Err(MetadataError::BadVersion);
            }
            version |= u64::from(b & 0x7f) << (7 * i);
            consumed = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let last = consumed.checked_sub(1).and_then(|i| rest.get(i));
        let terminated = last.is_some_and(|b| b & 0x80 == 0);
        let minimal = consumed <= 1 || last.is_some_and(|&b| b != 0);
        if !terminated || !minimal || consumed != rest.len() {
            return Err(MetadataError::BadVersion);
        }
        let key_version = u32::try_from(version).map_err(|_| MetadataError::BadVersion)?;
        if key_version == 0 {
            return Err(MetadataError::BadVersion);
        }
        Ok(Self::new(construction, key_version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for c in [AadConstruction::Spec, AadConstruction::ReferenceDigest] {
            for v in [1, 2, 127, 128, 300, 16_383, 16_384, u32::MAX] {
                let m = CiphertextMetadata::new(c, v);
                let bytes = m.encode();
                assert!(bytes.len() <= 6);
                assert_eq!(CiphertextMetadata::decode(&bytes), Ok(m));
            }
        }
        assert_eq!(
            CiphertextMetadata::new(AadConstruction::Spec, 1).encode(),
            vec![0x01, 0x01]
        );
        assert_eq!(
            CiphertextMetadata::new(AadConstruction::Spec, 300).encode(),
            vec![0x01, 0xac, 0x02]
        );
    }

    #[test]
    fn rejects_what_is_not_ours() {
        use MetadataError::*;
        let cases: &[(&[u8], MetadataError)] = &[
            (b"", Empty),
            (b"\x00\x01", UnknownFormat(0)),
            (b"\x03\x01", UnknownFormat(3)),
            (b"v0.0.1", UnknownFormat(b'v')),
            (b"\x01", BadVersion),
            (b"\x01\x00", BadVersion),                 // version 0
            (b"\x01\x81", BadVersion),                 // unterminated
            (b"\x01\x81\x00", BadVersion),             // non-minimal
            (b"\x01\x01\x01", BadVersion),             // trailing byte
            (b"\x01\xff\xff\xff\xff\x7f", BadVersion), // > u32
            (b"\x01\x80\x80\x80\x80\x80\x01", BadVersion),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                CiphertextMetadata::decode(bytes),
                Err(want.clone()),
                "{bytes:?}"
            );
        }
    }
}
