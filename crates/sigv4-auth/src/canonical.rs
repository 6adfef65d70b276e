//! The SigV4 canonical request (non-S3 flavour), written straight into a hash.
//!
//! ```text
//! METHOD\n
//! canonical URI\n          path as received, dot segments and empty segments removed, URI-encoded again
//! canonical query\n        parameters decoded, AWS-encoded, sorted, joined with '&'
//! name:value\n ...         one line per signed header, in SignedHeaders order
//! \n
//! signed;header;names\n
//! hex(SHA-256(body))
//! ```
//!
//! Everything is streamed into a [`Sink`] (the SHA-256 state when verifying), so the common
//! case allocates nothing; only a query string or a path that needs normalising does.

use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::authorization::Authorization;
use crate::error::VerifyError;

/// Where canonical bytes go: a hash state, or a buffer.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of a 32-byte digest.
pub(crate) fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_LOWER[usize::from(byte >> 4)];
        pair[1] = HEX_LOWER[usize::from(byte & 0x0f)];
    }
    out
}

/// Lower-case hex of SHA-256(`data`).
pub(crate) fn sha256_hex(data: &[u8]) -> [u8; 64] {
    hex32(&Sha256::digest(data).into())
}

/// RFC 3986 unreserved characters, which AWS URI encoding leaves alone.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// AWS URI encoding of `bytes`: unreserved characters (and `/` when `keep_slash`) are kept,
/// every other byte becomes `%XX` with upper-case hex.
pub(crate) fn put_uri_encoded<S: Sink>(out: &mut S, bytes: &[u8], keep_slash: bool) {
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            continue;
        }
        if run_start < i {
            out.put(&bytes[run_start..i]);
        }
        out.put(&[
            b'%',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 0x0f)],
        ]);
        run_start = i + 1;
    }
    if run_start < bytes.len() {
        out.put(&bytes[run_start..]);
    }
}

/// Writes the canonical URI for `path` (the path exactly as received, percent-encoded once).
///
/// Like AWS's own signers (aws-sigv4, botocore) and the AWS SigV4 test suite
/// (`get-slashes-normalized`, `get-relative-relative-normalized`, ...): an empty path is `/`;
/// `.` and `..` segments are removed as in RFC 3986 §5.2.4 and so are empty segments
/// (`//a//` → `/a/`), a trailing slash being kept; then the path is URI-encoded again, `/`
/// separators kept (so `%` becomes `%25`).
pub(crate) fn put_canonical_uri<S: Sink>(out: &mut S, path: &str) {
    if path.is_empty() {
        out.put(b"/");
        return;
    }
    let needs_normalising = !path.starts_with('/')
        || path.contains("//")
        || (path.contains("/.") && path.split('/').any(|s| s == "." || s == ".."));
    if !needs_normalising {
        put_uri_encoded(out, path.as_bytes(), true);
        return;
    }

    let mut segments: Vec<&str> = Vec::with_capacity(path.len() / 2 + 1);
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    out.put(b"/");
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.put(b"/");
        }
        put_uri_encoded(out, segment.as_bytes(), false);
    }
    let ends_with_slash = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|suffix| path.ends_with(suffix));
    if ends_with_slash && !segments.is_empty() {
        out.put(b"/");
    }
}

/// Percent-decodes a query component the way `application/x-www-form-urlencoded` does (as
/// aws-sigv4 does): `+` is a space, `%XX` is a byte, a `%` not followed by two hex digits is
/// kept literally.
fn query_decode(component: &str) -> Vec<u8> {
    fn hex_value(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = component.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(high), Some(low)) = (high, low) {
                    decoded.push(high << 4 | low);
                    i += 2;
                } else {
                    decoded.push(b'%');
                }
            }
            b => decoded.push(b),
        }
        i += 1;
    }
    decoded
}

fn query_encode(component: &str) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(component.len());
    put_uri_encoded(&mut encoded, &query_decode(component), false);
    encoded
}

/// Writes the canonical query string for `query` (the raw query, without `?`).
///
/// Parameters are split on `&` (empty ones skipped); a parameter without `=` has an empty
/// value; names and values are decoded, AWS-encoded, and sorted by encoded name, then encoded
/// value; each is written `name=value`, joined with `&`.
pub(crate) fn put_canonical_query<S: Sink>(out: &mut S, query: &str) {
    let mut parameters: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|parameter| !parameter.is_empty())
        .map(|parameter| {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            (query_encode(name), query_encode(value))
        })
        .collect();
    parameters.sort_unstable();
    for (i, (name, value)) in parameters.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(name);
        out.put(b"=");
        out.put(value);
    }
}

/// Writes a header value with leading and trailing spaces removed and each inner run of
/// spaces collapsed to one space (SigV4's "Trimall").
pub(crate) fn put_trimmed<S: Sink>(out: &mut S, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ');
    let end = value.iter().rposition(|&b| b != b' ');
    let (Some(start), Some(end)) = (start, end) else {
        return;
    };
    let value = &value[start..=end];
    let mut run_start = 0;
    let mut i = 0;
    while i < value.len() {
        if value[i] == b' ' && value.get(i + 1) == Some(&b' ') {
            // Keep the first space of the run, skip the rest.
            out.put(&value[run_start..=i]);
            while value.get(i + 1) == Some(&b' ') {
                i += 1;
            }
            run_start = i + 1;
        }
        i += 1;
    }
    out.put(&value[run_start..]);
}

