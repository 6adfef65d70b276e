//! The end-to-end suites in one test binary (one link of aws-sdk-kms, reqwest and rustls
//! instead of one per suite): each module is one suite over the real processes.

mod frontend_authz;
mod frontend_blob_format;
mod frontend_concurrency;
mod frontend_config;
mod frontend_createkey;
mod frontend_custom_key_stores;
mod frontend_first_start;
mod frontend_hostile_clients;
mod frontend_key_usages;
mod frontend_lifecycle;
mod frontend_sdk;
mod frontend_secrets;
mod frontend_signing;
mod frontend_xks;
mod frontend_xks_client;
mod frontend_xks_faults;
mod proxy_api;
mod proxy_backends;
mod proxy_config;
mod proxy_conformance;
mod proxy_crash_safety;
mod proxy_hostile_clients;
mod proxy_hsm_stall;
mod proxy_interop;
mod proxy_key_usage;
mod proxy_mtls_alerts;
mod proxy_production;
mod proxy_secrets;
mod readme;
