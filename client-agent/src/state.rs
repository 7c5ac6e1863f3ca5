//! The agent's small durable state per instance: the chain record (the last full and the
//! previous incremental) and the last run with its outcome, one JSON file per instance under
//! `<state_dir>/instances/`, replaced atomically (temp file, fsync, rename, fsync dir).
//!
//! A per-instance lock file (`flock`) keeps two agents (a cron `once` and a `run`, or two
//! overlapping cron runs) from running the same instance at once.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest state file read.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// One backup in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRef {
    /// Name relative to back_dir.
    pub filename: String,
    /// Start of the run that made it, epoch ms.
    pub time_ms: i64,
    /// Size in bytes.
    pub size: u64,
    /// `ALGO:HEX`, when hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The last run of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run start, epoch ms.
    pub start_ms: i64,
    /// Run end, epoch ms.
    pub end_ms: i64,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The message's log text.
    pub log: String,
    /// The backup file, if one was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// How the job left the agent: `pushed`, `spooled` or `dropped`.
    #[serde(default)]
    pub delivery: String,
}

/// Everything kept for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// The last full backup.
    #[serde(default)]
    pub full: Option<BackupRef>,
    /// The last incremental since that full (the base of the next one in an
    /// incremental-on-incremental chain).
    #[serde(default)]
    pub prev_incremental: Option<BackupRef>,
    /// The last run.
    #[serde(default)]
    pub last_run: Option<RunRecord>,
}

/// Writes `bytes` to `path` atomically, and durably when `durable` (fsync of the file before
/// the rename and of the directory after it).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The state files of one agent.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// An exclusive hold on one instance; released on drop (the lock file stays).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl StateStore {
    /// The store under `state_dir` (created when missing).
    pub fn open(state_dir: &Path) -> std::io::Result<StateStore> {
        let dir = state_dir.join("instances");
        std::fs::create_dir_all(&dir)?;
        Ok(StateStore { dir })
    }

    fn path(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{instance}.json"))
    }

    /// Reads an instance's state; a missing file is an empty state, a damaged one is an
    /// error (the caller logs it and starts a new chain rather than guessing).
    pub fn load(&self, instance: &str) -> std::io::Result<InstanceState> {
        let f = match File::open(self.path(instance)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(InstanceState::default())
            }
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        f.take(MAX_STATE_BYTES).read_to_end(&mut buf)?;
        serde_json::from_slice(&buf).map_err(std::io::Error::other)
    }

    /// Replaces an instance's state atomically. `durable` when the chain record changed
    /// (two fsyncs); a run that only updates `last_run` skips them: losing that to a crash
    /// costs at most one extra catch-up run, and fsyncs are most of a pass's wall time on a
    /// busy disk.
    pub fn save(
        &self,
        instance: &str,
        state: &InstanceState,
        durable: bool,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.path(instance), &bytes, durable)
    }

    /// Takes the instance's lock without waiting; None when another run holds it.
    pub fn try_lock(&self, instance: &str) -> std::io::Result<Option<InstanceLock>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{instance}.lock")))?;
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(InstanceLock { _file: f })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_locks() {
        let d = tempfile::tempdir().unwrap();
        let s = StateStore::open(d.path()).unwrap();
        assert_eq!(s.load("a").unwrap(), InstanceState::default());
        let st = InstanceState {
            full: Some(BackupRef {
                filename: "f".into(),
                time_ms: 1,
                size: 2,
                checksum: None,
            }),
            ..Default::default()
        };
        s.save("a", &st, true).unwrap();
        assert_eq!(s.load("a").unwrap(), st);
        let l = s.try_lock("a").unwrap();
        assert!(l.is_some());
        assert!(s.try_lock("a").unwrap().is_none());
        drop(l);
        assert!(s.try_lock("a").unwrap().is_some());
    }
}
