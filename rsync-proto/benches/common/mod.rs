//! A scripted protocol-32 daemon for the micro-benches: the bytes a stock 3.5.0 sender
//! writes (greeting, compat flags, checksum list, seed, file list in MSG_DATA frames, file
//! data as literal tokens), built with the crate's own encoders, as the connection tests
//! build them.

#![allow(dead_code)]

use std::time::Instant;

use rsync_proto::checksum::{ChecksumKind, FileHasher};
use rsync_proto::delta::{encode_literal_file, SumHead};
use rsync_proto::flist::{encode_end, encode_entry, FlistOptions};
use rsync_proto::mux::{encode_frame, MessageCode};
use rsync_proto::setup::compat;
use rsync_proto::wire::{put_varint, put_vstring, NdxCodec};
use rsync_proto::{Connection, ConnectionConfig, Event, FileEntry, ProtocolVersion, Target};

pub const SEED: i32 = 0x5f3a_1c2b;
/// Compat flags of a stock 3.5.0 daemon without incremental recursion.
pub const COMPAT: u32 = 0x1fe;
/// Largest MSG_DATA payload a stock sender writes (io.c: IO_BUFFER_SIZE).
pub const FRAME: usize = 32 * 1024;
/// The literal token size of a stock sender (CHUNK_SIZE).
pub const CHUNK: usize = 32 * 1024;
/// ITEM_TRANSFER | ITEM_IS_NEW | ITEM_REPORT_TIME.
pub const IFLAGS_NEW: u16 = 0xa008;

pub fn flist_options() -> FlistOptions {
    FlistOptions {
        protocol: ProtocolVersion::V32,
        varint_flags: COMPAT & compat::VARINT_FLIST_FLAGS != 0,
        safe_flist: true,
        preserve_links: false,
        preserve_uid: false,
        preserve_gid: false,
        id0_names: COMPAT & compat::ID0_NAMES != 0,
    }
}

pub fn config() -> ConnectionConfig {
    let mut cfg = ConnectionConfig::new(Target::Pull {
        module: "m".into(),
        paths: vec!["m/".into()],
    });
    cfg.args.recursive = true;
    cfg
}

/// Frames protocol bytes as MSG_DATA.
pub fn frames(b: &[u8], out: &mut Vec<u8>) {
    for chunk in b.chunks(FRAME) {
        encode_frame(MessageCode::DATA, chunk, out);
    }
}

/// Greeting, module OK, compat flags, checksum list and seed.
pub fn setup() -> Vec<u8> {
    let mut out = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n@RSYNCD: OK\n".to_vec();
    put_varint(&mut out, COMPAT as i32);
    put_vstring(&mut out, b"xxh128 xxh3 xxh64 md5 md4 none");
    out.extend_from_slice(&SEED.to_le_bytes());
    out
}

/// A regular file entry.
pub fn entry(name: &[u8], size: u64, mtime: i64) -> FileEntry {
    FileEntry {
        name: name.to_vec(),
        mode: 0o100644,
        size,
        mtime,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    }
}

/// The unframed file list: entries and the end marker.
pub fn flist_bytes(entries: &[FileEntry]) -> Vec<u8> {
    let opts = flist_options();
    let mut b = Vec::new();
    let mut prev: Option<&FileEntry> = None;
    for e in entries {
        encode_entry(e, prev, &opts, &mut b);
        prev = Some(e);
    }
    encode_end(0, &opts, &mut b);
    b
}

/// One file's data, framed: ndx, iflags, the empty sum head, literal tokens of
/// [`CHUNK`] bytes and the xxh128 whole-file checksum.
pub fn file_data(ndx: i32, content: &[u8]) -> Vec<u8> {
    let mut codec = NdxCodec::new(true);
    let mut b = Vec::new();
    codec.encode(ndx, &mut b);
    b.extend_from_slice(&IFLAGS_NEW.to_le_bytes());
    SumHead::EMPTY.encode(&mut b);
    encode_literal_file(content, CHUNK, &mut b);
    let mut h = FileHasher::new(ChecksumKind::Xxh128, SEED);
    h.update(content);
    b.extend_from_slice(&h.finish());
    let mut out = Vec::new();
    frames(&b, &mut out);
    out
}

/// Deterministic pseudo-random bytes.
pub fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A connection past setup and file list with `ndx` requested, ready for its data.
pub fn connection_awaiting_data(list_bytes: &[u8], ndx: i32) -> Connection {
    let now = Instant::now();
    let mut conn = Connection::new(config());
    let mut input = setup();
    frames(list_bytes, &mut input);
    conn.handle_input(&input).expect("setup and file list");
    while conn.poll_transmit(now).is_some() {}
    let mut got_list = false;
    while let Some(ev) = conn.poll_event() {
        if let Event::FileList(_) = ev {
            got_list = true;
        }
    }
    assert!(got_list, "no file list");
    conn.request(rsync_proto::FileIndex(ndx)).expect("request");
    conn.finish_requests().expect("finish requests");
    while conn.poll_transmit(now).is_some() {}
    conn
}
