//! Multiplexed I/O: frame headers, message codes and an incremental demuxer.
//! Mirrors io.c (`send_msg`, `read_a_msg`) and the MSG_* codes in rsync.h.
//!
//! Each frame is a 4-byte little-endian header `((MPLEX_BASE + code) << 24) | len`
//! followed by `len` payload bytes. MSG_DATA payloads form one byte stream that
//! may be split anywhere; every other code is an out-of-band message.

use std::fmt;

use crate::error::ProtocolError;

/// The offset added to message codes in frame headers (io.c MPLEX_BASE).
pub const MPLEX_BASE: u8 = 7;
/// Largest payload a frame header can describe.
pub const MAX_FRAME_LEN: usize = 0x00ff_ffff;

/// A multiplexed message code (rsync.h `enum msgcode`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageCode(pub u8);

impl MessageCode {
    /// Protocol data stream.
    pub const DATA: MessageCode = MessageCode(0);
    /// An error about one file (partial transfer).
    pub const ERROR_XFER: MessageCode = MessageCode(1);
    /// Informational text.
    pub const INFO: MessageCode = MessageCode(2);
    /// An error.
    pub const ERROR: MessageCode = MessageCode(3);
    /// A warning.
    pub const WARNING: MessageCode = MessageCode(4);
    /// A socket error.
    pub const ERROR_SOCKET: MessageCode = MessageCode(5);
    /// Daemon log text.
    pub const LOG: MessageCode = MessageCode(6);
    /// Text for the client only.
    pub const CLIENT: MessageCode = MessageCode(7);
    /// An error about a name that could not be converted.
    pub const ERROR_UTF8: MessageCode = MessageCode(8);
    /// Generator-internal: redo a file.
    pub const REDO: MessageCode = MessageCode(9);
    /// Generator-internal: stats.
    pub const STATS: MessageCode = MessageCode(10);
    /// The sender's accumulated io_error flags (int32).
    pub const IO_ERROR: MessageCode = MessageCode(22);
    /// The daemon's module timeout, in seconds (int32).
    pub const IO_TIMEOUT: MessageCode = MessageCode(33);
    /// Protocol-30 keep-alive (empty).
    pub const NOOP: MessageCode = MessageCode(42);
    /// The peer is exiting (empty, or an int32 exit code).
    pub const ERROR_EXIT: MessageCode = MessageCode(86);
    /// Generator-internal: a file was updated.
    pub const SUCCESS: MessageCode = MessageCode(100);
    /// A file was deleted (name).
    pub const DELETED: MessageCode = MessageCode(101);
    /// The sender could not open a requested file (int32 ndx).
    pub const NO_SEND: MessageCode = MessageCode(102);

    /// The upstream name of this code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "MSG_DATA",
            1 => "MSG_ERROR_XFER",
            2 => "MSG_INFO",
            3 => "MSG_ERROR",
            4 => "MSG_WARNING",
            5 => "MSG_ERROR_SOCKET",
            6 => "MSG_LOG",
            7 => "MSG_CLIENT",
            8 => "MSG_ERROR_UTF8",
            9 => "MSG_REDO",
            10 => "MSG_STATS",
            22 => "MSG_IO_ERROR",
            33 => "MSG_IO_TIMEOUT",
            42 => "MSG_NOOP",
            86 => "MSG_ERROR_EXIT",
            100 => "MSG_SUCCESS",
            101 => "MSG_DELETED",
            102 => "MSG_NO_SEND",
            _ => "MSG_UNKNOWN",
        }
    }
}

impl fmt::Debug for MessageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for MessageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Appends one frame. Payloads longer than [`MAX_FRAME_LEN`] are split.
pub fn encode_frame(code: MessageCode, payload: &[u8], out: &mut Vec<u8>) {
    let mut chunks = payload.chunks(MAX_FRAME_LEN).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&header(code, 0));
        return;
    }
    for chunk in chunks {
        out.extend_from_slice(&header(code, chunk.len()));
        out.extend_from_slice(chunk);
    }
}

fn header(code: MessageCode, len: usize) -> [u8; 4] {
    let tag = u32::from(MPLEX_BASE.wrapping_add(code.0));
    ((tag << 24) | (len as u32 & 0x00ff_ffff)).to_le_bytes()
}

/// Decodes a frame header into its code and payload length.
pub fn decode_header(bytes: [u8; 4]) -> Result<(MessageCode, usize), ProtocolError> {
    let header = u32::from_le_bytes(bytes);
    let tag = (header >> 24) as u8;
    if tag < MPLEX_BASE {
        return Err(ProtocolError::BadFrameHeader { header });
    }
    Ok((
        MessageCode(tag - MPLEX_BASE),
        (header & 0x00ff_ffff) as usize,
    ))
}

