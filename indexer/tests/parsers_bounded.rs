//! Proptests over the indexer's fuzz entry points (`ubackup_indexer::fuzzing`): the registry
//! import formats (batch-add lines, CSV, TOML, JSON), the results-list reader and the
//! dashboard's query strings and forms (`web_forms`), on
//! arbitrary bytes and on the seeds in `fuzz/seeds/` mutated. Each entry point asserts its own rules (never a panic on a
//! hostile registry file or result); here they must also hold within a capped address
//! space (see `ubackup_testkit::bounded`).
//!
//! The same entry points run under libFuzzer (`fuzz/README.md`).

use ubackup_testkit::bounded::{self, Entry};

const ENTRY_POINTS: [(&str, Entry); 6] = [
    ("indexer_batch_lines", ubackup_indexer::fuzzing::batch_lines),
    ("indexer_csv", ubackup_indexer::fuzzing::csv),
    (
        "indexer_registry_toml",
        ubackup_indexer::fuzzing::registry_toml,
    ),
    (
        "indexer_registry_json",
        ubackup_indexer::fuzzing::registry_json,
    ),
    ("indexer_result", ubackup_indexer::fuzzing::result_message),
    ("web_forms", ubackup_indexer::fuzzing::web_forms),
];

#[test]
fn every_parser_survives_arbitrary_and_mutated_input_within_bounded_memory() {
    bounded::cap_address_space();
    bounded::run_entry_points(&ENTRY_POINTS, 1000);
}

#[test]
fn the_seeds_are_there() {
    bounded::assert_seeds_present(&ENTRY_POINTS);
}
