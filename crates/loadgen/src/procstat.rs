//! CPU and memory of a process from `/proc` (Linux), and facts about the machine.
//!
//! CPU is the `utime + stime` delta of `/proc/PID/stat` over the measured interval, as a
//! percentage of one core (200 % = two cores busy). RSS is `VmRSS` of `/proc/PID/status`,
//! sampled every [`SAMPLE_INTERVAL`]; the peak and the last sample are reported.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often RSS is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// CPU time of a process in clock ticks (`utime + stime`), or `None` if it cannot be read.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3; utime is field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process in KiB (`VmRSS`), or `None` if it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's USER_HZ, if that fails).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(100)
}

/// What was measured of one process over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// The process id.
    pub pid: u32,
    /// CPU seconds (user + system) used during the measured interval.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the wall-clock interval, in percent of one core.
    pub cpu_percent_of_one_core: f64,
    /// The highest `VmRSS` sampled, KiB.
    pub rss_peak_kib: u64,
    /// The last `VmRSS` sampled, KiB.
    pub rss_end_kib: u64,
    /// How many RSS samples were taken.
    pub rss_samples: u64,
}

/// A running measurement of one process; [`finish`](Self::finish) ends it.
#[derive(Debug)]
pub struct ProcessMonitor {
    pid: u32,
    start: Instant,
    start_ticks: Option<u64>,
    stop: oneshot::Sender<()>,
    sampler: JoinHandle<(u64, u64, u64)>,
}

impl ProcessMonitor {
    /// Starts measuring `pid` now. Returns `None` if `/proc/PID` cannot be read.
    pub fn start(pid: u32) -> Option<Self> {
        let start_ticks = Some(cpu_ticks(pid)?);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let (mut peak, mut last, mut samples) = (0u64, 0u64, 0u64);
            let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = &mut stopped => break,
                }
                if let Some(rss) = rss_kib(pid) {
                    peak = peak.max(rss);
                    last = rss;
                    samples += 1;
                }
            }
            if let Some(rss) = rss_kib(pid) {
                peak = peak.max(rss);
                last = rss;
                samples += 1;
            }
            (peak, last, samples)
        });
        Some(Self {
            pid,
            start: Instant::now(),
            start_ticks,
            stop,
            sampler,
        })
    }

    /// Ends the measurement; `None` if the process went away (or `/proc` became unreadable).
    pub async fn finish(self) -> Option<ProcessStats> {
        let end_ticks = cpu_ticks(self.pid);
        let wall = self.start.elapsed().as_secs_f64();
        let _ = self.stop.send(());
        let (rss_peak_kib, rss_end_kib, rss_samples) = self.sampler.await.ok()?;
        let ticks = end_ticks?.saturating_sub(self.start_ticks?);
        let cpu_seconds = ticks as f64 / clock_ticks_per_second() as f64;
        Some(ProcessStats {
            pid: self.pid,
            cpu_seconds,
            cpu_percent_of_one_core: if wall > 0.0 {
                100.0 * cpu_seconds / wall
            } else {
                0.0
            },
            rss_peak_kib,
            rss_end_kib,
            rss_samples,
        })
    }
}

/// Facts about the machine a run was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// The first `model name` of `/proc/cpuinfo` (empty if unknown).
    pub cpu_model: String,
    /// `MemTotal` of `/proc/meminfo`, KiB (0 if unknown).
    pub mem_total_kib: u64,
    /// The kernel release (`/proc/sys/kernel/osrelease`, empty if unknown).
    pub kernel: String,
}

impl MachineInfo {
    /// Reads this machine's facts.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_kib: parse_status_kib(&meminfo, "MemTotal:").unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 \
                    12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_kib() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmRSS:\t    1536 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1536));
        assert_eq!(parse_status_kib(status, "VmHWM:"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        let machine = MachineInfo::detect();
        assert!(machine.nproc >= 1);
    }

    #[tokio::test]
    async fn monitor_reports_rss_of_this_process() {
        let monitor = ProcessMonitor::start(std::process::id()).expect("own /proc");
        let stats = monitor.finish().await.expect("stats");
        assert!(stats.rss_samples >= 1);
        assert!(stats.rss_peak_kib >= stats.rss_end_kib && stats.rss_end_kib > 0);
        assert!(stats.cpu_seconds >= 0.0);
    }
}
