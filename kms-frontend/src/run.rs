//! Running the front end: open storage, load the root key, bind, serve until SIGTERM.

use std::sync::Arc;

use crate::auth::Callers;
use crate::clock::Clock;
use crate::config::{FrontendConfig, StorageSettings};
use crate::service::Kms;
use crate::storage::{SqliteStorage, Storage};

/// Why the front end could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Storage could not be opened.
    #[error("storage {location}: {message}")]
    Storage {
        /// The database file, or the PostgreSQL URL (which holds no password).
        location: String,
        /// Why.
        message: String,
    },
    /// The root key could not be loaded.
    #[error(transparent)]
    RootKey(#[from] root_key::RootKeyError),
    /// TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct NoObserver;

impl https_server::ConnectionObserver for NoObserver {
    fn connection_accepted(&self) {}
    fn connection_closed(&self) {}
}

/// The system trust store, used when no private CA bundle is configured.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn xks_client(x: &crate::config::XksSettings) -> Result<crate::xks_client::XksClient, RunError> {
    let bundle = x
        .trusted_ca_bundle
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_CA_BUNDLE));
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| RunError::Tls(format!("{}: {e}", p.display())))
    };
    let pem = read(&bundle)?;
    let client_identity = match &x.client_identity {
        Some((chain, key)) => Some(service_tls::client::ClientIdentity {
            cert_chain_pem: read(chain)?,
            key_pem: zeroize::Zeroizing::new(read(key)?),
        }),
        None => None,
    };
    crate::xks_client::XksClient::new(crate::xks_client::XksClientConfig {
        trust: service_tls::client::RootCertificates::Pem(pem),
        resolve: x.resolve.clone(),
        client_identity,
        timeout: x.timeout,
        allow_private_endpoints: x.allow_private_endpoints,
    })
    .map_err(|e| RunError::Tls(format!("XKS client: {e}")))
}

