//! External custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores,
//! ConnectCustomKeyStore, DisconnectCustomKeyStore, UpdateCustomKeyStore,
//! DeleteCustomKeyStore, and the connection state machine.

use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::paging;
use crate::auth::Caller;
use crate::catalogue::{self, ConnectionState};
use crate::protocol::{KmsError, Violations};
use crate::service::{Kms, storage_error};
use crate::storage::{CustomKeyStoreRecord, StorageError};
use crate::xks::{CallSite, surface};
use crate::xks_client::ProxyTarget;
use xks_api::types::{HealthStatus, RequestMetadata};

/// Custom key stores per account and Region (AWS's quota).
pub const MAX_CUSTOM_KEY_STORES: u64 = 10;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Credential {
    access_key_id: Option<String>,
    raw_secret_access_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateInput {
    custom_key_store_name: Option<String>,
    cloud_hsm_cluster_id: Option<String>,
    trust_anchor_certificate: Option<String>,
    key_store_password: Option<String>,
    custom_key_store_type: Option<String>,
    xks_proxy_uri_endpoint: Option<String>,
    xks_proxy_uri_path: Option<String>,
    xks_proxy_vpc_endpoint_service_name: Option<String>,
    xks_proxy_vpc_endpoint_service_owner: Option<String>,
    xks_proxy_authentication_credential: Option<Credential>,
    xks_proxy_connectivity: Option<String>,
}

fn endpoint_ok(s: &str) -> bool {
    s.strip_prefix("https://").is_some_and(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    })
}

fn path_ok(s: &str) -> bool {
    // ^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$
    let Some(at) = s.rfind("/kms/xks/v") else {
        return false;
    };
    let version = &s[at + "/kms/xks/v".len()..];
    let prefix = &s[..at];
    (1..=2).contains(&version.len())
        && version.bytes().all(|b| b.is_ascii_digit())
        && (prefix.is_empty()
            || (prefix.starts_with('/')
                && prefix.len() > 1
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))))
}

fn vpc_service_ok(s: &str) -> bool {
    // ^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$
    let rest = s
        .strip_prefix("com.amazonaws.vpce.")
        .or_else(|| s.strip_prefix("eu.amazonaws.vpce."));
    let Some(rest) = rest else { return false };
    let Some((region, svc)) = rest.split_once(".vpce-svc-") else {
        return false;
    };
    let parts: Vec<&str> = region.split('-').collect();
    let ok_region = (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    ok_region
        && !svc.is_empty()
        && svc
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Validates the XKS members shared by Create and Update.
fn validate_xks_members(
    v: &mut Violations,
    endpoint: Option<&str>,
    path: Option<&str>,
    vpc_name: Option<&str>,
    vpc_owner: Option<&str>,
    cred: Option<&Credential>,
    connectivity: Option<&str>,
) {
    if let Some(e) = endpoint {
        v.length(e, "xksProxyUriEndpoint", 10, 128);
        v.pattern(
            e,
            "xksProxyUriEndpoint",
            endpoint_ok(e),
            "^https://[a-zA-Z0-9.-]+$",
        );
    }
    if let Some(p) = path {
        v.length(p, "xksProxyUriPath", 10, 128);
        v.pattern(
            p,
            "xksProxyUriPath",
            path_ok(p),
            "^(/[a-zA-Z0-9\\/_-]+/kms/xks/v\\d{1,2})$|^(/kms/xks/v\\d{1,2})$",
        );
    }
    if let Some(n) = vpc_name {
        v.length(n, "xksProxyVpcEndpointServiceName", 20, 64);
        v.pattern(
            n,
            "xksProxyVpcEndpointServiceName",
            vpc_service_ok(n),
            "^(com|eu)\\.amazonaws\\.vpce\\.([a-z]+-){2,3}\\d+\\.vpce-svc-[0-9a-z]+$",
        );
    }
    if let Some(o) = vpc_owner {
        v.pattern(
            o,
            "xksProxyVpcEndpointServiceOwner",
            o.len() == 12 && o.bytes().all(|b| b.is_ascii_digit()),
            "^[0-9]{12}$",
        );
    }
    if let Some(c) = cred {
        match &c.access_key_id {
            None => v.add(
                "null",
                "xksProxyAuthenticationCredential.accessKeyId",
                "Member must not be null",
            ),
            Some(a) => {
                v.length(a, "xksProxyAuthenticationCredential.accessKeyId", 20, 30);
                v.pattern(
                    a,
                    "xksProxyAuthenticationCredential.accessKeyId",
                    a.bytes()
                        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
                    "^[A-Z2-7]+$",
                );
            }
        }
        match &c.raw_secret_access_key {
            None => v.add(
                "null",
                "xksProxyAuthenticationCredential.rawSecretAccessKey",
                "Member must not be null",
            ),
            Some(s) => {
                // The secret is sensitive: AWS does not echo it in messages.
                let n = s.len();
                if !(43..=64).contains(&n) {
                    v.add(
                        "***",
                        "xksProxyAuthenticationCredential.rawSecretAccessKey",
                        "Member must have length between 43 and 64",
                    );
                }
                if !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'='))
                {
                    v.add(
                        "***",
                        "xksProxyAuthenticationCredential.rawSecretAccessKey",
                        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9\\/+=]+$",
                    );
                }
            }
        }
    }
    if let Some(c) = connectivity {
        v.enum_value(
            c,
            "xksProxyConnectivity",
            &["PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE"],
        );
    }
}

