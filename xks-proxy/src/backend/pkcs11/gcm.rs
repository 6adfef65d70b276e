//! AES-GCM through `C_Encrypt`/`C_Decrypt`, with the IV strategy the HSM needs, and the
//! pure functions that cut each HSM's output shape into ciphertext, IV and tag.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use zeroize::Zeroizing;

use super::config::IvStrategy;
use super::session::{Fail, Inner};
use crate::backend::{BackendError, EncryptOutput};

const TAG_BYTES: usize = 16;
pub(super) const GENERATED_IV_BYTES: usize = 12;

/// Splits `C_Encrypt` output without an IV into ciphertext and tag.
pub(super) fn split_tag(
    out: &[u8],
    plaintext_len: usize,
    tag_appended: bool,
) -> Result<(Vec<u8>, Vec<u8>), BackendError> {
    if out.len() != plaintext_len + TAG_BYTES {
        return Err(BackendError::Failure(format!(
            "the HSM returned {} bytes of AES-GCM output for {plaintext_len} bytes of plaintext; \
             expected {} (ciphertext and a 16-byte tag)",
            out.len(),
            plaintext_len + TAG_BYTES
        )));
    }
    let (a, b) = if tag_appended {
        out.split_at(plaintext_len)
    } else {
        out.split_at(TAG_BYTES)
    };
    Ok(if tag_appended {
        (a.to_vec(), b.to_vec())
    } else {
        (b.to_vec(), a.to_vec())
    })
}

fn refuse_zero_iv(iv: &[u8], how: &str) -> Result<(), BackendError> {
    if iv.iter().all(|&b| b == 0) {
        return Err(BackendError::Failure(format!(
            "the HSM returned an all-zero IV ({how}); refusing the ciphertext. \
             Check capabilities.iv for this HSM"
        )));
    }
    Ok(())
}

/// [`IvStrategy::HsmGenerated`] (Luna): `C_Encrypt` returned `ciphertext || tag || IV` (or
/// `tag || ciphertext || IV` without `tag_appended`), the IV being 12 (or 16) bytes.
///
/// Unit-tested on byte strings only: SoftHSM cannot generate GCM IVs.
pub(super) fn parse_hsm_generated_output(
    out: &[u8],
    plaintext_len: usize,
    tag_appended: bool,
) -> Result<EncryptOutput, BackendError> {
    let body_len = plaintext_len + TAG_BYTES;
    let iv_len = out.len().saturating_sub(body_len);
    if out.len() < body_len || !xks_api::limits::IV_LENGTHS.contains(&iv_len) {
        return Err(BackendError::Failure(format!(
            "the HSM returned {} bytes of AES-GCM output for {plaintext_len} bytes of plaintext; \
             with hsm-generated IVs it must be ciphertext, a 16-byte tag and a 12- or 16-byte IV",
            out.len()
        )));
    }
    let (body, iv) = out.split_at(body_len);
    refuse_zero_iv(iv, "appended to the output")?;
    let (ciphertext, tag) = split_tag(body, plaintext_len, tag_appended)?;
    Ok(EncryptOutput {
        ciphertext,
        iv: iv.to_vec(),
        tag,
    })
}

/// [`IvStrategy::ZeroIvFilledByHsm`] (CloudHSM, nShield): the IV buffer, 12 zero bytes before
/// the call, now holds the IV the HSM used; `C_Encrypt` returned `ciphertext || tag`.
///
/// Unit-tested on byte strings only: SoftHSM does not write the IV buffer.
pub(super) fn parse_zero_iv_output(
    out: &[u8],
    iv_buffer: &[u8],
    plaintext_len: usize,
    tag_appended: bool,
) -> Result<EncryptOutput, BackendError> {
    if iv_buffer.len() != GENERATED_IV_BYTES {
        return Err(BackendError::Failure(format!(
            "the IV buffer is {} bytes; expected {GENERATED_IV_BYTES}",
            iv_buffer.len()
        )));
    }
    refuse_zero_iv(iv_buffer, "the HSM did not write the IV buffer")?;
    let (ciphertext, tag) = split_tag(out, plaintext_len, tag_appended)?;
    Ok(EncryptOutput {
        ciphertext,
        iv: iv_buffer.to_vec(),
        tag,
    })
}

/// `C_Decrypt` input: `ciphertext || tag`, or `tag || ciphertext` without `tag_appended`.
pub(super) fn join_tag(ciphertext: &[u8], tag: &[u8], tag_appended: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(ciphertext.len() + tag.len());
    if tag_appended {
        v.extend_from_slice(ciphertext);
        v.extend_from_slice(tag);
    } else {
        v.extend_from_slice(tag);
        v.extend_from_slice(ciphertext);
    }
    v
}

impl Inner {
    pub(super) fn gcm_encrypt(
        &self,
        session: &Session,
        key: ObjectHandle,
        proxy_iv: Option<[u8; GENERATED_IV_BYTES]>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<EncryptOutput, Fail> {
        let mut iv = match self.caps.iv {
            IvStrategy::ProxySupplied => proxy_iv
                .ok_or_else(|| {
                    Fail::Answer(BackendError::Failure(
                        "proxy-supplied IVs are configured but the proxy passed none".into(),
                    ))
                })?
                .to_vec(),
            IvStrategy::HsmGenerated => Vec::new(),
            IvStrategy::ZeroIvFilledByHsm => vec![0; GENERATED_IV_BYTES],
        };
        let out = {
            let params = GcmParams::new(&mut iv, aad, Ulong::try_from(TAG_BYTES * 8)?)?;
            session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?
        };
        let tag_appended = self.caps.tag_appended;
        match self.caps.iv {
            IvStrategy::ProxySupplied => {
                split_tag(&out, plaintext.len(), tag_appended).map(|(ciphertext, tag)| {
                    EncryptOutput {
                        ciphertext,
                        iv,
                        tag,
                    }
                })
            }
            IvStrategy::HsmGenerated => {
                parse_hsm_generated_output(&out, plaintext.len(), tag_appended)
            }
            IvStrategy::ZeroIvFilledByHsm => {
                parse_zero_iv_output(&out, &iv, plaintext.len(), tag_appended)
            }
        }
        .map_err(Fail::Answer)
    }

    pub(super) fn gcm_decrypt(
        &self,
        session: &Session,
        key: ObjectHandle,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Fail> {
        if tag.len() != TAG_BYTES || !xks_api::limits::IV_LENGTHS.contains(&iv.len()) {
            return Err(Fail::Answer(BackendError::InvalidCiphertext));
        }
        let mut iv = iv.to_vec();
        let data = join_tag(ciphertext, tag, self.caps.tag_appended);
        let params = GcmParams::new(&mut iv, aad, Ulong::try_from(TAG_BYTES * 8)?)?;
        Ok(Zeroizing::new(session.decrypt(
            &Mechanism::AesGcm(params),
            key,
            &data,
        )?))
    }
}
