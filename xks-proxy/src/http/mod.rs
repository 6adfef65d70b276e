//! The XKS Proxy API over HTTP: routing, authentication, body limits, JSON and the mapping
//! of [`XksError`] to HTTP responses (in [`error_response`], the only place).
//!
//! Order of checks for every request (the spec's and ours):
//! 1. a method other than POST on an XKS API path → 405 (before anything else; on any other
//!    path → 404 `InvalidUriPathException`);
//! 2. a missing or malformed `Authorization`, or an unknown access key id → 401;
//! 3. the body is read up to a cap derived from the configured limits (over it → 501; not
//!    complete within the listener's body deadline → 400 `ValidationException`), then the
//!    signature is verified → 401;
//! 4. the in-flight limit (health exempt) → 429, so only authenticated requests hold one
//!    of its permits (a client that stalls its body holds none);
//! 5. a path that is not an API path of the credential's own key store → 404
//!    `InvalidUriPathException`;
//! 6. a key id the store does not have → 404 `KeyNotFoundException`, then the store's quota
//!    → 429, then the operation.
//!
//! The rejections of 1-2 are decided before the body is read, but answered only after it
//! was read (up to the same cap, within the body deadline): over h2, an answer sent while
//! the client is still sending makes hyper end the stream with RST_STREAM, and clients
//! such as curl then fail the transfer although the answer was complete.

pub mod path;

use crate::server::{BodyReadError, drain_capped, read_capped};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigv4_auth::Authorization;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use xks_api::types::{
    DecryptRequest, EncryptRequest, GetKeyMetadataRequest, HealthRequest, Operation, XksRequest,
};
use xks_api::{ErrorName, XksError, XksKeyId};
use zeroize::Zeroizing;

use crate::authz::{AccessRequest, Decision};
use crate::metrics::{Metrics, OperationLabel, Outcome, StoreMetricsHandle};
use crate::state::{CredentialEntry, ProxyState};
use path::ApiPath;
use tokio::sync::Semaphore;

/// Shared, swappable state of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The current run-time state; replaced whole on reload.
    pub live: Arc<ArcSwap<ProxyState>>,
    /// Metrics, kept across reloads.
    pub metrics: Arc<Metrics>,
    /// Permits for requests in flight (health is exempt).
    pub in_flight: Arc<Semaphore>,
}

/// The router: `GET /ping` for load balancers, everything else through [`dispatch`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .fallback(dispatch)
        .with_state(state)
}

async fn ping() -> &'static str {
    concat!("pong from xks-proxy ", env!("CARGO_PKG_VERSION"))
}

/// Turns an error into the spec's response: status + `{"errorName", "errorMessage"}`.
pub fn error_response(e: &XksError) -> Response {
    let status =
        StatusCode::from_u16(e.name.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.to_body())
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn fail(name: ErrorName, message: impl AsRef<str>) -> XksError {
    XksError::new(name, message)
}

/// What one request log line records (never plaintext, AAD or secrets).
#[derive(Debug, Default)]
struct RequestRecord {
    kms_request_id: Option<String>,
    kms_operation: Option<String>,
    key_store: Option<String>,
    operation: Option<&'static str>,
    key_id: Option<String>,
    metrics: Option<StoreMetricsHandle>,
    op: Option<Operation>,
}

async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let mut record = RequestRecord::default();
    let outcome = handle(&app, req, &mut record).await;
    let (response, outcome, message) = match outcome {
        Ok(r) => (r, Outcome::Success, None),
        Err(Rejection::Xks(e)) => (error_response(&e), Outcome::Error(e.name), Some(e.message)),
        Err(Rejection::MethodNotAllowed) => {
            let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            (
                r,
                Outcome::MethodNotAllowed,
                Some("only POST is allowed on XKS API paths".to_owned()),
            )
        }
    };
    let latency = started.elapsed();
    app.metrics.request(
        record.metrics.as_ref(),
        record
            .op
            .map_or(OperationLabel::Other, OperationLabel::from),
        outcome,
        latency,
    );
    tracing::info!(
        target: "xks_proxy::request",
        kms_request_id = record.kms_request_id.as_deref().unwrap_or("-"),
        kms_operation = record.kms_operation.as_deref().unwrap_or("-"),
        key_store = record.key_store.as_deref().unwrap_or("-"),
        operation = record.operation.unwrap_or("-"),
        key_id = record.key_id.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        error_name = match outcome {
            Outcome::Error(name) => name.as_str(),
            Outcome::MethodNotAllowed => "MethodNotAllowed",
            Outcome::Success => "-",
        },
        error_message = message.as_deref().unwrap_or("-"),
        latency_us = latency.as_micros() as u64,
        "request"
    );
    response
}

