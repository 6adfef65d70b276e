//! The ciphertext data integrity value (CDIV), spec Appendix C.
//!
//! `SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag)` over decoded bytes, with
//! absent fields contributing nothing and no length prefixes. The proxy must compute it from
//! its encrypt output *before* proving that output decrypts, so corruption in between is
//! caught by the caller.

use sha2::{Digest, Sha256};

/// The parts of an encrypt exchange the CDIV covers.
#[derive(Debug, Clone, Copy)]
pub struct CdivInput<'a> {
    /// The request's `additionalAuthenticatedData`, if any.
    pub aad: Option<&'a [u8]>,
    /// The response's `ciphertextMetadata`, if any.
    pub metadata: Option<&'a [u8]>,
    /// The response's IV.
    pub iv: &'a [u8],
    /// The response's ciphertext.
    pub ciphertext: &'a [u8],
    /// The response's authentication tag.
    pub tag: &'a [u8],
}

/// The only CDIV algorithm of API v1.
pub const SHA_256: &str = "SHA_256";

/// Computes the CDIV.
pub fn compute(input: &CdivInput<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(aad) = input.aad {
        h.update(aad);
    }
    if let Some(cm) = input.metadata {
        h.update(cm);
    }
    h.update(input.iv);
    h.update(input.ciphertext);
    h.update(input.tag);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{decode, encode};

    #[test]
    fn spec_vector() {
        // The example from the spec's Appendix C (plaintext "Hello World!").
        let aad = decode("cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n").expect("b64");
        let cm = decode("a2V5X3ZlcnNpb249MQ==").expect("b64");
        let iv = decode("HMrlRw85cAJUd5Ax").expect("b64");
        let ct = decode("ghxkK1txeDNn3q8Y").expect("b64");
        let tag = decode("vBxN2ncH1oEkR8WVXpmyYQ==").expect("b64");
        assert_eq!(aad.len() + cm.len() + iv.len() + ct.len() + tag.len(), 86);
        let got = compute(&CdivInput {
            aad: Some(&aad),
            metadata: Some(&cm),
            iv: &iv,
            ciphertext: &ct,
            tag: &tag,
        });
        assert_eq!(
            hex::encode(got),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
        assert_eq!(encode(&got), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
    }

    #[test]
    fn absent_fields_contribute_nothing() {
        let with_empty = compute(&CdivInput {
            aad: Some(b""),
            metadata: Some(b""),
            iv: b"iv",
            ciphertext: b"ct",
            tag: b"tag",
        });
        let absent = compute(&CdivInput {
            aad: None,
            metadata: None,
            iv: b"iv",
            ciphertext: b"ct",
            tag: b"tag",
        });
        assert_eq!(with_empty, absent);
    }
}
