//! SIGHUP reload of the principals (the `[[accounts]]` part of the config): the config file
//! is read and validated again; a bad config changes nothing (the error is logged); a good
//! one replaces the principal table whole. Every other setting needs a restart, and a
//! reload that finds one changed says so in a warning.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::FrontendConfig;
use crate::service::Kms;

/// Takes the accounts (and with them the principals' secrets) out of `cfg`, wiping them,
/// and returns a description of every other setting, to tell later whether a reload
/// changed a setting that needs a restart. Called once the service holds its own copy of
/// the principals, so the start-up config keeps no second copy of any secret.
pub fn settings_without_principals(cfg: &mut FrontendConfig) -> String {
    // Dropping the accounts drops each `Zeroizing` secret, which wipes it.
    drop(std::mem::take(&mut cfg.accounts));
    format!("{cfg:?}")
}

/// Reloads the principals from `path` on every SIGHUP, for as long as the process runs.
/// `settings` is [`settings_without_principals`] of the running config.
pub async fn reload_on_sighup(kms: Arc<Kms>, path: PathBuf, settings: String) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; principals will not reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let k = kms.clone();
        let p = path.clone();
        let s = settings.clone();
        // Reading secret files is blocking file I/O.
        let _ = tokio::task::spawn_blocking(move || reload(&k, &p, &s)).await;
    }
}

/// One reload: validate, swap the principal table, drop the new config's secrets.
fn reload(kms: &Kms, path: &std::path::Path, settings: &str) {
    let mut cfg = match FrontendConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the config is not valid; nothing changed");
            return;
        }
    };
    kms.callers.replace(&cfg);
    if settings_without_principals(&mut cfg) != settings {
        tracing::warn!(
            "reload: settings other than [[accounts]] changed in {}; they take effect only after a restart",
            path.display()
        );
    }
    tracing::info!(
        principals = kms.callers.principal_count(),
        "reload: principals replaced"
    );
}
