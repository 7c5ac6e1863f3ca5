//! Entry points for the cargo-fuzz targets in `fuzz/`. Each takes arbitrary
//! bytes and must never panic or allocate without bound.

use crate::connection::{Connection, ConnectionConfig, Target};
use crate::error::Limits;
use crate::flist::{FlistDecoder, FlistOptions};
use crate::mux::Demuxer;
use crate::version::ProtocolVersion;
use crate::wire::NdxCodec;

fn flist_options(data: &[u8]) -> FlistOptions {
    let b = data.first().copied().unwrap_or(0);
    FlistOptions {
        protocol: ProtocolVersion::new(29 + u32::from(b & 3)).unwrap_or(ProtocolVersion::V32),
        varint_flags: b & 4 != 0,
        safe_flist: b & 8 != 0,
        preserve_links: b & 16 != 0,
        preserve_uid: b & 32 != 0,
        preserve_gid: b & 64 != 0,
        id0_names: b & 128 != 0,
    }
}

/// Decodes primitive values (varint, varlong, longint, vstring, ndx).
pub fn wire(data: &[u8]) {
    let _ = crate::wire::decode_varint(data);
    for m in 1..=8 {
        let _ = crate::wire::decode_varlong(data, m);
    }
    let _ = crate::wire::decode_longint(data);
    let _ = crate::wire::decode_vstring(data, 4096);
    let mut codec = NdxCodec::new(true);
    let mut pos = 0;
    while let Ok(Some((_, used))) = codec.decode(&data[pos..]) {
        pos += used;
    }
}

/// Demultiplexes arbitrary frames.
pub fn mux(data: &[u8]) {
    let mut d = Demuxer::new(8192, 1 << 24);
    let mut pos = 0;
    while let Ok((used, _)) = d.decode(&data[pos..]) {
        if used == 0 {
            break;
        }
        pos += used;
    }
}

/// Decodes a file list; the first byte picks the options.
pub fn flist(data: &[u8]) {
    let opts = flist_options(data);
    let mut dec = FlistDecoder::new(opts, Limits::default());
    let mut entries = Vec::new();
    let mut pos = 1.min(data.len());
    while let Ok(Some((item, used))) = dec.decode(&data[pos..]) {
        pos += used;
        match item {
            crate::flist::FlistItem::Entry(e) => entries.push(e),
            crate::flist::FlistItem::End { .. } => break,
        }
    }
    let list = crate::flist::FileList::sorted(entries, opts.protocol);
    let _ = list.iter().count();
    let _ = crate::flist::decode_id_lists(&data[pos..], &opts, &Limits::default());
}

/// Drives a whole receiver with arbitrary server bytes (first byte: bits 0-1
/// pick the announced protocol, bit 2 asks for compression), requesting every regular file it is offered.
pub fn receiver(data: &[u8]) {
    let proto = ProtocolVersion::new(29 + u32::from(data.first().copied().unwrap_or(0) & 3))
        .unwrap_or(ProtocolVersion::V32);
    let mut cfg = ConnectionConfig::new(Target::Pull {
        module: "m".into(),
        paths: vec!["m/".into()],
    });
    cfg.protocol = proto;
    if data.first().is_some_and(|b| b & 4 != 0) {
        // Ask for compression: the daemon's bytes then include a compress
        // list (at 32) and compressed tokens.
        cfg.args.compress = Some(crate::setup::CompressArgs::default());
    }
    cfg.args.recursive = true;
    cfg.args.links = true;
    cfg.credentials = Some(crate::connection::Credentials {
        user: "u".into(),
        password: b"p".to_vec(),
    });
    let mut conn = Connection::new(cfg);
    let now = std::time::Instant::now();
    for chunk in data.get(1..).unwrap_or_default().chunks(7) {
        if conn.handle_input(chunk).is_err() {
            return;
        }
        while conn.poll_transmit(now).is_some() {}
        loop {
            let Some(ev) = conn.poll_event() else {
                match conn.handle_drained() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(_) => return,
                }
            };
            if let crate::connection::Event::FileList(list) = ev {
                for (ndx, e) in list.iter() {
                    if e.kind() == crate::flist::FileKind::Regular {
                        let _ = conn.request(ndx);
                    }
                }
                let _ = conn.finish_requests();
            }
        }
    }
    let _ = conn.handle_eof();
}

