//! The node's life cycle, as processes, against a real `redis-server` and a real
//! `rsync --daemon` (3.5.0): files pulled by `ubackup-puller run` land in the manifest;
//! `prune` on a controlled clock (fulls only, incremental-on-incremental chains, UBackup's
//! chains), the newest full surviving any policy, the dry run equal to the real run; a manifest
//! rebuilt after deletion; `scrub` finding a flipped byte and a lost file and publishing the
//! events on the real results list; and the daemon's scheduled prune publishing `expired`.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use ubackup_messages::{is_event, parse_event, EventKind, NodeEvent};
use ubackup_puller::manifest::{Chain, Manifest};
use ubackup_testkit::{write_random_file, Site};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-puller");
const DAY: i64 = 86_400_000;
/// The clock the retention tests decide at: day 0 of the backups' history.
const T0: i64 = 1_700_000_000_000;

/// The testkit [`Site`]: a redis-server, an rsync daemon serving `src` as module `backup`, a
/// backup root and a work dir.
struct Env(Site);

impl std::ops::Deref for Env {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Site {
        &mut self.0
    }
}

fn env() -> Option<Env> {
    Site::start().map(Env)
}

/// One backup of the test's history.
struct Backup {
    name: &'static str,
    back_type: &'static str,
    instance: i64,
    day: f64,
    last_all: Option<&'static str>,
    prev: Option<&'static str>,
    /// UBackup's message form (no chain record, times in seconds).
    legacy: bool,
}

const fn b(name: &'static str, back_type: &'static str, instance: i64, day: f64) -> Backup {
    Backup {
        name,
        back_type,
        instance,
        day,
        last_all: None,
        prev: None,
        legacy: false,
    }
}

