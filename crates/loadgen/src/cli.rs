//! The `xks-load` command line (the binary is a thin wrapper around [`main`]).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use service_tls::ClientIdentity;
use sigv4_auth::{Credential, SigningSecret};

use crate::baseline::{BaselineOptions, BaselineServer, Stall};
use crate::procstat::MachineInfo;
use crate::report::{Report, redact_command_line};
use crate::run::{DEFAULT_MAX_IN_FLIGHT, Mode, RunConfig};
use crate::scenario::{EncryptOptions, KeyOrigin, Scenario};
use crate::target::{HttpOptions, HttpVersion, Target};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "xks-load",
    version,
    about = "Load generator for XKS proxies and KMS endpoints: SigV4-signed requests, closed or \
             open loop (latency from the scheduled send time), text or JSON report.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, a load is run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The load to run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a trivial HTTPS server (fixed 200 JSON answer, no work) to calibrate against.
    BaselineServer(BaselineArgs),
    /// Turn a directory of JSON reports into the Markdown of BENCHMARKS.md.
    Summarize(SummarizeArgs),
    /// Raw PKCS#11 calibration loop: AES-256-GCM C_EncryptInit + C_Encrypt as the proxy calls
    /// them, one logged-in session per thread, no HTTP.
    HsmBaseline(HsmBaselineArgs),
    /// Start-up time: spawn a command, poll an HTTPS URL every 1 ms until it answers, stop
    /// the command (SIGTERM); repeat.
    Startup(StartupArgs),
}

/// `xks-load hsm-baseline`.
#[derive(Debug, Clone, Args)]
pub struct HsmBaselineArgs {
    /// The PKCS#11 module (for SoftHSMv2, set SOFTHSM2_CONF as for the proxy).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pub module: PathBuf,
    /// The token's label.
    #[arg(long)]
    pub token_label: String,
    /// A file holding the user PIN (surrounding whitespace ignored).
    #[arg(long)]
    pub pin_file: PathBuf,
    /// The key's CKA_LABEL (the proxy labels a key with its XKS key id).
    #[arg(long)]
    pub key_label: String,
    /// Threads, each with its own logged-in session.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// Plaintext size in bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Measured duration, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Calls made before measuring, seconds (not reported).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Print the JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// `xks-load startup`.
#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// The URL to poll until it answers (any HTTP status).
    #[arg(long)]
    pub url: String,
    /// PEM file of the CA(s) trusted for the server certificate (needed for https://).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Number of start-ups.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds one start-up may take before the measurement fails.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// The figure's name in the report (default: the --json-out file stem).
    #[arg(long)]
    pub figure: Option<String>,
    /// Print the JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// The command that starts the server, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `xks-load summarize`.
#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// Directory of `*.json` reports (rows in file-name order; `*pkcs11*` rows are compared
    /// with the `*hsm-baseline*` report, the others with the other `*baseline*` report;
    /// `*moto*` figures are paired with ours; startup reports get a table of their own).
    pub dir: PathBuf,
    /// Write the Markdown here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The command named in the text as the one that regenerates the file.
    #[arg(long, default_value = "scripts/bench")]
    pub command: String,
    /// A paragraph (Markdown) printed under the run's header, e.g. how the servers were set
    /// up; repeatable.
    #[arg(long)]
    pub note: Vec<String>,
    /// criterion's output directory (e.g. `target/criterion`): its latest results become a
    /// "Micro-benchmarks" table.
    #[arg(long)]
    pub criterion: Option<PathBuf>,
    /// The command named as the one that produced the micro-benchmarks.
    #[arg(long, default_value = "cargo bench")]
    pub criterion_command: String,
}

