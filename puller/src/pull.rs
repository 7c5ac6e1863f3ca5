//! The pull engine: one job in, exactly one outcome out — a verified,
//! durable file (`Completed`), a pause because the disk reserve would be
//! crossed (`PausedForDisk`), a typed failure that says whether a retry can
//! help (`Failed`), or `Cancelled` at shutdown.
//!
//! Every puller worker calls [`run`]. It applies the connection limits
//! (connect timeout, stall timeout, an overall deadline), retries only
//! errors that can succeed on a retry (connection refused or reset, timeouts,
//! the daemon's max-connections) with exponential backoff and jitter, checks
//! the destination's free space before and during the pull, and leaves
//! durability to [`FsSink`] (temp name, fsync of file and directory, atomic
//! rename; partial data kept for resume).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsync_proto::client::{
    self, BasisPolicy, FsSink, GreetingCache, PullOptions, PullReport, Sink, Source,
};
use rsync_proto::limit::{BandwidthLimiter, Rate};
use rsync_proto::{ChecksumKind, FileEntry, FileIndex, FileList, FileOutcome, ProtocolVersion};

/// What to pull and where to put it.
#[derive(Debug, Clone)]
pub struct PullJob {
    /// Host, port, module, path and user.
    pub source: Source,
    /// Daemon password, if the module needs one.
    pub password: Option<Vec<u8>>,
    /// Force a strong checksum instead of negotiating.
    pub checksum_choice: Option<ChecksumKind>,
    /// Destination directory (created if missing).
    pub dest_dir: PathBuf,
    /// How the delta basis is chosen.
    pub basis: BasisPolicy,
    /// Expected size, for the disk-reserve check before the pull.
    pub expected_size: Option<u64>,
    /// This job's own bandwidth cap.
    pub rate: Option<Rate>,
    /// Recurse (for directory sources).
    pub recursive: bool,
    /// Compress the transfer; its skip list spares already-compressed
    /// backups (gz, zst, lz4, xz, bz2 by default).
    pub compress: Option<rsync_proto::client::Compress>,
    /// Reach the daemon over TLS with this client (`source.port` is then the TLS port).
    pub tls: Option<client::TlsConnector>,
}

/// Exponential backoff with jitter: [`ubackup_backoff::Backoff`] from `base_delay` to
/// `max_delay`, scaled by [`ubackup_backoff::equal_jitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Largest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1):
    /// `base · 2^(attempt-1)`, capped, then scaled by a random factor in
    /// [0.5, 1.0] so that many workers do not retry in step.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let raw = ubackup_backoff::Backoff::new(self.base_delay, self.max_delay)
            .delay_for(attempt.saturating_sub(1));
        ubackup_backoff::equal_jitter(raw, jitter)
    }
}

/// Engine-wide settings (the node's config).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Fail an attempt when the daemon sends nothing for this long.
    pub stall_timeout: Duration,
    /// The whole job, retries and backoff included, ends by then.
    pub deadline: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Free bytes that must remain on the destination filesystem.
    pub reserve_bytes: u64,
    /// How often (in bytes written) free space is checked during a pull.
    pub reserve_check_every: u64,
    /// The node-wide bandwidth cap, shared by all jobs.
    pub shared_limit: Option<BandwidthLimiter>,
    /// Also forward the cap to the daemon as `--bwlimit`.
    pub forward_bwlimit: bool,
    /// Protocol to announce.
    pub protocol: ProtocolVersion,
    /// Counts file bytes written, for a node's throughput figures.
    pub progress: Option<Arc<AtomicU64>>,
    /// The daemons' last greetings, shared by every pull of the node: a daemon pulled from
    /// before costs one round trip less (see [`PullOptions::greetings`]).
    pub greetings: Option<GreetingCache>,
    /// Counts attempts that failed in TLS (handshake, certificates, a refused client
    /// certificate), for a node's figures.
    pub tls_failures: Option<Arc<AtomicU64>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(6 * 3600),
            retry: RetryPolicy::default(),
            reserve_bytes: 0,
            reserve_check_every: 16 << 20,
            shared_limit: None,
            forward_bwlimit: false,
            protocol: ProtocolVersion::default(),
            progress: None,
            greetings: None,
            tls_failures: None,
        }
    }
}

/// A reserve threshold `headroom` bytes below the current free space of the
/// filesystem holding `path`: the pull may write about `headroom` bytes.
pub fn reserve_below_current_free(path: &Path, headroom: u64) -> io::Result<u64> {
    Ok(free_bytes(path)?.saturating_sub(headroom))
}

