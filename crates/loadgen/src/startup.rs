//! `xks-load startup`: how long a server takes from `exec` to its first HTTPS answer.
//!
//! Each run spawns the command, then polls the URL every [`POLL_INTERVAL`] with a GET over
//! TLS (the server certificate checked against the given CA) until any HTTP status comes
//! back; the time from spawn to that answer is the run's ready time. The child is then sent
//! SIGTERM and waited for (SIGKILL after [`STOP_TIMEOUT`]), so the next run finds the port
//! free. A child that exits before answering, or does not answer within the timeout, fails
//! the measurement.
//!
//! The report is JSON with schema [`SCHEMA`] (`xks-load/startup/v1`):
//!
//! ```text
//! {
//!   "schema": "xks-load/startup/v1",
//!   "tool_version": "0.1.0",
//!   "figure": "21-proxy-startup",          // --figure, else the --json-out file stem
//!   "command": ["xks-proxy", "serve", "--config", "..."],
//!   "url": "https://localhost:8443/",
//!   "start_time": "2026-11-23T18:00:00Z",
//!   "machine": {...},                      // as in xks-load/report/v1
//!   "runs": 5,
//!   "ready_ms": {"min": 41.2, "median": 44.0, "max": 52.9, "all": [44.0, ...]},
//!   "forced_kills": 0                      // runs whose child ignored SIGTERM
//! }
//! ```

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

use crate::procstat::MachineInfo;
use crate::target::{ClientError, Connector, HttpOptions, HttpVersion};

/// The schema identifier of startup reports.
pub const SCHEMA: &str = "xks-load/startup/v1";
/// Time between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How long one poll may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a child may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a failed child's standard error is quoted.
const STDERR_TAIL_BYTES: usize = 2048;

/// What to measure.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    /// The URL to poll (`https://`).
    pub url: String,
    /// PEM of the CA(s) trusted for the server certificate (needed for `https://`).
    pub ca_pem: Option<String>,
    /// Number of start-ups.
    pub runs: usize,
    /// Program and arguments.
    pub command: Vec<String>,
    /// How long one start-up may take before the measurement fails.
    pub timeout: Duration,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// The HTTPS client could not be built.
    #[error("HTTPS client: {0}")]
    Client(#[from] ClientError),
    /// The command could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The child exited before answering.
    #[error(
        "run {run}: the command exited ({status}) before {url} answered; its stderr ends with:\n{stderr}"
    )]
    Exited {
        /// 1-based run number.
        run: usize,
        /// The URL polled.
        url: String,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// No answer within the timeout.
    #[error("run {run}: {url} did not answer within {timeout:?} (last error: {last_error})")]
    Timeout {
        /// 1-based run number.
        run: usize,
        /// The URL polled.
        url: String,
        /// The timeout.
        timeout: Duration,
        /// The last poll's error.
        last_error: String,
    },
    /// Waiting for or signalling the child failed.
    #[error("run {run}: {what}: {source}")]
    Child {
        /// 1-based run number.
        run: usize,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Ready-time summary, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadySummary {
    /// Fastest run.
    pub min: f64,
    /// Median (the mean of the middle two for an even number of runs).
    pub median: f64,
    /// Slowest run.
    pub max: f64,
    /// Every run, in order.
    pub all: Vec<f64>,
}

impl ReadySummary {
    /// The summary of `all` (empty: all zeros).
    pub fn of(all: Vec<f64>) -> Self {
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            min: sorted.first().copied().unwrap_or(0.0),
            median,
            max: sorted.last().copied().unwrap_or(0.0),
            all,
        }
    }
}

/// A startup report (`xks-load/startup/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartupReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The version of xks-load.
    pub tool_version: String,
    /// The figure's name.
    pub figure: String,
    /// The command started.
    pub command: Vec<String>,
    /// The URL polled.
    pub url: String,
    /// When the first run started, RFC 3339 UTC.
    pub start_time: String,
    /// The machine.
    pub machine: MachineInfo,
    /// Number of runs.
    pub runs: usize,
    /// Time from spawn to the first HTTP answer.
    pub ready_ms: ReadySummary,
    /// Runs whose child had to be killed after ignoring SIGTERM.
    pub forced_kills: usize,
}

impl StartupReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One line of text.
    pub fn to_text(&self) -> String {
        format!(
            "startup    {}: ready in min {:.1} ms, median {:.1} ms, max {:.1} ms over {} run(s){}\n",
            self.figure,
            self.ready_ms.min,
            self.ready_ms.median,
            self.ready_ms.max,
            self.runs,
            if self.forced_kills > 0 {
                format!(" ({} needed SIGKILL)", self.forced_kills)
            } else {
                String::new()
            }
        )
    }
}

/// Sends SIGTERM to `pid` with bash's builtin `kill` (a positive pid only: never a group).
fn terminate(pid: u32) -> std::io::Result<()> {
    let status = std::process::Command::new("bash")
        .args(["-c", "kill -TERM \"$1\" 2>/dev/null || true", "kill"])
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill exited with {status}")))
    }
}

