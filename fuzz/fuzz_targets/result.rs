//! A pull result: parse_result and its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_messages::fuzzing::result(data);
});
