//! Prometheus metrics of the proxy: a small registry held in application state.
//!
//! No process-global recorder: a [`Metrics`] is an ordinary value, so a test can run many
//! proxies side by side, each with its own numbers. [`Metrics::render`] writes the
//! Prometheus text exposition format 0.0.4.
//!
//! # Cost on the request path
//!
//! The proxy targets about 20,000 requests/s on two cores, so an observation is a handful
//! of relaxed atomic adds on fixed arrays: no lock, no allocation, no map lookup. Latency
//! sums are kept in integer microseconds (`AtomicU64`) and rendered as seconds. Only the
//! low-frequency parts take a lock: registering key stores (at state build), setting a
//! certificate expiry, and rendering.
//!
//! # Key stores and reloads
//!
//! One `Arc<Metrics>` is created at start and kept for the life of the process; every
//! rebuilt state gets a clone of it. Each key store has a block of atomics, reached through
//! a [`StoreMetricsHandle`] that the state keeps next to the store (index `i` of the state's
//! stores, handle `i` of its handles), so the request path never looks a name up.
//! [`Metrics::ensure_key_store`] returns the existing block for a name it already knows,
//! which is how a store's counters carry over a reload: old and new state share the same
//! atomics, and requests still in flight on the old state are counted too. (Copying values
//! from an old registry into a new one would lose those, and would break the open
//! connections gauge across a reload.)
//!
//! ```text
//! start:   let metrics = Arc::new(Metrics::new(&names));
//! build:   handles = key_stores.map(|ks| metrics.ensure_key_store(&ks.name))
//! swap:    swap the state in; metrics.retain_key_stores(&names); metrics.config_reload(true)
//! request: metrics.request(Some(&state.store_metrics[i]), op, outcome, started.elapsed())
//! ```
//!
//! [`Metrics::retain_key_stores`] forgets stores the config no longer has (call it after a
//! successful swap, so that a failed build changes nothing visible), so that, for example, a
//! removed store's last health status is not reported forever.
//!
//! # What is rendered
//!
//! `# HELP` and `# TYPE` for every family, always. Per-key-store series appear at their first
//! observation (a store nobody used adds no lines); the connection and reload families are
//! always present. Requests that never reached a key store (say a 401 before the credential
//! was known) are counted with `key_store=""`. Families:
//!
//! - `xks_proxy_requests_total{key_store, operation, error_name}` (counter; `error_name` is
//!   `none` for a success, `method_not_allowed` for a 405, else an XKS error name);
//! - `xks_proxy_request_duration_seconds{key_store, operation}` (histogram);
//! - `xks_proxy_backend_duration_seconds{key_store, call}` (histogram);
//! - `xks_proxy_backend_errors_total{key_store, call}` (counter; present once the call has
//!   been observed, so a zero is a real zero);
//! - `xks_proxy_quota_rejections_total{key_store}` (counter);
//! - `xks_proxy_health_status{key_store}` (gauge: 2 ACTIVE, 1 DEGRADED, 0 UNAVAILABLE);
//! - `xks_proxy_backend_reinitializations_total{key_store}` (counter; backends that
//!   re-initialise, i.e. PKCS#11);
//! - `xks_proxy_tls_certificate_not_after_seconds{listener}` (gauge, Unix seconds);
//! - `xks_proxy_connections_accepted_total` (counter) and `xks_proxy_connections_open` (gauge);
//! - `xks_proxy_config_reloads_total{result="ok"|"error"}` (counter).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use xks_api::ErrorName;
use xks_api::types::{HealthStatus, Operation};

/// Upper bounds of the latency histogram buckets, in microseconds (the request budget is
/// 250 ms). An observation of exactly a bound falls in that bound's bucket (`le`).
const BUCKET_BOUNDS_MICROS: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 200_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// The `le` label of each bucket in [`BUCKET_BOUNDS_MICROS`], then `+Inf`.
const BUCKET_LABELS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.2", "0.25", "0.5",
    "1", "2.5", "+Inf",
];

/// One bucket per bound, plus the overflow (`+Inf` only) bucket.
const BUCKETS: usize = BUCKET_BOUNDS_MICROS.len() + 1;

/// What one observation adds to a latency sum at most (an hour), so that an absurd
/// duration cannot wrap the sum. The bucket is still right (`+Inf`).
const MAX_OBSERVED_MICROS: u64 = 3_600_000_000;

/// The `operation` label of a request: an XKS operation, or `other` for a request that
/// never reached one (a 401 on a path that is not an API path, a 404 for an unknown path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationLabel {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    GetKeyMetadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
    /// No operation was identified.
    Other,
}

impl OperationLabel {
    /// Every label, in rendering order.
    pub const ALL: [OperationLabel; 5] = [
        Self::Health,
        Self::GetKeyMetadata,
        Self::Encrypt,
        Self::Decrypt,
        Self::Other,
    ];

    /// The label value: the operation's name ([`Operation::as_str`]) or `other`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Health => Operation::Health.as_str(),
            Self::GetKeyMetadata => Operation::GetKeyMetadata.as_str(),
            Self::Encrypt => Operation::Encrypt.as_str(),
            Self::Decrypt => Operation::Decrypt.as_str(),
            Self::Other => "other",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Health => 0,
            Self::GetKeyMetadata => 1,
            Self::Encrypt => 2,
            Self::Decrypt => 3,
            Self::Other => 4,
        }
    }
}

