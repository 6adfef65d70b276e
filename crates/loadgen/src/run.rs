//! Running a load: closed loop (a fixed number of workers, each sending its next request
//! when the previous one completes) or open loop (requests scheduled at fixed intervals,
//! whatever the server does).
//!
//! Latency:
//! - closed loop: completion − send (the start of signing);
//! - open loop: completion − *scheduled* send time. A request that could not be sent on
//!   time (the generator fell behind, or the in-flight cap was reached) is still charged
//!   from its scheduled time, so a server stall shows up in full in the tail: every request
//!   that should have been sent during the stall carries its share of it. This is what a
//!   closed loop hides ("coordinated omission": its workers stop sending while the server
//!   stalls, so only `concurrency` requests see the stall). The open loop also keeps the
//!   service time (completion − actual send) separately. Its scheduler has a thread of its
//!   own that waits with `std::thread::sleep` (tens of µs of slack) rather than the runtime's
//!   millisecond timer, which would add up to a millisecond to every latency; the price is
//!   one wake-up per request, included in the reported CPU of xks-load.
//!
//! Every request is signed just before it is sent (fresh `X-Amz-Date`, a fresh request id
//! in the body); nothing is replayed. Runs are bounded by `duration` and optionally by a
//! request count; each request by the HTTP timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::procstat::{ProcessMonitor, ProcessStats};
use crate::scenario::{
    Prepared, Scenario, SetupError, error_name, sign_and_build, transport_error_name,
};
use crate::target::{Connector, HttpOptions, Target};

/// An open-loop request sent more than this after its scheduled time counts as late.
pub const LATE_SEND_THRESHOLD: Duration = Duration::from_millis(10);

/// Default cap on outstanding open-loop requests.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// The largest accepted cap on outstanding open-loop requests.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1_000_000;

/// How the load is offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mode {
    /// `concurrency` workers, each sending its next request as soon as the previous one
    /// completes.
    Closed {
        /// Number of workers.
        concurrency: usize,
    },
    /// Requests scheduled every `1/rate` seconds; at most `max_in_flight` outstanding (a
    /// request due while the cap is reached waits for a slot, and is charged the wait).
    Open {
        /// Requests per second.
        rate: f64,
        /// Cap on outstanding requests.
        max_in_flight: usize,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Closed or open loop.
    pub mode: Mode,
    /// How long requests are measured (after the warm-up).
    pub duration: Duration,
    /// Stop after this many measured requests (closed loop), or schedule at most this many
    /// (open loop).
    pub requests: Option<u64>,
    /// Load offered before measuring starts (not reported).
    pub warmup: Duration,
    /// A server process whose CPU and RSS are measured over the run.
    pub server_pid: Option<u32>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Closed { concurrency: 1 },
            duration: Duration::from_secs(10),
            requests: None,
            warmup: Duration::ZERO,
            server_pid: None,
        }
    }
}

/// Counters of one operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpStats {
    /// Requests completed (successfully or not).
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub successes: u64,
    /// Their latencies.
    pub latency: Histogram,
}

/// What was measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Requests completed (successfully or not).
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub successes: u64,
    /// Latency (open loop: from the scheduled send time).
    pub latency: Histogram,
    /// Service time: from the actual send (equals `latency` in closed loop).
    pub service_time: Histogram,
    /// Failures by name: XKS `errorName`, KMS `__type`, `HTTP <status>`,
    /// `transport:<kind>`, or `client:<problem>`.
    pub errors: BTreeMap<String, u64>,
    /// Responses by HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    pub http_versions: BTreeMap<String, u64>,
    /// Per operation.
    pub operations: BTreeMap<&'static str, OpStats>,
}

