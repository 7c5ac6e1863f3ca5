//! The node's job path in this process (`node::run_on`), against a real `redis-server` and a
//! real `rsync --daemon` (3.5.0) on loopback ports picked at run time:
//!
//! - a job whose work panics still ends in one failure result (an internal error), leaves
//!   the in-flight hash, is counted, and the busy-worker count falls back to 0;
//! - a property test: arbitrary job messages (both formats, arbitrary values in every field,
//!   the seed job with mutated fields or bytes, and the fuzz corpus's job messages) each leave
//!   exactly one result, nothing
//!   stays in flight, no worker stays busy, and no job's claimed size pauses the node.
//!
//! Every wait has a deadline; the node, redis-server and the daemon stop at the end.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use redis::Commands as _;
use tokio::sync::{mpsc, watch};
use ubackup_messages::{parse_result, Job, PullResult};
use ubackup_puller::config::NodeConfig;
use ubackup_puller::node::{self, Control, Stats};
use ubackup_puller::queue::RedisQueue;
use ubackup_testkit::{
    require_rsync, write_random_file, DaemonBuilder, Module, RedisServer, RsyncDaemon, RsyncVersion,
};

/// A file name no generated message contains: the test hook panics on it.
const PANIC_NAME: &str = "panic-in-the-pull-0c4f9e.rdb";

fn panic_on_magic_name(job: &Job) {
    if job.filename.as_deref() == Some(PANIC_NAME) {
        panic!("a deliberate panic for the test");
    }
}

/// A node running in this process on its own redis-server, daemon and root.
struct Harness {
    redis: RedisServer,
    daemon: RsyncDaemon,
    _src: tempfile::TempDir,
    _root: tempfile::TempDir,
    /// A loopback port nothing listens on.
    closed_port: u16,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    _reload: mpsc::Sender<NodeConfig>,
    node: Option<tokio::task::JoinHandle<anyhow::Result<Arc<Stats>>>>,
    rt: tokio::runtime::Runtime,
    conn: redis::Connection,
}

impl Harness {
    fn start(workers: usize) -> Option<Harness> {
        require_rsync(RsyncVersion::V3_5_0)?;
        let redis = RedisServer::start()?;
        let src = tempfile::tempdir().unwrap();
        write_random_file(&src.path().join("a.rdb"), 5_000, 1).unwrap();
        write_random_file(&src.path().join(PANIC_NAME), 100, 2).unwrap();
        let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
            .module(Module::new("backup", src.path()))
            .start()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            r#"[node]
id = "n1"
ip = "127.0.0.9"
root = "{root}"
workers = {workers}
shutdown_grace_secs = 5

[queue]
redis = "{redis}"
lists = ["level1", "uuzuback_f"]
heartbeat_secs = 1
lease_secs = 30
idle_poll_ms = 50

[results]
list = "message"

[pull]
retry = 1
connect_timeout_secs = 2
stall_timeout_secs = 2
deadline_secs = 20
rsync_port = {port}

[log]
level = "info"
"#,
            root = root.path().display(),
            redis = redis.url(),
            port = daemon.port(),
        );
        let cfg = NodeConfig::parse(&text).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let (reload, reload_rx) = mpsc::channel(1);
        let stats = Arc::new(Stats::default());
        let node = {
            let stats = stats.clone();
            rt.spawn(async move {
                let queue = RedisQueue::connect(&cfg.queue, &cfg.results, &cfg.node_id).await?;
                let control = Control {
                    stop: stop_rx,
                    reload: reload_rx,
                    until_idle: false,
                };
                node::run_on(cfg, queue, control, stats).await
            })
        };
        let conn = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        Some(Harness {
            redis,
            daemon,
            _src: src,
            _root: root,
            closed_port,
            stats,
            stop,
            _reload: reload,
            node: Some(node),
            rt,
            conn,
        })
    }

    fn push(&mut self, list: &str, msg: &[u8]) {
        let _: i64 = self.conn.lpush(list, msg).unwrap();
    }

    fn result_count(&mut self) -> usize {
        self.conn.llen("message").unwrap()
    }

    /// The newest `n` results, oldest first.
    fn last_results(&mut self, n: usize) -> Vec<PullResult> {
        let raw: Vec<Vec<u8>> = self.conn.lrange("message", 0, n as isize - 1).unwrap();
        raw.iter()
            .rev()
            .map(|r| parse_result(r).expect("a result"))
            .collect()
    }

    fn in_flight(&mut self) -> usize {
        self.conn.hlen("ubackup:inflight:n1").unwrap()
    }

    /// Waits until `want` results in all, nothing in flight, no worker busy; then checks that
    /// no further result comes.
    fn settle(&mut self, want: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.result_count();
            let held = self.in_flight();
            let busy = self.stats.busy.load(Ordering::Relaxed);
            if n > want {
                return Err(format!("{n} results, {want} expected"));
            }
            if n == want && held == 0 && busy == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {limit:?}: {n} of {want} results, {held} in flight, {busy} busy, \
                     waiting: {:?}",
                    self.conn.llen::<_, i64>("level1")
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.node.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await });
        }
    }
}