impl From<Operation> for OperationLabel {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Health => Self::Health,
            Operation::GetKeyMetadata => Self::GetKeyMetadata,
            Operation::Encrypt => Self::Encrypt,
            Operation::Decrypt => Self::Decrypt,
        }
    }
}

const OPERATIONS: usize = OperationLabel::ALL.len();

/// How a request ended, for the `error_name` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A 200 answer (`error_name="none"`).
    Success,
    /// An XKS error answer (`error_name` is the error's name).
    Error(ErrorName),
    /// A 405 for a method other than POST on an API path (`error_name="method_not_allowed"`).
    MethodNotAllowed,
}

impl Outcome {
    /// The `error_name` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "none",
            Self::Error(name) => name.as_str(),
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// Position in rendering order: success, the error names in [`ErrorName::ALL`] order,
    /// then 405.
    const fn index(self) -> usize {
        match self {
            Self::Success => 0,
            Self::Error(name) => {
                1 + match name {
                    ErrorName::ValidationException => 0,
                    ErrorName::InvalidStateException => 1,
                    ErrorName::InvalidCiphertextException => 2,
                    ErrorName::InvalidKeyUsageException => 3,
                    ErrorName::AuthenticationFailedException => 4,
                    ErrorName::AccessDeniedException => 5,
                    ErrorName::KeyNotFoundException => 6,
                    ErrorName::InvalidUriPathException => 7,
                    ErrorName::ThrottlingException => 8,
                    ErrorName::UnsupportedOperationException => 9,
                    ErrorName::DependencyTimeoutException => 10,
                    ErrorName::InternalException => 11,
                }
            }
            Self::MethodNotAllowed => 1 + ErrorName::ALL.len(),
        }
    }

    /// Every outcome, in rendering order (`ALL[o.index()] == o`).
    const ALL: [Outcome; 2 + ErrorName::ALL.len()] = {
        let mut all = [Self::Success; 2 + ErrorName::ALL.len()];
        let mut i = 0;
        while i < ErrorName::ALL.len() {
            all[1 + i] = Self::Error(ErrorName::ALL[i]);
            i += 1;
        }
        all[1 + ErrorName::ALL.len()] = Self::MethodNotAllowed;
        all
    };
}

impl From<ErrorName> for Outcome {
    fn from(name: ErrorName) -> Self {
        Self::Error(name)
    }
}

const OUTCOMES: usize = Outcome::ALL.len();

/// A call into a key backend, for the `call` label (named after the `KeyBackend` methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendCall {
    /// `key_info`.
    KeyInfo,
    /// `encrypt`.
    Encrypt,
    /// `decrypt`.
    Decrypt,
    /// `health_check`.
    Health,
}

impl BackendCall {
    /// Every call, in rendering order.
    pub const ALL: [BackendCall; 4] = [Self::KeyInfo, Self::Encrypt, Self::Decrypt, Self::Health];

    /// The `call` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::KeyInfo => "key_info",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Health => "health_check",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::KeyInfo => 0,
            Self::Encrypt => 1,
            Self::Decrypt => 2,
            Self::Health => 3,
        }
    }
}

const BACKEND_CALLS: usize = BackendCall::ALL.len();

/// A latency histogram: per-bucket (not cumulative) counts and a sum in microseconds. The
/// count is the sum of the buckets, so `_count` always equals the `+Inf` bucket.
#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(MAX_OBSERVED_MICROS);
        // The first bound >= micros; BUCKET_BOUNDS_MICROS.len() (the overflow) if none.
        let i = BUCKET_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Per-bucket counts and the sum, read once each.
    fn snapshot(&self) -> ([u64; BUCKETS], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            self.sum_micros.load(Relaxed),
        )
    }
}

/// `health` value before the first health check.
const HEALTH_UNSET: u8 = u8::MAX;

/// The atomics of one key store (or of the requests that reached none).
#[derive(Debug)]
struct StoreMetrics {
    name: String,
    requests: [[AtomicU64; OUTCOMES]; OPERATIONS],
    request_latency: [Histogram; OPERATIONS],
    backend_latency: [Histogram; BACKEND_CALLS],
    backend_errors: [AtomicU64; BACKEND_CALLS],
    quota_rejections: AtomicU64,
    health: AtomicU8,
    /// Backend re-initialisations; `u64::MAX` for a backend that has none.
    reinitializations: AtomicU64,
}

impl StoreMetrics {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            request_latency: std::array::from_fn(|_| Histogram::new()),
            backend_latency: std::array::from_fn(|_| Histogram::new()),
            backend_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            quota_rejections: AtomicU64::new(0),
            health: AtomicU8::new(HEALTH_UNSET),
            reinitializations: AtomicU64::new(u64::MAX),
        }
    }
}

/// The metrics of one key store, as the request path reaches them: keep one per store in
/// the run-time state (from [`Metrics::ensure_key_store`]) and pass it to the observation
/// methods. Cloning is cheap (an `Arc`).
#[derive(Debug, Clone)]
pub struct StoreMetricsHandle(Arc<StoreMetrics>);

