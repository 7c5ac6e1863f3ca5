//! UBackup's client INI or the agent's TOML: every problem reported, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_agent::fuzzing::client_config(data);
});
