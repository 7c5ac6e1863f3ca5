//! Interop tests: `rsync_proto::client` against real `rsync --daemon` processes.
//!
//! Every test starts one daemon per stock rsync release (Debian's 3.5.0 and 3.2.7, see
//! `ubackup_testkit::rsync`) on a loopback port picked at run time, and runs the client
//! against it announcing each protocol from 29 to 32. A missing rsync binary skips that
//! version, or fails the test when `UBACKUP_INTEROP=required`.
//!
//! What arrives is compared with what the daemon served byte for byte, with mtime and
//! permission bits (`ubackup_testkit::compare_trees` / `compare_files`). Refusals and failures
//! are checked for their typed error, exit code and the daemon's own words. Failed and
//! cancelled pulls must leave no file under its final name that is not complete, and no
//! temp file (`.NAME.XXXXXX`) once the sink is dropped; a small relay (`Proxy`) cuts or
//! stalls a connection mid-file for that.
//!
//! Tests run on a 2-worker tokio runtime; the one that needs commits queued on the blocking
//! pool builds its own runtime with a single blocking thread.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use common::{cell, pull_ok, source, temp_files_after, versions, KIB, MIB, SETTLE};
use rsync_proto::client::{list_modules, pull, pull_with, Error, FsSink, PullOptions, Source};
use rsync_proto::daemon::ModuleInfo;
use rsync_proto::{ChecksumKind, Event, ProtocolError, ProtocolVersion, RefusalKind, SessionError};
use ubackup_testkit::{
    check_partials_are_prefixes, compare_files, compare_trees, in_partial_dir, list_tree,
    make_tree, set_mtime, temp_files, write_random_file, DaemonBuilder, Module, RsyncDaemon,
};

/// Every protocol the client speaks.
const PROTOCOLS: [ProtocolVersion; 4] = [
    ProtocolVersion::V29,
    ProtocolVersion::V30,
    ProtocolVersion::V31,
    ProtocolVersion::V32,
];

/// Options for a recursive pull announcing `protocol`, bounded in time.
fn options(protocol: ProtocolVersion) -> PullOptions {
    PullOptions {
        protocol,
        recursive: true,
        timeout: Some(Duration::from_secs(60)),
        connect_timeout: Duration::from_secs(10),
        ..PullOptions::default()
    }
}

/// `err` is the daemon's refusal of `kind`, with its words verbatim, retryable or not as
/// given, and exit code 5.
fn assert_refused(err: &Error, kind: RefusalKind, message: &str, retryable: bool, cell: &str) {
    assert!(
        matches!(err, Error::Session(SessionError::Refused { kind: k, .. }) if *k == kind),
        "{cell}: {err:?}"
    );
    assert_eq!(err.remote_message(), Some(message), "{cell}");
    assert_eq!(err.is_retryable(), retryable, "{cell}");
    assert_eq!(err.exit_code(), 5, "{cell}");
}

/// Pulls `module_path` into `sink` and returns the error it must fail with.
async fn pull_err(
    daemon: &RsyncDaemon,
    module_path: &str,
    opts: &PullOptions,
    sink: &mut FsSink,
) -> anyhow::Result<Error> {
    let src = source(daemon, module_path)?;
    match pull(&src, opts, sink).await {
        Ok(report) => bail!(
            "rsync {}, protocol {}: pull of {src} succeeded but must fail: {report:?}",
            daemon.version().label(),
            opts.protocol.get()
        ),
        Err(e) => Ok(e),
    }
}

/// Writes `size` random bytes (from `seed`) to `root/rel` with `mode` and `mtime`.
fn write_file(
    root: &Path,
    rel: &str,
    size: u64,
    seed: u64,
    mode: u32,
    mtime: i64,
) -> anyhow::Result<PathBuf> {
    let path = root.join(rel);
    write_random_file(&path, size, seed)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    set_mtime(&path, mtime)?;
    Ok(path)
}

fn expected_checksum(p: ProtocolVersion) -> ChecksumKind {
    // Below 30 there is no negotiation: MD4 with the seed prefixed. From 30 on the `v`
    // capability makes both sides negotiate, and both stock releases prefer xxh128.
    if p.get() < 30 {
        ChecksumKind::Md4Old
    } else {
        ChecksumKind::Xxh128
    }
}

