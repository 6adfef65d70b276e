//! An `xks-proxy` process for a test: a home directory with a test PKI, a root key, key
//! stores with keys made by the real CLI, SigV4 credentials, and the running server.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::client::XksClient;
use crate::pki::TestPki;

/// One logical key store of a test proxy.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// Name.
    pub name: String,
    /// URI path prefix.
    pub prefix: String,
    /// SigV4 credentials: (access key id, secret).
    pub credentials: Vec<(String, String)>,
    /// `aad_construction` setting, if not the default.
    pub aad_construction: Option<&'static str>,
    /// Accepted regions (empty: any).
    pub regions: Vec<String>,
    /// Request quota, if not the default.
    pub requests_per_second: Option<u32>,
    /// Body of a `[key_stores.fault_injection]` table (test builds only).
    pub fault_injection: Option<String>,
    /// Keys created (enabled, ENCRYPT+DECRYPT) before the proxy starts.
    pub keys: Vec<String>,
    /// The inline `backend = { ... }` TOML, if not the embedded store under `keys/`.
    pub backend: Option<String>,
}

impl StoreSpec {
    /// A store with one random credential and no keys.
    pub fn new(name: &str, prefix: &str) -> Self {
        Self {
            name: name.into(),
            prefix: prefix.into(),
            credentials: vec![(crate::random_access_key_id(), crate::random_secret())],
            aad_construction: None,
            regions: Vec::new(),
            requests_per_second: None,
            fault_injection: None,
            keys: Vec::new(),
            backend: None,
        }
    }

    /// Uses another backend (e.g. `SoftHsm::backend_toml`, `OpenBao::backend_toml`).
    pub fn with_backend(mut self, toml: String) -> Self {
        self.backend = Some(toml);
        self
    }

    /// Adds keys created before start.
    pub fn with_keys(mut self, keys: &[&str]) -> Self {
        self.keys.extend(keys.iter().map(|k| (*k).to_owned()));
        self
    }
}

/// A proxy home directory and config, not yet running.
#[derive(Debug)]
pub struct ProxyFixture {
    /// The home directory (deleted on drop).
    pub home: tempfile::TempDir,
    /// The test PKI in `home/tls`.
    pub pki: TestPki,
    /// Key stores.
    pub stores: Vec<StoreSpec>,
    /// Extra top-level TOML (e.g. `[limits]`, `[health]` tables).
    pub extra_toml: String,
    /// Serve plain HTTP instead of TLS (the explicit opt-in).
    pub plaintext_http: bool,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// mTLS: the client CA bundle and the accepted client names.
    pub client_auth: Option<(PathBuf, Vec<String>)>,
    /// Text of a secondary authorization policy file (written to `home/policy.toml`).
    pub policy: Option<String>,
    /// Extra keys of the `[server]` table (e.g. `max_connections = 2`).
    pub server_toml: String,
}

