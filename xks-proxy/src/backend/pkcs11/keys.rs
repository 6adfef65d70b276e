//! Keys in the token: finding a key by label (handles cached per module generation), the
//! facts read from its attributes (type, size, usages), cached for `key_facts_ttl`, and which
//! handle an operation uses (the key's session copy, see `copies.rs`, or the token object).

use std::num::NonZeroUsize;
use std::time::Instant;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use xks_api::types::KeyStatus;

use super::copies::{CopyOutcome, KeyCopy};
use super::lock;
use super::session::{Fail, Inner, logged_in};
use crate::backend::{BackendError, KeyInfo};
use crate::keystore::KeyUsages;

/// The only key version a PKCS#11 key has.
pub(super) const KEY_VERSION: u32 = 1;

/// `C_FindObjects` asks for at most two objects: enough to see a duplicated label.
pub(super) const FIND_AT_MOST: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1);

/// `AES` for `CKK_AES`.
pub(super) fn key_type_name(kt: KeyType) -> String {
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
pub(super) fn key_bits(kt: Option<KeyType>, value_len: Option<usize>) -> u32 {
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
pub(super) fn key_spec(kt: Option<KeyType>, value_len: Option<usize>) -> String {
    let name = kt.map_or_else(|| "UNKNOWN".to_owned(), key_type_name);
    format!("{name}_{}", key_bits(kt, value_len))
}

/// The facts read from a key's attributes.
#[derive(Debug, Default)]
pub(super) struct KeyFacts {
    pub(super) label: String,
    pub(super) key_type: Option<KeyType>,
    pub(super) value_len: Option<usize>,
    pub(super) encrypt: bool,
    pub(super) decrypt: bool,
}

impl KeyFacts {
    pub(super) const ATTRIBUTES: [AttributeType; 5] = [
        AttributeType::Label,
        AttributeType::KeyType,
        AttributeType::ValueLen,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
    ];

    pub(super) fn from_attributes(attrs: &[Attribute]) -> Self {
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

    pub(super) fn key_spec(&self) -> String {
        key_spec(self.key_type, self.value_len)
    }
}

/// What is known about the key with a label: its token object's handle, found in a module
/// generation, the facts `C_GetAttributeValue` last returned for it, with when, and its
/// session copy.
pub(super) struct CachedKey {
    pub(super) generation: u64,
    pub(super) handle: ObjectHandle,
    pub(super) facts: Option<(Instant, KeyInfo)>,
    pub(super) copy: KeyCopy,
}

pub(super) fn key_template(label: &str) -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
    ]
}

impl Inner {
    /// The handle of the secret key labelled `label`: from the cache, else `C_FindObjects`.
    pub(super) fn key_handle(
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
                        copy: KeyCopy::None,
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

    /// The handle Encrypt and Decrypt use for the key labelled `label`: its session copy
    /// while that copy is current and the facts it was checked against are fresh, else the
    /// token object.
    pub(super) fn operation_handle(
        &self,
        session: &Session,
        generation: u64,
        label: &str,
    ) -> Result<ObjectHandle, Fail> {
        if let Some(c) = lock(&self.handles).get(label)
            && c.generation == generation
        {
            let fresh = c
                .facts
                .as_ref()
                .is_some_and(|(read_at, _)| read_at.elapsed() < self.key_facts_ttl);
            return Ok(match self.copies.usable(&c.copy) {
                Some(copy) if fresh => copy,
                _ => c.handle,
            });
        }
        self.key_handle(session, generation, label)
    }

    /// Reads the key's facts from its token object and remembers them for
    /// [`Pkcs11Config::key_facts_ttl`]; then makes the key's session copy if it has none, or
    /// ends all copies if the key's usages are no longer those its copy was made with.
    pub(super) fn key_info(
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
        let (mut stale_copies, mut want_copy) = (false, false);
        if let Some(c) = lock(&self.handles).get_mut(label)
            && c.generation == generation
            && c.handle == key
        {
            c.facts = Some((Instant::now(), info.clone()));
            match c.copy {
                KeyCopy::Refused => {}
                KeyCopy::Made { usages, .. } if self.copies.usable(&c.copy).is_some() => {
                    stale_copies = usages != info.usages;
                }
                KeyCopy::Made { .. } | KeyCopy::None => want_copy = self.copies.enabled(),
            }
        }
        if stale_copies {
            // The copy would still allow what the token key no longer does (or the reverse).
            self.end_copy_holder(Some(generation));
        }
        if want_copy {
            let copy = match self.copy_key(key) {
                CopyOutcome::Made(handle, holder) => KeyCopy::Made {
                    handle,
                    holder,
                    usages: info.usages,
                },
                CopyOutcome::Refused => KeyCopy::Refused,
                CopyOutcome::Skipped => return Ok(info),
            };
            // A copy made for an entry that changed meanwhile stays unused in the holder
            // until the holder ends.
            if let Some(c) = lock(&self.handles).get_mut(label)
                && c.generation == generation
                && c.handle == key
            {
                c.copy = copy;
            }
        }
        Ok(info)
    }

    /// The facts read from the key labelled `label` less than
    /// [`Pkcs11Config::key_facts_ttl`] ago, in the module's current generation. Never waits:
    /// while a recovery holds the module, `None`.
    pub(super) fn cached_key_info(&self, label: &str) -> Option<KeyInfo> {
        let generation = self.module.state.try_read().ok()?.generation;
        let handles = lock(&self.handles);
        let c = handles.get(label)?;
        let (read_at, info) = c.facts.as_ref()?;
        (c.generation == generation && read_at.elapsed() < self.key_facts_ttl).then(|| info.clone())
    }
}
