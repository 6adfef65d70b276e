//! Locating the workspace's binaries, built by the README's test command before the tests run.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The target directory the tests were built in.
pub fn target_dir() -> PathBuf {
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("target profile dir")
}

/// The path of a workspace binary; panics with the command that builds it if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built. Run the README's test command (scripts/test), which builds the \
         binaries with the test hooks first, or: cargo build --workspace --bins --features xks-proxy/test-hooks,kms-frontend/test-hooks",
        p.display()
    );
    p
}
