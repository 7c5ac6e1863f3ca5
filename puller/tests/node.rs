//! `ubackup-puller run`, as a process, against a real `redis-server` and a real
//! `rsync --daemon` (3.5.0) on loopback ports picked at run time: priority order, crash
//! recovery after `kill -9`, two nodes on one queue, the disk reserve and SIGHUP, a Redis
//! restart, illegal messages, a dead node's lease, and UBackup's own config file.
//!
//! Every wait has a deadline and every child process is killed on drop, so a broken node
//! fails the test instead of hanging it.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use ubackup_messages::{parse_result, NodeHeartbeat, PullResult};
use ubackup_testkit::{
    compare_files, http::get_http10, temp_files, wait_until, write_random_file, LoggedChild, Site,
};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-puller");

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

impl Env {
    /// A node config; `extra` lines are appended to the sections they name.
    fn config(&self, name: &str, node_id: &str, node: &str, pull: &str) -> PathBuf {
        let text = format!(
            r#"[node]
id = "{node_id}"
ip = "127.0.0.9"
root = "{root}"
workers = 2
shutdown_grace_secs = 5
{node}

[queue]
redis = "{redis}"
lists = ["level1", "uuzuback_f"]
heartbeat_secs = 1
lease_secs = 3
idle_poll_ms = 200

[results]
list = "message"

[pull]
retry = 2
connect_timeout_secs = 5
stall_timeout_secs = 10
rsync_port = {port}
{pull}

[log]
level = "info,ubackup_puller=debug"
"#,
            root = self.root.path().display(),
            redis = self.redis.url(),
            port = self.daemon.port(),
        );
        let p = self.work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// UBackup's client message for `name` (daemon on our port via the v1 form).
    fn job(&self, name: &str, size: u64, instance: i64) -> String {
        serde_json::json!({
            "v": 1, "job_id": format!("job-{name}"), "server_id": "S1", "game_id": 7,
            "host": "127.0.0.1", "port": self.daemon.port(), "module": "backup",
            "filename": name, "size": size, "back_type": "mysql", "instance": instance,
            "interval": 3600, "create_time_ms": 1_700_000_000_000i64, "success": true, "log": "ok"
        })
        .to_string()
    }

    /// The UBackup client's message for `name` (no port: the node's `pull.rsync_port`).
    fn legacy_job(&self, name: &str, size: u64, instance: i64) -> String {
        serde_json::json!({
            "filename": name, "last_all_filename": null, "last_all_time": 0, "size": size,
            "log": "ok", "create_time": 1_700_000_000i64, "success": true, "server_id": "S1",
            "game_id": 7, "op_id": 0, "game_server_ip": "127.0.0.1", "back_type": "mysql",
            "instance": instance, "rsync_model": "backup", "interval": 3600
        })
        .to_string()
    }

    /// Results, oldest first.
    fn results(&self) -> Vec<PullResult> {
        let raw: Vec<Vec<u8>> = self.conn().lrange("message", 0, -1).unwrap();
        raw.iter()
            .rev()
            .map(|r| parse_result(r).expect("a result"))
            .collect()
    }

    fn wait_results(&self, n: usize, limit: Duration, node: &mut Node) -> Vec<PullResult> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.results();
            if r.len() >= n {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} of {n} results after {limit:?}: {r:#?}\nnode log:\n{}",
                    r.len(),
                    node.log()
                );
            }
            if let Some(status) = node.try_exit() {
                panic!(
                    "node exited ({status:?}) with {} of {n} results:\n{}",
                    r.len(),
                    node.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where jobs land (UBackup's layout; the host is 127.0.0.1).
    fn dest_dir(&self) -> PathBuf {
        self.root.path().join("mysql/127.0.0/1")
    }

    /// Where a job for `name` lands.
    fn dest(&self, name: &str) -> PathBuf {
        self.dest_dir().join(name)
    }
}

/// A running `ubackup-puller run` (a testkit [`LoggedChild`]: killed on drop).
struct Node(LoggedChild);

impl std::ops::Deref for Node {
    type Target = LoggedChild;
    fn deref(&self) -> &LoggedChild {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut LoggedChild {
        &mut self.0
    }
}

impl Node {
    fn start(config: &Path, until_idle: bool) -> Node {
        let log = config.with_extension(format!("log.{}", rand::random::<u32>()));
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("--config").arg(config);
        if until_idle {
            cmd.arg("--until-idle");
        }
        Node(LoggedChild::spawn(cmd.env_remove("UBACKUP_LOG"), log).unwrap())
    }

    /// Runs `run --until-idle` to a clean exit within 60 s.
    fn run_until_idle(config: &Path) {
        let mut node = Node::start(config, true);
        let status = node.wait(Duration::from_secs(60));
        assert!(status.success(), "{status}: {}", node.log());
    }

    /// SIGTERM, then a clean exit within 20 s.
    fn stop(&mut self) {
        self.0.stop(Duration::from_secs(20));
    }
}

/// Replaces `from` (which must be there) by `to` in the config file `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn by_job(results: &[PullResult]) -> BTreeMap<String, Vec<&PullResult>> {
    let mut m: BTreeMap<String, Vec<&PullResult>> = BTreeMap::new();
    for r in results {
        m.entry(r.job_id.clone()).or_default().push(r);
    }
    m
}

#[test]
fn higher_priority_lists_are_drained_first_and_each_list_oldest_first() {
    let Some(env) = env() else { return };
    let mut order = Vec::new();
    for i in 0..8 {
        let (hi, lo) = (format!("hi-{i}.sql"), format!("lo-{i}.sql"));
        env.file(&hi, 20_000, i);
        env.file(&lo, 20_000, 100 + i);
        // Interleaved, so that push order alone cannot explain the result.
        // Both message forms: UBackup's on the low list, ours on level1.
        env.push("uuzuback_f", &env.legacy_job(&lo, 20_000, 3306));
        env.push("level1", &env.job(&hi, 20_000, 3306));
        order.push(hi);
    }
    // One worker: jobs are taken, pulled and reported one after another, so the result list
    // is the take order itself (two workers could take two jobs in the same millisecond).
    let cfg = env.config("n.toml", "n1", "", "");
    edit(&cfg, "workers = 2", "workers = 1");
    Node::run_until_idle(&cfg);
    let results = env.results();
    assert_eq!(results.len(), 16, "{results:#?}");
    assert!(results.iter().all(|r| r.succeeded()), "{results:#?}");
    let lists: Vec<&str> = results
        .iter()
        .map(|r| r.queue.as_deref().unwrap())
        .collect();
    assert_eq!(
        lists[..8],
        ["level1"; 8],
        "every level1 job first: {lists:?}"
    );
    assert_eq!(lists[8..], ["uuzuback_f"; 8], "{lists:?}");
    // Each list oldest first, in the order pushed.
    let taken: Vec<String> = results
        .iter()
        .map(|r| r.filename.clone().unwrap())
        .collect();
    assert_eq!(taken[..8], order[..]);
    let lo: Vec<String> = (0..8).map(|i| format!("lo-{i}.sql")).collect();
    assert_eq!(taken[8..], lo[..]);
    assert!(results.windows(2).all(|w| w[0].taken_ms <= w[1].taken_ms));
    for r in &results {
        let name = r.filename.as_deref().unwrap();
        compare_files(&env.src.path().join(name), &env.dest(name)).unwrap();
        assert_eq!(r.node_id, "n1");
        assert_eq!(r.back_server_ip, "127.0.0.9");
        assert_eq!(r.file_path.as_deref(), env.dest_dir().to_str());
        assert_eq!(r.size, Some(20_000));
        assert_eq!(r.checksum_algorithm.as_deref(), Some("xxh128"));
        assert_eq!(r.checksum.as_ref().map(|c| c.len()), Some(32));
    }
    let inflight: i64 = env.conn().hlen("ubackup:inflight:n1").unwrap();
    assert_eq!(inflight, 0);
}

#[test]
fn illegal_messages_are_dead_lettered_and_reported() {
    let Some(env) = env() else { return };
    let legacy = |over: serde_json::Value| {
        let mut m = serde_json::json!({
            "filename": "a.sql", "last_all_filename": null, "last_all_time": 0, "size": 1,
            "log": "ok", "create_time": 1475280000, "success": true, "server_id": "S9",
            "game_id": 12, "op_id": 0, "game_server_ip": "127.0.0.1", "back_type": "mysql",
            "instance": 3306, "rsync_model": "backup", "interval": 3600
        });
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                m.as_object_mut().unwrap().remove(k);
            } else {
                m[k] = v.clone();
            }
        }
        m.to_string()
    };
    let cases = [
        ("not a JSON object", "{ this is not json".to_string()),
        ("server_id", legacy(serde_json::json!({"server_id": null}))),
        (
            "game_server_ip",
            legacy(serde_json::json!({"game_server_ip": "10.0.0.300"})),
        ),
        (
            "filename",
            legacy(serde_json::json!({"filename": "../../etc/passwd"})),
        ),
        (
            "rsync_model",
            legacy(serde_json::json!({"rsync_model": "backup/../../etc"})),
        ),
    ];
    for (_, msg) in &cases {
        env.push("uuzuback_f", msg);
    }
    // A client failure is forwarded, not dead-lettered.
    env.push(
        "uuzuback_f",
        &legacy(serde_json::json!({"success": false, "filename": null, "log": "execute backup script error"})),
    );
    let cfg = env.config("n.toml", "n1", "", "");
    Node::run_until_idle(&cfg);

    let results = env.results();
    assert_eq!(results.len(), 6, "{results:#?}");
    assert!(results.iter().all(|r| r.succeed == 0));
    let illegal: Vec<&PullResult> = results
        .iter()
        .filter(|r| r.log.starts_with("illegal message: "))
        .collect();
    assert_eq!(illegal.len(), 5, "{results:#?}");
    for (field, _) in &cases {
        let hits = illegal.iter().filter(|r| r.log.contains(field)).count();
        assert_eq!(hits, 1, "{field} named in {hits} results: {illegal:#?}");
    }
    // What could be read is kept, so the indexer can raise the alert for the instance.
    let ip = illegal
        .iter()
        .find(|r| r.log.contains("game_server_ip"))
        .unwrap();
    assert_eq!(ip.server_id.as_deref(), Some("S9"));
    assert_eq!(ip.instance, Some(3306));
    let client = results
        .iter()
        .find(|r| !r.log.starts_with("illegal"))
        .unwrap();
    assert_eq!(client.log, "execute backup script error");
    assert_eq!(client.succeed, 0);
    assert_eq!(
        client.file_path.as_deref(),
        Some(env.root.path().join("mysql/127.0.0/1").to_str().unwrap())
    );
    let dead: Vec<String> = env.conn().lrange("ubackup:dead", 0, -1).unwrap();
    assert_eq!(dead.len(), 5);
    for (field, msg) in &cases {
        let entry = dead
            .iter()
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
            .find(|v| v["message"].as_str() == Some(msg.as_str()))
            .unwrap_or_else(|| panic!("{msg} not dead-lettered: {dead:#?}"));
        assert!(entry["reason"].as_str().unwrap().contains(field), "{entry}");
    }
    // Nothing reached rsync: nothing was written.
    let files: Vec<_> = walk(env.root.path())
        .into_iter()
        .filter(|p| !p.contains(".ubackup-state"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn kill_9_mid_transfer_then_restart_ends_each_job_with_one_success() {
    let Some(env) = env() else { return };
    const SIZE: u64 = 24 << 20;
    let names: Vec<String> = (0..4).map(|i| format!("big-{i}.sql")).collect();
    for (i, n) in names.iter().enumerate() {
        env.file(n, SIZE, i as u64);
        env.push("uuzuback_f", &env.job(n, SIZE, 3306 + i as i64));
    }
    // 16 MiB/s for the whole node: about six seconds of pulling in all.
    let cfg = env.config("n.toml", "n1", "bwlimit = \"16M\"", "");
    let mut node = Node::start(&cfg, false);
    // Kill once data is flowing for two jobs.
    let dir = env.dest_dir();
    wait_until(Duration::from_secs(30), "temp files with data", || {
        temp_files(&dir).is_ok_and(|t| t.len() >= 2)
            && walk(&dir)
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20))
    });
    node.signal("KILL");
    node.wait(Duration::from_secs(5));
    let held: i64 = env.conn().hlen("ubackup:inflight:n1").unwrap();
    assert!(held >= 1, "jobs in flight at the kill");
    assert!(!temp_files(&dir).unwrap().is_empty());

    let mut node = Node::start(&cfg, true);
    assert!(
        node.wait(Duration::from_secs(90)).success(),
        "{}",
        node.log()
    );
    let results = env.results();
    let jobs = by_job(&results);
    assert_eq!(jobs.len(), names.len(), "{results:#?}");
    for (id, rs) in &jobs {
        let ok: Vec<_> = rs.iter().filter(|r| r.succeeded()).collect();
        assert_eq!(ok.len(), 1, "{id}: {rs:#?}");
        assert_eq!(rs.len(), 1, "{id}: {rs:#?}");
    }
    assert!(
        results.iter().any(|r| r.requeues == 1),
        "the killed node's jobs were requeued at restart: {results:#?}"
    );
    for n in &names {
        compare_files(&env.src.path().join(n), &env.dest(n)).unwrap();
    }
    assert_eq!(temp_files(&dir).unwrap(), Vec::<String>::new());
    let held: i64 = env.conn().hlen("ubackup:inflight:n1").unwrap();
    assert_eq!(held, 0);
}

#[test]
fn two_nodes_share_a_queue_and_never_pull_a_job_twice() {
    let Some(env) = env() else { return };
    let n = 30;
    for i in 0..n {
        let name = format!("f-{i}.sql");
        env.file(&name, 512 << 10, i);
        env.push("uuzuback_f", &env.job(&name, 512 << 10, i as i64));
    }
    // Each node is slow enough that neither can drain the list alone before the other starts.
    let a = env.config("a.toml", "node-a", "bwlimit = \"4M\"", "");
    let b = env.config("b.toml", "node-b", "bwlimit = \"4M\"", "");
    let mut na = Node::start(&a, true);
    let mut nb = Node::start(&b, true);
    assert!(na.wait(Duration::from_secs(120)).success(), "{}", na.log());
    assert!(nb.wait(Duration::from_secs(120)).success(), "{}", nb.log());
    let results = env.results();
    let jobs = by_job(&results);
    assert_eq!(jobs.len(), n as usize);
    assert!(
        jobs.values().all(|rs| rs.len() == 1 && rs[0].succeeded()),
        "{results:#?}"
    );
    assert!(results.iter().all(|r| r.requeues == 0));
    let nodes: BTreeSet<&str> = results.iter().map(|r| r.node_id.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["node-a", "node-b"]),
        "both nodes did work"
    );
}

#[test]
fn the_reserve_pauses_the_node_until_sighup_lowers_it() {
    let Some(env) = env() else { return };
    for i in 0..3 {
        let name = format!("r-{i}.sql");
        env.file(&name, 10_000, i);
        env.push("level1", &env.job(&name, 10_000, i as i64));
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    // More than any disk has.
    let high = env.config("n.toml", "n1", "reserve_gib = 1000000000", &metrics);
    let mut node = Node::start(&high, false);
    let hb = "ubackup:node:n1";
    wait_until(Duration::from_secs(15), "a paused heartbeat", || {
        let paused: Option<String> = env.conn().hget(hb, "paused").unwrap();
        paused.as_deref() == Some("1")
    });
    std::thread::sleep(Duration::from_secs(2));
    let reason: String = env.conn().hget(hb, "paused_reason").unwrap();
    assert!(reason.contains("reserve"), "{reason}");
    let waiting: i64 = env.conn().llen("level1").unwrap();
    assert_eq!(waiting, 3, "a paused node pops nothing");
    assert!(env.results().is_empty());
    let queued: String = env.conn().hget(hb, "queue:level1").unwrap();
    assert_eq!(queued, "3");
    // The whole hash, as the running node wrote it, reads through the shared contract.
    let hash: BTreeMap<String, String> = env.conn().hgetall(hb).unwrap();
    let read = NodeHeartbeat::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("a running node's heartbeat parses");
    assert_eq!(read.node_id, "n1");
    assert!(
        read.paused && read.paused_reason.contains("reserve"),
        "{read:?}"
    );
    assert!(read.queues.contains(&("level1".to_string(), 3)), "{read:?}");
    assert!(
        read.pid > 0 && read.updated_ms > 0 && read.total_bytes > 0,
        "{read:?}"
    );
    let link = read.redis.expect("the queue's Redis link is reported");
    assert!(link.master.contains(':'), "{link:?}");
    let text = get_http10(port, "/metrics").unwrap();
    assert!(text.contains("\nubackup_paused 1\n"), "{text}");
    assert!(
        text.contains("ubackup_queue_length{list=\"level1\"} 3"),
        "{text}"
    );

    // Lower the reserve in the same file and reload.
    edit(&high, "reserve_gib = 1000000000", "reserve_gib = 0");
    node.signal("HUP");
    let results = env.wait_results(3, Duration::from_secs(30), &mut node);
    assert!(results.iter().all(|r| r.succeeded()), "{results:#?}");
    wait_until(Duration::from_secs(10), "an unpaused heartbeat", || {
        let paused: Option<String> = env.conn().hget(hb, "paused").unwrap();
        paused.as_deref() == Some("0")
    });
    node.stop();
    let hb_left: bool = env.conn().exists(hb).unwrap();
    assert!(!hb_left, "a clean stop removes the heartbeat");
}

#[test]
fn a_redis_restart_mid_run_loses_no_job() {
    let Some(mut env) = env() else { return };
    let n = 12;
    for i in 0..n {
        let name = format!("x-{i}.sql");
        env.file(&name, 2 << 20, i);
        env.push("uuzuback_f", &env.job(&name, 2 << 20, i as i64));
    }
    let cfg = env.config("n.toml", "n1", "bwlimit = \"8M\"", "");
    let mut node = Node::start(&cfg, false);
    env.wait_results(2, Duration::from_secs(30), &mut node);
    env.redis.stop();
    std::thread::sleep(Duration::from_millis(1500));
    env.redis.restart().unwrap();
    let results = env.wait_results(n as usize, Duration::from_secs(90), &mut node);
    let jobs = by_job(&results);
    assert_eq!(jobs.len(), n as usize, "{results:#?}");
    for (id, rs) in &jobs {
        assert_eq!(rs.len(), 1, "{id}: {rs:#?}");
        assert!(rs[0].succeeded(), "{id}: {rs:#?}");
    }
    node.stop();
}

#[test]
fn a_dead_nodes_jobs_are_requeued_after_its_lease_and_poison_jobs_dead_lettered() {
    let Some(env) = env() else { return };
    env.file("ghost.sql", 30_000, 1);
    let mut c = env.conn();
    let now = 1_700_000_000_000i64;
    // A node that died holding two jobs: one fresh, one already requeued five times.
    let fresh = env.job("ghost.sql", 30_000, 1);
    let poison = serde_json::json!({
        "ubackup_requeued": {"requeues": 5, "history": []},
        "job": env.job("poison.sql", 1, 2),
    })
    .to_string();
    let _: i64 = c
        .hset(
            "ubackup:inflight:ghost",
            "ghost:1",
            format!("uuzuback_f\n{now}\n{fresh}"),
        )
        .unwrap();
    let _: i64 = c
        .hset(
            "ubackup:inflight:ghost",
            "ghost:2",
            format!("level1\n{now}\n{poison}"),
        )
        .unwrap();
    let _: i64 = c.sadd("ubackup:nodes", "ghost").unwrap();

    let cfg = env.config("n.toml", "n1", "", "");
    let mut node = Node::start(&cfg, false);
    let results = env.wait_results(1, Duration::from_secs(30), &mut node);
    assert_eq!(results[0].job_id, "job-ghost.sql");
    assert!(results[0].succeeded(), "{results:#?}");
    assert_eq!(results[0].requeues, 1);
    compare_files(&env.src.path().join("ghost.sql"), &env.dest("ghost.sql")).unwrap();
    let dead: Vec<String> = c.lrange("ubackup:dead", 0, -1).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert!(
        d["reason"].as_str().unwrap().contains("requeued 6 times"),
        "{d}"
    );
    assert!(
        d["history"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("ghost"),
        "{d}"
    );
    wait_until(Duration::from_secs(10), "the ghost forgotten", || {
        let members: Vec<String> = env.conn().smembers("ubackup:nodes").unwrap();
        !members.contains(&"ghost".to_string())
    });
    node.stop();
}

#[test]
fn the_previous_backup_of_an_instance_is_the_next_ones_basis() {
    let Some(env) = env() else { return };
    env.file("day1.sql", 4 << 20, 5);
    // Day 2: the same dump with one region rewritten.
    let mut day2 = std::fs::read(env.src.path().join("day1.sql")).unwrap();
    day2[1 << 20..(1 << 20) + 4096].fill(0xAB);
    std::fs::write(env.src.path().join("day2.sql"), &day2).unwrap();
    env.push("uuzuback_f", &env.job("day1.sql", 4 << 20, 3306));
    let cfg = env.config("n.toml", "n1", "", "");
    Node::run_until_idle(&cfg);
    env.push("uuzuback_f", &env.job("day2.sql", 4 << 20, 3306));
    Node::run_until_idle(&cfg);
    let results = env.results();
    assert_eq!(results.len(), 2);
    let r = &results[1];
    assert!(r.succeeded(), "{r:#?}");
    assert!(
        r.basis.as_deref().is_some_and(|b| b.ends_with("day1.sql")),
        "{r:#?}"
    );
    assert!(r.matched_bytes > 3 << 20, "{r:#?}");
    assert!(r.bytes_received < 1 << 20, "{r:#?}");
    compare_files(&env.src.path().join("day2.sql"), &env.dest("day2.sql")).unwrap();
}

#[test]
fn size_and_checksum_disagreements_are_failures() {
    let Some(env) = env() else { return };
    env.file("s.sql", 1000, 1);
    env.file("c.sql", 1000, 2);
    env.push("uuzuback_f", &env.job("s.sql", 999, 1));
    let mut bad = serde_json::from_str::<serde_json::Value>(&env.job("c.sql", 1000, 2)).unwrap();
    bad["checksum"] = format!("sha256:{}", "00".repeat(32)).into();
    env.push("uuzuback_f", &bad.to_string());
    let mut good = serde_json::from_str::<serde_json::Value>(&env.job("s.sql", 1000, 3)).unwrap();
    let data = std::fs::read(env.src.path().join("s.sql")).unwrap();
    let sha: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    good["checksum"] = format!("sha256:{sha}").into();
    good["job_id"] = "job-good".into();
    env.push("uuzuback_f", &good.to_string());
    let cfg = env.config("n.toml", "n1", "", "");
    Node::run_until_idle(&cfg);
    let all = env.results();
    assert_eq!(all.len(), 3, "{all:#?}");
    let find = |id: &str| all.iter().find(|r| r.job_id == id).unwrap();
    let size = find("job-s.sql");
    assert_eq!(size.succeed, 0);
    assert!(size.size_mismatch);
    assert_eq!(size.expected_size, Some(999));
    assert!(
        size.log.starts_with("file size not correct"),
        "{}",
        size.log
    );
    let sum = find("job-c.sql");
    assert_eq!(sum.succeed, 0);
    assert!(sum.log.starts_with("checksum mismatch"), "{}", sum.log);
    assert!(
        !env.dest("c.sql").exists(),
        "a file that is not the client's backup is removed"
    );
    let good = find("job-good");
    assert!(good.succeeded(), "{good:#?}");
    assert_eq!(good.checksum.as_deref(), Some(sha.as_str()));
    assert_eq!(good.checksum_algorithm.as_deref(), Some("sha256"));
}

#[test]
fn check_config_accepts_ubackups_sample_and_names_every_bad_key() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/uuzuback-server.conf"
    );
    let out = Command::new(BIN)
        .args(["check-config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Legacy") && text.contains("level1"), "{text}");
    // UBackup never applied its keeptime keys: a drop-in node deletes nothing until told to.
    assert!(
        text.contains("retention: off, nothing is ever deleted (mysqlkeeptime = 15")
            && text.contains("set apply_keeptime = yes"),
        "{text}"
    );
    let d = tempfile::tempdir().unwrap();
    let on = d.path().join("on.conf");
    let sample_text = std::fs::read_to_string(sample).unwrap();
    assert!(sample_text.contains("[global]"), "{sample_text}");
    std::fs::write(
        &on,
        sample_text.replacen("[global]", "[global]\napply_keeptime = yes", 1),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&on)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("retention: on; backups are deleted")
            && text.contains("type mysql: deleted once taken more than 15 days ago"),
        "{text}"
    );

    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nworkers = \"many\"\n[queue]\nlists = []\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["node.root", "node.workers", "queue.lists"] {
        assert!(err.contains(key), "{key} not in {err}");
    }
}

