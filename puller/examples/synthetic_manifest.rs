//! Writes a synthetic manifest for measuring `prune` at scale (no backup files are created):
//!
//! ```sh
//! cargo run --release -p ubackup-puller --example synthetic_manifest -- ROOT FILES
//! ```
//!
//! Each instance holds 21 days of backups: a full at midnight and 23 hourly incrementals, each
//! on the previous one (v1 chain records), i.e. 504 files per instance; instances are added
//! until FILES entries are written. Day 0 starts at 1_700_000_000_000 ms, so
//! `prune --now-ms 1701814400000` (day 21) with `keep_days = 7` expires two thirds.

// A measurement helper: any failure ends it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ubackup_puller::manifest::{Chain, Entry, Manifest};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().expect("ROOT"));
    let total: usize = args.next().expect("FILES").parse().unwrap();
    let m = Manifest::new(&root);
    let t0: i64 = 1_700_000_000_000;
    let mut batch = Vec::with_capacity(10_000);
    let mut written = 0usize;
    let mut inst = 0i64;
    'outer: loop {
        let ip = format!(
            "10.{}.{}.{}",
            inst / 65536 % 256,
            inst / 256 % 256,
            inst % 256
        );
        let (net, host) = ip.rsplit_once('.').unwrap();
        let dir = root.join("mysql").join(net).join(host);
        for day in 0..21i64 {
            let full = format!("full-{day:02}.xb");
            let mut prev: Option<String> = None;
            for hour in 0..24i64 {
                let t = t0 + day * 86_400_000 + hour * 3_600_000;
                let (name, chain) = if hour == 0 {
                    (full.clone(), Chain::Full)
                } else {
                    let name = format!("incr-{day:02}-{hour:02}.xb");
                    let c = Chain::Incremental {
                        last_all_filename: full.clone(),
                        last_all_time_ms: t0 + day * 86_400_000,
                        prev_filename: prev.clone(),
                        prev_time_ms: 0,
                        exact: true,
                    };
                    (name, c)
                };
                prev = (hour > 0).then(|| name.clone());
                batch.push(entry(&dir, &name, inst, &ip, chain, t));
                written += 1;
                if batch.len() == batch.capacity() {
                    m.append(&batch).unwrap();
                    batch.clear();
                }
                if written == total {
                    break 'outer;
                }
            }
        }
        inst += 1;
    }
    m.append(&batch).unwrap();
    eprintln!(
        "{written} entries, {} instances, {}",
        inst + 1,
        m.path().display()
    );
}

fn entry(dir: &Path, name: &str, inst: i64, ip: &str, chain: Chain, t: i64) -> Entry {
    Entry {
        path: dir.join(name),
        filename: name.to_string(),
        server_id: format!("S{inst}"),
        back_type: "mysql".into(),
        instance: 3306,
        game_id: Some(inst % 50),
        host: Some(ip.to_string()),
        job_id: Some(format!("S{inst}-mysql-3306-{t}")),
        chain,
        size: 1 << 30,
        checksum: Some(format!("xxh128:{:032x}", t as u128 * 7919)),
        time_ms: t,
        stored_ms: t + 600_000,
        unknown: Vec::new(),
    }
}
