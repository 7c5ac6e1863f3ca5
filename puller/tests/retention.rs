//! Retention across nodes and the scrub's pace, as processes, against a real `redis-server`
//! and a real `rsync --daemon` (3.5.0):
//!
//! * issue 31's split chain: two nodes on one Redis queue, node 1 pulls `full_10d` and
//!   `full_2d`, node 2 the incremental of `full_10d` taken 5 days ago; with a 7-day window
//!   neither node's `prune` deletes anything the 5-day restore point needs, and node 1 lets
//!   `full_10d` go only once `full_2d` is itself out of the window;
//! * `scrub` at the default rate (50 MiB/s) over 1,000 files of 8 KiB: paced by the bytes
//!   read, it takes a fraction of a second (charging a whole read buffer before every read,
//!   the end-of-file read included, took 2 MiB per file: 40 s).

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use ubackup_puller::manifest::Manifest;
use ubackup_testkit::{
    require_rsync, write_random_file, DaemonBuilder, Module, RedisServer, RsyncDaemon, RsyncVersion,
};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-puller");
const DAY: i64 = 86_400_000;
/// "Now" for the split-chain test.
const NOW: i64 = 1_700_000_000_000;

fn cmd(args: &[&str], config: &Path) -> Output {
    // UBACKUP_TEST_PULLER runs another build (an older one, to see these tests fail on it).
    let bin = std::env::var_os("UBACKUP_TEST_PULLER").unwrap_or_else(|| BIN.into());
    let child = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("UBACKUP_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120))
}

fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("ubackup-puller still running after {limit:?}");
        }
    }
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The file names a prune's output lists with `verb`.
fn listed(out: &str, verb: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb}\t")))
        .map(|l| {
            let path = l.split('\t').next().unwrap();
            Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn stored(root: &Path) -> BTreeSet<String> {
    Manifest::new(root)
        .load()
        .unwrap()
        .files
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A node's TOML configuration in `work`.
fn node_config(
    work: &Path,
    id: &str,
    root: &Path,
    redis: &RedisServer,
    port: u16,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"[node]
id = "{id}"
ip = "127.0.0.9"
root = "{root}"
workers = 1

[queue]
redis = "{redis}"
lists = ["uuzuback_f"]
heartbeat_secs = 1
lease_secs = 3
idle_poll_ms = 200

[results]
list = "message"

[pull]
retry = 2
rsync_port = {port}

[log]
level = "info"

{extra}
"#,
        root = root.display(),
        redis = redis.url(),
    );
    let p = work.join(format!("{id}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_chain_split_across_two_nodes_stays_restorable() {
    let Some(_) = require_rsync(RsyncVersion::V3_5_0) else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let daemon: RsyncDaemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("backup", src.path()))
        .start()
        .unwrap();
    let (work, root1, root2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let policy = "[retention]\ninterval_secs = 0\n[retention.mysql]\nkeep_days = 7\n[scrub]\ninterval_secs = 0\n";
    let n1 = node_config(
        work.path(),
        "n1",
        root1.path(),
        &redis,
        daemon.port(),
        policy,
    );
    let n2 = node_config(
        work.path(),
        "n2",
        root2.path(),
        &redis,
        daemon.port(),
        policy,
    );
    let conn = || {
        redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap()
    };
    // (name, days ago, its full)
    let queue = |name: &str, days: i64, full: Option<&str>, seed: u64| {
        let size = 4_000 + seed * 13;
        write_random_file(&src.path().join("mysql_3306").join(name), size, seed).unwrap();
        let msg = serde_json::json!({
            "v": 1, "job_id": format!("job-{name}"), "server_id": "S1", "game_id": 7,
            "host": "127.0.0.1", "port": daemon.port(), "module": "backup/mysql_3306",
            "filename": name, "size": size, "back_type": "mysql", "instance": 3306,
            "interval": 3600, "create_time_ms": NOW - days * DAY,
            "last_all_filename": full,
            "last_all_time_ms": if full.is_some() { NOW - 10 * DAY } else { 0 },
            "prev_filename": null, "prev_time_ms": 0, "success": true, "log": "ok"
        });
        let _: i64 = conn().lpush("uuzuback_f", msg.to_string()).unwrap();
    };
    // The shared queue hands node 1 the two fulls and node 2 the incremental.
    queue("full_10d.xb", 10, None, 1);
    queue("full_2d.xb", 2, None, 2);
    ok(&cmd(&["run", "--until-idle"], &n1));
    queue("incr_5d_of_full_10d.xb", 5, Some("full_10d.xb"), 3);
    ok(&cmd(&["run", "--until-idle"], &n2));
    let both = |a: &str, b: &str| BTreeSet::from([a.to_string(), b.to_string()]);
    assert_eq!(stored(root1.path()), both("full_10d.xb", "full_2d.xb"));
    assert_eq!(
        stored(root2.path()),
        BTreeSet::from(["incr_5d_of_full_10d.xb".to_string()])
    );

    // Now: the 5-day restore point needs full_10d on node 1.
    let now = NOW.to_string();
    let dry = ok(&cmd(&["prune", "--dry-run", "--now-ms", &now], &n1));
    assert_eq!(listed(&dry, "would expire"), BTreeSet::new(), "{dry}");
    assert!(dry.contains("dry run: 0 would expire, 2 kept"), "{dry}");
    for n in [&n1, &n2] {
        let real = ok(&cmd(&["prune", "--now-ms", &now], n));
        assert!(real.starts_with("0 expired"), "{real}");
    }
    assert_eq!(stored(root1.path()), both("full_10d.xb", "full_2d.xb"));
    assert_eq!(stored(root2.path()).len(), 1);
    let on_disk = |root: &Path, name: &str| {
        walk(root)
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f == name))
    };
    assert!(on_disk(root1.path(), "full_10d.xb"));
    assert!(on_disk(root2.path(), "incr_5d_of_full_10d.xb"));

    // Six days on, full_2d is 8 days old: nothing in the window can need full_10d (its
    // incrementals were all taken before full_2d, 8 days ago and more).
    let later = (NOW + 6 * DAY).to_string();
    let real = ok(&cmd(&["prune", "--now-ms", &later], &n1));
    assert_eq!(
        listed(&real, "expired"),
        BTreeSet::from(["full_10d.xb".to_string()]),
        "{real}"
    );
    assert!(
        real.contains("taken before the full full_2d.xb (8.0 days ago)"),
        "{real}"
    );
    assert!(!on_disk(root1.path(), "full_10d.xb"));
    // Node 2 keeps its newest backup.
    let real = ok(&cmd(&["prune", "--now-ms", &later], &n2));
    assert!(real.starts_with("0 expired"), "{real}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn scrub_reads_small_files_at_the_rate_cap() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (work, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = root.path().join("mysql/127.0.0/1");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..1000u64 {
        write_random_file(&dir.join(format!("f{i:04}.xb")), 8192, i).unwrap();
    }
    let cfg = node_config(work.path(), "n1", root.path(), &redis, 873, "");
    let rebuilt = ok(&cmd(&["rebuild-manifest", "--rate", "0"], &cfg));
    assert!(rebuilt.contains("1000 adopted"), "{rebuilt}");

    // The default rate (50 MiB/s): 8 MB of data is 0.16 s of budget. Charging 2 MiB per file
    // would take 40 s; 4 s leaves room for a loaded 2-core machine.
    let started = Instant::now();
    let out = ok(&cmd(&["scrub"], &cfg));
    let took = started.elapsed();
    assert!(out.contains("1000 files checked (8192000 bytes"), "{out}");
    assert!(out.contains("0 findings"), "{out}");
    assert!(
        took < Duration::from_secs(4),
        "1,000 files of 8 KiB took {took:?} at 50 MiB/s"
    );
    eprintln!("scrub of 1,000 x 8 KiB at the default rate: {took:?}");
}
