//! The XKS Proxy API v1 wire format, defined once for both sides.
//!
//! The proxy (`xks-proxy`) parses requests and writes responses with these types; the KMS
//! front end's proxy client writes requests and validates responses with the same types.
//!
//! What lives here:
//! - [`types`]: request and response bodies of the four operations, with `requestMetadata`;
//! - [`error`]: the error names, their HTTP statuses and the error body;
//! - [`limits`]: every size limit the spec sets (and the ones it implies);
//! - [`bytes`]: strict standard base64 fields, with a zeroizing variant for plaintext;
//! - [`aad`]: the AAD handed to AES-GCM (the spec's construction and the reference proxy's);
//! - [`metadata`]: our `ciphertextMetadata` format (AAD construction + key version);
//! - [`cdiv`]: the ciphertext data integrity value;
//! - [`key_id`]: the external key id (`XksKeyId`) and URI path rules.
//!
//! Architecture invariant: this crate does no I/O and holds no keys. It knows the wire, not
//! where keys live or how requests are authenticated.

pub mod aad;
pub mod bytes;
pub mod cdiv;
pub mod error;
pub mod key_id;
pub mod limits;
pub mod metadata;
pub mod types;

pub use aad::AadConstruction;
pub use bytes::{Base64Bytes, SecretBytes};
pub use error::{ErrorBody, ErrorName, XksError};
pub use key_id::{KeyIdError, XksKeyId};
pub use metadata::{CiphertextMetadata, MetadataError};
