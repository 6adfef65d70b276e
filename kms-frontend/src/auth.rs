//! Who is calling: SigV4 (service `kms`) against the configured principals, with errors
//! named and worded as AWS answers them.

use arc_swap::ArcSwap;
use sigv4_auth::{Authorization, Credential, SigningSecret, Verifier, VerifierConfig, VerifyError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::catalogue::partition_for_region;
use crate::config::FrontendConfig;
use crate::protocol::KmsError;

/// AWS allows 15 minutes between a request's signing time and its arrival.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's account.
    pub account_id: String,
    /// The caller's IAM principal ARN.
    pub principal_arn: String,
    /// The Region in the signature's credential scope: the Region the request is for.
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: &'static str,
    /// The request id (`x-amzn-RequestId`), also sent to XKS proxies as `kmsRequestId`.
    pub request_id: String,
    /// The id of the request's audit event: the `event_id` of its request log line, and the
    /// `CloudTrailEventId` GetKeyLastUsage reports.
    pub event_id: String,
    /// The caller's identity policies (the allow-all policy when none is attached).
    pub identity: Arc<Vec<crate::authz::Policy>>,
    /// The peer address the request came from (`aws:SourceIp`), when the listener knows it.
    pub source_ip: Option<std::net::IpAddr>,
    /// Whether the operation may use another account's key by ARN ("Cross-account use").
    pub cross_account: bool,
}

#[derive(Debug)]
struct Entry {
    credential: Arc<Credential>,
    account_id: String,
    principal_arn: String,
    regions: Vec<String>,
    identity: Arc<Vec<crate::authz::Policy>>,
}

/// One generation of the configured principals, replaced whole by a reload.
#[derive(Debug)]
struct Table {
    by_access_key: HashMap<String, Entry>,
    principals: HashSet<String>,
    served_regions: HashSet<String>,
    require_signed_target: bool,
}

/// The configured principals and the verifier.
#[derive(Debug)]
pub struct Callers {
    table: ArcSwap<Table>,
    verifier: Verifier,
}

impl Table {
    fn from_config(cfg: &FrontendConfig) -> Self {
        let mut by_access_key = HashMap::new();
        let mut principals = HashSet::new();
        let allow_all = Arc::new(vec![
            crate::authz::Policy::parse(crate::authz::ALLOW_ALL_IDENTITY_POLICY)
                .unwrap_or(crate::authz::Policy { statements: vec![] }),
        ]);
        for a in &cfg.accounts {
            for p in &a.principals {
                // Compatibility: a principal without identity policies may do anything its
                // key policies allow (restricting is opt-in).
                let identity = if p.policies.is_empty() {
                    allow_all.clone()
                } else {
                    Arc::new(
                        p.policies
                            .iter()
                            // The config loader refused documents that do not parse.
                            .filter_map(|n| cfg.identity_policies.get(n))
                            .filter_map(|text| crate::authz::Policy::parse(text).ok())
                            .collect(),
                    )
                };
                principals.insert(p.arn.clone());
                by_access_key.insert(
                    p.access_key_id.clone(),
                    Entry {
                        // A copy of exactly the secret's size, wiped when the last request
                        // holding this generation of the table ends.
                        credential: Arc::new(Credential::new(
                            p.access_key_id.clone(),
                            SigningSecret::new(p.secret.as_str()),
                        )),
                        account_id: a.id.clone(),
                        principal_arn: p.arn.clone(),
                        regions: a.regions.clone(),
                        identity,
                    },
                );
            }
        }
        Self {
            by_access_key,
            principals,
            served_regions: cfg.served_regions.iter().cloned().collect(),
            require_signed_target: cfg.require_signed_target,
        }
    }
}

impl Callers {
    /// Indexes the principals of `cfg`.
    pub fn from_config(cfg: &FrontendConfig) -> Self {
        let mut vc = VerifierConfig::new("kms");
        vc.max_clock_skew = MAX_CLOCK_SKEW;
        Self {
            table: ArcSwap::from_pointee(Table::from_config(cfg)),
            verifier: Verifier::new(vc),
        }
    }

    /// Replaces every principal with those of `cfg` (a reload). Requests already verified
    /// keep the old generation until they end; the old secrets are wiped when it is dropped.
    pub fn replace(&self, cfg: &FrontendConfig) {
        self.table.store(Arc::new(Table::from_config(cfg)));
    }

