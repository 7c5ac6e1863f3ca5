//! A hostile or broken daemon cannot hurt the puller.
//!
//! Every test here runs the real network path: a [`HostileDaemon`] from the testkit on a
//! loopback port picked at run time, `client::pull` into an [`FsSink`], and then checks on
//! what is left on disk. Each attack class of rsync's 3.4.0 / 3.5.0 receiver fixes (and the
//! ones the issue adds) has a test that asserts:
//!
//! - the typed error the pull ends with (or, for input that is legal, exactly what was
//!   written);
//! - nothing changed outside the destination ([`Arena::assert_contained`]);
//! - no file under a final name except the ones that verified, byte for byte, and no temp
//!   file left behind ([`Arena::assert_only_verified`]);
//! - bounded memory: each refusal is a limit or shape check that fires before anything is
//!   sized from the peer's value. The volume attacks (floods, maximum frames) are also
//!   measured as peak RSS in `tests/hostile_memory.rs`.
//!
//! The stall tests use a 1 s stall timeout so they finish quickly; they assert the typed
//! timeout, never a duration. The others have 5 s, which only a broken test waits for.

// Helpers outside #[test] fns too: a failed fixture step fails the test at once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsync_proto::client::{self, Error, FsSink, PullOptions, PullReport};
use rsync_proto::delta::{sum_sizes, SumHead, Token};
use rsync_proto::flist::xmit;
use rsync_proto::mux::{encode_frame, MessageCode, MAX_FRAME_LEN};
use rsync_proto::wire::{put_i32, NDX_DONE};
use rsync_proto::{FileEntry, FileKind, FileList, ProtocolError, ProtocolVersion, SessionError};
use ubackup_testkit::hostile::{HostileDaemon, Played, Script, Step, Wire};
use ubackup_testkit::{in_partial_dir, list_tree, temp_files};

const PROTOCOLS: [u32; 4] = [29, 30, 31, 32];
const DIR: u32 = 0o040755;
const REG: u32 = 0o100644;
const LNK: u32 = 0o120777;

// ----- fixtures -----

fn entry(name: &[u8], mode: u32, size: u64) -> FileEntry {
    FileEntry {
        name: name.to_vec(),
        mode,
        size,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    }
}

fn dir(name: &[u8]) -> FileEntry {
    entry(name, DIR, 0)
}

fn file(name: &[u8], len: usize) -> FileEntry {
    entry(name, REG, len as u64)
}

fn link(name: &[u8], target: &[u8]) -> FileEntry {
    let mut e = entry(name, LNK, 0);
    e.symlink_target = Some(target.to_vec());
    e
}

