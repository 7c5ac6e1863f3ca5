//! Tests of the receiver state machine, driven by scripted daemon bytes
//! built with the crate's own encoders, plus panic-freedom properties over
//! arbitrary and mutated input (the same entry points the fuzzers use).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::checksum::{ChecksumKind, FileHasher};
use crate::connection::OUTPUT_BUDGET;
use crate::connection::{
    Connection, ConnectionConfig, Credentials, Event, FileOutcome, MessageKind, RefusalKind,
    SessionError, Stats, Target,
};
use crate::daemon::{Greeting, ModuleInfo};
use crate::delta::{encode_literal_file, CompressedTokenEncoder, CompressionKind, SumHead};
use crate::error::{Limits, ProtocolError};
use crate::flist::{encode_end, encode_entry, FileEntry, FileIndex, FileList, FlistOptions};
use crate::mux::{encode_frame, Demuxed, Demuxer, MessageCode};
use crate::setup::compat;
use crate::setup::CompressArgs;
use crate::version::ProtocolVersion;
use crate::wire::{put_i32, put_longint, put_varint, put_varlong, put_vstring, NdxCodec, NDX_DONE};

const SEED: i32 = 0x5f3a_1c2b;
const STATS: [i64; 5] = [2617, 2611, 300_015, 1, 0];
/// ITEM_TRANSFER | ITEM_IS_NEW | ITEM_REPORT_TIME, as stock generators send for new files.
const IFLAGS_NEW: u16 = 0xa008;
/// ITEM_TRANSFER | ITEM_REPORT_TIME, the redo request.
const IFLAGS_REDO: u16 = 0x8008;
const SERVER_CHECKSUMS: &str = "xxh128 xxh3 xxh64 md5 md4 none";

// ----- the scripted daemon -----

/// What a daemon of a given protocol sends during setup.
#[derive(Debug, Clone, Copy)]
struct Flavor {
    proto: ProtocolVersion,
    greeting: &'static str,
    compat: Option<u32>,
    checksum: ChecksumKind,
}

fn flavor(p: u32) -> Flavor {
    match p {
        // Debian 3.2.7 / 3.5.0: digest list, varint flist flags, xxh128.
        32 => Flavor {
            proto: ProtocolVersion::V32,
            greeting: "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n",
            compat: Some(0x1fe),
            checksum: ChecksumKind::Xxh128,
        },
        // A 3.1.x-like daemon without string negotiation: md5, byte flags.
        31 => Flavor {
            proto: ProtocolVersion::V31,
            greeting: "@RSYNCD: 31.0\n",
            compat: Some(compat::SYMLINK_TIMES | compat::SAFE_FLIST | compat::CHKSUM_SEED_FIX),
            checksum: ChecksumKind::Md5,
        },
        // 3.0.x: compat flags as a byte, md5.
        30 => Flavor {
            proto: ProtocolVersion::V30,
            greeting: "@RSYNCD: 30.0\n",
            compat: Some(compat::SYMLINK_TIMES),
            checksum: ChecksumKind::Md5,
        },
        // 2.6.9: no sub-version, no compat flags, old md4.
        29 => Flavor {
            proto: ProtocolVersion::V29,
            greeting: "@RSYNCD: 29\n",
            compat: None,
            checksum: ChecksumKind::Md4Old,
        },
        _ => panic!("no flavor for {p}"),
    }
}

/// Builds what a daemon sender writes, in order.
struct Server {
    f: Flavor,
    opts: FlistOptions,
    ndx: NdxCodec,
    bytes: Vec<u8>,
    /// Largest MSG_DATA payload per frame (small, so items straddle frames).
    frame: usize,
}

impl Server {
    fn new(p: u32) -> Server {
        let f = flavor(p);
        let cf = f.compat.unwrap_or(0);
        Server {
            f,
            opts: FlistOptions {
                protocol: f.proto,
                varint_flags: cf & compat::VARINT_FLIST_FLAGS != 0,
                safe_flist: cf & compat::SAFE_FLIST != 0 || f.proto >= ProtocolVersion::V31,
                preserve_links: true,
                preserve_uid: true,
                preserve_gid: true,
                id0_names: cf & compat::ID0_NAMES != 0,
            },
            ndx: NdxCodec::new(f.proto.compact_ndx()),
            bytes: Vec::new(),
            frame: 777,
        }
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// Greeting and module acceptance, without the binary setup.
    fn hello(&mut self) -> &mut Self {
        let g = self.f.greeting;
        self.text(g).text("@RSYNCD: OK\n")
    }

    /// Compat flags, checksum list and seed (compat.c setup_protocol).
    fn binary_setup(&mut self) -> &mut Self {
        if let Some(cf) = self.f.compat {
            let mut b = Vec::new();
            put_varint(&mut b, cf as i32);
            if cf & compat::VARINT_FLIST_FLAGS != 0 {
                put_vstring(&mut b, SERVER_CHECKSUMS.as_bytes());
            }
            self.raw(&b);
        }
        self.raw(&SEED.to_le_bytes())
    }

    fn setup(&mut self) -> &mut Self {
        self.hello().binary_setup()
    }

    /// Protocol bytes inside MSG_DATA frames of at most `self.frame` bytes.
    fn data(&mut self, b: &[u8]) -> &mut Self {
        for chunk in b.chunks(self.frame.max(1)) {
            encode_frame(MessageCode::DATA, chunk, &mut self.bytes);
        }
        self
    }

    fn msg(&mut self, code: MessageCode, payload: &[u8]) -> &mut Self {
        encode_frame(code, payload, &mut self.bytes);
        self
    }

    fn ndx(&mut self, n: i32) -> &mut Self {
        let mut b = Vec::new();
        self.ndx.encode(n, &mut b);
        self.data(&b)
    }

    /// The file list in the sender's (unsorted) order, its end, the id
    /// lists and (below 30) the trailing io_error.
    fn flist(&mut self, entries: &[FileEntry]) -> &mut Self {
        let mut b = Vec::new();
        let mut prev: Option<&FileEntry> = None;
        for e in entries {
            encode_entry(e, prev, &self.opts, &mut b);
            prev = Some(e);
        }
        encode_end(0, &self.opts, &mut b);
        let v30 = self.f.proto.uses_varint30();
        let lists = [
            (self.opts.preserve_uid, 1000, "alice", "root"),
            (self.opts.preserve_gid, 1000, "staff", "wheel"),
        ];
        for (_, id, name, id0) in lists.into_iter().filter(|l| l.0) {
            let put_id =
                |b: &mut Vec<u8>, v: i32| if v30 { put_varint(b, v) } else { put_i32(b, v) };
            put_id(&mut b, id);
            put_vstring(&mut b, name.as_bytes());
            put_id(&mut b, 0);
            if self.opts.id0_names {
                put_vstring(&mut b, id0.as_bytes());
            }
        }
        if self.f.proto.io_error_after_id_lists() {
            put_i32(&mut b, 0);
        }
        self.data(&b)
    }

    /// One file's data: ndx, iflags, the echoed empty sum head, literal
    /// tokens and the whole-file checksum (corrupted if `good` is false).
    fn file(&mut self, ndx: i32, iflags: u16, content: &[u8], good: bool) -> &mut Self {
        self.ndx(ndx);
        let mut b = Vec::new();
        b.extend_from_slice(&iflags.to_le_bytes());
        SumHead::EMPTY.encode(&mut b);
        encode_literal_file(content, 32 * 1024, &mut b);
        let mut h = FileHasher::new(self.f.checksum, SEED);
        h.update(content);
        let mut sum = h.finish();
        if !good {
            sum[0] ^= 0x55;
        }
        b.extend_from_slice(&sum);
        self.data(&b)
    }

    /// After the phase-0 NDX_DONE (and any redo data): the sender's
    /// NDX_DONE ×2, stats, and at >= 31 the NDX_DONE answering our
    /// delete-stats NDX_DONE (sender.c, main.c).
    fn end_of_run(&mut self) -> &mut Self {
        self.ndx(NDX_DONE).ndx(NDX_DONE);
        let mut b = Vec::new();
        for v in STATS {
            if self.f.proto.uses_varint30() {
                put_varlong(&mut b, v, 3);
            } else {
                put_longint(&mut b, v);
            }
        }
        self.data(&b);
        if self.f.proto.has_delete_done_ndx() {
            self.ndx(NDX_DONE);
        }
        self
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

fn entry(name: &str, mode: u32, size: u64, uid: u32) -> FileEntry {
    FileEntry {
        name: name.as_bytes().to_vec(),
        mode,
        size,
        mtime: 1_700_000_000 + i64::from(uid),
        mtime_nsec: 0,
        uid: Some(uid),
        gid: Some(uid),
        symlink_target: None,
        xflags: 0,
    }
}

fn content(name: &str, len: usize) -> Vec<u8> {
    let mut x: u32 = name
        .bytes()
        .fold(0x9e37_79b9, |a, b| a.rotate_left(5) ^ u32::from(b));
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The tree the standard script offers: (name, mode, content length).
const TREE: [(&str, u32, usize); 7] = [
    (".", 0o040755, 0),
    ("z.txt", 0o100644, 1000),
    ("a.txt", 0o100600, 5),
    ("dir", 0o040700, 0),
    ("dir/big.bin", 0o100644, 70_000),
    ("empty", 0o100644, 0),
    ("link", 0o120777, 0),
];

/// rsync's sorted order of [`TREE`]: "." first, then files, then "dir" and its contents.
const SORTED: [&str; 7] = [".", "a.txt", "empty", "link", "z.txt", "dir", "dir/big.bin"];
/// Sorted indexes of the regular files, in request order.
const REGULAR: [i32; 4] = [1, 2, 4, 6];

fn tree_entries() -> Vec<FileEntry> {
    TREE.iter()
        .map(|&(n, mode, len)| {
            let mut e = entry(n, mode, len as u64, if n == "empty" { 0 } else { 1000 });
            if mode & 0o170000 == 0o120000 {
                e.symlink_target = Some(b"a.txt".to_vec());
            }
            e
        })
        .collect()
}

fn tree_content(ndx: i32) -> Vec<u8> {
    let name = SORTED[ndx as usize];
    let len = TREE.iter().find(|t| t.0 == name).map_or(0, |t| t.2);
    content(name, len)
}

fn config() -> ConnectionConfig {
    let mut cfg = ConnectionConfig::new(Target::Pull {
        module: "mod".into(),
        paths: vec!["mod/sub/".into()],
    });
    cfg.args.recursive = true;
    cfg.args.links = true;
    cfg.args.owner = true;
    cfg.args.group = true;
    cfg
}

/// [`config`] with the redo phase ended early for whole files (the node's setting).
fn config_early() -> ConnectionConfig {
    ConnectionConfig {
        early_end: true,
        ..config()
    }
}

/// A whole successful session: (bytes before the client's requests,
/// bytes after them).
fn standard_session(p: u32) -> (Vec<u8>, Vec<u8>) {
    let mut s = Server::new(p);
    s.setup();
    if s.f.proto >= ProtocolVersion::V31 {
        s.msg(MessageCode::IO_TIMEOUT, &60i32.to_le_bytes());
    }
    let entries = tree_entries();
    // A message in the middle of the file list, and a keep-alive.
    let mut flist = Server::new(p);
    flist.frame = s.frame;
    flist.flist(&entries);
    let framed = flist.take();
    let cut = framed.len() / 2;
    let cut = split_point_at_frame(&framed, cut);
    s.raw(&framed[..cut]);
    s.msg(MessageCode::INFO, b"hello from the daemon\n");
    s.msg(MessageCode::DATA, &[]);
    s.raw(&framed[cut..]);
    let before = s.take();
    for ndx in REGULAR {
        s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
    }
    s.ndx(NDX_DONE);
    s.end_of_run();
    (before, s.take())
}

/// The first frame boundary at or after `at` in a frame stream.
fn split_point_at_frame(frames: &[u8], at: usize) -> usize {
    let mut pos = 0;
    while pos < at && pos + 4 <= frames.len() {
        let len = u32::from_le_bytes([frames[pos], frames[pos + 1], frames[pos + 2], 0]) as usize;
        pos += 4 + len;
    }
    pos.min(frames.len())
}

// ----- the driver -----

/// What a run of the connection produced.
#[derive(Debug)]
struct Run {
    events: Vec<Event>,
    sent: Vec<u8>,
    result: Result<(), SessionError>,
}

impl Run {
    fn err(&self) -> &SessionError {
        match &self.result {
            Err(e) => e,
            Ok(()) => panic!("expected an error; events: {:#?}", self.events),
        }
    }
    fn finished(&self) -> Stats {
        match self.events.last() {
            Some(Event::Finished(s)) => *s,
            other => panic!("last event {other:?}, result {:?}", self.result),
        }
    }
}

type Select = fn(&FileList) -> Vec<FileIndex>;

fn all_regular(list: &FileList) -> Vec<FileIndex> {
    list.iter()
        .filter(|(_, e)| e.kind() == crate::flist::FileKind::Regular)
        .map(|(i, _)| i)
        .collect()
}

fn pump(
    conn: &mut Connection,
    now: Instant,
    run_sent: &mut Vec<u8>,
    events: &mut Vec<Event>,
    select: Select,
) -> Result<(), SessionError> {
    loop {
        while let Some(b) = conn.poll_transmit(now) {
            run_sent.extend_from_slice(&b);
        }
        let Some(ev) = conn.poll_event() else {
            if conn.handle_drained()? {
                continue;
            }
            return Ok(());
        };
        let list = match &ev {
            Event::FileList(l) => Some(l.clone()),
            _ => None,
        };
        events.push(ev);
        if let Some(list) = list {
            if conn.awaiting_requests() {
                for ndx in select(&list) {
                    conn.request(ndx)?;
                }
                conn.finish_requests()?;
            }
        }
    }
}

/// Feeds `parts` one after another (pumping after each), then EOF.
fn drive_parts<'a>(
    cfg: ConnectionConfig,
    parts: impl IntoIterator<Item = &'a [u8]>,
    select: Select,
) -> Run {
    let now = Instant::now();
    let mut conn = Connection::new(cfg);
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let mut result = pump(&mut conn, now, &mut sent, &mut events, select);
    if result.is_ok() {
        for part in parts {
            result = conn
                .handle_input(part)
                .and_then(|()| pump(&mut conn, now, &mut sent, &mut events, select));
            if result.is_err() {
                break;
            }
        }
    }
    if result.is_ok() {
        result = conn
            .handle_eof()
            .and_then(|()| pump(&mut conn, now, &mut sent, &mut events, select));
    }
    let _ = pump(&mut conn, now, &mut sent, &mut events, select);
    Run {
        events,
        sent,
        result,
    }
}

fn drive(cfg: ConnectionConfig, input: &[u8]) -> Run {
    drive_parts(cfg, [input], all_regular)
}

fn drive_bytewise(cfg: ConnectionConfig, input: &[u8]) -> Run {
    drive_parts(cfg, input.chunks(1), all_regular)
}

/// Joins consecutive FileData of one file and clears the byte counters
/// that depend on how our output was framed.
fn normalize(events: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::FileData(a, buf)), Event::FileData(b, more)) if a == b => {
                buf.extend_from_slice(more)
            }
            (_, Event::Finished(s)) => out.push(Event::Finished(Stats {
                bytes_sent: 0,
                ..*s
            })),
            (_, e) => out.push(e.clone()),
        }
    }
    out
}

