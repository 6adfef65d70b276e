//! `xks-load summarize`: turns a directory of JSON reports (schemas `xks-load/report/v1` and
//! `xks-load/startup/v1`) into the Markdown of `BENCHMARKS.md`: the machine and date, one
//! table row per load report, each figure's ratio to the same run's baseline, a comparison
//! with moto where the run has moto figures, a start-up table, and the commands that
//! reproduce every figure.
//!
//! Reports are rows in file-name order (name them `01-…`, `02-…`). The "vs baseline" column
//! (closed-loop rows only) uses one of two denominators, named in each cell:
//! - `(hsm)`: rows whose figure name contains `pkcs11` are compared with the raw PKCS#11
//!   loop, the first figure whose name contains `hsm-baseline` (`xks-load hsm-baseline`);
//! - `(tls)`: every other row (and PKCS#11 rows when the run has no HSM baseline) with the
//!   trivial TLS server: the latest closed-loop figure before it whose name contains
//!   `baseline` (the first one for rows before any).
//!
//! A figure whose name contains `moto` is paired with the first figure not run against moto
//! that has the same scenario (key ids aside) and load; the pair's ratio is ours / moto.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A report file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is neither a `xks-load/report/v1` nor a `xks-load/startup/v1` report.
    #[error("{path}: not an xks-load/report/v1 or xks-load/startup/v1 JSON report ({reason})")]
    NotAReport {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No reports.
    #[error("{0}: no *.json reports")]
    Empty(PathBuf),
}

/// One loaded report and the name of its figure (the file stem).
#[derive(Debug)]
pub struct Figure {
    /// File stem, e.g. `02-embedded-encrypt-32`.
    pub name: String,
    /// The report.
    pub report: Value,
}

/// Loads every `*.json` report of `dir`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Figure>, SummaryError> {
    let read_err = |path: &Path, source| SummaryError::Read {
        path: path.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SummaryError::Empty(dir.to_owned()));
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
            let report: Value =
                serde_json::from_str(&text).map_err(|e| SummaryError::NotAReport {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if report["schema"] != crate::report::SCHEMA
                && report["schema"] != crate::startup::SCHEMA
            {
                return Err(SummaryError::NotAReport {
                    path,
                    reason: format!("schema is {}", report["schema"]),
                });
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Figure { name, report })
        })
        .collect()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.decimals$}"))
}

fn mode(r: &Value) -> String {
    if r["target"]["kind"] == "pkcs11" {
        return format!("threads={}", r["mode"]["concurrency"]);
    }
    match r["mode"]["kind"].as_str() {
        Some("closed") => format!("closed, c={}", r["mode"]["concurrency"]),
        Some("open") => format!("open, {} req/s", r["mode"]["rate"]),
        _ => "?".into(),
    }
}

fn scenario(r: &Value) -> String {
    let s = &r["scenario"];
    let mut out = s["name"].as_str().unwrap_or("?").to_owned();
    if let Some(size) = s["size"].as_u64() {
        let _ = write!(out, " {size} B");
    }
    if let Some(aad) = s["aad_size"].as_u64() {
        let _ = write!(out, ", AAD {aad} B");
    }
    if s["cdiv"] == true {
        out.push_str(", CDIV");
    }
    if s["origin"].get("EXTERNAL_KEY_STORE").is_some() {
        out.push_str(", EXTERNAL_KEY_STORE");
    }
    out
}

fn errors(r: &Value) -> String {
    match r["errors_by_name"].as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "0".into(),
    }
}

/// Which baseline a row's ratio is taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineKind {
    /// The trivial TLS server (`xks-load baseline-server`).
    Tls,
    /// The raw PKCS#11 loop (`xks-load hsm-baseline`).
    Hsm,
}

impl BaselineKind {
    /// The label shown in the ratio cell.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Hsm => "hsm",
        }
    }
}

fn is_load_report(f: &Figure) -> bool {
    f.report["schema"] == crate::report::SCHEMA
}

fn is_hsm_baseline(name: &str) -> bool {
    name.contains("hsm-baseline")
}

