//! Delta-transfer tests: `rsync_proto::client` pulling against a basis from real
//! `rsync --daemon` processes (Debian's 3.5.0 and 3.2.7, see `ubackup_testkit::rsync`) on
//! loopback ports picked at run time. A missing rsync binary skips that version, or fails the
//! test when `UBACKUP_INTEROP=required`.
//!
//! * every kind of same-name basis (identical, edited, shorter, longer, shifted, empty,
//!   unrelated) at protocols 29 to 32, with the literal / matched byte counts checked;
//! * every strong checksum forced with `--checksum-choice`;
//! * the 128 KiB block-length cap, which binds only for bases over 16 GiB: a sink that
//!   reports its basis that long puts 128 KiB blocks on the wire (and 131080-byte blocks at
//!   protocol 29); the real thing, a 16 GiB sparse basis, is an ignored test (slow);
//! * the redo phase for real: a relay (`Relay`) that parses the daemon's multiplexed
//!   stream flips one byte of file data, so the whole-file checksum fails and the file is
//!   requested again (whole-file, and against a basis with full-length sums);
//! * resuming an interrupted pull from its partial file;
//! * the basis policies (`Hook`, `File`, `None`) for backups whose names change each time.
//!
//! What arrives is compared with what the daemon served, bytes and mtime and permission bits
//! (`ubackup_testkit::compare_files`).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use common::{cell, pull_ok, source, temp_files_after, versions, KIB, MIB, SETTLE};
use rsync_proto::client::{
    pull, pull_with, Basis, BasisHook, BasisPolicy, Error, FsSink, PullOptions, PullReport, Sink,
    Source,
};
use rsync_proto::delta::sum_sizes;
use rsync_proto::{
    ChecksumKind, Event, FileEntry, FileIndex, FileList, FileOutcome, ProtocolVersion,
};
use ubackup_testkit::{
    check_partials_are_prefixes, compare_files, list_tree, set_mtime, DaemonBuilder, Module,
    RsyncDaemon, PARTIAL_DIR,
};

/// The mtime of every source file.
const SRC_MTIME: i64 = 1_700_000_000;
/// The mtime of every basis: older, so the quick check (size and mtime) never skips a file.
const OLD_MTIME: i64 = 1_500_000_000;

/// Options for a single-file pull announcing `protocol`, bounded in time.
fn options(protocol: ProtocolVersion) -> PullOptions {
    PullOptions {
        protocol,
        timeout: Some(Duration::from_secs(60)),
        connect_timeout: Duration::from_secs(10),
        ..PullOptions::default()
    }
}

/// Pulls `src` into `sink` and returns the result with every event but the file data.
async fn pull_events<S: Sink>(
    src: &Source,
    opts: &PullOptions,
    sink: &mut S,
) -> (Result<PullReport, Error>, Vec<Event>) {
    let mut events = Vec::new();
    let result = pull_with(src, opts, sink, |ev| {
        if !matches!(ev, Event::FileData(..)) {
            events.push(ev.clone());
        }
    })
    .await;
    (result, events)
}

/// The negotiated protocol of a report.
fn negotiated(report: &PullReport, cell: &str) -> anyhow::Result<ProtocolVersion> {
    Ok(report
        .session
        .with_context(|| format!("{cell}: no session in {report:?}"))?
        .protocol)
}

/// A seeded SplitMix64: deterministic bytes without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Overwrites `count` regions of `len` random bytes, one at a random place in each of
/// `count` equal slots of `data` (so they never overlap); returns their offsets.
fn scatter_edits(data: &mut [u8], count: usize, len: usize, rng: &mut Rng) -> Vec<usize> {
    let slot = data.len() / count;
    assert!(slot > len, "{count} edits of {len} bytes do not fit");
    (0..count)
        .map(|i| {
            let off = i * slot + rng.below(slot - len);
            rng.fill(&mut data[off..off + len]);
            off
        })
        .collect()
}

/// Writes `data` to `path` (mode 0644) with `mtime`.
fn write_bytes(path: &Path, data: &[u8], mtime: i64) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    set_mtime(path, mtime)
}

fn names<const N: usize>(names: [&str; N]) -> BTreeSet<String> {
    names.into_iter().map(String::from).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Basis kinds
// ---------------------------------------------------------------------------------------

/// What the destination holds under the source file's name before the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BasisKind {
    /// The source's bytes (with an older mtime).
    Identical,
    /// The source with 16 regions of 4 KiB overwritten.
    Edits,
    /// The source without its last 100 KiB (data was appended since).
    Appended,
    /// The first half of the source.
    Truncated,
    /// One byte, then the source.
    Shifted,
    /// An empty file.
    Empty,
    /// The source, then 1 MiB of junk.
    Larger,
    /// Random bytes of the source's size.
    Unrelated,
}

const BASIS_KINDS: [BasisKind; 8] = [
    BasisKind::Identical,
    BasisKind::Edits,
    BasisKind::Appended,
    BasisKind::Truncated,
    BasisKind::Shifted,
    BasisKind::Empty,
    BasisKind::Larger,
    BasisKind::Unrelated,
];

/// Number and length of the edited regions of [`BasisKind::Edits`].
const EDITS: usize = 16;
const EDIT_LEN: usize = 4096;
/// Bytes missing from an [`BasisKind::Appended`] basis.
const APPENDED: usize = 100 * KIB as usize;

impl BasisKind {
    fn build(self, src: &[u8], rng: &mut Rng) -> Vec<u8> {
        match self {
            BasisKind::Identical => src.to_vec(),
            BasisKind::Edits => {
                let mut b = src.to_vec();
                scatter_edits(&mut b, EDITS, EDIT_LEN, rng);
                b
            }
            BasisKind::Appended => src[..src.len() - APPENDED].to_vec(),
            BasisKind::Truncated => src[..src.len() / 2].to_vec(),
            BasisKind::Shifted => {
                let mut b = vec![src[0] ^ 0xa5];
                b.extend_from_slice(src);
                b
            }
            BasisKind::Empty => Vec::new(),
            BasisKind::Larger => {
                let mut b = src.to_vec();
                b.extend_from_slice(&rng.bytes(MIB as usize));
                b
            }
            BasisKind::Unrelated => rng.bytes(src.len()),
        }
    }

