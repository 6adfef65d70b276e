//! Looks for bytes in another process's memory (`/proc/<pid>/maps` + `/proc/<pid>/mem`), to
//! prove that a secret a service should have wiped is gone. Needs the right to ptrace the
//! process (root, or the same user with `kernel.yama.ptrace_scope` 0).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// Where the process's readable memory holds `needle`: the start addresses of the mapped
/// regions that contain it, with each region's name (e.g. `[heap]`). Regions that cannot be
/// read (`[vvar]` and the like) are skipped; the count of regions read is returned too, so a
/// caller can tell "nothing found" from "nothing read".
pub fn find_in_process_memory(pid: u32, needle: &[u8]) -> (Vec<(u64, String)>, usize) {
    assert!(!needle.is_empty(), "an empty needle is everywhere");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/maps: {e}"));
    let mut mem = File::open(format!("/proc/{pid}/mem"))
        .unwrap_or_else(|e| panic!("open /proc/{pid}/mem (needs ptrace rights): {e}"));
    let mut found = Vec::new();
    let mut regions_read = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("").to_owned();
        if !perms.starts_with('r') || name == "[vvar]" || name == "[vsyscall]" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        if region_contains(&mut mem, start, end, needle) {
            found.push((start, name));
        }
        regions_read += 1;
    }
    (found, regions_read)
}

/// Whether `[start, end)` of `mem` contains `needle`, read in chunks that overlap by
/// `needle.len() - 1` bytes so a match across a chunk boundary is found.
fn region_contains(mem: &mut File, start: u64, end: u64, needle: &[u8]) -> bool {
    const CHUNK: u64 = 1 << 20;
    let overlap = needle.len() as u64 - 1;
    let mut at = start;
    let mut buf = vec![0u8; (CHUNK + overlap) as usize];
    while at < end {
        let len = (end - at).min(CHUNK + overlap) as usize;
        if mem.seek(SeekFrom::Start(at)).is_err() {
            return false;
        }
        let mut filled = 0;
        while filled < len {
            match mem.read(&mut buf[filled..len]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        if buf[..filled].windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        if filled < len {
            return false;
        }
        at += CHUNK;
    }
    false
}
