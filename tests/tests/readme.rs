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

#[test]
fn the_readme_start_command_works_in_a_fresh_home() {
    let (start, _) = readme_commands();
    let home = tempfile::tempdir().expect("tempdir");
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{real_home}/.cargo"));
    let rustup_home =
        std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup"));
    // The local setup puts the admin listener on the next port: find two free ones.
    let port = (0..100)
        .find_map(|_| {
            let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let p = a.local_addr().ok()?.port();
            std::net::TcpListener::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
            Some(p)
        })
        .expect("two free ports");
    let mut child = Command::new("bash")
        .args(["-c", &start])
        .current_dir(testkit::bins::workspace_root())
        .env("HOME", home.path())
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .env("XKS_PROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("XKS_PROXY_HOME")
        .env_remove("XKS_PROXY_CONFIG")
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
            if line.contains("listening on") {
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    // The command may have to compile first.
    let printed = rx
        .recv_timeout(Duration::from_secs(900))
        .expect("the start command printed nothing");
    assert!(
        printed.contains("listening on https://"),
        "did not start:\n{printed}\n{}",
        std::fs::read_to_string(home.path().join("start.log")).unwrap_or_default()
    );
    assert!(home.path().join(".xks-proxy/config.toml").exists());
    let root_key =
        std::fs::read_to_string(home.path().join(".xks-proxy/secrets/root.key")).expect("root key");
    assert!(
        !printed.contains(root_key.trim()),
        "the root key must never be printed"
    );
    let secret = std::fs::read_to_string(home.path().join(".xks-proxy/secrets/default.secret"))
        .expect("secret");
    assert!(
        !printed.contains(secret.trim()),
        "the secret is referenced by file, not printed"
    );

    // The printed curl line, pasted as is.
    let curl: String = printed
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("curl "))
        .take_while(|l| !l.contains("listening on"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(curl.contains("--aws-sigv4"), "no curl line in:\n{printed}");
    let out = Command::new("bash")
        .args(["-c", &curl])
        .env("HOME", home.path())
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("\"healthStatus\":\"ACTIVE\""), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}
