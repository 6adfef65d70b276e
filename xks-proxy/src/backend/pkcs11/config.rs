//! The settings of a PKCS#11 backend: which module and token, the PIN, the session pool,
//! and what the HSM can do ([`HsmCapabilities`]: who makes the IV, where the tag goes).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::Pkcs11Error;
use crate::backend::IvSource;

/// Default number of sessions in the pool.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default bounded wait for a free session.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_millis(50);
/// Default label of the key the health check encrypts and decrypts with.
pub const DEFAULT_HEALTH_KEY_LABEL: &str = "xks-proxy-health";

/// Default of [`Pkcs11Config::key_facts_ttl`].
pub const DEFAULT_KEY_FACTS_TTL: Duration = Duration::from_secs(1);

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

    pub(super) fn is_bad_tag(&self, ckr: &str) -> bool {
        self.bad_tag_errors
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(ckr))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
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
    /// Decrypt without asking the token again (zero: always ask). It also bounds how long a
    /// key's session copy is used without looking at the token key again
    /// ([`Self::session_key_copies`]): a change to a key's attributes, or its deletion,
    /// reaches GetKeyMetadata, the usage check and the HSM's own check within this long. With
    /// copies off, the HSM enforces the token key's attributes in every call and a deleted
    /// key fails its next call. Default 1 s.
    pub key_facts_ttl: Duration,
    /// Whether key operations may run on the runtime worker that awaits them (see
    /// [`InlineCalls`] for the guards). Default true; false sends every call to the blocking
    /// pool (for modules whose calls may block for long, e.g. network HSMs on a slow link).
    pub inline_calls: bool,
    /// Whether Encrypt and Decrypt use a session-object copy of each key, held by one extra
    /// session, instead of the token object (see `copies.rs`). Default true: on SoftHSMv2 a
    /// session object is about 4 times cheaper to use. A change to a token key (usage flags,
    /// deletion) then reaches Encrypt and Decrypt within [`Self::key_facts_ttl`] instead of
    /// at once. A token that refuses to copy a key (`CKA_COPYABLE` false) or has no
    /// `C_CopyObject` is used directly.
    pub session_key_copies: bool,
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
            inline_calls: true,
            session_key_copies: true,
        }
    }

    pub(super) fn validate(&self) -> Result<(), Pkcs11Error> {
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
