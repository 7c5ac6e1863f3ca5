//! Proptests over every message parser's fuzz entry point (`ubackup_messages::fuzzing`):
//! arbitrary bytes, and the seeds in `fuzz/seeds/` (UBackup client jobs, v1 jobs, results,
//! requeue envelopes, node events) with bytes flipped, inserted, deleted or cut. Each entry
//! point asserts its own rules (no name that leaves its directory, round trips); here they
//! must also hold without a panic and without a large allocation: the binary caps its
//! address space first (see `ubackup_testkit::bounded`), so it holds only these cases.
//!
//! The same entry points run under libFuzzer (`fuzz/README.md`).

use ubackup_testkit::bounded::{self, Entry};

const ENTRY_POINTS: [(&str, Entry); 5] = [
    ("job_legacy", ubackup_messages::fuzzing::job_legacy),
    ("job_v1", ubackup_messages::fuzzing::job_v1),
    ("result", ubackup_messages::fuzzing::result),
    ("requeue", ubackup_messages::fuzzing::requeue),
    ("event", ubackup_messages::fuzzing::event),
];

#[test]
fn every_parser_survives_arbitrary_and_mutated_messages_within_bounded_memory() {
    bounded::cap_address_space();
    bounded::run_entry_points(&ENTRY_POINTS, 1000);
}

#[test]
fn the_seeds_are_there() {
    bounded::assert_seeds_present(&ENTRY_POINTS);
}
