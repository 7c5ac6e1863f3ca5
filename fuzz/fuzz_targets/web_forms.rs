//! The dashboard's query strings and forms (first byte picks the form), then the handlers' checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_indexer::fuzzing::web_forms(data);
});
