//! The performance gates the project holds itself to, evaluated on one run's reports.
//!
//! Each [`Gate`] names the figures it reads (the file stems `scripts/bench` gives its
//! reports), what it measures in them ([`Measure`]) and the bound it must meet
//! ([`Threshold`]). [`evaluate`] turns a run into one [`Verdict`] per gate; `summarize`
//! prints them as the "Gates" table of `BENCHMARKS.md`. A gate whose figures are missing from
//! the run is "not measured", never met.
//!
//! The bounds are those of the benchmark issue: a 2-core machine, the load generator on the
//! same machine, loopback. Ratios are always taken within the run.

use serde_json::Value;

use crate::summary::Figure;

/// What a gate reads from the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Successful requests per second of a figure.
    Rate(&'static str),
    /// A figure's successful rate as a percentage of another figure's.
    SharePercent {
        /// The figure measured.
        figure: &'static str,
        /// The denominator.
        of: &'static str,
    },
    /// A latency quantile of a figure, ms (`p50`, `p99`, `p99_9`, `max`).
    LatencyMs(&'static str, &'static str),
    /// Failed requests plus open-loop requests that were never sent.
    Failures(&'static str),
    /// The largest RSS peak, in MB (10^6 bytes), of the server process that served the
    /// figure, over every figure of the run served by that same process.
    PeakRssMb(&'static str),
    /// The slowest of a start-up figure's runs, ms.
    StartupMaxMs(&'static str),
    /// A figure's rate over another's, reported with no bound.
    Ratio {
        /// Ours.
        figure: &'static str,
        /// Theirs.
        of: &'static str,
    },
}

impl Measure {
    /// The figures the measure reads, the measured one first.
    pub fn figures(self) -> Vec<&'static str> {
        match self {
            Self::Rate(f)
            | Self::LatencyMs(f, _)
            | Self::Failures(f)
            | Self::PeakRssMb(f)
            | Self::StartupMaxMs(f) => vec![f],
            Self::SharePercent { figure, of } | Self::Ratio { figure, of } => vec![figure, of],
        }
    }
}

/// The bound a measure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// At least this much.
    AtLeast(f64),
    /// At most this much.
    AtMost(f64),
    /// Strictly less than this.
    Below(f64),
    /// At least the lower of a fixed figure and a share of another figure's rate (the
    /// PKCS#11 gate: 12,000 requests/s, or half the raw loop if that is lower).
    AtLeastLowerOf {
        /// The fixed bound.
        fixed: f64,
        /// The figure whose rate gives the other bound.
        figure: &'static str,
        /// The share of that rate.
        share: f64,
    },
    /// No bound: the value is reported.
    Reported,
}

/// One gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// What is gated, in words.
    pub what: &'static str,
    /// The measure.
    pub measure: Measure,
    /// The bound.
    pub threshold: Threshold,
    /// The same measure on the run's calibration figure (the trivial TLS server or the raw
    /// PKCS#11 loop under the same load): the ceiling or floor this machine allowed in this
    /// run, shown beside the verdict so that a machine too slow for an absolute bound is
    /// told apart from a slow server.
    pub calibration: Option<Measure>,
}

/// The trivial TLS server, closed loop at c=16 (`xks-load baseline-server`).
pub const TLS_BASELINE: &str = "01-baseline-tls-server";
/// The raw PKCS#11 loop on the proxy's token and key (`xks-load hsm-baseline`).
pub const HSM_BASELINE: &str = "09-pkcs11-hsm-baseline";
/// The trivial TLS server under the mixed load, open loop at 1,800 requests/s.
pub const TLS_BASELINE_OPEN_1800: &str = "14-baseline-tls-server-mixed-open-1800";
/// The trivial TLS server again, just before the front end's CreateKey figure.
pub const TLS_BASELINE_BEFORE_CREATEKEY: &str = "20-baseline-tls-server";
/// The trivial TLS server again, just before the front end's XKS-key Encrypt figure.
pub const TLS_BASELINE_BEFORE_XKS_ENCRYPT: &str = "23-baseline-tls-server";
/// The trivial TLS server at 1,800 Encrypts/s, open loop, just before the front end's.
pub const TLS_BASELINE_BEFORE_XKS_OPEN_1800: &str = "26-baseline-tls-server-open-1800";