impl StoreMetricsHandle {
    /// The key store's name (the `key_store` label).
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// The proxy's metrics registry. See the [module documentation](self) for the design.
#[derive(Debug)]
pub struct Metrics {
    /// Known key stores, in registration order (config order).
    stores: RwLock<Vec<Arc<StoreMetrics>>>,
    /// Requests that reached no key store (`key_store=""`).
    no_store: StoreMetrics,
    connections_accepted: AtomicU64,
    connections_open: AtomicI64,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    /// Listener → the Unix time its server certificate expires.
    certificate_not_after: Mutex<BTreeMap<String, i64>>,
}

impl Default for Metrics {
    /// A registry with no key stores yet.
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Metrics {
    /// A registry knowing `key_stores` (duplicates are registered once).
    pub fn new(key_stores: &[String]) -> Self {
        let metrics = Self {
            stores: RwLock::new(Vec::with_capacity(key_stores.len())),
            no_store: StoreMetrics::new(""),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
            certificate_not_after: Mutex::new(BTreeMap::new()),
        };
        for name in key_stores {
            metrics.ensure_key_store(name);
        }
        metrics
    }

    /// The handle of key store `name`, registering it if it is new. A store already known
    /// keeps its block, so its counters carry over a state rebuild. Takes a lock: call it
    /// when building state, not per request.
    pub fn ensure_key_store(&self, name: &str) -> StoreMetricsHandle {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = stores.iter().find(|s| s.name == name) {
            return StoreMetricsHandle(Arc::clone(found));
        }
        let block = Arc::new(StoreMetrics::new(name));
        stores.push(Arc::clone(&block));
        StoreMetricsHandle(block)
    }

    /// The handle of key store `name` if it is registered. Does not allocate, but takes a
    /// read lock and compares names: keep handles in state rather than calling this per
    /// request.
    pub fn store(&self, name: &str) -> Option<StoreMetricsHandle> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        stores
            .iter()
            .find(|s| s.name == name)
            .map(|s| StoreMetricsHandle(Arc::clone(s)))
    }

    /// Forgets every key store not in `key_stores`: its series are no longer rendered, and a
    /// store of that name registered later starts from zero. Handles still held (by requests
    /// in flight on an old state) stay usable; what they count is not rendered.
    pub fn retain_key_stores(&self, key_stores: &[String]) {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.retain(|s| key_stores.iter().any(|k| *k == s.name));
    }

    /// Counts a finished request and its latency. `store` is `None` for a request that
    /// reached no key store (rendered as `key_store=""`).
    pub fn request(
        &self,
        store: Option<&StoreMetricsHandle>,
        operation: impl Into<OperationLabel>,
        outcome: Outcome,
        latency: Duration,
    ) {
        let block = store.map_or(&self.no_store, |h| &*h.0);
        let op = operation.into().index();
        block.requests[op][outcome.index()].fetch_add(1, Relaxed);
        block.request_latency[op].observe(latency);
    }

