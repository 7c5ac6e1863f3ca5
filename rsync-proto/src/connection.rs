//! The receiver state machine: everything a pulling client does, with no I/O.
//!
//! A [`Connection`] is fed bytes with [`Connection::handle_input`] and end of
//! input with [`Connection::handle_eof`]. It produces bytes to send through
//! [`Connection::poll_transmit`] and [`Event`]s through
//! [`Connection::poll_event`]. Time is passed in; the connection never reads a
//! clock.
//!
//! # Driving a connection
//!
//! Like quinn-proto's `Connection`, it is pumped by a driver in this order:
//!
//! 1. read from the socket → [`handle_input`](Connection::handle_input)
//!    (or [`handle_eof`](Connection::handle_eof));
//! 2. drain [`poll_transmit`](Connection::poll_transmit) → write;
//! 3. drain [`poll_event`](Connection::poll_event) → act (a sink writes files);
//! 4. when [`poll_timeout`](Connection::poll_timeout) passes, call
//!    [`handle_timeout`](Connection::handle_timeout) (keep-alives);
//! 5. after [`Event::FileList`], choose the files: call
//!    [`request`](Connection::request) for each, then
//!    [`finish_requests`](Connection::finish_requests);
//! 6. once the events are drained, call
//!    [`handle_drained`](Connection::handle_drained): a compressed stream
//!    stops decoding while [`OUTPUT_BUDGET`] bytes of file data wait in the
//!    event queue (a 16 KiB chunk may stand for hundreds of MiB), and
//!    continues here. If it returns true, new events wait: go back to 3.
//!
//! The session ends with [`Event::Finished`] or an error.
//!
//! # Protocol flow (mirrors clientserver.c, compat.c, flist.c, generator.c,
//! receiver.c and main.c of rsync)
//!
//! ```text
//! greeting ⇄ │ module → [AUTHREQD → response] → OK │ args │ compat flags,
//! checksum lists, seed │ ── multiplexed from here ── │ filter list → │
//! ← file list, id lists │ requests, NDX_DONE → │ ← file data … NDX_DONE │
//! redo requests, NDX_DONE×2 (×3 at >= 31) → │ ← redo data, NDX_DONE×2,
//! stats, [NDX_DONE at >= 31] │ goodbye NDX_DONE → │ EOF
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checksum::{ChecksumKind, FileHasher};
use crate::daemon::{self, AuthDigest, Greeting, ModuleInfo, ServerLine};
use crate::delta::{
    CompressedItem, CompressedTokenDecoder, CompressionKind, Signature, SignatureParams, SumHead,
    Token,
};
use crate::error::{check_limit, Limits, ProtocolError};
use crate::flist::{
    decode_id_lists, FileEntry, FileIndex, FileKind, FileList, FlistDecoder, FlistItem,
    FlistOptions,
};
use crate::mux::{encode_frame, Demuxed, Demuxer, MessageCode};
use crate::setup::{compat, TransferArgs};
use crate::version::ProtocolVersion;
use crate::wire::{self, NdxCodec, Reader, NDX_DEL_STATS, NDX_DONE};

/// ITEM_TRANSFER: the file's data follows (rsync.h).
pub const ITEM_TRANSFER: u16 = 1 << 15;
/// ITEM_REPORT_TIME: logged by the sender only.
pub const ITEM_REPORT_TIME: u16 = 1 << 3;
/// ITEM_IS_NEW: logged by the sender only.
pub const ITEM_IS_NEW: u16 = 1 << 13;
/// ITEM_BASIS_TYPE_FOLLOWS: a basis-type byte follows the iflags.
pub const ITEM_BASIS_TYPE_FOLLOWS: u16 = 1 << 11;
/// ITEM_XNAME_FOLLOWS: a vstring follows the iflags.
pub const ITEM_XNAME_FOLLOWS: u16 = 1 << 12;

/// What the session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// List the daemon's modules.
    ListModules,
    /// Pull `paths` (each `module[/path]`, trailing slash kept) from `module`.
    Pull {
        /// The module name.
        module: String,
        /// Sender arguments, each starting with the module name.
        paths: Vec<String>,
    },
}

/// Credentials for daemon authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name sent in the response.
    pub user: String,
    /// The password (never logged).
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything a [`Connection`] needs to know up front.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The version we announce (default 32).
    pub protocol: ProtocolVersion,
    /// What to do.
    pub target: Target,
    /// Credentials, if the module may ask for them.
    pub credentials: Option<Credentials>,
    /// Options sent to the daemon.
    pub args: TransferArgs,
    /// Bounds on peer input.
    pub limits: Limits,
    /// Longest quiet period on our side before we send a keep-alive.
    pub keepalive: Duration,
    /// End the redo phase together with phase 0 when every file is requested whole (default
    /// off, as stock rsync): one round trip less per session, but a whole file that fails
    /// verification is not requested again in the same session. See
    /// [`Connection::finish_requests`].
    pub early_end: bool,
    /// The greeting this daemon sent last time (see [`Connection::greeting`]). With it, and
    /// without credentials, the arguments, the negotiation lists and the filter list go out
    /// with our greeting instead of after the daemon's: one round trip less. What they
    /// depend on (the negotiated protocol, and whether the daemon negotiates checksums) is
    /// checked when the real greeting arrives; if it differs, the session ends with
    /// [`SessionError::GreetingChanged`] before anything was received but that greeting,
    /// and the caller connects again without the hint ([`crate::client::pull`] does).
    pub greeting_hint: Option<Greeting>,
}

impl ConnectionConfig {
    /// A config with defaults for `target`.
    pub fn new(target: Target) -> Self {
        ConnectionConfig {
            protocol: ProtocolVersion::default(),
            target,
            credentials: None,
            args: TransferArgs {
                recursive: false,
                links: false,
                owner: false,
                group: false,
                checksum_choice: None,
                timeout: None,
                bwlimit_kib: None,
                compress: None,
            },
            limits: Limits::default(),
            keepalive: Duration::from_secs(20),
            early_end: false,
            greeting_hint: None,
        }
    }
}

/// Why the daemon refused the module request (`@ERROR: ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// "Unknown module".
    UnknownModule,
    /// "auth failed on module".
    AuthFailed,
    /// "access denied to".
    AccessDenied,
    /// "max connections (N) reached -- try again later".
    MaxConnections,
    /// Any other `@ERROR`.
    Other,
}

impl RefusalKind {
    fn classify(text: &str) -> RefusalKind {
        if text.starts_with("Unknown module") {
            RefusalKind::UnknownModule
        } else if text.starts_with("auth failed") {
            RefusalKind::AuthFailed
        } else if text.starts_with("access denied") {
            RefusalKind::AccessDenied
        } else if text.starts_with("max connections") {
            RefusalKind::MaxConnections
        } else {
            RefusalKind::Other
        }
    }
}

/// What ended a session early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer broke the protocol or exceeded a limit.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The daemon refused with `@ERROR: <message>` (kept verbatim).
    #[error("daemon refused: {message}")]
    Refused {
        /// The refusal class.
        kind: RefusalKind,
        /// The daemon's text, verbatim.
        message: String,
    },
    /// The daemon closed the module request with `@RSYNCD: EXIT`.
    #[error("daemon ended the session (@RSYNCD: EXIT)")]
    DaemonExit,
    /// The daemon's greeting differs from [`ConnectionConfig::greeting_hint`] in what our
    /// early arguments and lists depended on: connect again without the hint (nothing but
    /// the greeting was received). The daemon's real greeting is here for the next time.
    #[error("the daemon now greets with protocol {}.{}{}, not as before: connect again without the hint", greeting.protocol, greeting.sub, if greeting.digests.is_some() { "" } else { " and no digest list" })]
    GreetingChanged {
        /// What the daemon sent this time.
        greeting: Greeting,
    },
    /// The remote side exited with an error (MSG_ERROR_EXIT); the text of
    /// its last error message, if any, is kept verbatim.
    #[error("remote rsync exited with code {code}{}", last_error.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    RemoteExit {
        /// The remote exit code.
        code: i32,
        /// The last MSG_ERROR text received before the exit.
        last_error: Option<String>,
    },
}

/// Kind of an out-of-band text message from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// MSG_ERROR_XFER: an error about one file.
    ErrorXfer,
    /// MSG_INFO.
    Info,
    /// MSG_ERROR.
    Error,
    /// MSG_WARNING.
    Warning,
    /// MSG_ERROR_SOCKET.
    ErrorSocket,
    /// MSG_LOG.
    Log,
    /// MSG_CLIENT.
    Client,
    /// MSG_ERROR_UTF8.
    ErrorUtf8,
}

impl MessageKind {
    /// True for the error kinds.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            MessageKind::ErrorXfer
                | MessageKind::Error
                | MessageKind::ErrorSocket
                | MessageKind::ErrorUtf8
        )
    }
}

