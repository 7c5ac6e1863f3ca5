//! Writes the fuzz corpus seeds from real transcripts: a [`RecordingProxy`] sits between
//! `client::pull` (and `client::list_modules`) and stock rsync daemons (3.5.0 and 3.2.7,
//! protocols 30 to 32), and what the daemons sent is cut into the shape each fuzz entry
//! point expects (`rsync_proto::fuzzing`). Ignored by default; run it after a protocol
//! change:
//!
//! ```sh
//! cargo test -p rsync-proto --test fuzz_seeds -- --ignored
//! ```
//!
//! The `sum_head` and `tokens` seeds are built with the encoders instead (see
//! `encoder_seeds`): their entry points run a fixed session shape that no transcript has.

// Helpers outside #[test] fns too: a failed fixture step fails the test at once.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use rsync_proto::client::{self, FsSink, PullOptions};
use rsync_proto::delta::{encode_literal_file, sum_sizes, Token};
use rsync_proto::mux::{Demuxed, Demuxer};
use rsync_proto::setup::compat;
use rsync_proto::wire::{decode_varint, decode_vstring, put_i32};
use rsync_proto::ProtocolVersion;
use ubackup_testkit::hostile::RecordingProxy;
use ubackup_testkit::{require_rsync, DaemonBuilder, Module, RsyncVersion};

fn seeds_dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    fs::create_dir_all(&d).unwrap();
    d
}

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("a.txt"), b"hello, backup\n").unwrap();
    fs::write(
        root.join("sub/b.bin"),
        (0..2000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(root.join("sub/deeper/c"), b"").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
}

/// The length of the daemon's unmultiplexed prefix: greeting, replies up to
/// `@RSYNCD: OK`, compat flags, checksum list, seed.
fn setup_len(server: &[u8], proto: ProtocolVersion) -> (usize, u32) {
    let mut pos = 0;
    loop {
        let nl = server[pos..].iter().position(|&b| b == b'\n').unwrap();
        let line = &server[pos..pos + nl];
        pos += nl + 1;
        if line == b"@RSYNCD: OK" {
            break;
        }
    }
    let mut cf = 0;
    if proto.has_compat_flags() {
        let (v, used) = decode_varint(&server[pos..]).unwrap().unwrap();
        cf = v as u32;
        pos += used;
        if cf & compat::VARINT_FLIST_FLAGS != 0 {
            let (_, used) = decode_vstring(&server[pos..], 1024).unwrap().unwrap();
            pos += used;
        }
    }
    (pos + 4, cf)
}

fn demux(frames: &[u8]) -> Vec<u8> {
    let mut d = Demuxer::new(1 << 20, 1 << 24);
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok((used, item)) = d.decode(&frames[pos..]) {
        if let Some(Demuxed::Data(b)) = item {
            out.extend_from_slice(&b);
        }
        if used == 0 {
            break;
        }
        pos += used;
    }
    out
}

#[test]
#[ignore = "writes fuzz/seeds from real daemons; run by hand"]
fn record_fuzz_seeds_from_real_daemons() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for v in RsyncVersion::ALL {
        if require_rsync(v).is_none() {
            continue;
        }
        let tree = tempfile::tempdir().unwrap();
        small_tree(tree.path());
        let daemon = DaemonBuilder::new(v)
            .motd("Welcome to the seed daemon.\nSecond line of the MOTD.")
            .module(Module::new("mod", tree.path()).comment("seed module"))
            .start()
            .unwrap();
        let label = v.label();

        // A module listing: the daemon_response seed.
        let proxy = RecordingProxy::start(daemon.addr()).unwrap();
        let src: client::Source = proxy.url("").parse().unwrap();
        rt.block_on(client::list_modules(&src, &PullOptions::default()))
            .unwrap();
        let (_, server) = proxy.finish().unwrap();
        let nl = server.iter().position(|&b| b == b'\n').unwrap();
        fs::write(
            seeds_dir("greeting").join(format!("real-{label}")),
            &server[..nl],
        )
        .unwrap();
        fs::write(
            seeds_dir("daemon_response").join(format!("real-{label}-listing")),
            &server[nl + 1..],
        )
        .unwrap();

        for p in [30u32, 31, 32] {
            let proto = ProtocolVersion::new(p).unwrap();
            let proxy = RecordingProxy::start(daemon.addr()).unwrap();
            let src: client::Source = proxy.url("mod/").parse().unwrap();
            let dest = tempfile::tempdir().unwrap();
            let opts = PullOptions {
                protocol: proto,
                recursive: true,
                links: true,
                ..PullOptions::default()
            };
            let mut sink = FsSink::new(dest.path().join("d")).unwrap();
            rt.block_on(client::pull(&src, &opts, &mut sink)).unwrap();
            drop(sink);
            let (_, server) = proxy.finish().unwrap();
            let name = format!("real-{label}-p{p}");
            // receiver: first byte picks the protocol (29 + b & 3), then the daemon's bytes.
            let mut seed = vec![(p - 29) as u8];
            seed.extend_from_slice(&server);
            fs::write(seeds_dir("receiver").join(&name), seed).unwrap();
            let nl = server.iter().position(|&b| b == b'\n').unwrap();
            let (setup, cf) = setup_len(&server, proto);
            let after_greeting = &server[nl + 1..];
            let ok = after_greeting
                .windows(12)
                .position(|w| w == b"@RSYNCD: OK\n")
                .unwrap();
            fs::write(
                seeds_dir("daemon_response").join(&name),
                &after_greeting[..ok + 12],
            )
            .unwrap();
            let frames = &server[setup..];
            fs::write(seeds_dir("mux").join(&name), frames).unwrap();
            let stream = demux(frames);
            fs::write(seeds_dir("wire").join(&name), &stream).unwrap();
            // flist: first byte picks the options (see fuzzing::flist_options).
            let safe = cf & compat::SAFE_FLIST != 0 || proto.always_safe_flist();
            let mut b = (p - 29) as u8 | 16;
            if cf & compat::VARINT_FLIST_FLAGS != 0 {
                b |= 4;
            }
            if safe {
                b |= 8;
            }
            if cf & compat::ID0_NAMES != 0 {
                b |= 128;
            }
            let mut seed = vec![b];
            seed.extend_from_slice(&stream);
            fs::write(seeds_dir("flist").join(&name), seed).unwrap();
        }
    }
    encoder_seeds();
}

