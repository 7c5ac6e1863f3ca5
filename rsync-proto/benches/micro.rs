//! In-memory micro-benchmarks of the receiver's hot paths, each reporting bytes per second:
//! the rolling checksum, every strong checksum (per block and whole-file), a basis
//! signature, the file-list decoder (100k entries), token application (a file's literal
//! tokens through [`Connection::handle_input`], demux and whole-file hash included) and the
//! mux demuxer.
//!
//! ```text
//! cargo bench -p rsync-proto --bench micro
//! cargo bench -p rsync-proto --bench micro -- rolling      # one group
//! ```
//!
//! Targets on one core of the reference machine (BENCHMARKS.md): rolling checksum ≥ 2 GB/s,
//! xxh128 block sums ≥ 5 GB/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rsync_proto::checksum::{block_checksum, rolling_checksum, ChecksumKind, FileHasher};
use rsync_proto::delta::{Signature, SignatureParams};
use rsync_proto::flist::{FileList, FlistDecoder, FlistItem};
use rsync_proto::mux::{encode_frame, Demuxed, Demuxer, MessageCode};
use rsync_proto::{Event, Limits, ProtocolVersion};

mod common;
use common as session;

const MIB: usize = 1 << 20;
/// A socket read's worth (the driver reads 256 KiB at a time).
const READ: usize = 256 * 1024;

fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn bench_rolling(c: &mut Criterion) {
    let data = session::content(MIB, 1);
    let mut g = short(c, "rolling-checksum");
    g.throughput(Throughput::Bytes(data.len() as u64));
    // 700 bytes: small files' blocks; 32 KiB: a 1 GiB file's (√len); 128 KiB: the cap.
    for block in [700usize, 32 * 1024, 128 * 1024] {
        g.bench_with_input(BenchmarkId::new("block", block), &block, |b, &block| {
            b.iter(|| {
                let mut acc = 0u32;
                for chunk in data.chunks(block) {
                    acc ^= rolling_checksum(black_box(chunk));
                }
                acc
            })
        });
    }
    g.finish();
}

fn bench_strong(c: &mut Criterion) {
    let data = session::content(MIB, 2);
    let mut g = short(c, "block-checksum-32KiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for kind in ChecksumKind::NEGOTIABLE {
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                let mut acc = 0u8;
                for chunk in data.chunks(32 * 1024) {
                    acc ^= block_checksum(kind, black_box(chunk), session::SEED, true)[0];
                }
                acc
            })
        });
    }
    g.finish();
    let mut g = short(c, "file-checksum");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for kind in ChecksumKind::NEGOTIABLE {
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                let mut h = FileHasher::new(kind, session::SEED);
                // In 32 KiB pieces, as literal tokens arrive.
                for chunk in data.chunks(32 * 1024) {
                    h.update(black_box(chunk));
                }
                h.finish()
            })
        });
    }
    g.finish();
}

fn bench_signature(c: &mut Criterion) {
    let data = session::content(64 * MIB, 3);
    let mut g = short(c, "signature-64MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for kind in [ChecksumKind::Xxh128, ChecksumKind::Md5] {
        let params = SignatureParams {
            protocol: ProtocolVersion::V32,
            kind,
            seed: session::SEED,
            seed_first: true,
            full: false,
        };
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                Signature::compute(&data[..], data.len() as u64, params, |_| {}).expect("sig")
            })
        });
    }
    g.finish();
}

/// 100k entries in 1,000 directories, names like `dir0042/file0042017.dat`.
fn flist_entries(n: usize) -> Vec<rsync_proto::FileEntry> {
    (0..n)
        .map(|i| {
            let name = format!("dir{:04}/file{:07}.dat", i / 100, i);
            session::entry(
                name.as_bytes(),
                (i as u64 * 7919) % 100_000,
                1_700_000_000 + (i as i64 % 3600),
            )
        })
        .collect()
}

fn bench_flist(c: &mut Criterion) {
    let bytes = session::flist_bytes(&flist_entries(100_000));
    let mut g = short(c, "flist-decode-100k");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut d = FlistDecoder::new(session::flist_options(), Limits::default());
            let mut pos = 0;
            let mut n = 0;
            while let Some((item, used)) = d.decode(&bytes[pos..]).expect("decode") {
                pos += used;
                match item {
                    FlistItem::Entry(_) => n += 1,
                    FlistItem::End { .. } => break,
                }
            }
            n
        })
    });
    g.bench_function("decode-and-sort", |b| {
        b.iter(|| {
            let mut d = FlistDecoder::new(session::flist_options(), Limits::default());
            let mut pos = 0;
            let mut entries = Vec::new();
            while let Some((item, used)) = d.decode(&bytes[pos..]).expect("decode") {
                pos += used;
                match item {
                    FlistItem::Entry(e) => entries.push(e),
                    FlistItem::End { .. } => break,
                }
            }
            FileList::sorted(entries, ProtocolVersion::V32).len()
        })
    });
    g.finish();
}

fn bench_tokens(c: &mut Criterion) {
    let len = 16 * MIB;
    let content = session::content(len, 4);
    let list = session::flist_bytes(&[session::entry(b"f.bin", len as u64, 1_700_000_000)]);
    let data = session::file_data(0, &content);
    let mut g = short(c, "token-application");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("literal-16MiB", |b| {
        b.iter_batched(
            || session::connection_awaiting_data(&list, 0),
            |mut conn| {
                let now = Instant::now();
                let mut got = 0usize;
                for piece in data.chunks(READ) {
                    conn.handle_input(piece).expect("data");
                    while let Some(ev) = conn.poll_event() {
                        if let Event::FileData(_, d) = ev {
                            got += d.len();
                        }
                    }
                    while conn.poll_transmit(now).is_some() {}
                }
                assert_eq!(got, len);
                conn
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_demux(c: &mut Criterion) {
    // 16 MiB of 32 KiB data frames with a MSG_INFO after every 32 of them.
    let payload = session::content(session::FRAME, 5);
    let mut stream = Vec::new();
    for i in 0..512 {
        encode_frame(MessageCode::DATA, &payload, &mut stream);
        if i % 32 == 31 {
            encode_frame(MessageCode::INFO, b"progress\n", &mut stream);
        }
    }
    let mut g = short(c, "demux");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("16MiB-in-256KiB-reads", |b| {
        b.iter(|| {
            let mut d = Demuxer::new(64 * 1024, 1 << 24);
            let mut data = 0usize;
            // What a read left undecoded (a header or message split by the read boundary).
            let mut carry: Vec<u8> = Vec::new();
            for read in stream.chunks(READ) {
                let joined;
                let buf: &[u8] = if carry.is_empty() {
                    read
                } else {
                    carry.extend_from_slice(read);
                    joined = std::mem::take(&mut carry);
                    &joined
                };
                let mut pos = 0;
                loop {
                    let (used, item) = d.decode(&buf[pos..]).expect("demux");
                    pos += used;
                    if let Some(Demuxed::Data(v)) = item {
                        data += v.len();
                    }
                    if used == 0 {
                        break;
                    }
                }
                carry = buf[pos..].to_vec();
            }
            data
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_rolling,
    bench_strong,
    bench_signature,
    bench_flist,
    bench_tokens,
    bench_demux
);
criterion_main!(benches);