// ----- reading what the client sent -----

/// What the client transmitted: the raw text/setup prefix and the protocol
/// data stream after it (demultiplexed at >= 30, raw below).
fn split_client_output(sent: &[u8], prefix: &[u8], muxed: bool) -> Vec<u8> {
    assert!(
        sent.starts_with(prefix),
        "client output does not start with the expected prefix:\n got  {:?}\n want {:?}",
        String::from_utf8_lossy(&sent[..sent.len().min(prefix.len() + 16)]),
        String::from_utf8_lossy(prefix)
    );
    let rest = &sent[prefix.len()..];
    if !muxed {
        return rest.to_vec();
    }
    let mut d = Demuxer::new(1 << 20, 1 << 24);
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let (used, item) = d.decode(&rest[pos..]).expect("client frames");
        pos += used;
        match item {
            Some(Demuxed::Data(b)) => data.extend_from_slice(&b),
            Some(Demuxed::Message(code, _)) => panic!("client sent {code:?}"),
            None => {}
        }
        if used == 0 {
            break;
        }
    }
    assert_eq!(pos, rest.len(), "trailing partial frame");
    assert!(d.at_frame_boundary());
    data
}

/// The client's setup prefix for `cfg` against flavor `f`.
fn client_prefix(f: &Flavor, auth: Option<&str>) -> Vec<u8> {
    let mut p = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n".to_vec();
    p.extend_from_slice(b"mod\n");
    if let Some(a) = auth {
        p.extend_from_slice(a.as_bytes());
    }
    if f.proto.args_nul_separated() {
        p.extend_from_slice(b"--server\0--sender\0-logtpre.LsfxCIvu\0.\0mod/sub/\0\0");
    } else {
        p.extend_from_slice(b"--server\n--sender\n-logtpr\n.\nmod/sub/\n\n");
    }
    if f.compat
        .is_some_and(|c| c & compat::VARINT_FLIST_FLAGS != 0)
    {
        p.push(30);
        p.extend_from_slice(b"xxh128 xxh3 xxh64 md5 md4 sha1");
    }
    p
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Filters(i32),
    Request(i32, u16),
    Done,
}

/// Parses the client's data stream: the filter list, then requests
/// (ndx, iflags, empty sum head) and NDX_DONEs.
fn parse_client_stream(data: &[u8], compact: bool) -> Vec<Sent> {
    let mut out = Vec::new();
    let (filters, mut pos) = (
        i32::from_le_bytes(data[..4].try_into().expect("filter list")),
        4,
    );
    out.push(Sent::Filters(filters));
    let mut codec = NdxCodec::new(compact);
    while pos < data.len() {
        let (ndx, used) = codec.decode(&data[pos..]).expect("ndx").expect("whole ndx");
        pos += used;
        if ndx == NDX_DONE {
            out.push(Sent::Done);
            continue;
        }
        let iflags = u16::from_le_bytes([data[pos], data[pos + 1]]);
        pos += 2;
        let (head, used) = SumHead::decode(&data[pos..], ProtocolVersion::V32, 16)
            .expect("sum head")
            .expect("whole sum head");
        assert_eq!(head, SumHead::EMPTY);
        pos += used;
        out.push(Sent::Request(ndx, iflags));
    }
    out
}

fn client_items(run: &Run, f: &Flavor, auth: Option<&str>) -> Vec<Sent> {
    let data = split_client_output(
        &run.sent,
        &client_prefix(f, auth),
        f.proto.client_output_multiplexed(),
    );
    parse_client_stream(&data, f.proto.compact_ndx())
}

fn dones(n: usize) -> Vec<Sent> {
    vec![Sent::Done; n]
}

// ----- full sessions -----

fn check_standard_session(p: u32) {
    let f = flavor(p);
    let (before, after) = standard_session(p);
    let whole: Vec<u8> = [before.as_slice(), after.as_slice()].concat();

    let one = drive(config(), &whole);
    one.result.as_ref().expect("one-piece session succeeds");
    let bytewise = drive_bytewise(config(), &whole);
    bytewise
        .result
        .as_ref()
        .expect("byte-by-byte session succeeds");
    let parts = drive_parts(config(), [before.as_slice(), after.as_slice()], all_regular);
    parts.result.as_ref().expect("two-part session succeeds");

    // Same events whichever way the input was split.
    let events = normalize(&one.events);
    assert_eq!(
        events,
        normalize(&bytewise.events),
        "protocol {p}: one piece vs byte by byte"
    );
    assert_eq!(
        events,
        normalize(&parts.events),
        "protocol {p}: one piece vs two parts"
    );

    // The events themselves.
    let Event::Ready(info) = &events[0] else {
        panic!("first event {:?}", events[0]);
    };
    assert_eq!(info.protocol, f.proto);
    assert_eq!(info.checksum, f.checksum);
    assert_eq!(info.seed, SEED);
    assert_eq!(info.compat_flags, f.compat.unwrap_or(0));
    if p >= 31 {
        assert!(events.contains(&Event::ServerTimeout(60)));
    }
    assert!(events.contains(&Event::Message {
        kind: MessageKind::Info,
        text: "hello from the daemon".into()
    }));
    let list = events
        .iter()
        .find_map(|e| match e {
            Event::FileList(l) => Some(l.clone()),
            _ => None,
        })
        .expect("a file list");
    let names: Vec<String> = list.iter().map(|(_, e)| e.name_lossy()).collect();
    assert_eq!(names, SORTED, "protocol {p}: sorted order");
    assert_eq!(list.user_name(1000), Some("alice"));
    assert_eq!(list.group_name(1000), Some("staff"));
    if f.compat.is_some_and(|c| c & compat::ID0_NAMES != 0) {
        assert_eq!(list.user_name(0), Some("root"));
        assert_eq!(list.group_name(0), Some("wheel"));
    }
    let link = list.get(FileIndex(3)).expect("link");
    assert_eq!(link.symlink_target.as_deref(), Some(&b"a.txt"[..]));
    assert_eq!(list.get(FileIndex(2)).and_then(|e| e.uid), Some(0));

    // Per file: start, data (concatenated), verified.
    let mut file_events = events.iter().filter(|e| {
        matches!(
            e,
            Event::FileStart(_) | Event::FileData(..) | Event::FileDone(..)
        )
    });
    for ndx in REGULAR {
        let want = tree_content(ndx);
        assert_eq!(file_events.next(), Some(&Event::FileStart(FileIndex(ndx))));
        if !want.is_empty() {
            assert_eq!(
                file_events.next(),
                Some(&Event::FileData(FileIndex(ndx), want))
            );
        }
        assert_eq!(
            file_events.next(),
            Some(&Event::FileDone(FileIndex(ndx), FileOutcome::Verified))
        );
    }
    assert_eq!(file_events.next(), None);

    let stats = one.finished();
    assert_eq!(stats.files_transferred, 4);
    assert_eq!(stats.files_failed, 0);
    assert_eq!(stats.sender, STATS);
    assert_eq!(
        stats.literal_bytes,
        REGULAR
            .iter()
            .map(|&n| tree_content(n).len() as u64)
            .sum::<u64>()
    );
    assert_eq!(stats.bytes_received, whole.len() as u64);
    for run in [&one, &bytewise, &parts] {
        assert_eq!(run.finished().bytes_sent, run.sent.len() as u64);
    }

    // What the client sent: prefix, filter list, requests with the right
    // ndx encoding, then NDX_DONE ×1 (phase 0), ×2 or ×3 (redo, phase 2,
    // delete stats at >= 31) and the goodbye.
    let mut want = vec![Sent::Filters(0)];
    want.extend(REGULAR.iter().map(|&n| Sent::Request(n, IFLAGS_NEW)));
    want.extend(dones(1 + if p >= 31 { 3 } else { 2 } + 1));
    for run in [&one, &bytewise, &parts] {
        assert_eq!(client_items(run, &f, None), want, "protocol {p}");
    }
}

