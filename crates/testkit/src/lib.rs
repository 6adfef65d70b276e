//! Test support for the end-to-end suites.
//!
//! - [`bins`]: where the workspace's built binaries are;
//! - [`pki`]: a test CA and certificates written to disk;
//! - [`proxy`]: an `xks-proxy` process with a generated config, keys and credentials;
//! - [`frontend`]: a `kms-frontend` process with accounts and principals, driven by boto3 and the AWS CLI;
//! - [`kms_backends`]: a throw-away SoftHSMv2 token and an OpenBao dev server with Transit;
//! - [`relay`]: an intercepting relay in front of a proxy (records bodies, injects faults);
//! - [`raw`]: misbehaving raw-socket clients (tricklers, stalled h2 streams);
//! - [`client`]: an HTTPS client that signs XKS requests with SigV4 (via `aws-sigv4`);
//! - [`xks`]: request bodies for the four XKS operations;
//! - [`memscan`]: looks for a secret's bytes in another process's memory.
//!
//! Tests drive the real binaries over real HTTPS; nothing here fakes a server.

pub mod bins;
pub mod client;
pub mod frontend;
pub mod kms_backends;
pub mod memscan;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod relay;
pub mod xks;

/// Random bytes for tests.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("random source");
    v
}

/// A random XKS access key id (24 characters from A-Z 2-7).
pub fn random_access_key_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    random_bytes(24)
        .into_iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

/// A random XKS secret (base64 of 32 bytes, 44 characters).
pub fn random_secret() -> String {
    xks_api::bytes::encode(&random_bytes(32))
}

/// Sends `signal` (e.g. "TERM") to process `pid`.
pub fn signal_process(pid: u32, signal: &str) {
    bash_kill(&format!("kill -s {signal} {pid}"));
}

/// Sends `signal` to every process of process group `pgid`.
pub fn signal_process_group(pgid: u32, signal: &str) {
    bash_kill(&format!("kill -s {signal} -- -{pgid}"));
}

fn bash_kill(command: &str) {
    // bash's builtin kill, not /bin/kill: procps-ng 4.0.2's kill misparses "-<pgid>" and
    // can end up signalling every process on the machine (kill(-1)).
    let _ = std::process::Command::new("bash")
        .args(["-c", command])
        .status();
}
