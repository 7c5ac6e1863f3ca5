//! A JSON registry file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_indexer::fuzzing::registry_json(data);
});
