use super::*;
use proptest::prelude::*;

/// One piece of a file as a sender describes it.
#[derive(Debug, Clone)]
enum Op {
    Literal(Vec<u8>),
    Block(u32),
}

const BLEN: usize = 700;

fn basis(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BLEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 97) as u8)
        .collect()
}

fn block_of(basis: &[u8], b: u32) -> &[u8] {
    &basis[b as usize * BLEN..(b as usize + 1) * BLEN]
}

/// Encodes files (each a list of ops) with `kind`, as a stock sender would.
fn encode(kind: CompressionKind, files: &[Vec<Op>], basis: &[u8]) -> Vec<u8> {
    let mut enc = CompressedTokenEncoder::new(kind, None).expect("encoder");
    let mut out = Vec::new();
    for ops in files {
        let mut lit = Vec::new();
        for op in ops {
            match op {
                Op::Literal(d) => lit.extend_from_slice(d),
                Op::Block(b) => {
                    enc.block(&lit, *b, block_of(basis, *b), &mut out)
                        .expect("encode");
                    lit.clear();
                }
            }
        }
        enc.end(&lit, &mut out).expect("encode");
    }
    out
}

fn expected(files: &[Vec<Op>], basis: &[u8]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|ops| {
            let mut f = Vec::new();
            for op in ops {
                match op {
                    Op::Literal(d) => f.extend_from_slice(d),
                    Op::Block(b) => f.extend_from_slice(block_of(basis, *b)),
                }
            }
            f
        })
        .collect()
}

/// Decodes `input` fed in pieces cut at `cuts`, rebuilding each file from
/// the data and the basis blocks, as the receiver does.
fn decode_split(
    kind: CompressionKind,
    protocol: ProtocolVersion,
    input: &[u8],
    cuts: &[usize],
    basis: &[u8],
) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut dec = CompressedTokenDecoder::new(kind, protocol, &Limits::default())?;
    let mut files = Vec::new();
    let mut cur = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        buf.extend_from_slice(&input[fed..p.max(fed)]);
        fed = p.max(fed);
        let mut pos = 0;
        while let Some((item, used)) = dec.decode(&buf[pos..])? {
            pos += used;
            match item {
                CompressedItem::Data(n) => {
                    assert_eq!(dec.output().len(), n);
                    assert!(n <= OUTPUT_CHUNK);
                    cur.extend_from_slice(dec.output());
                }
                CompressedItem::Block(b) => {
                    let data = basis
                        .get(b as usize * BLEN..(b as usize + 1) * BLEN)
                        .ok_or(ProtocolError::Misuse("block out of range"))?;
                    cur.extend_from_slice(data);
                    dec.see_block(data)?;
                }
                CompressedItem::End => files.push(std::mem::take(&mut cur)),
            }
        }
        buf.drain(..pos);
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    assert!(dec.at_file_boundary());
    Ok(files)
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let words = [
        &b"INSERT INTO "[..],
        b"users ",
        b"VALUES (",
        b"'alice', ",
        b"42, ",
        b"NULL);\n",
    ];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize]);
    }
    out.truncate(n);
    out
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn advertises_stock_compress_order() {
    assert_eq!(CompressionKind::advertised_list(), "zstd lz4 zlibx zlib");
}

#[test]
fn chooses_first_common_compression_in_stock_order() {
    // The 3.5.0 and 3.2.7 daemons both send "zstd lz4 zlibx zlib none" (seen in
    // their `--version` compress lists; a server keeps `none`).
    assert_eq!(
        CompressionKind::choose("zstd lz4 zlibx zlib none"),
        Some(CompressionKind::Zstd)
    );
    assert_eq!(
        CompressionKind::choose("zlib zlibx"),
        Some(CompressionKind::Zlibx)
    );
    assert_eq!(CompressionKind::choose("none"), None);
    assert_eq!(
        CompressionKind::from_name("LZ4"),
        Some(CompressionKind::Lz4)
    );
}

