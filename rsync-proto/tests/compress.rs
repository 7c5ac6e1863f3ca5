//! Compressed transfers against real `rsync --daemon` processes (Debian's 3.5.0 and 3.2.7, see
//! `ubackup_testkit::rsync`) on loopback ports picked at run time. A missing rsync binary skips
//! that version, or fails the test when `UBACKUP_INTEROP=required`.
//!
//! * every algorithm (`--compress-choice` zstd, lz4, zlibx, zlib), whole-file and against an
//!   edited basis (compressed literal runs mixed with block matches; with zlib the matched
//!   blocks enter the inflater's history), on compressible (SQL-dump-like) and incompressible
//!   data: the result is the source, and on compressible data fewer bytes cross the wire than
//!   the literal data they carry;
//! * plain `-z` negotiates zstd with both daemons; at protocol 29 (no negotiation) it is zlib;
//! * the skip-compress rule: a `.gz` source is pulled uncompressed.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::{cell, pull_ok, versions, KIB, MIB};
use rsync_proto::client::{Compress, FsSink, PullOptions, PullReport};
use rsync_proto::{CompressionKind, ProtocolVersion};
use ubackup_testkit::{compare_files, set_mtime, DaemonBuilder, Module};

const SRC_MTIME: i64 = 1_700_000_000;
const OLD_MTIME: i64 = 1_500_000_000;

/// A small xorshift generator: the data only has to be repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn noise(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// SQL-dump-like text: INSERT lines with varying ids, names and numbers.
fn sql_dump(n: usize, rng: &mut Rng) -> Vec<u8> {
    const NAMES: [&str; 8] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let mut out = Vec::with_capacity(n + 200);
    let mut id = 1u64;
    while out.len() < n {
        let r = rng.next();
        let line = format!(
            "INSERT INTO `orders` VALUES ({id},'{}',{}.{:02},'2024-0{}-1{} 12:{:02}:00',{});\n",
            NAMES[(r % 8) as usize],
            r % 10_000,
            (r >> 16) % 100,
            1 + (r >> 24) % 9,
            (r >> 28) % 10,
            (r >> 32) % 60,
            if r & 1 == 0 { "NULL" } else { "1" }
        );
        out.extend_from_slice(line.as_bytes());
        id += 1;
    }
    out.truncate(n);
    out
}

/// The basis: the source with `count` regions of `len` bytes replaced.
fn edited(src: &[u8], count: usize, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = src.to_vec();
    for i in 0..count {
        let at = (src.len() / count) * i + (rng.next() as usize % (src.len() / count - len));
        let junk = rng.noise(len);
        b[at..at + len].copy_from_slice(&junk);
    }
    b
}

fn write_bytes(path: &Path, data: &[u8], mtime: i64) -> anyhow::Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    set_mtime(path, mtime)
}

fn options(protocol: ProtocolVersion, compress: Option<Compress>) -> PullOptions {
    PullOptions {
        protocol,
        timeout: Some(Duration::from_secs(60)),
        connect_timeout: Duration::from_secs(10),
        compress,
        ..PullOptions::default()
    }
}

fn forced(kind: CompressionKind) -> Compress {
    Compress {
        choice: Some(kind),
        ..Compress::default()
    }
}

