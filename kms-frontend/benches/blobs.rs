//! Micro-benchmarks of the front end's ciphertext blobs: the AWS_KMS blob (seal and open
//! with the key's material), the double-encryption blob of XKS keys (encode and decode, and
//! its inner layer), and unsealing key material under the root key (done per request).
//!
//! Run with `cargo bench -p kms-frontend` (add `-- --quick` for a short run). No assertions
//! on timings: the numbers are for comparison between changes on one machine.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kms_frontend::xks::XksBlob;
use kms_frontend::{blob, sealing};
use zeroize::Zeroizing;

const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
/// A key material id as the front end writes them (64 hex characters).
const MATERIAL_ID: &str = "5f2b0c6a9e1d4f7382a6b0c4d8e2f6a1b5c9d3e7f1a5b9c3d7e1f5a9b3c7d1e5";

fn context() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("purpose".to_owned(), "bench".to_owned()),
        ("tenant".to_owned(), "example-tenant-0001".to_owned()),
    ])
}

fn bench_aws_kms_blob(c: &mut Criterion) {
    let material = [7u8; 32];
    let ctx = context();
    let mut group = c.benchmark_group("aws_kms_blob");
    for size in [32usize, 4096] {
        let plaintext = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encrypt", size), &plaintext, |b, pt| {
            b.iter(|| {
                blob::encrypt_blob(KEY_ID, MATERIAL_ID, &material, black_box(pt), &ctx)
                    .expect("seal")
            });
        });
        let blob =
            blob::encrypt_blob(KEY_ID, MATERIAL_ID, &material, &plaintext, &ctx).expect("seal");
        group.bench_with_input(BenchmarkId::new("decrypt", size), &blob, |b, blob| {
            b.iter(|| blob::decrypt_blob(black_box(blob), &material, &ctx).expect("open"));
        });
    }
    group.finish();
}

fn bench_xks_blob(c: &mut Criterion) {
    let blob = XksBlob {
        format: kms_frontend::xks::FORMAT_XKS,
        key_id: KEY_ID.to_owned(),
        inner_iv: [1; 12],
        proxy_iv: vec![2; 12],
        proxy_tag: [3; 16],
        metadata: vec![1, 1],
        proxy_ciphertext: vec![4; 32 + 16],
    };
    let encoded = blob.encode().expect("encode");
    let mut group = c.benchmark_group("xks_blob");
    group.bench_function("encode_32", |b| b.iter(|| black_box(&blob).encode()));
    group.bench_function("decode_32", |b| {
        b.iter(|| XksBlob::decode(black_box(&encoded)).expect("decode"))
    });
    let material = [9u8; 32];
    let aad = [5u8; 64];
    let plaintext = [6u8; 32];
    group.bench_function("inner_seal_32", |b| {
        b.iter(|| blob::inner_seal(&material, &aad, black_box(&plaintext)).expect("seal"))
    });
    group.finish();
}

fn bench_unseal_material(c: &mut Criterion) {
    let root = root_key::RootKey::from_bytes(Zeroizing::new([8u8; 32]));
    let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}");
    let sealed = sealing::seal_material(&root, &arn, &[7u8; 32]).expect("seal");
    c.bench_function("unseal_material", |b| {
        b.iter(|| sealing::unseal_material(&root, &arn, black_box(&sealed)).expect("unseal"))
    });
}

criterion_group!(
    benches,
    bench_aws_kms_blob,
    bench_xks_blob,
    bench_unseal_material
);
criterion_main!(benches);
