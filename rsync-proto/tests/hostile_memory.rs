//! Bounded memory under the volume attacks, measured.
//!
//! A counting `#[global_allocator]` needs `unsafe impl GlobalAlloc`, and the workspace
//! forbids unsafe code. So this test binary measures what the kernel measures instead: it
//! resets the process's peak resident set (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0),
//! plays one attack from a hostile daemon in this process, and reads the new peak (`VmHWM`
//! in `/proc/self/status`). Everything the attack needs (the daemon's script) is built
//! before the reset, so the growth is the receiver's. One test, run alone in its binary, so
//! no other test's allocations land in the window.
//!
//! Each attack sends far more than the budget: if the receiver held what it is sent, the
//! peak would grow with it.

// Helpers outside #[test] fns too: a failed fixture step fails the test at once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rsync_proto::client::{self, Error, FsSink, PullOptions};
use rsync_proto::delta::{encode_literal_file, SumHead};
use rsync_proto::mux::{encode_frame, MessageCode, MAX_FRAME_LEN};
use rsync_proto::wire::NDX_DONE;
use rsync_proto::FileEntry;
use ubackup_testkit::hostile::{HostileDaemon, Played, Script, Step, Wire};

/// Most the peak resident set may grow during one attack.
const BUDGET: u64 = 48 << 20;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM needs Linux >= 4.0");
}

fn entry(name: &[u8], mode: u32, size: u64) -> FileEntry {
    FileEntry {
        name: name.to_vec(),
        mode,
        size,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    }
}

/// Plays `script` against a pull into a fresh destination; returns the pull's result, what
/// the daemon did, and the peak growth in bytes.
fn measure(
    rt: &tokio::runtime::Runtime,
    script: Script,
    opts: &PullOptions,
) -> (Result<client::PullReport, Error>, Played, u64) {
    let dest = tempfile::tempdir().unwrap();
    let d = HostileDaemon::start(script).unwrap();
    let source: client::Source = d.url("mod/").parse().unwrap();
    let before = status_kib("VmRSS:");
    reset_peak();
    let r = rt.block_on(async {
        let mut sink = FsSink::new(dest.path().join("d")).unwrap();
        client::pull(&source, opts, &mut sink).await
    });
    let peak = status_kib("VmHWM:");
    let played = d.finish().unwrap();
    (r, played, peak.saturating_sub(before) * 1024)
}

#[test]
fn volume_attacks_do_not_grow_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = PullOptions {
        recursive: true,
        timeout: Some(Duration::from_secs(2)),
        ..PullOptions::default()
    };

    // Warm-up: an honest pull, so that the runtime's and the allocator's first-use
    // allocations are not counted against the attacks.
    let entries = [entry(b".", 0o040755, 0), entry(b"f", 0o100644, 3)];
    let mut w = Wire::new(32, false);
    w.setup()
        .flist(&entries)
        .file(1, b"abc")
        .ndx(NDX_DONE)
        .end_of_run();
    let (r, _, _) = measure(&rt, Script::send(w.take()).then(Step::Close), &opts);
    r.unwrap();

    let mut results = Vec::new();

    // 1. MSG_INFO flood until the stall deadline fires.
    for code in [MessageCode::INFO, MessageCode::ERROR] {
        let mut w = Wire::new(32, false);
        w.setup();
        let mut chunk = Vec::new();
        for _ in 0..8 {
            encode_frame(code, &[b'!'; 8192], &mut chunk);
        }
        let script = Script::send(w.take()).then(Step::Flood {
            chunk,
            max_bytes: u64::MAX,
        });
        let (r, played, grew) = measure(&rt, script, &opts);
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        results.push((format!("{code} flood"), played.sent, grew));
    }

    // 2. A 64 MiB file in MSG_DATA frames of the largest size (2^24 - 1 bytes each).
    let size = 64usize << 20;
    let entries = [
        entry(b".", 0o040755, 0),
        entry(b"big", 0o100644, size as u64),
    ];
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4093) as u8).collect();
    let mut w = Wire::new(32, false);
    w.setup().flist(&entries);
    w.frame = MAX_FRAME_LEN;
    w.file_header(1, SumHead::EMPTY);
    let mut b = Vec::new();
    encode_literal_file(&data, 1 << 20, &mut b);
    b.extend_from_slice(&w.file_sum(&data));
    drop(data);
    w.data(&b);
    drop(b);
    w.ndx(NDX_DONE).end_of_run();
    let (r, played, grew) = measure(&rt, Script::send(w.take()).then(Step::Close), &opts);
    r.unwrap();
    results.push(("64 MiB file in maximum frames".into(), played.sent, grew));

    // 3. Keep-alives (empty MSG_DATA frames) by the hundred megabytes: each one counts as
    //    life (as in rsync), so only the silence after them ends the pull, but none of
    //    them may be kept.
    let mut w = Wire::new(32, false);
    w.setup();
    let mut chunk = Vec::new();
    for _ in 0..16 * 1024 {
        encode_frame(MessageCode::DATA, &[], &mut chunk);
    }
    let script = Script::send(w.take()).then(Step::Flood {
        chunk,
        max_bytes: 256 << 20,
    });
    let (r, played, grew) = measure(&rt, script, &opts);
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    results.push(("keep-alive flood".into(), played.sent, grew));

    for (what, sent, grew) in &results {
        eprintln!(
            "{what}: daemon sent {} MiB, peak RSS grew {} MiB (budget {} MiB)",
            sent >> 20,
            grew >> 20,
            BUDGET >> 20
        );
    }
    for (what, sent, grew) in results {
        assert!(grew <= BUDGET, "{what}: peak grew by {grew} bytes");
        // Each attack must have sent more than the budget, or it proves nothing.
        assert!(sent > BUDGET, "{what}: only {sent} bytes sent");
    }
}
