//! A node configuration file of either form (TOML or INI): NodeConfig::parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_puller::fuzzing::node_config(data);
});
