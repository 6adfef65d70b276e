//! Verification tests: known answers from the AWS SigV4 test suite, round trips with
//! aws-sigv4 as the signer, and one tampered element at a time.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderValue, Method, Version};

use super::*;
use crate::canonical::put_canonical_request;
use crate::credential::SigningSecret;
use crate::sign::{SignError, SigningParams, sign};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// An XKS-style access key id (20+ characters of [A-Z2-7]).
const XKS_AKID: &str = "AKIAXKSPROXY2345ABCDEFG";
/// An XKS-style secret (43 characters).
const XKS_SECRET: &str = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx";
const XKS_PATH: &str = "/tenant-1/kms/xks/v1/keys/key.1_x-2/encrypt";
const XKS_BODY: &[u8] = br#"{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}"#;

fn at(amz_date: &str) -> SystemTime {
    amz_date::parse(amz_date.as_bytes()).expect("valid X-Amz-Date")
}

fn credential(akid: &str, secret: &str) -> Credential {
    Credential::new(akid, SigningSecret::new(secret))
}

fn request_parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn verify(
    verifier: &Verifier,
    parts: &Parts,
    credential: &Credential,
    body: &[u8],
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let auth = Authorization::parse(&parts.headers)?;
    verifier.verify(parts, &auth, credential, body, now)
}

fn set_header(parts: &mut Parts, name: &'static str, value: &str) {
    parts
        .headers
        .insert(name, HeaderValue::from_str(value).expect("header value"));
}

