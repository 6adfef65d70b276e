//! What `keys list` and `keys show` print: one table (or JSON) shape for every backend.

use xks_api::XksKeyId;
use xks_api::types::KeyStatus;

use super::KeysAction;
use crate::cli::CliError;
use crate::keystore::{KeyUsages, StoredKey};

/// One line of `keys list`, whatever the backend.
pub(super) struct KeyRow {
    pub(super) id: String,
    pub(super) status: KeyStatus,
    pub(super) usages: KeyUsages,
    pub(super) key_spec: String,
    pub(super) current_version: u32,
}

impl KeyRow {
    pub(super) fn of_stored(id: &XksKeyId, k: &StoredKey) -> Self {
        Self {
            id: id.as_str().to_owned(),
            status: k.status,
            usages: k.usages,
            key_spec: xks_api::types::AES_256.to_owned(),
            current_version: k.current_version(),
        }
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "keyId": self.id,
            "keySpec": self.key_spec,
            "status": status_name(self.status),
            "usages": self.usages.names(),
            "currentVersion": self.current_version,
        })
    }
}

pub(super) fn overlay_status(disabled: &std::collections::BTreeSet<String>, id: &str) -> KeyStatus {
    if disabled.contains(id) {
        KeyStatus::Disabled
    } else {
        KeyStatus::Enabled
    }
}

/// `keys list` without `--json`: one table, the same columns for every backend. A key with
/// no usage shows `-` so that every line has the same number of fields.
pub(super) fn print_key_table(rows: &[KeyRow]) {
    println!(
        "{:<40} {:<9} {:<16} {:<12} {:>8}",
        "KEY ID", "STATUS", "USAGES", "KEY SPEC", "VERSION"
    );
    for r in rows {
        let usages = r.usages.names().join(",");
        println!(
            "{:<40} {:<9} {:<16} {:<12} {:>8}",
            r.id,
            status_name(r.status),
            if usages.is_empty() { "-" } else { &usages },
            r.key_spec,
            r.current_version
        );
    }
}

/// `keys list` / `keys show` for a backend whose keys live in the key manager. Only what
/// the XKS API can reach is listed: the health key and labels that are not valid XKS key
/// ids (which could also break the table's columns) are left out.
pub(super) fn print_key_rows(
    action: &KeysAction,
    rows: Vec<KeyRow>,
    health_key: &str,
    json: bool,
    place: &str,
) -> Result<(), CliError> {
    let rows: Vec<KeyRow> = rows
        .into_iter()
        .filter(|r| r.id != health_key && XksKeyId::parse(&r.id).is_ok())
        .collect();
    match action {
        KeysAction::Show { key_id } => {
            if key_id == health_key {
                return Err(CliError::Other(format!(
                    "{key_id} is this key store's health-check key; it is not served through the XKS API"
                )));
            }
            let row = rows
                .iter()
                .find(|r| r.id == *key_id)
                .ok_or_else(|| CliError::Other(format!("no key {key_id} {place}")))?;
            print_json(&row.json(), json);
        }
        _ if json => println!(
            "{}",
            serde_json::Value::Array(rows.iter().map(KeyRow::json).collect())
        ),
        _ => print_key_table(&rows),
    }
    Ok(())
}

/// `keys show`: one line with `--json`, indented otherwise.
pub(super) fn print_json(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        println!("{v:#}");
    }
}

pub(super) fn status_name(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Enabled => "ENABLED",
        KeyStatus::Disabled => "DISABLED",
    }
}

/// The common fields of [`KeyRow::json`], plus the embedded store's versions and dates.
pub(super) fn key_json(id: &XksKeyId, k: &StoredKey) -> serde_json::Value {
    let mut j = KeyRow::of_stored(id, k).json();
    j["versions"] = k
        .versions
        .iter()
        .map(|v| serde_json::json!({"version": v.version, "created": v.created}))
        .collect();
    j["created"] = k.created.into();
    j
}