/// Most file bytes (decompressed data plus copied blocks) that one input of a
/// `tokens_*` target may produce before the harness stops decoding it.
///
/// A few KiB of zstd or a token run can stand for hundreds of MiB. The decoder
/// itself is bounded per call ([`OUTPUT_CHUNK`](crate::delta::compressed::OUTPUT_CHUNK)),
/// and a real session is bounded by `Limits::max_file_size`, which unit tests
/// check with a 64 MiB bomb; the fuzzer only wastes time decompressing it. Four
/// full output chunks still take every path: a chunk that fills the output
/// buffer and is resumed, a deflate chunk drained after its input ran out, an
/// LZ4 block at stock rsync's largest output, and runs that cross the cap.
pub const TOKENS_OUTPUT_BUDGET: u64 = 4 * crate::delta::compressed::OUTPUT_CHUNK as u64;

/// What [`decode_tokens`] did with one input (for tests of the harness).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TokensRun {
    /// File bytes produced: decompressed data plus copied blocks.
    pub(crate) output: u64,
    /// Items decoded.
    pub(crate) items: u64,
    /// Files ended (END_FLAG items).
    pub(crate) ends: u64,
    /// Decoding stopped at [`TOKENS_OUTPUT_BUDGET`], not at an error or the input's end.
    pub(crate) over_budget: bool,
}

/// Basis block lengths a `tokens_zlib` input may pick: an ordinary block, and
/// one longer than a stored block (0xffff) so that see_deflate_token's split
/// into pieces, and protocol 30's repeated first piece, are reached.
const SHORT_BLOCK: usize = 700;
const LONG_BLOCK: usize = 0xffff + 4465;

/// Decodes a compressed token stream of `kind`, supplying deterministic basis
/// blocks of `block_len` bytes for block tokens (and, for zlib, into the
/// history). Stops at the first error, or once the input has produced
/// [`TOKENS_OUTPUT_BUDGET`] bytes of file data.
pub(crate) fn decode_tokens(
    kind: crate::delta::CompressionKind,
    protocol: ProtocolVersion,
    block_len: usize,
    data: &[u8],
) -> TokensRun {
    use crate::delta::{CompressedItem, CompressedTokenDecoder};
    static BLOCK: [u8; LONG_BLOCK] = [0x5a; LONG_BLOCK];
    let block = BLOCK.get(..block_len).unwrap_or(&BLOCK);
    let mut run = TokensRun::default();
    let Ok(mut dec) = CompressedTokenDecoder::new(kind, protocol, &Limits::default()) else {
        return run;
    };
    let mut pos = 0;
    while let Ok(Some((item, used))) = dec.decode(data.get(pos..).unwrap_or_default()) {
        pos += used;
        run.items += 1;
        match item {
            CompressedItem::Data(n) => {
                assert!(n <= crate::delta::compressed::OUTPUT_CHUNK);
                assert_eq!(dec.output().len(), n);
                run.output += n as u64;
            }
            CompressedItem::Block(_) => {
                // A copied block is file output too: a run of 65535 blocks
                // costs as much as that much data (and, for zlib, as much
                // inflating into the history).
                run.output += block.len() as u64;
                if dec.see_block(block).is_err() {
                    return run;
                }
            }
            CompressedItem::End => run.ends += 1,
        }
        if run.output >= TOKENS_OUTPUT_BUDGET {
            run.over_budget = true;
            return run;
        }
    }
    run
}

/// Decodes arbitrary bytes as a zstd token stream.
pub fn tokens_zstd(data: &[u8]) {
    decode_tokens(
        crate::delta::CompressionKind::Zstd,
        ProtocolVersion::V32,
        SHORT_BLOCK,
        data,
    );
}

