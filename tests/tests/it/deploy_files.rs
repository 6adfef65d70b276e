//! The deploy files (deploy/compose.yaml, deploy/Dockerfile and its entry points, the
//! systemd units and their example configs, scripts/demo) against the real binaries and the
//! documented configs, so they cannot rot unseen: the entry points' first start is run and
//! its configs pass `check-config`; every config key they or the units' configs use is one
//! that deploy/*.example.toml documents; ports, build targets, environment variables and
//! packages agree across the files; `systemd-analyze verify` accepts the units; and
//! scripts/demo runs its flow. (scripts/test-compose, run by CI, runs the compose file.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    testkit::bins::workspace_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// PATH with the built binaries first, as the images have them in /usr/local/bin.
fn path_with_binaries() -> String {
    format!(
        "{}:{}",
        testkit::bins::target_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The `(section, key)` pairs a TOML file sets, including commented-out settings (the
/// example configs document optional keys that way) and the keys of inline tables (as
/// section `<section>.<key>{}`). Quoted keys are data (host names), not settings.
fn toml_keys(toml: &str) -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in toml.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') && !line.contains('=') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            continue;
        }
        keys.insert((section.clone(), key.to_owned()));
        if value.trim_start().starts_with('{') {
            // Inline table keys: every `name =` inside the braces, flattened.
            let inner = format!("{section}.{key}{{}}");
            for part in value.split(['{', ',']) {
                if let Some((k, _)) = part.split_once('=') {
                    let k = k.trim();
                    if !k.is_empty()
                        && k.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                        })
                    {
                        keys.insert((inner.clone(), k.to_owned()));
                    }
                }
            }
        }
    }
    keys
}

/// Asserts every setting of `config` is documented in one of the example configs.
fn assert_documented(config_name: &str, config: &str, examples: &[&str]) {
    let documented: BTreeSet<(String, String)> =
        examples.iter().flat_map(|e| toml_keys(&read(e))).collect();
    let undocumented: Vec<_> = toml_keys(config)
        .into_iter()
        .filter(|k| !documented.contains(k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{config_name} uses settings {examples:?} do not document: {undocumented:?}\n{config}"
    );
}

const PROXY_EXAMPLES: &[&str] = &[
    "deploy/xks-proxy.example.toml",
    "deploy/xks-proxy.backends.example.toml",
];
const FRONTEND_EXAMPLES: &[&str] = &["deploy/kms-frontend.example.toml"];

/// The value of `key = "..."` in `[section]` of a TOML text.
fn toml_string(toml: &str, section: &str, key: &str) -> String {
    let mut current = String::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if current == section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return v.trim().trim_matches('"').to_owned();
        }
    }
    panic!("no {key} in [{section}] of:\n{toml}")
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The configs the image entry points write at first start, after their own `check-config`.
struct FirstStart {
    _dir: tempfile::TempDir,
    proxy_softhsm: String,
    proxy_embedded: String,
    frontend: String,
}

