//! The `tokens_*` harnesses against decompression and token-run bombs: each input stops at
//! [`TOKENS_OUTPUT_BUDGET`], however much the stream stands for.

use super::*;
use crate::delta::compressed::{
    CompressedTokenEncoder, CompressionKind, END_FLAG, OUTPUT_CHUNK, TOKENRUN_LONG,
};

/// A stream of `literal` zero bytes and the end, from the encoder (the shape stock senders use).
fn literal_bomb(kind: CompressionKind, literal: usize) -> Vec<u8> {
    let mut enc = CompressedTokenEncoder::new(kind, None).expect("encoder");
    let mut out = Vec::new();
    enc.end(&vec![0u8; literal], &mut out).expect("encode");
    out
}

/// `runs` TOKENRUN_LONG tokens of 65536 blocks each (block 0 and 65535 after it), then the end.
fn run_bomb(runs: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..runs {
        out.push(TOKENRUN_LONG);
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&u16::MAX.to_le_bytes());
    }
    out.push(END_FLAG);
    out
}

#[test]
fn a_64_mib_zstd_bomb_stops_at_the_output_budget() {
    // The kind of input that filled the corpus: a few KiB that decode to 64 MiB, which the
    // old harness decoded whole (26-494 ms per execution).
    let bomb = literal_bomb(CompressionKind::Zstd, 64 << 20);
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    let run = decode_tokens(
        CompressionKind::Zstd,
        ProtocolVersion::V32,
        SHORT_BLOCK,
        &bomb,
    );
    assert!(run.over_budget, "{run:?}");
    assert!(run.output >= TOKENS_OUTPUT_BUDGET, "{run:?}");
    assert!(
        run.output < TOKENS_OUTPUT_BUDGET + OUTPUT_CHUNK as u64,
        "{run:?}"
    );
}

#[test]
fn the_budget_still_lets_a_whole_chunk_resume() {
    // Under the budget the harness decodes everything, including the output that fills the
    // 64 KiB buffer and is resumed from the same chunk: the path the budget must not cut off.
    for kind in CompressionKind::ALL {
        let len = 3 * OUTPUT_CHUNK + 123;
        let stream = literal_bomb(kind, len);
        let run = decode_tokens(kind, ProtocolVersion::V32, SHORT_BLOCK, &stream);
        assert!(!run.over_budget, "{kind}: {run:?}");
        assert_eq!(run.output, len as u64, "{kind}");
        assert!(run.items > 4, "{kind}: {run:?}");
    }
}

#[test]
fn deflate_bombs_stop_at_the_output_budget() {
    for kind in [CompressionKind::Zlib, CompressionKind::Zlibx] {
        let bomb = literal_bomb(kind, 16 << 20);
        let run = decode_tokens(kind, ProtocolVersion::V31, SHORT_BLOCK, &bomb);
        assert!(run.over_budget, "{kind}: {run:?}");
        assert!(
            run.output < TOKENS_OUTPUT_BUDGET + OUTPUT_CHUNK as u64,
            "{kind}: {run:?}"
        );
    }
}

#[test]
fn token_run_bombs_stop_at_the_output_budget() {
    // 8 bytes per 65536 blocks: 64 runs are 4 GiB of copied blocks, and for zlib as many
    // bytes inflated into the history. Blocks count towards the budget like data.
    let bomb = run_bomb(64);
    for kind in CompressionKind::ALL {
        for block_len in [SHORT_BLOCK, LONG_BLOCK] {
            let run = decode_tokens(kind, ProtocolVersion::V30, block_len, &bomb);
            assert!(run.over_budget, "{kind}: {run:?}");
            assert!(
                run.output < TOKENS_OUTPUT_BUDGET + block_len as u64,
                "{kind}: {run:?}"
            );
            assert_eq!(
                run.items,
                TOKENS_OUTPUT_BUDGET.div_ceil(block_len as u64),
                "{kind}"
            );
        }
    }
}

