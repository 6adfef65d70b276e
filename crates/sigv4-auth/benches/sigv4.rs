//! Micro-benchmarks: SigV4 signing and verification of a typical XKS Encrypt request.
//!
//! Run with `cargo bench -p sigv4-auth` (add `-- --quick` for a short run). No assertions on
//! timings: the numbers are for comparison between changes on one machine.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::request::Parts;
use sigv4_auth::{
    Authorization, Credential, SigningParams, SigningSecret, Verifier, VerifierConfig, sign,
};

const SERVICE: &str = "kms-xks-proxy";
const REGION: &str = "us-east-1";
const URI: &str = "https://xks.example.com/kms/xks/v1/keys/bench-key-0001/encrypt";

/// An XKS Encrypt body as KMS sends it for a 32-byte data key (GenerateDataKey).
fn encrypt_body() -> Vec<u8> {
    // 32 zero bytes, base64.
    let plaintext = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    format!(
        concat!(
            r#"{{"requestMetadata":{{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","#,
            r#""kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/12345678-90ab-cdef-1234-567890abcdef","#,
            r#""kmsOperation":"GenerateDataKey","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","#,
            r#""kmsViaService":"ebs"}},"additionalAuthenticatedData":"cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n","#,
            r#""plaintext":"{}","encryptionAlgorithm":"AES_GCM","#,
            r#""ciphertextDataIntegrityValueAlgorithm":"SHA_256"}}"#
        ),
        plaintext
    )
    .into_bytes()
}

fn unsigned_parts(body_len: usize) -> Parts {
    let request = http::Request::post(URI)
        .header("content-type", "application/json")
        .header("content-length", body_len.to_string())
        .body(())
        .expect("request");
    request.into_parts().0
}

fn credential() -> Credential {
    Credential::new(
        "AKIAIOSFODNN7EXAMPLE",
        SigningSecret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    )
}

fn signing_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn bench_sign(c: &mut Criterion) {
    let credential = credential();
    let body = encrypt_body();
    let params = SigningParams {
        credential: &credential,
        region: REGION,
        service: SERVICE,
        time: signing_time(),
    };
    let mut group = c.benchmark_group("sigv4");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("sign_encrypt_request", |b| {
        b.iter_batched(
            || unsigned_parts(body.len()),
            |mut parts| {
                sign(&mut parts, black_box(&body), &params).expect("sign");
                parts
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let credential = credential();
    let body = encrypt_body();
    let now = signing_time();
    let mut parts = unsigned_parts(body.len());
    let params = SigningParams {
        credential: &credential,
        region: REGION,
        service: SERVICE,
        time: now,
    };
    sign(&mut parts, &body, &params).expect("sign");
    let verifier = Verifier::new(VerifierConfig::new(SERVICE));

    let mut group = c.benchmark_group("sigv4");
    // Header parsing alone (done before the body is read).
    group.bench_function("parse_authorization", |b| {
        b.iter(|| Authorization::parse(black_box(&parts.headers)).expect("parse"));
    });
    group.throughput(Throughput::Bytes(body.len() as u64));
    // Parse + verify, as a server does per request (signing key cached in the credential).
    group.bench_function("verify_encrypt_request", |b| {
        b.iter(|| {
            let auth = Authorization::parse(black_box(&parts.headers)).expect("parse");
            verifier
                .verify(black_box(&parts), &auth, &credential, black_box(&body), now)
                .expect("verify")
        });
    });
    group.finish();
}

criterion_group!(benches, bench_sign, bench_verify);
criterion_main!(benches);