#[test]
fn level_zero_turns_off_only_deflate() {
    assert!(CompressionKind::Zlib.level_turns_off(0));
    assert!(CompressionKind::Zlibx.level_turns_off(0));
    assert!(!CompressionKind::Zstd.level_turns_off(0));
    assert!(!CompressionKind::Lz4.level_turns_off(0));
    assert!(!CompressionKind::Zlib.level_turns_off(1));
}

#[test]
fn decodes_hand_written_token_flags() {
    // An lz4 stream written by hand from token.c's flag table: block 3
    // (TOKEN_REL+3), blocks 5..=7 (TOKENRUN_REL+2, run 2), block 100
    // (TOKEN_LONG), blocks 200..=201 (TOKENRUN_LONG, run 1), END.
    let mut s = vec![TOKEN_REL | 3, TOKENRUN_REL | 2, 2, 0, TOKEN_LONG];
    s.extend_from_slice(&100i32.to_le_bytes());
    s.push(TOKENRUN_LONG);
    s.extend_from_slice(&200i32.to_le_bytes());
    s.extend_from_slice(&[1, 0, END_FLAG]);
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Lz4,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    let mut pos = 0;
    let mut items = Vec::new();
    while let Some((item, used)) = dec.decode(&s[pos..]).expect("decode") {
        pos += used;
        items.push(item);
    }
    use CompressedItem::{Block, End};
    assert_eq!(
        items,
        [
            Block(3),
            Block(5),
            Block(6),
            Block(7),
            Block(100),
            Block(200),
            Block(201),
            End
        ]
    );
    assert_eq!(pos, s.len());
}

#[test]
fn encoder_writes_runs_like_send_token() {
    // Blocks 0,1,2 with no literal between them form one run; block 70 is
    // more than 63 after the run's end, so it is TOKEN_LONG.
    let b = basis(1, 80);
    let mut enc = CompressedTokenEncoder::new(CompressionKind::Lz4, None).expect("encoder");
    let mut out = Vec::new();
    for i in [0u32, 1, 2, 70] {
        enc.block(&[], i, block_of(&b, i), &mut out).expect("block");
    }
    enc.end(&[], &mut out).expect("end");
    let mut want = vec![TOKENRUN_REL, 2, 0, TOKEN_LONG];
    want.extend_from_slice(&70i32.to_le_bytes());
    want.push(END_FLAG);
    assert_eq!(out, want);
}

#[test]
fn roundtrips_every_algorithm_with_blocks_and_literals() {
    let b = basis(7, 40);
    let files = vec![
        vec![Op::Literal(text(100_000, 1))],
        vec![
            Op::Block(0),
            Op::Block(1),
            Op::Literal(text(5000, 2)),
            Op::Block(5),
            Op::Literal(noise(3000, 3)),
            Op::Block(39),
            Op::Block(2),
        ],
        vec![],
        vec![Op::Literal(noise(70_000, 4)), Op::Block(3)],
    ];
    for kind in CompressionKind::ALL {
        let wire = encode(kind, &files, &b);
        let got = decode_split(kind, ProtocolVersion::V32, &wire, &[], &b)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(got, expected(&files, &b), "{kind}");
    }
}

#[test]
fn compressible_data_shrinks_on_the_wire() {
    let data = text(1 << 20, 9);
    for kind in CompressionKind::ALL {
        let wire = encode(kind, &[vec![Op::Literal(data.clone())]], &[]);
        assert!(
            wire.len() * 2 < data.len(),
            "{kind}: {} bytes for {}",
            wire.len(),
            data.len()
        );
    }
}

#[test]
fn zlib_needs_the_matched_blocks_in_its_history() {
    // Literals that repeat a matched block compress against it. Only zlib
    // feeds the block to the inflater; decoding zlib's stream as zlibx
    // (no history feeding) must therefore go wrong, which shows the feeding
    // is what makes zlib work.
    let b = basis(3, 4);
    let mut lit = block_of(&b, 1).to_vec();
    lit.extend_from_slice(&text(2000, 5));
    let files = vec![vec![Op::Block(1), Op::Literal(lit)]];
    let wire = encode(CompressionKind::Zlib, &files, &b);
    let ok = decode_split(CompressionKind::Zlib, ProtocolVersion::V32, &wire, &[], &b)
        .expect("zlib decodes");
    assert_eq!(ok, expected(&files, &b));
    let wrong = decode_split(CompressionKind::Zlibx, ProtocolVersion::V32, &wire, &[], &b);
    assert!(wrong.map_or(true, |f| f != expected(&files, &b)));
}

