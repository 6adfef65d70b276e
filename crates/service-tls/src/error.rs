//! The one error type of this crate.
//!
//! Messages name the file (or the in-memory input) and what is wrong with it. They never carry
//! private key material: PEM parse errors are reduced to a fixed description before they get
//! here, so not even a stray base64 byte of a key can reach a log.

use std::io;
use std::path::PathBuf;

/// Why a TLS configuration could not be built, or a certificate could not be issued or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {error}", .path.display())]
    Read {
        /// What the file was supposed to hold, e.g. "certificate chain".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },

    /// A file could not be written.
    #[error("cannot write {}: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },

    /// A file was read but its content is unusable.
    #[error("{what} {}: {problem}", .path.display())]
    InvalidFile {
        /// What the file was supposed to hold, e.g. "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the content itself).
        problem: String,
    },

    /// An in-memory input (PEM text, a name, a setting) is unusable.
    #[error("{what}: {problem}")]
    Invalid {
        /// What the input was supposed to be, e.g. "CA certificate PEM".
        what: &'static str,
        /// What is wrong with it (never the content of a private key).
        problem: String,
    },

    /// A key or certificate could not be generated.
    #[error("cannot generate {what}: {problem}")]
    Generate {
        /// What was being generated, e.g. "server certificate".
        what: &'static str,
        /// Why it failed.
        problem: String,
    },
}
