//! The durable spool: jobs that could not be pushed wait here, in order, until Redis takes
//! them.
//!
//! One file per job, `<seq>.job` with a 20-digit sequence number: line 1 is the list name,
//! the rest the message. Each is written to a temp name, fsynced, renamed and the directory
//! fsynced before the run goes on, so a crash never loses a spooled job. A job's file is
//! removed only after Redis acknowledged the push; a crash between the two re-sends it (v1
//! jobs carry a stable job id, which the node treats as idempotent).
//!
//! The spool is bounded ([`Spool::max`] jobs). When it is full a new job is refused, the
//! oldest are kept, and the caller reports it loudly.
//!
//! All access is under an exclusive `flock` on `.lock`, so two agent processes (cron `once`
//! and `run`) never deliver the same file twice or out of order.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Largest spooled job read back (a job is a few hundred bytes).
const MAX_ENTRY_BYTES: u64 = 128 * 1024;

/// A spooled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    /// Sequence number (delivery order).
    pub seq: u64,
    /// The list to push onto.
    pub list: String,
    /// The message.
    pub payload: String,
}

/// Why a job could not be spooled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool holds `max` jobs already.
    #[error(
        "the spool is full ({depth} jobs, limit {max}): the oldest jobs are kept, this one is not"
    )]
    Full {
        /// Jobs in the spool.
        depth: usize,
        /// The bound.
        max: usize,
    },
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
    inproc: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The spool's lock, held while appending or delivering.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
    _inproc: tokio::sync::OwnedMutexGuard<()>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// The spool under `state_dir/spool` holding at most `max` jobs.
    pub fn open(state_dir: &Path, max: usize) -> Result<Spool, SpoolError> {
        let dir = state_dir.join("spool");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Spool {
            dir,
            max,
            inproc: Default::default(),
        })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the lock: this process's tasks in turn, then the `flock` shared with other
    /// agent processes (whose holders only do short file work and bounded pushes).
    pub async fn lock(&self) -> Result<SpoolLock, SpoolError> {
        let guard = self.inproc.clone().lock_owned().await;
        let p = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        let locked = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map(|()| f)
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: p.clone(),
            source: std::io::Error::other(e),
        })?;
        let f = locked.map_err(|e| SpoolError::Io {
            path: p.clone(),
            source: e.into(),
        })?;
        Ok(SpoolLock {
            _file: f,
            _inproc: guard,
        })
    }

    /// How many jobs wait, counted without the lock (for status and heartbeats: a delivery
    /// running at the same time may make it one or two off).
    pub fn depth(&self) -> Result<usize, SpoolError> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if e.file_name().to_string_lossy().ends_with(".job") {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sequence numbers of the spooled jobs, oldest first.
    pub fn seqs(&self, _lock: &SpoolLock) -> Result<Vec<u64>, SpoolError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".job")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.job"))
    }

    /// Appends a job durably; returns the new depth.
    pub fn append(&self, lock: &SpoolLock, list: &str, payload: &str) -> Result<usize, SpoolError> {
        let seqs = self.seqs(lock)?;
        if seqs.len() >= self.max {
            return Err(SpoolError::Full {
                depth: seqs.len(),
                max: self.max,
            });
        }
        let seq = seqs.last().map_or(1, |s| s + 1);
        let path = self.path(seq);
        let tmp = self.dir.join(format!(".{seq:020}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(list.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.write_all(payload.as_bytes()))
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(seqs.len() + 1)
    }

    /// Reads a spooled job. A damaged file (no list line) is returned as an error so the
    /// caller can set it aside instead of blocking everything behind it.
    pub fn read(&self, _lock: &SpoolLock, seq: u64) -> Result<SpoolEntry, SpoolError> {
        let path = self.path(seq);
        let f = File::open(&path).map_err(io(&path))?;
        let mut buf = Vec::new();
        f.take(MAX_ENTRY_BYTES)
            .read_to_end(&mut buf)
            .map_err(io(&path))?;
        let text = String::from_utf8(buf).map_err(|e| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        match text.split_once('\n') {
            Some((list, payload)) if !list.is_empty() && !payload.is_empty() => Ok(SpoolEntry {
                seq,
                list: list.to_string(),
                payload: payload.to_string(),
            }),
            _ => Err(SpoolError::Io {
                path,
                source: std::io::Error::other("damaged spool file (no list line or no message)"),
            }),
        }
    }

    /// Removes a delivered job.
    pub fn remove(&self, _lock: &SpoolLock, seq: u64) -> Result<(), SpoolError> {
        let p = self.path(seq);
        std::fs::remove_file(&p).map_err(io(&p))
    }

    /// Moves a damaged job out of the delivery order (kept for an operator as `.bad`).
    pub fn set_aside(&self, _lock: &SpoolLock, seq: u64) -> Result<(), SpoolError> {
        let p = self.path(seq);
        let to = self.dir.join(format!("{seq:020}.bad"));
        std::fs::rename(&p, &to).map_err(io(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_and_bound() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 3).unwrap();
        let l = s.lock().await.unwrap();
        for i in 0..3 {
            assert_eq!(s.append(&l, "q", &format!("{{\"n\":{i}}}")).unwrap(), i + 1);
        }
        assert!(matches!(
            s.append(&l, "q", "x"),
            Err(SpoolError::Full { depth: 3, max: 3 })
        ));
        let seqs = s.seqs(&l).unwrap();
        assert_eq!(s.read(&l, seqs[0]).unwrap().payload, "{\"n\":0}");
        s.remove(&l, seqs[0]).unwrap();
        s.append(&l, "q", "{\"n\":3}").unwrap();
        let payloads: Vec<String> = s
            .seqs(&l)
            .unwrap()
            .into_iter()
            .map(|q| s.read(&l, q).unwrap().payload)
            .collect();
        assert_eq!(payloads, ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    }
}
