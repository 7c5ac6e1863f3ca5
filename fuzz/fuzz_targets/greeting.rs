//! The daemon's greeting line (clientserver.c exchange_protocols) and version negotiation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::greeting(data);
});
