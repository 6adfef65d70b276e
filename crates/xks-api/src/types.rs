//! Request and response bodies of the four XKS API operations.
//!
//! Unknown JSON fields are ignored everywhere (KMS may add fields). Fields that are
//! required by one operation but optional in the shared `requestMetadata` type are checked
//! by [`RequestMetadata::require_key_fields`].

use serde::{Deserialize, Serialize};

use crate::bytes::{Base64Bytes, SecretBytes};

/// The only encryption algorithm of API v1.
pub const AES_GCM: &str = "AES_GCM";
/// The key spec of a 256-bit AES key.
pub const AES_256: &str = "AES_256";

/// `requestMetadata`, carried by every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// CloudTrail request id of the KMS call; opaque, never validated, always logged.
    pub kms_request_id: String,
    /// The KMS API that caused the call; unknown values must be accepted.
    pub kms_operation: String,
    /// ARN of the KMS caller (required except for health).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_principal_arn: Option<String>,
    /// Source VPC, when the KMS call came through a VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    /// Source VPC endpoint, when the KMS call came through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// ARN of the KMS key (required for Encrypt and Decrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// AWS service calling KMS on the customer's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
}

/// Which operation a body belongs to, for the checks that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    GetKeyMetadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

impl Operation {
    /// The name used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Health => "GetHealthStatus",
            Self::GetKeyMetadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        }
    }

    /// The last URI path segment of the operation.
    pub const fn path_segment(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::GetKeyMetadata => "metadata",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

impl RequestMetadata {
    /// Checks the fields the spec requires for `op` beyond `kmsRequestId` and `kmsOperation`.
    /// Returns the name of the first missing field.
    pub fn require_key_fields(&self, op: Operation) -> Result<(), &'static str> {
        let needs_principal = op != Operation::Health;
        let needs_key_arn = matches!(op, Operation::Encrypt | Operation::Decrypt);
        if needs_principal && self.aws_principal_arn.is_none() {
            return Err("requestMetadata.awsPrincipalArn");
        }
        if needs_key_arn && self.kms_key_arn.is_none() {
            return Err("requestMetadata.kmsKeyArn");
        }
        Ok(())
    }
}

/// A request body of any operation: every one carries `requestMetadata`.
pub trait XksRequest {
    /// The request's metadata.
    fn request_metadata(&self) -> &RequestMetadata;
}

macro_rules! xks_request {
    ($($t:ty),*) => {$(
        impl XksRequest for $t {
            fn request_metadata(&self) -> &RequestMetadata {
                &self.request_metadata
            }
        }
    )*};
}

xks_request!(
    HealthRequest,
    GetKeyMetadataRequest,
    EncryptRequest,
    DecryptRequest
);

/// GetHealthStatus request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRequest {
    /// Request metadata (`kmsRequestId`, `kmsOperation`).
    pub request_metadata: RequestMetadata,
}

/// GetKeyMetadata request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetKeyMetadataRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
}

/// Encrypt request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
    /// The data to encrypt; never logged.
    pub plaintext: SecretBytes,
    /// Must be `AES_GCM`.
    pub encryption_algorithm: String,
    /// Optional AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Base64Bytes>,
    /// `SHA_256` to ask for a CDIV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

/// Encrypt response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// The ciphertext, as long as the plaintext.
    pub ciphertext: Base64Bytes,
    /// 12 or 16 bytes.
    pub initialization_vector: Base64Bytes,
    /// 16 bytes.
    pub authentication_tag: Base64Bytes,
    /// At most 20 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<Base64Bytes>,
    /// Present iff a CDIV was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<Base64Bytes>,
}

/// Decrypt request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
    /// The ciphertext.
    pub ciphertext: Base64Bytes,
    /// The metadata returned by Encrypt, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<Base64Bytes>,
    /// Must be `AES_GCM`.
    pub encryption_algorithm: String,
    /// The AAD given to Encrypt, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Base64Bytes>,
    /// 12 or 16 bytes.
    pub initialization_vector: Base64Bytes,
    /// 16 bytes.
    pub authentication_tag: Base64Bytes,
}

/// Decrypt response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    /// The plaintext; never logged.
    pub plaintext: SecretBytes,
}

/// Key status reported by GetKeyMetadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    /// Usable.
    Enabled,
    /// Disabled on the proxy or key manager.
    Disabled,
}

/// GetKeyMetadata response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetKeyMetadataResponse {
    /// E.g. `AES_256`.
    pub key_spec: String,
    /// Upper-case usages, e.g. `ENCRYPT`, `DECRYPT`; at most 10.
    pub key_usage: Vec<String>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: KeyStatus,
}

/// Health of one key-manager fleet member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Healthy.
    Active,
    /// Serving, but impaired.
    Degraded,
    /// Cannot serve.
    Unavailable,
}

/// One entry of `ekmFleetDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmFleetMember {
    /// Identifier of the key manager instance.
    pub id: String,
    /// Model (and version) of the key manager.
    pub model: String,
    /// Its health.
    pub health_status: HealthStatus,
}

/// GetHealthStatus response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Number of proxy instances behind the endpoint (> 0).
    pub xks_proxy_fleet_size: u32,
    /// Proxy vendor.
    pub xks_proxy_vendor: String,
    /// Proxy product and version.
    pub xks_proxy_model: String,
    /// Key manager vendor.
    pub ekm_vendor: String,
    /// One to ten key manager instances.
    pub ekm_fleet_details: Vec<EkmFleetMember>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_accepted_and_optional_fields_may_be_absent() {
        let body = r#"{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"FutureOp","newThing":1},
            "plaintext":"AAEC","encryptionAlgorithm":"AES_GCM","somethingNew":[1,2]}"#;
        let req: EncryptRequest = serde_json::from_str(body).expect("parses");
        assert_eq!(req.plaintext.expose(), &[0, 1, 2]);
        assert_eq!(req.request_metadata.kms_operation, "FutureOp");
        assert!(req.additional_authenticated_data.is_none());
        assert_eq!(
            req.request_metadata.require_key_fields(Operation::Encrypt),
            Err("requestMetadata.awsPrincipalArn")
        );
        assert_eq!(
            req.request_metadata.require_key_fields(Operation::Health),
            Ok(())
        );
    }

    #[test]
    fn missing_required_metadata_fails_to_parse() {
        assert!(serde_json::from_str::<HealthRequest>(r#"{}"#).is_err());
        assert!(
            serde_json::from_str::<HealthRequest>(r#"{"requestMetadata":{"kmsOperation":"x"}}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<HealthRequest>(
                r#"{"requestMetadata":{"kmsRequestId":"x","kmsOperation":"y"}}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn responses_serialize_in_wire_form() {
        let r = GetKeyMetadataResponse {
            key_spec: AES_256.into(),
            key_usage: vec!["ENCRYPT".into(), "DECRYPT".into()],
            key_status: KeyStatus::Enabled,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("ser"),
            r#"{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}"#
        );
        let h = HealthStatus::Degraded;
        assert_eq!(serde_json::to_string(&h).expect("ser"), r#""DEGRADED""#);
    }
}
