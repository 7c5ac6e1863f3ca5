//! Memory of a 1,000,000-entry file list: a protocol-32 session whose file list is
//! generated on the fly and fed to a [`Connection`] in 256 KiB reads, as the driver does,
//! until the sorted [`FileList`](rsync_proto::FileList) comes out. Prints the peak resident
//! memory above the process's starting point (Linux `VmHWM`, reset through
//! `/proc/self/clear_refs`) and the time taken. The target is under 200 MiB.
//!
//! ```text
//! cargo bench -p rsync-proto --bench flist_memory
//! UBACKUP_BENCH_FLIST_ENTRIES=2000000 cargo bench -p rsync-proto --bench flist_memory
//! ```

use std::time::Instant;

use rsync_proto::flist::encode_entry;
use rsync_proto::{Connection, Event};

mod common;

const READ: usize = 256 * 1024;
const TARGET_MIB: f64 = 200.0;

fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("flist_memory: run it with `cargo bench -p rsync-proto --bench flist_memory`");
        return;
    }
    let n: usize = std::env::var("UBACKUP_BENCH_FLIST_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let opts = common::flist_options();
    let mut conn = Connection::new(common::config());
    conn.handle_input(&common::setup()).expect("setup");
    let now = Instant::now();
    while conn.poll_transmit(now).is_some() {}
    // Start measuring here: everything from now on is the file list's.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let base = status_kib("VmRSS:").unwrap_or(0);
    let start = Instant::now();
    let mut raw = Vec::with_capacity(READ + 256);
    let mut framed = Vec::with_capacity(READ + 1024);
    let mut prev: Option<rsync_proto::FileEntry> = None;
    let mut wire_bytes = 0u64;
    let mut feed = |raw: &mut Vec<u8>, conn: &mut Connection| {
        framed.clear();
        common::frames(raw, &mut framed);
        wire_bytes += framed.len() as u64;
        conn.handle_input(&framed).expect("file list");
        raw.clear();
    };
    for i in 0..n {
        let name = format!("dir{:05}/file{:08}.dat", i / 100, i);
        let e = common::entry(
            name.as_bytes(),
            (i as u64 * 7919) % 100_000,
            1_700_000_000 + (i as i64 % 3600),
        );
        encode_entry(&e, prev.as_ref(), &opts, &mut raw);
        prev = Some(e);
        if raw.len() >= READ {
            feed(&mut raw, &mut conn);
        }
    }
    rsync_proto::flist::encode_end(0, &opts, &mut raw);
    feed(&mut raw, &mut conn);
    let mut entries = None;
    while let Some(ev) = conn.poll_event() {
        if let Event::FileList(list) = ev {
            entries = Some(list.len());
        }
    }
    let elapsed = start.elapsed();
    let peak = status_kib("VmHWM:").unwrap_or(0);
    let entries = entries.expect("the file list did not complete");
    let used_mib = peak.saturating_sub(base) as f64 / 1024.0;
    println!(
        "flist of {entries} entries ({:.1} MiB on the wire): {:.2} s, {:.0} entries/s, peak RSS {:.1} MiB above the start ({:.1} MiB total){}; target < {TARGET_MIB} MiB: {}",
        wire_bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        entries as f64 / elapsed.as_secs_f64(),
        used_mib,
        peak as f64 / 1024.0,
        if reset { "" } else { " (VmHWM could not be reset: includes setup)" },
        if used_mib < TARGET_MIB { "met" } else { "MISSED" },
    );
}
