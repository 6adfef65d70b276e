//! Short secrets read from files or the environment (SigV4 secrets, HSM PINs, tokens) into
//! zeroizing buffers from the first byte.
//!
//! `std::fs::read_to_string` followed by `Zeroizing::new(s.trim().to_owned())` leaves the
//! untrimmed copy in freed heap memory, where a later heap dump or a memory scan finds it.
//! Here the file is read into one buffer of fixed capacity that never grows (growing would
//! leave the old allocation behind unwiped), and the trimmed copy is made into a zeroizing
//! buffer of exactly its size.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

use crate::RootKeyError;

/// The largest secret file read (a SigV4 secret is 64 characters; a PIN or token far less).
pub const MAX_SECRET_FILE_BYTES: usize = 16 * 1024;

fn load_error(source_name: &str, reason: impl Into<String>) -> RootKeyError {
    RootKeyError::Load {
        source_name: source_name.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a secret from a file that only its owner may read or write, trimmed of surrounding
/// white space, into a zeroizing string. The mode is checked on the opened file, so a file
/// swapped in between the check and the read is checked too.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, RootKeyError> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| load_error(&name, e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| load_error(&name, e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(load_error(
            &name,
            format!(
                "permissions {:o} let others read it; use chmod 600",
                mode & 0o777
            ),
        ));
    }
    let mut raw = Zeroizing::new(vec![0u8; MAX_SECRET_FILE_BYTES + 1]);
    let mut filled = 0;
    loop {
        let n = file
            .read(&mut raw[filled..])
            .map_err(|e| load_error(&name, e.to_string()))?;
        if n == 0 {
            break;
        }
        filled += n;
        if filled > MAX_SECRET_FILE_BYTES {
            return Err(load_error(
                &name,
                format!("larger than {MAX_SECRET_FILE_BYTES} bytes; not a secret file"),
            ));
        }
    }
    trimmed_copy(&raw[..filled]).ok_or_else(|| load_error(&name, "not UTF-8 text"))
}

/// Reads a secret from an environment variable, trimmed, into a zeroizing string; `None`
/// when it is unset or not Unicode. (The process environment itself keeps its copy: that
/// is the price of passing secrets by environment.)
pub fn read_secret_env(var: &str) -> Option<Zeroizing<String>> {
    let value = Zeroizing::new(std::env::var(var).ok()?);
    trimmed_copy(value.as_bytes())
}

/// A zeroizing copy of `raw` without surrounding white space, allocated at its final size.
fn trimmed_copy(raw: &[u8]) -> Option<Zeroizing<String>> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.push_str(text);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn reads_and_trims_an_owner_only_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "s", b"  abc/def+ghi=\n", 0o600);
        assert_eq!(read_secret_file(&p).expect("read").as_str(), "abc/def+ghi=");
    }

    #[test]
    fn refuses_files_others_may_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "s", b"secret", 0o640);
        let e = read_secret_file(&p)
            .expect_err("group-readable")
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn refuses_huge_and_binary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = write(
            dir.path(),
            "big",
            &vec![b'a'; MAX_SECRET_FILE_BYTES + 1],
            0o600,
        );
        assert!(read_secret_file(&big).is_err());
        let exact = write(
            dir.path(),
            "exact",
            &vec![b'a'; MAX_SECRET_FILE_BYTES],
            0o600,
        );
        assert_eq!(
            read_secret_file(&exact).expect("read").len(),
            MAX_SECRET_FILE_BYTES
        );
        let bin = write(dir.path(), "bin", &[0xff, 0xfe], 0o600);
        assert!(read_secret_file(&bin).is_err());
    }
}