fn authorization(parts: &Parts) -> String {
    parts
        .headers
        .get(AUTHORIZATION)
        .expect("signed")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// One case of the AWS SigV4 test suite (`aws-signing-test-suite/v4`): credentials
/// AKIDEXAMPLE, region us-east-1, service `service`, time 20150830T123600Z.
struct SuiteCase {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    signed_headers: &'static str,
    signature: &'static str,
}

const SUITE: &[SuiteCase] = &[
    SuiteCase {
        name: "get-vanilla",
        method: "GET",
        uri: "/",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    SuiteCase {
        name: "get-header-value-trim",
        method: "GET",
        uri: "/",
        headers: &[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", "\"a   b   c\""),
        ],
        body: b"",
        signed_headers: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
    SuiteCase {
        name: "get-header-key-duplicate",
        method: "GET",
        uri: "/",
        headers: &[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "value2"),
            ("My-Header1", "value2"),
            ("My-Header1", "value1"),
        ],
        body: b"",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    },
    SuiteCase {
        name: "get-header-value-order",
        method: "GET",
        uri: "/",
        headers: &[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "value4"),
            ("My-Header1", "value1"),
            ("My-Header1", "value3"),
            ("My-Header1", "value2"),
        ],
        body: b"",
        signed_headers: "host;my-header1;x-amz-date",
        signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
    },
    SuiteCase {
        name: "get-relative-relative-normalized",
        method: "GET",
        uri: "/example1/example2/../..",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    SuiteCase {
        name: "get-slash-dot-slash-normalized",
        method: "GET",
        uri: "/./",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    SuiteCase {
        name: "get-slashes-normalized",
        method: "GET",
        uri: "//example//",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
    },
    SuiteCase {
        name: "get-unreserved",
        method: "GET",
        uri: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    },
    SuiteCase {
        name: "get-vanilla-query-order-key-case",
        method: "GET",
        uri: "/?Param2=value2&Param1=value1",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    SuiteCase {
        name: "get-vanilla-query-unreserved",
        method: "GET",
        uri: "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    },
    SuiteCase {
        // The suite sends the UTF-8 bytes raw; `http::Uri` needs them percent-encoded, which
        // canonicalises identically.
        name: "get-vanilla-utf8-query",
        method: "GET",
        uri: "/?%E1%88%B4=bar",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    },
    SuiteCase {
        name: "get-vanilla-empty-query-key",
        method: "GET",
        uri: "/?Param1=value1",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    },
    SuiteCase {
        name: "post-vanilla-query",
        method: "POST",
        uri: "/?Param1=value1",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    },
    SuiteCase {
        name: "post-header-key-case",
        method: "POST",
        uri: "/",
        headers: &[("Host", "example.amazonaws.com")],
        body: b"",
        signed_headers: "host;x-amz-date",
        signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded",
        method: "POST",
        uri: "/",
        headers: &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("Content-Length", "13"),
            (
                "X-Amz-Content-Sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
        ],
        body: b"Param1=value1",
        signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
    },
    SuiteCase {
        name: "post-x-www-form-urlencoded-parameters",
        method: "POST",
        uri: "/",
        headers: &[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "example.amazonaws.com"),
            ("Content-Length", "13"),
            (
                "X-Amz-Content-Sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
        ],
        body: b"Param1=value1",
        signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
        signature: "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422",
    },
];

fn suite_parts(case: &SuiteCase) -> Parts {
    let mut parts = request_parts(case.method, case.uri, case.headers);
    set_header(&mut parts, "x-amz-date", "20150830T123600Z");
    set_header(
        &mut parts,
        "authorization",
        &format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={}",
            case.signed_headers, case.signature
        ),
    );
    parts
}

#[test]
fn aws_test_suite_known_answers() {
    let verifier = Verifier::new(VerifierConfig::new("service"));
    let credential = credential(AKID, SECRET);
    let now = at("20150830T123600Z");
    for case in SUITE {
        let parts = suite_parts(case);
        let verified = verify(&verifier, &parts, &credential, case.body, now)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(verified.access_key_id, AKID, "{}", case.name);
        assert_eq!(verified.region, "us-east-1", "{}", case.name);
        assert_eq!(verified.date_time, now, "{}", case.name);

        // The same request with any other signature fails.
        let mut wrong = parts.clone();
        let flipped = if case.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        let header = authorization(&parts).replacen(
            &format!("Signature={}", &case.signature[..1]),
            &format!("Signature={flipped}"),
            1,
        );
        set_header(&mut wrong, "authorization", &header);
        assert_eq!(
            verify(&verifier, &wrong, &credential, case.body, now),
            Err(VerifyError::SignatureMismatch),
            "{}",
            case.name
        );
    }
}

fn canonical_request_text(parts: &Parts, body: &[u8]) -> String {
    let auth = Authorization::parse(&parts.headers).expect("parses");
    let mut out = Vec::new();
    put_canonical_request(&mut out, parts, &auth, &sha256_hex(body)).expect("canonical request");
    String::from_utf8(out).expect("ASCII")
}

#[test]
fn aws_test_suite_canonical_requests() {
    let expected = [
        (
            "get-header-value-trim",
            "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            "get-slashes-normalized",
            "GET\n/example/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST\n/\n\ncontent-length:13\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\nx-amz-date:20150830T123600Z\n\ncontent-length;content-type;host;x-amz-content-sha256;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
        ),
    ];
    for (name, creq) in expected {
        let case = SUITE
            .iter()
            .find(|case| case.name == name)
            .expect("case exists");
        assert_eq!(
            canonical_request_text(&suite_parts(case), case.body),
            creq,
            "{name}"
        );
    }
}

#[test]
fn hand_computed_known_answer_for_an_xks_request() {
    // Computed by hand with Python's hashlib/hmac from the canonical request below.
    let body = XKS_BODY;
    let mut parts = request_parts(
        "POST",
        "/tenant-1/kms/xks/v1/keys/key%3A1/encrypt",
        &[
            ("host", "xks.example.com"),
            ("content-type", "application/json"),
            ("x-amz-date", "20150830T123600Z"),
        ],
    );
    set_header(
        &mut parts,
        "authorization",
        &format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/eu-west-1/kms-xks-proxy/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=eace25270ba59ae073cfd0ef08ef371e887782cd92af9fc68be2eb5f9ef9586b"
        ),
    );
    assert_eq!(
        canonical_request_text(&parts, body),
        format!(
            "POST\n/tenant-1/kms/xks/v1/keys/key%253A1/encrypt\n\ncontent-type:application/json\nhost:xks.example.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n{}",
            hex::encode(Sha256::digest(body))
        )
    );
    let verifier = Verifier::new(VerifierConfig::new("kms-xks-proxy"));
    let verified = verify(
        &verifier,
        &parts,
        &credential(AKID, SECRET),
        body,
        at("20150830T123600Z"),
    )
    .expect("verifies");
    assert_eq!(verified.region, "eu-west-1");
}

/// Signs with aws-sigv4 directly, leaving `excluded` headers unsigned.
fn aws_sign_excluding(
    parts: &mut Parts,
    body: &[u8],
    credential: &Credential,
    region: &str,
    service: &str,
    time: SystemTime,
    excluded: &[&'static str],
) {
    let identity: Identity = Credentials::new(
        credential.access_key_id(),
        credential.secret().expose(),
        None,
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    if let Some(list) = settings.excluded_headers.as_mut() {
        list.extend(excluded.iter().map(|name| Cow::Borrowed(*name)));
    }
    let params: http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .expect("params")
        .into();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ASCII").to_owned()))
        .collect();
    let signable = SignableRequest::new(
        parts.method.as_str(),
        parts.uri.to_string(),
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let (instructions, _) = http_request::sign(signable, &params)
        .expect("signs")
        .into_parts();
    for (name, value) in instructions.headers() {
        parts.headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
}

fn signed_xks_request(time: SystemTime) -> (Parts, Credential) {
    let credential = credential(XKS_AKID, XKS_SECRET);
    let mut parts = request_parts(
        "POST",
        &format!("https://xks.example.com{XKS_PATH}"),
        &[("content-type", "application/json")],
    );
    sign(
        &mut parts,
        XKS_BODY,
        &SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time,
        },
    )
    .expect("signs");
    (parts, credential)
}

fn xks_verifier() -> Verifier {
    Verifier::new(VerifierConfig::new("kms-xks-proxy"))
}

#[test]
fn sign_then_verify_an_xks_request() {
    let time = at("20240611T101112Z");
    let (parts, credential) = signed_xks_request(time);

    // What `sign` added.
    assert_eq!(parts.headers[HOST], "xks.example.com");
    assert_eq!(parts.headers["x-amz-date"], "20240611T101112Z");
    assert!(parts.headers[AUTHORIZATION].is_sensitive());
    assert!(!parts.headers.contains_key("x-amz-security-token"));
    let auth = Authorization::parse(&parts.headers).expect("parses");
    assert_eq!(auth.access_key_id(), XKS_AKID);
    assert_eq!(auth.date(), "20240611");
    assert_eq!(auth.region(), "us-east-1");
    assert_eq!(auth.service(), "kms-xks-proxy");
    assert_eq!(auth.signed_headers(), "content-type;host;x-amz-date");

    let verified = xks_verifier()
        .verify(&parts, &auth, &credential, XKS_BODY, time)
        .expect("verifies");
    assert_eq!(
        verified,
        Verified {
            access_key_id: XKS_AKID.to_owned(),
            region: "us-east-1".to_owned(),
            date_time: time,
        }
    );
    // The derived key was cached, and a second verification reuses it.
    assert_eq!(credential.cached_keys(), 1);
    xks_verifier()
        .verify(&parts, &auth, &credential, XKS_BODY, time)
        .expect("verifies again");
    assert_eq!(credential.cached_keys(), 1);

    // Headers added after signing (a proxy's, say) do not matter.
    let mut extra = parts;
    set_header(&mut extra, "user-agent", "something/1.0");
    set_header(&mut extra, "x-forwarded-for", "10.0.0.1");
    verify(&xks_verifier(), &extra, &credential, XKS_BODY, time).expect("verifies");
}

#[test]
fn sign_then_verify_a_kms_json_request() {
    let time = at("20240611T235959Z");
    let credential = credential(XKS_AKID, XKS_SECRET);
    let body = br#"{"KeyId":"alias/example","Plaintext":"SGVsbG8="}"#;
    let mut parts = request_parts(
        "POST",
        "https://kms.eu-west-1.example.com/",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.Encrypt"),
        ],
    );
    sign(
        &mut parts,
        body,
        &SigningParams {
            credential: &credential,
            region: "eu-west-1",
            service: "kms",
            time,
        },
    )
    .expect("signs");
    let auth = Authorization::parse(&parts.headers).expect("parses");
    assert_eq!(
        auth.signed_headers(),
        "content-type;host;x-amz-date;x-amz-target"
    );
    let verifier = Verifier::new(VerifierConfig {
        service: "kms".to_owned(),
        accepted_regions: Some(vec!["eu-west-1".to_owned()]),
        max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
    });
    verifier
        .verify(&parts, &auth, &credential, body, time)
        .expect("verifies");

    // Changing the target is caught.
    set_header(&mut parts, "x-amz-target", "TrentService.Decrypt");
    assert_eq!(
        verify(&verifier, &parts, &credential, body, time),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn sign_then_verify_awkward_paths_and_queries() {
    let time = at("20240611T101112Z");
    let credential = credential(XKS_AKID, XKS_SECRET);
    for path_and_query in [
        "/",
        "/a/./b/../c",
        "/tenant%201/keys/key%3A1/encrypt",
        "/keys/k@1/x:y,z;w=v+u!$'()*",
        "/keys/%E2%82%AC/encrypt",
        "/a/b/",
        "/p?b=2&a=1",
        "/p?a=2&a=1&b",
        "/p?k=a%20b&j=%2F%7E",
        "/p?k=a+b",
        "/p?empty=",
    ] {
        let mut parts = request_parts(
            "POST",
            &format!("https://xks.example.com:8443{path_and_query}"),
            &[("content-type", "application/json")],
        );
        let params = SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time,
        };
        sign(&mut parts, XKS_BODY, &params).expect("signs");
        assert_eq!(parts.headers[HOST], "xks.example.com:8443");
        verify(&xks_verifier(), &parts, &credential, XKS_BODY, time)
            .unwrap_or_else(|e| panic!("{path_and_query}: {e}"));
    }
}

#[test]
fn re_signing_replaces_the_signature() {
    let (mut parts, credential) = signed_xks_request(at("20240611T101112Z"));
    let later = at("20240611T111112Z");
    sign(
        &mut parts,
        XKS_BODY,
        &SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time: later,
        },
    )
    .expect("signs again");
    assert_eq!(parts.headers.get_all(AUTHORIZATION).iter().count(), 1);
    assert_eq!(parts.headers.get_all("x-amz-date").iter().count(), 1);
    verify(&xks_verifier(), &parts, &credential, XKS_BODY, later).expect("verifies");
}

#[test]
fn sign_requires_a_host() {
    let credential = credential(XKS_AKID, XKS_SECRET);
    let mut parts = request_parts("POST", XKS_PATH, &[]);
    let result = sign(
        &mut parts,
        XKS_BODY,
        &SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time: at("20240611T101112Z"),
        },
    );
    assert!(matches!(result, Err(SignError::MissingHost)), "{result:?}");
}

/// Applies `tamper` to a freshly signed XKS request and expects `expected`.
fn assert_tampered(
    what: &str,
    expected: &VerifyError,
    tamper: impl FnOnce(&mut Parts, &mut Vec<u8>, &mut Credential, &mut Verifier),
) {
    let time = at("20240611T101112Z");
    let (mut parts, mut credential) = signed_xks_request(time);
    let mut body = XKS_BODY.to_vec();
    let mut verifier = xks_verifier();
    // Untampered, it verifies.
    verify(&verifier, &parts, &credential, &body, time).expect("untampered verifies");
    tamper(&mut parts, &mut body, &mut credential, &mut verifier);
    assert_eq!(
        verify(&verifier, &parts, &credential, &body, time).as_ref(),
        Err(expected),
        "{what}"
    );
}

#[test]
fn any_change_to_a_signed_element_is_rejected() {
    let mismatch = VerifyError::SignatureMismatch;
    assert_tampered("one body byte", &mismatch, |_, body, _, _| body[10] ^= 0x01);
    assert_tampered("an appended body byte", &mismatch, |_, body, _, _| {
        body.push(b' ');
    });
    assert_tampered("the path", &mismatch, |parts, _, _, _| {
        parts.uri = "https://xks.example.com/tenant-1/kms/xks/v1/keys/key.1_x-2/decrypt"
            .parse()
            .expect("uri");
    });
    assert_tampered("the path's tenant prefix", &mismatch, |parts, _, _, _| {
        parts.uri = "https://xks.example.com/tenant-2/kms/xks/v1/keys/key.1_x-2/encrypt"
            .parse()
            .expect("uri");
    });
    assert_tampered("an added query", &mismatch, |parts, _, _, _| {
        parts.uri = format!("https://xks.example.com{XKS_PATH}?a=b")
            .parse()
            .expect("uri");
    });
    assert_tampered("the method", &mismatch, |parts, _, _, _| {
        parts.method = Method::PUT;
    });
    assert_tampered(
        "x-amz-date, one second later (within skew)",
        &mismatch,
        |parts, _, _, _| set_header(parts, "x-amz-date", "20240611T101113Z"),
    );
    assert_tampered("a signed header's value", &mismatch, |parts, _, _, _| {
        set_header(parts, "content-type", "application/x-amz-json-1.1");
    });
    assert_tampered("the host", &mismatch, |parts, _, _, _| {
        set_header(parts, "host", "xks2.example.com");
    });
    assert_tampered(
        "a second value of a signed header",
        &mismatch,
        |parts, _, _, _| {
            parts
                .headers
                .append("content-type", HeaderValue::from_static("text/plain"));
        },
    );
    assert_tampered("the region in the scope", &mismatch, |parts, _, _, _| {
        let header = authorization(parts).replace("/us-east-1/", "/us-west-2/");
        set_header(parts, "authorization", &header);
    });
    assert_tampered(
        "the service in the scope (accepted by the verifier)",
        &mismatch,
        |parts, _, _, verifier| {
            let header = authorization(parts).replace("/kms-xks-proxy/", "/kms/");
            set_header(parts, "authorization", &header);
            *verifier = Verifier::new(VerifierConfig::new("kms"));
        },
    );
    assert_tampered(
        "the access key id (the other id's credential has another secret)",
        &mismatch,
        |parts, _, credential, _| {
            let other = "AKIAXKSPROXY2345ABCDEFH";
            let header = authorization(parts).replace(XKS_AKID, other);
            set_header(parts, "authorization", &header);
            *credential = Credential::new(
                other,
                SigningSecret::new("Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGy"),
            );
        },
    );
    assert_tampered("the secret", &mismatch, |_, _, credential, _| {
        *credential = Credential::new(
            XKS_AKID,
            SigningSecret::new("Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGy"),
        );
    });
    assert_tampered(
        "a signed header removed",
        &VerifyError::MissingSignedHeader("content-type".to_owned()),
        |parts, _, _, _| {
            parts.headers.remove("content-type");
        },
    );
    assert_tampered(
        "SignedHeaders without content-type",
        &mismatch,
        |parts, _, _, _| {
            let header = authorization(parts)
                .replace("SignedHeaders=content-type;host;", "SignedHeaders=host;");
            set_header(parts, "authorization", &header);
        },
    );
    assert_tampered(
        "the credential of another access key id",
        &VerifyError::AccessKeyIdMismatch,
        |_, _, credential, _| {
            *credential = Credential::new("AKIAXKSPROXY2345ABCDEFH", credential.secret().clone());
        },
    );
    assert_tampered(
        "the date of the scope only",
        &VerifyError::DateMismatch {
            header: "20240611".to_owned(),
            scope: "20240612".to_owned(),
        },
        |parts, _, _, _| {
            let header = authorization(parts).replace("/20240611/", "/20240612/");
            set_header(parts, "authorization", &header);
        },
    );
}

#[test]
fn host_and_x_amz_date_must_be_signed() {
    let time = at("20240611T101112Z");
    let credential = credential(XKS_AKID, XKS_SECRET);
    for (excluded, expected) in [("host", "host"), ("x-amz-date", "x-amz-date")] {
        let mut parts = request_parts(
            "POST",
            &format!("https://xks.example.com{XKS_PATH}"),
            &[
                ("host", "xks.example.com"),
                ("content-type", "application/json"),
            ],
        );
        aws_sign_excluding(
            &mut parts,
            XKS_BODY,
            &credential,
            "us-east-1",
            "kms-xks-proxy",
            time,
            &[excluded],
        );
        let auth = Authorization::parse(&parts.headers).expect("parses");
        assert!(!auth.is_signed(excluded), "{}", auth.signed_headers());
        assert_eq!(
            xks_verifier().verify(&parts, &auth, &credential, XKS_BODY, time),
            Err(VerifyError::RequiredHeaderNotSigned(expected))
        );
    }
    // The same helper without exclusions produces a request that verifies.
    let mut parts = request_parts(
        "POST",
        &format!("https://xks.example.com{XKS_PATH}"),
        &[
            ("host", "xks.example.com"),
            ("content-type", "application/json"),
        ],
    );
    aws_sign_excluding(
        &mut parts,
        XKS_BODY,
        &credential,
        "us-east-1",
        "kms-xks-proxy",
        time,
        &[],
    );
    verify(&xks_verifier(), &parts, &credential, XKS_BODY, time).expect("verifies");
}

#[test]
fn clock_skew() {
    let time = at("20240611T101112Z");
    let (parts, credential) = signed_xks_request(time);
    let verifier = xks_verifier();
    let skew = Duration::from_secs(4 * 60 + 50);
    for now in [time, time + skew, time - skew] {
        verify(&verifier, &parts, &credential, XKS_BODY, now).expect("within skew");
    }
    let too_much = Duration::from_secs(5 * 60 + 10);
    assert_eq!(
        verify(&verifier, &parts, &credential, XKS_BODY, time + too_much),
        Err(VerifyError::ClockSkew {
            skew: too_much,
            in_future: false,
            max: DEFAULT_MAX_CLOCK_SKEW,
        })
    );
    let error = verify(&verifier, &parts, &credential, XKS_BODY, time - too_much)
        .expect_err("too far ahead");
    assert_eq!(
        error,
        VerifyError::ClockSkew {
            skew: too_much,
            in_future: true,
            max: DEFAULT_MAX_CLOCK_SKEW,
        }
    );
    assert_eq!(
        error.to_string(),
        "the request time is 310 s ahead of the server clock; at most 300 s is allowed"
    );
    // A configured skew applies.
    let strict = Verifier::new(VerifierConfig {
        max_clock_skew: Duration::from_secs(60),
        ..VerifierConfig::new("kms-xks-proxy")
    });
    assert!(matches!(
        verify(
            &strict,
            &parts,
            &credential,
            XKS_BODY,
            time + Duration::from_secs(61)
        ),
        Err(VerifyError::ClockSkew { .. })
    ));
    verify(
        &strict,
        &parts,
        &credential,
        XKS_BODY,
        time + Duration::from_secs(60),
    )
    .expect("at the limit");
}

#[test]
fn scope_checks() {
    let time = at("20240611T101112Z");
    let (parts, credential) = signed_xks_request(time);

    let regional = |regions: &[&str]| {
        Verifier::new(VerifierConfig {
            accepted_regions: Some(regions.iter().map(|r| (*r).to_owned()).collect()),
            ..VerifierConfig::new("kms-xks-proxy")
        })
    };
    assert_eq!(
        verify(
            &regional(&["eu-west-1"]),
            &parts,
            &credential,
            XKS_BODY,
            time
        ),
        Err(VerifyError::RegionNotAccepted("us-east-1".to_owned()))
    );
    assert_eq!(
        verify(&regional(&[]), &parts, &credential, XKS_BODY, time),
        Err(VerifyError::RegionNotAccepted("us-east-1".to_owned()))
    );
    verify(
        &regional(&["eu-west-1", "us-east-1"]),
        &parts,
        &credential,
        XKS_BODY,
        time,
    )
    .expect("accepted region");

    assert_eq!(
        verify(
            &Verifier::new(VerifierConfig::new("kms")),
            &parts,
            &credential,
            XKS_BODY,
            time
        ),
        Err(VerifyError::WrongService {
            found: "kms-xks-proxy".to_owned(),
            expected: "kms".to_owned(),
        })
    );
}

#[test]
fn x_amz_date_checks() {
    let time = at("20240611T101112Z");
    let verifier = xks_verifier();

    let (mut parts, credential) = signed_xks_request(time);
    parts.headers.remove("x-amz-date");
    assert_eq!(
        verify(&verifier, &parts, &credential, XKS_BODY, time),
        Err(VerifyError::MissingDate)
    );

    let (mut parts, credential) = signed_xks_request(time);
    set_header(&mut parts, "x-amz-date", "2024-06-11T10:11:12Z");
    assert!(matches!(
        verify(&verifier, &parts, &credential, XKS_BODY, time),
        Err(VerifyError::MalformedDate(_))
    ));

    let (mut parts, credential) = signed_xks_request(time);
    parts
        .headers
        .append("x-amz-date", HeaderValue::from_static("20240611T101112Z"));
    assert_eq!(
        verify(&verifier, &parts, &credential, XKS_BODY, time),
        Err(VerifyError::MalformedDate(
            "more than one X-Amz-Date header"
        ))
    );

    // Around midnight: the scope date must match the header's date even within the skew.
    let just_before = at("20240611T235958Z");
    let (mut parts, credential) = signed_xks_request(just_before);
    set_header(&mut parts, "x-amz-date", "20240612T000001Z");
    assert_eq!(
        verify(&verifier, &parts, &credential, XKS_BODY, just_before),
        Err(VerifyError::DateMismatch {
            header: "20240612".to_owned(),
            scope: "20240611".to_owned(),
        })
    );
    // Moving both to the next day (within the skew) breaks the signature.
    let header = authorization(&parts).replace("/20240611/", "/20240612/");
    set_header(&mut parts, "authorization", &header);
    assert_eq!(
        verify(&verifier, &parts, &credential, XKS_BODY, just_before),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn http2_style_parts_use_the_uri_authority() {
    let time = at("20240611T101112Z");
    let credential = credential(XKS_AKID, XKS_SECRET);
    let mut parts = request_parts(
        "POST",
        &format!("https://xks.example.com:8443{XKS_PATH}"),
        &[("content-type", "application/json")],
    );
    sign(
        &mut parts,
        XKS_BODY,
        &SigningParams {
            credential: &credential,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time,
        },
    )
    .expect("signs");
    // As hyper presents an HTTP/2 request: `:authority` in the URI, no Host header.
    parts.headers.remove(HOST);
    parts.version = Version::HTTP_2;
    verify(&xks_verifier(), &parts, &credential, XKS_BODY, time).expect("verifies");

    // Another authority is another host.
    let mut other = parts.clone();
    other.uri = format!("https://xks.example.com:9443{XKS_PATH}")
        .parse()
        .expect("uri");
    assert_eq!(
        verify(&xks_verifier(), &other, &credential, XKS_BODY, time),
        Err(VerifyError::SignatureMismatch)
    );

    // Neither Host nor authority: an error, not a panic.
    let mut bare = parts.clone();
    bare.uri = XKS_PATH.parse().expect("uri");
    assert_eq!(
        verify(&xks_verifier(), &bare, &credential, XKS_BODY, time),
        Err(VerifyError::MissingSignedHeader("host".to_owned()))
    );
}

#[test]
fn secrets_of_43_and_64_characters() {
    let time = at("20240611T101112Z");
    // 64 characters: "AWS4" + secret exceeds the HMAC block, exercising key hashing.
    for secret in [
        "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx",
        "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG9mcmVkcGx1Z3h5",
        "c2hvcnQ",
    ] {
        let credential = credential(XKS_AKID, secret);
        let mut parts = request_parts(
            "POST",
            &format!("https://xks.example.com{XKS_PATH}"),
            &[("content-type", "application/json")],
        );
        sign(
            &mut parts,
            XKS_BODY,
            &SigningParams {
                credential: &credential,
                region: "us-east-1",
                service: "kms-xks-proxy",
                time,
            },
        )
        .expect("signs");
        verify(&xks_verifier(), &parts, &credential, XKS_BODY, time)
            .unwrap_or_else(|e| panic!("{} chars: {e}", secret.len()));
        // And a secret differing in its last character fails.
        let mut other = secret.to_owned();
        let last = other.pop();
        other.push(if last == Some('Q') { 'R' } else { 'Q' });
        assert_eq!(
            verify(
                &xks_verifier(),
                &parts,
                &Credential::new(XKS_AKID, SigningSecret::new(other)),
                XKS_BODY,
                time
            ),
            Err(VerifyError::SignatureMismatch),
            "{} chars",
            secret.len()
        );
    }
}

#[test]
fn errors_reveal_no_secret_or_expected_signature() {
    let time = at("20240611T101112Z");
    let (mut parts, credential) = signed_xks_request(time);
    let original = Authorization::parse(&parts.headers).expect("parses");
    let sent = hex::encode(original.signature());
    // Tamper with the body: the expected signature is now the original one.
    let error = verify(&xks_verifier(), &parts, &credential, b"{}", time).expect_err("tampered");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(&sent), "{text}");
    assert!(!text.contains(XKS_SECRET), "{text}");

    // Changing the sent signature: neither the sent nor the expected one appears.
    let header = authorization(&parts).replace(&sent, &"0".repeat(64));
    set_header(&mut parts, "authorization", &header);
    let error = verify(&xks_verifier(), &parts, &credential, XKS_BODY, time).expect_err("wrong");
    assert_eq!(error, VerifyError::SignatureMismatch);
    let text = format!("{error} {error:?}");
    assert!(!text.contains(&sent), "{text}");
    assert!(!text.contains(XKS_SECRET), "{text}");
}

#[test]
fn the_access_key_id_is_not_covered_by_the_signature() {
    // SigV4's string to sign holds the scope's date, region and service but not the access
    // key id, so two credentials sharing a secret accept each other's signatures: a key
    // store must give every access key id its own secret. This test documents that property
    // (and fails if an implementation started binding the id, which would break interop).
    let time = at("20240611T101112Z");
    let (mut parts, credential) = signed_xks_request(time);
    let other = "AKIAXKSPROXY2345ABCDEFH";
    let header = authorization(&parts).replace(XKS_AKID, other);
    set_header(&mut parts, "authorization", &header);
    let twin = Credential::new(other, credential.secret().clone());
    let verified = verify(&xks_verifier(), &parts, &twin, XKS_BODY, time).expect("verifies");
    assert_eq!(verified.access_key_id, other);
}
