//! `ubackup-puller prune`, `scrub` and `rebuild-manifest`: the node's life-cycle commands by
//! hand, around [`ubackup_puller::lifecycle`] and [`ubackup_puller::manifest`].

use rsync_proto::limit::{BandwidthLimiter, Rate};
use tokio::sync::watch;
use ubackup_puller::config::NodeConfig;
use ubackup_puller::lifecycle::{self, Publisher};
use ubackup_puller::manifest;

use crate::cli::{PruneArgs, ScrubArgs};

fn setup(config: &std::path::Path, verbose: u8) -> Option<(NodeConfig, tokio::runtime::Runtime)> {
    let cfg = match NodeConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    if let Err(e) = crate::run::init_logging(&cfg.log, verbose) {
        eprintln!("ubackup-puller: cannot open the log: {e:#}");
        return None;
    }
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some((cfg, rt)),
        Err(e) => {
            eprintln!("ubackup-puller: cannot start the runtime: {e}");
            None
        }
    }
}

fn rate(cfg: &NodeConfig, arg: Option<&str>) -> Result<Option<Rate>, String> {
    match arg {
        None => Ok(cfg.scrub.rate),
        Some(s) => Rate::parse_bwlimit(s).map_err(|e| e.to_string()),
    }
}

/// Stops on SIGINT/SIGTERM.
fn stop_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}

/// `prune`.
pub fn prune(args: PruneArgs, verbose: u8) -> u8 {
    let Some((cfg, rt)) = setup(&args.config, verbose) else {
        return 1;
    };
    rt.block_on(async move {
        let now = args.now_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        });
        let mut publisher = None;
        if !args.dry_run {
            match Publisher::connect(&cfg).await {
                Ok(p) => publisher = Some(p),
                Err(e) => eprintln!(
                    "ubackup-puller: cannot reach the results Redis ({e}); events wait for the next prune"
                ),
            }
        }
        match lifecycle::prune(&cfg, now, args.dry_run, publisher.as_mut()).await {
            Ok(r) => {
                use std::io::Write as _;
                let verb = if args.dry_run { "would expire" } else { "expired" };
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for x in &r.expired {
                    let _ = writeln!(out, "{verb}\t{}\t{}", x.path.display(), x.reason);
                }
                for (p, why) in &r.left {
                    let _ = writeln!(out, "left\t{}\t{why}", p.display());
                }
                let _ = out.flush();
                drop(out);
                if args.dry_run {
                    println!(
                        "dry run: {} would expire, {} kept; nothing deleted",
                        r.expired.len(),
                        r.kept
                    );
                } else {
                    println!(
                        "{} expired, {} kept, {} left alone; {} events published, {} pending",
                        r.expired.len(),
                        r.kept,
                        r.left.len(),
                        r.published,
                        r.pending
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("ubackup-puller: prune: {e}");
                1
            }
        }
    })
}

/// `scrub`.
pub fn scrub(args: ScrubArgs, verbose: u8) -> u8 {
    let Some((cfg, rt)) = setup(&args.config, verbose) else {
        return 1;
    };
    let rate = match rate(&cfg, args.rate.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ubackup-puller: --rate: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let stop = stop_on_signals();
        let mut publisher = match Publisher::connect(&cfg).await {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("ubackup-puller: cannot reach the results Redis ({e}); findings are only printed");
                None
            }
        };
        match lifecycle::scrub(&cfg, rate, publisher.as_mut(), stop).await {
            Ok(r) => {
                for f in &r.findings {
                    println!("{}\t{}\t{}", f.kind.name(), f.path.display(), f.reason);
                }
                let secs = r.elapsed.as_secs_f64().max(1e-9);
                println!(
                    "{} files checked ({} bytes in {secs:.1} s, {:.1} MiB/s), {} size only, {} findings, {} published{}",
                    r.checked,
                    r.bytes,
                    r.bytes as f64 / secs / f64::from(1 << 20),
                    r.size_only,
                    r.findings.len(),
                    r.published,
                    if r.stopped { "; stopped before the end" } else { "" }
                );
                if r.findings.is_empty() { 0 } else { 2 }
            }
            Err(e) => {
                eprintln!("ubackup-puller: scrub: {e}");
                1
            }
        }
    })
}

/// `rebuild-manifest`.
pub fn rebuild(args: ScrubArgs, verbose: u8) -> u8 {
    let Some((cfg, rt)) = setup(&args.config, verbose) else {
        return 1;
    };
    let rate = match rate(&cfg, args.rate.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ubackup-puller: --rate: {e}");
            return 1;
        }
    };
    let handle = rt.handle().clone();
    let limiter = BandwidthLimiter::new(rate);
    let result = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            manifest::rebuild(&cfg, |n| {
                handle.block_on(limiter.consume(n));
                true
            })
        })
        .await
    });
    match result {
        Ok(Ok(r)) => {
            for p in &r.adopted {
                println!("adopted\t{}", p.display());
            }
            for (p, why) in &r.skipped {
                println!("skipped\t{}\t{why}", p.display());
            }
            println!(
                "{} adopted, {} already known, {} skipped. Adopted entries have no chain or job id \
                 (and no server_id/instance/game_id unless the destination template holds them): \
                 retention never expires them; delete them by hand once they are not needed.",
                r.adopted.len(),
                r.known,
                r.skipped.len()
            );
            0
        }
        Ok(Err(e)) => {
            eprintln!("ubackup-puller: rebuild-manifest: {e}");
            1
        }
        Err(e) => {
            eprintln!("ubackup-puller: rebuild-manifest: {e}");
            1
        }
    }
}
