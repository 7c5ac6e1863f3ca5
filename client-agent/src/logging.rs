//! Log output: UBackup's `log` (everything, appended) and `error_log` (warnings and errors)
//! files when configured, stderr otherwise.

use std::io::IsTerminal as _;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use ubackup_agent::config::AgentConfig;

fn open(p: &std::path::Path) -> Option<std::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
    {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "ubackup-agent: cannot open log {}: {e}; logging to stderr",
                p.display()
            );
            None
        }
    }
}

/// Installs the subscriber. `UBACKUP_LOG` overrides the level.
pub fn init(cfg: &AgentConfig, verbose: u8) {
    let level = match verbose {
        0 => cfg.log.level.clone(),
        1 => "info".into(),
        _ => "debug".into(),
    };
    let filter =
        || EnvFilter::try_from_env("UBACKUP_LOG").unwrap_or_else(|_| EnvFilter::new(&level));
    let main = match cfg.log.file.as_deref().and_then(open) {
        Some(f) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .with_filter(filter())
            .boxed(),
        // Colour only on a terminal (not journald, not a redirect).
        None => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let errors = cfg.log.error_file.as_deref().and_then(open).map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN)
    });
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(errors)
        .try_init();
}
