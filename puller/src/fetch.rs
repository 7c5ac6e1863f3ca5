//! `ubackup-puller fetch`: one pull from an rsync daemon.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rsync_proto::client::{self, BasisPolicy, Compress, FsSink, PullOptions, PullReport, Source};
use rsync_proto::limit::Rate;
use rsync_proto::{ChecksumKind, CompressionKind, ProtocolVersion};
use serde::Serialize;

use crate::cli::FetchArgs;
use crate::progress::Progress;

/// The final `--json` line.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    ok: bool,
    exit_code: u8,
    source: String,
    files: u64,
    files_failed: u64,
    entries: usize,
    bytes_received: u64,
    bytes_sent: u64,
    literal_bytes: u64,
    matched_bytes: u64,
    elapsed_ms: u128,
    protocol: Option<u32>,
    checksum: Option<&'a str>,
    compression: Option<&'a str>,
    basis_files: u64,
    basis: Option<String>,
    error: Option<String>,
    remote_message: Option<String>,
}

/// Runs the command and returns the process exit code.
pub async fn run(args: FetchArgs) -> u8 {
    let started = Instant::now();
    let source_text = args.source.clone();
    let json = args.json;
    let result = fetch(args).await;
    let elapsed_ms = started.elapsed().as_millis();
    let (code, report, error, remote) = match result {
        Ok(Outcome::Pulled(report)) => (0, Some(*report), None, None),
        Ok(Outcome::Listed) => return 0,
        Err(Failure::Interrupted) => {
            eprintln!("ubackup-puller: interrupted; partial data kept for the next pull");
            (20, None, Some("interrupted".to_string()), None)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("ubackup-puller: {e:#}");
            (1, None, Some(format!("{e:#}")), None)
        }
        Err(Failure::Pull(e)) => {
            eprintln!("ubackup-puller: {e}");
            let code = u8::try_from(e.exit_code()).unwrap_or(1);
            let remote = e.remote_message().map(str::to_string);
            let text = e.to_string();
            let report = match e {
                client::Error::Partial { report, .. } => Some(*report),
                _ => None,
            };
            (code, report, Some(text), remote)
        }
    };
    if json {
        let stats = report.as_ref().map(|r| r.stats).unwrap_or_default();
        let session = report.as_ref().and_then(|r| r.session);
        let summary = Summary {
            ok: code == 0,
            exit_code: code,
            source: source_text,
            files: stats.files_transferred,
            files_failed: stats.files_failed,
            entries: report.as_ref().map_or(0, |r| r.entries),
            bytes_received: stats.bytes_received,
            bytes_sent: stats.bytes_sent,
            literal_bytes: stats.literal_bytes,
            matched_bytes: stats.matched_bytes,
            elapsed_ms,
            protocol: session.map(|s| s.protocol.get()),
            checksum: session.map(|s| s.checksum.name()),
            compression: session
                .and_then(|s| s.compression)
                .map(CompressionKind::name),
            basis_files: report.as_ref().map_or(0, |r| r.basis_files),
            basis: report
                .as_ref()
                .and_then(|r| (r.bases.len() == 1).then(|| r.bases[0].1.clone())),
            error,
            remote_message: remote,
        };
        match serde_json::to_string(&summary) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("ubackup-puller: cannot encode the summary: {e}"),
        }
    }
    code
}

enum Outcome {
    Pulled(Box<PullReport>),
    Listed,
}

enum Failure {
    Interrupted,
    Usage(anyhow::Error),
    Pull(client::Error),
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Self {
        Failure::Pull(e)
    }
}

async fn fetch(args: FetchArgs) -> Result<Outcome, Failure> {
    let mut opts = options(&args).map_err(Failure::Usage)?;
    let tls = args.tls || args.source.starts_with(client::TLS_SCHEME);
    let source: Source = if tls {
        Source::parse_tls(
            &args.source,
            client::rsync_ssl_port().map_err(|e| Failure::Usage(e.into()))?,
        )
    } else {
        args.source.parse()
    }
    .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    if tls {
        opts.tls = Some(tls_connector(&args)?);
    }
    if args.list || source.module.is_empty() {
        let listing = client::list_modules(&source, &opts).await?;
        for line in &listing.motd {
            println!("{line}");
        }
        for m in &listing.modules {
            println!("{:<15}\t{}", m.name, m.comment);
        }
        return Ok(Outcome::Listed);
    }
    let Some(dest) = args.dest.as_ref() else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "DEST is required unless --list is given"
        )));
    };
    let policy = match (&args.basis, args.whole_file) {
        (_, true) => BasisPolicy::None,
        (Some(path), false) => BasisPolicy::File(path.clone()),
        (None, false) => BasisPolicy::SameName,
    };
    // The temp file of an earlier run that was killed (SIGKILL, a crash, power loss:
    // no chance to move it aside) becomes this run's resume basis, as the node does.
    if let Some((dir, leaf)) = stale_temp_place(&source, dest) {
        match rsync_proto::client::salvage_stale_temps(&dir, &leaf, &args.partial_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "kept the data of an interrupted pull for resume"),
            Err(e) => tracing::warn!("cannot clean up stale temp files: {e}"),
        }
    }
    let mut sink = FsSink::new(dest)
        .map_err(|e| Failure::Pull(client::Error::Sink(e)))?
        .ignore_times(args.ignore_times)
        .basis_policy(policy)
        .partial_dir(Some(args.partial_dir.as_str()));
    let mut progress = Progress::new();
    let result = {
        let pull = client::pull_with(&source, &opts, &mut sink, |ev| progress.observe(ev));
        tokio::select! {
            r = pull => r,
            // Dropping the pull drops the sink's open file, which keeps its
            // data in the partial directory for the next attempt.
            _ = interrupted() => {
                progress.finish();
                return Err(Failure::Interrupted);
            }
        }
    };
    progress.finish();
    for link in sink.refused_symlinks() {
        eprintln!("ubackup-puller: refused symlink {link:?}: its target leaves the destination");
    }
    Ok(Outcome::Pulled(Box::new(result?)))
}

