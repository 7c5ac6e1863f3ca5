//! Proptests over the configuration parser's fuzz entry points (`ubackup_puller::fuzzing`):
//! arbitrary bytes, and the seeds in `fuzz/seeds/` (UBackup's server `uuzuback.conf`, our
//! TOML) with bytes flipped, inserted, deleted or cut. Each entry point asserts the rules an
//! accepted configuration keeps (a template that balances and stays under the root, distinct
//! lists, a lease of two heartbeats); here they must also hold without a panic and without a
//! large allocation: the binary caps its address space first (see
//! `ubackup_testkit::bounded`), so it holds only these cases.
//!
//! The same entry points run under libFuzzer (`fuzz/README.md`).

use ubackup_testkit::bounded::{self, Entry};

const ENTRY_POINTS: [(&str, Entry); 2] = [
    ("server_ini", ubackup_puller::fuzzing::server_ini),
    ("node_config", ubackup_puller::fuzzing::node_config),
];

#[test]
fn the_config_parser_survives_arbitrary_and_mutated_files_within_bounded_memory() {
    bounded::cap_address_space();
    bounded::run_entry_points(&ENTRY_POINTS, 1000);
}

#[test]
fn the_seeds_are_there() {
    bounded::assert_seeds_present(&ENTRY_POINTS);
}
