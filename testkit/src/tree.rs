//! Looking at a destination after a pull: every path in it, leftover temp
//! files, and partial data kept for resume.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::Context as _;

/// The directory `FsSink` keeps interrupted files in (`rsync_proto::client::PARTIAL_DIR`;
/// the interop tests check the two agree).
pub const PARTIAL_DIR: &str = ".ubackup-partial";

/// Every path under `root`, relative and sorted, symlinks not followed; empty if `root`
/// does not exist.
pub fn list_tree(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            }
            out.insert(rel);
        }
    }
    Ok(out)
}

/// True for a relative path inside (or naming) a partial directory.
pub fn in_partial_dir(rel: &str) -> bool {
    rel.split('/').any(|c| c == PARTIAL_DIR)
}

/// Names under `root` that look like temp files (`.NAME.XXXXXX`), outside the partial
/// directory (where interrupted files are kept on purpose).
pub fn temp_files(root: &Path) -> anyhow::Result<Vec<String>> {
    Ok(list_tree(root)?
        .into_iter()
        .filter(|rel| !in_partial_dir(rel))
        .filter(|rel| {
            rel.rsplit('/')
                .next()
                .is_some_and(|leaf| leaf.starts_with('.'))
        })
        .collect())
}

/// Every file kept in a partial directory under `dest` is a non-empty prefix of the
/// source file of the same name under `src` (what arrived before the interruption,
/// nothing else). Returns how many there are.
pub fn check_partials_are_prefixes(src: &Path, dest: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for rel in list_tree(dest)? {
        if !in_partial_dir(&rel) || rel.ends_with(PARTIAL_DIR) {
            continue;
        }
        let original: String = rel
            .split('/')
            .filter(|c| *c != PARTIAL_DIR)
            .collect::<Vec<_>>()
            .join("/");
        let kept = fs::read(dest.join(&rel))?;
        let full = fs::read(src.join(&original))?;
        anyhow::ensure!(!kept.is_empty(), "{rel}: empty partial file kept");
        anyhow::ensure!(
            full.starts_with(&kept),
            "{rel}: partial data ({} bytes) is not a prefix of {original}",
            kept.len()
        );
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_temp_files_but_not_partial_data() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sub").join(PARTIAL_DIR)).unwrap();
        fs::write(d.path().join("sub/.a.bin.abc123"), b"x").unwrap();
        fs::write(d.path().join("sub").join(PARTIAL_DIR).join("a.bin"), b"ab").unwrap();
        fs::write(d.path().join("sub/b.bin"), b"b").unwrap();
        assert_eq!(
            temp_files(d.path()).unwrap(),
            vec!["sub/.a.bin.abc123".to_string()]
        );
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("sub")).unwrap();
        fs::write(src.path().join("sub/a.bin"), b"abc").unwrap();
        assert_eq!(
            check_partials_are_prefixes(src.path(), d.path()).unwrap(),
            1
        );
        fs::write(src.path().join("sub/a.bin"), b"xyz").unwrap();
        assert!(check_partials_are_prefixes(src.path(), d.path()).is_err());
        assert!(list_tree(&d.path().join("missing")).unwrap().is_empty());
    }
}
