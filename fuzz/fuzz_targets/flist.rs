//! The file-list entry decoder, sort and id lists on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::flist(data);
});
