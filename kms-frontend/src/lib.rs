//! A KMS-compatible front end: the AWS JSON 1.1 API (`X-Amz-Target: TrentService.*`) over
//! HTTPS with SigV4-verified callers.
//!
//! Map of the crate:
//! - [`protocol`]: the JSON 1.1 wire format, AWS-shaped errors, ValidationException messages;
//! - [`auth`]: SigV4 (service `kms`) against configured principals;
//! - [`model`]: key specs, usages, origins, states, algorithms and the `KeyMetadata` shape;
//! - [`material`]: key material generation for every key spec (CSPRNG);
//! - [`policy`]: key policy validation, the lockout safety check and the default policy;
//! - [`crypto`]: sealing key material under the root key; the symmetric ciphertext blob;
//! - [`storage`]: the storage trait and its embedded SQLite implementation;
//! - [`xks_client`]: calling XKS proxies as KMS does (SigV4, budgets, response validation);
//! - [`xks`]: how proxy failures surface per operation; the double-encryption blob;
//! - [`service`]: dispatch, key lookup by id/ARN/alias, the storage error mapping;
//! - [`ops`]: the operations;
//! - [`clock`]: the service clock (advanceable in test builds);
//! - [`config`], [`http`], [`run`], [`cli`]: configuration, HTTP, start-up, command line.
//!
//! Architecture invariants: only [`protocol`] knows the wire format; a rejected request
//! stores nothing (validation happens before any write); key material is stored only sealed.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod http;
pub mod material;
pub mod model;
pub mod ops;
pub mod policy;
pub mod protocol;
pub mod run;
pub mod service;
pub mod storage;
pub mod xks;
pub mod xks_client;
