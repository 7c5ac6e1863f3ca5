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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use tokio::task::JoinSet;

use super::Sink;
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

/// What happens to a temp file when its [`OpenFile`] is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Interrupted: keep the data in the partial directory (or delete it
    /// when there is none).
    Keep,
    /// Failed verification: delete.
    Discard,
    /// Renamed into place: nothing to do.
    Committed,
}

#[derive(Debug)]
struct OpenFile {
    ndx: FileIndex,
    parent: Arc<OwnedFd>,
    parent_path: Vec<u8>,
    tmp: OsString,
    name: OsString,
    /// Buffered so that small literal runs and copied blocks become large writes.
    file: std::io::BufWriter<std::fs::File>,
    /// Bytes written so far.
    written: u64,
    /// Bytes reserved with [`preallocate`] (0: none).
    preallocated: u64,
    /// Bytes handed to the kernel's writeback so far (see [`OpenFile::start_writeback`]).
    written_back: u64,
    entry: FileEntry,
    partial_dir: Option<OsString>,
    /// The directory may hold a partial file of this name, to remove after the commit.
    clear_partial: bool,
    fate: Fate,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        match self.fate {
            Fate::Committed => {}
            Fate::Keep
                if self.partial_dir.is_some()
                    && self.file.flush().is_ok()
                    && self.file.get_ref().metadata().is_ok_and(|m| m.len() > 0) =>
            {
                self.release_unused();
                if let Err(e) = self.keep_partial() {
                    tracing::warn!(file = %self.entry.name_lossy(), "cannot keep partial data: {e}");
                    let _ =
                        rustix::fs::unlinkat(&*self.parent, self.tmp.as_os_str(), AtFlags::empty());
                }
            }
            Fate::Keep | Fate::Discard => {
                let _ = rustix::fs::unlinkat(&*self.parent, self.tmp.as_os_str(), AtFlags::empty());
            }
        }
    }
}

impl OpenFile {
    /// Starts the disk writes of what the file got so far, every [`WRITEBACK_STEP`] bytes,
    /// so that they overlap with the transfer instead of all waiting for the fsync at the
    /// end: below `vm.dirty_background_ratio` (10% of memory) the kernel would not start
    /// writing a large file on its own before that fsync. `POSIX_FADV_DONTNEED` starts
    /// writeback of the range without waiting for it, and drops pages already written,
    /// so a backup also does not push the node's useful data out of the page cache.
    fn start_writeback(&mut self) {
        let on_disk_side = self.written - self.file.buffer().len() as u64;
        if on_disk_side < self.written_back + WRITEBACK_STEP {
            return;
        }
        let len = NonZeroU64::new(on_disk_side - self.written_back);
        let _ = rustix::fs::fadvise(
            self.file.get_ref(),
            self.written_back,
            len,
            rustix::fs::Advice::DontNeed,
        );
        self.written_back = on_disk_side;
    }

    /// Gives back blocks reserved beyond what arrived (a file that shrank on the sender, an
    /// interrupted pull): truncating to the current size frees them.
    fn release_unused(&self) {
        if self.preallocated > self.written {
            let _ = self.file.get_ref().set_len(self.written);
        }
    }

    fn keep_partial(&self) -> io::Result<()> {
        let Some(dir) = &self.partial_dir else {
            return Ok(());
        };
        move_to_partial(&self.parent, dir, &self.tmp, &self.name)
    }
}