#[test]
fn full_session_at_protocol_32() {
    check_standard_session(32);
}

#[test]
fn full_session_at_protocol_31_without_negotiation() {
    check_standard_session(31);
}

#[test]
fn full_session_at_protocol_30() {
    check_standard_session(30);
}

#[test]
fn full_session_at_protocol_29() {
    check_standard_session(29);
}

#[test]
fn request_encoding_matches_write_ndx() {
    // Protocol 32: requests 1, 2, 4, 6 are the deltas 2, 1, 2, 2 from
    // prev = -1 (io.c write_ndx), each followed by iflags a008 and a zero
    // sum head; NDX_DONE is 00.
    let (before, after) = standard_session(32);
    let run = drive_parts(config(), [before.as_slice(), after.as_slice()], all_regular);
    let data = split_client_output(&run.sent, &client_prefix(&flavor(32), None), true);
    let mut want = vec![0, 0, 0, 0];
    for delta in [2u8, 1, 2, 2] {
        want.push(delta);
        want.extend_from_slice(&[0x08, 0xa0]);
        want.extend_from_slice(&[0; 16]);
    }
    want.extend_from_slice(&[0, 0, 0, 0, 0]);
    assert_eq!(data, want);
    // Protocol 29: int32 ndx, raw (not framed).
    let (before, after) = standard_session(29);
    let run = drive_parts(config(), [before.as_slice(), after.as_slice()], all_regular);
    let data = split_client_output(&run.sent, &client_prefix(&flavor(29), None), false);
    assert_eq!(&data[..4], [0, 0, 0, 0]);
    assert_eq!(&data[4..10], [1, 0, 0, 0, 0x08, 0xa0]);
    assert_eq!(&data[data.len() - 4..], [0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn client_sends_nothing_more_until_the_sender_ends_phase_0() {
    for p in [29, 30, 31, 32] {
        let (before, after) = standard_session(p);
        // Everything up to (not including) the sender's first NDX_DONE.
        let mut s = Server::new(p);
        for ndx in REGULAR {
            s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
        }
        let files_len = s.take().len();
        let run = drive_parts(
            config(),
            [before.as_slice(), &after[..files_len]],
            all_regular,
        );
        assert!(matches!(
            run.err(),
            SessionError::Protocol(ProtocolError::UnexpectedEof { .. })
        ));
        let f = flavor(p);
        let mut want = vec![Sent::Filters(0)];
        want.extend(REGULAR.iter().map(|&n| Sent::Request(n, IFLAGS_NEW)));
        want.push(Sent::Done);
        assert_eq!(client_items(&run, &f, None), want, "protocol {p}");
    }
}

#[test]
fn whole_file_sessions_end_the_redo_phase_with_the_requests() {
    for p in [29, 30, 31, 32] {
        let (before, after) = standard_session(p);
        // The daemon has sent every file but not yet its first NDX_DONE: the client has
        // already sent everything but the final goodbye.
        let mut s = Server::new(p);
        for ndx in REGULAR {
            s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
        }
        let files_len = s.take().len();
        let run = drive_parts(
            config_early(),
            [before.as_slice(), &after[..files_len]],
            all_regular,
        );
        let f = flavor(p);
        let mut want = vec![Sent::Filters(0)];
        want.extend(REGULAR.iter().map(|&n| Sent::Request(n, IFLAGS_NEW)));
        want.extend(dones(if p >= 31 { 4 } else { 3 }));
        assert_eq!(client_items(&run, &f, None), want, "protocol {p}");
        // And the whole session sends what it sends with a redo phase, no more.
        let whole = drive(config_early(), &[before.clone(), after.clone()].concat());
        let with_redo = drive(config(), &[before, after].concat());
        whole.result.as_ref().expect("session");
        assert_eq!(
            client_items(&whole, &f, None),
            client_items(&with_redo, &f, None),
            "protocol {p}"
        );
    }
}

#[test]
fn with_an_early_end_a_whole_file_that_fails_verification_fails_without_a_redo() {
    for p in [29, 30, 31, 32] {
        let entries = vec![entry(".", 0o040755, 0, 0), entry("f", 0o100644, 3000, 0)];
        let mut s = Server::new(p);
        s.setup().flist(&entries);
        let before = s.take();
        s.file(1, IFLAGS_NEW, &content("f", 3000), false);
        s.ndx(NDX_DONE).end_of_run();
        let after = s.take();
        // As a daemon sends it: the data after the requests.
        let run = drive_parts(
            config_early(),
            [before.as_slice(), after.as_slice()],
            all_regular,
        );
        run.result.as_ref().expect("session completes");
        let outcomes: Vec<&Event> = run
            .events
            .iter()
            .filter(|e| matches!(e, Event::FileDone(..)))
            .collect();
        assert_eq!(
            outcomes,
            [&Event::FileDone(
                FileIndex(1),
                FileOutcome::VerificationFailed
            )],
            "protocol {p}"
        );
        let stats = run.finished();
        assert_eq!(
            (
                stats.files_failed,
                stats.files_not_redone,
                stats.files_transferred
            ),
            (1, 1, 0)
        );
        let f = flavor(p);
        let mut want = vec![Sent::Filters(0), Sent::Request(1, IFLAGS_NEW)];
        want.extend(dones(if p >= 31 { 5 } else { 4 }));
        assert_eq!(client_items(&run, &f, None), want, "protocol {p}");
        // Data buffered ahead of the requests: the file failed before they were finished
        // and was promised a redo, so the session keeps its redo phase.
        let buffered = drive(config_early(), &[before, after].concat());
        assert!(buffered
            .events
            .contains(&Event::FileDone(FileIndex(1), FileOutcome::RetryScheduled)));
        assert!(
            client_items(&buffered, &f, None).contains(&Sent::Request(1, IFLAGS_REDO)),
            "protocol {p}"
        );
    }
}

#[test]
fn random_splits_give_the_same_events() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop_oneof![Just(29u32), Just(30), Just(31), Just(32)],
        proptest::collection::vec(1usize..2000, 1..50),
    );
    runner
        .run(&strategy, |(p, sizes)| {
            let (before, after) = standard_session(p);
            let whole = [before, after].concat();
            let want = normalize(&drive(config(), &whole).events);
            let mut parts = Vec::new();
            let mut pos = 0;
            for s in sizes.iter().cycle() {
                if pos >= whole.len() {
                    break;
                }
                let end = (pos + s).min(whole.len());
                parts.push(&whole[pos..end]);
                pos = end;
            }
            let run = drive_parts(config(), parts, all_regular);
            prop_assert!(run.result.is_ok(), "{:?}", run.result);
            prop_assert_eq!(normalize(&run.events), want);
            Ok(())
        })
        .expect("random splits");
}

#[test]
fn requesting_a_subset_reports_only_those_files() {
    fn only_big(list: &FileList) -> Vec<FileIndex> {
        list.iter()
            .filter(|(_, e)| e.name == b"dir/big.bin")
            .map(|(i, _)| i)
            .collect()
    }
    let mut s = Server::new(32);
    s.setup().flist(&tree_entries());
    let before = s.take();
    s.file(6, IFLAGS_NEW, &tree_content(6), true)
        .ndx(NDX_DONE)
        .end_of_run();
    let after = s.take();
    let run = drive_parts(config(), [before.as_slice(), after.as_slice()], only_big);
    run.result.as_ref().expect("session");
    assert_eq!(run.finished().files_transferred, 1);
    let f = flavor(32);
    let mut want = vec![Sent::Filters(0), Sent::Request(6, IFLAGS_NEW)];
    want.extend(dones(5));
    assert_eq!(client_items(&run, &f, None), want);
}

#[test]
fn empty_file_list_ends_the_session() {
    for p in [29, 32] {
        let mut s = Server::new(p);
        s.setup().flist(&[]);
        let run = drive(config(), &s.take());
        run.result.as_ref().expect("session");
        assert!(run
            .events
            .iter()
            .any(|e| matches!(e, Event::FileList(l) if l.is_empty())));
        assert!(matches!(run.events.last(), Some(Event::Finished(_))));
    }
}

#[test]
fn lists_modules() {
    let mut cfg = config();
    cfg.target = Target::ListModules;
    let input = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nWelcome!\nbackup         \tnightly dumps\nwww            \t\n@RSYNCD: EXIT\n";
    let run = drive(cfg, input);
    run.result.as_ref().expect("listing");
    assert_eq!(
        run.sent,
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n#list\n"
    );
    assert_eq!(
        &run.events[..3],
        [
            Event::Motd("Welcome!".into()),
            Event::Module(ModuleInfo {
                name: "backup".into(),
                comment: "nightly dumps".into()
            }),
            Event::Module(ModuleInfo {
                name: "www".into(),
                comment: String::new()
            }),
        ]
    );
    assert!(matches!(run.events.last(), Some(Event::Finished(_))));
}

// ----- the redo phase -----

fn redo_session(p: u32, second_good: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let entries = vec![entry(".", 0o040755, 0, 0), entry("f", 0o100644, 3000, 0)];
    let data = content("f", 3000);
    let mut s = Server::new(p);
    s.setup().flist(&entries);
    let before = s.take();
    s.file(1, IFLAGS_NEW, &data, false);
    let phase0 = s.take();
    s.ndx(NDX_DONE);
    s.file(1, IFLAGS_REDO, &data, second_good);
    s.end_of_run();
    (before, phase0, s.take())
}

#[test]
fn checksum_mismatch_schedules_a_redo_then_fails() {
    for p in [29, 30, 31, 32] {
        let (before, phase0, rest) = redo_session(p, false);
        let f = flavor(p);
        // Before the sender's NDX_DONE: only the phase-0 request and NDX_DONE.
        let early = drive_parts(
            config(),
            [before.as_slice(), phase0.as_slice()],
            all_regular,
        );
        assert!(early
            .events
            .contains(&Event::FileDone(FileIndex(1), FileOutcome::RetryScheduled)));
        assert_eq!(
            client_items(&early, &f, None),
            [Sent::Filters(0), Sent::Request(1, IFLAGS_NEW), Sent::Done],
            "protocol {p}"
        );

        let run = drive_parts(
            config(),
            [before.as_slice(), phase0.as_slice(), rest.as_slice()],
            all_regular,
        );
        run.result.as_ref().expect("session completes");
        let outcomes: Vec<&Event> = run
            .events
            .iter()
            .filter(|e| matches!(e, Event::FileDone(..)))
            .collect();
        assert_eq!(
            outcomes,
            [
                &Event::FileDone(FileIndex(1), FileOutcome::RetryScheduled),
                &Event::FileDone(FileIndex(1), FileOutcome::VerificationFailed),
            ]
        );
        let stats = run.finished();
        assert_eq!((stats.files_failed, stats.files_transferred), (1, 0));
        // The redo request comes after the sender's NDX_DONE, with
        // ITEM_TRANSFER|ITEM_REPORT_TIME, then the end-of-phase NDX_DONEs.
        let mut want = vec![
            Sent::Filters(0),
            Sent::Request(1, IFLAGS_NEW),
            Sent::Done,
            Sent::Request(1, IFLAGS_REDO),
        ];
        want.extend(dones(if p >= 31 { 3 } else { 2 } + 1));
        assert_eq!(client_items(&run, &f, None), want, "protocol {p}");
        // Byte by byte gives the same.
        let whole = [before, phase0, rest].concat();
        let bytewise = drive_bytewise(config(), &whole);
        assert_eq!(normalize(&bytewise.events), normalize(&run.events));
        assert_eq!(client_items(&bytewise, &f, None), want);
    }
}

#[test]
fn redo_that_verifies_counts_as_transferred() {
    for p in [29, 32] {
        let (before, phase0, rest) = redo_session(p, true);
        let run = drive_parts(
            config(),
            [before.as_slice(), phase0.as_slice(), rest.as_slice()],
            all_regular,
        );
        run.result.as_ref().expect("session");
        assert!(run
            .events
            .contains(&Event::FileDone(FileIndex(1), FileOutcome::Verified)));
        let stats = run.finished();
        assert_eq!((stats.files_failed, stats.files_transferred), (0, 1));
    }
}

// ----- setup failures -----

fn setup_error(cfg: ConnectionConfig, input: &[u8]) -> (SessionError, Vec<u8>) {
    let run = drive(cfg, input);
    (run.err().clone(), run.sent)
}

#[test]
fn auth_without_digest_list_uses_md5() {
    // "@RSYNCD: 31.0" without a list → md5 at protocol >= 30. Expected value
    // computed independently: base64(md5(b"hunter2" + challenge)), no padding.
    let mut cfg = config();
    cfg.credentials = Some(Credentials {
        user: "backup".into(),
        password: b"hunter2".to_vec(),
    });
    let input = b"@RSYNCD: 31.0\n@RSYNCD: AUTHREQD Q2hhbGxlbmdlVGV4dDEyMw\n";
    let run = drive(cfg, input);
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::UnexpectedEof { .. })
    ));
    // The arguments follow the answer at once (no wait for OK); without a digest list in
    // the greeting, nothing after them.
    assert_eq!(
        String::from_utf8_lossy(&run.sent),
        "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\nbackup kv1TcoebpVEkjxnCrP4lZw\n\
         --server\0--sender\0-logtpre.LsfxCIvu\0.\0mod/sub/\0\0"
    );
}

