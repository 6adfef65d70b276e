//! `xks-load hsm-baseline`: the raw PKCS#11 calibration loop.
//!
//! Threads each own one logged-in session on the token and call `C_EncryptInit` +
//! `C_Encrypt` (AES-256-GCM, a fresh random 12-byte IV, a 128-bit tag) on the key with a
//! given label, as fast as the module allows, with no HTTP, no JSON, no pool and no runtime
//! in between. The call shape is the proxy's (`xks-proxy`'s `pkcs11` backend, proxy-supplied
//! IVs): the same `cryptoki` call (`Session::encrypt`, which sizes the output with a first
//! `C_Encrypt`), the same mechanism parameters, and as AAD the bytes the proxy binds for an
//! Encrypt request without AAD (the XKS spec construction over our `ciphertextMetadata`).
//! Comparing a proxy PKCS#11 figure with this loop on the same token and key shows what the
//! proxy adds on top of the HSM.
//!
//! One login serves every session of a token in PKCS#11, so `CKR_USER_ALREADY_LOGGED_IN` is
//! success. A first session stays open (and logged in) for the whole run, so the login state
//! does not depend on the threads' sessions.
//!
//! The result is an `xks-load/report/v1` report (target kind `pkcs11`, mode closed with one
//! worker per thread, operation `Encrypt`); the "server" measured is this process, which is
//! where the module runs.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xks_api::aad::AadConstruction;
use xks_api::metadata::CiphertextMetadata;

use crate::procstat::{MachineInfo, ProcessMonitor};
use crate::report::{LatencySummary, OperationReport, Report, SCHEMA, TargetReport};
use crate::run::{Mode, Stats};
use crate::target::HttpVersion;

/// GCM IV length, bytes (what the proxy generates).
pub const IV_BYTES: usize = 12;
/// GCM tag length, bytes.
pub const TAG_BYTES: usize = 16;
/// The operation name in the report.
pub const OPERATION: &str = "Encrypt";
/// The scenario name in the report.
pub const SCENARIO: &str = "pkcs11-raw-encrypt";

/// What to run.
#[derive(Debug, Clone)]
pub struct HsmBaselineOptions {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The label of the token (trailing blanks ignored).
    pub token_label: String,
    /// The user PIN.
    pub pin: AuthPin,
    /// The `CKA_LABEL` of the AES key (the proxy labels keys with the XKS key id).
    pub key_label: String,
    /// Threads, each with its own session.
    pub threads: usize,
    /// Plaintext size, bytes.
    pub size: usize,
    /// Measured duration.
    pub duration: Duration,
    /// Calls made before measuring (not reported).
    pub warmup: Duration,
}

/// Why the loop could not run (failures inside the measured loop are counted, not raised).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmBaselineError {
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// Why.
        reason: String,
    },
    /// No (or more than one) initialised token has the label.
    #[error("{0}")]
    Token(String),
    /// A PKCS#11 call of the set-up failed.
    #[error("{what}: {source}")]
    Pkcs11 {
        /// Which step.
        what: &'static str,
        /// The error.
        source: CkError,
    },
    /// The key label matches no secret key, or several.
    #[error("label {label:?} matches {found} secret keys in the token (need exactly 1)")]
    Key {
        /// The label.
        label: String,
        /// How many keys matched.
        found: usize,
    },
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
    /// A thread of the loop panicked.
    #[error("a loop thread panicked")]
    ThreadPanicked,
}

fn ck(what: &'static str) -> impl FnOnce(CkError) -> HsmBaselineError {
    move |source| HsmBaselineError::Pkcs11 { what, source }
}

/// A failure's name in `errors_by_name`: `pkcs11:<CKR name>` or `pkcs11:<problem>`.
fn error_name(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, _) => format!("pkcs11:{rv:?}"),
        other => format!("pkcs11:{other}"),
    }
}

