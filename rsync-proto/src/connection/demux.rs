//! Demultiplexing: frames from the daemon into the data stream and typed
//! out-of-band events (io.c `read_a_msg`).

use std::time::Duration;

use crate::error::ProtocolError;
use crate::flist::FileIndex;
use crate::mux::{Demuxed, MessageCode};

use super::events::{Event, MessageKind, SessionError};
use super::transfer::push_file_data;
use super::{Connection, Receiving, State};

impl Connection {
    pub(super) fn process_muxed(&mut self, data: &[u8]) -> Result<(), SessionError> {
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

    pub(super) fn demux_loop(&mut self, buf: &[u8], pos: &mut usize) -> Result<(), SessionError> {
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
    pub(super) fn direct_literal(&mut self, input: &[u8]) -> Option<usize> {
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

    pub(super) fn handle_message(
        &mut self,
        code: MessageCode,
        payload: Vec<u8>,
    ) -> Result<(), SessionError> {
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
}