/// The baselines of a run: every closed-loop figure of the trivial TLS server and of the raw
/// PKCS#11 loop, in file-name (= run) order, with its success rate.
///
/// A figure is compared with the latest TLS baseline measured before it (the first one if
/// none precedes it): on a machine whose speed drifts over minutes, a baseline taken just
/// before a figure says more about that figure than one from the start of the run. PKCS#11
/// figures are compared with the first HSM baseline (the raw loop at the figures'
/// concurrency; later ones are variants of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    /// `(figure, successful requests per second)` of the TLS baselines.
    pub tls: Vec<(String, f64)>,
    /// The same for the HSM baselines.
    pub hsm: Vec<(String, f64)>,
}

impl Baselines {
    /// Finds the baselines among `figures`.
    pub fn of(figures: &[Figure]) -> Self {
        let rates = |pick: &dyn Fn(&str) -> bool| {
            figures
                .iter()
                .filter(|f| is_load_report(f) && f.report["mode"]["kind"] == "closed")
                .filter(|f| pick(&f.name))
                .filter_map(|f| {
                    let rate = num(&f.report["success_rps"]).filter(|&b| b > 0.0)?;
                    Some((f.name.clone(), rate))
                })
                .collect()
        };
        Self {
            tls: rates(&|n| n.contains("baseline") && !is_hsm_baseline(n)),
            hsm: rates(&is_hsm_baseline),
        }
    }

    fn nearest(list: &[(String, f64)], name: &str) -> Option<f64> {
        list.iter()
            .rev()
            .find(|(b, _)| b.as_str() <= name)
            .or_else(|| list.first())
            .map(|(_, rate)| *rate)
    }

    /// The denominator of figure `name`'s ratio: PKCS#11 figures against the first HSM
    /// baseline (the TLS one if there is none), everything else against the latest TLS
    /// baseline before `name`.
    pub fn for_figure(&self, name: &str) -> Option<(BaselineKind, f64)> {
        let tls = Self::nearest(&self.tls, name).map(|b| (BaselineKind::Tls, b));
        if name.contains("pkcs11") {
            self.hsm
                .first()
                .map(|(_, b)| (BaselineKind::Hsm, *b))
                .or(tls)
        } else {
            tls
        }
    }

    /// The ratio cell of a figure: `87 % (tls)`, `58 % (hsm)`, or `–` (open loop, no
    /// baseline).
    pub fn ratio_cell(&self, name: &str, report: &Value) -> String {
        match (num(&report["success_rps"]), self.for_figure(name)) {
            (Some(x), Some((kind, b))) if report["mode"]["kind"] == "closed" => {
                format!("{:.0} % ({})", 100.0 * x / b, kind.label())
            }
            _ => "–".into(),
        }
    }
}

/// A report's scenario without its key ids (what two runs against different servers share).
fn scenario_shape(r: &Value) -> Value {
    let mut s = r["scenario"].clone();
    if let Some(map) = s.as_object_mut() {
        map.remove("key_id");
    }
    s
}

/// Pairs of (ours, moto) figures for the moto comparison.
fn moto_pairs(figures: &[Figure]) -> Vec<(&Figure, &Figure)> {
    let loads: Vec<&Figure> = figures.iter().filter(|f| is_load_report(f)).collect();
    loads
        .iter()
        .filter(|m| m.name.contains("moto"))
        .filter_map(|m| {
            loads
                .iter()
                .find(|o| {
                    !o.name.contains("moto")
                        && scenario_shape(&o.report) == scenario_shape(&m.report)
                        && o.report["mode"] == m.report["mode"]
                })
                .map(|o| (*o, *m))
        })
        .collect()
}

/// The "Gates" section: one row per gate of [`crate::gates::GATES`], when the run has the
/// figures of at least one.
fn render_gates(out: &mut String, figures: &[Figure]) {
    let verdicts = crate::gates::evaluate(figures);
    if verdicts
        .iter()
        .all(|v| matches!(v.outcome, crate::gates::Outcome::NotMeasured(_)))
    {
        return;
    }
    out.push_str(
        "## Gates\n\nThe bounds of the benchmark issue (2 cores, load generator on the same \
         machine, loopback), checked on this run's figures by `xks-load summarize`. \
         \"Same run, no work\" is the same measure on the trivial TLS server (or the raw \
         PKCS#11 loop) under the same load: what this machine allowed in this run.\n\n\
         | gate | figures | measured | bound | verdict | same run, no work |\n\
         |---|---|---|---|---|---|\n",
    );
    for v in &verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            v.gate.what,
            v.figures(),
            v.value_cell(),
            v.bound_cell(),
            v.outcome_cell(),
            v.calibration_cell()
        );
    }
    out.push_str("\n## Figures\n\n");
}