/// Files around the token chunk (32 KiB), block and 24-bit mux frame (16 MiB) boundaries,
/// with spaces and UTF-8 in names, assorted modes and mtimes: (path, size, mode, mtime).
const BOUNDARY_FILES: [(&str, u64, u32, i64); 12] = [
    ("empty", 0, 0o644, 1_600_000_000),
    ("one byte", 1, 0o600, 1),
    ("chunk-1 32767.bin", 32 * KIB - 1, 0o640, 1_700_000_000),
    ("ünïcødé файл 32768.bin", 32 * KIB, 0o755, 1_234_567_890),
    ("chunk+1 32769.bin", 32 * KIB + 1, 0o644, 2_000_000_000),
    ("sub dir/65536.bin", 64 * KIB, 0o600, 1_650_000_000),
    (
        "sub dir/deeper ß/131073.bin",
        128 * KIB + 1,
        0o644,
        1_650_000_001,
    ),
    ("sub dir/deeper ß/1 MiB+3.bin", MIB + 3, 0o644, 999_999_999),
    ("frames/16777215.bin", 16 * MIB - 1, 0o644, 1_600_000_123),
    ("frames/16777216.bin", 16 * MIB, 0o640, 1_600_000_456),
    ("frames/16777217.bin", 16 * MIB + 1, 0o644, 1_600_000_789),
    ("frames/.hidden", 100, 0o600, 1_500_000_000),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_boundary_sized_files_byte_exact_at_every_protocol() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut total = 0;
    for (i, (rel, size, mode, mtime)) in BOUNDARY_FILES.into_iter().enumerate() {
        write_file(data.path(), rel, size, 100 + i as u64, mode, mtime)?;
        total += size;
    }
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let report = pull_ok(&daemon, "data/", &options(p), &mut sink).await?;
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;
            let session = report
                .session
                .with_context(|| format!("{cell}: no session"))?;
            assert_eq!(session.protocol, p, "{cell}: negotiated protocol");
            assert_eq!(session.checksum, expected_checksum(p), "{cell}: checksum");
            let n = BOUNDARY_FILES.len() as u64;
            assert_eq!(report.stats.files_transferred, n, "{cell}: {report:?}");
            assert_eq!(report.stats.files_failed, 0, "{cell}: {report:?}");
            assert_eq!(report.stats.literal_bytes, total, "{cell}: {report:?}");
            assert_eq!(report.stats.matched_bytes, 0, "{cell}: {report:?}");
            assert!(report.stats.bytes_received > total, "{cell}: {report:?}");
            assert_eq!(sink.committed(), n, "{cell}");
            assert_eq!(sink.skipped_up_to_date(), 0, "{cell}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_a_256_mib_file_byte_exact() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let big = write_file(
        data.path(),
        "big file.bin",
        256 * MIB,
        256,
        0o640,
        1_700_000_256,
    )?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [
            ProtocolVersion::V30,
            ProtocolVersion::V31,
            ProtocolVersion::V32,
        ] {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let started = Instant::now();
            let report = pull_ok(&daemon, "data/big file.bin", &options(p), &mut sink).await?;
            let took = started.elapsed();
            compare_files(&big, &dest.path().join("big file.bin")).with_context(|| cell.clone())?;
            assert_eq!(report.stats.files_transferred, 1, "{cell}: {report:?}");
            assert_eq!(report.stats.literal_bytes, 256 * MIB, "{cell}: {report:?}");
            eprintln!(
                "{cell}: 256 MiB in {took:.2?} ({:.0} MiB/s)",
                256.0 / took.as_secs_f64()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_5000_files_in_nested_directories_recursively() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    make_tree(data.path(), 5000, 5000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let started = Instant::now();
            let report = pull_ok(&daemon, "data/", &options(p), &mut sink).await?;
            let took = started.elapsed();
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;
            assert_eq!(report.stats.files_transferred, 5000, "{cell}: {report:?}");
            assert_eq!(sink.committed(), 5000, "{cell}");
            eprintln!("{cell}: 5000 files in {took:.2?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_skips_unchanged_files_unless_ignore_times() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    make_tree(data.path(), 300, 77)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [ProtocolVersion::V29, ProtocolVersion::V32] {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut first = FsSink::new(dest.path())?;
            let report = pull_ok(&daemon, "data/", &options(p), &mut first).await?;
            assert_eq!(report.stats.files_transferred, 300, "{cell}: {report:?}");

            let mut again = FsSink::new(dest.path())?;
            let report = pull_ok(&daemon, "data/", &options(p), &mut again).await?;
            assert_eq!(report.stats.files_transferred, 0, "{cell}: {report:?}");
            assert_eq!(report.stats.literal_bytes, 0, "{cell}: {report:?}");
            assert_eq!(again.skipped_up_to_date(), 300, "{cell}");
            assert_eq!(again.committed(), 0, "{cell}");
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;

            let mut forced = FsSink::new(dest.path())?.ignore_times(true);
            let report = pull_ok(&daemon, "data/", &options(p), &mut forced).await?;
            assert_eq!(report.stats.files_transferred, 300, "{cell}: {report:?}");
            assert_eq!(forced.skipped_up_to_date(), 0, "{cell}");
            assert_eq!(forced.committed(), 300, "{cell}");
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;

            // A file whose mtime differs is fetched again, and only that one.
            let victim = list_tree(dest.path())?
                .into_iter()
                .map(|rel| dest.path().join(rel))
                .find(|p| p.is_file())
                .context("no file pulled")?;
            fs::write(&victim, b"local change")?;
            let mut partial = FsSink::new(dest.path())?;
            let report = pull_ok(&daemon, "data/", &options(p), &mut partial).await?;
            assert_eq!(report.stats.files_transferred, 1, "{cell}: {report:?}");
            assert_eq!(partial.skipped_up_to_date(), 299, "{cell}");
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;
        }
    }
    Ok(())
}

/// A module tree with symlinks inside and pointing out of the destination.
fn symlink_source(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::symlink;
    write_file(root, "target.txt", 10, 1, 0o644, 1_600_000_000)?;
    write_file(root, "dir/inner.txt", 20, 2, 0o600, 1_600_000_001)?;
    symlink("target.txt", root.join("same dir link"))?;
    symlink("../target.txt", root.join("dir/up"))?;
    symlink("inner.txt", root.join("dir/sibling"))?;
    symlink("no such file", root.join("dangling"))?;
    symlink("/etc/passwd", root.join("absolute"))?;
    symlink("../../x", root.join("escape"))?;
    symlink("../../x", root.join("dir/escape too"))?;
    Ok(())
}

/// Links in [`symlink_source`] that must be recreated, with their targets.
const SAFE_LINKS: [(&str, &str); 4] = [
    ("same dir link", "target.txt"),
    ("dir/up", "../target.txt"),
    ("dir/sibling", "inner.txt"),
    ("dangling", "no such file"),
];
/// Links in [`symlink_source`] whose target leaves the destination, sorted.
const UNSAFE_LINKS: [&str; 3] = ["absolute", "dir/escape too", "escape"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreates_symlinks_inside_and_refuses_those_leaving_dest() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    symlink_source(data.path())?;
    for v in versions() {
        // Without chroot a daemon munges symlinks by default ("/rsyncd-munged/" prefix).
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()).extra("munge symlinks = no"))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let opts = PullOptions {
                links: true,
                ..options(p)
            };
            let report = pull_ok(&daemon, "data/", &opts, &mut sink).await?;
            for (link, target) in SAFE_LINKS {
                let got = fs::read_link(dest.path().join(link))
                    .with_context(|| format!("{cell}: symlink {link:?} not created"))?;
                assert_eq!(got, Path::new(target), "{cell}: target of {link:?}");
            }
            for link in UNSAFE_LINKS {
                let path = dest.path().join(link);
                assert!(
                    fs::symlink_metadata(&path).is_err(),
                    "{cell}: {link:?} must not be created"
                );
            }
            let mut refused = sink.refused_symlinks().to_vec();
            refused.sort();
            assert_eq!(refused, UNSAFE_LINKS, "{cell}: refused symlinks");
            for file in ["target.txt", "dir/inner.txt"] {
                compare_files(&data.path().join(file), &dest.path().join(file))
                    .with_context(|| cell.clone())?;
            }
            assert_eq!(report.stats.files_transferred, 2, "{cell}: {report:?}");
            let all: BTreeSet<String> = ["target.txt", "dir", "dir/inner.txt"]
                .into_iter()
                .chain(SAFE_LINKS.map(|(l, _)| l))
                .map(String::from)
                .collect();
            assert_eq!(list_tree(dest.path())?, all, "{cell}: destination entries");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_no_symlink_without_links() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    symlink_source(data.path())?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()).extra("munge symlinks = no"))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let opts = PullOptions {
                links: false,
                ..options(p)
            };
            pull_ok(&daemon, "data/", &opts, &mut sink).await?;
            let want: BTreeSet<String> = ["target.txt", "dir", "dir/inner.txt"]
                .into_iter()
                .map(String::from)
                .collect();
            assert_eq!(list_tree(dest.path())?, want, "{cell}: destination entries");
            assert!(sink.refused_symlinks().is_empty(), "{cell}");
            compare_files(
                &data.path().join("dir/inner.txt"),
                &dest.path().join("dir/inner.txt"),
            )
            .with_context(|| cell.clone())?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slash_and_single_file_destinations_follow_rsync() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = data.path().join("dir");
    write_file(&dir, "a.txt", 100, 1, 0o644, 1_600_000_000)?;
    write_file(&dir, "sub/b.txt", 200, 2, 0o600, 1_600_000_001)?;
    let file = write_file(data.path(), "file.bin", 40 * KIB, 3, 0o640, 1_600_000_002)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let opts = options(p);

            // `dir/`: the contents of dir go into dest.
            let dest = tempfile::tempdir()?;
            pull_ok(&daemon, "data/dir/", &opts, &mut FsSink::new(dest.path())?).await?;
            compare_trees(&dir, dest.path()).with_context(|| format!("{cell}: dir/"))?;

            // `dir`: dest/dir/...
            let dest = tempfile::tempdir()?;
            pull_ok(&daemon, "data/dir", &opts, &mut FsSink::new(dest.path())?).await?;
            let top = list_tree(dest.path())?;
            assert!(
                top.iter()
                    .all(|rel| rel == "dir" || rel.starts_with("dir/")),
                "{cell}: {top:?}"
            );
            compare_trees(&dir, &dest.path().join("dir"))
                .with_context(|| format!("{cell}: dir"))?;

            // A single file into a path that does not exist: written as that path.
            let dest = tempfile::tempdir()?;
            let as_path = dest.path().join("renamed.bin");
            pull_ok(&daemon, "data/file.bin", &opts, &mut FsSink::new(&as_path)?).await?;
            compare_files(&file, &as_path).with_context(|| format!("{cell}: file as dest"))?;
            assert_eq!(
                list_tree(dest.path())?,
                BTreeSet::from(["renamed.bin".to_owned()]),
                "{cell}"
            );

            // A single file into an existing directory: dest/file.bin.
            let dest = tempfile::tempdir()?;
            pull_ok(
                &daemon,
                "data/file.bin",
                &opts,
                &mut FsSink::new(dest.path())?,
            )
            .await?;
            compare_files(&file, &dest.path().join("file.bin"))
                .with_context(|| format!("{cell}: file into dir"))?;

            // A single file into a new path ending in '/': created as a directory.
            let dest = tempfile::tempdir()?;
            let new_dir = dest.path().join("new dir/");
            pull_ok(&daemon, "data/file.bin", &opts, &mut FsSink::new(&new_dir)?).await?;
            compare_files(&file, &dest.path().join("new dir/file.bin"))
                .with_context(|| format!("{cell}: file into dir/"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_and_types_auth_failures() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "secret.bin", 5000, 9, 0o600, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("secret", data.path()).auth("alice", "correct horse"))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            // User from the URL.
            let src = format!("rsync://alice@127.0.0.1:{}/secret/", daemon.port());
            let src: Source = src.parse()?;
            let opts = PullOptions {
                password: Some(b"correct horse".to_vec()),
                ..options(p)
            };
            let dest = tempfile::tempdir()?;
            pull(&src, &opts, &mut FsSink::new(dest.path())?)
                .await
                .map_err(|e| anyhow!("{cell}: {e}\n--- daemon log:\n{}", daemon.log()))?;
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;

            // User from the options.
            let opts = PullOptions {
                user: Some("alice".into()),
                password: Some(b"correct horse".to_vec()),
                ..options(p)
            };
            let dest = tempfile::tempdir()?;
            pull_ok(&daemon, "secret/", &opts, &mut FsSink::new(dest.path())?).await?;
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;

            // Wrong password.
            let opts = PullOptions {
                user: Some("alice".into()),
                password: Some(b"wrong".to_vec()),
                ..options(p)
            };
            let dest = tempfile::tempdir()?;
            let err = pull_err(&daemon, "secret/", &opts, &mut FsSink::new(dest.path())?).await?;
            assert_refused(
                &err,
                RefusalKind::AuthFailed,
                "auth failed on module secret",
                false,
                &cell,
            );
            assert!(list_tree(dest.path())?.is_empty(), "{cell}");

            // No password at all.
            let opts = PullOptions {
                user: Some("alice".into()),
                ..options(p)
            };
            let err = pull_err(&daemon, "secret/", &opts, &mut FsSink::new(dest.path())?).await?;
            assert!(
                matches!(
                    &err,
                    Error::Session(SessionError::Protocol(ProtocolError::PasswordRequired))
                ),
                "{cell}: {err:?}"
            );
            assert!(!err.is_retryable(), "{cell}");
            assert_eq!(err.exit_code(), 5, "{cell}");
        }
        assert!(
            daemon.log().contains("auth failed on module secret"),
            "rsync {}: {}",
            v.label(),
            daemon.log()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refusals_are_typed_with_the_daemons_words() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "f", 10, 1, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .module(Module::new("denied", data.path()).extra("hosts deny = 127.0.0.1"))
            .module(Module::new("limited", data.path()).extra("max connections = 1"))
            .start()?;
        let slot = daemon.hold_module_slot("limited")?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let opts = options(p);
            let dest = tempfile::tempdir()?;

            let err = pull_err(&daemon, "nosuch/", &opts, &mut FsSink::new(dest.path())?).await?;
            assert_refused(
                &err,
                RefusalKind::UnknownModule,
                "Unknown module 'nosuch'",
                false,
                &cell,
            );

            let err = pull_err(&daemon, "denied/", &opts, &mut FsSink::new(dest.path())?).await?;
            assert_refused(
                &err,
                RefusalKind::AccessDenied,
                "access denied to denied from UNDETERMINED (127.0.0.1)",
                false,
                &cell,
            );

            let err = pull_err(&daemon, "limited/", &opts, &mut FsSink::new(dest.path())?).await?;
            assert_refused(
                &err,
                RefusalKind::MaxConnections,
                "max connections (1) reached -- try again later",
                true,
                &cell,
            );

            assert!(list_tree(dest.path())?.is_empty(), "{cell}");
        }
        // Once the slot is free the module serves again.
        drop(slot);
        let dest = tempfile::tempdir()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let opts = options(ProtocolVersion::V32);
            match pull(
                &source(&daemon, "limited/")?,
                &opts,
                &mut FsSink::new(dest.path())?,
            )
            .await
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("rsync {}: {e}\n{}", v.label(), daemon.log()),
            }
        }
        compare_trees(data.path(), dest.path())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_option_is_reported_with_the_daemons_words() -> anyhow::Result<()> {
    // The daemon parses our arguments after "@RSYNCD: OK", sends compat flags and seed, then
    // one MSG_ERROR, sleeps 400 ms and exits without reading what we sent since, so the
    // connection ends in a reset. Stock rsync 3.5.0 and 3.2.7 clients print the message and
    // exit with 10 (socket I/O).
    const REFUSAL: &str = "rsync: The server is configured to refuse --recursive (-r)";
    let data = tempfile::tempdir()?;
    write_file(data.path(), "f", 10, 1, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("flat", data.path()).extra("refuse options = recursive"))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let src = source(&daemon, "flat/")?;
            let mut messages = Vec::new();
            let result = pull_with(&src, &options(p), &mut FsSink::new(dest.path())?, |ev| {
                if let Event::Message { kind, text } = ev {
                    messages.push((*kind, text.clone()));
                }
            })
            .await;
            let err = match result {
                Ok(r) => bail!("{cell}: pull with a refused option succeeded: {r:?}"),
                Err(e) => e,
            };
            // MSG_ERROR; the kind does not matter here, the words do.
            assert!(
                matches!(&messages[..], [(kind, text)] if kind.is_error() && text == REFUSAL),
                "{cell}: messages seen {messages:?} ({err:?})"
            );
            assert_eq!(err.remote_message(), Some(REFUSAL), "{cell}: {err:?}");
            assert!(
                matches!(err.exit_code(), 5 | 10),
                "{cell}: exit code {} ({err:?})",
                err.exit_code()
            );
            assert!(list_tree(dest.path())?.is_empty(), "{cell}");
        }
        assert!(
            daemon.log().contains(REFUSAL),
            "rsync {}: {}",
            v.label(),
            daemon.log()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_path_is_a_partial_transfer_with_the_daemons_words() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "present", 10, 1, 0o644, 1_600_000_000)?;
    // The sender chdirs into the module and names paths relative to it. A missing file is
    // ENOENT from link_stat, which rsync reports (MSG_ERROR_XFER) without setting io_error;
    // stock clients still exit with 23 for it. A missing directory fails change_dir.
    let cases = [
        (
            "data/missing.bin",
            "rsync: [sender] link_stat \"missing.bin\" (in data) failed: \
             No such file or directory (2)",
        ),
        (
            "data/no such dir/file",
            "rsync: [sender] change_dir \"no such dir\" (in data) failed: \
             No such file or directory (2)",
        ),
    ];
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            for (path, text) in &cases {
                let dest = tempfile::tempdir()?;
                let err =
                    pull_err(&daemon, path, &options(p), &mut FsSink::new(dest.path())?).await?;
                assert!(
                    matches!(&err, Error::Partial { .. }),
                    "{cell}: {path}: {err:?}"
                );
                assert_eq!(err.exit_code(), 23, "{cell}: {path}");
                assert_eq!(err.remote_message(), Some(*text), "{cell}: {path}");
                assert!(list_tree(dest.path())?.is_empty(), "{cell}: {path}");
            }
        }
    }
    Ok(())
}