/// The gates, in the order the benchmark issue lists them.
pub const GATES: &[Gate] = &[
    Gate {
        what: "Proxy Encrypt 32 B, embedded, TLS, keep-alive, c=16",
        measure: Measure::Rate("02-embedded-encrypt-32"),
        threshold: Threshold::AtLeast(18_000.0),
        calibration: Some(Measure::Rate(TLS_BASELINE)),
    },
    Gate {
        what: "the same, against the trivial TLS server of the run",
        measure: Measure::SharePercent {
            figure: "02-embedded-encrypt-32",
            of: TLS_BASELINE,
        },
        threshold: Threshold::AtLeast(60.0),
        calibration: None,
    },
    Gate {
        what: "Proxy Encrypt 32 B, PKCS#11 on SoftHSMv2, c=16",
        measure: Measure::Rate("11-pkcs11-softhsm-encrypt-32"),
        threshold: Threshold::AtLeastLowerOf {
            fixed: 12_000.0,
            figure: HSM_BASELINE,
            share: 0.5,
        },
        calibration: Some(Measure::Rate(HSM_BASELINE)),
    },
    Gate {
        what: "Mixed KMS-shaped load, open loop 1,800/s, TLS, embedded: p99",
        measure: Measure::LatencyMs("14-embedded-mixed-open-1800", "p99"),
        threshold: Threshold::AtMost(1.0),
        calibration: Some(Measure::LatencyMs(TLS_BASELINE_OPEN_1800, "p99")),
    },
    Gate {
        what: "the same: p99.9",
        measure: Measure::LatencyMs("14-embedded-mixed-open-1800", "p99_9"),
        threshold: Threshold::AtMost(5.0),
        calibration: Some(Measure::LatencyMs(TLS_BASELINE_OPEN_1800, "p99_9")),
    },
    Gate {
        what: "Mixed load, open loop 3,600/s: failed or unsent requests",
        measure: Measure::Failures("15-embedded-mixed-open-3600"),
        threshold: Threshold::AtMost(0.0),
        calibration: None,
    },
    Gate {
        what: "Front end Encrypt on an XKS key (double encryption), c=16",
        measure: Measure::Rate("23-frontend-encrypt-xks-key"),
        threshold: Threshold::AtLeast(6_000.0),
        calibration: Some(Measure::Rate(TLS_BASELINE_BEFORE_XKS_ENCRYPT)),
    },
    Gate {
        what: "the same, open loop 1,800/s: p99",
        measure: Measure::LatencyMs("26-frontend-encrypt-xks-key-open-1800", "p99"),
        threshold: Threshold::AtMost(5.0),
        calibration: Some(Measure::LatencyMs(TLS_BASELINE_BEFORE_XKS_OPEN_1800, "p99")),
    },
    Gate {
        what: "Front end CreateKey (AWS_KMS, SYMMETRIC_DEFAULT), c=16",
        measure: Measure::Rate("20-frontend-createkey-aws-kms"),
        threshold: Threshold::AtLeast(2_000.0),
        calibration: Some(Measure::Rate(TLS_BASELINE_BEFORE_CREATEKEY)),
    },
    Gate {
        what: "CreateKey, ours over moto's server",
        measure: Measure::Ratio {
            figure: "20-frontend-createkey-aws-kms",
            of: "28-moto-createkey",
        },
        threshold: Threshold::Reported,
        calibration: None,
    },
    Gate {
        what: "Encrypt, ours over moto's server",
        measure: Measure::Ratio {
            figure: "22-frontend-encrypt-aws-kms-key",
            of: "29-moto-encrypt",
        },
        threshold: Threshold::Reported,
        calibration: None,
    },
    Gate {
        what: "Proxy RSS, 10,000 keys, every proxy figure at full load (MB)",
        measure: Measure::PeakRssMb("02-embedded-encrypt-32"),
        threshold: Threshold::AtMost(50.0),
        calibration: None,
    },
    Gate {
        what: "Front end RSS, filled to 100,000 keys and under load (MB)",
        measure: Measure::PeakRssMb("27a-frontend-encrypt-xks-key-100k-keys"),
        threshold: Threshold::AtMost(200.0),
        calibration: None,
    },
    Gate {
        what: "Proxy start-up with 10,000 keys, slowest run (ms)",
        measure: Measure::StartupMaxMs("19-proxy-startup-10k-keys"),
        threshold: Threshold::Below(200.0),
        calibration: None,
    },
];

