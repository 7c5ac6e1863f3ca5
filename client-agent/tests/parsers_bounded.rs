//! Proptests over the agent's fuzz entry points (`ubackup_agent::fuzzing`): the back_log and
//! last_all_log readers and the client config parser, on arbitrary bytes and on the seeds in
//! `fuzz/seeds/` mutated. Each entry point asserts its own rules (an accepted file name never
//! leaves back_dir); here they must also hold without a panic and within a capped address
//! space (see `ubackup_testkit::bounded`).
//!
//! The same entry points run under libFuzzer (`fuzz/README.md`).

use ubackup_testkit::bounded::{self, Entry};

const ENTRY_POINTS: [(&str, Entry); 3] = [
    ("agent_back_log", ubackup_agent::fuzzing::back_log),
    ("agent_last_all_log", ubackup_agent::fuzzing::last_all_log),
    ("agent_client_config", ubackup_agent::fuzzing::client_config),
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
