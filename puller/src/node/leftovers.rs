//! Partial and temp files that no pull will come back for.
//!
//! A pull writes `.NAME.XXXXXX` next to its destination and, when interrupted, keeps what
//! arrived as `.ubackup-partial/NAME` for the next pull of that name to resume from. Backups
//! get a new name every hour, so that next pull often never comes (the job failed for good,
//! or another node did it), and a process killed mid-pull leaves its temp file (with the
//! blocks `fallocate` reserved for the whole file). The sweep, at start-up and every
//! [`SWEEP_EVERY`]:
//! - a temp file of a dead process (any temp at start-up; later, one untouched for
//!   [`TEMP_STALE`] that no running pull of this process writes) is salvaged into the partial
//!   directory (the largest per name, its reserved blocks released) when it is for a job
//!   this node held at its restart and has requeued; otherwise it is removed, whatever name
//!   the node pulls next;
//! - a partial file untouched for [`PARTIAL_MAX_AGE`] is removed, and then the oldest ones
//!   until all of them together hold at most [`PARTIAL_MAX_SHARE`] of the filesystem;
//! - the partial of a file a running pull writes is never touched;
//! - a file the manifest records as a stored backup is never touched, whatever its name:
//!   a job may store `.mysql-bin.000042`, which has the shape of a temp name.
//!
//! The walk is bounded: [`MAX_DEPTH`] levels under the root and [`MAX_ENTRIES`] entries.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rsync_proto::client::PARTIAL_DIR;

use super::Node;
use crate::pull;
use crate::queue::JobQueue;

/// How often the sweep runs after the start-up one.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// A temp file untouched this long belongs to no live pull (the stall timeout is far
/// shorter).
pub const TEMP_STALE: Duration = Duration::from_secs(3600);
/// A partial file untouched this long is removed.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Most of the filesystem all partial files together may hold (a fraction).
pub const PARTIAL_MAX_SHARE: f64 = 0.05;
/// Deepest directory level walked under the root.
pub const MAX_DEPTH: usize = 8;
/// Most directory entries looked at per sweep.
pub const MAX_ENTRIES: usize = 5_000_000;

/// What a sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Temp files of dead processes found (salvaged or removed).
    pub temps: u64,
    /// Partial files removed (too old, or over the total bound).
    pub partials_removed: u64,
    /// Partial files left, and their bytes.
    pub partials: u64,
    /// Bytes in the partial files left.
    pub partial_bytes: u64,
    /// Stored backups whose names look like temp names, left alone.
    pub stored_lookalikes: u64,
}

/// The sweep's limits (the constants above; tests use others).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`TEMP_STALE`]; zero at start-up (every temp is a dead process's).
    pub temp_stale: Duration,
    /// See [`PARTIAL_MAX_AGE`].
    pub partial_max_age: Duration,
    /// Most bytes all partial files may hold.
    pub partial_max_bytes: u64,
}

/// `.NAME.XXXXXX` (six hex digits): FsSink's temp name; returns NAME's bytes (cut at 200).
fn temp_leaf(name: &[u8]) -> Option<&[u8]> {
    let rest = name.strip_prefix(b".")?;
    let (leaf, tail) = rest.split_at_checked(rest.len().checked_sub(7)?)?;
    let hex = tail.strip_prefix(b".")?;
    (!leaf.is_empty() && hex.iter().all(u8::is_ascii_hexdigit)).then_some(leaf)
}