#[test]
fn compressed_pulls_cross_fewer_bytes_and_arrive_intact() {
    let Some(env) = env() else { return };
    let dump: String = (0..60_000)
        .map(|i| format!("INSERT INTO t VALUES ({i},'user{}',{});\n", i % 97, i * 7))
        .collect();
    std::fs::write(env.src.path().join("dump.sql"), &dump).unwrap();
    env.file("dump.sql.gz", 1 << 20, 3);
    env.push("uuzuback_f", &env.job("dump.sql", dump.len() as u64, 1));
    env.push("uuzuback_f", &env.job("dump.sql.gz", 1 << 20, 2));
    let cfg = env.config("n.toml", "n1", "", "compress = \"zstd\"");
    Node::run_until_idle(&cfg);
    let all = env.results();
    let sql = all.iter().find(|r| r.job_id == "job-dump.sql").unwrap();
    assert!(sql.succeeded(), "{sql:#?}");
    assert!(sql.bytes_received * 4 < dump.len() as u64, "{sql:#?}");
    let gz = all.iter().find(|r| r.job_id == "job-dump.sql.gz").unwrap();
    assert!(gz.succeeded(), "{gz:#?}");
    compare_files(&env.src.path().join("dump.sql"), &env.dest("dump.sql")).unwrap();
    compare_files(
        &env.src.path().join("dump.sql.gz"),
        &env.dest("dump.sql.gz"),
    )
    .unwrap();
}

