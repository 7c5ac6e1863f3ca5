//! The directory walk: the destination layout and descriptors, one component at
//! a time with `O_NOFOLLOW`, partial directories, and symlinks kept inside.

use std::ffi::OsString;
use std::io::{self};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};

use super::commit::timestamps;
use super::{FsSink, Layout, MAX_CACHED_DIRS};
use crate::client::temp::temp_name;
use crate::flist::{FileEntry, FileKind, FileList};

impl FsSink {
    /// True when `parent_path` was created by this pull (so it holds only what
    /// this pull put there).
    pub(super) fn is_fresh(&self, parent_path: &[u8]) -> bool {
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
    pub(super) fn partial_dir_of(
        &mut self,
        parent: &OwnedFd,
        parent_path: &[u8],
    ) -> Option<Arc<OwnedFd>> {
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

    pub(super) fn root(&self) -> io::Result<&Arc<OwnedFd>> {
        match &self.layout {
            Some(Layout::Tree { root }) => Ok(root),
            Some(Layout::SingleFile { parent, .. }) => Ok(parent),
            None => Err(io::Error::other("file list not planned yet")),
        }
    }

    /// The directory that holds `name` and the leaf name, walking from the
    /// root without following symlinks and creating missing directories.
    pub(super) fn parent_of(
        &mut self,
        name: &[u8],
    ) -> io::Result<(Arc<OwnedFd>, Vec<u8>, OsString)> {
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

    pub(super) fn dir_fd(&mut self, dir: &[u8]) -> io::Result<Arc<OwnedFd>> {
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

    pub(super) fn choose_layout(&mut self, list: &FileList) -> io::Result<()> {
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

    pub(super) fn make_symlink(&mut self, e: &FileEntry) -> io::Result<()> {
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
}

pub(super) fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens (creating if needed) directory `comp` under `parent`, refusing
/// to follow a symlink; true when this call created it.
pub(super) fn open_or_make_dir(parent: &OwnedFd, comp: &[u8]) -> io::Result<(OwnedFd, bool)> {
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
pub(super) fn make_dir_in_fresh(parent: &OwnedFd, comp: &[u8]) -> io::Result<(OwnedFd, bool)> {
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
