//! The pull engine (`ubackup_puller::pull::run`) against real `rsync --daemon`s (Debian's
//! 3.5.0 and 3.2.7, see `ubackup_testkit::rsync`) on loopback ports: one job in, one outcome
//! out.
//!
//! Covered: a verified pull and its redelivery (an identical file in place is a no-op); a
//! daemon killed mid-file and restarted on the same port (the retry resumes from the partial
//! data); a daemon that stalls (stall timeout on every attempt, then a retryable failure);
//! failures that a retry cannot fix (wrong password, missing file: one attempt only); the
//! daemon's `max connections` (retried with backoff until a slot frees); the disk reserve,
//! crossed during the pull and refused before connecting, and a redelivered job whose file
//! is already in place, which needs no room; cancellation; the job deadline.
//!
//! A missing rsync binary skips that version, or fails the test when
//! `UBACKUP_INTEROP=required`. Slow transfers are made slow with the job's own bandwidth cap
//! (`PullJob::rate`), and every retry policy uses short delays, so the file runs in seconds.

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rsync_proto::client::{BasisPolicy, Source, PARTIAL_DIR};
use rsync_proto::limit::Rate;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{RwLock, RwLockReadGuard};
use ubackup_puller::pull::{
    reserve_below_current_free, run, AttemptError, EngineConfig, JobReport, Outcome, PullJob,
    RetryPolicy,
};
use ubackup_testkit::{
    compare_files, in_partial_dir, list_tree, require_rsync, set_mtime, temp_files,
    write_random_file, DaemonBuilder, Module, RsyncVersion,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Every test writes and deletes files on the filesystem of the temp dir; the disk-reserve
/// tests measure its free space and must not see other tests' data come and go meanwhile.
/// They take this lock for writing, every other test for reading.
static DISK: RwLock<()> = RwLock::const_new(());

/// Shares the temp filesystem with other tests (see [`DISK`]). Take it before any temp dir,
/// so that it is released after they are removed.
async fn shared_disk() -> RwLockReadGuard<'static, ()> {
    DISK.read().await
}

/// The stock releases whose binary is present. `require_rsync` panics instead when one is
/// missing and `UBACKUP_INTEROP=required`.
fn versions() -> Vec<RsyncVersion> {
    RsyncVersion::ALL
        .into_iter()
        .filter(|&v| require_rsync(v).is_some())
        .collect()
}

/// Whether rsync 3.5.0 is there (the version the single-version tests use).
fn have_3_5_0() -> bool {
    require_rsync(RsyncVersion::V3_5_0).is_some()
}

/// Writes `size` random bytes (from `seed`) to `root/rel`, mode 0640, a fixed mtime.
fn write_file(root: &Path, rel: &str, size: u64, seed: u64) -> anyhow::Result<PathBuf> {
    let path = root.join(rel);
    write_random_file(&path, size, seed)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
    set_mtime(&path, 1_600_000_000 + seed as i64)?;
    Ok(path)
}

fn source(url: &str) -> anyhow::Result<Source> {
    url.parse::<Source>()
        .with_context(|| format!("parsing {url}"))
}

/// A single-file job into `dest_dir`, same-name basis, no cap.
fn job(source: Source, dest_dir: &Path) -> PullJob {
    PullJob {
        source,
        password: None,
        checksum_choice: None,
        dest_dir: dest_dir.to_path_buf(),
        basis: BasisPolicy::SameName,
        expected_size: None,
        rate: None,
        recursive: false,
        compress: None,
        tls: None,
    }
}

/// Short timeouts and retry delays, no reserve.
fn config() -> EngineConfig {
    EngineConfig {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(60),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        },
        ..EngineConfig::default()
    }
}

/// A shutdown that never comes.
fn no_cancel() -> impl Future<Output = ()> {
    std::future::pending()
}