#[test]
fn auth_with_digest_list_uses_sha512() {
    // Expected: base64(sha512(b"hunter2" + "a"*86)), no padding (python3 hashlib).
    let mut cfg = config();
    cfg.credentials = Some(Credentials {
        user: "backup".into(),
        password: b"hunter2".to_vec(),
    });
    let input = format!(
        "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@RSYNCD: AUTHREQD {}\n",
        "a".repeat(86)
    );
    let run = drive(cfg, input.as_bytes());
    let want = "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\nbackup \
        ajyjDkP2EGnjZ5ws8dYzJ7xbGl/NYmVqJGFme/7kuJxysvYTT7zG9teWp1+Kcsj2vPP/iRcPCUTlrT+LhcGkKw\n";
    let sent = String::from_utf8_lossy(&run.sent);
    assert!(sent.starts_with(want), "{sent:?}");
    // Then, without waiting for OK: the arguments, our checksum list and the filter list.
    assert!(
        sent.strip_prefix(want)
            .is_some_and(|r| r.starts_with("--server\0--sender\0")),
        "{sent:?}"
    );
}

#[test]
fn auth_at_protocol_29_uses_old_md4() {
    // Expected: base64(MD4(00000000 || b"hunter2" || challenge)), computed
    // with `openssl dgst -md4 -provider legacy`.
    let mut cfg = config();
    cfg.credentials = Some(Credentials {
        user: "backup".into(),
        password: b"hunter2".to_vec(),
    });
    let run = drive(
        cfg,
        b"@RSYNCD: 29\n@RSYNCD: AUTHREQD Q2hhbGxlbmdlVGV4dDEyMw\n",
    );
    // At 29: newline-separated arguments, then the raw (empty) filter list.
    assert_eq!(
        String::from_utf8_lossy(&run.sent),
        "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\nbackup IrLXMfiO+u7Z4bEAaB4YsQ\n\
         --server\n--sender\n-logtpr\n.\nmod/sub/\n\n\0\0\0\0"
    );
}

// ----- what goes out before the daemon answers (round trips) -----

/// Everything the client has queued after being fed `input`.
fn sent_after(cfg: ConnectionConfig, input: &[u8]) -> Vec<u8> {
    let now = Instant::now();
    let mut conn = Connection::new(cfg);
    let mut sent = Vec::new();
    conn.handle_input(input).expect("input");
    while let Some(b) = conn.poll_transmit(now) {
        sent.extend_from_slice(&b);
    }
    sent
}

#[test]
fn module_line_goes_out_with_the_greeting() {
    assert_eq!(
        sent_after(config(), b""),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\n"
    );
    assert_eq!(
        sent_after(ConnectionConfig::new(Target::ListModules), b""),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n#list\n"
    );
}

#[test]
fn arguments_lists_and_filters_go_out_when_a_negotiating_greeting_arrives() {
    // No OK, no compat flags yet: a 3.2+ greeting (digest list) is enough to know the
    // daemon negotiates, so nothing the client sends waits for a reply.
    let sent = sent_after(config(), flavor(32).greeting.as_bytes());
    let mut want = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\n".to_vec();
    want.extend_from_slice(b"--server\0--sender\0-logtpre.LsfxCIvu\0.\0mod/sub/\0\0");
    put_vstring(&mut want, ChecksumKind::advertised_list().as_bytes());
    encode_frame(MessageCode::DATA, &0i32.to_le_bytes(), &mut want);
    assert_eq!(
        String::from_utf8_lossy(&sent),
        String::from_utf8_lossy(&want)
    );
}

/// [`config`] with the greeting the daemon of flavor `p` sends as the hint.
fn config_hinted(p: u32) -> ConnectionConfig {
    ConnectionConfig {
        greeting_hint: Some(
            Greeting::parse(flavor(p).greeting.trim_end_matches('\n')).expect("greeting"),
        ),
        ..config()
    }
}

#[test]
fn with_a_greeting_hint_everything_up_to_the_file_list_goes_out_with_our_greeting() {
    // Before any byte from the daemon: what an unhinted session sends once the greeting
    // arrived, for a negotiating daemon and for one without a digest list.
    for p in [32, 31, 30] {
        let hinted = sent_after(config_hinted(p), b"");
        let unhinted = sent_after(config(), flavor(p).greeting.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&hinted),
            String::from_utf8_lossy(&unhinted),
            "protocol {p}"
        );
        assert!(hinted.len() > 50, "protocol {p}: only {hinted:?}");
    }
    // A listing, or a module that may ask for a password, waits for the daemon as before.
    let listing = ConnectionConfig {
        target: Target::ListModules,
        ..config_hinted(32)
    };
    assert_eq!(
        sent_after(listing, b""),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n#list\n"
    );
    let mut with_password = config_hinted(32);
    with_password.credentials = Some(Credentials {
        user: "backup".into(),
        password: b"hunter2".to_vec(),
    });
    assert_eq!(
        sent_after(with_password, b""),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\n"
    );
}

#[test]
fn a_hinted_session_completes_as_an_unhinted_one() {
    for p in [32, 31, 30] {
        let (before, after) = standard_session(p);
        let whole: Vec<u8> = [before.as_slice(), after.as_slice()].concat();
        let plain = drive(config(), &whole);
        plain.result.as_ref().expect("unhinted session");
        let hinted = drive(config_hinted(p), &whole);
        hinted.result.as_ref().expect("hinted session");
        assert_eq!(
            normalize(&hinted.events),
            normalize(&plain.events),
            "protocol {p}"
        );
        assert_eq!(
            hinted.sent, plain.sent,
            "protocol {p}: the same bytes in all"
        );
    }
}

