//! The daemon's text replies after the greeting (module listing, MOTD, OK, AUTHREQD, @ERROR), through the receiver with its line limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rsync_proto::fuzzing::daemon_response(data);
});
