//! What a node does with the files it already stored: retention ([`prune`]) and the scrub
//! ([`scrub`]), by hand (`ubackup-puller prune`, `scrub`) or on the daemon's schedule
//! ([`schedule`]). Both decide from the manifest ([`crate::manifest`]) and publish
//! [`NodeEvent`]s on the results list.
//!
//! * **Prune**: load the manifest, [`crate::retention::decide`] at the given clock, record
//!   the intent to delete each expired file that is still the file the manifest describes (a
//!   regular file of the recorded size) with its `expired` event (the journal), delete them,
//!   fsync the directories, record the removals (the outbox), publish, record the
//!   publication, compact. A crash anywhere leaves either the file (deleted again next time)
//!   or an unpublished event (published next time): at-least-once, never silently. A
//!   journal left by a killed prune is settled by the next prune or scrub before anything
//!   else: a file that is gone is recorded as removed, one that is still there as kept.
//! * **Scrub**: settle a killed prune's journal, then re-read every file at a capped rate
//!   (the pull's token bucket, charged the bytes each read returned), compare size and
//!   checksum with the manifest; a difference is `corrupt`, a read error `unreadable`.
//!   A finding is confirmed against a fresh manifest first, so a file replaced or pruned
//!   during the pass is not reported.
//!
//! Prunes (and rebuilds) take an exclusive lock (`<root>/.ubackup-state/lifecycle.lock`) so
//! that a by-hand run and the daemon's schedule do not work over each other.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands as _;
use rsync_proto::limit::{BandwidthLimiter, Rate};
use tokio::sync::watch;
use ubackup_messages::{EventKind, NodeEvent};

use crate::basis::STATE_DIR;
use crate::config::NodeConfig;
use crate::manifest::{self, Digest, Entry, Manifest, ManifestError};
use crate::retention::{self, Expiry};

/// A life-cycle failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The manifest could not be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The results Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another failure (the lock, a worker thread).
    #[error("{0}")]
    Other(String),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Publishes events on the results list (LPUSH, as results are).
pub struct Publisher {
    conn: ubackup_redis_ha::HaConnection,
    list: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects to the node's results Redis.
    pub async fn connect(cfg: &NodeConfig) -> Result<Publisher, LifecycleError> {
        // Events follow the master like results do when they share the queue's Redis.
        let target = if cfg.results.redis == cfg.queue.redis {
            cfg.queue.ha.target(&cfg.results.redis.0)
        } else {
            ubackup_redis_ha::Target::Direct(cfg.results.redis.0.clone())
        };
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            ubackup_redis_ha::HaConnection::connect(target, ubackup_redis_ha::Options::default()),
        )
        .await
        .map_err(|_| LifecycleError::Other("redis: connect timed out".into()))?
        .map_err(|e| LifecycleError::Other(e.to_string()))?;
        Ok(Publisher {
            conn,
            list: cfg.results.list.clone(),
        })
    }

    /// LPUSHes the events, in order, in batches of 500.
    pub async fn publish(&mut self, events: &[&NodeEvent]) -> Result<(), LifecycleError> {
        for chunk in events.chunks(500) {
            let bodies: Vec<Vec<u8>> = chunk
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap_or_default())
                .collect();
            let _: i64 = self.conn.lpush(&self.list, bodies).await?;
        }
        Ok(())
    }
}

/// Holds `<root>/.ubackup-state/lifecycle.lock` exclusively until dropped.
fn lifecycle_lock(root: &Path) -> Result<File, LifecycleError> {
    let dir = root.join(STATE_DIR);
    let p = dir.join("lifecycle.lock");
    let open = || -> io::Result<File> {
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(f)
    };
    open().map_err(|e| LifecycleError::Other(format!("{}: {e}", p.display())))
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Files deleted (or that would be), with why, by path.
    pub expired: Vec<Expiry>,
    /// Files kept.
    pub kept: usize,
    /// Expired files left alone: they are not what the manifest describes, or could not be
    /// deleted.
    pub left: Vec<(PathBuf, String)>,
    /// `expired` events published in this run (earlier runs' included).
    pub published: usize,
    /// Events still waiting to be published (Redis unreachable).
    pub pending: usize,
}

