//! `ubackup-puller`: the ubackup backup-node puller.
//!
//! `ubackup-puller run --config FILE` runs the backup node;
//! `ubackup-puller fetch [OPTIONS] SOURCE DEST` pulls once from an rsync
//! daemon, like the rsync client. See `--help` and README.md.

mod cli;
mod fetch;
mod maintain;
mod progress;
mod run;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let args = match cli.command {
        cli::Command::Run(args) => return ExitCode::from(run::run(args, cli.verbose)),
        cli::Command::CheckConfig { config } => return ExitCode::from(run::check(&config)),
        cli::Command::Prune(args) => return ExitCode::from(maintain::prune(args, cli.verbose)),
        cli::Command::Scrub(args) => return ExitCode::from(maintain::scrub(args, cli.verbose)),
        cli::Command::RebuildManifest(args) => {
            return ExitCode::from(maintain::rebuild(args, cli.verbose))
        }
        cli::Command::Fetch(args) => *args,
    };
    init_tracing(cli.verbose);
    // One pull is one connection: a single-threaded runtime avoids cross-thread
    // wake-ups; fsync-and-rename work still runs on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ubackup-puller: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(fetch::run(args));
    ExitCode::from(code)
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UBACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
