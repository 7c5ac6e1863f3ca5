use std::os::unix::fs::symlink;

use super::*;
use crate::{set_mtime, write_random_file};

/// Two identical 3 MiB + 5 byte files (`a`, `b`) in a fresh temp dir.
fn twin_files() -> anyhow::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for p in [&a, &b] {
        write_random_file(p, 3 * CHUNK as u64 + 5, 99)?;
        fs::set_permissions(p, fs::Permissions::from_mode(0o640))?;
        set_mtime(p, 1_700_000_000)?;
    }
    Ok((dir, a, b))
}

fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut byte)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&[byte[0] ^ 0x01])?;
    Ok(())
}

fn err_text(r: anyhow::Result<()>) -> String {
    match r {
        Ok(()) => panic!("expected a difference, got Ok"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn accepts_identical_files() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    compare_files(&a, &b)
}

#[test]
fn detects_one_byte_difference() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    let offset = 2 * CHUNK as u64 + 12_345;
    flip_byte(&b, offset)?;
    set_mtime(&b, 1_700_000_000)?;
    let msg = err_text(compare_files(&a, &b));
    assert!(
        msg.contains(&format!("content differs from byte {offset}")),
        "{msg}"
    );
    Ok(())
}

#[test]
fn detects_difference_in_last_byte() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    flip_byte(&b, 3 * CHUNK as u64 + 4)?;
    set_mtime(&b, 1_700_000_000)?;
    assert!(compare_files(&a, &b).is_err());
    Ok(())
}

#[test]
fn detects_truncated_file() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    fs::OpenOptions::new()
        .write(true)
        .open(&b)?
        .set_len(CHUNK as u64)?;
    set_mtime(&b, 1_700_000_000)?;
    let msg = err_text(compare_files(&a, &b));
    assert!(msg.contains("size: expected"), "{msg}");
    assert!(
        msg.contains(&format!("content differs from byte {CHUNK}")),
        "{msg}"
    );
    Ok(())
}

#[test]
fn detects_mtime_difference() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    set_mtime(&b, 1_700_000_001)?;
    let msg = err_text(compare_files(&a, &b));
    assert!(
        msg.contains("mtime: expected 1700000000, actual 1700000001"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn detects_mode_difference() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_files()?;
    fs::set_permissions(&b, fs::Permissions::from_mode(0o644))?;
    let msg = err_text(compare_files(&a, &b));
    assert!(msg.contains("mode: expected 0640, actual 0644"), "{msg}");
    Ok(())
}

#[test]
fn rejects_symlink_in_place_of_file() -> anyhow::Result<()> {
    let (dir, a, _b) = twin_files()?;
    let link = dir.path().join("link");
    symlink(&a, &link)?;
    let msg = err_text(compare_files(&a, &link));
    assert!(msg.contains("actual symlink"), "{msg}");
    Ok(())
}

/// A small tree with a file, a nested dir, a symlink and an empty dir.
fn small_tree(root: &Path) -> anyhow::Result<()> {
    write_random_file(&root.join("top.bin"), 100, 1)?;
    write_random_file(&root.join("sub dir/ünï.dat"), 50, 2)?;
    fs::create_dir(root.join("empty"))?;
    symlink("sub dir/ünï.dat", root.join("link"))?;
    for p in ["top.bin", "sub dir/ünï.dat"] {
        set_mtime(&root.join(p), 1_600_000_000)?;
    }
    Ok(())
}

fn twin_trees() -> anyhow::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    small_tree(&a)?;
    small_tree(&b)?;
    Ok((dir, a, b))
}

#[test]
fn accepts_identical_trees() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_trees()?;
    compare_trees(&a, &b)
}

#[test]
fn detects_missing_and_extra_entries() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_trees()?;
    fs::remove_file(b.join("sub dir/ünï.dat"))?;
    write_random_file(&b.join("empty/new"), 1, 1)?;
    let msg = err_text(compare_trees(&a, &b));
    assert!(msg.contains("sub dir/ünï.dat: missing"), "{msg}");
    assert!(msg.contains("empty/new: unexpected extra entry"), "{msg}");
    Ok(())
}

#[test]
fn detects_changed_file_deep_in_tree() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_trees()?;
    flip_byte(&b.join("sub dir/ünï.dat"), 0)?;
    set_mtime(&b.join("sub dir/ünï.dat"), 1_600_000_000)?;
    let msg = err_text(compare_trees(&a, &b));
    assert!(
        msg.contains("sub dir/ünï.dat: content differs from byte 0"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn detects_symlink_target_change_without_following_it() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_trees()?;
    fs::remove_file(b.join("link"))?;
    symlink("top.bin", b.join("link"))?;
    let msg = err_text(compare_trees(&a, &b));
    assert!(msg.contains("link: symlink target"), "{msg}");
    Ok(())
}

#[test]
fn detects_kind_change() -> anyhow::Result<()> {
    let (_dir, a, b) = twin_trees()?;
    fs::remove_dir(b.join("empty"))?;
    fs::write(b.join("empty"), b"")?;
    let msg = err_text(compare_trees(&a, &b));
    assert!(
        msg.contains("empty: expected directory, actual regular file"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn lists_at_most_twenty_differences() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(&b)?;
    for i in 0..50 {
        write_random_file(&a.join(format!("f{i:02}")), 1, i)?;
    }
    let msg = err_text(compare_trees(&a, &b));
    assert_eq!(msg.matches(": missing").count(), MAX_DIFFS, "{msg}");
    assert!(msg.contains("first 20 differences"), "{msg}");
    Ok(())
}
