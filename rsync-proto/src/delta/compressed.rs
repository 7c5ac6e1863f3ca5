//! Compressed token streams: what a sender's `-z` turns the token stream of
//! a file into (token.c `recv_deflated_token`, `recv_zstd_token`,
//! `recv_compressed_token`, `see_deflate_token`; rsync 3.2.7 and 3.5.0).
//!
//! The uncompressed stream is a sequence of int32 tokens (see
//! [`Token`](super::Token)). Compressed, every item starts with a flag byte:
//!
//! ```text
//! 0x00                      END_FLAG: the file's data is complete
//! 0x40 | len>>8, len&0xff   DEFLATED_DATA: `len` (<= 16383) compressed bytes follow
//! 0x80 | r                  TOKEN_REL: the block `r` (0..=63) after the last run's end
//! 0xC0 | r, n lo, n hi      TOKENRUN_REL: that block and the `n` blocks after it
//! 0x20, int32               TOKEN_LONG: an absolute block index
//! 0x21, int32, n lo, n hi   TOKENRUN_LONG: ditto, and the `n` blocks after it
//! ```
//!
//! What `DEFLATED_DATA` carries depends on the algorithm:
//!
//! * **zlib** and **zlibx**: one raw deflate stream per file (the inflater is
//!   reset at each file). Before each block token and at the end the sender
//!   flushes with `Z_SYNC_FLUSH` and strips the flush's closing
//!   `00 00 ff ff`; the receiver puts them back. With **zlib** (not zlibx)
//!   the data of every matched block also enters the inflater's history, as
//!   fake stored blocks of at most 0xffff bytes ([`CompressedTokenDecoder::see_block`]),
//!   because the sender compressed the literals after it with that block in
//!   its window. Below protocol 31 rsync fed the first 0xffff bytes of a
//!   long block again for each piece (a bug both sides keep for compatibility).
//! * **zstd**: one decompression context for the whole session (the sender
//!   flushes with `ZSTD_e_flush` at each block token and file end, and never
//!   ends the frame).
//! * **lz4**: each chunk is an independent LZ4 block of at most 16383
//!   compressed bytes.
//!
//! # Bounds
//!
//! A chunk of 16 KiB can legitimately stand for hundreds of MiB (zstd
//! encodes 128 KiB of zeros in a few bytes), so output is never limited by
//! a ratio. Instead:
//!
//! * output is produced in pieces of at most [`OUTPUT_CHUNK`] bytes per call
//!   into one fixed buffer, so memory does not depend on what the peer sends
//!   (the [`Connection`](crate::Connection) also stops decoding while the
//!   driver has not taken what it produced);
//! * the zstd window is capped ([`Limits::max_zstd_window_log`]); LZ4 blocks
//!   decode into a fixed buffer of stock rsync's size;
//! * every call either consumes input or produces output, or fails with
//!   [`ProtocolError::DecompressStalled`]: a peer cannot make the decoder spin;
//! * the file's total is checked against [`Limits::max_file_size`] by the
//!   caller as it counts the output.

use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush, MZStatus};
use zstd_safe::zstd_sys::{ZSTD_EndDirective, ZSTD_ErrorCode};

use crate::error::{Limits, ProtocolError};
use crate::version::ProtocolVersion;

/// END_FLAG: the end of the file's tokens.
pub const END_FLAG: u8 = 0x00;
/// TOKEN_LONG: an absolute int32 block index follows.
pub const TOKEN_LONG: u8 = 0x20;
/// TOKENRUN_LONG: an absolute index and a 16-bit run count follow.
pub const TOKENRUN_LONG: u8 = 0x21;
/// DEFLATED_DATA: plus the high 6 bits of the length; the low byte follows.
pub const DEFLATED_DATA: u8 = 0x40;
/// TOKEN_REL: plus a 6-bit offset from the end of the previous run.
pub const TOKEN_REL: u8 = 0x80;
/// TOKENRUN_REL: ditto, with a 16-bit run count after it.
pub const TOKENRUN_REL: u8 = 0xC0;
/// Largest DEFLATED_DATA payload (14-bit length).
pub const MAX_DATA_COUNT: usize = 16383;
/// Most output one [`CompressedTokenDecoder::decode`] call produces.
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// The largest block index a compressed stream can name (token.c MAX_TOKEN_INDEX).
const MAX_TOKEN_INDEX: i64 = 0x7fff_fffe;
/// Stock rsync's LZ4 output buffer: `MAX(LZ4_compressBound(CHUNK_SIZE), MAX_DATA_COUNT+2)`.
pub const LZ4_MAX_OUTPUT: usize = 32 * 1024 + 32 * 1024 / 255 + 16;
/// The bytes a sync flush ends with, which the sender strips.
const SYNC_TRAILER: [u8; 4] = [0, 0, 0xff, 0xff];
/// Largest stored block see_deflate_token builds.
const MAX_STORED: usize = 0xffff;

