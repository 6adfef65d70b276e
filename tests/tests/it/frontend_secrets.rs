//! Principal secrets on the front end: a principal that a SIGHUP reload removes stops
//! authenticating and leaves no copy of its secret in the process's memory (scanned through
//! `/proc/<pid>/mem`); a reload with a bad config changes nothing; an empty or short
//! secret is a config error that stops the start, saying why.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::frontend::{FrontendFixture, RunningFrontend, TestPrincipal};
use testkit::memscan::find_in_process_memory;

/// The error code of one ListKeys call as `p` (`"ok"` on success).
fn list_keys(f: &RunningFrontend, p: &TestPrincipal) -> String {
    let r = f.boto3(
        p,
        "us-east-1",
        "r = call('list_keys')\nprint(json.dumps('ok' if 'ok' in r else r['error']))",
        &[],
    );
    r.as_str().unwrap_or_default().to_owned()
}

/// Waits until `p` gets `want` (the reload runs asynchronously to the signal).
fn wait_for(f: &RunningFrontend, p: &TestPrincipal, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = list_keys(f, p);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still gets {got}, not {want}:\n{}",
            p.arn,
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_principal_removed_by_a_reload_leaves_no_copy_of_its_secret_in_memory() {
    let mut f = FrontendFixture::new().start();
    let alice = f.fixture.principals[0].clone();
    let bob = f.fixture.principals[1].clone();
    assert_eq!(list_keys(&f, &alice), "ok");
    assert_eq!(list_keys(&f, &bob), "ok");

    // The scan must find a live secret, or "not found" below would prove nothing.
    let (found, regions) = find_in_process_memory(f.pid(), bob.secret.as_bytes());
    assert!(regions > 10, "only {regions} memory regions could be read");
    assert!(
        !found.is_empty(),
        "the scan did not find a secret the front end is using"
    );

    // A reload with a broken config changes nothing: bob still signs in.
    std::fs::write(f.fixture.config_path(), "[server]\nlisten = \"nonsense\"\n").expect("write");
    testkit::signal_process(f.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f.logs().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(list_keys(&f, &bob), "ok");

    f.fixture.principals.retain(|p| p.arn != bob.arn);
    f.reload();
    wait_for(&f, &bob, "UnrecognizedClientException");
    // The remaining principal keeps working (and churns the heap a little).
    for _ in 0..5 {
        assert_eq!(list_keys(&f, &alice), "ok");
    }

    let (found, _) = find_in_process_memory(f.pid(), bob.secret.as_bytes());
    assert!(
        found.is_empty(),
        "the removed principal's secret is still in the front end's memory at {found:x?}"
    );
    let (kept, _) = find_in_process_memory(f.pid(), alice.secret.as_bytes());
    assert!(
        !kept.is_empty(),
        "the scan no longer finds the secret still in use"
    );
}

#[test]
fn a_reload_adds_a_principal_and_warns_about_settings_that_need_a_restart() {
    let mut f = FrontendFixture::new().start();
    let mut dave = f.fixture.principals[0].clone();
    dave.arn = "arn:aws:iam::111122223333:user/dave".into();
    dave.access_key_id = testkit::random_access_key_id();
    dave.secret = testkit::random_secret();
    assert_eq!(list_keys(&f, &dave), "UnrecognizedClientException");
    f.fixture.principals.insert(1, dave.clone());
    f.fixture.extra_toml = "[limits]\nmax_keys_per_region = 7\n".into();
    f.reload();
    wait_for(&f, &dave, "ok");
    let logs = f.logs();
    assert!(
        logs.contains("take effect only after a restart"),
        "no warning about the changed [limits]:\n{logs}"
    );
}

/// Starts `serve` with alice's secret file replaced by `secret` and returns (exit
/// success, stderr).
fn serve_with_alice_secret(secret: &str) -> (bool, String) {
    let f = FrontendFixture::new();
    f.write_config();
    let file = f
        .home
        .path()
        .join(format!("secrets/{}.secret", f.principals[0].access_key_id));
    std::fs::write(&file, secret).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut child = Command::new(testkit::bins::bin("kms-frontend-test"))
        .args(["serve", "--config"])
        .arg(f.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (true, "still running: the config was accepted".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_empty_or_short_principal_secret_is_a_config_error() {
    let (ok, err) = serve_with_alice_secret("\n");
    assert!(!ok, "an empty secret file was accepted");
    assert!(
        err.contains("user/alice") && err.contains("is empty"),
        "unclear error: {err}"
    );
    let (ok, err) = serve_with_alice_secret("fifteen-chars15\n");
    assert!(!ok, "a 15-character secret was accepted");
    assert!(
        err.contains("user/alice") && err.contains("15 characters; at least 16"),
        "unclear error: {err}"
    );
}
