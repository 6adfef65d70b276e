//! A `kms-frontend` process for a test: a home directory with a test PKI, a root key, a
//! database and configured accounts and principals, plus ways to drive it with the real
//! clients (boto3, the AWS CLI) as a newcomer would.
//!
//! The database is an SQLite file in the home, or, with `KMS_TEST_STORAGE=postgres`, a
//! schema of its own on the PostgreSQL database `KMS_TEST_POSTGRES_URL` names (dropped with
//! the last fixture using it), so the same suites run on both backends. Several fixtures
//! may share one PostgreSQL schema, one root key and the same principals: a fleet of front
//! ends ([`FrontendFixture::fleet_member`]).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
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
    /// Where the front end stores its data.
    pub storage: TestStorage,
}

/// The variable choosing the storage backend of the suites' front ends: `sqlite` (the
/// default) or `postgres`.
pub const STORAGE_VAR: &str = "KMS_TEST_STORAGE";

/// The variable naming the test PostgreSQL database,
/// `postgres://user:password@host:port/database` (the role needs `CREATE` on it).
pub const POSTGRES_URL_VAR: &str = "KMS_TEST_POSTGRES_URL";

/// Where a fixture's front end stores its data.
#[derive(Debug, Clone)]
pub enum TestStorage {
    /// `data/kms.sqlite` in the fixture's home.
    Sqlite,
    /// A PostgreSQL schema.
    Postgres(PgTarget),
}

/// A front end's PostgreSQL settings: its schema, and how it reaches the server.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The schema (shared by every fixture of a fleet).
    pub schema: Arc<PgSchema>,
    /// `host:port` to connect to instead of the server's own (a [`crate::relay::TcpRelay`]
    /// in front of it).
    pub via: Option<String>,
    /// Extra `[storage]` lines (e.g. `statement_timeout_ms = 500`).
    pub extra: String,
}

/// The test PostgreSQL database, parsed from [`POSTGRES_URL_VAR`].
#[derive(Debug, Clone)]
pub struct PgServer {
    user: String,
    password: String,
    /// `host:port` of the server.
    pub address: String,
    database: String,
}

