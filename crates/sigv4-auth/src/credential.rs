//! Credentials: an access key id with its secret, and a small cache of derived signing keys.
//!
//! SigV4 never uses the secret directly: it derives a per-day, per-region, per-service
//! signing key with a chain of four HMAC-SHA256 operations
//! (`"AWS4" + secret` → date → region → service → `"aws4_request"`). A [`Credential`] keeps
//! the last few derived keys so that verifying a request normally costs no derivation.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How many derived signing keys a [`Credential`] keeps.
///
/// A server sees one date (two around midnight UTC) per region and service, so a handful of
/// entries covers every realistic pattern; older keys are evicted (and zeroized).
pub const SIGNING_KEY_CACHE_CAPACITY: usize = 8;

/// A derived SigV4 signing key (the HMAC-SHA256 chain output), zeroized on drop.
pub(crate) type SigningKey = Zeroizing<[u8; 32]>;

/// A SigV4 secret access key.
///
/// The secret lives in a [`Zeroizing`] string (wiped when dropped); its `Debug`
/// implementation prints `<redacted>`, and it has no `Display`.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<String>);

impl SigningSecret {
    /// Wraps a secret access key.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret itself. Callers must not log or echo it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SigningSecret {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One cached signing key and the scope it was derived for.
struct CacheEntry {
    date: [u8; 8],
    region: Box<str>,
    service: Box<str>,
    key: SigningKey,
}

impl CacheEntry {
    fn matches(&self, date: &[u8; 8], region: &str, service: &str) -> bool {
        &self.date == date && &*self.region == region && &*self.service == service
    }
}

/// An access key id and its secret, with a cache of derived signing keys.
///
/// `Credential` is `Send + Sync`: share one behind an `Arc` between request handlers. The
/// cache sits behind a [`Mutex`] held only for a lookup or an insertion (never during HMAC
/// work), and keeps at most [`SIGNING_KEY_CACHE_CAPACITY`] keys, most recently used first.
/// `Debug` shows the access key id only.
pub struct Credential {
    access_key_id: String,
    secret: SigningSecret,
    cache: Mutex<Vec<CacheEntry>>,
}

impl Credential {
    /// A credential for `access_key_id` with `secret`.
    pub fn new(access_key_id: impl Into<String>, secret: SigningSecret) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret,
            cache: Mutex::new(Vec::with_capacity(SIGNING_KEY_CACHE_CAPACITY)),
        }
    }

    /// The access key id (public: it travels in every request's `Authorization` header).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret(&self) -> &SigningSecret {
        &self.secret
    }

    /// The signing key for `date` (`YYYYMMDD`), `region` and `service`, from the cache when
    /// present, otherwise derived and cached.
    pub(crate) fn signing_key(&self, date: &[u8; 8], region: &str, service: &str) -> SigningKey {
        {
            let mut cache = self.lock_cache();
            if let Some(position) = cache.iter().position(|e| e.matches(date, region, service)) {
                // Most recently used first; a hit at the front moves nothing.
                cache[..=position].rotate_right(1);
                return Zeroizing::new(*cache[0].key);
            }
        }
        // Derive outside the lock; two threads missing at once both derive the same key,
        // and the second insertion below is then a no-op.
        let key = derive_signing_key(&self.secret, date, region, service);
        let mut cache = self.lock_cache();
        if !cache.iter().any(|e| e.matches(date, region, service)) {
            // Dropping the evicted entry zeroizes its key.
            cache.truncate(SIGNING_KEY_CACHE_CAPACITY - 1);
            cache.insert(
                0,
                CacheEntry {
                    date: *date,
                    region: region.into(),
                    service: service.into(),
                    key: Zeroizing::new(*key),
                },
            );
        }
        key
    }

    /// The cache, even if a thread panicked while holding the lock: every update leaves the
    /// vector consistent, so a poisoned lock carries no broken invariant.
    fn lock_cache(&self) -> MutexGuard<'_, Vec<CacheEntry>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many signing keys are cached (for tests).
    #[cfg(test)]
    pub(crate) fn cached_keys(&self) -> usize {
        self.lock_cache().len()
    }
}

