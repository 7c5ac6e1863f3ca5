//! `ubackup-puller run` and `check-config`: configuration, logging and signals around
//! [`ubackup_puller::node::run`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;
use ubackup_puller::config::{LogConfig, LogFormat, NodeConfig};
use ubackup_puller::node::{self, Control};

use crate::cli::RunArgs;

/// `check-config`: exit 0 and print the resolved configuration, or exit 1 with every problem.
pub fn check(path: &Path) -> u8 {
    match NodeConfig::load(path) {
        Ok(c) => {
            println!("{c:#?}");
            for line in c.retention.describe() {
                println!("{line}");
            }
            let certs = ubackup_puller::certs::check(&c.tls, std::time::SystemTime::now());
            for line in &certs.lines {
                println!("{line}");
            }
            if !certs.problems.is_empty() {
                eprintln!(
                    "{}: {} TLS problem(s)",
                    path.display(),
                    certs.problems.len()
                );
                for p in &certs.problems {
                    eprintln!("  {p}");
                }
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `run`.
pub fn run(args: RunArgs, verbose: u8) -> u8 {
    let cfg = match NodeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Err(e) = init_logging(&cfg.log, verbose) {
        eprintln!("ubackup-puller: cannot open the log: {e:#}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ubackup-puller: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (reload_tx, reload_rx) = mpsc::channel(4);
        if let Err(e) = signals(stop_tx, reload_tx, args.config.clone()) {
            eprintln!("ubackup-puller: cannot install signal handlers: {e}");
            return 1;
        }
        let control = Control {
            stop: stop_rx,
            reload: reload_rx,
            until_idle: args.until_idle,
        };
        match node::run(cfg, control).await {
            Ok(_) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("ubackup-puller: {e:#}");
                1
            }
        }
    })
}

fn signals(
    stop: watch::Sender<bool>,
    reload: mpsc::Sender<NodeConfig>,
    path: PathBuf,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); let _ = stop.send(true); }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); let _ = stop.send(true); }
                _ = hup.recv() => match NodeConfig::load(&path) {
                    Ok(c) => { let _ = reload.send(c).await; }
                    Err(e) => tracing::error!("SIGHUP: the configuration was not reloaded: {e}"),
                },
            }
        }
    });
    Ok(())
}

fn open_append(p: &Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .with_context(|| p.display().to_string())
}

pub(crate) fn init_logging(cfg: &LogConfig, verbose: u8) -> anyhow::Result<()> {
    let level = match verbose {
        0 => cfg.level.clone(),
        1 => "info".into(),
        _ => "debug".into(),
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("UBACKUP_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level))
    };
    type Writer = Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync>;
    let writer = |file: Option<std::fs::File>| -> Writer {
        match file {
            Some(f) => {
                let f = std::sync::Arc::new(Mutex::new(f));
                Box::new(move || Box::new(LockedFile(f.clone())) as Box<dyn std::io::Write>)
            }
            None => Box::new(|| Box::new(std::io::stderr()) as Box<dyn std::io::Write>),
        }
    };
    let main_file = cfg.file.as_deref().map(open_append).transpose()?;
    let err_file = cfg.error_file.as_deref().map(open_append).transpose()?;
    let json = cfg.format == LogFormat::Json;
    // Colour only on a terminal: never in `[log] file`, journald or a redirect.
    let ansi = main_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let main = {
        let w = writer(main_file);
        let l = tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(w);
        if json {
            l.json().with_filter(filter()).boxed()
        } else {
            l.with_filter(filter()).boxed()
        }
    };
    let errors = err_file.map(|f| {
        let w = writer(Some(f));
        let l = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(w);
        let lvl = tracing_subscriber::filter::LevelFilter::WARN;
        if json {
            l.json().with_filter(lvl).boxed()
        } else {
            l.with_filter(lvl).boxed()
        }
    });
    tracing_subscriber::registry()
        .with(main)
        .with(errors)
        .try_init()?;
    Ok(())
}

struct LockedFile(std::sync::Arc<Mutex<std::fs::File>>);

impl std::io::Write for LockedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut f) => f.flush(),
            Err(_) => Ok(()),
        }
    }
}
