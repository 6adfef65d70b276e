//! The decoded contents of an embedded key store and their binary encoding (the sealed payload).
//!
//! Payload layout v1 (big-endian integers):
//!
//! ```text
//! u8 payload version (1)
//! [32] health-check key (the dedicated test key; not reachable through the key API)
//! u32 key count, then per key (sorted by id):
//!   u8 id length, id bytes
//!   u8 status (1 = enabled, 2 = disabled)
//!   u8 usages (bit 0 = ENCRYPT, bit 1 = DECRYPT; 0 = no usage)
//!   u64 created (unix seconds)
//!   u32 version count, then per version (ascending):
//!     u32 version, u64 created (unix seconds), [32] key material
//! ```
//!
//! Encoding writes key material straight into a zeroizing buffer, with no intermediate copy.

use std::collections::BTreeMap;
use std::fmt;
use xks_api::XksKeyId;
use xks_api::types::KeyStatus;
use zeroize::Zeroizing;

use super::file::StoreError;

const PAYLOAD_VERSION: u8 = 1;

/// The usages a key allows, as the proxy enforces and reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyUsages {
    /// ENCRYPT allowed.
    pub encrypt: bool,
    /// DECRYPT allowed.
    pub decrypt: bool,
}

impl KeyUsages {
    /// ENCRYPT and DECRYPT.
    pub const BOTH: Self = Self {
        encrypt: true,
        decrypt: true,
    };

    /// Neither ENCRYPT nor DECRYPT: every cryptographic operation is refused
    /// (`InvalidKeyUsageException`); GetKeyMetadata reports an empty usage list.
    pub const NONE: Self = Self {
        encrypt: false,
        decrypt: false,
    };

    /// The upper-case names GetKeyMetadata reports (empty for [`KeyUsages::NONE`]).
    pub fn names(self) -> Vec<String> {
        let mut v = Vec::with_capacity(2);
        if self.encrypt {
            v.push("ENCRYPT".to_owned());
        }
        if self.decrypt {
            v.push("DECRYPT".to_owned());
        }
        v
    }

    fn to_bits(self) -> u8 {
        u8::from(self.encrypt) | (u8::from(self.decrypt) << 1)
    }

    fn from_bits(b: u8) -> Result<Self, StoreError> {
        if b & !0b11 != 0 {
            return Err(StoreError::Corrupt(format!("unknown usage bits {b:#x}")));
        }
        Ok(Self {
            encrypt: b & 1 != 0,
            decrypt: b & 2 != 0,
        })
    }
}

/// One version of a key's material.
pub struct StoredVersion {
    /// 1-based version number.
    pub version: u32,
    /// When it was created (unix seconds).
    pub created: u64,
    /// The AES-256 key.
    pub material: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVersion")
            .field("version", &self.version)
            .field("created", &self.created)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// One key with its state and versions.
#[derive(Debug)]
pub struct StoredKey {
    /// ENABLED or DISABLED.
    pub status: KeyStatus,
    /// Allowed usages.
    pub usages: KeyUsages,
    /// When the key was created (unix seconds).
    pub created: u64,
    /// Versions, ascending; never empty. The last one encrypts.
    pub versions: Vec<StoredVersion>,
}

impl StoredKey {
    /// The version new encryptions use.
    pub fn current_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

/// The whole decoded store.
pub struct StoreContents {
    /// The generation this was read at (0 for a store not yet written).
    pub generation: u64,
    /// The dedicated health-check key.
    pub health_key: Zeroizing<[u8; 32]>,
    /// Keys by id.
    pub keys: BTreeMap<XksKeyId, StoredKey>,
}

impl fmt::Debug for StoreContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreContents")
            .field("generation", &self.generation)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Fresh random key material.
pub fn random_key() -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut k[..]).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(k)
}

impl StoreContents {
    /// An empty store with a new health-check key.
    pub fn new_empty() -> Result<Self, StoreError> {
        Ok(Self {
            generation: 0,
            health_key: random_key()?,
            keys: BTreeMap::new(),
        })
    }

