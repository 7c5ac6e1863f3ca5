//! Pulls from one stock `rsync --daemon` (3.5.0) on loopback: our library, our `fetch`
//! process and the stock `rsync` client (as it is, and with `--fsync`, the durability our
//! clients always give), same daemon, same data, same run. Scenarios (see
//! `ubackup_benches::Scenario`): one 1 GiB file; 5,000 files of 20 KiB; 1 GiB with 16
//! scattered 4 KiB edits; an hourly snapshot against the previous hour's file; 4 pulls
//! sharing a 128 MiB/s cap. The whole-file scenarios also show `daemon-ceiling`: our library
//! into a sink that discards the data, i.e. how fast the daemon sends at all.
//!
//! ```text
//! cargo bench -p ubackup-benches --bench pull
//! cargo bench -p ubackup-benches --bench pull -- one-1024MiB     # one scenario (criterion filter)
//! UBACKUP_BENCH_SCENARIOS=delta cargo bench -p ubackup-benches --bench pull   # only its data and daemon
//! UBACKUP_BENCH_BIG_MIB=256 cargo bench -p ubackup-benches --bench pull
//! ```
//!
//! Criterion shows time and throughput; CPU per GiB, peak memory and bytes received are in
//! the report bench (`--bench report`), which prints the ratio table of BENCHMARKS.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ubackup_benches::{clients, measure, Client, Fixture, Scenario, SizeConfig};

fn bench_pulls(c: &mut Criterion) {
    let sizes = SizeConfig::from_env();
    let scenarios = Scenario::selected(&sizes);
    let fx = match Fixture::start(&scenarios) {
        Ok(Some(fx)) => fx,
        Ok(None) => return,
        Err(e) => panic!("bench setup failed: {e:#}"),
    };
    let rt = clients::runtime().expect("runtime");
    for s in scenarios {
        let name = s.name(&fx.sizes);
        let mut group = c.benchmark_group(&name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(15))
            .throughput(Throughput::Bytes(fx.payload_bytes(s)));
        for client in Client::ALL.into_iter().filter(|c| c.runs_in(s)) {
            // One checked pull first: a client that produces wrong files is not timed.
            fx.reset(s).expect("reset");
            measure::pull(client, &fx, s, &rt, false).expect("pull");
            if !matches!(client, Client::Discard | Client::DiskFloor) {
                fx.verify(s).expect("pulled data differs from the source");
            }
            // The reset (deleting the last pull, linking a basis) stays outside the time.
            group.bench_function(client.label(), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        fx.reset(s).expect("reset");
                        total += measure::pull(client, &fx, s, &rt, false)
                            .expect("pull")
                            .wall;
                    }
                    total
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_pulls);
criterion_main!(benches);