#[test]
fn a_greeting_that_differs_from_the_hint_ends_the_session_before_anything_else() {
    // The hint says 3.2+ (negotiating), the daemon is now a 3.1: our lists went out, and it
    // would read them as something else. Nothing past the greeting is taken in.
    let (before, after) = standard_session(31);
    let whole: Vec<u8> = [before.as_slice(), after.as_slice()].concat();
    let run = drive(config_hinted(32), &whole);
    match run.err() {
        SessionError::GreetingChanged { greeting } => {
            assert_eq!(greeting.protocol, 31);
            assert!(greeting.digests.is_none());
        }
        e => panic!("{e:?}"),
    }
    assert!(run.events.is_empty(), "{:?}", run.events);
    // The other way round, and a protocol change alone.
    let (before, _) = standard_session(32);
    assert!(matches!(
        drive(config_hinted(31), &before).err(),
        SessionError::GreetingChanged { .. }
    ));
    let (before, _) = standard_session(30);
    assert!(matches!(
        drive(config_hinted(31), &before).err(),
        SessionError::GreetingChanged { .. }
    ));
    // Another digest list with the same shape is the same greeting for what we sent.
    let (before, after) = standard_session(32);
    let whole: Vec<u8> = [before.as_slice(), after.as_slice()].concat();
    let other = ConnectionConfig {
        greeting_hint: Some(Greeting::parse("@RSYNCD: 32.0 md5 md4").expect("greeting")),
        ..config()
    };
    drive(other, &whole).result.expect("same shape");
}

#[test]
fn daemon_without_digest_list_gets_its_lists_after_the_compat_flags() {
    // 3.0/3.1 (and 3.2.0-3.2.3) send no digest list: whether they negotiate is known only
    // from their compat flags, so only the arguments go early.
    let sent = sent_after(config(), flavor(31).greeting.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmod\n\
         --server\0--sender\0-logtpre.LsfxCIvu\0.\0mod/sub/\0\0"
    );
}

#[test]
fn a_daemon_refusing_our_arguments_is_heard_despite_the_pipelined_lists() {
    // A daemon that rejects the arguments does not parse `-e.`, so its compat flags lack
    // CF_VARINT_FLIST_FLAGS; it sends the seed and its error, then exits.
    let mut input = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@RSYNCD: OK\n".to_vec();
    put_varint(&mut input, compat::SAFE_FLIST as i32);
    input.extend_from_slice(&SEED.to_le_bytes());
    encode_frame(MessageCode::ERROR, b"refuse --recursive\n", &mut input);
    let run = drive(config(), &input);
    assert!(
        !matches!(
            run.err(),
            SessionError::Protocol(ProtocolError::Unsupported { .. })
        ),
        "{:?}",
        run.err()
    );
    assert!(
        run.events.iter().any(
            |e| matches!(e, Event::Message { kind, text } if kind.is_error() && text.contains("refuse"))
        ),
        "{:?}",
        run.events
    );
}

#[test]
fn a_daemon_that_announced_digests_but_does_not_negotiate_is_refused() {
    let mut input = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@RSYNCD: OK\n".to_vec();
    put_varint(&mut input, compat::SAFE_FLIST as i32);
    input.extend_from_slice(&SEED.to_le_bytes());
    // A file list follows: the daemon read our lists as something else.
    encode_frame(MessageCode::DATA, &[0x04, 0x01, b'a'], &mut input);
    let run = drive(config(), &input);
    assert!(
        matches!(
            run.err(),
            SessionError::Protocol(ProtocolError::Unsupported { .. })
        ),
        "{:?}",
        run.err()
    );
}

#[test]
fn authenticated_session_completes() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials {
        user: "backup".into(),
        password: b"hunter2".to_vec(),
    });
    let mut s = Server::new(32);
    s.text(flavor(32).greeting)
        .text(&format!("@RSYNCD: AUTHREQD {}\n", "a".repeat(86)))
        .text("@RSYNCD: OK\n")
        .binary_setup()
        .flist(&tree_entries());
    let before = s.take();
    for ndx in REGULAR {
        s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
    }
    s.ndx(NDX_DONE).end_of_run();
    let run = drive_parts(cfg, [before.as_slice(), s.take().as_slice()], all_regular);
    run.result.as_ref().expect("session");
    let auth = "backup ajyjDkP2EGnjZ5ws8dYzJ7xbGl/NYmVqJGFme/7kuJxysvYTT7zG9teWp1+Kcsj2vPP/iRcPCUTlrT+LhcGkKw\n";
    let mut want = vec![Sent::Filters(0)];
    want.extend(REGULAR.iter().map(|&n| Sent::Request(n, IFLAGS_NEW)));
    want.extend(dones(5));
    assert_eq!(client_items(&run, &flavor(32), Some(auth)), want);
}

#[test]
fn refused_unknown_module() {
    let (e, _) = setup_error(
        config(),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@ERROR: Unknown module 'x'\n",
    );
    assert_eq!(
        e,
        SessionError::Refused {
            kind: RefusalKind::UnknownModule,
            message: "Unknown module 'x'".into()
        }
    );
}

#[test]
fn refusal_kinds_are_classified() {
    for (text, kind) in [
        ("auth failed on module mod", RefusalKind::AuthFailed),
        (
            "access denied to mod from localhost (127.0.0.1)",
            RefusalKind::AccessDenied,
        ),
        (
            "max connections (1) reached -- try again later",
            RefusalKind::MaxConnections,
        ),
        ("something else", RefusalKind::Other),
    ] {
        let input = format!("@RSYNCD: 31.0\n@ERROR: {text}\n");
        let (e, _) = setup_error(config(), input.as_bytes());
        assert_eq!(
            e,
            SessionError::Refused {
                kind,
                message: text.into()
            }
        );
    }
}

#[test]
fn auth_required_without_credentials() {
    let (e, _) = setup_error(
        config(),
        b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@RSYNCD: AUTHREQD abc\n",
    );
    assert_eq!(e, SessionError::Protocol(ProtocolError::PasswordRequired));
}

#[test]
fn second_challenge_is_refused() {
    let mut cfg = config();
    cfg.credentials = Some(Credentials {
        user: "u".into(),
        password: b"p".to_vec(),
    });
    let (e, _) = setup_error(
        cfg,
        b"@RSYNCD: 32.0 md5\n@RSYNCD: AUTHREQD abc\n@RSYNCD: AUTHREQD abc\n",
    );
    assert!(matches!(
        e,
        SessionError::Protocol(ProtocolError::UnexpectedLine { .. })
    ));
}

#[test]
fn daemon_exit_after_module_request() {
    let (e, _) = setup_error(config(), b"@RSYNCD: 31.0\n@RSYNCD: EXIT\n");
    assert_eq!(e, SessionError::DaemonExit);
}

#[test]
fn motd_over_limit() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_motd: 50,
        ..Limits::default()
    };
    let mut input = b"@RSYNCD: 32.0 md5\n".to_vec();
    for _ in 0..10 {
        input.extend_from_slice(b"0123456789\n");
    }
    let run = drive(cfg, &input);
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::MotdTooLong { limit: 50 })
    );
    // The lines within the limit were reported.
    assert_eq!(
        run.events
            .iter()
            .filter(|e| matches!(e, Event::Motd(_)))
            .count(),
        4
    );
}

#[test]
fn line_over_limit_without_newline() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_line: 64,
        ..Limits::default()
    };
    // In the greeting: no newline ever comes.
    let (e, _) = setup_error(cfg.clone(), &[b'a'; 65]);
    assert_eq!(
        e,
        SessionError::Protocol(ProtocolError::LineTooLong { limit: 64 })
    );
    // Fed byte by byte, the error comes as soon as the limit is passed.
    let run = drive_bytewise(cfg.clone(), &[b'a'; 200]);
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::LineTooLong { limit: 64 })
    );
    // In the MOTD, with a newline far away.
    let mut input = b"@RSYNCD: 32.0 md5\n".to_vec();
    input.extend_from_slice(&[b'm'; 100]);
    input.push(b'\n');
    let (e, _) = setup_error(cfg, &input);
    assert_eq!(
        e,
        SessionError::Protocol(ProtocolError::LineTooLong { limit: 64 })
    );
}

#[test]
fn too_many_modules() {
    let mut cfg = config();
    cfg.target = Target::ListModules;
    cfg.limits = Limits {
        max_modules: 2,
        ..Limits::default()
    };
    let input = b"@RSYNCD: 32.0 md5\na\t\nb\t\nc\t\n@RSYNCD: EXIT\n";
    let run = drive(cfg, input);
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::TooManyModules { limit: 2 })
    );
}

#[test]
fn file_list_over_max_entries() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let (_, before) = after_flist(32);
    let run = drive(cfg, &before);
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::LimitExceeded {
            value: 4,
            limit: 3,
            ..
        })
    ));
}

#[test]
fn file_list_over_max_flist_bytes() {
    // Limits::max_flist_bytes bounds the total bytes of names the list
    // holds. TREE's names add up to 34 bytes (plus 5 of symlink target).
    let mut cfg = config();
    cfg.limits = Limits {
        max_flist_bytes: 20,
        ..Limits::default()
    };
    let (_, before) = after_flist(32);
    let run = drive(cfg, &before);
    assert!(
        matches!(
            run.result,
            Err(SessionError::Protocol(ProtocolError::LimitExceeded { .. }))
        ),
        "{:?}",
        run.result
    );
}

#[test]
fn bad_greeting_is_refused() {
    let (e, _) = setup_error(config(), b"HTTP/1.0 400 Bad Request\n");
    assert!(matches!(
        e,
        SessionError::Protocol(ProtocolError::BadGreeting { .. })
    ));
    let (e, _) = setup_error(config(), b"@RSYNCD: 28\n");
    assert!(matches!(
        e,
        SessionError::Protocol(ProtocolError::UnsupportedVersion { theirs: 28, .. })
    ));
}

#[test]
fn incremental_recursion_is_refused() {
    let mut s = Server::new(32);
    s.hello();
    put_varint(&mut s.bytes, 0x1ff);
    let (e, _) = setup_error(config(), &s.take());
    assert!(matches!(
        e,
        SessionError::Protocol(ProtocolError::UnrequestedFeature {
            feature: "incremental recursion",
            ..
        })
    ));
}

#[test]
fn no_common_checksum_is_refused() {
    let mut s = Server::new(32);
    s.hello();
    put_varint(&mut s.bytes, 0x1fe);
    put_vstring(&mut s.bytes, b"none blake3");
    let (e, _) = setup_error(config(), &s.take());
    assert!(matches!(
        e,
        SessionError::Protocol(ProtocolError::NoCommonChecksum { .. })
    ));
}

#[test]
fn eof_mid_session_is_an_error() {
    let (before, after) = standard_session(32);
    let run = drive_parts(
        config(),
        [before.as_slice(), &after[..after.len() / 2]],
        all_regular,
    );
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::UnexpectedEof { during: "transfer" })
    ));
}

// ----- transfer failures -----

/// Setup plus the standard file list at `p`; returns the server positioned
/// for the post-request bytes and the bytes so far.
fn after_flist(p: u32) -> (Server, Vec<u8>) {
    let mut s = Server::new(p);
    s.setup().flist(&tree_entries());
    let before = s.take();
    (s, before)
}