impl Stats {
    fn record(
        &mut self,
        operation: &'static str,
        latency: Duration,
        service_time: Duration,
        result: &Result<http::Version, String>,
    ) {
        self.requests += 1;
        self.latency.record(latency);
        self.service_time.record(service_time);
        let op = self.operations.entry(operation).or_default();
        op.requests += 1;
        op.latency.record(latency);
        match result {
            Ok(version) => {
                self.successes += 1;
                op.successes += 1;
                *self
                    .http_versions
                    .entry(format!("{version:?}"))
                    .or_default() += 1;
            }
            Err(name) => *self.errors.entry(name.clone()).or_default() += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.latency.merge(&other.latency);
        self.service_time.merge(&other.service_time);
        for (name, n) in &other.errors {
            *self.errors.entry(name.clone()).or_default() += n;
        }
        for (version, n) in &other.http_versions {
            *self.http_versions.entry(version.clone()).or_default() += n;
        }
        for (name, op) in &other.operations {
            let mine = self.operations.entry(name).or_default();
            mine.requests += op.requests;
            mine.successes += op.successes;
            mine.latency.merge(&op.latency);
        }
    }

    /// Number of failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Open-loop scheduling facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLoopStats {
    /// Requests scheduled in the measured interval.
    pub scheduled: u64,
    /// Of those, sent more than [`LATE_SEND_THRESHOLD`] after their scheduled time (the
    /// generator fell behind or the in-flight cap was reached). They are still charged from
    /// the scheduled time.
    pub late_sends: u64,
    /// How often a request found the in-flight cap reached and had to wait for a slot.
    pub blocked_at_cap: u64,
    /// Scheduled requests never sent: the cap was still reached when the run had to end.
    pub not_sent: u64,
    /// The largest delay between a scheduled time and the actual send, µs.
    pub max_send_lag_us: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The scenario run.
    pub scenario: Scenario,
    /// `"xks"` or `"kms"`.
    pub target_kind: &'static str,
    /// The target URL.
    pub target_url: String,
    /// The HTTP options.
    pub http: HttpOptions,
    /// The run configuration.
    pub config: RunConfig,
    /// When the run started (after setup).
    pub start_time: SystemTime,
    /// The measured wall-clock interval: from the end of the warm-up until the last
    /// measured request completed (or the duration ended, if later).
    pub elapsed: Duration,
    /// What was measured.
    pub stats: Stats,
    /// Open-loop scheduling facts (open loop only).
    pub open_loop: Option<OpenLoopStats>,
    /// The server process, with `server_pid`.
    pub server: Option<ProcessStats>,
    /// This process (the load generator itself: is it the bottleneck?).
    pub client: Option<ProcessStats>,
}

impl RunResult {
    /// Completed requests per second of the measured interval.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// A run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error("invalid run configuration: {0}")]
    Config(String),
    /// The scenario's setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The HTTP client could not be configured.
    #[error(transparent)]
    Client(#[from] crate::target::ClientError),
}

/// Sends request `seq` and returns its operation and outcome.
async fn execute(
    prepared: &Prepared,
    connector: &Connector,
    worker: usize,
    seq: u64,
) -> (&'static str, Result<http::Version, String>) {
    let request = prepared.request(seq);
    let operation = request.operation;
    let Ok(client) = connector.client(worker) else {
        return (operation, Err("client:build".to_owned()));
    };
    let Ok(signed) = sign_and_build(prepared.target(), request, SystemTime::now()) else {
        return (operation, Err("client:sign".to_owned()));
    };
    let result = match client.execute(signed).await {
        Err(e) => Err(transport_error_name(&e).to_owned()),
        Ok(response) => {
            let status = response.status();
            let version = response.version();
            match response.bytes().await {
                Err(e) => Err(transport_error_name(&e).to_owned()),
                Ok(_) if status.is_success() => Ok(version),
                Ok(body) => Err(error_name(prepared.target(), status, &body)),
            }
        }
    };
    (operation, result)
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the process monitors when measuring starts.
fn monitors_at(
    measure_start: Instant,
    server_pid: Option<u32>,
) -> tokio::task::JoinHandle<(Option<ProcessMonitor>, Option<ProcessMonitor>)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(measure_start).await;
        (
            server_pid.and_then(ProcessMonitor::start),
            ProcessMonitor::start(std::process::id()),
        )
    })
}

async fn finish_monitors(
    handle: tokio::task::JoinHandle<(Option<ProcessMonitor>, Option<ProcessMonitor>)>,
) -> (Option<ProcessStats>, Option<ProcessStats>) {
    let Ok((server, client)) = handle.await else {
        return (None, None);
    };
    let server = match server {
        Some(m) => m.finish().await,
        None => None,
    };
    let client = match client {
        Some(m) => m.finish().await,
        None => None,
    };
    (server, client)
}

