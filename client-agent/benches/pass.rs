//! Measures the agent, not the scripts (`cargo bench -p ubackup-agent --bench pass`):
//!
//! 1. One `once` pass over 50 instances, in process, against a real redis-server: wall time,
//!    the agent's own CPU (utime+stime of /proc/self/stat: every agent thread, no child process)
//!    and the scripts' CPU (cutime+cstime), against the same 50 scripts run by plain
//!    `sh -c` with the same concurrency (the baseline a pass cannot beat). Medians of 7.
//! 2. Peak RSS (`VmHWM`, polled) of the `ubackup-agent once` binary over the same pass.
//! 3. Hashing a 1 GiB file from the page cache with `checksum::digest_file` (xxh128 and
//!    sha256), median of 5, next to `xxhsum -H2` when installed.
//!
//! Set `AGENT_BENCH_HASH_MIB` to change the hashed file's size (default 1024).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ubackup_agent::config::{AgentConfig, ChecksumChoice};

const INSTANCES: usize = 50;
const ROUNDS: usize = 7;

/// (own CPU, waited-for children's CPU) from /proc/self/stat (clock ticks; 10 ms at
/// USER_HZ 100, so a pass is measured over several rounds).
fn cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name's closing parenthesis; utime is field 14.
    let rest = stat.get(stat.rfind(')').unwrap() + 2..).unwrap();
    let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    let tick = |t: u64| Duration::from_millis(t * 10);
    (tick(f[11] + f[12]), tick(f[13] + f[14]))
}

/// Peak RSS (VmHWM, KiB) of a running process, polled until it exits.
fn peak_rss(mut child: std::process::Child) -> u64 {
    let path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = l
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                peak = peak.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    peak
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(redis) = ubackup_testkit::RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut conf = format!(
        "[global]\nserver_id = 1\ngame_id = 1\nmy_ip = 127.0.0.1\nredis_url = {}\nstate_dir = {}\n\
         self_check = off\nconcurrency = 4\n",
        redis.url(),
        state.display()
    );
    let mut scripts = Vec::new();
    for n in 0..INSTANCES {
        let back = dir.path().join(format!("b{n}"));
        std::fs::create_dir_all(&back).unwrap();
        std::fs::write(back.join("dump.rdb"), vec![1u8; 4096]).unwrap();
        let log = dir.path().join(format!("l{n}"));
        let script = format!("printf 'ok\\ndump.rdb\\n' > {}", log.display());
        conf += &format!(
            "[i{n}]\nback_type = redis\ninstance = {n}\nrsync_model = backup/b{n}\nback_dir = {}\n\
             back_log = {}\nscript = {script}\n",
            back.display(),
            log.display()
        );
        scripts.push(script);
    }
    let conf_path = dir.path().join("agent.conf");
    std::fs::write(&conf_path, &conf).unwrap();
    let cfg = Arc::new(AgentConfig::parse(&conf).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_stop, cancel) = tokio::sync::watch::channel(false);
    let ctx =
        Arc::new(ubackup_agent::app::context(cfg.clone(), "uuzuback".into(), cancel).unwrap());
    let (mut walls, mut selfs, mut kids, mut bases) = (vec![], vec![], vec![], vec![]);
    for round in 0..=ROUNDS {
        let ((c0, k0), t0) = (cpu(), Instant::now());
        let code = rt.block_on(ubackup_agent::app::once(ctx.clone(), None));
        let wall = t0.elapsed();
        assert_eq!(code, 0);
        let (c1, k1) = cpu();
        // Baseline: the same scripts, four at a time, by plain sh.
        let b0 = Instant::now();
        for chunk in scripts.chunks(4) {
            let mut cs: Vec<_> = chunk
                .iter()
                .map(|s| Command::new("sh").arg("-c").arg(s).spawn().unwrap())
                .collect();
            for c in &mut cs {
                c.wait().unwrap();
            }
        }
        let base = b0.elapsed();
        if round == 0 {
            continue; // warm-up
        }
        walls.push(wall);
        selfs.push(c1 - c0);
        kids.push(k1 - k0);
        bases.push(base);
        std::thread::sleep(Duration::from_millis(5));
    }
    let _: () = redis::cmd("DEL")
        .arg("uuzuback")
        .query(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    let (w, s, k, b) = (median(walls), median(selfs), median(kids), median(bases));
    println!("pass over {INSTANCES} instances (concurrency 4, self-check off, legacy messages), median of {ROUNDS}:");
    println!(
        "  wall {w:?}  (same scripts by plain sh, 4 at a time: {b:?}; difference {:?})",
        w.saturating_sub(b)
    );
    println!(
        "  agent CPU (all threads, no children) {s:?} = {:?} per instance",
        s / INSTANCES as u32
    );
    println!("  scripts' CPU (sh children, reaped by the runtime) {k:?}");

    // Peak RSS of the real binary.
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ubackup-agent");
    if bin.exists() {
        let child = Command::new(&bin)
            .args(["once", "-c"])
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        println!(
            "  peak RSS (VmHWM) of the `ubackup-agent once` process over a pass: {} KiB",
            peak_rss(child)
        );
    }

    // Hashing rate from the page cache.
    let mib: u64 = std::env::var("AGENT_BENCH_HASH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let big = dir.path().join("big");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&big).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for i in 0..mib {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i as usize * 31 + j * 7) as u8;
            }
            f.write_all(&block).unwrap();
        }
    }
    let size = mib << 20;
    for (name, choice, rounds) in [
        ("xxh128", ChecksumChoice::Xxh128, 5),
        ("sha256", ChecksumChoice::Sha256, 1),
    ] {
        let _ = ubackup_agent::checksum::digest_file(&big, choice, size, None).unwrap(); // into cache
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            ubackup_agent::checksum::digest_file(&big, choice, size, None).unwrap();
            times.push(t.elapsed());
        }
        let m = median(times);
        println!(
            "hash {mib} MiB from page cache, {name}: {m:?} = {:.2} GB/s (median of {rounds})",
            size as f64 / m.as_secs_f64() / 1e9
        );
    }
    if Command::new("xxhsum").arg("--version").output().is_ok() {
        let t = Instant::now();
        let ok = Command::new("xxhsum")
            .arg("-H2")
            .arg(&big)
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            let e = t.elapsed();
            println!(
                "  xxhsum -H2, same file: {e:?} = {:.2} GB/s",
                size as f64 / e.as_secs_f64() / 1e9
            );
        }
    }
    println!("(a shared 2-core machine with other engineers compiling: timings are noisy)");
}
