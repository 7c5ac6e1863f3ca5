//! A [`Sink`] that writes pulled files into a local directory.
//!
//! Guarantees:
//! * a file appears under its final name only after its whole-file checksum
//!   verified, its bytes were fsynced, and its mode and mtime were set; it is
//!   written under a temporary name (`.NAME.XXXXXX`) in its destination
//!   directory and renamed into place;
//! * nothing is written outside the destination: every path is walked from
//!   the destination's directory descriptor one component at a time with
//!   `O_NOFOLLOW`, so a symlink in the destination (planted, or received) is
//!   never followed;
//! * symlinks are created only when the pull asked for them (`-l`), and a
//!   link whose target is absolute or climbs out of the destination is
//!   refused (skipped and reported);
//! * directories are made durable (fsynced) after the renames into them;
//! * in a pull of many files, small files (under 1 MiB) are committed in batches
//!   (up to 1,024 files or 64 MiB): each is written, given its mode and times and
//!   closed under its temp name; then one `syncfs` makes the whole batch durable,
//!   the files are renamed, and the directories fsynced as above. One flush instead
//!   of one fsync and one hand-off to the blocking pool per file;
//! * a file whose transfer is interrupted (the pull fails or is cancelled)
//!   keeps its data in `.ubackup-partial/NAME` next to its destination, never
//!   under its final name; the next pull uses it as the delta basis and
//!   removes it once the file is committed (rsync's `--partial-dir`).
//!
//! Large files (1 MiB and more) get their blocks reserved when they are opened
//! (`fallocate` with `FALLOC_FL_KEEP_SIZE`; unused blocks are freed again), and every
//! 32 MiB written is handed to the kernel's writeback (`POSIX_FADV_DONTNEED`), so that
//! the disk writes overlap the transfer instead of all waiting for the final fsync. A
//! side effect worth knowing: pulled data does not stay in the page cache.
//!
//! Nothing is looked up that cannot be there: in a directory this pull created,
//! no same-name file, partial directory or stale partial is searched for, and each
//! directory's partial directory is looked for once.
//!
//! The delta basis of each file is chosen by a [`BasisPolicy`]: the file of
//! the same name already in the destination (rsync's default), one explicit
//! file, or a hook that can name any file (the previous backup of the same
//! database instance, say). A partial file from an interrupted pull wins
//! over all of them.
//!
//! Layout: this file holds [`FsSink`] and its [`Sink`] methods; `walk` the
//! destination's layout and the descriptor walk, `write` the open temp file,
//! `commit` the fsync-and-rename (single and batched) and the partial
//! directory, `basis` the basis policy; the temp names are in `client/temp.rs`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use tokio::task::JoinSet;

use self::basis::InPlace;
pub use self::basis::{BasisHook, BasisPolicy};
use self::commit::{commit, stage, timestamps, Staged};
use self::write::{preallocate, Fate, OpenFile};
use crate::client::temp::temp_name;
use crate::client::Sink;
use crate::connection::FileOutcome;
use crate::flist::{FileEntry, FileIndex, FileKind, FileList};

/// Most fsync-and-rename jobs in flight at once; they run on tokio's
/// blocking pool while the network keeps flowing.
const MAX_PENDING_COMMITS: usize = 16;
/// Write buffer per open file.
const WRITE_BUFFER: usize = 1 << 20;
/// Data handed to [`FsSink::write`] in pieces at least this large is written without
/// copying it into the file's buffer first.
const DIRECT_WRITE_MIN: usize = 64 << 10;
/// Write buffer of a file under [`PREALLOCATE_MIN`].
const SMALL_WRITE_BUFFER: usize = 128 << 10;
/// Most directory descriptors kept open for path resolution.
const MAX_CACHED_DIRS: usize = 512;
/// Files at least this large get their blocks reserved up front (see [`preallocate`]).
const PREALLOCATE_MIN: u64 = 1 << 20;
/// Written data is handed to the kernel's writeback in steps of this size.
const WRITEBACK_STEP: u64 = 32 << 20;
/// A pull of at least this many files commits its small files in batches (see
/// [`commit_batch`]); fewer files keep one fsync each.
const BATCH_MIN_FILES: usize = 16;
/// Files below this size go into a batch.
const BATCH_FILE_MAX: u64 = 1 << 20;
/// A batch is committed once it holds this many files ...
const BATCH_MAX_FILES: usize = 1024;
/// ... or this many bytes.
const BATCH_MAX_BYTES: u64 = 64 << 20;

/// Where files go, decided once the file list is known (rsync's
/// `get_local_name` rule: a single non-directory item and a destination
/// that is not an existing directory means "write the file as DEST").
#[derive(Debug)]
enum Layout {
    Tree {
        root: Arc<OwnedFd>,
    },
    SingleFile {
        parent: Arc<OwnedFd>,
        name: OsString,
    },
}

/// The default partial directory, created next to each interrupted file.
pub const PARTIAL_DIR: &str = ".ubackup-partial";

