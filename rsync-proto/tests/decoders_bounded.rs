//! Proptests over every decoder's fuzz entry point (`rsync_proto::fuzzing`): arbitrary
//! input, and real transcripts from `fuzz/seeds/` with bytes flipped, inserted, deleted or
//! cut. Each must return without a panic and without a large allocation.
//!
//! "Without a large allocation" is enforced, not hoped for: before the first case this
//! test binary caps its own address space (`RLIMIT_AS`) at what it maps now plus
//! [`HEADROOM`](ubackup_testkit::bounded::HEADROOM). Inputs are at most 64 KiB, so no honest
//! decode comes near it; an allocation sized from a value in the input (a 2^31 length, a
//! 2^24-entry count) fails, the allocator aborts the process, and the test fails. That is why
//! these cases have a binary of their own: the cap is process-wide and cannot be lifted.
//!
//! The same entry points run under libFuzzer (see `fuzz/README.md`); this is the part that
//! runs in CI on a stable toolchain. The parsers of the other crates have siblings:
//! `messages/tests/parsers_bounded.rs`, `puller/tests/config_bounded.rs`.

use ubackup_testkit::bounded::{self, Entry};

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

#[test]
fn every_decoder_survives_arbitrary_and_mutated_input_within_bounded_memory() {
    bounded::cap_address_space();
    bounded::run_entry_points(&ENTRY_POINTS, 1000);
}

#[test]
fn the_seeds_are_there() {
    // Not a decoder test: guards the seed directories the mutation cases read.
    bounded::assert_seeds_present(&ENTRY_POINTS);
}
