//! Micro-benchmarks: XKS JSON parsing of the largest requests, AAD construction +
//! AES-256-GCM in the shape the proxy's embedded backend uses, and the CDIV.
//!
//! Run with `cargo bench -p xks-api` (add `-- --quick` for a short run). No assertions on
//! timings: the numbers are for comparison between changes on one machine.

use std::hint::black_box;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xks_api::types::{DecryptRequest, EncryptRequest};
use xks_api::{AadConstruction, CiphertextMetadata, bytes};

const KIB8: usize = 8 * 1024;

const METADATA_JSON: &str = concat!(
    r#"{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","#,
    r#""kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/12345678-90ab-cdef-1234-567890abcdef","#,
    r#""kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","#,
    r#""kmsViaService":"ebs"}"#
);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An Encrypt body with 8 KiB plaintext and 8 KiB AAD (the largest KMS sends).
fn encrypt_body() -> String {
    format!(
        concat!(
            r#"{{"requestMetadata":{},"plaintext":"{}","#,
            r#""additionalAuthenticatedData":"{}","encryptionAlgorithm":"AES_GCM","#,
            r#""ciphertextDataIntegrityValueAlgorithm":"SHA_256"}}"#
        ),
        METADATA_JSON,
        bytes::encode(&pattern(KIB8, 1)),
        bytes::encode(&pattern(KIB8, 2)),
    )
}

/// A Decrypt body with 8 KiB ciphertext and 8 KiB AAD.
fn decrypt_body() -> String {
    format!(
        concat!(
            r#"{{"requestMetadata":{},"ciphertext":"{}","ciphertextMetadata":"AQEAAAAB","#,
            r#""additionalAuthenticatedData":"{}","encryptionAlgorithm":"AES_GCM","#,
            r#""initializationVector":"{}","authenticationTag":"{}"}}"#
        ),
        METADATA_JSON,
        bytes::encode(&pattern(KIB8, 3)),
        bytes::encode(&pattern(KIB8, 4)),
        bytes::encode(&pattern(12, 5)),
        bytes::encode(&pattern(16, 6)),
    )
}

fn bench_json(c: &mut Criterion) {
    let encrypt = encrypt_body();
    let decrypt = decrypt_body();
    // The bodies must parse, or the benchmark would time the error path.
    let parsed: EncryptRequest = serde_json::from_str(&encrypt).expect("encrypt body");
    assert_eq!(parsed.plaintext.len(), KIB8);
    let parsed: DecryptRequest = serde_json::from_str(&decrypt).expect("decrypt body");
    assert_eq!(parsed.ciphertext.len(), KIB8);

    let mut group = c.benchmark_group("xks_json");
    group.throughput(Throughput::Bytes(encrypt.len() as u64));
    group.bench_function("parse_encrypt_8k_pt_8k_aad", |b| {
        b.iter(|| {
            serde_json::from_slice::<EncryptRequest>(black_box(encrypt.as_bytes())).expect("parse")
        });
    });
    group.throughput(Throughput::Bytes(decrypt.len() as u64));
    group.bench_function("parse_decrypt_8k_ct_8k_aad", |b| {
        b.iter(|| {
            serde_json::from_slice::<DecryptRequest>(black_box(decrypt.as_bytes())).expect("parse")
        });
    });
    group.finish();
}

fn bench_aad_gcm(c: &mut Criterion) {
    let gcm = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("key");
    let iv = Nonce::from([9u8; 12]);
    let request_aad = pattern(64, 8);
    let metadata = CiphertextMetadata::new(AadConstruction::Spec, 1).encode();

    let mut group = c.benchmark_group("aad_gcm");
    group.bench_function("aad_build_spec_64b", |b| {
        b.iter(|| {
            AadConstruction::Spec
                .build(Some(black_box(&request_aad)), black_box(&metadata))
                .expect("aad")
        });
    });
    for size in [32usize, 4096] {
        let plaintext = pattern(size, 10);
        group.throughput(Throughput::Bytes(size as u64));
        // AAD construction + encrypt, as the embedded backend does per Encrypt request.
        group.bench_with_input(
            BenchmarkId::new("aad_and_encrypt", size),
            &plaintext,
            |b, plaintext| {
                b.iter(|| {
                    let aad = AadConstruction::Spec
                        .build(Some(&request_aad), &metadata)
                        .expect("aad");
                    let mut buf = black_box(plaintext).to_vec();
                    let tag = gcm
                        .encrypt_inout_detached(&iv, &aad, (&mut buf[..]).into())
                        .expect("encrypt");
                    (buf, tag)
                });
            },
        );
        let aad = AadConstruction::Spec
            .build(Some(&request_aad), &metadata)
            .expect("aad");
        let mut ciphertext = plaintext.clone();
        let tag: Tag = gcm
            .encrypt_inout_detached(&iv, &aad, (&mut ciphertext[..]).into())
            .expect("encrypt");
        group.bench_with_input(
            BenchmarkId::new("aad_and_decrypt", size),
            &ciphertext,
            |b, ciphertext| {
                b.iter(|| {
                    let aad = AadConstruction::Spec
                        .build(Some(&request_aad), &metadata)
                        .expect("aad");
                    let mut buf = black_box(ciphertext).to_vec();
                    gcm.decrypt_inout_detached(&iv, &aad, (&mut buf[..]).into(), &tag)
                        .expect("decrypt");
                    buf
                });
            },
        );
    }
    group.finish();
}

fn bench_cdiv(c: &mut Criterion) {
    let aad = pattern(64, 11);
    let metadata = CiphertextMetadata::new(AadConstruction::Spec, 1).encode();
    let iv = pattern(12, 12);
    let tag = pattern(16, 13);
    let mut group = c.benchmark_group("cdiv");
    for size in [32usize, 4096] {
        let ciphertext = pattern(size, 14);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha256", size), &ciphertext, |b, ct| {
            b.iter(|| {
                xks_api::cdiv::compute(&xks_api::cdiv::CdivInput {
                    aad: Some(black_box(&aad)),
                    metadata: Some(&metadata),
                    iv: &iv,
                    ciphertext: black_box(ct),
                    tag: &tag,
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_json, bench_aad_gcm, bench_cdiv);
criterion_main!(benches);