/// Where a single-file pull of `source` into `dest` writes its temp files: the
/// directory and the file name, following `FsSink`'s layout rule (an existing
/// directory or a trailing slash receives `dest/LEAF`, anything else is the
/// file itself). `None` for directory sources, whose files are found only in
/// the file list. Another `fetch` writing the same file into the same place at
/// the same time would lose its temp file to this one: run one at a time per
/// destination file, as the node does (it keeps a set of files being written).
fn stale_temp_place(source: &Source, dest: &Path) -> Option<(std::path::PathBuf, String)> {
    use std::os::unix::ffi::OsStrExt as _;
    if source.path.is_empty() || source.path.ends_with('/') {
        return None;
    }
    let leaf = source.path.rsplit('/').next()?;
    if leaf.is_empty() || leaf == "." || leaf == ".." {
        return None;
    }
    if dest.as_os_str().as_bytes().ends_with(b"/") || dest.is_dir() {
        return Some((dest.to_path_buf(), leaf.to_string()));
    }
    let name = dest.file_name()?.to_str()?.to_string();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    Some((parent, name))
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn options(args: &FetchArgs) -> anyhow::Result<PullOptions> {
    let protocol = ProtocolVersion::new(args.protocol).context("unsupported --protocol")?;
    let checksum_choice = match &args.checksum_choice {
        Some(name) => match ChecksumKind::from_name(name) {
            Some(k) => Some(k),
            None => {
                bail!("unknown --checksum-choice {name:?} (xxh128, xxh3, xxh64, md5, md4, sha1)")
            }
        },
        None => None,
    };
    let password = match &args.password_file {
        Some(path) => Some(read_password_file(path)?),
        None => std::env::var_os("RSYNC_PASSWORD").map(|p| {
            use std::os::unix::ffi::OsStringExt as _;
            p.into_vec()
        }),
    };
    let rate = match &args.bwlimit {
        Some(text) => Rate::parse_bwlimit(text)?,
        None => None,
    };
    let compress = compress_options(args)?;
    Ok(PullOptions {
        compress,
        rate,
        forward_bwlimit: rate.is_some(),
        protocol,
        recursive: args.recursive || args.archive,
        links: args.links || args.archive,
        password,
        timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
        connect_timeout: Duration::from_secs(args.contimeout.max(1)),
        checksum_choice,
        ..PullOptions::default()
    })
}

/// The TLS client: `--tls-ca/--tls-cert/--tls-key`, else rsync-ssl's variables
/// ([`client::TlsOptions::from_rsync_ssl_env`]).
fn tls_connector(args: &FetchArgs) -> Result<client::TlsConnector, Failure> {
    let opts = client::TlsOptions::from_rsync_ssl_env(client::TlsFiles {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    });
    client::TlsConnector::new(&opts)
        .map_err(|e| Failure::Usage(anyhow::Error::new(e).context("setting up TLS")))
}

/// `-z`, `--compress-choice`, `--compress-level` and `--skip-compress`, with
/// rsync's rules: a choice or a level implies -z; "none" turns it off.
fn compress_options(args: &FetchArgs) -> anyhow::Result<Option<Compress>> {
    let (on, choice) = match args.compress_choice.as_deref() {
        None => (args.compress, None),
        Some(name) if name.eq_ignore_ascii_case("auto") => (true, None),
        Some(name) if name.eq_ignore_ascii_case("none") => (false, None),
        Some(name) => match CompressionKind::from_name(name) {
            Some(k) => (true, Some(k)),
            None => {
                bail!("unknown --compress-choice {name:?} (zstd, lz4, zlibx, zlib, auto, none)")
            }
        },
    };
    let explicit_off = args
        .compress_choice
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case("none"));
    if !(on || (args.compress_level.is_some() && !explicit_off)) {
        return Ok(None);
    }
    let mut c = Compress {
        choice,
        level: args.compress_level,
        ..Compress::default()
    };
    if let Some(list) = &args.skip_compress {
        c.skip_suffixes = Compress::parse_skip_list(list);
    }
    Ok(Some(c))
}

/// Reads the first line of a password file, refusing one that others can
/// read (as the rsync client does).
fn read_password_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("password file {}", path.display()))?;
    if meta.permissions().mode() & 0o006 != 0 {
        bail!(
            "password file {} must not be other-accessible",
            path.display()
        );
    }
    let text =
        std::fs::read(path).with_context(|| format!("reading password file {}", path.display()))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(line.to_vec())
}