fn age(m: &std::fs::Metadata, now: SystemTime) -> Duration {
    m.modified()
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// Sweeps `root`. `live` holds the final paths running pulls of this process write;
/// `resume` the final paths of jobs this node held when it died (requeued, likely its own
/// again): their dead temps become partials, every other dead temp is removed (its job was
/// done, or is being done, elsewhere). `stored` says whether a path is a backup the node
/// holds (the manifest); it is asked only about files with a temp file's name, and such a
/// file is left alone.
pub fn sweep(
    root: &Path,
    live: &HashSet<PathBuf>,
    resume: &HashSet<PathBuf>,
    stored: &mut dyn FnMut(&Path) -> bool,
    limits: Limits,
    now: SystemTime,
) -> Sweep {
    let mut out = Sweep::default();
    let mut partials: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        // Dead temps of this directory, by the name they were for.
        let mut temps: HashMap<Vec<u8>, Vec<PathBuf>> = HashMap::new();
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                break;
            }
            let Ok(m) = e.metadata() else { continue };
            let name = e.file_name();
            let path = e.path();
            if m.is_dir() {
                if name.as_bytes() == PARTIAL_DIR.as_bytes() {
                    collect_partials(&dir, &path, live, &mut partials);
                } else if depth < MAX_DEPTH && !name.as_bytes().starts_with(b".ubackup-") {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !m.is_file() {
                continue;
            }
            if let Some(leaf) = temp_leaf(name.as_bytes()) {
                let running = live.iter().any(|l| {
                    l.parent() == Some(dir.as_path())
                        && l.file_name()
                            .is_some_and(|f| f.as_bytes().starts_with(leaf))
                });
                if !running && age(&m, now) >= limits.temp_stale {
                    if stored(&path) {
                        out.stored_lookalikes += 1;
                        continue;
                    }
                    temps.entry(leaf.to_vec()).or_default().push(path);
                }
            }
        }
        for (leaf, paths) in temps {
            out.temps += paths.len() as u64;
            // A name cut at 200 bytes (or not UTF-8) cannot be told apart: removed.
            let salvaged = std::str::from_utf8(&leaf)
                .ok()
                .filter(|l| leaf.len() < 200 && resume.contains(&dir.join(l)))
                .map(|l| pull::salvage_stale_temps(&dir, l));
            match salvaged {
                Some(Ok(_)) => tracing::info!(
                    dir = %dir.display(),
                    "kept the data of a dead pull of a requeued job for resume"
                ),
                _ => {
                    for p in paths {
                        let _ = std::fs::remove_file(&p);
                    }
                    tracing::info!(dir = %dir.display(), "removed the temp files of a dead pull");
                }
            }
            // What salvage made a partial is swept with the others next time.
        }
    }
    // Partials: too old, then the oldest over the total bound.
    partials.sort();
    let mut total: u64 = partials.iter().map(|p| p.1).sum();
    let mut kept = Vec::new();
    for (mtime, len, path) in partials {
        let old = now.duration_since(mtime).unwrap_or(Duration::ZERO) >= limits.partial_max_age;
        if (old || total > limits.partial_max_bytes) && std::fs::remove_file(&path).is_ok() {
            tracing::info!(partial = %path.display(), len, old, "removed a partial file no pull came back for");
            out.partials_removed += 1;
            total = total.saturating_sub(len);
            continue;
        }
        kept.push(len);
    }
    out.partials = kept.len() as u64;
    out.partial_bytes = kept.iter().sum();
    out
}

fn collect_partials(
    dir: &Path,
    pdir: &Path,
    live: &HashSet<PathBuf>,
    out: &mut Vec<(SystemTime, u64, PathBuf)>,
) {
    let Ok(rd) = std::fs::read_dir(pdir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() || live.contains(&dir.join(e.file_name())) {
            continue;
        }
        let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push((mtime, m.len(), e.path()));
    }
}

