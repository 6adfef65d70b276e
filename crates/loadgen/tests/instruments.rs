//! Smoke tests of the calibration instruments, run as the `xks-load` binary: `hsm-baseline`
//! on a real SoftHSMv2 token with a key made by the proxy's CLI, and `startup` on the real
//! proxy (`xks-proxy-test`). They check that the instruments work (no error, a well-formed
//! report), never how fast anything is.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use testkit::kms_backends::SoftHsm;
use testkit::proxy::{ProxyFixture, StoreSpec};

fn xks_load(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xks-load"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run xks-load")
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written"))
        .expect("report is JSON")
}

#[test]
fn hsm_baseline_encrypts_with_the_proxys_key_without_errors() {
    // Fails loudly (with the install command) when SoftHSMv2 is missing: never skipped.
    let hsm = SoftHsm::new();
    let mut fixture = ProxyFixture::new();
    fixture
        .env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    let status = fixture.path().join("key-status.toml").display().to_string();
    // The proxy's CLI makes the key, so it carries the label and attributes the proxy uses.
    let fixture = fixture.store(
        StoreSpec::new("hsm", "/hsm")
            .with_backend(hsm.backend_toml(&status))
            .with_keys(&["bench-key"]),
    );
    fixture.prepare();
    let report = fixture.path().join("hsm-baseline.json");
    let pin_file = hsm.pin_file.display().to_string();
    let report_arg = report.display().to_string();
    let conf: &Path = &hsm.conf;
    let out = xks_load(
        &[
            "hsm-baseline",
            "--token-label",
            &hsm.label,
            "--pin-file",
            &pin_file,
            "--key-label",
            "bench-key",
            "--threads",
            "3",
            "--duration",
            "0.5",
            "--json-out",
            &report_arg,
        ],
        &[("SOFTHSM2_CONF", conf)],
    );
    assert_success("hsm-baseline", &out);
    let json = read_json(&report);
    assert_eq!(json["schema"], "xks-load/report/v1");
    assert_eq!(json["target"]["kind"], "pkcs11");
    assert_eq!(json["scenario"]["name"], "pkcs11-raw-encrypt");
    assert_eq!(json["mode"]["concurrency"], 3);
    assert_eq!(json["errors"], 0, "{json}");
    let requests = json["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{json}");
    assert_eq!(json["successes"].as_u64(), Some(requests));
    assert_eq!(
        json["operations"]["Encrypt"]["requests"].as_u64(),
        Some(requests)
    );
    assert!(
        json["server"]["pid"].is_number(),
        "own process measured: {json}"
    );

    // A label the token does not hold is a clear set-up error, not a run full of failures.
    let out = xks_load(
        &[
            "hsm-baseline",
            "--token-label",
            &hsm.label,
            "--pin-file",
            &pin_file,
            "--key-label",
            "no-such-key",
            "--duration",
            "0.5",
        ],
        &[("SOFTHSM2_CONF", conf)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-key") && stderr.contains("matches 0"),
        "{stderr}"
    );
}

#[test]
fn startup_measures_the_real_proxy_and_stops_it_every_time() {
    let fixture =
        ProxyFixture::new().store(StoreSpec::new("main", "/main").with_keys(&["bench-key"]));
    fixture.prepare();
    // The poller needs a known port: the fixture's config with `listen` on a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = fixture.config_text().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let config_path = fixture.path().join("startup.toml");
    std::fs::write(&config_path, config).expect("write config");
    let report = fixture.path().join("21-proxy-startup.json");
    let proxy = testkit::bins::bin("xks-proxy-test");
    let url = format!("https://localhost:{port}/");
    let ca = fixture.pki.ca_pem.display().to_string();
    let out = xks_load(
        &[
            "startup",
            "--url",
            &url,
            "--cacert",
            &ca,
            "--runs",
            "2",
            "--json-out",
            &report.display().to_string(),
            "--",
            &proxy.display().to_string(),
            "serve",
            "--config",
            &config_path.display().to_string(),
        ],
        &[],
    );
    assert_success("startup", &out);
    let json = read_json(&report);
    assert_eq!(json["schema"], "xks-load/startup/v1");
    assert_eq!(json["figure"], "21-proxy-startup");
    assert_eq!(json["runs"], 2);
    assert_eq!(
        json["forced_kills"], 0,
        "the proxy stops on SIGTERM: {json}"
    );
    assert_eq!(json["ready_ms"]["all"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["command"][1], "serve");
    // Every child was stopped: the port is free again.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the proxy is gone");
}
