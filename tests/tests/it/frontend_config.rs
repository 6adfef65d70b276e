//! The documented front-end example config passes `check-config`; problems are reported
//! together.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn write_private(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn the_example_config_in_deploy_passes_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::copy(
        testkit::bins::workspace_root().join("deploy/kms-frontend.example.toml"),
        &cfg,
    )
    .expect("copy");
    testkit::pki::TestPki::create(&dir.path().join("tls"));
    write_private(
        &dir.path().join("secrets/root.key"),
        &testkit::random_secret(),
    );
    write_private(
        &dir.path().join("secrets/alice.secret"),
        &testkit::random_secret(),
    );
    let bin = testkit::bins::bin("kms-frontend-test");
    let out = Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("KMS_FRONTEND_APP_SECRET", testkit::random_secret())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 account(s), 2 principal(s)"));
    // Without the variable the second principal names, the config is refused, saying why,
    // along with every other problem.
    std::fs::write(
        dir.path().join("bad.toml"),
        std::fs::read_to_string(&cfg)
            .expect("read")
            .replace("id = \"111122223333\"", "id = \"1234\""),
    )
    .expect("write");
    let out = Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KMS_FRONTEND_APP_SECRET") && err.contains("12 digits"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_by_explicit_opt_in_and_with_a_warning() {
    let f = testkit::frontend::FrontendFixture::new();
    f.write_config();
    let text = std::fs::read_to_string(f.config_path()).expect("read");
    let plain = text.replace(
        "[server.tls]\ncertificate_chain = \"tls/server.pem\"\nprivate_key = \"tls/server.key\"\n",
        "allow_plaintext_http = true\n",
    );
    assert_ne!(plain, text);
    std::fs::write(f.config_path(), &plain).expect("write");
    let alice = f.principals[0].clone();
    let running = testkit::frontend::RunningFrontend::spawn(f);
    let mut c = testkit::client::XksClient::with_http(
        reqwest::Client::new(),
        &alice.access_key_id,
        &alice.secret,
    );
    c.service = "kms".into();
    let r = c
        .send(
            "POST",
            &format!("http://127.0.0.1:{}/", running.port),
            b"{}".to_vec(),
            std::time::SystemTime::now(),
            |parts, body| {
                parts.headers.insert(
                    "x-amz-target",
                    http::HeaderValue::from_static("TrentService.ListKeys"),
                );
                // Re-signed so that the signature covers the operation's name.
                let credential = sigv4_auth::Credential::new(
                    &alice.access_key_id,
                    sigv4_auth::SigningSecret::new(&alice.secret),
                );
                sigv4_auth::sign(
                    parts,
                    body,
                    &sigv4_auth::SigningParams {
                        credential: &credential,
                        region: "us-east-1",
                        service: "kms",
                        time: std::time::SystemTime::now(),
                    },
                )
                .expect("sign");
            },
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    assert!(
        running.logs().contains("serving plain HTTP"),
        "{}",
        running.logs()
    );
    // Without TLS and without the opt-in, the front end refuses to start.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, plain.replace("allow_plaintext_http = true\n", "")).expect("write");
    let out = Command::new(testkit::bins::bin("kms-frontend-test"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_plaintext_http"));
}