/// The outcome of one gate on one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The bound holds.
    Met,
    /// The bound does not hold.
    NotMet,
    /// A value without a bound.
    Reported,
    /// A figure the gate needs is not in the run (or lacks the field).
    NotMeasured(String),
}

/// A gate's verdict on a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The gate.
    pub gate: Gate,
    /// The measured value, if there is one.
    pub value: Option<f64>,
    /// The bound in effect (for [`Threshold::AtLeastLowerOf`], the lower of the two).
    pub bound: Option<f64>,
    /// The outcome.
    pub outcome: Outcome,
    /// The calibration figure's value, if the gate has one and the run measured it.
    pub calibration: Option<f64>,
}

fn find<'a>(figures: &'a [Figure], name: &str) -> Result<&'a Value, String> {
    figures
        .iter()
        .find(|f| f.name == name)
        .map(|f| &f.report)
        .ok_or_else(|| format!("no figure {name}"))
}

fn field(report: &Value, path: &[&str], name: &str) -> Result<f64, String> {
    path.iter()
        .fold(report, |v, key| &v[*key])
        .as_f64()
        .ok_or_else(|| format!("{name} has no {}", path.join(".")))
}

fn rate(figures: &[Figure], name: &str) -> Result<f64, String> {
    field(find(figures, name)?, &["success_rps"], name)
}

fn measure(figures: &[Figure], m: Measure) -> Result<f64, String> {
    match m {
        Measure::Rate(f) => rate(figures, f),
        Measure::SharePercent { figure, of } | Measure::Ratio { figure, of } => {
            let (a, b) = (rate(figures, figure)?, rate(figures, of)?);
            if b <= 0.0 {
                return Err(format!("{of} served nothing"));
            }
            let scale = if matches!(m, Measure::SharePercent { .. }) {
                100.0
            } else {
                1.0
            };
            Ok(scale * a / b)
        }
        Measure::LatencyMs(f, q) => field(find(figures, f)?, &["latency_ms", q], f),
        Measure::Failures(f) => {
            let r = find(figures, f)?;
            let unsent = r["open_loop"]["not_sent"].as_f64().unwrap_or(0.0);
            Ok(field(r, &["errors"], f)? + unsent)
        }
        Measure::PeakRssMb(f) => {
            let pid = find(figures, f)?["server"]["pid"]
                .as_u64()
                .ok_or_else(|| format!("{f} has no server pid"))?;
            figures
                .iter()
                .filter(|g| g.report["server"]["pid"].as_u64() == Some(pid))
                .filter_map(|g| g.report["server"]["rss_peak_kib"].as_f64())
                .reduce(f64::max)
                .map(|kib| kib * 1024.0 / 1e6)
                .ok_or_else(|| format!("{f} has no server RSS"))
        }
        Measure::StartupMaxMs(f) => field(find(figures, f)?, &["ready_ms", "max"], f),
    }
}

fn bound(figures: &[Figure], t: Threshold) -> Result<Option<f64>, String> {
    Ok(match t {
        Threshold::AtLeast(b) | Threshold::AtMost(b) | Threshold::Below(b) => Some(b),
        Threshold::AtLeastLowerOf {
            fixed,
            figure,
            share,
        } => Some(fixed.min(share * rate(figures, figure)?)),
        Threshold::Reported => None,
    })
}

/// Evaluates every gate of [`GATES`] on a run.
pub fn evaluate(figures: &[Figure]) -> Vec<Verdict> {
    GATES.iter().map(|g| evaluate_one(figures, *g)).collect()
}

