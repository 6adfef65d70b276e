//! `keys ...` for key stores whose keys live in an external key manager: a PKCS#11 token
//! or Vault/OpenBao Transit. Key status lives in the proxy's status overlay file.

use std::path::Path;
use xks_api::XksKeyId;

use super::table::{KeyRow, overlay_status, print_key_rows};
use super::{KeysAction, create_ids, created_text, parse_id, read_material, usages};
use crate::cli::CliError;
use crate::keystore::KeyUsages;

/// `keys` for a PKCS#11 key store: keys live in the HSM; status in the proxy's status file.
pub(super) fn keys_pkcs11(
    action: KeysAction,
    json: bool,
    config: &crate::backend::pkcs11::Pkcs11Config,
    status_file: &Path,
    name: &str,
) -> Result<(), CliError> {
    let hsm = || {
        crate::backend::pkcs11::Pkcs11Backend::open(name, config.clone())
            .map_err(|e| CliError::Other(format!("PKCS#11: {e}")))
    };
    let pk = |e: crate::backend::pkcs11::Pkcs11Error| CliError::Other(format!("PKCS#11: {e}"));
    match action {
        KeysAction::Init => println!("nothing to initialise: keys live in the HSM token"),
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            usages: u,
            disabled,
        } => {
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let labels: Vec<&str> = ids.iter().map(XksKeyId::as_str).collect();
            hsm()?.create_keys_with(&labels, usages(&u)?).map_err(pk)?;
            if disabled {
                crate::backend::overlay::set_disabled_many(status_file, &labels, true)
                    .map_err(CliError::Other)?;
            }
            println!(
                "created {} in the HSM (AES-256, sensitive, not extractable)",
                created_text(&ids)
            );
        }
        KeysAction::Import {
            key_id,
            material_file,
            material_env,
            usages: u,
        } => {
            let id = parse_id(&key_id)?;
            let usages = usages(&u)?;
            let material = read_material(material_file, material_env)?;
            hsm()?
                .import_key_with(id.as_str(), &material[..], usages)
                .map_err(pk)?;
            println!("imported key {id} into the HSM");
        }
        KeysAction::List | KeysAction::Show { .. } => {
            let disabled = crate::backend::overlay::KeyStatusFile::read(status_file)
                .map_err(CliError::Other)?
                .disabled;
            let hsm = hsm()?;
            let rows: Vec<KeyRow> = hsm
                .list_keys()
                .map_err(pk)?
                .into_iter()
                .map(|k| KeyRow {
                    status: overlay_status(&disabled, &k.label),
                    usages: KeyUsages {
                        encrypt: k.encrypt,
                        decrypt: k.decrypt,
                    },
                    key_spec: k.key_spec,
                    current_version: 1,
                    id: k.label,
                })
                .collect();
            print_key_rows(&action, rows, hsm.health_key_label(), json, "in the HSM")?;
        }
        KeysAction::Enable { ref key_id } | KeysAction::Disable { ref key_id } => {
            let disable = matches!(action, KeysAction::Disable { .. });
            let id = parse_id(key_id)?;
            crate::backend::overlay::set_disabled(status_file, id.as_str(), disable)
                .map_err(CliError::Other)?;
            println!("{} key {id}", if disable { "disabled" } else { "enabled" });
        }
        KeysAction::Rotate { .. } => {
            return Err(CliError::Other(
                "PKCS#11 keys have a single version: create a new key and move to it".into(),
            ));
        }
        KeysAction::Backup { .. } | KeysAction::Restore { .. } | KeysAction::RotateRoot => {
            return Err(CliError::Other("backups and root keys apply to the embedded key store; back up the HSM with its vendor's tools".into()));
        }
    }
    Ok(())
}

/// `keys` for a Transit key store: keys live in Vault/OpenBao; status in the status file.
pub(super) fn keys_transit(
    action: KeysAction,
    json: bool,
    config: &crate::backend::transit::TransitConfig,
    base_dir: &Path,
    status_file: &Path,
    name: &str,
) -> Result<(), CliError> {
    let tr = |e: crate::backend::transit::TransitError| CliError::Other(format!("Transit: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let backend =
        || crate::backend::transit::TransitBackend::open(name, config, base_dir).map_err(tr);
    match action {
        KeysAction::Init => println!("nothing to initialise: keys live in Transit"),
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            usages: u,
            disabled,
        } => {
            if usages(&u)? != KeyUsages::BOTH {
                return Err(CliError::Other(
                    "Transit aes256-gcm96 keys always allow ENCRYPT and DECRYPT: --usage \
                     applies to embedded and PKCS#11 key stores only"
                        .into(),
                ));
            }
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let names: Vec<&str> = ids.iter().map(XksKeyId::as_str).collect();
            let b = backend()?;
            match names.as_slice() {
                [one] => runtime.block_on(b.create_key(one)).map_err(tr)?,
                many => runtime.block_on(b.create_keys(many)).map_err(tr)?,
            }
            if disabled {
                crate::backend::overlay::set_disabled_many(status_file, &names, true)
                    .map_err(CliError::Other)?;
            }
            println!("created Transit {} (aes256-gcm96)", created_text(&ids));
        }
        KeysAction::Rotate { key_id } => {
            let id = parse_id(&key_id)?;
            let b = backend()?;
            let v = runtime.block_on(b.rotate_key(id.as_str())).map_err(tr)?;
            println!("rotated Transit key {id}: version {v} now encrypts");
        }
        KeysAction::List | KeysAction::Show { .. } => {
            let disabled = crate::backend::overlay::KeyStatusFile::read(status_file)
                .map_err(CliError::Other)?
                .disabled;
            let b = backend()?;
            let facts = match &action {
                KeysAction::Show { key_id } => runtime
                    .block_on(b.key_facts(key_id))
                    .map_err(tr)?
                    .map(|info| vec![(key_id.clone(), info)])
                    .unwrap_or_default(),
                _ => runtime.block_on(b.describe_keys()).map_err(tr)?,
            };
            let rows: Vec<KeyRow> = facts
                .into_iter()
                .map(|(name, info)| KeyRow {
                    status: overlay_status(&disabled, &name),
                    usages: info.usages,
                    key_spec: info.key_spec,
                    current_version: info.current_version,
                    id: name,
                })
                .collect();
            print_key_rows(&action, rows, b.health_key_name(), json, "in Transit")?;
        }
        KeysAction::Enable { ref key_id } | KeysAction::Disable { ref key_id } => {
            let disable = matches!(action, KeysAction::Disable { .. });
            let id = parse_id(key_id)?;
            crate::backend::overlay::set_disabled(status_file, id.as_str(), disable)
                .map_err(CliError::Other)?;
            println!("{} key {id}", if disable { "disabled" } else { "enabled" });
        }
        KeysAction::Import { .. }
        | KeysAction::Backup { .. }
        | KeysAction::Restore { .. }
        | KeysAction::RotateRoot => {
            return Err(CliError::Other(
                "not available for Transit key stores: use Vault/OpenBao's own tools".into(),
            ));
        }
    }
    Ok(())
}