fn run_entrypoint(script: &str, env: &[(&str, &Path)], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(root().join("deploy/docker").join(script));
    cmd.arg("check-config")
        .env("PATH", path_with_binaries())
        .env_remove("XKS_PROXY_CONFIG")
        .env_remove("KMS_FRONTEND_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("run the entry point")
}

fn first_start() -> FirstStart {
    assert!(
        Path::new(testkit::kms_backends::SOFTHSM_MODULE).exists()
            && Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok(),
        "SoftHSMv2 is not installed: apt-get install softhsm2 (scripts/test installs it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let share = d.join("shared");
    let mut configs = Vec::new();
    for backend in ["softhsm", "embedded"] {
        let home = d.join(format!("proxy-{backend}"));
        let conf = home.join("softhsm2.conf");
        std::fs::create_dir_all(&home).expect("mkdir");
        let out = run_entrypoint(
            "xks-proxy-entrypoint",
            &[
                ("XKS_PROXY_HOME", &home),
                ("SOFTHSM2_CONF", &conf),
                ("XKS_PROXY_SHARE", &share.join("xks-proxy")),
            ],
            &[("XKS_PROXY_BACKEND", backend)],
        );
        assert!(out.status.success(), "{backend}: {}", text(&out));
        // The entry point's first start ran check-config itself; the command ran it again.
        assert!(
            text(&out).contains("test key round trip ACTIVE"),
            "{}",
            text(&out)
        );
        configs.push(std::fs::read_to_string(home.join("config.toml")).expect("config"));
    }
    let proxy_ca = share.join("xks-proxy/ca.pem");
    assert!(proxy_ca.exists(), "the proxy published no CA");
    let home = d.join("frontend");
    let out = run_entrypoint(
        "kms-frontend-entrypoint",
        &[
            ("KMS_FRONTEND_HOME", &home),
            ("KMS_FRONTEND_PROXY_CA", &proxy_ca),
            ("KMS_FRONTEND_SHARE", &share.join("kms-frontend")),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is valid"), "{}", text(&out));
    let frontend = std::fs::read_to_string(home.join("config.toml")).expect("config");
    let proxy_embedded = configs.pop().expect("embedded");
    let proxy_softhsm = configs.pop().expect("softhsm");
    FirstStart {
        _dir: dir,
        proxy_softhsm,
        proxy_embedded,
        frontend,
    }
}

/// deploy/compose.yaml as JSON (PyYAML, which the AWS CLI brings).
fn compose() -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(root().join("deploy/compose.yaml"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("compose JSON")
}

/// The Dockerfile's stages: (name, its lines).
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in read("deploy/Dockerfile").lines() {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let name = rest
                .split_whitespace()
                .skip_while(|w| *w != "AS")
                .nth(1)
                .unwrap_or("")
                .to_owned();
            stages.push((name, Vec::new()));
        } else if let Some((_, lines)) = stages.last_mut() {
            lines.push(line.to_owned());
        }
    }
    stages
}

/// A stage's lines including those of the stages it is built `FROM`.
fn stage_lines(stages: &[(String, Vec<String>)], name: &str) -> Vec<String> {
    let text = read("deploy/Dockerfile");
    let parent = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .find(|l| l.ends_with(&format!(" AS {name}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    let mut lines = if stages.iter().any(|(n, _)| n == parent) {
        stage_lines(stages, parent)
    } else {
        Vec::new()
    };
    let own = stages
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, l)| l.clone())
        .unwrap_or_else(|| panic!("no stage {name} in deploy/Dockerfile"));
    lines.extend(own);
    lines
}

/// The admin port a stage's HEALTHCHECK probes and the ports it EXPOSEs.
fn health_and_exposed(lines: &[String]) -> (Option<u16>, Vec<u16>) {
    let mut health = None;
    let mut exposed = Vec::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("HEALTHCHECK ") {
            health = rest
                .split('"')
                .filter_map(|w| w.parse().ok())
                .next_back()
                .or(health);
        }
        if let Some(rest) = l.strip_prefix("EXPOSE ") {
            exposed = rest
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        }
    }
    (health, exposed)
}

#[test]
fn entrypoints_write_configs_that_pass_check_config_on_documented_settings() {
    let fs = first_start();
    assert_documented(
        "xks-proxy-entrypoint (softhsm)",
        &fs.proxy_softhsm,
        PROXY_EXAMPLES,
    );
    assert_documented(
        "xks-proxy-entrypoint (embedded)",
        &fs.proxy_embedded,
        PROXY_EXAMPLES,
    );
    assert_documented("kms-frontend-entrypoint", &fs.frontend, FRONTEND_EXAMPLES);
    assert!(
        fs.proxy_softhsm.contains("type = \"pkcs11\"")
            && fs
                .proxy_softhsm
                .contains(testkit::kms_backends::SOFTHSM_MODULE),
        "{}",
        fs.proxy_softhsm
    );
}

#[test]
fn compose_dockerfile_and_entrypoints_agree_on_targets_ports_and_settings() {
    let fs = first_start();
    let compose = compose();
    let stages = dockerfile_stages();
    let dockerfile = read("deploy/Dockerfile");
    let services = compose["services"].as_object().expect("services");
    let entrypoint_of = |target: &str| match target {
        "xks-proxy" | "xks-proxy-softhsm" => "xks-proxy-entrypoint",
        "kms-frontend" => "kms-frontend-entrypoint",
        "demo-client" => "demo-client",
        other => panic!("no entry point known for target {other}"),
    };
    let mut targets = BTreeSet::new();
    for (name, service) in services {
        // Published ports: on 127.0.0.1 only.
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().expect("short port syntax");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond 127.0.0.1"
            );
        }
        let Some(target) = service["build"]["target"].as_str() else {
            continue;
        };
        targets.insert(target.to_owned());
        assert!(
            stages.iter().any(|(n, _)| n == target),
            "{name}: no stage {target} in deploy/Dockerfile"
        );
        for arg in service["build"]["args"]
            .as_object()
            .into_iter()
            .flat_map(|a| a.keys())
        {
            assert!(
                dockerfile.contains(&format!("ARG {arg}")),
                "{name}: build argument {arg} is not an ARG of deploy/Dockerfile"
            );
        }
        // Every variable the compose file sets is one the entry point documents and reads.
        let script = read(&format!("deploy/docker/{}", entrypoint_of(target)));
        for var in service["environment"]
            .as_object()
            .into_iter()
            .flat_map(|e| e.keys())
        {
            assert!(
                script.contains(&format!("#   {var}")) && script.contains(&format!("{{{var}")),
                "{name} sets {var}, which deploy/docker/{} does not document and read",
                entrypoint_of(target)
            );
        }
    }
    for t in ["xks-proxy-softhsm", "kms-frontend", "demo-client"] {
        assert!(targets.contains(t), "compose builds no {t} image");
    }

    // The ports: what the generated configs listen on is what the images expose, what
    // compose publishes, and what the health checks probe.
    let checks = [
        ("xks-proxy", "xks-proxy-softhsm", &fs.proxy_softhsm),
        ("kms-frontend", "kms-frontend", &fs.frontend),
    ];
    for (service, target, config) in checks {
        let listen = port_of(&toml_string(config, "server", "listen"));
        let admin = toml_string(config, "admin", "listen");
        assert!(admin.starts_with("127.0.0.1:"), "{service}: admin {admin}");
        let (health, exposed) = health_and_exposed(&stage_lines(&stages, target));
        assert_eq!(health, Some(port_of(&admin)), "{target}: HEALTHCHECK port");
        assert_eq!(exposed, vec![listen], "{target}: EXPOSE");
        let published: Vec<u16> = services[service]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(port_of))
            .collect();
        assert_eq!(
            published,
            vec![listen],
            "{service}: published container port"
        );
    }
    // Both entry points share the proxy's CA and credential where the demo client reads them.
    let demo = read("deploy/docker/demo-client");
    for path in [
        "/shared/kms-frontend/ca.pem",
        "/shared/kms-frontend/credentials.env",
        "/shared/xks-proxy/kms-console.json",
        "/shared/xks-proxy/proxy.log",
    ] {
        assert!(demo.contains(path), "demo-client does not read {path}");
    }
    assert_eq!(
        services["xks-proxy"]["environment"]["XKS_PROXY_LOG_COPY"].as_str(),
        Some("/shared/xks-proxy/proxy.log")
    );
    assert_eq!(
        services["demo"]["network_mode"].as_str(),
        Some("service:kms-frontend"),
        "the demo reaches the front end as localhost, the name on its certificate"
    );
}

