//! Key administration for the CLI: creating, importing and listing keys, each on its own
//! session outside the pool.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use xks_api::XksKeyId;

use super::ckr::describe;
use super::keys::{FIND_AT_MOST, KeyFacts, key_bits, key_template, key_type_name};
use super::session::fail_text;
use super::{Pkcs11Backend, Pkcs11Error, read};
use crate::keystore::KeyUsages;

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

pub(super) fn call_failed(op: &'static str) -> impl Fn(CkError) -> Pkcs11Error {
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
        self.create_keys_with(labels, KeyUsages::BOTH)
    }

    /// [`create_keys`](Self::create_keys) with the given usages: `CKA_ENCRYPT` and
    /// `CKA_DECRYPT` as `usages` says ([`KeyUsages::NONE`] makes a key the token refuses
    /// every AES-GCM operation with, and the proxy too).
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn create_keys_with(&self, labels: &[&str], usages: KeyUsages) -> Result<(), Pkcs11Error> {
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
                    Attribute::Encrypt(usages.encrypt),
                    Attribute::Decrypt(usages.decrypt),
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
        self.import_key_with(label, material, KeyUsages::BOTH)
    }

    /// [`import_key`](Self::import_key) with `CKA_ENCRYPT` and `CKA_DECRYPT` as `usages`
    /// says.
    ///
    /// Blocking, on its own session outside the pool: for the CLI.
    pub fn import_key_with(
        &self,
        label: &str,
        material: &[u8],
        usages: KeyUsages,
    ) -> Result<(), Pkcs11Error> {
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
                Attribute::Encrypt(usages.encrypt),
                Attribute::Decrypt(usages.decrypt),
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
    pub(super) fn admin<T>(
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
}