/// What the demuxer produced from one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Demuxed {
    /// Bytes of the MSG_DATA stream (possibly empty for a keep-alive frame).
    Data(Vec<u8>),
    /// A complete out-of-band message.
    Message(MessageCode, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DemuxState {
    Head,
    /// Inside a MSG_DATA frame with this many payload bytes still to come.
    Data(usize),
    /// Inside an out-of-band frame of this code and length.
    Message(MessageCode, usize),
}

/// Incremental demultiplexer, shaped like tokio-util's `length_delimited`
/// decoder: a Head state and a payload state, with checked lengths.
///
/// MSG_DATA payloads are passed through as they arrive (they never need to be
/// buffered whole); other frames are buffered up to `max_message` bytes.
#[derive(Debug, Clone)]
pub struct Demuxer {
    state: DemuxState,
    max_message: usize,
    max_frame: usize,
}

impl Demuxer {
    /// A demuxer that accepts out-of-band payloads up to `max_message` bytes
    /// and frames up to `max_frame` bytes.
    pub fn new(max_message: usize, max_frame: usize) -> Self {
        Demuxer {
            state: DemuxState::Head,
            max_message,
            max_frame: max_frame.min(MAX_FRAME_LEN),
        }
    }

    /// True when no frame is partly consumed.
    pub fn at_frame_boundary(&self) -> bool {
        self.state == DemuxState::Head
    }

    /// Consumes a prefix of `buf` and returns how many bytes were used and
    /// what was decoded (if anything). Call repeatedly until it uses 0 bytes;
    /// a call that produces an item always consumes at least one byte.
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Option<Demuxed>), ProtocolError> {
        match self.state {
            DemuxState::Head => {
                let Some(head) = buf.get(..4) else {
                    return Ok((0, None));
                };
                let (code, len) = decode_header([head[0], head[1], head[2], head[3]])?;
                if len > self.max_frame {
                    return Err(ProtocolError::FrameTooLarge {
                        code,
                        len,
                        limit: self.max_frame,
                    });
                }
                if code == MessageCode::DATA {
                    self.state = DemuxState::Data(len);
                    if len == 0 {
                        self.state = DemuxState::Head;
                        return Ok((4, Some(Demuxed::Data(Vec::new()))));
                    }
                    return Ok((4, None));
                }
                if len > self.max_message {
                    return Err(ProtocolError::FrameTooLarge {
                        code,
                        len,
                        limit: self.max_message,
                    });
                }
                if len == 0 {
                    // Complete already (MSG_NOOP, an empty MSG_ERROR_EXIT):
                    // report it together with the header so that every
                    // produced item consumes bytes.
                    return Ok((4, Some(Demuxed::Message(code, Vec::new()))));
                }
                self.state = DemuxState::Message(code, len);
                Ok((4, None))
            }
            DemuxState::Data(left) => {
                let n = left.min(buf.len());
                if n == 0 {
                    return Ok((0, None));
                }
                self.state = if n == left {
                    DemuxState::Head
                } else {
                    DemuxState::Data(left - n)
                };
                Ok((n, Some(Demuxed::Data(buf[..n].to_vec()))))
            }
            DemuxState::Message(code, len) => {
                let Some(payload) = buf.get(..len) else {
                    return Ok((0, None));
                };
                self.state = DemuxState::Head;
                Ok((len, Some(Demuxed::Message(code, payload.to_vec()))))
            }
        }
    }

    /// How many of the next `avail` bytes are MSG_DATA payload that can be
    /// copied straight into the data stream (0 unless inside a data frame).
    pub(crate) fn data_run(&self, avail: usize) -> usize {
        match self.state {
            DemuxState::Data(left) => left.min(avail),
            _ => 0,
        }
    }

    /// Records that `n` bytes reported by [`Demuxer::data_run`] were consumed.
    pub(crate) fn consume_data(&mut self, n: usize) {
        if let DemuxState::Data(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                DemuxState::Head
            } else {
                DemuxState::Data(left)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn demux_all(d: &mut Demuxer, input: &[u8]) -> Result<Vec<Demuxed>, ProtocolError> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (used, item) = d.decode(&input[pos..])?;
            pos += used;
            if let Some(i) = item {
                out.push(i);
            }
            if used == 0 {
                return Ok(out);
            }
        }
    }

    /// Joins adjacent data pieces so that different splits compare equal.
    fn normalize(items: Vec<Demuxed>) -> Vec<Demuxed> {
        let mut out: Vec<Demuxed> = Vec::new();
        for i in items {
            match (out.last_mut(), i) {
                (Some(Demuxed::Data(prev)), Demuxed::Data(d)) => prev.extend_from_slice(&d),
                (_, i) => out.push(i),
            }
        }
        out
    }

    #[test]
    fn decodes_io_timeout_frame_seen_from_daemon() {
        // Captured from Debian rsync 3.2.7 with `timeout = 60`: MSG_IO_TIMEOUT(60).
        let bytes = [0x04, 0x00, 0x00, 0x28, 0x3c, 0x00, 0x00, 0x00];
        let mut d = Demuxer::new(8192, MAX_FRAME_LEN);
        let items = demux_all(&mut d, &bytes).unwrap();
        assert_eq!(
            items,
            vec![Demuxed::Message(
                MessageCode::IO_TIMEOUT,
                vec![0x3c, 0, 0, 0]
            )]
        );
    }

    #[test]
    fn rejects_header_below_mplex_base() {
        let mut d = Demuxer::new(8192, MAX_FRAME_LEN);
        let err = d.decode(&[0, 0, 0, 0x06]).unwrap_err();
        assert!(matches!(err, ProtocolError::BadFrameHeader { .. }));
    }

    #[test]
    fn rejects_message_frame_over_limit() {
        let mut d = Demuxer::new(16, MAX_FRAME_LEN);
        let mut buf = Vec::new();
        encode_frame(MessageCode::ERROR, &[b'x'; 17], &mut buf);
        assert!(matches!(
            d.decode(&buf),
            Err(ProtocolError::FrameTooLarge { len: 17, .. })
        ));
    }

    #[test]
    fn empty_message_frame_does_not_stall_the_frames_behind_it() {
        // MSG_NOOP and an empty MSG_ERROR_EXIT have no payload; the frames
        // after them in the same read must still come out.
        let mut buf = Vec::new();
        encode_frame(MessageCode::NOOP, &[], &mut buf);
        encode_frame(MessageCode::DATA, b"xy", &mut buf);
        let mut d = Demuxer::new(16, MAX_FRAME_LEN);
        let (used, item) = d.decode(&buf).unwrap();
        assert_eq!(
            (used, item),
            (4, Some(Demuxed::Message(MessageCode::NOOP, vec![])))
        );
        assert_eq!(
            demux_all(&mut d, &buf[4..]).unwrap(),
            vec![Demuxed::Data(b"xy".to_vec())]
        );
    }

    #[test]
    fn empty_data_frame_is_a_keepalive() {
        let mut buf = Vec::new();
        encode_frame(MessageCode::DATA, &[], &mut buf);
        assert_eq!(buf, [0, 0, 0, 7]);
        let mut d = Demuxer::new(16, MAX_FRAME_LEN);
        assert_eq!(
            demux_all(&mut d, &buf).unwrap(),
            vec![Demuxed::Data(vec![])]
        );
    }

    fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(0u8), Just(1), Just(2), Just(3), Just(22), Just(102)],
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn roundtrip_frames(fs in frames()) {
            let mut buf = Vec::new();
            for (c, p) in &fs {
                encode_frame(MessageCode(*c), p, &mut buf);
            }
            let mut d = Demuxer::new(1024, MAX_FRAME_LEN);
            let got = normalize(demux_all(&mut d, &buf).unwrap());
            let want = normalize(fs.into_iter().map(|(c, p)| if c == 0 { Demuxed::Data(p) } else { Demuxed::Message(MessageCode(c), p) }).collect());
            prop_assert_eq!(got, want);
            prop_assert!(d.at_frame_boundary());
        }

        #[test]
        fn split_anywhere_gives_same_items(fs in frames(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let mut buf = Vec::new();
            for (c, p) in &fs {
                encode_frame(MessageCode(*c), p, &mut buf);
            }
            let mut whole = Demuxer::new(1024, MAX_FRAME_LEN);
            let want = normalize(demux_all(&mut whole, &buf).unwrap());
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
            points.push(buf.len());
            points.sort_unstable();
            let mut d = Demuxer::new(1024, MAX_FRAME_LEN);
            let mut pending = Vec::new();
            let mut got = Vec::new();
            let mut last = 0;
            for p in points {
                pending.extend_from_slice(&buf[last..p]);
                last = p;
                let mut pos = 0;
                loop {
                    let (used, item) = d.decode(&pending[pos..]).unwrap();
                    pos += used;
                    if let Some(i) = item { got.push(i); }
                    if used == 0 { break; }
                }
                pending.drain(..pos);
            }
            prop_assert_eq!(normalize(got), want);
        }
    }
}
