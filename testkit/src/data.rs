//! Deterministic test data: every helper derives its bytes, names and times from a seed
//! (`StdRng::seed_from_u64`), so a failing test reproduces byte for byte.

use std::fs::{self, File, FileTimes};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

/// Size of the chunks [`write_random_file`] generates and writes.
const CHUNK: usize = 1 << 20;

/// Write `size` pseudo-random bytes derived from `seed` to `path`, creating parent dirs.
///
/// The bytes are generated and written in 1 MiB chunks, so multi-GiB files cost no memory.
/// The same `(size, seed)` always yields the same bytes.
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; usize::try_from(size).map_or(CHUNK, |s| s.min(CHUNK))];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Set the modification time of `path` (a file or a directory, symlinks followed) to `secs`
/// seconds since the Unix epoch (negative = before it). The access time is left alone.
pub fn set_mtime(path: &Path, secs: i64) -> anyhow::Result<()> {
    let offset = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
    .with_context(|| format!("mtime {secs} out of range"))?;
    // futimens(2) on a read-only descriptor is enough: it needs ownership, not write access.
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.set_times(FileTimes::new().set_modified(time))
        .with_context(|| format!("setting mtime of {}", path.display()))
}

/// Maximum directory depth below the root that [`make_tree`] creates.
const MAX_DEPTH: usize = 4;
/// Files [`make_tree`] puts in one directory before it opens another.
const FILES_PER_DIR: usize = 20;
/// Largest file [`make_tree`] writes.
const MAX_SMALL_FILE: u64 = 4096;

/// Fill `root` with `files` small files (0..=4096 bytes, random sizes) spread over nested
/// directories up to depth 4, about 20 files per directory, and return their total size.
///
/// Names mix plain ASCII, spaces and UTF-8 (`"ünïcødé файл 3.dat"`); file modes vary among
/// 0644, 0600, 0640 and 0755; file and directory mtimes vary from 1970 to 2033. `root` is
/// created if needed; its own mtime and mode are left alone. Same `(files, seed)`, same tree.
pub fn make_tree(root: &Path, files: usize, seed: u64) -> anyhow::Result<u64> {
    const MODES: [u32; 4] = [0o644, 0o600, 0o640, 0o755];
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // (path, depth); root stays first and is never touched afterwards.
    let mut dirs: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    let mut current = 0;
    let mut total = 0u64;
    for i in 0..files {
        if i > 0 && i % FILES_PER_DIR == 0 {
            let parents: Vec<usize> = (0..dirs.len()).filter(|&d| dirs[d].1 < MAX_DEPTH).collect();
            let parent = parents[rng.gen_range(0..parents.len())];
            let name = match rng.gen_range(0..3) {
                0 => format!("dir{i}"),
                1 => format!("sub dir {i}"),
                _ => format!("verzeichnis ß каталог {i}"),
            };
            let path = dirs[parent].0.join(name);
            fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
            dirs.push((path, dirs[parent].1 + 1));
            current = dirs.len() - 1;
        }
        let name = match rng.gen_range(0..4) {
            0 => format!("file{i}.bin"),
            1 => format!("file with spaces {i}.txt"),
            2 => format!("ünïcødé файл {i}.dat"),
            _ => format!(".hidden-{i}"),
        };
        let path = dirs[current].0.join(name);
        let size = rng.gen_range(0..=MAX_SMALL_FILE);
        write_random_file(&path, size, rng.next_u64())?;
        let mode = MODES[rng.gen_range(0..MODES.len())];
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        set_mtime(&path, random_mtime(&mut rng))?;
        total += size;
    }
    // Directory mtimes last: creating entries bumps them. Deepest first is not needed (setting
    // a child's mtime does not touch its parent), but skip the root.
    for (dir, _) in &dirs[1..] {
        set_mtime(dir, random_mtime(&mut rng))?;
    }
    Ok(total)
}

/// An mtime for [`make_tree`]: mostly recent, some at the epoch, some in the future.
fn random_mtime(rng: &mut StdRng) -> i64 {
    match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(1..1_000_000_000),
        2 => rng.gen_range(1_800_000_000..2_000_000_000),
        _ => rng.gen_range(1_500_000_000..1_750_000_000),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn random_file_has_size_and_depends_only_on_seed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let size = 3 * CHUNK as u64 + 17;
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("x/y/b"),
            dir.path().join("c"),
        );
        write_random_file(&a, size, 7)?;
        write_random_file(&b, size, 7)?;
        write_random_file(&c, size, 8)?;
        let (a, b, c) = (fs::read(a)?, fs::read(b)?, fs::read(c)?);
        assert_eq!(a.len() as u64, size);
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn random_file_of_zero_bytes_is_empty() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("empty");
        write_random_file(&path, 0, 1)?;
        assert_eq!(fs::metadata(&path)?.len(), 0);
        Ok(())
    }

    #[test]
    fn sets_mtime_of_files_and_dirs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f");
        write_random_file(&file, 10, 1)?;
        set_mtime(&file, 1_234_567_890)?;
        set_mtime(dir.path(), -86_400)?;
        assert_eq!(fs::metadata(&file)?.mtime(), 1_234_567_890);
        assert_eq!(fs::metadata(dir.path())?.mtime(), -86_400);
        Ok(())
    }

    #[test]
    fn tree_is_deterministic_and_reports_its_size() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let total = make_tree(&a, 150, 42)?;
        assert_eq!(make_tree(&b, 150, 42)?, total);
        crate::compare_trees(&a, &b)?;

        let (mut files, mut bytes, mut max_depth, mut unicode) = (0, 0, 0, false);
        let mut stack = vec![(a.clone(), 0)];
        while let Some((d, depth)) = stack.pop() {
            max_depth = max_depth.max(depth);
            for e in fs::read_dir(&d)? {
                let e = e?;
                let m = e.metadata()?;
                unicode |= e.file_name().to_str().is_some_and(|n| !n.is_ascii());
                if m.is_dir() {
                    stack.push((e.path(), depth + 1));
                } else {
                    files += 1;
                    bytes += m.len();
                }
            }
        }
        assert_eq!(files, 150);
        assert_eq!(bytes, total);
        assert!((1..=MAX_DEPTH).contains(&max_depth), "depth {max_depth}");
        assert!(unicode);
        Ok(())
    }

    #[test]
    fn different_seeds_give_different_trees() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        make_tree(&a, 30, 1)?;
        make_tree(&b, 30, 2)?;
        assert!(crate::compare_trees(&a, &b).is_err());
        Ok(())
    }
}
