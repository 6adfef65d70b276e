//! The report of a run, as text and as JSON.
//!
//! The JSON schema is [`SCHEMA`] (`xks-load/report/v1`); fields are only ever added within a
//! version. Its shape (durations in milliseconds as numbers, sizes in KiB):
//!
//! ```text
//! {
//!   "schema": "xks-load/report/v1",
//!   "tool_version": "0.1.0",
//!   "command_line": ["xks-load", "--scenario", "xks-encrypt", ...],  // secrets redacted
//!   "start_time": "2025-01-01T12:00:00.123Z",                      // RFC 3339, UTC
//!   "machine": {"nproc": 2, "cpu_model": "...", "mem_total_kib": 24000000, "kernel": "6.1.0"},
//!   "target": {"kind": "xks" | "kms", "url": "https://...",
//!              "http_version": "auto" | "http1" | "http2",
//!              "new_connection_per_request": false, "tls_resumption": false,
//!              "pools": 1, "timeout_ms": 30000},
//!   "scenario": {"name": "xks-encrypt", ...options},   // see `Scenario`
//!   "mode": {"kind": "closed", "concurrency": 16}
//!         | {"kind": "open", "rate": 200.0, "max_in_flight": 10000},
//!   "duration_s": 5.0, "warmup_s": 0.0, "request_limit": null | 1000,
//!   "elapsed_s": 5.002,                  // measured interval
//!   "requests": 12345, "successes": 12345, "errors": 0,
//!   "throughput_rps": 2468.0,            // completed requests / elapsed_s
//!   "success_rps": 2468.0,
//!   "latency_ms": {"min", "mean", "p50", "p90", "p99", "p99_9", "max"},
//!   "service_time_ms": {...same...},     // from the actual send; == latency in closed loop
//!   "errors_by_name": {"ThrottlingException": 3, "transport:timeout": 1},
//!   "http_versions": {"HTTP/2.0": 12345},
//!   "operations": {"Encrypt": {"requests", "successes", "latency_ms": {...}}},
//!   "open_loop": null | {"scheduled", "late_sends", "blocked_at_cap", "not_sent",
//!                        "max_send_lag_ms"},
//!   "server": null | {"pid", "cpu_seconds", "cpu_percent_of_one_core",
//!                     "rss_peak_kib", "rss_end_kib", "rss_samples"},
//!   "client": null | {...same, for xks-load itself...}
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::histogram::Histogram;
use crate::procstat::{MachineInfo, ProcessStats};
use crate::run::{Mode, RunResult};
use crate::target::HttpVersion;

/// The report schema identifier.
pub const SCHEMA: &str = "xks-load/report/v1";

/// Latency summary in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest (exact).
    pub max: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LatencySummary {
    /// The summary of a histogram of microseconds.
    pub fn of(h: &Histogram) -> Self {
        Self {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.quantile_us(0.50)),
            p90: ms(h.quantile_us(0.90)),
            p99: ms(h.quantile_us(0.99)),
            p99_9: ms(h.quantile_us(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The target, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// `xks` or `kms`.
    pub kind: String,
    /// The XKS URI base or KMS endpoint.
    pub url: String,
    /// The HTTP version setting.
    pub http_version: HttpVersion,
    /// Whether each request had a connection of its own.
    pub new_connection_per_request: bool,
    /// Whether TLS sessions may be resumed.
    pub tls_resumption: bool,
    /// Number of connection pools.
    pub pools: usize,
    /// Request timeout, ms.
    pub timeout_ms: u64,
}

/// One operation's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationReport {
    /// Completed requests.
    pub requests: u64,
    /// 2xx responses.
    pub successes: u64,
    /// Latency summary.
    pub latency_ms: LatencySummary,
}

/// Open-loop scheduling facts, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenLoopReport {
    /// Requests scheduled in the measured interval.
    pub scheduled: u64,
    /// Sent more than 10 ms after their scheduled time (still charged from it).
    pub late_sends: u64,
    /// Times the in-flight cap was reached.
    pub blocked_at_cap: u64,
    /// Scheduled but never sent.
    pub not_sent: u64,
    /// Largest scheduled-to-sent delay, ms.
    pub max_send_lag_ms: f64,
}

/// A run's report; serialised as the `xks-load/report/v1` JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The version of xks-load.
    pub tool_version: String,
    /// The command line, with secrets redacted.
    pub command_line: Vec<String>,
    /// Start of the run, RFC 3339 UTC.
    pub start_time: String,
    /// The machine.
    pub machine: MachineInfo,
    /// The target.
    pub target: TargetReport,
    /// The scenario and its options.
    pub scenario: Value,
    /// The load mode.
    pub mode: Mode,
    /// Measured duration setting, s.
    pub duration_s: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// `--requests`, if given.
    pub request_limit: Option<u64>,
    /// The measured interval, s.
    pub elapsed_s: f64,
    /// Completed requests.
    pub requests: u64,
    /// 2xx responses.
    pub successes: u64,
    /// Failed requests.
    pub errors: u64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Successful requests per second.
    pub success_rps: f64,
    /// Latency (open loop: from the scheduled time).
    pub latency_ms: LatencySummary,
    /// Service time (from the actual send).
    pub service_time_ms: LatencySummary,
    /// Failures by name.
    pub errors_by_name: BTreeMap<String, u64>,
    /// Responses by HTTP version.
    pub http_versions: BTreeMap<String, u64>,
    /// Per operation.
    pub operations: BTreeMap<String, OperationReport>,
    /// Open-loop facts.
    pub open_loop: Option<OpenLoopReport>,
    /// The server process.
    pub server: Option<ProcessStats>,
    /// The load generator's own process.
    pub client: Option<ProcessStats>,
}