fn new_store_id() -> Result<String, KmsError> {
    let mut raw = [0u8; 9];
    getrandom::fill(&mut raw)
        .map_err(|e| KmsError::internal(format!("random source failed: {e}")))?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("cks-{}", &hex[..17]))
}

/// The proxy target of a store (unsealing its secret).
pub fn target_secret(
    kms: &Kms,
    s: &CustomKeyStoreRecord,
) -> Result<zeroize::Zeroizing<String>, KmsError> {
    let raw =
        crate::sealing::unseal_material(&kms.root, &format!("cks/{}", s.id), &s.sealed_secret)?;
    String::from_utf8(raw.to_vec())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| KmsError::internal("stored proxy secret is damaged"))
}

/// Runs the proxy's health check for `kms_operation`; Ok when at least one key manager is
/// not UNAVAILABLE.
pub fn health_check(
    kms: &Kms,
    caller_region: &str,
    request_id: &str,
    s: &CustomKeyStoreRecord,
    secret: &str,
    kms_operation: &str,
) -> Result<(), crate::xks_client::XksCallError> {
    let target = ProxyTarget {
        uri_endpoint: &s.uri_endpoint,
        uri_path: &s.uri_path,
        access_key_id: &s.access_key_id,
        secret,
        region: caller_region,
    };
    let meta = RequestMetadata {
        kms_request_id: request_id.to_owned(),
        kms_operation: kms_operation.to_owned(),
        aws_principal_arn: None,
        aws_source_vpc: None,
        aws_source_vpce: None,
        kms_key_arn: None,
        kms_via_service: None,
    };
    let health = tokio::runtime::Handle::current().block_on(kms.xks.health(&target, meta))?;
    if health
        .ekm_fleet_details
        .iter()
        .all(|m| m.health_status == HealthStatus::Unavailable)
    {
        return Err(crate::xks_client::XksCallError::Unreachable(
            "the proxy reports every external key manager UNAVAILABLE".into(),
        ));
    }
    Ok(())
}

fn not_found(id: &str) -> KmsError {
    KmsError::client(
        "CustomKeyStoreNotFoundException",
        format!("Custom key store {id} is not found."),
    )
}

fn uniqueness_error(e: StorageError) -> KmsError {
    match e {
        StorageError::AlreadyExists(what) if what.contains("name") => KmsError::client(
            "CustomKeyStoreNameInUseException",
            "The specified custom key store name is already assigned to another custom key store in the account.",
        ),
        StorageError::AlreadyExists(what) if what.contains("vpc") => KmsError::client(
            "XksProxyVpcEndpointServiceInUseException",
            "The specified VPC endpoint service is already associated with another external key store.",
        ),
        StorageError::AlreadyExists(_) => KmsError::client(
            "XksProxyUriInUseException",
            "The specified proxy URI endpoint and path are already associated with another external key store.",
        ),
        StorageError::LimitExceeded(_) => KmsError::client(
            "LimitExceededException",
            format!(
                "The request was rejected because the number of custom key stores would exceed the quota of {MAX_CUSTOM_KEY_STORES}."
            ),
        ),
        other => storage_error(other),
    }
}