/// Renders the Markdown. `command` is the command that regenerates the whole file.
pub fn render(figures: &[Figure], command: &str, notes: &[String]) -> String {
    let mut out = String::new();
    let loads: Vec<&Figure> = figures.iter().filter(|f| is_load_report(f)).collect();
    let startups: Vec<&Figure> = figures.iter().filter(|f| !is_load_report(f)).collect();
    let Some(first) = loads.first().or(startups.first()).map(|f| &f.report) else {
        return "# Benchmarks\n\nNo reports.\n".into();
    };
    let baselines = Baselines::of(figures);
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{command}` from the JSON reports of `xks-load` (schema \
         `xks-load/report/v1`). Load generator and servers share the machine and talk over \
         loopback; every request is SigV4-signed afresh. Compare ratios within one run: the \
         machine is shared and absolute figures move by ±15 % between runs.\n"
    );
    let m = &first["machine"];
    let _ = writeln!(
        out,
        "- Machine: {} CPU(s), {}, {:.1} GiB, kernel {}",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        num(&m["mem_total_kib"]).unwrap_or(0.0) / 1024.0 / 1024.0,
        m["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "- Run started: {}\n",
        first["start_time"].as_str().unwrap_or("?")
    );
    for note in notes {
        let _ = writeln!(out, "{note}\n");
    }
    render_gates(&mut out, figures);
    if !loads.is_empty() {
        out.push_str(
            "| figure | scenario | load | req/s (ok) | vs baseline | p50 ms | p99 ms | p99.9 ms | max ms | errors | server CPU % of 1 core | server RSS peak MiB |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    for f in &loads {
        let r = &f.report;
        let l = &r["latency_ms"];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            scenario(r),
            mode(r),
            fmt_opt(num(&r["success_rps"]), 0),
            baselines.ratio_cell(&f.name, r),
            fmt_opt(num(&l["p50"]), 3),
            fmt_opt(num(&l["p99"]), 3),
            fmt_opt(num(&l["p99_9"]), 3),
            fmt_opt(num(&l["max"]), 3),
            errors(r),
            fmt_opt(num(&r["server"]["cpu_percent_of_one_core"]), 0),
            fmt_opt(num(&r["server"]["rss_peak_kib"]).map(|k| k / 1024.0), 1),
        );
    }
    if !loads.is_empty() {
        out.push_str(
            "\n\"vs baseline\" is the closed-loop success rate over a baseline of the same run: \
             `(tls)` the trivial TLS server (`xks-load baseline-server`, this machine's HTTPS \
             ceiling; the latest of its figures above the row), `(hsm)` for PKCS#11 figures \
             the raw PKCS#11 loop on the same token and key (`xks-load hsm-baseline`: C_EncryptInit + C_Encrypt as the proxy calls them, \
             no HTTP; its server columns are that process itself).\n",
        );
    }
    let pairs = moto_pairs(figures);
    if !pairs.is_empty() {
        out.push_str(
            "\n## Against moto\n\nThe same `xks-load` scenario and load against moto's KMS \
             (`moto_server`, plain HTTP, no SigV4 check, in-memory) in the same run:\n\n\
             | operation | ours | req/s | moto | req/s | ours / moto |\n|---|---|---|---|---|---|\n",
        );
        for (ours, moto) in pairs {
            let (a, b) = (
                num(&ours.report["success_rps"]),
                num(&moto.report["success_rps"]),
            );
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.1} ×", a / b),
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                scenario(&moto.report),
                ours.name,
                fmt_opt(a, 0),
                moto.name,
                fmt_opt(b, 0),
                ratio
            );
        }
    }
    if !startups.is_empty() {
        out.push_str(
            "\n## Start-up\n\nTime from spawning the server to its first HTTPS answer \
             (`xks-load startup`: polled every 1 ms; schema `xks-load/startup/v1`):\n\n\
             | figure | runs | ready ms min | median | max |\n|---|---|---|---|---|\n",
        );
        for f in &startups {
            let r = &f.report;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                f.name,
                r["runs"],
                fmt_opt(num(&r["ready_ms"]["min"]), 1),
                fmt_opt(num(&r["ready_ms"]["median"]), 1),
                fmt_opt(num(&r["ready_ms"]["max"]), 1),
            );
        }
    }
    out.push_str("\n## Commands\n\nEach figure's `xks-load` command line (paths are the run's temporary files; `");
    out.push_str(command);
    out.push_str("` sets them up):\n\n");
    for f in figures {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let cmd = if is_load_report(f) {
            strings(&f.report["command_line"]).join(" ")
        } else {
            format!(
                "xks-load startup --url {} --runs {} -- {}",
                f.report["url"].as_str().unwrap_or("?"),
                f.report["runs"],
                strings(&f.report["command"]).join(" ")
            )
        };
        let _ = writeln!(out, "- `{}`: `{cmd}`", f.name);
    }
    out
}