/// Sets up `scenario` against `target` and runs it.
pub async fn run(
    target: Target,
    scenario: Scenario,
    http: HttpOptions,
    config: RunConfig,
) -> Result<RunResult, RunError> {
    match config.mode {
        Mode::Closed { concurrency: 0 } => {
            return Err(RunError::Config("concurrency must be at least 1".into()));
        }
        Mode::Open {
            rate,
            max_in_flight,
        } if !(rate.is_finite()
            && rate > 0.0
            && (1..=MAX_IN_FLIGHT_LIMIT).contains(&max_in_flight)) =>
        {
            return Err(RunError::Config(format!(
                "the rate must be positive and max-in-flight within 1..={MAX_IN_FLIGHT_LIMIT}"
            )));
        }
        _ => {}
    }
    let connector = Arc::new(Connector::new(http.clone())?);
    let setup_client = connector.client(0)?;
    let target_kind = target.kind();
    let target_url = target.url().to_owned();
    let prepared = Arc::new(Prepared::setup(target, scenario.clone(), &setup_client).await?);
    drop(setup_client);

    let start_time = SystemTime::now();
    let (elapsed, stats, open_loop, server, client) = match config.mode {
        Mode::Closed { concurrency } => {
            let (elapsed, stats, server, client) =
                run_closed(&prepared, &connector, &config, concurrency).await;
            (elapsed, stats, None, server, client)
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            let (elapsed, stats, open, server, client) =
                run_open(&prepared, &connector, &config, rate, max_in_flight).await;
            (elapsed, stats, Some(open), server, client)
        }
    };
    Ok(RunResult {
        scenario,
        target_kind,
        target_url,
        http,
        config,
        start_time,
        elapsed,
        stats,
        open_loop,
        server,
        client,
    })
}

async fn run_closed(
    prepared: &Arc<Prepared>,
    connector: &Arc<Connector>,
    config: &RunConfig,
    concurrency: usize,
) -> (Duration, Stats, Option<ProcessStats>, Option<ProcessStats>) {
    let measure_start = Instant::now() + config.warmup;
    let end = measure_start + config.duration;
    let monitors = monitors_at(measure_start, config.server_pid);
    let seq = Arc::new(AtomicU64::new(1));
    let budget = Arc::new(AtomicU64::new(0));
    let limit = config.requests.unwrap_or(u64::MAX);

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let prepared = Arc::clone(prepared);
        let connector = Arc::clone(connector);
        let seq = Arc::clone(&seq);
        let budget = Arc::clone(&budget);
        workers.spawn(async move {
            let mut stats = Stats::default();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let measured = now >= measure_start;
                if measured && budget.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let (operation, result) = execute(&prepared, &connector, worker, n).await;
                if measured {
                    let latency = sent.elapsed();
                    stats.record(operation, latency, latency, &result);
                }
            }
            stats
        });
    }
    let mut stats = Stats::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(worker_stats) = joined {
            stats.merge(&worker_stats);
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_start);
    let (server, client) = finish_monitors(monitors).await;
    (elapsed, stats, server, client)
}

async fn run_open(
    prepared: &Arc<Prepared>,
    connector: &Arc<Connector>,
    config: &RunConfig,
    rate: f64,
    max_in_flight: usize,
) -> (
    Duration,
    Stats,
    OpenLoopStats,
    Option<ProcessStats>,
    Option<ProcessStats>,
) {
    let interval_ns = 1e9 / rate;
    let warmup_requests = (config.warmup.as_secs_f64() * rate).floor() as u64;
    let mut measured_requests = (config.duration.as_secs_f64() * rate).floor() as u64;
    if let Some(limit) = config.requests {
        measured_requests = measured_requests.min(limit);
    }
    let schedule = Schedule {
        // A small lead, so the first request is not late by construction.
        start: std::time::Instant::now() + Duration::from_millis(5),
        interval_ns,
        warmup_requests,
        total: warmup_requests + measured_requests,
    };
    let measure_start = schedule.at(warmup_requests);
    let give_up = schedule.at(schedule.total) + connector.options().timeout;
    let monitors = monitors_at(Instant::from_std(measure_start), config.server_pid);

    let slots = Arc::new(Semaphore::new(max_in_flight));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let runtime = tokio::runtime::Handle::current();
    let scheduler = {
        let (prepared, connector) = (Arc::clone(prepared), Arc::clone(connector));
        let (slots, stats) = (Arc::clone(&slots), Arc::clone(&stats));
        tokio::task::spawn_blocking(move || {
            schedule.run(&runtime, &prepared, &connector, &slots, &stats, give_up)
        })
    };
    let mut open = scheduler.await.unwrap_or_default();
    open.scheduled = measured_requests;
    // Drain: every request ends by its timeout, so all slots come back.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let drain_limit = connector.options().timeout + Duration::from_secs(5);
    let _ = tokio::time::timeout(drain_limit, slots.acquire_many(all)).await;
    let elapsed = measure_start.elapsed();
    let (server, client) = finish_monitors(monitors).await;
    let stats = lock(&stats).clone();
    (elapsed, stats, open, server, client)
}