/// Writes pulled files under a destination directory. See the module docs.
#[derive(Debug)]
pub struct FsSink {
    dest: PathBuf,
    dest_wants_dir: bool,
    ignore_times: bool,
    layout: Option<Layout>,
    dirs: HashMap<Vec<u8>, Arc<OwnedFd>>,
    open: Option<OpenFile>,
    commits: JoinSet<io::Result<()>>,
    touched_dirs: HashSet<Vec<u8>>,
    refused_symlinks: Vec<String>,
    skipped_up_to_date: u64,
    committed: u64,
    policy: BasisPolicy,
    partial_dir: Option<OsString>,
    bases: HashMap<FileIndex, Arc<std::fs::File>>,
    /// The destination root did not exist before this pull.
    root_fresh: bool,
    /// Directories (relative paths) this pull created: nothing else is in them, so
    /// no same-name file, partial directory or stale partial needs looking for.
    fresh_dirs: HashSet<Vec<u8>>,
    /// Each directory's partial directory, once looked for (`None`: it has none).
    partial_dirs: HashMap<Vec<u8>, Option<Arc<OwnedFd>>>,
    /// Files the plan found absent from the destination (no same-name basis).
    absent: HashSet<FileIndex>,
    /// Commit small files in batches (a pull of many files).
    batch: bool,
    staged: Vec<Staged>,
    staged_bytes: u64,
    /// The plan wants exactly one file (a backup node's pull): its commit task also
    /// fsyncs its directory, so the pull needs one hand-off to the blocking pool
    /// instead of a commit task and then a directory fsync on the runtime's thread.
    sole_file: bool,
}

impl FsSink {
    /// A sink writing under `dest`. Like rsync, a trailing slash on `dest`
    /// means "this is a directory" even for a single-file pull. Nothing is
    /// created until the file list arrives.
    pub fn new(dest: impl Into<PathBuf>) -> io::Result<FsSink> {
        let dest = dest.into();
        let dest_wants_dir = dest.as_os_str().as_bytes().ends_with(b"/");
        Ok(FsSink {
            dest,
            dest_wants_dir,
            ignore_times: false,
            layout: None,
            dirs: HashMap::new(),
            open: None,
            commits: JoinSet::new(),
            touched_dirs: HashSet::new(),
            refused_symlinks: Vec::new(),
            skipped_up_to_date: 0,
            committed: 0,
            policy: BasisPolicy::default(),
            partial_dir: Some(OsString::from(PARTIAL_DIR)),
            bases: HashMap::new(),
            root_fresh: false,
            fresh_dirs: HashSet::new(),
            partial_dirs: HashMap::new(),
            absent: HashSet::new(),
            batch: false,
            staged: Vec::new(),
            staged_bytes: 0,
            sole_file: false,
        })
    }

    /// Chooses how delta bases are found (default: the same-name file).
    pub fn basis_policy(mut self, policy: BasisPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where interrupted files keep their data, relative to each file's
    /// directory (default `.ubackup-partial`); `None` deletes them instead.
    pub fn partial_dir(mut self, name: Option<&str>) -> Self {
        self.partial_dir = name.map(OsString::from);
        self
    }

    /// Fetch every file even when a file of the same size and mtime is
    /// already in place (rsync's `--ignore-times`). Off by default.
    pub fn ignore_times(mut self, on: bool) -> Self {
        self.ignore_times = on;
        self
    }

    /// Symlinks that were refused because their target leaves the destination.
    pub fn refused_symlinks(&self) -> &[String] {
        &self.refused_symlinks
    }

    /// Files skipped because an identical (size and mtime) file was in place.
    pub fn skipped_up_to_date(&self) -> u64 {
        self.skipped_up_to_date
    }

    /// Files committed under their final names.
    pub fn committed(&self) -> u64 {
        self.committed
    }
}

impl Sink for FsSink {
    async fn plan(&mut self, list: &FileList) -> io::Result<Vec<FileIndex>> {
        self.choose_layout(list)?;
        let mut wanted = Vec::new();
        for (ndx, e) in list.iter() {
            match e.kind() {
                FileKind::Directory => {
                    if e.name != b"." {
                        self.dir_fd(&e.name)?;
                    }
                }
                FileKind::Regular => match self.in_place(e) {
                    InPlace::UpToDate => self.skipped_up_to_date += 1,
                    InPlace::Absent => {
                        self.absent.insert(ndx);
                        wanted.push(ndx);
                    }
                    InPlace::Other => wanted.push(ndx),
                },
                FileKind::Symlink => self.make_symlink(e)?,
                FileKind::Special => {
                    tracing::debug!(name = %e.name_lossy(), "skipping special file");
                }
            }
        }
        self.batch = wanted.len() >= BATCH_MIN_FILES;
        self.sole_file = wanted.len() == 1;
        Ok(wanted)
    }

    async fn basis(
        &mut self,
        ndx: FileIndex,
        entry: &FileEntry,
    ) -> io::Result<Option<super::Basis>> {
        let Some((file, label)) = self.open_basis(ndx, entry)? else {
            self.bases.remove(&ndx);
            return Ok(None);
        };
        let len = file.metadata()?.len();
        if len == 0 {
            // Nothing to match against: a whole-file pull is the same.
            return Ok(None);
        }
        let file = Arc::new(file);
        self.bases.insert(ndx, file.clone());
        Ok(Some(super::Basis { file, len, label }))
    }

