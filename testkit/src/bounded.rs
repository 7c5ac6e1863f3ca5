//! Stable proptests over fuzz entry points (the hidden `fuzzing` module of each crate that
//! owns a parser): arbitrary input, and the seeds in `fuzz/seeds/<target>/` with bytes
//! flipped, inserted, deleted or cut. Each entry point must return without a panic and
//! without a large allocation.
//!
//! "Without a large allocation" is enforced: [`cap_address_space`] limits the test process's
//! address space (`RLIMIT_AS`) to what it maps now plus a headroom, so an allocation sized
//! from a value in the input fails, the allocator aborts the process, and the test fails. The
//! cap is process-wide and cannot be lifted, so such a test needs a test binary of its own
//! (one `tests/*.rs` file holding only these cases).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Address space allowed on top of what the process maps when it is capped.
pub const HEADROOM: u64 = 1 << 30;

fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmSize in /proc/self/status"));
    kib * 1024
}

/// Caps this process's address space at what it maps now plus [`HEADROOM`]. Call it once,
/// before the first case, in a test binary that runs nothing else.
pub fn cap_address_space() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let limit = vm_size() + HEADROOM;
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(limit),
            maximum: None,
        },
    )
    .unwrap_or_else(|e| panic!("setting RLIMIT_AS: {e}"));
}

/// `fuzz/seeds/` of the repository.
pub fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

/// The seeds of `target`, sorted; one empty input when there are none.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(seeds_dir().join(target))
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

/// One mutation of a seed.
#[derive(Debug, Clone)]
pub enum Edit {
    /// XOR the byte at (offset modulo length) with a non-zero value.
    Flip(usize, u8),
    /// Insert bytes there.
    Insert(usize, Vec<u8>),
    /// Delete up to this many bytes there.
    Delete(usize, usize),
    /// Cut the input there.
    Cut(usize),
}

/// `b` with `edits` applied in order.
pub fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
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

/// Any one edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, x)| Edit::Flip(a, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1..32usize).prop_map(|(a, l)| Edit::Delete(a, l)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

/// Runs each entry point on `cases` arbitrary inputs (up to 16 KiB) and `cases` mutated
/// seeds of the target of the same name; panics with the target's name at the first failure.
pub fn run_entry_points(entries: &[(&str, Entry)], cases: u32) {
    for &(name, entry) in entries {
        let mut runner = TestRunner::new(Config {
            cases,
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
            cases,
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

/// Panics unless every target has at least one non-empty seed (the mutation cases read them).
pub fn assert_seeds_present(entries: &[(&str, Entry)]) {
    for (name, _) in entries {
        assert!(
            !seeds(name).iter().all(Vec::is_empty),
            "no seeds in fuzz/seeds/{name}"
        );
    }
}
