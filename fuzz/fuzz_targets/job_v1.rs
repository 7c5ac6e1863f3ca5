//! A job message, mostly the v1 schema: Job::parse and its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_messages::fuzzing::job_v1(data);
});