impl Clone for Credential {
    /// A copy of the access key id and secret, with an empty signing-key cache.
    fn clone(&self) -> Self {
        Self::new(self.access_key_id.clone(), self.secret.clone())
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(
        hmac_state(key)
            .chain_update(data)
            .finalize()
            .into_bytes()
            .into(),
    )
}

/// An HMAC-SHA256 state keyed with `key`.
///
/// Does HMAC's key preparation itself (a key longer than the 64-byte block is hashed, then
/// the key is zero-padded to a block) so that keying is infallible and the padded copy is
/// zeroized.
pub(crate) fn hmac_state(key: &[u8]) -> Hmac<Sha256> {
    const BLOCK: usize = 64;
    let mut block = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        let digest = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(key)));
        block[..32].copy_from_slice(&*digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let padded: &[u8; BLOCK] = &block;
    Hmac::<Sha256>::new(padded.into())
}

/// Derives the SigV4 signing key: `"AWS4" + secret` → date → region → service →
/// `"aws4_request"`.
pub(crate) fn derive_signing_key(
    secret: &SigningSecret,
    date: &[u8; 8],
    region: &str,
    service: &str,
) -> SigningKey {
    let mut initial = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    initial.extend_from_slice(b"AWS4");
    initial.extend_from_slice(secret.expose().as_bytes());
    let k_date = hmac_sha256(&initial, date);
    let k_region = hmac_sha256(&*k_date, region.as_bytes());
    let k_service = hmac_sha256(&*k_region, service.as_bytes());
    hmac_sha256(&*k_service, b"aws4_request")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn credential_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Credential>();
        assert_send_sync::<SigningSecret>();
    }

    #[test]
    fn known_signing_key() {
        // From the AWS SigV4 documentation ("Deriving the signing key" example).
        let key = derive_signing_key(&SigningSecret::new(SECRET), b"20120215", "us-east-1", "iam");
        assert_eq!(
            hex::encode(*key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn cache_hits_return_the_derived_key_and_stay_bounded() {
        let credential = Credential::new("AKIDEXAMPLE", SigningSecret::new(SECRET));
        let first = credential.signing_key(b"20150830", "us-east-1", "service");
        assert_eq!(credential.cached_keys(), 1);
        let again = credential.signing_key(b"20150830", "us-east-1", "service");
        assert_eq!(*first, *again);
        assert_eq!(credential.cached_keys(), 1);

        for i in 0..20 {
            let region = format!("region-{i}");
            let key = credential.signing_key(b"20150830", &region, "service");
            let expected =
                derive_signing_key(&SigningSecret::new(SECRET), b"20150830", &region, "service");
            assert_eq!(*key, *expected);
            assert!(credential.cached_keys() <= SIGNING_KEY_CACHE_CAPACITY);
        }
        assert_eq!(credential.cached_keys(), SIGNING_KEY_CACHE_CAPACITY);
        // The most recent entries are kept, and a hit still returns the right key.
        let key = credential.signing_key(b"20150830", "region-19", "service");
        let expected = derive_signing_key(
            &SigningSecret::new(SECRET),
            b"20150830",
            "region-19",
            "service",
        );
        assert_eq!(*key, *expected);
        // The evicted first entry is derived again, correctly.
        let key = credential.signing_key(b"20150830", "us-east-1", "service");
        assert_eq!(*key, *first);
    }

    #[test]
    fn different_scopes_give_different_keys() {
        let credential = Credential::new("AKIDEXAMPLE", SigningSecret::new(SECRET));
        let a = credential.signing_key(b"20150830", "us-east-1", "service");
        let b = credential.signing_key(b"20150831", "us-east-1", "service");
        let c = credential.signing_key(b"20150830", "us-east-2", "service");
        let d = credential.signing_key(b"20150830", "us-east-1", "kms");
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
        assert_ne!(*a, *d);
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = SigningSecret::new(SECRET);
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let credential = Credential::new("AKIDEXAMPLE", secret);
        credential.signing_key(b"20150830", "us-east-1", "service");
        let debug = format!("{credential:?}");
        assert!(debug.contains("AKIDEXAMPLE"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("wJalr"), "{debug}");
        let alternate = format!("{credential:#?}");
        assert!(!alternate.contains("wJalr"), "{alternate}");
    }

    #[test]
    fn clone_keeps_identity_and_starts_with_an_empty_cache() {
        let credential = Credential::new("AKIDEXAMPLE", SigningSecret::new(SECRET));
        credential.signing_key(b"20150830", "us-east-1", "service");
        let copy = credential.clone();
        assert_eq!(copy.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(copy.secret().expose(), SECRET);
        assert_eq!(copy.cached_keys(), 0);
        assert_eq!(credential.cached_keys(), 1);
    }
}