/// A compression algorithm of the token stream (compat.c valid_compressions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompressionKind {
    /// Zstandard, one context for the session (`zstd`).
    Zstd,
    /// LZ4 blocks (`lz4`).
    Lz4,
    /// Raw deflate without the matched-block history (`zlibx`, `--new-compress`).
    Zlibx,
    /// Raw deflate with matched blocks in the history (`zlib`, `-z` to old peers).
    Zlib,
}

impl CompressionKind {
    /// Every algorithm, in stock rsync's order of preference.
    pub const ALL: [CompressionKind; 4] = [
        CompressionKind::Zstd,
        CompressionKind::Lz4,
        CompressionKind::Zlibx,
        CompressionKind::Zlib,
    ];

    /// The name used on the wire and in `--compress-choice`.
    pub fn name(self) -> &'static str {
        match self {
            CompressionKind::Zstd => "zstd",
            CompressionKind::Lz4 => "lz4",
            CompressionKind::Zlibx => "zlibx",
            CompressionKind::Zlib => "zlib",
        }
    }

    /// Parses a name (case-insensitive, as rsync's get_nni_by_name).
    pub fn from_name(name: &str) -> Option<CompressionKind> {
        CompressionKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// The list a client sends: `zstd lz4 zlibx zlib` (stock order; a client
    /// leaves out `none`, get_default_nno_list).
    pub fn advertised_list() -> String {
        CompressionKind::ALL.map(CompressionKind::name).join(" ")
    }

    /// The first of our names (stock order) that the peer also lists. A stock
    /// daemon lists the same names in the same order, so this is what it
    /// picks too (compat.c parse_negotiate_str).
    pub fn choose(peer_list: &str) -> Option<CompressionKind> {
        let peer: Vec<CompressionKind> = peer_list
            .split_whitespace()
            .filter_map(CompressionKind::from_name)
            .collect();
        CompressionKind::ALL.into_iter().find(|k| peer.contains(k))
    }

    /// True when `level` turns this algorithm off on both sides: level 0 is
    /// zlib's Z_NO_COMPRESSION, which init_compression_level() (token.c)
    /// maps to no compression at all. zstd and lz4 have no such level.
    pub fn level_turns_off(self, level: i32) -> bool {
        matches!(self, CompressionKind::Zlib | CompressionKind::Zlibx) && level == 0
    }

    /// Whether matched blocks enter the decompressor's history (see_token).
    fn sees_blocks(self) -> bool {
        self == CompressionKind::Zlib
    }
}

impl std::fmt::Display for CompressionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One item of a compressed token stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressedItem {
    /// This many bytes of file data are in [`CompressedTokenDecoder::output`].
    Data(usize),
    /// Copy this block from the basis; with zlib, then pass its bytes to
    /// [`CompressedTokenDecoder::see_block`].
    Block(u32),
    /// The end of the file's data (the whole-file checksum follows).
    End,
}

/// Where the decoder is (token.c `recv_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// Before a file: the deflate engine is reset here.
    Init,
    /// Expecting a flag byte.
    Idle,
    /// Decompressing the chunk in `cbuf`.
    Inflating,
    /// Deflate only: the chunk is consumed; at the next non-data flag the
    /// stripped sync trailer goes back in.
    Inflated,
    /// Inside a token run: `run` more blocks follow.
    Running,
}

enum Engine {
    Deflate(Box<InflateState>),
    Zstd(zstd_safe::DCtx<'static>),
    Lz4,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Deflate(_) => "Deflate",
            Engine::Zstd(_) => "Zstd",
            Engine::Lz4 => "Lz4",
        })
    }
}

