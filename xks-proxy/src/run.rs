//! Running the server: build state, bind, serve until SIGTERM/SIGINT, drain.

use arc_swap::ArcSwap;
use std::sync::Arc;

use crate::config::ProxyConfig;
use crate::http::{AppState, router};
use crate::server::{Transport, bind, serve};
use crate::state::ProxyState;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A key store could not be opened.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// `check-config` found a problem.
    #[error("{0}")]
    Check(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the proxy described by `cfg` until a termination signal.
pub async fn run(cfg: ProxyConfig) -> Result<(), RunError> {
    let state = ProxyState::build(&cfg)?;
    let transport = transport(&cfg)?;
    serve_state(cfg, state, transport).await
}

/// Validates everything a start would, without listening; returns a report.
pub async fn check(cfg: &ProxyConfig) -> Result<String, RunError> {
    let state = ProxyState::build(cfg)?;
    transport(cfg)?;
    let mut report = format!("config {} is valid\n", cfg.path.display());
    let mut failed = Vec::new();
    for store in &state.stores {
        let health = store.backend.health_check().await;
        let (status, detail) = match health {
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

fn transport(cfg: &ProxyConfig) -> Result<Transport, RunError> {
    Ok(match &cfg.server.tls {
        Some(files) => {
            let tls =
                service_tls::server::load_server_config(&service_tls::server::ServerTlsFiles {
                    cert_chain: files.certificate_chain.clone(),
                    private_key: files.private_key.clone(),
                    client_auth: None,
                })
                .map_err(|e| RunError::Tls(e.to_string()))?;
            Transport::Tls(tls)
        }
        None => Transport::PlainHttp,
    })
}

async fn serve_state(
    cfg: ProxyConfig,
    state: ProxyState,
    transport: Transport,
) -> Result<(), RunError> {
    if matches!(transport, Transport::PlainHttp) {
        tracing::warn!(
            "serving plain HTTP (server.allow_plaintext_http = true): only behind a TLS-terminating load balancer"
        );
    }
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
    let scheme = match transport {
        Transport::Tls(_) => "https",
        Transport::PlainHttp => "http",
    };
    let app = router(AppState {
        live: Arc::new(ArcSwap::from_pointee(state)),
    });
    for ks in &cfg.key_stores {
        tracing::info!(key_store = %ks.name, path = %format!("{}/kms/xks/v1", ks.path_prefix), "key store ready");
    }
    // Tests and scripts read this line to learn the bound port.
    println!("xks-proxy listening on {scheme}://{local}");
    serve(listener, transport, app, shutdown_signal()).await;
    Ok(())
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
