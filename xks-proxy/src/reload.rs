//! Reloading without a restart: on SIGHUP, or when a watched file changes (config, secrets,
//! TLS files, authorization policy), the config is read and validated again, a new state is
//! built whole and swapped in whole. A config that fails validation changes nothing.
//!
//! Open connections keep working across a reload: they keep their TLS session, and each
//! request reads the state current when it arrives. New connections use the new TLS
//! certificate.

use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::state::ProxyState;

type Fingerprint = Vec<(PathBuf, Option<(u64, u64, i64, i64)>)>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|p| {
            let id = std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
            (p.clone(), id)
        })
        .collect()
}

/// Reloads the proxy's configuration in place.
#[derive(Debug)]
pub struct Reloader {
    config_path: PathBuf,
    listen: SocketAddr,
    live: Arc<ArcSwap<ProxyState>>,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    metrics: Arc<Metrics>,
    watched: Mutex<Fingerprint>,
}

impl Reloader {
    /// A reloader for the state and TLS configuration built from `cfg`.
    pub fn new(
        cfg: &ProxyConfig,
        live: Arc<ArcSwap<ProxyState>>,
        tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config_path: cfg.path.clone(),
            listen: cfg.server.listen,
            live,
            tls,
            metrics,
            watched: Mutex::new(fingerprint(&cfg.watched_files())),
        }
    }

    /// Reads the config again and swaps in a new state and TLS configuration.
    pub fn reload(&self, reason: &str) -> Result<(), String> {
        let result = self.try_reload();
        self.metrics.config_reload(result.is_ok());
        match &result {
            Ok(stores) => tracing::info!(reason, key_stores = stores, "configuration reloaded"),
            Err(e) => {
                tracing::error!(reason, error = %e, "configuration reload failed; keeping the running configuration")
            }
        }
        result.map(|_| ())
    }

    fn try_reload(&self) -> Result<usize, String> {
        // Remember what we are about to read, even if it turns out unusable, so a bad file
        // is not retried in a loop; the next change triggers a new attempt.
        {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            let files: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
            *watched = fingerprint(&files);
        }
        let cfg = ProxyConfig::load(&self.config_path).map_err(|e| e.to_string())?;
        *self.watched.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint(&cfg.watched_files());
        if cfg.server.listen != self.listen {
            tracing::warn!(
                old = %self.listen,
                new = %cfg.server.listen,
                "server.listen changed: it takes effect at the next restart"
            );
        }
        let tls = match (&self.tls, &cfg.server.tls) {
            (Some(_), Some(files)) => Some(crate::run::load_tls(files).map_err(|e| e.to_string())?),
            (None, None) => None,
            _ => return Err("switching between TLS and plain HTTP needs a restart".into()),
        };
        let state = ProxyState::build(&cfg, &self.metrics).map_err(|e| e.to_string())?;
        let stores = state.stores.len();
        let names: Vec<String> = cfg.key_stores.iter().map(|k| k.name.clone()).collect();
        self.live.store(Arc::new(state));
        // Only now that the new state serves: stop rendering stores it no longer has.
        self.metrics.retain_key_stores(&names);
        if let (Some(slot), Some(new)) = (&self.tls, tls) {
            slot.store(new);
        }
        Ok(stores)
    }

    fn changed(&self) -> bool {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let files: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
        fingerprint(&files) != *watched
    }

    /// Reloads on SIGHUP and, every `poll`, when a watched file changed. Runs forever.
    pub async fn run(self: Arc<Self>, poll: Option<Duration>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut tick = poll.map(tokio::time::interval);
        loop {
            let reason = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = async { match tick.as_mut() { Some(t) => t.tick().await, None => std::future::pending().await } } => {
                    let me = self.clone();
                    let changed = tokio::task::spawn_blocking(move || me.changed()).await.unwrap_or(false);
                    if !changed {
                        continue;
                    }
                    "a watched file changed"
                }
            };
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload(reason)).await;
        }
    }
}
