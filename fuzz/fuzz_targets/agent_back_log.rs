//! A backup script's back_log: ok + a name that must stay inside back_dir, or wrong + text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_agent::fuzzing::back_log(data);
});