/// MOTD lines without the empty line every daemon sends after the MOTD file
/// (clientserver.c: `write_sbuf(f_out, "\n")`).
fn motd_text(lines: &[String]) -> &[String] {
    match lines.split_last() {
        Some((last, rest)) if last.is_empty() => rest,
        _ => lines,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_modules_with_comments_and_motd() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "f", 10, 1, 0o644, 1_600_000_000)?;
    let motd = [
        "Welcome to the ubackup test daemon",
        "",
        "Second line: ünïcødé",
    ];
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .motd(format!("{}\n", motd.join("\n")))
            .module(Module::new("data", data.path()).comment("test data, with spaces"))
            .module(Module::new("other", data.path()))
            .module(Module::new("hidden", data.path()).extra("list = no"))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let listing = list_modules(&source(&daemon, "")?, &options(p))
                .await
                .map_err(|e| anyhow!("{cell}: {e}\n--- daemon log:\n{}", daemon.log()))?;
            assert_eq!(motd_text(&listing.motd), motd, "{cell}");
            assert_eq!(
                listing.modules,
                [
                    ModuleInfo {
                        name: "data".into(),
                        comment: "test data, with spaces".into()
                    },
                    ModuleInfo {
                        name: "other".into(),
                        comment: String::new()
                    },
                ],
                "{cell}"
            );
            // A pull sees the MOTD too.
            let dest = tempfile::tempdir()?;
            let report = pull_ok(
                &daemon,
                "hidden/",
                &options(p),
                &mut FsSink::new(dest.path())?,
            )
            .await?;
            assert_eq!(motd_text(&report.motd), motd, "{cell}");
            compare_trees(data.path(), dest.path()).with_context(|| cell.clone())?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_file_fails_the_pull_without_leaving_a_file() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    fs::set_permissions(data.path(), fs::Permissions::from_mode(0o755))?;
    let readable = write_file(
        data.path(),
        "readable.bin",
        70 * KIB,
        1,
        0o644,
        1_600_000_000,
    )?;
    write_file(
        data.path(),
        "unreadable.bin",
        70 * KIB,
        2,
        0o000,
        1_600_000_000,
    )?;
    // A root daemon reads everything; serve this module as nobody instead.
    let root = fs::metadata("/proc/self")?.uid() == 0;
    for v in versions() {
        let mut module = Module::new("data", data.path());
        if root {
            module = module.extra("uid = nobody").extra("gid = nogroup");
        }
        let daemon = DaemonBuilder::new(v).module(module).start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let err = pull_err(&daemon, "data/", &options(p), &mut sink).await?;
            drop(sink);
            assert!(matches!(&err, Error::Partial { .. }), "{cell}: {err:?}");
            assert_eq!(err.exit_code(), 23, "{cell}");
            let text = err.remote_message().unwrap_or_default();
            assert!(
                text.contains("unreadable.bin") && text.contains("Permission denied (13)"),
                "{cell}: remote message {text:?}"
            );
            compare_files(&readable, &dest.path().join("readable.bin"))
                .with_context(|| cell.clone())?;
            assert_eq!(
                list_tree(dest.path())?,
                BTreeSet::from(["readable.bin".to_owned()]),
                "{cell}: no unreadable.bin, no temp file"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pull_leaves_neither_final_name_nor_temp_file() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 64 * MIB, 7, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in [ProtocolVersion::V29, ProtocolVersion::V32] {
            let cell = cell(v, p);
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let src = source(&daemon, "data/big.bin")?;
            let opts = options(p);
            let data_seen = Arc::new(tokio::sync::Notify::new());
            let notify = data_seen.clone();
            let mut seen = false;
            let pulling = pull_with(&src, &opts, &mut sink, |ev| {
                if matches!(ev, Event::FileData(..)) && !seen {
                    seen = true;
                    notify.notify_one();
                }
            });
            tokio::select! {
                r = pulling => bail!("{cell}: pull ended before it was cancelled: {r:?}"),
                _ = data_seen.notified() => {}
            }
            assert!(
                fs::symlink_metadata(dest.path().join("big.bin")).is_err(),
                "{cell}: final name exists mid-transfer"
            );
            assert_eq!(
                temp_files(dest.path())?.len(),
                1,
                "{cell}: one temp file in flight"
            );
            drop(sink);
            // What arrived is kept for the next pull, only in the partial directory.
            let left = list_tree(dest.path())?;
            assert!(
                left.iter().all(|rel| in_partial_dir(rel)),
                "{cell}: left behind outside the partial directory: {left:?}"
            );
            assert_eq!(
                check_partials_are_prefixes(data.path(), dest.path())?,
                1,
                "{cell}: {left:?}"
            );
        }
    }
    Ok(())
}

/// What [`Proxy`] does once it has relayed its byte budget from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterBudget {
    /// Close both connections.
    Cut,
    /// Stop relaying from the daemon but keep everything open until the client leaves.
    Stall,
}

