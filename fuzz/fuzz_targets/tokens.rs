//! The uncompressed token stream of one file (token.c simple_recv_token) inside a real receiver session with a three-block basis.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::tokens(data);
});
