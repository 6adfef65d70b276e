//! The AAD handed to AES-GCM.
//!
//! The spec's construction binds the caller's AAD and the `ciphertextMetadata` together so
//! that bytes cannot be moved from one field to the other:
//!
//! ```text
//! BE16(len(AAD)) || AAD || U8(len(CM)) || CM
//! ```
//!
//! The widely used reference proxy puts SHA-256(AAD) in place of the AAD (and only when the
//! AAD field is present, even if empty), keeping the 2-byte length of the original AAD.
//! Ciphertexts it produced decrypt only under that variant, so key stores migrated from it
//! select [`AadConstruction::ReferenceDigest`].

use sha2::{Digest, Sha256};

use crate::limits::{MAX_AAD_BYTES, MAX_CIPHERTEXT_METADATA_BYTES};

/// How the AES-GCM AAD is built from the request's AAD and `ciphertextMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AadConstruction {
    /// The spec's construction (the default).
    Spec,
    /// The reference proxy's variant: SHA-256 of the AAD in place of the AAD.
    ReferenceDigest,
}

/// Why an AAD cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AadError {
    /// The AAD is longer than its 2-byte length field can describe.
    #[error("additionalAuthenticatedData is {0} bytes; at most 65535 can be bound")]
    AadTooLong(usize),
    /// The metadata is longer than the spec allows.
    #[error("ciphertextMetadata is {0} bytes; at most 20 are allowed")]
    MetadataTooLong(usize),
}

impl AadConstruction {
    /// Builds the AES-GCM AAD. `aad` is `None` when the request had no AAD field.
    pub fn build(self, aad: Option<&[u8]>, metadata: &[u8]) -> Result<Vec<u8>, AadError> {
        let aad_len = aad.map_or(0, <[u8]>::len);
        let aad_len16 = u16::try_from(aad_len).map_err(|_| AadError::AadTooLong(aad_len))?;
        debug_assert!(aad_len <= MAX_AAD_BYTES);
        if metadata.len() > MAX_CIPHERTEXT_METADATA_BYTES {
            return Err(AadError::MetadataTooLong(metadata.len()));
        }
        // Checked just above: at most 20.
        let cm_len = metadata.len() as u8;
        let mut out = Vec::with_capacity(2 + aad_len.max(32) + 1 + metadata.len());
        out.extend_from_slice(&aad_len16.to_be_bytes());
        match (self, aad) {
            (Self::Spec, Some(aad)) => out.extend_from_slice(aad),
            (Self::ReferenceDigest, Some(aad)) => out.extend_from_slice(&Sha256::digest(aad)),
            (_, None) => {}
        }
        out.push(cm_len);
        out.extend_from_slice(metadata);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_construction() {
        let aad = b"project=nile";
        let got = AadConstruction::Spec
            .build(Some(aad), b"\x01\x01")
            .expect("ok");
        let mut want = vec![0x00, 12];
        want.extend_from_slice(aad);
        want.extend_from_slice(&[2, 1, 1]);
        assert_eq!(got, want);
        // Absent fields still contribute both length fields.
        assert_eq!(
            AadConstruction::Spec.build(None, b"").expect("ok"),
            vec![0, 0, 0]
        );
        // Moving bytes between AAD and metadata changes the result.
        let a = AadConstruction::Spec.build(Some(b"\x01"), b"").expect("ok");
        let b = AadConstruction::Spec.build(None, b"\x01").expect("ok");
        assert_ne!(a, b);
    }

    #[test]
    fn reference_digest_construction() {
        // Derived by hand from the reference notes: BE16(len(AAD)) || SHA256(AAD) || U8(0).
        let got = AadConstruction::ReferenceDigest
            .build(Some(b"abc"), b"")
            .expect("ok");
        let mut want = vec![0x00, 0x03];
        want.extend_from_slice(
            &hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .expect("hex"),
        );
        want.push(0);
        assert_eq!(got, want);
        // Present but empty AAD is still digested; absent AAD is not.
        let empty = AadConstruction::ReferenceDigest
            .build(Some(b""), b"")
            .expect("ok");
        assert_eq!(empty.len(), 2 + 32 + 1);
        let absent = AadConstruction::ReferenceDigest
            .build(None, b"")
            .expect("ok");
        assert_eq!(absent, vec![0, 0, 0]);
    }

    #[test]
    fn limits() {
        let big = vec![0u8; MAX_AAD_BYTES + 1];
        assert_eq!(
            AadConstruction::Spec.build(Some(&big), b""),
            Err(AadError::AadTooLong(MAX_AAD_BYTES + 1))
        );
        assert!(AadConstruction::Spec.build(Some(&big[1..]), b"").is_ok());
        assert_eq!(
            AadConstruction::Spec.build(None, &[0u8; 21]),
            Err(AadError::MetadataTooLong(21))
        );
    }
}
