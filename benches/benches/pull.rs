//! Whole-file pulls from a real `rsync --daemon` (3.5.0): our library against the stock
//! `rsync` client, same daemon, same data, same run.
//!
//! ```text
//! cargo bench -p ubackup-benches --bench pull
//! UBACKUP_BENCH_BIG_MIB=1024 cargo bench -p ubackup-benches --bench pull   # the 1 GiB case
//! ```
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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

criterion_group!(benches, bench_pulls);
criterion_main!(benches);