#[test]
fn zlib_history_of_long_blocks_repeats_the_first_piece_below_31() {
    // A 0x1_0000-byte block enters the history as two stored blocks of
    // 0xffff and 1 bytes. From protocol 31 the second holds the block's last
    // byte; below 31 it holds its first byte again (see_deflate_token). The
    // literals that follow repeat the history's last 300 bytes, so they only
    // decode with exactly that history.
    let long: Vec<u8> = noise(0x1_0000, 11);
    let mut hist30 = long[..0xffff].to_vec();
    hist30.push(long[0]);
    assert_ne!(long[0xffff], long[0]);
    for (proto, hist) in [
        (ProtocolVersion::V31, &long),
        (ProtocolVersion::V30, &hist30),
    ] {
        let mut dec = CompressedTokenDecoder::new(CompressionKind::Zlib, proto, &Limits::default())
            .expect("decoder");
        let mut e = CompressedTokenEncoder::new(CompressionKind::Zlib, None).expect("encoder");
        let mut out = Vec::new();
        // Our encoder always advances: give it the history this decoder builds.
        e.block(&[], 0, hist, &mut out).expect("block");
        let lit = hist[hist.len() - 300..].to_vec();
        e.end(&lit, &mut out).expect("end");
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((item, used)) = dec.decode(&out[pos..]).expect("decode") {
            pos += used;
            match item {
                CompressedItem::Data(_) => got.extend_from_slice(dec.output()),
                CompressedItem::Block(_) => dec.see_block(&long).expect("history"),
                CompressedItem::End => break,
            }
        }
        assert_eq!(got, lit, "protocol {proto}");
        assert!(
            out.len() < 100,
            "the literals were sent as a match ({} bytes)",
            out.len()
        );
    }
}

#[test]
fn zstd_context_spans_files() {
    // The second file repeats the first: zstd compresses it against the
    // first file's data, so decoding needs the same context across files.
    let a = noise(50_000, 21);
    let files = vec![vec![Op::Literal(a.clone())], vec![Op::Literal(a.clone())]];
    let wire = encode(CompressionKind::Zstd, &files, &[]);
    assert!(
        wire.len() < 50_000 + 10_000,
        "second file referenced the first"
    );
    let got =
        decode_split(CompressionKind::Zstd, ProtocolVersion::V32, &wire, &[], &[]).expect("decode");
    assert_eq!(got, expected(&files, &[]));
}

#[test]
fn a_zstd_bomb_comes_out_in_bounded_pieces() {
    // 256 MiB of zeros is a few KiB of zstd; each decode call yields at most
    // OUTPUT_CHUNK bytes, so memory stays fixed however far it expands.
    let mut c = zstd_safe::CCtx::create();
    let zeros = vec![0u8; 1 << 20];
    let mut comp = vec![0u8; 1 << 16];
    let mut total_comp = Vec::new();
    for i in 0..256 {
        let mut inb = zstd_safe::InBuffer::around(&zeros);
        let mut outb = zstd_safe::OutBuffer::around(&mut comp[..]);
        let end = if i == 255 {
            ZSTD_EndDirective::ZSTD_e_flush
        } else {
            ZSTD_EndDirective::ZSTD_e_continue
        };
        while inb.pos < zeros.len() {
            c.compress_stream2(&mut outb, &mut inb, ZSTD_EndDirective::ZSTD_e_continue)
                .expect("compress");
        }
        while c.compress_stream2(&mut outb, &mut inb, end).expect("flush") != 0 {}
        let n = outb.pos();
        total_comp.extend_from_slice(&comp[..n]);
    }
    assert!(total_comp.len() <= MAX_DATA_COUNT, "{}", total_comp.len());
    let mut s = Vec::new();
    put_chunks(&total_comp, &mut s);
    s.push(END_FLAG);
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Zstd,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    let (mut pos, mut out, mut calls) = (0, 0u64, 0u64);
    while let Some((item, used)) = dec.decode(&s[pos..]).expect("decode") {
        pos += used;
        calls += 1;
        match item {
            CompressedItem::Data(n) => {
                assert!(n <= OUTPUT_CHUNK);
                out += n as u64;
            }
            CompressedItem::End => break,
            CompressedItem::Block(_) => panic!("no blocks"),
        }
    }
    assert_eq!(out, 256 << 20);
    assert!(calls >= (256 << 20) / OUTPUT_CHUNK as u64);
}

