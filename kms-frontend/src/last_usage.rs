//! Key usage tracking (GetKeyLastUsage): the last successful cryptographic use of each key.
//!
//! Recording a use must not cost a database write per request (an Encrypt would wait for an
//! `fsync`), so uses are kept in memory, newest per key, and written in batches by
//! [`UsageTracker::flush`] (a task of the server flushes every [`FLUSH_INTERVAL`], and once
//! more at shutdown). Storage keeps the newest of what every process flushed, so a fleet
//! sharing one database converges on the true last use. Reads merge the pending use of this
//! process with the stored one, so a caller sees its own use at once; another process's use
//! shows within one flush interval, the eventual consistency AWS documents.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::storage::{KeyAddress, KeyUsageRecord, Storage, StorageError};

/// How often pending uses are written to storage.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The operations whose success is a use of the key(s) they name: the cryptographic
/// operations. (GetPublicKey, DescribeKey and the like read a key without using it.)
pub const CRYPTOGRAPHIC_OPERATIONS: &[&str] = &[
    "Decapsulate",
    "Decrypt",
    "DeriveSharedSecret",
    "Encapsulate",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

type KeyName = (String, String, String);

/// Uses recorded by this process and not yet flushed, newest per key.
#[derive(Debug, Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<KeyName, KeyUsageRecord>>,
}

impl UsageTracker {
    /// Records the uses a successful `operation` made, read from its answer: every
    /// cryptographic operation names its key's ARN in `KeyId`, and ReEncrypt its source key's
    /// in `SourceKeyId`. Answers of other operations record nothing.
    pub fn record_answer(
        &self,
        operation: &str,
        answer: &Value,
        request_id: &str,
        event_id: &str,
        now_ms: i64,
    ) {
        if !CRYPTOGRAPHIC_OPERATIONS.contains(&operation) {
            return;
        }
        for field in ["KeyId", "SourceKeyId"] {
            let Some((region, account_id, key_id)) = answer[field].as_str().and_then(split_key_arn)
            else {
                continue;
            };
            self.record(KeyUsageRecord {
                account_id: account_id.to_owned(),
                region: region.to_owned(),
                key_id: key_id.to_owned(),
                operation: operation.to_owned(),
                timestamp_ms: now_ms,
                request_id: request_id.to_owned(),
                event_id: event_id.to_owned(),
            });
        }
    }

    fn record(&self, usage: KeyUsageRecord) {
        let mut pending = self.lock();
        keep_newest(&mut pending, usage);
    }

    /// The last use of a key: the newer of this process's pending use and the stored one.
    pub fn last_usage(
        &self,
        storage: &dyn Storage,
        key: KeyAddress<'_>,
    ) -> Result<Option<KeyUsageRecord>, StorageError> {
        let stored = storage.key_last_usage(key)?;
        let pending = self
            .lock()
            .get(&(
                key.account_id.to_owned(),
                key.region.to_owned(),
                key.key_id.to_owned(),
            ))
            .cloned();
        Ok(match (stored, pending) {
            (Some(s), Some(p)) => Some(if p.timestamp_ms >= s.timestamp_ms {
                p
            } else {
                s
            }),
            (s, p) => p.or(s),
        })
    }

    /// Writes the pending uses to storage. On failure they stay pending (merged with any
    /// recorded meanwhile) for the next flush.
    pub fn flush(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        let batch: Vec<KeyUsageRecord> = {
            let mut pending = self.lock();
            if pending.is_empty() {
                return Ok(());
            }
            pending.drain().map(|(_, u)| u).collect()
        };
        let written = storage.record_key_usages(&batch);
        if written.is_err() {
            let mut pending = self.lock();
            for usage in batch {
                keep_newest(&mut pending, usage);
            }
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyName, KeyUsageRecord>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn keep_newest(pending: &mut HashMap<KeyName, KeyUsageRecord>, usage: KeyUsageRecord) {
    let name = (
        usage.account_id.clone(),
        usage.region.clone(),
        usage.key_id.clone(),
    );
    match pending.get(&name) {
        Some(existing) if existing.timestamp_ms > usage.timestamp_ms => {}
        _ => {
            pending.insert(name, usage);
        }
    }
}

/// (Region, account, key id) of a key ARN `arn:<partition>:kms:<region>:<account>:key/<id>`.
fn split_key_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("kms"), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let key_id = resource.strip_prefix("key/")?;
    Some((region, account, key_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arns_split() {
        assert_eq!(
            split_key_arn("arn:aws:kms:eu-west-1:111122223333:key/mrk-1"),
            Some(("eu-west-1", "111122223333", "mrk-1"))
        );
        assert_eq!(
            split_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/abc"),
            Some(("cn-north-1", "111122223333", "abc"))
        );
        assert_eq!(
            split_key_arn("arn:aws:kms:eu-west-1:111122223333:alias/x"),
            None
        );
        assert_eq!(split_key_arn("1234abcd-12ab"), None);
    }

    #[test]
    fn newest_use_wins_whatever_the_order() {
        let mut pending = HashMap::new();
        let usage = |ts, op: &str| KeyUsageRecord {
            account_id: "a".into(),
            region: "r".into(),
            key_id: "k".into(),
            operation: op.into(),
            timestamp_ms: ts,
            request_id: String::new(),
            event_id: String::new(),
        };
        keep_newest(&mut pending, usage(20, "Encrypt"));
        keep_newest(&mut pending, usage(10, "Decrypt"));
        assert_eq!(
            pending.values().next().map(|u| u.operation.as_str()),
            Some("Encrypt")
        );
        keep_newest(&mut pending, usage(30, "Sign"));
        assert_eq!(
            pending.values().next().map(|u| u.operation.as_str()),
            Some("Sign")
        );
    }
}