/// Settles the journal of a prune that was killed between recording its intent and
/// recording the outcome: a file it meant to delete that is gone is recorded as removed
/// (with its `expired` event, published by the next prune), one that is still there as kept
/// (the next prune decides again). Call with the lifecycle lock held. Returns how many
/// intents were settled.
fn settle_journal(m: &Manifest) -> Result<usize, LifecycleError> {
    let st = m.load()?;
    if st.removing.is_empty() {
        return Ok(0);
    }
    let mut done = Vec::new();
    let mut kept = Vec::new();
    for (path, (at, ev)) in st.removing {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "prune journal: the deletion is recorded");
                done.push((path, at, ev));
            }
            _ => {
                tracing::info!(path = %path.display(), "prune journal: not deleted, kept");
                kept.push(path);
            }
        }
    }
    m.record_removed(&done)?;
    m.record_kept(&kept)?;
    Ok(done.len() + kept.len())
}

/// Settles a killed prune's journal (see [`settle_journal`]) under the lifecycle lock: a
/// scrub does this first, so that files a prune deleted on purpose are not reported.
/// Blocking.
pub fn settle(cfg: &NodeConfig) -> Result<usize, LifecycleError> {
    let _lock = lifecycle_lock(&cfg.root)?;
    settle_journal(&Manifest::new(&cfg.root))
}

/// Deletes what expired at `now_ms` (the decision's clock) and records it; returns the report
/// and the events to publish (this run's and any earlier unpublished ones). Blocking.
pub fn prune_files(
    cfg: &NodeConfig,
    now_ms: i64,
    dry_run: bool,
) -> Result<(PruneReport, manifest::Outbox), LifecycleError> {
    prune_files_with(cfg, now_ms, dry_run, &mut || {})
}

/// [`prune_files`], calling `after_unlinks` between deleting the files and recording it (the
/// point a test kills the prune at).
fn prune_files_with(
    cfg: &NodeConfig,
    now_ms: i64,
    dry_run: bool,
    after_unlinks: &mut dyn FnMut(),
) -> Result<(PruneReport, manifest::Outbox), LifecycleError> {
    let _lock = lifecycle_lock(&cfg.root)?;
    let m = Manifest::new(&cfg.root);
    if !dry_run {
        settle_journal(&m)?;
    }
    let started = Instant::now();
    let st = m.load()?;
    let loaded = started.elapsed();
    if st.damaged > 0 {
        tracing::warn!(
            damaged = st.damaged,
            "manifest: damaged records skipped; the files they described are never deleted"
        );
    }
    let plan = retention::decide(st.files.values(), &cfg.retention, now_ms);
    tracing::info!(
        entries = st.files.len(),
        expire = plan.expire.len(),
        load_ms = loaded.as_millis() as u64,
        decide_ms = (started.elapsed() - loaded).as_millis() as u64,
        "prune: manifest read and decided"
    );
    let mut report = PruneReport {
        kept: plan.kept,
        ..PruneReport::default()
    };
    if dry_run {
        report.expired = plan.expire;
        report.pending = st.pending.len();
        return Ok((report, Vec::new()));
    }
    // 1. Which expired files are still what the manifest describes.
    let mut intents = Vec::new();
    let mut reasons = Vec::new();
    for x in plan.expire {
        let Some(e) = st.files.get(&x.path) else {
            continue;
        };
        match std::fs::symlink_metadata(&x.path) {
            Ok(meta) if meta.is_file() && meta.len() == e.size => {}
            Ok(meta) => {
                let why = format!(
                    "not the file the manifest describes ({} of {} bytes, {}); left alone",
                    if meta.is_file() {
                        "a file"
                    } else {
                        "not a regular file"
                    },
                    meta.len(),
                    e.size
                );
                tracing::warn!(path = %x.path.display(), "{why}");
                report.left.push((x.path.clone(), why));
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {} // already gone
            Err(err) => {
                report
                    .left
                    .push((x.path.clone(), format!("cannot check: {err}")));
                continue;
            }
        }
        let at = now_ms_real();
        let ev = e.event(EventKind::Expired, cfg, at, x.reason.clone());
        intents.push((x.path.clone(), at, ev));
        reasons.push(x);
    }
    // 2. The journal: a prune killed from here on is finished or rolled back by the next
    //    prune or scrub, so a scrub never takes a file deleted on purpose for a lost one.
    m.record_removing(&intents)?;
    // 3. Delete.
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let mut dirs = BTreeSet::new();
    for ((path, at, ev), x) in intents.into_iter().zip(reasons) {
        if let Err(err) = std::fs::remove_file(&path) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::error!(path = %path.display(), "cannot delete an expired backup: {err}");
                report
                    .left
                    .push((path.clone(), format!("cannot delete: {err}")));
                kept.push(path);
                continue;
            }
        }
        tracing::info!(path = %path.display(), reason = %x.reason, "expired: deleted");
        if let Some(d) = path.parent() {
            dirs.insert(d.to_path_buf());
        }
        removed.push((path, at, ev));
        report.expired.push(x);
    }
    // The unlinks are durable before the manifest says so.
    for d in &dirs {
        if let Err(e) = File::open(d).and_then(|f| f.sync_all()) {
            tracing::warn!(dir = %d.display(), "cannot fsync: {e}");
        }
    }
    after_unlinks();
    // 4. The outcome.
    m.record_removed(&removed)?;
    m.record_kept(&kept)?;
    let mut outbox = st.pending;
    outbox.extend(removed);
    Ok((report, outbox))
}