/// The AAD the proxy binds for an XKS Encrypt request that has no AAD field: the spec
/// construction over the metadata of a first-version key (5 bytes).
pub fn proxy_aad() -> Vec<u8> {
    let metadata = CiphertextMetadata::new(AadConstruction::Spec, 1).encode();
    // Only fails for AAD over 65535 bytes or metadata over 20; neither is possible here.
    AadConstruction::Spec
        .build(None, &metadata)
        .unwrap_or_default()
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmBaselineError> {
    let want = label.trim_end();
    let mut found = Vec::new();
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(ck("C_GetSlotList"))?
    {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label().trim_end() == want
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmBaselineError::Token(format!(
            "no initialised token labelled {want:?} (is SOFTHSM2_CONF set as for the proxy?)"
        ))),
        many => Err(HsmBaselineError::Token(format!(
            "{} tokens are labelled {want:?}",
            many.len()
        ))),
    }
}

fn open_logged_in(ctx: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session, HsmBaselineError> {
    let session = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(ck("C_Login")(e)),
    }
}

fn find_key(session: &Session, label: &str) -> Result<ObjectHandle, HsmBaselineError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
    ];
    let at_most = NonZeroUsize::MIN.saturating_add(1);
    let found = session
        .iter_objects_with_cache_size(&template, at_most)
        .map_err(ck("C_FindObjectsInit"))?
        .take(2)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ck("C_FindObjects"))?;
    match found.as_slice() {
        [h] => Ok(*h),
        _ => Err(HsmBaselineError::Key {
            label: label.to_owned(),
            found: found.len(),
        }),
    }
}

/// One AES-256-GCM encryption as the proxy makes it; `Err` names the failure.
fn encrypt_once(
    session: &Session,
    key: ObjectHandle,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(), String> {
    let mut iv = [0u8; IV_BYTES];
    getrandom::fill(&mut iv).map_err(|e| format!("client:getrandom: {e}"))?;
    let tag_bits = Ulong::try_from(TAG_BYTES * 8).map_err(|e| error_name(&e))?;
    let params = GcmParams::new(&mut iv, aad, tag_bits).map_err(|e| error_name(&e))?;
    let out = session
        .encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(|e| error_name(&e))?;
    if out.len() == plaintext.len() + TAG_BYTES {
        Ok(())
    } else {
        Err("pkcs11:unexpected-output-length".into())
    }
}

/// One thread's loop: warm up until `measure_start`, then measure until `end`.
fn thread_loop(
    session: &Session,
    key: ObjectHandle,
    size: usize,
    measure_start: Instant,
    end: Instant,
) -> Stats {
    let aad = proxy_aad();
    let plaintext = vec![0x5a; size];
    let mut stats = Stats::default();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let result = encrypt_once(session, key, &aad, &plaintext);
        if sent < measure_start {
            continue;
        }
        let latency = sent.elapsed();
        stats.requests += 1;
        stats.latency.record(latency);
        stats.service_time.record(latency);
        let op = stats.operations.entry(OPERATION).or_default();
        op.requests += 1;
        op.latency.record(latency);
        match result {
            Ok(()) => {
                stats.successes += 1;
                op.successes += 1;
            }
            Err(name) => *stats.errors.entry(name).or_default() += 1,
        }
    }
    stats
}

/// The measured outcome of a run.
#[derive(Debug)]
pub struct HsmBaselineResult {
    /// The options run.
    pub options: HsmBaselineOptions,
    /// When the run started (after set-up).
    pub start_time: SystemTime,
    /// The measured interval.
    pub elapsed: Duration,
    /// What was measured.
    pub stats: Stats,
    /// This process (where the module runs) over the measured interval.
    pub process: Option<crate::procstat::ProcessStats>,
}