/// The "Micro-benchmarks" section: criterion's latest results (see [`crate::micro`]), and
/// `command`, the command that produced them. Empty when there are none.
pub fn render_micro(benches: &[crate::micro::MicroBench], command: &str) -> String {
    use crate::micro::format_ns;
    if benches.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n## Micro-benchmarks\n\nThe hot pieces on their own (criterion, `{command}`; mean time \
         per iteration with its 95 % confidence interval):\n\n\
         | benchmark | mean | 95 % CI | MiB/s |\n|---|---|---|---|\n"
    );
    for b in benches {
        let _ = writeln!(
            out,
            "| {} | {} | {} – {} | {} |",
            b.id,
            format_ns(b.mean_ns),
            format_ns(b.mean_ci_ns.0),
            format_ns(b.mean_ci_ns.1),
            fmt_opt(b.mib_per_s(), 0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(rps: f64, closed: bool) -> Value {
        json!({
            "schema": "xks-load/report/v1",
            "command_line": ["xks-load", "--scenario", "xks-encrypt", "--secret", "<redacted>"],
            "start_time": "2026-11-23T18:00:00Z",
            "machine": {"nproc": 2, "cpu_model": "CPU", "mem_total_kib": 1048576, "kernel": "6"},
            "scenario": {"name": "xks-encrypt", "size": 32, "aad_size": null, "cdiv": true},
            "mode": if closed { json!({"kind": "closed", "concurrency": 16}) } else { json!({"kind": "open", "rate": 1800, "max_in_flight": 10000}) },
            "success_rps": rps,
            "latency_ms": {"p50": 0.5, "p99": 1.25, "p99_9": 2.0, "max": 3.0},
            "errors_by_name": if closed { json!({}) } else { json!({"ThrottlingException": 3}) },
            "server": {"cpu_percent_of_one_core": 55.0, "rss_peak_kib": 20480},
        })
    }

    #[test]
    fn renders_rows_ratios_errors_and_commands_in_file_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, r) in [
            ("02-proxy", report(15000.0, true)),
            ("01-baseline", report(20000.0, true)),
            ("03-open", report(1800.0, false)),
        ] {
            std::fs::write(dir.path().join(format!("{name}.json")), r.to_string()).expect("w");
        }
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("w");
        let figures = load_dir(dir.path()).expect("load");
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["01-baseline", "02-proxy", "03-open"]);
        let md = render(&figures, "scripts/bench", &[]);
        assert!(md.contains("| 02-proxy | xks-encrypt 32 B, CDIV | closed, c=16 | 15000 | 75 % (tls) | 0.500 | 1.250 | 2.000 | 3.000 | 0 | 55 | 20.0 |"), "{md}");
        assert!(
            md.contains("| 03-open | xks-encrypt 32 B, CDIV | open, 1800 req/s | 1800 | – |"),
            "{md}"
        );
        assert!(md.contains("ThrottlingException: 3"), "{md}");
        assert!(
            md.contains("`01-baseline`: `xks-load --scenario xks-encrypt --secret <redacted>`"),
            "{md}"
        );
        assert!(md.contains("2 CPU(s), CPU, 1.0 GiB"), "{md}");
        let noted = render(
            &figures,
            "scripts/bench",
            &["Servers ran with one worker.".into()],
        );
        assert!(
            noted.contains("\n\nServers ran with one worker.\n\n| figure |"),
            "{noted}"
        );
    }

    fn figure(name: &str, report: Value) -> Figure {
        Figure {
            name: name.into(),
            report,
        }
    }

    #[test]
    fn pkcs11_rows_use_the_hsm_baseline_and_the_others_the_tls_one() {
        let mut hsm = report(40000.0, true);
        hsm["target"] = json!({"kind": "pkcs11"});
        let figures = vec![
            figure("01-baseline-tls-server", report(20000.0, true)),
            figure("02-embedded-encrypt-32", report(15000.0, true)),
            figure("09-pkcs11-hsm-baseline", hsm.clone()),
            figure("10-pkcs11-hsm-baseline-2-threads", report(50000.0, true)),
            figure("11-pkcs11-softhsm-encrypt-32", report(10000.0, true)),
            figure("12-pkcs11-mixed-open", report(1800.0, false)),
        ];
        let b = Baselines::of(&figures);
        assert_eq!(
            b,
            Baselines {
                tls: vec![("01-baseline-tls-server".into(), 20000.0)],
                hsm: vec![
                    ("09-pkcs11-hsm-baseline".into(), 40000.0),
                    ("10-pkcs11-hsm-baseline-2-threads".into(), 50000.0)
                ],
            }
        );
        let cell = |i: usize| b.ratio_cell(&figures[i].name, &figures[i].report);
        assert_eq!(cell(0), "100 % (tls)");
        assert_eq!(cell(1), "75 % (tls)");
        assert_eq!(cell(2), "100 % (hsm)");
        assert_eq!(cell(3), "125 % (hsm)");
        assert_eq!(cell(4), "25 % (hsm)");
        assert_eq!(cell(5), "–");
        // Without an HSM baseline, PKCS#11 rows fall back to the TLS one, and say so.
        let without: Vec<Figure> = figures
            .into_iter()
            .filter(|f| !f.name.contains("hsm-baseline"))
            .collect();
        let b = Baselines::of(&without);
        assert!(b.hsm.is_empty());
        assert_eq!(
            b.ratio_cell(&without[2].name, &without[2].report),
            "50 % (tls)"
        );
        // A later TLS baseline serves the figures after it; those before keep the first.
        let figures = vec![
            figure("01-baseline-tls-server", report(20000.0, true)),
            figure("02-embedded-encrypt-32", report(15000.0, true)),
            figure("20-baseline-tls-server", report(10000.0, true)),
            figure("21-frontend-encrypt", report(5000.0, true)),
        ];
        let b = Baselines::of(&figures);
        let cells: Vec<String> = figures
            .iter()
            .map(|f| b.ratio_cell(&f.name, &f.report))
            .collect();
        assert_eq!(
            cells,
            ["100 % (tls)", "75 % (tls)", "100 % (tls)", "50 % (tls)"]
        );
        assert_eq!(
            b.ratio_cell("00-before-any", &figures[1].report),
            "75 % (tls)"
        );
        // The rendered table shows the PKCS#11 load as threads.
        let md = render(
            &[figure("09-pkcs11-hsm-baseline", hsm)],
            "scripts/bench",
            &[],
        );
        assert!(md.contains("| threads=16 | 40000 | 100 % (hsm) |"), "{md}");
    }

    #[test]
    fn moto_figures_are_paired_and_startup_reports_get_their_own_table() {
        let kms = |name: &str, key: Option<&str>, rps: f64| {
            let mut r = report(rps, true);
            r["scenario"] = match key {
                Some(k) => json!({"name": name, "key_id": k, "size": 32}),
                None => json!({"name": name, "origin": "AWS_KMS"}),
            };
            r
        };
        let startup = json!({
            "schema": "xks-load/startup/v1",
            "figure": "30-proxy-startup",
            "command": ["xks-proxy", "serve", "--config", "c.toml"],
            "url": "https://localhost:1/",
            "runs": 5,
            "ready_ms": {"min": 10.0, "median": 12.5, "max": 20.0, "all": []},
        });
        let figures = vec![
            figure("15-frontend-createkey", kms("kms-create-key", None, 1000.0)),
            figure(
                "16-frontend-encrypt",
                kms("kms-encrypt", Some("k1"), 5000.0),
            ),
            figure(
                "17-frontend-encrypt-xks",
                kms("kms-encrypt", Some("k2"), 3000.0),
            ),
            figure("25-moto-createkey", kms("kms-create-key", None, 400.0)),
            figure("26-moto-encrypt", kms("kms-encrypt", Some("m1"), 1000.0)),
            figure("30-proxy-startup", startup),
        ];
        let md = render(&figures, "scripts/bench", &[]);
        assert!(
            md.contains("| kms-create-key | 15-frontend-createkey | 1000 | 25-moto-createkey | 400 | 2.5 × |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| kms-encrypt 32 B | 16-frontend-encrypt | 5000 | 26-moto-encrypt | 1000 | 5.0 × |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 30-proxy-startup | 5 | 10.0 | 12.5 | 20.0 |"),
            "{md}"
        );
        assert!(
            md.contains("`30-proxy-startup`: `xks-load startup --url https://localhost:1/ --runs 5 -- xks-proxy serve --config c.toml`"),
            "{md}"
        );
        // An external key's CreateKey says so in the scenario column.
        let mut xks = kms("kms-create-key", None, 800.0);
        xks["scenario"]["origin"] = json!({"EXTERNAL_KEY_STORE": {"custom_key_store_id": "cks-1", "xks_key_id": "k-{seq}"}});
        let md = render(
            &[figure("20-frontend-createkey-xks", xks)],
            "scripts/bench",
            &[],
        );
        assert!(
            md.contains("| kms-create-key, EXTERNAL_KEY_STORE | closed, c=16 | 800 |"),
            "{md}"
        );
        // The startup report is not a row of the main table.
        assert!(!md.contains("| 30-proxy-startup | ?"), "{md}");
    }

    #[test]
    fn gates_and_micro_benchmarks_get_their_tables() {
        let mut proxy = report(20_000.0, true);
        proxy["server"]["pid"] = json!(7);
        let figures = vec![
            figure("01-baseline-tls-server", report(25_000.0, true)),
            figure("02-embedded-encrypt-32", proxy),
        ];
        let md = render(&figures, "scripts/bench", &["A note.".into()]);
        assert!(md.contains("A note.\n\n## Gates\n"), "{md}");
        assert!(
            md.contains("| Proxy Encrypt 32 B, embedded, TLS, keep-alive, c=16 | 02-embedded-encrypt-32 | 20000 req/s | ≥ 18000 req/s | met | 25000 req/s (01-baseline-tls-server) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 02-embedded-encrypt-32, 01-baseline-tls-server | 80 % | ≥ 60 % | met | – |"
            ),
            "{md}"
        );
        // 20,480 KiB is 20.97 MB (10^6 bytes).
        assert!(md.contains("| 21.0 MB | ≤ 50.0 MB | met | – |"), "{md}");
        assert!(
            md.contains("not measured (no figure 23-frontend-encrypt-xks-key)"),
            "{md}"
        );
        assert!(md.contains("## Figures\n\n| figure |"), "{md}");

        let micro = render_micro(
            &[crate::micro::MicroBench {
                id: "sigv4/verify".into(),
                mean_ns: 1800.0,
                mean_ci_ns: (1790.0, 1815.0),
                bytes: Some(1800),
            }],
            "cargo bench -- --quick",
        );
        assert!(
            micro.contains("(criterion, `cargo bench -- --quick`;"),
            "{micro}"
        );
        assert!(
            micro.contains("| sigv4/verify | 1.80 µs | 1.79 µs – 1.81 µs | 954 |"),
            "{micro}"
        );
        assert_eq!(render_micro(&[], "cargo bench"), "");
    }

    #[test]
    fn refuses_empty_dirs_and_foreign_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load_dir(dir.path()), Err(SummaryError::Empty(_))));
        std::fs::write(dir.path().join("x.json"), "{\"schema\": \"other\"}").expect("w");
        assert!(matches!(
            load_dir(dir.path()),
            Err(SummaryError::NotAReport { .. })
        ));
    }
}