enum Rejection {
    Xks(XksError),
    MethodNotAllowed,
}

impl From<XksError> for Rejection {
    fn from(e: XksError) -> Self {
        Self::Xks(e)
    }
}

async fn handle(
    app: &AppState,
    req: Request,
    record: &mut RequestRecord,
) -> Result<Response, Rejection> {
    let state = app.live.load_full();
    let (parts, body) = req.into_parts();
    let api = ApiPath::parse(parts.uri.path());
    if let Some(a) = &api {
        record.op = Some(a.operation);
        record.operation = Some(a.operation.as_str());
        record.key_id = a.key_id.map(str::to_owned);
    }
    // Authentication: cheap checks first, then the body (capped), then the signature.
    let (auth, entry) = match early_checks(&state, &parts, api.is_some()) {
        Ok(found) => found,
        Err(rejection) => {
            drain_capped(body, &parts.headers, state.max_body_bytes).await;
            return Err(rejection);
        }
    };
    let store = &state.stores[entry.store];
    record.key_store = Some(store.name.clone());
    record.metrics = Some(store.metrics_handle.clone());
    let body = read_body(body, &parts.headers, state.max_body_bytes).await?;
    state.verifiers[entry.store]
        .verify(&parts, &auth, &entry.credential, &body, SystemTime::now())
        .map_err(|e| fail(ErrorName::AuthenticationFailedException, e.to_string()))?;

    // Shed load before doing the work; health stays answerable under overload.
    let _permit = match api.map(|a| a.operation) {
        Some(Operation::Health) => None,
        _ => Some(app.in_flight.clone().try_acquire_owned().map_err(|_| {
            fail(
                ErrorName::ThrottlingException,
                "the proxy is at its limit of requests in flight",
            )
        })?),
    };

    let Some(api) = api.filter(|a| a.prefix == store.path_prefix) else {
        return Err(fail(
            ErrorName::InvalidUriPathException,
            "the path is not an XKS API path of the key store this credential belongs to",
        )
        .into());
    };

    if api.operation == Operation::Health {
        let req: HealthRequest = parse_json(&body)?;
        note_metadata(record, &req.request_metadata);
        return Ok(json_response(StatusCode::OK, &store.health(&req).await?));
    }
    let raw_id = api.key_id.unwrap_or_default();
    let key_id = XksKeyId::parse(raw_id).map_err(|e| {
        fail(
            ErrorName::KeyNotFoundException,
            format!("no key with this id: {e}"),
        )
    })?;
    if !store.quota.try_acquire() {
        app.metrics.quota_rejected(&store.metrics_handle);
        return Err(fail(
            ErrorName::ThrottlingException,
            format!("key store '{}' is over its request quota", store.name),
        )
        .into());
    }
    let response = match api.operation {
        Operation::GetKeyMetadata => {
            let req: GetKeyMetadataRequest =
                admit(&state, record, &store.name, &key_id, api.operation, &body)?;
            json_response(
                StatusCode::OK,
                &store.get_key_metadata(&key_id, &req).await?,
            )
        }
        Operation::Encrypt => {
            let req: EncryptRequest =
                admit(&state, record, &store.name, &key_id, api.operation, &body)?;
            json_response(StatusCode::OK, &store.encrypt(&key_id, &req).await?)
        }
        Operation::Decrypt => {
            let req: DecryptRequest =
                admit(&state, record, &store.name, &key_id, api.operation, &body)?;
            json_response(StatusCode::OK, &store.decrypt(&key_id, &req).await?)
        }
        Operation::Health => unreachable!("handled above"),
    };
    Ok(response)
}

