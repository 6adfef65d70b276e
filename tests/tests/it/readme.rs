//! The README's commands, run as a newcomer would: the first (`scripts/demo`) verbatim in a
//! fresh HOME, the second verbatim by CI (`.ci/run` must run exactly it), `scripts/dev-stack`
//! verbatim with the commands that call what it started, and the key management commands on
//! a real embedded store, SoftHSMv2 token and OpenBao. Every ```sh block of the README is
//! run by one of these tests (or by CI's scripts/test-compose), or is marked as needing
//! real AWS (`<!-- needs real AWS -->` on the line before it).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn readme() -> String {
    std::fs::read_to_string(testkit::bins::workspace_root().join("README.md")).expect("README")
}

/// Every ```sh block of the README: its text, and whether it is marked as needing real AWS.
fn sh_blocks() -> Vec<(String, bool)> {
    let readme = readme();
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let marked = rest[..start]
            .trim_end()
            .ends_with("<!-- needs real AWS -->");
        let body = &rest[start + "```sh\n".len()..];
        let end = body.find("```").unwrap_or(body.len());
        blocks.push((body[..end].trim().to_owned(), marked));
        rest = &body[end..];
    }
    blocks
}

/// The README's ```sh block that starts with `first`.
fn block(first: &str) -> String {
    sh_blocks()
        .into_iter()
        .map(|(b, _)| b)
        .find(|b| b.starts_with(first))
        .unwrap_or_else(|| panic!("no ```sh block starting with {first:?} in the README"))
}

/// The README's ```python block.
fn python_block() -> String {
    let readme = readme();
    let start = readme.find("```python\n").expect("a python block") + "```python\n".len();
    let end = readme[start..]
        .find("```")
        .expect("end of the python block");
    readme[start..start + end].to_owned()
}

/// The first two ```sh blocks of the README.
fn readme_commands() -> (String, String) {
    let mut blocks = sh_blocks().into_iter().map(|(b, _)| b);
    let start = blocks.next().expect("a first sh block");
    let test = blocks.next().expect("a second sh block");
    (start, test)
}

/// Which test runs each ```sh block of the README (by its first line).
const RUN_BY: &[(&str, &str)] = &[
    (
        "scripts/demo",
        "readme::the_readme_first_command_runs_the_demo_in_a_fresh_home",
    ),
    (
        "scripts/test",
        "readme::ci_runs_the_readme_test_command_verbatim (CI runs it)",
    ),
    (
        "scripts/dev-stack",
        "readme::dev_stack_and_the_commands_that_call_it_work_in_a_fresh_home",
    ),
    (
        "docker compose -f deploy/compose.yaml up",
        "scripts/test-compose in .ci/run (docker-compose 1.29, images from host-built binaries)",
    ),
    (
        "export AWS_ENDPOINT_URL_KMS=",
        "readme::dev_stack_and_the_commands_that_call_it_work_in_a_fresh_home",
    ),
    (
        "curl --cacert ~/.xks-proxy",
        "readme::dev_stack_and_the_commands_that_call_it_work_in_a_fresh_home",
    ),
    (
        "xks-proxy keys --config",
        "readme::the_readme_key_commands_run_on_an_embedded_store",
    ),
    (
        "xks-proxy keys --key-store hsm",
        "readme::the_readme_key_commands_run_on_softhsm_and_openbao",
    ),
    (
        "cargo run -p kms-frontend -- serve",
        "frontend_first_start::first_start_prints_working_instructions_and_no_secret_key_material (the binary it builds, in a fresh HOME)",
    ),
];