impl Default for ProxyFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyFixture {
    /// A fixture with a fresh home, PKI and root key, and no key stores yet.
    pub fn new() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::create(&home.path().join("tls"));
        let secrets = home.path().join("secrets");
        std::fs::create_dir_all(&secrets).expect("mkdir");
        std::fs::create_dir_all(home.path().join("keys")).expect("mkdir");
        write_private(&secrets.join("root.key"), &crate::random_secret());
        Self {
            home,
            pki,
            stores: Vec::new(),
            extra_toml: String::new(),
            plaintext_http: false,
            env: Vec::new(),
            client_auth: None,
            policy: None,
            server_toml: String::new(),
        }
    }

    /// Adds a key store.
    pub fn store(mut self, spec: StoreSpec) -> Self {
        self.stores.push(spec);
        self
    }

    /// Adds top-level TOML.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("config.toml")
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// The store file of key store `i`.
    pub fn store_file(&self, i: usize) -> PathBuf {
        self.home
            .path()
            .join(format!("keys/{}.store", self.stores[i].name))
    }

    /// Renders the config text.
    pub fn config_text(&self) -> String {
        let mut t = String::new();
        t.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
        t.push_str(&self.server_toml);
        t.push('\n');
        if self.plaintext_http {
            t.push_str("allow_plaintext_http = true\n");
        } else {
            let _ = writeln!(
                t,
                "[server.tls]\ncertificate_chain = \"tls/server.pem\"\nprivate_key = \"tls/server.key\"\n"
            );
            if let Some((ca, names)) = &self.client_auth {
                let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                let _ = writeln!(
                    t,
                    "[server.tls.client_auth]\nca_bundle = \"{}\"\naccepted_names = [{}]\n",
                    ca.display(),
                    quoted.join(", ")
                );
            }
        }
        if let Some(policy) = &self.policy {
            std::fs::write(self.home.path().join("policy.toml"), policy).expect("write policy");
            t.push_str("[authorization]\npolicy_file = \"policy.toml\"\n\n");
        }
        t.push_str("[logging]\nlevel = \"info\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n");
        t.push_str(&self.extra_toml);
        t.push('\n');
        for s in &self.stores {
            let _ = writeln!(
                t,
                "[[key_stores]]\nname = \"{}\"\npath_prefix = \"{}\"",
                s.name, s.prefix
            );
            if let Some(a) = s.aad_construction {
                let _ = writeln!(t, "aad_construction = \"{a}\"");
            }
            if !s.regions.is_empty() {
                let quoted: Vec<String> = s.regions.iter().map(|r| format!("\"{r}\"")).collect();
                let _ = writeln!(t, "regions = [{}]", quoted.join(", "));
            }
            if let Some(rps) = s.requests_per_second {
                let _ = writeln!(t, "requests_per_second = {rps}");
            }
            match &s.backend {
                Some(b) => {
                    let _ = writeln!(t, "backend = {b}");
                }
                None => {
                    let _ = writeln!(
                        t,
                        "backend = {{ type = \"embedded\", store = \"keys/{}.store\", root_key_file = \"secrets/root.key\" }}",
                        s.name
                    );
                }
            }
            if let Some(f) = &s.fault_injection {
                let _ = writeln!(t, "[key_stores.fault_injection]\n{f}");
            }
            for (akid, secret) in &s.credentials {
                let file = format!("secrets/{akid}.secret");
                write_private(&self.home.path().join(&file), secret);
                let _ = writeln!(
                    t,
                    "[[key_stores.credentials]]\naccess_key_id = \"{akid}\"\nsecret_file = \"{file}\""
                );
            }
            t.push('\n');
        }
        t
    }

    /// Writes the config file.
    pub fn write_config(&self) {
        std::fs::write(self.config_path(), self.config_text()).expect("write config");
    }

    /// Runs `xks-proxy <args> --config <config>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run xks-proxy")
    }

    /// The command `xks-proxy <args> --config <config>`, not yet run.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bins::bin("xks-proxy-test"));
        c.args(args).arg("--config").arg(self.config_path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a `keys` command on key store `store` and asserts success; returns stdout.
    pub fn keys(&self, store: &str, args: &[&str]) -> String {
        let mut full = vec!["keys", "--key-store", store];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "xks-proxy {full:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the config, creates every store and its keys with the CLI.
    pub fn prepare(&self) {
        self.write_config();
        for s in &self.stores {
            self.keys(&s.name, &["init"]);
            for k in &s.keys {
                self.keys(&s.name, &["create", k]);
            }
        }
    }

    /// Prepares and starts the proxy; waits until it listens.
    pub fn start(self) -> RunningProxy {
        self.prepare();
        RunningProxy::spawn(self)
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A running proxy process (killed on drop).
#[derive(Debug)]
pub struct RunningProxy {
    /// Its fixture.
    pub fixture: ProxyFixture,
    child: Child,
    /// The bound port.
    pub port: u16,
    /// The admin listener's port.
    pub admin_port: u16,
    stderr_path: PathBuf,
}

impl RunningProxy {
    /// Starts the server for an already prepared fixture.
    pub fn spawn(fixture: ProxyFixture) -> Self {
        let stderr_path = fixture.home.path().join("proxy.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .expect("log file");
        let mut c = Command::new(crate::bins::bin("xks-proxy-test"));
        c.arg("serve")
            .arg("--config")
            .arg(fixture.config_path())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", "info");
        for (k, v) in &fixture.env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn xks-proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (port, admin_port) = wait_for_listen_lines(stdout, &stderr_path);
        Self {
            fixture,
            child,
            port,
            admin_port,
            stderr_path,
        }
    }

    /// `https://localhost:<port>` (or `http://` for the plain-HTTP opt-in).
    pub fn base_url(&self) -> String {
        let scheme = if self.fixture.plaintext_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://localhost:{}", self.port)
    }

    /// The URL of an XKS API path of key store `store` (`suffix` after `/kms/xks/v1/`).
    pub fn api_url(&self, store: usize, suffix: &str) -> String {
        format!(
            "{}{}/kms/xks/v1/{suffix}",
            self.base_url(),
            self.fixture.stores[store].prefix
        )
    }

    /// A signing client with key store `store`'s first credential.
    pub fn client(&self, store: usize) -> XksClient {
        let (akid, secret) = self.fixture.stores[store].credentials[0].clone();
        XksClient::new(&self.fixture.pki.ca_pem, &akid, &secret)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one metric series (exact `name{labels}` as rendered), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for exit (at most `timeout`); returns whether it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::signal_process(self.child.id(), "TERM");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_listen_lines(stdout: std::process::ChildStdout, log: &Path) -> (u16, u16) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(stdout);
        let port_of = |line: &str| {
            line.rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok())
        };
        let mut api = None;
        for line in reader.lines().map_while(Result::ok) {
            if line.starts_with("xks-proxy listening on ") {
                api = port_of(&line);
            } else if line.starts_with("xks-proxy admin listening on ") {
                let _ = tx.send(api.zip(port_of(&line)));
            }
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(ports)) => ports,
        _ => panic!(
            "xks-proxy did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}