fn run_summarize(args: SummarizeArgs) -> ExitCode {
    let figures = match crate::summary::load_dir(&args.dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xks-load summarize: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut md = crate::summary::render(&figures, &args.command, &args.note);
    if let Some(dir) = &args.criterion {
        let benches = crate::micro::load_criterion(dir);
        if benches.is_empty() {
            eprintln!(
                "xks-load summarize: {}: no criterion results",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        md.push_str(&crate::summary::render_micro(
            &benches,
            &args.criterion_command,
        ));
    }
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, md) {
                eprintln!("xks-load summarize: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{md}"),
    }
    ExitCode::SUCCESS
}

/// Scenario names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// XKS GetHealthStatus.
    XksHealth,
    /// XKS GetKeyMetadata.
    XksMetadata,
    /// XKS Encrypt (--size, --aad, --cdiv).
    XksEncrypt,
    /// XKS Decrypt of one ciphertext made at start.
    XksDecrypt,
    /// 45 % Encrypt, 45 % Decrypt, 5 % GetKeyMetadata, 5 % GetHealthStatus.
    XksMixed,
    /// KMS CreateKey (--origin, --custom-key-store-id, --xks-key-id).
    KmsCreateKey,
    /// KMS Encrypt (--key-id, --size).
    KmsEncrypt,
    /// KMS Decrypt of one ciphertext made at start (--key-id, --size).
    KmsDecrypt,
    /// KMS GenerateDataKey, AES_256 (--key-id).
    KmsGenerateDataKey,
    /// KMS Sign of a RAW message (--key-id, --size, --signing-algorithm).
    KmsSign,
    /// KMS Verify of one signature made at start (--key-id, --size, --signing-algorithm).
    KmsVerify,
    /// KMS Decrypt with an RSA/SM2 key of one ciphertext made at start (--key-id, --size,
    /// --encryption-algorithm).
    KmsDecryptAsymmetric,
    /// KMS GenerateMac (--key-id, --size, --mac-algorithm).
    KmsGenerateMac,
    /// KMS DeriveSharedSecret, ECDH with the key's own public key as the peer's (--key-id).
    KmsDeriveSharedSecret,
}

/// `--origin` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OriginArg {
    /// Key material made by KMS.
    #[value(name = "AWS_KMS")]
    AwsKms,
    /// A key in an external key store.
    #[value(name = "EXTERNAL_KEY_STORE")]
    ExternalKeyStore,
}

/// `--key-spec` values (symmetric keys only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeySpecArg {
    /// AES-256-GCM.
    #[value(name = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
}

/// Options of a load run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The scenario.
    #[arg(long, value_enum)]
    pub scenario: Option<ScenarioName>,

    /// XKS target: the URI base up to /kms/xks/v1, e.g. https://localhost:8443/p/kms/xks/v1.
    #[arg(long, conflicts_with = "kms_endpoint")]
    pub xks_url: Option<String>,
    /// KMS target: the endpoint URL, e.g. https://localhost:4443 or http://127.0.0.1:5000.
    #[arg(long)]
    pub kms_endpoint: Option<String>,
    /// The XKS external key id (XKS scenarios) or the KMS key id, ARN or alias (kms-encrypt,
    /// kms-decrypt, kms-generate-data-key, kms-sign, kms-verify).
    #[arg(long)]
    pub key_id: Option<String>,
    /// A grant token sent in `GrantTokens` with every request (kms-encrypt).
    #[arg(long)]
    pub grant_token: Option<String>,
    /// SigV4 access key id.
    #[arg(long, env = "XKS_LOAD_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// SigV4 secret (prefer --secret-file or the environment: it is redacted from the report
    /// but visible in the process list).
    #[arg(long, env = "XKS_LOAD_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A file holding the SigV4 secret (surrounding whitespace ignored).
    #[arg(long, conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,
    /// The region of the SigV4 credential scope.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,

    /// PEM file of the CA(s) trusted for the server certificate (needed for https://).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate chain PEM for mTLS (with --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key PEM for mTLS (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// HTTP/1.1 only.
    #[arg(long, conflicts_with = "http2")]
    pub http1: bool,
    /// HTTP/2 only.
    #[arg(long)]
    pub http2: bool,
    /// Request timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Independent connection pools the workers are spread over (with HTTP/2, the number of
    /// connections).
    #[arg(long, default_value_t = 1)]
    pub pools: usize,
    /// Open a new connection (TCP + TLS handshake) for every request.
    #[arg(long)]
    pub new_connection_per_request: bool,
    /// Let new connections resume TLS sessions (default: a full handshake every time).
    #[arg(long)]
    pub tls_resumption: bool,

    /// Plaintext size in bytes (xks-encrypt/-decrypt/-mixed, kms-encrypt/-decrypt); message
    /// size for kms-sign/-verify.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Size in bytes of random additional authenticated data (XKS scenarios).
    #[arg(long)]
    pub aad: Option<usize>,
    /// Ask for a ciphertext data integrity value (XKS Encrypt).
    #[arg(long)]
    pub cdiv: bool,
    /// kms-sign / kms-verify: the signing algorithm (one the key's spec allows).
    #[arg(long, default_value = "ECDSA_SHA_256")]
    pub signing_algorithm: String,
    /// kms-decrypt-asymmetric: the encryption algorithm (one the key's spec allows).
    #[arg(long, default_value = "RSAES_OAEP_SHA_256")]
    pub encryption_algorithm: String,
    /// kms-generate-mac: the MAC algorithm (the one the key's spec allows).
    #[arg(long, default_value = "HMAC_SHA_256")]
    pub mac_algorithm: String,
    /// kms-create-key: the key spec.
    #[arg(long, value_enum, default_value = "SYMMETRIC_DEFAULT")]
    pub key_spec: KeySpecArg,
    /// kms-create-key: the origin.
    #[arg(long, value_enum, default_value = "AWS_KMS")]
    pub origin: OriginArg,
    /// kms-create-key with EXTERNAL_KEY_STORE: the custom key store id.
    #[arg(long)]
    pub custom_key_store_id: Option<String>,
    /// kms-create-key with EXTERNAL_KEY_STORE: the external key id; `{seq}` is replaced by the
    /// request number (an external key backs at most one KMS key per key store).
    #[arg(long)]
    pub xks_key_id: Option<String>,

    /// Closed loop: number of concurrent workers (the default mode, 1 worker).
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, at fixed intervals.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: cap on outstanding requests.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Measured duration, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured requests (open loop: schedule at most this many).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load offered before measuring, seconds (connections warm up; not reported).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Async worker threads of the load generator. One is the default: on a small machine
    /// shared with the server, one thread drives more load per CPU second than several
    /// (no cross-thread wake-ups; measured ~25 % less CPU per request on 2 vCPUs). Raise it
    /// when one thread cannot keep up with a remote server.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,

    /// Measure this server process's CPU and RSS (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// Options of `baseline-server`.
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Port on 127.0.0.1 (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Directory to write the generated CA (ca.pem), server chain and key to.
    #[arg(long, required_unless_present = "plaintext")]
    pub tls_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS.
    #[arg(long, conflicts_with = "tls_dir")]
    pub plaintext: bool,
    /// Exit after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long)]
    pub exit_after: Option<f64>,
    /// Pause the whole server when this request (1-based) arrives (with --stall-ms).
    #[arg(long, requires = "stall_ms")]
    pub stall_at: Option<u64>,
    /// Length of the pause, milliseconds.
    #[arg(long, requires = "stall_at")]
    pub stall_ms: Option<u64>,
}

