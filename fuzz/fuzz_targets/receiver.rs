//! The whole receiver state machine driven by arbitrary daemon bytes
//! (greeting, setup, multiplexed file list and file data).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::receiver(data);
});
