//! The old dashboard's batch-add lines (name server_id type_id instance business_game_id).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ubackup_indexer::fuzzing::batch_lines(data);
});
