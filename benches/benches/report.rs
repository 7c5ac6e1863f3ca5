//! The companion of the criterion bench: the same scenarios and clients (see `pull.rs`),
//! each run `UBACKUP_BENCH_RUNS` times (default 5, after one unmeasured warm-up round),
//! clients interleaved so that noise on the shared machine falls on all of them alike. For
//! every scenario and client (the first client of each round rotates) it prints the medians of wall time, throughput, CPU time
//! (user+sys) and CPU per GiB, peak RSS and bytes received, then the ratios ours / stock
//! that BENCHMARKS.md quotes. The report is also written to
//! `<target>/ubackup-bench-report.md`.
//!
//! ```text
//! cargo bench -p ubackup-benches --bench report
//! UBACKUP_BENCH_RUNS=9 UBACKUP_BENCH_SCENARIOS=one,delta cargo bench -p ubackup-benches --bench report
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use ubackup_benches::{clients, measure, Client, Fixture, Sample, Scenario, SizeConfig, MIB};

const GIB: f64 = (1u64 << 30) as f64;

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs bench targets without `--bench`: do nothing heavy then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("report: run it with `cargo bench -p ubackup-benches --bench report`");
        return Ok(());
    }
    let runs: usize = std::env::var("UBACKUP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5);
    let sizes = SizeConfig::from_env();
    let scenarios = Scenario::selected(&sizes);
    let Some(fx) = Fixture::start(&scenarios)? else {
        return Ok(());
    };
    let rt = clients::runtime()?;
    let load_before = load_average();
    let mut samples: HashMap<(Scenario, Client), Vec<Sample>> = HashMap::new();
    for round in 0..=runs {
        for &s in &scenarios {
            // Each round starts with a different client, so that whatever the previous
            // scenario left behind (writeback, freed blocks) does not always fall on one.
            let mut order: Vec<Client> = Client::ALL.into_iter().filter(|c| c.runs_in(s)).collect();
            let n = order.len();
            order.rotate_left(round % n.max(1));
            for client in order {
                fx.reset(s)?;
                let sample = measure::pull(client, &fx, s, &rt, true)
                    .with_context(|| format!("{} pulling {}", client.label(), s.name(&fx.sizes)))?;
                if round == 0 {
                    // Warm-up round: check the result instead of timing it.
                    if !matches!(client, Client::Discard | Client::DiskFloor) {
                        fx.verify(s).with_context(|| {
                            format!(
                                "{} produced wrong data in {}",
                                client.label(),
                                s.name(&fx.sizes)
                            )
                        })?;
                    }
                    continue;
                }
                eprintln!(
                    "round {round}/{runs} {:<40} {:<18} {:>7.3}s",
                    s.name(&fx.sizes),
                    client.label(),
                    sample.wall.as_secs_f64()
                );
                samples.entry((s, client)).or_default().push(sample);
            }
        }
    }
    let report = render(&fx, &scenarios, &samples, runs, load_before);
    println!("{report}");
    let path = fx.fetch.parent().and_then(|p| p.parent());
    if let Some(target) = path {
        let file = target.join("ubackup-bench-report.md");
        std::fs::write(&file, &report)?;
        eprintln!("written to {}", file.display());
    }
    Ok(())
}

