//! `ubackup-demo`: the whole system on this machine (what `scripts/quickstart.sh` runs).
//! See the crate docs for what it starts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ubackup_e2e::{scenario, Fleet, FleetOptions};

/// The whole ubackup system on one machine, on loopback.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to put everything (default: a new directory under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Every instance's backup period, in seconds.
    #[arg(long, default_value_t = 4)]
    interval: u64,
    /// The dashboard's port (default: picked at run time).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Keep everything running after the walk-through, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ubackup-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .to_path_buf();
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("ubackup-demo-{}", std::process::id())),
    };
    let password = "ubackup-demo".to_owned();
    let opts = FleetOptions {
        dir: dir.clone(),
        bin_dir,
        interval_secs: args.interval,
        grace_secs: args.interval,
        http_port: args.port,
        admin_password: password.clone(),
        results_list: "message".into(),
        forward_list: None,
    };
    println!("starting in {}", dir.display());
    let mut fleet = Fleet::start(opts)?;
    println!(
        "dashboard: {}  (user admin, password {password})",
        fleet.url()
    );
    let summary = scenario::run(&mut fleet, &mut |line| println!("{line}"))?;
    println!("catalog:");
    for (k, n) in &summary.cataloged {
        println!("  {k}: {n} backups");
    }
    if args.keep {
        println!(
            "\nstill running; dashboard at {} (admin / {password}); Ctrl-C stops everything",
            fleet.url()
        );
        wait_for_signal()?;
    }
    println!("stopping");
    fleet.shutdown()?;
    fleet.redis.stop();
    println!(
        "stopped cleanly; files, logs and the catalog are in {}",
        dir.display()
    );
    Ok(())
}

/// Blocks until SIGINT (Ctrl-C) or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