fn now_ms_real() -> i64 {
    now_ms()
}

/// One prune: decide at `now_ms`, delete, publish the `expired` events (when a publisher is
/// given; otherwise they wait in the manifest for the next run), compact the manifest.
pub async fn prune(
    cfg: &NodeConfig,
    now_ms: i64,
    dry_run: bool,
    publisher: Option<&mut Publisher>,
) -> Result<PruneReport, LifecycleError> {
    let c = cfg.clone();
    let (mut report, outbox) =
        tokio::task::spawn_blocking(move || prune_files(&c, now_ms, dry_run))
            .await
            .map_err(|e| LifecycleError::Other(e.to_string()))??;
    if dry_run {
        return Ok(report);
    }
    report.pending = outbox.len();
    if let (Some(p), false) = (publisher, outbox.is_empty()) {
        let events: Vec<&NodeEvent> = outbox.iter().map(|(_, _, e)| e).collect();
        match p.publish(&events).await {
            Ok(()) => {
                let keys: Vec<(PathBuf, i64)> =
                    outbox.iter().map(|(p, at, _)| (p.clone(), *at)).collect();
                let m = Manifest::new(&cfg.root);
                tokio::task::spawn_blocking(move || m.record_published(&keys))
                    .await
                    .map_err(|e| LifecycleError::Other(e.to_string()))??;
                report.published = outbox.len();
                report.pending = 0;
            }
            Err(e) => tracing::warn!(
                pending = outbox.len(),
                "cannot publish expired events: {e}; they are published by the next prune"
            ),
        }
    }
    // The events are out (or wait in the manifest): free them before compaction reads it.
    drop(outbox);
    if !report.expired.is_empty() || report.published > 0 {
        let m = Manifest::new(&cfg.root);
        tokio::task::spawn_blocking(move || m.compact())
            .await
            .map_err(|e| LifecycleError::Other(e.to_string()))??;
    }
    Ok(report)
}

/// A scrub finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `corrupt` or `unreadable`.
    pub kind: EventKind,
    /// The file.
    pub path: PathBuf,
    /// What was found.
    pub reason: String,
}

/// What a scrub pass did.
#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    /// Files verified.
    pub checked: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Files whose manifest entry has no checksum the scrub can recompute (size checked only).
    pub size_only: usize,
    /// Corrupt and unreadable files.
    pub findings: Vec<Finding>,
    /// Findings published as events.
    pub published: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// The pass was stopped before the end.
    pub stopped: bool,
}

enum Check {
    Ok(u64),
    SizeOnly,
    Bad(EventKind, String, u64),
    Stopped,
}

fn check_file(
    e: &Entry,
    limiter: &BandwidthLimiter,
    rt: &tokio::runtime::Handle,
    stop: &watch::Receiver<bool>,
) -> Check {
    let meta = match std::fs::symlink_metadata(&e.path) {
        Ok(m) => m,
        Err(err) => return Check::Bad(EventKind::Unreadable, format!("cannot stat: {err}"), 0),
    };
    if !meta.is_file() {
        return Check::Bad(EventKind::Unreadable, "not a regular file".into(), 0);
    }
    let digest = e.checksum.as_deref().and_then(Digest::for_checksum);
    let Some(digest) = digest else {
        if meta.len() != e.size {
            return Check::Bad(
                EventKind::Corrupt,
                format!("size is {} bytes, the manifest says {}", meta.len(), e.size),
                0,
            );
        }
        return Check::SizeOnly;
    };
    let chunk = limiter.max_read().unwrap_or(1 << 20);
    let pace = |n: usize| {
        rt.block_on(limiter.consume(n));
        !*stop.borrow()
    };
    match manifest::digest_file(&e.path, digest, chunk, pace) {
        Ok(None) => Check::Stopped,
        Ok(Some((sum, n))) => {
            if n != e.size {
                Check::Bad(
                    EventKind::Corrupt,
                    format!("size is {n} bytes, the manifest says {}", e.size),
                    n,
                )
            } else if Some(&sum) != e.checksum.as_ref() {
                Check::Bad(
                    EventKind::Corrupt,
                    format!(
                        "checksum is {sum}, the manifest says {}",
                        e.checksum.as_deref().unwrap_or("")
                    ),
                    n,
                )
            } else {
                Check::Ok(n)
            }
        }
        Err(err) => Check::Bad(EventKind::Unreadable, format!("cannot read: {err}"), 0),
    }
}

