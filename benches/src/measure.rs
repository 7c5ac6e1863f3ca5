//! Measuring one pull: wall time, CPU time (user+sys), peak RSS and bytes received.
//!
//! CPU time comes from `/proc/self/stat`: this process's own `utime + stime` for the
//! in-process clients, and `cutime + cstime` (the waited-for children, with their own
//! children) for the process clients, each as the difference across the pull. Peak RSS of a
//! process client is its `ru_maxrss` as GNU `time` reports it (`/usr/bin/time -f %M`), when
//! that is installed; for several concurrent processes, the largest. The resolution of both
//! is the kernel's clock tick (10 ms), small against pulls of a second or more.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::clients::{bytes_from_output, describe, run_in_process, Client};
use crate::fixture::{Fixture, Scenario};

/// GNU time, used for the peak RSS of process clients.
const GNU_TIME: &str = "/usr/bin/time";

/// One measured pull.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// From start to the last byte durable (or, for stock rsync without `--fsync`, written).
    pub wall: Duration,
    /// User + system CPU time of the client (all its processes and threads).
    pub cpu: Option<Duration>,
    /// Peak resident set of a client process, bytes.
    pub peak_rss: Option<u64>,
    /// Socket bytes the client received.
    pub bytes_received: Option<u64>,
}

/// Pulls scenario `s` with `client` (after [`Fixture::reset`]) and measures it. With
/// `detail` off only the wall time is taken (what the criterion bench needs).
pub fn pull(
    client: Client,
    fx: &Fixture,
    s: Scenario,
    rt: &tokio::runtime::Runtime,
    detail: bool,
) -> anyhow::Result<Sample> {
    if !client.is_process() {
        let before = detail.then(cpu_times).transpose()?;
        let start = Instant::now();
        let outcome = run_in_process(client, fx, s, rt)?;
        let wall = start.elapsed();
        let cpu = match before {
            Some(b) => Some(cpu_times()?.own.saturating_sub(b.own)),
            None => None,
        };
        return Ok(Sample {
            wall,
            cpu,
            peak_rss: None,
            bytes_received: outcome.bytes_received,
        });
    }
    let with_rss = detail && Path::new(GNU_TIME).exists();
    let rss_dir = tempfile::tempdir()?;
    let mut children = Vec::new();
    let before = detail.then(cpu_times).transpose()?;
    let start = Instant::now();
    for (i, cmd) in client.commands(fx, s).into_iter().enumerate() {
        let mut cmd = if with_rss {
            wrap_in_time(&cmd, &rss_dir.path().join(i.to_string()))
        } else {
            cmd
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", describe(&cmd)))?;
        children.push((describe(&cmd), child));
    }
    let mut outputs = Vec::new();
    for (what, child) in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        outputs.push(out.stdout);
    }
    let wall = start.elapsed();
    let cpu = match before {
        Some(b) => Some(cpu_times()?.children.saturating_sub(b.children)),
        None => None,
    };
    let bytes_received = if detail {
        outputs
            .iter()
            .map(|o| bytes_from_output(client, &String::from_utf8_lossy(o)))
            .sum()
    } else {
        None
    };
    let peak_rss = if with_rss {
        let mut peak = 0u64;
        for i in 0..outputs.len() {
            let text = std::fs::read_to_string(rss_dir.path().join(i.to_string()))?;
            let kib: u64 = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .context("GNU time wrote no peak RSS")?;
            peak = peak.max(kib * 1024);
        }
        Some(peak)
    } else {
        None
    };
    Ok(Sample {
        wall,
        cpu,
        peak_rss,
        bytes_received,
    })
}

/// `cmd` run under GNU time, which writes the child's peak RSS (KiB) to `out`.
fn wrap_in_time(cmd: &Command, out: &Path) -> Command {
    let mut wrapped = Command::new(GNU_TIME);
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    wrapped
}

/// CPU times from `/proc/self/stat`.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// This process: utime + stime.
    own: Duration,
    /// Waited-for children: cutime + cstime.
    children: Duration,
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces: field 3
    // (state) is index 0, so utime (14), stime, cutime, cstime are 11..=14.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/self/stat")?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() < 4 {
        bail!("malformed /proc/self/stat");
    }
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let ticks = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz);
    Ok(CpuTimes {
        own: ticks(f[0] + f[1]),
        children: ticks(f[2] + f[3]),
    })
}
