//! Why a request was not authenticated.
//!
//! Every check of [`Authorization::parse`](crate::Authorization::parse) and
//! [`Verifier::verify`](crate::Verifier::verify) has its own variant, so a server can log the
//! precise reason while answering the client with a generic authentication failure. No
//! message contains the secret, a derived key or the expected signature.

use std::time::Duration;

/// A request failed SigV4 authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// There is no `Authorization` header.
    #[error("the request has no Authorization header")]
    MissingAuthorization,

    /// There is more than one `Authorization` header.
    #[error("the request has more than one Authorization header")]
    MultipleAuthorization,

    /// The algorithm is not `AWS4-HMAC-SHA256`.
    #[error("unsupported Authorization scheme: only AWS4-HMAC-SHA256 is accepted")]
    UnsupportedAlgorithm,

    /// The `Authorization` header does not follow the SigV4 grammar; the text says where.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),

    /// The credential handed to the verifier is not the one the header names.
    #[error(
        "the access key id in the Authorization header does not match the credential used to verify it"
    )]
    AccessKeyIdMismatch,

    /// The credential scope names another service.
    #[error("the credential scope's service `{found}` is not `{expected}`")]
    WrongService {
        /// The service in the credential scope.
        found: String,
        /// The service this verifier accepts.
        expected: String,
    },

    /// The credential scope names a region this verifier does not accept.
    #[error("the credential scope's region `{0}` is not accepted")]
    RegionNotAccepted(String),

    /// There is no `X-Amz-Date` header.
    #[error("the request has no X-Amz-Date header")]
    MissingDate,

    /// The `X-Amz-Date` header is not a `YYYYMMDD'T'HHMMSS'Z'` time; the text says why.
    #[error("malformed X-Amz-Date header: {0}")]
    MalformedDate(&'static str),

    /// The `X-Amz-Date` header's date is not the credential scope's date.
    #[error("the X-Amz-Date date {header} is not the credential scope's date {scope}")]
    DateMismatch {
        /// The `YYYYMMDD` part of `X-Amz-Date`.
        header: String,
        /// The `YYYYMMDD` of the credential scope.
        scope: String,
    },

    /// The request's time is too far from the server's clock.
    #[error(
        "the request time is {} s {} the server clock; at most {} s is allowed",
        skew.as_secs(),
        if *in_future { "ahead of" } else { "behind" },
        max.as_secs()
    )]
    ClockSkew {
        /// How far the request time is from the server's clock.
        skew: Duration,
        /// Whether the request time is ahead of (`true`) or behind (`false`) the clock.
        in_future: bool,
        /// The configured maximum.
        max: Duration,
    },

    /// `host` or `x-amz-date` is not among the signed headers.
    #[error("the `{0}` header must be signed")]
    RequiredHeaderNotSigned(&'static str),

    /// A signed header is absent from the request.
    #[error("the signed header `{0}` is absent from the request")]
    MissingSignedHeader(String),

    /// The signature does not match the request.
    #[error("the signature does not match the request")]
    SignatureMismatch,
}
