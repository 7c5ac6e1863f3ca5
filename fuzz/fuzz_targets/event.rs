//! A node event: is_event and parse_event.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_messages::fuzzing::event(data);
});
