//! Commit: fsync and rename into place, small-file batches with one `syncfs`,
//! and the partial directory for interrupted files.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::walk::open_or_make_dir;
use super::write::{Fate, OpenFile};
use super::{FsSink, MAX_PENDING_COMMITS};
use crate::flist::FileEntry;

/// Moves temp file `tmp` of `name` into the partial directory `dir` of `parent`.
pub(super) fn move_to_partial(
    parent: &OwnedFd,
    dir: &OsString,
    tmp: &OsString,
    name: &OsString,
) -> io::Result<()> {
    let (pd, _) = open_or_make_dir(parent, dir.as_bytes())?;
    rustix::fs::renameat(parent, tmp.as_os_str(), &pd, name.as_os_str())?;
    Ok(())
}

/// A verified file waiting, closed, under its temp name for its batch's commit
/// ([`commit_batch`]). Its data, mode and times are written; what it lacks is
/// durability and its final name. Dropped uncommitted (the pull failed or was
/// cancelled), it is kept as partial data: complete, so the next pull matches all
/// of it.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) parent: Arc<OwnedFd>,
    pub(super) tmp: OsString,
    pub(super) name: OsString,
    pub(super) label: String,
    pub(super) partial_dir: Option<OsString>,
    pub(super) clear_partial: bool,
    pub(super) committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let kept = match &self.partial_dir {
            Some(pd) => move_to_partial(&self.parent, pd, &self.tmp, &self.name).is_ok(),
            None => false,
        };
        if !kept {
            let _ = rustix::fs::unlinkat(&*self.parent, self.tmp.as_os_str(), AtFlags::empty());
        }
    }
}

impl FsSink {
    pub(super) async fn wait_commits(&mut self, down_to: usize) -> io::Result<()> {
        while self.commits.len() > down_to {
            match self.commits.join_next().await {
                Some(Ok(r)) => r?,
                Some(Err(join)) => return Err(io::Error::other(join)),
                None => break,
            }
        }
        Ok(())
    }

    /// Hands the staged files to one blocking task that commits them together.
    pub(super) async fn flush_batch(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        let root = self.root()?.clone();
        self.wait_commits(MAX_PENDING_COMMITS - 1).await?;
        self.commits
            .spawn_blocking(move || commit_batch(&root, batch));
        Ok(())
    }
}

/// Mode and times, then fsync, then the atomic rename into place; then
/// the partial file it may have started from is removed. If anything fails
/// (or the task is cancelled), dropping `f` keeps the data as a partial file.
/// With `sync_parent`, the directory is fsynced last, so that the rename is
/// durable when this returns (otherwise [`FsSink::finish`] does it).
pub(super) fn commit(mut f: OpenFile, sync_parent: bool) -> io::Result<()> {
    let result = (|| -> io::Result<()> {
        f.file.flush()?;
        f.release_unused();
        let file = f.file.get_ref();
        // Mode and times before the fsync, so that they are durable with the data (set
        // after it, they could be lost in a crash after the rename).
        rustix::fs::fchmod(file, Mode::from_raw_mode(f.entry.permissions() & 0o777))?;
        rustix::fs::futimens(file, &timestamps(&f.entry))?;
        file.sync_all()?;
        rustix::fs::renameat(
            &*f.parent,
            f.tmp.as_os_str(),
            &*f.parent,
            f.name.as_os_str(),
        )?;
        Ok(())
    })();
    if result.is_ok() {
        f.fate = Fate::Committed;
        if let (true, Some(pd)) = (f.clear_partial, &f.partial_dir) {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            if let Ok(pdfd) = rustix::fs::openat(&*f.parent, pd.as_os_str(), flags, Mode::empty()) {
                let _ = rustix::fs::unlinkat(&pdfd, f.name.as_os_str(), AtFlags::empty());
                drop(pdfd);
                let _ = rustix::fs::unlinkat(&*f.parent, pd.as_os_str(), AtFlags::REMOVEDIR);
            }
        }
    }
    let result = result.and_then(|()| {
        if sync_parent {
            rustix::fs::fsync(&*f.parent)?;
        }
        Ok(())
    });
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.entry.name_lossy())))
}

/// Finishes a verified small file for a batch: its data written out of our
/// buffer, unused reservation freed, mode and times set, the descriptor closed.
/// Durability and the final name come with its batch ([`commit_batch`]).
pub(super) fn stage(mut f: OpenFile) -> io::Result<Staged> {
    let result = (|| -> io::Result<()> {
        f.file.flush()?;
        f.release_unused();
        let file = f.file.get_ref();
        rustix::fs::fchmod(file, Mode::from_raw_mode(f.entry.permissions() & 0o777))?;
        rustix::fs::futimens(file, &timestamps(&f.entry))?;
        Ok(())
    })();
    if let Err(e) = result {
        return Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", f.entry.name_lossy()),
        ));
    }
    // From here the Staged value owns the temp file.
    f.fate = Fate::Committed;
    Ok(Staged {
        parent: f.parent.clone(),
        tmp: f.tmp.clone(),
        name: f.name.clone(),
        label: f.entry.name_lossy(),
        partial_dir: f.partial_dir.clone(),
        clear_partial: f.clear_partial,
        committed: false,
    })
}

/// Commits a batch of staged files with one flush instead of one fsync each:
/// `syncfs` writes and waits for every staged file's data and inode (and flushes
/// the disk cache), then each file is renamed into place; [`FsSink::finish`]
/// fsyncs the directories that received renames, as for single commits. So a
/// file still appears under its final name only with its data durable, and the
/// pull reports success only after the renames are durable. `syncfs` also
/// returns any writeback error on this filesystem since the root was opened
/// (Linux ≥ 5.8), so a failed write of a staged file fails the batch. The cost:
/// it also writes other dirty data of the same filesystem, which on a backup
/// node is other pulls' data that is about to be fsynced anyway.
///
/// A destination tree may span filesystems (a mount point inside it): one `syncfs`
/// per filesystem the batch's directories are on.
pub(super) fn commit_batch(root: &OwnedFd, batch: Vec<Staged>) -> io::Result<()> {
    let mut devices: Vec<u64> = vec![rustix::fs::fstat(root)?.st_dev];
    rustix::fs::syncfs(root)?;
    let mut seen: HashSet<*const OwnedFd> = HashSet::new();
    for s in &batch {
        if seen.insert(Arc::as_ptr(&s.parent)) {
            let dev = rustix::fs::fstat(&*s.parent)?.st_dev;
            if !devices.contains(&dev) {
                devices.push(dev);
                rustix::fs::syncfs(&*s.parent)?;
            }
        }
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for mut s in batch {
        rustix::fs::renameat(
            &*s.parent,
            s.tmp.as_os_str(),
            &*s.parent,
            s.name.as_os_str(),
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", s.label)))?;
        s.committed = true;
        if let (true, Some(pd)) = (s.clear_partial, &s.partial_dir) {
            if let Ok(pdfd) = rustix::fs::openat(&*s.parent, pd.as_os_str(), flags, Mode::empty()) {
                let _ = rustix::fs::unlinkat(&pdfd, s.name.as_os_str(), AtFlags::empty());
                drop(pdfd);
                let _ = rustix::fs::unlinkat(&*s.parent, pd.as_os_str(), AtFlags::REMOVEDIR);
            }
        }
    }
    Ok(())
}

pub(super) fn timestamps(e: &FileEntry) -> Timestamps {
    let mtime = Timespec {
        tv_sec: e.mtime,
        tv_nsec: i64::from(e.mtime_nsec) as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}
