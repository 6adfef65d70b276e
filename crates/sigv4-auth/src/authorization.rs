//! The `Authorization` header of a SigV4-signed request, parsed without touching the body.
//!
//! ```text
//! Authorization: AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request,
//!                SignedHeaders=host;x-amz-date, Signature=<64 lower-case hex digits>
//! ```
//!
//! Parsing is cheap and needs only the headers, so a server can look up the credential (and
//! reject an unknown access key id) before it buffers a request body.

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::VerifyError;

/// The only algorithm accepted: `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credential scope's terminator.
pub(crate) const SCOPE_TERMINATOR: &str = "aws4_request";

/// A byte range of [`Authorization::value`].
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

/// A parsed `AWS4-HMAC-SHA256` `Authorization` header.
///
/// Parsing checks the grammar only: it establishes which credential, scope and headers the
/// client claims, not that the signature is right (that is
/// [`Verifier::verify`](crate::Verifier::verify)'s job). `Debug` leaves the signature out.
#[derive(Clone)]
pub struct Authorization {
    /// The header value, which the spans below index.
    value: Box<str>,
    access_key_id: Span,
    date: Span,
    region: Span,
    service: Span,
    signed_headers: Span,
    signature: [u8; 32],
}

fn malformed(reason: &'static str) -> VerifyError {
    VerifyError::MalformedAuthorization(reason)
}

/// The span of `inner` (a sub-slice of `outer`) within `outer`.
fn span_of(outer: &str, inner: &str) -> Span {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    Span {
        start,
        end: start + inner.len(),
    }
}

impl Authorization {
    /// Parses the request's single `Authorization` header.
    ///
    /// Tolerates any number of spaces around the commas between components (signers differ:
    /// botocore and curl write `", "`), and rejects everything else that is not the SigV4
    /// grammar: another algorithm, a missing, duplicated or unknown component, a credential
    /// scope that is not `AKID/YYYYMMDD/REGION/SERVICE/aws4_request`, signed header names that
    /// are not lower-case, sorted and unique, and a signature that is not 64 lower-case hex
    /// digits.
    ///
    /// # Errors
    ///
    /// [`VerifyError::MissingAuthorization`], [`VerifyError::MultipleAuthorization`],
    /// [`VerifyError::UnsupportedAlgorithm`] or [`VerifyError::MalformedAuthorization`].
    pub fn parse(headers: &HeaderMap) -> Result<Self, VerifyError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let value = values.next().ok_or(VerifyError::MissingAuthorization)?;
        if values.next().is_some() {
            return Err(VerifyError::MultipleAuthorization);
        }
        let value = value
            .to_str()
            .map_err(|_| malformed("the header contains characters other than visible ASCII"))?;
        Self::parse_value(value)
    }

    /// Parses an `Authorization` header value (as [`Authorization::parse`] does).
    ///
    /// # Errors
    ///
    /// [`VerifyError::UnsupportedAlgorithm`] or [`VerifyError::MalformedAuthorization`].
    pub fn parse_value(value: &str) -> Result<Self, VerifyError> {
        let (algorithm, components) = match value.split_once(' ') {
            Some(split) => split,
            None if value == ALGORITHM => {
                return Err(malformed("no Credential, SignedHeaders and Signature"));
            }
            None => return Err(VerifyError::UnsupportedAlgorithm),
        };
        if algorithm != ALGORITHM {
            return Err(VerifyError::UnsupportedAlgorithm);
        }

        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for component in components.split(',') {
            let component = component.trim_matches(' ');
            if component.is_empty() {
                return Err(malformed("empty component"));
            }
            let Some((name, component_value)) = component.split_once('=') else {
                return Err(malformed("component without `=`"));
            };
            let (slot, duplicate) = match name {
                "Credential" => (&mut credential, "duplicate Credential component"),
                "SignedHeaders" => (&mut signed_headers, "duplicate SignedHeaders component"),
                "Signature" => (&mut signature, "duplicate Signature component"),
                _ => {
                    return Err(malformed(
                        "unknown component (expected Credential, SignedHeaders and Signature)",
                    ));
                }
            };
            if slot.replace(component_value).is_some() {
                return Err(malformed(duplicate));
            }
        }
        let credential = credential.ok_or_else(|| malformed("no Credential component"))?;
        let signed_headers =
            signed_headers.ok_or_else(|| malformed("no SignedHeaders component"))?;
        let signature = signature.ok_or_else(|| malformed("no Signature component"))?;

        let mut scope = credential.split('/');
        let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(malformed(
                "Credential is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
            ));
        };
        if access_key_id.is_empty() {
            return Err(malformed("empty access key id in Credential"));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("the credential scope's date is not YYYYMMDD"));
        }
        if region.is_empty() {
            return Err(malformed("empty region in the credential scope"));
        }
        if service.is_empty() {
            return Err(malformed("empty service in the credential scope"));
        }
        if terminator != SCOPE_TERMINATOR {
            return Err(malformed(
                "the credential scope does not end with aws4_request",
            ));
        }

        check_signed_headers(signed_headers)?;
        let signature = decode_signature(signature)?;

        Ok(Self {
            access_key_id: span_of(value, access_key_id),
            date: span_of(value, date),
            region: span_of(value, region),
            service: span_of(value, service),
            signed_headers: span_of(value, signed_headers),
            signature,
            value: value.into(),
        })
    }

    fn get(&self, span: Span) -> &str {
        self.value.get(span.start..span.end).unwrap_or_default()
    }

    /// The access key id the request claims to be signed with.
    pub fn access_key_id(&self) -> &str {
        self.get(self.access_key_id)
    }

    /// The credential scope's date, `YYYYMMDD` (eight ASCII digits).
    pub fn date(&self) -> &str {
        self.get(self.date)
    }

    /// The credential scope's region.
    pub fn region(&self) -> &str {
        self.get(self.region)
    }

    /// The credential scope's service.
    pub fn service(&self) -> &str {
        self.get(self.service)
    }

    /// The `SignedHeaders` value as sent: lower-case names, sorted, separated by `;` (for
    /// example `host;x-amz-date`).
    pub fn signed_headers(&self) -> &str {
        self.get(self.signed_headers)
    }

    /// The signed header names, in order.
    pub fn signed_header_names(&self) -> std::str::Split<'_, char> {
        self.signed_headers().split(';')
    }

    /// Whether `name` (lower-case) is among the signed headers.
    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_header_names().any(|signed| signed == name)
    }

    /// The scope's date as bytes (the signing-key cache's key).
    pub(crate) fn date_bytes(&self) -> [u8; 8] {
        let mut date = [0u8; 8];
        let bytes = self.date().as_bytes();
        if bytes.len() == 8 {
            date.copy_from_slice(bytes);
        }
        date
    }

    /// The decoded signature the client sent.
    pub(crate) fn signature(&self) -> &[u8; 32] {
        &self.signature
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("access_key_id", &self.access_key_id())
            .field("date", &self.date())
            .field("region", &self.region())
            .field("service", &self.service())
            .field("signed_headers", &self.signed_headers())
            .finish_non_exhaustive()
    }
}

