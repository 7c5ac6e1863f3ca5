//! The file list and the transfer: requests, file data, phases, statistics
//! and goodbye (flist.c, generator.c, receiver.c, main.c).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::checksum::FileHasher;
use crate::delta::{CompressedItem, CompressedTokenDecoder, Signature, SumHead, Token};
use crate::error::{check_limit, ProtocolError};
use crate::flist::{decode_id_lists, FileIndex, FileList, FlistItem};
use crate::version::ProtocolVersion;
use crate::wire::{self, NdxCodec, Reader, NDX_DEL_STATS, NDX_DONE};

use super::events::{Event, FileOutcome, SessionError};
use super::{
    Connection, FileState, Receiving, State, Transfer, ITEM_BASIS_TYPE_FOLLOWS, ITEM_TRANSFER,
    ITEM_XNAME_FOLLOWS, OUTPUT_BUDGET,
};

impl Connection {
    /// Parses as much of the data stream as possible.
    pub(super) fn run_stream(&mut self) -> Result<(), SessionError> {
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

    pub(super) fn step_stream(&mut self) -> Result<bool, SessionError> {
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

    pub(super) fn step_transfer(&mut self) -> Result<bool, SessionError> {
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
                    self.stats.files_redone += 1;
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
    pub(super) fn end_phase(&mut self) -> Result<(), SessionError> {
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
pub(super) const MAX_DATA_EVENT: usize = 1 << 20;

/// Appends file bytes as an event, joining them to the previous event when
/// it is data for the same file: fewer, larger writes for the sink.
/// `queued` counts the file bytes waiting in `events`. `room` is how many bytes
/// this event may still be joined (the rest of the input at hand, at most what
/// the file has still to come): a new event is allocated that large, so that
/// joining does not reallocate and copy (the growth copies were a fifth of the
/// client's user-space copying in a 1 GiB pull).
pub(super) fn push_file_data(
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
pub(super) fn block_range(
    fs: &FileState,
    b: u32,
    max_file: u64,
) -> Result<(u64, u32), ProtocolError> {
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

pub(super) fn redo_all(a: &[(i32, bool)], b: &[(i32, bool)]) -> BTreeSet<i32> {
    a.iter().chain(b).map(|&(n, _)| n).collect()
}

/// Reads `ndx [iflags [basis-type] [xname]] [sum head]` as one item
/// (rsync.c read_ndx_and_attrs, then io.c read_sum_head when ITEM_TRANSFER).
pub(super) fn read_file_header(
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
