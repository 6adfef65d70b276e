//! The PKCS#11 backend: AES-GCM inside an HSM, through its PKCS#11 module.
//!
//! Keys live in one token and are found by label: the XKS key id is the `CKA_LABEL` of a
//! `CKO_SECRET_KEY` token object. The backend does single-part `CKM_AES_GCM` with the AAD the
//! proxy built, a 128-bit tag, and the IV strategy the HSM needs ([`HsmCapabilities`]).
//!
//! # Threads, sessions and deadlines
//!
//! Every PKCS#11 call runs on tokio's blocking pool (`spawn_blocking`), never on a runtime
//! worker. A call first waits at most [`Pkcs11Config::session_wait`] for one of
//! [`Pkcs11Config::pool_size`] permits (a `tokio::sync::Semaphore`); when none frees up in time
//! it fails with [`BackendError::Overloaded`], which the proxy answers with a 429
//! `ThrottlingException`. The permit and the session move into the blocking task, which gives
//! the session back to the pool and drops the permit when the PKCS#11 call returns, even when
//! the caller has already given up (the proxy's deadline answers 503): a slow HSM call can
//! hold its session only for as long as it really runs. Sessions are opened lazily (one at
//! [`Pkcs11Backend::open`], to check the PIN) and logged in as USER.
//!
//! Key handles are cached by label (and re-resolved when the token says a handle is invalid),
//! and so are the facts read from a key for [`Pkcs11Config::key_facts_ttl`]: GetKeyMetadata,
//! and the usage check the proxy makes before every Encrypt and Decrypt, then need no
//! PKCS#11 call and no blocking thread. On SoftHSMv2 that halves the calls of an Encrypt and
//! removes its most expensive one (`C_GetAttributeValue` of five attributes).
//!
//! # Failures
//!
//! - A failed tag check during decrypt (any CKR in [`HsmCapabilities::bad_tag_errors`]; SoftHSM
//!   says `CKR_GENERAL_ERROR`) is [`BackendError::InvalidCiphertext`], after a
//!   `C_GetSessionInfo` shows the session still answers; the session goes back to the pool.
//!   Tampered input never resets anything.
//! - `CKR_KEY_FUNCTION_NOT_PERMITTED` (and `CKR_KEY_TYPE_INCONSISTENT`, a key that cannot do
//!   AES-GCM) is [`BackendError::UsageNotPermitted`].
//! - `CKR_USER_NOT_LOGGED_IN`, or a key lookup that finds nothing in a session that is not
//!   logged in: log in again and retry once. A PIN the token refuses (`CKR_PIN_INCORRECT`,
//!   `CKR_PIN_LOCKED`, ...) is never tried again by this backend, so that it cannot lock the
//!   user PIN by retrying.
//! - `CKR_OBJECT_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`: the cached key handle is dropped
//!   and the key looked up again, once.
//! - A lookup that finds no key is [`BackendError::KeyNotFound`] only if the token still
//!   answers `C_GetTokenInfo`; otherwise it is a recovery as below. (A SoftHSM token deleted
//!   and re-created under a running process looks exactly like that: searches come back empty
//!   and `C_GetTokenInfo` fails with `CKR_GENERAL_ERROR` until the module is re-initialised.)
//! - `CKR_DEVICE_ERROR`, `CKR_DEVICE_REMOVED`, `CKR_SESSION_HANDLE_INVALID`,
//!   `CKR_SESSION_CLOSED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_TOKEN_NOT_RECOGNIZED`,
//!   `CKR_SLOT_ID_INVALID`, `CKR_CRYPTOKI_NOT_INITIALIZED`, or a `CKR_GENERAL_ERROR` outside
//!   decrypt that a probe (`C_GetSessionInfo`, `C_GetTokenInfo`) confirms: recovery. First all
//!   sessions are dropped and one is reopened (the slot is looked up again, SoftHSM renumbers
//!   slots); if that fails, or the retried call fails the same way again, the module is
//!   finalized, loaded again and re-initialised, without a process restart
//!   ([`Pkcs11Backend::reinitializations`] counts these). The failed call is retried after
//!   each step, at most twice.
//! - Anything else is [`BackendError::Failure`] naming the CKR and the function, and the
//!   session is closed rather than reused.
//!
//! # One module per process
//!
//! A PKCS#11 module is initialised once per process, so every backend that names the same
//! module file shares one loaded module (a config reload builds new backends while the old
//! ones still serve; two key stores may use one HSM). Sessions and cached key handles are
//! tagged with the module's generation, so a re-initialisation by one backend makes every
//! other backend drop its old sessions instead of using stale handles. The module is
//! finalized when the last backend using it is dropped.
//!
//! # What runs where
//!
//! The tests drive SoftHSMv2 (proxy-supplied IVs, tag appended). The output shapes of the
//! HSMs that make their own IV (Luna: `ciphertext || tag || IV`; CloudHSM and nShield: the IV
//! written into a 12-byte zero buffer) are parsed by pure functions that are unit-tested on
//! byte strings, but have not run against those HSMs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::Ulong;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Semaphore;
use xks_api::XksKeyId;
use xks_api::types::{HealthStatus, KeyStatus};
use zeroize::Zeroizing;

use super::{
    BackendError, BackendFuture, BackendHealth, BackendIdentity, DecryptInput, EncryptInput,
    EncryptOutput, IvSource, KeyBackend, KeyInfo,
};
use crate::keystore::KeyUsages;

/// Default number of sessions in the pool.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default bounded wait for a free session.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_millis(50);
/// Default label of the key the health check encrypts and decrypts with.
pub const DEFAULT_HEALTH_KEY_LABEL: &str = "xks-proxy-health";

/// The only key version a PKCS#11 key has.
const KEY_VERSION: u32 = 1;
const TAG_BYTES: usize = 16;
const GENERATED_IV_BYTES: usize = 12;
/// Default of [`Pkcs11Config::key_facts_ttl`].
pub const DEFAULT_KEY_FACTS_TTL: Duration = Duration::from_secs(1);
/// How long a failed module re-initialisation is remembered before it is tried again.
const REINIT_BACKOFF: Duration = Duration::from_secs(1);
/// `C_FindObjects` asks for at most two objects: enough to see a duplicated label.
const FIND_AT_MOST: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1);
const HEALTH_AAD: &[u8] = b"xks-proxy health check";

/// Which token of the module holds the keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenSelector {
    /// The token with this label (`CKA_LABEL` of the token, trailing blanks ignored). Survives
    /// slot renumbering (SoftHSM gives a token a new slot id when it is initialised).
    Label(String),
    /// The token in the slot with this id.
    SlotId(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "token labelled '{l}'"),
            Self::SlotId(id) => write!(f, "token in slot {id}"),
        }
    }
}

/// Who makes the GCM IV on encrypt, and where the HSM puts it (XKS Proxy API reference §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IvStrategy {
    /// The proxy makes a random 12-byte IV and passes it in `CK_GCM_PARAMS`. SoftHSMv2 (it
    /// cannot generate GCM IVs), and any HSM that accepts a caller's IV outside FIPS mode.
    #[default]
    ProxySupplied,
    /// The HSM generates the IV: the proxy passes an empty IV and the HSM appends the IV it
    /// used after the tag (`ciphertext || tag || IV`). Thales Luna 7 / Luna Network HSM 7.
    HsmGenerated,
    /// The HSM generates the IV: the proxy passes 12 zero bytes and the HSM writes the IV it
    /// used into that buffer. AWS CloudHSM and Entrust nShield XC.
    ZeroIvFilledByHsm,
}

/// What a given HSM needs that PKCS#11 v2.40 leaves open.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmCapabilities {
    /// IV strategy: `proxy-supplied` (SoftHSMv2), `hsm-generated` (Luna), or
    /// `zero-iv-filled-by-hsm` (CloudHSM, nShield).
    pub iv: IvStrategy,
    /// The GCM tag follows the ciphertext in `C_Encrypt` output and `C_Decrypt` input
    /// (`ciphertext || tag`), as PKCS#11 v2.40 specifies and every HSM in the reference's list
    /// (SoftHSMv2, CloudHSM, Luna, nShield) does. `false` means `tag || ciphertext`, for a
    /// module that puts the tag first. Default `true`.
    pub tag_appended: bool,
    /// CKR names (like `CKR_GENERAL_ERROR`, case-insensitive) or vendor codes (like
    /// `0x80000101`) that mean "the tag did not verify" when `C_Decrypt` returns them.
    /// SoftHSMv2 returns `CKR_GENERAL_ERROR`, the specification `CKR_ENCRYPTED_DATA_INVALID`,
    /// nShield `CKR_FUNCTION_FAILED`. Default: those three.
    pub bad_tag_errors: Vec<String>,
}

impl Default for HsmCapabilities {
    fn default() -> Self {
        Self {
            iv: IvStrategy::ProxySupplied,
            tag_appended: true,
            bad_tag_errors: vec![
                "CKR_GENERAL_ERROR".into(),
                "CKR_ENCRYPTED_DATA_INVALID".into(),
                "CKR_FUNCTION_FAILED".into(),
            ],
        }
    }
}

impl HsmCapabilities {
    /// Who makes the IV: the proxy for [`IvStrategy::ProxySupplied`], else the backend.
    pub fn iv_source(&self) -> IvSource {
        match self.iv {
            IvStrategy::ProxySupplied => IvSource::Proxy,
            IvStrategy::HsmGenerated | IvStrategy::ZeroIvFilledByHsm => IvSource::Backend,
        }
    }

    fn is_bad_tag(&self, ckr: &str) -> bool {
        self.bad_tag_errors
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(ckr))
    }

    fn validate(&self) -> Result<(), String> {
        for name in &self.bad_tag_errors {
            let n = name.trim();
            let hex = n
                .strip_prefix("0x")
                .or_else(|| n.strip_prefix("0X"))
                .is_some_and(|h| !h.is_empty() && u64::from_str_radix(h, 16).is_ok());
            let ckr = n.len() > 4
                && n[..4].eq_ignore_ascii_case("CKR_")
                && n[4..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !hex && !ckr {
                return Err(format!(
                    "bad_tag_errors: '{name}' is neither a CKR_ name nor a 0x vendor code"
                ));
            }
        }
        Ok(())
    }
}

/// How to reach the token. The caller loads the PIN (from a 0600 file or the environment).
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Which token holds the keys.
    pub token: TokenSelector,
    /// The user PIN (never printed: `SecretString`'s `Debug` is redacted).
    pub pin: SecretString,
    /// Number of sessions (and of PKCS#11 calls in flight). Default 8.
    pub pool_size: usize,
    /// How long a call waits for a free session before it is refused as overloaded
    /// ([`BackendError::Overloaded`], a 429). Default 50 ms.
    pub session_wait: Duration,
    /// What the HSM needs.
    pub capabilities: HsmCapabilities,
    /// Label of the AES key the health check uses. Default `xks-proxy-health`.
    pub health_key_label: String,
    /// How long the facts read from a key (`CKA_KEY_TYPE`, `CKA_VALUE_LEN`, `CKA_ENCRYPT`,
    /// `CKA_DECRYPT`) answer GetKeyMetadata and the usage check before each Encrypt and
    /// Decrypt without asking the token again (zero: always ask). The HSM still enforces its
    /// own attributes in every `C_Encrypt` and `C_Decrypt` (a refusal is
    /// [`BackendError::UsageNotPermitted`]), and a key that is gone fails its crypto call and
    /// is looked up again, so all this delays, by at most this long, is a change of a key's
    /// attributes showing in GetKeyMetadata. Default 1 s.
    pub key_facts_ttl: Duration,
}