/// Keeps the last [`STDERR_TAIL_BYTES`] of a child's standard error.
fn drain_stderr(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut t = tail
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                t.extend_from_slice(buf.get(..n).unwrap_or_default());
                let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
                t.drain(..excess);
            }
        });
    }
    tail
}

/// Stops `child`: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Returns whether it had to
/// be killed.
async fn stop(child: &mut Child, run: usize) -> Result<bool, StartupError> {
    let child_err = |what| move |source| StartupError::Child { run, what, source };
    if let Some(pid) = child.id() {
        terminate(pid).map_err(child_err("SIGTERM"))?;
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(waited) => waited.map(|_| false).map_err(child_err("wait")),
        Err(_) => {
            child.kill().await.map_err(child_err("SIGKILL"))?;
            Ok(true)
        }
    }
}

/// One start-up: the ready time in ms, and whether the child had to be killed.
async fn one_run(
    options: &StartupOptions,
    http: &HttpOptions,
    run: usize,
) -> Result<(f64, bool), StartupError> {
    let (program, args) = options
        .command
        .split_first()
        .ok_or_else(|| StartupError::Options("no command given (after --)".into()))?;
    // A fresh client per run: nothing pooled from the previous server.
    let client = Connector::new(http.clone())?.client(0)?;
    let spawned = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StartupError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stderr = drain_stderr(&mut child);
    let deadline = spawned + options.timeout;
    let ready = loop {
        let last_error = match client.get(&options.url).send().await {
            Ok(_) => break spawned.elapsed(),
            Err(e) => e.to_string(),
        };
        if let Some(status) = child.try_wait().map_err(|source| StartupError::Child {
            run,
            what: "try_wait",
            source,
        })? {
            // Let the drain task take the last bytes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let tail = stderr
                .lock()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            return Err(StartupError::Exited {
                run,
                url: options.url.clone(),
                status,
                stderr: tail,
            });
        }
        if Instant::now() >= deadline {
            let _ = stop(&mut child, run).await;
            return Err(StartupError::Timeout {
                run,
                url: options.url.clone(),
                timeout: options.timeout,
                last_error,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    // Close our connection first, so a graceful drain has nothing to wait for.
    drop(client);
    let killed = stop(&mut child, run).await?;
    Ok((ready.as_secs_f64() * 1000.0, killed))
}

/// Runs the measurement.
pub async fn measure(
    options: &StartupOptions,
    figure: String,
) -> Result<StartupReport, StartupError> {
    if options.runs == 0 {
        return Err(StartupError::Options("--runs must be at least 1".into()));
    }
    if options.command.is_empty() {
        return Err(StartupError::Options("no command given (after --)".into()));
    }
    let http = HttpOptions {
        ca_pem: options.ca_pem.clone(),
        version: HttpVersion::Auto,
        timeout: POLL_TIMEOUT,
        ..HttpOptions::default()
    };
    let start_time = OffsetDateTime::from(SystemTime::now())
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut all = Vec::with_capacity(options.runs);
    let mut forced_kills = 0;
    for run in 1..=options.runs {
        let (ms, killed) = one_run(options, &http, run).await?;
        all.push(ms);
        forced_kills += usize::from(killed);
    }
    Ok(StartupReport {
        schema: SCHEMA.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        figure,
        command: options.command.clone(),
        url: options.url.clone(),
        start_time,
        machine: MachineInfo::detect(),
        runs: options.runs,
        ready_ms: ReadySummary::of(all),
        forced_kills,
    })
}

/// The default figure name: the stem of the JSON output file, else `startup`.
pub fn default_figure(json_out: Option<&PathBuf>) -> String {
    json_out.and_then(|p| p.file_stem()).map_or_else(
        || "startup".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_even_and_empty_runs() {
        let s = ReadySummary::of(vec![30.0, 10.0, 20.0]);
        assert_eq!((s.min, s.median, s.max), (10.0, 20.0, 30.0));
        assert_eq!(s.all, [30.0, 10.0, 20.0]);
        let s = ReadySummary::of(vec![40.0, 10.0, 20.0, 30.0]);
        assert_eq!(s.median, 25.0);
        let s = ReadySummary::of(Vec::new());
        assert_eq!((s.min, s.median, s.max), (0.0, 0.0, 0.0));
    }

    #[test]
    fn figure_defaults_to_the_file_stem() {
        let p = PathBuf::from("/tmp/results/21-proxy-startup.json");
        assert_eq!(default_figure(Some(&p)), "21-proxy-startup");
        assert_eq!(default_figure(None), "startup");
    }

    #[tokio::test]
    async fn a_command_that_exits_at_once_is_an_error_with_its_stderr() {
        let options = StartupOptions {
            url: "https://localhost:1/".into(),
            ca_pem: None,
            runs: 1,
            command: vec![
                "bash".into(),
                "-c".into(),
                "echo cannot-start >&2; exit 3".into(),
            ],
            timeout: Duration::from_secs(30),
        };
        match measure(&options, "x".into()).await {
            Err(StartupError::Exited { stderr, status, .. }) => {
                assert!(stderr.contains("cannot-start"), "{stderr}");
                assert_eq!(status.code(), Some(3));
            }
            other => panic!("expected Exited, got {other:?}"),
        }
    }
}
