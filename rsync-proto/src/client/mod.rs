//! The tokio driver: connects to a daemon, pumps a [`Connection`] and feeds
//! a [`Sink`]. Shaped like quinn's `ConnectionDriver`: read → handle, drain
//! transmit → write, timer → handle_timeout, drain events → sink.

mod fs;
mod source;
mod temp;
#[cfg(feature = "tls")]
mod tls;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use self::fs::{BasisHook, BasisPolicy, FsSink, PARTIAL_DIR};
pub use self::source::{Source, SourceError, DEFAULT_PORT, TLS_PORT, TLS_SCHEME};
pub use self::temp::salvage_stale_temps;
#[cfg(feature = "tls")]
pub use self::tls::{
    rsync_ssl_port, BadPortVariable, TlsConnector, TlsError, TlsFiles, TlsOptions, TlsSession,
    DEFAULT_HANDSHAKE_TIMEOUT, RSYNC_SSL_CA_CERT, RSYNC_SSL_CERT, RSYNC_SSL_KEY, RSYNC_SSL_PORT,
};
use crate::checksum::ChecksumKind;
use crate::connection::{
    Connection, ConnectionConfig, Credentials, Event, FileOutcome, MessageKind, RefusalKind,
    SessionError, SessionInfo, Stats, Target,
};
use crate::daemon::{Greeting, ModuleInfo};
use crate::delta::{CompressionKind, Signature, SignatureParams};
use crate::error::{Limits, ProtocolError};
use crate::flist::{FileEntry, FileIndex, FileList};
use crate::limit::{BandwidthLimiter, Rate};
use crate::setup::CompressArgs;
use crate::version::ProtocolVersion;

/// Options for [`pull`] and [`list_modules`].
#[derive(Clone)]
pub struct PullOptions {
    /// Protocol version to announce (default 32; 29 to 32 supported).
    pub protocol: ProtocolVersion,
    /// Recurse into directories (`-r`).
    pub recursive: bool,
    /// Transfer symlinks as symlinks (`-l`); otherwise the sender skips them.
    pub links: bool,
    /// Ask for owner and group ids and names (`-o -g`).
    pub owner_group: bool,
    /// User for daemon auth; defaults to the source's user, then `$USER`.
    pub user: Option<String>,
    /// Password for daemon auth.
    pub password: Option<Vec<u8>>,
    /// Give up when the session makes no progress for this long (the daemon
    /// sends nothing, or only out-of-band text: see
    /// [`Connection::progress`]), and forward it to the daemon as `--timeout`.
    pub timeout: Option<Duration>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Force a strong checksum instead of negotiating.
    pub checksum_choice: Option<ChecksumKind>,
    /// Bounds on what the daemon can make us allocate.
    pub limits: Limits,
    /// Send a keep-alive after this much silence on our side.
    pub keepalive: Duration,
    /// A limiter shared with other pulls (a node-wide cap).
    pub shared_limit: Option<BandwidthLimiter>,
    /// This pull's own cap; with `shared_limit`, the tighter wins.
    pub rate: Option<Rate>,
    /// Also send the tighter of the two rates to the daemon as `--bwlimit`,
    /// so that its sender paces itself.
    pub forward_bwlimit: bool,
    /// Ask the daemon to compress file data (`-z`); `None` pulls uncompressed.
    pub compress: Option<Compress>,
    /// When every file is pulled whole (no basis), end the session's redo phase together with
    /// the requests: one round trip less per pull, which a node pays on every job over a WAN.
    /// The cost: a whole file that fails verification (only corruption on the way can do
    /// that: its checksum covers exactly what the daemon sent) fails the pull instead of being
    /// sent again in the same session, and [`Error::is_retryable`] says to pull again. For a
    /// caller that retries, as the node does; off by default (stock rsync's behaviour, a redo
    /// in the same session), so a one-shot pull such as `fetch` keeps the redo.
    pub early_end: bool,
    /// Each daemon's last greeting, shared by the pulls of a process that comes back to the
    /// same daemons (a node does every hour): a pull without a password then sends
    /// everything up to the file list with its own greeting, one round trip less
    /// ([`crate::connection::ConnectionConfig::greeting_hint`]). A daemon that now greets
    /// otherwise costs one extra connection, and the cache learns its new greeting.
    pub greetings: Option<GreetingCache>,
    /// Connect with TLS (a TLS-fronted daemon, `rsyncs://`); `None` speaks plain TCP. Share
    /// one connector between pulls so that they resume TLS sessions.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConnector>,
}

/// Suffixes of files that are compressed already, for which [`Compress`]
/// does not ask for compression by default: gzip, zstd, lz4, xz and bzip2
/// backups.
pub const DEFAULT_SKIP_COMPRESS: [&str; 5] = ["gz", "zst", "lz4", "xz", "bz2"];

