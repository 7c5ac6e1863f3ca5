//! The UBackup client's job message: LegacyJob::parse and Job::parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_messages::fuzzing::job_legacy(data);
});
