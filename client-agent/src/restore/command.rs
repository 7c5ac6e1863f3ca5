//! `ubackup-agent restore`: command line → request, plan source, fetcher; then the domain.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use rsync_proto::limit::Rate;

use super::fetch::{Fetched, NodeAccess, RsyncFetcher};
use super::hook::Hook;
use super::indexer::{ClientOptions, IndexerPlans, Token};
use super::plan::{rfc3339, At, Plan, PlanFile, Request, SavedPlan};
use super::{execute, plan_for, Progress, RestoreError};
use crate::config::{AgentConfig, RestoreConfig};

/// Environment variable holding the indexer token.
pub const TOKEN_ENV: &str = "UBACKUP_INDEXER_TOKEN";

/// `restore` arguments.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Agent configuration (its `[restore]` keys and instance sections). Default:
    /// /etc/uuzuback.conf when it exists.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// An instance section of the config, or the instance number with --server-id and --type.
    #[arg(long = "instance")]
    pub instance: Option<String>,
    /// The host's asset id (default: the config's).
    #[arg(long = "server-id")]
    pub server_id: Option<String>,
    /// The backup type (mysql, redis, ...).
    #[arg(long = "type")]
    pub back_type: Option<String>,
    /// The point in time: `latest`, epoch seconds or milliseconds, or RFC 3339.
    #[arg(long = "at", default_value = "latest")]
    pub at: String,
    /// The directory the files are restored into (created if missing).
    #[arg(long = "to")]
    pub to: Option<PathBuf>,
    /// Print the plan and stop.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON (a file --plan accepts).
    #[arg(long = "json")]
    pub json: bool,
    /// Run this command once every file is in place, with the files in order as arguments.
    #[arg(long = "hook")]
    pub hook: Option<String>,
    /// The hook's timeout in seconds (its process group is killed).
    #[arg(long = "hook-timeout", default_value_t = 6 * 3600)]
    pub hook_timeout: u64,
    /// Cap the restore's bandwidth (KiB/s, or K/M/G suffixes, as rsync's --bwlimit).
    #[arg(long = "bwlimit")]
    pub bwlimit: Option<String>,
    /// The indexer (`https://host:port`; `http://` only to this machine unless
    /// --insecure-http).
    #[arg(long = "indexer")]
    pub indexer: Option<String>,
    /// A file holding the indexer token (first line); otherwise $UBACKUP_INDEXER_TOKEN.
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for the indexer's HTTPS (otherwise the
    /// system's roots).
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// Allow plain http:// to an indexer that is not on this machine (the token crosses the
    /// network in clear).
    #[arg(long = "insecure-http")]
    pub insecure_http: bool,
    /// Restore from a plan saved with --dry-run --json instead of asking the indexer.
    #[arg(long = "plan")]
    pub plan: Option<PathBuf>,
    /// The nodes' restore-module password (first line; not readable by others);
    /// otherwise $RSYNC_PASSWORD.
    #[arg(long = "password-file")]
    pub password_file: Option<PathBuf>,
    /// The nodes' rsync daemon port.
    #[arg(long = "node-port")]
    pub node_port: Option<u16>,
    /// The nodes' restore module.
    #[arg(long = "node-module")]
    pub node_module: Option<String>,
    /// The restore module's user.
    #[arg(long = "node-user")]
    pub node_user: Option<String>,
    /// The nodes' root (`node.root`), for plans that carry only `file_path`. Repeat it when
    /// nodes differ: each file uses the longest root its directory is under.
    #[arg(long = "node-root")]
    pub node_root: Vec<PathBuf>,
    /// Give up on a node that sends nothing for this many seconds.
    #[arg(long = "timeout", default_value_t = 600)]
    pub timeout: u64,
    /// Pull over TLS from a terminator (stunnel, haproxy) in front of each node's rsyncd, as
    /// `ubackup-puller fetch --tls`: port --node-port, else $RSYNC_SSL_PORT, else 874. The
    /// node's certificate must name its address (an IP SAN).
    #[arg(long = "tls")]
    pub tls: bool,
    /// CA certificates (PEM) to trust for the nodes; otherwise $RSYNC_SSL_CA_CERT, else the
    /// system store.
    #[arg(long = "tls-ca", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Our client certificate (PEM) for nodes that require one; otherwise $RSYNC_SSL_CERT.
    #[arg(long = "tls-cert", requires = "tls")]
    pub tls_cert: Option<PathBuf>,
    /// Its key; otherwise $RSYNC_SSL_KEY, else the certificate file.
    #[arg(long = "tls-key", requires = "tls")]
    pub tls_key: Option<PathBuf>,
}