/// Writes the canonical value of signed header `name`: all its values, trimmed, joined with
/// `,`. For `host` without a Host header (HTTP/2, where hyper moves `:authority` into the
/// URI) the URI authority stands in.
fn put_header_values<S: Sink>(out: &mut S, parts: &Parts, name: &str) -> Result<(), VerifyError> {
    let mut values = parts.headers.get_all(name).iter();
    if let Some(first) = values.next() {
        put_trimmed(out, first.as_bytes());
        for value in values {
            out.put(b",");
            put_trimmed(out, value.as_bytes());
        }
        return Ok(());
    }
    match parts.uri.authority() {
        Some(authority) if name == "host" => {
            put_trimmed(out, authority.as_str().as_bytes());
            Ok(())
        }
        _ => Err(VerifyError::MissingSignedHeader(name.to_owned())),
    }
}

/// Writes the whole canonical request of `parts` as `auth` describes it, with
/// `body_sha256_hex` as the payload hash.
pub(crate) fn put_canonical_request<S: Sink>(
    out: &mut S,
    parts: &Parts,
    auth: &Authorization,
    body_sha256_hex: &[u8; 64],
) -> Result<(), VerifyError> {
    out.put(parts.method.as_str().as_bytes());
    out.put(b"\n");
    put_canonical_uri(out, parts.uri.path());
    out.put(b"\n");
    if let Some(query) = parts.uri.query() {
        put_canonical_query(out, query);
    }
    out.put(b"\n");
    for name in auth.signed_header_names() {
        out.put(name.as_bytes());
        out.put(b":");
        put_header_values(out, parts, name)?;
        out.put(b"\n");
    }
    out.put(b"\n");
    out.put(auth.signed_headers().as_bytes());
    out.put(b"\n");
    out.put(body_sha256_hex);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str) -> String {
        let mut out = Vec::new();
        put_canonical_uri(&mut out, path);
        String::from_utf8(out).expect("ASCII")
    }

    fn query(raw: &str) -> String {
        let mut out = Vec::new();
        put_canonical_query(&mut out, raw);
        String::from_utf8(out).expect("ASCII")
    }

    fn trimmed(value: &str) -> String {
        let mut out = Vec::new();
        put_trimmed(&mut out, value.as_bytes());
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn canonical_uri() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            (
                "/tenant-1/kms/xks/v1/keys/key.1_x-2/encrypt",
                "/tenant-1/kms/xks/v1/keys/key.1_x-2/encrypt",
            ),
            (
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            ),
            // Encoded again: '%' becomes %25, reserved characters are encoded.
            ("/example%20space/", "/example%2520space/"),
            (
                "/test/@connections/JBDvjfGEIAMCERw%3D",
                "/test/%40connections/JBDvjfGEIAMCERw%253D",
            ),
            (
                "/a:b,c;d=e+f!$&'()*",
                "/a%3Ab%2Cc%3Bd%3De%2Bf%21%24%26%27%28%29%2A",
            ),
            // Dot segments (RFC 3986 §5.2.4).
            ("/example1/example2/../..", "/"),
            ("/example/..", "/"),
            ("/./", "/"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../a", "/a"),
            ("/a/.../b", "/a/.../b"),
            ("/a/.b/c.", "/a/.b/c."),
            // Empty segments, as AWS's signers and test suite do.
            ("//", "/"),
            ("//example//", "/example/"),
            ("/a//b", "/a/b"),
            // Not absolute ('*', authority-form).
            ("*", "/%2A"),
        ];
        for (path, expected) in cases {
            assert_eq!(uri(path), expected, "{path}");
        }
    }

    #[test]
    fn canonical_query() {
        let cases = [
            ("", ""),
            ("Param1=value1", "Param1=value1"),
            ("Param2=value2&Param1=value1", "Param1=value1&Param2=value2"),
            ("Param1=value2&Param1=Value1", "Param1=Value1&Param1=value2"),
            ("b=2&a&c=", "a=&b=2&c="),
            ("a=1&&b=2&", "a=1&b=2"),
            ("%E1%88%B4=bar", "%E1%88%B4=bar"),
            ("k=%7e%2f%2F", "k=~%2F%2F"),
            ("k=a+b%20c", "k=a%20b%20c"),
            ("k=a=b", "k=a%3Db"),
            ("k=100%", "k=100%25"),
            ("k=%zz", "k=%25zz"),
            ("-._~09AZaz=-._~09AZaz", "-._~09AZaz=-._~09AZaz"),
            // Sorted on the encoded names: '%' (0x25) sorts before 'A'.
            ("A=1&%21=2", "%21=2&A=1"),
        ];
        for (raw, expected) in cases {
            assert_eq!(query(raw), expected, "{raw}");
        }
    }

    #[test]
    fn trimall() {
        let cases = [
            ("value1", "value1"),
            ("  value1  ", "value1"),
            ("\"a   b   c\"", "\"a b c\""),
            ("a b", "a b"),
            ("a  b  ", "a b"),
            ("   ", ""),
            ("", ""),
            ("a\t\tb", "a\t\tb"),
        ];
        for (value, expected) in cases {
            assert_eq!(trimmed(value), expected, "{value:?}");
        }
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(
            &sha256_hex(b""),
            b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x0f;
        assert_eq!(hex32(&bytes).to_vec(), hex::encode(bytes).into_bytes());
    }
}