    /// The bounds `literal_bytes` must fall in for a source of `size` bytes, with
    /// `blength` the block length of the basis.
    fn literal_bounds(self, size: u64, blength: u64) -> (u64, u64) {
        let edits = (EDITS * EDIT_LEN) as u64;
        let appended = APPENDED as u64;
        match self {
            // Every block matches; at most a short tail could be sent literally.
            BasisKind::Identical => (0, blength - 1),
            // The edited bytes, and the rest of the blocks they touch.
            BasisKind::Edits => (edits, EDITS as u64 * (EDIT_LEN as u64 + 2 * blength)),
            // The appended bytes, plus the basis's short last block.
            BasisKind::Appended => (appended, appended + blength),
            BasisKind::Truncated => (size / 2, size / 2 + blength),
            // The first block is off by one byte; everything after it matches.
            BasisKind::Shifted => (0, 2 * blength),
            // The source's tail shares its basis block with the junk.
            BasisKind::Larger => (0, 2 * blength),
            BasisKind::Empty | BasisKind::Unrelated => (size, size),
        }
    }
}

/// One row of the figures printed at the end of the basis-kind test.
struct Figures {
    cell: String,
    kind: BasisKind,
    blength: i32,
    literal: u64,
    matched: u64,
    received: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_basis_kind_gives_the_source_with_the_expected_delta() -> anyhow::Result<()> {
    let size = 4 * MIB;
    let mut rng = Rng::new(1);
    let data = tempfile::tempdir()?;
    let src_bytes = rng.bytes(size as usize);
    let src = data.path().join("file.bin");
    write_bytes(&src, &src_bytes, SRC_MTIME)?;
    let bases: Vec<(BasisKind, Vec<u8>)> = BASIS_KINDS
        .into_iter()
        .map(|k| (k, k.build(&src_bytes, &mut rng)))
        .collect();
    let mut figures = Vec::new();
    for (i, v) in versions().into_iter().enumerate() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        // Protocol 29 once (against the first daemon), 30 to 32 against both.
        let protocols: &[ProtocolVersion] = if i == 0 {
            &[
                ProtocolVersion::V29,
                ProtocolVersion::V30,
                ProtocolVersion::V31,
                ProtocolVersion::V32,
            ]
        } else {
            &[
                ProtocolVersion::V30,
                ProtocolVersion::V31,
                ProtocolVersion::V32,
            ]
        };
        for &p in protocols {
            let cell = cell(v, p);
            for (kind, basis) in &bases {
                let kind = *kind;
                let what = format!("{cell}, {kind:?} basis");
                let dest = tempfile::tempdir()?;
                let dest_file = dest.path().join("file.bin");
                write_bytes(&dest_file, basis, OLD_MTIME)?;
                let mut sink = FsSink::new(dest.path())?;
                let report = pull_ok(&daemon, "data/file.bin", &options(p), &mut sink).await?;
                compare_files(&src, &dest_file).with_context(|| what.clone())?;
                assert_eq!(
                    list_tree(dest.path())?,
                    names(["file.bin"]),
                    "{what}: destination entries"
                );
                let s = &report.stats;
                assert_eq!(s.files_transferred, 1, "{what}: {report:?}");
                assert_eq!(s.files_failed, 0, "{what}: {report:?}");
                assert_eq!(
                    s.literal_bytes + s.matched_bytes,
                    size,
                    "{what}: literal + matched must be the file size: {report:?}"
                );
                let protocol = negotiated(&report, &what)?;
                let blength = sum_sizes(basis.len() as u64, protocol, 16, false).blength;
                let (lo, hi) = kind.literal_bounds(size, blength as u64);
                assert!(
                    (lo..=hi).contains(&s.literal_bytes),
                    "{what}: literal bytes {} not in {lo}..={hi} (block length {blength}): \
                     {report:?}",
                    s.literal_bytes
                );
                if kind == BasisKind::Empty {
                    // Nothing to match against: FsSink pulls the whole file.
                    assert_eq!(report.basis_files, 0, "{what}: {report:?}");
                    assert!(report.bases.is_empty(), "{what}: {report:?}");
                } else {
                    assert_eq!(report.basis_files, 1, "{what}: {report:?}");
                    assert_eq!(
                        report.bases,
                        [("file.bin".to_owned(), "file.bin".to_owned())],
                        "{what}"
                    );
                }
                // What crossed the wire: the literal bytes plus a little (4-byte block
                // tokens, file list, checksums); all of the file when nothing matches.
                assert!(s.bytes_received >= s.literal_bytes, "{what}: {report:?}");
                assert!(
                    s.bytes_received <= s.literal_bytes + size / 32,
                    "{what}: {} bytes received for {} literal bytes: {report:?}",
                    s.bytes_received,
                    s.literal_bytes
                );
                match kind {
                    BasisKind::Empty | BasisKind::Unrelated => {
                        assert_eq!(s.matched_bytes, 0, "{what}: {report:?}");
                        assert!(s.bytes_received > size, "{what}: {report:?}");
                    }
                    BasisKind::Truncated => {
                        assert!(s.matched_bytes >= size / 2 - blength as u64, "{what}");
                        assert!(s.bytes_received < size * 6 / 10, "{what}: {report:?}");
                    }
                    _ => {
                        assert!(s.matched_bytes >= size * 9 / 10, "{what}: {report:?}");
                        assert!(s.bytes_received < size / 8, "{what}: {report:?}");
                    }
                }
                figures.push(Figures {
                    cell: cell.clone(),
                    kind,
                    blength,
                    literal: s.literal_bytes,
                    matched: s.matched_bytes,
                    received: s.bytes_received,
                });
            }
        }
    }
    for f in &figures {
        eprintln!(
            "{}: {:?} basis (blocks of {}): literal {}, matched {}, received {}",
            f.cell, f.kind, f.blength, f.literal, f.matched, f.received
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Forced strong checksums
// ---------------------------------------------------------------------------------------

/// The names after "Checksum list:" in `rsync --version`.
fn daemon_checksums(daemon: &RsyncDaemon) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(daemon.binary())
        .arg("--version")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == "Checksum list:")
        .context("no checksum list in rsync --version")?;
    let list = lines.next().context("empty checksum list")?;
    Ok(list.split_whitespace().map(String::from).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forced_checksum_matches_blocks_against_a_basis() -> anyhow::Result<()> {
    const KINDS: [ChecksumKind; 6] = [
        ChecksumKind::Md5,
        ChecksumKind::Xxh64,
        ChecksumKind::Xxh3,
        ChecksumKind::Xxh128,
        ChecksumKind::Md4,
        ChecksumKind::Sha1,
    ];
    let size = 4 * MIB;
    let mut rng = Rng::new(2);
    let data = tempfile::tempdir()?;
    let src_bytes = rng.bytes(size as usize);
    let src = data.path().join("file.bin");
    write_bytes(&src, &src_bytes, SRC_MTIME)?;
    let basis = BasisKind::Edits.build(&src_bytes, &mut rng);
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let offered = daemon_checksums(&daemon)?;
        for p in [ProtocolVersion::V32, ProtocolVersion::V30] {
            for kind in KINDS {
                let what = format!("{}, --checksum-choice={}", cell(v, p), kind.name());
                if !offered.iter().any(|n| n == kind.name()) {
                    eprintln!("SKIP {what}: the daemon offers only {offered:?}");
                    continue;
                }
                let dest = tempfile::tempdir()?;
                let dest_file = dest.path().join("file.bin");
                write_bytes(&dest_file, &basis, OLD_MTIME)?;
                let opts = PullOptions {
                    checksum_choice: Some(kind),
                    ..options(p)
                };
                let mut sink = FsSink::new(dest.path())?;
                let report = pull_ok(&daemon, "data/file.bin", &opts, &mut sink).await?;
                compare_files(&src, &dest_file).with_context(|| what.clone())?;
                let session = report
                    .session
                    .with_context(|| format!("{what}: no session"))?;
                assert_eq!(session.checksum, kind, "{what}");
                let s = &report.stats;
                assert_eq!(s.files_transferred, 1, "{what}: {report:?}");
                assert_eq!(report.basis_files, 1, "{what}: {report:?}");
                assert_eq!(s.literal_bytes + s.matched_bytes, size, "{what}");
                let blength = sum_sizes(size, session.protocol, 16, false).blength as u64;
                let (lo, hi) = BasisKind::Edits.literal_bounds(size, blength);
                assert!(
                    s.matched_bytes > 0 && (lo..=hi).contains(&s.literal_bytes),
                    "{what}: literal {} not in {lo}..={hi}: {report:?}",
                    s.literal_bytes
                );
                eprintln!(
                    "{what}: literal {}, matched {}, received {}",
                    s.literal_bytes, s.matched_bytes, s.bytes_received
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Block-length cap
// ---------------------------------------------------------------------------------------

/// The cap on the block length at protocol >= 30 (io.c `MAX_BLOCK_SIZE`).
const CAP: i32 = 128 * 1024;

/// A basis a little over 16 GiB: the smallest kind of basis whose blocks hit the cap.
const HUGE_BASIS: u64 = (1 << 34) + 4 * MIB;

/// An [`FsSink`] that reports its bases `len` bytes long whatever their size: the signature
/// then uses the block length of a `len`-byte basis (`sum_sizes`) and describes the blocks
/// that can be read (`Signature::compute` stops at the real end). This puts 128 KiB blocks
/// on the wire without reading 16 GiB.
struct ClaimedLength {
    inner: FsSink,
    len: u64,
}

impl Sink for ClaimedLength {
    async fn plan(&mut self, list: &FileList) -> io::Result<Vec<FileIndex>> {
        self.inner.plan(list).await
    }
    async fn begin_file(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<()> {
        self.inner.begin_file(ndx, entry).await
    }
    async fn write(&mut self, ndx: FileIndex, data: &[u8]) -> io::Result<()> {
        self.inner.write(ndx, data).await
    }
    async fn end_file(&mut self, ndx: FileIndex, outcome: FileOutcome) -> io::Result<()> {
        self.inner.end_file(ndx, outcome).await
    }
    async fn not_sent(&mut self, ndx: FileIndex) -> io::Result<()> {
        self.inner.not_sent(ndx).await
    }
    async fn basis(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<Option<Basis>> {
        let len = self.len;
        Ok(self
            .inner
            .basis(ndx, entry)
            .await?
            .map(|b| Basis { len, ..b }))
    }
    async fn read_basis(&mut self, ndx: FileIndex, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.inner.read_basis(ndx, offset, len).await
    }
    async fn finish(&mut self, list: &FileList) -> io::Result<()> {
        self.inner.finish(list).await
    }
}

/// A 16 MiB source and its basis: the source with three 1 KiB edits.
fn huge_case(data: &Path) -> anyhow::Result<(u64, Vec<u8>)> {
    let size = 16 * MIB;
    let mut rng = Rng::new(3);
    let src_bytes = rng.bytes(size as usize);
    write_bytes(&data.join("huge.bin"), &src_bytes, SRC_MTIME)?;
    let mut basis = src_bytes;
    scatter_edits(&mut basis, 3, 1024, &mut rng);
    Ok((size, basis))
}

/// Pulls `huge.bin` (from [`huge_case`]) into `sink`, whose basis must have blocks of
/// `blength`, and checks the blocks copied and the result.
async fn pull_huge<S: Sink>(
    daemon: &RsyncDaemon,
    p: ProtocolVersion,
    sink: &mut S,
    (src, dest_file): (&Path, &Path),
    (size, blength): (u64, i32),
) -> anyhow::Result<()> {
    let cell = cell(daemon.version(), p);
    let started = Instant::now();
    let (result, events) = pull_events(&source(daemon, "data/huge.bin")?, &options(p), sink).await;
    let took = started.elapsed();
    let report = result.map_err(|e| anyhow!("{cell}: {e}\n--- daemon log:\n{}", daemon.log()))?;
    compare_files(src, dest_file).with_context(|| cell.clone())?;
    let s = &report.stats;
    assert_eq!(s.files_transferred, 1, "{cell}: {report:?}");
    assert_eq!(
        s.literal_bytes + s.matched_bytes,
        size,
        "{cell}: {report:?}"
    );
    assert!(s.matched_bytes > size * 9 / 10, "{cell}: {report:?}");
    assert!(s.bytes_received < size / 10, "{cell}: {report:?}");
    // Each edit spoils at most the two blocks it touches.
    assert!(
        s.literal_bytes <= 3 * 2 * blength as u64,
        "{cell}: {report:?}"
    );
    // The blocks copied from the basis have the expected length, at multiples of it.
    let copies: Vec<(u64, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::CopyBlock { offset, len, .. } => Some((*offset, *len)),
            _ => None,
        })
        .collect();
    assert!(!copies.is_empty(), "{cell}");
    // (The basis read is `size` bytes long: its last block may be short.)
    for &(offset, len) in &copies {
        let last = offset + u64::from(len) == size && len < blength as u32;
        assert!(
            len == blength as u32 || last,
            "{cell}: block of {len} at {offset}"
        );
        assert_eq!(offset % blength as u64, 0, "{cell}: block at {offset}");
    }
    eprintln!(
        "{cell}: {size}-byte file in {took:.2?}: {} blocks of {blength} copied, literal {}, \
         matched {}, received {}",
        copies.len(),
        s.literal_bytes,
        s.matched_bytes,
        s.bytes_received
    );
    Ok(())
}

#[test]
fn block_length_follows_the_square_root_up_to_the_cap() {
    // generator.c sum_sizes_sqroot: about √len, a multiple of 8, so the cap only binds from
    // 2^34 bytes (16 GiB) on: a 140 MiB basis (more than 1000 blocks of 128 KiB) still gets
    // 12112-byte blocks.
    assert_eq!(
        sum_sizes(140 * MIB, ProtocolVersion::V32, 16, false).blength,
        12112
    );
    assert_eq!(
        sum_sizes((1 << 34) - 1, ProtocolVersion::V32, 16, false).blength,
        131064
    );
    for p in [
        ProtocolVersion::V30,
        ProtocolVersion::V31,
        ProtocolVersion::V32,
    ] {
        assert_eq!(sum_sizes(HUGE_BASIS, p, 16, false).blength, CAP, "{p}");
        assert_eq!(sum_sizes(1 << 40, p, 16, false).blength, CAP, "{p}");
    }
    // Protocol 29's cap is 512 MiB: √len wins.
    assert_eq!(
        sum_sizes(HUGE_BASIS, ProtocolVersion::V29, 16, false).blength,
        131080
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_match_128_kib_blocks_of_a_huge_basis() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (size, basis) = huge_case(data.path())?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [
            ProtocolVersion::V32,
            ProtocolVersion::V30,
            ProtocolVersion::V29,
        ] {
            let blength = sum_sizes(HUGE_BASIS, p, 16, false).blength;
            let dest = tempfile::tempdir()?;
            let dest_file = dest.path().join("huge.bin");
            write_bytes(&dest_file, &basis, OLD_MTIME)?;
            let mut sink = ClaimedLength {
                inner: FsSink::new(dest.path())?,
                len: HUGE_BASIS,
            };
            let files = (data.path().join("huge.bin"), dest_file);
            pull_huge(&daemon, p, &mut sink, (&files.0, &files.1), (size, blength)).await?;
        }
    }
    Ok(())
}

/// The same with a real sparse basis of 16 GiB + 4 MiB read by FsSink: reading the hole
/// takes 30 to 60 s here (mostly kernel time), so it only runs when asked for
/// (`cargo test --release -p rsync-proto --test delta -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reads a 16 GiB sparse basis (30-60 s)"]
async fn sparse_16_gib_basis_is_matched_in_128_kib_blocks() -> anyhow::Result<()> {
    let Some(v) = versions().into_iter().next() else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let (size, basis) = huge_case(data.path())?;
    let daemon = DaemonBuilder::new(v)
        .module(Module::new("data", data.path()))
        .start()?;
    let dest = tempfile::tempdir()?;
    let dest_file = dest.path().join("huge.bin");
    write_bytes(&dest_file, &basis, OLD_MTIME)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&dest_file)?
        .set_len(HUGE_BASIS)?;
    set_mtime(&dest_file, OLD_MTIME)?;
    let mut sink = FsSink::new(dest.path())?;
    let src = data.path().join("huge.bin");
    let files = (src.as_path(), dest_file.as_path());
    pull_huge(&daemon, ProtocolVersion::V32, &mut sink, files, (size, CAP)).await
}

// ---------------------------------------------------------------------------------------
// The relay
// ---------------------------------------------------------------------------------------

/// What [`Relay`] does to the daemon's bytes.
#[derive(Debug, Clone, Default)]
struct RelayPlan {
    /// Close both connections after this many bytes from the daemon.
    budget: Option<u64>,
    /// Flip the last byte of this sequence where it appears in MSG_DATA payloads.
    marker: Option<Vec<u8>>,
    /// Corrupt every occurrence of the marker, not only the first.
    every: bool,
    /// The protocol the client announces (the relay negotiates it like the client to find
    /// where multiplexing starts).
    protocol: ProtocolVersion,
    /// The client forces a checksum, so no checksum lists are exchanged.
    forced_checksum: bool,
}

/// What the relay saw.
#[derive(Debug, Default)]
struct RelayCounters {
    /// Occurrences of the marker in file data.
    seen: AtomicU64,
    /// Occurrences corrupted.
    corrupted: AtomicU64,
    /// Multiplexed frames from the daemon.
    frames: AtomicU64,
}

/// Where the relay is in the daemon's output.
#[derive(Debug)]
enum Stage {
    /// Text lines, up to `@RSYNCD: OK`; the first is the greeting.
    Lines { line: Vec<u8>, greeting_seen: bool },
    /// The compat flags (a varint, protocol >= 30).
    Compat(Vec<u8>),
    /// The length of the daemon's checksum list (a vstring).
    ListLen(Vec<u8>),
    /// Bytes before the first frame (the checksum list, the seed).
    Skip(usize),
    /// A frame header: 4 bytes LE, tag = (header >> 24) - 7, length = header & 0xffffff.
    Header(Vec<u8>),
    /// The rest of a frame's payload; `data` for MSG_DATA (tag 0).
    Payload { data: bool, left: usize },
    /// A refusal or a parse error: pass everything through.
    Opaque,
}

/// Follows the daemon's output and corrupts the marker in file data.
struct DaemonStream {
    stage: Stage,
    ours: u32,
    protocol: u32,
    forced: bool,
    marker: Vec<u8>,
    every: bool,
    /// The last `marker.len() - 1` bytes of MSG_DATA payload (a marker may span frames).
    window: Vec<u8>,
    counters: Arc<RelayCounters>,
}

/// rsync's varint (io.c read_varint): the leading one bits of the first byte count the
/// extra bytes, which are the low bytes, little-endian; the first byte's other bits are the
/// high ones.
fn decode_varint(bytes: &[u8]) -> u32 {
    let extra = bytes[0].leading_ones() as usize;
    if extra == 0 {
        return u32::from(bytes[0]);
    }
    let mut v: u32 = 0;
    for (i, &b) in bytes[1..=extra.min(4)].iter().enumerate() {
        v |= u32::from(b) << (8 * i);
    }
    if extra < 4 {
        let high = bytes[0] & ((1u8 << (7 - extra)) - 1);
        v |= u32::from(high) << (8 * extra);
    }
    v
}

impl DaemonStream {
    fn new(plan: &RelayPlan, counters: Arc<RelayCounters>) -> DaemonStream {
        DaemonStream {
            stage: Stage::Lines {
                line: Vec::new(),
                greeting_seen: false,
            },
            ours: plan.protocol.get(),
            protocol: 0,
            forced: plan.forced_checksum,
            marker: plan.marker.clone().unwrap_or_default(),
            every: plan.every,
            window: Vec::new(),
            counters,
        }
    }

    /// Follows `buf` (the next bytes from the daemon), corrupting it in place.
    fn process(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let mut i = 0;
        while i < buf.len() {
            let stage = std::mem::replace(&mut self.stage, Stage::Opaque);
            self.stage = match stage {
                Stage::Opaque => {
                    i = buf.len();
                    Stage::Opaque
                }
                Stage::Lines {
                    mut line,
                    greeting_seen,
                } => {
                    let b = buf[i];
                    i += 1;
                    if b == b'\n' {
                        self.on_line(&line, greeting_seen)?
                    } else {
                        line.push(b);
                        ensure!(line.len() < 4096, "line too long in the daemon's output");
                        Stage::Lines {
                            line,
                            greeting_seen,
                        }
                    }
                }
                Stage::Compat(mut bytes) => {
                    bytes.push(buf[i]);
                    i += 1;
                    if bytes.len() <= bytes[0].leading_ones() as usize {
                        Stage::Compat(bytes)
                    } else if decode_varint(&bytes) & (1 << 7) != 0 && !self.forced {
                        // CF_VARINT_FLIST_FLAGS: checksum names are negotiated.
                        Stage::ListLen(Vec::new())
                    } else {
                        Stage::Skip(4)
                    }
                }
                Stage::ListLen(mut bytes) => {
                    bytes.push(buf[i]);
                    i += 1;
                    if bytes[0] & 0x80 != 0 && bytes.len() < 2 {
                        Stage::ListLen(bytes)
                    } else {
                        let len = if bytes[0] & 0x80 != 0 {
                            (usize::from(bytes[0] & 0x7f) << 8) | usize::from(bytes[1])
                        } else {
                            usize::from(bytes[0])
                        };
                        // The list, then the 4-byte seed.
                        Stage::Skip(len + 4)
                    }
                }
                Stage::Skip(n) => {
                    let k = n.min(buf.len() - i);
                    i += k;
                    if k == n {
                        Stage::Header(Vec::new())
                    } else {
                        Stage::Skip(n - k)
                    }
                }
                Stage::Header(mut h) => {
                    h.push(buf[i]);
                    i += 1;
                    if h.len() < 4 {
                        Stage::Header(h)
                    } else {
                        let raw = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                        let tag = (raw >> 24) as i64 - 7;
                        ensure!(tag >= 0, "bad frame header {raw:#010x}");
                        self.counters.frames.fetch_add(1, Ordering::Relaxed);
                        match (raw & 0xff_ffff) as usize {
                            0 => Stage::Header(Vec::new()),
                            left => Stage::Payload {
                                data: tag == 0,
                                left,
                            },
                        }
                    }
                }
                Stage::Payload { data, left } => {
                    let k = left.min(buf.len() - i);
                    if data {
                        self.scan(&mut buf[i..i + k]);
                    }
                    i += k;
                    if k == left {
                        Stage::Header(Vec::new())
                    } else {
                        Stage::Payload {
                            data,
                            left: left - k,
                        }
                    }
                }
            };
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], greeting_seen: bool) -> anyhow::Result<Stage> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if !greeting_seen {
            let theirs: u32 = text
                .strip_prefix("@RSYNCD: ")
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse().ok())
                .with_context(|| format!("greeting {text:?}"))?;
            self.protocol = theirs.min(self.ours);
            return Ok(Stage::Lines {
                line: Vec::new(),
                greeting_seen: true,
            });
        }
        Ok(if text == "@RSYNCD: OK" {
            if self.protocol >= 30 {
                Stage::Compat(Vec::new())
            } else {
                Stage::Skip(4)
            }
        } else if text.starts_with("@ERROR") || text == "@RSYNCD: EXIT" {
            Stage::Opaque
        } else {
            Stage::Lines {
                line: Vec::new(),
                greeting_seen: true,
            }
        })
    }

    /// Looks for the marker in the file-data stream (`window` + `chunk`) and flips the last
    /// byte of each occurrence to corrupt; that byte is always in `chunk`, not sent yet.
    fn scan(&mut self, chunk: &mut [u8]) {
        let m = self.marker.len();
        if m == 0 {
            return;
        }
        let wl = self.window.len();
        let mut joined = std::mem::take(&mut self.window);
        joined.extend_from_slice(chunk);
        let mut from = 0;
        while let Some(p) = joined[from..]
            .windows(m)
            .position(|w| w == self.marker.as_slice())
        {
            let end = from + p + m - 1;
            self.counters.seen.fetch_add(1, Ordering::Relaxed);
            if self.every || self.counters.corrupted.load(Ordering::Relaxed) == 0 {
                chunk[end - wl] ^= 0x5a;
                self.counters.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            from += p + 1;
        }
        let keep = joined.len().saturating_sub(m - 1);
        self.window = joined.split_off(keep);
    }
}

/// A one-connection TCP relay between the client and a daemon that follows the daemon's
/// output (greeting, setup, then multiplexed frames) and can corrupt file data or cut the
/// connection.
struct Relay {
    addr: SocketAddr,
    counters: Arc<RelayCounters>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Relay {
    fn start(daemon: SocketAddr, plan: RelayPlan) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(RelayCounters::default());
        let mut stream = DaemonStream::new(&plan, counters.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let (client, _) = listener.accept()?;
            let server = TcpStream::connect(daemon)?;
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                s.set_nodelay(true)?;
            }
            // Client to daemon, until the client goes away.
            let (mut c, mut s) = (client.try_clone()?, server.try_clone()?);
            let upstream = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s);
                let _ = s.shutdown(Shutdown::Both);
            });
            // Daemon to client, followed and maybe corrupted, up to the budget.
            let (mut s, mut c) = (server.try_clone()?, client.try_clone()?);
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = plan.budget.unwrap_or(u64::MAX);
            let mut problem = None;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = match s.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if problem.is_none() {
                    if let Err(e) = stream.process(&mut buf[..n]) {
                        // Stop following, keep relaying: the test fails at join().
                        problem = Some(e);
                        stream.stage = Stage::Opaque;
                    }
                }
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
            if left == 0 {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            } else {
                let _ = client.shutdown(Shutdown::Write);
            }
            upstream
                .join()
                .map_err(|_| anyhow!("relay upstream thread panicked"))?;
            let _ = client.shutdown(Shutdown::Both);
            match problem {
                Some(e) => Err(e.context("following the daemon's output")),
                None => Ok(()),
            }
        });
        Ok(Relay {
            addr,
            counters,
            thread: Some(thread),
        })
    }

    /// A source for `module_path` through the relay.
    fn source(&self, module_path: &str) -> anyhow::Result<Source> {
        Ok(format!("rsync://{}/{module_path}", self.addr).parse()?)
    }

    fn seen(&self) -> u64 {
        self.counters.seen.load(Ordering::Relaxed)
    }

    fn corrupted(&self) -> u64 {
        self.counters.corrupted.load(Ordering::Relaxed)
    }

    fn frames(&self) -> u64 {
        self.counters.frames.load(Ordering::Relaxed)
    }

    fn join(mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("relay thread panicked"))?,
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The redo phase
// ---------------------------------------------------------------------------------------

/// The file-level events of a pull, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(FileIndex, FileOutcome),
    Redo(Vec<FileIndex>),
}

fn steps(events: &[Event]) -> Vec<Step> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FileDone(n, o) => Some(Step::Done(*n, *o)),
            Event::RedoNeeded(files) => Some(Step::Redo(files.clone())),
            _ => None,
        })
        .collect()
}

