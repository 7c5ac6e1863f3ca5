//! `ubackup-agent`: runs backup scripts on a database host and publishes pull jobs.
//! `ubackup-agent [once] [-c FILE] [-q QUEUE] [--instance NAME]`, `run -c FILE`,
//! `check-config -c FILE`, `status -c FILE`. See README.md.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use ubackup_agent::app::{self, exit};
use ubackup_agent::cli::{Cli, Command};
use ubackup_agent::config::AgentConfig;

mod logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let (config, once, status) = match cli.command {
        None => (cli.once.config.clone(), Some(cli.once), false),
        Some(Command::Once(a)) => (a.config.clone(), Some(a), false),
        Some(Command::Run { config }) => (config, None, false),
        Some(Command::Status { config }) => (config, None, true),
        Some(Command::CheckConfig { config }) => return ExitCode::from(check(&config)),
        Some(Command::Restore(args)) => return ExitCode::from(restore(*args, verbose)),
    };
    let cfg = match AgentConfig::load(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("ubackup-agent: {e}");
            return ExitCode::from(exit::SETUP);
        }
    };
    if status {
        return match app::status(&cfg) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ubackup-agent: {e:#}");
                ExitCode::from(exit::SETUP)
            }
        };
    }
    logging::init(&cfg, verbose);
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", config.display());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ubackup-agent: cannot start the runtime: {e}");
            return ExitCode::from(exit::SETUP);
        }
    };
    ExitCode::from(runtime.block_on(serve(cfg, once)))
}

async fn serve(cfg: Arc<AgentConfig>, once: Option<ubackup_agent::cli::OnceArgs>) -> u8 {
    let (stop, cancel) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("stopping");
        let _ = stop.send(true);
        // Keep the sender alive until the process ends.
        std::future::pending::<()>().await;
    });
    let list = once
        .as_ref()
        .and_then(|o| o.queue.clone())
        .unwrap_or_else(|| cfg.queue.clone());
    let ctx = match app::context(cfg, list, cancel.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("ubackup-agent: {e:#}");
            return exit::SETUP;
        }
    };
    match once {
        Some(o) => app::once(ctx, o.instance.as_deref()).await,
        None => {
            app::run(ctx, cancel).await;
            exit::OK
        }
    }
}

/// `restore`: a runtime, SIGINT/SIGTERM stop it (what was pulled stays for the next run).
fn restore(args: ubackup_agent::restore::command::RestoreArgs, verbose: u8) -> u8 {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ubackup-agent: cannot start the runtime: {e}");
            return exit::SETUP;
        }
    };
    runtime.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("ubackup-agent: {e}");
                    return exit::SETUP;
                }
            };
        tokio::select! {
            r = ubackup_agent::restore::command::run(args) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ubackup-agent restore: {e}");
                    e.exit_code()
                }
            },
            _ = term.recv() => {
                eprintln!("ubackup-agent restore: stopped; run the same command again to resume");
                130
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("ubackup-agent restore: stopped; run the same command again to resume");
                130
            }
        }
    })
}

fn check(path: &std::path::Path) -> u8 {
    match AgentConfig::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({:?} form, {} instance(s), sends {:?} messages)",
                path.display(),
                c.form,
                c.instances.len(),
                c.message
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
