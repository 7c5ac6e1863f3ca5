//! Errors of the protocol core and the limits that bound what a peer can make us do.

use crate::version::ProtocolVersion;

/// A violation of the rsync protocol by the peer, or a limit the peer exceeded.
///
/// Every variant carries the values involved, so callers and logs can say what
/// was expected and what arrived. Remote text is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The daemon's first line was not `@RSYNCD: <version>[.<sub>] [digests]`.
    #[error("malformed daemon greeting: {line:?}")]
    BadGreeting {
        /// The line as received (lossily decoded).
        line: String,
    },
    /// The daemon speaks a protocol older than we support.
    #[error("daemon protocol {theirs} is older than the oldest we support ({min})")]
    UnsupportedVersion {
        /// The version the daemon announced.
        theirs: u32,
        /// The oldest version we speak.
        min: u32,
    },
    /// A text line from the daemon exceeded [`Limits::max_line`].
    #[error("daemon line longer than {limit} bytes")]
    LineTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// The MOTD exceeded [`Limits::max_motd`].
    #[error("daemon MOTD longer than {limit} bytes")]
    MotdTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// The module listing had more entries than [`Limits::max_modules`].
    #[error("daemon listed more than {limit} modules")]
    TooManyModules {
        /// The configured limit.
        limit: usize,
    },
    /// The daemon asked for authentication but no password was configured.
    #[error("daemon requires authentication for this module but no password was given")]
    PasswordRequired,
    /// The AUTHREQD challenge was empty or not printable.
    #[error("malformed auth challenge: {challenge:?}")]
    BadChallenge {
        /// The challenge text as received.
        challenge: String,
    },
    /// The daemon sent a line we did not expect at this point.
    #[error("unexpected daemon line: {line:?}")]
    UnexpectedLine {
        /// The line as received (lossily decoded).
        line: String,
    },
    /// A multiplexed frame header carried a tag below MPLEX_BASE.
    #[error("invalid multiplex header {header:#010x}")]
    BadFrameHeader {
        /// The raw little-endian header value.
        header: u32,
    },
    /// A multiplexed frame was larger than [`Limits::max_frame`] allows.
    #[error("{code} frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The message code.
        code: crate::mux::MessageCode,
        /// Announced payload length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An out-of-band message had the wrong payload size.
    #[error("{code} with a {len}-byte payload")]
    BadMessageLength {
        /// The message code.
        code: crate::mux::MessageCode,
        /// Payload length.
        len: usize,
    },
    /// A message code a daemon sender never sends to a receiver.
    #[error("unexpected message {code} from the daemon")]
    UnexpectedMessage {
        /// The message code.
        code: crate::mux::MessageCode,
    },
    /// A varint or varlong used more extension bytes than its type holds.
    #[error("{what} overflow: lead byte {lead:#04x}")]
    IntegerOverflow {
        /// Which encoding.
        what: &'static str,
        /// The lead byte.
        lead: u8,
    },
    /// A value was outside the range the protocol allows.
    #[error("invalid {what}: {value}")]
    InvalidValue {
        /// What was being decoded.
        what: &'static str,
        /// The value received.
        value: i64,
    },
    /// A count or length from the peer exceeded one of our [`Limits`].
    #[error("{what} of {value} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was being counted.
        what: &'static str,
        /// The value received.
        value: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The checksum negotiation found no algorithm both sides support.
    #[error("no common checksum algorithm (daemon offered {offered:?})")]
    NoCommonChecksum {
        /// The daemon's list, verbatim.
        offered: String,
    },
    /// The compression negotiation found no algorithm both sides support.
    #[error("no common compression algorithm (daemon offered {offered:?})")]
    NoCommonCompression {
        /// The daemon's list, verbatim.
        offered: String,
    },
    /// Compressed file data did not decompress.
    #[error("{algorithm} data from the sender does not decompress: {detail}")]
    Decompress {
        /// The negotiated algorithm.
        algorithm: crate::delta::CompressionKind,
        /// The decompressor's message.
        detail: String,
    },
    /// The decompressor neither took input nor produced output: the peer's
    /// data would make it spin.
    #[error("{algorithm} decompressor made no progress on the sender's data")]
    DecompressStalled {
        /// The negotiated algorithm.
        algorithm: crate::delta::CompressionKind,
    },
    /// A deflate stream was not at a sync-flush point where the protocol
    /// puts one (token.c "decompressor lost sync").
    #[error("{algorithm} decompressor lost sync")]
    DecompressLostSync {
        /// The negotiated algorithm.
        algorithm: crate::delta::CompressionKind,
    },
    /// A zstd frame asked for a window larger than [`Limits::max_zstd_window_log`].
    #[error("zstd frame needs a window over 2^{limit_log} bytes")]
    CompressionWindowTooLarge {
        /// The configured limit (log2 of bytes).
        limit_log: u32,
    },
    /// A file-list entry had a name that would leave the destination.
    #[error("unsafe file name from sender: {name:?}")]
    UnsafeName {
        /// The name as received (lossily decoded).
        name: String,
    },
    /// Two file-list entries had the same name. A stock sender of a single
    /// source never sends one; a hostile one could use it to swap what a
    /// name is between the checks and the writes.
    #[error("file list names {name:?} twice")]
    DuplicateName {
        /// The name (lossily decoded).
        name: String,
    },
    /// A file-list entry was not inside a directory of the list: its parent
    /// is missing, or is a symlink, file or special file (CVE-2024-12087's
    /// "file under a symlink").
    #[error("file-list entry {name:?} is not inside a directory of the list")]
    NotInsideDirectory {
        /// The entry's name (lossily decoded).
        name: String,
    },
    /// A file-list entry used a feature we did not ask for (hard links, ...).
    #[error("file-list entry {name:?} uses {feature}, which we did not request")]
    UnrequestedFeature {
        /// The entry's name.
        name: String,
        /// The feature.
        feature: &'static str,
    },
    /// A file-list entry had an invalid mode.
    #[error("invalid file mode {mode:#o} for {name:?}")]
    BadMode {
        /// The entry's name.
        name: String,
        /// The mode received.
        mode: u32,
    },
    /// The sender referred to a file index that is not one we asked for.
    #[error("sender sent file index {ndx}, which was not requested in this phase")]
    UnrequestedFile {
        /// The index received.
        ndx: i32,
    },
    /// The sum head the sender echoed does not match the one we sent.
    #[error("sender echoed a sum head that differs from our request for index {ndx}")]
    SumHeadMismatch {
        /// The file index.
        ndx: i32,
    },
    /// A block-match token referred to a block we never described.
    #[error("token refers to block {block} but the request described {count} blocks")]
    BadBlockToken {
        /// The block index received.
        block: i64,
        /// The number of blocks in our request.
        count: i32,
    },
    /// The sender sent more file data than the file list announced and the limit allows.
    #[error("file index {ndx}: received {received} bytes, more than the limit of {limit}")]
    FileTooLarge {
        /// The file index.
        ndx: i32,
        /// Bytes received so far.
        received: u64,
        /// The limit.
        limit: u64,
    },
    /// Something arrived at the end of the run that does not belong there.
    #[error("unexpected {what} at end of run (got {value})")]
    BadGoodbye {
        /// What was expected.
        what: &'static str,
        /// The value received.
        value: i64,
    },
    /// The connection closed in the middle of the protocol.
    #[error("connection closed by the daemon during {during}")]
    UnexpectedEof {
        /// The protocol stage.
        during: &'static str,
    },
    /// The driver called a method that does not fit the current state.
    #[error("API misuse: {0}")]
    Misuse(&'static str),
    /// The negotiated protocol version cannot do what was asked.
    #[error("protocol {version} does not support {feature}")]
    Unsupported {
        /// The negotiated version.
        version: ProtocolVersion,
        /// The feature.
        feature: &'static str,
    },
}

