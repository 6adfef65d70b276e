//! The micro-benchmarks' results (criterion's `target/criterion`), read back for the
//! "Micro-benchmarks" table of `BENCHMARKS.md`.
//!
//! criterion keeps, per benchmark, `<id>/new/benchmark.json` (the id and throughput) and
//! `<id>/new/estimates.json` (times in nanoseconds); only the `new` results (the latest run)
//! are read.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One benchmark's latest result.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroBench {
    /// criterion's full id, e.g. `sigv4/verify_encrypt_request`.
    pub id: String,
    /// Mean time per iteration, ns.
    pub mean_ns: f64,
    /// The 95 % confidence interval of the mean, ns.
    pub mean_ci_ns: (f64, f64),
    /// Bytes per iteration, when the benchmark declares a byte throughput.
    pub bytes: Option<u64>,
}

impl MicroBench {
    /// Throughput in MiB/s, for byte-throughput benchmarks.
    pub fn mib_per_s(&self) -> Option<f64> {
        let bytes = self.bytes? as f64;
        (self.mean_ns > 0.0).then(|| bytes / (self.mean_ns / 1e9) / (1024.0 * 1024.0))
    }
}

/// Formats nanoseconds with a unit that keeps three significant digits readable.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn new_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            found.push(path);
        } else {
            new_dirs(&path, found);
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn parse(new_dir: &Path) -> Option<MicroBench> {
    let bench = read_json(&new_dir.join("benchmark.json"))?;
    let estimates = read_json(&new_dir.join("estimates.json"))?;
    let mean = &estimates["mean"];
    let ci = &mean["confidence_interval"];
    let throughput = &bench["throughput"];
    Some(MicroBench {
        id: bench["full_id"].as_str()?.to_owned(),
        mean_ns: mean["point_estimate"].as_f64()?,
        mean_ci_ns: (ci["lower_bound"].as_f64()?, ci["upper_bound"].as_f64()?),
        bytes: throughput["Bytes"]
            .as_u64()
            .or_else(|| throughput["BytesDecimal"].as_u64()),
    })
}

/// Every benchmark result under `dir` (criterion's output directory), sorted by id. A
/// directory that does not exist holds none; entries criterion did not finish are skipped.
pub fn load_criterion(dir: &Path) -> Vec<MicroBench> {
    let mut dirs = Vec::new();
    new_dirs(dir, &mut dirs);
    let mut benches: Vec<MicroBench> = dirs.iter().filter_map(|d| parse(d)).collect();
    benches.sort_by(|a, b| a.id.cmp(&b.id));
    benches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bench(root: &Path, dir: &str, id: &str, throughput: &str, mean: f64) {
        for run in ["new", "base"] {
            let d = root.join(dir).join(run);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(
                d.join("benchmark.json"),
                format!(r#"{{"group_id":"g","full_id":"{id}","throughput":{throughput}}}"#),
            )
            .expect("write");
            // The `base` copy has another mean: only `new` may be read.
            let m = if run == "new" { mean } else { mean * 10.0 };
            std::fs::write(
                d.join("estimates.json"),
                format!(
                    r#"{{"mean":{{"point_estimate":{m},"confidence_interval":{{"lower_bound":{},"upper_bound":{}}}}}}}"#,
                    m - 1.0,
                    m + 1.0
                ),
            )
            .expect("write");
        }
    }

    #[test]
    fn reads_the_latest_results_with_their_throughput() {
        let root = tempfile::tempdir().expect("tempdir");
        write_bench(
            root.path(),
            "g/b/4096",
            "g/b/4096",
            r#"{"Bytes":4096}"#,
            4096.0,
        );
        write_bench(root.path(), "g/a", "g/a", "null", 36.5);
        // An unfinished entry (no estimates) is skipped.
        std::fs::create_dir_all(root.path().join("g/c/new")).expect("mkdir");
        let benches = load_criterion(root.path());
        assert_eq!(
            benches,
            [
                MicroBench {
                    id: "g/a".into(),
                    mean_ns: 36.5,
                    mean_ci_ns: (35.5, 37.5),
                    bytes: None,
                },
                MicroBench {
                    id: "g/b/4096".into(),
                    mean_ns: 4096.0,
                    mean_ci_ns: (4095.0, 4097.0),
                    bytes: Some(4096),
                },
            ]
        );
        // 4096 B in 4096 ns: 10^9 B/s.
        let mib = benches[1].mib_per_s().expect("throughput");
        assert!((mib - 1e9 / 1048576.0).abs() < 1e-6, "{mib}");
        assert_eq!(benches[0].mib_per_s(), None);
        assert!(load_criterion(&root.path().join("absent")).is_empty());
        assert_eq!(format_ns(36.5), "36.5 ns");
        assert_eq!(format_ns(5387.7), "5.39 µs");
        assert_eq!(format_ns(2.5e6), "2.50 ms");
    }
}