pub(super) fn create(kms: &Kms, caller: &Caller, input: CreateInput) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    match &input.custom_key_store_name {
        None => v.add("null", "customKeyStoreName", "Member must not be null"),
        Some(n) => v.length(n, "customKeyStoreName", 1, 256),
    }
    if let Some(t) = &input.custom_key_store_type {
        v.enum_value(
            t,
            "customKeyStoreType",
            &["AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"],
        );
    }
    validate_xks_members(
        &mut v,
        input.xks_proxy_uri_endpoint.as_deref(),
        input.xks_proxy_uri_path.as_deref(),
        input.xks_proxy_vpc_endpoint_service_name.as_deref(),
        input.xks_proxy_vpc_endpoint_service_owner.as_deref(),
        input.xks_proxy_authentication_credential.as_ref(),
        input.xks_proxy_connectivity.as_deref(),
    );
    v.finish()?;
    if input
        .custom_key_store_type
        .as_deref()
        .unwrap_or("AWS_CLOUDHSM")
        == "AWS_CLOUDHSM"
    {
        // No AWS CloudHSM cluster can exist here.
        let id = input.cloud_hsm_cluster_id.as_deref().unwrap_or("");
        let _ = (&input.trust_anchor_certificate, &input.key_store_password);
        return Err(KmsError::client(
            "CloudHsmClusterNotFoundException",
            format!(
                "AWS CloudHSM cluster '{id}' is not found; this installation has no CloudHSM clusters."
            ),
        ));
    }
    let need =
        |what: &str| KmsError::validation(format!("{what} is required for an external key store."));
    let name = input.custom_key_store_name.unwrap_or_default();
    let endpoint = input
        .xks_proxy_uri_endpoint
        .ok_or_else(|| need("XksProxyUriEndpoint"))?;
    let path = input
        .xks_proxy_uri_path
        .ok_or_else(|| need("XksProxyUriPath"))?;
    let cred = input
        .xks_proxy_authentication_credential
        .ok_or_else(|| need("XksProxyAuthenticationCredential"))?;
    let connectivity = input
        .xks_proxy_connectivity
        .ok_or_else(|| need("XksProxyConnectivity"))?;
    let vpc = connectivity == "VPC_ENDPOINT_SERVICE";
    if vpc && input.xks_proxy_vpc_endpoint_service_name.is_none() {
        return Err(need(
            "XksProxyVpcEndpointServiceName (with VPC_ENDPOINT_SERVICE connectivity)",
        ));
    }
    if !vpc && input.xks_proxy_vpc_endpoint_service_name.is_some() {
        return Err(KmsError::validation(
            "XksProxyVpcEndpointServiceName is valid only with VPC_ENDPOINT_SERVICE connectivity.",
        ));
    }
    let akid = cred.access_key_id.unwrap_or_default();
    let secret = zeroize::Zeroizing::new(cred.raw_secret_access_key.unwrap_or_default());
    let id = new_store_id()?;
    let record = CustomKeyStoreRecord {
        account_id: caller.account_id.clone(),
        region: caller.region.clone(),
        id: id.clone(),
        name,
        store_type: "EXTERNAL_KEY_STORE".into(),
        uri_endpoint: endpoint,
        uri_path: path,
        connectivity,
        vpc_endpoint_service_name: input.xks_proxy_vpc_endpoint_service_name,
        vpc_endpoint_service_owner: input.xks_proxy_vpc_endpoint_service_owner,
        access_key_id: akid,
        sealed_secret: crate::sealing::seal_material(
            &kms.root,
            &format!("cks/{id}"),
            secret.as_bytes(),
        )?,
        connection_state: ConnectionState::Disconnected,
        connection_error_code: None,
        creation_date_ms: kms.clock.now_ms(),
    };
    // Uniqueness first (cheap, no network), then the endpoint rule (an IP endpoint KMS could
    // not reach, whatever the connectivity), then the proxy's health check for public
    // stores, whose connection applies the rule to the addresses a host name resolves to.
    check_unique(kms, caller, &record, None)?;
    kms.xks
        .check_endpoint(&record.uri_endpoint)
        .map_err(|e| surface(CallSite::ManageStore, &e))?;
    if !vpc {
        health_check(
            kms,
            &caller.region,
            &caller.request_id,
            &record,
            &secret,
            "CreateCustomKeyStore",
        )
        .map_err(|e| surface(CallSite::ManageStore, &e))?;
    }
    kms.storage
        .create_custom_key_store(&record, MAX_CUSTOM_KEY_STORES)
        .map_err(uniqueness_error)?;
    Ok(json!({"CustomKeyStoreId": id}))
}