fn transfer_error(p: u32, cfg: ConnectionConfig, build: impl FnOnce(&mut Server)) -> Run {
    let (mut s, before) = after_flist(p);
    build(&mut s);
    drive_parts(cfg, [before.as_slice(), s.take().as_slice()], all_regular)
}

#[test]
fn input_running_ahead_of_requests_is_bounded() {
    // A hostile sender streams data for a file we have not requested (yet)
    // while we are still choosing: it must not pile up without limit.
    let mut cfg = config();
    cfg.limits = Limits {
        max_pending_input: 4096,
        ..Limits::default()
    };
    let (mut s, before) = after_flist(32);
    let mut conn = Connection::new(cfg);
    let now = Instant::now();
    conn.handle_input(&before).expect("file list");
    let mut list = None;
    while let Some(ev) = conn.poll_event() {
        if let Event::FileList(l) = ev {
            list = Some(l);
        }
    }
    let list = list.expect("a file list");
    let ndx = all_regular(&list)[0];
    while conn.poll_transmit(now).is_some() {}
    assert!(conn.awaiting_requests());
    s.file(ndx.0, IFLAGS_NEW, &[7u8; 8192], true);
    let err = conn.handle_input(&s.take()).expect_err("must be refused");
    assert!(
        matches!(
            err,
            SessionError::Protocol(ProtocolError::LimitExceeded {
                what: "unparsed input",
                limit: 4096,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn unrequested_file_index() {
    fn only_first(list: &FileList) -> Vec<FileIndex> {
        all_regular(list).into_iter().take(1).collect()
    }
    for p in [29, 32] {
        let (mut s, before) = after_flist(p);
        s.file(2, IFLAGS_NEW, b"", true);
        let run = drive_parts(
            config(),
            [before.as_slice(), s.take().as_slice()],
            only_first,
        );
        assert_eq!(
            run.err(),
            &SessionError::Protocol(ProtocolError::UnrequestedFile { ndx: 2 }),
            "protocol {p}"
        );
    }
}

#[test]
fn file_sent_twice_in_one_phase() {
    let run = transfer_error(32, config(), |s| {
        s.file(1, IFLAGS_NEW, &tree_content(1), true);
        s.file(1, IFLAGS_NEW, &tree_content(1), true);
    });
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::UnrequestedFile { ndx: 1 })
    );
}

#[test]
fn echo_without_item_transfer_is_unrequested() {
    let run = transfer_error(32, config(), |s| {
        s.ndx(1);
        s.data(&0x2000u16.to_le_bytes());
    });
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::UnrequestedFile { ndx: 1 })
    );
}

#[test]
fn echoed_sum_head_must_be_empty() {
    let run = transfer_error(32, config(), |s| {
        s.ndx(1);
        let mut b = IFLAGS_NEW.to_le_bytes().to_vec();
        SumHead {
            count: 1,
            blength: 700,
            s2length: 2,
            remainder: 0,
        }
        .encode(&mut b);
        s.data(&b);
    });
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::SumHeadMismatch { ndx: 1 })
    );
}

#[test]
fn block_match_token_is_refused() {
    let run = transfer_error(32, config(), |s| {
        s.ndx(1);
        let mut b = IFLAGS_NEW.to_le_bytes().to_vec();
        SumHead::EMPTY.encode(&mut b);
        put_i32(&mut b, -1);
        s.data(&b);
    });
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::BadBlockToken { block: 0, .. })
    ));
}

#[test]
fn literal_over_limit() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_literal: 100,
        ..Limits::default()
    };
    let run = transfer_error(32, cfg, |s| {
        s.ndx(1);
        let mut b = IFLAGS_NEW.to_le_bytes().to_vec();
        SumHead::EMPTY.encode(&mut b);
        put_i32(&mut b, 101);
        s.data(&b);
    });
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::LimitExceeded {
            value: 101,
            limit: 100,
            ..
        })
    ));
}

#[test]
fn literal_at_limit_is_accepted() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_literal: 100,
        ..Limits::default()
    };
    let (mut s, before) = after_flist(32);
    let data = content("a", 100);
    s.ndx(1);
    let mut b = IFLAGS_NEW.to_le_bytes().to_vec();
    SumHead::EMPTY.encode(&mut b);
    encode_literal_file(&data, 100, &mut b);
    let mut h = FileHasher::new(ChecksumKind::Xxh128, SEED);
    h.update(&data);
    b.extend_from_slice(&h.finish());
    s.data(&b);
    let run = drive_parts(cfg, [before.as_slice(), s.take().as_slice()], all_regular);
    assert!(run
        .events
        .contains(&Event::FileDone(FileIndex(1), FileOutcome::Verified)));
}

#[test]
fn file_over_size_limit() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_file_size: 70_000,
        ..Limits::default()
    };
    let run = transfer_error(32, cfg, |s| {
        s.file(1, IFLAGS_NEW, &content("x", 70_001), true);
    });
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::FileTooLarge { .. })
    ));
}

#[test]
fn no_send_for_a_requested_file() {
    for p in [29, 32] {
        let run = transfer_error(p, config(), |s| {
            s.msg(
                MessageCode::ERROR_XFER,
                b"send_files failed to open \"z.txt\": Permission denied (13)\n",
            );
            s.msg(MessageCode::NO_SEND, &4i32.to_le_bytes());
            for ndx in [1, 2, 6] {
                s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
            }
            s.ndx(NDX_DONE).end_of_run();
        });
        run.result.as_ref().expect("session completes");
        assert!(run.events.contains(&Event::FileNotSent(FileIndex(4))));
        assert!(!run
            .events
            .iter()
            .any(|e| matches!(e, Event::FileStart(FileIndex(4)))));
        let stats = run.finished();
        assert_eq!(
            (stats.files_transferred, stats.files_failed),
            (3, 1),
            "protocol {p}"
        );
        assert_eq!(stats.remote_errors, 1);
    }
}

#[test]
fn no_send_for_an_unrequested_file() {
    let run = transfer_error(32, config(), |s| {
        s.msg(MessageCode::NO_SEND, &3i32.to_le_bytes());
    });
    assert_eq!(
        run.err(),
        &SessionError::Protocol(ProtocolError::UnrequestedFile { ndx: 3 })
    );
}

#[test]
fn files_never_sent_are_reported_at_the_end_of_the_phase() {
    let run = transfer_error(32, config(), |s| {
        s.file(1, IFLAGS_NEW, &tree_content(1), true);
        s.ndx(NDX_DONE).end_of_run();
    });
    run.result.as_ref().expect("session completes");
    for ndx in [2, 4, 6] {
        assert!(
            run.events.contains(&Event::FileNotSent(FileIndex(ndx))),
            "{ndx}"
        );
    }
    assert_eq!(run.finished().files_failed, 3);
}

#[test]
fn remote_error_exit() {
    let run = transfer_error(32, config(), |s| {
        s.msg(
            MessageCode::ERROR,
            b"rsync: read errors mapping \"x\": Input/output error (5)\n",
        );
        s.msg(MessageCode::ERROR_EXIT, &23i32.to_le_bytes());
    });
    assert_eq!(
        run.err(),
        &SessionError::RemoteExit {
            code: 23,
            last_error: Some("rsync: read errors mapping \"x\": Input/output error (5)".into())
        }
    );
}

#[test]
fn error_then_hangup_before_any_entry_is_a_start_error() {
    // A daemon that refuses an option reports it right after setup and exits.
    let mut s = Server::new(32);
    s.setup();
    s.msg(
        MessageCode::ERROR,
        b"rsync: The server is configured to refuse --recursive (-r)\n",
    );
    let run = drive(config(), &s.take());
    assert!(matches!(
        run.err(),
        SessionError::RemoteExit {
            code: 5,
            last_error: Some(_)
        }
    ));
}

#[test]
fn error_then_hangup_during_file_list_is_a_partial_transfer() {
    let mut s = Server::new(32);
    s.setup();
    // One entry of the list arrives, then the sender fails and hangs up.
    let mut b = Vec::new();
    encode_entry(&entry("a.txt", 0o100644, 5, 1000), None, &s.opts, &mut b);
    s.data(&b);
    s.msg(
        MessageCode::ERROR,
        b"rsync: change_dir \"/sub\" (in mod) failed: No such file or directory (2)\n",
    );
    let run = drive(config(), &s.take());
    assert!(matches!(
        run.err(),
        SessionError::RemoteExit {
            code: 23,
            last_error: Some(_)
        }
    ));
}

#[test]
fn message_frame_over_max_message() {
    let mut s = Server::new(32);
    s.setup();
    s.msg(MessageCode::INFO, &[b'i'; 8193]);
    let run = drive(config(), &s.take());
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::FrameTooLarge {
            len: 8193,
            limit: 8192,
            ..
        })
    ));
}

#[test]
fn data_frame_over_max_frame() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_frame: 1000,
        ..Limits::default()
    };
    let mut s = Server::new(32);
    s.setup();
    s.msg(MessageCode::DATA, &[0u8; 1001]);
    let run = drive(cfg, &s.take());
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::FrameTooLarge {
            len: 1001,
            limit: 1000,
            ..
        })
    ));
}

#[test]
fn unexpected_message_codes_are_refused() {
    for code in [
        MessageCode::REDO,
        MessageCode::STATS,
        MessageCode::SUCCESS,
        MessageCode(77),
    ] {
        let mut s = Server::new(32);
        s.setup();
        s.msg(code, &1i32.to_le_bytes());
        let run = drive(config(), &s.take());
        assert!(
            matches!(
                run.err(),
                SessionError::Protocol(ProtocolError::UnexpectedMessage { .. })
            ),
            "{code:?}: {:?}",
            run.result
        );
    }
}

#[test]
fn empty_message_frame_does_not_stall_the_stream() {
    // MSG_NOOP (protocol 30's keep-alive) and MSG_ERROR_EXIT may have an
    // empty payload. Frames after one, in the same read, must still be
    // processed: here the rest of the session follows a NOOP in one piece.
    for p in [30, 32] {
        let (before, after) = standard_session(p);
        let mut noop = Vec::new();
        encode_frame(MessageCode::NOOP, &[], &mut noop);
        let input = [before.as_slice(), noop.as_slice(), after.as_slice()].concat();
        let run = drive(config(), &input);
        assert!(run.result.is_ok(), "protocol {p}: {:?}", run.result);
        assert_eq!(run.finished().files_transferred, 4);
        // Also when the NOOP sits in the middle of the file data.
        let mid = split_point_at_frame(&after, after.len() / 2);
        let input = [
            before.as_slice(),
            &after[..mid],
            noop.as_slice(),
            &after[mid..],
        ]
        .concat();
        let run = drive_parts(
            config(),
            [before.as_slice(), &input[before.len()..]],
            all_regular,
        );
        assert!(run.result.is_ok(), "protocol {p}: {:?}", run.result);
    }
}

