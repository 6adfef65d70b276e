//! Size limits of the XKS Proxy API v1, in decoded bytes unless a name says otherwise.

/// Smallest plaintext (Encrypt) and ciphertext (Decrypt) a proxy must accept.
pub const MIN_SUPPORTED_DATA_BYTES: usize = 4300;
/// Smallest `additionalAuthenticatedData` a proxy must accept.
pub const MIN_SUPPORTED_AAD_BYTES: usize = 8192;
/// Largest AAD that can be described at all: its length travels as a 2-byte big-endian field.
pub const MAX_AAD_BYTES: usize = u16::MAX as usize;
/// Largest `ciphertextMetadata` (KMS rejects longer values).
pub const MAX_CIPHERTEXT_METADATA_BYTES: usize = 20;
/// The IV lengths a ciphertext may carry.
pub const IV_LENGTHS: [usize; 2] = [12, 16];
/// The IV length this stack generates (96 bits, the GCM recommendation).
pub const GENERATED_IV_BYTES: usize = 12;
/// The authentication tag length (128 bits).
pub const TAG_BYTES: usize = 16;
/// AES-256 key length.
pub const AES_256_KEY_BYTES: usize = 32;
/// Longest external key id.
pub const MAX_KEY_ID_CHARS: usize = 128;
/// Longest ARN a proxy must accept in `requestMetadata`.
pub const MAX_ARN_CHARS: usize = 2048;
/// Most `keyUsage` entries in a GetKeyMetadata response.
pub const MAX_KEY_USAGES: usize = 10;
/// Most `ekmFleetDetails` entries in a health response (at least one is required).
pub const MAX_EKM_FLEET_DETAILS: usize = 10;
/// Longest `errorMessage` (the spec says "less than 512").
pub const MAX_ERROR_MESSAGE_CHARS: usize = 511;
/// Longest `XksProxyUriPath` (`[/prefix]/kms/xks/v1`).
pub const MAX_URI_PATH_CHARS: usize = 128;
/// Longest whole request URI.
pub const MAX_URI_CHARS: usize = 256;
/// KMS's budget for any one proxy call, in milliseconds.
pub const KMS_CALL_BUDGET_MS: u64 = 250;
/// SigV4 clock skew the proxy tolerates, in seconds (both directions).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Oldest cached deep-health result the spec allows, in seconds.
pub const MAX_HEALTH_CACHE_SECS: u64 = 60;

/// Length of the standard, padded base64 encoding of `n` bytes.
pub const fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths_match_the_spec_table() {
        assert_eq!(base64_len(MIN_SUPPORTED_DATA_BYTES), 5736);
        assert_eq!(base64_len(MIN_SUPPORTED_AAD_BYTES), 10924);
        assert_eq!(base64_len(MAX_CIPHERTEXT_METADATA_BYTES), 28);
        assert_eq!(base64_len(12), 16);
        assert_eq!(base64_len(16), 24);
    }
}
