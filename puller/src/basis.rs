//! The node's record of the last successful backup of each (server_id, back_type, instance),
//! used as the delta basis of the next one: consecutive dumps of one database share most of
//! their blocks even though each has a new name.
//!
//! One small file per instance under `<root>/.ubackup-state/basis/`, named by a hash of the
//! key and holding the backup's path. It is a hint, not a catalog: a missing or stale entry
//! only costs a whole-file pull, so it is replaced atomically but not fsynced.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// The state directory under the backup root (the destination template cannot reach it: no
/// value from a message may start with a dot).
pub const STATE_DIR: &str = ".ubackup-state";

fn entry(root: &Path, key: &str) -> PathBuf {
    let h = sha2::Sha256::digest(key.as_bytes());
    let name: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    root.join(STATE_DIR).join("basis").join(name)
}

/// The previous backup for `key`, if it is still there as a regular file.
pub fn lookup(root: &Path, key: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(entry(root, key)).ok()?;
    let p = PathBuf::from(text.trim_end_matches('\n'));
    std::fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| p)
}

/// Records `path` as the latest backup for `key`. Failures are logged, never fatal.
pub fn record(root: &Path, key: &str, path: &Path) {
    let target = entry(root, key);
    let write = || -> std::io::Result<()> {
        let dir = target.parent().unwrap_or(root);
        std::fs::create_dir_all(dir)?;
        let tmp = dir
            .join(format!(".tmp.{}", std::process::id()))
            .with_extension(format!("{}", rand::random::<u32>()));
        std::fs::write(&tmp, format!("{}\n", path.display()))?;
        std::fs::rename(&tmp, &target)
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
        std::fs::remove_file(&f).unwrap();
        assert_eq!(
            lookup(d.path(), "S1\nmysql\n3306"),
            None,
            "a vanished basis is no basis"
        );
    }
}