#[test]
fn sigterm_lets_pulls_finish_within_the_grace_then_requeues_them_for_resume() {
    let Some(env) = env() else { return };
    const SIZE: u64 = 12 << 20;
    env.file("slow.sql", SIZE, 9);
    env.push("uuzuback_f", &env.job("slow.sql", SIZE, 1));
    // 2 MiB/s: six seconds for the file, more than the one-second grace.
    let cfg = env.config("n.toml", "n1", "bwlimit = \"2M\"", "");
    edit(&cfg, "shutdown_grace_secs = 5", "shutdown_grace_secs = 1");
    let mut node = Node::start(&cfg, false);
    let dir = env.dest_dir();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walk(&dir)
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20))
    {
        assert!(
            Instant::now() < deadline,
            "no data after 30 s:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.stop();
    assert!(env.results().is_empty(), "no result for a cancelled pull");
    let held: i64 = env.conn().hlen("ubackup:inflight:n1").unwrap();
    assert_eq!(held, 0, "the job went back to its list");
    let queued: Vec<String> = env.conn().lrange("uuzuback_f", 0, -1).unwrap();
    assert_eq!(queued.len(), 1);
    let wrapped: serde_json::Value = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(
        wrapped["ubackup_requeued"]["requeues"], 0,
        "a shutdown does not count"
    );
    assert!(wrapped["ubackup_requeued"]["history"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    assert!(!env.dest("slow.sql").exists());
    assert_eq!(temp_files(&dir).unwrap(), Vec::<String>::new());
    let partial = dir.join(".ubackup-partial/slow.sql");
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 1 << 20, "the data that arrived is kept for resume");

    // The next run resumes from it.
    let fast = env.config("fast.toml", "n1", "", "");
    Node::run_until_idle(&fast);
    let r = env.results();
    assert_eq!(r.len(), 1);
    assert!(r[0].succeeded(), "{r:#?}");
    assert!(
        r[0].matched_bytes >= kept / 2,
        "resumed from the partial: {r:#?}"
    );
    compare_files(&env.src.path().join("slow.sql"), &env.dest("slow.sql")).unwrap();
}

#[test]
fn an_idle_node_polls_gently_and_picks_up_a_new_job_within_about_a_second() {
    let Some(env) = env() else { return };
    env.file("late.sql", 10_000, 4);
    let cfg = env.config("n.toml", "n1", "", "");
    // The production default poll (1 s), not the tests' 200 ms.
    edit(&cfg, "idle_poll_ms = 200", "idle_poll_ms = 1000");
    let mut node = Node::start(&cfg, false);
    wait_until(Duration::from_secs(10), "the heartbeat", || {
        env.conn().exists::<_, bool>("ubackup:node:n1").unwrap()
    });
    let calls = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut env.conn())
            .unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    std::thread::sleep(Duration::from_secs(1));
    let before = calls();
    std::thread::sleep(Duration::from_secs(4));
    let polls = calls() - before;
    assert!(polls <= 8, "{polls} take scripts in 4 idle seconds");
    assert!(
        polls >= 2,
        "{polls} take scripts in 4 idle seconds: is it polling at all?"
    );
    let pushed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    env.push("level1", &env.job("late.sql", 10_000, 1));
    let r = env.wait_results(1, Duration::from_secs(20), &mut node);
    let latency = r[0].taken_ms - pushed;
    // About a second; the bound leaves room for a loaded machine.
    assert!(latency < 2500, "taken {latency} ms after it was pushed");
    node.stop();
}

/// A node with one worker on `env`'s queue (UBackup-format jobs), and its heartbeat key.
fn one_worker(env: &Env, name: &str) -> (Node, PathBuf) {
    let cfg = env.config(name, "n1", "", "");
    edit(&cfg, "workers = 2", "workers = 1");
    (Node::start(&cfg, false), cfg)
}

/// Waits until the heartbeat shows nothing running, and checks that nothing is in flight
/// and the node is not paused.
fn assert_idle_and_unpaused(env: &Env) {
    let hb = "ubackup:node:n1";
    wait_until(Duration::from_secs(10), "busy_workers 0", || {
        let busy: Option<String> = env.conn().hget(hb, "busy_workers").unwrap();
        busy.as_deref() == Some("0")
    });
    let held: i64 = env.conn().hlen("ubackup:inflight:n1").unwrap();
    assert_eq!(held, 0, "nothing stays in flight");
    let paused: String = env.conn().hget(hb, "paused").unwrap();
    let reason: String = env.conn().hget(hb, "paused_reason").unwrap();
    assert_eq!(paused, "0", "{reason}");
}

/// A legal 206-byte name whose first 200 bytes end inside `中`: the temp-file salvage sliced
/// it there and the worker panicked, leaving the job in flight and the worker busy for ever.
#[test]
fn a_name_cut_inside_a_character_at_200_bytes_is_pulled() {
    let Some(env) = env() else { return };
    let name = format!("{}中.rdb", "a".repeat(199));
    assert_eq!(name.len(), 206);
    env.file(&name, 30_000, 1);
    env.file("after.rdb", 10_000, 2);
    env.push("uuzuback_f", &env.legacy_job(&name, 30_000, 6379));
    env.push("uuzuback_f", &env.legacy_job("after.rdb", 10_000, 6379));
    let (mut node, _) = one_worker(&env, "n.toml");
    let results = env.wait_results(2, Duration::from_secs(30), &mut node);
    assert!(results.iter().all(|r| r.succeeded()), "{results:#?}");
    assert_eq!(results[0].filename.as_deref(), Some(name.as_str()));
    compare_files(&env.src.path().join(&name), &env.dest(&name)).unwrap();
    assert_idle_and_unpaused(&env);
    node.stop();
}

/// A job claiming 10^15 bytes can never fit: it fails at once, saying so, and the node goes
/// on with the next job instead of pausing for ever.
#[test]
fn a_job_larger_than_the_disk_fails_at_once_and_the_node_goes_on() {
    let Some(env) = env() else { return };
    env.file("huge.rdb", 1_000, 1);
    env.file("after.rdb", 10_000, 2);
    env.push(
        "uuzuback_f",
        &env.legacy_job("huge.rdb", 1_000_000_000_000_000, 6379),
    );
    env.push("uuzuback_f", &env.legacy_job("after.rdb", 10_000, 6379));
    let (mut node, _) = one_worker(&env, "n.toml");
    let results = env.wait_results(2, Duration::from_secs(30), &mut node);
    assert_eq!(results[0].filename.as_deref(), Some("huge.rdb"));
    assert!(!results[0].succeeded());
    assert!(
        results[0].log.contains("can never fit") && results[0].log.contains("1000000000000000"),
        "{}",
        results[0].log
    );
    assert!(results[1].succeeded(), "{results:#?}");
    assert!(
        node.log().contains("can never fit"),
        "the node's log says so:\n{}",
        node.log()
    );
    assert_idle_and_unpaused(&env);
    node.stop();
}

/// A tmpfs of `mib` MiB mounted on a temp dir, unmounted on drop; None (a skip) where this
/// process may not mount, unless interop tests are required.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u64) -> Option<Tmpfs> {
        let d = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(d.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !ubackup_testkit::interop_required(),
                "cannot mount a tmpfs (this test needs root)"
            );
            eprintln!("SKIP: cannot mount a tmpfs (this test needs root)");
            return None;
        }
        Some(Tmpfs(d))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// On a 40 MiB filesystem with 20 MiB taken by another writer, a 30 MiB job does not fit
