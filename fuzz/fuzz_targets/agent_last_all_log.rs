//! A last_all_log (full + incremental): its name stays inside back_dir.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_agent::fuzzing::last_all_log(data);
});