/// Decodes a compressed token stream into data pieces and block tokens.
///
/// One decoder serves a whole session (zstd's context spans files). It
/// follows the Decoder contract of the other codecs: `Ok(None)` means more
/// input is needed, and only whole items (a flag with everything after it,
/// a whole data chunk) are consumed.
#[derive(Debug)]
pub struct CompressedTokenDecoder {
    kind: CompressionKind,
    protocol: ProtocolVersion,
    engine: Engine,
    state: RecvState,
    rx_token: i64,
    rx_run: i64,
    /// The compressed chunk being decoded (at most MAX_DATA_COUNT bytes).
    cbuf: Vec<u8>,
    cpos: usize,
    /// Decompressed output of the last `Data` item.
    out: Box<[u8]>,
    out_len: usize,
    /// The zstd window limit, for the error.
    window_log_max: u32,
}

impl CompressedTokenDecoder {
    /// A decoder for a session that negotiated `kind` at `protocol`.
    pub fn new(
        kind: CompressionKind,
        protocol: ProtocolVersion,
        limits: &Limits,
    ) -> Result<Self, ProtocolError> {
        let engine = match kind {
            CompressionKind::Zlib | CompressionKind::Zlibx => {
                Engine::Deflate(InflateState::new_boxed(DataFormat::Raw))
            }
            CompressionKind::Zstd => {
                let mut d = zstd_safe::DCtx::try_create().ok_or(ProtocolError::Decompress {
                    algorithm: kind,
                    detail: "cannot create a zstd context".into(),
                })?;
                d.set_parameter(zstd_safe::DParameter::WindowLogMax(
                    limits.max_zstd_window_log,
                ))
                .map_err(|code| zstd_error(code, limits.max_zstd_window_log))?;
                Engine::Zstd(d)
            }
            CompressionKind::Lz4 => Engine::Lz4,
        };
        Ok(CompressedTokenDecoder {
            kind,
            protocol,
            engine,
            state: RecvState::Init,
            rx_token: 0,
            rx_run: 0,
            cbuf: Vec::with_capacity(MAX_DATA_COUNT),
            cpos: 0,
            out: vec![0u8; OUTPUT_CHUNK].into_boxed_slice(),
            out_len: 0,
            window_log_max: limits.max_zstd_window_log,
        })
    }

    /// The negotiated algorithm.
    pub fn kind(&self) -> CompressionKind {
        self.kind
    }

    /// The bytes of the last [`CompressedItem::Data`].
    pub fn output(&self) -> &[u8] {
        self.out.get(..self.out_len).unwrap_or_default()
    }

    /// True between files (after [`CompressedItem::End`], before the next
    /// file's first item).
    pub fn at_file_boundary(&self) -> bool {
        self.state == RecvState::Init
    }