/// Deterministic content for a file of the list.
fn content(e: &FileEntry) -> Vec<u8> {
    let mut x: u32 = e
        .name
        .iter()
        .fold(0x9e37_79b9, |a, &b| a.rotate_left(5) ^ u32::from(b));
    (0..e.size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The regular files of `entries` with their indexes in rsync's sorted order.
fn regular_files(entries: &[FileEntry], w: &Wire) -> Vec<(i32, FileEntry)> {
    FileList::sorted(entries.to_vec(), w.flavor.protocol)
        .iter()
        .filter(|(_, e)| e.kind() == FileKind::Regular)
        .map(|(i, e)| (i.0, e.clone()))
        .collect()
}

/// An honest session: setup, the list, every regular file, the end of the run.
fn honest(p: u32, links: bool, entries: &[FileEntry]) -> Vec<u8> {
    let mut w = Wire::new(p, links);
    w.setup().flist(entries);
    for (ndx, e) in regular_files(entries, &w) {
        if e.size < 1 << 30 {
            w.file(ndx, &content(&e));
        }
    }
    w.ndx(NDX_DONE).end_of_run();
    w.take()
}

/// An honest session that ends the way a daemon does: a clean end of stream after the
/// last byte.
fn honest_script(p: u32, links: bool, entries: &[FileEntry]) -> Script {
    Script::send(honest(p, links, entries)).then(Step::Close)
}

/// A temp dir holding `dest/` (the pull's destination, not created) and `outside/` with a
/// secret and a victim directory that nothing may touch.
struct Arena {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
    before: Vec<(String, Vec<u8>)>,
}

impl Arena {
    fn new() -> Arena {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let outside = root.join("outside");
        fs::create_dir_all(outside.join("victim")).unwrap();
        fs::write(outside.join("secret.txt"), b"do not touch").unwrap();
        fs::write(outside.join("victim/f"), b"victim").unwrap();
        let mut a = Arena {
            _tmp: tmp,
            dest: root.join("dest"),
            outside,
            root,
            before: Vec::new(),
        };
        a.before = a.snapshot_outside();
        a
    }

    /// Every path of the arena outside `dest`, with file contents (symlinks not followed).
    fn snapshot_outside(&self) -> Vec<(String, Vec<u8>)> {
        list_tree(&self.root)
            .unwrap()
            .into_iter()
            .filter(|p| p != "dest" && !p.starts_with("dest/"))
            .map(|p| {
                let path = self.root.join(&p);
                let meta = fs::symlink_metadata(&path).unwrap();
                let bytes = if meta.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                (p, bytes)
            })
            .collect()
    }

    /// Nothing outside the destination was created, removed or changed.
    fn assert_contained(&self) {
        assert_eq!(
            self.snapshot_outside(),
            self.before,
            "something outside the destination changed"
        );
    }

    /// Regular files under final names in the destination (outside the partial
    /// directory), with their contents.
    fn final_files(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dest.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd {
                let e = e.unwrap();
                let path = e.path();
                let rel = path.strip_prefix(&self.dest).unwrap();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    if !in_partial_dir(&rel.to_string_lossy()) {
                        stack.push(path);
                    }
                } else if ft.is_file() {
                    out.insert(
                        rel.as_os_str().as_bytes().to_vec(),
                        fs::read(&path).unwrap(),
                    );
                }
            }
        }
        out
    }

    /// The only regular files under final names are `verified` ones, with exactly their
    /// content, and no temp file is left behind.
    fn assert_only_verified(&self, verified: &[&FileEntry]) {
        let want: BTreeMap<Vec<u8>, Vec<u8>> = verified
            .iter()
            .map(|e| (e.name.clone(), content(e)))
            .collect();
        let got = self.final_files();
        for (name, bytes) in &got {
            let expected = want.get(name);
            assert_eq!(
                expected.map(Vec::as_slice),
                Some(bytes.as_slice()),
                "unexpected file under a final name: {:?}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(
            temp_files(&self.dest).unwrap().is_empty(),
            "temp files left: {:?}",
            temp_files(&self.dest).unwrap()
        );
    }

    /// A verified file whose commit (fsync, rename) was under way when the pull failed
    /// finishes on the blocking pool after the sink is gone: wait (bounded) for its temp
    /// file to be renamed.
    fn wait_for_commits(&self) {
        for _ in 0..200 {
            if temp_files(&self.dest).unwrap().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Nothing at all under a final name, nothing outside.
    fn assert_untouched(&self) {
        self.assert_contained();
        self.assert_only_verified(&[]);
    }
}

fn options(links: bool) -> PullOptions {
    PullOptions {
        recursive: true,
        links,
        // Generous: only the stall tests below wait for it, with their own.
        timeout: Some(Duration::from_secs(5)),
        connect_timeout: Duration::from_secs(5),
        ..PullOptions::default()
    }
}

/// For the tests that expect the stall deadline to fire: short, so they finish quickly.
fn stall_options() -> PullOptions {
    PullOptions {
        timeout: Some(Duration::from_secs(1)),
        ..options(false)
    }
}

/// Pulls `mod/` from a hostile daemon playing `script` into the arena's destination.
async fn pull_from(
    script: Script,
    arena: &Arena,
    opts: &PullOptions,
) -> (Result<PullReport, Error>, Played) {
    let d = HostileDaemon::start(script).unwrap();
    let source: client::Source = d.url("mod/").parse().unwrap();
    let mut sink = FsSink::new(&arena.dest).unwrap();
    let r = client::pull(&source, opts, &mut sink).await;
    drop(sink);
    let played = tokio::task::spawn_blocking(move || d.finish())
        .await
        .unwrap()
        .unwrap();
    (r, played)
}

/// Plays `bytes` and then a clean end of stream; returns the protocol error it ended with.
async fn refused(p: u32, links: bool, bytes: Vec<u8>, opts: PullOptions) -> (ProtocolError, Arena) {
    let arena = Arena::new();
    let opts = PullOptions { links, ..opts };
    let (r, _) = pull_from(Script::send(bytes).then(Step::Close), &arena, &opts).await;
    (protocol_error(p, r), arena)
}

fn protocol_error(p: u32, r: Result<PullReport, Error>) -> ProtocolError {
    match r {
        Err(Error::Session(SessionError::Protocol(e))) => e,
        other => panic!("protocol {p}: expected a protocol error, got {other:?}"),
    }
}

fn timed_out(p: u32, r: Result<PullReport, Error>) -> &'static str {
    match r {
        Err(Error::Timeout { during, .. }) => during,
        other => panic!("protocol {p}: expected a timeout, got {other:?}"),
    }
}

/// Setup and a list, then the file data built by `then`, then a clean end of stream.
fn after_list(p: u32, links: bool, entries: &[FileEntry], then: impl FnOnce(&mut Wire)) -> Vec<u8> {
    let mut w = Wire::new(p, links);
    w.setup().flist(entries);
    then(&mut w);
    w.take()
}

// ----- names -----

#[tokio::test]
async fn names_that_leave_the_destination_are_refused() {
    let bad: [&[u8]; 9] = [
        b"../evil",
        b"a/../../evil",
        b"a/..",
        b"./a",
        b"a//b",
        b"/etc/evil",
        b"//evil",
        b"",
        b"a\0b",
    ];
    for p in PROTOCOLS {
        for name in bad {
            let entries = [dir(b"."), file(b"ok.txt", 10), file(name, 10)];
            let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
            assert!(
                matches!(e, ProtocolError::UnsafeName { .. }),
                "protocol {p}, name {name:?}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

#[tokio::test]
async fn names_with_newline_or_invalid_utf8_land_inside_byte_for_byte() {
    // Legal POSIX names that rsync transfers: they are kept exactly, inside the
    // destination, and shown lossily (never interpreted) in reports and logs.
    for p in PROTOCOLS {
        let entries = [
            dir(b"."),
            file(b"line\nbreak", 5),
            file(b"\xff\xfe-latin1-\xe9", 7),
            file(b"tab\tand\rcr", 3),
        ];
        let arena = Arena::new();
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &options(false)).await;
        let report = r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        assert_eq!(report.stats.files_transferred, 3);
        arena.assert_contained();
        let verified: Vec<&FileEntry> = entries[1..].iter().collect();
        arena.assert_only_verified(&verified);
        assert_eq!(arena.final_files().len(), 3);
    }
}

// ----- symlinks, replaced directories, planted links -----

#[tokio::test]
async fn file_under_a_symlink_of_the_list_is_refused() {
    for p in PROTOCOLS {
        let arena_outside = Arena::new();
        let outside = arena_outside.outside.as_os_str().as_bytes().to_vec();
        for target in [outside.as_slice(), b"../outside/victim", b".", b"sub"] {
            let entries = [
                dir(b"."),
                dir(b"sub"),
                link(b"link", target),
                file(b"link/f", 10),
            ];
            let (e, arena) = refused(p, true, honest(p, true, &entries), options(true)).await;
            assert!(
                matches!(&e, ProtocolError::NotInsideDirectory { name } if name == "link/f"),
                "protocol {p}, target {target:?}: {e:?}"
            );
            arena.assert_untouched();
            assert!(!arena.dest.join("link").exists());
        }
    }
}

#[tokio::test]
async fn file_under_a_file_or_an_unlisted_directory_is_refused() {
    for p in PROTOCOLS {
        for entries in [
            vec![dir(b"."), file(b"f", 3), file(b"f/g", 3)],
            vec![dir(b"."), file(b"nodir/g", 3)],
            vec![dir(b"."), dir(b"a"), file(b"a/b/c", 3)],
        ] {
            let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
            assert!(
                matches!(e, ProtocolError::NotInsideDirectory { .. }),
                "protocol {p}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

#[tokio::test]
async fn a_directory_replaced_by_a_file_or_a_link_is_refused() {
    for p in PROTOCOLS {
        let outside = Arena::new().outside.as_os_str().as_bytes().to_vec();
        for replacement in [file(b"d", 4), link(b"d", &outside), link(b"d", b".")] {
            // The directory first, then the same name as something else, then a file
            // "inside" it (rsync's flist_sort_and_clean would quietly keep one of them).
            let entries = [dir(b"."), dir(b"d"), replacement, file(b"d/f", 3)];
            let (e, arena) = refused(p, true, honest(p, true, &entries), options(true)).await;
            assert!(
                matches!(&e, ProtocolError::DuplicateName { name } if name == "d"),
                "protocol {p}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

#[tokio::test]
async fn duplicate_names_are_refused() {
    for p in PROTOCOLS {
        for entries in [
            vec![dir(b"."), file(b"a", 3), file(b"a", 5)],
            vec![
                dir(b"."),
                dir(b"x"),
                file(b"x/a", 3),
                dir(b"x"),
                file(b"x/b", 3),
            ],
            vec![dir(b"."), dir(b".")],
        ] {
            let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
            assert!(
                matches!(e, ProtocolError::DuplicateName { .. }),
                "protocol {p}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

#[tokio::test]
async fn symlinks_whose_target_leaves_the_destination_are_not_created() {
    for p in PROTOCOLS {
        let arena = Arena::new();
        let outside = arena.outside.join("secret.txt");
        let entries = [
            dir(b"."),
            link(b"abs", outside.as_os_str().as_bytes()),
            link(b"up", b"../outside/secret.txt"),
            link(b"ok", b"data.txt"),
            file(b"data.txt", 10),
        ];
        let (r, _) = pull_from(honest_script(p, true, &entries), &arena, &options(true)).await;
        r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        arena.assert_contained();
        assert!(fs::symlink_metadata(arena.dest.join("abs")).is_err());
        assert!(fs::symlink_metadata(arena.dest.join("up")).is_err());
        assert_eq!(
            fs::read_link(arena.dest.join("ok")).unwrap(),
            Path::new("data.txt")
        );
        arena.assert_only_verified(&[&entries[4]]);
    }
}

#[tokio::test]
async fn symlink_planted_in_the_destination_is_never_followed() {
    for p in PROTOCOLS {
        // A directory of the list is a symlink to outside in the destination.
        let arena = Arena::new();
        fs::create_dir_all(&arena.dest).unwrap();
        std::os::unix::fs::symlink(arena.outside.join("victim"), arena.dest.join("sub")).unwrap();
        let entries = [dir(b"."), dir(b"sub"), file(b"sub/f", 10)];
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &options(false)).await;
        match r {
            Err(Error::Sink(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
            other => panic!("protocol {p}: expected a refused destination, got {other:?}"),
        }
        arena.assert_contained();
        arena.assert_only_verified(&[]);

        // A file of the list is a symlink to outside in the destination: the link itself
        // is replaced, its target is untouched (and never used as a delta basis).
        let arena = Arena::new();
        fs::create_dir_all(&arena.dest).unwrap();
        std::os::unix::fs::symlink(arena.outside.join("secret.txt"), arena.dest.join("f")).unwrap();
        let entries = [dir(b"."), file(b"f", 10)];
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &options(false)).await;
        let report = r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        assert_eq!(report.basis_files, 0);
        arena.assert_contained();
        assert!(fs::symlink_metadata(arena.dest.join("f"))
            .unwrap()
            .is_file());
        arena.assert_only_verified(&[&entries[1]]);
    }
}

// ----- entries we did not ask for -----

#[tokio::test]
async fn hard_link_flag_without_h_is_refused() {
    for p in PROTOCOLS {
        let mut hl = file(b"hl", 3);
        hl.xflags = xmit::HLINKED;
        let entries = [dir(b"."), file(b"a", 3), hl];
        let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
        assert!(
            matches!(
                e,
                ProtocolError::UnrequestedFeature {
                    feature: "hard links",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn devices_specials_and_unrequested_symlinks_are_skipped_never_created() {
    // A stock sender lists them even without -D / -l (the receiver skips them:
    // generator.c "skipping non-regular file"); without -D no rdev is on the wire.
    for p in PROTOCOLS {
        let entries = [
            dir(b"."),
            entry(b"chr", 0o020644, 0),
            entry(b"blk", 0o060644, 0),
            entry(b"fifo", 0o010644, 0),
            entry(b"sock", 0o140644, 0),
            entry(b"link", LNK, 0),
            file(b"data", 4),
        ];
        let arena = Arena::new();
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &options(false)).await;
        r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        arena.assert_contained();
        for n in ["chr", "blk", "fifo", "sock", "link"] {
            assert!(
                fs::symlink_metadata(arena.dest.join(n)).is_err(),
                "{n} created"
            );
        }
        arena.assert_only_verified(&[&entries[6]]);
    }
}

#[tokio::test]
async fn top_level_dot_that_is_not_a_directory_is_refused() {
    for p in PROTOCOLS {
        for mode in [REG, LNK, 0o010644] {
            let entries = [entry(b".", mode, 0), file(b"a", 3)];
            let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
            assert!(
                matches!(e, ProtocolError::BadMode { .. }),
                "protocol {p}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

#[tokio::test]
async fn incremental_recursion_and_its_list_markers_are_refused() {
    for p in [30, 31, 32] {
        // Compat flags with INC_RECURSE, which we never offer.
        let mut w = Wire::new(p, false);
        w.hello();
        let mut b = Vec::new();
        rsync_proto::wire::put_varint(&mut b, 1);
        let (e, arena) = refused(p, false, [w.take(), b].concat(), options(false)).await;
        assert!(
            matches!(
                e,
                ProtocolError::UnrequestedFeature {
                    feature: "incremental recursion",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();

        // An incremental sub-list marker (NDX_FLIST_OFFSET - n) where a file index belongs.
        let entries = [dir(b"."), file(b"a", 3)];
        let bytes = after_list(p, false, &entries, |w| {
            w.ndx(-101 - 1);
        });
        let (e, arena) = refused(p, false, bytes, options(false)).await;
        assert!(
            matches!(
                e,
                ProtocolError::InvalidValue {
                    what: "file index",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

// ----- counts and lengths at and past every limit -----

#[tokio::test]
async fn file_list_entries_at_and_past_the_limit() {
    for p in PROTOCOLS {
        let mut opts = options(false);
        opts.limits.max_entries = 5;
        let mut entries = vec![dir(b".")];
        entries.extend((0..4).map(|i| file(format!("f{i}").as_bytes(), 4)));
        let arena = Arena::new();
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &opts).await;
        r.unwrap_or_else(|e| panic!("protocol {p} at the limit: {e:?}"));

        entries.push(file(b"one-too-many", 4));
        let (e, arena) = refused(p, false, honest(p, false, &entries), opts).await;
        assert!(
            matches!(
                e,
                ProtocolError::LimitExceeded {
                    what: "file-list entries",
                    value: 6,
                    limit: 5
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn name_length_and_list_bytes_at_and_past_the_limit() {
    for p in PROTOCOLS {
        let mut opts = options(false);
        opts.limits.max_name = 200;
        let at = vec![b'n'; 200];
        let entries = [dir(b"."), file(&at, 4)];
        let arena = Arena::new();
        let (r, _) = pull_from(honest_script(p, false, &entries), &arena, &opts).await;
        r.unwrap_or_else(|e| panic!("protocol {p} at the limit: {e:?}"));
        arena.assert_only_verified(&[&entries[1]]);

        let past = vec![b'n'; 201];
        let entries = [dir(b"."), file(&past, 4)];
        let (e, arena) = refused(p, false, honest(p, false, &entries), opts.clone()).await;
        assert!(
            matches!(
                e,
                ProtocolError::LimitExceeded {
                    what: "name length",
                    value: 201,
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();

        // A long symlink target counts against the same limit.
        let entries = [dir(b"."), link(b"l", &[b't'; 200])];
        let (e, arena) = refused(p, true, honest(p, true, &entries), opts.clone()).await;
        assert!(
            matches!(
                e,
                ProtocolError::LimitExceeded {
                    what: "symlink target length",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();

        let mut opts = options(false);
        opts.limits.max_flist_bytes = 100;
        let entries: Vec<FileEntry> = std::iter::once(dir(b"."))
            .chain((0..10).map(|i| file(format!("name-{i:05}").as_bytes(), 1)))
            .collect();
        let (e, arena) = refused(p, false, honest(p, false, &entries), opts).await;
        assert!(
            matches!(
                e,
                ProtocolError::LimitExceeded {
                    what: "file-list name bytes",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

/// Setup, a one-file list, and that file's header with `head` echoed, followed by an
/// honest rest of the file.
fn with_echoed_head(p: u32, head: SumHead) -> Vec<u8> {
    let entries = [dir(b"."), file(b"a", 10)];
    after_list(p, false, &entries, |w| {
        w.file_header(1, head);
        let mut b = Vec::new();
        rsync_proto::delta::encode_literal_file(&content(&entries[1]), 1024, &mut b);
        b.extend_from_slice(&w.file_sum(&content(&entries[1])));
        w.data(&b);
    })
}

#[tokio::test]
async fn sum_heads_past_every_limit_are_refused() {
    for p in PROTOCOLS {
        let max_block = ProtocolVersion::new(p).unwrap().max_block_len();
        let cases: [(SumHead, &str); 6] = [
            (
                SumHead {
                    count: -1,
                    ..SumHead::EMPTY
                },
                "checksum count",
            ),
            (
                SumHead {
                    count: 1,
                    blength: 0,
                    s2length: 2,
                    remainder: 0,
                },
                "block length",
            ),
            (
                SumHead {
                    count: 1,
                    blength: max_block + 1,
                    s2length: 2,
                    remainder: 0,
                },
                "block length",
            ),
            (
                SumHead {
                    count: 0,
                    blength: -1,
                    s2length: 0,
                    remainder: 0,
                },
                "block length",
            ),
            (
                SumHead {
                    count: 1,
                    blength: 700,
                    s2length: 17,
                    remainder: 0,
                },
                "checksum length",
            ),
            (
                SumHead {
                    count: 1,
                    blength: 700,
                    s2length: 2,
                    remainder: 701,
                },
                "remainder length",
            ),
        ];
        for (head, what) in cases {
            let (e, arena) = refused(p, false, with_echoed_head(p, head), options(false)).await;
            assert!(
                matches!(e, ProtocolError::InvalidValue { what: w, .. } if w == what),
                "protocol {p}, {head:?}: {e:?}"
            );
            arena.assert_untouched();
        }
        // A valid head that is not the one we sent (we asked for the whole file).
        let head = SumHead {
            count: i32::MAX,
            blength: 700,
            s2length: 2,
            remainder: 0,
        };
        let (e, arena) = refused(p, false, with_echoed_head(p, head), options(false)).await;
        assert!(
            matches!(e, ProtocolError::SumHeadMismatch { ndx: 1 }),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn literal_runs_at_and_past_the_cap() {
    let cap = PullOptions::default().limits.max_literal;
    for p in PROTOCOLS {
        // One literal token of exactly the cap.
        let entries = [dir(b"."), file(b"big", cap)];
        let data = content(&entries[1]);
        let bytes = after_list(p, false, &entries, |w| {
            w.file_header(1, SumHead::EMPTY);
            let mut b = Vec::new();
            rsync_proto::delta::encode_literal_file(&data, cap, &mut b);
            b.extend_from_slice(&w.file_sum(&data));
            w.data(&b);
            w.ndx(NDX_DONE).end_of_run();
        });
        let arena = Arena::new();
        let (r, _) = pull_from(
            Script::send(bytes).then(Step::Close),
            &arena,
            &options(false),
        )
        .await;
        r.unwrap_or_else(|e| panic!("protocol {p} at the cap: {e:?}"));
        arena.assert_only_verified(&[&entries[1]]);

        // One byte more: refused on the token, before any of its bytes are taken.
        let entries = [dir(b"."), file(b"big", cap + 1)];
        let bytes = after_list(p, false, &entries, |w| {
            w.file_header(1, SumHead::EMPTY);
            let mut b = Vec::new();
            put_i32(&mut b, (cap + 1) as i32);
            w.data(&b);
        });
        let (e, arena) = refused(p, false, bytes, options(false)).await;
        assert!(
            matches!(
                e,
                ProtocolError::LimitExceeded {
                    what: "literal run",
                    ..
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn data_frames_of_the_largest_size_stream_through_and_text_frames_that_size_are_refused() {
    for p in [29, 32] {
        // A 15 MiB file in MSG_DATA frames of 2^24 - 1 bytes.
        let entries = [dir(b"."), file(b"huge", 15 << 20)];
        let data = content(&entries[1]);
        let mut w = Wire::new(p, false);
        w.setup().flist(&entries);
        w.frame = MAX_FRAME_LEN;
        w.file_header(1, SumHead::EMPTY);
        let mut b = Vec::new();
        rsync_proto::delta::encode_literal_file(&data, 1 << 20, &mut b);
        b.extend_from_slice(&w.file_sum(&data));
        w.data(&b);
        w.frame = 32 * 1024;
        w.ndx(NDX_DONE).end_of_run();
        let arena = Arena::new();
        let (r, _) = pull_from(
            Script::send(w.take()).then(Step::Close),
            &arena,
            &options(false),
        )
        .await;
        r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        arena.assert_only_verified(&[&entries[1]]);

        // A MSG_INFO header announcing 2^24 - 1 bytes: refused on the header.
        for code in [MessageCode::INFO, MessageCode::ERROR] {
            let mut w = Wire::new(p, false);
            w.setup();
            let mut b = w.take();
            b.extend_from_slice(&((u32::from(7 + code.0) << 24) | 0x00ff_ffff).to_le_bytes());
            let (e, arena) = refused(p, false, b, options(false)).await;
            assert!(
                matches!(
                    e,
                    ProtocolError::FrameTooLarge {
                        len: 0x00ff_ffff,
                        ..
                    }
                ),
                "protocol {p}: {e:?}"
            );
            arena.assert_untouched();
        }
    }
}

// ----- malformed values -----

#[tokio::test]
async fn malformed_varints_are_refused() {
    // Varint flags (protocol 32): a flags varint with five extension bits.
    let mut w = Wire::new(32, false);
    w.setup().data(&[0xf8, 0, 0, 0, 0, 0]);
    let (e, arena) = refused(32, false, w.take(), options(false)).await;
    assert!(
        matches!(e, ProtocolError::IntegerOverflow { what: "varint", .. }),
        "{e:?}"
    );
    arena.assert_untouched();

    // Compat flags (protocol 30): the same, before any multiplexing.
    let mut w = Wire::new(30, false);
    w.hello().raw(&[0xff, 1, 2, 3, 4, 5, 6, 7, 8]);
    let (e, arena) = refused(30, false, w.take(), options(false)).await;
    assert!(matches!(e, ProtocolError::IntegerOverflow { .. }), "{e:?}");
    arena.assert_untouched();

    // A size varlong that needs more than 8 bytes (protocol 31, byte flags).
    let w = Wire::new(31, false);
    let good = w.entries_bytes(&[dir(b"."), file(b"a", 1)]);
    let one = w.entries_bytes(&[dir(b".")]);
    // Entry "a": a flags byte, a name-length byte and the name; then, where its size
    // belongs, a lead byte announcing more bytes than a 64-bit value holds.
    let mut bad = good[..one.len() + 3].to_vec();
    bad.extend_from_slice(&[0xff; 12]);
    let mut w = Wire::new(31, false);
    w.setup().data(&bad);
    let (e, arena) = refused(31, false, w.take(), options(false)).await;
    assert!(
        matches!(
            e,
            ProtocolError::IntegerOverflow {
                what: "varlong",
                ..
            }
        ),
        "{e:?}"
    );
    arena.assert_untouched();
}

#[tokio::test]
async fn negative_sizes_are_refused() {
    for p in PROTOCOLS {
        let mut neg = file(b"neg", 0);
        neg.size = (-5i64) as u64;
        let entries = [dir(b"."), neg];
        let (e, arena) = refused(p, false, honest(p, false, &entries), options(false)).await;
        assert!(
            matches!(
                e,
                ProtocolError::InvalidValue {
                    what: "file length",
                    value: -5
                }
            ),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn overflowing_mtimes_are_clamped_by_the_kernel_never_trusted() {
    // From protocol 30 the mtime is a varlong that can name any i64. utimensat clamps a
    // time the file system cannot store to its range, so such a file is still written
    // inside the destination, verified, with its exact bytes.
    for p in [30, 31, 32] {
        for mtime in [i64::MAX, i64::MIN, 1 << 40] {
            let mut e = file(b"t", 3);
            e.mtime = mtime;
            let entries = [dir(b"."), e];
            let arena = Arena::new();
            let (r, _) =
                pull_from(honest_script(p, false, &entries), &arena, &options(false)).await;
            r.unwrap_or_else(|e| panic!("protocol {p}, mtime {mtime}: {e:?}"));
            arena.assert_contained();
            arena.assert_only_verified(&[&entries[1]]);
        }
    }
}

#[tokio::test]
async fn a_stream_truncated_at_any_point_is_an_unexpected_eof() {
    for p in PROTOCOLS {
        let entries = [
            dir(b"."),
            file(b"a", 3000),
            dir(b"d"),
            file(b"d/b", 70_000),
            file(b"z", 10),
        ];
        let mut w = Wire::new(p, false);
        w.frame = 1000;
        w.setup().flist(&entries);
        let files = regular_files(&entries, &w);
        // Where each file's data ends, to know which files may already be verified.
        let mut ends = Vec::new();
        for (ndx, e) in &files {
            w.file(*ndx, &content(e));
            ends.push((w.len(), e.clone()));
        }
        w.ndx(NDX_DONE).end_of_run();
        let full = w.take();
        // Cut points: inside every text line and setup value, then ~40 points through the
        // list, the files and the end of the run.
        let mut cuts: Vec<usize> = (0..60).collect();
        cuts.extend((1..40).map(|i| 60 + (full.len() - 61) * i / 40));
        cuts.push(full.len() - 1);
        for cut in cuts {
            let arena = Arena::new();
            let script = Script::send(full[..cut].to_vec()).then(Step::Close);
            let (r, _) = pull_from(script, &arena, &options(false)).await;
            let e = protocol_error(p, r);
            assert!(
                matches!(e, ProtocolError::UnexpectedEof { .. }),
                "protocol {p}, cut at {cut}/{}: {e:?}",
                full.len()
            );
            arena.assert_contained();
            arena.wait_for_commits();
            let done: Vec<&FileEntry> = ends
                .iter()
                .filter(|(end, _)| *end <= cut)
                .map(|(_, e)| e)
                .collect();
            // A verified file may be committed (or still be on its way when the EOF came),
            // anything else must not be there under its final name.
            let got = arena.final_files();
            for name in got.keys() {
                assert!(
                    done.iter().any(|e| &e.name == name),
                    "protocol {p}, cut {cut}: {:?} under its final name",
                    String::from_utf8_lossy(name)
                );
            }
            arena.assert_only_verified(&done);
        }
    }
}

// ----- file data -----

#[tokio::test]
async fn block_token_beyond_the_basis_is_refused() {
    for p in PROTOCOLS {
        for beyond in [0u32, 3, u32::MAX >> 1] {
            let arena = Arena::new();
            fs::create_dir_all(&arena.dest).unwrap();
            // A 2000-byte basis of the same name: three 700-byte blocks.
            fs::write(arena.dest.join("f"), vec![7u8; 2000]).unwrap();
            let entries = [dir(b"."), file(b"f", 2100)];
            let w = Wire::new(p, false);
            let head = sum_sizes(
                2000,
                w.flavor.protocol,
                w.flavor.checksum.digest_len(),
                false,
            );
            assert_eq!(head.count, 3);
            let block = if beyond == 0 {
                head.count as u32
            } else {
                beyond
            };
            let bytes = after_list(p, false, &entries, |w| {
                w.file_header(1, head);
                let mut b = Vec::new();
                put_i32(&mut b, Token::Block(block).to_raw());
                w.data(&b);
            });
            // No end of stream: the token is parsed once the basis signature is sent.
            let (r, _) = pull_from(Script::send(bytes), &arena, &options(false)).await;
            let e = protocol_error(p, r);
            assert!(
                matches!(e, ProtocolError::BadBlockToken { count: 3, .. }),
                "protocol {p}, block {block}: {e:?}"
            );
            arena.assert_contained();
            // The basis is still there, untouched; nothing else is.
            assert_eq!(fs::read(arena.dest.join("f")).unwrap(), vec![7u8; 2000]);
            assert_eq!(arena.final_files().len(), 1);
            assert!(temp_files(&arena.dest).unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn block_token_without_a_basis_is_refused() {
    for p in PROTOCOLS {
        let entries = [dir(b"."), file(b"f", 10)];
        let bytes = after_list(p, false, &entries, |w| {
            w.file_header(1, SumHead::EMPTY);
            let mut b = Vec::new();
            put_i32(&mut b, Token::Block(0).to_raw());
            w.data(&b);
        });
        let (e, arena) = refused(p, false, bytes, options(false)).await;
        assert!(
            matches!(e, ProtocolError::BadBlockToken { count: 0, .. }),
            "protocol {p}: {e:?}"
        );
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn a_whole_file_checksum_of_the_wrong_length_never_commits_the_file() {
    for p in PROTOCOLS {
        for short in [1usize, 8, 15] {
            let entries = [dir(b"."), file(b"f", 100)];
            let data = content(&entries[1]);
            let bytes = after_list(p, false, &entries, |w| {
                w.file_header(1, SumHead::EMPTY);
                let mut b = Vec::new();
                rsync_proto::delta::encode_literal_file(&data, 1024, &mut b);
                let sum = w.file_sum(&data);
                b.extend_from_slice(&sum[..sum.len() - short]);
                w.data(&b);
                // What follows is read as the rest of the checksum.
                w.ndx(NDX_DONE).end_of_run();
            });
            let arena = Arena::new();
            let (r, _) = pull_from(
                Script::send(bytes).then(Step::Close),
                &arena,
                &options(false),
            )
            .await;
            // The checksum cannot match; what follows is misread. Either way the file is
            // never committed and the pull fails with a typed error.
            assert!(
                matches!(
                    r,
                    Err(Error::Session(SessionError::Protocol(_)) | Error::Partial { .. })
                ),
                "protocol {p}, {short} bytes short: {r:?}"
            );
            arena.assert_untouched();
        }
    }
}

// ----- stalls and floods: the deadline fires -----

#[tokio::test]
async fn a_daemon_that_stalls_in_the_greeting_times_out() {
    for script in [
        Script::default(),
        Script::send(b"@RSYNCD: 32.0 md5".to_vec()),
        Script::send(b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n".to_vec()),
    ] {
        let arena = Arena::new();
        let (r, _) = pull_from(script, &arena, &stall_options()).await;
        assert_eq!(timed_out(32, r), "setup");
        arena.assert_untouched();
    }
}

#[tokio::test]
async fn a_daemon_that_stalls_mid_list_or_mid_file_times_out() {
    for p in PROTOCOLS {
        let entries = [dir(b"."), file(b"a", 5000), file(b"b", 5000)];
        // Mid-list: setup and the first entry only.
        let mut w = Wire::new(p, false);
        let first = w.entries_bytes(&entries[..2]);
        w.setup().data(&first);
        let arena = Arena::new();
        let (r, _) = pull_from(Script::send(w.take()), &arena, &stall_options()).await;
        timed_out(p, r);
        arena.assert_untouched();

        // Mid-file: the first file verified, the second one half sent.
        let data_a = content(&entries[1]);
        let data_b = content(&entries[2]);
        let bytes = after_list(p, false, &entries, |w| {
            w.file(1, &data_a);
            w.file_header(2, SumHead::EMPTY);
            let mut b = Vec::new();
            put_i32(&mut b, data_b.len() as i32);
            b.extend_from_slice(&data_b[..2500]);
            w.data(&b);
        });
        let arena = Arena::new();
        let (r, _) = pull_from(Script::send(bytes), &arena, &stall_options()).await;
        assert_eq!(timed_out(p, r), "transfer");
        arena.assert_contained();
        arena.assert_only_verified(&[&entries[1]]);
        // The half file is kept for resume, only in the partial directory.
        let kept = fs::read(arena.dest.join(".ubackup-partial/b")).unwrap();
        assert_eq!(kept, data_b[..2500]);
    }
}

/// Setup (and for `mid_list`, half a list), then MSG_INFO or MSG_ERROR frames until the
/// client hangs up.
fn flood_script(p: u32, code: MessageCode, mid_list: bool) -> Script {
    let mut w = Wire::new(p, false);
    w.setup();
    if mid_list {
        let first = w.entries_bytes(&[dir(b"."), file(b"a", 1)]);
        w.data(&first);
    }
    let mut chunk = Vec::new();
    for _ in 0..64 {
        encode_frame(code, &[b'!'; 1000], &mut chunk);
    }
    Script::send(w.take()).then(Step::Flood {
        chunk,
        max_bytes: u64::MAX,
    })
}

#[tokio::test]
async fn a_daemon_that_floods_text_messages_times_out() {
    for p in [29, 32] {
        for code in [MessageCode::INFO, MessageCode::ERROR] {
            for mid_list in [false, true] {
                let arena = Arena::new();
                let (r, played) =
                    pull_from(flood_script(p, code, mid_list), &arena, &stall_options()).await;
                timed_out(p, r);
                // The flood was real: it went on until the client gave up.
                assert!(played.client_hung_up_early);
                assert!(played.sent > 1 << 20, "only {} bytes flooded", played.sent);
                arena.assert_untouched();
            }
        }
    }
}

#[tokio::test]
async fn an_endless_motd_is_refused() {
    let script =
        Script::send(b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n".to_vec()).then(Step::Flood {
            chunk: b"welcome to the machine, again and again\n".repeat(100),
            max_bytes: u64::MAX,
        });
    let arena = Arena::new();
    let (r, _) = pull_from(script, &arena, &options(false)).await;
    let e = protocol_error(32, r);
    assert!(
        matches!(e, ProtocolError::MotdTooLong { limit: 65536 }),
        "{e:?}"
    );
    arena.assert_untouched();
}

#[tokio::test]
async fn a_greeting_without_a_newline_is_refused() {
    let script = Script::send(b"@RSYNCD: 32.0 ".to_vec()).then(Step::Flood {
        chunk: b"md5 ".repeat(1000),
        max_bytes: u64::MAX,
    });
    let arena = Arena::new();
    let (r, _) = pull_from(script, &arena, &options(false)).await;
    let e = protocol_error(32, r);
    assert!(
        matches!(e, ProtocolError::LineTooLong { limit: 4096 }),
        "{e:?}"
    );
    arena.assert_untouched();
}

// ----- the honest baseline: the same harness succeeds on a well-formed session -----

#[tokio::test]
async fn an_honest_session_through_the_hostile_harness_succeeds() {
    for p in PROTOCOLS {
        let entries = [
            dir(b"."),
            file(b"a", 3000),
            dir(b"d"),
            file(b"d/b", 70_000),
            link(b"l", b"a"),
        ];
        let arena = Arena::new();
        let (r, played) = pull_from(honest_script(p, true, &entries), &arena, &options(true)).await;
        let report = r.unwrap_or_else(|e| panic!("protocol {p}: {e:?}"));
        assert_eq!(report.stats.files_transferred, 2);
        assert!(!played.received.is_empty());
        arena.assert_contained();
        arena.assert_only_verified(&[&entries[1], &entries[3]]);
        assert_eq!(fs::read_link(arena.dest.join("l")).unwrap(), Path::new("a"));
    }
}