impl Pkcs11Config {
    /// A config with the default pool, wait, capabilities and health key label.
    pub fn new(module: impl Into<PathBuf>, token: TokenSelector, pin: SecretString) -> Self {
        Self {
            module: module.into(),
            token,
            pin,
            pool_size: DEFAULT_POOL_SIZE,
            session_wait: DEFAULT_SESSION_WAIT,
            capabilities: HsmCapabilities::default(),
            health_key_label: DEFAULT_HEALTH_KEY_LABEL.to_owned(),
            key_facts_ttl: DEFAULT_KEY_FACTS_TTL,
        }
    }

    fn validate(&self) -> Result<(), Pkcs11Error> {
        if self.pool_size == 0 {
            return Err(Pkcs11Error::Config("pool_size must be at least 1".into()));
        }
        if self.pool_size > Semaphore::MAX_PERMITS {
            return Err(Pkcs11Error::Config("pool_size is too large".into()));
        }
        if self.health_key_label.is_empty() {
            return Err(Pkcs11Error::Config(
                "health_key_label must not be empty".into(),
            ));
        }
        if let TokenSelector::Label(l) = &self.token
            && l.trim().is_empty()
        {
            return Err(Pkcs11Error::Config("the token label is empty".into()));
        }
        self.capabilities.validate().map_err(Pkcs11Error::Config)
    }
}

/// A secret key in the token, as [`Pkcs11Backend::list_keys`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11KeyInfo {
    /// `CKA_LABEL` (the XKS key id).
    pub label: String,
    /// Key type without `CKK_` (`AES`, `GENERIC_SECRET`, `DES3`, ...).
    pub key_type: String,
    /// Key size in bits (0 when the token does not say).
    pub bits: u32,
    /// The `keySpec` GetKeyMetadata reports (`AES_256`, `GENERIC_SECRET_256`, ...).
    pub key_spec: String,
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
}

/// Errors of [`Pkcs11Backend::open`] and of the admin helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The configuration cannot work.
    #[error("invalid PKCS#11 configuration: {0}")]
    Config(String),
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    Module {
        /// The module path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No (single) token matches the selector.
    #[error("{0}")]
    TokenNotFound(String),
    /// The token refused the user PIN.
    #[error("login to the {token} failed: {reason}")]
    Login {
        /// The token.
        token: String,
        /// The CKR name.
        reason: String,
    },
    /// `create_key` / `import_key` with a label a secret key in the token already has.
    #[error("a secret key labelled '{0}' already exists in the token")]
    LabelExists(String),
    /// The label is not a valid XKS key id (1-128 of `A-Z a-z 0-9 - . _`).
    #[error("'{label}' cannot be a key label: {reason}")]
    InvalidLabel {
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
    /// Imported key material has the wrong size.
    #[error("key material is {0} bytes; an XKS key is AES-256 (32 bytes)")]
    MaterialSize(usize),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed: {reason}")]
    Call {
        /// What was being done.
        op: String,
        /// The CKR name and function.
        reason: String,
    },
    /// The module is not usable right now (a re-initialisation failed).
    #[error("the PKCS#11 module is unavailable: {0}")]
    Unavailable(String),
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The CKR name of a return value (`CKR_GENERAL_ERROR`), or `0x...` for vendor codes.
fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) | RvError::UnknownErrorCode(code) => format!("0x{code:08X}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::with_capacity(camel.len() + 8);
            name.push_str("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// `CKR_GENERAL_ERROR in C_Decrypt`, or cryptoki's own message.
fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{} in C_{function:?}", ckr_name(*rv)),
        other => other.to_string(),
    }
}

fn rv_of(err: &CkError) -> Option<RvError> {
    match err {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Errors after which the sessions (or the module) cannot be trusted any more.
fn is_fatal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
    )
}

/// Errors that say the PIN is wrong: never retried, so the PIN cannot be locked by retries.
fn is_pin_refusal(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized
    )
}

/// `AES` for `CKK_AES`.
fn key_type_name(kt: KeyType) -> String {
    let s = kt.to_string();
    match s.strip_prefix("CKK_") {
        Some(name) => name.to_owned(),
        // cryptoki prints vendor-defined types as a placeholder and others as "unknown (..)".
        None if s.starts_with("unknown") => "UNKNOWN".to_owned(),
        None => "VENDOR_DEFINED".to_owned(),
    }
}

/// Key size in bits from `CKA_VALUE_LEN`, or the fixed size of DES-family keys (which have
/// no `CKA_VALUE_LEN`).
fn key_bits(kt: Option<KeyType>, value_len: Option<usize>) -> u32 {
    if let Some(len) = value_len {
        return u32::try_from(len.saturating_mul(8)).unwrap_or(u32::MAX);
    }
    match kt {
        Some(KeyType::DES) => 64,
        Some(KeyType::DES2) => 128,
        Some(KeyType::DES3) => 192,
        _ => 0,
    }
}

/// `AES_256`, `GENERIC_SECRET_256`, `DES3_192`.
fn key_spec(kt: Option<KeyType>, value_len: Option<usize>) -> String {
    let name = kt.map_or_else(|| "UNKNOWN".to_owned(), key_type_name);
    format!("{name}_{}", key_bits(kt, value_len))
}

/// The facts read from a key's attributes.
#[derive(Debug, Default)]
struct KeyFacts {
    label: String,
    key_type: Option<KeyType>,
    value_len: Option<usize>,
    encrypt: bool,
    decrypt: bool,
}

impl KeyFacts {
    const ATTRIBUTES: [AttributeType; 5] = [
        AttributeType::Label,
        AttributeType::KeyType,
        AttributeType::ValueLen,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
    ];

    fn from_attributes(attrs: &[Attribute]) -> Self {
        let mut f = Self::default();
        for a in attrs {
            match a {
                Attribute::Label(l) => f.label = String::from_utf8_lossy(l).into_owned(),
                Attribute::KeyType(kt) => f.key_type = Some(*kt),
                Attribute::ValueLen(len) => f.value_len = Some(usize::from(*len)),
                Attribute::Encrypt(b) => f.encrypt = *b,
                Attribute::Decrypt(b) => f.decrypt = *b,
                _ => {}
            }
        }
        f
    }

    fn key_spec(&self) -> String {
        key_spec(self.key_type, self.value_len)
    }
}

// ---------------------------------------------------------------------------------------------
// Output shapes (pure, unit-tested; the HSM-generated shapes cannot run on SoftHSM)