fn compression_of(report: &PullReport) -> Option<CompressionKind> {
    report.session.and_then(|s| s.compression)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_whole_file_and_with_a_basis() -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let data = tempfile::tempdir()?;
    let sql = sql_dump((3 * MIB) as usize, &mut rng);
    let noise = rng.noise((MIB + 333) as usize);
    write_bytes(&data.path().join("dump.sql"), &sql, SRC_MTIME)?;
    write_bytes(&data.path().join("blob.bin"), &noise, SRC_MTIME)?;
    let mut rows = Vec::new();
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for kind in CompressionKind::ALL {
            for (name, content, compressible) in
                [("dump.sql", &sql, true), ("blob.bin", &noise, false)]
            {
                for with_basis in [false, true] {
                    let c = format!(
                        "{}, {kind}, {name}, {}",
                        cell(v, ProtocolVersion::V32),
                        if with_basis { "basis" } else { "whole" }
                    );
                    let dest = tempfile::tempdir()?;
                    let target = dest.path().join(name);
                    if with_basis {
                        let b = edited(content, 12, 3000, &mut rng);
                        write_bytes(&target, &b, OLD_MTIME)?;
                    }
                    let mut sink = FsSink::new(dest.path())?;
                    let opts = options(ProtocolVersion::V32, Some(forced(kind)));
                    let report = pull_ok(&daemon, &format!("data/{name}"), &opts, &mut sink)
                        .await
                        .with_context(|| c.clone())?;
                    compare_files(&data.path().join(name), &target).with_context(|| c.clone())?;
                    ensure!(
                        compression_of(&report) == Some(kind),
                        "{c}: {:?}",
                        report.session
                    );
                    let s = report.stats;
                    ensure!(
                        s.literal_bytes + s.matched_bytes == content.len() as u64,
                        "{c}: {s:?}"
                    );
                    if with_basis {
                        ensure!(report.basis_files == 1, "{c}: no basis used");
                        ensure!(s.matched_bytes > 0 && s.literal_bytes > 0, "{c}: {s:?}");
                    } else {
                        ensure!(s.literal_bytes == content.len() as u64, "{c}: {s:?}");
                    }
                    if compressible {
                        // Everything we read (file list, tokens, sums) is less than the
                        // literal data alone.
                        ensure!(
                            s.bytes_received < s.literal_bytes,
                            "{c}: {} bytes received for {} literal bytes",
                            s.bytes_received,
                            s.literal_bytes
                        );
                    }
                    rows.push(format!(
                        "{c}: received {} for {} literal + {} matched",
                        s.bytes_received, s.literal_bytes, s.matched_bytes
                    ));
                }
            }
        }
    }
    for r in rows {
        eprintln!("{r}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_z_negotiates_zstd_and_old_protocols_get_zlib() -> anyhow::Result<()> {
    let mut rng = Rng(7);
    let data = tempfile::tempdir()?;
    let sql = sql_dump((512 * KIB) as usize, &mut rng);
    write_bytes(&data.path().join("dump.sql"), &sql, SRC_MTIME)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for (protocol, want) in [
            (ProtocolVersion::V32, CompressionKind::Zstd),
            (ProtocolVersion::V31, CompressionKind::Zstd),
            // A 3.2+ daemon sets the varint-flist compat flag at 30 too (we send `v`).
            (ProtocolVersion::V30, CompressionKind::Zstd),
            // Protocol 29 has no compat flags, so no negotiation: -z is zlib.
            (ProtocolVersion::V29, CompressionKind::Zlib),
        ] {
            let c = cell(v, protocol);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let opts = options(protocol, Some(Compress::default()));
            let report = pull_ok(&daemon, "data/dump.sql", &opts, &mut sink).await?;
            compare_files(&data.path().join("dump.sql"), &dest.path().join("dump.sql"))
                .with_context(|| c.clone())?;
            ensure!(
                compression_of(&report) == Some(want),
                "{c}: {:?}",
                report.session
            );
            ensure!(
                report.stats.bytes_received < sql.len() as u64 / 2,
                "{c}: {:?}",
                report.stats
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_backups_are_pulled_without_compression() -> anyhow::Result<()> {
    let mut rng = Rng(11);
    let data = tempfile::tempdir()?;
    let gz = rng.noise((256 * KIB) as usize);
    write_bytes(&data.path().join("dump.sql.GZ"), &gz, SRC_MTIME)?;
    let sql = sql_dump((256 * KIB) as usize, &mut rng);
    write_bytes(&data.path().join("dump.sql"), &sql, SRC_MTIME)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let opts = options(ProtocolVersion::V32, Some(Compress::default()));
        let dest = tempfile::tempdir()?;
        let mut sink = FsSink::new(dest.path())?;
        let report = pull_ok(&daemon, "data/dump.sql.GZ", &opts, &mut sink).await?;
        ensure!(compression_of(&report).is_none(), "{:?}", report.session);
        compare_files(
            &data.path().join("dump.sql.GZ"),
            &dest.path().join("dump.sql.GZ"),
        )?;
        // An empty skip list compresses it after all; a directory pull is compressed.
        let keep = Compress {
            skip_suffixes: Compress::parse_skip_list(""),
            ..Compress::default()
        };
        let dest = tempfile::tempdir()?;
        let mut sink = FsSink::new(dest.path())?;
        let report = pull_ok(
            &daemon,
            "data/dump.sql.GZ",
            &options(ProtocolVersion::V32, Some(keep)),
            &mut sink,
        )
        .await?;
        ensure!(compression_of(&report).is_some(), "{:?}", report.session);
        let dest = tempfile::tempdir()?;
        let mut sink = FsSink::new(dest.path())?;
        let mut dir_opts = opts.clone();
        dir_opts.recursive = true;
        let report = pull_ok(&daemon, "data/", &dir_opts, &mut sink).await?;
        ensure!(compression_of(&report).is_some(), "{:?}", report.session);
        compare_files(&data.path().join("dump.sql"), &dest.path().join("dump.sql"))?;
    }
    Ok(())
}
