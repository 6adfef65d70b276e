//! First start of the front end on embedded defaults in a fresh HOME: it creates its root
//! key and a development credential, prints how to use them (never the root key), and the
//! printed AWS CLI lines work when pasted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn first_start_prints_working_instructions_and_no_secret_key_material() {
    let home = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(testkit::bins::bin("kms-frontend-test"))
        .arg("serve")
        .env("HOME", home.path())
        .env_remove("KMS_FRONTEND_HOME")
        .env_remove("KMS_FRONTEND_CONFIG")
        .env("KMS_FRONTEND_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("listening on") {
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    let printed = rx.recv_timeout(Duration::from_secs(60)).expect("output");
    assert!(printed.contains("listening on https://"), "{printed}");
    let dir = home.path().join(".kms-frontend");
    let root = std::fs::read_to_string(dir.join("secrets/root.key")).expect("root key");
    assert!(
        !printed.contains(root.trim()),
        "the root key must never be printed"
    );
    let secret = std::fs::read_to_string(dir.join("secrets/dev.secret")).expect("secret");
    assert!(
        !printed.contains(secret.trim()),
        "the secret is referenced by its file"
    );
    use std::os::unix::fs::PermissionsExt;
    for f in ["secrets/root.key", "secrets/dev.secret", "tls/server.key"] {
        let mode = std::fs::metadata(dir.join(f))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The printed lines, pasted as a newcomer would.
    let lines: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export ") || l.starts_with("aws "))
        .collect();
    assert!(lines.len() >= 3, "{printed}");
    let out = Command::new("bash")
        .args(["-c", &lines.join("\n")])
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("bash");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["KeyMetadata"]["KeyState"], "Enabled");
    assert!(
        v["KeyMetadata"]["Arn"]
            .as_str()
            .is_some_and(|a| a.contains(":111122223333:key/"))
    );
}

/// `init --config <dir>/config.toml` creates the setup in `<dir>` (a valid config that
/// `check-config` accepts), leaves an existing one alone, and refuses a name it cannot honour
/// instead of silently doing nothing.
#[test]
fn init_with_an_explicit_config_path() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("setup");
    let config = dir.join("config.toml");
    let run = |args: &[&str]| {
        Command::new(testkit::bins::bin("kms-frontend-test"))
            .args(args)
            .env("HOME", home.path())
            .env_remove("KMS_FRONTEND_HOME")
            .env_remove("KMS_FRONTEND_CONFIG")
            .output()
            .expect("run kms-frontend")
    };
    let path = config.to_str().expect("utf-8 path");
    let first = run(&["init", "--config", path]);
    assert!(first.status.success(), "{first:?}");
    assert!(config.exists(), "init did not write {path}");
    assert!(dir.join("tls/ca.pem").exists());
    let written = std::fs::read(&config).expect("config");
    let check = run(&["check-config", "--config", path]);
    assert!(check.status.success(), "{check:?}");

    let again = run(&["init", "--config", path]);
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("already exists"));
    assert_eq!(std::fs::read(&config).expect("config"), written);

    let other = dir.join("other.toml");
    let refused = run(&["init", "--config", other.to_str().expect("utf-8")]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("<dir>/config.toml"));
    assert!(!other.exists());
    // Nothing was created in the default home either.
    assert!(!home.path().join(".kms-frontend").exists());
}
