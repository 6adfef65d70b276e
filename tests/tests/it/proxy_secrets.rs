//! Secrets the proxy holds: a credential that a reload removes leaves no copy of its secret
//! in the process's memory (scanned through `/proc/<pid>/mem`); a TLS private key file that
//! others may read starts with a warning, not a refusal; a setup made with `init --listen
//! 0.0.0.0:…` keeps its unauthenticated admin listener on loopback.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::client::XksClient;
use testkit::memscan::find_in_process_memory;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};
use testkit::xks;

const KEY: &str = "secrets-key-1";

async fn encrypt_status(p: &RunningProxy, akid: &str, secret: &str) -> u16 {
    XksClient::new(&p.fixture.pki.ca_pem, akid, secret)
        .post_json(
            &p.api_url(0, &format!("keys/{KEY}/encrypt")),
            &xks::encrypt(b"hello", None, false),
        )
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_removed_by_a_reload_leaves_no_copy_of_its_secret_in_memory() {
    let mut store = StoreSpec::new("main", "").with_keys(&[KEY]);
    let (kept_id, kept_secret) = store.credentials[0].clone();
    let (gone_id, gone_secret) = (testkit::random_access_key_id(), testkit::random_secret());
    store
        .credentials
        .push((gone_id.clone(), gone_secret.clone()));
    let mut p = ProxyFixture::new().store(store).start();
    assert_eq!(encrypt_status(&p, &kept_id, &kept_secret).await, 200);
    assert_eq!(encrypt_status(&p, &gone_id, &gone_secret).await, 200);

    // The scan must be able to find a live secret, or "not found" below would prove nothing.
    let (found, regions) = find_in_process_memory(p.pid(), gone_secret.as_bytes());
    assert!(regions > 10, "only {regions} memory regions could be read");
    assert!(
        !found.is_empty(),
        "the scan did not find a secret the proxy is using"
    );

    p.fixture.stores[0]
        .credentials
        .retain(|(id, _)| *id != gone_id);
    p.fixture.write_config();
    testkit::signal_process(p.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while encrypt_status(&p, &gone_id, &gone_secret).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the reload never removed the credential: {}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Requests on the remaining credential keep working (and churn the heap a little).
    for _ in 0..20 {
        assert_eq!(encrypt_status(&p, &kept_id, &kept_secret).await, 200);
    }

    let (found, _) = find_in_process_memory(p.pid(), gone_secret.as_bytes());
    assert!(
        found.is_empty(),
        "the removed credential's secret is still in the proxy's memory at {found:x?}"
    );
    let (kept, _) = find_in_process_memory(p.pid(), kept_secret.as_bytes());
    assert!(
        !kept.is_empty(),
        "the scan no longer finds the credential still in use"
    );
}

#[tokio::test]
async fn a_tls_private_key_that_others_can_read_starts_with_a_warning() {
    let f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    let key_file = f.path().join("tls/server.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = f.start();
    let (akid, secret) = p.fixture.stores[0].credentials[0].clone();
    assert_eq!(encrypt_status(&p, &akid, &secret).await, 200);
    let logs = p.logs();
    assert!(
        logs.contains("the TLS private key file") && logs.contains("has permissions 644"),
        "no warning about the readable TLS key:\n{logs}"
    );

    // The same setup with an owner-only key file starts without the warning.
    let f = ProxyFixture::new().store(StoreSpec::new("main", "").with_keys(&[KEY]));
    std::fs::set_permissions(
        f.path().join("tls/server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let p = f.start();
    assert_eq!(encrypt_status(&p, &akid_of(&p), &secret_of(&p)).await, 200);
    assert!(
        !p.logs().contains("the TLS private key file"),
        "{}",
        p.logs()
    );
}

fn akid_of(p: &RunningProxy) -> String {
    p.fixture.stores[0].credentials[0].0.clone()
}

fn secret_of(p: &RunningProxy) -> String {
    p.fixture.stores[0].credentials[0].1.clone()
}

/// A port that was free a moment ago (with the one after it).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = a.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// The local addresses (hex `ADDR:PORT` as in /proc/net/tcp{,6}) listening on `port`.
fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 0A is LISTEN.
            if f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}")) {
                out.push(f[1].to_owned());
            }
        }
    }
    out
}

#[test]
fn init_listening_on_every_interface_keeps_the_admin_listener_on_loopback() {
    let home = tempfile::tempdir().expect("tempdir");
    let port = free_port_pair();
    let out = Command::new(testkit::bins::bin("xks-proxy-test"))
        .arg("init")
        .arg("--home")
        .arg(home.path())
        .arg("--listen")
        .arg(format!("0.0.0.0:{port}"))
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(home.path().join("config.toml")).expect("config");
    let admin = config
        .split("[admin]")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.starts_with("listen")))
        .expect("an [admin] listen line");
    assert_eq!(admin, format!("listen = \"127.0.0.1:{}\"", port + 1));
    assert!(
        config.contains(&format!("listen = \"0.0.0.0:{port}\"")),
        "{config}"
    );

    // Served, the admin port is bound to 127.0.0.1 only.
    let mut child = Command::new(testkit::bins::bin("xks-proxy-test"))
        .arg("serve")
        .arg("--config")
        .arg(home.path().join("config.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin_port = port + 1;
    while listening_addresses(admin_port).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the admin listener never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bound = listening_addresses(admin_port);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(bound, vec![format!("0100007F:{admin_port:04X}")]);
}
