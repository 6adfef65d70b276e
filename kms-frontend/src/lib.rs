//! A KMS-compatible front end: the AWS JSON 1.1 API (`X-Amz-Target: TrentService.*`) over
//! HTTPS with SigV4-verified callers.
//!
//! Map of the crate:
//! - [`protocol`]: the JSON 1.1 wire format, AWS-shaped errors, ValidationException messages;
//! - [`auth`]: SigV4 (service `kms`) against configured principals;
//! - [`authz`]: the authorization decision of every request (key and identity policies);
//! - [`catalogue`]: the API's vocabulary: key specs, usages, origins, key and connection
//!   states, algorithms, the `KeyMetadata` shape, key ids and ARNs;
//! - [`grants`]: grant tokens, which operations a grant may name, and the grant evaluation;
//! - [`key_state`]: which key states allow which operation, and AWS's error when not;
//! - [`last_usage`]: the last cryptographic use of each key, batched to storage;
//! - [`material`]: key material generation for every key spec (CSPRNG);
//! - [`asymmetric_encryption`]: RSA-OAEP and SM2PKE with asymmetric `ENCRYPT_DECRYPT` keys;
//! - [`policy`]: key policy validation, the lockout safety check and the default policy;
//! - [`sealing`]: key material and proxy secrets sealed under the root key;
//! - [`blob`]: the symmetric ciphertext blob and the inner layer of double encryption;
//! - [`storage`]: the storage trait and its embedded SQLite implementation;
//! - [`xks_client`]: calling XKS proxies as KMS does (SigV4, budgets, response validation);
//! - [`xks`]: how proxy failures surface per operation; the double-encryption blob;
//! - [`service`]: dispatch, key lookup by id/ARN/alias, the storage error mapping;
//! - [`ops`]: the operations;
//! - [`clock`]: the service clock (advanceable in test builds);
//! - [`config`], [`http`], [`run`], [`reload`], [`cli`]: configuration, HTTP, start-up,
//!   SIGHUP reload of the principals, command line.
//!
//! Architecture invariants: only [`protocol`] knows the wire format; a rejected request
//! stores nothing (validation happens before any write); key material is stored only sealed.

pub mod asymmetric_encryption;
pub mod auth;
pub mod authz;
pub mod blob;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod grants;
pub mod http;
pub mod key_state;
pub mod last_usage;
pub mod material;
pub mod ops;
pub mod policy;
pub mod protocol;
pub mod reload;
pub mod run;
pub mod sealing;
pub mod service;
pub mod signing;
pub mod storage;
pub mod xks;
pub mod xks_client;