/// Compression of a pull: rsync's `-z`, `--compress-choice`,
/// `--compress-level` and a `--skip-compress` suffix list.
///
/// The suffix list works on the source path. Stock senders (3.2.7, 3.5.0)
/// cannot change compression per file: `set_compression()` in token.c has
/// its per-file switch compiled out, so forwarding `--skip-compress` would
/// change nothing. What does help is not asking for compression at all:
/// when the source names a single file whose suffix (the part after its
/// last dot, any case, as rsync matches it) is in the list, the pull is
/// made uncompressed and pays no CPU for data that will not shrink. A
/// directory pull is compressed whatever its files are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// Force an algorithm (`--compress-choice`); `None` negotiates the
    /// strongest both sides have (zstd with 3.2+ daemons), or uses zlib
    /// with daemons that cannot negotiate.
    pub choice: Option<CompressionKind>,
    /// `--compress-level`; `None` keeps the algorithm's default. 0 with zlib
    /// or zlibx turns compression off (as in rsync).
    pub level: Option<i32>,
    /// Suffixes (no dot) of sources pulled without compression.
    pub skip_suffixes: Vec<String>,
}

impl Default for Compress {
    fn default() -> Self {
        Compress {
            choice: None,
            level: None,
            skip_suffixes: DEFAULT_SKIP_COMPRESS.map(String::from).to_vec(),
        }
    }
}