/// Evaluates one gate on a run.
pub fn evaluate_one(figures: &[Figure], gate: Gate) -> Verdict {
    let calibration = gate.calibration.and_then(|m| measure(figures, m).ok());
    let measured =
        measure(figures, gate.measure).and_then(|v| bound(figures, gate.threshold).map(|b| (v, b)));
    let (value, bound) = match measured {
        Ok(vb) => vb,
        Err(why) => {
            return Verdict {
                gate,
                value: None,
                bound: None,
                outcome: Outcome::NotMeasured(why),
                calibration,
            };
        }
    };
    let holds = match (gate.threshold, bound) {
        (Threshold::Reported, _) | (_, None) => None,
        (Threshold::AtMost(_), Some(b)) => Some(value <= b),
        (Threshold::Below(_), Some(b)) => Some(value < b),
        (_, Some(b)) => Some(value >= b),
    };
    let outcome = match holds {
        None => Outcome::Reported,
        Some(true) => Outcome::Met,
        Some(false) => Outcome::NotMet,
    };
    Verdict {
        gate,
        value: Some(value),
        bound,
        outcome,
        calibration,
    }
}

impl Verdict {
    /// The figures the gate reads, as shown in the table.
    pub fn figures(&self) -> String {
        let mut names = self.gate.measure.figures();
        if let Threshold::AtLeastLowerOf { figure, .. } = self.gate.threshold {
            names.push(figure);
        }
        names.join(", ")
    }

    /// The measured value with its unit.
    pub fn value_cell(&self) -> String {
        let Some(v) = self.value else {
            return "–".into();
        };
        unit(self.gate.measure, v)
    }

    /// The calibration figure's value and name, e.g. `11198 req/s (01-baseline-tls-server)`.
    pub fn calibration_cell(&self) -> String {
        let (Some(m), Some(v)) = (self.gate.calibration, self.calibration) else {
            return "–".into();
        };
        format!("{} ({})", unit(m, v), m.figures().join(", "))
    }

    /// The bound, e.g. `≥ 18000 req/s`.
    pub fn bound_cell(&self) -> String {
        let Some(b) = self.bound else {
            return "–".into();
        };
        let op = match self.gate.threshold {
            Threshold::AtMost(_) => "≤",
            Threshold::Below(_) => "<",
            _ => "≥",
        };
        let mut cell = format!("{op} {}", unit(self.gate.measure, b));
        if let Threshold::AtLeastLowerOf { fixed, share, .. } = self.gate.threshold {
            cell.push_str(&format!(
                " (lower of {fixed:.0} and {:.0} % of the raw loop)",
                share * 100.0
            ));
        }
        cell
    }

    /// The outcome, as shown in the table.
    pub fn outcome_cell(&self) -> String {
        match &self.outcome {
            Outcome::Met => "met".into(),
            Outcome::NotMet => "**NOT MET**".into(),
            Outcome::Reported => "reported".into(),
            Outcome::NotMeasured(why) => format!("not measured ({why})"),
        }
    }
}