    /// Whether a request for `operation` (a KMS operation name) must sign `x-amz-target`
    /// and did not: a signature that does not cover the operation could be replayed as
    /// another one within the clock-skew window (`[auth] require_signed_target`).
    pub fn check_signed_target(&self, auth: &Authorization) -> Result<(), KmsError> {
        if self.table.load().require_signed_target && !auth.is_signed("x-amz-target") {
            return Err(KmsError::client(
                "IncompleteSignatureException",
                "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        Ok(())
    }

    /// How many principals are configured.
    pub fn principal_count(&self) -> usize {
        self.table.load().by_access_key.len()
    }

    /// Whether `arn` is a principal this installation knows.
    pub fn principal_exists(&self, arn: &str) -> bool {
        self.table.load().principals.contains(arn)
    }

    /// Whether the account `account_id` is served in `region` (the Region is served and no
    /// principal of the account is limited to other Regions): where a multi-Region key of
    /// the account may have a replica.
    pub fn serves(&self, account_id: &str, region: &str) -> bool {
        let table = self.table.load();
        table.served_regions.contains(region)
            && table
                .by_access_key
                .values()
                .filter(|e| e.account_id == account_id)
                .all(|e| e.regions.is_empty() || e.regions.iter().any(|r| r == region))
    }

    /// Checks the request's cheap parts (header shape, known access key) before its body is
    /// read; returns the parsed header for [`Callers::verify`].
    pub fn identify(&self, parts: &http::request::Parts) -> Result<Authorization, KmsError> {
        let auth = Authorization::parse(&parts.headers).map_err(|e| match e {
            VerifyError::MissingAuthorization => KmsError::client(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            other => KmsError::client("IncompleteSignatureException", other.to_string()),
        })?;
        if !self
            .table
            .load()
            .by_access_key
            .contains_key(auth.access_key_id())
        {
            return Err(KmsError::client(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        Ok(auth)
    }

    /// Verifies the signature over the whole request.
    pub fn verify(
        &self,
        parts: &http::request::Parts,
        auth: &Authorization,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, KmsError> {
        let table = self.table.load_full();
        let entry = table
            .by_access_key
            .get(auth.access_key_id())
            .ok_or_else(|| {
                KmsError::client(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
            })?;
        self.verifier
            .verify(parts, auth, &entry.credential, body, now)
            .map_err(|e| match e {
                VerifyError::SignatureMismatch => KmsError::client(
                    "InvalidSignatureException",
                    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
                ),
                VerifyError::ClockSkew { .. } => KmsError::client(
                    "InvalidSignatureException",
                    format!("Signature expired: {e}"),
                ),
                VerifyError::WrongService { .. } => KmsError::client(
                    "InvalidSignatureException",
                    "Credential should be scoped to correct service: 'kms'.",
                ),
                VerifyError::MissingDate
                | VerifyError::MalformedDate(_)
                | VerifyError::RequiredHeaderNotSigned(_)
                | VerifyError::MissingSignedHeader(_)
                | VerifyError::MalformedAuthorization(_) => {
                    KmsError::client("IncompleteSignatureException", e.to_string())
                }
                other => KmsError::client("InvalidSignatureException", other.to_string()),
            })?;
        let region = auth.region().to_owned();
        // The Region ends up in ARNs: only the served ones, never an arbitrary string.
        if !table.served_regions.contains(&region) {
            return Err(KmsError::client(
                "InvalidSignatureException",
                "Credential should be scoped to a valid region. ",
            ));
        }
        if !entry.regions.is_empty() && !entry.regions.contains(&region) {
            return Err(KmsError::client(
                "UnrecognizedClientException",
                format!("The account is not served in Region {region}."),
            ));
        }
        Ok(Caller {
            account_id: entry.account_id.clone(),
            principal_arn: entry.principal_arn.clone(),
            partition: partition_for_region(&region),
            region,
            request_id: String::new(),
            event_id: String::new(),
            identity: entry.identity.clone(),
            source_ip: None,
            cross_account: false,
        })
    }
}

/// Whether `r` has the shape of a Region name (`us-east-1`, `us-gov-west-1`): lower-case
/// letters and digits in dash-separated parts, ending in a number.
pub fn region_shaped(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}