impl PgServer {
    /// The server [`POSTGRES_URL_VAR`] names; panics (never skips) when it is not set.
    pub fn from_env() -> Self {
        let url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set: this test needs PostgreSQL (scripts/test starts \
                 PostgreSQL 15 and sets it)"
            )
        });
        fn bad<T>() -> T {
            panic!("{POSTGRES_URL_VAR}: expected postgres://user:password@host:port/db")
        }
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .unwrap_or_else(bad);
        let (userinfo, rest) = rest.rsplit_once('@').unwrap_or_else(bad);
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (address, database) = rest.split_once('/').unwrap_or_else(bad);
        let database = database.split('?').next().unwrap_or_default();
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:5432")
        };
        Self {
            user: user.into(),
            password: password.into(),
            address,
            database: database.into(),
        }
    }

    /// Runs `sql` with `psql` as the test role (administration outside the front ends).
    pub fn admin(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(format!(
                "postgres://{}@{}/{}",
                self.user, self.address, self.database
            ))
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("psql must be installed for the PostgreSQL tests (postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A schema of its own on the test database: created empty, dropped with everything in it
/// when the last fixture holding it is dropped.
#[derive(Debug)]
pub struct PgSchema {
    /// The server.
    pub server: PgServer,
    /// The schema name.
    pub name: String,
}

impl PgSchema {
    /// A new empty schema on the server [`POSTGRES_URL_VAR`] names.
    pub fn create() -> Arc<Self> {
        let server = PgServer::from_env();
        let name = format!("e2e_{}", hex_lower(&crate::random_bytes(8)));
        server.admin(&format!("CREATE SCHEMA {name}"));
        Arc::new(Self { server, name })
    }

    /// Runs `sql` in this schema and returns its output (`psql -At`).
    pub fn query(&self, sql: &str) -> String {
        self.server
            .admin(&format!("SET search_path TO {}; {sql}", self.name))
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Front ends may still hold connections (a killed process's sessions end a moment
        // later); DROP SCHEMA waits for their locks, bounded by the lock timeout.
        let _ = Command::new("psql")
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
                self.name
            ))
            .arg(format!(
                "postgres://{}@{}/{}",
                self.server.user, self.server.address, self.server.database
            ))
            .env("PGPASSWORD", &self.server.password)
            .stdout(Stdio::null())
            .status();
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TestStorage {
    /// The backend [`STORAGE_VAR`] chooses (SQLite when unset); PostgreSQL gets a fresh
    /// schema.
    pub fn from_env() -> Self {
        match std::env::var(STORAGE_VAR).as_deref() {
            Err(_) | Ok("" | "sqlite") => Self::Sqlite,
            Ok("postgres") => Self::postgres(),
            Ok(other) => panic!("{STORAGE_VAR}={other}: expected sqlite or postgres"),
        }
    }

    /// A fresh PostgreSQL schema, whatever [`STORAGE_VAR`] says.
    pub fn postgres() -> Self {
        Self::Postgres(PgTarget {
            schema: PgSchema::create(),
            via: None,
            extra: String::new(),
        })
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// The `[storage]` section for a front end whose home is `home` (PostgreSQL: the
    /// password goes to an owner-only file there, never into the URL).
    fn toml(&self, home: &Path) -> String {
        match self {
            Self::Sqlite => "[storage]\npath = \"data/kms.sqlite\"\n".into(),
            Self::Postgres(t) => {
                let s = &t.schema.server;
                write_private(&home.join("secrets/postgres.password"), &s.password);
                let address = t.via.as_deref().unwrap_or(&s.address);
                format!(
                    "[storage]\nurl = \"postgres://{}@{address}/{}?options=-c%20search_path%3D{}\"\npassword_file = \"secrets/postgres.password\"\n{}\n",
                    s.user, s.database, t.schema.name, t.extra
                )
            }
        }
    }
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
            storage: TestStorage::from_env(),
        }
    }

    /// Another front end of the same fleet: its own home, PKI and listen addresses, the same
    /// root key, principals, extra config and database (which must be PostgreSQL).
    pub fn fleet_member(&self) -> Self {
        assert!(
            self.storage.is_postgres(),
            "a fleet shares one PostgreSQL database"
        );
        let home = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::create(&home.path().join("tls"));
        let root =
            std::fs::read_to_string(self.home.path().join("secrets/root.key")).expect("root key");
        write_private(&home.path().join("secrets/root.key"), root.trim_end());
        Self {
            home,
            pki,
            principals: self.principals.clone(),
            extra_toml: self.extra_toml.clone(),
            storage: self.storage.clone(),
        }
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("config.toml")
    }

    /// Writes the config.
    pub fn write_config(&self) {
        let mut t = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncertificate_chain = \"tls/server.pem\"\nprivate_key = \"tls/server.key\"\n\n",
        );
        t.push_str(&self.storage.toml(self.home.path()));
        t.push_str(
            "\n[root_key]\nfile = \"secrets/root.key\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n",
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

    /// Stops the process with SIGTERM (a graceful shutdown) and waits up to 30 s for it to
    /// exit, then kills it; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        crate::signal_process(self.pid(), "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_hard();
        false
    }

    /// Stops the process (`graceful`: SIGTERM, and it must exit by itself; else SIGKILL, no
    /// shutdown at all) and starts it again on the same home, config and database.
    pub fn restart(mut self, graceful: bool) -> RunningFrontend {
        if graceful {
            assert!(self.stop(), "the front end did not stop on SIGTERM");
        } else {
            self.kill_hard();
        }
        let fixture = std::mem::take(&mut self.fixture);
        drop(self);
        RunningFrontend::spawn(fixture)
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
