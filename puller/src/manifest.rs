//! The node's durable manifest of what it stored: one record per committed pull (file,
//! instance, chain, size, checksum, time), kept under `<root>/.ubackup-state/manifest.log`.
//! Retention decides from it and the scrub verifies against it; a node never deletes a file
//! that its manifest does not know.
//!
//! ```text
//!  pull committed ──► append "stored" ─┐   prune: append "removing" (its journal), delete,
//!                                      │          append "removed" (+ its event) or "kept"
//!                                      ▼                            publish ──► append "published"
//!                             manifest.log (one line per record:    compaction rewrites live
//!                             <xxh3 of the JSON> <JSON>\n, fsynced)  entries + unpublished events
//! ```
//!
//! * **Durable**: every append is one `write` of whole lines followed by `fdatasync`; the
//!   directory is fsynced when the file is created or replaced.
//! * **Crash-safe**: each line carries the xxh3 of its JSON. A torn last record (a crash in
//!   the middle of an append) fails that check or lacks its newline; it is dropped on load,
//!   and cut off before the next append. A damaged record elsewhere is skipped and counted
//!   ([`State::damaged`]): the file it described becomes unknown, so it is never deleted.
//! * **Shared**: the daemon's workers, a by-hand `prune` or `scrub` and the daemon's own
//!   schedule may run at once; appends and compaction take an exclusive `flock` on
//!   `manifest.lock`, and the whole file is replaced only by rename.
//! * **Rebuilt** from disk when lost ([`rebuild`]): files under the root that the manifest
//!   does not know are adopted, their checksum recomputed, their instance inferred from the
//!   destination template. What the path cannot say (the chain, the job id, and whatever the
//!   template does not hold) is listed in [`Entry::unknown`], and such entries are never
//!   expired by retention.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use ubackup_messages::{EventKind, Job, JobForm, NodeEvent, PullResult};

use crate::basis::STATE_DIR;

mod group;
use crate::config::NodeConfig;
use crate::pull::JobReport;
pub use group::GroupAppender;
/// The workspace's checksum type and file hashing (crate `ubackup-checksum`), re-exported
/// where the manifest's callers have always found them.
pub use ubackup_checksum::{canonical_checksum, digest_file, Digest};

/// The manifest's file name under the state directory.
pub const FILE: &str = "manifest.log";
const LOCK: &str = "manifest.lock";
/// The longest record read back; longer lines are damaged records.
const MAX_RECORD: usize = 64 * 1024;

/// Where a backup sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Chain {
    /// A full backup (no `last_all_filename`).
    Full,
    /// An incremental: it needs its full, and its previous incremental when it has one.
    Incremental {
        /// The full it depends on (the job's `last_all_filename`).
        last_all_filename: String,
        /// When that full was made (ms).
        last_all_time_ms: i64,
        /// The previous incremental it was taken against (incremental-on-incremental).
        #[serde(default)]
        prev_filename: Option<String>,
        /// When that previous backup was made (ms; 0 if none).
        #[serde(default)]
        prev_time_ms: i64,
        /// True when the job carried the chain record (v1): an incremental without
        /// `prev_filename` then needs only its full. UBackup's messages cannot say, so a
        /// legacy incremental is taken to need every earlier incremental of its full.
        exact: bool,
    },
    /// Not known (an entry rebuilt from disk).
    Unknown,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where the file is on disk.
    pub path: PathBuf,
    /// The job's file name, as in the result (may hold a sub-directory).
    pub filename: String,
    /// The database host's asset id ("" when unknown).
    pub server_id: String,
    /// Backup type.
    #[serde(rename = "type")]
    pub back_type: String,
    /// Instance number (0 when unknown).
    pub instance: i64,
    /// The business id.
    #[serde(default)]
    pub game_id: Option<i64>,
    /// The database host's address.
    #[serde(default)]
    pub host: Option<String>,
    /// The job id of the pull.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Its place in a chain.
    pub chain: Chain,
    /// Size in bytes when stored.
    pub size: u64,
    /// `ALGORITHM:HEX`, hex as `xxhsum`/`md5sum`/`sha256sum` print it.
    #[serde(default)]
    pub checksum: Option<String>,
    /// When the backup was taken (the job's `create_time`, never later than `stored_ms`; the
    /// file's mtime for a rebuilt entry), epoch ms.
    pub time_ms: i64,
    /// When the node stored (or adopted) it, epoch ms.
    pub stored_ms: i64,
    /// For a rebuilt entry: what could not be inferred from the path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