/// now: it waits in its place on the list while the node pulls the jobs behind it that fit,
/// and it is pulled once the other writer's file is gone.
#[test]
fn a_job_that_does_not_fit_now_waits_in_line_without_holding_the_node() {
    let Some(env) = env() else { return };
    let Some(fs) = Tmpfs::mount(40) else { return };
    let blocker = fs.path().join("other-writer.bin");
    write_random_file(&blocker, 20 << 20, 9).unwrap();
    env.file("big.rdb", 30 << 20, 1);
    for i in 0..3 {
        env.file(&format!("small-{i}.rdb"), 100_000, 10 + i);
    }
    env.push("uuzuback_f", &env.legacy_job("big.rdb", 30 << 20, 6379));
    for i in 0..3 {
        let name = format!("small-{i}.rdb");
        env.push("uuzuback_f", &env.legacy_job(&name, 100_000, 6379));
    }
    let cfg = env.config("n.toml", "n1", "", "");
    edit(&cfg, "workers = 2", "workers = 1");
    edit(
        &cfg,
        &format!("root = \"{}\"", env.root.path().display()),
        &format!("root = \"{}\"", fs.path().display()),
    );
    let mut node = Node::start(&cfg, false);
    let results = env.wait_results(3, Duration::from_secs(30), &mut node);
    let names: Vec<_> = results.iter().map(|r| r.filename.clone()).collect();
    assert_eq!(
        names,
        ["small-0.rdb", "small-1.rdb", "small-2.rdb"].map(|n| Some(n.to_string())),
        "{results:#?}"
    );
    assert!(results.iter().all(|r| r.succeeded()), "{results:#?}");
    // The big job waits in its place, the oldest of its list, not in flight.
    let waiting: Vec<String> = env.conn().lrange("uuzuback_f", 0, -1).unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].contains("big.rdb"), "{waiting:?}");
    assert_idle_and_unpaused(&env);
    let hb = "ubackup:node:n1";
    wait_until(Duration::from_secs(5), "deferred_jobs 1", || {
        let d: Option<String> = env.conn().hget(hb, "deferred_jobs").unwrap();
        d.as_deref() == Some("1")
    });
    // The other writer's file goes: the big job is pulled.
    std::fs::remove_file(&blocker).unwrap();
    let results = env.wait_results(4, Duration::from_secs(60), &mut node);
    assert_eq!(results[3].filename.as_deref(), Some("big.rdb"));
    assert!(results[3].succeeded(), "{results:#?}");
    compare_files(
        &env.src.path().join("big.rdb"),
        &fs.path().join("mysql/127.0.0/1/big.rdb"),
    )
    .unwrap();
    assert_idle_and_unpaused(&env);
    node.stop();
}

