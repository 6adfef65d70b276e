//! AWS Signature Version 4 (SigV4): verification of incoming requests and signing of
//! outgoing ones.
//!
//! What lives here:
//! - [`credential`]: [`Credential`] (access key id + [`SigningSecret`]) with a small cache of
//!   derived signing keys;
//! - [`authorization`]: [`Authorization`], the parsed `Authorization` header (headers only, so
//!   unknown access key ids are rejected before any body is read);
//! - [`verify`]: [`Verifier`] (configured by [`VerifierConfig`]) checks a request and returns
//!   [`Verified`];
//! - [`error`]: [`VerifyError`], one variant per check;
//! - [`sign`](mod@sign): [`sign()`](fn@sign) signs an outgoing request with AWS's `aws-sigv4`
//!   crate, given [`SigningParams`].
//!
//! Verification is hand-written (canonical request for non-S3 services, constant-time
//! comparison, streaming into SHA-256 without allocating in the common case); signing uses
//! aws-sigv4. The tests sign with aws-sigv4, botocore and curl and verify with this crate.
//!
//! Typical server use:
//!
//! ```
//! # use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use sigv4_auth::{Authorization, Credential, SigningSecret, Verifier, VerifierConfig};
//!
//! let credential = Credential::new(
//!     "AKIDEXAMPLE",
//!     SigningSecret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
//! );
//! let request = http::Request::get("/")
//!     .header("host", "example.amazonaws.com")
//!     .header("x-amz-date", "20150830T123600Z")
//!     .header(
//!         "authorization",
//!         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
//!          SignedHeaders=host;x-amz-date, \
//!          Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
//!     )
//!     .body(Vec::new())?;
//! let (parts, body) = request.into_parts();
//!
//! // 1. Headers only: find the credential (reject unknown ids before reading the body).
//! let auth = Authorization::parse(&parts.headers)?;
//! assert_eq!(auth.access_key_id(), credential.access_key_id());
//! // 2. With the body: verify.
//! let verifier = Verifier::new(VerifierConfig::new("service"));
//! let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
//! let verified = verifier.verify(&parts, &auth, &credential, &body, now)?;
//! assert_eq!(verified.region, "us-east-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: this crate does no I/O. Secrets live in zeroizing buffers and
//! appear in no `Debug` output or error message, nor does an expected signature.

mod amz_date;
pub mod authorization;
mod canonical;
pub mod credential;
pub mod error;
pub mod sign;
pub mod verify;

pub use authorization::Authorization;
pub use credential::{Credential, SigningSecret};
pub use error::VerifyError;
pub use sign::{SignError, SigningParams, sign};
pub use verify::{DEFAULT_MAX_CLOCK_SKEW, Verified, Verifier, VerifierConfig};