fn legacy_job(name: &str, size: u64) -> serde_json::Value {
    serde_json::json!({
        "filename": name, "last_all_filename": null, "last_all_time": 0, "size": size,
        "log": "ok", "create_time": 1_700_000_000i64, "success": true, "server_id": "S1",
        "game_id": 7, "op_id": 0, "game_server_ip": "127.0.0.1", "back_type": "redis",
        "instance": 6379, "rsync_model": "backup", "interval": 3600
    })
}

#[test]
fn a_panicking_pull_ends_in_one_internal_error_result_and_frees_its_worker() {
    ubackup_puller::node::testing::set_before_pull(Some(panic_on_magic_name));
    let Some(mut h) = Harness::start(1) else {
        return;
    };
    h.push("level1", legacy_job(PANIC_NAME, 100).to_string().as_bytes());
    h.push("level1", legacy_job("a.rdb", 5_000).to_string().as_bytes());
    h.settle(2, Duration::from_secs(30)).unwrap();
    let r = h.last_results(2);
    assert_eq!(r[0].filename.as_deref(), Some(PANIC_NAME));
    assert!(!r[0].succeeded());
    assert!(
        r[0].log.starts_with("internal error:")
            && r[0].log.contains(&r[0].job_id)
            && r[0].log.contains("while pulling")
            && r[0].log.contains("job_path.rs:")
            && r[0].log.contains("a deliberate panic"),
        "{}",
        r[0].log
    );
    assert!(r[0].job_id.starts_with("u-"), "{}", r[0].job_id);
    assert!(r[1].succeeded(), "{r:#?}");
    assert_eq!(h.stats.internal_errors.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.busy.load(Ordering::Relaxed), 0);
    assert_eq!(h.in_flight(), 0);
    // The heartbeat says the same.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy: Option<String> = h.conn.hget("ubackup:node:n1", "busy_workers").unwrap();
        let errors: Option<String> = h.conn.hget("ubackup:node:n1", "internal_errors").unwrap();
        if busy.as_deref() == Some("0") && errors.as_deref() == Some("1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeat: busy {busy:?}, errors {errors:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A JSON value of any shape (strings, numbers at the edges, nested values).
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(5_000),
            Just(1_000_000_000_000_000),
            Just(u64::MAX),
            Just(i64::MAX as u64),
        ]
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[a-z.]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const LEGACY_FIELDS: &[&str] = &[
    "filename",
    "last_all_filename",
    "last_all_time",
    "size",
    "log",
    "create_time",
    "success",
    "server_id",
    "game_id",
    "op_id",
    "game_server_ip",
    "back_type",
    "instance",
    "rsync_model",
    "interval",
];

const V1_FIELDS: &[&str] = &[
    "v",
    "job_id",
    "server_id",
    "game_id",
    "host",
    "port",
    "module",
    "filename",
    "size",
    "back_type",
    "instance",
    "interval",
    "create_time_ms",
    "success",
    "log",
    "checksum",
    "user",
];

/// The seed jobs: a real file in both formats, each field a fair value.
fn seed(v1: bool, port: u16) -> serde_json::Value {
    if v1 {
        serde_json::json!({
            "v": 1, "job_id": "job-a", "server_id": "S1", "game_id": 7,
            "host": "127.0.0.1", "port": port, "module": "backup",
            "filename": "a.rdb", "size": 5_000, "back_type": "mysql", "instance": 3306,
            "interval": 3600, "create_time_ms": 1_700_000_000_000i64, "success": true,
            "log": "ok"
        })
    } else {
        legacy_job("a.rdb", 5_000)
    }
}

/// One generated message: a seed, some fields replaced by arbitrary values or removed, and
/// sometimes bytes edited; or one of the fuzz corpus's job messages (`fuzz/seeds/job_*`),
/// sometimes edited.
#[derive(Debug, Clone)]
struct Msg {
    v1: bool,
    fields: Vec<(usize, Option<serde_json::Value>)>,
    edits: Vec<ubackup_testkit::bounded::Edit>,
    corpus: Option<usize>,
}

fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut v = ubackup_testkit::bounded::seeds("job_legacy");
        v.extend(ubackup_testkit::bounded::seeds("job_v1"));
        v
    })
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        prop::collection::vec((0usize..32, prop::option::weighted(0.85, any_json())), 0..6),
        prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec(ubackup_testkit::bounded::edit(), 1..4),
        ],
        prop::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(|(v1, fields, edits, corpus)| Msg {
            v1,
            fields,
            edits,
            corpus,
        })
}