    /// Encodes the payload into a zeroizing buffer.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let per_key: usize = self
            .keys
            .iter()
            .map(|(id, k)| 1 + id.as_str().len() + 14 + k.versions.len() * 44)
            .sum();
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 32 + 4 + per_key));
        out.push(PAYLOAD_VERSION);
        out.extend_from_slice(&self.health_key[..]);
        out.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for (id, key) in &self.keys {
            // Key ids are at most 128 bytes (XksKeyId invariant).
            out.push(id.as_str().len() as u8);
            out.extend_from_slice(id.as_str().as_bytes());
            out.push(match key.status {
                KeyStatus::Enabled => 1,
                KeyStatus::Disabled => 2,
            });
            out.push(key.usages.to_bits());
            out.extend_from_slice(&key.created.to_be_bytes());
            out.extend_from_slice(&(key.versions.len() as u32).to_be_bytes());
            for v in &key.versions {
                out.extend_from_slice(&v.version.to_be_bytes());
                out.extend_from_slice(&v.created.to_be_bytes());
                out.extend_from_slice(&v.material[..]);
            }
        }
        out
    }

    /// Decodes a payload read at `generation`.
    pub fn decode(generation: u64, payload: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader { buf: payload };
        if r.u8()? != PAYLOAD_VERSION {
            return Err(StoreError::Corrupt("unknown payload version".into()));
        }
        let mut health_key = Zeroizing::new([0u8; 32]);
        health_key.copy_from_slice(r.take(32)?);
        let count = r.u32()?;
        let mut keys = BTreeMap::new();
        for _ in 0..count {
            let id_len = usize::from(r.u8()?);
            let id_text = std::str::from_utf8(r.take(id_len)?)
                .map_err(|_| StoreError::Corrupt("key id is not UTF-8".into()))?;
            let id = XksKeyId::parse(id_text)
                .map_err(|e| StoreError::Corrupt(format!("stored key id: {e}")))?;
            let status = match r.u8()? {
                1 => KeyStatus::Enabled,
                2 => KeyStatus::Disabled,
                other => return Err(StoreError::Corrupt(format!("unknown status {other}"))),
            };
            let usages = KeyUsages::from_bits(r.u8()?)?;
            let created = r.u64()?;
            let nversions = r.u32()?;
            if nversions == 0 {
                return Err(StoreError::Corrupt(format!("key {id} has no versions")));
            }
            let mut versions = Vec::with_capacity(nversions.min(1024) as usize);
            for _ in 0..nversions {
                let version = r.u32()?;
                let vcreated = r.u64()?;
                let mut material = Zeroizing::new([0u8; 32]);
                material.copy_from_slice(r.take(32)?);
                if versions
                    .last()
                    .is_some_and(|p: &StoredVersion| p.version >= version)
                {
                    return Err(StoreError::Corrupt(format!(
                        "key {id}: versions out of order"
                    )));
                }
                versions.push(StoredVersion {
                    version,
                    created: vcreated,
                    material,
                });
            }
            let key = StoredKey {
                status,
                usages,
                created,
                versions,
            };
            if keys.insert(id.clone(), key).is_some() {
                return Err(StoreError::Corrupt(format!("key {id} stored twice")));
            }
        }
        if !r.buf.is_empty() {
            return Err(StoreError::Corrupt("trailing bytes in payload".into()));
        }
        Ok(Self {
            generation,
            health_key,
            keys,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::Corrupt("payload truncated".into()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut c = StoreContents::new_empty().expect("rng");
        let id = XksKeyId::parse("k1").expect("id");
        c.keys.insert(
            id.clone(),
            StoredKey {
                status: KeyStatus::Disabled,
                usages: KeyUsages {
                    encrypt: false,
                    decrypt: true,
                },
                created: 5,
                versions: vec![
                    StoredVersion {
                        version: 1,
                        created: 5,
                        material: random_key().expect("rng"),
                    },
                    StoredVersion {
                        version: 2,
                        created: 6,
                        material: random_key().expect("rng"),
                    },
                ],
            },
        );
        let bytes = c.encode();
        let d = StoreContents::decode(3, &bytes).expect("decode");
        assert_eq!(d.generation, 3);
        let k = &d.keys[&id];
        assert_eq!(k.status, KeyStatus::Disabled);
        assert_eq!(k.usages.names(), vec!["DECRYPT".to_owned()]);
        assert_eq!(k.current_version(), 2);
        assert_eq!(
            &k.versions[1].material[..],
            &c.keys[&id].versions[1].material[..]
        );
        for cut in 0..bytes.len() {
            assert!(
                StoreContents::decode(0, &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        assert!(!format!("{d:?}").contains(&format!("{:?}", &k.versions[0].material[..])));
    }

    #[test]
    fn a_key_with_no_usage_round_trips_and_usage_bits_stay_as_written() {
        let mut c = StoreContents::new_empty().expect("rng");
        for (id, usages) in [
            ("both", KeyUsages::BOTH),
            ("none", KeyUsages::NONE),
            (
                "enc",
                KeyUsages {
                    encrypt: true,
                    decrypt: false,
                },
            ),
        ] {
            c.keys.insert(
                XksKeyId::parse(id).expect("id"),
                StoredKey {
                    status: KeyStatus::Enabled,
                    usages,
                    created: 1,
                    versions: vec![StoredVersion {
                        version: 1,
                        created: 1,
                        material: random_key().expect("rng"),
                    }],
                },
            );
        }
        let bytes = c.encode();
        let d = StoreContents::decode(1, &bytes).expect("decode");
        let usages = |id: &str| d.keys[&XksKeyId::parse(id).expect("id")].usages;
        assert_eq!(usages("none"), KeyUsages::NONE);
        assert!(usages("none").names().is_empty());
        assert_eq!(usages("both"), KeyUsages::BOTH);
        assert_eq!(usages("enc").names(), vec!["ENCRYPT".to_owned()]);
        // The layout is unchanged (stores written before no-usage keys existed read as
        // before): the usage byte of the first key ("both", ids sorted) is 0b11, and a byte
        // with unknown bits is refused.
        let usage_at = 1 + 32 + 4 + 1 + "both".len() + 1;
        assert_eq!(bytes[usage_at], 0b11);
        let mut bad = bytes.to_vec();
        bad[usage_at] = 0b100;
        assert!(StoreContents::decode(1, &bad).is_err());
    }
}
