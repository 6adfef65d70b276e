//! Verification of incoming SigV4-signed requests (hand-written; independent of aws-sigv4).
//!
//! A server's flow:
//! 1. [`Authorization::parse`] the headers (no body needed);
//! 2. look the credential up by [`Authorization::access_key_id`] (reject unknown ids early);
//! 3. buffer the body, then [`Verifier::verify`] the request.

use std::time::{Duration, SystemTime};

use hmac::Mac;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::amz_date;
use crate::authorization::{ALGORITHM, Authorization, SCOPE_TERMINATOR};
use crate::canonical::{hex32, put_canonical_request, sha256_hex};
use crate::credential::{Credential, hmac_state};
use crate::error::VerifyError;

/// The default tolerance between a request's `X-Amz-Date` and the server's clock: 5 minutes,
/// as AWS services use.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The name of the date header every request must carry and sign.
const X_AMZ_DATE: &str = "x-amz-date";

/// What a [`Verifier`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The service name the credential scope must carry (e.g. `kms-xks-proxy`, `kms`).
    pub service: String,
    /// The regions the credential scope may carry; `None` accepts any region.
    pub accepted_regions: Option<Vec<String>>,
    /// The largest accepted distance between `X-Amz-Date` and the server's clock, either way.
    pub max_clock_skew: Duration,
}

impl VerifierConfig {
    /// A configuration for `service`, accepting any region, with
    /// [`DEFAULT_MAX_CLOCK_SKEW`].
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            accepted_regions: None,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// Verifies SigV4 signatures of incoming requests for one service.
#[derive(Debug, Clone)]
pub struct Verifier {
    config: VerifierConfig,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The access key id that signed the request.
    pub access_key_id: String,
    /// The region of the credential scope.
    pub region: String,
    /// The request's `X-Amz-Date`.
    pub date_time: SystemTime,
}

impl Verifier {
    /// A verifier with `config`.
    pub fn new(config: VerifierConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies that `parts` + `body` carry a valid signature by `credential`, as `auth`
    /// (parsed from `parts.headers`) describes, at time `now`.
    ///
    /// Checks, in order, each failure with its own [`VerifyError`]: the credential is the one
    /// the header names; the scope's service is the configured one and its region is
    /// accepted; `X-Amz-Date` is present (once), well-formed, on the scope's date, and within
    /// `max_clock_skew` of `now`; `host` and `x-amz-date` are signed; every signed header is
    /// present (`host` may come from the URI authority, as under HTTP/2); finally the
    /// signature, compared in constant time.
    ///
    /// # Errors
    ///
    /// The [`VerifyError`] of the first check that fails.
    pub fn verify(
        &self,
        parts: &Parts,
        auth: &Authorization,
        credential: &Credential,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        if credential.access_key_id() != auth.access_key_id() {
            return Err(VerifyError::AccessKeyIdMismatch);
        }
        if auth.service() != self.config.service {
            return Err(VerifyError::WrongService {
                found: auth.service().to_owned(),
                expected: self.config.service.clone(),
            });
        }
        if let Some(regions) = &self.config.accepted_regions
            && !regions.iter().any(|region| region == auth.region())
        {
            return Err(VerifyError::RegionNotAccepted(auth.region().to_owned()));
        }

        let mut dates = parts.headers.get_all(X_AMZ_DATE).iter();
        let amz_date = dates.next().ok_or(VerifyError::MissingDate)?.as_bytes();
        if dates.next().is_some() {
            return Err(VerifyError::MalformedDate(
                "more than one X-Amz-Date header",
            ));
        }
        let date_time = amz_date::parse(amz_date)?;
        // `parse` accepted exactly 16 ASCII bytes.
        let header_date = &amz_date[..8];
        if header_date != auth.date().as_bytes() {
            return Err(VerifyError::DateMismatch {
                header: String::from_utf8_lossy(header_date).into_owned(),
                scope: auth.date().to_owned(),
            });
        }
        let (skew, in_future) = match date_time.duration_since(now) {
            Ok(ahead) => (ahead, true),
            Err(behind) => (behind.duration(), false),
        };
        if skew > self.config.max_clock_skew {
            return Err(VerifyError::ClockSkew {
                skew,
                in_future,
                max: self.config.max_clock_skew,
            });
        }

        for required in ["host", X_AMZ_DATE] {
            if !auth.is_signed(required) {
                return Err(VerifyError::RequiredHeaderNotSigned(required));
            }
        }

        let mut canonical_request = Sha256::new();
        put_canonical_request(&mut canonical_request, parts, auth, &sha256_hex(body))?;
        let canonical_request_hash = hex32(&canonical_request.finalize().into());

        let key = credential.signing_key(&auth.date_bytes(), auth.region(), auth.service());
        let mut mac = hmac_state(&*key);
        for piece in [
            ALGORITHM.as_bytes(),
            b"\n",
            amz_date,
            b"\n",
            auth.date().as_bytes(),
            b"/",
            auth.region().as_bytes(),
            b"/",
            auth.service().as_bytes(),
            b"/",
            SCOPE_TERMINATOR.as_bytes(),
            b"\n",
            &canonical_request_hash,
        ] {
            mac.update(piece);
        }
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        if bool::from(expected.as_slice().ct_eq(auth.signature().as_slice())) {
            Ok(Verified {
                access_key_id: auth.access_key_id().to_owned(),
                region: auth.region().to_owned(),
                date_time,
            })
        } else {
            Err(VerifyError::SignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests;