/// The checks that need no body: the method, the `Authorization` header and its access key
/// id. Returns the parsed header and the credential's entry.
fn early_checks<'s>(
    state: &'s ProxyState,
    parts: &http::request::Parts,
    is_api_path: bool,
) -> Result<(Authorization, &'s CredentialEntry), Rejection> {
    if parts.method != Method::POST {
        return Err(if is_api_path {
            Rejection::MethodNotAllowed
        } else {
            fail(ErrorName::InvalidUriPathException, "not an XKS API path").into()
        });
    }
    let auth = Authorization::parse(&parts.headers)
        .map_err(|e| fail(ErrorName::AuthenticationFailedException, e.to_string()))?;
    let entry = state.credentials.get(auth.access_key_id()).ok_or_else(|| {
        fail(
            ErrorName::AuthenticationFailedException,
            "the access key id is not known to this proxy",
        )
    })?;
    Ok((auth, entry))
}

/// Parses a key operation's body, records its metadata for the log line, and applies
/// secondary authorization.
fn admit<T: DeserializeOwned + XksRequest>(
    state: &ProxyState,
    record: &mut RequestRecord,
    key_store: &str,
    key_id: &XksKeyId,
    operation: Operation,
    body: &[u8],
) -> Result<T, XksError> {
    let req: T = parse_json(body)?;
    note_metadata(record, req.request_metadata());
    authorize(state, key_store, key_id, operation, req.request_metadata())?;
    Ok(req)
}

/// Secondary authorization (never called for health), after the metadata fields the
/// operation requires are known to be present (a malformed request is a validation error,
/// not a denial).
fn authorize(
    state: &ProxyState,
    key_store: &str,
    key_id: &XksKeyId,
    operation: Operation,
    metadata: &xks_api::types::RequestMetadata,
) -> Result<(), XksError> {
    metadata.require_key_fields(operation).map_err(|field| {
        fail(
            ErrorName::ValidationException,
            format!("{field} is required"),
        )
    })?;
    let Some(policy) = &state.policy else {
        return Ok(());
    };
    let request = AccessRequest {
        key_store,
        key_id: key_id.as_str(),
        metadata,
    };
    if policy.matching_rule(&request).is_some() {
        return Ok(());
    }
    let Decision::Denied { consulted, reasons } = policy.evaluate(&request) else {
        return Ok(());
    };
    tracing::warn!(
        target: "xks_proxy::authz",
        kms_request_id = %metadata.kms_request_id,
        key_store,
        key_id = %key_id,
        kms_operation = %metadata.kms_operation,
        principal = metadata.aws_principal_arn.as_deref().unwrap_or("-"),
        policy = %policy.path().display(),
        rules_consulted = ?consulted,
        reasons = ?reasons,
        "secondary authorization denied the request"
    );
    Err(fail(
        ErrorName::AccessDeniedException,
        format!(
            "denied by the proxy's authorization policy (rules consulted: {})",
            consulted.join(", ")
        ),
    ))
}

fn note_metadata(record: &mut RequestRecord, m: &xks_api::types::RequestMetadata) {
    record.kms_request_id = Some(m.kms_request_id.clone());
    record.kms_operation = Some(m.kms_operation.clone());
}

/// The body, capped at `max` bytes, in a buffer wiped when dropped.
async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, XksError> {
    read_capped(body, headers, max).await.map_err(|e| match e {
        BodyReadError::TooLarge(max) => fail(
            ErrorName::UnsupportedOperationException,
            format!("the request body is larger than this proxy accepts ({max} bytes)"),
        ),
        BodyReadError::TimedOut(timeout) => {
            fail(ErrorName::ValidationException, timeout.to_string())
        }
        BodyReadError::Unreadable => fail(
            ErrorName::ValidationException,
            "the request body could not be read",
        ),
    })
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|e| {
        fail(
            ErrorName::ValidationException,
            format!("invalid request body: {e}"),
        )
    })
}
