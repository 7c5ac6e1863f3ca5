//! A message from the results list, as the indexer reads it (result or node event).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_indexer::fuzzing::result_message(data);
});
