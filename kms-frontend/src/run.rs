//! Running the front end: open storage, load the root key, bind, serve until SIGTERM.

use std::sync::Arc;

use crate::auth::Callers;
use crate::clock::Clock;
use crate::config::FrontendConfig;
use crate::service::Kms;
use crate::storage::SqliteStorage;

/// Why the front end could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Storage could not be opened.
    #[error("storage {path}: {message}")]
    Storage {
        /// The database file.
        path: std::path::PathBuf,
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

/// Health-checks every CONNECTED store, as KMS does every few minutes. Results are logged
/// and counted; they never change a store's state.
fn periodic_health_checks(kms: &Kms) {
    let Ok(stores) = kms.storage.connected_custom_key_stores() else {
        return;
    };
    for s in stores {
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

/// Builds the service from a config.
pub fn build(cfg: &FrontendConfig) -> Result<Kms, RunError> {
    if let Some(dir) = cfg.storage_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let storage = SqliteStorage::open(&cfg.storage_path).map_err(|e| RunError::Storage {
        path: cfg.storage_path.clone(),
        message: e.to_string(),
    })?;
    Ok(Kms {
        storage: Arc::new(storage),
        root: root_key::RootKey::load(&cfg.root_key)?,
        callers: Callers::from_config(cfg),
        clock: Clock::system(),
        max_keys: cfg.max_keys_per_region,
        xks: xks_client(&cfg.xks)?,
        health_checks_ok: Default::default(),
        health_checks_failed: Default::default(),
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
    // Deletion windows end even when nobody calls.
    let sweeper = kms.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::service::SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let k = sweeper.clone();
            let _ = tokio::task::spawn_blocking(move || k.sweep_deletions()).await;
        }
    });
    let checker = kms.clone();
    let interval = cfg.xks.health_check_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let k = checker.clone();
            let _ = tokio::task::spawn_blocking(move || periodic_health_checks(&k)).await;
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
    https_server::serve(
        listener,
        transport,
        crate::http::router(kms, cfg.server_limits.max_in_flight_requests),
        cfg.server_limits.connection,
        Arc::new(NoObserver),
        shutdown_signal(),
    )
    .await;
    Ok(())
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
