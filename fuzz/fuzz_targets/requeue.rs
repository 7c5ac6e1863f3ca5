//! A job-list message: the requeue envelope unwrapped, wrapped again and unwrapped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_messages::fuzzing::requeue(data);
});