/// Moves temp file `tmp` of `name` into the partial directory `dir` of `parent`.
fn move_to_partial(
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
struct Staged {
    parent: Arc<OwnedFd>,
    tmp: OsString,
    name: OsString,
    label: String,
    partial_dir: Option<OsString>,
    clear_partial: bool,
    committed: bool,
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

/// A caller's basis chooser: the path of a basis for an entry, or `None`.
pub type BasisHook = Arc<dyn Fn(&FileEntry) -> Option<PathBuf> + Send + Sync>;

/// How [`FsSink`] picks the delta basis of a file.
#[derive(Clone, Default)]
pub enum BasisPolicy {
    /// Always pull whole files.
    None,
    /// The file of the same name in the destination, if any (rsync's default).
    #[default]
    SameName,
    /// This file, for every file pulled (meant for single-file pulls).
    File(PathBuf),
    /// Ask the caller: return the path of a basis for this entry, or `None`.
    /// The puller uses it to name the previous backup of the same instance.
    Hook(BasisHook),
}

impl std::fmt::Debug for BasisPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BasisPolicy::None => f.write_str("None"),
            BasisPolicy::SameName => f.write_str("SameName"),
            BasisPolicy::File(p) => f.debug_tuple("File").field(p).finish(),
            BasisPolicy::Hook(_) => f.write_str("Hook(..)"),
        }
    }
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

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

    /// True when `parent_path` was created by this pull (so it holds only what
    /// this pull put there).
    fn is_fresh(&self, parent_path: &[u8]) -> bool {
        if matches!(self.layout, Some(Layout::SingleFile { .. })) {
            return false;
        }
        if parent_path.is_empty() {
            self.root_fresh
        } else {
            self.root_fresh || self.fresh_dirs.contains(parent_path)
        }
    }

    /// The partial directory of `parent_path`, looked for once per directory.
    fn partial_dir_of(&mut self, parent: &OwnedFd, parent_path: &[u8]) -> Option<Arc<OwnedFd>> {
        let pd = self.partial_dir.as_ref()?;
        if self.is_fresh(parent_path) {
            return None;
        }
        if let Some(known) = self.partial_dirs.get(parent_path) {
            return known.clone();
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let found = rustix::fs::openat(parent, pd.as_os_str(), flags, Mode::empty())
            .ok()
            .map(Arc::new);
        self.partial_dirs
            .insert(parent_path.to_vec(), found.clone());
        found
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

    /// Opens the basis for `entry`: a partial file first, then the policy.
    fn open_basis(
        &mut self,
        ndx: FileIndex,
        entry: &FileEntry,
    ) -> io::Result<Option<(std::fs::File, String)>> {
        let (parent, parent_path, leaf) = self.parent_of(&entry.name)?;
        let shown = |p: &[u8], leaf: &OsString| {
            let mut s = String::from_utf8_lossy(p).into_owned();
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(&leaf.to_string_lossy());
            s
        };
        if let Some(pdfd) = self.partial_dir_of(&parent, &parent_path) {
            if let Some(f) = open_regular_at(&pdfd, &leaf)? {
                let pd = self.partial_dir.clone().unwrap_or_default();
                let mut label = shown(&parent_path, &pd);
                label.push('/');
                label.push_str(&leaf.to_string_lossy());
                return Ok(Some((f, label)));
            }
        }
        match &self.policy {
            BasisPolicy::None => Ok(None),
            BasisPolicy::SameName if self.is_fresh(&parent_path) || self.absent.contains(&ndx) => {
                Ok(None)
            }
            BasisPolicy::SameName => {
                Ok(open_regular_at(&parent, &leaf)?.map(|f| (f, shown(&parent_path, &leaf))))
            }
            BasisPolicy::File(p) => open_regular_path(p),
            BasisPolicy::Hook(hook) => match hook(entry) {
                Some(p) => open_regular_path(&p),
                None => Ok(None),
            },
        }
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

    fn root(&self) -> io::Result<&Arc<OwnedFd>> {
        match &self.layout {
            Some(Layout::Tree { root }) => Ok(root),
            Some(Layout::SingleFile { parent, .. }) => Ok(parent),
            None => Err(io::Error::other("file list not planned yet")),
        }
    }

    /// The directory that holds `name` and the leaf name, walking from the
    /// root without following symlinks and creating missing directories.
    fn parent_of(&mut self, name: &[u8]) -> io::Result<(Arc<OwnedFd>, Vec<u8>, OsString)> {
        if let Some(Layout::SingleFile { parent, name: leaf }) = &self.layout {
            return Ok((parent.clone(), Vec::new(), leaf.clone()));
        }
        let (dir, leaf) = match name.iter().rposition(|&b| b == b'/') {
            Some(p) => (&name[..p], &name[p + 1..]),
            None => (&name[..0], name),
        };
        let fd = self.dir_fd(dir)?;
        Ok((fd, dir.to_vec(), OsString::from_vec(leaf.to_vec())))
    }

    fn dir_fd(&mut self, dir: &[u8]) -> io::Result<Arc<OwnedFd>> {
        if dir.is_empty() || dir == b"." {
            return self.root().cloned();
        }
        if let Some(fd) = self.dirs.get(dir) {
            return Ok(fd.clone());
        }
        let mut fd = self.root()?.clone();
        let mut fresh = self.root_fresh;
        let mut end = 0;
        for comp in dir.split(|&b| b == b'/') {
            end += comp.len();
            // In a directory this pull created the component cannot exist yet: make it
            // without looking first.
            let (next, created) = if fresh {
                make_dir_in_fresh(&fd, comp)?
            } else {
                open_or_make_dir(&fd, comp)?
            };
            fd = Arc::new(next);
            fresh = fresh || created || self.fresh_dirs.contains(&dir[..end]);
            if fresh {
                self.fresh_dirs.insert(dir[..end].to_vec());
            }
            end += 1;
        }
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        self.dirs.insert(dir.to_vec(), fd.clone());
        Ok(fd)
    }

    fn choose_layout(&mut self, list: &FileList) -> io::Result<()> {
        let mut active = list.iter();
        let single = match (active.next(), active.next()) {
            (Some((_, e)), None) => e.kind() != FileKind::Directory,
            _ => false,
        };
        let dest_is_dir = std::fs::metadata(&self.dest)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if single && !self.dest_wants_dir && !dest_is_dir {
            let name = self
                .dest
                .file_name()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")
                })?
                .to_os_string();
            let parent_path = match self.dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::create_dir_all(&parent_path)?;
            let parent = open_dir_path(&parent_path)?;
            self.layout = Some(Layout::SingleFile {
                parent: Arc::new(parent),
                name,
            });
        } else {
            self.root_fresh = std::fs::symlink_metadata(&self.dest).is_err();
            std::fs::create_dir_all(&self.dest)?;
            self.layout = Some(Layout::Tree {
                root: Arc::new(open_dir_path(&self.dest)?),
            });
        }
        Ok(())
    }

    /// What is at `e`'s destination: an identical file (skip it), nothing (no
    /// same-name basis), or something else.
    fn in_place(&mut self, e: &FileEntry) -> InPlace {
        let Ok((parent, parent_path, leaf)) = self.parent_of(&e.name) else {
            return InPlace::Other;
        };
        if self.is_fresh(&parent_path) {
            return InPlace::Absent;
        }
        match rustix::fs::statat(&*parent, leaf.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st)
                if !self.ignore_times
                    && (st.st_mode & 0o170000) == 0o100000
                    && st.st_size as u64 == e.size
                    && st.st_mtime == e.mtime =>
            {
                InPlace::UpToDate
            }
            Ok(_) => InPlace::Other,
            Err(rustix::io::Errno::NOENT) => InPlace::Absent,
            Err(_) => InPlace::Other,
        }
    }

    fn make_symlink(&mut self, e: &FileEntry) -> io::Result<()> {
        let Some(target) = &e.symlink_target else {
            // The pull did not ask for symlinks (-l): like rsync, skip them.
            tracing::info!(name = %e.name_lossy(), "skipping non-regular file");
            return Ok(());
        };
        if !symlink_stays_inside(&e.name, target) {
            tracing::warn!(
                link = %e.name_lossy(),
                target = %String::from_utf8_lossy(target),
                "refusing symlink whose target leaves the destination"
            );
            self.refused_symlinks.push(e.name_lossy());
            return Ok(());
        }
        let (parent, parent_path, leaf) = self.parent_of(&e.name)?;
        let tmp = temp_name(&leaf);
        rustix::fs::symlinkat(target.as_slice(), &*parent, tmp.as_os_str())?;
        let times = timestamps(e);
        let _ = rustix::fs::utimensat(&*parent, tmp.as_os_str(), &times, AtFlags::SYMLINK_NOFOLLOW);
        if let Err(err) =
            rustix::fs::renameat(&*parent, tmp.as_os_str(), &*parent, leaf.as_os_str())
        {
            let _ = rustix::fs::unlinkat(&*parent, tmp.as_os_str(), AtFlags::empty());
            return Err(err.into());
        }
        self.touched_dirs.insert(parent_path);
        Ok(())
    }

    async fn wait_commits(&mut self, down_to: usize) -> io::Result<()> {
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
    async fn flush_batch(&mut self) -> io::Result<()> {
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

    fn discard_open(&mut self) {
        if let Some(mut f) = self.open.take() {
            f.fate = Fate::Discard;
        }
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

/// Reserves the blocks of a file of `size` bytes before its data arrives, without changing
/// its size (`fallocate(FALLOC_FL_KEEP_SIZE)`), and returns how much was reserved (0 when
/// the file is small or the filesystem cannot). One allocation instead of one per page
/// written: profiling a 1 GiB pull on ext4 showed a fifth of the client's CPU in delayed
/// allocation (`ext4_da_get_block_prep`, `ext4_es_insert_delayed_extent`, quota and
/// cluster reservation) under `write`, and the extents come out contiguous. The size the
/// sender announced may be wrong (the file changes while it is read): blocks beyond what
/// arrived are freed again by [`OpenFile::release_unused`].
fn preallocate(fd: &OwnedFd, size: u64) -> u64 {
    if size < PREALLOCATE_MIN {
        return 0;
    }
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size) {
        Ok(()) => size,
        Err(_) => 0,
    }
}

/// Mode and times, then fsync, then the atomic rename into place; then
/// the partial file it may have started from is removed. If anything fails
/// (or the task is cancelled), dropping `f` keeps the data as a partial file.
/// With `sync_parent`, the directory is fsynced last, so that the rename is
/// durable when this returns (otherwise [`FsSink::finish`] does it).
fn commit(mut f: OpenFile, sync_parent: bool) -> io::Result<()> {
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
fn stage(mut f: OpenFile) -> io::Result<Staged> {
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
fn commit_batch(root: &OwnedFd, batch: Vec<Staged>) -> io::Result<()> {
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

/// Opens `leaf` under `dir` for reading if it is a regular file (never
/// following a symlink).
fn open_regular_at(dir: &OwnedFd, leaf: &OsString) -> io::Result<Option<std::fs::File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match rustix::fs::openat(dir, leaf.as_os_str(), flags, Mode::empty()) {
        Ok(fd) => {
            let f = std::fs::File::from(fd);
            Ok(f.metadata()?.is_file().then_some(f))
        }
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::ISDIR) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens a caller-named basis path if it is a regular file.
fn open_regular_path(p: &Path) -> io::Result<Option<(std::fs::File, String)>> {
    match std::fs::File::open(p) {
        Ok(f) if f.metadata()?.is_file() => Ok(Some((f, p.display().to_string()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn timestamps(e: &FileEntry) -> Timestamps {
    let mtime = Timespec {
        tv_sec: e.mtime,
        tv_nsec: i64::from(e.mtime_nsec) as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn temp_name(leaf: &OsString) -> OsString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ n.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let bytes = leaf.as_bytes();
    let keep = &bytes[..bytes.len().min(200)];
    let mut t = Vec::with_capacity(keep.len() + 10);
    t.push(b'.');
    t.extend_from_slice(keep);
    t.extend_from_slice(format!(".{:06x}", salt & 0xff_ffff).as_bytes());
    OsString::from_vec(t)
}

fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens (creating if needed) directory `comp` under `parent`, refusing
/// to follow a symlink; true when this call created it.
fn open_or_make_dir(parent: &OwnedFd, comp: &[u8]) -> io::Result<(OwnedFd, bool)> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, comp, flags, Mode::empty()) {
        Ok(fd) => return Ok((fd, false)),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "refusing to write through {:?}: not a plain directory ({e})",
                    String::from_utf8_lossy(comp)
                ),
            ))
        }
    }
    let created = match rustix::fs::mkdirat(parent, comp, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => return Err(e.into()),
    };
    Ok((
        rustix::fs::openat(parent, comp, flags, Mode::empty())?,
        created,
    ))
}

/// Makes directory `comp` under a directory this pull created, then opens it
/// (without following a symlink); falls back to [`open_or_make_dir`] if it exists
/// after all.
fn make_dir_in_fresh(parent: &OwnedFd, comp: &[u8]) -> io::Result<(OwnedFd, bool)> {
    match rustix::fs::mkdirat(parent, comp, Mode::from_raw_mode(0o700)) {
        Ok(()) => {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            Ok((
                rustix::fs::openat(parent, comp, flags, Mode::empty())?,
                true,
            ))
        }
        Err(rustix::io::Errno::EXIST) => open_or_make_dir(parent, comp),
        Err(e) => Err(e.into()),
    }
}

/// What [`FsSink::in_place`] found at a file's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InPlace {
    UpToDate,
    Absent,
    Other,
}

/// True when a symlink named `link` (relative to the destination) with
/// `target` resolves, lexically, to a place inside the destination.
pub fn symlink_stays_inside(link: &[u8], target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") || target.contains(&0) {
        return false;
    }
    let mut depth: i64 = link.iter().filter(|&&b| b == b'/').count() as i64;
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_inside_are_allowed() {
        assert!(symlink_stays_inside(b"a", b"b"));
        assert!(symlink_stays_inside(b"d/a", b"../b"));
        assert!(symlink_stays_inside(b"d/e/a", b"../../x/y"));
        assert!(symlink_stays_inside(b"a", b"./b/../c"));
    }

    #[test]
    fn symlink_targets_outside_are_refused() {
        assert!(!symlink_stays_inside(b"a", b"/etc/passwd"));
        assert!(!symlink_stays_inside(b"a", b"../x"));
        assert!(!symlink_stays_inside(b"d/a", b"../../x"));
        assert!(!symlink_stays_inside(b"a", b"b/../../x"));
        assert!(!symlink_stays_inside(b"a", b""));
    }

    fn regular(name: &str, size: u64) -> FileEntry {
        FileEntry {
            name: name.as_bytes().to_vec(),
            mode: 0o100644,
            size,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            uid: None,
            gid: None,
            symlink_target: None,
            xflags: 0,
        }
    }

    /// 20 small files under `d/`: enough for the sink to commit them as a batch.
    fn small_list() -> FileList {
        let mut entries = vec![FileEntry {
            mode: 0o040755,
            ..regular("d", 0)
        }];
        entries.extend((0..20).map(|i| regular(&format!("d/f{i:02}"), 100 + i)));
        FileList::sorted(entries, crate::ProtocolVersion::V32)
    }

    /// Plans `list` and writes every regular file through to a verified end.
    async fn receive_all(sink: &mut FsSink, list: &FileList) -> Vec<FileIndex> {
        let wanted = sink.plan(list).await.expect("plan");
        for &ndx in &wanted {
            let e = list.get(ndx).expect("entry");
            assert!(sink.basis(ndx, e).await.expect("basis").is_none());
            sink.begin_file(ndx, e).await.expect("begin");
            sink.write(ndx, &vec![ndx.0 as u8; e.size as usize])
                .await
                .expect("write");
            sink.end_file(ndx, FileOutcome::Verified)
                .await
                .expect("end");
        }
        wanted
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Small files of a many-file pull wait under temp names for one commit of the batch: no
    /// final name before `finish`, every final name with its data after it.
    #[tokio::test]
    async fn a_batch_of_small_files_gets_final_names_only_at_its_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("dest");
        let list = small_list();
        let mut sink = FsSink::new(&dest).expect("sink");
        let wanted = receive_all(&mut sink, &list).await;
        assert_eq!(wanted.len(), 20);
        let before = names_in(&dest.join("d"));
        assert_eq!(before.len(), 20);
        assert!(before.iter().all(|n| n.starts_with(".f")), "{before:?}");
        sink.finish(&list).await.expect("finish");
        let after = names_in(&dest.join("d"));
        let expected: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
        assert_eq!(after, expected);
        for &ndx in &wanted {
            let e = list.get(ndx).expect("entry");
            let data = std::fs::read(dest.join(e.name_lossy())).expect("read");
            assert_eq!(data, vec![ndx.0 as u8; e.size as usize]);
        }
    }

    /// Small pieces go through the file's buffer, large ones straight to the file: the
    /// bytes land in the order they came, and a sole file's commit leaves its final name.
    #[tokio::test]
    async fn buffered_and_direct_writes_keep_their_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("one");
        let sizes = [
            10usize,
            DIRECT_WRITE_MIN,
            3,
            1,
            DIRECT_WRITE_MIN + 7,
            5000,
            2 << 20,
            9,
        ];
        let total: usize = sizes.iter().sum();
        let list = FileList::sorted(
            vec![regular("one", total as u64)],
            crate::ProtocolVersion::V32,
        );
        let mut sink = FsSink::new(&dest).expect("sink");
        let wanted = sink.plan(&list).await.expect("plan");
        assert_eq!(wanted.len(), 1);
        let ndx = wanted[0];
        sink.begin_file(ndx, list.get(ndx).expect("entry"))
            .await
            .expect("begin");
        let mut expected = Vec::with_capacity(total);
        for (i, &n) in sizes.iter().enumerate() {
            let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j % 251) as u8).collect();
            sink.write(ndx, &piece).await.expect("write");
            expected.extend_from_slice(&piece);
        }
        sink.end_file(ndx, FileOutcome::Verified)
            .await
            .expect("end");
        sink.finish(&list).await.expect("finish");
        assert_eq!(std::fs::read(&dest).expect("read"), expected);
        assert_eq!(names_in(dir.path()), vec!["one".to_string()]);
    }

    /// A pull that fails before its batch is committed leaves no final name, and keeps every
    /// verified file as partial data for the next pull.
    #[tokio::test]
    async fn an_uncommitted_batch_is_kept_as_partial_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = small_list();
        let mut sink = FsSink::new(dir.path()).expect("sink");
        let wanted = receive_all(&mut sink, &list).await;
        drop(sink);
        assert_eq!(
            names_in(&dir.path().join("d")),
            vec![PARTIAL_DIR.to_string()]
        );
        let kept = names_in(&dir.path().join("d").join(PARTIAL_DIR));
        assert_eq!(kept.len(), 20);
        for &ndx in &wanted {
            let e = list.get(ndx).expect("entry");
            let name = e.name_lossy();
            let leaf = name.rsplit('/').next().expect("leaf");
            let data =
                std::fs::read(dir.path().join("d").join(PARTIAL_DIR).join(leaf)).expect("partial");
            assert_eq!(data, vec![ndx.0 as u8; e.size as usize]);
        }
    }

    /// Allocated bytes of `path` (st_blocks is in 512-byte units).
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    /// A sender announces 8 MiB and sends 1 MiB: the committed file is 1 MiB long and the
    /// blocks reserved for the rest are given back.
    #[tokio::test]
    async fn blocks_reserved_beyond_what_arrived_are_freed_at_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = FileList::sorted(
            vec![regular("a", 8 << 20), regular("b", 1)],
            crate::ProtocolVersion::V32,
        );
        let mut sink = FsSink::new(dir.path()).expect("sink");
        let wanted = sink.plan(&list).await.expect("plan");
        let ndx = wanted[0];
        sink.begin_file(ndx, list.get(ndx).expect("entry"))
            .await
            .expect("begin");
        sink.write(ndx, &vec![7u8; 1 << 20]).await.expect("write");
        sink.end_file(ndx, FileOutcome::Verified)
            .await
            .expect("end");
        sink.finish(&list).await.expect("finish");
        let path = dir.path().join("a");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 1 << 20);
        assert!(
            allocated(&path) < 2 << 20,
            "{} bytes still allocated",
            allocated(&path)
        );
    }

    /// An interrupted file is kept as partial data of the length that arrived, without the
    /// blocks reserved for the rest.
    #[tokio::test]
    async fn an_interrupted_preallocated_file_keeps_only_what_arrived() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = FileList::sorted(
            vec![regular("a", 8 << 20), regular("b", 1)],
            crate::ProtocolVersion::V32,
        );
        let mut sink = FsSink::new(dir.path()).expect("sink");
        let wanted = sink.plan(&list).await.expect("plan");
        let ndx = wanted[0];
        sink.begin_file(ndx, list.get(ndx).expect("entry"))
            .await
            .expect("begin");
        sink.write(ndx, &vec![7u8; 3 << 20]).await.expect("write");
        drop(sink);
        let partial = dir.path().join(PARTIAL_DIR).join("a");
        assert_eq!(std::fs::metadata(&partial).expect("stat").len(), 3 << 20);
        assert!(allocated(&partial) < 4 << 20);
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn temp_names_are_hidden_and_distinct() {
        let a = temp_name(&OsString::from("dump.rdb"));
        let b = temp_name(&OsString::from("dump.rdb"));
        assert_ne!(a, b);
        assert!(a.as_bytes().starts_with(b".dump.rdb."));
    }
}