impl Env {
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"[node]
id = "n1"
ip = "127.0.0.9"
root = "{root}"
workers = 2

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
            root = self.root.path().display(),
            redis = self.redis.url(),
            port = self.daemon.port(),
        );
        let p = self
            .work
            .path()
            .join(format!("n{}.toml", rand::random::<u32>()));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Creates the source file and queues its job, with `create_time` at `t0 + day`.
    fn queue(&self, bk: &Backup, t0: i64, seed: u64) {
        let path = format!("{}_{}/{}", bk.back_type, bk.instance, bk.name);
        let size = 5_000 + seed * 7;
        write_random_file(&self.src.path().join(&path), size, seed).unwrap();
        let create_ms = t0 + (bk.day * DAY as f64) as i64;
        let msg = if bk.legacy {
            serde_json::json!({
                "filename": bk.name, "last_all_filename": bk.last_all, "last_all_time": 0,
                "size": size, "log": "ok", "create_time": create_ms / 1000, "success": true,
                "server_id": "S1", "game_id": 7, "op_id": 0, "game_server_ip": "127.0.0.1",
                "back_type": bk.back_type, "instance": bk.instance,
                "rsync_model": format!("backup/{}_{}", bk.back_type, bk.instance), "interval": 3600
            })
        } else {
            serde_json::json!({
                "v": 1, "job_id": format!("job-{}", bk.name), "server_id": "S1", "game_id": 7,
                "host": "127.0.0.1", "port": self.daemon.port(),
                "module": format!("backup/{}_{}", bk.back_type, bk.instance),
                "filename": bk.name, "size": size, "back_type": bk.back_type,
                "instance": bk.instance, "interval": 3600, "create_time_ms": create_ms,
                "last_all_filename": bk.last_all, "last_all_time_ms": 0,
                "prev_filename": bk.prev, "prev_time_ms": 0,
                "success": true, "log": "ok"
            })
        };
        let _: i64 = self.conn().lpush("uuzuback_f", msg.to_string()).unwrap();
    }

    /// Where a backup of `back_type` lands (UBackup's layout; the host is 127.0.0.1).
    fn dest(&self, back_type: &str, name: &str) -> PathBuf {
        self.root
            .path()
            .join(back_type)
            .join("127.0.0/1")
            .join(name)
    }

    /// Every event on the results list, oldest first.
    fn events(&self) -> Vec<NodeEvent> {
        let raw: Vec<Vec<u8>> = self.conn().lrange("message", 0, -1).unwrap();
        raw.iter()
            .rev()
            .filter(|r| is_event(r))
            .map(|r| parse_event(r).unwrap())
            .collect()
    }

    fn results(&self) -> usize {
        let raw: Vec<Vec<u8>> = self.conn().lrange("message", 0, -1).unwrap();
        raw.iter().filter(|r| !is_event(r)).count()
    }

    fn stored(&self) -> BTreeSet<String> {
        Manifest::new(self.root.path())
            .load()
            .unwrap()
            .files
            .keys()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

fn run_until_idle(config: &Path) {
    let out = cmd(&["run", "--until-idle"], config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cmd(args: &[&str], config: &Path) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("UBACKUP_LOG");
    let child = c
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn retention_on_a_controlled_clock_keeps_chains_and_the_newest_full() {
    let Some(env) = env() else { return };
    let history = [
        // MySQL 3306, v1 chain records: a full with incrementals on incrementals, twice.
        b("f1.xb", "mysql", 3306, 0.0),
        Backup {
            last_all: Some("f1.xb"),
            ..b("i1.xb", "mysql", 3306, 1.0)
        },
        Backup {
            last_all: Some("f1.xb"),
            prev: Some("i1.xb"),
            ..b("i2.xb", "mysql", 3306, 2.0)
        },
        b("f2.xb", "mysql", 3306, 7.0),
        Backup {
            last_all: Some("f2.xb"),
            ..b("j1.xb", "mysql", 3306, 8.0)
        },
        Backup {
            last_all: Some("f2.xb"),
            prev: Some("j1.xb"),
            ..b("j2.xb", "mysql", 3306, 9.0)
        },
        Backup {
            last_all: Some("f2.xb"),
            prev: Some("j2.xb"),
            ..b("j3.xb", "mysql", 3306, 10.0)
        },
        // MySQL 3307, UBackup's messages: no chain record.
        Backup {
            legacy: true,
            ..b("g0.xb", "mysql", 3307, 0.0)
        },
        Backup {
            legacy: true,
            last_all: Some("g0.xb"),
            ..b("g1.xb", "mysql", 3307, 1.0)
        },
        Backup {
            legacy: true,
            last_all: Some("g0.xb"),
            ..b("g2.xb", "mysql", 3307, 2.0)
        },
        Backup {
            legacy: true,
            last_all: Some("g0.xb"),
            ..b("g3.xb", "mysql", 3307, 12.0)
        },
        // Redis 6379: fulls only, one a day.
        Backup {
            legacy: true,
            ..b("r0.rdb", "redis", 6379, 0.0)
        },
        Backup {
            legacy: true,
            ..b("r1.rdb", "redis", 6379, 1.0)
        },
        Backup {
            legacy: true,
            ..b("r2.rdb", "redis", 6379, 2.0)
        },
        Backup {
            legacy: true,
            ..b("r3.rdb", "redis", 6379, 3.0)
        },
        Backup {
            legacy: true,
            ..b("r4.rdb", "redis", 6379, 4.0)
        },
    ];
    for (i, bk) in history.iter().enumerate() {
        env.queue(bk, T0, i as u64);
    }
    let cfg = env.config(
        "[retention]\ninterval_secs = 0\n[retention.mysql]\nkeep_days = 5\n[retention.redis]\nkeep_days = 3\n",
    );
    run_until_idle(&cfg);
    assert_eq!(env.results(), history.len());
    let all: BTreeSet<String> = history.iter().map(|b| b.name.to_string()).collect();
    assert_eq!(env.stored(), all, "every pulled file is in the manifest");
    let m = Manifest::new(env.root.path()).load().unwrap();
    let j3 = m.files.values().find(|e| e.filename == "j3.xb").unwrap();
    assert!(
        matches!(&j3.chain, Chain::Incremental { prev_filename: Some(p), exact: true, .. } if p == "j2.xb")
    );
    assert!(j3.checksum.as_deref().unwrap().starts_with("xxh128:"));
    assert_eq!(j3.time_ms, T0 + 10 * DAY);
    let g3 = m.files.values().find(|e| e.filename == "g3.xb").unwrap();
    assert!(matches!(&g3.chain, Chain::Incremental { exact: false, .. }));

    // Day 14.5: MySQL keeps 5 days (cutoff day 9.5), Redis 3 (cutoff 11.5).
    let now = (T0 + 14 * DAY + DAY / 2).to_string();
    let want = set(&[
        "f1.xb", "i1.xb", "i2.xb", // the old chain: nothing kept needs it
        "r0.rdb", "r1.rdb", "r2.rdb", "r3.rdb", // Redis: all old; the newest full r4 stays
    ]);
    // j3 is kept and needs j2, j1, f2; g3 (UBackup's form) keeps g0 and every earlier
    // incremental of g0.
    let dry = cmd(&["prune", "--dry-run", "--now-ms", &now], &cfg);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let dry_out = stdout(&dry);
    assert_eq!(listed(&dry_out, "would expire"), want, "{dry_out}");
    assert!(
        dry_out.contains("keep_days = 5 (retention.mysql)"),
        "{dry_out}"
    );
    assert!(
        dry_out.contains("dry run: 7 would expire, 9 kept"),
        "{dry_out}"
    );
    assert_eq!(env.stored(), all, "a dry run deletes nothing");
    assert!(env.events().is_empty());
    for bk in &history {
        assert!(env.dest(bk.back_type, bk.name).is_file());
    }

    let real = cmd(&["prune", "--now-ms", &now], &cfg);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let real_out = stdout(&real);
    assert_eq!(
        listed(&real_out, "expired"),
        want,
        "the dry run is the real run:\n{real_out}"
    );
    assert!(
        real_out.contains("7 expired, 9 kept, 0 left alone; 7 events published, 0 pending"),
        "{real_out}"
    );
    for bk in &history {
        let gone = want.contains(bk.name);
        assert_eq!(
            !env.dest(bk.back_type, bk.name).exists(),
            gone,
            "{}",
            bk.name
        );
    }
    let kept: BTreeSet<String> = all.difference(&want).cloned().collect();
    assert_eq!(env.stored(), kept);
    let events = env.events();
    assert_eq!(events.len(), 7);
    let named: BTreeSet<String> = events.iter().map(|e| e.filename.clone()).collect();
    assert_eq!(named, want);
    for e in &events {
        assert_eq!(e.event, EventKind::Expired);
        assert_eq!(e.node_id, "n1");
        assert_eq!(e.back_server_ip, "127.0.0.9");
        assert_eq!(e.server_id, "S1");
        assert_eq!(
            e.file_path,
            env.dest(&e.back_type, "x")
                .parent()
                .unwrap()
                .to_str()
                .unwrap()
        );
        assert!(e.checksum.as_deref().unwrap().starts_with("xxh128:"));
        assert!(e.reason.contains("beyond keep_days"), "{}", e.reason);
    }
    assert_eq!(
        events
            .iter()
            .find(|e| e.filename == "i2.xb")
            .unwrap()
            .job_id
            .as_deref(),
        Some("job-i2.xb")
    );

    // Any policy, any time later: the newest full of each instance, and what the newest
    // backup needs, survive.
    let cfg = env.config("[retention]\ninterval_secs = 0\nkeep_days = 1\nmin_fulls = 1\n");
    let far = (T0 + 5000 * DAY).to_string();
    let dry = cmd(&["prune", "--dry-run", "--now-ms", &far], &cfg);
    assert_eq!(
        listed(&stdout(&dry), "would expire"),
        BTreeSet::new(),
        "{}",
        stdout(&dry)
    );
    let real = cmd(&["prune", "--now-ms", &far], &cfg);
    assert!(
        stdout(&real).contains("0 expired, 9 kept"),
        "{}",
        stdout(&real)
    );
    assert_eq!(env.stored(), kept);
    for name in ["f2.xb", "g0.xb", "r4.rdb"] {
        assert!(kept.contains(name));
    }
}

#[test]
fn a_manifest_is_rebuilt_after_deletion() {
    let Some(env) = env() else { return };
    let history = [
        b("a.sql", "mysql", 3306, 0.0),
        b("b.sql", "mysql", 3306, 1.0),
        b("c.rdb", "redis", 6379, 1.0),
    ];
    for (i, bk) in history.iter().enumerate() {
        env.queue(bk, T0, i as u64);
    }
    let cfg = env.config("[retention]\nkeep_days = 1\ninterval_secs = 0\n");
    run_until_idle(&cfg);
    let m = Manifest::new(env.root.path());
    let before = m.load().unwrap();
    assert_eq!(before.files.len(), 3);
    std::fs::remove_file(m.path()).unwrap();
    // A stray temp file and a partial are not backups.
    std::fs::write(env.dest("mysql", ".a.sql.0a1b2c"), b"temp").unwrap();

    let out = cmd(&["rebuild-manifest"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("3 adopted, 0 already known, 0 skipped"),
        "{text}"
    );
    assert!(text.contains("retention never expires them"), "{text}");
    let after = m.load().unwrap();
    assert_eq!(after.files.len(), 3);
    for (path, old) in &before.files {
        let new = &after.files[path];
        assert_eq!(new.size, old.size);
        assert_eq!(
            new.checksum, old.checksum,
            "the recomputed checksum is the pull's"
        );
        assert_eq!(new.back_type, old.back_type, "inferred from the layout");
        assert_eq!(new.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(new.chain, Chain::Unknown);
        for what in ["chain", "job_id", "server_id", "instance", "game_id"] {
            assert!(
                new.unknown.iter().any(|u| u == what),
                "{what} in {:?}",
                new.unknown
            );
        }
    }
    // Nothing rebuilt expires, whatever the clock.
    let far = (T0 + 5000 * DAY).to_string();
    let p = cmd(&["prune", "--now-ms", &far], &cfg);
    assert!(stdout(&p).contains("0 expired, 3 kept"), "{}", stdout(&p));
    // A second rebuild adopts nothing new.
    let again = cmd(&["rebuild-manifest"], &cfg);
    assert!(
        stdout(&again).contains("0 adopted, 3 already known"),
        "{}",
        stdout(&again)
    );
    // A file the manifest does not know is never deleted.
    let stranger = env.dest("mysql", "stranger.sql");
    std::fs::write(&stranger, b"not ours").unwrap();
    std::fs::remove_file(m.path()).unwrap();
    let p = cmd(&["prune", "--now-ms", &far], &cfg);
    assert!(stdout(&p).contains("0 expired, 0 kept"), "{}", stdout(&p));
    assert!(stranger.is_file());
}

#[test]
fn scrub_finds_a_flipped_byte_and_a_lost_file_and_publishes_events() {
    let Some(env) = env() else { return };
    let history = [
        b("a.sql", "mysql", 3306, 0.0),
        b("b.sql", "mysql", 3306, 1.0),
        b("c.rdb", "redis", 6379, 1.0),
    ];
    for (i, bk) in history.iter().enumerate() {
        env.queue(bk, T0, i as u64);
    }
    let cfg = env.config("");
    run_until_idle(&cfg);
    let clean = cmd(&["scrub"], &cfg);
    assert!(
        clean.status.success(),
        "{}{}",
        stdout(&clean),
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(
        stdout(&clean).contains("3 files checked"),
        "{}",
        stdout(&clean)
    );
    assert!(env.events().is_empty());

    // One flipped byte in the middle of a.sql (size and mtime unchanged), and c.rdb lost.
    let a = env.dest("mysql", "a.sql");
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&a, &bytes).unwrap();
    std::fs::remove_file(env.dest("redis", "c.rdb")).unwrap();

    let dirty = cmd(&["scrub"], &cfg);
    assert_eq!(
        dirty.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&dirty.stderr)
    );
    let text = stdout(&dirty);
    assert!(text.contains("2 findings, 2 published"), "{text}");
    let events = env.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let corrupt = events
        .iter()
        .find(|e| e.event == EventKind::Corrupt)
        .unwrap();
    assert_eq!(corrupt.filename, "a.sql");
    assert_eq!(corrupt.back_type, "mysql");
    assert_eq!(corrupt.instance, 3306);
    assert_eq!(corrupt.job_id.as_deref(), Some("job-a.sql"));
    assert_eq!(corrupt.file_path, a.parent().unwrap().to_str().unwrap());
    assert!(
        corrupt.reason.starts_with("checksum is xxh128:"),
        "{}",
        corrupt.reason
    );
    let lost = events
        .iter()
        .find(|e| e.event == EventKind::Unreadable)
        .unwrap();
    assert_eq!(lost.filename, "c.rdb");
    assert_eq!(lost.server_id, "S1");
    // b.sql was fine and is not reported.
    assert!(!events.iter().any(|e| e.filename == "b.sql"));
}

#[test]
fn the_daemon_prunes_on_its_schedule_and_publishes_expired() {
    let Some(env) = env() else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let history = [
        b("old1.rdb", "redis", 6379, -10.0),
        b("old2.rdb", "redis", 6379, -9.0),
        b("new.rdb", "redis", 6379, -8.0),
    ];
    for (i, bk) in history.iter().enumerate() {
        env.queue(bk, now, i as u64);
    }
    let cfg = env.config("[retention]\ninterval_secs = 1\n[retention.redis]\nkeep_days = 2\n[scrub]\ninterval_secs = 0\n");
    let log = env.work.path().join("node.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("UBACKUP_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let ev = env.events();
        if ev.len() >= 2 {
            break ev;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "{} events; log:\n{}",
                ev.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = wait_output(child, Duration::from_secs(30)).status;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let named: BTreeSet<String> = events.iter().map(|e| e.filename.clone()).collect();
    assert_eq!(named, set(&["old1.rdb", "old2.rdb"]));
    assert!(events.iter().all(|e| e.event == EventKind::Expired));
    assert!(!env.dest("redis", "old1.rdb").exists());
    assert!(
        env.dest("redis", "new.rdb").is_file(),
        "the newest full stays"
    );
    assert_eq!(env.stored(), set(&["new.rdb"]));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("expired: deleted"), "{log}");
}