    /// Records a backend call: its latency, and an error unless `ok`.
    pub fn backend_call(
        &self,
        store: &StoreMetricsHandle,
        call: BackendCall,
        ok: bool,
        latency: Duration,
    ) {
        let i = call.index();
        store.0.backend_latency[i].observe(latency);
        if !ok {
            store.0.backend_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Records the backend's re-initialisation count (a counter the backend keeps).
    pub fn backend_reinitializations(&self, store: &StoreMetricsHandle, count: u64) {
        store.0.reinitializations.store(count, Relaxed);
    }

    /// Counts a request refused by the store's quota.
    pub fn quota_rejected(&self, store: &StoreMetricsHandle) {
        store.0.quota_rejections.fetch_add(1, Relaxed);
    }

    /// Records the result of the store's latest health check.
    pub fn health_check(&self, store: &StoreMetricsHandle, status: HealthStatus) {
        let value = match status {
            HealthStatus::Active => 2,
            HealthStatus::Degraded => 1,
            HealthStatus::Unavailable => 0,
        };
        store.0.health.store(value, Relaxed);
    }

    /// Sets when the server certificate of `listener` expires (Unix seconds). Takes a lock:
    /// meant for start and reload.
    pub fn set_certificate_expiry(&self, listener: &str, not_after_unix_seconds: i64) {
        let mut map = self
            .certificate_not_after
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match map.get_mut(listener) {
            Some(v) => *v = not_after_unix_seconds,
            None => {
                map.insert(listener.to_owned(), not_after_unix_seconds);
            }
        }
    }

    /// Counts an accepted connection (and one more open).
    pub fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// Counts a closed connection (one fewer open). Call once per
    /// [`connection_accepted`](Self::connection_accepted).
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    /// Counts a configuration reload attempt and its result.
    pub fn config_reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = self.write_exposition(&mut out);
        out
    }

    fn write_exposition(&self, out: &mut String) -> fmt::Result {
        {
            let registered = self.stores.read().unwrap_or_else(|p| p.into_inner());
            let stores: Vec<&StoreMetrics> = std::iter::once(&self.no_store)
                .chain(registered.iter().map(|s| &**s))
                .collect();
            write_request_families(out, &stores)?;
            write_backend_families(out, &stores)?;
            write_store_state_families(out, &stores)?;
        }
        self.write_process_families(out)
    }

    /// Certificate expiry, connections and reloads: one series each, not per key store.
    fn write_process_families(&self, out: &mut String) -> fmt::Result {
        header(
            out,
            "xks_proxy_tls_certificate_not_after_seconds",
            "Unix time at which the listener's server certificate expires.",
            "gauge",
        )?;
        {
            let map = self
                .certificate_not_after
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (listener, not_after) in map.iter() {
                sample(
                    out,
                    "xks_proxy_tls_certificate_not_after_seconds",
                    &[("listener", listener.as_str())],
                    not_after,
                )?;
            }
        }

        header(
            out,
            "xks_proxy_connections_accepted_total",
            "TCP connections accepted.",
            "counter",
        )?;
        sample(
            out,
            "xks_proxy_connections_accepted_total",
            &[],
            self.connections_accepted.load(Relaxed),
        )?;

        header(
            out,
            "xks_proxy_connections_open",
            "Connections currently open.",
            "gauge",
        )?;
        sample(
            out,
            "xks_proxy_connections_open",
            &[],
            self.connections_open.load(Relaxed),
        )?;

        header(
            out,
            "xks_proxy_config_reloads_total",
            "Configuration reload attempts, by result.",
            "counter",
        )?;
        sample(
            out,
            "xks_proxy_config_reloads_total",
            &[("result", "ok")],
            self.reloads_ok.load(Relaxed),
        )?;
        sample(
            out,
            "xks_proxy_config_reloads_total",
            &[("result", "error")],
            self.reloads_error.load(Relaxed),
        )
    }
}

/// Request counts and durations, by key store and operation.
fn write_request_families(out: &mut String, stores: &[&StoreMetrics]) -> fmt::Result {
    header(
        out,
        "xks_proxy_requests_total",
        "XKS requests answered, by key store, operation and error name (none for success).",
        "counter",
    )?;
    for s in stores {
        for op in OperationLabel::ALL {
            for outcome in Outcome::ALL {
                let n = s.requests[op.index()][outcome.index()].load(Relaxed);
                if n > 0 {
                    let labels = [
                        ("key_store", s.name.as_str()),
                        ("operation", op.as_str()),
                        ("error_name", outcome.as_str()),
                    ];
                    sample(out, "xks_proxy_requests_total", &labels, n)?;
                }
            }
        }
    }

    header(
        out,
        "xks_proxy_request_duration_seconds",
        "Time from request received to response ready, by key store and operation.",
        "histogram",
    )?;
    for s in stores {
        for op in OperationLabel::ALL {
            let labels = [("key_store", s.name.as_str()), ("operation", op.as_str())];
            histogram(
                out,
                "xks_proxy_request_duration_seconds",
                &labels,
                &s.request_latency[op.index()],
            )?;
        }
    }

    Ok(())
}

/// Key backend call durations and errors, by key store and call.
fn write_backend_families(out: &mut String, stores: &[&StoreMetrics]) -> fmt::Result {
    header(
        out,
        "xks_proxy_backend_duration_seconds",
        "Duration of key backend calls, by key store and call.",
        "histogram",
    )?;
    for s in stores {
        for call in BackendCall::ALL {
            let labels = [("key_store", s.name.as_str()), ("call", call.as_str())];
            histogram(
                out,
                "xks_proxy_backend_duration_seconds",
                &labels,
                &s.backend_latency[call.index()],
            )?;
        }
    }

    header(
        out,
        "xks_proxy_backend_errors_total",
        "Key backend calls that failed, by key store and call.",
        "counter",
    )?;
    for s in stores {
        for call in BackendCall::ALL {
            let observed = s.backend_latency[call.index()]
                .buckets
                .iter()
                .any(|b| b.load(Relaxed) > 0);
            let errors = s.backend_errors[call.index()].load(Relaxed);
            if observed || errors > 0 {
                let labels = [("key_store", s.name.as_str()), ("call", call.as_str())];
                sample(out, "xks_proxy_backend_errors_total", &labels, errors)?;
            }
        }
    }

    Ok(())
}

/// Quota rejections, health and re-initialisations, by key store.
fn write_store_state_families(out: &mut String, stores: &[&StoreMetrics]) -> fmt::Result {
    header(
        out,
        "xks_proxy_quota_rejections_total",
        "Requests refused with ThrottlingException by the key store's quota.",
        "counter",
    )?;
    for s in stores {
        let n = s.quota_rejections.load(Relaxed);
        if n > 0 {
            sample(
                out,
                "xks_proxy_quota_rejections_total",
                &[("key_store", s.name.as_str())],
                n,
            )?;
        }
    }

    header(
        out,
        "xks_proxy_health_status",
        "Latest health check of the key store: 2 ACTIVE, 1 DEGRADED, 0 UNAVAILABLE.",
        "gauge",
    )?;
    for s in stores {
        let h = s.health.load(Relaxed);
        if h != HEALTH_UNSET {
            sample(
                out,
                "xks_proxy_health_status",
                &[("key_store", s.name.as_str())],
                h,
            )?;
        }
    }

    header(
        out,
        "xks_proxy_backend_reinitializations_total",
        "Times the key store's backend re-initialised its key manager connection (PKCS#11).",
        "counter",
    )?;
    for s in stores {
        let n = s.reinitializations.load(Relaxed);
        if n != u64::MAX {
            sample(
                out,
                "xks_proxy_backend_reinitializations_total",
                &[("key_store", s.name.as_str())],
                n,
            )?;
        }
    }
    Ok(())
}

/// Writes the `# HELP` and `# TYPE` lines of a family (help texts are constants without
/// backslashes or newlines, so they need no escaping).
fn header(out: &mut String, name: &str, help: &str, kind: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// Writes `{k="v",...}` (nothing for no labels), escaping the values.
fn labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Writes one sample line.
fn sample(
    out: &mut String,
    name: &str,
    label_set: &[(&str, &str)],
    value: impl fmt::Display,
) -> fmt::Result {
    out.push_str(name);
    labels(out, label_set);
    writeln!(out, " {value}")
}

/// Writes a histogram's `_bucket` (cumulative, then `+Inf`), `_sum` and `_count` lines;
/// nothing if it has no observations.
fn histogram(
    out: &mut String,
    name: &str,
    label_set: &[(&str, &str); 2],
    h: &Histogram,
) -> fmt::Result {
    let (buckets, sum_micros) = h.snapshot();
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return Ok(());
    }
    let bucket_name = format!("{name}_bucket");
    let mut cumulative = 0;
    for (n, le) in buckets.iter().zip(BUCKET_LABELS) {
        cumulative += n;
        let [a, b] = *label_set;
        sample(out, &bucket_name, &[a, b, ("le", le)], cumulative)?;
    }
    let seconds = format!("{}.{:06}", sum_micros / 1_000_000, sum_micros % 1_000_000);
    sample(out, &format!("{name}_sum"), label_set, seconds)?;
    sample(out, &format!("{name}_count"), label_set, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `{k="v",...}` (already stripped of the braces), unescaping values.
    fn parse_labels(mut s: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        while !s.is_empty() {
            let (key, rest) = s.split_once("=\"").ok_or(format!("no =\" in {s:?}"))?;
            if !valid_name(key) || key.starts_with("__") {
                return Err(format!("bad label name {key:?}"));
            }
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated value in {s:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {s:?}")),
                    },
                    Some((_, '\n')) => return Err("raw newline in label value".into()),
                    Some((_, c)) => value.push(c),
                }
            };
            if out.iter().any(|(k, _)| k == key) {
                return Err(format!("duplicate label {key:?}"));
            }
            out.push((key.to_owned(), value));
            s = &rest[end + 1..];
            if let Some(next) = s.strip_prefix(',') {
                s = next;
                if s.is_empty() {
                    return Err("trailing comma".into());
                }
            } else if !s.is_empty() {
                return Err(format!("junk after label value: {s:?}"));
            }
        }
        Ok(out)
    }

