//! CSV exports of the old dashboard's MySQL tables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_indexer::fuzzing::csv(data);
});