/// Medians of one client in one scenario.
#[derive(Debug, Clone, Copy)]
struct Medians {
    wall: f64,
    cpu: Option<f64>,
    peak_rss: Option<u64>,
    bytes: Option<u64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn medians(samples: &[Sample]) -> Option<Medians> {
    let wall = median(samples.iter().map(|s| s.wall.as_secs_f64()).collect())?;
    let cpu = median(
        samples
            .iter()
            .filter_map(|s| s.cpu.map(|c| c.as_secs_f64()))
            .collect(),
    );
    let peak_rss = samples.iter().filter_map(|s| s.peak_rss).max();
    let bytes = median(
        samples
            .iter()
            .filter_map(|s| s.bytes_received.map(|b| b as f64))
            .collect(),
    )
    .map(|b| b as u64);
    Some(Medians {
        wall,
        cpu,
        peak_rss,
        bytes,
    })
}

fn render(
    fx: &Fixture,
    scenarios: &[Scenario],
    samples: &HashMap<(Scenario, Client), Vec<Sample>>,
    runs: usize,
    load_before: String,
) -> String {
    let mut out = String::new();
    let m = |s: Scenario, c: Client| samples.get(&(s, c)).and_then(|v| medians(v));
    let _ = writeln!(out, "## Machine\n\n{}", machine());
    let _ = writeln!(
        out,
        "- load average before / after: {load_before} / {}\n- medians of {runs} runs per client, clients interleaved, after one warm-up round\n",
        load_average()
    );
    let _ = writeln!(out, "## Ratios, ours / stock (same daemon, same run)\n");
    let _ = writeln!(
        out,
        "| scenario | wall fetch / rsync | wall fetch / rsync --fsync | wall library / rsync | CPU per GiB fetch / rsync | CPU fetch / rsync --fsync | bytes fetch / rsync | fetch peak RSS | rsync peak RSS | fetch / daemon ceiling |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for &s in scenarios {
        let (Some(f), Some(r), Some(rf)) = (
            m(s, Client::Fetch),
            m(s, Client::Rsync),
            m(s, Client::RsyncFsync),
        ) else {
            continue;
        };
        let lib = m(s, Client::Library);
        let ceiling = m(s, Client::Discard);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_string(),
        };
        let bytes_ratio = match (f.bytes, r.bytes) {
            (Some(a), Some(b)) if b > 0 => format!("{:.3}", a as f64 / b as f64),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name(&fx.sizes),
            ratio(Some(f.wall), Some(r.wall)),
            ratio(Some(f.wall), Some(rf.wall)),
            ratio(lib.map(|l| l.wall), Some(r.wall)),
            ratio(f.cpu, r.cpu),
            ratio(f.cpu, rf.cpu),
            bytes_ratio,
            mib(f.peak_rss),
            mib(r.peak_rss),
            ratio(Some(f.wall), ceiling.map(|c| c.wall)),
        );
    }
    // The disk floor, pairwise: each round's wall time over the same round's `dd
    // conv=fsync` of the same file, then the median of those ratios (the disk's speed
    // drifts between rounds on a shared machine; a pair shares the moment).
    let pairwise = |s: Scenario, a: Client, b: Client| -> String {
        let (Some(x), Some(y)) = (samples.get(&(s, a)), samples.get(&(s, b))) else {
            return "–".to_string();
        };
        let ratios: Vec<f64> = x
            .iter()
            .zip(y)
            .filter(|(_, d)| d.wall.as_secs_f64() > 0.0)
            .map(|(a, d)| a.wall.as_secs_f64() / d.wall.as_secs_f64())
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
        match median(ratios) {
            Some(m) => format!("{m:.2} ({lo:.2}-{hi:.2})"),
            None => "–".to_string(),
        }
    };
    if scenarios.contains(&Scenario::WholeFile)
        && samples.contains_key(&(Scenario::WholeFile, Client::DiskFloor))
    {
        let s = Scenario::WholeFile;
        let _ = writeln!(
            out,
            "\n## Disk floor: `dd conv=fsync` of the same file, same loop\n"
        );
        let _ = writeln!(
            out,
            "Pairwise: each round's wall over the same round's dd, median (min-max) over rounds.\n"
        );
        let _ = writeln!(out, "| scenario | dd wall s (median) | fetch / dd | library / dd | rsync --fsync / dd | rsync / dd | fetch / rsync --fsync (pairwise) |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name(&fx.sizes),
            m(s, Client::DiskFloor).map_or("–".to_string(), |d| format!("{:.3}", d.wall)),
            pairwise(s, Client::Fetch, Client::DiskFloor),
            pairwise(s, Client::Library, Client::DiskFloor),
            pairwise(s, Client::RsyncFsync, Client::DiskFloor),
            pairwise(s, Client::Rsync, Client::DiskFloor),
            pairwise(s, Client::Fetch, Client::RsyncFsync),
        );
    }
    if samples.keys().any(|(_, c)| *c == Client::RsyncSync) {
        let _ = writeln!(
            out,
            "\n## Against rsync followed by `sync -f` (the same durability, one flush), same loop\n"
        );
        let _ = writeln!(
            out,
            "Pairwise: each round's wall over the same round's `rsync; sync -f DEST`, median (min-max) over rounds.\n"
        );
        let _ = writeln!(
            out,
            "| scenario | fetch / rsync+sync | library / rsync+sync | CPU fetch / rsync+sync |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for &s in scenarios {
            let (Some(f), Some(rs)) = (m(s, Client::Fetch), m(s, Client::RsyncSync)) else {
                continue;
            };
            let cpu = match (f.cpu, rs.cpu) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.name(&fx.sizes),
                pairwise(s, Client::Fetch, Client::RsyncSync),
                pairwise(s, Client::Library, Client::RsyncSync),
                cpu,
            );
        }
    }
    let _ = writeln!(out, "\n## Medians per client\n");
    let _ = writeln!(
        out,
        "| scenario | client | wall s | MiB/s | CPU s (user+sys) | CPU s per GiB | peak RSS | bytes received |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for &s in scenarios {
        let payload = fx.payload_bytes(s) as f64;
        for c in Client::ALL {
            let Some(x) = m(s, c) else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.0} | {} | {} | {} | {} |",
                s.name(&fx.sizes),
                c.label(),
                x.wall,
                payload / MIB as f64 / x.wall,
                x.cpu.map_or("–".into(), |c| format!("{c:.2}")),
                x.cpu
                    .map_or("–".into(), |c| format!("{:.2}", c / (payload / GIB))),
                mib(x.peak_rss),
                x.bytes.map_or("–".into(), |b| b.to_string()),
            );
        }
    }
    if scenarios.contains(&Scenario::SharedCap) {
        let cap = fx.sizes.cap_mib as f64;
        let _ = writeln!(
            out,
            "\nShared cap: {} pulls, {cap} MiB/s in total. Our library pulls share one limiter \
             (`PullOptions::shared_limit`); separate processes cannot, so `fetch` and stock rsync \
             each get `--bwlimit` of the cap divided by the pulls. A perfect limiter takes {:.2} s.",
            fx.sizes.shared_pulls,
            fx.payload_bytes(Scenario::SharedCap) as f64 / MIB as f64 / cap
        );
    }
    out
}

fn mib(b: Option<u64>) -> String {
    b.map_or("–".into(), |b| {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or("?".into(), |kib| format!("{} GiB", kib >> 20));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "- CPU: {cpu}, {cores} cores; memory {mem}; Linux {kernel}\n- stock rsync: 3.5.0 (daemon and client); the destination is on the same filesystem as the source data"
    )
}