#[test]
fn tokens_zlib_reaches_long_blocks_at_both_protocols() {
    // The first byte picks a block longer than one stored block (bit 1): the history is fed
    // in pieces, and below protocol 31 the first piece again for each. With a constant
    // block both histories hold the same bytes, so one encoded stream decodes at both.
    let block = [0x5au8; LONG_BLOCK];
    let mut enc = CompressedTokenEncoder::new(CompressionKind::Zlib, None).expect("encoder");
    let mut stream = Vec::new();
    enc.block(b"abc", 0, &block, &mut stream).expect("encode");
    enc.end(&[0x5a; 300], &mut stream).expect("encode");
    for proto in [ProtocolVersion::V30, ProtocolVersion::V31] {
        let run = decode_tokens(CompressionKind::Zlib, proto, LONG_BLOCK, &stream);
        assert_eq!(run.output, (3 + LONG_BLOCK + 300) as u64, "{proto:?}");
        assert!(!run.over_budget);
    }
}

#[test]
fn every_committed_seed_decodes_to_its_end() {
    // The encoder's seeds are what the fuzzer starts from: each must be a whole valid stream
    // in the shape its entry point reads (first byte of tokens_zlib included), or it explores
    // nothing. Inputs a round added (named by their SHA-1) may be anything.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for kind in CompressionKind::ALL {
        let target = format!("tokens_{}", kind.name());
        let mut seen = 0;
        for entry in std::fs::read_dir(dir.join(&target)).expect("seed dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let data = std::fs::read(&path).expect("seed");
            let (proto, block, stream) = if kind == CompressionKind::Zlib {
                let first = data.first().copied().unwrap_or(0);
                let proto = if first & 1 == 1 {
                    ProtocolVersion::V30
                } else {
                    ProtocolVersion::V31
                };
                let block = if first & 2 == 2 {
                    LONG_BLOCK
                } else {
                    SHORT_BLOCK
                };
                (proto, block, data.get(1..).unwrap_or_default())
            } else {
                (ProtocolVersion::V32, SHORT_BLOCK, &data[..])
            };
            let run = decode_tokens(kind, proto, block, stream);
            assert_eq!(run.ends, 1, "{}: {run:?}", path.display());
            assert!(!run.over_budget, "{}: {run:?}", path.display());
            seen += 1;
        }
        assert!(seen >= 3, "{target}: {seen} seeds");
    }
}

/// Writes the inputs of the kind that used to fill the corpora of the `tokens_*` targets,
/// in the shape each entry point reads, to `$UBACKUP_FUZZ_BOMBS/<target>/`: for the
/// before/after measurement in `fuzz/README.md`.
#[test]
#[ignore = "writes files; run by hand with UBACKUP_FUZZ_BOMBS set"]
fn write_token_bombs() {
    let Some(dir) = std::env::var_os("UBACKUP_FUZZ_BOMBS") else {
        panic!("set UBACKUP_FUZZ_BOMBS to a directory");
    };
    let dir = std::path::PathBuf::from(dir);
    for kind in CompressionKind::ALL {
        let target = dir.join(format!("tokens_{}", kind.name()));
        std::fs::create_dir_all(&target).expect("mkdir");
        let prefix: &[u8] = if kind == CompressionKind::Zlib {
            &[0]
        } else {
            &[]
        };
        let literal = match kind {
            CompressionKind::Zstd => 64 << 20,
            // A deflate or lz4 chunk expands at most ~1000:1 or 255:1; what fits in 4 KiB.
            CompressionKind::Zlib | CompressionKind::Zlibx => 4 << 20,
            CompressionKind::Lz4 => 1 << 20,
        };
        for (name, body) in [
            ("bomb-literal", literal_bomb(kind, literal)),
            ("bomb-runs", run_bomb(400)),
        ] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&body);
            std::fs::write(target.join(name), input).expect("write");
        }
    }
}