#[test]
fn io_error_message_is_recorded() {
    let (before, after) = standard_session(32);
    let mut s = Server::new(32);
    s.msg(MessageCode::IO_ERROR, &1i32.to_le_bytes());
    let run = drive_parts(
        config(),
        [before.as_slice(), &s.take(), after.as_slice()],
        all_regular,
    );
    run.result.as_ref().expect("session");
    assert_eq!(run.finished().io_error, 1);
}

#[test]
fn garbage_after_goodbye_is_refused() {
    let (before, mut after) = standard_session(32);
    let mut s = Server::new(32);
    s.data(&[0x42]);
    after.extend_from_slice(&s.take());
    let run = drive_parts(config(), [before.as_slice(), after.as_slice()], all_regular);
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::BadGoodbye { .. })
    ));
}

#[test]
fn wrong_final_ndx_is_refused() {
    let (mut s, before) = after_flist(32);
    for ndx in REGULAR {
        s.file(ndx, IFLAGS_NEW, &tree_content(ndx), true);
    }
    s.ndx(NDX_DONE).ndx(NDX_DONE).ndx(NDX_DONE);
    let mut b = Vec::new();
    for v in STATS {
        put_varlong(&mut b, v, 3);
    }
    s.data(&b).ndx(5);
    let run = drive_parts(
        config(),
        [before.as_slice(), s.take().as_slice()],
        all_regular,
    );
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::BadGoodbye {
            what: "NDX_DONE",
            ..
        })
    ));
}

#[test]
fn failed_connection_refuses_more_input() {
    let mut conn = Connection::new(config());
    assert!(conn.handle_input(b"garbage\n").is_err());
    assert!(matches!(
        conn.handle_input(b"@RSYNCD: 32.0 md5\n"),
        Err(SessionError::Protocol(ProtocolError::Misuse(_)))
    ));
}

#[test]
fn api_misuse_is_an_error() {
    let mut conn = Connection::new(config());
    assert!(matches!(
        conn.request(FileIndex(0)),
        Err(SessionError::Protocol(ProtocolError::Misuse(_)))
    ));
    assert!(matches!(
        conn.finish_requests(),
        Err(SessionError::Protocol(ProtocolError::Misuse(_)))
    ));
    // Requests for a directory or an index out of range.
    let (_, before) = after_flist(32);
    let mut conn = Connection::new(config());
    conn.handle_input(&before).expect("setup");
    assert!(conn.awaiting_requests());
    assert!(conn.request(FileIndex(5)).is_err(), "a directory");
    assert!(conn.request(FileIndex(99)).is_err(), "out of range");
    assert!(conn.request(FileIndex(1)).is_ok());
    assert!(
        conn.request(FileIndex(1)).is_ok(),
        "a repeated request is ignored"
    );
}

// ----- keep-alives -----

#[test]
fn keepalive_is_an_empty_data_frame_when_multiplexed() {
    let (_, before) = after_flist(32);
    let mut cfg = config();
    cfg.keepalive = Duration::from_secs(20);
    let mut conn = Connection::new(cfg);
    let t0 = Instant::now();
    conn.handle_input(&before).expect("setup");
    while conn.poll_transmit(t0).is_some() {}
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(20)));
    // Not yet due.
    conn.handle_timeout(t0 + Duration::from_secs(19));
    assert_eq!(conn.poll_transmit(t0 + Duration::from_secs(19)), None);
    // Due: exactly one empty MSG_DATA frame.
    let t1 = t0 + Duration::from_secs(20);
    conn.handle_timeout(t1);
    conn.handle_timeout(t1);
    assert_eq!(conn.poll_transmit(t1), Some(vec![0, 0, 0, 7]));
    assert_eq!(conn.poll_transmit(t1), None);
    conn.handle_timeout(t1);
    assert_eq!(conn.poll_transmit(t1), None);
    assert_eq!(conn.poll_timeout(), Some(t1 + Duration::from_secs(20)));
}

#[test]
fn keepalive_interval_follows_the_daemon_timeout() {
    let mut s = Server::new(32);
    s.setup().msg(MessageCode::IO_TIMEOUT, &10i32.to_le_bytes());
    let mut conn = Connection::new(config());
    let t0 = Instant::now();
    conn.handle_input(&s.take()).expect("setup");
    while conn.poll_transmit(t0).is_some() {}
    assert!(std::iter::from_fn(|| conn.poll_event()).any(|e| e == Event::ServerTimeout(10)));
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    conn.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(conn.poll_transmit(t0), Some(vec![0, 0, 0, 7]));
}

#[test]
fn no_keepalive_at_protocol_29() {
    let (_, before) = after_flist(29);
    let mut conn = Connection::new(config());
    let t0 = Instant::now();
    conn.handle_input(&before).expect("setup");
    while conn.poll_transmit(t0).is_some() {}
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(conn.poll_transmit(t0 + Duration::from_secs(3600)), None);
}

#[test]
fn no_keepalive_before_multiplexing() {
    let mut conn = Connection::new(config());
    let t0 = Instant::now();
    while conn.poll_transmit(t0).is_some() {}
    conn.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(conn.poll_transmit(t0), None);
}

// ----- never panic: arbitrary and mutated input -----

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(p, b)| Mutation::Flip(p, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        2 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Flip(p, b) => {
                if let Some(x) = bytes.get_mut(p % n) {
                    *x ^= b;
                }
            }
            Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            Mutation::Delete(p) => {
                if !bytes.is_empty() {
                    bytes.remove(p % n);
                }
            }
            Mutation::Truncate(p) => bytes.truncate(p % n),
        }
    }
    bytes
}

/// Feeds `input` in chunks of `chunk` bytes, requesting every regular file,
/// and ignores the outcome: the only failure is a panic.
fn feed_ignoring_errors(cfg: ConnectionConfig, input: &[u8], chunk: usize) {
    let run = drive_parts(cfg, input.chunks(chunk.max(1)), all_regular);
    drop(run);
}

/// Writes seed inputs for the `receiver` fuzz target: valid sessions in
/// the shape `rsync_proto::fuzzing::receiver` expects (the first byte is the
/// protocol minus 29, then the daemon's bytes for a client with `-r -l` and
/// no `-o`/`-g`). Run it with
/// `cargo test -p rsync-proto --lib write_receiver_fuzz_seeds -- --ignored`;
/// the files go to `$UBACKUP_FUZZ_SEEDS` or `fuzz/seeds/receiver/`.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seeds"]
fn write_receiver_fuzz_seeds() {
    let dir = std::env::var_os("UBACKUP_FUZZ_SEEDS")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/receiver"),
            std::path::PathBuf::from,
        );
    std::fs::create_dir_all(&dir).expect("create seed dir");
    for p in [29u32, 30, 31, 32] {
        for (variant, name) in ["all", "redo-nosend", "error"].iter().enumerate() {
            let mut s = Server::new(p);
            s.opts.preserve_uid = false;
            s.opts.preserve_gid = false;
            s.setup();
            if p >= 31 {
                s.msg(MessageCode::IO_TIMEOUT, &60i32.to_le_bytes());
            }
            s.flist(&tree_entries());
            match variant {
                0 => {
                    for ndx in REGULAR {
                        let c = tree_content(ndx);
                        s.file(ndx, IFLAGS_NEW, &c[..c.len().min(300)], true);
                    }
                    s.ndx(NDX_DONE);
                }
                1 => {
                    s.file(1, IFLAGS_NEW, b"hello", false);
                    s.msg(MessageCode::NO_SEND, &2i32.to_le_bytes());
                    s.ndx(NDX_DONE);
                    s.file(1, IFLAGS_REDO, b"hello", true);
                }
                _ => {
                    s.msg(MessageCode::ERROR, b"rsync: read error\n");
                    s.ndx(NDX_DONE);
                }
            }
            s.end_of_run();
            let mut out = vec![(p - 29) as u8];
            out.extend_from_slice(&s.take());
            std::fs::write(dir.join(format!("p{p}-{name}")), out).expect("write seed");
        }
    }
}

/// The seeds above must drive the fuzz entry point's configuration to the
/// end of a session, or they would not be worth much as seeds.
#[test]
fn fuzz_seed_sessions_complete_with_the_fuzz_config() {
    for p in [29u32, 32] {
        let mut s = Server::new(p);
        s.opts.preserve_uid = false;
        s.opts.preserve_gid = false;
        s.setup().flist(&tree_entries());
        let before = s.take();
        for ndx in REGULAR {
            s.file(ndx, IFLAGS_NEW, b"x", true);
        }
        s.ndx(NDX_DONE).end_of_run();
        let mut cfg = ConnectionConfig::new(Target::Pull {
            module: "m".into(),
            paths: vec!["m/".into()],
        });
        cfg.args.recursive = true;
        cfg.args.links = true;
        let run = drive_parts(cfg, [before.as_slice(), s.take().as_slice()], all_regular);
        assert!(run.result.is_ok(), "protocol {p}: {:?}", run.result);
    }
}

