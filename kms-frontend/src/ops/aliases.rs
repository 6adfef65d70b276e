//! CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::required_key_id;
use super::paging;
use crate::auth::Caller;
use crate::catalogue;
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms, storage_error};
use crate::storage::{AliasRecord, StorageError};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AliasInput {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

fn alias_name<'a>(v: &mut Violations, name: Option<&'a str>) -> &'a str {
    match name {
        None => v.add("null", "aliasName", "Member must not be null"),
        Some(n) => {
            v.length(n, "aliasName", 1, 256);
            v.pattern(
                n,
                "aliasName",
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-')),
                "^[a-zA-Z0-9:/_-]+$",
            );
        }
    }
    name.unwrap_or_default()
}

fn check_alias_name(name: &str) -> Result<(), KmsError> {
    if !name.starts_with("alias/") || name.len() <= "alias/".len() {
        return Err(KmsError::client(
            "InvalidAliasNameException",
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::client(
            "NotAuthorizedException",
            "Alias names that begin with alias/aws/ are reserved for AWS managed keys.",
        ));
    }
    Ok(())
}

fn target(kms: &Kms, caller: &Caller, id: &str) -> Result<crate::storage::KeyRecord, KmsError> {
    let key = kms.find_key(caller, id, KeyRef::KeyOnly)?;
    kms.check_usable(&key, Operation::PointAlias)?;
    Ok(key)
}

pub(super) fn create_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let name = alias_name(&mut v, input.alias_name.as_deref());
    let key_id = required_key_id(input.target_key_id.as_deref());
    v.finish()?;
    check_alias_name(name)?;
    let key = target(kms, caller, key_id?)?;
    let now = kms.clock.now_ms();
    kms.storage
        .create_alias(&AliasRecord {
            account_id: caller.account_id.clone(),
            region: caller.region.clone(),
            alias_name: name.to_owned(),
            target_key_id: key.key_id,
            creation_date_ms: now,
            last_updated_ms: now,
        })
        .map_err(|e| match e {
            StorageError::AlreadyExists(_) => KmsError::client(
                "AlreadyExistsException",
                format!(
                    "An alias with the name {} already exists",
                    kms.alias_arn(caller, name)
                ),
            ),
            other => storage_error(other),
        })?;
    Ok(json!({}))
}

pub(super) fn update_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let name = alias_name(&mut v, input.alias_name.as_deref());
    let key_id = required_key_id(input.target_key_id.as_deref());
    v.finish()?;
    check_alias_name(name)?;
    let existing = kms
        .storage
        .get_alias(&caller.account_id, &caller.region, name)
        .map_err(storage_error)?
        .ok_or_else(|| {
            KmsError::not_found(format!(
                "Alias {} is not found.",
                kms.alias_arn(caller, name)
            ))
        })?;
    let new_target = target(kms, caller, key_id?)?;
    if let Ok(Some(old)) =
        kms.storage
            .get_key(&caller.account_id, &caller.region, &existing.target_key_id)
        && (old.key_spec != new_target.key_spec || old.key_usage != new_target.key_usage)
    {
        return Err(KmsError::validation(
            "The new target key must be of the same key type and key usage as the current target key.",
        ));
    }
    kms.storage
        .update_alias(
            &caller.account_id,
            &caller.region,
            name,
            &new_target.key_id,
            kms.clock.now_ms(),
        )
        .map_err(storage_error)?;
    Ok(json!({}))
}

pub(super) fn delete_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let name = alias_name(&mut v, input.alias_name.as_deref());
    v.finish()?;
    check_alias_name(name)?;
    kms.storage
        .delete_alias(&caller.account_id, &caller.region, name)
        .map_err(|e| match e {
            StorageError::NotFound => KmsError::not_found(format!(
                "Alias {} is not found.",
                kms.alias_arn(caller, name)
            )),
            other => storage_error(other),
        })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListAliasesInput {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub(super) fn list_aliases(
    kms: &Kms,
    caller: &Caller,
    input: ListAliasesInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = paging(&mut v, input.limit, input.marker.as_deref());
    if let Some(k) = &input.key_id {
        v.length(k, "keyId", 1, 2048);
    }
    v.finish()?;
    let key_filter = match &input.key_id {
        Some(k) => Some(kms.find_key(caller, k, KeyRef::KeyOnly)?.key_id),
        None => None,
    };
    let page = kms
        .storage
        .list_aliases(
            &caller.account_id,
            &caller.region,
            key_filter.as_deref(),
            input.marker.as_deref(),
            limit,
        )
        .map_err(|e| match e {
            StorageError::NotFound => {
                KmsError::client("InvalidMarkerException", "The marker is not valid.")
            }
            other => storage_error(other),
        })?;
    let aliases: Vec<Value> = page
        .items
        .iter()
        .map(|a| {
            json!({
                "AliasName": a.alias_name,
                "AliasArn": kms.alias_arn(caller, &a.alias_name),
                "TargetKeyId": a.target_key_id,
                "CreationDate": catalogue::epoch_seconds_from_millis(a.creation_date_ms),
                "LastUpdatedDate": catalogue::epoch_seconds_from_millis(a.last_updated_ms),
            })
        })
        .collect();
    let mut out = json!({"Aliases": aliases, "Truncated": page.next_marker.is_some()});
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    Ok(out)
}