fn usage(s: impl Into<String>) -> RestoreError {
    RestoreError::Usage(s.into())
}

/// Reads the first line of a secret file that others cannot read.
fn read_secret(path: &Path, what: &str) -> Result<Vec<u8>, RestoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta =
        std::fs::metadata(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
    if meta.mode() & 0o004 != 0 {
        return Err(usage(format!(
            "{what} {} is readable by others; chmod 600 it",
            path.display()
        )));
    }
    if meta.len() > 64 << 10 {
        return Err(usage(format!("{what} {} is too large", path.display())));
    }
    let text = std::fs::read(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
    let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(usage(format!("{what} {} is empty", path.display())));
    }
    Ok(line.to_vec())
}

fn load_config(args: &RestoreArgs) -> Result<Option<AgentConfig>, RestoreError> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(crate::cli::DEFAULT_CONFIG);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    AgentConfig::load(&path)
        .map(Some)
        .map_err(|e| usage(e.to_string()))
}

/// The request the arguments name.
pub fn request(args: &RestoreArgs, cfg: Option<&AgentConfig>) -> Result<Request, RestoreError> {
    let at: At = args.at.parse().map_err(usage)?;
    let inst = args.instance.as_deref().ok_or_else(|| {
        usage("--instance is required (a config section, or a number with --type)")
    })?;
    if let Some(t) = &args.back_type {
        let server_id = args
            .server_id
            .clone()
            .or_else(|| cfg.map(|c| c.server_id.clone()))
            .ok_or_else(|| usage("--server-id is required without a config"))?;
        let instance = inst
            .parse()
            .map_err(|_| usage(format!("--instance {inst:?} is not a number (with --type)")))?;
        return Ok(Request {
            server_id,
            back_type: t.clone(),
            instance,
            at,
        });
    }
    let cfg = cfg.ok_or_else(|| {
        usage(format!(
            "--instance {inst:?} names a config section, but no config was found (-c FILE), \
             or give --server-id, --type and the instance number"
        ))
    })?;
    let section = cfg.instance(inst).ok_or_else(|| {
        let names: Vec<&str> = cfg.instances.iter().map(|i| i.name.as_str()).collect();
        usage(format!(
            "no instance section {inst:?} in the config (it has: {})",
            names.join(", ")
        ))
    })?;
    Ok(Request {
        server_id: args
            .server_id
            .clone()
            .unwrap_or_else(|| cfg.server_id.clone()),
        back_type: section.back_type.clone(),
        instance: section.instance,
        at,
    })
}