/// The open-loop send schedule: request `i` is due at `start + i / rate`.
///
/// The scheduler runs on a thread of its own and waits with `std::thread::sleep` (tens of
/// microseconds of slack on Linux) rather than the runtime's timer (millisecond ticks), so
/// the generator's own lateness adds little to the measured latency; what lateness there is
/// is charged, never hidden.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: std::time::Instant,
    interval_ns: f64,
    warmup_requests: u64,
    total: u64,
}

impl Schedule {
    fn at(&self, i: u64) -> std::time::Instant {
        self.start + Duration::from_nanos((i as f64 * self.interval_ns) as u64)
    }

    /// Sends every scheduled request (each on a task of `runtime`) and returns the
    /// scheduling facts (without `scheduled`).
    fn run(
        &self,
        runtime: &tokio::runtime::Handle,
        prepared: &Arc<Prepared>,
        connector: &Arc<Connector>,
        slots: &Arc<Semaphore>,
        stats: &Arc<Mutex<Stats>>,
        give_up: std::time::Instant,
    ) -> OpenLoopStats {
        let mut open = OpenLoopStats::default();
        for i in 0..self.total {
            let scheduled = self.at(i);
            let now = std::time::Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let measured = i >= self.warmup_requests;
            let permit = match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if measured {
                        open.blocked_at_cap += 1;
                    }
                    let waited = runtime.block_on(async {
                        tokio::select! {
                            permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                            () = tokio::time::sleep_until(Instant::from_std(give_up)) => None,
                        }
                    });
                    match waited {
                        Some(permit) => permit,
                        None => {
                            open.not_sent = self.total - i.max(self.warmup_requests);
                            break;
                        }
                    }
                }
            };
            let lag = scheduled.elapsed();
            if measured {
                if lag > LATE_SEND_THRESHOLD {
                    open.late_sends += 1;
                }
                open.max_send_lag_us = open
                    .max_send_lag_us
                    .max(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
            }
            let prepared = Arc::clone(prepared);
            let connector = Arc::clone(connector);
            let stats = Arc::clone(stats);
            runtime.spawn(async move {
                let sent = std::time::Instant::now();
                let worker = usize::try_from(i).unwrap_or(0);
                let (operation, result) = execute(&prepared, &connector, worker, i + 1).await;
                if measured {
                    let done = std::time::Instant::now();
                    lock(&stats).record(
                        operation,
                        done.saturating_duration_since(scheduled),
                        done.saturating_duration_since(sent),
                        &result,
                    );
                }
                drop(permit);
            });
        }
        open
    }
}

#[cfg(test)]
mod tests {
    //! Self-tests of the measurement itself, against the in-process baseline server.
    //! Assertions have wide margins: they check what is counted, not how fast anything is.

    use std::net::{Ipv4Addr, SocketAddr};

    use sigv4_auth::{Credential, SigningSecret};

    use super::*;
    use crate::baseline::{self, BaselineOptions, BaselineServer, Stall};
    use crate::scenario::EncryptOptions;
    use crate::target::HttpVersion;

    struct TestServer {
        server: BaselineServer,
        ca_pem: String,
        _dir: tempfile::TempDir,
    }

