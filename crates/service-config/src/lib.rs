//! What the start-up of both services shares, so each is written once:
//!
//! - [`ConfigError`]: why a config file cannot be used, with every problem listed together;
//! - [`read_toml`]: a config file read and parsed into a service's raw (unvalidated) form;
//! - [`init_logging`] and [`LogFormat`]: logs to standard error, text or JSON, filtered by
//!   `RUST_LOG` or the configured level.
//!
//! Validation stays with each service: only it knows its settings.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path} is not valid: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// One or more settings are invalid.
    #[error("config {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// Reads `path` and parses it as TOML into `T` (a service's raw config).
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, path)
}

/// Parses config text as TOML into `T`; `path` names the file in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Sends logs to standard error: `RUST_LOG` when set, else `level` (a tracing filter
/// directive such as `info` or `warn,kms_frontend=debug`), else `info`. Colours only on a
/// terminal. A second call (tests that drive the library) keeps the first subscriber.
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: String,
    }

    #[test]
    fn reads_parses_and_reports_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "name = \"x\"\n").expect("write");
        assert_eq!(read_toml::<Raw>(&p).expect("parse").name, "x");
        std::fs::write(&p, "nme = \"x\"\n").expect("write");
        let e = read_toml::<Raw>(&p).expect_err("unknown field");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("c.toml"), "{e}");
        let missing = read_toml::<Raw>(&dir.path().join("none.toml")).expect_err("missing");
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn invalid_lists_every_problem() {
        let e = ConfigError::Invalid {
            path: "/etc/x.toml".into(),
            problems: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "config /etc/x.toml has 2 problem(s):\n  - a\n  - b"
        );
    }

    #[test]
    fn log_formats() {
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