fn write_report(
    json_out: Option<&PathBuf>,
    json: String,
    print_json: bool,
    text: String,
) -> ExitCode {
    if let Some(path) = json_out
        && let Err(e) = std::fs::write(path, json.clone() + "\n")
    {
        eprintln!("xks-load: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let output = if print_json { json + "\n" } else { text };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(output.as_bytes());
    let _ = stdout.flush();
    ExitCode::SUCCESS
}

async fn run_hsm_baseline(args: HsmBaselineArgs, command_line: Vec<String>) -> ExitCode {
    let options = (|| {
        let pin = read("PIN file", &args.pin_file)?.trim().to_owned();
        Ok::<_, String>(crate::hsm::HsmBaselineOptions {
            module: args.module.clone(),
            token_label: args.token_label.clone(),
            pin: pin.into(),
            key_label: args.key_label.clone(),
            threads: args.threads,
            size: args.size,
            duration: seconds("--duration", args.duration)?,
            warmup: seconds("--warmup", args.warmup)?,
        })
    })();
    let options = match options {
        Ok(o) => o,
        Err(message) => {
            eprintln!("xks-load hsm-baseline: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match crate::hsm::run(options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xks-load hsm-baseline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = result.report(command_line, MachineInfo::detect());
    write_report(
        args.json_out.as_ref(),
        report.to_json(),
        args.json,
        report.to_text(),
    )
}

async fn run_startup(args: StartupArgs) -> ExitCode {
    let options = (|| {
        if args.url.starts_with("https://") && args.cacert.is_none() {
            return Err("an https:// URL needs --cacert".to_owned());
        }
        Ok(crate::startup::StartupOptions {
            url: args.url.clone(),
            ca_pem: args
                .cacert
                .as_ref()
                .map(|path| read("CA file", path))
                .transpose()?,
            runs: args.runs,
            command: args.command.clone(),
            timeout: seconds("--timeout", args.timeout)?,
        })
    })();
    let options = match options {
        Ok(o) => o,
        Err(message) => {
            eprintln!("xks-load startup: {message}");
            return ExitCode::from(2);
        }
    };
    let figure = args
        .figure
        .clone()
        .unwrap_or_else(|| crate::startup::default_figure(args.json_out.as_ref()));
    match crate::startup::measure(&options, figure).await {
        Ok(report) => write_report(
            args.json_out.as_ref(),
            report.to_json(),
            args.json,
            report.to_text(),
        ),
        Err(e) => {
            eprintln!("xks-load startup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(what: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{what} must be a non-negative number"))
}

fn read(what: &str, path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Everything a run needs, from the options.
pub fn build(args: &RunArgs) -> Result<(Target, Scenario, HttpOptions, RunConfig), String> {
    let scenario_name = args.scenario.ok_or("--scenario is required")?;
    let access_key_id = args
        .access_key_id
        .clone()
        .ok_or("--access-key-id (or XKS_LOAD_ACCESS_KEY_ID) is required")?;
    let secret = match (&args.secret, &args.secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => read("secret file", path)?.trim().to_owned(),
        (None, None) => return Err("--secret, --secret-file or XKS_LOAD_SECRET is required".into()),
    };
    let credential = Credential::new(access_key_id, SigningSecret::new(secret));
    let encrypt = EncryptOptions {
        size: args.size,
        aad_size: args.aad,
        cdiv: args.cdiv,
    };
    let kms_key_id = || {
        args.key_id
            .clone()
            .ok_or_else(|| "--key-id (the KMS key id, ARN or alias) is required".to_owned())
    };
    let scenario = match scenario_name {
        ScenarioName::XksHealth => Scenario::XksHealth,
        ScenarioName::XksMetadata => Scenario::XksMetadata,
        ScenarioName::XksEncrypt => Scenario::XksEncrypt(encrypt),
        ScenarioName::XksDecrypt => Scenario::XksDecrypt(encrypt),
        ScenarioName::XksMixed => Scenario::XksMixed(encrypt),
        ScenarioName::KmsCreateKey => Scenario::KmsCreateKey {
            origin: match args.origin {
                OriginArg::AwsKms => KeyOrigin::AwsKms,
                OriginArg::ExternalKeyStore => KeyOrigin::ExternalKeyStore {
                    custom_key_store_id: args
                        .custom_key_store_id
                        .clone()
                        .ok_or("EXTERNAL_KEY_STORE needs --custom-key-store-id")?,
                    xks_key_id: args
                        .xks_key_id
                        .clone()
                        .ok_or("EXTERNAL_KEY_STORE needs --xks-key-id")?,
                },
            },
        },
        ScenarioName::KmsEncrypt => Scenario::KmsEncrypt {
            key_id: kms_key_id()?,
            size: args.size,
            grant_token: args.grant_token.clone(),
        },
        ScenarioName::KmsDecrypt => Scenario::KmsDecrypt {
            key_id: kms_key_id()?,
            size: args.size,
        },
        ScenarioName::KmsGenerateDataKey => Scenario::KmsGenerateDataKey {
            key_id: kms_key_id()?,
        },
        ScenarioName::KmsSign => Scenario::KmsSign {
            key_id: kms_key_id()?,
            size: args.size,
            algorithm: args.signing_algorithm.clone(),
        },
        ScenarioName::KmsVerify => Scenario::KmsVerify {
            key_id: kms_key_id()?,
            size: args.size,
            algorithm: args.signing_algorithm.clone(),
        },
        ScenarioName::KmsDecryptAsymmetric => Scenario::KmsDecryptAsymmetric {
            key_id: kms_key_id()?,
            size: args.size,
            algorithm: args.encryption_algorithm.clone(),
        },
        ScenarioName::KmsGenerateMac => Scenario::KmsGenerateMac {
            key_id: kms_key_id()?,
            size: args.size,
            algorithm: args.mac_algorithm.clone(),
        },
        ScenarioName::KmsDeriveSharedSecret => Scenario::KmsDeriveSharedSecret {
            key_id: kms_key_id()?,
        },
    };
    let target = if scenario.is_xks() {
        let url = args
            .xks_url
            .as_deref()
            .ok_or("XKS scenarios need --xks-url")?;
        let key_id = match scenario {
            Scenario::XksHealth => args.key_id.as_deref().unwrap_or("unused"),
            _ => args
                .key_id
                .as_deref()
                .ok_or("--key-id (the external key id) is required")?,
        };
        Target::xks(url, key_id, credential, &args.region)
    } else {
        let endpoint = args
            .kms_endpoint
            .as_deref()
            .ok_or("KMS scenarios need --kms-endpoint")?;
        Target::kms(endpoint, credential, &args.region)
    };
    if target.url().starts_with("https://") && args.cacert.is_none() {
        return Err(
            "an https:// target needs --cacert (the system trust store is not used)".into(),
        );
    }
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(ClientIdentity {
            cert_chain_pem: read("client certificate", cert)?,
            key_pem: read("client key", key)?.into(),
        }),
        _ => None,
    };
    let http = HttpOptions {
        ca_pem: args
            .cacert
            .as_ref()
            .map(|path| read("CA file", path))
            .transpose()?,
        identity,
        version: if args.http1 {
            HttpVersion::Http1
        } else if args.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Auto
        },
        timeout: seconds("--timeout", args.timeout)?,
        new_connection_per_request: args.new_connection_per_request,
        tls_resumption: args.tls_resumption,
        pools: args.pools.max(1),
    };
    let mode = match args.rate {
        Some(rate) => Mode::Open {
            rate,
            max_in_flight: args.max_in_flight,
        },
        None => Mode::Closed {
            concurrency: args.concurrency.unwrap_or(1),
        },
    };
    let config = RunConfig {
        mode,
        duration: seconds("--duration", args.duration)?,
        requests: args.requests,
        warmup: seconds("--warmup", args.warmup)?,
        server_pid: args.server_pid,
    };
    Ok((target, scenario, http, config))
}

async fn run_load(args: RunArgs, command_line: Vec<String>) -> ExitCode {
    let (target, scenario, http, config) = match build(&args) {
        Ok(parts) => parts,
        Err(message) => {
            eprintln!("xks-load: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match crate::run::run(target, scenario, http, config).await {
        Ok(result) => result,
        Err(e) => {
            eprintln!("xks-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pid) = args.server_pid
        && result.server.is_none()
    {
        eprintln!("xks-load: warning: could not measure process {pid} (/proc/{pid} unreadable)");
    }
    let report = Report::new(&result, command_line, MachineInfo::detect());
    if let Some(path) = &args.json_out
        && let Err(e) = std::fs::write(path, report.to_json() + "\n")
    {
        eprintln!("xks-load: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let output = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_text()
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(output.as_bytes());
    let _ = stdout.flush();
    ExitCode::SUCCESS
}

async fn shutdown_signal(exit_after: Option<Duration>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let timer = async {
        match exit_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = timer => {}
    }
}

async fn run_baseline(args: BaselineArgs) -> ExitCode {
    let tls = match &args.tls_dir {
        Some(dir) if !args.plaintext => {
            match crate::baseline::write_tls_dir(dir)
                .and_then(|files| crate::baseline::server_config(&files).map(|c| (files, c)))
            {
                Ok((files, config)) => Some((files, config)),
                Err(e) => {
                    eprintln!("xks-load baseline-server: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let exit_after = match args
        .exit_after
        .map(|s| seconds("--exit-after", s))
        .transpose()
    {
        Ok(d) => d,
        Err(message) => {
            eprintln!("xks-load baseline-server: {message}");
            return ExitCode::from(2);
        }
    };
    let stall = args.stall_at.zip(args.stall_ms).map(|(at, ms)| Stall {
        at_request: at,
        duration: Duration::from_millis(ms),
    });
    let options = BaselineOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
        tls: tls.as_ref().map(|(_, config)| config.clone()),
        stall,
    };
    let server = match BaselineServer::start(options).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("xks-load baseline-server: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "baseline-server listening on {}\nurl {scheme}://localhost:{}/kms/xks/v1\npid {}",
            server.local_addr(),
            server.local_addr().port(),
            std::process::id()
        );
        if let Some((files, _)) = &tls {
            let _ = writeln!(stdout, "ca {}", files.ca_pem.display());
        }
        let _ = stdout.flush();
    }
    server.run_until(shutdown_signal(exit_after)).await;
    ExitCode::SUCCESS
}

/// Runs the command line `args` (including the program name).
pub fn main(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A load runs on `--client-threads` workers; the servers and tools on Tokio's default
    // (one per CPU, or TOKIO_WORKER_THREADS).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.command.is_none() {
        builder.worker_threads(cli.run.client_threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xks-load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli, args))
}

async fn dispatch(cli: Cli, args: Vec<String>) -> ExitCode {
    match cli.command {
        Some(Command::BaselineServer(baseline)) => run_baseline(baseline).await,
        Some(Command::Summarize(args)) => run_summarize(args),
        Some(Command::HsmBaseline(hsm)) => run_hsm_baseline(hsm, redact_command_line(args)).await,
        Some(Command::Startup(startup)) => run_startup(startup).await,
        None => run_load(cli.run, redact_command_line(args)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("parses")
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn builds_an_open_loop_xks_run() {
        let cli = parse(&[
            "xks-load",
            "--scenario",
            "xks-encrypt",
            "--xks-url",
            "http://127.0.0.1:1/kms/xks/v1",
            "--key-id",
            "k1",
            "--access-key-id",
            "AKID",
            "--secret",
            "s",
            "--rate",
            "200",
            "--duration",
            "2",
            "--size",
            "4096",
            "--aad",
            "16",
            "--cdiv",
            "--http2",
        ]);
        let (target, scenario, http, config) = build(&cli.run).expect("builds");
        assert_eq!(target.kind(), "xks");
        assert_eq!(
            scenario,
            Scenario::XksEncrypt(EncryptOptions {
                size: 4096,
                aad_size: Some(16),
                cdiv: true
            })
        );
        assert_eq!(http.version, HttpVersion::Http2);
        assert_eq!(
            config.mode,
            Mode::Open {
                rate: 200.0,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT
            }
        );
        assert_eq!(config.duration, Duration::from_secs(2));
    }

    #[test]
    fn rejects_incomplete_or_conflicting_options() {
        let base = ["xks-load", "--access-key-id", "A", "--secret", "s"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut v: Vec<&'static str> = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let err = |extra: &[&'static str]| build(&parse(&with(extra)).run).expect_err("rejected");
        assert!(err(&[]).contains("--scenario"));
        assert!(err(&["--scenario", "xks-encrypt", "--key-id", "k"]).contains("--xks-url"));
        assert!(
            err(&[
                "--scenario",
                "xks-health",
                "--xks-url",
                "https://localhost:1/kms/xks/v1"
            ])
            .contains("--cacert")
        );
        assert!(
            err(&[
                "--scenario",
                "kms-create-key",
                "--kms-endpoint",
                "http://127.0.0.1:1",
                "--origin",
                "EXTERNAL_KEY_STORE"
            ])
            .contains("--custom-key-store-id")
        );
        assert!(
            err(&["--scenario", "kms-encrypt", "--kms-endpoint", "http://x"]).contains("--key-id")
        );
        assert!(Cli::try_parse_from(with(&["--rate", "1", "--concurrency", "2"])).is_err());
        assert!(Cli::try_parse_from(with(&["--http1", "--http2"])).is_err());
        assert!(Cli::try_parse_from(["xks-load", "baseline-server"]).is_err());
        assert!(Cli::try_parse_from(["xks-load", "baseline-server", "--plaintext"]).is_ok());
        assert!(Cli::try_parse_from(["xks-load", "startup", "--url", "https://x/"]).is_err());
    }

    #[test]
    fn parses_the_subcommands() {
        let cli = parse(&[
            "xks-load",
            "hsm-baseline",
            "--token-label",
            "xks",
            "--pin-file",
            "pin",
            "--key-label",
            "bench-key",
            "--duration",
            "2",
        ]);
        let Some(Command::HsmBaseline(hsm)) = cli.command else {
            panic!("not hsm-baseline")
        };
        assert_eq!(hsm.threads, 16);
        assert_eq!(hsm.size, 32);
        assert_eq!(hsm.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        let cli = parse(&[
            "xks-load",
            "startup",
            "--url",
            "https://localhost:1/",
            "--cacert",
            "ca.pem",
            "--runs",
            "3",
            "--",
            "xks-proxy",
            "serve",
            "--config",
            "c.toml",
        ]);
        let Some(Command::Startup(startup)) = cli.command else {
            panic!("not startup")
        };
        assert_eq!(startup.runs, 3);
        assert_eq!(
            startup.command,
            ["xks-proxy", "serve", "--config", "c.toml"]
        );
    }
}
