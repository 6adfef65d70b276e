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
    })
}

/// Runs the front end until a termination signal.
pub async fn run(cfg: FrontendConfig) -> Result<(), RunError> {
    let kms = Arc::new(build(&cfg)?);
    let transport = match &cfg.tls {
        Some((chain, key)) => {
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
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let k = sweeper.clone();
            let _ = tokio::task::spawn_blocking(move || k.sweep_deletions()).await;
        }
    });
    println!("kms-frontend listening on {scheme}://{local}");
    let limits = https_server::ConnectionLimits {
        max_connections: 4096,
        idle_timeout: std::time::Duration::from_secs(60),
    };
    https_server::serve(
        listener,
        transport,
        crate::http::router(kms),
        limits,
        Arc::new(NoObserver),
        shutdown_signal(),
    )
    .await;
    Ok(())
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