    async fn tls_server(stall: Option<Stall>) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = baseline::write_tls_dir(dir.path()).expect("TLS files");
        let tls = baseline::server_config(&files).expect("server config");
        let server = BaselineServer::start(BaselineOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: Some(tls),
            stall,
        })
        .await
        .expect("start");
        let ca_pem = std::fs::read_to_string(&files.ca_pem).expect("CA");
        TestServer {
            server,
            ca_pem,
            _dir: dir,
        }
    }

    impl TestServer {
        fn target(&self) -> Target {
            Target::xks(
                &format!(
                    "https://localhost:{}/kms/xks/v1",
                    self.server.local_addr().port()
                ),
                "k1",
                Credential::new("AKIDLOADGENTEST", SigningSecret::new("secret")),
                "us-east-1",
            )
        }

        fn http(&self) -> HttpOptions {
            HttpOptions {
                ca_pem: Some(self.ca_pem.clone()),
                ..HttpOptions::default()
            }
        }
    }

    fn encrypt() -> Scenario {
        Scenario::XksEncrypt(EncryptOptions::default())
    }

    const STALL: Duration = Duration::from_millis(500);
    const SLOW: Duration = Duration::from_millis(100);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_charges_a_stall_to_every_request_scheduled_during_it() {
        // Request 100 arrives about 0.5 s into the run and pauses the server for 500 ms:
        // about 100 requests are scheduled during the pause.
        let stalled = Some(Stall {
            at_request: 100,
            duration: STALL,
        });
        let server = tls_server(stalled).await;
        let open = run(
            server.target(),
            encrypt(),
            server.http(),
            RunConfig {
                mode: Mode::Open {
                    rate: 200.0,
                    max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                },
                duration: Duration::from_secs(2),
                ..RunConfig::default()
            },
        )
        .await
        .expect("open-loop run");
        let schedule = open.open_loop.clone().expect("open-loop facts");
        assert_eq!(schedule.scheduled, 400);
        assert_eq!(schedule.not_sent, 0);
        assert_eq!(open.stats.requests, 400, "{:?}", open.stats.errors);
        assert!(open.stats.errors.is_empty(), "{:?}", open.stats.errors);
        assert!(server.server.requests() >= 100, "the stall was triggered");
        let latency = &open.stats.latency;
        assert!(
            latency.quantile_us(0.999) >= 400_000 || latency.max() >= 400_000,
            "the stall is in the tail: p99.9 {} µs, max {} µs",
            latency.quantile_us(0.999),
            latency.max()
        );
        let open_delayed = latency.count_at_least(SLOW);
        assert!(
            open_delayed >= 5,
            "requests scheduled during the stall carry its delay: {open_delayed} >= 100 ms"
        );

        // The same stall measured closed-loop: the single worker waits with the server, so
        // only the request in flight sees it; the others were simply never sent.
        let server = tls_server(stalled).await;
        let closed = run(
            server.target(),
            encrypt(),
            server.http(),
            RunConfig {
                mode: Mode::Closed { concurrency: 1 },
                duration: Duration::from_secs(2),
                ..RunConfig::default()
            },
        )
        .await
        .expect("closed-loop run");
        assert!(closed.stats.errors.is_empty(), "{:?}", closed.stats.errors);
        if server.server.requests() > 100 {
            assert!(
                closed.stats.latency.max() >= 400_000,
                "it saw the stall once"
            );
        }
        let closed_delayed = closed.stats.latency.count_at_least(SLOW);
        assert!(
            closed_delayed < open_delayed,
            "coordinated omission hides the stall: closed loop {closed_delayed}, open loop {open_delayed}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_at_the_in_flight_cap_waits_and_charges_the_wait() {
        let server = tls_server(Some(Stall {
            at_request: 20,
            duration: Duration::from_millis(300),
        }))
        .await;
        let result = run(
            server.target(),
            encrypt(),
            server.http(),
            RunConfig {
                mode: Mode::Open {
                    rate: 200.0,
                    max_in_flight: 4,
                },
                duration: Duration::from_secs(1),
                ..RunConfig::default()
            },
        )
        .await
        .expect("run");
        let schedule = result.open_loop.clone().expect("open-loop facts");
        assert_eq!(schedule.scheduled, 200);
        assert!(schedule.blocked_at_cap >= 1, "{schedule:?}");
        assert!(schedule.late_sends >= 1, "{schedule:?}");
        assert_eq!(result.stats.requests + schedule.not_sent, 200);
        assert!(result.stats.errors.is_empty(), "{:?}", result.stats.errors);
        // Requests held back by the cap are charged from their scheduled time.
        assert!(result.stats.latency.count_at_least(SLOW) >= 5);
        // ... while their service time (from the actual send) is mostly short.
        assert!(
            result.stats.service_time.count_at_least(SLOW)
                < result.stats.latency.count_at_least(SLOW)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_against_a_normal_server_has_no_errors() {
        let server = tls_server(None).await;
        let result = run(
            server.target(),
            Scenario::XksMixed(EncryptOptions {
                size: 4096,
                aad_size: Some(32),
                cdiv: true,
            }),
            server.http(),
            RunConfig {
                mode: Mode::Closed { concurrency: 4 },
                duration: Duration::from_secs(1),
                server_pid: Some(std::process::id()),
                ..RunConfig::default()
            },
        )
        .await
        .expect("run");
        assert!(result.stats.errors.is_empty(), "{:?}", result.stats.errors);
        assert!(result.stats.requests > 0);
        assert_eq!(result.stats.successes, result.stats.requests);
        assert!(result.throughput() > 0.0);
        // With ALPN, h2 is chosen, and everything shares one pooled connection.
        assert_eq!(
            result.stats.http_versions.keys().collect::<Vec<_>>(),
            ["HTTP/2.0"]
        );
        assert!(
            server.server.connections() <= 4,
            "connections are reused: {} for {} requests",
            server.server.connections(),
            result.stats.requests
        );
        let server_stats = result.server.clone().expect("server stats");
        assert!(server_stats.rss_peak_kib > 0 && server_stats.rss_samples >= 1);
        if result.stats.requests >= 20 {
            for op in ["Encrypt", "Decrypt"] {
                assert!(result.stats.operations.contains_key(op), "{op}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_connection_per_request_and_http1() {
        let server = tls_server(None).await;
        let result = run(
            server.target(),
            Scenario::XksHealth,
            HttpOptions {
                version: HttpVersion::Http1,
                new_connection_per_request: true,
                ..server.http()
            },
            RunConfig {
                mode: Mode::Closed { concurrency: 2 },
                duration: Duration::from_secs(10),
                requests: Some(20),
                ..RunConfig::default()
            },
        )
        .await
        .expect("run");
        assert!(result.stats.errors.is_empty(), "{:?}", result.stats.errors);
        assert_eq!(result.stats.requests, 20);
        assert_eq!(
            result.stats.http_versions.get("HTTP/1.1").copied(),
            Some(20)
        );
        assert!(
            server.server.connections() >= 20,
            "one connection per request: {}",
            server.server.connections()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_counted_by_name() {
        // Nothing trusts this server's CA: every request fails in the TLS handshake.
        let server = tls_server(None).await;
        let other_ca = service_tls::CertificateAuthority::generate("other").expect("CA");
        let result = run(
            server.target(),
            Scenario::XksHealth,
            HttpOptions {
                ca_pem: Some(other_ca.cert_pem().to_owned()),
                ..HttpOptions::default()
            },
            RunConfig {
                mode: Mode::Closed { concurrency: 1 },
                requests: Some(3),
                ..RunConfig::default()
            },
        )
        .await
        .expect("run");
        assert_eq!(result.stats.successes, 0);
        assert_eq!(
            result.stats.errors.get("transport:connect").copied(),
            Some(3),
            "{:?}",
            result.stats.errors
        );

        // A setup step that fails stops the run with the reason.
        let refused = Target::xks(
            "http://127.0.0.1:1/kms/xks/v1",
            "k1",
            Credential::new("AKIDLOADGENTEST", SigningSecret::new("secret")),
            "us-east-1",
        );
        let err = run(
            refused,
            Scenario::XksDecrypt(EncryptOptions::default()),
            HttpOptions::default(),
            RunConfig::default(),
        )
        .await
        .expect_err("setup fails");
        assert!(err.to_string().contains("Encrypt"), "{err}");
    }
}
