//! Running the server: build state, bind the API and admin listeners, serve until
//! SIGTERM/SIGINT, reload on SIGHUP or file changes, drain.

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::config::{ProxyConfig, TlsFiles};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::server::{Transport, bind, serve};
use crate::state::ProxyState;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A key store or the policy could not be opened.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// `check-config` found a problem.
    #[error("{0}")]
    Check(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Loads the server TLS configuration (and mTLS settings) from files.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, RunError> {
    if let Some(warning) = service_tls::server::private_key_exposure(&files.private_key) {
        tracing::warn!("{warning}");
    }
    service_tls::server::load_server_config(&service_tls::server::ServerTlsFiles {
        cert_chain: files.certificate_chain.clone(),
        private_key: files.private_key.clone(),
        client_auth: files
            .client_auth
            .as_ref()
            .map(|c| service_tls::server::ClientAuthSettings {
                ca_bundle: c.ca_bundle.clone(),
                accepted_names: c.accepted_names.clone(),
            }),
    })
    .map_err(|e| RunError::Tls(e.to_string()))
}

fn record_certificate_expiry(metrics: &Metrics, files: &TlsFiles) {
    let expiry = std::fs::read_to_string(&files.certificate_chain)
        .ok()
        .and_then(|pem| service_tls::server::cert_not_after(&pem).ok());
    if let Some(t) = expiry {
        metrics.set_certificate_expiry("api", t.unix_timestamp());
    }
}

/// Validates everything a start would, without listening; returns a report.
pub async fn check(cfg: &ProxyConfig) -> Result<String, RunError> {
    let state = ProxyState::build(cfg, &Arc::new(Metrics::default()))?;
    if let Some(files) = &cfg.server.tls {
        load_tls(files)?;
    }
    let mut report = format!("config {} is valid\n", cfg.path.display());
    if let Some(p) = &state.policy {
        report.push_str(&format!(
            "authorization policy: rules {}\n",
            p.rule_names().join(", ")
        ));
    }
    let mut failed = Vec::new();
    for store in &state.stores {
        let (status, detail) = match store.backend.health_check().await {
            Ok(h) => (format!("{:?}", h.status).to_uppercase(), h.detail),
            Err(e) => ("UNAVAILABLE".to_owned(), e.to_string()),
        };
        if status != "ACTIVE" {
            failed.push(store.name.clone());
        }
        report.push_str(&format!(
            "key store '{}' ({}/kms/xks/v1): test key round trip {status} ({detail})\n",
            store.name, store.path_prefix
        ));
    }
    if failed.is_empty() {
        Ok(report)
    } else {
        Err(RunError::Check(format!(
            "{report}not healthy: {}",
            failed.join(", ")
        )))
    }
}

/// Runs the proxy described by `cfg` until a termination signal.
pub async fn run(cfg: ProxyConfig) -> Result<(), RunError> {
    let names: Vec<String> = cfg.key_stores.iter().map(|k| k.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    let state = ProxyState::build(&cfg, &metrics)?;
    let tls = match &cfg.server.tls {
        Some(files) => {
            record_certificate_expiry(&metrics, files);
            Some(Arc::new(ArcSwap::new(load_tls(files)?)))
        }
        None => {
            tracing::warn!(
                "serving plain HTTP (server.allow_plaintext_http = true): only behind a TLS-terminating load balancer"
            );
            None
        }
    };
    let transport = match &tls {
        Some(t) => Transport::Tls(t.clone()),
        None => Transport::PlainHttp,
    };
    let live = Arc::new(ArcSwap::from_pointee(state));
    let app = router(AppState {
        live: live.clone(),
        metrics: metrics.clone(),
        in_flight: Arc::new(Semaphore::new(cfg.server.limits.max_in_flight_requests)),
    });

    let listener = bind(cfg.server.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: cfg.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| RunError::Bind {
        addr: cfg.server.listen,
        source,
    })?;
    let admin = match cfg.admin.listen {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener (/metrics) is not on a loopback address");
            }
            let l = bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })?;
            let local = l
                .local_addr()
                .map_err(|source| RunError::Bind { addr, source })?;
            Some((l, local))
        }
        None => None,
    };

    for ks in &cfg.key_stores {
        tracing::info!(key_store = %ks.name, path = %format!("{}/kms/xks/v1", ks.path_prefix), "key store ready");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read these lines to learn the bound ports.
    println!("xks-proxy listening on {scheme}://{local}");
    if let Some((_, a)) = &admin {
        println!("xks-proxy admin listening on http://{a}");
    }

    let reloader = Arc::new(Reloader::new(
        &cfg,
        live.clone(),
        tls.clone(),
        metrics.clone(),
    ));
    tokio::spawn(reloader.run(cfg.server.reload_poll));
    if let Some((l, _)) = admin {
        tokio::spawn(serve_admin(l, metrics.clone()));
    }
    let limits = cfg.server.limits.connection;
    // The config holds the credentials' secrets; the live state has its own copies, which a
    // reload replaces. Keeping this one would keep a removed credential's secret in memory.
    drop(cfg);
    serve(listener, transport, app, limits, metrics, shutdown_signal()).await;
    Ok(())
}

async fn serve_admin(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route(
            "/ping",
            get(|| async { concat!("pong from xks-proxy ", env!("CARGO_PKG_VERSION")) }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
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
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}