    /// A line-based check of the text format: every non-comment line is
    /// `name{labels} value` with a float value; every family has `# HELP` then `# TYPE`
    /// before its samples, and its samples are together; no series repeats.
    fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        let mut helped = HashSet::new();
        let mut typed = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut seen_series = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').ok_or("HELP without text")?;
                if !valid_name(name) || help.is_empty() || !helped.insert(name.to_owned()) {
                    return Err(format!("bad or repeated HELP: {line:?}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or("TYPE without type")?;
                if !helped.contains(name) {
                    return Err(format!("TYPE before HELP: {line:?}"));
                }
                if !["counter", "gauge", "histogram"].contains(&kind)
                    || !typed.insert(name.to_owned())
                {
                    return Err(format!("bad or repeated TYPE: {line:?}"));
                }
                current = Some((name.to_owned(), kind.to_owned()));
            } else if line.starts_with('#') || line.is_empty() {
                return Err(format!("unexpected line {line:?}"));
            } else {
                let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
                let value: f64 = value
                    .parse()
                    .map_err(|_| format!("value not a float: {line:?}"))?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let inner = rest.strip_suffix('}').ok_or("unclosed labels")?;
                        (name, parse_labels(inner)?)
                    }
                    None => (series, Vec::new()),
                };
                if !valid_name(name) {
                    return Err(format!("bad metric name {name:?}"));
                }
                let (family, kind) = current.as_ref().ok_or("sample before any TYPE")?;
                let belongs = name == family
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| name.strip_suffix(suffix) == Some(family)));
                if !belongs {
                    return Err(format!("{name} is not in family {family}"));
                }
                if (name.ends_with("_bucket") && kind == "histogram")
                    != labels.iter().any(|(k, _)| k == "le")
                {
                    return Err(format!("le label misplaced: {line:?}"));
                }
                if !seen_series.insert(series.to_owned()) {
                    return Err(format!("repeated series {series}"));
                }
                samples.push(Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                });
            }
        }
        Ok(samples)
    }

    fn parse(m: &Metrics) -> Vec<Sample> {
        let text = m.render();
        check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The value of the series `name{labels}` (labels in any order), if rendered.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
        assert_send_sync::<StoreMetricsHandle>();
    }

    #[test]
    fn requests_are_counted_with_their_labels() {
        let m = Metrics::new(&names(&["a", "b"]));
        let a = m.ensure_key_store("a");
        m.request(Some(&a), Operation::Encrypt, Outcome::Success, ms(1));
        m.request(Some(&a), Operation::Encrypt, Outcome::Success, ms(2));
        m.request(
            Some(&a),
            Operation::Decrypt,
            ErrorName::InvalidCiphertextException.into(),
            ms(3),
        );
        m.request(
            None,
            OperationLabel::Other,
            ErrorName::AuthenticationFailedException.into(),
            ms(0),
        );
        m.request(None, Operation::Health, Outcome::MethodNotAllowed, ms(0));
        let s = parse(&m);
        let req = |store, op, err| {
            value(
                &s,
                "xks_proxy_requests_total",
                &[("key_store", store), ("operation", op), ("error_name", err)],
            )
        };
        assert_eq!(req("a", "Encrypt", "none"), Some(2.0));
        assert_eq!(req("a", "Decrypt", "InvalidCiphertextException"), Some(1.0));
        assert_eq!(req("", "other", "AuthenticationFailedException"), Some(1.0));
        assert_eq!(req("", "GetHealthStatus", "method_not_allowed"), Some(1.0));
        // Unobserved combinations and the unused store add no series.
        assert_eq!(req("a", "Decrypt", "none"), None);
        assert!(
            s.iter()
                .filter(|x| x.name.starts_with("xks_proxy_request"))
                .all(|x| x.labels[0].1 != "b")
        );
        let count = |store, op| {
            value(
                &s,
                "xks_proxy_request_duration_seconds_count",
                &[("key_store", store), ("operation", op)],
            )
        };
        assert_eq!(count("a", "Encrypt"), Some(2.0));
        assert_eq!(count("a", "Decrypt"), Some(1.0));
        assert_eq!(count("a", "GetKeyMetadata"), None);
        let sum = value(
            &s,
            "xks_proxy_request_duration_seconds_sum",
            &[("key_store", "a"), ("operation", "Encrypt")],
        );
        assert_eq!(sum, Some(0.003));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(&names(&["a"]));
        let a = m.ensure_key_store("a");
        let latencies = [
            Duration::ZERO,
            Duration::from_micros(500), // exactly a bound: in le="0.0005"
            Duration::from_micros(501),
            ms(3),
            ms(250),
            ms(300),
            Duration::from_secs(10),
        ];
        for d in latencies {
            m.backend_call(&a, BackendCall::Encrypt, true, d);
        }
        let s = parse(&m);
        let bucket = |le| {
            value(
                &s,
                "xks_proxy_backend_duration_seconds_bucket",
                &[("key_store", "a"), ("call", "encrypt"), ("le", le)],
            )
        };
        let expected = [
            ("0.0005", 2.0),
            ("0.001", 3.0),
            ("0.0025", 3.0),
            ("0.005", 4.0),
            ("0.2", 4.0),
            ("0.25", 5.0),
            ("0.5", 6.0),
            ("2.5", 6.0),
            ("+Inf", 7.0),
        ];
        for (le, n) in expected {
            assert_eq!(bucket(le), Some(n), "le={le}");
        }
        let labels = [("key_store", "a"), ("call", "encrypt")];
        assert_eq!(
            value(&s, "xks_proxy_backend_duration_seconds_count", &labels),
            Some(7.0)
        );
        let sum = value(&s, "xks_proxy_backend_duration_seconds_sum", &labels);
        assert_eq!(sum, Some(10.554001));
        // A call observed without errors renders a real zero.
        assert_eq!(
            value(&s, "xks_proxy_backend_errors_total", &labels),
            Some(0.0)
        );
    }

    #[test]
    fn every_histogram_is_cumulative_and_counts_match_inf() {
        let m = Metrics::new(&names(&["a", "b"]));
        let (a, b) = (m.ensure_key_store("a"), m.ensure_key_store("b"));
        let mut n = 0u64;
        for (i, op) in OperationLabel::ALL.into_iter().enumerate() {
            for j in 0..40u64 {
                let d = Duration::from_micros((j * j * 997 + i as u64 * 131) % 3_000_000);
                m.request(Some(&a), op, Outcome::Success, d);
                m.request(None, op, Outcome::Success, d * 2);
                if let Some(&call) = BackendCall::ALL.get(i) {
                    m.backend_call(&b, call, j % 3 == 0, d);
                }
                n += 1;
            }
        }
        let s = parse(&m);
        let mut histograms = 0;
        let mut i = 0;
        while i < s.len() {
            if !s[i].name.ends_with("_bucket") {
                i += 1;
                continue;
            }
            let family = s[i].name.trim_end_matches("_bucket").to_owned();
            let series: Vec<_> = s[i].labels.iter().filter(|(k, _)| k != "le").collect();
            let mut previous = 0.0;
            let mut les = Vec::new();
            while i < s.len() && s[i].name.ends_with("_bucket") {
                let same: Vec<_> = s[i].labels.iter().filter(|(k, _)| k != "le").collect();
                if same != series {
                    break;
                }
                assert!(s[i].value >= previous, "not cumulative at {:?}", s[i]);
                previous = s[i].value;
                les.push(
                    s[i].labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .map(|(_, v)| v.clone()),
                );
                i += 1;
            }
            let want: Vec<_> = BUCKET_LABELS
                .iter()
                .map(|l| Some((*l).to_owned()))
                .collect();
            assert_eq!(les, want);
            let labels: Vec<(&str, &str)> = series
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = value(&s, &format!("{family}_count"), &labels);
            assert_eq!(count, Some(previous), "{family} {labels:?}");
            assert_eq!(count, Some(40.0));
            assert!(value(&s, &format!("{family}_sum"), &labels).is_some());
            histograms += 1;
        }
        assert_eq!(histograms, 5 + 5 + 4);
        assert_eq!(n, 200);
    }

    #[test]
    fn label_values_are_escaped() {
        let name = "a\"b\\c\nd";
        let m = Metrics::new(&[name.to_owned()]);
        let h = m.store(name).expect("registered");
        m.quota_rejected(&h);
        m.set_certificate_expiry("main\n\"x\"", 7);
        let text = m.render();
        assert!(
            text.contains("xks_proxy_quota_rejections_total{key_store=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "xks_proxy_tls_certificate_not_after_seconds{listener=\"main\\n\\\"x\\\"\"} 7\n"
            ),
            "{text}"
        );
        // The checker unescapes back to the original.
        let s = parse(&m);
        assert_eq!(
            value(
                &s,
                "xks_proxy_quota_rejections_total",
                &[("key_store", name)]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn key_stores_carry_over_and_are_added_lazily() {
        let m = Metrics::new(&names(&["a", "b", "a"]));
        let old_a = m.store("a").expect("a");
        let old_b = m.store("b").expect("b");
        assert!(m.store("c").is_none());
        m.request(Some(&old_a), Operation::Encrypt, Outcome::Success, ms(1));
        m.quota_rejected(&old_b);
        m.health_check(&old_b, HealthStatus::Degraded);

        // A reload: the new config has a and c.
        let new = names(&["a", "c"]);
        let new_a = m.ensure_key_store("a");
        let new_c = m.ensure_key_store("c");
        assert_eq!(new_c.name(), "c");
        m.retain_key_stores(&new);
        m.config_reload(true);
        // A request in flight on the old state and one on the new count together.
        m.request(Some(&old_a), Operation::Encrypt, Outcome::Success, ms(1));
        m.request(Some(&new_a), Operation::Encrypt, Outcome::Success, ms(1));
        m.request(Some(&new_c), Operation::Decrypt, Outcome::Success, ms(1));
        // The removed store's handle still works but is no longer rendered.
        m.quota_rejected(&old_b);
        assert!(m.store("b").is_none());

        let s = parse(&m);
        let req = |store, op| {
            value(
                &s,
                "xks_proxy_requests_total",
                &[
                    ("key_store", store),
                    ("operation", op),
                    ("error_name", "none"),
                ],
            )
        };
        assert_eq!(req("a", "Encrypt"), Some(3.0));
        assert_eq!(req("c", "Decrypt"), Some(1.0));
        assert!(
            s.iter()
                .all(|x| !x.labels.contains(&("key_store".into(), "b".into())))
        );
        assert_eq!(
            value(&s, "xks_proxy_config_reloads_total", &[("result", "ok")]),
            Some(1.0)
        );

        // Registered again later, b starts from zero.
        let b = m.ensure_key_store("b");
        m.quota_rejected(&b);
        let s = parse(&m);
        assert_eq!(
            value(
                &s,
                "xks_proxy_quota_rejections_total",
                &[("key_store", "b")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "xks_proxy_health_status", &[("key_store", "b")]),
            None
        );
    }

    #[test]
    fn concurrent_observations_are_exact() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 10_000;
        let m = Arc::new(Metrics::new(&names(&["a", "b"])));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let a = m.ensure_key_store("a");
                    let b = m.store("b").expect("b");
                    for i in 0..PER_THREAD {
                        m.connection_accepted();
                        m.request(Some(&a), Operation::Encrypt, Outcome::Success, ms(t));
                        m.request(
                            Some(&b),
                            Operation::Decrypt,
                            ErrorName::ThrottlingException.into(),
                            Duration::from_micros(i % 1000),
                        );
                        m.backend_call(&a, BackendCall::Encrypt, i % 2 == 0, ms(1));
                        m.quota_rejected(&b);
                        m.connection_closed();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        let total = (THREADS * PER_THREAD) as f64;
        let s = parse(&m);
        let v = |name, labels: &[(&str, &str)]| value(&s, name, labels);
        assert_eq!(
            v(
                "xks_proxy_requests_total",
                &[
                    ("key_store", "a"),
                    ("operation", "Encrypt"),
                    ("error_name", "none")
                ]
            ),
            Some(total)
        );
        assert_eq!(
            v(
                "xks_proxy_requests_total",
                &[
                    ("key_store", "b"),
                    ("operation", "Decrypt"),
                    ("error_name", "ThrottlingException")
                ]
            ),
            Some(total)
        );
        let enc = [("key_store", "a"), ("operation", "Encrypt")];
        assert_eq!(
            v("xks_proxy_request_duration_seconds_count", &enc),
            Some(total)
        );
        // Thread t observed t ms 10,000 times: 0 + 1 + 2 + 3 ms, times 10,000 = 60 s.
        assert_eq!(
            v("xks_proxy_request_duration_seconds_sum", &enc),
            Some(60.0)
        );
        let dec = [("key_store", "b"), ("operation", "Decrypt")];
        // 0..1000 µs, 10 rounds per thread: 499,500 µs × 10 × 4.
        assert_eq!(
            v("xks_proxy_request_duration_seconds_sum", &dec),
            Some(19.98)
        );
        let call = [("key_store", "a"), ("call", "encrypt")];
        assert_eq!(
            v("xks_proxy_backend_errors_total", &call),
            Some(total / 2.0)
        );
        assert_eq!(
            v("xks_proxy_backend_duration_seconds_count", &call),
            Some(total)
        );
        assert_eq!(
            v("xks_proxy_quota_rejections_total", &[("key_store", "b")]),
            Some(total)
        );
        assert_eq!(v("xks_proxy_connections_accepted_total", &[]), Some(total));
        assert_eq!(v("xks_proxy_connections_open", &[]), Some(0.0));
    }

    #[test]
    fn gauges_connections_and_reloads() {
        let m = Metrics::default();
        // The process-wide families are always there, even before any observation.
        let s = parse(&m);
        assert_eq!(
            value(&s, "xks_proxy_connections_accepted_total", &[]),
            Some(0.0)
        );
        assert_eq!(value(&s, "xks_proxy_connections_open", &[]), Some(0.0));
        assert_eq!(
            value(&s, "xks_proxy_config_reloads_total", &[("result", "ok")]),
            Some(0.0)
        );
        assert_eq!(
            value(&s, "xks_proxy_config_reloads_total", &[("result", "error")]),
            Some(0.0)
        );
        assert_eq!(s.len(), 4, "{s:?}");
        let text = m.render();
        for family in [
            "xks_proxy_requests_total counter",
            "xks_proxy_request_duration_seconds histogram",
            "xks_proxy_backend_duration_seconds histogram",
            "xks_proxy_backend_errors_total counter",
            "xks_proxy_quota_rejections_total counter",
            "xks_proxy_health_status gauge",
            "xks_proxy_tls_certificate_not_after_seconds gauge",
            "xks_proxy_connections_accepted_total counter",
            "xks_proxy_connections_open gauge",
            "xks_proxy_config_reloads_total counter",
        ] {
            assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
        }

        let a = m.ensure_key_store("a");
        let b = m.ensure_key_store("b");
        let c = m.ensure_key_store("c");
        m.health_check(&a, HealthStatus::Degraded);
        m.health_check(&a, HealthStatus::Active);
        m.health_check(&b, HealthStatus::Degraded);
        m.health_check(&c, HealthStatus::Unavailable);
        m.set_certificate_expiry("xks", 1_700_000_000);
        m.set_certificate_expiry("admin", 1_800_000_000);
        m.set_certificate_expiry("xks", 1_900_000_000);
        m.connection_accepted();
        m.connection_accepted();
        m.connection_accepted();
        m.connection_closed();
        m.config_reload(true);
        m.config_reload(false);
        m.config_reload(false);
        let s = parse(&m);
        let health = |store| value(&s, "xks_proxy_health_status", &[("key_store", store)]);
        assert_eq!(health("a"), Some(2.0));
        assert_eq!(health("b"), Some(1.0));
        assert_eq!(health("c"), Some(0.0));
        let cert = |l| {
            value(
                &s,
                "xks_proxy_tls_certificate_not_after_seconds",
                &[("listener", l)],
            )
        };
        assert_eq!(cert("xks"), Some(1_900_000_000.0));
        assert_eq!(cert("admin"), Some(1_800_000_000.0));
        assert_eq!(
            value(&s, "xks_proxy_connections_accepted_total", &[]),
            Some(3.0)
        );
        assert_eq!(value(&s, "xks_proxy_connections_open", &[]), Some(2.0));
        assert_eq!(
            value(&s, "xks_proxy_config_reloads_total", &[("result", "ok")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "xks_proxy_config_reloads_total", &[("result", "error")]),
            Some(2.0)
        );
    }

    #[test]
    fn full_exposition_is_well_formed() {
        let m = Metrics::new(&names(&["a", "weird \"store\"\\\n"]));
        for (i, name) in ["a", "weird \"store\"\\\n"].into_iter().enumerate() {
            let h = m.store(name).expect("registered");
            for op in OperationLabel::ALL {
                for outcome in Outcome::ALL {
                    m.request(Some(&h), op, outcome, ms(i as u64 * 7));
                }
            }
            for call in BackendCall::ALL {
                m.backend_call(&h, call, false, ms(3));
            }
            m.quota_rejected(&h);
            m.health_check(&h, HealthStatus::Active);
        }
        m.request(
            None,
            OperationLabel::Other,
            Outcome::MethodNotAllowed,
            ms(1),
        );
        m.set_certificate_expiry("xks", 1);
        let s = parse(&m);
        let requests = s
            .iter()
            .filter(|x| x.name == "xks_proxy_requests_total")
            .count();
        assert_eq!(requests, 2 * OPERATIONS * OUTCOMES + 1);
        // Malformed input is refused by the checker.
        for bad in [
            "x 1\n",
            "# HELP x h\nx 1\n",
            "# HELP x h\n# TYPE x counter\nx{a=\"b} 1\n",
            "# HELP x h\n# TYPE x counter\nx{a=\"\\t\"} 1\n",
            "# HELP x h\n# TYPE x counter\nx one\n",
            "# HELP x h\n# TYPE x counter\ny 1\n",
            "# HELP x h\n# TYPE x counter\nx 1\nx 2\n",
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outcomes_and_buckets_are_consistent() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
        for (i, name) in ErrorName::ALL.into_iter().enumerate() {
            assert_eq!(Outcome::from(name).index(), i + 1);
            assert_eq!(Outcome::from(name).as_str(), name.as_str());
        }
        for (i, op) in OperationLabel::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        for (i, call) in BackendCall::ALL.into_iter().enumerate() {
            assert_eq!(call.index(), i);
        }
        assert_eq!(BUCKET_LABELS.last(), Some(&"+Inf"));
        for (bound, label) in BUCKET_BOUNDS_MICROS.iter().zip(BUCKET_LABELS) {
            let seconds: f64 = label.parse().expect("float");
            assert_eq!((seconds * 1e6).round() as u64, *bound);
        }
        assert!(BUCKET_BOUNDS_MICROS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            OperationLabel::from(Operation::Health).as_str(),
            "GetHealthStatus"
        );
    }
}