#[test]
fn every_readme_command_is_run_by_a_test_or_marked_as_needing_real_aws() {
    let blocks = sh_blocks();
    assert!(blocks.len() >= RUN_BY.len(), "{blocks:?}");
    for (b, marked) in &blocks {
        let run_by = RUN_BY.iter().find(|(first, _)| b.starts_with(first));
        assert!(
            *marked || run_by.is_some(),
            "README block not run by any test and not marked `<!-- needs real AWS -->`:\n{b}"
        );
        if *marked {
            assert!(b.contains("aws kms"), "only AWS calls may be marked: {b}");
        }
    }
    for (first, _) in RUN_BY {
        assert!(
            blocks.iter().any(|(b, _)| b.starts_with(first)),
            "RUN_BY lists {first:?}, which is no longer a README block"
        );
    }
    let ci =
        std::fs::read_to_string(testkit::bins::workspace_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "scripts/test-compose"),
        ".ci/run must run scripts/test-compose (the README's compose command)"
    );
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

/// The environment a newcomer's shell has: a fresh HOME, but their Rust toolchain.
fn newcomer(cmd: &mut Command, home: &Path) {
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{real_home}/.cargo"));
    let rustup_home =
        std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup"));
    cmd.current_dir(testkit::bins::workspace_root())
        .env("HOME", home)
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .env_remove("XKS_PROXY_HOME")
        .env_remove("XKS_PROXY_CONFIG")
        .env_remove("KMS_FRONTEND_HOME")
        .env_remove("KMS_FRONTEND_CONFIG");
}

#[test]
fn the_readme_first_command_runs_the_demo_in_a_fresh_home() {
    let (demo, _) = readme_commands();
    assert_eq!(
        demo, "scripts/demo",
        "the README's first command is the demo"
    );
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &demo]);
    newcomer(&mut cmd, home.path());
    // It may have to compile first; cargo's progress goes to stderr.
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last_lines: Vec<&str> = stdout.lines().collect();
    assert!(
        stdout
            .contains("demo: OK: encrypted and decrypted with a KMS key in an external key store")
            && stdout.contains("demo: the proxy's log line for the Encrypt:")
            && stdout.contains("Try next:"),
        "{stdout}"
    );
    // A newcomer sees what is happening during the first build: the demo says so, and
    // cargo's own progress is not silenced.
    assert!(
        stdout.contains("demo: building xks-proxy and kms-frontend")
            && stderr.contains("Finished `dev` profile"),
        "no build progress:\n{stdout}\n{stderr}"
    );
    assert!(last_lines.len() > 5, "{stdout}");
    assert!(
        !home.path().join(".xks-proxy").exists(),
        "the demo is throw-away"
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
fn dev_stack_and_the_commands_that_call_it_work_in_a_fresh_home() {
    let start = block("scripts/dev-stack");
    let home = tempfile::tempdir().expect("tempdir");
    // The proxy's local setup puts its admin listener on the next port.
    let proxy_port = free_port(2);
    let frontend_port = free_port(1);
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &start]);
    newcomer(&mut cmd, home.path());
    let mut child = cmd
        .env("XKS_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
        .env("KMS_FRONTEND_LISTEN", format!("127.0.0.1:{frontend_port}"))
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
    assert!(
        printed.contains("dev-stack: building"),
        "no progress line before the build:\n{printed}"
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

    // The README's curl block, with this run's access key id and port.
    let proxy_config =
        std::fs::read_to_string(home.path().join(".xks-proxy/config.toml")).expect("config");
    let akid = proxy_config
        .lines()
        .find_map(|l| l.strip_prefix("access_key_id = "))
        .expect("access key id")
        .trim_matches('"');
    let readme_curl = block("curl --cacert ~/.xks-proxy")
        .replace("<access key id>", akid)
        .replace("localhost:8443", &format!("localhost:{proxy_port}"));
    let out = Command::new("bash")
        .args(["-c", &readme_curl])
        .env("HOME", home.path())
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"healthStatus\":\"ACTIVE\""),
        "{readme_curl}\n{body}{}",
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

    // Persona 2: the README's AWS CLI block and its boto3 snippet, after the printed exports,
    // with this run's port.
    let port = |t: &str| t.replace("localhost:4443", &format!("localhost:{frontend_port}"));
    let cli = port(&block("export AWS_ENDPOINT_URL_KMS="));
    let python = port(&python_block());
    let work = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "set -euo pipefail\n{}\nexport AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null\n{cli}\npython3 - <<'PY'\n{python}print('boto3 ok')\nPY\n",
        exports.join("\n")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(work.path())
        .env("HOME", home.path())
        .output()
        .expect("run the README's client commands");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("my secret") && stdout.contains("boto3 ok"),
        "{script}\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a README block with bash (`set -euo pipefail`) in `dir`, the built binaries first on
/// PATH (as an installed `xks-proxy` would be); its output, after asserting success.
fn run_block(block: &str, dir: &Path, env: &[(&str, &Path)]) -> String {
    let path = format!(
        "{}:{}",
        testkit::bins::target_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("set -euo pipefail\n{block}\n")])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("XKS_PROXY_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{block}\n{text}");
    text
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn the_readme_key_commands_run_on_an_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("xks");
    // The README's key store `payments`, in a first-start setup (its TLS files, secret and
    // root key); the README's /etc path stands for this config.
    let out = Command::new(testkit::bins::bin("xks-proxy"))
        .args(["init", "--home"])
        .arg(&home)
        .output()
        .expect("init");
    assert!(out.status.success(), "{out:?}");
    let cfg = home.join("config.toml");
    let config = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("keys/default.store", "keys/payments.store")
        .replace("\"default\"", "\"payments\"")
        .replace("\"/default\"", "\"/payments\"");
    std::fs::write(&cfg, config).expect("write config");
    write_private(&dir.path().join("key.bin"), &testkit::random_bytes(32));
    let commands = block("xks-proxy keys --config")
        .replace("/etc/xks-proxy/config.toml", &cfg.display().to_string());
    let printed = run_block(&commands, dir.path(), &[("XKS_PROXY_CONFIG", &cfg)]);
    assert!(
        printed.contains("payments-key-1")
            && printed.contains("legacy-key")
            && printed.contains("round trip ACTIVE"),
        "{printed}"
    );
    let shown = run_block(
        "xks-proxy keys --key-store payments show payments-key-1",
        dir.path(),
        &[("XKS_PROXY_CONFIG", &cfg)],
    );
    assert!(
        shown.contains("DISABLED") || shown.contains("disabled"),
        "{shown}"
    );
}

