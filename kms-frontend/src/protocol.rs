//! The AWS JSON 1.1 wire protocol as KMS speaks it: the `X-Amz-Target` operation, request
//! bodies, AWS-shaped errors (`{"__type", "message"}`) and the `ValidationException` message
//! format. The only module that knows the wire format.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use zeroize::{Zeroize, Zeroizing};

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The target prefix of every operation.
pub const TARGET_PREFIX: &str = "TrentService.";

/// An error as KMS answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct KmsError {
    /// `__type`, e.g. `NotFoundException`.
    pub name: &'static str,
    /// `message`.
    pub message: String,
    /// The HTTP status AWS actually uses (400 for client errors, 500 for internal ones).
    pub status: u16,
}

impl KmsError {
    /// A client error (HTTP 400, as AWS answers every modeled client error on the wire).
    pub fn client(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            status: 400,
        }
    }

    /// A server error (HTTP 500).
    pub fn server(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            status: 500,
        }
    }

    /// `ValidationException` with a plain message.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    /// `NotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client("NotFoundException", message)
    }

    /// `KMSInvalidStateException`.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::client("KMSInvalidStateException", message)
    }

    /// `KMSInternalException` (HTTP 500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::server("KMSInternalException", message)
    }

    /// The HTTP response, with `x-amzn-RequestId`.
    pub fn into_response(self, request_id: &str) -> Response {
        let body = serde_json::json!({"__type": self.name, "message": self.message});
        respond(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            body.to_string(),
            request_id,
        )
    }
}

/// A success response. Its body may hold plaintexts and data keys: it is serialized into
/// one buffer of exactly its size (no growth leaving copies behind) that is wiped when the
/// server drops the response's bytes, and every string of `body` is wiped here.
pub fn ok(mut body: serde_json::Value, request_id: &str) -> Response {
    let mut size = ByteCounter(0);
    let mut out = Zeroizing::new(Vec::new());
    let serialized = serde_json::to_writer(&mut size, &body).and_then(|()| {
        out.reserve_exact(size.0);
        serde_json::to_writer(&mut *out, &body)
    });
    wipe_strings(&mut body);
    if serialized.is_err() {
        return KmsError::internal("the response could not be serialized")
            .into_response(request_id);
    }
    respond_bytes(
        StatusCode::OK,
        axum::body::Bytes::from_owner(WipedOnDrop(out)),
        request_id,
    )
}

/// Counts the bytes written to it (to size the response buffer once).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Response bytes that are wiped when the last reference to them is dropped.
struct WipedOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Wipes every string value in `v` (member names are the API's, not secrets).
fn wipe_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_strings),
        serde_json::Value::Object(m) => m.values_mut().for_each(wipe_strings),
        _ => {}
    }
}

fn respond(status: StatusCode, body: String, request_id: &str) -> Response {
    respond_bytes(status, axum::body::Bytes::from(body), request_id)
}

fn respond_bytes(status: StatusCode, body: axum::body::Bytes, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// Parses a request body into the operation's input type. Not JSON, not an object, or a
/// member of the wrong type → `SerializationException`, as AWS answers.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let value: serde_json::Value = if body.is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body).map_err(|_| {
            KmsError::client(
                "SerializationException",
                "The request body is not valid JSON.",
            )
        })?
    };
    if !value.is_object() {
        return Err(KmsError::client(
            "SerializationException",
            "Start of structure or map found where not expected.",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        KmsError::client(
            "SerializationException",
            format!("Unable to parse the request: {e}"),
        )
    })
}

/// Collects model constraint violations and renders AWS's message:
/// `1 validation error detected: Value 'x' at 'keySpec' failed to satisfy constraint: ...`.
#[derive(Debug, Default)]
pub struct Violations(Vec<String>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one violation of `member` (lowerCamelCase path) by `value`.
    pub fn add(&mut self, value: &str, member: &str, constraint: &str) {
        self.0.push(format!(
            "Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// `value` must be one of `allowed`.
    pub fn enum_value(&mut self, value: &str, member: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.add(
                value,
                member,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            );
        }
    }

    /// `value` length within `min..=max` characters.
    pub fn length(&mut self, value: &str, member: &str, min: usize, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.add(
                value,
                member,
                &format!("Member must have length less than or equal to {max}"),
            );
        } else if n < min {
            self.add(
                value,
                member,
                &format!("Member must have length greater than or equal to {min}"),
            );
        }
    }

    /// `value` within `min..=max`.
    pub fn range(&mut self, value: i64, member: &str, min: i64, max: i64) {
        if value > max {
            self.add(
                &value.to_string(),
                member,
                &format!("Member must have value less than or equal to {max}"),
            );
        } else if value < min {
            self.add(
                &value.to_string(),
                member,
                &format!("Member must have value greater than or equal to {min}"),
            );
        }
    }

    /// `ok` tells whether `value` matches the model's regular expression `pattern`.
    pub fn pattern(&mut self, value: &str, member: &str, ok: bool, pattern: &str) {
        if !ok {
            self.add(
                value,
                member,
                &format!("Member must satisfy regular expression pattern: {pattern}"),
            );
        }
    }

    /// `Ok` when there are none; else the `ValidationException`.
    pub fn finish(self) -> Result<(), KmsError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let n = self.0.len();
        let mut msg = format!(
            "{n} validation error{} detected: ",
            if n == 1 { "" } else { "s" }
        );
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                msg.push_str("; ");
            }
            let _ = write!(msg, "{v}");
        }
        Err(KmsError::validation(msg))
    }
}

/// Every character matches the key policy / description character class
/// `[\u0009\u000A\u000D\u0020-\u00FF]`.
pub fn latin1_text(s: &str) -> bool {
    s.chars()
        .all(|c| matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{ff}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages_follow_aws() {
        let mut v = Violations::new();
        v.enum_value("NOPE", "keySpec", &["A", "B"]);
        assert_eq!(
            v.finish().expect_err("invalid").message,
            "1 validation error detected: Value 'NOPE' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [A, B]"
        );
        let mut v = Violations::new();
        v.length(&"d".repeat(8193), "description", 0, 8192);
        v.range(0, "limit", 1, 1000);
        let m = v.finish().expect_err("invalid").message;
        assert!(
            m.starts_with("2 validation errors detected: Value '"),
            "{m}"
        );
        assert!(m.contains("; Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"));
        assert!(Violations::new().finish().is_ok());
    }

    #[test]
    fn bodies() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "PascalCase")]
        struct In {
            #[allow(dead_code)]
            description: Option<String>,
        }
        assert!(parse::<In>(b"{}").is_ok());
        assert!(parse::<In>(b"").is_ok());
        assert_eq!(
            parse::<In>(b"nope").expect_err("bad").name,
            "SerializationException"
        );
        assert_eq!(
            parse::<In>(b"[1]").expect_err("bad").name,
            "SerializationException"
        );
        assert_eq!(
            parse::<In>(br#"{"Description": 5}"#).expect_err("bad").name,
            "SerializationException"
        );
    }
}
