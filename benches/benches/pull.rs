//! Whole-file pulls from a real `rsync --daemon` (3.5.0): our library against the stock
//! `rsync` client, same daemon, same data, same run.
//!
//! ```text
//! cargo bench -p ubackup-benches --bench pull
//! UBACKUP_BENCH_BIG_MIB=1024 cargo bench -p ubackup-benches --bench pull   # the 1 GiB case
//! UBACKUP_BENCH_DELTA_MIB=1024 cargo bench -p ubackup-benches --bench pull -- delta
//! ```
//!
//! Byte counts (delta vs stock, hourly snapshots) come from
//! `benches/scripts/delta-vs-rsync.sh`; wall-time comparisons of the binaries from
//! `benches/scripts/compare-with-rsync.sh`.
//!
//! Criterion reports time and throughput per scenario; compare the `rsync-proto` and
//! `stock-rsync` lines of one scenario. The machine is shared: read medians.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rsync_proto::client::{self, FsSink, PullOptions, Source};
use ubackup_testkit::{
    make_tree, require_rsync, write_random_file, DaemonBuilder, Module, RsyncVersion,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pull_with_library(rt: &tokio::runtime::Runtime, source: &Source, dest: &Path) {
    let _ = std::fs::remove_dir_all(dest);
    let opts = PullOptions {
        recursive: true,
        ..PullOptions::default()
    };
    rt.block_on(async {
        let mut sink = FsSink::new(dest).expect("sink");
        client::pull(source, &opts, &mut sink).await.expect("pull");
    });
}

fn pull_with_rsync(rsync: &Path, url: &str, dest: &Path) {
    let _ = std::fs::remove_dir_all(dest);
    let status = Command::new(rsync)
        .args(["-rt", "--no-inc-recursive", url])
        .arg(dest)
        .status()
        .expect("run rsync");
    assert!(status.success(), "stock rsync failed: {status}");
}

fn bench_pulls(c: &mut Criterion) {
    let Some(rsync) = require_rsync(RsyncVersion::V3_5_0) else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let big_mib: u64 = std::env::var("UBACKUP_BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let big = data.path().join("big");
    write_random_file(&big.join("big.bin"), big_mib << 20, 1).expect("big file");
    let tree = data.path().join("tree");
    let tree_bytes = make_tree(&tree, 5000, 2).expect("tree");
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("big", &big))
        .module(Module::new("tree", &tree))
        .start()
        .expect("daemon");
    let rt = runtime();
    let out = tempfile::tempdir().expect("tempdir");
    let dest = out.path().join("dest");

    let mut group = c.benchmark_group("whole-file");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, module, bytes) in [
        (format!("one-{big_mib}MiB-file"), "big/", big_mib << 20),
        ("5000-small-files".to_string(), "tree/", tree_bytes),
    ] {
        let url = daemon.url(module);
        let source: Source = url.parse().expect("source");
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(BenchmarkId::new("rsync-proto", &name), &source, |b, s| {
            b.iter(|| pull_with_library(&rt, s, &dest))
        });
        group.bench_with_input(BenchmarkId::new("stock-rsync", &name), &url, |b, u| {
            b.iter(|| pull_with_rsync(&rsync, u, &dest))
        });
    }
    group.finish();
}

/// Overwrites `count` scattered 4 KiB runs of `path` (deterministic).
fn scatter_edits(path: &Path, count: u64, seed: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (len - 4096)) & !4095;
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&[(i as u8) ^ 0x5a; 4096]).expect("edit");
    }
}

/// Delta pulls: the destination holds the previous version (older mtime) under the same
/// name; both clients use it as the basis.
fn bench_delta(c: &mut Criterion) {
    let Some(rsync) = require_rsync(RsyncVersion::V3_5_0) else {
        return;
    };
    let mib: u64 = std::env::var("UBACKUP_BENCH_DELTA_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let data = tempfile::tempdir().expect("tempdir");
    let old = data.path().join("old.bin");
    write_random_file(&old, mib << 20, 3).expect("old");
    ubackup_testkit::set_mtime(&old, 1_500_000_000).expect("mtime");
    let src = data.path().join("src");
    std::fs::create_dir_all(&src).expect("src dir");
    std::fs::copy(&old, src.join("f.bin")).expect("copy");
    scatter_edits(&src.join("f.bin"), 16, 9);
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("src", &src))
        .start()
        .expect("daemon");
    let rt = runtime();
    let out = tempfile::tempdir().expect("tempdir");
    let dest = out.path().join("f.bin");
    let reset = || {
        std::fs::copy(&old, &dest).expect("basis");
        ubackup_testkit::set_mtime(&dest, 1_500_000_000).expect("mtime");
    };
    let url = daemon.url("src/f.bin");
    let source: Source = url.parse().expect("source");
    let mut group = c.benchmark_group("delta");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(mib << 20));
    let name = format!("{mib}MiB-16-edits");
    group.bench_function(BenchmarkId::new("rsync-proto", &name), |b| {
        b.iter_batched(
            reset,
            |()| {
                rt.block_on(async {
                    let mut sink = FsSink::new(&dest).expect("sink");
                    let r = client::pull(&source, &PullOptions::default(), &mut sink)
                        .await
                        .expect("pull");
                    assert!(r.stats.matched_bytes > 0, "no block matched");
                })
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new("stock-rsync", &name), |b| {
        b.iter_batched(
            reset,
            |()| {
                let st = Command::new(&rsync)
                    .args(["-t", &url])
                    .arg(&dest)
                    .status()
                    .expect("rsync");
                assert!(st.success());
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_pulls, bench_delta);
criterion_main!(benches);