impl Msg {
    fn render(&self, port: u16) -> Vec<u8> {
        if let Some(i) = self.corpus {
            let c = corpus();
            return ubackup_testkit::bounded::apply(c[i % c.len()].clone(), &self.edits);
        }
        let mut v = seed(self.v1, port);
        let names = if self.v1 { V1_FIELDS } else { LEGACY_FIELDS };
        if let Some(o) = v.as_object_mut() {
            for (i, val) in &self.fields {
                let name = names[i % names.len()];
                match val {
                    Some(val) => o.insert(name.to_string(), val.clone()),
                    None => o.remove(name),
                };
            }
        }
        let text = serde_json::to_vec(&v).unwrap();
        ubackup_testkit::bounded::apply(text, &self.edits)
    }
}

/// Only loopback, and only the daemon's port or a closed one: the node must not reach out.
fn stays_local(raw: &[u8], daemon: u16, closed: u16) -> bool {
    match Job::parse(raw) {
        Ok(j) => {
            j.host.is_loopback()
                && j.port.is_none_or(|p| p == daemon || p == closed)
                && j.filename.as_deref() != Some(PANIC_NAME)
        }
        Err(_) => true,
    }
}

#[test]
fn every_job_message_leaves_exactly_one_result_and_frees_its_worker() {
    let Some(mut h) = Harness::start(2) else {
        return;
    };
    let cases = 128;
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let daemon = h.daemon.port();
    let closed = h.closed_port;
    let started = Instant::now();
    let strategy = (
        prop::collection::vec(msg(), 1..4),
        prop::bool::ANY,
        prop::collection::vec(prop_oneof![Just(daemon), Just(closed)], 3),
    );
    let h = std::cell::RefCell::new(&mut h);
    let outcome = runner.run(&strategy, |(msgs, low, ports)| {
        let mut h = h.borrow_mut();
        let raws: Vec<Vec<u8>> = msgs
            .iter()
            .zip(ports.iter().cycle())
            .map(|(m, &p)| m.render(p))
            .collect();
        for raw in &raws {
            prop_assume!(stays_local(raw, daemon, closed));
        }
        let before = h.result_count();
        for raw in &raws {
            h.push(if low { "uuzuback_f" } else { "level1" }, raw);
        }
        h.settle(before + raws.len(), Duration::from_secs(30))
            .map_err(TestCaseError::fail)?;
        let paused = h.stats.paused.lock().unwrap().clone();
        prop_assert!(paused.is_none(), "paused: {paused:?}");
        prop_assert_eq!(h.stats.deferred_now.load(Ordering::Relaxed), 0);
        Ok(())
    });
    let h = h.into_inner();
    eprintln!(
        "{cases} cases ({} results) in {:?}",
        h.result_count(),
        started.elapsed()
    );
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Nothing was lost on the way: no job waits, none dead-lettered without its result.
    let waiting: i64 = h.conn.llen("level1").unwrap();
    let low: i64 = h.conn.llen("uuzuback_f").unwrap();
    assert_eq!((waiting, low), (0, 0));
    assert_eq!(h.stats.internal_errors.load(Ordering::Relaxed), 0);
    let _ = &h.redis;
}