impl Compress {
    /// Parses rsync's `--skip-compress` syntax: suffixes separated by `/`
    /// (`gz/zst/7z`); an empty list skips nothing.
    pub fn parse_skip_list(list: &str) -> Vec<String> {
        list.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// True when the file `name` (a path; its last component counts) has a
    /// suffix in the skip list.
    pub fn skips(&self, name: &str) -> bool {
        let base = name.rsplit('/').next().unwrap_or_default();
        match base.rsplit_once('.') {
            Some((stem, suffix)) if !stem.is_empty() && !suffix.is_empty() => self
                .skip_suffixes
                .iter()
                .any(|s| s.eq_ignore_ascii_case(suffix)),
            _ => false,
        }
    }

    /// The arguments for a pull of `source`: `None` when its suffix is in
    /// the skip list.
    pub fn args_for(&self, source: &Source) -> Option<CompressArgs> {
        let single_file = !source.path.is_empty() && !source.path.ends_with('/');
        if single_file && self.skips(&source.path) {
            return None;
        }
        Some(CompressArgs {
            choice: self.choice,
            level: self.level,
        })
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            protocol: ProtocolVersion::default(),
            recursive: false,
            links: false,
            owner_group: false,
            user: None,
            password: None,
            timeout: None,
            connect_timeout: Duration::from_secs(30),
            checksum_choice: None,
            limits: Limits::default(),
            keepalive: Duration::from_secs(20),
            shared_limit: None,
            rate: None,
            forward_bwlimit: false,
            compress: None,
            early_end: false,
            greetings: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("protocol", &self.protocol)
            .field("recursive", &self.recursive)
            .field("links", &self.links)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("checksum_choice", &self.checksum_choice)
            .field("compress", &self.compress)
            .field("rate", &self.rate)
            .field("early_end", &self.early_end)
            .field("greetings", &self.greetings.is_some())
            .field(
                "shared_limit",
                &self.shared_limit.as_ref().and_then(BandwidthLimiter::rate),
            )
            .finish_non_exhaustive()
    }
}

/// Errors of a pull or a listing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source string could not be parsed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("timed out connecting to {addr} after {after:?}")]
    ConnectTimeout {
        /// The address tried.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// A plain connection reached a TLS port: a TLS record came where the daemon's
    /// `@RSYNCD:` greeting should be (use TLS: `rsyncs://` or `--tls`).
    #[error("{addr} answered with TLS where an rsync greeting should be: it is a TLS port (use rsyncs:// or --tls)")]
    TlsPort {
        /// The address connected to.
        addr: String,
    },
    /// The TLS connection failed (feature `tls`).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Socket I/O failed after connecting.
    #[error("socket I/O error: {0}")]
    Io(#[source] io::Error),
    /// The session made no progress for longer than the timeout (the daemon
    /// sent nothing, or only out-of-band text).
    #[error("timed out: no progress from the daemon for {after:?} (during {during})")]
    Timeout {
        /// The configured timeout.
        after: Duration,
        /// The protocol stage.
        during: &'static str,
    },
    /// The session failed: refusal, protocol violation, remote exit.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Writing to the sink failed.
    #[error("destination error: {0}")]
    Sink(#[source] io::Error),
    /// The session completed but some files were not received intact
    /// (verification failed twice, vanished, unreadable on the sender).
    #[error("partial transfer: {failed} file(s) failed{}", last_error.as_ref().map(|m| format!("; last daemon error: {m}")).unwrap_or_default())]
    Partial {
        /// Number of files that failed.
        failed: u64,
        /// The last error text from the daemon, verbatim.
        last_error: Option<String>,
        /// The full report.
        report: Box<PullReport>,
    },
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Session(SessionError::Protocol(e))
    }
}

impl Error {
    /// True when trying again later may succeed (network trouble, timeouts,
    /// `max connections`, partial transfers); false for refusals that need a
    /// config change (unknown module, bad password) and protocol violations.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::Io(_)
            | Error::Timeout { .. } => true,
            // A missing file or a second verification failure will not
            // change by asking again; a whole file that was not redone in
            // its session (PullOptions::early_end) gets its redo that way.
            Error::Partial { failed, report, .. } => {
                report.stats.files_not_redone > 0 && report.stats.files_not_redone >= *failed
            }
            Error::Session(SessionError::Refused { kind, .. }) => {
                *kind == RefusalKind::MaxConnections
            }
            Error::Session(SessionError::RemoteExit { .. })
            | Error::Session(SessionError::GreetingChanged { .. }) => true,
            Error::Session(SessionError::Protocol(ProtocolError::UnexpectedEof { .. })) => true,
            #[cfg(feature = "tls")]
            Error::Tls(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The daemon's own words, verbatim, when it explained the failure.
    pub fn remote_message(&self) -> Option<&str> {
        match self {
            Error::Session(SessionError::Refused { message, .. }) => Some(message),
            Error::Session(SessionError::RemoteExit { last_error, .. }) => last_error.as_deref(),
            Error::Partial { last_error, .. } => last_error.as_deref(),
            _ => None,
        }
    }

    /// An exit code with rsync's meanings (errcode.h): 5 refused / start
    /// error, 10 socket, 11 file I/O, 12 protocol, 23 partial, 30 timeout,
    /// 35 connect timeout.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Source(_) => 1,
            Error::Connect { .. } | Error::Io(_) => 10,
            Error::ConnectTimeout { .. } => 35,
            Error::TlsPort { .. } => 5,
            #[cfg(feature = "tls")]
            Error::Tls(TlsError::HandshakeTimeout { .. }) => 35,
            #[cfg(feature = "tls")]
            Error::Tls(_) => 5,
            Error::Timeout { .. } => 30,
            Error::Session(SessionError::Refused { .. } | SessionError::DaemonExit) => 5,
            Error::Session(SessionError::RemoteExit { code, .. }) => {
                if *code > 0 {
                    *code
                } else {
                    12
                }
            }
            Error::Session(SessionError::Protocol(ProtocolError::PasswordRequired)) => 5,
            Error::Session(_) => 12,
            Error::Sink(_) => 11,
            Error::Partial { .. } => 23,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    /// What setup fixed (protocol, checksum, seed).
    pub session: Option<SessionInfo>,
    /// Counters.
    pub stats: Stats,
    /// Messages the daemon sent, verbatim (at most 1000; see
    /// `messages_dropped`).
    pub messages: Vec<(MessageKind, String)>,
    /// Messages not kept in `messages` because it was full (a daemon that
    /// floods text must not grow the report without bound).
    pub messages_dropped: u64,
    /// MOTD lines.
    pub motd: Vec<String>,
    /// Entries in the file list.
    pub entries: usize,
    /// Files requested against a basis (delta transfer).
    pub basis_files: u64,
    /// (file, basis) pairs, at most 1000.
    pub bases: Vec<(String, String)>,
    /// (file, whole-file checksum) of verified files, at most 1000; the
    /// algorithm is `session.checksum`.
    pub checksums: Vec<(String, Vec<u8>)>,
    /// The daemon's greeting.
    pub greeting: Option<Greeting>,
    /// What the TLS connection negotiated; `None` over plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsSession>,
}

/// The last greeting of each daemon (by `host:port`), for [`PullOptions::greetings`].
/// Cheap to clone (shared); at most [`GreetingCache::MAX`] daemons, forgotten all at once
/// beyond that (a hint is only an optimisation).
#[derive(Debug, Clone, Default)]
pub struct GreetingCache(Arc<std::sync::Mutex<HashMap<String, Greeting>>>);

impl GreetingCache {
    /// Most daemons remembered.
    pub const MAX: usize = 100_000;

    /// An empty cache.
    pub fn new() -> GreetingCache {
        GreetingCache::default()
    }

    /// The last greeting of the daemon at `authority` (`host:port`).
    pub fn get(&self, authority: &str) -> Option<Greeting> {
        self.0.lock().ok()?.get(authority).cloned()
    }

    /// Remembers `greeting` as the daemon's at `authority`.
    pub fn insert(&self, authority: &str, greeting: Greeting) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::MAX && !m.contains_key(authority) {
                m.clear();
            }
            m.insert(authority.to_string(), greeting);
        }
    }

    /// Daemons remembered.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    /// True when no daemon is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A module listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleListing {
    /// The MOTD lines.
    pub motd: Vec<String>,
    /// The modules.
    pub modules: Vec<ModuleInfo>,
}

/// Where pulled files go. [`FsSink`] writes them to a directory; tests and
/// embedders can provide their own.
///
/// The driver calls, in order: [`plan`](Sink::plan) once with the sorted
/// file list; for each file it receives [`begin_file`](Sink::begin_file),
/// [`write`](Sink::write)s, then [`end_file`](Sink::end_file); finally
/// [`finish`](Sink::finish). A file may be started again after
/// [`FileOutcome::RetryScheduled`].
pub trait Sink: Send {
    /// Prepares the destination (directories, symlinks) and returns the
    /// regular files to fetch.
    fn plan(&mut self, list: &FileList) -> impl Future<Output = io::Result<Vec<FileIndex>>> + Send;
    /// Data for `entry` is about to arrive.
    fn begin_file(
        &mut self,
        ndx: FileIndex,
        entry: &FileEntry,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// The next bytes of the file begun last.
    fn write(&mut self, ndx: FileIndex, data: &[u8])
        -> impl Future<Output = io::Result<()>> + Send;
    /// The file is complete: commit it if `outcome` is
    /// [`FileOutcome::Verified`], discard it otherwise.
    fn end_file(
        &mut self,
        ndx: FileIndex,
        outcome: FileOutcome,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// The sender did not send `ndx`.
    fn not_sent(&mut self, ndx: FileIndex) -> impl Future<Output = io::Result<()>> + Send {
        let _ = ndx;
        async { Ok(()) }
    }
    /// The basis to send block checksums for, if any: the sink's policy
    /// (same-name file, partial file, explicit file, a hook). `None` pulls
    /// the whole file.
    fn basis(
        &mut self,
        ndx: FileIndex,
        entry: &FileEntry,
    ) -> impl Future<Output = io::Result<Option<Basis>>> + Send {
        let _ = (ndx, entry);
        async { Ok(None) }
    }
    /// Reads `len` bytes at `offset` of the basis chosen for `ndx`.
    fn read_basis(
        &mut self,
        ndx: FileIndex,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + Send {
        let _ = (ndx, offset, len);
        async { Err(io::Error::other("this sink has no basis files")) }
    }
    /// The session is over: make everything durable. Called only on success.
    fn finish(&mut self, list: &FileList) -> impl Future<Output = io::Result<()>> + Send;
}

/// A basis file for a delta transfer.
#[derive(Debug, Clone)]
pub struct Basis {
    /// The open basis, read with positioned reads (never its cursor).
    pub file: Arc<std::fs::File>,
    /// Its length when opened.
    pub len: u64,
    /// Where it came from, for reports (a path).
    pub label: String,
}

/// Reads a [`Basis`] sequentially with positioned reads.
struct BasisReader {
    file: Arc<std::fs::File>,
    pos: u64,
}

impl io::Read for BasisReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Computes a signature on the blocking pool.
async fn signature_of(basis: Basis, params: SignatureParams) -> io::Result<Signature> {
    tokio::task::spawn_blocking(move || {
        let reader = BasisReader {
            file: basis.file,
            pos: 0,
        };
        Signature::compute(reader, basis.len, params, |_| {})
    })
    .await
    .map_err(io::Error::other)?
}

fn user_for(source: &Source, opts: &PullOptions) -> String {
    opts.user
        .clone()
        .or_else(|| source.user.clone())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "nobody".to_string())
}

fn config_for(source: &Source, opts: &PullOptions, target: Target) -> ConnectionConfig {
    let mut cfg = ConnectionConfig::new(target);
    cfg.protocol = opts.protocol;
    cfg.limits = opts.limits.clone();
    cfg.keepalive = opts.keepalive;
    cfg.early_end = opts.early_end;
    cfg.args.recursive = opts.recursive;
    cfg.args.links = opts.links;
    cfg.args.owner = opts.owner_group;
    cfg.args.group = opts.owner_group;
    cfg.args.checksum_choice = opts.checksum_choice;
    cfg.args.compress = opts.compress.as_ref().and_then(|c| c.args_for(source));
    cfg.args.timeout = opts
        .timeout
        .map(|t| t.as_secs().clamp(1, u64::from(u32::MAX)) as u32);
    if opts.forward_bwlimit {
        let shared = opts.shared_limit.as_ref().and_then(BandwidthLimiter::rate);
        cfg.args.bwlimit_kib = Rate::tighter(shared, opts.rate).map(Rate::as_kib);
    }
    cfg.credentials = opts.password.clone().map(|password| Credentials {
        user: user_for(source, opts),
        password,
    });
    cfg
}

async fn connect(source: &Source, opts: &PullOptions) -> Result<TcpStream, Error> {
    let addr = source.authority();
    let s = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(&addr)).await {
        Err(_) => {
            return Err(Error::ConnectTimeout {
                addr,
                after: opts.connect_timeout,
            })
        }
        Ok(Err(e)) => return Err(Error::Connect { addr, source: e }),
        Ok(Ok(s)) => s,
    };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Lists the modules of the daemon at `source` (its module part is ignored).
pub async fn list_modules(source: &Source, opts: &PullOptions) -> Result<ModuleListing, Error> {
    let conn = Connection::new(config_for(source, opts, Target::ListModules));
    let mut listing = ModuleListing::default();
    let mut sink = NoFiles;
    session(source, conn, &mut sink, opts, |ev| match ev {
        Event::Motd(l) => listing.motd.push(l.clone()),
        Event::Module(m) => listing.modules.push(m.clone()),
        _ => {}
    })
    .await?;
    Ok(listing)
}

/// Pulls `source` into `sink`.
///
/// Returns the report when every requested file arrived and verified.
/// A session that completed with failed files returns [`Error::Partial`].
pub async fn pull<S: Sink>(
    source: &Source,
    opts: &PullOptions,
    sink: &mut S,
) -> Result<PullReport, Error> {
    pull_with(source, opts, sink, |_| {}).await
}

/// Like [`pull`], and calls `observe` with every event (for progress
/// displays and logging) before the sink sees it.
pub async fn pull_with<S: Sink>(
    source: &Source,
    opts: &PullOptions,
    sink: &mut S,
    mut observe: impl FnMut(&Event),
) -> Result<PullReport, Error> {
    if source.module.is_empty() {
        return Err(SourceError {
            input: source.to_string(),
            reason: "no module given",
        }
        .into());
    }
    let target = Target::Pull {
        module: source.module.clone(),
        paths: vec![source.sender_arg()],
    };
    let authority = source.authority();
    let cache = opts.greetings.as_ref().filter(|_| opts.password.is_none());
    let mut hint = cache.and_then(|c| c.get(&authority));
    let report = loop {
        let mut cfg = config_for(source, opts, target.clone());
        cfg.greeting_hint = hint.take();
        let hinted = cfg.greeting_hint.is_some();
        let conn = Connection::new(cfg);
        match session(source, conn, sink, opts, &mut observe).await {
            // Only the greeting arrived: nothing reached the sink or the observer.
            Err(Error::Session(SessionError::GreetingChanged { greeting })) if hinted => {
                tracing::debug!(daemon = %authority, "the daemon's greeting changed; connecting again");
                if let Some(c) = cache {
                    c.insert(&authority, greeting);
                }
            }
            r => break r?,
        }
    };
    if let (Some(c), Some(g)) = (cache, &report.greeting) {
        c.insert(&authority, g.clone());
    }
    let failed = report.stats.files_failed;
    // Like the rsync client, any error the sender reported (a missing or
    // unreadable file is only an MSG_ERROR_XFER) makes the run partial.
    if failed > 0 || report.stats.io_error != 0 || report.stats.remote_errors > 0 {
        let last_error = report
            .messages
            .iter()
            .rev()
            .find(|(k, _)| k.is_error())
            .map(|(_, t)| t.clone());
        return Err(Error::Partial {
            failed: failed.max(1),
            last_error,
            report: Box::new(report),
        });
    }
    Ok(report)
}

/// One connection: TCP, TLS when [`PullOptions::tls`] asks for it, then [`drive`].
async fn session<S: Sink>(
    source: &Source,
    conn: Connection,
    sink: &mut S,
    opts: &PullOptions,
    observe: impl FnMut(&Event),
) -> Result<PullReport, Error> {
    let stream = connect(source, opts).await?;
    let addr = source.authority();
    #[cfg(feature = "tls")]
    if let Some(tls) = &opts.tls {
        let (stream, info) = tls.handshake(stream, &source.host, &addr).await?;
        let server = tls.server_name_for(&source.host);
        let (rd, wr) = tokio::io::split(stream);
        let peer = Peer {
            addr: &addr,
            tls_server: Some(&server),
        };
        let mut report = drive(rd, wr, peer, conn, sink, opts, observe).await?;
        report.tls = Some(info);
        return Ok(report);
    }
    let (rd, wr) = stream.into_split();
    let peer = Peer {
        addr: &addr,
        tls_server: None,
    };
    let result = drive(rd, wr, peer, conn, sink, opts, observe).await;
    // A TLS terminator cuts a plain client without a word (stunnel resets the connection):
    // ask it in TLS whether that is what it is.
    #[cfg(feature = "tls")]
    if result.as_ref().is_err_and(cut_before_greeting) {
        let probe_timeout = opts.connect_timeout.min(TLS_PROBE_TIMEOUT);
        if tls::answers_tls(&addr, &source.host, probe_timeout).await {
            return Err(Error::TlsPort { addr });
        }
    }
    result
}

/// How long the TLS probe of [`session`] waits for an answer.
#[cfg(feature = "tls")]
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection ended (reset or closed) during setup: what a plain client sees from a TLS
/// terminator.
#[cfg(feature = "tls")]
fn cut_before_greeting(e: &Error) -> bool {
    match e {
        Error::Io(e) => is_hangup(e),
        Error::Session(SessionError::Protocol(ProtocolError::UnexpectedEof { during })) => {
            *during == "setup"
        }
        _ => false,
    }
}

/// Who the driver talks to, for errors.
#[derive(Clone, Copy)]
struct Peer<'a> {
    addr: &'a str,
    /// The verified server name of a TLS connection.
    tls_server: Option<&'a str>,
}

impl Peer<'_> {
    /// An I/O error on the connection: the TLS failure inside it (an alert: a refused client
    /// certificate arrives after the handshake in TLS 1.3), or plain I/O.
    fn io_error(&self, e: io::Error) -> Error {
        #[cfg(feature = "tls")]
        if let Some(server) = self.tls_server {
            if let Some(t) = TlsError::from_io(server, &e) {
                return Error::Tls(t);
            }
        }
        Error::Io(e)
    }
}

/// True when `bytes` start like a TLS record (handshake or alert, version 3.x): what a plain
/// client sees where a daemon's `@RSYNCD:` greeting should be when it reached a TLS port.
pub fn looks_like_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

struct NoFiles;

impl Sink for NoFiles {
    async fn plan(&mut self, _: &FileList) -> io::Result<Vec<FileIndex>> {
        Ok(Vec::new())
    }
    async fn begin_file(&mut self, _: FileIndex, _: &FileEntry) -> io::Result<()> {
        Err(io::Error::other("no files expected"))
    }
    async fn write(&mut self, _: FileIndex, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no files expected"))
    }
    async fn end_file(&mut self, _: FileIndex, _: FileOutcome) -> io::Result<()> {
        Ok(())
    }
    async fn finish(&mut self, _: &FileList) -> io::Result<()> {
        Ok(())
    }
}

/// The socket read buffer of a pull that has moved many bytes: large reads keep the per-byte
/// cost of a whole-file pull of a big file down.
const READ_BUF: usize = 256 * 1024;

/// The socket read buffer a pull starts with. A node runs hundreds of pulls of small files at
/// once (the hourly burst): 256 of them at [`READ_BUF`] would hold 64 MiB of buffers alone.
const READ_BUF_START: usize = 64 * 1024;

/// Bytes a pull reads before its buffer grows from [`READ_BUF_START`] to [`READ_BUF`].
const READ_BUF_GROW_AFTER: u64 = 4 << 20;

/// Most (file, basis) pairs kept in a report.
const MAX_REPORTED_BASES: usize = 1000;

/// Most daemon messages kept in a report.
const MAX_REPORTED_MESSAGES: usize = 1000;

/// A basis waiting for (or in) signature computation.
struct SignatureJob {
    ndx: FileIndex,
    basis: Basis,
    full: bool,
}

/// Pumps `conn` over `stream` until the session ends: read → handle, drain
/// transmit → write, timer → handle_timeout, drain events → sink, and
/// basis signatures computed one at a time on the blocking pool while the
/// socket keeps moving (so large bases cannot stall the session).
async fn drive<S: Sink, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    peer: Peer<'_>,
    mut conn: Connection,
    sink: &mut S,
    opts: &PullOptions,
    mut observe: impl FnMut(&Event),
) -> Result<PullReport, Error> {
    let mut buf = vec![0u8; READ_BUF_START];
    let mut received: u64 = 0;
    let own_limit = opts.rate.map(|r| BandwidthLimiter::new(Some(r)));
    let limiters: Vec<&BandwidthLimiter> =
        own_limit.iter().chain(opts.shared_limit.iter()).collect();
    let mut out: Vec<u8> = Vec::new();
    let mut out_pos = 0;
    let mut report = PullReport::default();
    let mut flist: Option<Arc<FileList>> = None;
    // When the session last moved forward (Connection::progress): the stall
    // timeout runs from here, so a daemon that only sends text cannot hold
    // a stalled session open.
    let mut last_read = Instant::now();
    let mut last_progress = conn.progress();
    let mut eof = false;
    let mut eof_handled = false;
    let mut jobs: VecDeque<SignatureJob> = VecDeque::new();
    let mut running: Option<(FileIndex, tokio::task::JoinHandle<io::Result<Signature>>)> = None;
    let mut finish_when_signed = false;
    loop {
        // Drain events into the sink.
        while let Some(ev) = conn.poll_event() {
            observe(&ev);
            match ev {
                Event::Motd(l) => report.motd.push(l),
                Event::Message { kind, text } => {
                    match kind {
                        MessageKind::Info | MessageKind::Client | MessageKind::Log => {
                            tracing::info!(target: "rsync_proto::remote", "{text}")
                        }
                        MessageKind::Warning => {
                            tracing::warn!(target: "rsync_proto::remote", "{text}")
                        }
                        _ => tracing::error!(target: "rsync_proto::remote", "{text}"),
                    }
                    if report.messages.len() < MAX_REPORTED_MESSAGES {
                        report.messages.push((kind, text));
                    } else {
                        report.messages_dropped += 1;
                    }
                }
                Event::Ready(info) => report.session = Some(info),
                Event::FileList(list) => {
                    report.entries = list.iter().count();
                    let wanted = sink.plan(&list).await.map_err(Error::Sink)?;
                    for ndx in wanted {
                        queue_request(&mut conn, sink, &list, ndx, false, &mut jobs, &mut report)
                            .await?;
                    }
                    finish_when_signed = true;
                    flist = Some(list);
                }
                Event::RedoNeeded(files) => {
                    let list = flist
                        .clone()
                        .ok_or(ProtocolError::Misuse("redo before file list"))?;
                    for ndx in files {
                        queue_request(&mut conn, sink, &list, ndx, true, &mut jobs, &mut report)
                            .await?;
                    }
                    finish_when_signed = true;
                }
                Event::FileStart(ndx) => {
                    let entry = flist
                        .as_ref()
                        .and_then(|l| l.get(ndx))
                        .cloned()
                        .ok_or(ProtocolError::UnrequestedFile { ndx: ndx.0 })?;
                    sink.begin_file(ndx, &entry).await.map_err(Error::Sink)?;
                }
                Event::FileData(ndx, data) => sink.write(ndx, &data).await.map_err(Error::Sink)?,
                Event::CopyBlock { ndx, offset, len } => {
                    let data = sink
                        .read_basis(ndx, offset, len)
                        .await
                        .map_err(Error::Sink)?;
                    if data.len() != len as usize {
                        return Err(Error::Sink(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("basis of file {ndx} shrank during the transfer"),
                        )));
                    }
                    sink.write(ndx, &data).await.map_err(Error::Sink)?;
                    conn.handle_block_data(&data)?;
                }
                Event::FileVerified(ndx, sum) => {
                    if report.checksums.len() < MAX_REPORTED_BASES {
                        let name = flist
                            .as_ref()
                            .and_then(|l| l.get(ndx))
                            .map(FileEntry::name_lossy);
                        report.checksums.push((name.unwrap_or_default(), sum));
                    }
                }
                Event::FileDone(ndx, outcome) => {
                    if outcome != FileOutcome::Verified {
                        let name = flist
                            .as_ref()
                            .and_then(|l| l.get(ndx))
                            .map(FileEntry::name_lossy);
                        tracing::warn!(file = ?name, ?outcome, "whole-file checksum mismatch");
                    }
                    sink.end_file(ndx, outcome).await.map_err(Error::Sink)?;
                }
                Event::FileNotSent(ndx) => sink.not_sent(ndx).await.map_err(Error::Sink)?,
                Event::Finished(stats) => {
                    report.stats = stats;
                    report.greeting = conn.greeting().cloned();
                    if let Some(list) = &flist {
                        sink.finish(list).await.map_err(Error::Sink)?;
                    }
                    let _ = wr.shutdown().await;
                    return Ok(report);
                }
                Event::Module(_) | Event::ServerTimeout(_) => {}
            }
        }
        // Decoding of compressed data waits while its output sits in the queue.
        if conn.handle_drained()? {
            continue;
        }
        // Keep one signature computing; end the phase's requests when all are sent.
        if running.is_none() {
            if let Some(job) = jobs.pop_front() {
                let params = conn
                    .signature_params(job.full)
                    .ok_or(ProtocolError::Misuse("signature before setup"))?;
                let ndx = job.ndx;
                running = Some((ndx, tokio::spawn(signature_of(job.basis, params))));
            } else if finish_when_signed {
                finish_when_signed = false;
                // An empty file list ends the session without any requests.
                if conn.awaiting_requests() {
                    conn.finish_requests()?;
                    continue;
                }
            }
        }
        let now = Instant::now();
        conn.handle_timeout(now);
        if out_pos == out.len() {
            out.clear();
            out_pos = 0;
            if let Some(bytes) = conn.poll_transmit(now) {
                out = bytes;
            }
        }
        if eof {
            if eof_handled {
                return Err(ProtocolError::UnexpectedEof {
                    during: stage_name(&conn),
                }
                .into());
            }
            eof_handled = true;
            conn.handle_eof()?;
            continue;
        }
        let keepalive_at = conn
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(3600));
        let stall_at = opts.timeout.map(|t| last_read + t);
        let deadline = stall_at.map_or(keepalive_at, |s| s.min(keepalive_at));
        let want_write = out_pos < out.len();
        // While limited, read at most one bucket at a time so bursts stay bounded.
        let read_len = limiters
            .iter()
            .filter_map(|l| l.max_read())
            .min()
            .unwrap_or(buf.len())
            .clamp(1, buf.len());
        let signing = async {
            match running.as_mut() {
                Some((_, h)) => h.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read(&mut buf[..read_len]) => {
                match r {
                    Ok(0) => eof = true,
                    Ok(n) if received == 0 && peer.tls_server.is_none() && looks_like_tls_record(&buf[..n]) => {
                        return Err(Error::TlsPort { addr: peer.addr.to_string() });
                    }
                    Ok(n) => {
                        // Pay for the bytes before handling them: an over-budget
                        // pull stops reading and TCP holds the sender back.
                        for l in &limiters {
                            l.consume(n).await;
                        }
                        conn.handle_input(&buf[..n])?;
                        received += n as u64;
                        if received > READ_BUF_GROW_AFTER && buf.len() < READ_BUF {
                            buf.resize(READ_BUF, 0);
                        }
                        if conn.progress() != last_progress {
                            last_progress = conn.progress();
                            last_read = Instant::now();
                        }
                    }
                    // A daemon that reported an error and exited may reset the
                    // connection before reading what we sent: keep its words.
                    Err(e) if is_hangup(&e) && conn.last_remote_error().is_some() => eof = true,
                    Err(e) => return Err(peer.io_error(e)),
                }
            }
            w = wr.write(&out[out_pos..]), if want_write => {
                match w {
                    Ok(n) => out_pos += n,
                    Err(e) if is_hangup(&e) && conn.last_remote_error().is_some() => {
                        out_pos = out.len();
                        eof = true;
                    }
                    Err(e) => return Err(peer.io_error(e)),
                }
            }
            r = signing => {
                let ndx = running.take().map(|(n, _)| n).ok_or(ProtocolError::Misuse("no signature job"))?;
                let sig = r.map_err(|e| Error::Sink(io::Error::other(e)))?.map_err(Error::Sink)?;
                conn.request_with(ndx, &sig)?;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let (Some(t), Some(s)) = (opts.timeout, stall_at) {
                    if Instant::now() >= s {
                        return Err(Error::Timeout { after: t, during: stage_name(&conn) });
                    }
                }
            }
        }
    }
}

fn is_hangup(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Requests `ndx` at once (no basis) or queues its basis for a signature.
async fn queue_request<S: Sink>(
    conn: &mut Connection,
    sink: &mut S,
    list: &FileList,
    ndx: FileIndex,
    full: bool,
    jobs: &mut VecDeque<SignatureJob>,
    report: &mut PullReport,
) -> Result<(), Error> {
    let entry = list
        .get(ndx)
        .ok_or(ProtocolError::Misuse("request for an unknown index"))?;
    match sink.basis(ndx, entry).await.map_err(Error::Sink)? {
        Some(basis) => {
            if !full {
                report.basis_files += 1;
                if report.bases.len() < MAX_REPORTED_BASES {
                    report.bases.push((entry.name_lossy(), basis.label.clone()));
                }
            }
            jobs.push_back(SignatureJob { ndx, basis, full });
        }
        None => conn.request(ndx)?,
    }
    Ok(())
}

fn stage_name(conn: &Connection) -> &'static str {
    if conn.session_info().is_none() {
        "setup"
    } else if conn.awaiting_requests() {
        "file selection"
    } else {
        "transfer"
    }
}