/// Facts fixed during setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Negotiated protocol.
    pub protocol: ProtocolVersion,
    /// Strong checksum in use.
    pub checksum: ChecksumKind,
    /// The server's compat flags (0 below protocol 30).
    pub compat_flags: u32,
    /// The checksum seed.
    pub seed: i32,
    /// The compression of file data, if any (negotiated, forced, or zlib
    /// with a peer that cannot negotiate; `None` when not asked for or
    /// turned off by `--compress-level=0` with zlib).
    pub compression: Option<CompressionKind>,
}

/// Counters for a finished (or failed) session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes we read from the socket.
    pub bytes_received: u64,
    /// Bytes we wrote to the socket.
    pub bytes_sent: u64,
    /// File bytes that arrived as literal data.
    pub literal_bytes: u64,
    /// File bytes copied from a basis (block matches).
    pub matched_bytes: u64,
    /// Files whose data arrived and verified.
    pub files_transferred: u64,
    /// Files that failed verification twice, were not sent, or vanished.
    pub files_failed: u64,
    /// Of `files_failed`: whole files that failed verification once, in a session whose redo
    /// phase ended with the requests ([`ConnectionConfig::early_end`]). A new session can
    /// fetch them.
    pub files_not_redone: u64,
    /// The sender's io_error flags.
    pub io_error: i32,
    /// Error messages the daemon sent (MSG_ERROR, MSG_ERROR_XFER, ...).
    pub remote_errors: u64,
    /// The sender's own stats (total_read, total_written, total_size,
    /// flist_buildtime, flist_xfertime), from the end of the run.
    pub sender: [i64; 5],
}

/// How a file's transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// The whole-file checksum matched: commit the file.
    Verified,
    /// The checksum did not match; the file will be requested again in the
    /// redo phase. Discard what was written.
    RetryScheduled,
    /// The checksum did not match in the redo phase. Discard.
    VerificationFailed,
}

/// Something the driver or sink must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line of the daemon's message of the day.
    Motd(String),
    /// A module from the listing.
    Module(ModuleInfo),
    /// Setup is complete.
    Ready(SessionInfo),
    /// The daemon's module `timeout`, in seconds (MSG_IO_TIMEOUT).
    ServerTimeout(u32),
    /// An out-of-band message from the daemon, text verbatim.
    Message {
        /// Its kind.
        kind: MessageKind,
        /// The text (trailing newline removed).
        text: String,
    },
    /// The complete, sorted file list. The driver must now call
    /// [`Connection::request`] for each wanted file and then
    /// [`Connection::finish_requests`].
    FileList(Arc<FileList>),
    /// Data for file `ndx` is about to arrive.
    FileStart(FileIndex),
    /// The next bytes of file `ndx`, in order.
    FileData(FileIndex, Vec<u8>),
    /// File `ndx` matched the sender's whole-file checksum (these bytes, of
    /// the session's algorithm); [`Event::FileDone`] with
    /// [`FileOutcome::Verified`] follows.
    FileVerified(FileIndex, Vec<u8>),
    /// File `ndx` is complete.
    FileDone(FileIndex, FileOutcome),
    /// The sender could not send file `ndx` (MSG_NO_SEND), or never sent it.
    FileNotSent(FileIndex),
    /// The next `len` bytes of file `ndx` are the basis bytes at `offset`.
    /// The driver must read them from the basis, write them, and pass them
    /// to [`Connection::handle_block_data`]; nothing else is parsed until it
    /// does.
    CopyBlock {
        /// The file being received.
        ndx: FileIndex,
        /// Offset in the basis.
        offset: u64,
        /// Number of bytes.
        len: u32,
    },
    /// These files failed verification against a basis and must be
    /// requested again for the redo phase with full-length sums
    /// ([`Connection::request_with`], [`SignatureParams::full`] set), followed
    /// by [`Connection::finish_requests`]. Files requested without a basis are
    /// re-requested automatically and are not listed.
    RedoNeeded(Vec<FileIndex>),
    /// The session completed.
    Finished(Stats),
}

#[derive(Debug)]
enum Receiving {
    /// Between files: expecting an ndx.
    Idle,
    /// Reading tokens of a file.
    Tokens(FileState),
    /// Inside a literal run with this many bytes left.
    Literal(FileState, usize),
    /// Reading the whole-file checksum.
    Checksum(FileState),
    /// Waiting for the driver to supply the bytes of a copied block.
    AwaitBlock(FileState, u32),
}

/// Most file data the event queue holds before decoding of a compressed
/// stream stops until [`Connection::handle_drained`].
pub const OUTPUT_BUDGET: usize = MAX_DATA_EVENT;

#[derive(Debug)]
struct FileState {
    ndx: FileIndex,
    head: SumHead,
    hasher: FileHasher,
    received: u64,
}

#[derive(Debug)]
struct Transfer {
    flist: Arc<FileList>,
    /// Receiver phase: 0 = normal, 1 = redo, 2 = final.
    phase: u32,
    /// The driver may still add requests to the current phase.
    requests_open: bool,
    /// Every index requested in phase 0 (a file is requested at most once).
    requested: BTreeSet<i32>,
    /// Requested in the current phase and not yet received, with the sum
    /// head we sent.
    pending: BTreeMap<i32, SumHead>,
    /// Files that failed verification in phase 0, and whether they had a basis.
    redo: Vec<(i32, bool)>,
    /// In phase 1 before `finish_requests`: redo files the driver must still request.
    redo_wanted: BTreeSet<i32>,
    /// Every phase-0 request so far is for a whole file (no basis).
    all_whole: bool,
    /// The NDX_DONEs that end the redo phase went out with phase 0's: no redo this session.
    ends_sent: bool,
    recv: Receiving,
    /// The compressed-token decoder, for the whole session (zstd's context spans files).
    decoder: Option<Box<CompressedTokenDecoder>>,
}

#[derive(Debug)]
enum State {
    Greeting,
    Listing,
    ModuleReply {
        sent_auth: bool,
    },
    CompatFlags,
    ChecksumList {
        compat: u32,
        /// A compression list follows the checksum list.
        compress_list: bool,
    },
    CompressList {
        compat: u32,
        checksum: ChecksumKind,
    },
    Seed {
        compat: u32,
        checksum: ChecksumKind,
        compression: Option<CompressionKind>,
    },
    FileList {
        decoder: Box<FlistDecoder>,
        entries: Vec<FileEntry>,
        io_error: i32,
        name_bytes: u64,
    },
    IdLists {
        entries: Vec<FileEntry>,
        io_error: i32,
        inline: Vec<(bool, u32, String)>,
    },
    Transfer(Box<Transfer>),
    Stats,
    FinalDone,
    /// Goodbye sent (or nothing to do); waiting for the daemon to close.
    Closing,
    Done,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Greeting => "greeting",
            State::Listing => "module listing",
            State::ModuleReply { .. } => "module request",
            State::CompatFlags
            | State::ChecksumList { .. }
            | State::CompressList { .. }
            | State::Seed { .. } => "setup",
            State::FileList { .. } | State::IdLists { .. } => "file list",
            State::Transfer(_) => "transfer",
            State::Stats | State::FinalDone => "end of run",
            State::Closing => "goodbye",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// The receiver side of an rsync daemon session. See the module docs.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    /// Negotiated version (the announced one until the greeting arrives).
    protocol: ProtocolVersion,
    greeting: Option<Greeting>,
    info: Option<SessionInfo>,
    /// Unparsed raw input (before multiplexing) or raw frames (after).
    input: Vec<u8>,
    /// The demultiplexed MSG_DATA stream not yet parsed.
    stream: Vec<u8>,
    stream_pos: usize,
    demux: Option<Demuxer>,
    ndx_in: NdxCodec,
    ndx_out: NdxCodec,
    /// Raw bytes to send (before our output is multiplexed).
    out_raw: Vec<u8>,
    /// Protocol bytes to send inside MSG_DATA once multiplexed.
    out_data: Vec<u8>,
    mux_out: bool,
    events: VecDeque<Event>,
    motd_bytes: usize,
    modules: usize,
    stats: Stats,
    last_error: Option<String>,
    last_transmit: Option<Instant>,
    keepalive: Duration,
    /// Bytes of file data in `events`.
    queued_data: usize,
    /// Decoding stopped on [`OUTPUT_BUDGET`]; [`Connection::handle_drained`] resumes it.
    output_paused: bool,
    /// Grows whenever the session moves forward; see [`Connection::progress`].
    progress: u64,
    /// The argument list went out (possibly before the daemon's `@RSYNCD: OK`).
    args_sent: bool,
    /// The negotiation lists and the filter list went out with the arguments,
    /// before the daemon's compat flags (see [`Connection::send_setup`]).
    pipelined: bool,
    /// We pipelined our lists but the daemon's compat flags say it does not
    /// negotiate: fine for the error it is about to send, fatal for a file list.
    negotiation_refused: bool,
    /// The arguments went out on [`ConnectionConfig::greeting_hint`]: the negotiated
    /// protocol and whether the daemon negotiates, as assumed.
    assumed: Option<(ProtocolVersion, bool)>,
}

