//! Bandwidth-limiter accuracy: pulls from a real `rsync --daemon` (3.5.0) through one
//! [`BandwidthLimiter`] (`PullOptions::shared_limit`) at 1, 10 and 50 MiB/s, with one pull
//! and with four concurrent pulls sharing the limiter, and how close the achieved average
//! throughput comes to the cap (the target is ±5%).
//!
//! ```text
//! cargo bench -p ubackup-benches --bench limiter
//! UBACKUP_BENCH_LIMITER_SECS=10 cargo bench -p ubackup-benches --bench limiter
//! ```
//!
//! Each run pulls a 512 MiB random file (too large to finish at any cap within the run)
//! into a sink that discards the data, so the disk plays no part. File bytes are counted
//! from the pulls' events (`FileData`, `CopyBlock`), from the first byte of the run to the
//! moment the pulls are cancelled (their futures dropped) after `UBACKUP_BENCH_LIMITER_SECS`
//! (default 6) seconds. Protocol overhead (a few bytes per 32 KiB) is metered by the limiter
//! but not counted, so a perfect limiter reads a hair under the cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rsync_proto::client::{pull_with, PullOptions, Source};
use rsync_proto::limit::{BandwidthLimiter, Rate};
use rsync_proto::Event;
use ubackup_benches::Discard;
use ubackup_testkit::{require_rsync, write_random_file, DaemonBuilder, Module, RsyncVersion};

const MIB: u64 = 1 << 20;
/// Caps measured, in MiB/s.
const CAPS: [u64; 3] = [1, 10, 50];
/// Concurrent pulls sharing one limiter.
const PULLS: [usize; 2] = [1, 4];
/// Size of the file pulled: more than any run can fetch.
const FILE_MIB: u64 = 512;
/// Allowed error of the average throughput.
const TARGET_PERCENT: f64 = 5.0;

/// One run: the file bytes counted, per pull, and the time from the first byte to the
/// cancellation.
struct Measured {
    per_pull: Vec<u64>,
    window: Duration,
}

impl Measured {
    fn total(&self) -> u64 {
        self.per_pull.iter().sum()
    }
    fn mib_per_sec(bytes: u64, window: Duration) -> f64 {
        bytes as f64 / MIB as f64 / window.as_secs_f64()
    }
}

/// Runs `pulls` pulls of `source` through one limiter at `cap` bytes/s and cancels them
/// after `run_for`.
async fn measure(source: &Source, cap: u64, pulls: usize, run_for: Duration) -> Measured {
    let limiter = BandwidthLimiter::new(Some(Rate::bytes_per_sec(cap)));
    let first_byte: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let counters: Vec<Arc<AtomicU64>> = (0..pulls).map(|_| Arc::default()).collect();
    let stop = tokio::time::Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for counter in &counters {
        let (source, counter, first_byte) = (source.clone(), counter.clone(), first_byte.clone());
        let opts = PullOptions {
            shared_limit: Some(limiter.clone()),
            timeout: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
            ..PullOptions::default()
        };
        tasks.spawn(async move {
            let mut sink = Discard;
            let pulling = pull_with(&source, &opts, &mut sink, |ev| {
                let n = match ev {
                    Event::FileData(_, data) => data.len() as u64,
                    Event::CopyBlock { len, .. } => u64::from(*len),
                    _ => 0,
                };
                if n > 0 {
                    first_byte.get_or_init(Instant::now);
                    counter.fetch_add(n, Ordering::Relaxed);
                }
            });
            // Cancelled by dropping the pull, as a shutdown does.
            match tokio::time::timeout_at(stop, pulling).await {
                Err(_elapsed) => {}
                Ok(Ok(_)) => {
                    panic!("the pull finished before it was cancelled: make the file larger")
                }
                Ok(Err(e)) => panic!("pull failed: {e}"),
            }
        });
    }
    tokio::time::sleep_until(stop).await;
    let end = Instant::now();
    let per_pull = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    while let Some(r) = tasks.join_next().await {
        r.expect("pull task");
    }
    let start = *first_byte.get().expect("no byte arrived");
    Measured {
        per_pull,
        window: end - start,
    }
}

fn main() {
    if require_rsync(RsyncVersion::V3_5_0).is_none() {
        eprintln!("rsync 3.5.0 not found: nothing to measure");
        return;
    }
    let secs: u64 = std::env::var("UBACKUP_BENCH_LIMITER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
        .max(5);
    let run_for = Duration::from_secs(secs);

    let data = tempfile::tempdir().expect("tempdir");
    let generating = Instant::now();
    write_random_file(&data.path().join("big.bin"), FILE_MIB * MIB, 1).expect("test file");
    eprintln!(
        "{FILE_MIB} MiB test file written in {:.1?}",
        generating.elapsed()
    );
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("data", data.path()))
        .start()
        .expect("daemon");
    let source: Source = daemon.url("data/big.bin").parse().expect("source");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "{:>10}  {:>5}  {:>14}  {:>10}  {:>8}  {:>22}",
        "cap MiB/s", "pulls", "achieved MiB/s", "error %", "±5%", "per pull MiB/s"
    );
    let mut misses = 0;
    for cap in CAPS {
        for pulls in PULLS {
            let m = rt.block_on(measure(&source, cap * MIB, pulls, run_for));
            let achieved = Measured::mib_per_sec(m.total(), m.window);
            let error = (achieved - cap as f64) / cap as f64 * 100.0;
            let ok = error.abs() <= TARGET_PERCENT;
            misses += usize::from(!ok);
            let shares: Vec<String> = m
                .per_pull
                .iter()
                .map(|&b| format!("{:.2}", Measured::mib_per_sec(b, m.window)))
                .collect();
            println!(
                "{cap:>10}  {pulls:>5}  {achieved:>14.3}  {error:>+10.2}  {:>8}  {:>22}",
                if ok { "ok" } else { "MISS" },
                shares.join(" ")
            );
        }
    }
    println!(
        "{} s per run, measured from the first byte; {misses} run(s) outside ±{TARGET_PERCENT}%",
        secs
    );
}