/// Name, endpoint+path and VPC endpoint service uniqueness, answered before any proxy
/// call (the database still enforces them at insert).
fn check_unique(
    kms: &Kms,
    caller: &Caller,
    r: &CustomKeyStoreRecord,
    except: Option<&str>,
) -> Result<(), KmsError> {
    let mut marker: Option<String> = None;
    loop {
        let page = kms
            .storage
            .list_custom_key_stores(&caller.account_id, &caller.region, marker.as_deref(), 100)
            .map_err(storage_error)?;
        for other in page.items.iter().filter(|o| Some(o.id.as_str()) != except) {
            let clash = if other.name == r.name {
                Some("name")
            } else if other.uri_endpoint == r.uri_endpoint && other.uri_path == r.uri_path {
                Some("endpoint")
            } else if r.vpc_endpoint_service_name.is_some()
                && other.vpc_endpoint_service_name == r.vpc_endpoint_service_name
            {
                Some("vpc endpoint service")
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(uniqueness_error(StorageError::AlreadyExists(what.into())));
            }
        }
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => return Ok(()),
        }
    }
}

fn entry(s: &CustomKeyStoreRecord) -> Value {
    let mut xks = json!({
        "Connectivity": s.connectivity,
        "AccessKeyId": s.access_key_id,
        "UriEndpoint": s.uri_endpoint,
        "UriPath": s.uri_path,
    });
    if let Some(n) = &s.vpc_endpoint_service_name {
        xks["VpcEndpointServiceName"] = json!(n);
        if let Some(o) = &s.vpc_endpoint_service_owner {
            xks["VpcEndpointServiceOwner"] = json!(o);
        }
    }
    let mut e = json!({
        "CustomKeyStoreId": s.id,
        "CustomKeyStoreName": s.name,
        "ConnectionState": s.connection_state.as_str(),
        "CreationDate": catalogue::epoch_seconds_from_millis(s.creation_date_ms),
        "CustomKeyStoreType": s.store_type,
        "XksProxyConfiguration": xks,
    });
    if s.connection_state == ConnectionState::Failed
        && let Some(code) = &s.connection_error_code
    {
        e["ConnectionErrorCode"] = json!(code);
    }
    e
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeInput {
    custom_key_store_id: Option<String>,
    custom_key_store_name: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub(super) fn describe(
    kms: &Kms,
    caller: &Caller,
    input: DescribeInput,
) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    let limit = paging(&mut v, input.limit, input.marker.as_deref());
    if let Some(id) = &input.custom_key_store_id {
        v.length(id, "customKeyStoreId", 1, 64);
    }
    if let Some(n) = &input.custom_key_store_name {
        v.length(n, "customKeyStoreName", 1, 256);
    }
    v.finish()?;
    let one = match (&input.custom_key_store_id, &input.custom_key_store_name) {
        (Some(_), Some(_)) => {
            return Err(KmsError::validation(
                "You cannot specify both CustomKeyStoreId and CustomKeyStoreName.",
            ));
        }
        (Some(id), None) => Some(
            kms.storage
                .get_custom_key_store(&caller.account_id, &caller.region, id)
                .map_err(storage_error)?
                .ok_or_else(|| not_found(id))?,
        ),
        (None, Some(name)) => Some(
            kms.storage
                .get_custom_key_store_by_name(&caller.account_id, &caller.region, name)
                .map_err(storage_error)?
                .ok_or_else(|| not_found(name))?,
        ),
        (None, None) => None,
    };
    if let Some(s) = one {
        return Ok(json!({"CustomKeyStores": [entry(&s)], "Truncated": false}));
    }
    let page = kms
        .storage
        .list_custom_key_stores(
            &caller.account_id,
            &caller.region,
            input.marker.as_deref(),
            limit,
        )
        .map_err(storage_error)?;
    let stores: Vec<Value> = page.items.iter().map(entry).collect();
    let mut out = json!({"CustomKeyStores": stores, "Truncated": page.next_marker.is_some()});
    if let Some(m) = page.next_marker {
        out["NextMarker"] = json!(m);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct IdInput {
    custom_key_store_id: Option<String>,
}

fn get(kms: &Kms, caller: &Caller, id: Option<&str>) -> Result<CustomKeyStoreRecord, KmsError> {
    let mut v = Violations::new();
    match id {
        None => v.add("null", "customKeyStoreId", "Member must not be null"),
        Some(i) => v.length(i, "customKeyStoreId", 1, 64),
    }
    v.finish()?;
    let id = id.unwrap_or_default();
    kms.storage
        .get_custom_key_store(&caller.account_id, &caller.region, id)
        .map_err(storage_error)?
        .ok_or_else(|| not_found(id))
}

fn invalid_state(s: &CustomKeyStoreRecord, what: &str) -> KmsError {
    KmsError::client(
        "CustomKeyStoreInvalidStateException",
        format!(
            "{what} is not valid for custom key store {} in state {}.",
            s.id, s.connection_state
        ),
    )
}

pub(super) fn connect(kms: &Arc<Kms>, caller: &Caller, input: IdInput) -> Result<Value, KmsError> {
    let s = get(kms, caller, input.custom_key_store_id.as_deref())?;
    match s.connection_state {
        ConnectionState::Connected | ConnectionState::Connecting => return Ok(json!({})),
        ConnectionState::Disconnected => {}
        _ => return Err(invalid_state(&s, "ConnectCustomKeyStore")),
    }
    let moved = kms
        .storage
        .set_connection_state(
            &s.account_id,
            &s.region,
            &s.id,
            &[ConnectionState::Disconnected],
            ConnectionState::Connecting,
            None,
        )
        .map_err(storage_error)?;
    if !moved {
        return Ok(json!({}));
    }
    // Connecting runs asynchronously, as in KMS; the caller polls DescribeCustomKeyStores.
    let kms2 = kms.clone();
    let region = caller.region.clone();
    let request_id = caller.request_id.clone();
    tokio::runtime::Handle::current().spawn_blocking(move || {
        let (next, code) = if s.connectivity == "VPC_ENDPOINT_SERVICE" {
            // No VPC exists here: the endpoint service cannot be found.
            (ConnectionState::Failed, Some("XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND".to_owned()))
        } else {
            match target_secret(&kms2, &s)
                .map_err(|e| e.message)
                .and_then(|secret| {
                    health_check(&kms2, &region, &request_id, &s, &secret, "ConnectCustomKeyStore")
                        .map_err(|e| e.connection_error_code().to_owned())
                }) {
                Ok(()) => (ConnectionState::Connected, None),
                Err(code) => (ConnectionState::Failed, Some(code)),
            }
        };
        tracing::info!(custom_key_store = %s.id, state = next.as_str(), error_code = code.as_deref().unwrap_or("-"), "connect finished");
        let _ = kms2.storage.set_connection_state(&s.account_id, &s.region, &s.id, &[ConnectionState::Connecting], next, code.as_deref());
    });
    Ok(json!({}))
}

pub(super) fn disconnect(kms: &Kms, caller: &Caller, input: IdInput) -> Result<Value, KmsError> {
    let s = get(kms, caller, input.custom_key_store_id.as_deref())?;
    if matches!(
        s.connection_state,
        ConnectionState::Disconnected | ConnectionState::Disconnecting
    ) {
        return Err(invalid_state(&s, "DisconnectCustomKeyStore"));
    }
    // Nothing is sent to the proxy; the store is disconnected at once.
    kms.storage
        .set_connection_state(
            &s.account_id,
            &s.region,
            &s.id,
            &[
                ConnectionState::Connected,
                ConnectionState::Connecting,
                ConnectionState::Failed,
            ],
            ConnectionState::Disconnected,
            None,
        )
        .map_err(storage_error)?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UpdateInput {
    custom_key_store_id: Option<String>,
    new_custom_key_store_name: Option<String>,
    key_store_password: Option<String>,
    cloud_hsm_cluster_id: Option<String>,
    xks_proxy_uri_endpoint: Option<String>,
    xks_proxy_uri_path: Option<String>,
    xks_proxy_vpc_endpoint_service_name: Option<String>,
    xks_proxy_vpc_endpoint_service_owner: Option<String>,
    xks_proxy_authentication_credential: Option<Credential>,
    xks_proxy_connectivity: Option<String>,
}

pub(super) fn update(kms: &Kms, caller: &Caller, input: UpdateInput) -> Result<Value, KmsError> {
    let mut v = Violations::new();
    if let Some(n) = &input.new_custom_key_store_name {
        v.length(n, "newCustomKeyStoreName", 1, 256);
    }
    validate_xks_members(
        &mut v,
        input.xks_proxy_uri_endpoint.as_deref(),
        input.xks_proxy_uri_path.as_deref(),
        input.xks_proxy_vpc_endpoint_service_name.as_deref(),
        input.xks_proxy_vpc_endpoint_service_owner.as_deref(),
        input.xks_proxy_authentication_credential.as_ref(),
        input.xks_proxy_connectivity.as_deref(),
    );
    v.finish()?;
    let mut s = get(kms, caller, input.custom_key_store_id.as_deref())?;
    if input.key_store_password.is_some() || input.cloud_hsm_cluster_id.is_some() {
        return Err(KmsError::validation(
            "KeyStorePassword and CloudHsmClusterId are valid only for AWS CloudHSM key stores.",
        ));
    }
    let needs_disconnected = input.xks_proxy_uri_endpoint.is_some()
        || input.xks_proxy_connectivity.is_some()
        || input.xks_proxy_vpc_endpoint_service_name.is_some()
        || input.xks_proxy_vpc_endpoint_service_owner.is_some();
    if needs_disconnected && s.connection_state != ConnectionState::Disconnected {
        return Err(invalid_state(
            &s,
            "Updating the endpoint, connectivity or VPC endpoint service",
        ));
    }
    let mut secret = target_secret(kms, &s)?;
    if let Some(n) = input.new_custom_key_store_name {
        s.name = n;
    }
    if let Some(e) = input.xks_proxy_uri_endpoint {
        s.uri_endpoint = e;
    }
    if let Some(p) = input.xks_proxy_uri_path {
        s.uri_path = p;
    }
    if let Some(c) = input.xks_proxy_connectivity {
        s.connectivity = c;
        if s.connectivity == "PUBLIC_ENDPOINT" {
            s.vpc_endpoint_service_name = None;
            s.vpc_endpoint_service_owner = None;
        }
    }
    if let Some(n) = input.xks_proxy_vpc_endpoint_service_name {
        s.vpc_endpoint_service_name = Some(n);
    }
    if let Some(o) = input.xks_proxy_vpc_endpoint_service_owner {
        s.vpc_endpoint_service_owner = Some(o);
    }
    let credential_changed = input.xks_proxy_authentication_credential.is_some();
    if let Some(c) = input.xks_proxy_authentication_credential {
        s.access_key_id = c.access_key_id.unwrap_or_default();
        secret = zeroize::Zeroizing::new(c.raw_secret_access_key.unwrap_or_default());
        s.sealed_secret =
            crate::sealing::seal_material(&kms.root, &format!("cks/{}", s.id), secret.as_bytes())?;
    }
    if s.connectivity == "VPC_ENDPOINT_SERVICE" && s.vpc_endpoint_service_name.is_none() {
        return Err(KmsError::validation(
            "XksProxyVpcEndpointServiceName is required with VPC_ENDPOINT_SERVICE connectivity.",
        ));
    }
    check_unique(kms, caller, &s, Some(&s.id))?;
    kms.xks
        .check_endpoint(&s.uri_endpoint)
        .map_err(|e| surface(CallSite::ManageStore, &e))?;
    // KMS checks a public store's proxy on every update, whatever changed.
    let _ = credential_changed;
    if s.connectivity == "PUBLIC_ENDPOINT" {
        health_check(
            kms,
            &caller.region,
            &caller.request_id,
            &s,
            &secret,
            "UpdateCustomKeyStore",
        )
        .map_err(|e| surface(CallSite::ManageStore, &e))?;
    }
    kms.storage
        .update_custom_key_store(&s)
        .map_err(|e| match e {
            StorageError::Conflict(_) => KmsError::client(
                "CustomKeyStoreInvalidStateException",
                "The custom key store's connection state changed during the update; retry it.",
            ),
            other => uniqueness_error(other),
        })?;
    Ok(json!({}))
}

pub(super) fn delete(kms: &Kms, caller: &Caller, input: IdInput) -> Result<Value, KmsError> {
    let s = get(kms, caller, input.custom_key_store_id.as_deref())?;
    if s.connection_state != ConnectionState::Disconnected {
        return Err(invalid_state(&s, "DeleteCustomKeyStore"));
    }
    kms.storage
        .delete_custom_key_store(&s.account_id, &s.region, &s.id)
        .map_err(|e| match e {
            StorageError::Conflict(_) => KmsError::client(
                "CustomKeyStoreHasCMKsException",
                "The custom key store still holds KMS keys; schedule their deletion and wait for it first.",
            ),
            other => storage_error(other),
        })?;
    Ok(json!({}))
}