fn node_access(args: &RestoreArgs, rc: &RestoreConfig) -> Result<NodeAccess, RestoreError> {
    let mut a = NodeAccess::new();
    if let Some(m) = args.node_module.clone().or_else(|| rc.node_module.clone()) {
        a.module = m;
    }
    if let Some(u) = args.node_user.clone().or_else(|| rc.node_user.clone()) {
        a.user = u;
    }
    if let Some(p) = args.node_port.or(rc.node_port) {
        a.port = p;
    }
    if args.tls {
        // The config's node_port is the plain daemons'; over TLS only the flag names a port.
        a.port = match args.node_port {
            Some(p) => p,
            None => rsync_proto::client::rsync_ssl_port().map_err(|e| usage(e.to_string()))?,
        };
        a.tls = Some(tls_connector(args)?);
    }
    a.node_roots = if args.node_root.is_empty() {
        rc.node_root.iter().cloned().collect()
    } else {
        args.node_root.clone()
    };
    a.timeout = Duration::from_secs(args.timeout.max(1));
    a.password = match args.password_file.as_ref().or(rc.password_file.as_ref()) {
        Some(p) => Some(read_secret(p, "password file")?),
        None => std::env::var_os("RSYNC_PASSWORD").map(|v| {
            use std::os::unix::ffi::OsStringExt as _;
            v.into_vec()
        }),
    };
    let rate = match &args.bwlimit {
        Some(s) => Rate::parse_bwlimit(s).map_err(|e| usage(format!("--bwlimit: {e}")))?,
        None => None,
    };
    Ok(a.with_bwlimit(rate))
}

/// The TLS client of `--tls`, as `fetch` builds it: the `--tls-*` flags, else rsync-ssl's
/// variables.
fn tls_connector(args: &RestoreArgs) -> Result<rsync_proto::client::TlsConnector, RestoreError> {
    let opts = rsync_proto::client::TlsOptions::from_rsync_ssl_env(rsync_proto::client::TlsFiles {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    });
    rsync_proto::client::TlsConnector::new(&opts).map_err(|e| usage(e.to_string()))
}

/// Prints the plan for people.
pub fn describe(plan: &Plan, access: Option<&NodeAccess>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let last = plan.files.last().map(|f| f.create_time_ms).unwrap_or(0);
    let _ = writeln!(
        out,
        "restore plan for {}/{}/{}: {} file(s), {} bytes, up to the backup of {}",
        plan.server_id,
        plan.back_type,
        plan.instance,
        plan.files.len(),
        plan.total_bytes(),
        rfc3339(last)
    );
    for (i, f) in plan.files.iter().enumerate() {
        let from = match access.map(|a| a.source(f)) {
            Some(Ok(s)) => format!(
                "rsync://{}@{}/{}",
                a_user(access),
                s.authority(),
                s.sender_arg()
            ),
            _ => format!("{}:{}", f.node, f.file_path.as_deref().unwrap_or("?")),
        };
        let _ = writeln!(
            out,
            "{:>3}. {:<11} {}  taken {}  {} bytes  {}\n     from {from}",
            i + 1,
            match f.role {
                super::plan::Role::Full => "full",
                super::plan::Role::Incremental => "incremental",
            },
            f.filename,
            rfc3339(f.create_time_ms),
            f.size,
            f.checksum
        );
    }
    out
}

fn a_user(access: Option<&NodeAccess>) -> &str {
    access.map(|a| a.user.as_str()).unwrap_or("")
}

/// Progress on stderr: a line per file, and the bytes of the current one at most once a
/// second (rewritten in place on a terminal).
struct StderrProgress {
    tty: bool,
    last: Mutex<(Instant, u64)>,
    start: Mutex<Instant>,
}

impl Progress for StderrProgress {
    fn file(&self, i: usize, n: usize, f: &PlanFile, resumed: bool) {
        if let Ok(mut s) = self.start.lock() {
            *s = Instant::now();
        }
        if let Ok(mut l) = self.last.lock() {
            *l = (Instant::now(), 0);
        }
        let what = if resumed {
            "already verified"
        } else {
            "pulling"
        };
        eprintln!("[{}/{n}] {} ({} bytes): {what}", i + 1, f.filename, f.size);
    }