/// The report of a completed job, or an error showing the outcome and the daemon's log.
fn completed(outcome: Outcome, log: &str) -> anyhow::Result<JobReport> {
    match outcome {
        Outcome::Completed(r) => Ok(r),
        other => bail!("expected Completed, got {other:?}\n--- daemon log:\n{log}"),
    }
}

/// A failed job's fields.
#[derive(Debug)]
struct Failure {
    reason: String,
    exit_code: i32,
    retryable: bool,
    attempt_errors: Vec<AttemptError>,
}

fn failed(outcome: Outcome, log: &str) -> anyhow::Result<Failure> {
    match outcome {
        Outcome::Failed {
            reason,
            exit_code,
            retryable,
            attempt_errors,
        } => Ok(Failure {
            reason,
            exit_code,
            retryable,
            attempt_errors,
        }),
        other => bail!("expected Failed, got {other:?}\n--- daemon log:\n{log}"),
    }
}

/// The interrupted-pull state: nothing under `name` in `dest`, no temp file, and the data
/// kept in the partial directory (if any) a proper prefix of `original`. Returns the size
/// kept.
fn only_partial_left(dest: &Path, name: &str, original: &Path) -> anyhow::Result<Option<u64>> {
    let left = list_tree(dest)?;
    ensure!(
        !left.contains(name),
        "{name} under its final name: {left:?}"
    );
    let temps = temp_files(dest)?;
    ensure!(temps.is_empty(), "temp files left behind: {temps:?}");
    ensure!(
        left.iter().all(|rel| in_partial_dir(rel)),
        "left outside the partial directory: {left:?}"
    );
    let partial = dest.join(PARTIAL_DIR).join(name);
    if !partial.exists() {
        return Ok(None);
    }
    let kept = fs::read(&partial)?;
    let full = fs::read(original)?;
    ensure!(!kept.is_empty(), "empty partial file kept");
    ensure!(
        kept.len() < full.len() && full.starts_with(&kept),
        "partial data ({} bytes) is not a proper prefix of {} ({} bytes)",
        kept.len(),
        original.display(),
        full.len()
    );
    Ok(Some(kept.len() as u64))
}