#[test]
fn the_ci_base_image_holds_every_package_the_images_install() {
    let script = read("scripts/test-compose");
    let listed: BTreeSet<&str> = script
        .lines()
        .find_map(|l| l.strip_prefix("base_packages="))
        .expect("base_packages= in scripts/test-compose")
        .split(',')
        .collect();
    let dockerfile = read("deploy/Dockerfile");
    let installed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RUN install-packages "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .take_while(|w| *w != "&&" && *w != "\\")
        })
        .collect();
    assert!(installed.len() >= 4, "{installed:?}");
    for p in installed {
        assert!(
            listed.contains(p),
            "deploy/Dockerfile installs {p}, which CI's debootstrap base lacks"
        );
    }
}

/// `systemd-analyze verify` of `unit` with `drop_in` (if any), ExecStart pointing at the
/// built binaries; its findings, empty when the unit is clean.
fn verify_unit(unit: &str, drop_in: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit_text = read(&format!("deploy/systemd/{unit}")).replace(
        "/usr/local/bin/",
        &format!("{}/", testkit::bins::target_dir().display()),
    );
    let path = dir.path().join(unit);
    std::fs::write(&path, unit_text).expect("write unit");
    if let Some(d) = drop_in {
        let dir_in = dir.path().join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir_in).expect("mkdir");
        std::fs::copy(
            root().join(format!("deploy/systemd/{unit}.d/{d}")),
            dir_in.join(d),
        )
        .expect("copy drop-in");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd (scripts/test installs it)");
    let findings = text(&out);
    if out.status.success() {
        findings
    } else {
        format!("exit {}: {findings}", out.status)
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    for (unit, drop_in) in [
        ("xks-proxy.service", None),
        ("xks-proxy.service", Some("pkcs11.conf")),
        ("xks-proxy.service", Some("transit.conf")),
        ("kms-frontend.service", None),
    ] {
        let findings = verify_unit(unit, drop_in);
        assert!(
            findings.trim().is_empty(),
            "{unit} {drop_in:?}: systemd-analyze verify:\n{findings}"
        );
    }
    // The check finds what it should: a misspelt setting and a missing binary.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.service");
    std::fs::write(
        &bad,
        "[Service]\nExecStart=/nonexistent/xks-proxy serve\nProtectSytem=strict\n",
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .expect("systemd-analyze");
    let findings = text(&out);
    assert!(
        findings.contains("ProtectSytem") && findings.contains("/nonexistent/xks-proxy"),
        "{findings}"
    );
}

/// `Key=value` settings of a unit file and its drop-in.
fn unit_settings(unit: &str, drop_in: Option<&str>) -> Vec<(String, String)> {
    let mut text = read(&format!("deploy/systemd/{unit}"));
    if let Some(d) = drop_in {
        text.push_str(&read(&format!("deploy/systemd/{unit}.d/{d}")));
    }
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn systemd_configs_use_documented_settings_and_their_units_paths() {
    let cases = [
        ("xks-proxy.toml", "xks-proxy.service", None, PROXY_EXAMPLES),
        (
            "xks-proxy.pkcs11.toml",
            "xks-proxy.service",
            Some("pkcs11.conf"),
            PROXY_EXAMPLES,
        ),
        (
            "xks-proxy.transit.toml",
            "xks-proxy.service",
            Some("transit.conf"),
            PROXY_EXAMPLES,
        ),
        (
            "kms-frontend.toml",
            "kms-frontend.service",
            None,
            FRONTEND_EXAMPLES,
        ),
    ];
    for (config_file, unit, drop_in, examples) in cases {
        let config = read(&format!("deploy/systemd/{config_file}"));
        assert_documented(config_file, &config, examples);
        let settings = unit_settings(unit, drop_in);
        let get = |key: &str| -> Vec<&str> {
            settings
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let service = unit.trim_end_matches(".service");
        // The unit runs the config this file is meant to be, at the path the unit names.
        let exec = get("ExecStart").concat();
        assert!(
            exec.ends_with(&format!("serve --config /etc/{service}/config.toml")),
            "{unit}: ExecStart {exec}"
        );
        // Every credential path in the config is one the unit (with its drop-in) loads.
        let cred_dir = format!("/run/credentials/{unit}/");
        let loaded: BTreeSet<&str> = get("LoadCredential")
            .into_iter()
            .filter_map(|v| v.split(':').next())
            .collect();
        let used: BTreeSet<String> = config
            .split('"')
            .filter_map(|s| s.strip_prefix(&cred_dir))
            .map(str::to_owned)
            .collect();
        assert!(!used.is_empty(), "{config_file} loads no credentials");
        for name in &used {
            assert!(
                loaded.contains(name.as_str()),
                "{config_file} reads {cred_dir}{name}, which {unit} {drop_in:?} does not load"
            );
        }
        // Paths written at run time are in the unit's StateDirectory (ProtectSystem=strict
        // leaves nothing else writable).
        let state = format!("/var/lib/{}/", get("StateDirectory").concat());
        for path in config.split('"').filter(|s| s.starts_with("/var/lib/")) {
            assert!(
                path.starts_with(&state),
                "{config_file}: {path} is outside {unit}'s StateDirectory"
            );
        }
        for hardening in [
            "NoNewPrivileges",
            "ProtectSystem",
            "PrivateTmp",
            "StateDirectory",
            "LoadCredential",
            "User",
        ] {
            assert!(!get(hardening).is_empty(), "{unit}: no {hardening}");
        }
        assert_eq!(get("ProtectSystem"), vec!["strict"], "{unit}");
    }
}

#[test]
fn scripts_demo_encrypts_and_decrypts_through_the_proxy_and_cleans_up() {
    let home = tempfile::tempdir().expect("tempdir");
    let demo_home = home.path().join("demo");
    let out = Command::new(root().join("scripts/demo"))
        .current_dir(root())
        .env("DEMO_BIN_DIR", testkit::bins::target_dir())
        .env("DEMO_HOME", &demo_home)
        .env("HOME", home.path())
        .output()
        .expect("scripts/demo");
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    for expected in [
        "demo: created custom key store cks-",
        "demo: connected it to the proxy",
        "demo: decrypted it: hello through the XKS proxy",
        "operation=\"Encrypt\" key_id=\"demo-key-1\" status=200",
        "demo: OK: ",
        "scripts/dev-stack",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in:\n{printed}");
    }
    // Both services were stopped: the proxy's log ends with its shutdown, nothing listens.
    let proxy_config = std::fs::read_to_string(demo_home.join("xks-proxy/config.toml"))
        .expect("the demo's proxy config");
    let listen = toml_string(&proxy_config, "server", "listen");
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "the demo's proxy still listens on {listen}"
    );
    // Nothing was written to ~/.xks-proxy or ~/.kms-frontend.
    assert!(!home.path().join(".xks-proxy").exists());
    assert!(!home.path().join(".kms-frontend").exists());
}

/// With `DEMO_KEEP=1` (the default on a terminal) the demo leaves the stack running after its
/// success line, prints the lines that use it, and those lines work when pasted into another
/// shell; SIGINT (Ctrl-C) stops both services and removes the throw-away directory.
#[test]
fn scripts_demo_keeps_the_stack_running_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(root().join("scripts/demo"))
        .current_dir(root())
        .env("DEMO_BIN_DIR", testkit::bins::target_dir())
        .env("DEMO_KEEP", "1")
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("scripts/demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("demo: running") {
                let _ = tx.send(text.clone());
            }
        }
        let _ = tx.send(text);
    });
    let printed = rx
        .recv_timeout(std::time::Duration::from_secs(180))
        .expect("the demo's output");
    assert!(printed.contains("demo: OK: "), "{printed}");
    assert!(printed.contains("The stack keeps running"), "{printed}");
    // The printed lines, pasted into another shell.
    let pasted: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("The stack keeps running"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(pasted.len(), 3, "{printed}");
    let used = Command::new("bash")
        .args(["-c", &pasted.join("\n")])
        .env("HOME", home.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("bash");
    assert!(used.status.success(), "{}", text(&used));
    let listed: serde_json::Value = serde_json::from_slice(&used.stdout).expect("JSON");
    assert_eq!(listed["Keys"].as_array().map(Vec::len), Some(1), "{listed}");

    testkit::signal_process(child.id(), "INT");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "Ctrl-C ends the demo with a failure status"
    );
    let left: Vec<_> = std::fs::read_dir(home.path())
        .expect("home")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("xks-demo."))
        .collect();
    assert!(left.is_empty(), "the throw-away directory was not removed");
}
