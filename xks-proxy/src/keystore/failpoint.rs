//! Failpoints in the key-store write path, for the crash-safety tests.
//!
//! With the `test-hooks` feature, `XKS_PROXY_FAILPOINT=<name>` makes the process abort (no
//! destructors, no flushing: as close to a power cut as a process can get) when it reaches
//! the named point. Without the feature every failpoint compiles to nothing.

/// Names of the failpoints, in the order a write reaches them.
pub const WRITE_FAILPOINTS: [&str; 5] = [
    "store-after-lock",
    "store-after-temp-write",
    "store-after-temp-fsync",
    "store-after-rename",
    "store-after-dir-fsync",
];

/// Aborts the process if the failpoint `name` is armed.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "test-hooks")]
    if std::env::var("XKS_PROXY_FAILPOINT").is_ok_and(|armed| armed == name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}
