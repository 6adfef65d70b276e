//! HTTP: `POST /` with `X-Amz-Target`, caller authentication, a body cap, and one log line
//! per request. Operations run on the blocking pool (storage is synchronous).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, header};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::protocol::{self, KmsError, TARGET_PREFIX};
use crate::service::Kms;

/// Largest request body read (a 131,072-character policy plus framing fits easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The router: every request goes through `dispatch`.
pub fn router(kms: Arc<Kms>) -> Router {
    let r = Router::new();
    #[cfg(feature = "test-hooks")]
    let r = r.route("/_test/advance-clock", axum::routing::post(advance_clock));
    r.fallback(dispatch).with_state(kms)
}

#[cfg(feature = "test-hooks")]
async fn advance_clock(State(kms): State<Arc<Kms>>, body: axum::body::Bytes) -> Response {
    let seconds = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seconds"].as_i64())
        .unwrap_or(0);
    kms.clock.advance(seconds.saturating_mul(1000));
    let k = kms.clone();
    let _ = tokio::task::spawn_blocking(move || k.sweep_deletions()).await;
    tracing::warn!(seconds, "test hook: clock advanced");
    protocol::ok(&serde_json::json!({"now_ms": kms.clock.now_ms()}), "test")
}

async fn dispatch(State(kms): State<Arc<Kms>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut operation = String::from("-");
    let mut account = String::from("-");
    let result = handle(&kms, req, &request_id, &mut operation, &mut account).await;
    let (response, error) = match result {
        Ok(body) => (protocol::ok(&body, &request_id), None),
        Err(e) => {
            let name = e.name;
            let msg = e.message.clone();
            (e.into_response(&request_id), Some((name, msg)))
        }
    };
    tracing::info!(
        target: "kms_frontend::request",
        request_id = %request_id,
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

async fn handle(
    kms: &Arc<Kms>,
    req: Request,
    request_id: &str,
    operation: &mut String,
    account: &mut String,
) -> Result<serde_json::Value, KmsError> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return Err(KmsError::client("UnknownOperationException", ""));
    }
    let auth = kms.callers.identify(&parts)?;
    let body = read_body(body, &parts.headers).await?;
    let mut caller = kms
        .callers
        .verify(&parts, &auth, &body, SystemTime::now())?;
    caller.request_id = request_id.to_owned();
    *account = caller.account_id.clone();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .ok_or_else(|| KmsError::client("UnknownOperationException", ""))?
        .to_owned();
    *operation = op.clone();
    kms.handle(op, caller, body).await
}

async fn read_body(body: Body, headers: &http::HeaderMap) -> Result<Vec<u8>, KmsError> {
    let too_big = || {
        KmsError::validation(format!(
            "The request body is larger than {MAX_BODY_BYTES} bytes."
        ))
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES)
    {
        return Err(too_big());
    }
    let collected = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| too_big())?;
    Ok(collected.to_bytes().to_vec())
}
