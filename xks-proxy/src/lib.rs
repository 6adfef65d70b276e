//! An AWS KMS External Key Store (XKS) proxy.
//!
//! Serves the XKS Proxy API v1 over HTTPS with SigV4 authentication for any number of logical
//! key stores, each with its own URI path prefix, credentials and key backend.
//!
//! Map of the crate:
//! - [`authz`]: secondary authorization, allow rules over `requestMetadata` from their own file;
//! - [`config`]: the TOML config, validated at start with every problem reported together;
//! - [`keystore`]: the embedded sealed key store (format, sealing, crash-safe writes);
//! - [`backend`]: the key backend contract and its implementations;
//! - [`service`]: the XKS operations of one key store (checks, AAD, metadata, CDIV, errors);
//! - [`quota`]: per-key-store request quotas;
//! - [`metrics`]: Prometheus metrics held in application state;
//! - [`state`]: run-time state built from the config;
//! - [`http`]: routing, authentication and the HTTP error mapping;
//! - [`server`]: TCP/TLS listener, HTTP/1.1 and h2;
//! - [`run`]: start, serve, drain; the admin listener (`/metrics`, `/ping`);
//! - [`reload`]: reload on SIGHUP and file changes, without dropping connections;
//! - [`local`]: first start on embedded defaults;
//! - [`cli`]: the command line.
//!
//! Architecture invariant: handlers never see a backend's quirks; backends never see HTTP,
//! JSON, AAD construction or key status.

pub mod authz;
pub mod backend;
pub mod cli;
pub mod config;
pub mod http;
pub mod keystore;
pub mod local;
pub mod metrics;
pub mod quota;
pub mod reload;
pub mod run;
pub mod server;
pub mod service;
pub mod state;