/// Decodes arbitrary bytes as an lz4 token stream.
pub fn tokens_lz4(data: &[u8]) {
    decode_tokens(
        crate::delta::CompressionKind::Lz4,
        ProtocolVersion::V32,
        SHORT_BLOCK,
        data,
    );
}

/// Decodes arbitrary bytes as a zlib token stream (matched blocks fed into
/// the history); the first byte picks protocol 30 (the repeated-history
/// bug) or 31 (bit 0), and basis blocks of 700 bytes or of more than one
/// stored block (bit 1).
pub fn tokens_zlib(data: &[u8]) {
    let first = data.first().copied().unwrap_or(0);
    let proto = if first & 1 == 1 {
        ProtocolVersion::V30
    } else {
        ProtocolVersion::V31
    };
    let block_len = if first & 2 == 2 {
        LONG_BLOCK
    } else {
        SHORT_BLOCK
    };
    decode_tokens(
        crate::delta::CompressionKind::Zlib,
        proto,
        block_len,
        data.get(1..).unwrap_or_default(),
    );
}

/// Decodes arbitrary bytes as a zlibx token stream.
pub fn tokens_zlibx(data: &[u8]) {
    decode_tokens(
        crate::delta::CompressionKind::Zlibx,
        ProtocolVersion::V32,
        SHORT_BLOCK,
        data,
    );
}

/// The first byte picks the algorithm (0 zstd, 1 lz4, 2 zlibx, 3 zlib); the
/// rest is the stream.
pub fn compressed_tokens(data: &[u8]) {
    let rest = data.get(1..).unwrap_or_default();
    match data.first().map(|b| b & 3) {
        Some(0) => tokens_zstd(rest),
        Some(1) => tokens_lz4(rest),
        Some(2) => tokens_zlibx(rest),
        Some(_) => {
            decode_tokens(
                crate::delta::CompressionKind::Zlib,
                ProtocolVersion::V32,
                SHORT_BLOCK,
                rest,
            );
        }
        None => {}
    }
}

/// Parses a greeting line (clientserver.c exchange_protocols) and negotiates
/// it against every version we speak.
pub fn greeting(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Ok(g) = crate::daemon::Greeting::parse(&line) {
        for v in 29..=32 {
            if let Some(ours) = ProtocolVersion::new(v) {
                let _ = g.negotiate(ours);
                let _ = crate::daemon::AuthDigest::choose(g.digests.as_deref(), ours);
            }
        }
    }
}

/// The daemon's text replies after the greeting: each line classified
/// (`@RSYNCD: OK`, `AUTHREQD`, `EXIT`, `@ERROR`, MOTD, module lines), and the
/// whole input driven through a module listing and a module request, where
/// the line, MOTD and module-count limits apply.
pub fn daemon_response(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let _ = crate::daemon::ServerLine::parse(&line);
        let _ = crate::daemon::ModuleInfo::parse(&line);
    }
    let limits = Limits {
        max_line: 256,
        max_motd: 4096,
        max_modules: 64,
        ..Limits::default()
    };
    for target in [
        Target::ListModules,
        Target::Pull {
            module: "m".into(),
            paths: vec!["m/".into()],
        },
    ] {
        let mut cfg = ConnectionConfig::new(target);
        cfg.limits = limits.clone();
        cfg.credentials = Some(crate::connection::Credentials {
            user: "u".into(),
            password: b"p".to_vec(),
        });
        let mut conn = Connection::new(cfg);
        let now = std::time::Instant::now();
        let mut input = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n".to_vec();
        input.extend_from_slice(data);
        for chunk in input.chunks(13) {
            if conn.handle_input(chunk).is_err() {
                break;
            }
            while conn.poll_transmit(now).is_some() {}
            while conn.poll_event().is_some() {}
        }
        let _ = conn.handle_eof();
    }
}

