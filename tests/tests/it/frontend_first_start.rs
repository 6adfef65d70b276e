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