impl Connection {
    /// Starts a session. Our greeting is queued for transmission at once,
    /// as stock rsync does (both sides greet without waiting), and so is the
    /// module line (or `#list`): its form does not depend on the daemon's
    /// greeting, and the daemon reads it right after ours
    /// (clientserver.c `start_daemon`), so sending it now saves the round
    /// trip stock rsync spends waiting for the greeting first.
    pub fn new(config: ConnectionConfig) -> Connection {
        let protocol = config.protocol;
        let keepalive = config.keepalive;
        let mut out_raw = daemon::encode_greeting(protocol);
        match &config.target {
            Target::ListModules => out_raw.extend_from_slice(b"#list\n"),
            Target::Pull { module, .. } => {
                out_raw.extend_from_slice(module.as_bytes());
                out_raw.push(b'\n');
            }
        }
        let mut c = Connection {
            config,
            state: State::Greeting,
            protocol,
            greeting: None,
            info: None,
            input: Vec::new(),
            stream: Vec::new(),
            stream_pos: 0,
            demux: None,
            ndx_in: NdxCodec::new(protocol.compact_ndx()),
            ndx_out: NdxCodec::new(protocol.compact_ndx()),
            out_raw,
            out_data: Vec::new(),
            mux_out: false,
            events: VecDeque::new(),
            motd_bytes: 0,
            modules: 0,
            stats: Stats::default(),
            last_error: None,
            last_transmit: None,
            keepalive,
            queued_data: 0,
            output_paused: false,
            progress: 0,
            args_sent: false,
            pipelined: false,
            negotiation_refused: false,
            assumed: None,
        };
        c.send_on_hint();
        c
    }

    /// With a greeting hint and no credentials, queues what would follow the daemon's
    /// greeting now (see [`ConnectionConfig::greeting_hint`]).
    fn send_on_hint(&mut self) {
        if !matches!(self.config.target, Target::Pull { .. }) || self.config.credentials.is_some() {
            return;
        }
        let Some(hint) = self.config.greeting_hint.clone() else {
            return;
        };
        let Ok(protocol) = hint.negotiate(self.config.protocol) else {
            return;
        };
        self.assumed = Some((protocol, hint.digests.is_some()));
        self.adopt_greeting(hint, protocol);
        self.send_setup();
    }

    /// Takes `g` (the daemon's, or the hint) as the session's greeting, at `protocol`.
    fn adopt_greeting(&mut self, g: Greeting, protocol: ProtocolVersion) {
        self.protocol = protocol;
        self.ndx_in = NdxCodec::new(protocol.compact_ndx());
        self.ndx_out = NdxCodec::new(protocol.compact_ndx());
        self.greeting = Some(g);
    }

    // ----- queries -----

