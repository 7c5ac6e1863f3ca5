//! Sum heads (io.c read_sum_head): ranges, and block ranges derived from them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::sum_head(data);
});