/// A one-connection TCP relay between the client and a daemon that passes at most `budget`
/// bytes from the daemon to the client.
struct Proxy {
    addr: SocketAddr,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    fn start(daemon: SocketAddr, budget: u64, after: AfterBudget) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let (client, _) = listener.accept()?;
            let server = TcpStream::connect(daemon)?;
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
            }
            // Client to daemon, until the client goes away.
            let (mut c, mut s) = (client.try_clone()?, server.try_clone()?);
            let upstream = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s);
                let _ = s.shutdown(Shutdown::Both);
            });
            // Daemon to client, up to the budget.
            let (mut s, mut c) = (server.try_clone()?, client.try_clone()?);
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = budget;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = s.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                c.write_all(&buf[..n])?;
                left -= n as u64;
            }
            if after == AfterBudget::Cut {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
            upstream
                .join()
                .map_err(|_| anyhow!("proxy upstream thread panicked"))?;
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        });
        Ok(Proxy {
            addr,
            thread: Some(thread),
        })
    }

    /// A source for `module_path` through the proxy.
    fn source(&self, module_path: &str) -> anyhow::Result<Source> {
        Ok(format!("rsync://{}/{module_path}", self.addr).parse()?)
    }

    fn join(mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("proxy thread panicked"))?,
            None => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cut_mid_file_leaves_no_file_behind() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 16 * MIB, 8, 0o644, 1_600_000_000)?;
    write_file(data.path(), "a-small.bin", 1000, 9, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let proxy = Proxy::start(daemon.addr(), 4 * MIB, AfterBudget::Cut)?;
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let started = Instant::now();
            let err = match pull(&proxy.source("data/")?, &options(p), &mut sink).await {
                Ok(r) => bail!("{cell}: pull through a cut connection succeeded: {r:?}"),
                Err(e) => e,
            };
            assert!(started.elapsed() < Duration::from_secs(30), "{cell}");
            assert!(err.is_retryable(), "{cell}: {err:?}");
            assert!(
                fs::symlink_metadata(dest.path().join("big.bin")).is_err(),
                "{cell}: big.bin under its final name after {err:?}"
            );
            drop(sink);
            let temps = temp_files_after(dest.path(), SETTLE).await?;
            assert!(
                temps.is_empty(),
                "{cell}: temp files left behind: {temps:?}"
            );
            assert!(
                !list_tree(dest.path())?.contains("big.bin"),
                "{cell}: big.bin under its final name"
            );
            check_partials_are_prefixes(data.path(), dest.path()).with_context(|| cell.clone())?;
            proxy.join().with_context(|| cell.clone())?;
        }
    }
    Ok(())
}