/// Splits `C_Encrypt` output without an IV into ciphertext and tag.
fn split_tag(
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
fn parse_hsm_generated_output(
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
fn parse_zero_iv_output(
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
fn join_tag(ciphertext: &[u8], tag: &[u8], tag_appended: bool) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// The shared module

/// Loaded modules by canonical path: one per process and file, shared by backends.
static MODULES: Mutex<BTreeMap<PathBuf, Weak<Module>>> = Mutex::new(BTreeMap::new());

struct Module {
    /// Canonical path (registry key).
    key: PathBuf,
    /// Path as configured (what is loaded).
    path: PathBuf,
    /// Read-locked by every PKCS#11 call; write-locked to re-initialise.
    state: RwLock<ModuleState>,
    reinits: AtomicU64,
}

struct ModuleState {
    /// `None` after a re-initialisation failed.
    ctx: Option<Pkcs11>,
    /// Bumped by every re-initialisation; sessions and handles of older generations are dead.
    generation: u64,
    /// The last failed re-initialisation.
    failed: Option<(Instant, String)>,
}

fn load_module(path: &Path) -> Result<Pkcs11, String> {
    let ctx = Pkcs11::new(path).map_err(|e| e.to_string())?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised by someone else in this process: use it as it is.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(describe(&e)),
    }
}

impl Module {
    fn get(path: &Path) -> Result<Arc<Self>, Pkcs11Error> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut registry = lock(&MODULES);
        if let Some(m) = registry.get(&key).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let ctx = load_module(path).map_err(|reason| Pkcs11Error::Module {
            path: path.to_path_buf(),
            reason,
        })?;
        let m = Arc::new(Self {
            key: key.clone(),
            path: path.to_path_buf(),
            state: RwLock::new(ModuleState {
                ctx: Some(ctx),
                generation: 0,
                failed: None,
            }),
            reinits: AtomicU64::new(0),
        });
        registry.insert(key, Arc::downgrade(&m));
        Ok(m)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let mut registry = lock(&MODULES);
        // A new Module for the same file may already be registered (it found this one dead):
        // it uses the initialised library, so it must not be finalized under it.
        let replaced = registry
            .get(&self.key)
            .is_some_and(|w| w.strong_count() > 0);
        if !replaced {
            registry.remove(&self.key);
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(ctx) = state.ctx.take()
            && !replaced
            && let Err(e) = ctx.finalize()
        {
            tracing::debug!(module = %self.path.display(), error = %describe(&e), "C_Finalize failed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend

/// A session of the pool, with the module generation it was opened in.
struct Pooled {
    session: Session,
    generation: u64,
}

/// What is known about the key with a label: its handle, found in a module generation, and
/// the facts `C_GetAttributeValue` last returned for it, with when.
struct CachedKey {
    generation: u64,
    handle: ObjectHandle,
    facts: Option<(Instant, KeyInfo)>,
}

/// Why a blocking operation stopped.
enum Fail {
    /// A PKCS#11 call failed; classified by [`Inner::classify`].
    Ck(CkError),
    /// A final answer for the caller.
    Answer(BackendError),
    /// A key lookup found nothing in a session that is not logged in.
    NotLoggedIn,
    /// The token is not (or no longer) where the selector says.
    TokenMissing(String),
}

impl From<CkError> for Fail {
    fn from(e: CkError) -> Self {
        Self::Ck(e)
    }
}

/// What the retry loop does next.
enum Step<T> {
    Done(Result<T, BackendError>),
    Relogin,
    Relookup,
    Recover { generation: u64, reason: String },
}

struct Inner {
    name: String,
    module: Arc<Module>,
    token: TokenSelector,
    pin: SecretString,
    pool_size: usize,
    session_wait: Duration,
    caps: HsmCapabilities,
    health_key_label: String,
    key_facts_ttl: Duration,
    /// The slot of the token, resolved in a module generation.
    slot: Mutex<Option<(u64, Slot)>>,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
    /// Key handles (and the facts last read from them) by label.
    handles: Mutex<HashMap<String, CachedKey>>,
    identity: Mutex<BackendIdentity>,
    /// Set when the token refused the PIN: no further login attempts.
    login_refused: Mutex<Option<String>>,
    /// Bumped by every recovery of this backend, so that callers that failed together
    /// recover once.
    epoch: AtomicU64,
}

/// A [`KeyBackend`] over a PKCS#11 module.
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("name", &self.inner.name)
            .field("module", &self.inner.module.path)
            .field("token", &self.inner.token)
            .field("pool_size", &self.inner.pool_size)
            .field("idle_sessions", &self.idle_sessions())
            .field("iv", &self.inner.caps.iv)
            .field("reinitializations", &self.reinitializations())
            .finish_non_exhaustive()
    }
}

fn find_slot(ctx: &Pkcs11, token: &TokenSelector) -> Result<Slot, Fail> {
    let not_found = Fail::TokenMissing;
    match token {
        TokenSelector::Label(label) => {
            let want = label.trim_end();
            let mut found = Vec::new();
            for slot in ctx.get_slots_with_initialized_token()? {
                match ctx.get_token_info(slot) {
                    Ok(info) if info.label().trim_end() == want => found.push(slot),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            rv_of(&e),
                            Some(RvError::TokenNotPresent | RvError::TokenNotRecognized)
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match found.as_slice() {
                [slot] => Ok(*slot),
                [] => Err(not_found(format!("no initialised token labelled '{want}'"))),
                many => Err(not_found(format!(
                    "{} tokens are labelled '{want}'; select one by slot id",
                    many.len()
                ))),
            }
        }
        TokenSelector::SlotId(id) => {
            let slot = Slot::try_from(*id)?;
            match ctx.get_token_info(slot) {
                Ok(_) => Ok(slot),
                Err(e) => match rv_of(&e) {
                    Some(RvError::SlotIdInvalid) => Err(not_found(format!("no slot {id}"))),
                    Some(RvError::TokenNotPresent | RvError::TokenNotRecognized) => {
                        Err(not_found(format!("no usable token in slot {id}")))
                    }
                    _ => Err(e.into()),
                },
            }
        }
    }
}

fn identity_of(ctx: &Pkcs11, slot: Slot) -> Result<BackendIdentity, CkError> {
    let info = ctx.get_token_info(slot)?;
    Ok(BackendIdentity {
        vendor: info.manufacturer_id().trim().to_owned(),
        model: format!(
            "{} (firmware {})",
            info.model().trim(),
            info.firmware_version()
        ),
    })
}

fn key_template(label: &str) -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
    ]
}

fn logged_in(session: &Session) -> Result<bool, CkError> {
    Ok(matches!(
        session.get_session_info()?.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

/// Gives up a session that may be dead: closed if it still answers, else forgotten (closing
/// a dead handle could close a newer session that reuses its number).
fn retire(p: Pooled) {
    if p.session.get_session_info().is_ok() {
        drop(p.session);
    } else {
        std::mem::forget(p.session);
    }
}

impl Inner {
    fn put_back(&self, p: Pooled) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.pool_size {
            idle.push(p);
        }
    }

    fn slot(&self, ctx: &Pkcs11, generation: u64) -> Result<Slot, Fail> {
        if let Some((g, s)) = *lock(&self.slot)
            && g == generation
        {
            return Ok(s);
        }
        let s = find_slot(ctx, &self.token)?;
        *lock(&self.slot) = Some((generation, s));
        Ok(s)
    }

    fn login(&self, session: &Session) -> Result<(), Fail> {
        if let Some(why) = lock(&self.login_refused).as_ref() {
            return Err(Fail::Answer(BackendError::Failure(format!(
                "the token refused the PIN earlier ({why}); not trying again so as not to lock it; \
                 fix the PIN and reload"
            ))));
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(e) => {
                if rv_of(&e).is_some_and(is_pin_refusal) {
                    let why = describe(&e);
                    tracing::error!(key_store = %self.name, token = %self.token, error = %why,
                        "the token refused the PIN; no further login attempts");
                    *lock(&self.login_refused) = Some(why);
                }
                Err(e.into())
            }
        }
    }

    fn open_session(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, Fail> {
        let slot = self.slot(ctx, generation)?;
        let session = ctx.open_rw_session(slot)?;
        self.login(&session)?;
        Ok(Pooled {
            session,
            generation,
        })
    }

    fn take_session(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, Fail> {
        loop {
            let next = lock(&self.idle).pop();
            match next {
                Some(p) if p.generation == generation => return Ok(p),
                // Opened before a re-initialisation: its handle means nothing now.
                Some(p) => std::mem::forget(p.session),
                None => return self.open_session(ctx, generation),
            }
        }
    }

    /// The handle of the secret key labelled `label`: from the cache, else `C_FindObjects`.
    fn key_handle(
        &self,
        session: &Session,
        generation: u64,
        label: &str,
    ) -> Result<ObjectHandle, Fail> {
        if let Some(c) = lock(&self.handles).get(label)
            && c.generation == generation
        {
            return Ok(c.handle);
        }
        let found = session
            .iter_objects_with_cache_size(&key_template(label), FIND_AT_MOST)?
            .take(2)
            .collect::<Result<Vec<_>, _>>()?;
        match found.as_slice() {
            [h] => {
                lock(&self.handles).insert(
                    label.to_owned(),
                    CachedKey {
                        generation,
                        handle: *h,
                        facts: None,
                    },
                );
                Ok(*h)
            }
            [] if !logged_in(session)? => Err(Fail::NotLoggedIn),
            [] => Err(Fail::Answer(BackendError::KeyNotFound(label.to_owned()))),
            _ => {
                tracing::error!(key_store = %self.name, label,
                    "the label matches 2 or more secret keys in the token; refusing to guess");
                Err(Fail::Answer(BackendError::Failure(format!(
                    "label {label} matches 2 or more keys in the token; refusing to guess"
                ))))
            }
        }
    }

    fn gcm_encrypt(
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

    fn gcm_decrypt(
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

    /// Reads the key's facts from the token and remembers them for
    /// [`Pkcs11Config::key_facts_ttl`].
    fn key_info(
        &self,
        session: &Session,
        generation: u64,
        label: &str,
        key: ObjectHandle,
    ) -> Result<KeyInfo, Fail> {
        let facts = KeyFacts::from_attributes(&session.get_attributes(key, &KeyFacts::ATTRIBUTES)?);
        let info = KeyInfo {
            key_spec: facts.key_spec(),
            status: KeyStatus::Enabled,
            usages: KeyUsages {
                encrypt: facts.encrypt,
                decrypt: facts.decrypt,
            },
            current_version: KEY_VERSION,
        };
        if let Some(c) = lock(&self.handles).get_mut(label)
            && c.generation == generation
            && c.handle == key
        {
            c.facts = Some((Instant::now(), info.clone()));
        }
        Ok(info)
    }

    /// The facts read from the key labelled `label` less than
    /// [`Pkcs11Config::key_facts_ttl`] ago, in the module's current generation. Never waits:
    /// while a recovery holds the module, `None`.
    fn cached_key_info(&self, label: &str) -> Option<KeyInfo> {
        let generation = self.module.state.try_read().ok()?.generation;
        let handles = lock(&self.handles);
        let c = handles.get(label)?;
        let (read_at, info) = c.facts.as_ref()?;
        (c.generation == generation && read_at.elapsed() < self.key_facts_ttl).then(|| info.clone())
    }

    /// Runs `op` with a session, with the retries and recoveries described in the module docs.
    /// Blocking: runs on the blocking pool.
    fn call<T>(
        &self,
        label: Option<&str>,
        mut op: impl FnMut(&Self, &Session, u64) -> Result<T, Fail>,
    ) -> Result<T, BackendError> {
        let (mut relogins, mut relookups, mut recoveries) = (0u8, 0u8, 0u8);
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            match self.attempt(&mut op) {
                Step::Done(r) => return r,
                Step::Relogin => {
                    relogins += 1;
                    if relogins > 1 {
                        return Err(BackendError::Failure(
                            "the token reports CKR_USER_NOT_LOGGED_IN right after a login".into(),
                        ));
                    }
                }
                Step::Relookup => {
                    relookups += 1;
                    if let Some(l) = label {
                        lock(&self.handles).remove(l);
                    } else {
                        lock(&self.handles).clear();
                    }
                    if relookups > 1 {
                        return Err(BackendError::Failure(
                            "the key handle is invalid right after a fresh lookup \
                             (CKR_OBJECT_HANDLE_INVALID)"
                                .into(),
                        ));
                    }
                }
                Step::Recover { generation, reason } => {
                    recoveries += 1;
                    if recoveries > 2 {
                        return Err(BackendError::Failure(format!(
                            "the PKCS#11 token still fails after re-initialising the module: {reason}"
                        )));
                    }
                    self.recover((generation, epoch), recoveries > 1, &reason)?;
                }
            }
        }
    }

    fn attempt<T>(&self, op: &mut impl FnMut(&Self, &Session, u64) -> Result<T, Fail>) -> Step<T> {
        let state = read(&self.module.state);
        let generation = state.generation;
        let Some(ctx) = state.ctx.as_ref() else {
            let reason = state
                .failed
                .as_ref()
                .map_or_else(|| "module not initialised".to_owned(), |(_, e)| e.clone());
            return Step::Recover { generation, reason };
        };
        let pooled = match self.take_session(ctx, generation) {
            Ok(p) => p,
            Err(fail) => return self.lease_failure(fail, generation),
        };
        match op(self, &pooled.session, generation) {
            Ok(v) => {
                self.put_back(pooled);
                Step::Done(Ok(v))
            }
            Err(Fail::Answer(BackendError::KeyNotFound(key))) => {
                // A search also comes back empty when the token was replaced under this
                // process (SoftHSM: the old token's objects vanish and C_GetTokenInfo fails):
                // only a token that still answers makes it a missing key.
                match self.probe_token(ctx, generation) {
                    Ok(()) => {
                        self.put_back(pooled);
                        Step::Done(Err(BackendError::KeyNotFound(key)))
                    }
                    Err(reason) => {
                        retire(pooled);
                        Step::Recover {
                            generation,
                            reason: format!(
                                "key {key} not found and the token does not answer ({reason})"
                            ),
                        }
                    }
                }
            }
            Err(Fail::Answer(e)) => {
                self.put_back(pooled);
                Step::Done(Err(e))
            }
            Err(Fail::NotLoggedIn) => self.relogin(pooled),
            Err(Fail::Ck(err)) => self.classify(ctx, err, pooled),
            Err(fail @ Fail::TokenMissing(_)) => {
                self.put_back(pooled);
                self.lease_failure(fail, generation)
            }
        }
    }

    fn relogin<T>(&self, pooled: Pooled) -> Step<T> {
        match self.login(&pooled.session) {
            Ok(()) => {
                self.put_back(pooled);
                Step::Relogin
            }
            Err(fail) => {
                let generation = pooled.generation;
                retire(pooled);
                self.lease_failure(fail, generation)
            }
        }
    }

    /// No session could be had (opening or logging in failed).
    fn lease_failure<T>(&self, fail: Fail, generation: u64) -> Step<T> {
        match fail {
            Fail::TokenMissing(reason) => Step::Recover { generation, reason },
            Fail::Ck(e) if rv_of(&e).is_some_and(is_fatal) => Step::Recover {
                generation,
                reason: describe(&e),
            },
            Fail::Answer(e) => Step::Done(Err(e)),
            other => Step::Done(Err(BackendError::Failure(format!(
                "cannot open a PKCS#11 session on the {}: {}",
                self.token,
                fail_text(&other)
            )))),
        }
    }

    /// Maps a failed PKCS#11 call in `op` to the next step.
    fn classify<T>(&self, ctx: &Pkcs11, err: CkError, pooled: Pooled) -> Step<T> {
        let generation = pooled.generation;
        let what = describe(&err);
        if let CkError::Pkcs11(rv, Function::Decrypt) = &err
            && self.caps.is_bad_tag(&ckr_name(*rv))
        {
            // The usual meaning is a tag that did not verify. Only a session that stopped
            // answering makes it a device failure instead.
            return match pooled.session.get_session_info() {
                Err(probe) if rv_of(&probe).is_some_and(is_fatal) => {
                    retire(pooled);
                    Step::Recover {
                        generation,
                        reason: format!(
                            "{what}, and the session stopped answering ({})",
                            describe(&probe)
                        ),
                    }
                }
                _ => {
                    self.put_back(pooled);
                    Step::Done(Err(BackendError::InvalidCiphertext))
                }
            };
        }
        match rv_of(&err) {
            Some(RvError::KeyFunctionNotPermitted) => {
                self.put_back(pooled);
                Step::Done(Err(BackendError::UsageNotPermitted(format!(
                    "the HSM does not allow this operation with the key ({what})"
                ))))
            }
            Some(RvError::KeyTypeInconsistent) => {
                self.put_back(pooled);
                Step::Done(Err(BackendError::UsageNotPermitted(format!(
                    "the key cannot do AES-GCM ({what})"
                ))))
            }
            Some(RvError::UserNotLoggedIn) => self.relogin(pooled),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid) => {
                self.put_back(pooled);
                Step::Relookup
            }
            Some(rv) if is_fatal(rv) => {
                retire(pooled);
                Step::Recover {
                    generation,
                    reason: what,
                }
            }
            Some(RvError::GeneralError) => {
                let probe = match pooled.session.get_session_info() {
                    Err(e) => Err(describe(&e)),
                    Ok(_) => self.probe_token(ctx, generation),
                };
                if let Err(p) = probe {
                    retire(pooled);
                    Step::Recover {
                        generation,
                        reason: format!("{what}; probe: {p}"),
                    }
                } else {
                    drop(pooled);
                    Step::Done(Err(BackendError::Failure(what)))
                }
            }
            _ => {
                // The session may be left with an operation active: close it, open another.
                drop(pooled);
                Step::Done(Err(BackendError::Failure(what)))
            }
        }
    }

    /// `C_GetTokenInfo` on the token's slot.
    fn probe_token(&self, ctx: &Pkcs11, generation: u64) -> Result<(), String> {
        let slot = self.slot(ctx, generation).map_err(|f| fail_text(&f))?;
        ctx.get_token_info(slot).map(drop).map_err(|e| describe(&e))
    }

    /// Opens a session in the current generation and checks the token answers.
    fn open_and_probe(&self, ctx: &Pkcs11, generation: u64) -> Result<Pooled, String> {
        let p = self
            .open_session(ctx, generation)
            .map_err(|f| fail_text(&f))?;
        let checked = self
            .slot(ctx, generation)
            .map_err(|f| fail_text(&f))
            .and_then(|slot| identity_of(ctx, slot).map_err(|e| describe(&e)));
        match checked {
            Ok(id) => {
                *lock(&self.identity) = id;
                Ok(p)
            }
            Err(e) => {
                retire(p);
                Err(e)
            }
        }
    }

    /// Drops all sessions and reopens one; with `force_reinit`, or if that fails, finalizes
    /// and re-initialises the module. Nothing is done if the module's generation or this
    /// backend's recovery epoch moved past `seen` meanwhile (another call already recovered).
    fn recover(
        &self,
        seen: (u64, u64),
        force_reinit: bool,
        reason: &str,
    ) -> Result<(), BackendError> {
        let mut state = write(&self.module.state);
        if state.generation != seen.0 || self.epoch.load(Ordering::Acquire) != seen.1 {
            return Ok(());
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // No call runs while the write lock is held, so every session of this backend is idle.
        let idle = std::mem::take(&mut *lock(&self.idle));
        for p in idle {
            if state.ctx.is_some() && p.generation == state.generation {
                retire(p);
            } else {
                std::mem::forget(p.session);
            }
        }
        lock(&self.handles).clear();
        *lock(&self.slot) = None;

        if !force_reinit && let Some(ctx) = state.ctx.as_ref() {
            match self.open_and_probe(ctx, state.generation) {
                Ok(p) => {
                    self.put_back(p);
                    tracing::warn!(key_store = %self.name, reason,
                        "PKCS#11 failure: sessions dropped and reopened");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(key_store = %self.name, reason, error = %e,
                        "PKCS#11 failure: no session can be opened; re-initialising the module");
                }
            }
        }
        if state.ctx.is_none()
            && let Some((at, e)) = &state.failed
            && at.elapsed() < REINIT_BACKOFF
        {
            return Err(BackendError::Failure(format!(
                "the PKCS#11 module is unavailable: {e}"
            )));
        }
        if let Some(ctx) = state.ctx.take()
            && let Err(e) = ctx.finalize()
        {
            tracing::debug!(key_store = %self.name, error = %describe(&e), "C_Finalize failed");
        }
        // Whatever happens next, sessions and handles of the old generation are dead.
        state.generation += 1;
        let ctx = match load_module(&self.module.path) {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::error!(key_store = %self.name, module = %self.module.path.display(),
                    error = %e, "the PKCS#11 module could not be re-initialised");
                state.failed = Some((Instant::now(), e.clone()));
                return Err(BackendError::Failure(format!(
                    "the PKCS#11 module could not be re-initialised: {e}"
                )));
            }
        };
        state.failed = None;
        self.module.reinits.fetch_add(1, Ordering::Relaxed);
        let opened = self.open_and_probe(&ctx, state.generation);
        state.ctx = Some(ctx);
        match opened {
            Ok(p) => {
                self.put_back(p);
                tracing::warn!(key_store = %self.name, reason, "PKCS#11 module re-initialised");
                Ok(())
            }
            Err(e) => {
                tracing::error!(key_store = %self.name, reason, error = %e,
                    "the token is unusable after re-initialising the PKCS#11 module");
                Err(BackendError::Failure(format!(
                    "the {} is unusable after re-initialising the PKCS#11 module: {e}",
                    self.token
                )))
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        let state = read(&self.module.state);
        for p in idle {
            if state.ctx.is_some() && p.generation == state.generation {
                drop(p.session);
            } else {
                std::mem::forget(p.session);
            }
        }
    }
}

fn fail_text(f: &Fail) -> String {
    match f {
        Fail::Ck(e) => describe(e),
        Fail::Answer(e) => e.to_string(),
        Fail::TokenMissing(m) => m.clone(),
        Fail::NotLoggedIn => "the session is not logged in".into(),
    }
}

fn call_failed(op: &'static str) -> impl Fn(CkError) -> Pkcs11Error {
    move |e| Pkcs11Error::Call {
        op: op.into(),
        reason: describe(&e),
    }
}

fn check_label(label: &str) -> Result<(), Pkcs11Error> {
    XksKeyId::parse(label)
        .map(drop)
        .map_err(|e| Pkcs11Error::InvalidLabel {
            label: label.to_owned(),
            reason: e.to_string(),
        })
}

fn refuse_existing(session: &Session, label: &str) -> Result<(), Pkcs11Error> {
    let found = session
        .iter_objects_with_cache_size(&key_template(label), FIND_AT_MOST)
        .map_err(call_failed("C_FindObjectsInit"))?
        .take(1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(call_failed("C_FindObjects"))?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(Pkcs11Error::LabelExists(label.to_owned()))
    }
}

/// The labels of every secret key object in the token.
fn secret_key_labels(session: &Session) -> Result<std::collections::HashSet<String>, Pkcs11Error> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ])
        .map_err(call_failed("C_FindObjects"))?;
    let mut labels = std::collections::HashSet::with_capacity(handles.len());
    for h in handles {
        for a in session
            .get_attributes(h, &[AttributeType::Label])
            .map_err(call_failed("C_GetAttributeValue"))?
        {
            if let Attribute::Label(l) = a {
                labels.insert(String::from_utf8_lossy(&l).into_owned());
            }
        }
    }
    Ok(labels)
}

fn new_key_id() -> Result<Vec<u8>, Pkcs11Error> {
    let mut id = vec![0u8; 16];
    getrandom::fill(&mut id).map_err(|e| Pkcs11Error::Call {
        op: "making a CKA_ID".into(),
        reason: format!("random source failed: {e}"),
    })?;
    Ok(id)
}

impl Pkcs11Backend {
    /// Loads the module (or reuses it if another backend of this process loaded the same
    /// file), initialises it (`CKF_OS_LOCKING_OK`), finds the token, and opens and logs in one
    /// session to check the PIN; the other sessions of the pool open when needed.
    ///
    /// Blocking (it loads a library and talks to the HSM): call it at start or from a blocking
    /// context. `name` is the key store's name, for logs.
    pub fn open(name: &str, cfg: Pkcs11Config) -> Result<Self, Pkcs11Error> {
        cfg.validate()?;
        let module = Module::get(&cfg.module)?;
        let inner = Inner {
            name: name.to_owned(),
            module,
            token: cfg.token,
            pin: cfg.pin,
            pool_size: cfg.pool_size,
            session_wait: cfg.session_wait,
            caps: cfg.capabilities,
            health_key_label: cfg.health_key_label,
            key_facts_ttl: cfg.key_facts_ttl,
            slot: Mutex::new(None),
            idle: Mutex::new(Vec::with_capacity(cfg.pool_size)),
            permits: Arc::new(Semaphore::new(cfg.pool_size)),
            handles: Mutex::new(HashMap::new()),
            identity: Mutex::new(BackendIdentity {
                vendor: String::new(),
                model: String::new(),
            }),
            login_refused: Mutex::new(None),
            epoch: AtomicU64::new(0),
        };
        first_session(&inner)?;
        let id = lock(&inner.identity).clone();
        tracing::info!(key_store = name, module = %inner.module.path.display(), token = %inner.token,
            vendor = %id.vendor, model = %id.model, pool_size = inner.pool_size, "PKCS#11 backend ready");
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Times the module this backend uses was finalized and initialised again to recover from
    /// a failure (shared with the other backends of this process on the same module file).
    pub fn reinitializations(&self) -> u64 {
        self.inner.module.reinits.load(Ordering::Relaxed)
    }

    /// Sessions open and free in the pool now.
    pub fn idle_sessions(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// The maximum number of sessions (and of PKCS#11 calls in flight).
    pub fn pool_size(&self) -> usize {
        self.inner.pool_size
    }

    /// Generates an AES-256 key labelled `label` in the token: `CKA_TOKEN`, `CKA_PRIVATE`,
    /// `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, `CKA_ENCRYPT` and `CKA_DECRYPT`, a random
    /// 16-byte `CKA_ID`. Refuses a label that a secret key already has.
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn create_key(&self, label: &str) -> Result<(), Pkcs11Error> {
        self.create_keys(&[label])
    }

    /// Generates one AES-256 key per label, as [`create_key`](Self::create_key) does, on one
    /// session. Every label is checked first (valid, not given twice, no secret key in the
    /// token has it), so a refused request creates nothing. A failure of the token part-way
    /// leaves the keys made before it; the error says how many.
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn create_keys(&self, labels: &[&str]) -> Result<(), Pkcs11Error> {
        let mut unique = std::collections::HashSet::with_capacity(labels.len());
        for &label in labels {
            check_label(label)?;
            if !unique.insert(label) {
                return Err(Pkcs11Error::InvalidLabel {
                    label: label.to_owned(),
                    reason: "given twice".into(),
                });
            }
        }
        let len = Ulong::try_from(32usize).map_err(call_failed("building the template"))?;
        self.admin(|s| {
            match labels {
                [one] => refuse_existing(s, one)?,
                many => {
                    // One listing instead of a search per label: a search costs the token a
                    // pass over all its objects.
                    let existing = secret_key_labels(s)?;
                    if let Some(taken) = many.iter().find(|l| existing.contains(**l)) {
                        return Err(Pkcs11Error::LabelExists((*taken).to_owned()));
                    }
                }
            }
            for (done, &label) in labels.iter().enumerate() {
                let template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(len),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(new_key_id()?),
                ];
                s.generate_key(&Mechanism::AesKeyGen, &template)
                    .map_err(|e| Pkcs11Error::Call {
                        op: if labels.len() == 1 {
                            "C_GenerateKey".into()
                        } else {
                            format!(
                                "C_GenerateKey for '{label}' ({done} of {} keys were created before it)",
                                labels.len()
                            )
                        },
                        reason: describe(&e),
                    })?;
            }
            Ok(())
        })
    }

    /// Imports 32 bytes of AES key material under `label` (`C_CreateObject` of a
    /// `CKO_SECRET_KEY`: token, private, sensitive, not extractable, encrypt and decrypt).
    /// Refuses a label that a secret key already has.
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn import_key(&self, label: &str, material: &[u8]) -> Result<(), Pkcs11Error> {
        check_label(label)?;
        if material.len() != 32 {
            return Err(Pkcs11Error::MaterialSize(material.len()));
        }
        let id = new_key_id()?;
        self.admin(|s| {
            refuse_existing(s, label)?;
            let mut template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(material.to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
            ];
            let created = s.create_object(&template);
            for a in &mut template {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            created.map_err(call_failed("C_CreateObject"))?;
            Ok(())
        })
    }

    /// The secret keys in the token (label, type, size, encrypt/decrypt), sorted by label.
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn list_keys(&self) -> Result<Vec<Pkcs11KeyInfo>, Pkcs11Error> {
        self.admin(|s| {
            let handles = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                ])
                .map_err(call_failed("C_FindObjects"))?;
            let mut keys = Vec::with_capacity(handles.len());
            for h in handles {
                let f = KeyFacts::from_attributes(
                    &s.get_attributes(h, &KeyFacts::ATTRIBUTES)
                        .map_err(call_failed("C_GetAttributeValue"))?,
                );
                keys.push(Pkcs11KeyInfo {
                    key_type: f
                        .key_type
                        .map_or_else(|| "UNKNOWN".to_owned(), key_type_name),
                    bits: key_bits(f.key_type, f.value_len),
                    key_spec: f.key_spec(),
                    encrypt: f.encrypt,
                    decrypt: f.decrypt,
                    label: f.label,
                });
            }
            keys.sort_by(|a, b| a.label.cmp(&b.label));
            Ok(keys)
        })
    }

    /// Runs `f` on a fresh logged-in session outside the pool, closed afterwards.
    fn admin<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let inner = &self.inner;
        let state = read(&inner.module.state);
        let Some(ctx) = state.ctx.as_ref() else {
            return Err(Pkcs11Error::Unavailable(
                state
                    .failed
                    .as_ref()
                    .map_or_else(|| "not initialised".to_owned(), |(_, e)| e.clone()),
            ));
        };
        let p = inner
            .open_session(ctx, state.generation)
            .map_err(|f| Pkcs11Error::Call {
                op: "opening a session".into(),
                reason: fail_text(&f),
            })?;
        f(&p.session)
    }

    /// Waits (bounded) for a session permit, then runs `op` on the blocking pool. The permit
    /// and the session stay with the blocking task until the PKCS#11 call returns.
    async fn run<T: Send + 'static>(
        &self,
        label: Option<String>,
        op: impl FnMut(&Inner, &Session, u64) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = &self.inner;
        let permit = match tokio::time::timeout(
            inner.session_wait,
            Arc::clone(&inner.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(BackendError::Failure(
                    "the PKCS#11 session pool is closed".into(),
                ));
            }
            Err(_) => {
                return Err(BackendError::Overloaded(format!(
                    "all {} PKCS#11 sessions stayed busy for {} ms",
                    inner.pool_size,
                    inner.session_wait.as_millis()
                )));
            }
        };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.call(label.as_deref(), op)
        })
        .await
        .map_err(|e| BackendError::Failure(format!("the PKCS#11 worker failed: {e}")))?
    }
}

/// Finds the token, reads its identity, opens and logs in the first session.
fn first_session(inner: &Inner) -> Result<(), Pkcs11Error> {
    let state = read(&inner.module.state);
    let Some(ctx) = state.ctx.as_ref() else {
        return Err(Pkcs11Error::Unavailable(
            state
                .failed
                .as_ref()
                .map_or_else(|| "not initialised".to_owned(), |(_, e)| e.clone()),
        ));
    };
    let slot = match find_slot(ctx, &inner.token) {
        Ok(s) => s,
        Err(Fail::TokenMissing(m)) => return Err(Pkcs11Error::TokenNotFound(m)),
        Err(f) => {
            return Err(Pkcs11Error::Call {
                op: "finding the token".into(),
                reason: fail_text(&f),
            });
        }
    };
    *lock(&inner.slot) = Some((state.generation, slot));
    *lock(&inner.identity) = identity_of(ctx, slot).map_err(call_failed("C_GetTokenInfo"))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(call_failed("C_OpenSession"))?;
    inner.login(&session).map_err(|f| Pkcs11Error::Login {
        token: inner.token.to_string(),
        reason: fail_text(&f),
    })?;
    inner.put_back(Pooled {
        session,
        generation: state.generation,
    });
    Ok(())
}

impl KeyBackend for Pkcs11Backend {
    fn identity(&self) -> BackendIdentity {
        lock(&self.inner.identity).clone()
    }

    fn iv_source(&self) -> IvSource {
        self.inner.caps.iv_source()
    }

    fn key_info<'a>(&'a self, key_id: &'a XksKeyId) -> BackendFuture<'a, KeyInfo> {
        Box::pin(async move {
            if let Some(info) = self.inner.cached_key_info(key_id.as_str()) {
                return Ok(info);
            }
            let label = key_id.as_str().to_owned();
            self.run(Some(label.clone()), move |inner, s, g| {
                let h = inner.key_handle(s, g, &label)?;
                inner.key_info(s, g, &label, h)
            })
            .await
        })
    }

    fn encrypt<'a>(&'a self, input: EncryptInput<'a>) -> BackendFuture<'a, EncryptOutput> {
        Box::pin(async move {
            if input.version != KEY_VERSION {
                return Err(BackendError::UnknownKeyVersion(input.version));
            }
            let label = input.key_id.as_str().to_owned();
            let iv = input.iv;
            let aad = input.aad.to_vec();
            let plaintext = Zeroizing::new(input.plaintext.to_vec());
            self.run(Some(label.clone()), move |inner, s, g| {
                let h = inner.key_handle(s, g, &label)?;
                inner.gcm_encrypt(s, h, iv, &aad, &plaintext)
            })
            .await
        })
    }

    fn decrypt<'a>(&'a self, input: DecryptInput<'a>) -> BackendFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            if input.version != KEY_VERSION {
                return Err(BackendError::UnknownKeyVersion(input.version));
            }
            let label = input.key_id.as_str().to_owned();
            let iv = input.iv.to_vec();
            let aad = input.aad.to_vec();
            let ciphertext = input.ciphertext.to_vec();
            let tag = input.tag.to_vec();
            self.run(Some(label.clone()), move |inner, s, g| {
                let h = inner.key_handle(s, g, &label)?;
                inner.gcm_decrypt(s, h, &iv, &aad, &ciphertext, &tag)
            })
            .await
        })
    }

    fn reinitializations(&self) -> Option<u64> {
        Some(Pkcs11Backend::reinitializations(self))
    }

    fn health_check(&self) -> BackendFuture<'_, BackendHealth> {
        Box::pin(async move {
            let label = self.inner.health_key_label.clone();
            let mut probe = Zeroizing::new([0u8; 32]);
            let mut iv = [0u8; GENERATED_IV_BYTES];
            getrandom::fill(&mut probe[..])
                .and_then(|()| getrandom::fill(&mut iv))
                .map_err(|e| BackendError::Failure(format!("random source failed: {e}")))?;
            let iv = (self.inner.caps.iv == IvStrategy::ProxySupplied).then_some(iv);
            let l = label.clone();
            let outcome = self
                .run(Some(label.clone()), move |inner, s, g| {
                    let h = inner.key_handle(s, g, &l)?;
                    let out = inner.gcm_encrypt(s, h, iv, HEALTH_AAD, &probe[..])?;
                    let back =
                        inner.gcm_decrypt(s, h, &out.iv, HEALTH_AAD, &out.ciphertext, &out.tag)?;
                    Ok(back[..] == probe[..])
                })
                .await;
            let token = &self.inner.token;
            let (status, detail) = match outcome {
                Ok(true) => (
                    HealthStatus::Active,
                    format!("round trip ok with key '{label}' in the {token}"),
                ),
                Ok(false) => (
                    HealthStatus::Unavailable,
                    format!("the round trip with key '{label}' returned different data"),
                ),
                Err(BackendError::KeyNotFound(_)) => (
                    HealthStatus::Unavailable,
                    format!(
                        "no health key: the {token} has no secret key labelled '{label}'; \
                         create an AES-256 key with that label (or set health_key_label)"
                    ),
                ),
                Err(BackendError::Overloaded(m)) => (HealthStatus::Degraded, m),
                Err(e) => (
                    HealthStatus::Unavailable,
                    format!("the {token} cannot be used: {e}"),
                ),
            };
            Ok(BackendHealth { status, detail })
        })
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the pure parts, and tests against a throw-away SoftHSMv2 token.
    //!
    //! SoftHSM reads `SOFTHSM2_CONF` from the process environment, and setting it in this
    //! process would need `unsafe` (`std::env::set_var`). So each SoftHSM test, run normally,
    //! makes a token in a temporary directory with `softhsm2-util` and runs *itself* again in
    //! a child process (this test binary, filtered to the one test, with `SOFTHSM2_CONF` and
    //! a marker variable set); the child sees the marker and runs the body. The parent fails
    //! if SoftHSM is missing or the child fails.

    use super::*;
    use std::process::{Command, Output};

    const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    const TOKEN: &str = "xks-test";
    const SO_PIN: &str = "1234";
    const USER_PIN: &str = "5678";
    const CHILD: &str = "XKS_PROXY_PKCS11_TEST_CHILD";

    // -- unit tests (no HSM) ------------------------------------------------------------------

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(RvError::GeneralError), "CKR_GENERAL_ERROR");
        assert_eq!(
            ckr_name(RvError::KeyFunctionNotPermitted),
            "CKR_KEY_FUNCTION_NOT_PERMITTED"
        );
        assert_eq!(
            ckr_name(RvError::CryptokiNotInitialized),
            "CKR_CRYPTOKI_NOT_INITIALIZED"
        );
        assert_eq!(
            ckr_name(RvError::EncryptedDataInvalid),
            "CKR_ENCRYPTED_DATA_INVALID"
        );
        assert_eq!(ckr_name(RvError::VendorDefined(0x8000_0101)), "0x80000101");
        let e = CkError::Pkcs11(RvError::GeneralError, Function::Decrypt);
        assert_eq!(describe(&e), "CKR_GENERAL_ERROR in C_Decrypt");
    }

    #[test]
    fn capabilities_defaults_and_bad_tag_names() {
        let c = HsmCapabilities::default();
        assert_eq!(c.iv, IvStrategy::ProxySupplied);
        assert!(c.tag_appended);
        assert!(c.is_bad_tag("CKR_GENERAL_ERROR"));
        assert!(c.is_bad_tag("CKR_ENCRYPTED_DATA_INVALID"));
        assert!(c.is_bad_tag("CKR_FUNCTION_FAILED"));
        assert!(!c.is_bad_tag("CKR_DEVICE_ERROR"));
        let c = HsmCapabilities {
            bad_tag_errors: vec!["ckr_general_error".into(), "0x80000101".into()],
            ..HsmCapabilities::default()
        };
        assert!(c.is_bad_tag("CKR_GENERAL_ERROR"));
        assert!(c.is_bad_tag(&ckr_name(RvError::VendorDefined(0x8000_0101))));
        assert!(c.validate().is_ok());
        let bad = HsmCapabilities {
            bad_tag_errors: vec!["GENERAL_ERROR".into()],
            ..HsmCapabilities::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn iv_source_follows_the_strategy() {
        let mut c = HsmCapabilities::default();
        assert_eq!(c.iv_source(), IvSource::Proxy);
        c.iv = IvStrategy::HsmGenerated;
        assert_eq!(c.iv_source(), IvSource::Backend);
        c.iv = IvStrategy::ZeroIvFilledByHsm;
        assert_eq!(c.iv_source(), IvSource::Backend);
    }

    #[test]
    fn config_pieces_deserialize_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            token: TokenSelector,
            other: TokenSelector,
            capabilities: HsmCapabilities,
        }
        let d: Doc = toml::from_str(
            r#"
            token = { label = "xks" }
            other = { slot-id = 7 }
            [capabilities]
            iv = "zero-iv-filled-by-hsm"
            tag_appended = false
            "#,
        )
        .expect("toml");
        assert_eq!(d.token, TokenSelector::Label("xks".into()));
        assert_eq!(d.other, TokenSelector::SlotId(7));
        assert_eq!(d.capabilities.iv, IvStrategy::ZeroIvFilledByHsm);
        assert!(!d.capabilities.tag_appended);
        assert_eq!(
            d.capabilities.bad_tag_errors,
            HsmCapabilities::default().bad_tag_errors
        );
        let c: HsmCapabilities = toml::from_str(r#"iv = "hsm-generated""#).expect("toml");
        assert_eq!(c.iv, IvStrategy::HsmGenerated);
        let c: HsmCapabilities = toml::from_str(r#"iv = "proxy-supplied""#).expect("toml");
        assert_eq!(c.iv, IvStrategy::ProxySupplied);
        assert!(toml::from_str::<HsmCapabilities>("can_generate_iv = true").is_err());
        assert!(toml::from_str::<HsmCapabilities>(r#"iv = "luna""#).is_err());
    }

    #[test]
    fn config_debug_hides_the_pin() {
        let cfg = Pkcs11Config::new(
            SOFTHSM_MODULE,
            TokenSelector::Label(TOKEN.into()),
            SecretString::from("s3cret-pin-9431"),
        );
        let d = format!("{cfg:?}");
        assert!(!d.contains("s3cret-pin-9431"), "{d}");
        assert!(d.contains("REDACTED"), "{d}");
        assert_eq!(cfg.pool_size, 8);
        assert_eq!(cfg.session_wait, Duration::from_millis(50));
        assert_eq!(cfg.health_key_label, "xks-proxy-health");
    }

    #[test]
    fn config_validation() {
        let mut cfg = Pkcs11Config::new("/x.so", TokenSelector::SlotId(0), "1".into());
        cfg.pool_size = 0;
        assert!(matches!(cfg.validate(), Err(Pkcs11Error::Config(_))));
        cfg.pool_size = 1;
        cfg.health_key_label.clear();
        assert!(matches!(cfg.validate(), Err(Pkcs11Error::Config(_))));
    }

    #[test]
    fn missing_module_is_an_open_error() {
        let cfg = Pkcs11Config::new(
            "/nonexistent/libnothing-pkcs11.so",
            TokenSelector::Label("t".into()),
            "1".into(),
        );
        match Pkcs11Backend::open("ks", cfg) {
            Err(Pkcs11Error::Module { path, .. }) => {
                assert_eq!(path, Path::new("/nonexistent/libnothing-pkcs11.so"));
            }
            other => panic!("expected a module error, got {other:?}"),
        }
    }

    #[test]
    fn key_specs() {
        assert_eq!(key_spec(Some(KeyType::AES), Some(32)), "AES_256");
        assert_eq!(key_spec(Some(KeyType::AES), Some(16)), "AES_128");
        assert_eq!(
            key_spec(Some(KeyType::GENERIC_SECRET), Some(32)),
            "GENERIC_SECRET_256"
        );
        assert_eq!(key_spec(Some(KeyType::DES3), None), "DES3_192");
        assert_eq!(key_spec(None, None), "UNKNOWN_0");
    }

    fn sample(pt: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let ct: Vec<u8> = (0..pt).map(|i| i as u8).collect();
        let tag: Vec<u8> = (0..16).map(|i| 0xA0 + i as u8).collect();
        let iv: Vec<u8> = (0..12).map(|i| 0x50 + i as u8).collect();
        (ct, tag, iv)
    }

    #[test]
    fn split_tag_both_orders() {
        let (ct, tag, _) = sample(5);
        let (c, t) = split_tag(&[ct.clone(), tag.clone()].concat(), 5, true).expect("split");
        assert_eq!((c, t), (ct.clone(), tag.clone()));
        let (c, t) = split_tag(&[tag.clone(), ct.clone()].concat(), 5, false).expect("split");
        assert_eq!((c, t), (ct.clone(), tag.clone()));
        assert_eq!(
            join_tag(&ct, &tag, true),
            [ct.clone(), tag.clone()].concat()
        );
        assert_eq!(
            join_tag(&ct, &tag, false),
            [tag.clone(), ct.clone()].concat()
        );
        assert!(split_tag(&ct, 5, true).is_err());
        // Empty plaintext: the output is just the tag.
        let (c, t) = split_tag(&tag, 0, true).expect("split");
        assert!(c.is_empty());
        assert_eq!(t, tag);
    }

    #[test]
    fn luna_shape_ciphertext_tag_iv() {
        let (ct, tag, iv) = sample(32);
        let out = [ct.clone(), tag.clone(), iv.clone()].concat();
        let e = parse_hsm_generated_output(&out, 32, true).expect("parse");
        assert_eq!(
            (e.ciphertext, e.tag, e.iv),
            (ct.clone(), tag.clone(), iv.clone())
        );
        // Tag first.
        let out = [tag.clone(), ct.clone(), iv.clone()].concat();
        let e = parse_hsm_generated_output(&out, 32, false).expect("parse");
        assert_eq!(
            (e.ciphertext, e.tag, e.iv),
            (ct.clone(), tag.clone(), iv.clone())
        );
        // A 16-byte IV is allowed by XKS.
        let iv16 = [iv.clone(), vec![1, 2, 3, 4]].concat();
        let e =
            parse_hsm_generated_output(&[ct.clone(), tag.clone(), iv16.clone()].concat(), 32, true)
                .expect("parse");
        assert_eq!(e.iv, iv16);
        // No IV appended (the HSM ignored the request), a truncated one, or too short output.
        assert!(parse_hsm_generated_output(&[ct.clone(), tag.clone()].concat(), 32, true).is_err());
        assert!(
            parse_hsm_generated_output(
                &[ct.clone(), tag.clone(), iv[..8].to_vec()].concat(),
                32,
                true
            )
            .is_err()
        );
        assert!(parse_hsm_generated_output(&ct, 32, true).is_err());
        // An all-zero IV is refused.
        assert!(parse_hsm_generated_output(&[ct, tag, vec![0; 12]].concat(), 32, true).is_err());
    }

    #[test]
    fn cloudhsm_shape_iv_written_into_the_buffer() {
        let (ct, tag, iv) = sample(7);
        let out = [ct.clone(), tag.clone()].concat();
        let e = parse_zero_iv_output(&out, &iv, 7, true).expect("parse");
        assert_eq!((e.ciphertext, e.tag, e.iv), (ct, tag, iv.clone()));
        // The HSM did not fill the buffer: never return a zero IV.
        let err = parse_zero_iv_output(&out, &[0; 12], 7, true).expect_err("zero iv");
        assert!(err.to_string().contains("all-zero IV"), "{err}");
        // Wrong sizes.
        assert!(parse_zero_iv_output(&out, &iv[..8], 7, true).is_err());
        assert!(parse_zero_iv_output(&[out, iv.clone()].concat(), &iv, 7, true).is_err());
    }

    // -- SoftHSM harness ----------------------------------------------------------------------

    fn softhsm_util(conf: Option<&Path>, args: &[&str]) -> Output {
        let mut cmd = Command::new("softhsm2-util");
        cmd.args(args);
        if let Some(c) = conf {
            cmd.env("SOFTHSM2_CONF", c);
        }
        let out = cmd
            .output()
            .expect("softhsm2-util must be installed for this test (apt-get install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn init_token(conf: Option<&Path>) {
        softhsm_util(
            conf,
            &[
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
        );
    }

    /// Runs `body` in a child process that sees a fresh SoftHSM token labelled [`TOKEN`].
    fn with_softhsm(test: &str, body: impl FnOnce()) {
        if std::env::var_os(CHILD).is_some() {
            body();
            return;
        }
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "SoftHSMv2 is required for this test: {SOFTHSM_MODULE} is missing (apt-get install softhsm2)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("conf");
        init_token(Some(&conf));
        let path = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let name = format!("{path}::{test}");
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env("SOFTHSM2_CONF", &conf)
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "SoftHSM test {name} failed in its child process:\n{stdout}\n{stderr}"
        );
    }

    fn config(pool: usize, wait: Duration) -> Pkcs11Config {
        let mut c = Pkcs11Config::new(
            SOFTHSM_MODULE,
            TokenSelector::Label(TOKEN.into()),
            SecretString::from(USER_PIN),
        );
        c.pool_size = pool;
        c.session_wait = wait;
        c
    }

    fn open(pool: usize, wait: Duration) -> Pkcs11Backend {
        Pkcs11Backend::open("test-store", config(pool, wait)).expect("open the SoftHSM token")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn kid(s: &str) -> XksKeyId {
        XksKeyId::parse(s).expect("key id")
    }

    fn random_iv() -> [u8; 12] {
        let mut iv = [0u8; 12];
        getrandom::fill(&mut iv).expect("rng");
        iv
    }

    async fn enc(
        b: &Pkcs11Backend,
        key: &str,
        aad: &[u8],
        pt: &[u8],
    ) -> Result<EncryptOutput, BackendError> {
        let id = kid(key);
        b.encrypt(EncryptInput {
            key_id: &id,
            version: 1,
            iv: Some(random_iv()),
            aad,
            plaintext: pt,
        })
        .await
    }

    async fn dec(
        b: &Pkcs11Backend,
        key: &str,
        aad: &[u8],
        out: &EncryptOutput,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let id = kid(key);
        b.decrypt(DecryptInput {
            key_id: &id,
            version: 1,
            iv: &out.iv,
            aad,
            ciphertext: &out.ciphertext,
            tag: &out.tag,
        })
        .await
    }

    /// Creates an object with a raw template (for keys the admin helpers would not make).
    fn raw_create(b: &Pkcs11Backend, template: Vec<Attribute>) {
        b.admin(|s| {
            s.create_object(&template)
                .map_err(call_failed("C_CreateObject"))
        })
        .expect("create object");
    }

    // -- SoftHSM tests ------------------------------------------------------------------------

    #[test]
    fn softhsm_round_trip_with_aad() {
        with_softhsm("softhsm_round_trip_with_aad", || {
            let b = open(4, DEFAULT_SESSION_WAIT);
            b.create_key("k1").expect("create");
            assert_eq!(b.iv_source(), IvSource::Proxy);
            rt().block_on(async {
                let info = b.key_info(&kid("k1")).await.expect("key info");
                assert_eq!(info.key_spec, "AES_256");
                assert_eq!(info.status, KeyStatus::Enabled);
                assert_eq!(info.usages, KeyUsages::BOTH);
                assert_eq!(info.current_version, 1);

                let aad = b"\x00\x05hello\x01\x01";
                let pt = b"thirty-two bytes of data key....";
                let out = enc(&b, "k1", aad, pt).await.expect("encrypt");
                assert_eq!(out.ciphertext.len(), pt.len());
                assert_eq!(out.iv.len(), 12);
                assert_eq!(out.tag.len(), 16);
                assert_ne!(&out.ciphertext[..], &pt[..]);
                let back = dec(&b, "k1", aad, &out).await.expect("decrypt");
                assert_eq!(&back[..], &pt[..]);
                // Empty plaintext and empty AAD.
                let out = enc(&b, "k1", b"", b"").await.expect("encrypt empty");
                assert!(out.ciphertext.is_empty());
                assert!(dec(&b, "k1", b"", &out).await.expect("decrypt").is_empty());

                assert!(matches!(
                    b.key_info(&kid("nope")).await,
                    Err(BackendError::KeyNotFound(k)) if k == "nope"
                ));
                assert!(matches!(
                    enc(&b, "nope", b"", b"x").await,
                    Err(BackendError::KeyNotFound(_))
                ));
                let out = enc(&b, "k1", b"", b"x").await.expect("encrypt");
                let id = kid("k1");
                let r = b
                    .decrypt(DecryptInput {
                        key_id: &id,
                        version: 2,
                        iv: &out.iv,
                        aad: b"",
                        ciphertext: &out.ciphertext,
                        tag: &out.tag,
                    })
                    .await;
                assert!(matches!(r, Err(BackendError::UnknownKeyVersion(2))));
            });
            assert_eq!(b.reinitializations(), 0);
        });
    }

    #[test]
    fn softhsm_tampering_is_invalid_ciphertext_and_resets_nothing() {
        with_softhsm(
            "softhsm_tampering_is_invalid_ciphertext_and_resets_nothing",
            || {
                let b = open(2, DEFAULT_SESSION_WAIT);
                b.create_key("k1").expect("create");
                rt().block_on(async {
                    let aad = b"the proxy's full AAD";
                    let pt = b"secret data key material 32 byte";
                    let out = enc(&b, "k1", aad, pt).await.expect("encrypt");
                    let idle = b.idle_sessions();
                    let mut cases: Vec<(&str, EncryptOutput, Vec<u8>)> = Vec::new();
                    let mut t = EncryptOutput {
                        ciphertext: out.ciphertext.clone(),
                        iv: out.iv.clone(),
                        tag: out.tag.clone(),
                    };
                    t.ciphertext[3] ^= 1;
                    cases.push(("ciphertext", t, aad.to_vec()));
                    let mut t = EncryptOutput {
                        ciphertext: out.ciphertext.clone(),
                        iv: out.iv.clone(),
                        tag: out.tag.clone(),
                    };
                    t.tag[15] ^= 0x80;
                    cases.push(("tag", t, aad.to_vec()));
                    let mut t = EncryptOutput {
                        ciphertext: out.ciphertext.clone(),
                        iv: out.iv.clone(),
                        tag: out.tag.clone(),
                    };
                    t.iv[0] ^= 1;
                    cases.push(("iv", t, aad.to_vec()));
                    let t = EncryptOutput {
                        ciphertext: out.ciphertext.clone(),
                        iv: out.iv.clone(),
                        tag: out.tag.clone(),
                    };
                    cases.push(("aad", t, b"the proxy's full AAE".to_vec()));
                    for _round in 0..3 {
                        for (what, t, a) in &cases {
                            let r = dec(&b, "k1", a, t).await;
                            assert!(
                                matches!(r, Err(BackendError::InvalidCiphertext)),
                                "tampered {what}: {r:?}"
                            );
                        }
                    }
                    assert_eq!(b.reinitializations(), 0);
                    assert_eq!(
                        b.idle_sessions(),
                        idle,
                        "the sessions went back to the pool"
                    );
                    let back = dec(&b, "k1", aad, &out).await.expect("still works");
                    assert_eq!(&back[..], &pt[..]);
                    let again = enc(&b, "k1", aad, pt).await.expect("encrypt still works");
                    assert_eq!(
                        &dec(&b, "k1", aad, &again).await.expect("decrypt")[..],
                        &pt[..]
                    );
                });
                assert_eq!(b.reinitializations(), 0);
            },
        );
    }

    #[test]
    fn softhsm_non_aes_keys_report_their_type() {
        with_softhsm("softhsm_non_aes_keys_report_their_type", || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            raw_create(
                &b,
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Value(vec![7; 32]),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                    Attribute::Verify(true),
                    Attribute::Label(b"generic".to_vec()),
                ],
            );
            b.admin(|s| {
                s.generate_key(
                    &Mechanism::Des3KeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(b"des3".to_vec()),
                    ],
                )
                .map_err(call_failed("C_GenerateKey"))
            })
            .expect("des3 key");
            rt().block_on(async {
                let info = b.key_info(&kid("generic")).await.expect("key info");
                assert_eq!(info.key_spec, "GENERIC_SECRET_256");
                let info = b.key_info(&kid("des3")).await.expect("key info");
                assert_eq!(info.key_spec, "DES3_192");
                assert_eq!(info.usages, KeyUsages::BOTH);
                // AES-GCM with a DES3 key: the key cannot do it.
                let r = enc(&b, "des3", b"", b"data").await;
                assert!(
                    matches!(r, Err(BackendError::UsageNotPermitted(_))),
                    "{r:?}"
                );
            });
            let listed = b.list_keys().expect("list");
            let g = listed
                .iter()
                .find(|k| k.label == "generic")
                .expect("listed");
            assert_eq!((g.key_type.as_str(), g.bits), ("GENERIC_SECRET", 256));
            let d = listed.iter().find(|k| k.label == "des3").expect("listed");
            assert_eq!(d.key_spec, "DES3_192");
            assert_eq!(b.reinitializations(), 0);
        });
    }

    #[test]
    fn softhsm_key_without_encrypt() {
        with_softhsm("softhsm_key_without_encrypt", || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            raw_create(
                &b,
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value(vec![9; 32]),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Encrypt(false),
                    Attribute::Decrypt(true),
                    Attribute::Label(b"decrypt-only".to_vec()),
                ],
            );
            rt().block_on(async {
                let info = b.key_info(&kid("decrypt-only")).await.expect("key info");
                assert_eq!(info.key_spec, "AES_256");
                assert!(!info.usages.encrypt);
                assert!(info.usages.decrypt);
                assert_eq!(info.usages.names(), vec!["DECRYPT".to_owned()]);
                let idle = b.idle_sessions();
                // The proxy checks usages first; the HSM refuses too if asked anyway.
                let r = enc(&b, "decrypt-only", b"", b"data").await;
                assert!(
                    matches!(r, Err(BackendError::UsageNotPermitted(_))),
                    "{r:?}"
                );
                assert_eq!(b.idle_sessions(), idle);
            });
            let k = b.list_keys().expect("list");
            assert_eq!(k.len(), 1);
            assert!(!k[0].encrypt && k[0].decrypt);
        });
    }

    /// Key facts answer from the cache for `key_facts_ttl`, with no session and no PKCS#11
    /// call; the HSM still enforces its attributes meanwhile, a deleted key is found missing
    /// by the next crypto call, and with a zero TTL every lookup asks the token.
    #[test]
    fn softhsm_key_facts_are_cached_and_the_hsm_still_decides() {
        with_softhsm(
            "softhsm_key_facts_are_cached_and_the_hsm_still_decides",
            || {
                let mut cfg = config(1, Duration::from_millis(5));
                cfg.key_facts_ttl = Duration::from_secs(3600);
                let b = Pkcs11Backend::open("cached", cfg).expect("open");
                let mut cfg = config(1, Duration::from_millis(5));
                cfg.key_facts_ttl = Duration::ZERO;
                let fresh = Pkcs11Backend::open("uncached", cfg).expect("open");
                b.create_keys(&["ck", "gone"]).expect("create");
                let handle = |label: &str| {
                    b.admin(|s| {
                        s.find_objects(&key_template(label))
                            .map_err(call_failed("C_FindObjects"))
                    })
                    .expect("find")[0]
                };
                rt().block_on(async {
                    for k in ["ck", "gone"] {
                        let info = b.key_info(&kid(k)).await.expect("key info");
                        assert!(info.usages.encrypt && info.usages.decrypt);
                    }
                    // With the only session permit taken, the cached facts still answer: no
                    // PKCS#11 call is made for them.
                    let permit = Arc::clone(&b.inner.permits)
                        .try_acquire_owned()
                        .expect("permit");
                    assert!(b.key_info(&kid("ck")).await.is_ok());
                    assert!(matches!(
                        enc(&b, "ck", b"", b"x").await,
                        Err(BackendError::Overloaded(_))
                    ));
                    drop(permit);

                    let h = handle("ck");
                    b.admin(|s| {
                        s.update_attributes(h, &[Attribute::Encrypt(false)])
                            .map_err(call_failed("C_SetAttributeValue"))
                    })
                    .expect("clear CKA_ENCRYPT");
                    let cached = b.key_info(&kid("ck")).await.expect("key info");
                    assert!(
                        cached.usages.encrypt,
                        "within the TTL the facts come from the cache"
                    );
                    let r = enc(&b, "ck", b"", b"data").await;
                    assert!(
                        matches!(r, Err(BackendError::UsageNotPermitted(_))),
                        "the HSM refuses anyway: {r:?}"
                    );
                    let now = fresh.key_info(&kid("ck")).await.expect("key info");
                    assert!(!now.usages.encrypt && now.usages.decrypt, "{now:?}");

                    let h = handle("gone");
                    b.admin(|s| s.destroy_object(h).map_err(call_failed("C_DestroyObject")))
                        .expect("destroy");
                    let r = enc(&b, "gone", b"", b"data").await;
                    assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
                    let r = fresh.key_info(&kid("gone")).await;
                    assert!(matches!(r, Err(BackendError::KeyNotFound(_))), "{r:?}");
                });
                assert_eq!(b.reinitializations(), 0);
            },
        );
    }

    #[test]
    fn softhsm_duplicate_label_is_refused() {
        with_softhsm("softhsm_duplicate_label_is_refused", || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            b.create_key("dup").expect("create");
            assert!(matches!(
                b.create_key("dup"),
                Err(Pkcs11Error::LabelExists(l)) if l == "dup"
            ));
            assert!(matches!(
                b.import_key("dup", &[1; 32]),
                Err(Pkcs11Error::LabelExists(_))
            ));
            // A second key with the same label, made behind the admin helpers' back.
            raw_create(
                &b,
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value(vec![3; 32]),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(b"dup".to_vec()),
                ],
            );
            rt().block_on(async {
                for _ in 0..2 {
                    match b.key_info(&kid("dup")).await {
                        Err(BackendError::Failure(m)) => {
                            assert!(m.contains("label dup matches 2"), "{m}");
                            assert!(m.contains("refusing to guess"), "{m}");
                        }
                        other => panic!("expected a failure, got {other:?}"),
                    }
                    assert!(matches!(
                        enc(&b, "dup", b"", b"x").await,
                        Err(BackendError::Failure(_))
                    ));
                }
            });
            assert!(matches!(
                b.create_key("bad label!"),
                Err(Pkcs11Error::InvalidLabel { .. })
            ));
            assert!(matches!(
                b.import_key("short", &[1; 16]),
                Err(Pkcs11Error::MaterialSize(16))
            ));
        });
    }

    #[test]
    fn softhsm_session_exhaustion_is_overloaded() {
        with_softhsm("softhsm_session_exhaustion_is_overloaded", || {
            let b = Arc::new(open(2, Duration::from_millis(1)));
            b.create_key("k1").expect("create");
            assert_eq!(
                b.idle_sessions(),
                1,
                "open() logs in one session; create_key uses its own"
            );
            let big = Arc::new(vec![0x5Au8; 4 << 20]);
            let (ok, overloaded) = rt().block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let b = Arc::clone(&b);
                    let big = Arc::clone(&big);
                    tasks.push(tokio::spawn(
                        async move { enc(&b, "k1", b"aad", &big).await },
                    ));
                }
                let (mut ok, mut overloaded) = (0, 0);
                for t in tasks {
                    match t.await.expect("no panic") {
                        Ok(out) => {
                            assert_eq!(out.ciphertext.len(), big.len());
                            ok += 1;
                        }
                        Err(BackendError::Overloaded(m)) => {
                            assert!(m.contains("2 PKCS#11 sessions"), "{m}");
                            overloaded += 1;
                        }
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    assert!(b.idle_sessions() <= 2);
                }
                (ok, overloaded)
            });
            assert!(ok >= 2, "ok {ok}");
            assert!(overloaded >= 1, "overloaded {overloaded}");
            assert_eq!(ok + overloaded, 8);
            // Every permit and every opened session is back. How many sessions were opened
            // depends on how the calls overlapped (a starved CPU may run them one by one).
            assert_eq!(
                b.inner.permits.available_permits(),
                2,
                "all permits returned"
            );
            let idle = b.idle_sessions();
            assert!((1..=2).contains(&idle), "idle sessions {idle}");
            assert_eq!(b.reinitializations(), 0);
        });
    }

    #[test]
    fn softhsm_timed_out_call_gives_its_session_back() {
        with_softhsm("softhsm_timed_out_call_gives_its_session_back", || {
            let b = open(1, Duration::from_millis(5));
            b.create_key("k1").expect("create");
            let rt = rt();
            rt.block_on(async {
                assert_eq!(b.idle_sessions(), 1);
                let big = vec![1u8; 64 << 20];
                let r =
                    tokio::time::timeout(Duration::from_millis(1), enc(&b, "k1", b"", &big)).await;
                assert!(r.is_err(), "the call should still be running after 1 ms");
                // The blocking task still holds the only session: callers are throttled...
                let busy = enc(&b, "k1", b"", b"x").await;
                assert!(matches!(busy, Err(BackendError::Overloaded(_))), "{busy:?}");
                // ...until it finishes and gives the session back.
                let started = Instant::now();
                while b.idle_sessions() == 0 || b.inner.permits.available_permits() == 0 {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "session leaked"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let out = enc(&b, "k1", b"", b"x").await.expect("works again");
                assert_eq!(&dec(&b, "k1", b"", &out).await.expect("decrypt")[..], b"x");
            });
            assert_eq!(b.idle_sessions(), 1);
        });
    }

    #[test]
    fn softhsm_recovers_after_the_token_is_reinitialised() {
        with_softhsm("softhsm_recovers_after_the_token_is_reinitialised", || {
            let material = [0x42u8; 32];
            let b = open(3, DEFAULT_SESSION_WAIT);
            b.import_key("rk", &material).expect("import");
            b.import_key(DEFAULT_HEALTH_KEY_LABEL, &[0x11; 32])
                .expect("health key");
            let rt = rt();
            let (aad, pt) = (
                b"aad".as_slice(),
                b"plaintext across a token re-init".as_slice(),
            );
            let out = rt.block_on(async {
                let out = enc(&b, "rk", aad, pt).await.expect("encrypt");
                assert_eq!(
                    b.health_check().await.expect("health").status,
                    HealthStatus::Active
                );
                out
            });
            assert_eq!(b.reinitializations(), 0);
            let old_identity = b.identity();

            // Under the running backend: delete the token, make a new one with the same label
            // (SoftHSM gives it another slot id), and import the same key bytes again.
            softhsm_util(None, &["--delete-token", "--token", TOKEN]);
            init_token(None);
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("rk.key");
            std::fs::write(&file, material).expect("key file");
            let file = file.to_str().expect("utf-8 path");
            softhsm_util(
                None,
                &[
                    "--import", file, "--aes", "--token", TOKEN, "--label", "rk", "--id", "01",
                    "--pin", USER_PIN,
                ],
            );

            rt.block_on(async {
                let back = dec(&b, "rk", aad, &out)
                    .await
                    .expect("decrypt after re-init");
                assert_eq!(&back[..], pt);
                assert_eq!(
                    b.reinitializations(),
                    1,
                    "the module was re-initialised once"
                );
                let n = b.reinitializations();
                let again = enc(&b, "rk", aad, pt).await.expect("encrypt");
                assert_eq!(&dec(&b, "rk", aad, &again).await.expect("decrypt")[..], pt);
                // The health key is gone with the old token.
                let h = b.health_check().await.expect("health");
                assert_eq!(h.status, HealthStatus::Unavailable);
                assert!(h.detail.contains(DEFAULT_HEALTH_KEY_LABEL), "{}", h.detail);
                assert_eq!(b.reinitializations(), n, "no further re-initialisation");
            });
            assert_eq!(b.identity(), old_identity);
        });
    }

    #[test]
    fn softhsm_health_check_needs_the_health_key() {
        with_softhsm("softhsm_health_check_needs_the_health_key", || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            let rt = rt();
            let h = rt.block_on(b.health_check()).expect("health");
            assert_eq!(h.status, HealthStatus::Unavailable);
            assert!(h.detail.contains("'xks-proxy-health'"), "{}", h.detail);
            b.create_key(DEFAULT_HEALTH_KEY_LABEL).expect("create");
            let h = rt.block_on(b.health_check()).expect("health");
            assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);

            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.health_key_label = "other-health".into();
            let b2 = Pkcs11Backend::open("second", cfg).expect("open");
            let h = rt.block_on(b2.health_check()).expect("health");
            assert_eq!(h.status, HealthStatus::Unavailable);
            assert!(h.detail.contains("'other-health'"), "{}", h.detail);

            let id = b.identity();
            assert_eq!(id.vendor, "SoftHSM project");
            assert!(
                id.model.starts_with("SoftHSM v2 (firmware "),
                "{}",
                id.model
            );
        });
    }

    #[test]
    fn softhsm_relogs_in_after_a_logout() {
        with_softhsm("softhsm_relogs_in_after_a_logout", || {
            let b = open(2, DEFAULT_SESSION_WAIT);
            b.create_key("k1").expect("create");
            b.create_key("k2").expect("create");
            let rt = rt();
            let out = rt.block_on(enc(&b, "k1", b"", b"x")).expect("encrypt");
            for key in ["k1", "k2"] {
                // Logging out one session logs the application out of the token.
                b.admin(|s| s.logout().map_err(call_failed("C_Logout")))
                    .expect("logout");
                rt.block_on(async {
                    // k1's handle is cached, k2 has not been looked up yet.
                    let r = enc(&b, key, b"", b"y").await.expect("encrypt after logout");
                    assert_eq!(&dec(&b, key, b"", &r).await.expect("decrypt")[..], b"y");
                });
            }
            assert_eq!(
                &rt.block_on(dec(&b, "k1", b"", &out)).expect("decrypt")[..],
                b"x"
            );
            assert_eq!(b.reinitializations(), 0);
        });
    }

    #[test]
    fn softhsm_open_errors_and_selectors() {
        with_softhsm("softhsm_open_errors_and_selectors", || {
            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.pin = SecretString::from("0000");
            match Pkcs11Backend::open("ks", cfg) {
                Err(Pkcs11Error::Login { reason, .. }) => {
                    assert!(reason.contains("CKR_PIN_INCORRECT"), "{reason}");
                }
                other => panic!("expected a login error, got {other:?}"),
            }
            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.token = TokenSelector::Label("no-such-token".into());
            assert!(matches!(
                Pkcs11Backend::open("ks", cfg),
                Err(Pkcs11Error::TokenNotFound(m)) if m.contains("no-such-token")
            ));

            // Two backends on one module (as during a reload); by slot id too.
            let a = open(2, DEFAULT_SESSION_WAIT);
            a.create_key("k1").expect("create");
            let slot = lock(&a.inner.slot).map(|(_, s)| s.id()).expect("slot");
            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.token = TokenSelector::SlotId(slot);
            let b = Pkcs11Backend::open("by-slot", cfg).expect("open by slot id");
            let mut cfg = config(2, DEFAULT_SESSION_WAIT);
            cfg.token = TokenSelector::SlotId(slot.wrapping_add(12345));
            assert!(matches!(
                Pkcs11Backend::open("ks", cfg),
                Err(Pkcs11Error::TokenNotFound(_))
            ));
            let rt = rt();
            let out = rt
                .block_on(enc(&a, "k1", b"a", b"shared"))
                .expect("encrypt");
            drop(a);
            // The module stays initialised for the backend still using it.
            let back = rt.block_on(dec(&b, "k1", b"a", &out)).expect("decrypt");
            assert_eq!(&back[..], b"shared");
            let keys = b.list_keys().expect("list");
            assert_eq!(
                keys,
                vec![Pkcs11KeyInfo {
                    label: "k1".into(),
                    key_type: "AES".into(),
                    bits: 256,
                    key_spec: "AES_256".into(),
                    encrypt: true,
                    decrypt: true,
                }]
            );
            assert!(format!("{b:?}").contains("by-slot"));
            assert!(!format!("{b:?}").contains(USER_PIN));
        });
    }

    #[test]
    fn softhsm_recovers_after_the_module_is_finalized() {
        with_softhsm("softhsm_recovers_after_the_module_is_finalized", || {
            let a = open(2, DEFAULT_SESSION_WAIT);
            let b = open(2, DEFAULT_SESSION_WAIT);
            a.create_key("k1").expect("create");
            let rt = rt();
            let out = rt
                .block_on(enc(&a, "k1", b"a", b"before"))
                .expect("encrypt");
            rt.block_on(b.key_info(&kid("k1")))
                .expect("b caches the handle");
            // C_Finalize under both backends: every call now gets CKR_CRYPTOKI_NOT_INITIALIZED.
            let ctx = read(&a.inner.module.state).ctx.clone().expect("ctx");
            ctx.finalize().expect("C_Finalize");
            let back = rt.block_on(dec(&a, "k1", b"a", &out)).expect("a recovers");
            assert_eq!(&back[..], b"before");
            assert_eq!(a.reinitializations(), 1);
            // b shares the module: it drops its old sessions and handles, no second reset.
            let back = rt.block_on(dec(&b, "k1", b"a", &out)).expect("b recovers");
            assert_eq!(&back[..], b"before");
            assert_eq!(b.reinitializations(), 1);
            let h = rt.block_on(a.health_check()).expect("health");
            assert_eq!(h.status, HealthStatus::Unavailable, "no health key yet");
            a.create_key(DEFAULT_HEALTH_KEY_LABEL).expect("create");
            let h = rt.block_on(b.health_check()).expect("health");
            assert_eq!(h.status, HealthStatus::Active, "{}", h.detail);
            assert_eq!(a.reinitializations(), 1);
        });
    }

    #[test]
    fn softhsm_ciphertexts_match_the_embedded_aes_gcm() {
        with_softhsm("softhsm_ciphertexts_match_the_embedded_aes_gcm", || {
            use aes_gcm::aead::AeadInOut;
            use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
            let material = [0x24u8; 32];
            let b = open(2, DEFAULT_SESSION_WAIT);
            b.import_key("same", &material).expect("import");
            let gcm = Aes256Gcm::new_from_slice(&material).expect("key");
            let (aad, pt) = (
                b"\x00\x03abc\x01\x01".as_slice(),
                b"the same 32 bytes, in two places".as_slice(),
            );
            let rt = rt();
            // HSM → software.
            let out = rt.block_on(enc(&b, "same", aad, pt)).expect("encrypt");
            let iv: [u8; 12] = out.iv.as_slice().try_into().expect("12-byte iv");
            let tag = Tag::try_from(out.tag.as_slice()).expect("tag");
            let mut buf = out.ciphertext;
            gcm.decrypt_inout_detached(&Nonce::from(iv), aad, (&mut buf[..]).into(), &tag)
                .expect("software decrypts the HSM's ciphertext");
            assert_eq!(&buf[..], pt);
            // Software → HSM.
            let iv = random_iv();
            let mut ct = pt.to_vec();
            let tag = gcm
                .encrypt_inout_detached(&Nonce::from(iv), aad, (&mut ct[..]).into())
                .expect("encrypt");
            let sw = EncryptOutput {
                ciphertext: ct,
                iv: iv.to_vec(),
                tag: tag.to_vec(),
            };
            let back = rt
                .block_on(dec(&b, "same", aad, &sw))
                .expect("HSM decrypts");
            assert_eq!(&back[..], pt);
        });
    }
}