/// Issue 31, 6: on a 40 MiB filesystem a 30 MiB job whose own 20 MiB partial is there (an
/// earlier attempt hit ENOSPC) finds 20 MiB free. Its partial counts as written: the node
/// pulls it instead of waiting for ever for room its own partial holds.
#[test]
fn a_jobs_own_partial_counts_as_room_it_has() {
    let Some(env) = env() else { return };
    let Some(fs) = Tmpfs::mount(40) else { return };
    env.file("f30.rdb", 30 << 20, 1);
    let cfg = env.config("n.toml", "n1", "", "");
    edit(&cfg, "workers = 2", "workers = 1");
    edit(
        &cfg,
        &format!("root = \"{}\"", env.root.path().display()),
        &format!("root = \"{}\"", fs.path().display()),
    );
    let mut node = Node::start(&cfg, false);
    wait_until(Duration::from_secs(10), "a heartbeat", || {
        env.conn().exists("ubackup:node:n1").unwrap()
    });
    // The partial an interrupted pull of this file left: its first 20 MiB.
    let dest = fs.path().join("mysql/127.0.0/1");
    let partial = dest.join(".ubackup-partial/f30.rdb");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    let data = std::fs::read(env.src.path().join("f30.rdb")).unwrap();
    std::fs::write(&partial, &data[..20 << 20]).unwrap();
    env.push("uuzuback_f", &env.legacy_job("f30.rdb", 30 << 20, 6379));
    let results = env.wait_results(1, Duration::from_secs(60), &mut node);
    assert!(results[0].succeeded(), "{results:#?}\n{}", node.log());
    compare_files(&env.src.path().join("f30.rdb"), &dest.join("f30.rdb")).unwrap();
    assert!(
        !partial.exists(),
        "the partial is gone once the file is in place"
    );
    assert_idle_and_unpaused(&env);
    node.stop();
}