#[test]
fn connection_cut_with_commits_in_flight_leaves_no_temp_files() -> anyhow::Result<()> {
    // Many small files and a blocking pool of one thread: when the connection breaks,
    // several verified files are still queued for their fsync-and-rename, not started.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()?
        .block_on(cut_with_commits_in_flight())
}

async fn cut_with_commits_in_flight() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    for i in 0..600 {
        write_file(
            data.path(),
            &format!("f{i:04}.bin"),
            8 * KIB,
            i,
            0o644,
            1_600_000_000 + i as i64,
        )?;
    }
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        for p in PROTOCOLS {
            let cell = cell(v, p);
            let proxy = Proxy::start(daemon.addr(), 2 * MIB, AfterBudget::Cut)?;
            let dest = tempfile::tempdir()?;
            let mut sink = FsSink::new(dest.path())?;
            let err = match pull(&proxy.source("data/")?, &options(p), &mut sink).await {
                Ok(r) => bail!("{cell}: pull through a cut connection succeeded: {r:?}"),
                Err(e) => e,
            };
            assert!(err.is_retryable(), "{cell}: {err:?}");
            drop(sink);
            let temps = temp_files_after(dest.path(), SETTLE).await?;
            assert!(
                temps.is_empty(),
                "{cell}: {} temp files left behind after {err}: {temps:?}",
                temps.len()
            );
            check_partials_are_prefixes(data.path(), dest.path()).with_context(|| cell.clone())?;
            // Whatever is under a final name is complete.
            let done: Vec<String> = list_tree(dest.path())?
                .into_iter()
                .filter(|rel| !in_partial_dir(rel))
                .collect();
            assert!(
                done.len() < 600,
                "{cell}: all files arrived through a cut connection"
            );
            for rel in &done {
                compare_files(&data.path().join(rel), &dest.path().join(rel))
                    .with_context(|| cell.clone())?;
            }
            proxy.join().with_context(|| cell.clone())?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_daemon_times_out_mid_file_and_leaves_no_file_behind() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    write_file(data.path(), "big.bin", 16 * MIB, 8, 0o644, 1_600_000_000)?;
    for v in versions() {
        let daemon = DaemonBuilder::new(v)
            .module(Module::new("data", data.path()))
            .start()?;
        let p = ProtocolVersion::V32;
        let cell = cell(v, p);
        let proxy = Proxy::start(daemon.addr(), 2 * MIB, AfterBudget::Stall)?;
        let dest = tempfile::tempdir()?;
        let mut sink = FsSink::new(dest.path())?;
        let opts = PullOptions {
            timeout: Some(Duration::from_secs(1)),
            ..options(p)
        };
        let started = Instant::now();
        let err = match pull(&proxy.source("data/big.bin")?, &opts, &mut sink).await {
            Ok(r) => bail!("{cell}: pull through a stalled connection succeeded: {r:?}"),
            Err(e) => e,
        };
        let took = started.elapsed();
        assert!(matches!(&err, Error::Timeout { .. }), "{cell}: {err:?}");
        assert_eq!(err.exit_code(), 30, "{cell}");
        assert!(err.is_retryable(), "{cell}");
        assert!(took < Duration::from_secs(10), "{cell}: took {took:?}");
        drop(sink);
        let left = list_tree(dest.path())?;
        assert!(
            left.iter().all(|rel| in_partial_dir(rel)),
            "{cell}: {left:?}"
        );
        check_partials_are_prefixes(data.path(), dest.path()).with_context(|| cell.clone())?;
        proxy.join().with_context(|| cell.clone())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_retryable_socket_error() -> anyhow::Result<()> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let src: Source = format!("rsync://127.0.0.1:{port}/data/").parse()?;
    let dest = tempfile::tempdir()?;
    let err = match pull(
        &src,
        &options(ProtocolVersion::V32),
        &mut FsSink::new(dest.path())?,
    )
    .await
    {
        Ok(r) => bail!("pull from a closed port succeeded: {r:?}"),
        Err(e) => e,
    };
    assert!(matches!(&err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 10);
    assert!(err.is_retryable());
    Ok(())
}

#[test]
fn testkit_partial_dir_is_the_sinks() {
    assert_eq!(
        ubackup_testkit::PARTIAL_DIR,
        rsync_proto::client::PARTIAL_DIR
    );
}
