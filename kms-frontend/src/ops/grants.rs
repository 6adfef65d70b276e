//! CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant.
//!
//! Order of checks (as the other operations): request shape (`ValidationException`), the
//! key (`NotFoundException`), its state (`crate::key_state`), what the grant may hold for
//! this key, then `DryRun`, then the write. The authorization decision was made before
//! (`authz::context`), except RetireGrant's, which the grant itself decides
//! (`authz::context::authorize_retire`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::asymmetric::{check_grant_tokens, dry_run};
use super::keys::required_key_id;
use crate::auth::Caller;
use crate::catalogue::epoch_seconds_from_millis;
use crate::grants::{self, GRANT_OPERATIONS};
use crate::key_state::Operation;
use crate::protocol::{KmsError, Violations};
use crate::service::{KeyRef, Kms, storage_error};
use crate::storage::{GrantConstraints, GrantRecord, KeyRecord, StorageError};

/// The model's pattern for grantee and retiring principals.
const PRINCIPAL_PATTERN: &str = r"^[\w+=,.@:/-]+$";
/// The model's pattern for grant names.
const NAME_PATTERN: &str = "^[a-zA-Z0-9:/_-]+$";
/// The encryption context pairs a constraint may hold.
const MAX_CONSTRAINT_PAIRS: usize = 8;
/// The longest encryption context value in a constraint.
const MAX_CONSTRAINT_VALUE: usize = 384;

fn principal_ok(p: &str) -> bool {
    p.chars()
        .all(|c| c.is_alphanumeric() || "_+=,.@:/-".contains(c))
}

fn name_ok(n: &str) -> bool {
    n.chars()
        .all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c))
}

/// `InvalidGrantIdException` for a grant id that cannot be one.
fn invalid_grant_id(id: &str) -> KmsError {
    KmsError::client("InvalidGrantIdException", format!("Invalid grant ID: {id}"))
}

