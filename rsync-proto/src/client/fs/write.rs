//! File writing: an open temp file, its buffer, block reservation and writeback.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::AtFlags;

use super::commit::move_to_partial;
use super::{FsSink, PREALLOCATE_MIN, WRITEBACK_STEP};
use crate::flist::{FileEntry, FileIndex};

/// What happens to a temp file when its [`OpenFile`] is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Interrupted: keep the data in the partial directory (or delete it
    /// when there is none).
    Keep,
    /// Failed verification: delete.
    Discard,
    /// Renamed into place: nothing to do.
    Committed,
}

#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) ndx: FileIndex,
    pub(super) parent: Arc<OwnedFd>,
    pub(super) parent_path: Vec<u8>,
    pub(super) tmp: OsString,
    pub(super) name: OsString,
    /// Buffered so that small literal runs and copied blocks become large writes.
    pub(super) file: std::io::BufWriter<std::fs::File>,
    /// Bytes written so far.
    pub(super) written: u64,
    /// Bytes reserved with [`preallocate`] (0: none).
    pub(super) preallocated: u64,
    /// Bytes handed to the kernel's writeback so far (see [`OpenFile::start_writeback`]).
    pub(super) written_back: u64,
    pub(super) entry: FileEntry,
    pub(super) partial_dir: Option<OsString>,
    /// The directory may hold a partial file of this name, to remove after the commit.
    pub(super) clear_partial: bool,
    pub(super) fate: Fate,
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
    pub(super) fn start_writeback(&mut self) {
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
    pub(super) fn release_unused(&self) {
        if self.preallocated > self.written {
            let _ = self.file.get_ref().set_len(self.written);
        }
    }

    pub(super) fn keep_partial(&self) -> io::Result<()> {
        let Some(dir) = &self.partial_dir else {
            return Ok(());
        };
        move_to_partial(&self.parent, dir, &self.tmp, &self.name)
    }
}

impl FsSink {
    pub(super) fn discard_open(&mut self) {
        if let Some(mut f) = self.open.take() {
            f.fate = Fate::Discard;
        }
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
pub(super) fn preallocate(fd: &OwnedFd, size: u64) -> u64 {
    if size < PREALLOCATE_MIN {
        return 0;
    }
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size) {
        Ok(()) => size,
        Err(_) => 0,
    }
}