/// One scrub pass over every file of the manifest, reading at most `rate` bytes per second.
/// Findings are confirmed against the manifest (every 30 s and at the end of the pass), then
/// logged and, with a publisher, published.
pub async fn scrub(
    cfg: &NodeConfig,
    rate: Option<Rate>,
    mut publisher: Option<&mut Publisher>,
    stop: watch::Receiver<bool>,
) -> Result<ScrubReport, LifecycleError> {
    let started = Instant::now();
    let m = Manifest::new(&cfg.root);
    // A killed prune's deletions are recorded first: they are not findings.
    let c = cfg.clone();
    let m2 = m.clone();
    let st = tokio::task::spawn_blocking(move || {
        // Should it fail, the journal still keeps those files out of the findings (confirm).
        if let Err(e) = settle(&c) {
            tracing::warn!("scrub: cannot settle a killed prune's journal: {e}");
        }
        m2.load().map_err(LifecycleError::from)
    })
    .await
    .map_err(|e| LifecycleError::Other(e.to_string()))??;
    let limiter = BandwidthLimiter::new(rate);
    let rt = tokio::runtime::Handle::current();
    let mut report = ScrubReport::default();
    let mut found: Vec<(Entry, EventKind, String)> = Vec::new();
    let mut confirmed = Instant::now();
    for e in st.files.into_values() {
        if *stop.borrow() {
            report.stopped = true;
            break;
        }
        let (l, r, s) = (limiter.clone(), rt.clone(), stop.clone());
        let (e, check) = tokio::task::spawn_blocking(move || {
            let c = check_file(&e, &l, &r, &s);
            (e, c)
        })
        .await
        .map_err(|e| LifecycleError::Other(e.to_string()))?;
        match check {
            Check::Ok(n) => {
                report.checked += 1;
                report.bytes += n;
            }
            Check::SizeOnly => report.size_only += 1,
            Check::Stopped => {
                report.stopped = true;
                break;
            }
            Check::Bad(kind, reason, n) => {
                report.checked += 1;
                report.bytes += n;
                found.push((e, kind, reason));
            }
        }
        if !found.is_empty() && confirmed.elapsed() >= CONFIRM_EVERY {
            confirm(cfg, &m, &mut found, &mut publisher, &mut report).await?;
            confirmed = Instant::now();
        }
    }
    confirm(cfg, &m, &mut found, &mut publisher, &mut report).await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// How long findings wait to be confirmed: one manifest read per batch, not per finding (a
/// failing disk can make thousands).
const CONFIRM_EVERY: Duration = Duration::from_secs(30);

/// Reports the findings that a fresh read of the manifest confirms: the file may have been
/// replaced by a redelivered pull, or pruned, after the pass began.
async fn confirm(
    cfg: &NodeConfig,
    m: &Manifest,
    found: &mut Vec<(Entry, EventKind, String)>,
    publisher: &mut Option<&mut Publisher>,
    report: &mut ScrubReport,
) -> Result<(), LifecycleError> {
    if found.is_empty() {
        return Ok(());
    }
    let m2 = m.clone();
    let now = tokio::task::spawn_blocking(move || m2.load())
        .await
        .map_err(|e| LifecycleError::Other(e.to_string()))??;
    for (e, kind, reason) in found.drain(..) {
        // Replaced or pruned since, or a prune is deleting it right now.
        if now.files.get(&e.path) != Some(&e) || now.removing.contains_key(&e.path) {
            continue;
        }
        tracing::error!(path = %e.path.display(), event = kind.name(), "scrub: {reason}");
        let ev = e.event(kind, cfg, now_ms(), reason.clone());
        if let Some(p) = publisher.as_deref_mut() {
            match p.publish(&[&ev]).await {
                Ok(()) => report.published += 1,
                Err(err) => tracing::warn!("cannot publish the scrub's finding: {err}"),
            }
        }
        report.findings.push(Finding {
            kind,
            path: e.path,
            reason,
        });
    }
    Ok(())
}

/// The daemon's schedule: a prune every `retention.interval` and a scrub pass every
/// `scrub.interval` (from the start of one pass to the start of the next, or at once when a
/// pass took longer), each as its own task, until `stop`.
pub async fn schedule(cfg: NodeConfig, stop: watch::Receiver<bool>) {
    // What will be deleted and when, in the start-up log.
    for line in cfg.retention.describe() {
        tracing::info!("{line}");
    }
    let prune_cfg = cfg.clone();
    let prune_stop = stop.clone();
    let pruning = async move {
        let every = prune_cfg.retention.interval;
        if every.is_zero() || !prune_cfg.retention.expires_anything() {
            return;
        }
        every_until_stop(every, prune_stop, || async {
            let mut p = connect_or_warn(&prune_cfg).await;
            match prune(&prune_cfg, now_ms(), false, p.as_mut()).await {
                Ok(r) => tracing::info!(
                    expired = r.expired.len(),
                    kept = r.kept,
                    left = r.left.len(),
                    published = r.published,
                    pending = r.pending,
                    "prune done"
                ),
                Err(e) => tracing::error!("prune failed: {e}"),
            }
        })
        .await
    };
    let scrub_cfg = cfg;
    let scrub_stop = stop;
    let scrubbing = async move {
        let every = scrub_cfg.scrub.interval;
        if every.is_zero() {
            return;
        }
        let s = scrub_stop.clone();
        every_until_stop(every, scrub_stop, || async {
            let mut p = connect_or_warn(&scrub_cfg).await;
            match scrub(&scrub_cfg, scrub_cfg.scrub.rate, p.as_mut(), s.clone()).await {
                Ok(r) => tracing::info!(
                    checked = r.checked,
                    bytes = r.bytes,
                    findings = r.findings.len(),
                    published = r.published,
                    secs = r.elapsed.as_secs_f64(),
                    "scrub pass done"
                ),
                Err(e) => tracing::error!("scrub failed: {e}"),
            }
        })
        .await
    };
    tokio::join!(pruning, scrubbing);
}

async fn connect_or_warn(cfg: &NodeConfig) -> Option<Publisher> {
    match Publisher::connect(cfg).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("cannot reach the results Redis for events: {e}");
            None
        }
    }
}