/// Whether `b` may appear in a signed header name: an RFC 9110 `tchar` other than an
/// upper-case letter.
fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn check_signed_headers(signed_headers: &str) -> Result<(), VerifyError> {
    if signed_headers.is_empty() {
        return Err(malformed("empty SignedHeaders"));
    }
    let mut previous: Option<&str> = None;
    for name in signed_headers.split(';') {
        if name.is_empty() {
            return Err(malformed("empty name in SignedHeaders"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(malformed("SignedHeaders names must be lower-case"));
        }
        if !name.bytes().all(is_lower_tchar) {
            return Err(malformed("invalid character in a SignedHeaders name"));
        }
        if let Some(previous) = previous {
            if name == previous {
                return Err(malformed("duplicate name in SignedHeaders"));
            }
            if name < previous {
                return Err(malformed("SignedHeaders names are not sorted"));
            }
        }
        previous = Some(name);
    }
    Ok(())
}

fn decode_signature(signature: &str) -> Result<[u8; 32], VerifyError> {
    const REASON: &str = "Signature is not 64 lower-case hex digits";
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let bytes = signature.as_bytes();
    if bytes.len() != 64 {
        return Err(malformed(REASON));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *byte = high << 4 | low,
            _ => return Err(malformed(REASON)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SIGNATURE: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn header(value: &str) -> String {
        value.replace("{SIG}", SIGNATURE)
    }

    #[test]
    fn parses_a_botocore_style_header() {
        let value = header(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}",
        );
        let auth = Authorization::parse_value(&value).expect("parses");
        assert_eq!(auth.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(auth.date(), "20150830");
        assert_eq!(auth.region(), "us-east-1");
        assert_eq!(auth.service(), "service");
        assert_eq!(auth.signed_headers(), "host;x-amz-date");
        assert_eq!(
            auth.signed_header_names().collect::<Vec<_>>(),
            ["host", "x-amz-date"]
        );
        assert!(auth.is_signed("host"));
        assert!(!auth.is_signed("content-type"));
        assert_eq!(hex::encode(auth.signature()), SIGNATURE);
        assert_eq!(&auth.date_bytes(), b"20150830");
    }

    #[test]
    fn parses_from_a_header_map() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Authorization::parse(&headers).expect_err("no header"),
            VerifyError::MissingAuthorization
        );
        let value = header(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,SignedHeaders=host;x-amz-date,Signature={SIG}",
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&value).expect("header value"),
        );
        let auth = Authorization::parse(&headers).expect("parses");
        assert_eq!(auth.access_key_id(), "AKIDEXAMPLE");
        headers.append(
            AUTHORIZATION,
            HeaderValue::from_str(&value).expect("header value"),
        );
        assert_eq!(
            Authorization::parse(&headers).expect_err("two headers"),
            VerifyError::MultipleAuthorization
        );
    }

    #[test]
    fn tolerates_spacing_variants() {
        for value in [
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}",
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request,SignedHeaders=host;x-amz-date,Signature={SIG}",
            "AWS4-HMAC-SHA256  Credential=A/20150830/r/s/aws4_request ,  SignedHeaders=host;x-amz-date ,Signature={SIG}",
            "AWS4-HMAC-SHA256 Signature={SIG}, Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date",
        ] {
            let auth = Authorization::parse_value(&header(value)).expect(value);
            assert_eq!(auth.access_key_id(), "A", "{value}");
            assert_eq!(auth.region(), "r", "{value}");
            assert_eq!(auth.service(), "s", "{value}");
            assert_eq!(auth.signed_headers(), "host;x-amz-date", "{value}");
        }
    }

    #[test]
    fn rejects_malformed_headers() {
        let upper_signature = SIGNATURE.to_ascii_uppercase();
        let short_signature = &SIGNATURE[..62];
        let cases: Vec<(String, VerifyError)> = vec![
            ("".into(), VerifyError::UnsupportedAlgorithm),
            ("AWS4-HMAC-SHA256".into(), malformed("no Credential, SignedHeaders and Signature")),
            (
                "AWS4-HMAC-SHA1 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, Signature={SIG}".into(),
                VerifyError::UnsupportedAlgorithm,
            ),
            (
                "aws4-hmac-sha256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, Signature={SIG}".into(),
                VerifyError::UnsupportedAlgorithm,
            ),
            ("Basic QUtJRDpzZWNyZXQ=".into(), VerifyError::UnsupportedAlgorithm),
            (
                "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("no Credential component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, Signature={SIG}".into(),
                malformed("no SignedHeaders component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date".into(),
                malformed("no Signature component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("duplicate Credential component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, SignedHeaders=host, Signature={SIG}".into(),
                malformed("duplicate SignedHeaders component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}, Signature={SIG}".into(),
                malformed("duplicate Signature component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}, Extra=1".into(),
                malformed("unknown component (expected Credential, SignedHeaders and Signature)"),
            ),
            (
                "AWS4-HMAC-SHA256 credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("unknown component (expected Credential, SignedHeaders and Signature)"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG},".into(),
                malformed("empty component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("no SignedHeaders component"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("component without `=`"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("Credential is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request/x, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("Credential is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_requests, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("the credential scope does not end with aws4_request"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws5_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("the credential scope does not end with aws4_request"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("empty access key id in Credential"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/2015083/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("the credential scope's date is not YYYYMMDD"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/2015-08-3/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("the credential scope's date is not YYYYMMDD"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830//s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("empty region in the credential scope"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r//aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}".into(),
                malformed("empty service in the credential scope"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=, Signature={SIG}".into(),
                malformed("empty SignedHeaders"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;;x-amz-date, Signature={SIG}".into(),
                malformed("empty name in SignedHeaders"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=Host;x-amz-date, Signature={SIG}".into(),
                malformed("SignedHeaders names must be lower-case"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=x-amz-date;host, Signature={SIG}".into(),
                malformed("SignedHeaders names are not sorted"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;host;x-amz-date, Signature={SIG}".into(),
                malformed("duplicate name in SignedHeaders"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x:amz-date, Signature={SIG}".into(),
                malformed("invalid character in a SignedHeaders name"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={upper_signature}"),
                malformed("Signature is not 64 lower-case hex digits"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={short_signature}"),
                malformed("Signature is not 64 lower-case hex digits"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}00".into(),
                malformed("Signature is not 64 lower-case hex digits"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={}g", &SIGNATURE[..63]),
                malformed("Signature is not 64 lower-case hex digits"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature=".into(),
                malformed("Signature is not 64 lower-case hex digits"),
            ),
        ];
        for (value, expected) in cases {
            let value = header(&value);
            let error = Authorization::parse_value(&value).expect_err(&value);
            assert_eq!(error, expected, "{value}");
            assert!(!error.to_string().contains(SIGNATURE), "{error}");
        }
    }

    #[test]
    fn rejects_non_ascii_header_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(
                b"AWS4-HMAC-SHA256 Credential=\xc3\xa9/20150830/r/s/aws4_request",
            )
            .expect("header value"),
        );
        assert!(matches!(
            Authorization::parse(&headers),
            Err(VerifyError::MalformedAuthorization(_))
        ));
    }

    #[test]
    fn debug_leaves_the_signature_out() {
        let auth = Authorization::parse_value(&header(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}",
        ))
        .expect("parses");
        let debug = format!("{auth:?}");
        assert!(debug.contains("AKIDEXAMPLE"), "{debug}");
        assert!(!debug.contains(SIGNATURE), "{debug}");
    }
}