#[test]
fn the_readme_key_commands_run_on_softhsm_and_openbao() {
    use testkit::kms_backends::{OpenBao, SoftHsm};
    let hsm = SoftHsm::new();
    let bao = OpenBao::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The README's stores `hsm` and `vault` are deploy/xks-proxy.backends.example.toml's.
    let cfg = d.join("config.toml");
    let example = std::fs::read_to_string(
        testkit::bins::workspace_root().join("deploy/xks-proxy.backends.example.toml"),
    )
    .expect("example")
    .replace("https://vault.example.internal:8200", &bao.address)
    .replace("ca_bundle = \"tls/vault-ca.pem\", ", "");
    std::fs::write(&cfg, example).expect("write config");
    testkit::pki::TestPki::create(&d.join("tls"));
    std::fs::create_dir_all(d.join("keys")).expect("mkdir");
    let s = |f: &str| d.join("secrets").join(f);
    write_private(&s("hsm.pin"), b"87654321\n");
    write_private(
        &s("vault.token"),
        &std::fs::read(&bao.token_file).expect("token"),
    );
    write_private(&s("hsm.secret"), testkit::random_secret().as_bytes());
    write_private(&s("vault.secret"), testkit::random_secret().as_bytes());
    write_private(&d.join("key.bin"), &testkit::random_bytes(32));
    let env = [
        ("XKS_PROXY_CONFIG", cfg.as_path()),
        ("SOFTHSM2_CONF", &hsm.conf),
    ];
    let printed = run_block(&block("xks-proxy keys --key-store hsm"), d, &env);
    assert!(printed.contains("payments-key-2"), "{printed}");
    let listed = run_block(
        "xks-proxy keys --key-store hsm list && xks-proxy keys --key-store vault list",
        d,
        &env,
    );
    for id in ["payments-key-1", "legacy-key", "payments-key-2"] {
        assert!(listed.contains(id), "{id} not listed:\n{listed}");
    }
}