#[test]
fn rejects_a_zstd_window_over_the_limit() {
    // A frame with a 1 GiB window (window descriptor exponent 20 -> 2^30):
    // magic, frame header descriptor 0x00 (no single segment, no checksum),
    // window descriptor (30-10)<<3.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (30 - 10) << 3];
    // A raw last block of 1 byte.
    frame.extend_from_slice(&[0x03, 0x00, 0x00, b'x']);
    let mut s = Vec::new();
    put_chunks(&frame, &mut s);
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Zstd,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    assert_eq!(
        dec.decode(&s),
        Err(ProtocolError::CompressionWindowTooLarge { limit_log: 27 })
    );
    // With a smaller limit, a 16 MiB window (exponent 14 -> 2^24) fails too.
    let limits = Limits {
        max_zstd_window_log: 20,
        ..Limits::default()
    };
    frame[5] = (24 - 10) << 3;
    let mut s = Vec::new();
    put_chunks(&frame, &mut s);
    let mut dec = CompressedTokenDecoder::new(CompressionKind::Zstd, ProtocolVersion::V32, &limits)
        .expect("decoder");
    assert_eq!(
        dec.decode(&s),
        Err(ProtocolError::CompressionWindowTooLarge { limit_log: 20 })
    );
}

#[test]
fn rejects_an_lz4_block_larger_than_stock_output_buffer() {
    // 40,000 zeros compress to a tiny LZ4 block whose output exceeds the
    // 32,912-byte buffer stock rsync decodes into.
    let c = lz4_flex::block::compress(&vec![0u8; 40_000]);
    let mut s = Vec::new();
    put_chunks(&c, &mut s);
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Lz4,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    assert!(matches!(
        dec.decode(&s),
        Err(ProtocolError::Decompress {
            algorithm: CompressionKind::Lz4,
            ..
        })
    ));
}

#[test]
fn rejects_corrupt_data_for_each_algorithm() {
    // 0xff... is neither a valid deflate block type sequence, a zstd magic,
    // nor a well-formed LZ4 block.
    let mut s = Vec::new();
    put_chunks(&[0xff; 64], &mut s);
    s.push(END_FLAG);
    for kind in CompressionKind::ALL {
        let mut dec = CompressedTokenDecoder::new(kind, ProtocolVersion::V32, &Limits::default())
            .expect("decoder");
        let mut pos = 0;
        let err = loop {
            match dec.decode(&s[pos..]) {
                Ok(Some((CompressedItem::End, _))) | Ok(None) => break None,
                Ok(Some((_, used))) => pos += used,
                Err(e) => break Some(e),
            }
        };
        assert!(
            matches!(
                err,
                Some(
                    ProtocolError::Decompress { .. }
                        | ProtocolError::DecompressLostSync { .. }
                        | ProtocolError::DecompressStalled { .. }
                )
            ),
            "{kind}: {err:?}"
        );
    }
}

