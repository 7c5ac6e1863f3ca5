//! UBackup's server uuzuback.conf ([global] then the input): NodeConfig::parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_puller::fuzzing::server_ini(data);
});