/// Waits until a temp file `.NAME.XXXXXX` in `dir` holds at least `bytes`.
async fn wait_for_temp_file(
    dir: &Path,
    name: &str,
    bytes: u64,
    within: Duration,
) -> anyhow::Result<u64> {
    let prefix = format!(".{name}.");
    let deadline = Instant::now() + within;
    loop {
        let mut largest = 0;
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    largest = largest.max(e.metadata().map(|m| m.len()).unwrap_or(0));
                }
            }
        }
        if largest >= bytes {
            return Ok(largest);
        }
        ensure!(
            Instant::now() < deadline,
            "no temp file of {name} with {bytes} bytes in {within:?} (largest {largest})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port with nothing listening on it (a moment ago).
fn closed_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A TCP relay to a daemon that, on every connection, passes `budget` bytes from the daemon
/// to the client and then goes silent (relaying nothing more, closing nothing) until the
/// client leaves. Stops relaying when dropped.
struct StallingRelay {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingRelay {
    async fn start(daemon: SocketAddr, budget: u64) -> anyhow::Result<StallingRelay> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when the relay is dropped) ends every connection.
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                relays.spawn(relay_then_stall(client, daemon, budget));
            }
        });
        Ok(StallingRelay {
            addr,
            connections,
            task,
        })
    }

    fn url(&self, module_path: &str) -> String {
        format!("rsync://{}/{module_path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_then_stall(client: tokio::net::TcpStream, daemon: SocketAddr, budget: u64) {
    let Ok(server) = tokio::net::TcpStream::connect(daemon).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Client to daemon until the client leaves; a daemon that went away (it times out
    // writing to us) must not end the client's connection.
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut daemon_gone = false;
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !daemon_gone => daemon_gone = sw.write_all(&buf[..n]).await.is_err(),
                Ok(_) => {}
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = budget;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match sr.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    left -= n as u64;
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_a_verified_file_and_a_redelivered_job_is_a_no_op() -> anyhow::Result<()> {
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "file.bin", 4 * MIB, 1)?;
    let mut sums = BTreeSet::new();
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let cell = format!("rsync {}", v.label());
        let dest = tempfile::tempdir()?;
        let dest_dir = dest.path().join("not yet there");
        let job = job(source(&daemon.url("data/file.bin"))?, &dest_dir);

        let r = completed(run(&job, &config(), no_cancel()).await, &daemon.log())?;
        assert_eq!(r.final_path, dest_dir.join("file.bin"), "{cell}");
        compare_files(&original, &r.final_path).with_context(|| cell.clone())?;
        let (hex, algorithm) = r.checksum.clone().context("no checksum reported")?;
        assert_eq!(algorithm, "xxh128", "{cell}");
        assert!(
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{cell}: checksum {hex:?}"
        );
        sums.insert(hex);
        assert_eq!(r.size, 4 * MIB, "{cell}");
        assert_eq!(r.literal_bytes, 4 * MIB, "{cell}");
        assert_eq!(r.matched_bytes, 0, "{cell}");
        assert!(r.bytes_received > 4 * MIB, "{cell}: {r:?}");
        assert_eq!(r.attempts, 1, "{cell}");
        assert!(r.attempt_errors.is_empty(), "{cell}: {r:?}");
        assert!(!r.already_in_place, "{cell}");
        assert_eq!(
            list_tree(&dest_dir)?,
            BTreeSet::from(["file.bin".to_string()]),
            "{cell}"
        );

        // The same job again (a redelivered message): nothing to do, and that is a success.
        let again = completed(run(&job, &config(), no_cancel()).await, &daemon.log())?;
        assert!(again.already_in_place, "{cell}: {again:?}");
        assert_eq!(again.literal_bytes, 0, "{cell}");
        assert_eq!(again.attempts, 1, "{cell}");
        assert_eq!(again.final_path, dest_dir.join("file.bin"), "{cell}");
        compare_files(&original, &again.final_path).with_context(|| cell.clone())?;
    }
    // Same file, same checksum, whichever daemon sent it.
    assert!(sums.len() <= 1, "{sums:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_file_and_restarted_is_retried_and_resumed() -> anyhow::Result<()> {
    if !have_3_5_0() {
        return Ok(());
    }
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "big.bin", 32 * MIB, 2)?;
    let module = Module::new("data", data.path());
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(module.clone())
        .start()?;
    let port = daemon.port();
    let dest = tempfile::tempdir()?;
    let dest_dir = dest.path().to_path_buf();
    let job = PullJob {
        // 8 MiB/s: four seconds for the whole file.
        rate: Some(Rate::bytes_per_sec(8 * MIB)),
        ..job(source(&daemon.url("data/big.bin"))?, &dest_dir)
    };
    let cfg = EngineConfig {
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
        },
        ..config()
    };
    let started = Instant::now();
    let engine = tokio::spawn(async move { run(&job, &cfg, no_cancel()).await });

    // A second's worth of data has arrived: kill the daemon with its connection, as a
    // service restart would, and start it again where the job expects it.
    let written = wait_for_temp_file(&dest_dir, "big.bin", 8 * MIB, Duration::from_secs(10))
        .await
        .with_context(|| daemon.log())?;
    let killed_at = started.elapsed();
    daemon.kill_with_connections();
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(module)
        .port(port)
        .start()?;

    let outcome = tokio::time::timeout(Duration::from_secs(60), engine).await??;
    let r = completed(outcome, &daemon.log())?;
    assert!(r.attempts >= 2, "{r:?}");
    assert!(!r.attempt_errors.is_empty(), "{r:?}");
    assert!(
        r.attempt_errors.iter().all(|e| e.retryable),
        "{:?}",
        r.attempt_errors
    );
    // The retry started from what the first attempt kept.
    assert!(r.matched_bytes > 0, "{r:?}");
    assert_eq!(r.matched_bytes + r.literal_bytes, 32 * MIB, "{r:?}");
    assert!(
        r.basis.as_deref().is_some_and(|b| b.contains(PARTIAL_DIR)),
        "{r:?}"
    );
    compare_files(&original, &r.final_path)?;
    assert_eq!(
        list_tree(&dest_dir)?,
        BTreeSet::from(["big.bin".to_string()]),
        "partial data or temp files left behind"
    );
    eprintln!(
        "killed after {killed_at:?} with {written} bytes written; {} attempts, \
         {} bytes matched, {} literal, errors {:?}, {:?} in all",
        r.attempts, r.matched_bytes, r.literal_bytes, r.attempt_errors, r.duration
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_daemon_times_out_on_every_attempt_and_fails_retryably() -> anyhow::Result<()> {
    if !have_3_5_0() {
        return Ok(());
    }
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "big.bin", 16 * MIB, 3)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()?;
    let relay = StallingRelay::start(daemon.addr(), MIB).await?;
    let dest = tempfile::tempdir()?;
    let job = job(source(&relay.url("data/big.bin"))?, dest.path());
    let cfg = EngineConfig {
        stall_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        },
        ..config()
    };
    let started = Instant::now();
    let f = failed(run(&job, &cfg, no_cancel()).await, &daemon.log())?;
    let took = started.elapsed();
    assert!(f.retryable, "{f:?}");
    assert_eq!(f.exit_code, 30, "{f:?}");
    assert_eq!(f.attempt_errors.len(), 2, "{f:?}");
    for (i, e) in f.attempt_errors.iter().enumerate() {
        assert_eq!(e.attempt, i as u32 + 1, "{f:?}");
        assert!(e.retryable, "{f:?}");
        assert!(e.error.contains("timed out"), "{f:?}");
    }
    assert!(f.reason.contains("timed out"), "{f:?}");
    assert_eq!(relay.connections(), 2);
    // Two stall timeouts of a second, one backoff of at most 100 ms, two setups.
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    only_partial_left(dest.path(), "big.bin", &original)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_after_one_attempt() -> anyhow::Result<()> {
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    write_file(data.path(), "secret.bin", 5000, 4)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("secret", data.path()).auth("alice", "correct horse"))
            .start()?;
        let cell = format!("rsync {}", v.label());
        let dest = tempfile::tempdir()?;
        let url = format!(
            "rsync://alice@127.0.0.1:{}/secret/secret.bin",
            daemon.port()
        );
        let job = PullJob {
            password: Some(b"wrong".to_vec()),
            ..job(source(&url)?, dest.path())
        };
        let cfg = EngineConfig {
            retry: RetryPolicy {
                max_attempts: 5,
                ..config().retry
            },
            ..config()
        };
        let f = failed(run(&job, &cfg, no_cancel()).await, &daemon.log())?;
        assert!(!f.retryable, "{cell}: {f:?}");
        assert_eq!(f.exit_code, 5, "{cell}: {f:?}");
        assert_eq!(f.attempt_errors.len(), 1, "{cell}: {f:?}");
        assert!(!f.attempt_errors[0].retryable, "{cell}: {f:?}");
        assert!(f.reason.contains("auth failed"), "{cell}: {f:?}");
        assert!(list_tree(dest.path())?.is_empty(), "{cell}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_fails_after_one_attempt_with_23() -> anyhow::Result<()> {
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    write_file(data.path(), "present.bin", 10, 5)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let cell = format!("rsync {}", v.label());
        let dest = tempfile::tempdir()?;
        let job = job(source(&daemon.url("data/missing.bin"))?, dest.path());
        let f = failed(run(&job, &config(), no_cancel()).await, &daemon.log())?;
        assert!(!f.retryable, "{cell}: {f:?}");
        assert_eq!(f.exit_code, 23, "{cell}: {f:?}");
        assert_eq!(f.attempt_errors.len(), 1, "{cell}: {f:?}");
        // The daemon's own words are in the reason.
        assert!(f.reason.contains("missing.bin"), "{cell}: {f:?}");
        assert!(list_tree(dest.path())?.is_empty(), "{cell}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_retried_until_a_slot_frees() -> anyhow::Result<()> {
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "file.bin", 256 * KIB, 6)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("limited", data.path()).extra("max connections = 1"))
            .start()?;
        let cell = format!("rsync {}", v.label());
        let slot = daemon.hold_module_slot("limited")?;
        let dest = tempfile::tempdir()?;
        let job = job(source(&daemon.url("limited/file.bin"))?, dest.path());
        // Delays of 100-200, 200-400, 400-800 ms...: at least 700 ms before the 4th attempt.
        let cfg = EngineConfig {
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
            },
            ..config()
        };
        let engine = tokio::spawn(async move { run(&job, &cfg, no_cancel()).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(slot);
        let outcome = tokio::time::timeout(Duration::from_secs(30), engine).await??;
        let r = completed(outcome, &daemon.log())?;
        assert!(r.attempts >= 2, "{cell}: {r:?}");
        assert_eq!(
            r.attempt_errors.len() as u32,
            r.attempts - 1,
            "{cell}: {r:?}"
        );
        let first = &r.attempt_errors[0];
        assert!(first.retryable, "{cell}: {r:?}");
        assert!(first.error.contains("max connections"), "{cell}: {r:?}");
        compare_files(&original, &r.final_path).with_context(|| cell.clone())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_the_disk_reserve_mid_file_pauses_the_job() -> anyhow::Result<()> {
    if !have_3_5_0() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "big.bin", 64 * MIB, 7)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()?;
    let dest = tempfile::tempdir()?;
    // Nobody else writes or deletes while free space is measured and consumed.
    let disk = DISK.write().await;
    let cfg = EngineConfig {
        reserve_bytes: reserve_below_current_free(dest.path(), 8 * MIB)?,
        reserve_check_every: MIB,
        ..config()
    };
    let job = job(source(&daemon.url("data/big.bin"))?, dest.path());
    let outcome = run(&job, &cfg, no_cancel()).await;
    drop(disk);
    match outcome {
        Outcome::PausedForDisk {
            free,
            reserve,
            needed,
        } => {
            assert_eq!(reserve, cfg.reserve_bytes);
            assert!(free < reserve, "free {free}, reserve {reserve}");
            assert_eq!(needed, None);
        }
        other => bail!("expected PausedForDisk, got {other:?}"),
    }
    let kept = only_partial_left(dest.path(), "big.bin", &original)?;
    eprintln!("paused with {kept:?} bytes kept for resume");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_size_beyond_the_reserve_pauses_without_connecting() -> anyhow::Result<()> {
    let dest = tempfile::tempdir()?;
    let dest_dir = dest.path().join("out");
    // Nothing listens there: a job that tried to connect would fail.
    let src = source(&format!(
        "rsync://127.0.0.1:{}/data/big.bin",
        closed_port()?
    ))?;
    let disk = DISK.write().await;
    let cfg = EngineConfig {
        reserve_bytes: reserve_below_current_free(dest.path(), MIB)?,
        retry: RetryPolicy {
            max_attempts: 1,
            ..config().retry
        },
        ..config()
    };
    let job = PullJob {
        expected_size: Some(64 * MIB),
        ..job(src, &dest_dir)
    };
    let started = Instant::now();
    let outcome = run(&job, &cfg, no_cancel()).await;
    drop(disk);
    match outcome {
        Outcome::PausedForDisk {
            free,
            reserve,
            needed,
        } => {
            assert_eq!(reserve, cfg.reserve_bytes);
            assert_eq!(needed, Some(64 * MIB));
            assert!(free < reserve + 64 * MIB, "free {free}, reserve {reserve}");
        }
        other => bail!("expected PausedForDisk, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(list_tree(&dest_dir)?.is_empty());

    // The same job, small enough to fit: it does connect (and finds nobody).
    let fits = PullJob {
        expected_size: Some(KIB),
        ..job
    };
    let f = failed(run(&fits, &cfg, no_cancel()).await, "")?;
    assert_eq!(f.exit_code, 10, "{f:?}");
    assert!(f.retryable, "{f:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_keeps_partial_data_and_nothing_else() -> anyhow::Result<()> {
    if !have_3_5_0() {
        return Ok(());
    }
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "big.bin", 32 * MIB, 8)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()?;
    let dest = tempfile::tempdir()?;
    let job = PullJob {
        rate: Some(Rate::bytes_per_sec(8 * MIB)),
        ..job(source(&daemon.url("data/big.bin"))?, dest.path())
    };
    let started = Instant::now();
    let outcome = run(&job, &config(), tokio::time::sleep(Duration::from_secs(1))).await;
    let took = started.elapsed();
    ensure!(
        matches!(outcome, Outcome::Cancelled),
        "expected Cancelled, got {outcome:?}\n--- daemon log:\n{}",
        daemon.log()
    );
    // The whole pull would take 4 s at 8 MiB/s: finishing sooner means it was cancelled.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    let kept = only_partial_left(dest.path(), "big.bin", &original)?;
    assert!(kept.is_some(), "a second of data was not kept for resume");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_fails_a_slow_job() -> anyhow::Result<()> {
    if !have_3_5_0() {
        return Ok(());
    }
    let _disk = shared_disk().await;
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "big.bin", 32 * MIB, 9)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()?;
    let dest = tempfile::tempdir()?;
    let job = PullJob {
        rate: Some(Rate::bytes_per_sec(4 * MIB)),
        ..job(source(&daemon.url("data/big.bin"))?, dest.path())
    };
    let cfg = EngineConfig {
        deadline: Duration::from_secs(1),
        ..config()
    };
    let started = Instant::now();
    let f = failed(run(&job, &cfg, no_cancel()).await, &daemon.log())?;
    let took = started.elapsed();
    assert!(f.reason.contains("deadline"), "{f:?}");
    assert!(f.retryable, "{f:?}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");
    // The whole pull would take 8 s at 4 MiB/s; leave slack for a loaded machine.
    assert!(took < Duration::from_secs(6), "took {took:?}");
    only_partial_left(dest.path(), "big.bin", &original)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_job_completes_when_its_file_is_in_place_on_a_nearly_full_disk(
) -> anyhow::Result<()> {
    // A job whose file was pulled but whose acknowledgement was lost comes again. Its file
    // took the room it needed, so the disk now has less than the file's size above the
    // reserve, but nothing has to be written: the job must complete as a no-op, not pause
    // until room that it does not need is freed.
    if !have_3_5_0() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let original = write_file(data.path(), "file.bin", 4 * MIB, 10)?;
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()?;
    let dest = tempfile::tempdir()?;
    let job = PullJob {
        expected_size: Some(4 * MIB),
        ..job(source(&daemon.url("data/file.bin"))?, dest.path())
    };
    let disk = DISK.write().await;
    let first = completed(run(&job, &config(), no_cancel()).await, &daemon.log())?;
    assert!(!first.already_in_place);
    // Free space is 3 MiB above the reserve: the file would not fit again, but it is there.
    let cfg = EngineConfig {
        reserve_bytes: reserve_below_current_free(dest.path(), 3 * MIB)?,
        ..config()
    };
    let outcome = run(&job, &cfg, no_cancel()).await;
    drop(disk);
    let again = completed(outcome, &daemon.log())?;
    assert!(again.already_in_place, "{again:?}");
    assert_eq!(again.literal_bytes, 0, "{again:?}");
    compare_files(&original, &again.final_path)?;
    Ok(())
}