async fn every_until_stop<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {},
            r = stop.changed() => if r.is_err() { return },
        }
        if *stop.borrow() {
            return;
        }
        next = tokio::time::Instant::now() + every;
        f().await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::retention::tests::{build, history, rules, NOW};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The dry run lists exactly what the real run deletes, and the real run deletes
        /// exactly that: on disk and in the manifest.
        #[test]
        fn the_dry_run_equals_the_real_run(
            histories in prop::collection::vec(history(), 1..3),
            keep_days in 1u32..20,
            min_fulls in 1u32..3,
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut files = build(&histories);
            for e in &mut files {
                e.path = d.path().join(e.instance.to_string()).join(e.path.file_name().unwrap());
                std::fs::create_dir_all(e.path.parent().unwrap()).unwrap();
                std::fs::write(&e.path, b"x").unwrap();
            }
            Manifest::new(d.path()).append(&files).unwrap();
            let mut cfg = NodeConfig::parse(&format!("[node]\nroot = \"{}\"\n", d.path().display())).unwrap();
            cfg.retention = rules(keep_days, min_fulls);
            let (dry, outbox) = prune_files(&cfg, NOW, true).unwrap();
            prop_assert!(outbox.is_empty());
            let (real, outbox) = prune_files(&cfg, NOW, false).unwrap();
            prop_assert_eq!(&dry.expired, &real.expired);
            prop_assert_eq!(dry.kept, real.kept);
            prop_assert_eq!(outbox.len(), real.expired.len());
            let gone: BTreeSet<&PathBuf> = real.expired.iter().map(|x| &x.path).collect();
            let st = Manifest::new(d.path()).load().unwrap();
            for e in &files {
                prop_assert_eq!(e.path.exists(), !gone.contains(&e.path));
                prop_assert_eq!(st.files.contains_key(&e.path), !gone.contains(&e.path));
            }
            prop_assert_eq!(st.pending.len(), gone.len());
            // Nothing more to do at the same clock.
            let (again, _) = prune_files(&cfg, NOW, false).unwrap();
            prop_assert!(again.expired.is_empty());
        }
    }

    fn node(d: &Path, keep_days: u32) -> NodeConfig {
        let mut cfg = NodeConfig::parse(&format!("[node]\nroot = \"{}\"\n", d.display())).unwrap();
        cfg.retention = rules(keep_days, 1);
        cfg
    }

    fn scrub_now(cfg: &NodeConfig) -> ScrubReport {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, stop) = watch::channel(false);
        rt.block_on(scrub(cfg, None, None, stop)).unwrap()
    }

    #[test]
    fn a_scrub_after_a_prune_killed_between_deleting_and_recording_reports_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut files = build(&[vec![(0, 24), (0, 24), (0, 24), (0, 24)]]);
        for e in &mut files {
            e.path = d.path().join(e.path.file_name().unwrap());
            std::fs::write(&e.path, b"x").unwrap();
        }
        Manifest::new(d.path()).append(&files).unwrap();
        let cfg = node(d.path(), 1);
        // Killed after the unlinks, before the removals are recorded.
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prune_files_with(&cfg, NOW, false, &mut || panic!("SIGKILL"))
        }));
        assert!(killed.is_err());
        let st = Manifest::new(d.path()).load().unwrap();
        assert_eq!(st.files.len(), 4, "the removals were not recorded");
        assert_eq!(st.removing.len(), 3);
        for e in &files[..3] {
            assert!(!e.path.exists());
        }
        // The scrub settles the journal first: nothing is unreadable.
        let r = scrub_now(&cfg);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.size_only, 1);
        let st = Manifest::new(d.path()).load().unwrap();
        assert_eq!(st.files.len(), 1);
        assert!(st.removing.is_empty());
        assert_eq!(
            st.pending.len(),
            3,
            "their expired events wait for the next prune"
        );
        // The next prune sends them and has nothing more to delete.
        let (again, outbox) = prune_files(&cfg, NOW, false).unwrap();
        assert!(again.expired.is_empty());
        assert_eq!(outbox.len(), 3);
    }

    #[test]
    fn a_prune_killed_before_deleting_is_rolled_back() {
        let d = tempfile::tempdir().unwrap();
        let mut files = build(&[vec![(0, 24), (0, 24)]]);
        for e in &mut files {
            e.path = d.path().join(e.path.file_name().unwrap());
            std::fs::write(&e.path, b"x").unwrap();
        }
        let m = Manifest::new(d.path());
        m.append(&files).unwrap();
        let cfg = node(d.path(), 0);
        // The journal says "removing" but the file was never deleted.
        let ev = files[0].event(EventKind::Expired, &cfg, NOW, "test".into());
        m.record_removing(&[(files[0].path.clone(), NOW, ev)])
            .unwrap();
        assert_eq!(m.load().unwrap().removing.len(), 1);
        // A compaction carries it.
        m.compact().unwrap();
        assert_eq!(m.load().unwrap().removing.len(), 1);
        let r = scrub_now(&cfg);
        assert!(r.findings.is_empty());
        assert_eq!(r.size_only, 2, "the file is still scrubbed");
        let st = m.load().unwrap();
        assert!(st.removing.is_empty());
        assert!(st.pending.is_empty());
        assert_eq!(st.files.len(), 2);
        assert!(files[0].path.exists());
    }

    #[test]
    fn a_file_that_is_not_what_the_manifest_says_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let mut files = build(&[vec![(0, 1), (0, 1), (0, 1)]]);
        for e in &mut files {
            e.path = d.path().join(e.path.file_name().unwrap());
            std::fs::write(&e.path, b"x").unwrap();
        }
        // The oldest was replaced by something else of another size.
        std::fs::write(&files[0].path, b"something else").unwrap();
        Manifest::new(d.path()).append(&files).unwrap();
        let mut cfg =
            NodeConfig::parse(&format!("[node]\nroot = \"{}\"\n", d.path().display())).unwrap();
        cfg.retention = rules(1, 1);
        let (r, _) = prune_files(&cfg, NOW, false).unwrap();
        assert_eq!(r.expired.len(), 1);
        assert_eq!(r.left.len(), 1);
        assert!(files[0].path.exists());
        assert!(!files[1].path.exists());
        assert!(files[2].path.exists());
    }
}