    /// Decodes the next item from the front of `input`; returns it with the
    /// number of bytes consumed (which may be 0 for the output of a chunk
    /// consumed earlier, or a block of a run).
    pub fn decode(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(CompressedItem, usize)>, ProtocolError> {
        let mut used = 0;
        loop {
            match self.state {
                RecvState::Init => {
                    if input.len() <= used {
                        // Stay between files until the next file's bytes come.
                        return Ok(self.need_more(used));
                    }
                    if let Engine::Deflate(st) = &mut self.engine {
                        st.reset(DataFormat::Raw);
                    }
                    self.rx_token = 0;
                    self.state = RecvState::Idle;
                }
                RecvState::Idle | RecvState::Inflated => {
                    let rest = input.get(used..).unwrap_or_default();
                    let Some(&flag) = rest.first() else {
                        return Ok(self.need_more(used));
                    };
                    if flag & 0xC0 == DEFLATED_DATA {
                        let Some(&lo) = rest.get(1) else {
                            return Ok(self.need_more(used));
                        };
                        let n = (usize::from(flag & 0x3f) << 8) | usize::from(lo);
                        let Some(chunk) = rest.get(2..2 + n) else {
                            return Ok(self.need_more(used));
                        };
                        self.cbuf.clear();
                        self.cbuf.extend_from_slice(chunk);
                        self.cpos = 0;
                        used += 2 + n;
                        self.state = RecvState::Inflating;
                        continue;
                    }
                    if self.state == RecvState::Inflated {
                        // The chunks before this flag ended with a sync flush:
                        // drain what the inflater holds, then restore the trailer.
                        let n = self.inflate_pending()?;
                        if n > 0 {
                            return Ok(Some((CompressedItem::Data(n), used)));
                        }
                        self.restore_sync_trailer()?;
                        self.state = RecvState::Idle;
                    }
                    if flag == END_FLAG {
                        used += 1;
                        self.state = RecvState::Init;
                        return Ok(Some((CompressedItem::End, used)));
                    }
                    let Some((block, n)) = self.token_num(rest)? else {
                        return Ok(self.need_more(used));
                    };
                    used += n;
                    return Ok(Some((CompressedItem::Block(block), used)));
                }
                RecvState::Running => {
                    if self.rx_run <= 0 || self.rx_token >= MAX_TOKEN_INDEX {
                        return Err(bad_token(self.rx_token));
                    }
                    self.rx_token += 1;
                    self.rx_run -= 1;
                    if self.rx_run == 0 {
                        self.state = RecvState::Idle;
                    }
                    return Ok(Some((
                        CompressedItem::Block(block_index(self.rx_token)?),
                        used,
                    )));
                }
                RecvState::Inflating => {
                    let n = self.inflate_chunk()?;
                    if n > 0 {
                        return Ok(Some((CompressedItem::Data(n), used)));
                    }
                }
            }
        }
    }

    /// Puts a matched block's bytes into the decompressor's history, as
    /// see_deflate_token does: a no-op except for zlib.
    pub fn see_block(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        if !self.kind.sees_blocks() {
            return Ok(());
        }
        let Engine::Deflate(st) = &mut self.engine else {
            return Ok(());
        };
        let old_protocol_bug = !self.protocol.advances_in_stored_history();
        let mut left = data.len();
        let mut offset = 0;
        let mut stored = Vec::with_capacity(5 + MAX_STORED.min(data.len()));
        while left > 0 {
            let n = left.min(MAX_STORED);
            let piece = data.get(offset..offset + n).unwrap_or_default();
            stored.clear();
            // BFINAL=0, BTYPE=00 (stored), then LEN and NLEN little-endian.
            let len = n as u16;
            stored.push(0);
            stored.extend_from_slice(&len.to_le_bytes());
            stored.extend_from_slice(&(!len).to_le_bytes());
            stored.extend_from_slice(piece);
            feed_all(st, &stored, &mut self.out, self.kind)?;
            if !old_protocol_bug {
                offset += n;
            }
            left -= n;
        }
        self.out_len = 0;
        Ok(())
    }

    /// More input is needed. A chunk already taken in this call must still
    /// be reported as consumed, so it comes back as an empty data item.
    fn need_more(&mut self, used: usize) -> Option<(CompressedItem, usize)> {
        self.out_len = 0;
        (used > 0).then_some((CompressedItem::Data(0), used))
    }

    /// Reads a block token at the front of `rest` (recv_compressed_token_num).
    fn token_num(&mut self, rest: &[u8]) -> Result<Option<(u32, usize)>, ProtocolError> {
        let Some(&flag) = rest.first() else {
            return Ok(None);
        };
        let (token, mut n, run) = if flag & TOKEN_REL != 0 {
            let token = self.rx_token + i64::from(flag & 0x3f);
            if token > MAX_TOKEN_INDEX {
                return Err(bad_token(token));
            }
            (token, 1, (flag >> 6) & 1 != 0)
        } else if flag == TOKEN_LONG || flag == TOKENRUN_LONG {
            let Some(b) = rest.get(1..5) else {
                return Ok(None);
            };
            let mut raw = [0u8; 4];
            raw.copy_from_slice(b);
            let token = i64::from(i32::from_le_bytes(raw));
            if !(0..=MAX_TOKEN_INDEX).contains(&token) {
                return Err(bad_token(token));
            }
            (token, 5, flag == TOKENRUN_LONG)
        } else {
            return Err(ProtocolError::InvalidValue {
                what: "compressed token flag",
                value: i64::from(flag),
            });
        };
        let mut run_len = 0;
        if run {
            let Some(b) = rest.get(n..n + 2) else {
                return Ok(None);
            };
            run_len = i64::from(u16::from_le_bytes([b[0], b[1]]));
            if run_len <= 0 || token > MAX_TOKEN_INDEX - run_len {
                return Err(bad_token(token + run_len));
            }
            n += 2;
        }
        self.rx_token = token;
        if run {
            self.rx_run = run_len;
            self.state = RecvState::Running;
        }
        Ok(Some((block_index(token)?, n)))
    }

    /// Decompresses the next piece of the current chunk into `out`.
    fn inflate_chunk(&mut self) -> Result<usize, ProtocolError> {
        self.out_len = 0;
        let input = self.cbuf.get(self.cpos..).unwrap_or_default();
        let kind = self.kind;
        let window_log_max = self.window_log_max;
        let (consumed, written, drained) = match &mut self.engine {
            Engine::Deflate(st) => {
                let r =
                    miniz_oxide::inflate::stream::inflate(st, input, &mut self.out, MZFlush::None);
                check_inflate(r.status, kind, r.bytes_consumed, r.bytes_written)?;
                let drained = r.bytes_consumed == input.len();
                (r.bytes_consumed, r.bytes_written, drained)
            }
            Engine::Zstd(d) => {
                let mut inb = zstd_safe::InBuffer::around(input);
                let mut outb = zstd_safe::OutBuffer::around(&mut self.out[..]);
                let r = d.decompress_stream(&mut outb, &mut inb);
                let written = outb.pos();
                let consumed = inb.pos;
                r.map_err(|code| zstd_error(code, window_log_max))?;
                // Everything is out once the input is used up and the output did not fill.
                let drained = consumed == input.len() && written < OUTPUT_CHUNK;
                (consumed, written, drained)
            }
            Engine::Lz4 => {
                let limit = self.out.len().min(LZ4_MAX_OUTPUT);
                let out = self.out.get_mut(..limit).unwrap_or_default();
                let n = lz4_flex::block::decompress_into(input, out).map_err(|e| {
                    ProtocolError::Decompress {
                        algorithm: kind,
                        detail: e.to_string(),
                    }
                })?;
                (input.len(), n, true)
            }
        };
        if consumed == 0 && written == 0 && !input.is_empty() {
            return Err(ProtocolError::DecompressStalled { algorithm: kind });
        }
        self.cpos += consumed;
        if drained {
            self.state = match self.engine {
                Engine::Deflate(_) => RecvState::Inflated,
                _ => RecvState::Idle,
            };
        }
        self.out_len = written;
        Ok(written)
    }

    /// Deflate: output the inflater still holds after its input ran out.
    fn inflate_pending(&mut self) -> Result<usize, ProtocolError> {
        self.out_len = 0;
        let kind = self.kind;
        let Engine::Deflate(st) = &mut self.engine else {
            return Ok(0);
        };
        let r = miniz_oxide::inflate::stream::inflate(st, &[], &mut self.out, MZFlush::None);
        check_inflate(r.status, kind, 0, r.bytes_written)?;
        self.out_len = r.bytes_written;
        Ok(r.bytes_written)
    }

    /// Deflate: the sender stripped `00 00 ff ff` from its sync flush; the
    /// inflater must now be inside that empty stored block
    /// (inflateSyncPoint), and takes the four bytes without output. miniz
    /// does not expose its block state, so a stream elsewhere is caught when
    /// the four bytes come out as data or fail to decode; any other desync
    /// garbles the file, which the whole-file checksum then rejects.
    fn restore_sync_trailer(&mut self) -> Result<(), ProtocolError> {
        let kind = self.kind;
        let Engine::Deflate(st) = &mut self.engine else {
            return Ok(());
        };
        let r =
            miniz_oxide::inflate::stream::inflate(st, &SYNC_TRAILER, &mut self.out, MZFlush::None);
        check_inflate(r.status, kind, r.bytes_consumed, r.bytes_written)?;
        self.out_len = 0;
        if r.bytes_consumed != SYNC_TRAILER.len() || r.bytes_written != 0 {
            return Err(ProtocolError::DecompressLostSync { algorithm: kind });
        }
        Ok(())
    }
}

fn block_index(token: i64) -> Result<u32, ProtocolError> {
    u32::try_from(token).map_err(|_| bad_token(token))
}

fn bad_token(token: i64) -> ProtocolError {
    ProtocolError::InvalidValue {
        what: "block index in compressed stream",
        value: token,
    }
}

fn check_inflate(
    status: Result<MZStatus, miniz_oxide::MZError>,
    kind: CompressionKind,
    consumed: usize,
    written: usize,
) -> Result<(), ProtocolError> {
    match status {
        Ok(MZStatus::Ok) => Ok(()),
        // The final block: honest senders never end the stream, and nothing
        // may follow it.
        Ok(MZStatus::StreamEnd) => Err(ProtocolError::Decompress {
            algorithm: kind,
            detail: "deflate stream ended (final block)".into(),
        }),
        Ok(MZStatus::NeedDict) => Err(ProtocolError::Decompress {
            algorithm: kind,
            detail: "deflate stream needs a dictionary".into(),
        }),
        // No progress possible: fine when there was nothing to do.
        Err(miniz_oxide::MZError::Buf) if consumed == 0 && written == 0 => Ok(()),
        Err(e) => Err(ProtocolError::Decompress {
            algorithm: kind,
            detail: format!("inflate failed: {e:?}"),
        }),
    }
}

/// Inflates all of `input` (stored blocks), discarding the output.
fn feed_all(
    st: &mut InflateState,
    input: &[u8],
    scratch: &mut [u8],
    kind: CompressionKind,
) -> Result<(), ProtocolError> {
    let mut pos = 0;
    while pos < input.len() {
        let rest = input.get(pos..).unwrap_or_default();
        let r = miniz_oxide::inflate::stream::inflate(st, rest, scratch, MZFlush::None);
        check_inflate(r.status, kind, r.bytes_consumed, r.bytes_written)?;
        if r.bytes_consumed == 0 && r.bytes_written == 0 {
            return Err(ProtocolError::DecompressStalled { algorithm: kind });
        }
        pos += r.bytes_consumed;
    }
    // Drain output still held for the stored block's last bytes.
    loop {
        let r = miniz_oxide::inflate::stream::inflate(st, &[], scratch, MZFlush::None);
        check_inflate(r.status, kind, 0, r.bytes_written)?;
        if r.bytes_written == 0 {
            return Ok(());
        }
    }
}

fn zstd_error(code: usize, window_log_max: u32) -> ProtocolError {
    if zstd_safe::is_error_kind(
        code,
        ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge,
    ) {
        return ProtocolError::CompressionWindowTooLarge {
            limit_log: window_log_max,
        };
    }
    ProtocolError::Decompress {
        algorithm: CompressionKind::Zstd,
        detail: zstd_safe::get_error_name(code).to_string(),
    }
}

/// Builds compressed token streams as stock senders do (token.c
/// `send_deflated_token`, `send_zstd_token`, `send_compressed_token`): for
/// tests, fuzz seeds and scripted daemons.
pub struct CompressedTokenEncoder {
    kind: CompressionKind,
    engine: EncEngine,
    last_token: i64,
    run_start: i64,
    last_run_end: i64,
}

enum EncEngine {
    Deflate(Box<CompressorOxide>),
    Zstd(zstd_safe::CCtx<'static>),
    Lz4,
}

impl std::fmt::Debug for CompressedTokenEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedTokenEncoder")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// An error of the encoder's compression library (only on resource failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{algorithm} compression failed: {detail}")]
pub struct EncodeError {
    /// The algorithm.
    pub algorithm: CompressionKind,
    /// The library's message.
    pub detail: String,
}

