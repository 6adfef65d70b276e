//! `keys ...` for the embedded key store: one sealed file, changed by crash-safe writes.

use std::path::PathBuf;
use xks_api::XksKeyId;
use xks_api::types::KeyStatus;

use super::table::{KeyRow, key_json, print_json, print_key_table};
use super::{KeysAction, create_ids, created_text, parse_id, read_material, usages};
use crate::cli::CliError;
use crate::config::{BackendConfig, KeyStoreConfig, ProxyConfig};
use crate::keystore::format::random_key;
use crate::keystore::{KeyStoreFile, KeyUsages, RootKey, StoreError, StoredKey, StoredVersion};
use crate::local;

/// Runs a `keys` command on an embedded key store.
pub(super) fn keys_embedded(
    action: KeysAction,
    json: bool,
    cfg: &ProxyConfig,
    ks: &KeyStoreConfig,
) -> Result<(), CliError> {
    let store = open_store(ks)?;
    let now = local::now_secs();
    match action {
        KeysAction::Init => {
            store.create()?;
            println!("created key store {}", store.path().display());
        }
        KeysAction::Create {
            key_ids,
            count,
            prefix,
            usages: u,
            disabled,
        } => {
            let ids = create_ids(&key_ids, count, prefix.as_deref())?;
            let text = created_text(&ids);
            let new = ids
                .into_iter()
                .map(|id| Ok((id, random_key()?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            insert_new(&store, new, usages(&u)?, disabled, now)?;
            println!("created {text}");
        }
        KeysAction::Import {
            key_id,
            material_file,
            material_env,
            usages: u,
        } => {
            let id = parse_id(&key_id)?;
            let material = read_material(material_file, material_env)?;
            insert_new(
                &store,
                vec![(id.clone(), material)],
                usages(&u)?,
                false,
                now,
            )?;
            println!("imported key {id}");
        }
        KeysAction::List => {
            let c = store.read()?;
            if json {
                let list: Vec<_> = c.keys.iter().map(|(id, k)| key_json(id, k)).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                let rows: Vec<KeyRow> = c
                    .keys
                    .iter()
                    .map(|(id, k)| KeyRow::of_stored(id, k))
                    .collect();
                print_key_table(&rows);
            }
        }
        KeysAction::Show { key_id } => {
            let id = parse_id(&key_id)?;
            let c = store.read()?;
            let k = c
                .keys
                .get(&id)
                .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
            print_json(&key_json(&id, k), json);
        }
        KeysAction::Enable { key_id } => {
            set_status(&store, &key_id, KeyStatus::Enabled)?;
            println!("enabled key {key_id}");
        }
        KeysAction::Disable { key_id } => {
            set_status(&store, &key_id, KeyStatus::Disabled)?;
            println!("disabled key {key_id}");
        }
        KeysAction::Rotate { key_id } => {
            let id = parse_id(&key_id)?;
            let v = store.update(|c| {
                let k = c
                    .keys
                    .get_mut(&id)
                    .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
                let next = k.current_version() + 1;
                k.versions.push(StoredVersion {
                    version: next,
                    created: now,
                    material: random_key()?,
                });
                Ok(next)
            })?;
            println!("rotated key {id}: version {v} now encrypts");
        }
        KeysAction::Backup { out } => {
            let b = store.backup()?;
            crate::keystore::file::write_new_private_file(&out, &b.bytes)?;
            println!(
                "wrote backup {} of key store '{}': generation {}, {} keys (sealed under the current root key)",
                out.display(),
                ks.name,
                b.generation,
                b.keys
            );
        }
        KeysAction::Restore { from } => {
            let bytes = std::fs::read(&from)
                .map_err(|e| CliError::Other(format!("{}: {e}", from.display())))?;
            let r = store.restore(&bytes)?;
            println!(
                "restored key store '{}' from {}: generation {}, {} keys",
                ks.name,
                from.display(),
                r.generation,
                r.keys
            );
        }
        KeysAction::RotateRoot => rotate_root(cfg, ks)?,
    }
    Ok(())
}

pub(super) fn open_store(ks: &KeyStoreConfig) -> Result<KeyStoreFile, CliError> {
    match &ks.backend {
        BackendConfig::Embedded { store, root_key } => {
            Ok(KeyStoreFile::new(store, RootKey::load(root_key)?))
        }
        _ => Err(CliError::Other(format!(
            "key store '{}' does not use the embedded backend",
            ks.name
        ))),
    }
}

/// Re-seals every store sharing `ks`'s root key file under a new root key, then replaces
/// the file. Resumable: a rotation interrupted after writing `<root>.new` continues with it.
fn rotate_root(cfg: &ProxyConfig, ks: &KeyStoreConfig) -> Result<(), CliError> {
    use crate::keystore::RootKeySource;
    let BackendConfig::Embedded { root_key, .. } = &ks.backend else {
        return Err(CliError::Other(
            "rotate-root applies to key stores with the embedded backend".into(),
        ));
    };
    let RootKeySource::File(root_path) = root_key else {
        return Err(CliError::Other(
            "rotate-root needs backend.root_key_file; with root_key_env, re-seal by restoring a backup under the new key".into(),
        ));
    };
    let mut pending = root_path.clone().into_os_string();
    pending.push(".new");
    let pending = PathBuf::from(pending);
    let new_root = if pending.exists() {
        println!(
            "resuming an interrupted rotation with {}",
            pending.display()
        );
        RootKey::load(&RootKeySource::File(pending.clone()))?
    } else {
        let k = RootKey::generate()?;
        k.write_new_file(&pending)?;
        k
    };
    let new_id = new_root.id();
    let mut resealed = Vec::new();
    for other in &cfg.key_stores {
        let BackendConfig::Embedded { store, root_key } = &other.backend else {
            continue;
        };
        if root_key != &RootKeySource::File(root_path.clone()) {
            continue;
        }
        let mut file = KeyStoreFile::new(store, RootKey::load(root_key)?);
        match file.reseal(RootKey::load(&RootKeySource::File(pending.clone()))?) {
            Ok(()) => resealed.push(other.name.clone()),
            // Already re-sealed by an interrupted run.
            Err(StoreError::WrongRootKey { found, .. })
                if found
                    == new_id
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>() =>
            {
                resealed.push(other.name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::rename(&pending, root_path)
        .map_err(|e| CliError::Other(format!("{}: {e}", root_path.display())))?;
    if let Some(dir) = root_path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    println!(
        "re-sealed key stores {} under a new root key; {} now holds it",
        resealed.join(", "),
        root_path.display()
    );
    Ok(())
}

/// Adds new keys to the embedded store in one crash-safe write: all of them, or none if
/// any id exists already.
fn insert_new(
    store: &KeyStoreFile,
    keys: Vec<(XksKeyId, zeroize::Zeroizing<[u8; 32]>)>,
    usages: KeyUsages,
    disabled: bool,
    now: u64,
) -> Result<(), StoreError> {
    store.update(|c| {
        if let Some((id, _)) = keys.iter().find(|(id, _)| c.keys.contains_key(id)) {
            return Err(StoreError::Refused(format!("key {id} already exists")));
        }
        for (id, material) in keys {
            c.keys.insert(
                id,
                StoredKey {
                    status: if disabled {
                        KeyStatus::Disabled
                    } else {
                        KeyStatus::Enabled
                    },
                    usages,
                    created: now,
                    versions: vec![StoredVersion {
                        version: 1,
                        created: now,
                        material,
                    }],
                },
            );
        }
        Ok(())
    })
}

fn set_status(store: &KeyStoreFile, key_id: &str, status: KeyStatus) -> Result<(), StoreError> {
    let id = parse_id(key_id)?;
    store.update(|c| {
        let k = c
            .keys
            .get_mut(&id)
            .ok_or_else(|| StoreError::Refused(format!("no key {id}")))?;
        k.status = status;
        Ok(())
    })
}