/// Seeds for the entry points whose session shape is fixed (`fuzzing::sum_head`,
/// `fuzzing::tokens`), built with the encoders.
fn encoder_seeds() {
    for (i, len) in [0u64, 1, 700, 2000, 490_000, 1 << 30]
        .into_iter()
        .enumerate()
    {
        for p in [29u32, 32] {
            let head = sum_sizes(len, ProtocolVersion::new(p).unwrap(), 16, i % 2 == 0);
            let mut seed = vec![(p - 29) as u8 | (16 << 2)];
            head.encode(&mut seed);
            fs::write(seeds_dir("sum_head").join(format!("len{len}-p{p}")), seed).unwrap();
        }
    }
    // tokens: a 2000-byte file against a 2000-byte basis of zeros (three blocks).
    let mut literal = Vec::new();
    encode_literal_file(&[b'x'; 2000], 700, &mut literal);
    literal.extend_from_slice(&[0u8; 16]);
    fs::write(seeds_dir("tokens").join("literal"), literal).unwrap();
    let mut blocks = Vec::new();
    for b in 0..3u32 {
        put_i32(&mut blocks, Token::Block(b).to_raw());
    }
    put_i32(&mut blocks, 0);
    blocks.extend_from_slice(&[0u8; 16]);
    fs::write(seeds_dir("tokens").join("blocks"), blocks).unwrap();
    let mut mixed = Vec::new();
    put_i32(&mut mixed, Token::Block(0).to_raw());
    put_i32(&mut mixed, 5);
    mixed.extend_from_slice(b"hello");
    put_i32(&mut mixed, Token::Block(2).to_raw());
    put_i32(&mut mixed, 0);
    mixed.extend_from_slice(&[0u8; 16]);
    fs::write(seeds_dir("tokens").join("mixed"), mixed).unwrap();
}

/// Seeds for the `tokens_*` targets: literal-only, block-only and mixed streams from the
/// encoder, against the 700-byte basis blocks (`0x5a`) the entry points supply.
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn compressed_token_seeds() {
    use rsync_proto::delta::{CompressedTokenEncoder, CompressionKind};
    let block = [0x5au8; 700];
    let text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i},'u{}');\n", i % 13).into_bytes())
        .collect();
    for kind in CompressionKind::ALL {
        let target = format!("tokens_{}", kind.name());
        fs::create_dir_all(seeds_dir(&target)).unwrap();
        // (literal bytes, then the block token that follows them, or the end of the file)
        type Part<'a> = (&'a [u8], Option<u32>);
        let streams: [(&str, Vec<Part>); 3] = [
            ("literal", vec![(&text[..], None)]),
            (
                "blocks",
                vec![(&[], Some(0)), (&[], Some(1)), (&[], Some(2)), (&[], None)],
            ),
            (
                "mixed",
                vec![
                    (&text[..500], Some(0)),
                    (b"hello", Some(2)),
                    (&text[..100], None),
                ],
            ),
        ];
        for (name, parts) in streams {
            let mut enc = CompressedTokenEncoder::new(kind, None).unwrap();
            // tokens_zlib reads its protocol from the first byte (even = 31); the stream
            // follows it. The other targets take the stream from the first byte.
            let mut out = if kind == CompressionKind::Zlib {
                vec![0u8]
            } else {
                Vec::new()
            };
            for (data, tok) in parts {
                match tok {
                    Some(i) => enc.block(data, i, &block, &mut out).unwrap(),
                    None => enc.end(data, &mut out).unwrap(),
                }
            }
            fs::write(seeds_dir(&target).join(name), out).unwrap();
        }
    }
    // tokens_zlib with bit 1 of the first byte: basis blocks longer than one stored block
    // (0xffff + 4465 bytes of 0x5a), at protocol 31 (2) and 30 (3). The block is constant, so
    // protocol 30's repeated first piece leaves the same history and one stream serves both.
    let long = vec![0x5au8; 0xffff + 4465];
    for (name, first) in [("long-blocks-p31", 2u8), ("long-blocks-p30", 3u8)] {
        let mut enc = CompressedTokenEncoder::new(CompressionKind::Zlib, None).unwrap();
        let mut out = vec![first];
        enc.block(&text[..300], 0, &long, &mut out).unwrap();
        enc.block(b"hello", 1, &long, &mut out).unwrap();
        enc.end(&long[..200], &mut out).unwrap();
        fs::write(seeds_dir("tokens_zlib").join(name), out).unwrap();
    }
}