    /// The negotiated protocol (the announced one before the greeting).
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }
    /// The daemon's greeting, once it arrived (a caller may keep it as the next session's
    /// [`ConnectionConfig::greeting_hint`]); before that, the hint if one was given.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }
    /// Setup facts, once [`Event::Ready`] has been produced.
    pub fn session_info(&self) -> Option<SessionInfo> {
        self.info
    }
    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// True once the session finished successfully.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
    /// True while requests may be added: after [`Event::FileList`] (or
    /// [`Event::RedoNeeded`]) and before [`Connection::finish_requests`].
    pub fn awaiting_requests(&self) -> bool {
        matches!(&self.state, State::Transfer(t) if t.requests_open)
    }
    /// The last error text the daemon sent, verbatim.
    pub fn last_remote_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    /// A counter that grows whenever the session moves forward: a text line
    /// or setup value parsed, bytes of the data stream (keep-alives
    /// included, as rsync's own io_timeout counts them), a control message.
    /// Out-of-band text (MSG_INFO, MSG_ERROR, ...) does not count, so a
    /// daemon that only talks cannot keep a stalled session alive: drivers
    /// measure their stall timeout against this, not against bytes read.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    // ----- inputs -----

    /// Feeds bytes read from the socket.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        self.stats.bytes_received += data.len() as u64;
        if matches!(self.state, State::Failed) {
            return Err(ProtocolError::Misuse("connection already failed").into());
        }
        let r = self.process(data);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    /// Reports that the peer closed its side.
    pub fn handle_eof(&mut self) -> Result<(), SessionError> {
        match &self.state {
            State::Closing => {
                self.state = State::Done;
                self.events.push_back(Event::Finished(self.stats));
                Ok(())
            }
            State::Done => Ok(()),
            _ => {
                let during = self.state.name();
                let hint = self.exit_code_hint();
                self.state = State::Failed;
                if let Some(code) = hint {
                    return Err(SessionError::RemoteExit {
                        code,
                        last_error: self.last_error.clone(),
                    });
                }
                Err(ProtocolError::UnexpectedEof { during }.into())
            }
        }
    }

    /// A daemon that sent error text and then hung up has failed; rsync
    /// reports that as a partial transfer (code 23) or a start error (5).
    fn exit_code_hint(&self) -> Option<i32> {
        self.last_error.as_ref().map(|_| match &self.state {
            // Entries arrived, then the sender gave up: some files are missing.
            State::FileList { entries, .. } | State::IdLists { entries, .. }
                if !entries.is_empty() =>
            {
                23
            }
            // Refused before any file (bad option, missing module path): a start error.
            _ => 5,
        })
    }

    /// Lets the connection queue a keep-alive if we have been quiet for
    /// longer than the keep-alive interval.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.mux_out || matches!(self.state, State::Closing | State::Done | State::Failed) {
            return;
        }
        let due = self
            .last_transmit
            .is_none_or(|t| now.saturating_duration_since(t) >= self.keepalive);
        if due && self.out_data.is_empty() && self.out_raw.is_empty() {
            // An empty MSG_DATA frame is the keep-alive every 3.x peer
            // accepts (io.c maybe_send_keepalive).
            encode_frame(MessageCode::DATA, &[], &mut self.out_raw);
        }
    }

    /// Requests the content of regular file `ndx` as a whole file.
    pub fn request(&mut self, ndx: FileIndex) -> Result<(), SessionError> {
        self.request_with(ndx, &Signature::whole_file())
    }

    /// Requests file `ndx` with the block checksums of a basis, so that the
    /// sender only sends what differs (generator.c generate_and_send_sums).
    /// Compute `sig` with [`Signature::compute`] and
    /// [`Connection::signature_params`]. Requests may be added while earlier
    /// files are already arriving, until [`Connection::finish_requests`].
    pub fn request_with(&mut self, ndx: FileIndex, sig: &Signature) -> Result<(), SessionError> {
        let digest_len = self.info.map_or(16, |i| i.checksum.digest_len());
        let protocol = self.protocol;
        let State::Transfer(t) = &mut self.state else {
            return Err(ProtocolError::Misuse("request outside file selection").into());
        };
        if !t.requests_open {
            return Err(ProtocolError::Misuse("request after finish_requests()").into());
        }
        match t.flist.get(ndx) {
            Some(e) if e.kind() == FileKind::Regular => {}
            _ => {
                return Err(
                    ProtocolError::Misuse("request() for a non-regular or unknown index").into(),
                )
            }
        }
        sig.head.validate(protocol, digest_len)?;
        let entry_len = usize::try_from(sig.head.count)
            .ok()
            .and_then(|c| c.checked_mul(4 + sig.head.s2length as usize));
        if entry_len != Some(sig.sums.len()) {
            return Err(ProtocolError::Misuse("signature sums do not match its head").into());
        }
        if t.phase == 0 {
            if !t.requested.insert(ndx.0) {
                return Ok(());
            }
        } else if !t.redo_wanted.remove(&ndx.0) {
            return Err(ProtocolError::Misuse("redo request for a file that needs no redo").into());
        }
        t.pending.insert(ndx.0, sig.head);
        if sig.head.count > 0 {
            t.all_whole = false;
        }
        let iflags = if t.phase == 0 {
            ITEM_TRANSFER | ITEM_IS_NEW | ITEM_REPORT_TIME
        } else {
            ITEM_TRANSFER | ITEM_REPORT_TIME
        };
        let mut buf = Vec::with_capacity(24 + sig.sums.len());
        self.ndx_out.encode(ndx.0, &mut buf);
        if protocol.has_iflags() {
            buf.extend_from_slice(&iflags.to_le_bytes());
        }
        sig.encode(&mut buf);
        self.send(&buf);
        // Input that arrived ahead of this request can be parsed now.
        self.run_stream()
            .inspect_err(|_| self.state = State::Failed)
    }

    /// How signatures must be computed in this session (`full` for the
    /// redo phase).
    pub fn signature_params(&self, full: bool) -> Option<SignatureParams> {
        self.info.map(|i| SignatureParams {
            protocol: i.protocol,
            kind: i.checksum,
            seed: i.seed,
            seed_first: i.compat_flags & compat::CHKSUM_SEED_FIX != 0,
            full,
        })
    }

    /// Ends the requests of the current phase: NDX_DONE after phase 0's
    /// requests; after the redo requests, the NDX_DONEs that end the redo
    /// phase (generator.c generate_files).
    ///
    /// When every phase-0 request was for a whole file, the redo phase's
    /// NDX_DONEs go out with phase 0's, saving the client one round trip per
    /// session. The daemon's sender reads them only after it has sent every
    /// requested file (sender.c send_files reads one index at a time), so it
    /// sees the same stream as with an empty redo phase. The cost: a whole
    /// file that fails verification is not requested again in this session.
    /// It fails ([`FileOutcome::VerificationFailed`]) and the caller retries
    /// the pull. A whole-file checksum covers exactly what the sender sent,
    /// so only corruption on the way fails one: a redo is for deltas against
    /// a basis that changed, and such sessions keep it.
    pub fn finish_requests(&mut self) -> Result<(), SessionError> {
        let protocol = self.protocol;
        let State::Transfer(t) = &mut self.state else {
            return Err(ProtocolError::Misuse("finish_requests() outside file selection").into());
        };
        if !t.requests_open {
            return Err(ProtocolError::Misuse("finish_requests() called twice").into());
        }
        if !t.redo_wanted.is_empty() {
            return Err(
                ProtocolError::Misuse("finish_requests() before every redo request").into(),
            );
        }
        t.requests_open = false;
        // Not when a file already failed (its data arrived ahead of this call): it was
        // promised a redo.
        if t.phase == 0 && t.all_whole && t.redo.is_empty() && self.config.early_end {
            t.ends_sent = true;
        }
        let ends = t.phase == 1 || t.ends_sent;
        let mut buf = Vec::new();
        self.ndx_out.encode(NDX_DONE, &mut buf);
        if ends {
            if t.phase == 0 {
                // The redo phase's own NDX_DONE, with nothing requested in it.
                self.ndx_out.encode(NDX_DONE, &mut buf);
            }
            // The early delay-updates done, then (>= 31) the early delete-stats done.
            self.ndx_out.encode(NDX_DONE, &mut buf);
            if protocol.has_delete_done_ndx() {
                self.ndx_out.encode(NDX_DONE, &mut buf);
            }
        }
        self.send(&buf);
        // Bytes may already be buffered behind the file list.
        self.run_stream()
            .inspect_err(|_| self.state = State::Failed)
    }

    /// Supplies the basis bytes of the block announced by
    /// [`Event::CopyBlock`]; they are hashed for verification and parsing
    /// resumes.
    pub fn handle_block_data(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let State::Transfer(t) = &mut self.state else {
            return Err(ProtocolError::Misuse("block data outside a transfer").into());
        };
        let Receiving::AwaitBlock(mut fs, len) = std::mem::replace(&mut t.recv, Receiving::Idle)
        else {
            return Err(ProtocolError::Misuse("block data without a CopyBlock event").into());
        };
        if data.len() != len as usize {
            t.recv = Receiving::AwaitBlock(fs, len);
            return Err(ProtocolError::Misuse("block data of the wrong length").into());
        }
        if let Some(dec) = t.decoder.as_mut() {
            // zlib: the block enters the inflater's history (receiver.c see_token).
            if let Err(e) = dec.see_block(data) {
                self.state = State::Failed;
                return Err(e.into());
            }
        }
        fs.hasher.update(data);
        fs.received += u64::from(len);
        self.stats.matched_bytes += u64::from(len);
        t.recv = Receiving::Tokens(fs);
        self.run_stream()
            .inspect_err(|_| self.state = State::Failed)
    }

    /// The driver has taken the queued events. If decoding of a compressed
    /// stream stopped to bound the queue ([`OUTPUT_BUDGET`]), it continues;
    /// returns true when that queued new events (drain them, then call this
    /// again). Cheap when nothing is paused; call it after every drain.
    pub fn handle_drained(&mut self) -> Result<bool, SessionError> {
        if !self.output_paused || self.queued_data >= OUTPUT_BUDGET {
            return Ok(false);
        }
        if matches!(self.state, State::Failed) {
            return Err(ProtocolError::Misuse("connection already failed").into());
        }
        self.output_paused = false;
        let before = self.events.len();
        self.run_stream()
            .inspect_err(|_| self.state = State::Failed)?;
        Ok(self.events.len() > before)
    }

    // ----- outputs -----

    /// Bytes to write to the socket, if any. `now` is recorded as the time
    /// of our last transmission (for keep-alives).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if !self.out_data.is_empty() {
            let data = std::mem::take(&mut self.out_data);
            if self.mux_out {
                encode_frame(MessageCode::DATA, &data, &mut self.out_raw);
            } else {
                self.out_raw.extend_from_slice(&data);
            }
        }
        if self.out_raw.is_empty() {
            return None;
        }
        self.last_transmit = Some(now);
        let out = std::mem::take(&mut self.out_raw);
        self.stats.bytes_sent += out.len() as u64;
        Some(out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        if let Some(Event::FileData(_, d)) = &ev {
            self.queued_data = self.queued_data.saturating_sub(d.len());
        }
        ev
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.mux_out {
            return None;
        }
        self.last_transmit.map(|t| t + self.keepalive)
    }

    // ----- internals -----

    fn send(&mut self, bytes: &[u8]) {
        self.out_data.extend_from_slice(bytes);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.out_raw.extend_from_slice(bytes);
    }

    fn send_ndx(&mut self, ndx: i32) {
        let mut b = Vec::with_capacity(5);
        self.ndx_out.encode(ndx, &mut b);
        self.send(&b);
    }

    fn process(&mut self, data: &[u8]) -> Result<(), SessionError> {
        if self.demux.is_some() {
            return self.process_muxed(data);
        }
        self.input.extend_from_slice(data);
        loop {
            if self.demux.is_some() {
                let rest = std::mem::take(&mut self.input);
                return self.process_muxed(&rest);
            }
            let progressed = match self.state {
                State::Greeting | State::Listing | State::ModuleReply { .. } => self.step_line()?,
                State::CompatFlags
                | State::ChecksumList { .. }
                | State::CompressList { .. }
                | State::Seed { .. } => self.step_setup()?,
                State::Closing | State::Done => {
                    if !self.input.is_empty() {
                        return Err(ProtocolError::UnexpectedLine {
                            line: String::from_utf8_lossy(&self.input).into_owned(),
                        }
                        .into());
                    }
                    false
                }
                _ => return Err(ProtocolError::Misuse("raw input in a multiplexed state").into()),
            };
            if !progressed {
                return Ok(());
            }
            self.progress += 1;
        }
    }

    /// Reads one text line from the raw input, bounded by `max_line`.
    fn take_line(&mut self) -> Result<Option<String>, ProtocolError> {
        let max = self.config.limits.max_line;
        match self.input.iter().position(|&b| b == b'\n') {
            Some(p) if p > max => Err(ProtocolError::LineTooLong { limit: max }),
            Some(p) => {
                let mut line: Vec<u8> = self.input.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            None if self.input.len() > max => Err(ProtocolError::LineTooLong { limit: max }),
            None => Ok(None),
        }
    }

    fn step_line(&mut self) -> Result<bool, SessionError> {
        let Some(line) = self.take_line()? else {
            return Ok(false);
        };
        match &mut self.state {
            State::Greeting => {
                let g = Greeting::parse(&line)?;
                let protocol = g.negotiate(self.config.protocol)?;
                if self
                    .assumed
                    .is_some_and(|a| a != (protocol, g.digests.is_some()))
                {
                    return Err(SessionError::GreetingChanged { greeting: g });
                }
                self.adopt_greeting(g, protocol);
                if matches!(self.config.target, Target::ListModules) {
                    self.state = State::Listing;
                } else {
                    // Without credentials no AUTHREQD can be answered, so
                    // the arguments need not wait for `@RSYNCD: OK`.
                    if self.config.credentials.is_none() && !self.args_sent {
                        self.send_setup();
                    }
                    self.state = State::ModuleReply { sent_auth: false };
                }
            }
            State::Listing => match ServerLine::parse(&line) {
                ServerLine::Exit => {
                    self.state = State::Closing;
                }
                ServerLine::Error(message) => {
                    return Err(SessionError::Refused {
                        kind: RefusalKind::classify(&message),
                        message,
                    })
                }
                ServerLine::Text(t) | ServerLine::AuthRequired(t) => {
                    // Before the first module line the daemon may send MOTD
                    // lines; rsync itself cannot tell them apart either, so
                    // lines without a tab are reported as MOTD.
                    if t.contains('\t') {
                        self.modules += 1;
                        if self.modules > self.config.limits.max_modules {
                            return Err(ProtocolError::TooManyModules {
                                limit: self.config.limits.max_modules,
                            }
                            .into());
                        }
                        self.events.push_back(Event::Module(ModuleInfo::parse(&t)));
                    } else {
                        self.motd_line(t)?;
                    }
                }
                ServerLine::Ok => {
                    return Err(ProtocolError::UnexpectedLine { line }.into());
                }
            },
            State::ModuleReply { sent_auth } => match ServerLine::parse(&line) {
                ServerLine::Ok => {
                    if !self.args_sent {
                        self.send_setup();
                    }
                    self.state = if self.protocol.has_compat_flags() {
                        State::CompatFlags
                    } else {
                        let checksum = self.default_checksum()?;
                        self.after_checksum(0, checksum, false)
                    };
                }
                ServerLine::AuthRequired(challenge) => {
                    if *sent_auth {
                        return Err(ProtocolError::UnexpectedLine { line }.into());
                    }
                    *sent_auth = true;
                    if self.args_sent {
                        // We had no credentials and sent the arguments already.
                        return Err(ProtocolError::PasswordRequired.into());
                    }
                    self.answer_challenge(&challenge)?;
                    // The daemon reads the arguments right after our answer.
                    self.send_setup();
                }
                ServerLine::Exit => return Err(SessionError::DaemonExit),
                ServerLine::Error(message) => {
                    return Err(SessionError::Refused {
                        kind: RefusalKind::classify(&message),
                        message,
                    })
                }
                ServerLine::Text(t) => self.motd_line(t)?,
            },
            _ => return Err(ProtocolError::Misuse("line in a binary state").into()),
        }
        Ok(true)
    }

    /// Queues the argument list and, when the daemon's answers cannot change
    /// them, what the daemon reads after it: our checksum and compression
    /// lists and the (empty) filter list. The daemon reads each of these with
    /// exact-length reads from the socket before it buffers any input
    /// (clientserver.c `rsync_module` → compat.c `setup_protocol`
    /// `negotiate_the_strings` → main.c `start_server` `recv_filter_list`), so
    /// bytes sent early wait in the socket for it. Stock rsync waits for
    /// `@RSYNCD: OK`, then for the compat flags, then for the seed: three
    /// round trips this saves.
    ///
    /// The lists are sent early only when the outcome is known: the greeting
    /// carried a digest list (3.2+ daemons, which set CF_VARINT_FLIST_FLAGS
    /// for our `v` and so negotiate), or the protocol is below 30 (no lists
    /// at all). A 3.0/3.1 daemon (no digest list) decides by its own
    /// version, so for it we wait for the compat flags as stock rsync does.
    fn send_setup(&mut self) {
        let paths = match &self.config.target {
            Target::Pull { paths, .. } => paths.clone(),
            Target::ListModules => Vec::new(),
        };
        let args = self.config.args.encode(self.protocol, &paths);
        self.send_raw(&args);
        self.args_sent = true;
        let has_digests = self.greeting.as_ref().is_some_and(|g| g.digests.is_some());
        if self.protocol.has_compat_flags() && !has_digests {
            return;
        }
        if self.protocol.has_compat_flags() {
            let lists = self.negotiation_lists(true);
            self.send_raw(&lists);
        }
        let filter = 0i32.to_le_bytes();
        if self.protocol.client_output_multiplexed() {
            encode_frame(MessageCode::DATA, &filter, &mut self.out_raw);
        } else {
            self.send_raw(&filter);
        }
        self.pipelined = true;
    }

    /// Our checksum and compression lists (compat.c `negotiate_the_strings`),
    /// each only when not forced, when the daemon negotiates.
    fn negotiation_lists(&self, negotiate: bool) -> Vec<u8> {
        let mut lists = Vec::new();
        if negotiate && self.config.args.checksum_choice.is_none() {
            wire::put_vstring(&mut lists, ChecksumKind::advertised_list().as_bytes());
        }
        if negotiate
            && self
                .config
                .args
                .compress
                .is_some_and(|c| c.choice.is_none())
        {
            wire::put_vstring(&mut lists, CompressionKind::advertised_list().as_bytes());
        }
        lists
    }

    fn motd_line(&mut self, t: String) -> Result<(), ProtocolError> {
        self.motd_bytes += t.len() + 1;
        if self.motd_bytes > self.config.limits.max_motd {
            return Err(ProtocolError::MotdTooLong {
                limit: self.config.limits.max_motd,
            });
        }
        self.events.push_back(Event::Motd(t));
        Ok(())
    }

    fn answer_challenge(&mut self, challenge: &str) -> Result<(), ProtocolError> {
        if challenge.is_empty()
            || challenge.len() > 256
            || !challenge.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ProtocolError::BadChallenge {
                challenge: challenge.to_string(),
            });
        }
        let Some(creds) = self.config.credentials.clone() else {
            return Err(ProtocolError::PasswordRequired);
        };
        let list = self.greeting.as_ref().and_then(|g| g.digests.clone());
        let digest = AuthDigest::choose(list.as_deref(), self.protocol).ok_or_else(|| {
            ProtocolError::UnexpectedLine {
                line: format!("no common auth digest in {list:?}"),
            }
        })?;
        let resp = daemon::auth_response(&creds.user, &creds.password, challenge, digest);
        self.send_raw(&resp);
        Ok(())
    }

    /// The checksum when no name list is exchanged: a forced choice, else
    /// md5 at >= 30 and old md4 below (checksum.c parse_csum_name).
    fn default_checksum(&self) -> Result<ChecksumKind, ProtocolError> {
        if self.protocol.default_checksum_is_md5() {
            match self.config.args.checksum_choice {
                Some(k) => Ok(k),
                None => Ok(ChecksumKind::Md5),
            }
        } else {
            match self.config.args.checksum_choice {
                None | Some(ChecksumKind::Md4) | Some(ChecksumKind::Md4Old) => {
                    Ok(ChecksumKind::Md4Old)
                }
                Some(_) => Err(ProtocolError::Unsupported {
                    version: self.protocol,
                    feature: "a checksum other than md4",
                }),
            }
        }
    }

    fn step_setup(&mut self) -> Result<bool, SessionError> {
        let mut r = Reader::new(&self.input);
        match self.state {
            State::CompatFlags => {
                let Some(flags) = wire::finish(r.varint())? else {
                    return Ok(false);
                };
                let flags = flags as u32;
                let used = r.pos();
                self.input.drain(..used);
                if flags & compat::INC_RECURSE != 0 {
                    // We never send `i`; a server that turns it on anyway is broken.
                    return Err(ProtocolError::UnrequestedFeature {
                        name: String::new(),
                        feature: "incremental recursion",
                    }
                    .into());
                }
                // compat.c negotiate_the_strings: both lists go out before
                // either is read; each is sent only when not forced.
                let negotiate = flags & compat::VARINT_FLIST_FLAGS != 0;
                let checksum_list = negotiate && self.config.args.checksum_choice.is_none();
                let compress_list = negotiate
                    && self
                        .config
                        .args
                        .compress
                        .is_some_and(|c| c.choice.is_none());
                if self.pipelined {
                    // Our lists went out because the greeting promised a negotiating
                    // daemon. One that does not negotiate after all is a daemon that
                    // refused our arguments (it sends default flags, the seed and its
                    // error: keep reading for its words), or a broken one: refused
                    // as soon as it sends a file list.
                    self.negotiation_refused = !negotiate;
                } else {
                    let lists = self.negotiation_lists(negotiate);
                    self.send_raw(&lists);
                }
                if checksum_list {
                    self.state = State::ChecksumList {
                        compat: flags,
                        compress_list,
                    };
                } else {
                    let checksum = self.default_checksum()?;
                    self.state = self.after_checksum(flags, checksum, compress_list);
                }
            }
            State::ChecksumList {
                compat,
                compress_list,
            } => {
                let Some(list) = wire::finish(r.vstring(1024))? else {
                    return Ok(false);
                };
                let list = String::from_utf8_lossy(list).into_owned();
                let used = r.pos();
                self.input.drain(..used);
                let checksum = ChecksumKind::choose(&list)
                    .ok_or(ProtocolError::NoCommonChecksum { offered: list })?;
                self.state = self.after_checksum(compat, checksum, compress_list);
            }
            State::CompressList { compat, checksum } => {
                let Some(list) = wire::finish(r.vstring(1024))? else {
                    return Ok(false);
                };
                let list = String::from_utf8_lossy(list).into_owned();
                let used = r.pos();
                self.input.drain(..used);
                let kind = CompressionKind::choose(&list)
                    .ok_or(ProtocolError::NoCommonCompression { offered: list })?;
                self.state = State::Seed {
                    compat,
                    checksum,
                    compression: self.level_filter(kind),
                };
            }
            State::Seed {
                compat: cf,
                checksum,
                compression,
            } => {
                let Some(seed) = wire::finish(r.i32())? else {
                    return Ok(false);
                };
                self.input.drain(..4);
                let info = SessionInfo {
                    protocol: self.protocol,
                    checksum,
                    compat_flags: cf,
                    seed,
                    compression,
                };
                self.info = Some(info);
                self.events.push_back(Event::Ready(info));
                // From here the server's output is multiplexed; ours too at >= 30.
                self.demux = Some(Demuxer::new(
                    self.config.limits.max_message,
                    self.config.limits.max_frame,
                ));
                self.mux_out = self.protocol.client_output_multiplexed();
                // The (empty) filter list (exclude.c send_filter_list),
                // unless it went out with the arguments.
                if !self.pipelined {
                    self.send(&0i32.to_le_bytes());
                }
                let safe = cf & compat::SAFE_FLIST != 0 || self.protocol.always_safe_flist();
                let opts = self.flist_options(cf, safe);
                self.state = State::FileList {
                    decoder: Box::new(FlistDecoder::new(opts, self.config.limits.clone())),
                    entries: Vec::new(),
                    io_error: 0,
                    name_bytes: 0,
                };
            }
            _ => return Err(ProtocolError::Misuse("setup step outside setup").into()),
        }
        Ok(true)
    }

    /// The state after the checksum is known: the compression list to read,
    /// or the seed with the compression fixed without negotiation (a forced
    /// choice, or zlib for a plain `-z` to a peer that cannot negotiate:
    /// compat.c parse_compress_choice).
    fn after_checksum(&self, compat: u32, checksum: ChecksumKind, compress_list: bool) -> State {
        if compress_list {
            return State::CompressList { compat, checksum };
        }
        let compression = self
            .config
            .args
            .compress
            .map(|c| c.choice.unwrap_or(CompressionKind::Zlib))
            .and_then(|k| self.level_filter(k));
        State::Seed {
            compat,
            checksum,
            compression,
        }
    }

    /// `--compress-level=0` turns zlib off on both sides (token.c
    /// init_compression_level).
    fn level_filter(&self, kind: CompressionKind) -> Option<CompressionKind> {
        let level = self.config.args.compress.and_then(|c| c.level);
        match level {
            Some(l) if kind.level_turns_off(l) => None,
            _ => Some(kind),
        }
    }

    fn flist_options(&self, cf: u32, safe: bool) -> FlistOptions {
        FlistOptions {
            protocol: self.protocol,
            varint_flags: cf & compat::VARINT_FLIST_FLAGS != 0,
            safe_flist: safe,
            preserve_links: self.config.args.links,
            preserve_uid: self.config.args.owner,
            preserve_gid: self.config.args.group,
            id0_names: cf & compat::ID0_NAMES != 0,
        }
    }

    fn process_muxed(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let owned;
        let buf: &[u8] = if self.input.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut self.input);
            joined.extend_from_slice(data);
            owned = joined;
            &owned
        };
        let mut pos = 0;
        let result = self.demux_loop(buf, &mut pos);
        self.input = buf[pos..].to_vec();
        result
    }

    fn demux_loop(&mut self, buf: &[u8], pos: &mut usize) -> Result<(), SessionError> {
        loop {
            let avail = &buf[*pos..];
            let Some(demux) = self.demux.as_mut() else {
                return Ok(());
            };
            let run = demux.data_run(avail.len());
            if run > 0 {
                // Fast path: literal file data straight from a data frame.
                if let Some(n) = self.direct_literal(avail) {
                    *pos += n;
                    self.progress += n as u64;
                    continue;
                }
                if let Some(d) = self.demux.as_mut() {
                    d.consume_data(run);
                }
                self.stream.extend_from_slice(&avail[..run]);
                *pos += run;
                self.progress += run as u64;
                self.run_stream()?;
                continue;
            }
            let (used, item) = demux.decode(avail)?;
            *pos += used;
            match item {
                Some(Demuxed::Data(d)) => {
                    // An empty frame is a keep-alive: it counts as life.
                    self.progress += d.len() as u64 + 1;
                    self.stream.extend_from_slice(&d);
                    self.run_stream()?;
                }
                Some(Demuxed::Message(code, payload)) => self.handle_message(code, payload)?,
                None => {}
            }
            if used == 0 {
                return Ok(());
            }
        }
    }

    /// When inside a literal run with nothing else buffered, hands the data
    /// frame's bytes straight to the file without copying them through the
    /// stream buffer. Returns the bytes consumed.
    fn direct_literal(&mut self, input: &[u8]) -> Option<usize> {
        if self.stream_pos < self.stream.len() {
            return None;
        }
        let State::Transfer(t) = &mut self.state else {
            return None;
        };
        let Receiving::Literal(fs, left) = &mut t.recv else {
            return None;
        };
        let demux = self.demux.as_mut()?;
        let n = demux.data_run(input.len()).min(*left);
        if n == 0 {
            return None;
        }
        demux.consume_data(n);
        // The event may take the rest of this input, up to what the file still has to come
        // (a tree of small files must not get a read buffer's worth per file).
        let room = t.flist.get(fs.ndx).map_or(0, |e| {
            let rest = e.size.saturating_sub(fs.received);
            usize::try_from(rest).unwrap_or(usize::MAX).min(input.len())
        });
        let chunk = &input[..n];
        fs.hasher.update(chunk);
        fs.received += n as u64;
        *left -= n;
        self.stats.literal_bytes += n as u64;
        push_file_data(&mut self.events, &mut self.queued_data, fs.ndx, chunk, room);
        if *left == 0 {
            let Receiving::Literal(fs, _) = std::mem::replace(&mut t.recv, Receiving::Idle) else {
                return Some(n);
            };
            t.recv = Receiving::Tokens(fs);
        }
        Some(n)
    }

    fn handle_message(&mut self, code: MessageCode, payload: Vec<u8>) -> Result<(), SessionError> {
        let int_payload = |code| -> Result<i32, ProtocolError> {
            let b: [u8; 4] =
                payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| ProtocolError::BadMessageLength {
                        code,
                        len: payload.len(),
                    })?;
            Ok(i32::from_le_bytes(b))
        };
        let kind = match code {
            MessageCode::ERROR_XFER => Some(MessageKind::ErrorXfer),
            MessageCode::INFO => Some(MessageKind::Info),
            MessageCode::ERROR => Some(MessageKind::Error),
            MessageCode::WARNING => Some(MessageKind::Warning),
            MessageCode::ERROR_SOCKET => Some(MessageKind::ErrorSocket),
            MessageCode::LOG => Some(MessageKind::Log),
            MessageCode::CLIENT => Some(MessageKind::Client),
            MessageCode::ERROR_UTF8 => Some(MessageKind::ErrorUtf8),
            _ => None,
        };
        if let Some(kind) = kind {
            let text = String::from_utf8_lossy(&payload)
                .trim_end_matches('\n')
                .to_string();
            if kind.is_error() {
                self.stats.remote_errors += 1;
                self.last_error = Some(text.clone());
            }
            self.events.push_back(Event::Message { kind, text });
            return Ok(());
        }
        self.progress += 1;
        match code {
            MessageCode::IO_ERROR => {
                self.stats.io_error |= int_payload(code)?;
            }
            MessageCode::IO_TIMEOUT => {
                let t = int_payload(code)?;
                if t > 0 {
                    let t = t as u32;
                    // Stay well inside the daemon's idle limit.
                    let half = Duration::from_secs(u64::from(t).max(2) / 2);
                    self.keepalive = self.keepalive.min(half);
                    self.events.push_back(Event::ServerTimeout(t));
                }
            }
            MessageCode::NOOP => {
                if !payload.is_empty() {
                    return Err(ProtocolError::BadMessageLength {
                        code,
                        len: payload.len(),
                    }
                    .into());
                }
            }
            MessageCode::NO_SEND => {
                let ndx = int_payload(code)?;
                let State::Transfer(t) = &mut self.state else {
                    return Err(ProtocolError::UnexpectedMessage { code }.into());
                };
                if t.pending.remove(&ndx).is_none() {
                    return Err(ProtocolError::UnrequestedFile { ndx }.into());
                }
                self.stats.files_failed += 1;
                self.events.push_back(Event::FileNotSent(FileIndex(ndx)));
            }
            MessageCode::ERROR_EXIT => {
                let code = match payload.len() {
                    0 => 0,
                    _ => int_payload(code)?,
                };
                if code == 0 && matches!(self.state, State::Closing) {
                    return Ok(());
                }
                return Err(SessionError::RemoteExit {
                    code,
                    last_error: self.last_error.clone(),
                });
            }
            _ => return Err(ProtocolError::UnexpectedMessage { code }.into()),
        }
        Ok(())
    }

    /// Parses as much of the data stream as possible.
    fn run_stream(&mut self) -> Result<(), SessionError> {
        loop {
            let progressed = self.step_stream()?;
            if !progressed {
                break;
            }
        }
        // Whatever is left waits for more input or for the driver (a request,
        // a block's bytes). Data for files we never asked about would pile up
        // here without limit, so cap it.
        check_limit(
            "unparsed input",
            (self.stream.len() - self.stream_pos) as u64,
            self.config.limits.max_pending_input as u64,
        )?;
        // Compact the consumed prefix.
        if self.stream_pos > 0
            && (self.stream_pos == self.stream.len() || self.stream_pos > 64 * 1024)
        {
            self.stream.drain(..self.stream_pos);
            self.stream_pos = 0;
        }
        Ok(())
    }

    fn step_stream(&mut self) -> Result<bool, SessionError> {
        let id_opts = self.flist_options(self.info.map_or(0, |i| i.compat_flags), true);
        let avail = &self.stream[self.stream_pos..];
        if self.negotiation_refused && !avail.is_empty() {
            return Err(ProtocolError::Unsupported {
                version: self.protocol,
                feature: "a file list without string negotiation, after announcing a digest list",
            }
            .into());
        }
        match &mut self.state {
            State::FileList {
                decoder,
                entries,
                io_error,
                name_bytes,
            } => {
                let Some((item, used)) = decoder.decode(avail)? else {
                    return Ok(false);
                };
                self.stream_pos += used;
                match item {
                    FlistItem::Entry(e) => {
                        check_limit(
                            "file-list entries",
                            entries.len() as u64 + 1,
                            self.config.limits.max_entries as u64,
                        )?;
                        *name_bytes +=
                            (e.name.len() + e.symlink_target.as_ref().map_or(0, Vec::len)) as u64;
                        check_limit(
                            "file-list name bytes",
                            *name_bytes,
                            self.config.limits.max_flist_bytes as u64,
                        )?;
                        entries.push(e);
                    }
                    FlistItem::End { io_error: err } => {
                        crate::flist::check_tree(entries)?;
                        *io_error = err;
                        let entries = std::mem::take(entries);
                        let io_error = *io_error;
                        let inline = decoder.inline_names().to_vec();
                        self.state = State::IdLists {
                            entries,
                            io_error,
                            inline,
                        };
                    }
                }
                Ok(true)
            }
            State::IdLists {
                entries,
                io_error,
                inline,
            } => {
                let Some(((names, err29), used)) =
                    decode_id_lists(avail, &id_opts, &self.config.limits)?
                else {
                    return Ok(false);
                };
                self.stream_pos += used;
                let mut flist = FileList::sorted(std::mem::take(entries), self.protocol);
                flist.id_names = names;
                for (is_group, id, name) in inline.drain(..) {
                    let map = if is_group {
                        &mut flist.id_names.groups
                    } else {
                        &mut flist.id_names.users
                    };
                    map.entry(id).or_insert(name);
                }
                flist.io_error = *io_error | err29;
                self.stats.io_error |= flist.io_error;
                let flist = Arc::new(flist);
                self.events.push_back(Event::FileList(flist.clone()));
                if flist.is_empty() {
                    // The sender exits right after an empty list (main.c do_server_sender).
                    self.state = State::Closing;
                } else {
                    let decoder = match self.info.and_then(|i| i.compression) {
                        Some(kind) => Some(Box::new(CompressedTokenDecoder::new(
                            kind,
                            self.protocol,
                            &self.config.limits,
                        )?)),
                        None => None,
                    };
                    self.state = State::Transfer(Box::new(Transfer {
                        flist,
                        phase: 0,
                        requests_open: true,
                        requested: BTreeSet::new(),
                        pending: BTreeMap::new(),
                        redo: Vec::new(),
                        redo_wanted: BTreeSet::new(),
                        all_whole: true,
                        ends_sent: false,
                        recv: Receiving::Idle,
                        decoder,
                    }));
                }
                Ok(true)
            }
            State::Transfer(_) => self.step_transfer(),
            State::Stats => {
                let mut r = Reader::new(avail);
                let n = if self.protocol.stats_have_flist_times() {
                    5
                } else {
                    3
                };
                let mut vals = [0i64; 5];
                for v in vals.iter_mut().take(n) {
                    let x = if self.protocol.uses_varint30() {
                        r.varlong(3)
                    } else {
                        r.longint()
                    };
                    match wire::finish(x)? {
                        Some(x) => *v = x,
                        None => return Ok(false),
                    }
                }
                self.stream_pos += r.pos();
                // main.c handle_stats: the client reads written/read swapped.
                self.stats.sender = vals;
                if self.protocol.has_delete_done_ndx() {
                    self.state = State::FinalDone;
                } else {
                    self.send_ndx(NDX_DONE);
                    self.state = State::Closing;
                }
                Ok(true)
            }
            State::FinalDone => {
                let mut r = Reader::new(avail);
                let Some(ndx) = wire::finish(self.ndx_in.read(&mut r))? else {
                    return Ok(false);
                };
                self.stream_pos += r.pos();
                if ndx != NDX_DONE {
                    return Err(ProtocolError::BadGoodbye {
                        what: "NDX_DONE",
                        value: i64::from(ndx),
                    }
                    .into());
                }
                self.send_ndx(NDX_DONE);
                self.state = State::Closing;
                Ok(true)
            }
            State::Closing | State::Done if avail.is_empty() => Ok(false),
            State::Closing | State::Done => Err(ProtocolError::BadGoodbye {
                what: "end of stream",
                value: avail.len() as i64,
            }
            .into()),
            _ => Err(ProtocolError::Misuse("data in a non-data state").into()),
        }
    }

    fn step_transfer(&mut self) -> Result<bool, SessionError> {
        let protocol = self.protocol;
        let info = self
            .info
            .ok_or(ProtocolError::Misuse("transfer before setup"))?;
        let max_literal = self.config.limits.max_literal;
        let max_file = self.config.limits.max_file_size;
        let State::Transfer(t) = &mut self.state else {
            return Ok(false);
        };
        let avail = &self.stream[self.stream_pos..];
        let mut r = Reader::new(avail);
        match std::mem::replace(&mut t.recv, Receiving::Idle) {
            Receiving::Idle => {
                let mut codec = self.ndx_in.clone();
                let parsed = wire::finish(read_file_header(
                    &mut r,
                    &mut codec,
                    protocol,
                    info.checksum.digest_len(),
                ))?;
                let Some((ndx, iflags, head)) = parsed else {
                    return Ok(false);
                };
                let ahead = if ndx >= 0 {
                    !t.pending.contains_key(&ndx) && !t.requested.contains(&ndx)
                } else {
                    ndx == NDX_DONE
                };
                if t.requests_open && ahead {
                    // Data for a file we may still request (input can run
                    // ahead of the driver's requests): wait for request_with().
                    return Ok(false);
                }
                self.ndx_in = codec;
                self.stream_pos += r.pos();
                if ndx == NDX_DONE {
                    return self.end_phase().map(|_| true);
                }
                if ndx == NDX_DEL_STATS {
                    // Only with --delete; five varints follow. Not requested.
                    return Err(ProtocolError::UnrequestedFeature {
                        name: String::new(),
                        feature: "delete statistics",
                    }
                    .into());
                }
                if ndx < 0 {
                    return Err(ProtocolError::InvalidValue {
                        what: "file index",
                        value: i64::from(ndx),
                    }
                    .into());
                }
                if iflags & ITEM_TRANSFER == 0 {
                    // A log-only echo for something we never asked about.
                    return Err(ProtocolError::UnrequestedFile { ndx }.into());
                }
                let Some(sent) = t.pending.remove(&ndx) else {
                    return Err(ProtocolError::UnrequestedFile { ndx }.into());
                };
                if head != Some(sent) {
                    return Err(ProtocolError::SumHeadMismatch { ndx }.into());
                }
                let file = FileState {
                    ndx: FileIndex(ndx),
                    head: sent,
                    hasher: FileHasher::new(info.checksum, info.seed),
                    received: 0,
                };
                self.events.push_back(Event::FileStart(FileIndex(ndx)));
                t.recv = Receiving::Tokens(file);
                Ok(true)
            }
            Receiving::Tokens(mut fs) if t.decoder.is_some() => {
                if self.queued_data >= OUTPUT_BUDGET {
                    // Let the driver take what is queued first (handle_drained).
                    self.output_paused = true;
                    t.recv = Receiving::Tokens(fs);
                    return Ok(false);
                }
                let Some(dec) = t.decoder.as_mut() else {
                    return Err(ProtocolError::Misuse("compressed tokens without a decoder").into());
                };
                let Some((item, used)) = dec.decode(avail)? else {
                    t.recv = Receiving::Tokens(fs);
                    return Ok(false);
                };
                self.stream_pos += used;
                match item {
                    CompressedItem::Data(n) => {
                        let total = fs.received + n as u64;
                        if total > max_file {
                            return Err(ProtocolError::FileTooLarge {
                                ndx: fs.ndx.0,
                                received: total,
                                limit: max_file,
                            }
                            .into());
                        }
                        let chunk = dec.output();
                        if !chunk.is_empty() {
                            fs.hasher.update(chunk);
                            fs.received = total;
                            self.stats.literal_bytes += n as u64;
                            push_file_data(
                                &mut self.events,
                                &mut self.queued_data,
                                fs.ndx,
                                chunk,
                                0,
                            );
                        }
                        t.recv = Receiving::Tokens(fs);
                    }
                    CompressedItem::Block(b) => {
                        let (offset, len) = block_range(&fs, b, max_file)?;
                        self.events.push_back(Event::CopyBlock {
                            ndx: fs.ndx,
                            offset,
                            len,
                        });
                        t.recv = Receiving::AwaitBlock(fs, len);
                        return Ok(false);
                    }
                    CompressedItem::End => t.recv = Receiving::Checksum(fs),
                }
                Ok(true)
            }
            Receiving::Tokens(fs) => {
                let Some(raw) = wire::finish(r.i32())? else {
                    t.recv = Receiving::Tokens(fs);
                    return Ok(false);
                };
                self.stream_pos += 4;
                match Token::from_raw(raw) {
                    Token::End => t.recv = Receiving::Checksum(fs),
                    Token::Literal(n) => {
                        check_limit("literal run", u64::from(n), max_literal as u64)?;
                        let total = fs.received + u64::from(n);
                        if total > max_file {
                            return Err(ProtocolError::FileTooLarge {
                                ndx: fs.ndx.0,
                                received: total,
                                limit: max_file,
                            }
                            .into());
                        }
                        t.recv = Receiving::Literal(fs, n as usize);
                    }
                    Token::Block(b) => {
                        let (offset, len) = block_range(&fs, b, max_file)?;
                        self.events.push_back(Event::CopyBlock {
                            ndx: fs.ndx,
                            offset,
                            len,
                        });
                        t.recv = Receiving::AwaitBlock(fs, len);
                        // Stop until the driver supplies the block's bytes.
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Receiving::Literal(mut fs, left) => {
                let n = left.min(avail.len());
                let chunk = &avail[..n];
                fs.hasher.update(chunk);
                fs.received += n as u64;
                self.stats.literal_bytes += n as u64;
                push_file_data(&mut self.events, &mut self.queued_data, fs.ndx, chunk, 0);
                self.stream_pos += n;
                t.recv = if n == left {
                    Receiving::Tokens(fs)
                } else {
                    Receiving::Literal(fs, left - n)
                };
                Ok(n > 0)
            }
            Receiving::AwaitBlock(fs, len) => {
                t.recv = Receiving::AwaitBlock(fs, len);
                Ok(false)
            }
            Receiving::Checksum(fs) => {
                let len = info.checksum.digest_len();
                let Some(sum) = wire::finish(r.take(len))? else {
                    t.recv = Receiving::Checksum(fs);
                    return Ok(false);
                };
                let ok = fs.hasher.finish() == sum;
                let sum = sum.to_vec();
                self.stream_pos += len;
                let outcome = if ok {
                    self.stats.files_transferred += 1;
                    self.events.push_back(Event::FileVerified(fs.ndx, sum));
                    FileOutcome::Verified
                } else if t.phase == 0 && !t.ends_sent {
                    t.redo.push((fs.ndx.0, fs.head.count > 0));
                    FileOutcome::RetryScheduled
                } else {
                    self.stats.files_failed += 1;
                    if t.ends_sent {
                        self.stats.files_not_redone += 1;
                    }
                    FileOutcome::VerificationFailed
                };
                self.events.push_back(Event::FileDone(fs.ndx, outcome));
                Ok(true)
            }
        }
    }

    /// The sender finished a phase (receiver.c recv_files on NDX_DONE;
    /// generator.c generate_files for what we send back).
    fn end_phase(&mut self) -> Result<(), SessionError> {
        let State::Transfer(t) = &mut self.state else {
            return Ok(());
        };
        for (ndx, _) in std::mem::take(&mut t.pending) {
            self.stats.files_failed += 1;
            self.events.push_back(Event::FileNotSent(FileIndex(ndx)));
        }
        t.phase += 1;
        match t.phase {
            // The redo phase was ended with phase 0's requests (and nothing awaited a redo).
            1 if t.ends_sent => {}
            1 => {
                // The redo phase (generator.c: requests again with full sums).
                t.requests_open = true;
                let redo = std::mem::take(&mut t.redo);
                let (with_basis, whole): (Vec<_>, Vec<_>) = redo.into_iter().partition(|&(_, b)| b);
                t.redo_wanted = redo_all(&with_basis, &whole);
                for &(ndx, _) in &whole {
                    self.request_with(FileIndex(ndx), &Signature::whole_file())?;
                }
                if with_basis.is_empty() {
                    self.finish_requests()?;
                } else {
                    self.events.push_back(Event::RedoNeeded(
                        with_basis.into_iter().map(|(n, _)| FileIndex(n)).collect(),
                    ));
                }
            }
            p if p <= self.protocol.max_phase() => {}
            _ => self.state = State::Stats,
        }
        Ok(())
    }
}

/// Largest [`Event::FileData`] built by joining consecutive literal runs.
const MAX_DATA_EVENT: usize = 1 << 20;

/// Appends file bytes as an event, joining them to the previous event when
/// it is data for the same file: fewer, larger writes for the sink.
/// `queued` counts the file bytes waiting in `events`. `room` is how many bytes
/// this event may still be joined (the rest of the input at hand, at most what
/// the file has still to come): a new event is allocated that large, so that
/// joining does not reallocate and copy (the growth copies were a fifth of the
/// client's user-space copying in a 1 GiB pull).
fn push_file_data(
    events: &mut VecDeque<Event>,
    queued: &mut usize,
    ndx: FileIndex,
    chunk: &[u8],
    room: usize,
) {
    *queued += chunk.len();
    if let Some(Event::FileData(last, data)) = events.back_mut() {
        if *last == ndx && data.len() + chunk.len() <= MAX_DATA_EVENT {
            data.extend_from_slice(chunk);
            return;
        }
    }
    let mut data = Vec::with_capacity(room.min(MAX_DATA_EVENT).max(chunk.len()));
    data.extend_from_slice(chunk);
    events.push_back(Event::FileData(ndx, data));
}

/// Where block `b` of the basis lies, checked against the request's sum
/// head and the file-size limit.
fn block_range(fs: &FileState, b: u32, max_file: u64) -> Result<(u64, u32), ProtocolError> {
    let Some((offset, len)) = Signature::block_range(&fs.head, b) else {
        return Err(ProtocolError::BadBlockToken {
            block: i64::from(b),
            count: fs.head.count,
        });
    };
    let total = fs.received + u64::from(len);
    if total > max_file {
        return Err(ProtocolError::FileTooLarge {
            ndx: fs.ndx.0,
            received: total,
            limit: max_file,
        });
    }
    Ok((offset, len))
}

fn redo_all(a: &[(i32, bool)], b: &[(i32, bool)]) -> BTreeSet<i32> {
    a.iter().chain(b).map(|&(n, _)| n).collect()
}

/// Reads `ndx [iflags [basis-type] [xname]] [sum head]` as one item
/// (rsync.c read_ndx_and_attrs, then io.c read_sum_head when ITEM_TRANSFER).
fn read_file_header(
    r: &mut Reader<'_>,
    codec: &mut NdxCodec,
    protocol: ProtocolVersion,
    sum_len: usize,
) -> wire::Step<(i32, u16, Option<SumHead>)> {
    let ndx = codec.read(r)?;
    if ndx < 0 {
        return Ok((ndx, 0, None));
    }
    let iflags = if protocol.has_iflags() {
        r.u16()?
    } else {
        ITEM_TRANSFER
    };
    if iflags & ITEM_BASIS_TYPE_FOLLOWS != 0 {
        r.u8()?;
    }
    if iflags & ITEM_XNAME_FOLLOWS != 0 {
        r.vstring(4096)?;
    }
    let head = if iflags & ITEM_TRANSFER != 0 {
        Some(SumHead::read(r, protocol, sum_len)?)
    } else {
        None
    };
    Ok((ndx, iflags, head))
}

#[cfg(test)]
mod tests;
