//! A `kms-frontend` process for a test: a home directory with a test PKI, a root key, a
//! SQLite database and configured accounts and principals, plus ways to drive it with the
//! real clients (boto3, the AWS CLI) as a newcomer would.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::pki::TestPki;

/// A principal of a test account.
#[derive(Debug, Clone)]
pub struct TestPrincipal {
    /// Account id.
    pub account: String,
    /// IAM ARN.
    pub arn: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret: String,
}

/// A front-end home and config, not yet running.
#[derive(Debug)]
pub struct FrontendFixture {
    /// The home directory (deleted on drop).
    pub home: tempfile::TempDir,
    /// The test PKI.
    pub pki: TestPki,
    /// Principals, grouped into accounts by their account id.
    pub principals: Vec<TestPrincipal>,
    /// Extra top-level TOML (e.g. `[limits]`).
    pub extra_toml: String,
}

fn access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let tail: String = crate::random_bytes(16)
        .into_iter()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect();
    format!("AKIA{tail}")
}

impl Default for FrontendFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl FrontendFixture {
    /// Two accounts: 111122223333 (alice, bob) and 444455556666 (carol).
    pub fn new() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::create(&home.path().join("tls"));
        let secrets = home.path().join("secrets");
        std::fs::create_dir_all(&secrets).expect("mkdir");
        write_private(&secrets.join("root.key"), &crate::random_secret());
        let principal = |account: &str, name: &str| TestPrincipal {
            account: account.into(),
            arn: format!("arn:aws:iam::{account}:user/{name}"),
            access_key_id: access_key_id(),
            secret: crate::random_secret(),
        };
        Self {
            home,
            pki,
            principals: vec![
                principal("111122223333", "alice"),
                principal("111122223333", "bob"),
                principal("444455556666", "carol"),
            ],
            extra_toml: String::new(),
        }
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("config.toml")
    }

    /// Writes the config.
    pub fn write_config(&self) {
        let mut t = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncertificate_chain = \"tls/server.pem\"\nprivate_key = \"tls/server.key\"\n\n[storage]\npath = \"data/kms.sqlite\"\n\n[root_key]\nfile = \"secrets/root.key\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n",
        );
        t.push_str(&self.extra_toml);
        t.push('\n');
        let mut accounts: Vec<&str> = self.principals.iter().map(|p| p.account.as_str()).collect();
        accounts.dedup();
        for account in accounts {
            let _ = writeln!(t, "[[accounts]]\nid = \"{account}\"\n");
            for p in self.principals.iter().filter(|p| p.account == account) {
                let file = format!("secrets/{}.secret", p.access_key_id);
                write_private(&self.home.path().join(&file), &p.secret);
                let _ = writeln!(
                    t,
                    "[[accounts.principals]]\narn = \"{}\"\naccess_key_id = \"{}\"\nsecret_file = \"{file}\"\n",
                    p.arn, p.access_key_id
                );
            }
        }
        std::fs::write(self.config_path(), t).expect("write config");
    }

    /// Writes the config and starts the server.
    pub fn start(self) -> RunningFrontend {
        self.write_config();
        RunningFrontend::spawn(self)
    }
}

fn write_private(path: &Path, text: &str) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(path, format!("{text}\n")).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A running front end (killed on drop).
#[derive(Debug)]
pub struct RunningFrontend {
    /// Its fixture.
    pub fixture: FrontendFixture,
    child: Child,
    /// The bound port.
    pub port: u16,
    /// The admin listener's port.
    pub admin_port: u16,
}

