//! The temporary names [`FsSink`](super::FsSink) writes under, and the recovery of the ones
//! a dead process left behind.
//!
//! A file is received as `.LEAF.XXXXXX` in its destination directory (hidden; six hex
//! digits from the process id and a counter, so two pulls never share one), and renamed to
//! `LEAF` only once it is complete and verified. rsync's receiver does the same
//! (`get_tmpname()` in receiver.c: `.LEAF.XXXXXX`, the leaf cut so the whole name fits).
//! A process killed mid-pull leaves its temp file: [`salvage_stale_temps`] makes the
//! largest one the resume basis under the partial directory and removes the rest.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many bytes of the leaf a temp name keeps (the name must stay under NAME_MAX, 255).
const KEEP: usize = 200;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp name for `leaf`: `.` + the first 200 bytes of `leaf` + `.XXXXXX`. The cut is
/// on bytes, so it may fall inside a character: the name is bytes, not text.
pub(super) fn temp_name(leaf: &OsString) -> OsString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ n.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut t = prefix(leaf.as_bytes());
    t.extend_from_slice(format!("{:06x}", salt & 0xff_ffff).as_bytes());
    OsString::from_vec(t)
}

/// `.` + the kept bytes of `leaf` + `.`: what every temp name of `leaf` starts with.
fn prefix(leaf: &[u8]) -> Vec<u8> {
    let keep = leaf.get(..leaf.len().min(KEEP)).unwrap_or(leaf);
    let mut p = Vec::with_capacity(keep.len() + 8);
    p.push(b'.');
    p.extend_from_slice(keep);
    p.push(b'.');
    p
}

/// Whether `name` is a temp name of `leaf`.
fn is_temp_of(name: &[u8], prefix: &[u8]) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|tail| tail.len() == 6 && tail.iter().all(u8::is_ascii_hexdigit))
}

/// Recovers the temp files that a dead process left for `leaf` in `dir`. The largest becomes
/// the partial file (`<dir>/<partial_dir>/LEAF`, the next pull's resume basis) unless a
/// larger partial is already there; the rest are removed. Returns how many temp files were
/// found (0 when `dir` does not exist).
///
/// Only call it for a file no live pull of this process is writing.
pub fn salvage_stale_temps(dir: &Path, leaf: &str, partial_dir: &str) -> io::Result<usize> {
    let prefix = prefix(leaf.as_bytes());
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if !is_temp_of(e.file_name().as_bytes(), &prefix) {
            continue;
        }
        let meta = std::fs::symlink_metadata(e.path())?;
        if meta.is_file() {
            found.push((meta.len(), e.path()));
        }
    }
    let n = found.len();
    found.sort();
    if let Some((len, best)) = found.pop() {
        let pdir = dir.join(partial_dir);
        let partial = pdir.join(leaf);
        let keep = std::fs::symlink_metadata(&partial).map_or(0, |m| m.len());
        if len > keep {
            // FsSink reserves a file's blocks up front (fallocate, size kept): a dead
            // process's reservation past the data is released here.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&best)
                .and_then(|f| f.set_len(len))?;
            std::fs::create_dir_all(&pdir)?;
            std::fs::rename(&best, &partial)?;
        } else {
            std::fs::remove_file(&best)?;
        }
    }
    for (_, p) in found {
        std::fs::remove_file(p)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PARTIAL_DIR;

    #[test]
    fn temp_names_are_hidden_distinct_and_recognised() {
        let a = temp_name(&OsString::from("dump.rdb"));
        let b = temp_name(&OsString::from("dump.rdb"));
        assert_ne!(a, b);
        assert!(a.as_bytes().starts_with(b".dump.rdb."));
        assert!(is_temp_of(a.as_bytes(), &prefix(b"dump.rdb")));
        assert!(!is_temp_of(a.as_bytes(), &prefix(b"dump.rd")));
    }

    #[test]
    fn stale_temps_become_the_partial_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let w = |n: &str, b: &[u8]| std::fs::write(d.path().join(n), b).expect("write");
        w(".dump.sql.0a1b2c", &[1u8; 100]);
        w(".dump.sql.ffffff", &[2u8; 10]);
        w(".dump.sql.zzzzzz", b"not ours");
        w(".other.sql.000000", b"other file");
        let salvage = |leaf| salvage_stale_temps(d.path(), leaf, PARTIAL_DIR).expect("salvage");
        assert_eq!(salvage("dump.sql"), 2);
        let partial = d.path().join(PARTIAL_DIR).join("dump.sql");
        assert_eq!(std::fs::read(&partial).expect("partial"), vec![1u8; 100]);
        assert!(!d.path().join(".dump.sql.0a1b2c").exists());
        assert!(!d.path().join(".dump.sql.ffffff").exists());
        assert!(d.path().join(".dump.sql.zzzzzz").exists());
        assert!(d.path().join(".other.sql.000000").exists());
        // A smaller leftover does not replace a longer partial.
        w(".dump.sql.123456", &[3u8; 5]);
        assert_eq!(salvage("dump.sql"), 1);
        assert_eq!(std::fs::read(&partial).expect("partial").len(), 100);
        let missing = salvage_stale_temps(&d.path().join("missing"), "x", PARTIAL_DIR);
        assert_eq!(missing.expect("missing dir"), 0);
    }

    /// A 206-byte name whose 200-byte cut falls inside `中`: the temp name keeps the first
    /// 200 bytes (an invalid UTF-8 name); salvage finds it without slicing a string.
    #[test]
    fn stale_temps_of_a_name_cut_inside_a_character_are_found() {
        let d = tempfile::tempdir().expect("tempdir");
        let leaf = format!("{}中.rdb", "a".repeat(199));
        assert_eq!(leaf.len(), 206);
        let temp = d.path().join(temp_name(&OsString::from(&leaf)));
        assert_eq!(temp.file_name().map(|n| n.len()), Some(208));
        std::fs::write(&temp, vec![7u8; 10]).expect("write");
        assert_eq!(
            salvage_stale_temps(d.path(), &leaf, PARTIAL_DIR).expect("salvage"),
            1
        );
        let partial = d.path().join(PARTIAL_DIR).join(&leaf);
        assert_eq!(std::fs::read(partial).expect("partial"), vec![7u8; 10]);
        assert!(!temp.exists());
    }
}
