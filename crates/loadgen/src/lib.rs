//! `xks-load`: a load generator for XKS proxies and KMS endpoints, and a baseline server.
//!
//! - Every request is signed with SigV4 ([`fn@sigv4_auth::sign`]) just before it is sent: a fresh
//!   `X-Amz-Date`, a real signature, a fresh `kmsRequestId`; nothing is replayed. XKS requests
//!   are signed for service `kms-xks-proxy`; KMS requests for `kms`, with
//!   `X-Amz-Target: TrentService.<Op>` and `Content-Type: application/x-amz-json-1.1`.
//! - Connections are kept alive and pooled ([`target::Connector`]), or, as a scenario option,
//!   opened anew for every request.
//! - Closed loop (a concurrency) or open loop (a fixed rate, latency measured from the
//!   *scheduled* send time, so there is no coordinated omission): [`mod@run`].
//! - The report ([`report`]): throughput, p50/p90/p99/p99.9/max, errors by name (XKS
//!   `errorName`, KMS `__type`, transport error kind), the server process's CPU and RSS, as
//!   text or JSON (schema `xks-load/report/v1`, documented in [`report`]).
//! - [`baseline`]: a trivial TLS server answering a fixed 200 JSON body, to measure this
//!   machine's HTTPS ceiling and compare a proxy with it.
//! - [`hsm`]: the raw PKCS#11 loop (AES-256-GCM as the proxy calls it, no HTTP), the ceiling
//!   of an HSM key store on this machine.
//! - [`micro`]: criterion's micro-benchmark results, read back for `summarize`.
//! - [`gates`]: the performance gates, checked on a run's reports by `summarize`.
//! - [`startup`]: time from spawning a server to its first HTTPS answer (schema
//!   `xks-load/startup/v1`).
//!
//! Latencies are kept in a log-linear [`histogram::Histogram`] (µs resolution, ≤ 1 %
//! relative error).
//!
//! Benchmarks measure; the tests of this crate check behaviour (no timing assertions beyond
//! wide margins around a deliberately injected 500 ms stall).
//!
//! The binary (`xks-load`, [`cli`]):
//!
//! ```text
//! xks-load --scenario xks-encrypt --xks-url https://localhost:8443/p/kms/xks/v1 \
//!     --key-id k1 --access-key-id AKID --secret-file secret --cacert ca.pem \
//!     --concurrency 16 --duration 5 [--server-pid PID] [--json]
//! xks-load --scenario xks-mixed ... --rate 2000 --duration 10 [--max-in-flight 10000]
//! xks-load --scenario kms-encrypt --kms-endpoint http://127.0.0.1:5000 --key-id alias/x ...
//! xks-load baseline-server --port 0 --tls-dir /tmp/baseline-tls
//! xks-load hsm-baseline --token-label xks --pin-file pin --key-label bench-key --threads 16
//! xks-load startup --url https://localhost:8443/ --cacert ca.pem --runs 5 -- xks-proxy serve ...
//! xks-load summarize target/bench/results --out BENCHMARKS.md
//! ```

pub mod baseline;
pub mod cli;
pub mod gates;
pub mod histogram;
pub mod hsm;
pub mod micro;
pub mod procstat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod startup;
pub mod summary;
pub mod target;

pub use histogram::Histogram;
pub use report::Report;
pub use run::{Mode, RunConfig, RunResult, run};
pub use scenario::{EncryptOptions, KeyOrigin, Scenario};
pub use target::{HttpOptions, HttpVersion, Target};