    fn bytes(&self, f: &PlanFile, received: u64) {
        let Ok(mut l) = self.last.lock() else { return };
        if l.0.elapsed() < Duration::from_secs(1) {
            return;
        }
        let elapsed = self.start.lock().map(|s| s.elapsed()).unwrap_or_default();
        let rate = received as f64 / elapsed.as_secs_f64().max(0.001) / 1048576.0;
        let pct = if f.size > 0 {
            received.min(f.size) as f64 * 100.0 / f.size as f64
        } else {
            100.0
        };
        let line = format!(
            "      {received} / {} bytes ({pct:.0}%), {rate:.1} MiB/s",
            f.size
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        *l = (Instant::now(), received);
    }

    fn verified(&self, f: &PlanFile, fetched: Option<&Fetched>) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        let elapsed = self.start.lock().map(|s| s.elapsed()).unwrap_or_default();
        match fetched {
            Some(x) => eprintln!(
                "      verified {} in {:.1}s ({} bytes sent, {} reused)",
                f.checksum,
                elapsed.as_secs_f64(),
                x.literal_bytes,
                x.matched_bytes
            ),
            None => eprintln!("      verified {}", f.checksum),
        }
    }
}

/// Runs `restore`; returns the exit code.
pub async fn run(args: RestoreArgs) -> Result<(), RestoreError> {
    let cfg = load_config(&args)?;
    let rc = cfg.as_ref().map(|c| c.restore.clone()).unwrap_or_default();
    let req = request(&args, cfg.as_ref())?;
    let access = node_access(&args, &rc)?;
    let plan = match &args.plan {
        Some(p) => {
            let text =
                std::fs::read(p).map_err(|e| usage(format!("--plan {}: {e}", p.display())))?;
            let plan: Plan = serde_json::from_slice(&text)
                .map_err(|e| usage(format!("--plan {}: {e}", p.display())))?;
            plan_for(&SavedPlan(plan), &req).await?
        }
        None => {
            let url = args
                .indexer
                .clone()
                .or_else(|| rc.indexer.clone())
                .ok_or_else(|| {
                    usage("--indexer URL is required (or [restore] indexer in the config)")
                })?;
            let token = match args.token_file.as_ref().or(rc.token_file.as_ref()) {
                Some(p) => Some(read_secret(p, "token file")?),
                None => std::env::var(TOKEN_ENV).ok().map(String::into_bytes),
            };
            let token = token
                .map(|t| String::from_utf8(t).map_err(|_| usage("the token is not UTF-8")))
                .transpose()?
                .map(|t| Token(t.trim().to_string()));
            let opts = ClientOptions {
                insecure_http: args.insecure_http,
                ca_file: args.ca_file.clone(),
            };
            plan_for(&IndexerPlans::new(&url, token, &opts)?, &req).await?
        }
    };
    if args.dry_run {
        if args.json {
            let text = serde_json::to_string_pretty(&plan).map_err(|e| usage(e.to_string()))?;
            println!("{text}");
        } else {
            print!("{}", describe(&plan, Some(&access)));
        }
        return Ok(());
    }
    let to = args
        .to
        .clone()
        .ok_or_else(|| usage("--to DIR is required (or --dry-run)"))?;
    eprint!("{}", describe(&plan, Some(&access)));
    let hook = args.hook.clone().map(|command| Hook {
        command,
        timeout: Duration::from_secs(args.hook_timeout.max(1)),
    });
    let progress = StderrProgress {
        tty: std::io::stderr().is_terminal(),
        last: Mutex::new((Instant::now(), 0)),
        start: Mutex::new(Instant::now()),
    };
    let started = Instant::now();
    let fetcher = RsyncFetcher { access };
    let out = execute(&plan, &fetcher, &to, hook.as_ref(), &progress).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restored {} file(s) into {} in {secs:.1}s ({} resumed; {} bytes pulled, {} reused)",
        out.files.len(),
        to.display(),
        out.resumed,
        out.literal_bytes,
        out.matched_bytes
    );
    for f in &out.files {
        println!("{}", f.display());
    }
    Ok(())
}
