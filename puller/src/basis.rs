//! The node's record of the last successful backup of each (server_id, back_type, instance),
//! used as the delta basis of the next one: consecutive dumps of one database share most of
//! their blocks even though each has a new name.
//!
//! One small file per instance under `<root>/.ubackup-state/basis/`, named by a hash of the
//! key and holding the backup's path. It is a hint, not a catalog: a missing or stale entry
//! only costs a whole-file pull, so it is rewritten in place (see [`record`]) and not fsynced.

use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

/// The state directory under the backup root (the destination template cannot reach it: no
/// value from a message may start with a dot).
pub const STATE_DIR: &str = ".ubackup-state";

fn entry(root: &Path, key: &str) -> PathBuf {
    let h = sha2::Sha256::digest(key.as_bytes());
    let name = hex::encode(h.get(..16).unwrap_or_default());
    root.join(STATE_DIR).join("basis").join(name)
}

/// The previous backup for `key`, if it is still there as a regular file. Only an absolute
/// path without `..` is taken (the node writes no other kind; a destination template may
/// lie outside the root).
pub fn lookup(root: &Path, key: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(entry(root, key)).ok()?;
    let p = PathBuf::from(text.lines().next()?);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    std::fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| p)
}

/// Records `path` as the latest backup for `key`. Failures are logged, never fatal.
///
/// The entry is overwritten in place (write, then truncate to the new length): no new
/// inode and no rename per backup. A temp file renamed over the entry cost every job an
/// inode allocation and a freed inode in the one shared state directory, under that
/// directory's lock: 12 % of the node's CPU and 6 % of its context switches in the burst
/// bench (`perf record`). A torn entry (a crash mid-write, or a lookup racing the write)
/// can only name a path that is not a regular file, or another backup of the node's own:
/// either costs a whole-file pull or a weaker delta, never a wrong file,
/// since every pulled file is verified against the sender's whole-file checksum.
pub fn record(root: &Path, key: &str, path: &Path) {
    let target = entry(root, key);
    let text = format!("{}\n", path.display());
    let write = || -> std::io::Result<()> {
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                // The entry is ours: a symlink put in its place is not followed.
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&target)
        };
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(target.parent().unwrap_or(root))?;
                open()?
            }
            r => r?,
        };
        file.write_all_at(text.as_bytes(), 0)?;
        file.set_len(text.len() as u64)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot record the basis for the next backup: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_finds_the_previous_backup() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("mysql/10.0.0/1/dump-1.sql");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(lookup(d.path(), "S1\nmysql\n3306"), None);
        record(d.path(), "S1\nmysql\n3306", &f);
        assert_eq!(lookup(d.path(), "S1\nmysql\n3306"), Some(f.clone()));
        assert_eq!(lookup(d.path(), "S1\nmysql\n3307"), None);
        // A shorter path over a longer one: the entry is rewritten in place and truncated.
        let g = d.path().join("mysql/10.0.0/1/d-2.sql");
        std::fs::write(&g, b"y").unwrap();
        record(d.path(), "S1\nmysql\n3306", &g);
        assert_eq!(lookup(d.path(), "S1\nmysql\n3306"), Some(g.clone()));
        std::fs::remove_file(&g).unwrap();
        assert_eq!(
            lookup(d.path(), "S1\nmysql\n3306"),
            None,
            "a vanished basis is no basis"
        );
    }

    #[test]
    fn only_an_absolute_path_without_parent_components_is_a_basis() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        let f = root.join("a.sql");
        std::fs::write(&f, b"x").unwrap();
        record(&root, "k", &root.join("a/../a.sql"));
        assert!(entry(&root, "k").is_file(), "the entry was written");
        assert_eq!(lookup(&root, "k"), None);
        record(&root, "k", Path::new("root/a.sql"));
        assert_eq!(lookup(&root, "k"), None);
        record(&root, "k", &f);
        assert_eq!(lookup(&root, "k"), Some(f));
    }
}
