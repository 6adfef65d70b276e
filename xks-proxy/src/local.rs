//! First start on embedded defaults: a complete local setup generated in a home directory.
//!
//! Creates a private CA and a server certificate for `localhost`, a root key, one key store
//! with an example key, a SigV4 credential (secret in a 0600 file) and the JSON file the KMS
//! console accepts, then writes a config that uses them. Prints how to use them, never the
//! root key or the secret itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use xks_api::XksKeyId;
use xks_api::types::KeyStatus;
use zeroize::Zeroizing;

use crate::keystore::file::write_new_private_file;
use crate::keystore::format::random_key;
use crate::keystore::{KeyStoreFile, KeyUsages, RootKey, StoredKey, StoredVersion};

/// The key store prefix of the local setup.
pub const LOCAL_PATH_PREFIX: &str = "/default";
/// The example key of the local setup.
pub const EXAMPLE_KEY_ID: &str = "demo-key-1";

/// Errors while creating the local setup.
#[derive(Debug, thiserror::Error)]
pub enum LocalSetupError {
    /// File system or key store failure.
    #[error(transparent)]
    Store(#[from] crate::keystore::StoreError),
    /// Root key failure.
    #[error(transparent)]
    RootKey(#[from] root_key::RootKeyError),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Tls(String),
    /// An I/O failure.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// What was created, for the start-up banner.
#[derive(Debug, Clone)]
pub struct LocalSetup {
    /// The home directory.
    pub home: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The CA certificate clients must trust.
    pub ca_cert: PathBuf,
    /// The access key id.
    pub access_key_id: String,
    /// The file holding the secret access key.
    pub secret_file: PathBuf,
    /// The KMS console JSON file.
    pub console_file: PathBuf,
    /// The listen address.
    pub listen: SocketAddr,
}

/// A fresh access key id: 24 characters from `A-Z 2-7` (base32 of 15 random bytes).
pub fn generate_access_key_id() -> Result<String, crate::keystore::StoreError> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = [0u8; 15];
    getrandom::fill(&mut raw).map_err(|e| crate::keystore::StoreError::Random(e.to_string()))?;
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(24);
    for b in raw {
        bits = (bits << 8) | u64::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            out.push(char::from(ALPHABET[((bits >> nbits) & 31) as usize]));
        }
    }
    Ok(out)
}

/// A fresh secret access key: base64 of 32 random bytes (44 characters, 256 bits).
pub fn generate_secret() -> Result<Zeroizing<String>, crate::keystore::StoreError> {
    let raw = random_key()?;
    Ok(Zeroizing::new(xks_api::bytes::encode(&raw[..])))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalSetupError + '_ {
    move |e| LocalSetupError::Io(path.to_owned(), e)
}

/// Creates the local setup in `home` (which must not contain a config yet).
pub fn create(home: &Path, listen: SocketAddr) -> Result<LocalSetup, LocalSetupError> {
    for sub in ["tls", "secrets", "keys", "kms-console"] {
        let d = home.join(sub);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    // TLS: a private CA and a server certificate for localhost.
    let ca = service_tls::pki::CertificateAuthority::generate("xks-proxy local CA")
        .map_err(|e| LocalSetupError::Tls(e.to_string()))?;
    let mut ips: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if !listen.ip().is_unspecified() && listen.ip() != ips[0] {
        ips.push(listen.ip());
    }
    let server = ca
        .issue_server(&["localhost"], &ips)
        .map_err(|e| LocalSetupError::Tls(e.to_string()))?;
    let ca_cert = home.join("tls/ca.pem");
    std::fs::write(&ca_cert, ca.cert_pem()).map_err(io(&ca_cert))?;
    write_new_private_file(&home.join("tls/ca.key"), ca.key_pem().as_bytes())?;
    let chain = home.join("tls/server.pem");
    std::fs::write(&chain, server.chain_pem(&ca)).map_err(io(&chain))?;
    write_new_private_file(&home.join("tls/server.key"), server.key_pem.as_bytes())?;

    // The root key, in its own directory, and the key store with an example key.
    let root = RootKey::generate()?;
    root.write_new_file(&home.join("secrets/root.key"))?;
    let store = KeyStoreFile::new(home.join("keys/default.store"), root);
    store.create()?;
    let now = now_secs();
    store.update(|c| {
        let id = XksKeyId::parse(EXAMPLE_KEY_ID)
            .map_err(|e| crate::keystore::StoreError::Refused(e.to_string()))?;
        c.keys.insert(
            id,
            StoredKey {
                status: KeyStatus::Enabled,
                usages: KeyUsages::BOTH,
                created: now,
                versions: vec![StoredVersion {
                    version: 1,
                    created: now,
                    material: random_key()?,
                }],
            },
        );
        Ok(())
    })?;

    // A SigV4 credential and the KMS console file.
    let access_key_id = generate_access_key_id()?;
    let secret = generate_secret()?;
    let secret_file = home.join("secrets/default.secret");
    write_new_private_file(&secret_file, format!("{}\n", secret.as_str()).as_bytes())?;
    let console_file = home.join("kms-console/default.json");
    let console = Zeroizing::new(console_json(LOCAL_PATH_PREFIX, &access_key_id, &secret));
    write_new_private_file(&console_file, console.as_bytes())?;

    let config = home.join("config.toml");
    let admin = admin_listen_address(listen);
    let text = format!(
        r#"# Generated by `xks-proxy` on first start: a local setup on embedded defaults.
# Every path is relative to this file. See deploy/xks-proxy.example.toml for all settings.

[server]
listen = "{listen}"

# /metrics and /ping for load balancers and Prometheus (loopback only).
[admin]
listen = "{admin}"

[server.tls]
certificate_chain = "tls/server.pem"
private_key = "tls/server.key"

[[key_stores]]
name = "default"
path_prefix = "{LOCAL_PATH_PREFIX}"
backend = {{ type = "embedded", store = "keys/default.store", root_key_file = "secrets/root.key" }}

[[key_stores.credentials]]
access_key_id = "{access_key_id}"
secret_file = "secrets/default.secret"
"#
    );
    std::fs::write(&config, text).map_err(io(&config))?;
    Ok(LocalSetup {
        home: home.to_owned(),
        config,
        ca_cert,
        access_key_id,
        secret_file,
        console_file,
        listen,
    })
}

/// The admin listener of a local setup: the port after the API's, always on loopback
/// (its `/metrics` is unauthenticated), even when the API listens on every interface.
pub fn admin_listen_address(api: SocketAddr) -> SocketAddr {
    let ip = match api.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, api.port().wrapping_add(1))
}

/// The JSON file the KMS console accepts for an external key store's proxy settings.
pub fn console_json(path_prefix: &str, access_key_id: &str, secret: &str) -> String {
    let v = serde_json::json!({
        "XksProxyUriPath": format!("{path_prefix}/kms/xks/v1"),
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": access_key_id,
            "RawSecretAccessKey": secret,
        }
    });
    format!("{v:#}\n")
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LocalSetup {
    /// The instructions printed after creating the setup.
    pub fn instructions(&self) -> String {
        let port = self.listen.port();
        format!(
            "xks-proxy: created a local setup in {home}
  config:            {config}
  CA to trust:       {ca}
  access key id:     {akid}
  secret access key: in {secret} (mode 0600)
  KMS console file:  {console}
  example key id:    {key}
Try it (SigV4 signed by curl):
  curl --cacert {ca} --aws-sigv4 \"aws:amz:us-east-1:kms-xks-proxy\" \\
    --user \"{akid}:$(cat {secret})\" -H 'content-type: application/json' \\
    -d '{{\"requestMetadata\":{{\"kmsRequestId\":\"1\",\"kmsOperation\":\"KmsHealthCheck\"}}}}' \\
    https://localhost:{port}{prefix}/kms/xks/v1/health
",
            home = self.home.display(),
            config = self.config.display(),
            ca = self.ca_cert.display(),
            akid = self.access_key_id,
            secret = self.secret_file.display(),
            console = self.console_file.display(),
            key = EXAMPLE_KEY_ID,
            prefix = LOCAL_PATH_PREFIX,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_follow_the_spec() {
        let id = generate_access_key_id().expect("rng");
        assert!(crate::config::valid_access_key_id(&id), "{id}");
        let s = generate_secret().expect("rng");
        assert!(crate::config::valid_secret(&s));
        assert_ne!(generate_access_key_id().expect("rng"), id);
    }

    #[test]
    fn the_admin_listener_stays_on_loopback() {
        let cases = [
            ("127.0.0.1:8443", "127.0.0.1:8444"),
            ("0.0.0.0:8443", "127.0.0.1:8444"),
            ("192.0.2.7:443", "127.0.0.1:444"),
            ("[::]:8443", "[::1]:8444"),
            ("[::1]:8443", "[::1]:8444"),
        ];
        for (api, admin) in cases {
            let api: SocketAddr = api.parse().expect("address");
            assert_eq!(admin_listen_address(api).to_string(), admin, "{api}");
        }
    }
}
