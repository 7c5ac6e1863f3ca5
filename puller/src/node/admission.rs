//! Whether a job fits on the node's disk: never, not now, or now.
//!
//! The rule (docs/operations.md, "Disk space and the reserve"):
//! - the node takes no job at all while free space is below the reserve;
//! - a job whose file is larger than the filesystem's total capacity minus the reserve can
//!   **never** fit: it gets a failure result at once, saying so;
//! - a job that needs more than the free space above the reserve does **not fit now**: it is
//!   put back in its place on its list (for another node, or for this one later) and this node
//!   passes over it when taking, so the next jobs that fit are still taken in strict priority
//!   order. It is taken again as soon as the free space above the reserve covers what it
//!   needs, or after [`DEFER_FOR`] in any case (to look again).
//!
//! The deferred jobs are remembered by their exact message as it waits on the list (the take
//! script compares values), at most [`MAX_DEFERRED`] of them and [`MAX_DEFERRED_BYTES`] in
//! all: past that, the node pauses briefly instead of spinning on take and put back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Node, DISK_RECHECK};
use crate::pull;
use crate::queue::{JobQueue, Taken};

/// Most jobs a node remembers as not fitting now.
pub const MAX_DEFERRED: usize = 64;
/// Most message bytes a node remembers as not fitting now.
pub const MAX_DEFERRED_BYTES: usize = 4 << 20;
/// A job passed over for this long is taken again to look afresh.
pub const DEFER_FOR: Duration = Duration::from_secs(600);

/// Where a job stands against the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// There is room now.
    Now,
    /// Not now: it needs `need` bytes, `room` are free above the reserve.
    NotNow {
        /// Bytes the job still needs.
        need: u64,
        /// Free bytes above the reserve.
        room: u64,
    },
    /// Never on this filesystem: its file is larger than the capacity minus the reserve.
    Never {
        /// The file's size.
        size: u64,
        /// The filesystem's total capacity.
        total: u64,
        /// The reserve.
        reserve: u64,
    },
}

/// Judges a job: `size` is its file's whole size, `need` what writing it still needs; `free`
/// and `total` are the filesystem's free and total bytes.
pub fn judge(size: u64, need: u64, free: u64, total: u64, reserve: u64) -> Fit {
    if size > total.saturating_sub(reserve) {
        return Fit::Never {
            size,
            total,
            reserve,
        };
    }
    let room = free.saturating_sub(reserve);
    if need > room || free < reserve {
        return Fit::NotNow { need, room };
    }
    Fit::Now
}

/// One job passed over.
#[derive(Debug)]
struct Entry {
    message: Vec<u8>,
    need: u64,
    at: Instant,
}

/// The jobs this node passes over because they do not fit now.
#[derive(Debug, Default)]
pub struct Deferred {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Deferred {
    /// Remembers `message` (as it now waits on its list) as needing `need` bytes. False when
    /// it is not remembered (too many, or too large): the caller pauses briefly instead.
    pub fn add(&mut self, message: Vec<u8>, need: u64, now: Instant) -> bool {
        if self.entries.len() >= MAX_DEFERRED
            || self.bytes.saturating_add(message.len()) > MAX_DEFERRED_BYTES
        {
            return false;
        }
        self.bytes += message.len();
        self.entries.push_back(Entry {
            message,
            need,
            at: now,
        });
        true
    }

    /// The messages to pass over when `room` bytes are free above the reserve; forgets the
    /// ones that fit now or have waited [`DEFER_FOR`].
    pub fn to_skip(&mut self, room: u64, now: Instant) -> Vec<Vec<u8>> {
        let mut bytes = 0;
        self.entries.retain(|e| {
            let keep = e.need > room && now.saturating_duration_since(e.at) < DEFER_FOR;
            if keep {
                bytes += e.message.len();
            }
            keep
        });
        self.bytes = bytes;
        self.entries.iter().map(|e| e.message.clone()).collect()
    }

    /// How many jobs are passed over.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<Q: JobQueue> Node<Q> {
    /// Why the node must not take any job now, if it must not: the operator paused it, a
    /// pull just ran out of space mid-way, or free space is below the reserve. A job's own
    /// size never pauses the node (see the module docs).
    pub(super) fn disk_pause(&self) -> Option<String> {
        if let Some(why) = self.stats.operator.pause_reason() {
            return Some(why);
        }
        if let Ok(mut u) = self.pause_until.lock() {
            match *u {
                Some(t) if Instant::now() < t => {
                    return self
                        .stats
                        .paused()
                        .or_else(|| Some("waiting for disk space".into()))
                }
                _ => *u = None,
            }
        }
        let reserve = self.live.borrow().reserve;
        match pull::free_bytes(&self.cfg.root) {
            Ok(free) => {
                self.stats.free.store(free, Ordering::Relaxed);
                (free < reserve)
                    .then(|| format!("free space {free} B is below the reserve {reserve} B"))
            }
            Err(e) => Some(format!(
                "cannot measure free space on {}: {e}",
                self.cfg.root.display()
            )),
        }
    }