/// Bounds on everything a peer can make the receiver allocate or loop over.
///
/// The defaults are generous for real daemons and small enough that a hostile
/// one cannot exhaust memory: every length or count read from the wire is
/// checked against one of these before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest text line (greeting, MOTD line, module line), in bytes.
    pub max_line: usize,
    /// Total MOTD size, in bytes.
    pub max_motd: usize,
    /// Most modules in a listing.
    pub max_modules: usize,
    /// Largest multiplexed frame payload we accept (the format allows 16 MiB).
    pub max_frame: usize,
    /// Largest out-of-band text message (MSG_ERROR, MSG_INFO, ...).
    pub max_message: usize,
    /// Longest path name in the file list (rsync's MAXPATHLEN is 4096).
    pub max_name: usize,
    /// Most entries in the file list.
    pub max_entries: usize,
    /// Total bytes of names held by the file list.
    pub max_flist_bytes: usize,
    /// Largest literal run in one token (stock senders use 32 KiB).
    pub max_literal: usize,
    /// Largest single file we accept, in bytes.
    pub max_file_size: u64,
    /// Most uid/gid name-list entries.
    pub max_id_names: usize,
    /// Most received bytes held unparsed (input that runs ahead of our
    /// requests, or a partial item). An honest sender never gets near it.
    pub max_pending_input: usize,
    /// Largest zstd window a compressed stream may use, as log2 of bytes:
    /// the decompression context allocates up to this much. 27 (128 MiB)
    /// is zstd's default limit, so every stock sender's level fits.
    pub max_zstd_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4096,
            max_motd: 64 * 1024,
            max_modules: 10_000,
            max_frame: 1 << 24,
            max_message: 8192,
            max_name: 4096,
            max_entries: 2_000_000,
            max_flist_bytes: 256 << 20,
            max_literal: 1 << 20,
            max_file_size: 1 << 46,
            max_id_names: 100_000,
            max_pending_input: 16 << 20,
            max_zstd_window_log: 27,
        }
    }
}

pub(crate) fn check_limit(what: &'static str, value: u64, limit: u64) -> Result<(), ProtocolError> {
    if value > limit {
        Err(ProtocolError::LimitExceeded { what, value, limit })
    } else {
        Ok(())
    }
}