/// The secret-bearing options whose values are redacted from the recorded command line.
const SECRET_OPTIONS: &[&str] = &["--secret"];

/// `args` with the value of every secret option replaced by `<redacted>`.
pub fn redact_command_line(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in args {
        if redact_next {
            out.push("<redacted>".to_owned());
            redact_next = false;
            continue;
        }
        if SECRET_OPTIONS.contains(&arg.as_str()) {
            redact_next = true;
            out.push(arg);
        } else if let Some(option) = SECRET_OPTIONS
            .iter()
            .find(|o| arg.starts_with(&format!("{o}=")))
        {
            out.push(format!("{option}=<redacted>"));
        } else {
            out.push(arg);
        }
    }
    out
}

impl Report {
    /// Builds the report of `result`.
    pub fn new(result: &RunResult, command_line: Vec<String>, machine: MachineInfo) -> Self {
        let stats = &result.stats;
        let elapsed_s = result.elapsed.as_secs_f64();
        let per_second = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let start_time = OffsetDateTime::from(result.start_time)
            .format(&Rfc3339)
            .unwrap_or_default();
        Self {
            schema: SCHEMA.to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            command_line,
            start_time,
            machine,
            target: TargetReport {
                kind: result.target_kind.to_owned(),
                url: result.target_url.clone(),
                http_version: result.http.version,
                new_connection_per_request: result.http.new_connection_per_request,
                tls_resumption: result.http.tls_resumption,
                pools: result.http.pools.max(1),
                timeout_ms: u64::try_from(result.http.timeout.as_millis()).unwrap_or(u64::MAX),
            },
            scenario: serde_json::to_value(&result.scenario).unwrap_or(Value::Null),
            mode: result.config.mode.clone(),
            duration_s: result.config.duration.as_secs_f64(),
            warmup_s: result.config.warmup.as_secs_f64(),
            request_limit: result.config.requests,
            elapsed_s,
            requests: stats.requests,
            successes: stats.successes,
            errors: stats.error_count(),
            throughput_rps: per_second(stats.requests),
            success_rps: per_second(stats.successes),
            latency_ms: LatencySummary::of(&stats.latency),
            service_time_ms: LatencySummary::of(&stats.service_time),
            errors_by_name: stats.errors.clone(),
            http_versions: stats.http_versions.clone(),
            operations: stats
                .operations
                .iter()
                .map(|(name, op)| {
                    (
                        (*name).to_owned(),
                        OperationReport {
                            requests: op.requests,
                            successes: op.successes,
                            latency_ms: LatencySummary::of(&op.latency),
                        },
                    )
                })
                .collect(),
            open_loop: result.open_loop.as_ref().map(|o| OpenLoopReport {
                scheduled: o.scheduled,
                late_sends: o.late_sends,
                blocked_at_cap: o.blocked_at_cap,
                not_sent: o.not_sent,
                max_send_lag_ms: ms(o.max_send_lag_us),
            }),
            server: result.server.clone(),
            client: result.client.clone(),
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let scenario_options = match &self.scenario {
            Value::Object(map) => map
                .iter()
                .filter(|(k, v)| k.as_str() != "name" && !v.is_null())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let scenario_name = self.scenario["name"].as_str().unwrap_or("?");
        if self.target.kind == "pkcs11" {
            let _ = writeln!(
                t,
                "scenario   {scenario_name} {scenario_options}\ntarget     pkcs11 {} ({} session(s), no HTTP)",
                self.target.url, self.target.pools
            );
        } else {
            let _ = writeln!(
                t,
                "scenario   {scenario_name} {scenario_options}\ntarget     {} {} (http {}, {}{} pool(s), timeout {} ms)",
                self.target.kind,
                self.target.url,
                serde_json::to_value(self.target.http_version)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                if self.target.new_connection_per_request {
                    "new connection per request, "
                } else {
                    "keep-alive, "
                },
                self.target.pools,
                self.target.timeout_ms
            );
        }
        let mode = match &self.mode {
            Mode::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            Mode::Open {
                rate,
                max_in_flight,
            } => format!("open loop, {rate} req/s, max in flight {max_in_flight}"),
        };
        let limit = self
            .request_limit
            .map(|n| format!(", at most {n} requests"))
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "mode       {mode}, {:.1} s (warm-up {:.1} s{limit})",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            t,
            "requests   {} in {:.3} s: {} ok, {} failed; throughput {:.1} req/s ({:.1} ok/s)",
            self.requests,
            self.elapsed_s,
            self.successes,
            self.errors,
            self.throughput_rps,
            self.success_rps
        );
        let latency = |l: &LatencySummary| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, min {:.3})",
                l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean, l.min
            )
        };
        let _ = writeln!(t, "latency ms {}", latency(&self.latency_ms));
        if let Some(open) = &self.open_loop {
            let _ = writeln!(t, "service ms {}", latency(&self.service_time_ms));
            let _ = writeln!(
                t,
                "schedule   {} scheduled, {} sent late (>10 ms), {} blocked at the cap, {} not sent, max send lag {:.3} ms",
                open.scheduled,
                open.late_sends,
                open.blocked_at_cap,
                open.not_sent,
                open.max_send_lag_ms
            );
        }
        if self.operations.len() > 1 {
            for (name, op) in &self.operations {
                let _ = writeln!(
                    t,
                    "  {name:<16} {:>8} req {:>8} ok  p50 {:.3}  p99 {:.3}  max {:.3}",
                    op.requests,
                    op.successes,
                    op.latency_ms.p50,
                    op.latency_ms.p99,
                    op.latency_ms.max
                );
            }
        }
        if self.errors_by_name.is_empty() {
            let _ = writeln!(t, "errors     none");
        } else {
            let list: Vec<String> = self
                .errors_by_name
                .iter()
                .map(|(name, n)| format!("{name}: {n}"))
                .collect();
            let _ = writeln!(t, "errors     {}", list.join(", "));
        }
        let versions: Vec<String> = self
            .http_versions
            .iter()
            .map(|(v, n)| format!("{v}: {n}"))
            .collect();
        if !versions.is_empty() {
            let _ = writeln!(t, "versions   {}", versions.join(", "));
        }
        let process = |label: &str, p: &ProcessStats| {
            format!(
                "{label:<10} pid {}: CPU {:.1} % of one core ({:.2} s), RSS peak {:.1} MiB, end {:.1} MiB",
                p.pid,
                p.cpu_percent_of_one_core,
                p.cpu_seconds,
                p.rss_peak_kib as f64 / 1024.0,
                p.rss_end_kib as f64 / 1024.0
            )
        };
        if let Some(server) = &self.server {
            let _ = writeln!(t, "{}", process("server", server));
        }
        if let Some(client) = &self.client {
            let _ = writeln!(t, "{}", process("xks-load", client));
        }
        let _ = writeln!(
            t,
            "machine    {} CPU(s), {}, {:.1} GiB, kernel {}; started {}",
            self.machine.nproc,
            if self.machine.cpu_model.is_empty() {
                "unknown CPU"
            } else {
                &self.machine.cpu_model
            },
            self.machine.mem_total_kib as f64 / (1024.0 * 1024.0),
            self.machine.kernel,
            self.start_time
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::run::{OpenLoopStats, RunConfig, Stats};
    use crate::scenario::{EncryptOptions, Scenario};
    use crate::target::HttpOptions;

    fn sample_result() -> RunResult {
        let mut stats = Stats::default();
        for i in 1..=1000u64 {
            stats.latency.record_us(i * 100);
            stats.service_time.record_us(i * 50);
        }
        stats.requests = 1000;
        stats.successes = 990;
        stats.errors.insert("ThrottlingException".into(), 7);
        stats.errors.insert("transport:timeout".into(), 3);
        stats.http_versions.insert("HTTP/2.0".into(), 990);
        RunResult {
            scenario: Scenario::XksEncrypt(EncryptOptions {
                size: 4096,
                aad_size: Some(64),
                cdiv: true,
            }),
            target_kind: "xks",
            target_url: "https://localhost:8443/kms/xks/v1".into(),
            http: HttpOptions::default(),
            config: RunConfig {
                mode: Mode::Open {
                    rate: 200.0,
                    max_in_flight: 10_000,
                },
                duration: Duration::from_secs(5),
                requests: None,
                warmup: Duration::from_secs(1),
                server_pid: Some(42),
            },
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            elapsed: Duration::from_secs(5),
            stats,
            open_loop: Some(OpenLoopStats {
                scheduled: 1000,
                late_sends: 2,
                blocked_at_cap: 0,
                not_sent: 0,
                max_send_lag_us: 12_500,
            }),
            server: Some(ProcessStats {
                pid: 42,
                cpu_seconds: 2.5,
                cpu_percent_of_one_core: 50.0,
                rss_peak_kib: 20480,
                rss_end_kib: 19000,
                rss_samples: 50,
            }),
            client: None,
        }
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            mem_total_kib: 1024 * 1024,
            kernel: "6.1.0".into(),
        }
    }

    #[test]
    fn json_has_the_documented_schema() {
        let command = redact_command_line(
            [
                "xks-load",
                "--secret",
                "s3cr3t",
                "--secret=other",
                "--rate",
                "200",
            ]
            .map(String::from),
        );
        let report = Report::new(&sample_result(), command, machine());
        let json: Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["schema"], "xks-load/report/v1");
        assert_eq!(json["start_time"], "2023-11-14T22:13:20Z");
        assert_eq!(
            json["command_line"],
            serde_json::json!([
                "xks-load",
                "--secret",
                "<redacted>",
                "--secret=<redacted>",
                "--rate",
                "200"
            ])
        );
        assert!(!report.to_json().contains("s3cr3t"));
        assert_eq!(json["machine"]["nproc"], 2);
        assert_eq!(json["machine"]["cpu_model"], "Test CPU");
        assert_eq!(json["target"]["kind"], "xks");
        assert_eq!(json["target"]["http_version"], "auto");
        assert_eq!(json["scenario"]["name"], "xks-encrypt");
        assert_eq!(json["scenario"]["size"], 4096);
        assert_eq!(json["scenario"]["aad_size"], 64);
        assert_eq!(json["mode"]["kind"], "open");
        assert_eq!(json["mode"]["rate"], 200.0);
        assert_eq!(json["requests"], 1000);
        assert_eq!(json["successes"], 990);
        assert_eq!(json["errors"], 10);
        assert_eq!(json["throughput_rps"], 200.0);
        assert_eq!(json["success_rps"], 198.0);
        assert_eq!(json["errors_by_name"]["ThrottlingException"], 7);
        assert_eq!(json["errors_by_name"]["transport:timeout"], 3);
        assert_eq!(json["http_versions"]["HTTP/2.0"], 990);
        assert_eq!(json["open_loop"]["max_send_lag_ms"], 12.5);
        assert_eq!(json["server"]["cpu_percent_of_one_core"], 50.0);
        assert_eq!(json["server"]["rss_peak_kib"], 20480);
        assert!(json["client"].is_null());
        let latency = &json["latency_ms"];
        assert_eq!(latency["max"], 100.0);
        let within = |v: &Value, expected: f64| {
            let v = v.as_f64().expect("number");
            (v - expected).abs() / expected <= 0.01
        };
        assert!(within(&latency["p50"], 50.0), "{latency}");
        assert!(within(&latency["p90"], 90.0), "{latency}");
        assert!(within(&latency["p99"], 99.0), "{latency}");
        assert!(within(&latency["p99_9"], 99.9), "{latency}");
        for key in ["min", "mean", "p50", "p90", "p99", "p99_9", "max"] {
            assert!(json["service_time_ms"][key].is_number(), "{key}");
        }
        // The document round-trips through the schema type.
        let back: Report = serde_json::from_value(json).expect("schema type");
        assert_eq!(back.errors_by_name, report.errors_by_name);
        assert_eq!(back.mode, report.mode);
    }

    #[test]
    fn text_names_everything() {
        let report = Report::new(&sample_result(), vec!["xks-load".into()], machine());
        let text = report.to_text();
        for needle in [
            "xks-encrypt",
            "open loop, 200 req/s",
            "throughput 200.0 req/s",
            "p99.9",
            "ThrottlingException: 7",
            "transport:timeout: 3",
            "server     pid 42: CPU 50.0 % of one core",
            "RSS peak 20.0 MiB",
            "2 CPU(s), Test CPU",
            "sent late",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