/// Sets up the sessions and runs the loop.
pub async fn run(options: HsmBaselineOptions) -> Result<HsmBaselineResult, HsmBaselineError> {
    if options.threads == 0 {
        return Err(HsmBaselineError::Options(
            "--threads must be at least 1".into(),
        ));
    }
    let module_err = |reason: String| HsmBaselineError::Module {
        module: options.module.clone(),
        reason,
    };
    let ctx = Pkcs11::new(&options.module).map_err(|e| module_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(module_err(e.to_string())),
    }
    let slot = find_slot(&ctx, &options.token_label)?;
    // Held for the whole run: the token stays logged in whatever the threads do.
    let anchor = open_logged_in(&ctx, slot, &options.pin)?;
    let key = find_key(&anchor, &options.key_label)?;
    let sessions = (0..options.threads)
        .map(|_| open_logged_in(&ctx, slot, &options.pin))
        .collect::<Result<Vec<_>, _>>()?;

    let start_time = SystemTime::now();
    let measure_start = Instant::now() + options.warmup;
    let end = measure_start + options.duration;
    let size = options.size;
    let monitor = tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(measure_start)).await;
        ProcessMonitor::start(std::process::id())
    });
    let barrier = Arc::new(std::sync::Barrier::new(sessions.len()));
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                thread_loop(&session, key, size, measure_start, end)
            })
        })
        .collect();
    let joined = tokio::task::spawn_blocking(move || {
        let mut total = Stats::default();
        for handle in handles {
            total.merge(
                &handle
                    .join()
                    .map_err(|_| HsmBaselineError::ThreadPanicked)?,
            );
        }
        Ok::<_, HsmBaselineError>(total)
    })
    .await
    .map_err(|_| HsmBaselineError::ThreadPanicked)?;
    let stats = joined?;
    let elapsed = Instant::now().saturating_duration_since(measure_start);
    let process = match monitor.await {
        Ok(Some(m)) => m.finish().await,
        _ => None,
    };
    drop(anchor);
    Ok(HsmBaselineResult {
        options,
        start_time,
        elapsed,
        stats,
        process,
    })
}

impl HsmBaselineResult {
    /// The `xks-load/report/v1` report of the run.
    pub fn report(&self, command_line: Vec<String>, machine: MachineInfo) -> Report {
        let elapsed_s = self.elapsed.as_secs_f64();
        let per_second = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let o = &self.options;
        Report {
            schema: SCHEMA.to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            command_line,
            start_time: OffsetDateTime::from(self.start_time)
                .format(&Rfc3339)
                .unwrap_or_default(),
            machine,
            target: TargetReport {
                kind: "pkcs11".into(),
                url: format!("{}#token={}", o.module.display(), o.token_label),
                http_version: HttpVersion::Auto,
                new_connection_per_request: false,
                tls_resumption: false,
                pools: o.threads,
                timeout_ms: 0,
            },
            scenario: json!({
                "name": SCENARIO,
                "size": o.size,
                "mechanism": "CKM_AES_GCM",
                "iv_bytes": IV_BYTES,
                "tag_bits": TAG_BYTES * 8,
                "aad_bytes": proxy_aad().len(),
                "key_label": o.key_label,
                "token_label": o.token_label,
                "threads": o.threads,
            }),
            mode: Mode::Closed {
                concurrency: o.threads,
            },
            duration_s: o.duration.as_secs_f64(),
            warmup_s: o.warmup.as_secs_f64(),
            request_limit: None,
            elapsed_s,
            requests: self.stats.requests,
            successes: self.stats.successes,
            errors: self.stats.error_count(),
            throughput_rps: per_second(self.stats.requests),
            success_rps: per_second(self.stats.successes),
            latency_ms: LatencySummary::of(&self.stats.latency),
            service_time_ms: LatencySummary::of(&self.stats.service_time),
            errors_by_name: self.stats.errors.clone(),
            http_versions: BTreeMap::new(),
            operations: self
                .stats
                .operations
                .iter()
                .map(|(name, op)| {
                    (
                        (*name).to_owned(),
                        OperationReport {
                            requests: op.requests,
                            successes: op.successes,
                            latency_ms: LatencySummary::of(&op.latency),
                        },
                    )
                })
                .collect(),
            open_loop: None,
            server: self.process.clone(),
            client: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_what_the_proxy_binds_without_request_aad() {
        // BE16(0) || U8(len(CM)) || CM, CM = [spec format byte, key version 1].
        assert_eq!(proxy_aad(), [0, 0, 2, 0x01, 0x01]);
    }

    #[test]
    fn error_names_carry_the_ckr() {
        let e = CkError::Pkcs11(RvError::GeneralError, cryptoki::context::Function::Encrypt);
        assert_eq!(error_name(&e), "pkcs11:GeneralError");
    }
}