impl RunningFrontend {
    /// Starts the server for a prepared fixture and waits until it listens.
    pub fn spawn(fixture: FrontendFixture) -> Self {
        let log = fixture.home.path().join("frontend.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut child = Command::new(crate::bins::bin("kms-frontend-test"))
            .args(["serve", "--config"])
            .arg(fixture.config_path())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn kms-frontend");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let port_of = |l: &str| {
                l.rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
            };
            let mut api = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("kms-frontend listening on ") {
                    api = port_of(&line);
                } else if line.starts_with("kms-frontend admin listening on ") {
                    let _ = tx.send(api.zip(port_of(&line)));
                }
            }
            let _ = tx.send(None);
        });
        let Ok(Some((port, admin_port))) = rx.recv_timeout(Duration::from_secs(30)) else {
            panic!(
                "kms-frontend did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        };
        Self {
            fixture,
            child,
            port,
            admin_port,
        }
    }

    /// `https://localhost:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The value of one series of the admin listener's `/metrics`, or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The server's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.fixture.home.path().join("frontend.log")).unwrap_or_default()
    }

    /// The first principal (alice, account 111122223333).
    pub fn alice(&self) -> &TestPrincipal {
        &self.fixture.principals[0]
    }

    /// Environment for AWS clients acting as `p` in `region`.
    pub fn client_env(&self, p: &TestPrincipal, region: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), p.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), p.secret.clone()),
            ("AWS_DEFAULT_REGION".into(), region.into()),
            ("AWS_REGION".into(), region.into()),
            (
                "AWS_CA_BUNDLE".into(),
                self.fixture.pki.ca_pem.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_KMS".into(), self.endpoint()),
            ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
            ("AWS_MAX_ATTEMPTS".into(), "1".into()),
            ("AWS_RETRY_MODE".into(), "standard".into()),
        ]
    }

    /// Runs a Python (boto3) script as `p` in `region`; its stdout must be one JSON value.
    pub fn boto3(
        &self,
        p: &TestPrincipal,
        region: &str,
        script: &str,
        args: &[&str],
    ) -> serde_json::Value {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script.py");
        let prelude = "import json, sys, boto3, botocore\nfrom botocore.config import Config\nkms = boto3.client('kms', config=Config(retries={'max_attempts': 1}, parameter_validation=False))\n\ndef call(op, **kw):\n    try:\n        r = getattr(kms, op)(**kw)\n        r.pop('ResponseMetadata', None)\n        return {'ok': r}\n    except botocore.exceptions.ClientError as e:\n        return {'error': e.response['Error'].get('Code'), 'message': e.response['Error'].get('Message'), 'status': e.response['ResponseMetadata'].get('HTTPStatusCode')}\n\n";
        std::fs::write(&path, format!("{prelude}{script}")).expect("write script");
        let mut c = Command::new("python3");
        c.arg(&path).args(args);
        for (k, v) in self.client_env(p, region) {
            c.env(k, v);
        }
        let out = c.output().expect(
            "python3 (with boto3) must be installed; the README's test command installs it",
        );
        assert!(
            out.status.success(),
            "boto3 script failed:\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "boto3 script printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs the AWS CLI (`aws kms <args>`) as `p` in `region`.
    pub fn aws_cli(&self, p: &TestPrincipal, region: &str, args: &[&str]) -> Output {
        let mut c = Command::new("aws");
        c.arg("kms")
            .args(args)
            .args(["--endpoint-url", &self.endpoint(), "--output", "json"]);
        for (k, v) in self.client_env(p, region) {
            c.env(k, v);
        }
        c.output().expect("the AWS CLI must be installed (pip install awscli); the README's test command installs it")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the config from the fixture (e.g. after changing its principals) and sends
    /// SIGHUP, which makes the front end reload its principals.
    pub fn reload(&self) {
        self.fixture.write_config();
        crate::signal_process(self.pid(), "HUP");
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Moves the service clock forward (test builds only).
    pub async fn advance_clock(&self, seconds: i64) {
        let http = crate::client::http_client(&self.fixture.pki.ca_pem, None, false);
        let r = http
            .post(format!("{}/_test/advance-clock", self.endpoint()))
            .body(serde_json::json!({"seconds": seconds}).to_string())
            .send()
            .await
            .expect("advance clock");
        assert_eq!(r.status(), 200);
    }
}

impl Drop for RunningFrontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
