//! Error names of the XKS Proxy API, their HTTP statuses, and the error body.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::MAX_ERROR_MESSAGE_CHARS;

/// Every error name the XKS Proxy API v1 defines.
///
/// Complete by definition of the v1 spec, so not `#[non_exhaustive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorName {
    /// 400: one or more inputs are invalid.
    ValidationException,
    /// 400: the external key or key store is disabled.
    InvalidStateException,
    /// 400: ciphertext, IV, AAD, tag or metadata is corrupted or invalid.
    InvalidCiphertextException,
    /// 400: the key does not allow the operation.
    InvalidKeyUsageException,
    /// 401: the SigV4 signature is missing or invalid.
    AuthenticationFailedException,
    /// 403: denied by secondary authorization.
    AccessDeniedException,
    /// 404: the external key does not exist.
    KeyNotFoundException,
    /// 404: the URI path is not an XKS API path of a configured key store.
    InvalidUriPathException,
    /// 429: the proxy is overloaded or the caller is over its quota.
    ThrottlingException,
    /// 501: an operation or parameter value beyond what this proxy implements.
    UnsupportedOperationException,
    /// 503: a dependency (the key manager) did not answer in time.
    DependencyTimeoutException,
    /// 500: any other failure on the proxy side.
    InternalException,
}

impl ErrorName {
    /// All error names, in the order the spec lists them.
    pub const ALL: [ErrorName; 12] = [
        Self::ValidationException,
        Self::InvalidStateException,
        Self::InvalidCiphertextException,
        Self::InvalidKeyUsageException,
        Self::AuthenticationFailedException,
        Self::AccessDeniedException,
        Self::KeyNotFoundException,
        Self::InvalidUriPathException,
        Self::ThrottlingException,
        Self::UnsupportedOperationException,
        Self::DependencyTimeoutException,
        Self::InternalException,
    ];

    /// The HTTP status the spec assigns to this error.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::ValidationException
            | Self::InvalidStateException
            | Self::InvalidCiphertextException
            | Self::InvalidKeyUsageException => 400,
            Self::AuthenticationFailedException => 401,
            Self::AccessDeniedException => 403,
            Self::KeyNotFoundException | Self::InvalidUriPathException => 404,
            Self::ThrottlingException => 429,
            Self::InternalException => 500,
            Self::UnsupportedOperationException => 501,
            Self::DependencyTimeoutException => 503,
        }
    }

    /// The name as it appears in `errorName`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationException => "ValidationException",
            Self::InvalidStateException => "InvalidStateException",
            Self::InvalidCiphertextException => "InvalidCiphertextException",
            Self::InvalidKeyUsageException => "InvalidKeyUsageException",
            Self::AuthenticationFailedException => "AuthenticationFailedException",
            Self::AccessDeniedException => "AccessDeniedException",
            Self::KeyNotFoundException => "KeyNotFoundException",
            Self::InvalidUriPathException => "InvalidUriPathException",
            Self::ThrottlingException => "ThrottlingException",
            Self::UnsupportedOperationException => "UnsupportedOperationException",
            Self::DependencyTimeoutException => "DependencyTimeoutException",
            Self::InternalException => "InternalException",
        }
    }

    /// Parses an `errorName` value; `None` for a name the spec does not define.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"errorName": ..., "errorMessage": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error name (a proxy may, wrongly, send one the spec does not define).
    pub error_name: String,
    /// Optional diagnostic text, fewer than 512 printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// An error as the proxy answers it: a name plus a diagnostic message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct XksError {
    /// What went wrong, in the spec's terms.
    pub name: ErrorName,
    /// Why, for the operator reading CloudWatch; already sanitized.
    pub message: String,
}

impl XksError {
    /// An error with a message; the message is sanitized to the spec's alphabet and length.
    pub fn new(name: ErrorName, message: impl AsRef<str>) -> Self {
        Self {
            name,
            message: sanitize_message(message.as_ref()),
        }
    }

    /// The body to send.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error_name: self.name.as_str().to_owned(),
            error_message: (!self.message.is_empty()).then(|| self.message.clone()),
        }
    }
}

/// Makes `message` a valid `errorMessage`: bytes 0x20..=0x7e only (others become `?`) and
/// at most [`MAX_ERROR_MESSAGE_CHARS`] characters.
pub fn sanitize_message(message: &str) -> String {
    message
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(MAX_ERROR_MESSAGE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_spec_table() {
        let table = [
            ("ValidationException", 400),
            ("InvalidStateException", 400),
            ("InvalidCiphertextException", 400),
            ("InvalidKeyUsageException", 400),
            ("AuthenticationFailedException", 401),
            ("AccessDeniedException", 403),
            ("KeyNotFoundException", 404),
            ("InvalidUriPathException", 404),
            ("ThrottlingException", 429),
            ("UnsupportedOperationException", 501),
            ("DependencyTimeoutException", 503),
            ("InternalException", 500),
        ];
        assert_eq!(table.len(), ErrorName::ALL.len());
        for (name, status) in table {
            let parsed = ErrorName::parse(name).expect(name);
            assert_eq!(parsed.as_str(), name);
            assert_eq!(parsed.http_status(), status, "{name}");
        }
        assert_eq!(ErrorName::parse("NoSuchException"), None);
    }

    #[test]
    fn messages_are_printable_ascii_and_short() {
        let long = "é\n".repeat(600);
        let m = sanitize_message(&long);
        assert_eq!(m.len(), MAX_ERROR_MESSAGE_CHARS);
        assert!(m.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        let e = XksError::new(ErrorName::KeyNotFoundException, "key\tx");
        assert_eq!(e.message, "key?x");
        let body = serde_json::to_string(&e.to_body()).expect("serializes");
        assert_eq!(
            body,
            r#"{"errorName":"KeyNotFoundException","errorMessage":"key?x"}"#
        );
    }
}