impl CompressedTokenEncoder {
    /// An encoder at `level` (the algorithm's default when `None`).
    pub fn new(kind: CompressionKind, level: Option<i32>) -> Result<Self, EncodeError> {
        let err = |detail: &str| EncodeError {
            algorithm: kind,
            detail: detail.to_string(),
        };
        let engine = match kind {
            CompressionKind::Zlib | CompressionKind::Zlibx => {
                let level = level.unwrap_or(6).clamp(1, 9);
                let flags = create_comp_flags_from_zip_params(level, -15, 0);
                EncEngine::Deflate(Box::new(CompressorOxide::new(flags)))
            }
            CompressionKind::Zstd => {
                let mut c = zstd_safe::CCtx::try_create().ok_or_else(|| err("no context"))?;
                c.set_parameter(zstd_safe::CParameter::CompressionLevel(level.unwrap_or(3)))
                    .map_err(|c| err(zstd_safe::get_error_name(c)))?;
                EncEngine::Zstd(c)
            }
            CompressionKind::Lz4 => EncEngine::Lz4,
        };
        Ok(CompressedTokenEncoder {
            kind,
            engine,
            last_token: -1,
            run_start: 0,
            last_run_end: 0,
        })
    }

    /// Appends literal bytes `data` followed by block `index` whose basis
    /// bytes are `block` (send_token with a token >= 0).
    pub fn block(
        &mut self,
        data: &[u8],
        index: u32,
        block: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.send(i64::from(index), data, block, out)
    }

