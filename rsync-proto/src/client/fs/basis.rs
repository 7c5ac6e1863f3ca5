//! The delta basis: the policy, a partial file first, and what is already in place.

use std::ffi::OsString;
use std::io::{self};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};

use super::FsSink;
use crate::flist::{FileEntry, FileIndex};

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

impl FsSink {
    /// Opens the basis for `entry`: a partial file first, then the policy.
    pub(super) fn open_basis(
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

    /// What is at `e`'s destination: an identical file (skip it), nothing (no
    /// same-name basis), or something else.
    pub(super) fn in_place(&mut self, e: &FileEntry) -> InPlace {
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
}

/// Opens `leaf` under `dir` for reading if it is a regular file (never
/// following a symlink).
pub(super) fn open_regular_at(dir: &OwnedFd, leaf: &OsString) -> io::Result<Option<std::fs::File>> {
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
pub(super) fn open_regular_path(p: &Path) -> io::Result<Option<(std::fs::File, String)>> {
    match std::fs::File::open(p) {
        Ok(f) if f.metadata()?.is_file() => Ok(Some((f, p.display().to_string()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`FsSink::in_place`] found at a file's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InPlace {
    UpToDate,
    Absent,
    Other,
}