impl Entry {
    /// The destination directory, as the result's `file_path`.
    pub fn file_path(&self) -> String {
        self.path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Whether it is a full backup.
    pub fn is_full(&self) -> bool {
        self.chain == Chain::Full
    }

    /// The life-cycle event about this file.
    pub fn event(
        &self,
        kind: EventKind,
        cfg: &NodeConfig,
        at_ms: i64,
        reason: String,
    ) -> NodeEvent {
        NodeEvent {
            event: kind,
            node_id: cfg.node_id.clone(),
            back_server_ip: cfg.node_ip.clone(),
            server_id: self.server_id.clone(),
            back_type: self.back_type.clone(),
            instance: self.instance,
            file_path: self.file_path(),
            filename: self.filename.clone(),
            job_id: self.job_id.clone(),
            size: Some(self.size),
            checksum: self.checksum.clone(),
            at_ms,
            reason,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Stored(Box<Entry>),
    Removed {
        path: PathBuf,
        at_ms: i64,
        event: Box<NodeEvent>,
    },
    Published {
        path: PathBuf,
        at_ms: i64,
    },
    /// A prune is about to delete the file (its journal): completed by `Removed`, or rolled
    /// back by `Kept`, by that prune or, when it was killed, by the next prune or scrub.
    Removing {
        path: PathBuf,
        at_ms: i64,
        event: Box<NodeEvent>,
    },
    /// The prune's intent to delete the file was rolled back: the file is still there.
    Kept {
        path: PathBuf,
    },
}

/// `expired` events of deleted files waiting to be published: (path, at_ms, event).
pub type Outbox = Vec<(PathBuf, i64, NodeEvent)>;

/// The manifest as read back.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Files the node holds, by path.
    pub files: BTreeMap<PathBuf, Entry>,
    /// `expired` events of deleted files not yet published: (path, at_ms, event).
    pub pending: Outbox,
    /// Files a prune meant to delete but has not recorded as deleted or kept (a prune in
    /// progress, or one that was killed): (at_ms, event) by path.
    pub removing: BTreeMap<PathBuf, (i64, NodeEvent)>,
    /// Damaged records skipped (not counting a torn last record).
    pub damaged: usize,
    /// Whether the last record was torn (and dropped).
    pub torn_tail: bool,
}

impl State {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Stored(e) => {
                self.files.insert(e.path.clone(), *e);
            }
            Record::Removed { path, at_ms, event } => {
                self.files.remove(&path);
                self.removing.remove(&path);
                self.pending.push((path, at_ms, *event));
            }
            Record::Removing { path, at_ms, event } => {
                self.removing.insert(path, (at_ms, *event));
            }
            Record::Kept { path } => {
                self.removing.remove(&path);
            }
            Record::Published { path, at_ms } => self
                .pending
                .retain(|(p, at, _)| !(p == &path && *at == at_ms)),
        }
    }
}

/// A manifest failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Reading or writing the manifest (or its lock) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A record could not be encoded (a path that is not UTF-8).
    #[error("cannot encode a manifest record: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The manifest of the node whose backup root is `root`.
#[derive(Debug, Clone)]
pub struct Manifest {
    dir: PathBuf,
}

