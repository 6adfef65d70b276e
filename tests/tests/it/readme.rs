//! The README's first two commands, run as a newcomer would: the first verbatim in a fresh
//! HOME (it must start the proxy on embedded defaults and print a curl line that works when
//! pasted), the second verbatim by CI (`.ci/run` must run exactly it).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The first two ```sh blocks of the README.
fn readme_commands() -> (String, String) {
    let readme =
        std::fs::read_to_string(testkit::bins::workspace_root().join("README.md")).expect("README");
    let mut blocks = readme
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or("").trim().to_owned());
    let start = blocks.next().expect("a first sh block");
    let test = blocks.next().expect("a second sh block");
    (start, test)
}

#[test]
fn ci_runs_the_readme_test_command_verbatim() {
    let (_, test) = readme_commands();
    let ci =
        std::fs::read_to_string(testkit::bins::workspace_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test),
        ".ci/run must run `{test}` verbatim"
    );
    let readme =
        std::fs::read_to_string(testkit::bins::workspace_root().join("README.md")).expect("README");
    let first_block = readme.find("```sh").expect("block");
    assert!(
        readme[..first_block].lines().count() < 8,
        "the two commands come first in the README"
    );
}

struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        testkit::signal_process_group(self.0, "KILL");
    }
}

fn free_port(consecutive: u16) -> u16 {
    (0..100)
        .find_map(|_| {
            let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let p = a.local_addr().ok()?.port();
            let _held: Vec<_> = (1..consecutive)
                .map(|i| std::net::TcpListener::bind(("127.0.0.1", p.checked_add(i)?)).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(p)
        })
        .expect("free ports")
}

/// The lines of `text` from the first starting with `start` through its `\` continuations.
fn command_block(text: &str, start: &str) -> String {
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with(start))
    {
        out.push(line.to_owned());
        if !line.ends_with('\\') {
            break;
        }
    }
    out.join("\n")
}

#[test]
fn the_readme_start_command_works_in_a_fresh_home() {
    let (start, _) = readme_commands();
    let home = tempfile::tempdir().expect("tempdir");
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{real_home}/.cargo"));
    let rustup_home =
        std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup"));
    // The proxy's local setup puts its admin listener on the next port.
    let proxy_port = free_port(2);
    let frontend_port = free_port(1);
    let mut child = Command::new("bash")
        .args(["-c", &start])
        .current_dir(testkit::bins::workspace_root())
        .env("HOME", home.path())
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .env("XKS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
        .env("KMS_FRONTEND_LISTEN", format!("127.0.0.1:{frontend_port}"))
        .env_remove("XKS_PROXY_HOME")
        .env_remove("XKS_PROXY_CONFIG")
        .env_remove("KMS_FRONTEND_HOME")
        .env_remove("KMS_FRONTEND_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(home.path().join("start.log")).expect("log file"),
        ))
        .process_group(0)
        .spawn()
        .expect("bash");
    let _group = Group(child.id());
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            // The servers and the script's banner print concurrently: wait for all three.
            if text.contains("xks-proxy listening on")
                && text.contains("kms-frontend listening on")
                && text.contains("--xks-key-id")
            {
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    // The command may have to compile first.
    let printed = rx
        .recv_timeout(Duration::from_secs(900))
        .expect("the start command printed nothing");
    let log = || std::fs::read_to_string(home.path().join("start.log")).unwrap_or_default();
    assert!(
        printed.contains("xks-proxy listening on https://")
            && printed.contains("kms-frontend listening on https://"),
        "did not start:\n{printed}\n{}",
        log()
    );
    for secret in [
        ".xks-proxy/secrets/root.key",
        ".xks-proxy/secrets/default.secret",
        ".kms-frontend/secrets/root.key",
        ".kms-frontend/secrets/dev.secret",
    ] {
        let value = std::fs::read_to_string(home.path().join(secret)).expect("secret file");
        assert!(
            !printed.contains(value.trim()),
            "{secret} must never be printed"
        );
    }

    // The proxy's printed curl line, pasted as is.
    let curl = command_block(&printed, "curl ");
    assert!(curl.contains("--aws-sigv4"), "no curl line in:\n{printed}");
    let out = Command::new("bash")
        .args(["-c", &curl])
        .env("HOME", home.path())
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"healthStatus\":\"ACTIVE\""),
        "{body}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The front end's printed export lines, then the printed external key store commands.
    let exports: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export "))
        .collect();
    let create_store = command_block(&printed, "aws kms create-custom-key-store");
    let connect =
        command_block(&printed, "aws kms connect-custom-key-store").replace("<the id>", "$ID");
    let create_key = command_block(&printed, "aws kms create-key --origin EXTERNAL_KEY_STORE")
        .replace("<the id>", "$ID");
    let flow = format!(
        "set -e\n{}\nexport AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null\nID=$({create_store} --query CustomKeyStoreId --output text)\n{connect}\nfor i in $(seq 100); do S=$(aws kms describe-custom-key-stores --endpoint-url https://localhost:{frontend_port} --custom-key-store-id $ID --query 'CustomKeyStores[0].ConnectionState' --output text); [ \"$S\" = CONNECTED ] && break; sleep 0.1; done\n{create_key} --output json\n",
        exports.join("\n")
    );
    let out = Command::new("bash")
        .args(["-c", &flow])
        .env("HOME", home.path())
        .output()
        .expect("run aws");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{flow}\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    assert!(
        stdout.contains("\"Origin\": \"EXTERNAL_KEY_STORE\"") && stdout.contains("demo-key-1"),
        "{stdout}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