/// Issue 31, 7: a node SIGKILLed mid-pull leaves its temp file (data plus `fallocate`d
/// blocks); another node redoes the job. When the first node starts again, that temp file
/// goes, although the next job it pulls has another name; and a job that failed for good
/// leaves no partial file behind.
#[test]
fn a_dead_pulls_temp_file_goes_when_another_node_did_the_job() {
    let Some(env) = env() else { return };
    const SIZE: u64 = 48 << 20;
    env.file("f200.rdb", SIZE, 1);
    env.push("uuzuback_f", &env.legacy_job("f200.rdb", SIZE, 6379));
    let a = env.config("a.toml", "node-a", "bwlimit = \"4M\"", "");
    edit(&a, "workers = 2", "workers = 1");
    let mut node_a = Node::start(&a, false);
    let dir = env.dest_dir();
    wait_until(Duration::from_secs(30), "a temp file with data", || {
        walk(&dir).iter().any(|p| {
            p.contains("/.f200.rdb.") && std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20)
        })
    });
    node_a.signal("KILL");
    node_a.wait(Duration::from_secs(5));
    assert_eq!(temp_files(&dir).unwrap().len(), 1);

    // Node B, on its own disk, takes the job once node A's lease lapses.
    let root_b = tempfile::tempdir().unwrap();
    let b = env.config("b.toml", "node-b", "", "");
    edit(
        &b,
        &format!("root = \"{}\"", env.root.path().display()),
        &format!("root = \"{}\"", root_b.path().display()),
    );
    let mut node_b = Node::start(&b, false);
    let results = env.wait_results(1, Duration::from_secs(60), &mut node_b);
    assert!(results[0].succeeded(), "{results:#?}");
    assert_eq!(results[0].node_id, "node-b");
    node_b.stop();

    // Node A again, with the next job another name (a file the daemon does not have: it
    // fails for good).
    env.push("uuzuback_f", &env.legacy_job("next.rdb", 1_000, 6379));
    let mut node_a = Node::start(&a, false);
    let results = env.wait_results(2, Duration::from_secs(60), &mut node_a);
    assert!(!results[1].succeeded(), "{results:#?}");
    assert_eq!(temp_files(&dir).unwrap(), Vec::<String>::new());
    let partials: Vec<String> = walk(&dir)
        .into_iter()
        .filter(|p| p.contains(".ubackup-partial/"))
        .collect();
    assert_eq!(partials, Vec::<String>::new());
    let hb = "ubackup:node:node-a";
    wait_until(Duration::from_secs(10), "temps_cleared 1", || {
        let n: Option<String> = env.conn().hget(hb, "temps_cleared").unwrap();
        n.as_deref() == Some("1")
    });
    node_a.stop();
}