    /// Appends literal bytes `data` and the end of the file (send_token
    /// with token -1).
    pub fn end(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.send(-1, data, &[], out)
    }

    fn send(
        &mut self,
        token: i64,
        data: &[u8],
        block: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if self.last_token == -1 {
            if let EncEngine::Deflate(c) = &mut self.engine {
                c.reset();
            }
            self.last_run_end = 0;
            self.run_start = token;
        } else if !data.is_empty()
            || token != self.last_token + 1
            || token >= self.run_start + 65536
        {
            let r = self.run_start - self.last_run_end;
            let n = self.last_token - self.run_start;
            if (0..=63).contains(&r) {
                out.push(if n == 0 { TOKEN_REL } else { TOKENRUN_REL } + r as u8);
            } else {
                out.push(if n == 0 { TOKEN_LONG } else { TOKENRUN_LONG });
                out.extend_from_slice(&(self.run_start as i32).to_le_bytes());
            }
            if n != 0 {
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            self.last_run_end = self.last_token;
            self.run_start = token;
        }
        self.last_token = token;
        if !data.is_empty() {
            self.compress(data, out)?;
        }
        if token == -1 {
            out.push(END_FLAG);
        } else if self.kind.sees_blocks() {
            // Into the compressor's window, output discarded (what rsync
            // does with a zlib lacking Z_INSERT_ONLY).
            let mut sink = Vec::new();
            self.deflate_sync(block, &mut sink)?;
        }
        Ok(())
    }

    fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut compressed = Vec::new();
        match &mut self.engine {
            EncEngine::Deflate(_) => {
                self.deflate_sync(data, &mut compressed)?;
                if compressed.ends_with(&SYNC_TRAILER) {
                    compressed.truncate(compressed.len() - SYNC_TRAILER.len());
                }
                put_chunks(&compressed, out);
            }
            EncEngine::Zstd(c) => {
                let mut inb = zstd_safe::InBuffer::around(data);
                let mut buf = vec![0u8; MAX_DATA_COUNT];
                loop {
                    let mut outb = zstd_safe::OutBuffer::around(&mut buf[..]);
                    let r = c
                        .compress_stream2(&mut outb, &mut inb, ZSTD_EndDirective::ZSTD_e_flush)
                        .map_err(|code| EncodeError {
                            algorithm: CompressionKind::Zstd,
                            detail: zstd_safe::get_error_name(code).into(),
                        })?;
                    let n = outb.pos();
                    if n > 0 {
                        put_chunks(&buf[..n], out);
                    }
                    if r == 0 {
                        break;
                    }
                }
            }
            EncEngine::Lz4 => {
                let mut rest = data;
                while !rest.is_empty() {
                    let mut take = rest.len().min(MAX_DATA_COUNT);
                    loop {
                        let c = lz4_flex::block::compress(&rest[..take]);
                        if c.len() <= MAX_DATA_COUNT {
                            put_chunks(&c, out);
                            break;
                        }
                        take /= 2;
                    }
                    rest = &rest[take..];
                }
            }
        }
        Ok(())
    }

    fn deflate_sync(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let EncEngine::Deflate(c) = &mut self.engine else {
            return Ok(());
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = 0;
        loop {
            let r = miniz_oxide::deflate::stream::deflate(c, &data[pos..], &mut buf, MZFlush::Sync);
            r.status.map_err(|e| EncodeError {
                algorithm: self.kind,
                detail: format!("{e:?}"),
            })?;
            pos += r.bytes_consumed;
            out.extend_from_slice(&buf[..r.bytes_written]);
            if pos == data.len() && r.bytes_written < buf.len() {
                return Ok(());
            }
        }
    }
}

/// Splits compressed bytes into DEFLATED_DATA chunks.
fn put_chunks(data: &[u8], out: &mut Vec<u8>) {
    for c in data.chunks(MAX_DATA_COUNT) {
        out.push(DEFLATED_DATA | (c.len() >> 8) as u8);
        out.push(c.len() as u8);
        out.extend_from_slice(c);
    }
}

#[cfg(test)]
mod tests;