/// Decodes sum heads (io.c read_sum_head); the first byte picks the
/// protocol and the negotiated checksum length.
pub fn sum_head(data: &[u8]) {
    let b = data.first().copied().unwrap_or(0);
    let proto = ProtocolVersion::new(29 + u32::from(b & 3)).unwrap_or(ProtocolVersion::V32);
    let sum_len = usize::from(b >> 2) % 33;
    let mut pos = 1.min(data.len());
    while let Ok(Some((head, used))) = crate::delta::SumHead::decode(&data[pos..], proto, sum_len) {
        pos += used;
        let mut out = Vec::new();
        head.encode(&mut out);
        for i in [0, 1, head.count.max(0) as u32, u32::MAX] {
            let _ = crate::delta::Signature::block_range(&head, i);
        }
    }
}

/// The uncompressed token stream of one file (token.c simple_recv_token),
/// through the real receiver: a session is set up for a 2000-byte file
/// requested against a 2000-byte basis (three blocks), then `data` arrives
/// as that file's tokens and checksum, in MSG_DATA frames. Copied blocks are
/// answered with zero bytes of the announced length.
pub fn tokens(data: &[u8]) {
    use crate::delta::{Signature, SumHead};
    use crate::flist::{encode_end, encode_entry, FileEntry};
    use crate::mux::{encode_frame, MessageCode};
    use crate::wire::put_i32;

    let proto = ProtocolVersion::V31;
    let mut cfg = ConnectionConfig::new(Target::Pull {
        module: "m".into(),
        paths: vec!["m/".into()],
    });
    cfg.protocol = proto;
    cfg.args.recursive = true;
    cfg.limits.max_literal = 1 << 16;
    cfg.limits.max_file_size = 1 << 20;
    let mut conn = Connection::new(cfg);
    // Setup of a protocol-31 daemon without negotiation (md5).
    let mut server = b"@RSYNCD: 31.0\n@RSYNCD: OK\n".to_vec();
    server.push(crate::setup::compat::SAFE_FLIST as u8);
    put_i32(&mut server, 7);
    let opts = FlistOptions {
        protocol: proto,
        varint_flags: false,
        safe_flist: true,
        preserve_links: false,
        preserve_uid: false,
        preserve_gid: false,
        id0_names: false,
    };
    let file = FileEntry {
        name: b"f".to_vec(),
        mode: 0o100644,
        size: 2000,
        mtime: 1,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    };
    let mut list = Vec::new();
    encode_entry(&file, None, &opts, &mut list);
    encode_end(0, &opts, &mut list);
    encode_frame(MessageCode::DATA, &list, &mut server);
    let now = std::time::Instant::now();
    if conn.handle_input(&server).is_err() {
        return;
    }
    let Some(params) = conn.signature_params(false) else {
        return;
    };
    let basis = [0u8; 2000];
    let Ok(sig) = Signature::compute(&basis[..], 2000, params, |_| {}) else {
        return;
    };
    while let Some(ev) = conn.poll_event() {
        if let crate::connection::Event::FileList(l) = ev {
            for (ndx, e) in l.iter() {
                if e.kind() == crate::flist::FileKind::Regular
                    && conn.request_with(ndx, &sig).is_err()
                {
                    return;
                }
            }
            if conn.finish_requests().is_err() {
                return;
            }
        }
    }
    while conn.poll_transmit(now).is_some() {}
    // The file's header: ndx 0, iflags, the echoed head.
    let mut header = vec![0x01];
    header.extend_from_slice(&crate::connection::ITEM_TRANSFER.to_le_bytes());
    let head: SumHead = sig.head;
    head.encode(&mut header);
    let mut framed = Vec::new();
    encode_frame(MessageCode::DATA, &header, &mut framed);
    for chunk in data.chunks(4096) {
        encode_frame(MessageCode::DATA, chunk, &mut framed);
    }
    for chunk in framed.chunks(11) {
        if conn.handle_input(chunk).is_err() {
            return;
        }
        while let Some(ev) = conn.poll_event() {
            if let crate::connection::Event::CopyBlock { len, .. } = ev {
                if conn.handle_block_data(&vec![0u8; len as usize]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.handle_eof();
}

#[cfg(test)]
mod tests;