/// A TCP relay to `upstream` that passes at most `budget` bytes from the daemon on each
/// connection, then cuts it: every attempt of a pull through it is interrupted. Counts the
/// connections, and for each one whether `partial()` held (the data the attempt before
/// kept for resume). Runs until the test process ends.
fn cutting_relay(
    upstream: std::net::SocketAddr,
    budget: u64,
    partial: impl Fn() -> bool + Send + 'static,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<bool>>>) {
    use std::io::{Read as _, Write as _};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            log.lock().unwrap().push(partial());
            let Ok(mut daemon) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut c2, mut d2) = (client.try_clone().unwrap(), daemon.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut d2);
                let _ = d2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut left = budget;
                let mut buf = vec![0u8; 64 << 10];
                while left > 0 {
                    let n = match daemon.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(left as usize),
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    left -= n as u64;
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = daemon.shutdown(Shutdown::Both);
            });
        }
    });
    (port, seen)
}

/// Issue 31, 7: a job whose every attempt is cut resumes from its partial file each time,
/// then fails for good; the partial file goes with its failure result (backups get a new
/// name every hour, so no later pull would come back for it).
#[test]
fn a_job_that_fails_for_good_leaves_no_partial_file() {
    let Some(env) = env() else { return };
    const SIZE: u64 = 32 << 20;
    env.file("big60.rdb", SIZE, 1);
    let upstream: std::net::SocketAddr =
        format!("127.0.0.1:{}", env.daemon.port()).parse().unwrap();
    let root = env.root.path().to_path_buf();
    let partial = move || {
        walk(&root)
            .iter()
            .any(|p| p.ends_with(".ubackup-partial/big60.rdb"))
    };
    let (port, seen) = cutting_relay(upstream, 4 << 20, partial.clone());
    env.push(
        "uuzuback_f",
        &env.job("big60.rdb", SIZE, 1).replace(
            &format!("\"port\":{}", env.daemon.port()),
            &format!("\"port\":{port}"),
        ),
    );
    let (mut node, _) = one_worker(&env, "n.toml");
    let results = env.wait_results(1, Duration::from_secs(60), &mut node);
    assert!(!results[0].succeeded(), "{results:#?}");
    assert!(
        results[0].log.contains("rsync failure"),
        "{}",
        results[0].log
    );
    let seen = seen.lock().unwrap().clone();
    // Two attempts (`retry = 2`); the second found the data the first kept for resume.
    assert_eq!(seen, [false, true], "{}", node.log());
    assert!(!partial(), "the failed job's partial file stayed");
    let left: Vec<String> = walk(env.root.path())
        .into_iter()
        .filter(|p| p.contains("big60"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "temp or partial files left");
    assert!(
        node.log()
            .contains("removed the partial file of a failed job"),
        "{}",
        node.log()
    );
    assert_idle_and_unpaused(&env);
    node.stop();
}

/// A stored backup whose name has a temp file's shape (`.NAME.XXXXXX`, six hex digits) is
/// not a dead pull's temp: the start-up sweep, which removes every dead temp, keeps it
/// because the manifest records it.
#[test]
fn a_stored_backup_named_like_a_temp_file_survives_a_restart() {
    let Some(env) = env() else { return };
    let name = ".mysql-bin.000042";
    env.file(name, 20_000, 1);
    env.push("uuzuback_f", &env.legacy_job(name, 20_000, 6379));
    let (mut node, cfg) = one_worker(&env, "n.toml");
    let results = env.wait_results(1, Duration::from_secs(30), &mut node);
    assert!(results[0].succeeded(), "{results:#?}");
    node.stop();
    let mut node = Node::start(&cfg, false);
    // "node started" is logged after the start-up sweep.
    wait_until(Duration::from_secs(10), "the start-up sweep", || {
        node.log().contains("node started")
    });
    node.stop();
    compare_files(&env.src.path().join(name), &env.dest(name)).unwrap();
    assert!(
        !node.log().contains("removed the temp files"),
        "{}",
        node.log()
    );
}