    /// The messages to pass over at the next take.
    pub(super) fn deferred_to_skip(&self) -> Vec<Vec<u8>> {
        let Ok(mut d) = self.deferred.lock() else {
            return Vec::new();
        };
        if d.is_empty() {
            self.stats.deferred_now.store(0, Ordering::Relaxed);
            return Vec::new();
        }
        let reserve = self.live.borrow().reserve;
        let room = pull::free_bytes(&self.cfg.root)
            .map(|f| f.saturating_sub(reserve))
            .unwrap_or(0);
        let skip = d.to_skip(room, Instant::now());
        self.stats.deferred_now.store(d.len(), Ordering::Relaxed);
        skip
    }

    /// Puts back a job that does not fit now and passes over it until it does. `need` is
    /// what it still needs (0: unknown, the disk filled up under it): then, and when it
    /// cannot be remembered, the node waits [`DISK_RECHECK`] before taking the next job.
    pub(super) async fn defer(&self, t: &Taken, need: u64, why: String) {
        self.stats.deferrals.fetch_add(1, Ordering::Relaxed);
        let message = self.put_back(&self.cfg.node_id, t, why, false).await;
        let remembered = match message {
            Some(m) if need > 0 => self
                .deferred
                .lock()
                .is_ok_and(|mut d| d.add(m, need, Instant::now())),
            Some(_) => false,
            None => true, // not on a list any more: nothing to pass over
        };
        if let Ok(d) = self.deferred.lock() {
            self.stats.deferred_now.store(d.len(), Ordering::Relaxed);
        }
        if !remembered {
            if let Ok(mut u) = self.pause_until.lock() {
                *u = Some(Instant::now() + DISK_RECHECK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn a_job_larger_than_the_filesystem_less_the_reserve_never_fits() {
        assert_eq!(
            judge(
                1_000_000_000_000_000,
                1_000_000_000_000_000,
                50 * G,
                100 * G,
                G
            ),
            Fit::Never {
                size: 1_000_000_000_000_000,
                total: 100 * G,
                reserve: G
            }
        );
        assert!(matches!(
            judge(100 * G, 100 * G, 100 * G, 100 * G, 1),
            Fit::Never { .. }
        ));
        // A reserve above the capacity: only empty files fit.
        assert!(matches!(judge(1, 1, 10, 10, 20), Fit::Never { .. }));
        assert_eq!(judge(0, 0, 30, 10, 20), Fit::Now);
    }

    #[test]
    fn a_job_that_fits_the_filesystem_but_not_the_free_space_waits() {
        assert_eq!(
            judge(30 * G, 30 * G, 20 * G, 100 * G, G),
            Fit::NotNow {
                need: 30 * G,
                room: 19 * G
            }
        );
        assert_eq!(judge(30 * G, 19 * G, 20 * G, 100 * G, G), Fit::Now);
        // Below the reserve nothing fits now, not even an empty file.
        assert!(matches!(judge(0, 0, 1, 100, 2), Fit::NotNow { .. }));
    }

    #[test]
    fn deferred_jobs_are_passed_over_until_they_fit_or_time_out() {
        let t0 = Instant::now();
        let mut d = Deferred::default();
        assert!(d.add(b"big".to_vec(), 100, t0));
        assert!(d.add(b"huge".to_vec(), 1000, t0));
        assert_eq!(d.to_skip(50, t0), vec![b"big".to_vec(), b"huge".to_vec()]);
        assert_eq!(d.to_skip(100, t0), vec![b"huge".to_vec()]);
        assert_eq!(d.len(), 1);
        assert!(d.to_skip(0, t0 + DEFER_FOR).is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn the_deferred_set_is_bounded() {
        let t0 = Instant::now();
        let mut d = Deferred::default();
        for i in 0..MAX_DEFERRED {
            assert!(d.add(i.to_string().into_bytes(), 1, t0));
        }
        assert!(!d.add(b"one more".to_vec(), 1, t0));
        let mut d = Deferred::default();
        assert!(!d.add(vec![0; MAX_DEFERRED_BYTES + 1], 1, t0));
    }
}