#[test]
fn rejects_a_deflate_stream_not_at_a_sync_point() {
    // A stored block announcing 10 bytes that carries only 3 before the
    // next flag: the restored `00 00 ff ff` would be file data, not the end
    // of a sync flush.
    let mut s = Vec::new();
    put_chunks(&[0x00, 0x0a, 0x00, 0xf5, 0xff, b'a', b'b', b'c'], &mut s);
    s.push(END_FLAG);
    for kind in [CompressionKind::Zlib, CompressionKind::Zlibx] {
        let mut dec = CompressedTokenDecoder::new(kind, ProtocolVersion::V32, &Limits::default())
            .expect("decoder");
        let (item, used) = dec.decode(&s).expect("data").expect("an item");
        assert_eq!(item, CompressedItem::Data(3));
        assert_eq!(dec.output(), b"abc");
        assert_eq!(
            dec.decode(&s[used..]),
            Err(ProtocolError::DecompressLostSync { algorithm: kind })
        );
    }
}

#[test]
fn rejects_block_indexes_past_the_maximum() {
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Zstd,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    let mut s = vec![TOKEN_LONG];
    s.extend_from_slice(&(-5i32).to_le_bytes());
    assert!(matches!(
        dec.decode(&s),
        Err(ProtocolError::InvalidValue { .. })
    ));
    let mut s = vec![TOKENRUN_LONG];
    s.extend_from_slice(&0x7fff_fff0i32.to_le_bytes());
    s.extend_from_slice(&0xffffu16.to_le_bytes());
    assert!(matches!(
        dec.decode(&s),
        Err(ProtocolError::InvalidValue { .. })
    ));
    // A run count of zero is invalid (recv_compressed_token_num).
    let s = [TOKENRUN_REL, 0, 0];
    assert!(matches!(
        dec.decode(&s),
        Err(ProtocolError::InvalidValue { .. })
    ));
    // Flags between TOKENRUN_LONG and DEFLATED_DATA are not tokens.
    assert!(matches!(
        dec.decode(&[0x05]),
        Err(ProtocolError::InvalidValue { .. })
    ));
}

#[test]
fn waits_for_whole_items() {
    let mut dec = CompressedTokenDecoder::new(
        CompressionKind::Zstd,
        ProtocolVersion::V32,
        &Limits::default(),
    )
    .expect("decoder");
    assert_eq!(dec.decode(&[TOKEN_LONG, 1, 0]), Ok(None));
    assert_eq!(dec.decode(&[DEFLATED_DATA, 10, 0, 0]), Ok(None));
    assert_eq!(dec.decode(&[TOKENRUN_REL]), Ok(None));
    assert_eq!(dec.decode(&[]), Ok(None));
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20_000, any::<u64>(), any::<bool>()).prop_map(|(n, s, c)| Op::Literal(if c {
            text(n, s)
        } else {
            noise(n, s)
        })),
        (0u32..64).prop_map(Op::Block),
    ]
}

fn arb_kind() -> impl Strategy<Value = CompressionKind> {
    prop_oneof![
        Just(CompressionKind::Zstd),
        Just(CompressionKind::Lz4),
        Just(CompressionKind::Zlibx),
        Just(CompressionKind::Zlib),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decode_of_encode_is_identity_at_any_split(
        kind in arb_kind(),
        files in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..8), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let b = basis(5, 64);
        let wire = encode(kind, &files, &b);
        let got = decode_split(kind, ProtocolVersion::V32, &wire, &cuts, &b);
        prop_assert_eq!(got, Ok(expected(&files, &b)));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        crate::fuzzing::tokens_zstd(&data);
        crate::fuzzing::tokens_lz4(&data);
        crate::fuzzing::tokens_zlib(&data);
        crate::fuzzing::tokens_zlibx(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_streams(
        kind in arb_kind(),
        files in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..5), 1..3),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let b = basis(5, 64);
        let mut wire = encode(kind, &files, &b);
        for (at, x) in flips {
            let i = at % wire.len();
            wire[i] ^= x | 1;
        }
        let mut input = vec![match kind {
            CompressionKind::Zstd => 0,
            CompressionKind::Lz4 => 1,
            CompressionKind::Zlibx => 2,
            CompressionKind::Zlib => 3,
        }];
        input.extend_from_slice(&wire);
        crate::fuzzing::compressed_tokens(&input);
    }
}