/// The index of the (only) file pulled: the first one completed.
fn first_file(steps: &[Step], what: &str) -> anyhow::Result<FileIndex> {
    match steps.first() {
        Some(Step::Done(n, _)) => Ok(*n),
        _ => bail!("{what}: no file completed: {steps:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_file_data_is_redone_and_verified_or_failed_with_an_early_end(
) -> anyhow::Result<()> {
    let size = 4 * MIB as usize;
    let mut rng = Rng::new(4);
    let marker = rng.bytes(32);
    let data = tempfile::tempdir()?;
    // Pulled whole: literal tokens of 32 KiB from offset 0, so the marker at 100_016 is
    // inside the fourth token, never split by a token header.
    let mut whole = rng.bytes(size);
    whole[100_016..100_048].copy_from_slice(&marker);
    let whole_src = data.path().join("whole.bin");
    write_bytes(&whole_src, &whole, SRC_MTIME)?;
    // Pulled against a basis with 16 edited regions; the marker is in one of them (the
    // basis lacks it), so it travels in a short literal run.
    let delta = rng.bytes(size);
    let mut basis = delta.clone();
    let edits = scatter_edits(&mut basis, EDITS, EDIT_LEN, &mut rng);
    let mut delta = delta;
    let at = edits[8] + 1000;
    delta[at..at + 32].copy_from_slice(&marker);
    let delta_src = data.path().join("delta.bin");
    write_bytes(&delta_src, &delta, SRC_MTIME)?;
    let basis_copy = data.path().join("basis copy");
    write_bytes(&basis_copy, &basis, OLD_MTIME)?;

    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [
            ProtocolVersion::V32,
            ProtocolVersion::V30,
            ProtocolVersion::V29,
        ] {
            let cell = cell(v, p);
            // (name, against a basis, corrupt every attempt, early end)
            for (name, with_basis, every, early) in [
                ("whole.bin", false, false, false),
                ("delta.bin", true, false, true),
                ("whole.bin", false, true, false),
                ("delta.bin", true, true, true),
                ("whole.bin", false, false, true),
            ] {
                let what = format!(
                    "{cell}, {name}{}, corrupting {}{}",
                    if with_basis { " against a basis" } else { "" },
                    if every { "every time" } else { "once" },
                    if early { "" } else { ", redo kept" }
                );
                let dest = tempfile::tempdir()?;
                let dest_file = dest.path().join(name);
                if with_basis {
                    write_bytes(&dest_file, &basis, OLD_MTIME)?;
                }
                let relay = Relay::start(
                    daemon.addr(),
                    RelayPlan {
                        marker: Some(marker.clone()),
                        every,
                        protocol: p,
                        ..RelayPlan::default()
                    },
                )?;
                let mut sink = FsSink::new(dest.path())?;
                let src = relay.source(&format!("data/{name}"))?;
                let opts = PullOptions {
                    early_end: early,
                    ..options(p)
                };
                let (result, events) = pull_events(&src, &opts, &mut sink).await;
                drop(sink);
                let steps = steps(&events);
                let n = first_file(&steps, &what)?;
                let retry = Step::Done(n, FileOutcome::RetryScheduled);
                let redo = Step::Redo(vec![n]);
                if early && !with_basis {
                    // The redo phase ended with the request: one failure, no second attempt.
                    let err = match result {
                        Ok(r) => bail!("{what}: pull succeeded: {r:?}"),
                        Err(e) => e,
                    };
                    let Error::Partial { failed, report, .. } = &err else {
                        bail!("{what}: expected a partial transfer, got {err:?}");
                    };
                    assert_eq!((*failed, report.stats.files_failed), (1, 1), "{what}");
                    assert_eq!(report.stats.files_not_redone, 1, "{what}");
                    // The redo it did not get in the session: a retry of the pull.
                    assert!(err.is_retryable(), "{what}");
                    assert_eq!(
                        steps,
                        [Step::Done(n, FileOutcome::VerificationFailed)],
                        "{what}"
                    );
                    assert_eq!(relay.corrupted(), 1, "{what}");
                    let temps = temp_files_after(dest.path(), SETTLE).await?;
                    assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
                    let left = list_tree(dest.path())?;
                    assert!(left.is_empty(), "{what}: left behind: {left:?}");
                } else if every {
                    let err = match result {
                        Ok(r) => bail!("{what}: pull succeeded: {r:?}"),
                        Err(e) => e,
                    };
                    let Error::Partial { failed, report, .. } = &err else {
                        bail!("{what}: expected a partial transfer, got {err:?}");
                    };
                    assert_eq!(*failed, 1, "{what}: {report:?}");
                    assert_eq!(report.stats.files_failed, 1, "{what}: {report:?}");
                    assert_eq!(report.stats.files_redone, 1, "{what}: {report:?}");
                    assert_eq!(report.stats.files_transferred, 0, "{what}: {report:?}");
                    assert_eq!(err.exit_code(), 23, "{what}");
                    assert!(!err.is_retryable(), "{what}: failed twice");
                    let failed = Step::Done(n, FileOutcome::VerificationFailed);
                    let want = if with_basis {
                        vec![retry, redo, failed]
                    } else {
                        vec![retry, failed]
                    };
                    assert_eq!(steps, want, "{what}");
                    assert_eq!(relay.corrupted(), 2, "{what}");
                    let temps = temp_files_after(dest.path(), SETTLE).await?;
                    assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
                    if with_basis {
                        // The old version stays in place, untouched.
                        compare_files(&basis_copy, &dest_file).with_context(|| what.clone())?;
                        assert_eq!(list_tree(dest.path())?, names([name]), "{what}");
                    } else {
                        // Data that failed verification is not kept, not even as a
                        // partial file.
                        let left = list_tree(dest.path())?;
                        assert!(!left.contains(name), "{what}: {name} under its final name");
                        assert!(left.is_empty(), "{what}: left behind: {left:?}");
                    }
                    eprintln!(
                        "{what}: {err}; {:?}; left in the destination: {:?}",
                        steps,
                        list_tree(dest.path())?
                    );
                } else {
                    let report = result
                        .map_err(|e| anyhow!("{what}: {e}\n--- daemon log:\n{}", daemon.log()))?;
                    let expected = if with_basis { &delta_src } else { &whole_src };
                    compare_files(expected, &dest_file).with_context(|| what.clone())?;
                    assert_eq!(list_tree(dest.path())?, names([name]), "{what}");
                    let verified = Step::Done(n, FileOutcome::Verified);
                    let want = if with_basis {
                        vec![retry, redo, verified]
                    } else {
                        vec![retry, verified]
                    };
                    assert_eq!(steps, want, "{what}");
                    assert_eq!(relay.corrupted(), 1, "{what}");
                    let s = &report.stats;
                    assert_eq!(s.files_transferred, 1, "{what}: {report:?}");
                    assert_eq!(s.files_failed, 0, "{what}: {report:?}");
                    // Both attempts are counted.
                    assert_eq!(
                        s.literal_bytes + s.matched_bytes,
                        2 * size as u64,
                        "{what}: {report:?}"
                    );
                    if with_basis {
                        assert_eq!(report.basis_files, 1, "{what}: {report:?}");
                        assert!(s.matched_bytes > size as u64, "{what}: {report:?}");
                    } else {
                        assert_eq!(report.basis_files, 0, "{what}: {report:?}");
                        assert_eq!(s.matched_bytes, 0, "{what}: {report:?}");
                    }
                    eprintln!(
                        "{what}: {steps:?}; literal {}, matched {}, received {}",
                        s.literal_bytes, s.matched_bytes, s.bytes_received
                    );
                }
                // Seen in the first attempt and again in the redo (none with an early end).
                let attempts = if early && !with_basis { 1 } else { 2 };
                assert_eq!(relay.seen(), attempts, "{what}");
                assert!(relay.frames() > 0, "{what}");
                relay.join().with_context(|| what.clone())?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Resuming an interrupted pull
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_resumes_from_its_partial_file() -> anyhow::Result<()> {
    let size = 32 * MIB;
    let mut rng = Rng::new(5);
    let data = tempfile::tempdir()?;
    let src = data.path().join("big.bin");
    write_bytes(&src, &rng.bytes(size as usize), SRC_MTIME)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [ProtocolVersion::V32, ProtocolVersion::V29] {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let dest_file = dest.path().join("big.bin");
            let relay = Relay::start(
                daemon.addr(),
                RelayPlan {
                    budget: Some(8 * MIB),
                    protocol: p,
                    ..RelayPlan::default()
                },
            )?;
            let mut sink = FsSink::new(dest.path())?;
            let err = match pull(&relay.source("data/big.bin")?, &options(p), &mut sink).await {
                Ok(r) => bail!("{cell}: pull through a cut connection succeeded: {r:?}"),
                Err(e) => e,
            };
            assert!(err.is_retryable(), "{cell}: {err:?}");
            drop(sink);
            relay.join().with_context(|| cell.clone())?;
            let temps = temp_files_after(dest.path(), SETTLE).await?;
            assert!(temps.is_empty(), "{cell}: temp files left: {temps:?}");
            assert!(
                fs::symlink_metadata(&dest_file).is_err(),
                "{cell}: big.bin under its final name after {err}"
            );
            assert_eq!(
                check_partials_are_prefixes(data.path(), dest.path())?,
                1,
                "{cell}"
            );
            let kept = fs::metadata(dest.path().join(PARTIAL_DIR).join("big.bin"))?.len();
            assert!(
                (4 * MIB..=8 * MIB).contains(&kept),
                "{cell}: {kept} bytes kept"
            );

            // Again, straight from the daemon: the partial file is the basis.
            let mut sink = FsSink::new(dest.path())?;
            let report = pull_ok(&daemon, "data/big.bin", &options(p), &mut sink).await?;
            compare_files(&src, &dest_file).with_context(|| cell.clone())?;
            assert_eq!(
                report.bases,
                [("big.bin".to_owned(), format!("{PARTIAL_DIR}/big.bin"))],
                "{cell}"
            );
            assert_eq!(report.basis_files, 1, "{cell}: {report:?}");
            let s = &report.stats;
            let blength = sum_sizes(kept, negotiated(&report, &cell)?, 16, false).blength as u64;
            // The first pass's block sums are short (2 bytes of strong sum for a basis of a
            // few MiB), so now and then a block matches wrongly, the whole-file checksum
            // fails and the file comes again in the redo phase with full-length sums, as
            // rsync's own receiver does. Each pass is counted: a pass is the whole file,
            // built from at least the kept prefix.
            assert!(s.files_redone <= 1, "{cell}: {report:?}");
            let passes = 1 + s.files_redone;
            assert_eq!(
                s.literal_bytes + s.matched_bytes,
                passes * size,
                "{cell}: {report:?}"
            );
            assert!(
                s.matched_bytes >= passes * (kept - blength) && s.matched_bytes >= passes * 7 * MIB,
                "{cell}: {kept} bytes kept: {report:?}"
            );
            assert!(
                s.bytes_received < passes * (size - kept + MIB)
                    && (s.files_redone > 0 || s.bytes_received < 30 * MIB),
                "{cell}: {kept} bytes kept: {report:?}"
            );
            // Committed: the partial file and its directory are gone.
            assert_eq!(list_tree(dest.path())?, names(["big.bin"]), "{cell}");
            eprintln!(
                "{cell}: resumed from {kept} bytes: literal {}, matched {}, received {}, redone {}",
                s.literal_bytes, s.matched_bytes, s.bytes_received, s.files_redone
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Basis policies
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_file_and_none_policies_choose_the_basis() -> anyhow::Result<()> {
    let size = 8 * MIB;
    let mut rng = Rng::new(6);
    let data = tempfile::tempdir()?;
    let orig = tempfile::tempdir()?;
    // An hourly dump, then the next one with about 1% of its blocks changed.
    let dump1 = rng.bytes(size as usize);
    let mut dump2 = dump1.clone();
    let blength = sum_sizes(size, ProtocolVersion::V32, 16, false).blength as usize;
    let blocks = dump2.len().div_ceil(blength);
    let changed = blocks / 100;
    for off in scatter_edits(&mut dump2, changed, 64, &mut rng) {
        assert_ne!(dump1[off..off + 64], dump2[off..off + 64]);
    }
    let src = data.path().join("dump-02.rdb");
    write_bytes(&src, &dump2, SRC_MTIME)?;
    let dump1_copy = orig.path().join("dump-01.rdb");
    write_bytes(&dump1_copy, &dump1, OLD_MTIME)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [ProtocolVersion::V32, ProtocolVersion::V30] {
            let cell = cell(v, p);
            let check_delta = |what: &str, report: &PullReport| {
                let s = &report.stats;
                assert_eq!(
                    s.literal_bytes + s.matched_bytes,
                    size,
                    "{what}: {report:?}"
                );
                assert!(s.matched_bytes > size * 9 / 10, "{what}: {report:?}");
                assert!(s.bytes_received < size / 10, "{what}: {report:?}");
                assert_eq!(report.basis_files, 1, "{what}: {report:?}");
                eprintln!(
                    "{what}: literal {}, matched {}, received {}",
                    s.literal_bytes, s.matched_bytes, s.bytes_received
                );
            };

            // Hook: the previous dump, under another name.
            let what = format!("{cell}, Hook");
            let dest = tempfile::tempdir()?;
            let previous = dest.path().join("dump-01.rdb");
            write_bytes(&previous, &dump1, OLD_MTIME)?;
            let asked = Arc::new(Mutex::new(Vec::new()));
            let hook: BasisHook = {
                let (asked, previous) = (asked.clone(), previous.clone());
                Arc::new(move |e: &FileEntry| {
                    asked.lock().expect("hook lock").push(e.name_lossy());
                    Some(previous.clone())
                })
            };
            let mut sink = FsSink::new(dest.path())?.basis_policy(BasisPolicy::Hook(hook));
            let report = pull_ok(&daemon, "data/dump-02.rdb", &options(p), &mut sink).await?;
            compare_files(&src, &dest.path().join("dump-02.rdb")).with_context(|| what.clone())?;
            compare_files(&dump1_copy, &previous).with_context(|| format!("{what}: basis"))?;
            assert_eq!(
                *asked.lock().expect("hook lock"),
                ["dump-02.rdb"],
                "{what}: hook calls"
            );
            assert_eq!(
                report.bases,
                [("dump-02.rdb".to_owned(), previous.display().to_string())],
                "{what}"
            );
            assert_eq!(
                list_tree(dest.path())?,
                names(["dump-01.rdb", "dump-02.rdb"]),
                "{what}"
            );
            check_delta(&what, &report);

            // File: one explicit basis for a single-file pull written under a new name.
            let what = format!("{cell}, File");
            let dest = tempfile::tempdir()?;
            let previous = dest.path().join("dump-01.rdb");
            write_bytes(&previous, &dump1, OLD_MTIME)?;
            let target = dest.path().join("latest.rdb");
            let mut sink = FsSink::new(&target)?.basis_policy(BasisPolicy::File(previous.clone()));
            let report = pull_ok(&daemon, "data/dump-02.rdb", &options(p), &mut sink).await?;
            compare_files(&src, &target).with_context(|| what.clone())?;
            compare_files(&dump1_copy, &previous).with_context(|| format!("{what}: basis"))?;
            assert_eq!(
                report.bases,
                [("dump-02.rdb".to_owned(), previous.display().to_string())],
                "{what}"
            );
            assert_eq!(
                list_tree(dest.path())?,
                names(["dump-01.rdb", "latest.rdb"]),
                "{what}"
            );
            check_delta(&what, &report);

            // None: whole file, even with a same-name file that would match.
            let what = format!("{cell}, None");
            let dest = tempfile::tempdir()?;
            let same = dest.path().join("dump-02.rdb");
            write_bytes(&same, &dump1, OLD_MTIME)?;
            let mut sink = FsSink::new(dest.path())?.basis_policy(BasisPolicy::None);
            let report = pull_ok(&daemon, "data/dump-02.rdb", &options(p), &mut sink).await?;
            compare_files(&src, &same).with_context(|| what.clone())?;
            let s = &report.stats;
            assert_eq!(s.matched_bytes, 0, "{what}: {report:?}");
            assert_eq!(s.literal_bytes, size, "{what}: {report:?}");
            assert!(s.bytes_received > size, "{what}: {report:?}");
            assert_eq!(report.basis_files, 0, "{what}: {report:?}");
            assert!(report.bases.is_empty(), "{what}: {report:?}");
        }
    }
    Ok(())
}
