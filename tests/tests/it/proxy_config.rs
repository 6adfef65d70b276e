//! The documented example config loads and passes `check-config`; config problems are all
//! reported at once and stop the proxy from starting.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn write_private(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn the_example_config_in_deploy_passes_check_config() {
    let root = testkit::bins::workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::copy(root.join("deploy/xks-proxy.example.toml"), &cfg).expect("copy example");
    std::fs::copy(
        root.join("deploy/xks-proxy.policy.example.toml"),
        dir.path().join("policy.toml"),
    )
    .expect("copy example policy");
    // The files the example names.
    let pki = testkit::pki::TestPki::create(&dir.path().join("tls"));
    assert!(pki.server_chain.ends_with("tls/server.pem"));
    write_private(
        &dir.path().join("secrets/root.key"),
        &testkit::random_secret(),
    );
    write_private(
        &dir.path().join("secrets/payments-1.secret"),
        &testkit::random_secret(),
    );
    write_private(
        &dir.path().join("secrets/analytics.secret"),
        &testkit::random_secret(),
    );
    let bin = testkit::bins::bin("xks-proxy-test");
    for store in ["payments", "analytics"] {
        let out = Command::new(&bin)
            .args(["keys", "--key-store", store, "init", "--config"])
            .arg(&cfg)
            .env("XKS_PROXY_PAYMENTS_SECRET_2", testkit::random_secret())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("XKS_PROXY_PAYMENTS_SECRET_2", testkit::random_secret())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("key store 'payments' (/payments/kms/xks/v1): test key round trip ACTIVE"),
        "{stdout}"
    );
    assert!(stdout.contains("key store 'analytics'"), "{stdout}");
    assert!(
        stdout.contains("authorization policy: rules payments-app, analytics-from-vpc"),
        "{stdout}"
    );

    // Without the environment variable the second credential names, the same config fails,
    // and the message says which variable.
    let out = Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("XKS_PROXY_PAYMENTS_SECRET_2"));
}

#[test]
fn every_config_problem_is_reported_together_and_secrets_must_be_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        dir.path().join("world-readable.secret"),
        testkit::random_secret(),
    )
    .expect("write");
    std::fs::set_permissions(
        dir.path().join("world-readable.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::write(
        &cfg,
        r#"
[server]
listen = "127.0.0.1:99999"
[health]
cache_seconds = 61
[[key_stores]]
name = "a"
path_prefix = "/a"
backend = { type = "embedded", store = "keys/a.store", root_key_file = "keys/root.key" }
[[key_stores.credentials]]
access_key_id = "AAAAAAAAAAAAAAAAAAAAAAAA"
secret_file = "world-readable.secret"
[[key_stores]]
name = "a"
path_prefix = "/a"
backend = { type = "embedded", store = "keys/b.store", root_key_env = "X" }
[[key_stores.credentials]]
access_key_id = "AAAAAAAAAAAAAAAAAAAAAAAA"
secret = "inline-secret-inline-secret-inline-secret-inline"
"#,
    )
    .expect("write");
    let out = Command::new(testkit::bins::bin("xks-proxy-test"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.listen",
        "server.tls is required",
        "cache_seconds",
        "root key file must not be in the key store's directory",
        "use chmod 600",
        "name 'a' is used twice",
        "path_prefix '/a' is used by another key store",
        "inline secrets need [dev] allow_inline_secrets",
        "configured twice",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !err.contains("inline-secret-inline"),
        "a secret appeared in an error message"
    );
}

#[test]
fn a_root_key_from_the_environment_seals_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    let pki = testkit::pki::TestPki::create(&dir.path().join("tls"));
    write_private(
        &dir.path().join("secrets/s.secret"),
        &testkit::random_secret(),
    );
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
certificate_chain = "{}"
private_key = "{}"
[[key_stores]]
name = "env"
backend = {{ type = "embedded", store = "keys/env.store", root_key_env = "TEST_XKS_ROOT_KEY" }}
[[key_stores.credentials]]
access_key_id = "{}"
secret_file = "secrets/s.secret"
"#,
            pki.server_chain.display(),
            pki.server_key.display(),
            testkit::random_access_key_id()
        ),
    )
    .expect("write");
    let root = testkit::random_secret();
    let run = |args: &[&str], root: Option<&str>| {
        let mut c = Command::new(testkit::bins::bin("xks-proxy-test"));
        c.args(args).arg("--config").arg(&cfg);
        if let Some(r) = root {
            c.env("TEST_XKS_ROOT_KEY", r);
        }
        c.output().expect("run")
    };
    for args in [
        &["keys", "init"][..],
        &["keys", "create", "k"],
        &["check-config"],
    ] {
        let out = run(args, Some(&root));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without the variable, or with another key, the store does not open; errors name the
    // variable but never print a key.
    let out = run(&["keys", "list"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("$TEST_XKS_ROOT_KEY"));
    let other = testkit::random_secret();
    let out = run(&["keys", "list"], Some(&other));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed under root key"), "{err}");
    assert!(!err.contains(&other) && !err.contains(&root));
}

#[test]
fn tls_self_signed_writes_a_ca_and_a_server_pair_that_curl_trusts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("tls");
    let out = Command::new(testkit::bins::bin("xks-proxy-test"))
        .args(["tls", "self-signed", "--out-dir"])
        .arg(&out_dir)
        .args(["--dns-name", "xks.test", "--dns-name", "localhost"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(out_dir.join(key))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // A proxy serving that pair is trusted by curl (OpenSSL) through the CA alone.
    let f = testkit::proxy::ProxyFixture::new().store(testkit::proxy::StoreSpec::new("main", ""));
    for name in ["server.pem", "server.key"] {
        std::fs::copy(out_dir.join(name), f.path().join("tls").join(name)).expect("copy");
    }
    let p = f.start();
    let health = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(out_dir.join("ca.pem"))
        .args(["--resolve", &format!("xks.test:{}:127.0.0.1", p.port)])
        .arg(format!("https://xks.test:{}/ping", p.port))
        .output()
        .expect("curl");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert!(String::from_utf8_lossy(&health.stdout).starts_with("pong"));
}

/// The threads of a running proxy that Tokio names `tokio-rt-worker` (its async workers, and
/// blocking threads it started for its own work).
fn tokio_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim() == "tokio-rt-worker")
        })
        .count()
}

/// `[server] worker_threads` sets the number of async worker threads: a proxy started with 4
/// has 3 more than one started with 1, and both serve.
#[tokio::test]
async fn server_worker_threads_sets_the_async_workers() {
    let mut counts = Vec::new();
    for n in [1, 4] {
        let mut f = testkit::proxy::ProxyFixture::new()
            .store(testkit::proxy::StoreSpec::new("s", "").with_keys(&["k"]));
        f.server_toml = format!("worker_threads = {n}");
        let p = f.start();
        p.client(0)
            .post_json(
                &p.api_url(0, "keys/k/encrypt"),
                &testkit::xks::encrypt(b"workers", None, false),
            )
            .await
            .ok();
        counts.push(tokio_threads(p.pid()));
    }
    assert_eq!(
        counts[1] - counts[0],
        3,
        "tokio-rt-worker threads: {counts:?}"
    );
}