    async fn read_basis(&mut self, ndx: FileIndex, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        let file = self
            .bases
            .get(&ndx)
            .ok_or_else(|| io::Error::other(format!("no basis open for file {ndx}")))?;
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    async fn begin_file(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<()> {
        self.discard_open();
        let (parent, parent_path, name) = self.parent_of(&entry.name)?;
        let tmp = temp_name(&name);
        let fd = rustix::fs::openat(
            &*parent,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let preallocated = preallocate(&fd, entry.size);
        let clear_partial = self.partial_dir.is_some()
            && !self.is_fresh(&parent_path)
            && self
                .partial_dirs
                .get(&parent_path)
                .is_none_or(|known| known.is_some());
        // A small file needs no 1 MiB buffer: a node pulling 256 files of under 1 MiB at
        // once held each one whole in memory (148 MiB peak RSS in the burst bench).
        let buffer = if entry.size >= PREALLOCATE_MIN {
            WRITE_BUFFER
        } else {
            usize::try_from(entry.size)
                .unwrap_or(SMALL_WRITE_BUFFER)
                .clamp(8 << 10, SMALL_WRITE_BUFFER)
        };
        self.open = Some(OpenFile {
            ndx,
            parent,
            parent_path,
            tmp,
            name,
            file: std::io::BufWriter::with_capacity(buffer, std::fs::File::from(fd)),
            written: 0,
            preallocated,
            written_back: 0,
            entry: entry.clone(),
            partial_dir: self.partial_dir.clone(),
            clear_partial,
            fate: Fate::Keep,
        });
        Ok(())
    }

    async fn write(&mut self, ndx: FileIndex, data: &[u8]) -> io::Result<()> {
        match &mut self.open {
            Some(f) if f.ndx == ndx => {
                f.written += data.len() as u64;
                if data.len() >= DIRECT_WRITE_MIN {
                    // Large enough to go to the kernel as it is: no copy into our buffer.
                    f.file.flush()?;
                    f.file.get_mut().write_all(data)?;
                } else {
                    f.file.write_all(data)?;
                }
                f.start_writeback();
                Ok(())
            }
            _ => Err(io::Error::other(format!(
                "data for file {ndx} that is not open"
            ))),
        }
    }

    async fn end_file(&mut self, ndx: FileIndex, outcome: FileOutcome) -> io::Result<()> {
        match &self.open {
            Some(f) if f.ndx == ndx => {}
            _ => {
                return Err(io::Error::other(format!(
                    "end of file {ndx} that is not open"
                )))
            }
        }
        if outcome != FileOutcome::RetryScheduled {
            self.bases.remove(&ndx);
        }
        if outcome != FileOutcome::Verified {
            self.discard_open();
            return Ok(());
        }
        let Some(f) = self.open.take() else {
            return Ok(());
        };
        self.committed += 1;
        let sync_parent = self.sole_file;
        if !sync_parent {
            self.touched_dirs.insert(f.parent_path.clone());
        }
        if self.batch && f.entry.size < BATCH_FILE_MAX {
            let size = f.written;
            self.staged.push(stage(f)?);
            self.staged_bytes += size;
            if self.staged.len() >= BATCH_MAX_FILES || self.staged_bytes >= BATCH_MAX_BYTES {
                self.flush_batch().await?;
            }
            return Ok(());
        }
        self.wait_commits(MAX_PENDING_COMMITS - 1).await?;
        self.commits.spawn_blocking(move || commit(f, sync_parent));
        Ok(())
    }

    async fn finish(&mut self, list: &FileList) -> io::Result<()> {
        self.flush_batch().await?;
        self.wait_commits(0).await?;
        // Directory modes and times last, deepest first, so that writing
        // into them cannot disturb the times and a read-only mode cannot
        // stop us writing (rsync does the same at the end of the run).
        let mut dirs: Vec<&FileEntry> = list
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.kind() == FileKind::Directory)
            .collect();
        dirs.sort_by_key(|e| std::cmp::Reverse(e.name.iter().filter(|&&b| b == b'/').count()));
        for e in dirs {
            let fd = if e.name == b"." {
                match &self.layout {
                    Some(Layout::Tree { root }) => root.clone(),
                    _ => continue,
                }
            } else {
                self.dir_fd(&e.name)?
            };
            rustix::fs::fchmod(&*fd, Mode::from_raw_mode(e.permissions() & 0o7777))?;
            rustix::fs::futimens(&*fd, &timestamps(e))?;
        }
        let touched: Vec<Vec<u8>> = self.touched_dirs.drain().collect();
        for d in touched {
            let fd = self.dir_fd(&d)?;
            rustix::fs::fsync(&*fd)?;
        }
        Ok(())
    }
}

mod basis;
mod commit;
mod walk;
mod write;

#[cfg(test)]
mod tests;
