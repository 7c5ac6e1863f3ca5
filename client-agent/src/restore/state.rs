//! The restore's staging directory in the target: `<DIR>/.ubackup-restore/`, holding the
//! files pulled so far under their own names (each complete and verified), the partial data
//! of an interrupted file (`.ubackup-partial/`), FsSink's temp files, a lock, and a small
//! state file naming the files already verified against the catalog.
//!
//! Nothing appears under a final name in `<DIR>` before every file of the plan has been
//! verified; then each is renamed into place (same file system: atomic), and the staging
//! directory goes away.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The staging directory's name in the target.
pub const STAGING_DIR: &str = ".ubackup-restore";
/// The state file's name in the staging directory.
const STATE_FILE: &str = "state.json";
/// The lock file's name.
const LOCK_FILE: &str = "lock";
/// Largest state file read.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// What is durable about a restore in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Files verified against the catalog: leaf name → checksum (`algo:hex`).
    pub verified: BTreeMap<String, String>,
}

/// The staging directory, locked for this process.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    _lock: File,
}

impl Staging {
    /// Creates (or reopens, to resume) `<target>/.ubackup-restore` and locks it; another
    /// restore into the same target fails here.
    pub fn open(target: &Path) -> io::Result<Staging> {
        std::fs::create_dir_all(target)?;
        let dir = target.join(STAGING_DIR);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !std::fs::symlink_metadata(&dir)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("another restore is writing into {}", target.display()),
                )
            },
        )?;
        Ok(Staging { dir, _lock: lock })
    }

    /// The directory files are pulled into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state left by an interrupted restore (empty when none or unreadable: then every
    /// staged file is checked again).
    pub fn load(&self) -> State {
        let path = self.dir.join(STATE_FILE);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() <= MAX_STATE_BYTES => {}
            _ => return State::default(),
        }
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes `state` durably (temp file, fsync, rename, directory fsync).
    pub fn save(&self, state: &State) -> io::Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(state).map_err(io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        sync_dir(&self.dir)
    }

    /// Removes the staging directory after a completed restore: the state, the lock, and
    /// any leftover partial or temp file.
    pub fn remove(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

/// fsyncs a directory, so that renames into it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