/// Which stores' proxies this process polls: in a fleet sharing one database, one process
/// at a time polls a given proxy, the holder of that store's lease (`Storage::acquire_lease`),
/// renewed at every round and taken over by another process once the holder stops renewing
/// it (it died or lost the database) for [`ProxyPollLeases::ttl_ms`].
#[derive(Debug)]
struct ProxyPollLeases {
    /// This process, as the lease holder: unique per process run.
    holder: String,
    /// How long a lease lasts without renewal: three polling intervals, so a missed round
    /// (a slow proxy) does not hand the proxy to another process.
    ttl_ms: i64,
    /// The leases this process took, released at shutdown so another process takes over
    /// at once.
    held: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl ProxyPollLeases {
    fn new(interval: std::time::Duration) -> Self {
        let ttl = interval.saturating_mul(3).as_millis();
        Self {
            holder: uuid::Uuid::new_v4().to_string(),
            ttl_ms: i64::try_from(ttl).unwrap_or(i64::MAX),
            held: Default::default(),
        }
    }

    /// The lease of one store's proxy.
    fn name(s: &crate::storage::CustomKeyStoreRecord) -> String {
        format!("xks-poll/{}/{}/{}", s.account_id, s.region, s.id)
    }

    /// Whether this process polls `s` now (takes or renews its lease). Leases are about
    /// process liveness, so they run on the system clock, never the service clock (which
    /// tests move forward, and which is per process).
    fn take(&self, kms: &Kms, s: &crate::storage::CustomKeyStoreRecord) -> bool {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let name = Self::name(s);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match kms
            .storage
            .acquire_lease(&name, &self.holder, now_ms, self.ttl_ms)
        {
            Ok(true) => {
                if held.insert(name) {
                    tracing::info!(custom_key_store = %s.id, "this process now polls the store's proxy");
                }
                true
            }
            Ok(false) => {
                held.remove(&name);
                false
            }
            Err(e) => {
                held.remove(&name);
                tracing::warn!(custom_key_store = %s.id, error = %e, "could not take the proxy polling lease");
                false
            }
        }
    }

    /// Gives up every lease this process holds (graceful shutdown).
    fn release_all(&self, kms: &Kms) {
        let held = std::mem::take(
            &mut *self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for name in held {
            if let Err(e) = kms.storage.release_lease(&name, &self.holder) {
                tracing::debug!(lease = %name, error = %e, "could not release a lease; it expires");
            }
        }
    }
}

/// Health-checks every CONNECTED store whose polling lease this process holds, as KMS does
/// every few minutes. Results are logged and counted; they never change a store's state.
fn periodic_health_checks(kms: &Kms, leases: &ProxyPollLeases) {
    let Ok(stores) = kms.storage.connected_custom_key_stores() else {
        return;
    };
    for s in stores {
        if !leases.take(kms, &s) {
            continue;
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let outcome = crate::ops::target_secret(kms, &s)
            .map_err(|e| e.message)
            .and_then(|secret| {
                crate::ops::health_check(kms, &s.region, &request_id, &s, &secret, "KmsHealthCheck")
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok(()) => {
                kms.health_checks_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(custom_key_store = %s.id, kms_request_id = %request_id, "periodic health check ok");
            }
            Err(e) => {
                kms.health_checks_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(custom_key_store = %s.id, kms_request_id = %request_id, error = %e, "periodic health check failed");
            }
        }
    }
}

/// Opens the configured storage backend (PostgreSQL: connects and applies the schema
/// migrations, so a front end that starts has a usable database).
fn open_storage(settings: &StorageSettings) -> Result<Arc<dyn Storage>, RunError> {
    match settings {
        StorageSettings::Sqlite(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let storage = SqliteStorage::open(path).map_err(|e| RunError::Storage {
                location: path.display().to_string(),
                message: e.to_string(),
            })?;
            Ok(Arc::new(storage))
        }
        #[cfg(feature = "postgres")]
        StorageSettings::Postgres(pg) => {
            let storage = crate::storage::PgStorage::open(pg).map_err(|e| RunError::Storage {
                location: pg.url.clone(),
                message: e.to_string(),
            })?;
            Ok(Arc::new(storage))
        }
        #[cfg(not(feature = "postgres"))]
        StorageSettings::Postgres(pg) => Err(RunError::Storage {
            location: pg.url.clone(),
            message: "this build has no PostgreSQL support (cargo feature `postgres`)".into(),
        }),
    }
}

/// Builds the service from a config.
pub fn build(cfg: &FrontendConfig) -> Result<Kms, RunError> {
    Ok(Kms {
        storage: open_storage(&cfg.storage)?,
        root: root_key::RootKey::load(&cfg.root_key)?,
        callers: Callers::from_config(cfg),
        clock: Clock::system(),
        max_keys: cfg.max_keys_per_region,
        grant_limits: cfg.grant_limits,
        xks: xks_client(&cfg.xks)?,
        health_checks_ok: Default::default(),
        health_checks_failed: Default::default(),
        usage: Default::default(),
    })
}

/// Runs the front end until a termination signal.
pub async fn run(mut cfg: FrontendConfig) -> Result<(), RunError> {
    let kms = Arc::new(build(&cfg)?);
    // The principals' secrets now live only in `kms.callers`: wipe the config's copy, and
    // reload the principals on SIGHUP (see `crate::reload`).
    let settings = crate::reload::settings_without_principals(&mut cfg);
    tokio::spawn(crate::reload::reload_on_sighup(
        kms.clone(),
        cfg.path.clone(),
        settings,
    ));
    let transport = match &cfg.tls {
        Some((chain, key)) => {
            if let Some(warning) = service_tls::server::private_key_exposure(key) {
                tracing::warn!("{warning}");
            }
            let tls =
                service_tls::server::load_server_config(&service_tls::server::ServerTlsFiles {
                    cert_chain: chain.clone(),
                    private_key: key.clone(),
                    client_auth: None,
                })
                .map_err(|e| RunError::Tls(e.to_string()))?;
            https_server::Transport::Tls(Arc::new(arc_swap::ArcSwap::new(tls)))
        }
        None => {
            tracing::warn!("serving plain HTTP (server.allow_plaintext_http = true)");
            https_server::Transport::PlainHttp
        }
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let listener = https_server::bind(cfg.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| RunError::Bind {
        addr: cfg.listen,
        source,
    })?;
    // Deletion windows end, rotations fall due and imported material expires even when
    // nobody calls.
    let sweeper = kms.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::service::SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let k = sweeper.clone();
            let _ = tokio::task::spawn_blocking(move || k.sweep_time_driven()).await;
        }
    });
    // Key uses are written in batches (see `crate::last_usage`).
    let flusher = kms.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::last_usage::FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            let k = flusher.clone();
            let _ = tokio::task::spawn_blocking(move || flush_key_usages(&k)).await;
        }
    });
    let checker = kms.clone();
    let interval = cfg.xks.health_check_interval;
    let leases = Arc::new(ProxyPollLeases::new(interval));
    let poll_leases = leases.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (k, l) = (checker.clone(), poll_leases.clone());
            let _ = tokio::task::spawn_blocking(move || periodic_health_checks(&k, &l)).await;
        }
    });
    println!("kms-frontend listening on {scheme}://{local}");
    if let Some(addr) = cfg.admin_listen {
        let l = https_server::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        let a = l
            .local_addr()
            .map_err(|source| RunError::Bind { addr, source })?;
        println!("kms-frontend admin listening on http://{a}");
        tokio::spawn(serve_admin(l, kms.clone()));
    }
    let last_flush = kms.clone();
    https_server::serve(
        listener,
        transport,
        crate::http::router(kms, cfg.server_limits.max_in_flight_requests),
        cfg.server_limits.connection,
        Arc::new(NoObserver),
        shutdown_signal(),
    )
    .await;
    let _ = tokio::task::spawn_blocking(move || {
        flush_key_usages(&last_flush);
        leases.release_all(&last_flush);
    })
    .await;
    Ok(())
}

/// Writes the key uses recorded since the last flush; a failure keeps them for the next.
fn flush_key_usages(kms: &Kms) {
    if let Err(e) = kms.usage.flush(kms.storage.as_ref()) {
        tracing::warn!(error = %e, "could not record key usage; will retry");
    }
}

async fn serve_admin(listener: tokio::net::TcpListener, kms: Arc<Kms>) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ping", get(|| async { "pong from kms-frontend" }))
        .route(
            "/metrics",
            get(move || {
                let k = kms.clone();
                async move {
                    let ok = k.health_checks_ok.load(std::sync::atomic::Ordering::Relaxed);
                    let failed = k.health_checks_failed.load(std::sync::atomic::Ordering::Relaxed);
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        format!(
                            "# HELP kms_frontend_xks_health_checks_total Periodic health checks of connected external key store proxies.\n# TYPE kms_frontend_xks_health_checks_total counter\nkms_frontend_xks_health_checks_total{{result=\"ok\"}} {ok}\nkms_frontend_xks_health_checks_total{{result=\"error\"}} {failed}\n"
                        ),
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin listener stopped");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => std::future::pending().await,
    }
}