fn encode(r: &Record, out: &mut Vec<u8>) -> Result<(), ManifestError> {
    let json = serde_json::to_vec(r)?;
    let sum = xxhash_rust::xxh3::xxh3_64(&json);
    out.extend_from_slice(format!("{sum:016x} ").as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
    Ok(())
}

fn decode(line: &[u8]) -> Option<Record> {
    let (sum, json) = (line.get(..16)?, line.get(17..)?);
    if line.get(16) != Some(&b' ') {
        return None;
    }
    let want = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    if xxhash_rust::xxh3::xxh3_64(json) != want {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Manifest {
    /// The manifest under `root`'s state directory.
    pub fn new(root: &Path) -> Manifest {
        Manifest {
            dir: root.join(STATE_DIR),
        }
    }

    /// The manifest file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Whether the manifest file exists.
    pub fn exists(&self) -> bool {
        self.path().is_file()
    }

    /// An exclusive lock over appends and compaction, held until the file is dropped.
    fn lock(&self) -> Result<File, ManifestError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let p = self.dir.join(LOCK);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&p)(e.into()))?;
        Ok(f)
    }

    /// Appends records for files just stored (one fdatasync).
    pub fn append(&self, entries: &[Entry]) -> Result<(), ManifestError> {
        self.append_records(entries.iter().map(|e| Record::Stored(Box::new(e.clone()))))
    }

    /// Records files deleted by retention, each with its `expired` event (pending until
    /// [`Manifest::record_published`]).
    pub fn record_removed(
        &self,
        removed: &[(PathBuf, i64, NodeEvent)],
    ) -> Result<(), ManifestError> {
        self.append_records(removed.iter().map(|(path, at_ms, ev)| Record::Removed {
            path: path.clone(),
            at_ms: *at_ms,
            event: Box::new(ev.clone()),
        }))
    }

    /// Records a prune's intent to delete these files (its journal), before it deletes them.
    pub fn record_removing(
        &self,
        removing: &[(PathBuf, i64, NodeEvent)],
    ) -> Result<(), ManifestError> {
        self.append_records(removing.iter().map(|(path, at_ms, ev)| Record::Removing {
            path: path.clone(),
            at_ms: *at_ms,
            event: Box::new(ev.clone()),
        }))
    }

    /// Rolls back a prune's intent to delete these files: they are still there.
    pub fn record_kept(&self, paths: &[PathBuf]) -> Result<(), ManifestError> {
        self.append_records(paths.iter().map(|path| Record::Kept { path: path.clone() }))
    }

    /// Records that the events of these (path, at_ms) removals were published.
    pub fn record_published(&self, keys: &[(PathBuf, i64)]) -> Result<(), ManifestError> {
        self.append_records(keys.iter().map(|(path, at_ms)| Record::Published {
            path: path.clone(),
            at_ms: *at_ms,
        }))
    }

    /// Appends records in 4 MiB writes, then one fdatasync: a crash leaves a prefix of them
    /// (and at most one torn record, cut before the next append).
    fn append_records(&self, recs: impl Iterator<Item = Record>) -> Result<(), ManifestError> {
        let mut recs = recs.peekable();
        if recs.peek().is_none() {
            return Ok(());
        }
        let _lock = self.lock()?;
        let p = self.path();
        let created = !p.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let end = cut_torn_tail(&f).map_err(io_err(&p))?;
        f.set_len(end).map_err(io_err(&p))?;
        let mut off = end;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut rest = true;
        while rest {
            match recs.next() {
                Some(r) => encode(&r, &mut buf)?,
                None => rest = false,
            }
            if buf.len() >= 4 << 20 || (!rest && !buf.is_empty()) {
                f.write_all_at(&buf, off).map_err(io_err(&p))?;
                off += buf.len() as u64;
                buf.clear();
            }
        }
        f.sync_data().map_err(io_err(&p))?;
        if created {
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Reads the manifest (empty if there is none). A torn last record is dropped.
    pub fn load(&self) -> Result<State, ManifestError> {
        let p = self.path();
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let mut r = io::BufReader::with_capacity(1 << 20, f);
        let mut st = State::default();
        let mut line = Vec::with_capacity(1024);
        let mut bad_at_end = false;
        loop {
            line.clear();
            let n = (&mut r)
                .take(MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io_err(&p))?;
            if n == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            if !complete && n > MAX_RECORD {
                // Over-long: skip to the end of the line.
                let mut sink = Vec::new();
                r.read_until(b'\n', &mut sink).map_err(io_err(&p))?;
                st.damaged += 1;
                bad_at_end = false;
                continue;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            match decode(body).filter(|_| complete) {
                Some(rec) => {
                    if bad_at_end {
                        st.damaged += 1;
                    }
                    bad_at_end = false;
                    st.apply(rec);
                }
                None => {
                    if bad_at_end {
                        st.damaged += 1;
                    }
                    bad_at_end = true;
                }
            }
        }
        st.torn_tail = bad_at_end;
        Ok(st)
    }

    /// Rewrites the manifest with only the live entries and the unpublished events.
    pub fn compact(&self) -> Result<State, ManifestError> {
        let _lock = self.lock()?;
        let st = self.load()?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut w =
            io::BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io_err(&tmp))?);
        let mut line = Vec::with_capacity(4096);
        let records = st
            .files
            .values()
            .map(|e| Record::Stored(Box::new(e.clone())))
            .chain(st.pending.iter().map(|(path, at_ms, ev)| Record::Removed {
                path: path.clone(),
                at_ms: *at_ms,
                event: Box::new(ev.clone()),
            }))
            // An intent not yet settled is carried over (settled under the lifecycle lock).
            .chain(
                st.removing
                    .iter()
                    .map(|(path, (at_ms, ev))| Record::Removing {
                        path: path.clone(),
                        at_ms: *at_ms,
                        event: Box::new(ev.clone()),
                    }),
            );
        for r in records {
            line.clear();
            encode(&r, &mut line)?;
            w.write_all(&line).map_err(io_err(&tmp))?;
        }
        let f = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        let finish = || -> io::Result<()> {
            f.sync_all()?;
            std::fs::rename(&tmp, self.path())?;
            sync_dir(&self.dir)
        };
        finish().map_err(io_err(&tmp))?;
        Ok(State {
            damaged: 0,
            torn_tail: false,
            ..st
        })
    }
}

/// The length of the file without a torn last record (one not ending in a newline).
fn cut_torn_tail(f: &File) -> io::Result<u64> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        f.read_exact_at(&mut chunk[..n], start)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            tracing::warn!(
                dropped = len - keep,
                "manifest: a torn last record was cut off"
            );
            return Ok(keep);
        }
        end = start;
    }
    tracing::warn!(dropped = len, "manifest: a torn record was cut off");
    Ok(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn no_pace(_: usize) -> bool {
    true
}

/// The entry for a pull that just committed.
pub fn entry_for_pull(job: &Job, job_id: &str, report: &JobReport, result: &PullResult) -> Entry {
    let stored_ms = now_ms();
    let named = |s: &Option<String>| s.clone().filter(|f| !f.is_empty() && f != "None");
    let chain = match named(&job.last_all_filename) {
        None => Chain::Full,
        Some(full) => Chain::Incremental {
            last_all_filename: full,
            last_all_time_ms: job.last_all_time_ms,
            prev_filename: named(&job.prev_filename),
            prev_time_ms: job.prev_time_ms,
            exact: job.form == JobForm::V1,
        },
    };
    let checksum = match (&result.checksum, &result.checksum_algorithm) {
        (Some(hex), Some(algo))
            if job
                .checksum
                .as_ref()
                .is_some_and(|h| h.algorithm.name() == algo) =>
        {
            // The job's hint, verified: already in printed form.
            Some(format!("{algo}:{hex}"))
        }
        _ => report
            .checksum
            .as_ref()
            .and_then(|(hex, algo)| canonical_checksum(algo, hex)),
    };
    Entry {
        path: report.final_path.clone(),
        filename: job.filename.clone().unwrap_or_default(),
        server_id: job.server_id.clone(),
        back_type: job.back_type.clone(),
        instance: job.instance,
        game_id: Some(job.game_id),
        host: Some(job.host.to_string()),
        job_id: Some(job_id.to_string()),
        chain,
        size: report.size,
        checksum,
        time_ms: if job.create_time_ms > 0 {
            job.create_time_ms.min(stored_ms)
        } else {
            stored_ms
        },
        stored_ms,
        unknown: Vec::new(),
    }
}

/// The hook the node calls after a pull committed and before its result is published:
/// appends the file to the manifest (through the node's [`GroupAppender`]: concurrent jobs
/// share a write and its fdatasync). A failure is logged, never fatal: the file is durable
/// and verified; the manifest only misses it (it is then never expired, and a rebuild adopts
/// it).
pub async fn record_pull(
    appender: &std::sync::Arc<GroupAppender>,
    job: &Job,
    job_id: &str,
    report: &JobReport,
    result: &PullResult,
) {
    let mut entry = entry_for_pull(job, job_id, report, result);
    if entry.checksum.is_none() {
        // md4 (or none): our own sum, so that the scrub can verify the file.
        let r = tokio::task::spawn_blocking(move || {
            if let Some(d) = Digest::for_checksum("xxh128:") {
                if let Ok(Some((sum, _))) = digest_file(&entry.path, d, 1 << 20, no_pace) {
                    entry.checksum = Some(sum);
                }
            }
            entry
        })
        .await;
        match r {
            Ok(e) => entry = e,
            Err(e) => {
                tracing::error!("cannot record the file in the manifest: {e}");
                return;
            }
        }
    }
    if let Err(e) = appender.append(entry).await {
        tracing::error!("cannot record the file in the manifest: {e}");
    }
}

/// What [`rebuild`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Files adopted into the manifest.
    pub adopted: Vec<PathBuf>,
    /// Files already known.
    pub known: usize,
    /// Files under the root outside the destination layout (left out), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// What a destination template lets a rebuild read back from a directory.
#[derive(Debug, Default)]
struct Inferred {
    back_type: Option<String>,
    server_id: Option<String>,
    instance: Option<i64>,
    game_id: Option<i64>,
    host: Option<String>,
}

/// Matches a file's directory against the template; None when it is not in the layout.
fn infer(template: &str, root: &Path, dir: &Path) -> Option<Inferred> {
    let root_s = root.to_string_lossy();
    let t = template.replace("{root}", root_s.trim_end_matches('/'));
    let t_parts: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
    let d = dir.to_string_lossy();
    let d_parts: Vec<&str> = d.split('/').filter(|s| !s.is_empty()).collect();
    if t_parts.len() != d_parts.len() {
        return None;
    }
    let mut inf = Inferred::default();
    let mut abc = None;
    let mut ip_d = None;
    for (t, v) in t_parts.iter().zip(&d_parts) {
        match t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            Some("back_type") => inf.back_type = Some(v.to_string()),
            Some("server_id") => inf.server_id = Some(v.to_string()),
            Some("instance") => inf.instance = Some(v.parse().ok()?),
            Some("game_id") => inf.game_id = Some(v.parse().ok()?),
            Some("ip") => inf.host = Some(v.replace('_', ":")),
            Some("ip_abc") => abc = Some(v.to_string()),
            Some("ip_d") => ip_d = Some(v.to_string()),
            Some(_) => return None,
            None if t == v => {}
            None => return None,
        }
    }
    if let (Some(a), Some(d)) = (abc, ip_d) {
        inf.host = Some(if d == "v6" {
            a.replace('_', ":")
        } else {
            format!("{a}.{d}")
        });
    }
    Some(inf)
}