#[test]
fn fuzz_entry_points_survive_known_crashers() {
    // Inputs that crashed an entry point once (shrunk by proptest).
    // [fe 00 ..]: varlong with min_bytes 1 and lead 0xfe (7 extension bytes).
    let crashers: [&[u8]; 3] = [&[254, 0, 0, 0, 0, 0, 0, 0], &[0xfe; 9], &[0xff; 16]];
    for c in crashers {
        crate::fuzzing::wire(c);
        crate::fuzzing::mux(c);
        crate::fuzzing::flist(c);
        crate::fuzzing::receiver(c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn receiver_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        crate::fuzzing::receiver(&bytes);
        crate::fuzzing::flist(&bytes);
        crate::fuzzing::mux(&bytes);
        crate::fuzzing::wire(&bytes);
    }

    #[test]
    fn receiver_never_panics_on_arbitrary_bytes_after_valid_setup(
        p in prop_oneof![Just(29u32), Just(30), Just(31), Just(32)],
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..64,
    ) {
        let mut s = Server::new(p);
        s.setup();
        let mut input = s.take();
        input.extend_from_slice(&tail);
        feed_ignoring_errors(config(), &input, chunk);
    }

    #[test]
    fn receiver_never_panics_on_arbitrary_frames_after_valid_setup(
        p in prop_oneof![Just(29u32), Just(30), Just(31), Just(32)],
        frames in proptest::collection::vec(
            (prop_oneof![4 => Just(0u8), 1 => Just(1), 1 => Just(22), 1 => Just(33), 1 => Just(86), 1 => Just(102)],
             proptest::collection::vec(any::<u8>(), 0..200)),
            0..30),
        chunk in 1usize..64,
    ) {
        let mut s = Server::new(p);
        s.setup();
        for (code, payload) in &frames {
            s.msg(MessageCode(*code), payload);
        }
        feed_ignoring_errors(config(), &s.take(), chunk);
    }

    #[test]
    fn receiver_never_panics_on_a_mutated_session(
        p in prop_oneof![Just(29u32), Just(30), Just(31), Just(32)],
        ms in proptest::collection::vec(mutation(), 1..6),
        chunk in prop_oneof![Just(1usize), 2usize..100, Just(1 << 20)],
    ) {
        let (before, after) = standard_session(p);
        let input = mutate([before, after].concat(), &ms);
        feed_ignoring_errors(config(), &input, chunk);
        // And through the fuzz entry point (first byte picks the version).
        let mut fz = vec![(p - 29) as u8];
        fz.extend_from_slice(&input);
        crate::fuzzing::receiver(&fz);
    }

    #[test]
    fn receiver_never_panics_on_a_mutated_redo_session(
        p in prop_oneof![Just(29u32), Just(32)],
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (a, b, c) = redo_session(p, false);
        let input = mutate([a, b, c].concat(), &ms);
        feed_ignoring_errors(config(), &input, 13);
    }
}

// ----- compressed sessions -----

/// A protocol-32 session whose daemon offers `offered` compression and
/// sends every regular file of the tree compressed with `kind`.
fn compressed_session(kind: CompressionKind, offered: &str, files: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let mut s = Server::new(32);
    s.hello();
    let mut b = Vec::new();
    put_varint(&mut b, 0x1fe);
    put_vstring(&mut b, SERVER_CHECKSUMS.as_bytes());
    put_vstring(&mut b, offered.as_bytes());
    s.raw(&b).raw(&SEED.to_le_bytes());
    s.flist(&tree_entries());
    let mut enc = CompressedTokenEncoder::new(kind, None).expect("encoder");
    for (ndx, content) in files {
        s.ndx(*ndx);
        let mut b = Vec::new();
        b.extend_from_slice(&IFLAGS_NEW.to_le_bytes());
        SumHead::EMPTY.encode(&mut b);
        enc.end(content, &mut b).expect("encode");
        let mut h = FileHasher::new(ChecksumKind::Xxh128, SEED);
        h.update(content);
        b.extend_from_slice(&h.finish());
        s.data(&b);
    }
    s.ndx(NDX_DONE);
    s.end_of_run();
    s.take()
}

fn compress_config() -> ConnectionConfig {
    let mut cfg = config();
    cfg.args.compress = Some(CompressArgs::default());
    cfg
}

/// The file bytes a run delivered, per file.
fn file_data(events: &[Event]) -> Vec<(i32, Vec<u8>)> {
    let mut out: Vec<(i32, Vec<u8>)> = Vec::new();
    for e in events {
        match e {
            Event::FileStart(n) => out.push((n.0, Vec::new())),
            Event::FileData(n, d) => {
                let last = out.last_mut().expect("data after a start");
                assert_eq!(last.0, n.0);
                last.1.extend_from_slice(d);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn compressed_session_negotiates_and_decodes_every_algorithm() {
    let files: Vec<(i32, Vec<u8>)> = REGULAR.iter().map(|&n| (n, tree_content(n))).collect();
    for kind in CompressionKind::ALL {
        // The daemon lists only `kind` (and none), so that is what both pick.
        let input = compressed_session(kind, &format!("{} none", kind.name()), &files);
        for run in [
            drive(compress_config(), &input),
            drive_bytewise(compress_config(), &input),
        ] {
            run.result
                .as_ref()
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let ready = run.events.iter().find_map(|e| match e {
                Event::Ready(i) => Some(*i),
                _ => None,
            });
            assert_eq!(ready.and_then(|i| i.compression), Some(kind));
            assert_eq!(file_data(&run.events), files, "{kind}");
            assert_eq!(run.finished().files_transferred, REGULAR.len() as u64);
            // We sent `z`, then the checksum list and our compress list in stock order.
            let sent = &run.sent;
            assert!(
                sent.windows(4).any(|w| w == b"prze"),
                "{kind}: no z in the cluster"
            );
            let mut lists = Vec::new();
            put_vstring(&mut lists, ChecksumKind::advertised_list().as_bytes());
            put_vstring(&mut lists, b"zstd lz4 zlibx zlib");
            assert!(
                sent.windows(lists.len()).any(|w| w == lists),
                "{kind}: lists"
            );
        }
    }
}

#[test]
fn forced_compression_sends_no_list_and_old_peers_get_zlib() {
    // Forced lz4: `--compress-choice=lz4`, no compress list (only the
    // checksum list is read back).
    let files = vec![(1, tree_content(1))];
    let mut s = Server::new(32);
    s.hello();
    let mut b = Vec::new();
    put_varint(&mut b, 0x1fe);
    put_vstring(&mut b, SERVER_CHECKSUMS.as_bytes());
    s.raw(&b).raw(&SEED.to_le_bytes());
    let forced = {
        let full = compressed_session(CompressionKind::Lz4, "", &files);
        // Same session with the compress list removed.
        let mut list = Vec::new();
        put_vstring(&mut list, b"");
        let at = full
            .windows(SERVER_CHECKSUMS.len())
            .position(|w| w == SERVER_CHECKSUMS.as_bytes())
            .expect("checksum list")
            + SERVER_CHECKSUMS.len();
        [&full[..at], &full[at + list.len()..]].concat()
    };
    let mut cfg = config();
    cfg.args.compress = Some(CompressArgs {
        choice: Some(CompressionKind::Lz4),
        level: None,
    });
    let run = drive(cfg, &forced);
    run.result.as_ref().expect("forced lz4 session");
    assert!(run.sent.windows(21).any(|w| w == b"--compress-choice=lz4"));
    assert_eq!(file_data(&run.events), files);

    // Protocol 31 without negotiation: plain -z means zlib.
    let mut s = Server::new(31);
    s.setup();
    s.flist(&tree_entries());
    let mut enc = CompressedTokenEncoder::new(CompressionKind::Zlib, None).expect("encoder");
    s.ndx(1);
    let mut b = Vec::new();
    b.extend_from_slice(&IFLAGS_NEW.to_le_bytes());
    SumHead::EMPTY.encode(&mut b);
    enc.end(&files[0].1, &mut b).expect("encode");
    let mut h = FileHasher::new(ChecksumKind::Md5, SEED);
    h.update(&files[0].1);
    b.extend_from_slice(&h.finish());
    s.data(&b);
    s.ndx(NDX_DONE);
    s.end_of_run();
    let mut cfg = compress_config();
    cfg.protocol = ProtocolVersion::V31;
    let run = drive_parts(cfg, [s.take().as_slice()], |_| vec![FileIndex(1)]);
    run.result.as_ref().expect("zlib session");
    assert_eq!(file_data(&run.events), files);
}

#[test]
fn zlib_level_zero_turns_compression_off() {
    // --compress-level=0 with a forced zlib: both sides fall back to plain
    // tokens (token.c init_compression_level).
    let (before, after) = standard_session(31);
    let mut cfg = config();
    cfg.protocol = ProtocolVersion::V31;
    cfg.args.compress = Some(CompressArgs {
        choice: Some(CompressionKind::Zlib),
        level: Some(0),
    });
    let run = drive(cfg, &[before, after].concat());
    run.result.as_ref().expect("uncompressed session");
    assert!(run.sent.windows(18).any(|w| w == b"--compress-level=0"));
}

#[test]
fn refuses_a_daemon_with_no_common_compression() {
    let input = compressed_session(CompressionKind::Zstd, "brotli none", &[]);
    let run = drive(compress_config(), &input);
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::NoCommonCompression { .. })
    ));
}

#[test]
fn a_compression_bomb_waits_for_the_driver() {
    // 64 MiB of zeros: a few KiB of zstd. Fed in one piece, decoding stops
    // once OUTPUT_BUDGET bytes are queued and continues only through
    // handle_drained, so the queue stays bounded.
    let big = vec![0u8; 64 << 20];
    let input = compressed_session(CompressionKind::Zstd, "zstd none", &[(6, big.clone())]);
    assert!(input.len() < 64 * 1024, "{} bytes on the wire", input.len());
    let now = Instant::now();
    let mut conn = Connection::new(compress_config());
    let mut got = 0usize;
    let mut most_queued = 0usize;
    // Returns (events taken, whether Finished was among them).
    let mut drain = |conn: &mut Connection, got: &mut usize| -> (usize, bool) {
        let mut evs = Vec::new();
        while let Some(ev) = conn.poll_event() {
            evs.push(ev);
        }
        let queued: usize = evs
            .iter()
            .map(|ev| match ev {
                Event::FileData(_, d) => d.len(),
                _ => 0,
            })
            .sum();
        most_queued = most_queued.max(queued);
        let mut finished = false;
        let n = evs.len();
        for ev in evs {
            match ev {
                Event::FileData(_, d) => *got += d.len(),
                Event::FileList(_) => {
                    conn.request(FileIndex(6)).expect("request");
                    conn.finish_requests().expect("finish");
                }
                Event::Finished(_) => finished = true,
                _ => {}
            }
        }
        while conn.poll_transmit(now).is_some() {}
        (n, finished)
    };
    conn.handle_input(&input).expect("input");
    let mut rounds = 0;
    loop {
        let (n, _) = drain(&mut conn, &mut got);
        let resumed = conn.handle_drained().expect("resume");
        if n == 0 && !resumed {
            break;
        }
        rounds += 1;
    }
    conn.handle_eof().expect("eof");
    assert!(drain(&mut conn, &mut got).1);
    assert!(
        rounds >= 64,
        "only {rounds} rounds: the output was not held back"
    );
    assert_eq!(got, big.len());
    assert!(
        most_queued <= OUTPUT_BUDGET + crate::delta::compressed::OUTPUT_CHUNK,
        "{most_queued} bytes queued at once"
    );
}

#[test]
fn a_compressed_file_over_the_size_limit_fails() {
    let input = compressed_session(
        CompressionKind::Zstd,
        "zstd none",
        &[(6, vec![0u8; 4 << 20])],
    );
    let mut cfg = compress_config();
    cfg.limits.max_file_size = 1 << 20;
    let run = drive_parts(cfg, [input.as_slice()], |_| vec![FileIndex(6)]);
    assert!(matches!(
        run.err(),
        SessionError::Protocol(ProtocolError::FileTooLarge { .. })
    ));
}