/// Free bytes available to us on the filesystem holding `path`
/// (`f_bavail · f_frsize`, as UBackup measured it). `path` or its nearest
/// existing ancestor is measured.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let mut p = path;
    loop {
        match rustix::fs::statvfs(p) {
            Ok(st) => return Ok(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(rustix::io::Errno::NOENT) => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(io::Error::from(io::ErrorKind::NotFound)),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Total bytes of the filesystem holding `path` (`f_blocks · f_frsize`), measured like
/// [`free_bytes`].
pub fn total_bytes(path: &Path) -> io::Result<u64> {
    let mut p = path;
    loop {
        match rustix::fs::statvfs(p) {
            Ok(st) => return Ok(st.f_blocks.saturating_mul(st.f_frsize)),
            Err(rustix::io::Errno::NOENT) => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(io::Error::from(io::ErrorKind::NotFound)),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// 1-based attempt number.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// Whether it could succeed on a retry.
    pub retryable: bool,
}

/// What a completed job produced.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// Where the file is (for a single-file source) or the destination directory.
    pub final_path: PathBuf,
    /// Size of the file(s) in the file list.
    pub size: u64,
    /// Whole-file checksum of a single file, as hex, with its algorithm.
    pub checksum: Option<(String, &'static str)>,
    /// Bytes read from the network.
    pub bytes_received: u64,
    /// File bytes that arrived as data.
    pub literal_bytes: u64,
    /// File bytes copied from the basis.
    pub matched_bytes: u64,
    /// The basis used, if any.
    pub basis: Option<String>,
    /// An identical file was already in place (a redelivered job).
    pub already_in_place: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time of the whole job.
    pub duration: Duration,
    /// The errors of the attempts that failed before the success.
    pub attempt_errors: Vec<AttemptError>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The file is verified and durable under its final name.
    Completed(JobReport),
    /// Free space is (or would fall) below the reserve: the job was not
    /// failed; it should be retried when there is room. Partial data, if
    /// any, is kept for resume and nothing is under the final name.
    PausedForDisk {
        /// Free bytes when the pause was decided.
        free: u64,
        /// The reserve.
        reserve: u64,
        /// Bytes the job still needed, if known.
        needed: Option<u64>,
    },
    /// The job failed; `retryable` says whether a later retry can help.
    Failed {
        /// The last error, in words (the daemon's own text included).
        reason: String,
        /// rsync-style exit code of the last error.
        exit_code: i32,
        /// Whether a later retry may succeed (retries were exhausted or the
        /// deadline passed).
        retryable: bool,
        /// Every attempt's error.
        attempt_errors: Vec<AttemptError>,
    },
    /// Shutdown interrupted the job; partial data is kept for resume.
    Cancelled,
}

/// A sink that stops the pull when free space falls under the reserve.
struct ReserveGuard<'a> {
    inner: &'a mut FsSink,
    dir: PathBuf,
    reserve: u64,
    every: u64,
    since_check: u64,
    tripped: Arc<AtomicBool>,
    last_free: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl ReserveGuard<'_> {
    fn check(&mut self) -> io::Result<()> {
        let free = free_bytes(&self.dir)?;
        self.last_free = free;
        if free < self.reserve {
            self.tripped.store(true, Ordering::SeqCst);
            return Err(io::Error::other(format!(
                "free space {free} fell below the reserve {}",
                self.reserve
            )));
        }
        Ok(())
    }
}

impl Sink for ReserveGuard<'_> {
    async fn plan(&mut self, list: &FileList) -> io::Result<Vec<FileIndex>> {
        self.inner.plan(list).await
    }
    async fn basis(
        &mut self,
        ndx: FileIndex,
        entry: &FileEntry,
    ) -> io::Result<Option<client::Basis>> {
        self.inner.basis(ndx, entry).await
    }
    async fn read_basis(&mut self, ndx: FileIndex, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.inner.read_basis(ndx, offset, len).await
    }
    async fn begin_file(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<()> {
        self.check()?;
        self.inner.begin_file(ndx, entry).await
    }
    async fn write(&mut self, ndx: FileIndex, data: &[u8]) -> io::Result<()> {
        self.since_check += data.len() as u64;
        if let Some(p) = &self.progress {
            p.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        if self.since_check >= self.every {
            self.since_check = 0;
            self.check()?;
        }
        self.inner.write(ndx, data).await
    }
    async fn end_file(&mut self, ndx: FileIndex, outcome: FileOutcome) -> io::Result<()> {
        self.inner.end_file(ndx, outcome).await
    }
    async fn not_sent(&mut self, ndx: FileIndex) -> io::Result<()> {
        self.inner.not_sent(ndx).await
    }
    async fn finish(&mut self, list: &FileList) -> io::Result<()> {
        self.inner.finish(list).await
    }
}

fn options(job: &PullJob, cfg: &EngineConfig) -> PullOptions {
    PullOptions {
        protocol: cfg.protocol,
        recursive: job.recursive,
        password: job.password.clone(),
        timeout: Some(cfg.stall_timeout),
        connect_timeout: cfg.connect_timeout,
        checksum_choice: job.checksum_choice,
        shared_limit: cfg.shared_limit.clone(),
        rate: job.rate,
        forward_bwlimit: cfg.forward_bwlimit,
        compress: job.compress.clone(),
        // A node job is retried (`attempts`): the one round trip saved per pull is worth
        // more to it than a redo within the session.
        early_end: true,
        greetings: cfg.greetings.clone(),
        tls: job.tls.clone(),
        ..PullOptions::default()
    }
}

/// Where a single-file job lands, or the directory for a tree.
fn final_path(job: &PullJob) -> PathBuf {
    let name = job.source.path.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || job.recursive {
        job.dest_dir.clone()
    } else {
        job.dest_dir.join(name)
    }
}

/// The partial file an interrupted pull of this single-file job left (`.ubackup-partial/`
/// next to the destination).
pub fn partial_path(job: &PullJob) -> PathBuf {
    let name = job.source.path.rsplit('/').next().unwrap_or_default();
    job.dest_dir
        .join(rsync_proto::client::PARTIAL_DIR)
        .join(name)
}

/// Bytes in this job's partial file (0 without one, or for a tree).
fn partial_len(job: &PullJob) -> u64 {
    if job.recursive || job.source.path.ends_with('/') || job.source.path.is_empty() {
        return 0;
    }
    std::fs::symlink_metadata(partial_path(job))
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len())
}

/// Runs one job to its outcome. `cancel` resolves at shutdown.
pub async fn run(job: &PullJob, cfg: &EngineConfig, cancel: impl Future<Output = ()>) -> Outcome {
    let started = Instant::now();
    tokio::pin!(cancel);
    let errors = std::sync::Mutex::new(Vec::new());
    let work = attempts(job, cfg, started, &errors);
    tokio::select! {
        o = tokio::time::timeout(cfg.deadline, work) => match o {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed {
                reason: format!("job deadline of {:?} passed", cfg.deadline),
                exit_code: 30,
                retryable: true,
                attempt_errors: errors.lock().map(|e| e.clone()).unwrap_or_default(),
            },
        },
        _ = &mut cancel => Outcome::Cancelled,
    }
}

/// The attempt loop. Each failed attempt is also recorded in `log`, so that
/// a deadline that cuts the loop short still reports them.
async fn attempts(
    job: &PullJob,
    cfg: &EngineConfig,
    started: Instant,
    log: &std::sync::Mutex<Vec<AttemptError>>,
) -> Outcome {
    if let Err(e) = std::fs::create_dir_all(&job.dest_dir) {
        return Outcome::Failed {
            reason: format!("cannot create {}: {e}", job.dest_dir.display()),
            exit_code: 11,
            retryable: false,
            attempt_errors: Vec::new(),
        };
    }
    let mut errors: Vec<AttemptError> = Vec::new();
    let opts = options(job, cfg);
    let dest = final_path(job);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Disk reserve before connecting.
        let mut free = match free_bytes(&job.dest_dir) {
            Ok(f) => f,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!(
                        "cannot measure free space on {}: {e}",
                        job.dest_dir.display()
                    ),
                    exit_code: 11,
                    retryable: true,
                    attempt_errors: errors,
                }
            }
        };
        // A file already in place with the expected size is most likely a
        // redelivered job that needs no room: let the pull decide (the guard
        // still stops any writing below the reserve).
        let needed = job.expected_size.filter(|&size| {
            !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size)
        });
        let want = cfg.reserve_bytes.saturating_add(needed.unwrap_or(0));
        if free < want {
            // This job's own partial file counts as written: the room it holds is room the
            // job has. The sink writes the whole file anew next to its partial (the partial
            // is only the delta basis), so when the job fits only with that room, the
            // partial goes and the file is pulled whole.
            let partial = partial_len(job);
            if partial > 0 && free.saturating_add(partial) >= want {
                tracing::info!(
                    partial,
                    free,
                    "the partial file of an earlier attempt holds the room this pull needs: \
                     removed, the file is pulled whole"
                );
                let _ = std::fs::remove_file(partial_path(job));
                free = free_bytes(&job.dest_dir).unwrap_or(0);
            }
            if free < want {
                return Outcome::PausedForDisk {
                    free,
                    reserve: cfg.reserve_bytes,
                    needed: needed.map(|n| n.saturating_sub(partial_len(job))),
                };
            }
        }
        let tripped = Arc::new(AtomicBool::new(false));
        let result = {
            // The destination directory exists, so a single file lands inside it.
            let sink = match FsSink::new(&job.dest_dir) {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Failed {
                        reason: format!("destination {}: {e}", job.dest_dir.display()),
                        exit_code: 11,
                        retryable: false,
                        attempt_errors: errors,
                    }
                }
            };
            let mut sink = sink.basis_policy(job.basis.clone());
            let mut guard = ReserveGuard {
                inner: &mut sink,
                dir: job.dest_dir.clone(),
                reserve: cfg.reserve_bytes,
                every: cfg.reserve_check_every.max(1),
                since_check: 0,
                tripped: tripped.clone(),
                last_free: free,
                progress: cfg.progress.clone(),
            };
            let r = client::pull(&job.source, &opts, &mut guard).await;
            let last_free = guard.last_free;
            (r, last_free)
        };
        match result {
            (Ok(report), _) => {
                return Outcome::Completed(job_report(report, dest, attempt, started, errors))
            }
            (Err(e), last_free) if tripped.load(Ordering::SeqCst) || is_out_of_space(&e) => {
                return Outcome::PausedForDisk {
                    free: last_free,
                    reserve: cfg.reserve_bytes,
                    needed,
                }
            }
            (Err(e), _) => {
                if let (client::Error::Tls(_), Some(n)) = (&e, &cfg.tls_failures) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                let retryable = e.is_retryable();
                tracing::warn!(attempt, retryable, source = %job.source, "pull failed: {e}");
                let failed = AttemptError {
                    attempt,
                    error: e.to_string(),
                    retryable,
                };
                if let Ok(mut l) = log.lock() {
                    l.push(failed.clone());
                }
                errors.push(failed);
                if !retryable || attempt >= cfg.retry.max_attempts {
                    return Outcome::Failed {
                        reason: e.to_string(),
                        exit_code: e.exit_code(),
                        retryable,
                        attempt_errors: errors,
                    };
                }
                let delay = cfg.retry.delay(attempt, rand::random::<f64>());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The disk filled up although the reserve had not tripped (another writer,
/// a reserve of 0): that is a pause, not a failure of the job.
fn is_out_of_space(e: &client::Error) -> bool {
    matches!(e, client::Error::Sink(io) if io.kind() == io::ErrorKind::StorageFull
        || io.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()))
}

fn job_report(
    r: PullReport,
    dest: PathBuf,
    attempts: u32,
    started: Instant,
    errors: Vec<AttemptError>,
) -> JobReport {
    let algorithm = r.session.map(|s| s.checksum.name()).unwrap_or("");
    JobReport {
        final_path: dest,
        size: r.stats.sender[2].max(0) as u64,
        checksum: (r.checksums.len() == 1).then(|| (hex::encode(&r.checksums[0].1), algorithm)),
        bytes_received: r.stats.bytes_received,
        literal_bytes: r.stats.literal_bytes,
        matched_bytes: r.stats.matched_bytes,
        basis: (r.bases.len() == 1).then(|| r.bases[0].1.clone()),
        already_in_place: r.stats.files_transferred == 0 && r.entries > 0,
        attempts,
        duration: started.elapsed(),
        attempt_errors: errors,
    }
}

/// Recovers the temp files a dead process left for `leaf` in `dir` into the node's partial
/// directory: [`rsync_proto::client::salvage_stale_temps`] with
/// [`rsync_proto::client::PARTIAL_DIR`]. Returns how many temp files were found.
///
/// Only call it for a file no live pull of this process is writing.
pub fn salvage_stale_temps(dir: &Path, leaf: &str) -> io::Result<usize> {
    rsync_proto::client::salvage_stale_temps(dir, leaf, rsync_proto::client::PARTIAL_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(9, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(40, 0.5), Duration::from_millis(7500));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(0, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn free_space_of_a_missing_path_is_its_parents() {
        let d = tempfile::tempdir().unwrap();
        let f = free_bytes(&d.path().join("not/yet/here")).unwrap();
        assert!(f > 0);
        let r = reserve_below_current_free(d.path(), 1 << 20).unwrap();
        assert!(r < f);
    }
}
