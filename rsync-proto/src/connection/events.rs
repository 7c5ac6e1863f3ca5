//! What a session reports: events, errors, outcomes and statistics.

use std::sync::Arc;

use crate::checksum::ChecksumKind;
use crate::daemon::{Greeting, ModuleInfo};
use crate::delta::CompressionKind;
use crate::error::ProtocolError;
use crate::flist::{FileIndex, FileList};
use crate::version::ProtocolVersion;

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
    pub(super) fn classify(text: &str) -> RefusalKind {
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
    /// The daemon's greeting differs from [`ConnectionConfig::greeting_hint`](super::ConnectionConfig::greeting_hint) in what our
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
    /// phase ended with the requests ([`ConnectionConfig::early_end`](super::ConnectionConfig::early_end)). A new session can
    /// fetch them.
    pub files_not_redone: u64,
    /// Files whose first pass failed verification and that were requested again in the
    /// redo phase (generator.c's redo, with full-length block sums). Expected now and then
    /// with a delta basis: the first pass's short block sums (sum_sizes_sqroot's `s2length`,
    /// 2 bytes for a few MiB) can match a wrong block, and the redo is rsync's own remedy.
    /// Their data is counted in `literal_bytes`/`matched_bytes` once per pass.
    pub files_redone: u64,
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
    /// [`Connection::request`](super::Connection::request) for each wanted file and then
    /// [`Connection::finish_requests`](super::Connection::finish_requests).
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
    /// to [`Connection::handle_block_data`](super::Connection::handle_block_data); nothing else is parsed until it
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
    /// ([`Connection::request_with`](super::Connection::request_with), [`SignatureParams::full`](crate::delta::SignatureParams::full) set), followed
    /// by [`Connection::finish_requests`](super::Connection::finish_requests). Files requested without a basis are
    /// re-requested automatically and are not listed.
    RedoNeeded(Vec<FileIndex>),
    /// The session completed.
    Finished(Stats),
}