/// Adopts every file under the root that the manifest does not know: its checksum is
/// recomputed (xxh128, paced by `pace`), its instance inferred from the destination template.
/// Temp files, partial files and the state directory are left out.
pub fn rebuild(
    cfg: &NodeConfig,
    mut pace: impl FnMut(usize) -> bool,
) -> Result<Rebuilt, ManifestError> {
    let manifest = Manifest::new(&cfg.root);
    let known: BTreeSet<PathBuf> = manifest.load()?.files.into_keys().collect();
    let mut out = Rebuilt::default();
    let mut found = Vec::new();
    walk(&cfg.root, &cfg.root, &mut found, &mut out.skipped).map_err(io_err(&cfg.root))?;
    found.sort();
    let mut batch = Vec::new();
    let now = now_ms();
    for path in found {
        if known.contains(&path) {
            out.known += 1;
            continue;
        }
        let dir = path.parent().unwrap_or(&cfg.root);
        let Some(inf) = infer(&cfg.pull.destination, &cfg.root, dir) else {
            out.skipped
                .push((path, "not in the destination layout".into()));
            continue;
        };
        let Some(d) = Digest::for_checksum("xxh128:") else {
            continue;
        };
        let (sum, size) = match digest_file(&path, d, 1 << 20, &mut pace) {
            Ok(Some(s)) => s,
            Ok(None) => break, // stopped
            Err(e) => {
                out.skipped.push((path, format!("unreadable: {e}")));
                continue;
            }
        };
        let mtime = std::fs::symlink_metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(now);
        let mut unknown = vec!["chain".to_string(), "job_id".to_string()];
        for (what, missing) in [
            ("server_id", inf.server_id.is_none()),
            ("instance", inf.instance.is_none()),
            ("game_id", inf.game_id.is_none()),
            ("back_type", inf.back_type.is_none()),
            ("host", inf.host.is_none()),
        ] {
            if missing {
                unknown.push(what.to_string());
            }
        }
        unknown.push("filename sub-directory".into());
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        batch.push(Entry {
            path: path.clone(),
            filename,
            server_id: inf.server_id.unwrap_or_default(),
            back_type: inf.back_type.unwrap_or_default(),
            instance: inf.instance.unwrap_or(0),
            game_id: inf.game_id,
            host: inf.host,
            job_id: None,
            chain: Chain::Unknown,
            size,
            checksum: Some(sum),
            time_ms: mtime.min(now),
            stored_ms: now,
            unknown,
        });
        out.adopted.push(path);
        if batch.len() >= 1000 {
            manifest.append(&batch)?;
            batch.clear();
        }
    }
    manifest.append(&batch)?;
    Ok(out)
}

/// Regular files under `dir`, not following symlinks; hidden names (the state directory,
/// partial directories, temp files) are left out.
fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if dir != root => {
            skipped.push((dir.to_path_buf(), format!("unreadable directory: {e}")));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &e.path(), out, skipped)?;
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