impl<Q: JobQueue> Node<Q> {
    /// Runs one sweep off the async threads and reports it in the stats. `resume`: see
    /// [`sweep`] (empty after start-up).
    pub(super) async fn sweep_leftovers(&self, at_start: bool, resume: HashSet<PathBuf>) {
        let root = self.cfg.root.clone();
        let live = self.writing.lock().map(|w| w.clone()).unwrap_or_default();
        let total = pull::total_bytes(&root).unwrap_or(0);
        let limits = Limits {
            temp_stale: if at_start { Duration::ZERO } else { TEMP_STALE },
            partial_max_age: PARTIAL_MAX_AGE,
            partial_max_bytes: (total as f64 * PARTIAL_MAX_SHARE) as u64,
        };
        let r = tokio::task::spawn_blocking(move || {
            // The manifest is read only when a file with a temp file's name is found.
            let manifest = crate::manifest::Manifest::new(&root);
            let mut files: Option<Option<std::collections::BTreeSet<PathBuf>>> = None;
            let mut stored = |p: &Path| {
                let known = files.get_or_insert_with(|| match manifest.load() {
                    Ok(st) => Some(st.files.into_keys().collect()),
                    Err(e) => {
                        tracing::warn!(
                            "the sweep cannot read the manifest, so it removes no temp file: {e}"
                        );
                        None
                    }
                });
                // Unreadable manifest: treat every look-alike as stored (removing nothing).
                known.as_ref().is_none_or(|k| k.contains(p))
            };
            sweep(
                &root,
                &live,
                &resume,
                &mut stored,
                limits,
                SystemTime::now(),
            )
        })
        .await;
        match r {
            Ok(s) => {
                let st = &self.stats;
                st.temps_cleared.fetch_add(s.temps, Ordering::Relaxed);
                st.partials_removed
                    .fetch_add(s.partials_removed, Ordering::Relaxed);
                st.partial_files.store(s.partials, Ordering::Relaxed);
                st.partial_bytes.store(s.partial_bytes, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("the sweep of partial and temp files failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        temp_stale: Duration::ZERO,
        partial_max_age: Duration::from_secs(3600),
        partial_max_bytes: 1000,
    };

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_leaf(b".f.rdb.0a1b2c"), Some(&b"f.rdb"[..]));
        assert_eq!(temp_leaf(b".f.rdb.0a1b2z"), None);
        assert_eq!(temp_leaf(b"f.rdb.0a1b2c"), None);
        assert_eq!(temp_leaf(b"..0a1b2c"), None);
        assert_eq!(temp_leaf(b".x"), None);
    }

    #[test]
    fn dead_temps_are_salvaged_and_old_or_excess_partials_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("mysql/10.0.0/1");
        std::fs::create_dir_all(dir.join(PARTIAL_DIR)).unwrap();
        std::fs::write(dir.join(".a.rdb.00aa11"), vec![1u8; 100]).unwrap();
        std::fs::write(dir.join(".a.rdb.00aa12"), vec![1u8; 10]).unwrap();
        // A running pull's temp is left alone.
        std::fs::write(dir.join(".live.rdb.0000ff"), vec![1u8; 10]).unwrap();
        let live: HashSet<PathBuf> = [dir.join("live.rdb")].into();
        let resume: HashSet<PathBuf> = [dir.join("a.rdb")].into();
        // A dead temp of a job this node no longer holds.
        std::fs::write(dir.join(".gone.rdb.00aa13"), vec![1u8; 10]).unwrap();
        // Partials: one of a running pull, two others over the bound of 1000 bytes.
        std::fs::write(dir.join(PARTIAL_DIR).join("live.rdb"), vec![0u8; 5000]).unwrap();
        std::fs::write(dir.join(PARTIAL_DIR).join("old.rdb"), vec![0u8; 800]).unwrap();
        std::fs::write(dir.join(PARTIAL_DIR).join("new.rdb"), vec![0u8; 800]).unwrap();
        let s = sweep(
            d.path(),
            &live,
            &resume,
            &mut |_| false,
            LIMITS,
            SystemTime::now(),
        );
        assert_eq!(s.temps, 3);
        assert!(!dir.join(".gone.rdb.00aa13").exists());
        assert!(!dir.join(PARTIAL_DIR).join("gone.rdb").exists());
        assert!(!dir.join(".a.rdb.00aa11").exists());
        assert!(!dir.join(".a.rdb.00aa12").exists());
        assert!(dir.join(".live.rdb.0000ff").exists());
        assert!(dir.join(PARTIAL_DIR).join("live.rdb").exists());
        // The salvaged temp is a partial now (counted from the next sweep on).
        assert_eq!(
            std::fs::read(dir.join(PARTIAL_DIR).join("a.rdb"))
                .unwrap()
                .len(),
            100
        );
        // old 800 + new 800 > 1000: the oldest go first until under it.
        assert_eq!(s.partials_removed, 1, "{s:?}");
        assert_eq!((s.partials, s.partial_bytes), (1, 800));
        // Everything past the age bound goes.
        let later = SystemTime::now() + Duration::from_secs(7200);
        let s = sweep(d.path(), &live, &resume, &mut |_| false, LIMITS, later);
        assert_eq!(s.partials, 0, "{s:?}");
        assert!(dir.join(PARTIAL_DIR).join("live.rdb").exists());
    }

    #[test]
    fn a_fresh_temp_is_left_to_its_pull_after_start_up() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".b.rdb.abcdef"), b"x").unwrap();
        let limits = Limits {
            temp_stale: Duration::from_secs(3600),
            ..LIMITS
        };
        let none = HashSet::new();
        let s = sweep(
            d.path(),
            &none,
            &none,
            &mut |_| false,
            limits,
            SystemTime::now(),
        );
        assert_eq!(s.temps, 0);
        assert!(d.path().join(".b.rdb.abcdef").exists());
    }
    #[test]
    fn a_stored_backup_with_a_temp_files_name_is_never_removed() {
        let d = tempfile::tempdir().unwrap();
        // A binlog stored under a dotted name: `.mysql-bin.000042` has a temp name's shape.
        let stored_path = d.path().join(".mysql-bin.000042");
        std::fs::write(&stored_path, b"binlog").unwrap();
        let dead = d.path().join(".f.rdb.00aa11");
        std::fs::write(&dead, b"x").unwrap();
        let none = HashSet::new();
        let mut asked = Vec::new();
        let mut stored = |p: &Path| {
            asked.push(p.to_path_buf());
            p == stored_path
        };
        let s = sweep(
            d.path(),
            &none,
            &none,
            &mut stored,
            LIMITS,
            SystemTime::now(),
        );
        assert!(stored_path.exists(), "a stored backup was removed");
        assert!(!dead.exists(), "the dead temp stayed");
        assert_eq!((s.temps, s.stored_lookalikes), (1, 1), "{s:?}");
        asked.sort();
        let mut want = vec![stored_path.clone(), dead.clone()];
        want.sort();
        assert_eq!(asked, want);
    }
}
