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
//!
//! # Layout (as quinn-proto splits its connection)
//!
//! This file holds the configuration, the state and the public methods (the
//! pump); the steps live beside it: `handshake` (greeting, module, MOTD,
//! auth), `setup` (arguments, compat flags, negotiation, seed), `demux`
//! (frames into the data stream and out-of-band events), `transfer` (file
//! list, requests, file data, phases, statistics) and `events` (what a
//! session reports: [`Event`], [`SessionError`], [`Stats`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checksum::{ChecksumKind, FileHasher};
use crate::daemon::{self, Greeting};
use crate::delta::{CompressedTokenDecoder, CompressionKind, Signature, SignatureParams, SumHead};
use crate::error::{Limits, ProtocolError};
use crate::flist::{FileEntry, FileIndex, FileKind, FileList, FlistDecoder};
use crate::mux::{encode_frame, Demuxer, MessageCode};
use crate::setup::{compat, TransferArgs};
use crate::version::ProtocolVersion;
use crate::wire::{NdxCodec, NDX_DONE};

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

pub use events::{Event, FileOutcome, MessageKind, RefusalKind, SessionError, SessionInfo, Stats};

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
pub const OUTPUT_BUDGET: usize = transfer::MAX_DATA_EVENT;

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
}

mod demux;
mod events;
mod handshake;
mod setup;
mod transfer;

#[cfg(test)]
mod tests;