fn unit(m: Measure, v: f64) -> String {
    match m {
        Measure::Rate(_) => format!("{v:.0} req/s"),
        Measure::SharePercent { .. } => format!("{v:.0} %"),
        Measure::LatencyMs(..) | Measure::StartupMaxMs(_) => format!("{v:.3} ms"),
        Measure::Failures(_) => format!("{v:.0}"),
        Measure::PeakRssMb(_) => format!("{v:.1} MB"),
        Measure::Ratio { .. } => format!("{v:.1} ×"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fig(name: &str, report: Value) -> Figure {
        Figure {
            name: name.into(),
            report,
        }
    }

    fn load(rps: f64, pid: u64, rss_kib: f64) -> Value {
        json!({
            "success_rps": rps, "errors": 0,
            "latency_ms": {"p99": 0.8, "p99_9": 3.0},
            "server": {"pid": pid, "rss_peak_kib": rss_kib},
        })
    }

    #[test]
    fn rates_shares_and_the_lower_of_two_bounds() {
        let figures = vec![
            fig("01-baseline-tls-server", load(25_000.0, 1, 9_000.0)),
            fig("02-embedded-encrypt-32", load(14_000.0, 2, 20_000.0)),
            fig("09-pkcs11-hsm-baseline", load(20_000.0, 3, 9_000.0)),
            fig("11-pkcs11-softhsm-encrypt-32", load(10_500.0, 2, 48_000.0)),
        ];
        let v = evaluate_one(&figures, GATES[0]);
        assert_eq!(v.outcome, Outcome::NotMet);
        assert_eq!(v.value_cell(), "14000 req/s");
        assert_eq!(v.bound_cell(), "≥ 18000 req/s");
        // Beside it, what the trivial TLS server did in the same run.
        assert_eq!(v.calibration_cell(), "25000 req/s (01-baseline-tls-server)");
        let v = evaluate_one(&figures, GATES[1]);
        assert_eq!(
            (v.outcome.clone(), v.value_cell()),
            (Outcome::NotMet, "56 %".into()),
            "56 % of the TLS server is under 60 %"
        );
        assert_eq!(v.value, Some(56.0));
        // 50 % of a 20,000/s raw loop is 10,000, lower than 12,000: 10,500 meets it.
        let v = evaluate_one(&figures, GATES[2]);
        assert_eq!(v.bound, Some(10_000.0));
        assert_eq!(v.outcome, Outcome::Met);
        assert_eq!(
            v.figures(),
            "11-pkcs11-softhsm-encrypt-32, 09-pkcs11-hsm-baseline"
        );
        // The proxy's RSS is the largest over every figure served by its pid (2), in MB.
        let rss = Gate {
            what: "rss",
            measure: Measure::PeakRssMb("02-embedded-encrypt-32"),
            threshold: Threshold::AtMost(50.0),
            calibration: None,
        };
        let v = evaluate_one(&figures, rss);
        assert_eq!(v.value, Some(48_000.0 * 1024.0 / 1e6));
        assert_eq!(v.outcome, Outcome::Met);
        let v = evaluate_one(
            &figures,
            Gate {
                threshold: Threshold::AtMost(49.0),
                ..rss
            },
        );
        assert_eq!(v.outcome, Outcome::NotMet, "49.15 MB > 49 MB");
    }

    #[test]
    fn latency_failures_startup_and_missing_figures() {
        let mut open = load(3_600.0, 2, 1.0);
        open["open_loop"] = json!({"not_sent": 2});
        let figures = vec![
            fig("14-embedded-mixed-open-1800", load(1_800.0, 2, 1.0)),
            fig("15-embedded-mixed-open-3600", open),
            fig(
                "19-proxy-startup-10k-keys",
                json!({"ready_ms": {"min": 40.0, "median": 45.0, "max": 200.0}}),
            ),
        ];
        let by_what = |figures: &[Figure], what: &str| {
            let gate = GATES.iter().find(|g| g.what.contains(what)).expect(what);
            evaluate_one(figures, *gate)
        };
        let p99 = by_what(&figures, "1,800/s, TLS");
        assert_eq!(p99.outcome, Outcome::Met);
        // The run has no TLS-server figure at that load: nothing to show beside it.
        assert_eq!(p99.calibration_cell(), "–");
        assert_eq!(by_what(&figures, "the same: p99.9").outcome, Outcome::Met);
        let unsent = by_what(&figures, "3,600/s");
        assert_eq!((unsent.value, unsent.outcome), (Some(2.0), Outcome::NotMet));
        // "under 200 ms": 200 exactly is not under.
        let startup = by_what(&figures, "start-up");
        assert_eq!(startup.outcome, Outcome::NotMet);
        assert_eq!(startup.bound_cell(), "< 200.000 ms");
        let missing = by_what(&figures, "Front end CreateKey");
        assert!(
            matches!(&missing.outcome, Outcome::NotMeasured(w) if w.contains("20-frontend-createkey-aws-kms")),
            "{missing:?}"
        );
        assert_eq!(
            missing.outcome_cell(),
            "not measured (no figure 20-frontend-createkey-aws-kms)"
        );
    }

    #[test]
    fn ratios_are_reported_without_a_verdict() {
        let figures = vec![
            fig("20-frontend-createkey-aws-kms", load(6_000.0, 5, 1.0)),
            fig("28-moto-createkey", load(40.0, 6, 1.0)),
        ];
        let v = evaluate(&figures)
            .into_iter()
            .find(|v| v.gate.what.starts_with("CreateKey, ours"))
            .expect("gate");
        assert_eq!(v.outcome, Outcome::Reported);
        assert_eq!(
            (v.value_cell(), v.bound_cell()),
            ("150.0 ×".into(), "–".into())
        );
    }
}