/// The answer for a grant id of the right form that names no grant on the key.
fn grant_not_found(id: &str) -> KmsError {
    KmsError::not_found(format!("Grant ID {id} not found."))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ConstraintsInput {
    encryption_context_equals: Option<BTreeMap<String, String>>,
    encryption_context_subset: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateGrantInput {
    key_id: Option<String>,
    grantee_principal: Option<String>,
    retiring_principal: Option<String>,
    operations: Option<Vec<String>>,
    constraints: Option<ConstraintsInput>,
    grant_tokens: Option<Vec<String>>,
    name: Option<String>,
    dry_run: Option<bool>,
}

fn check_principal(v: &mut Violations, p: &str, member: &str) {
    v.length(p, member, 1, 256);
    v.pattern(p, member, principal_ok(p), PRINCIPAL_PATTERN);
}

fn check_pairs(v: &mut Violations, pairs: Option<&BTreeMap<String, String>>, member: &str) {
    let Some(pairs) = pairs else { return };
    if pairs.len() > MAX_CONSTRAINT_PAIRS {
        v.add(
            &format!("{pairs:?}"),
            member,
            &format!("Member must have length less than or equal to {MAX_CONSTRAINT_PAIRS}"),
        );
    }
    for (k, val) in pairs {
        v.length(k, &format!("{member}.key"), 1, MAX_CONSTRAINT_VALUE);
        v.length(val, &format!("{member}.value"), 0, MAX_CONSTRAINT_VALUE);
    }
}

/// The constraints as stored: `None` when neither map is given.
fn constraints_of(input: Option<ConstraintsInput>) -> Option<GrantConstraints> {
    let c = input?;
    if c.encryption_context_equals.is_none() && c.encryption_context_subset.is_none() {
        return None;
    }
    Some(GrantConstraints {
        encryption_context_equals: c.encryption_context_equals,
        encryption_context_subset: c.encryption_context_subset,
    })
}

pub(super) fn create_grant(
    kms: &Kms,
    caller: &Caller,
    input: CreateGrantInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match &input.grantee_principal {
        None => v.add("null", "granteePrincipal", "Member must not be null"),
        Some(p) => check_principal(&mut v, p, "granteePrincipal"),
    }
    if let Some(p) = &input.retiring_principal {
        check_principal(&mut v, p, "retiringPrincipal");
    }
    match &input.operations {
        None => v.add("null", "operations", "Member must not be null"),
        Some(ops) => {
            for op in ops {
                v.enum_value(op, "operations.member", GRANT_OPERATIONS);
            }
        }
    }
    if let Some(n) = &input.name {
        v.length(n, "name", 1, 256);
        v.pattern(n, "name", name_ok(n), NAME_PATTERN);
    }
    if let Some(c) = &input.constraints {
        check_pairs(
            &mut v,
            c.encryption_context_equals.as_ref(),
            "constraints.encryptionContextEquals",
        );
        check_pairs(
            &mut v,
            c.encryption_context_subset.as_ref(),
            "constraints.encryptionContextSubset",
        );
    }
    check_grant_tokens(&mut v, input.grant_tokens.as_deref());
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let mut operations = input.operations.unwrap_or_default();
    if operations.is_empty() {
        return Err(KmsError::validation(
            "Operations must name at least one grant operation.",
        ));
    }
    operations.sort();
    operations.dedup();
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    kms.check_usable(&key, Operation::CreateGrant)?;
    if let Some(op) = grants::unfit_operation(&key, &operations) {
        return Err(KmsError::validation(format!(
            "The grant operation {op} is not valid for KMS key {} (KeySpec {}, KeyUsage {}).",
            key.arn, key.key_spec, key.key_usage
        )));
    }
    let constraints = constraints_of(input.constraints);
    if constraints.is_some() && !grants::takes_constraints(&key) {
        return Err(KmsError::validation(format!(
            "Grant constraints are only valid for operations that take an encryption context; \
             KMS key {} (KeySpec {}, KeyUsage {}) has none.",
            key.arn, key.key_spec, key.key_usage
        )));
    }
    dry_run(input.dry_run)?;
    let grant = GrantRecord {
        account_id: key.account_id.clone(),
        region: key.region.clone(),
        key_id: key.key_id.clone(),
        grant_id: grants::new_grant_id()?,
        name: input.name,
        grantee_principal: input.grantee_principal.unwrap_or_default(),
        retiring_principal: input.retiring_principal,
        issuing_account: grants::account_root(caller),
        operations,
        constraints,
        creation_date_ms: kms.clock.now_ms(),
    };
    let stored = kms
        .storage
        .create_grant(
            &grant,
            kms.grant_limits.per_key,
            kms.grant_limits.per_grantee,
        )
        .map_err(|e| match e {
            StorageError::NotFound => {
                KmsError::not_found(format!("Key '{}' does not exist", key.arn))
            }
            other => storage_error(other),
        })?;
    let token = grants::issue_token(&kms.root, &key.arn, &stored.grant_id)?;
    Ok(json!({"GrantToken": token, "GrantId": stored.grant_id}))
}

/// A grant as ListGrants and ListRetirableGrants show it (`GrantListEntry`).
fn entry(g: &GrantRecord, partition: &str) -> Value {
    let mut e = json!({
        "KeyId": crate::catalogue::key_arn(partition, &g.region, &g.account_id, &g.key_id),
        "GrantId": g.grant_id,
        "Name": g.name.clone().unwrap_or_default(),
        "CreationDate": epoch_seconds_from_millis(g.creation_date_ms),
        "GranteePrincipal": g.grantee_principal,
        "IssuingAccount": g.issuing_account,
        "Operations": g.operations,
    });
    if let Some(r) = &g.retiring_principal {
        e["RetiringPrincipal"] = json!(r);
    }
    if let Some(c) = &g.constraints {
        let mut cj = json!({});
        if let Some(eq) = &c.encryption_context_equals {
            cj["EncryptionContextEquals"] = json!(eq);
        }
        if let Some(sub) = &c.encryption_context_subset {
            cj["EncryptionContextSubset"] = json!(sub);
        }
        e["Constraints"] = cj;
    }
    e
}

/// `Limit` (1..1000, default 50, as the grant listings have it) and `Marker`.
fn grant_paging(v: &mut Violations, limit: Option<i64>, marker: Option<&str>) -> usize {
    if let Some(l) = limit {
        v.range(l, "limit", 1, 1000);
    }
    if let Some(m) = marker {
        v.length(m, "marker", 1, 1024);
    }
    usize::try_from(limit.unwrap_or(50).clamp(1, 1000)).unwrap_or(50)
}

fn listing(
    caller: &Caller,
    page: Result<crate::storage::Page<GrantRecord>, StorageError>,
) -> Result<Value, KmsError> {
    let page = page.map_err(|e| match e {
        StorageError::NotFound => {
            KmsError::client("InvalidMarkerException", "The marker is not valid.")
        }
        other => storage_error(other),
    })?;
    let grants: Vec<Value> = page
        .items
        .iter()
        .map(|g| entry(g, caller.partition))
        .collect();
    let mut out = json!({"Grants": grants, "Truncated": page.next_marker.is_some()});
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListGrantsInput {
    limit: Option<i64>,
    marker: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    grantee_principal: Option<String>,
}

pub(super) fn list_grants(
    kms: &Kms,
    caller: &Caller,
    input: ListGrantsInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = grant_paging(&mut v, input.limit, input.marker.as_deref());
    if let Some(id) = &input.grant_id {
        v.length(id, "grantId", 1, 128);
    }
    if let Some(p) = &input.grantee_principal {
        check_principal(&mut v, p, "granteePrincipal");
    }
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    if let Some(id) = &input.grant_id
        && !grants::is_grant_id(id)
    {
        return Err(invalid_grant_id(id));
    }
    let page = kms.storage.list_grants(
        key.address(),
        input.grant_id.as_deref(),
        input.grantee_principal.as_deref(),
        input.marker.as_deref(),
        limit,
    );
    listing(caller, page)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListRetirableInput {
    limit: Option<i64>,
    marker: Option<String>,
    retiring_principal: Option<String>,
}

pub(super) fn list_retirable_grants(
    kms: &Kms,
    caller: &Caller,
    input: ListRetirableInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = grant_paging(&mut v, input.limit, input.marker.as_deref());
    match &input.retiring_principal {
        None => v.add("null", "retiringPrincipal", "Member must not be null"),
        Some(p) => check_principal(&mut v, p, "retiringPrincipal"),
    }
    v.finish()?;
    let principal = input.retiring_principal.unwrap_or_default();
    // Only the caller's own account's principals (AWS: "in your account").
    let account = principal
        .split(':')
        .nth(4)
        .unwrap_or(principal.as_str())
        .to_owned();
    if account != caller.account_id {
        return Err(KmsError::client(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: kms:ListRetirableGrants for retiring principal {principal} of another account",
                caller.principal_arn
            ),
        ));
    }
    let page = kms
        .storage
        .list_retirable_grants(&principal, input.marker.as_deref(), limit);
    listing(caller, page)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RetireGrantInput {
    grant_token: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
}

/// The key a token's ARN names, read directly (the token may name a key of another account
/// or Region than the caller's).
fn key_of_token(kms: &Kms, arn: &str) -> Result<Option<KeyRecord>, KmsError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, _, region, account, resource] = parts[..] else {
        return Err(grants::invalid_token());
    };
    let Some(key_id) = resource.strip_prefix("key/") else {
        return Err(grants::invalid_token());
    };
    kms.storage
        .get_key(account, region, key_id)
        .map_err(storage_error)
}

pub(super) fn retire_grant(
    kms: &Kms,
    caller: &Caller,
    input: RetireGrantInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    if let Some(t) = &input.grant_token {
        v.length(t, "grantToken", 1, grants::MAX_TOKEN_LEN);
    }
    if let Some(k) = &input.key_id {
        v.length(k, "keyId", 1, 2048);
    }
    if let Some(id) = &input.grant_id {
        v.length(id, "grantId", 1, 128);
    }
    v.finish()?;
    let (key, grant_id) = if let Some(token) = &input.grant_token {
        let claims = grants::verify_token(&kms.root, token).map_err(|_| grants::invalid_token())?;
        let key =
            key_of_token(kms, &claims.key_arn)?.ok_or_else(|| grant_not_found(&claims.grant_id))?;
        (key, claims.grant_id)
    } else {
        let (Some(key_id), Some(grant_id)) = (&input.key_id, &input.grant_id) else {
            return Err(KmsError::validation(
                "Either GrantToken, or both KeyId and GrantId, must be specified.",
            ));
        };
        if !grants::is_grant_id(grant_id) {
            return Err(invalid_grant_id(grant_id));
        }
        (
            kms.find_key(caller, key_id, KeyRef::KeyOnly)?,
            grant_id.clone(),
        )
    };
    let grant = kms
        .storage
        .get_grant(key.address(), &grant_id)
        .map_err(storage_error)?
        .ok_or_else(|| grant_not_found(&grant_id))?;
    crate::authz::context::authorize_retire(kms, caller, &key, &grant)?;
    dry_run(input.dry_run)?;
    delete(kms, &key, &grant_id)
}

fn delete(kms: &Kms, key: &KeyRecord, grant_id: &str) -> Result<Value, KmsError> {
    kms.storage
        .delete_grant(key.address(), grant_id)
        .map_err(|e| match e {
            StorageError::NotFound => grant_not_found(grant_id),
            other => storage_error(other),
        })?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RevokeGrantInput {
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
}

pub(super) fn revoke_grant(
    kms: &Kms,
    caller: &Caller,
    input: RevokeGrantInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match &input.grant_id {
        None => v.add("null", "grantId", "Member must not be null"),
        Some(id) => v.length(id, "grantId", 1, 128),
    }
    let key_id = required_key_id(input.key_id.as_deref());
    v.finish()?;
    let grant_id = input.grant_id.unwrap_or_default();
    let key = kms.find_key(caller, key_id?, KeyRef::KeyOnly)?;
    if !grants::is_grant_id(&grant_id) {
        return Err(invalid_grant_id(&grant_id));
    }
    if kms
        .storage
        .get_grant(key.address(), &grant_id)
        .map_err(storage_error)?
        .is_none()
    {
        return Err(grant_not_found(&grant_id));
    }
    dry_run(input.dry_run)?;
    delete(kms, &key, &grant_id)
}
