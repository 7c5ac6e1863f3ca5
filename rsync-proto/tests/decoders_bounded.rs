//! Proptests over every decoder's fuzz entry point (`rsync_proto::fuzzing`): arbitrary
//! input, and real transcripts from `fuzz/seeds/` with bytes flipped, inserted, deleted or
//! cut. Each must return without a panic and without a large allocation.
//!
//! "Without a large allocation" is enforced, not hoped for: before the first case this
//! test binary caps its own address space (`RLIMIT_AS`) at what it maps now plus
//! [`HEADROOM`]. Inputs are at most 64 KiB, so no honest decode comes near it; an
//! allocation sized from a value in the input (a 2^31 length, a 2^24-entry count) fails,
//! the allocator aborts the process, and the test fails. That is why these cases have a
//! binary of their own: the cap is process-wide and cannot be lifted.
//!
//! The same entry points run under libFuzzer (see `fuzz/README.md`); this is the part that
//! runs in CI on a stable toolchain.

// Helpers outside #[test] fns too: a failed fixture step fails the test at once.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Address space allowed on top of what the binary maps before the first case.
const HEADROOM: u64 = 1 << 30;

type Entry = fn(&[u8]);

const ENTRY_POINTS: [(&str, Entry); 12] = [
    ("greeting", rsync_proto::fuzzing::greeting),
    ("daemon_response", rsync_proto::fuzzing::daemon_response),
    ("mux", rsync_proto::fuzzing::mux),
    ("wire", rsync_proto::fuzzing::wire),
    ("flist", rsync_proto::fuzzing::flist),
    ("sum_head", rsync_proto::fuzzing::sum_head),
    ("tokens", rsync_proto::fuzzing::tokens),
    ("receiver", rsync_proto::fuzzing::receiver),
    ("tokens_zstd", rsync_proto::fuzzing::tokens_zstd),
    ("tokens_lz4", rsync_proto::fuzzing::tokens_lz4),
    ("tokens_zlib", rsync_proto::fuzzing::tokens_zlib),
    ("tokens_zlibx", rsync_proto::fuzzing::tokens_zlibx),
];

fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn cap_address_space() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let limit = vm_size() + HEADROOM;
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(limit),
            maximum: None,
        },
    )
    .expect("setting RLIMIT_AS");
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Cut(usize),
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(at, x) => {
                if let Some(v) = b.get_mut(at % n) {
                    *v ^= x | 1;
                }
            }
            Edit::Insert(at, bytes) => {
                let at = (at % n).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(at, len) => {
                let at = (at % n).min(b.len());
                let end = (at + len).min(b.len());
                b.drain(at..end);
            }
            Edit::Cut(at) => b.truncate(at % n),
        }
    }
    b
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Edit::Flip(a, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1..32usize).prop_map(|(a, l)| Edit::Delete(a, l)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

#[test]
fn every_decoder_survives_arbitrary_and_mutated_input_within_bounded_memory() {
    cap_address_space();
    for (name, entry) in ENTRY_POINTS {
        let mut runner = TestRunner::new(Config {
            cases: 1000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..16 * 1024), |data| {
                entry(&data);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}, arbitrary input: {e}"));

        let seeds = seeds(name);
        let mut runner = TestRunner::new(Config {
            cases: 1000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(
                &(0..seeds.len(), prop::collection::vec(edit(), 1..6)),
                |(i, edits)| {
                    entry(&apply(seeds[i].clone(), &edits));
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{name}, mutated seed: {e}"));
    }
}

#[test]
fn the_seeds_are_there() {
    // Not a decoder test: guards the seed directories the mutation cases read.
    for (name, _) in ENTRY_POINTS {
        assert!(
            !seeds(name).iter().all(Vec::is_empty),
            "no seeds in fuzz/seeds/{name}"
        );
    }
}
