//! Signing of outgoing requests, delegated to AWS's own `aws-sigv4` crate.
//!
//! Using AWS's implementation here (and a hand-written one for verification) means the test
//! suite pits two independent implementations against each other.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Uri};

use crate::credential::Credential;

/// What to sign a request with.
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    /// The credential (access key id and secret).
    pub credential: &'a Credential,
    /// The region of the credential scope.
    pub region: &'a str,
    /// The service of the credential scope (e.g. `kms-xks-proxy`).
    pub service: &'a str,
    /// The signing time (becomes `X-Amz-Date`).
    pub time: SystemTime,
}

/// A request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The request has neither a `Host` header nor an authority in its URI.
    #[error("the request has neither a Host header nor an authority in its URI")]
    MissingHost,

    /// A header value is not visible ASCII, which SigV4 cannot sign.
    #[error("the value of header `{0}` is not visible ASCII and cannot be signed")]
    InvalidHeaderValue(String),

    /// aws-sigv4 refused the request or the parameters.
    #[error("aws-sigv4 could not sign the request: {0}")]
    Signer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn signer_error(error: impl std::error::Error + Send + Sync + 'static) -> SignError {
    SignError::Signer(Box::new(error))
}

/// The `Host` header a client sends for `uri`: the authority without user information and
/// without the scheme's default port.
fn host_for(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    Some(match uri.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    })
}

/// Signs `parts` + `body` in place with AWS SigV4 (`Authorization` header).
///
/// Adds `X-Amz-Date` and `Authorization` (replacing earlier ones, so re-signing works), and
/// never `X-Amz-Security-Token`. Without a `Host` header, one is inserted from the URI
/// authority (default port omitted), so the request is signed as it will be sent. Signed are
/// `host`, `x-amz-date` and every other header present, except the few aws-sigv4 leaves out
/// by default (`authorization`, `user-agent`, `x-amzn-trace-id`, `transfer-encoding`). The
/// path is normalised and encoded as for all non-S3 services.
///
/// # Errors
///
/// [`SignError::MissingHost`] without a Host header or URI authority,
/// [`SignError::InvalidHeaderValue`] for a header value that is not visible ASCII, and
/// [`SignError::Signer`] when aws-sigv4 fails.
pub fn sign(parts: &mut Parts, body: &[u8], params: &SigningParams<'_>) -> Result<(), SignError> {
    parts.headers.remove(AUTHORIZATION);
    parts.headers.remove("x-amz-date");
    if !parts.headers.contains_key(HOST) {
        let host = host_for(&parts.uri).ok_or(SignError::MissingHost)?;
        let host = HeaderValue::try_from(host).map_err(|_| SignError::MissingHost)?;
        parts.headers.insert(HOST, host);
    }

    let identity: Identity = Credentials::new(
        params.credential.access_key_id(),
        params.credential.secret().expose(),
        None,
        None,
        "sigv4-auth",
    )
    .into();
    let signing_params: http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(params.region)
        .name(params.service)
        .time(params.time)
        .settings(SigningSettings::default())
        .build()
        .map_err(signer_error)?
        .into();

    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            value
                .to_str()
                .map(|value| (name.as_str(), value))
                .map_err(|_| SignError::InvalidHeaderValue(name.as_str().to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let signable = SignableRequest::new(
        parts.method.as_str(),
        parts.uri.to_string(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(signer_error)?;
    let (instructions, _signature) = http_request::sign(signable, &signing_params)
        .map_err(signer_error)?
        .into_parts();

    let (new_headers, _query_params) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(signer_error)?;
        let mut value = HeaderValue::from_str(header.value()).map_err(signer_error)?;
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        parts.headers.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_for_omits_default_ports_and_user_info() {
        let cases = [
            ("https://xks.example.com/x", Some("xks.example.com")),
            ("https://xks.example.com:443/x", Some("xks.example.com")),
            ("http://xks.example.com:80/x", Some("xks.example.com")),
            (
                "https://xks.example.com:8443/x",
                Some("xks.example.com:8443"),
            ),
            ("http://127.0.0.1:443/x", Some("127.0.0.1:443")),
            ("https://user:pw@xks.example.com/x", Some("xks.example.com")),
            ("https://[::1]:8443/x", Some("[::1]:8443")),
            ("/x", None),
        ];
        for (uri, expected) in cases {
            let uri: Uri = uri.parse().expect("uri");
            assert_eq!(host_for(&uri).as_deref(), expected, "{uri}");
        }
    }
}
