//! Comparing what a pull produced with what the daemon served.
//!
//! Metadata is read with `symlink_metadata` throughout: symlinks are compared by target and
//! never followed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, FileType, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// How many differences an error lists before [`compare_trees`] stops looking.
const MAX_DIFFS: usize = 20;
/// Read size when comparing file contents.
const CHUNK: usize = 1 << 20;

/// Compare two trees: every entry in `expected` exists in `actual` with same kind; regular
/// files identical bytes and identical mtime (whole seconds), same permission bits
/// (mode & 0o777); symlinks same target (read_link, never followed); directories recursively;
/// and `actual` has no extra entries. Returns Err with a list of the first 20 differences.
///
/// The two roots themselves must be directories; their own mtime and mode are not compared.
/// Neither are a subdirectory's mtime and mode: only its entries.
pub fn compare_trees(expected: &Path, actual: &Path) -> anyhow::Result<()> {
    for root in [expected, actual] {
        let meta = fs::symlink_metadata(root).with_context(|| format!("{}", root.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", root.display());
        }
    }
    let mut diffs = Diffs::default();
    compare_dirs(expected, actual, Path::new(""), &mut diffs)?;
    diffs.into_result(format_args!(
        "trees {} (expected) and {} (actual) differ",
        expected.display(),
        actual.display()
    ))
}

/// Compare two regular files: bytes (streamed, not all in memory: 256 MiB files), mtime secs,
/// mode & 0o777. Returns Err listing every difference found.
pub fn compare_files(expected: &Path, actual: &Path) -> anyhow::Result<()> {
    let exp = fs::symlink_metadata(expected).with_context(|| format!("{}", expected.display()))?;
    let act = fs::symlink_metadata(actual).with_context(|| format!("{}", actual.display()))?;
    let mut diffs = Diffs::default();
    if !exp.is_file() || !act.is_file() {
        diffs.push(format!(
            "kind: expected {}, actual {}",
            kind_name(exp.file_type()),
            kind_name(act.file_type())
        ));
    } else {
        file_diffs(expected, &exp, actual, &act, Path::new(""), &mut diffs)?;
    }
    diffs.into_result(format_args!(
        "files {} (expected) and {} (actual) differ",
        expected.display(),
        actual.display()
    ))
}

/// Differences collected so far, capped at [`MAX_DIFFS`].
#[derive(Debug, Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn push(&mut self, diff: String) {
        if !self.full() {
            self.0.push(diff);
        }
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_DIFFS
    }

    fn into_result(self, what: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut msg = format!("{what}:");
        if self.full() {
            let _ = write!(msg, " (first {MAX_DIFFS} differences)");
        }
        for d in &self.0 {
            let _ = write!(msg, "\n  - {d}");
        }
        bail!(msg)
    }
}

fn compare_dirs(
    expected: &Path,
    actual: &Path,
    rel: &Path,
    diffs: &mut Diffs,
) -> anyhow::Result<()> {
    let exp = read_dir_sorted(expected)?;
    let mut act = read_dir_sorted(actual)?;
    for (name, (exp_path, exp_meta)) in exp {
        if diffs.full() {
            return Ok(());
        }
        let rel = rel.join(&name);
        let Some((act_path, act_meta)) = act.remove(&name) else {
            diffs.push(format!("{}: missing", rel.display()));
            continue;
        };
        let (exp_type, act_type) = (exp_meta.file_type(), act_meta.file_type());
        if kind_name(exp_type) != kind_name(act_type) {
            diffs.push(format!(
                "{}: expected {}, actual {}",
                rel.display(),
                kind_name(exp_type),
                kind_name(act_type)
            ));
        } else if exp_type.is_dir() {
            compare_dirs(&exp_path, &act_path, &rel, diffs)?;
        } else if exp_type.is_symlink() {
            let exp_target =
                fs::read_link(&exp_path).with_context(|| exp_path.display().to_string())?;
            let act_target =
                fs::read_link(&act_path).with_context(|| act_path.display().to_string())?;
            if exp_target != act_target {
                diffs.push(format!(
                    "{}: symlink target: expected {:?}, actual {:?}",
                    rel.display(),
                    exp_target,
                    act_target
                ));
            }
        } else if exp_type.is_file() {
            file_diffs(&exp_path, &exp_meta, &act_path, &act_meta, &rel, diffs)?;
        }
    }
    for name in act.keys() {
        diffs.push(format!(
            "{}: unexpected extra entry",
            rel.join(name).display()
        ));
    }
    Ok(())
}

/// Entries of `dir` by name, with their `symlink_metadata`.
fn read_dir_sorted(dir: &Path) -> anyhow::Result<BTreeMap<OsString, (PathBuf, Metadata)>> {
    let mut entries = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).with_context(|| path.display().to_string())?;
        entries.insert(entry.file_name(), (path, meta));
    }
    Ok(entries)
}

/// Size, content, mtime and permission differences of two regular files.
fn file_diffs(
    exp_path: &Path,
    exp: &Metadata,
    act_path: &Path,
    act: &Metadata,
    rel: &Path,
    diffs: &mut Diffs,
) -> anyhow::Result<()> {
    let label = if rel.as_os_str().is_empty() {
        String::new()
    } else {
        format!("{}: ", rel.display())
    };
    if exp.len() != act.len() {
        diffs.push(format!(
            "{label}size: expected {}, actual {}",
            exp.len(),
            act.len()
        ));
    }
    if let Some(offset) = first_difference(exp_path, act_path)? {
        diffs.push(format!("{label}content differs from byte {offset}"));
    }
    if exp.mtime() != act.mtime() {
        diffs.push(format!(
            "{label}mtime: expected {}, actual {}",
            exp.mtime(),
            act.mtime()
        ));
    }
    let (exp_mode, act_mode) = (
        exp.permissions().mode() & 0o777,
        act.permissions().mode() & 0o777,
    );
    if exp_mode != act_mode {
        diffs.push(format!(
            "{label}mode: expected {exp_mode:04o}, actual {act_mode:04o}"
        ));
    }
    Ok(())
}

/// Offset of the first byte where the two files differ (a shorter file differs at its end),
/// or `None` if their contents are equal. Reads both in [`CHUNK`]-sized pieces.
fn first_difference(a: &Path, b: &Path) -> anyhow::Result<Option<u64>> {
    let mut fa = File::open(a).with_context(|| format!("opening {}", a.display()))?;
    let mut fb = File::open(b).with_context(|| format!("opening {}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).with_context(|| format!("reading {}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).with_context(|| format!("reading {}", b.display()))?;
        let common = na.min(nb);
        if let Some(i) = ba[..common]
            .iter()
            .zip(&bb[..common])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + i as u64));
        }
        if na != nb {
            return Ok(Some(offset + common as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Read until `buf` is full or end of file; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn kind_name(t: FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "char device"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests;
