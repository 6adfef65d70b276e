//! HTTP: `POST /` with `X-Amz-Target`, caller authentication, a body cap, an in-flight
//! limit, and one log line per request. Operations run on the blocking pool (storage is
//! synchronous).
//!
//! Order of checks for every request:
//! 1. a method other than POST → `UnknownOperationException`;
//! 2. a missing or malformed `Authorization`, or an unknown access key id;
//! 3. the body is read up to [`MAX_BODY_BYTES`] (over it → `ValidationException`; not
//!    complete within the listener's body deadline → `ValidationException`), then the
//!    signature is verified and the credential scope's Region must be a served one
//!    (otherwise `InvalidSignatureException`);
//! 4. the in-flight limit → `ThrottlingException` (HTTP 400, as KMS answers it), so only
//!    authenticated requests hold one of its permits: a client that stalls its bodies,
//!    even with a known access key id, holds none and cannot make others wait;
//! 5. a KMS operation whose name (`x-amz-target`) is not signed → `IncompleteSignatureException`;
//! 6. the authorization decision (`crate::authz`), then the operation.
//!
//! The rejections of 1-2 are decided before the body is read but answered only after it
//! was read (up to the same cap, within the body deadline): over h2, an answer sent while
//! the client is still sending makes hyper end the stream with RST_STREAM, and clients then
//! fail the request although the answer was complete.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::Method;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Semaphore;

use crate::protocol::{self, KmsError, TARGET_PREFIX};
use crate::service::Kms;

/// Largest request body read (a 131,072-character policy plus framing fits easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every request handler shares.
#[derive(Debug, Clone)]
struct HttpState {
    kms: Arc<Kms>,
    /// Permits for authenticated requests in flight (`[server] max_in_flight_requests`).
    in_flight: Arc<Semaphore>,
}

/// The router: every request goes through `dispatch`; at most `max_in_flight` authenticated
/// requests are worked on at once.
pub fn router(kms: Arc<Kms>, max_in_flight: usize) -> Router {
    let state = HttpState {
        kms,
        in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
    };
    let r = Router::new();
    #[cfg(feature = "test-hooks")]
    let r = r.route("/_test/advance-clock", axum::routing::post(advance_clock));
    r.fallback(dispatch).with_state(state)
}

#[cfg(feature = "test-hooks")]
async fn advance_clock(State(state): State<HttpState>, body: axum::body::Bytes) -> Response {
    let kms = state.kms;
    let seconds = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seconds"].as_i64())
        .unwrap_or(0);
    kms.clock.advance(seconds.saturating_mul(1000));
    let k = kms.clone();
    let _ = tokio::task::spawn_blocking(move || k.sweep_time_driven()).await;
    tracing::warn!(seconds, "test hook: clock advanced");
    protocol::ok(serde_json::json!({"now_ms": kms.clock.now_ms()}), "test")
}

async fn dispatch(State(state): State<HttpState>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut operation = String::from("-");
    let mut account = String::from("-");
    let ids = RequestIds {
        request_id: &request_id,
        event_id: &event_id,
    };
    let result = handle(&state, req, ids, &mut operation, &mut account).await;
    let (response, error) = match result {
        Ok(body) => (protocol::ok(body, &request_id), None),
        Err(e) => {
            let name = e.name;
            let msg = e.message.clone();
            (e.into_response(&request_id), Some((name, msg)))
        }
    };
    tracing::info!(
        target: "kms_frontend::request",
        request_id = %request_id,
        event_id = %event_id,
        account = %account,
        operation = %operation,
        status = response.status().as_u16(),
        error = error.as_ref().map_or("-", |e| e.0),
        message = error.as_ref().map_or("-", |e| e.1.as_str()),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// The identifiers of one request: its request id (`x-amzn-RequestId`) and its audit event id.
#[derive(Clone, Copy)]
struct RequestIds<'a> {
    request_id: &'a str,
    event_id: &'a str,
}

async fn handle(
    state: &HttpState,
    req: Request,
    ids: RequestIds<'_>,
    operation: &mut String,
    account: &mut String,
) -> Result<serde_json::Value, KmsError> {
    let kms = &state.kms;
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let early = if parts.method == Method::POST {
        kms.callers.identify(&parts)
    } else {
        Err(KmsError::client("UnknownOperationException", ""))
    };
    let auth = match early {
        Ok(auth) => auth,
        Err(e) => {
            https_server::drain_capped(body, &parts.headers, MAX_BODY_BYTES).await;
            return Err(e);
        }
    };
    let body = read_body(body, &parts.headers).await?;
    let mut caller = kms
        .callers
        .verify(&parts, &auth, &body, SystemTime::now())?;
    // Shed load before doing the work, counting only authenticated requests.
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        KmsError::client(
            "ThrottlingException",
            "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.",
        )
    })?;
    caller.request_id = ids.request_id.to_owned();
    caller.event_id = ids.event_id.to_owned();
    *account = caller.account_id.clone();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .ok_or_else(|| KmsError::client("UnknownOperationException", ""))?
        .to_owned();
    *operation = op.clone();
    // An unknown operation is answered as such (it changes nothing); any KMS operation
    // needs a signature covering its name.
    if crate::authz::context::is_kms_operation(&op) {
        kms.callers.check_signed_target(&auth)?;
    }
    caller.source_ip = peer;
    caller.cross_account = crate::authz::context::CROSS_ACCOUNT_OPERATIONS.contains(&op.as_str());
    kms.handle(op, caller, body).await
}

/// The body, in a buffer wiped when dropped: it may hold a plaintext or data key.
async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KmsError> {
    https_server::read_capped(body, headers, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            https_server::BodyReadError::TooLarge(max) => {
                KmsError::validation(format!("The request body is larger than {max} bytes."))
            }
            https_server::BodyReadError::TimedOut(timeout) => {
                KmsError::validation(timeout.to_string())
            }
            https_server::BodyReadError::Unreadable => {
                KmsError::validation("The request body could not be read.")
            }
        })
}
