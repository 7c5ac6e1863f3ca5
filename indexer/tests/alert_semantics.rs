//! What the alerts mean (issue 26, item 4) and inhibition (item 3).
//!
//! - Illegal messages through the real processes: a real redis-server, `ubackup-puller run`
//!   refusing the messages, `ubackup-indexer run` cataloguing its results and evaluating. One
//!   illegal message opens one `illegal` alert (not also `script_error` and `dead_letter`);
//!   the one without identity shows its raw excerpt, queue and node, in `/api/alert` too;
//!   `dead_letter` counts only the jobs that exhausted their requeues.
//! - A new instance awaits its first backup until its period plus grace has passed.
//! - 20,000 instances whose node goes down: one notification for the cause, the overdue
//!   alerts held under it and all listed; when the node comes back they are released.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands as _;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::alerts::{instance_states, Engine, InstanceHealth};
use ubackup_indexer::catalog::{prelude::*, AlertFilter, Instance, InstanceKey};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::config::{
    AlertsConfig, ChannelConfig, ChannelKind, ClusterConfig, DeliveryConfig, GroupBy,
};
use ubackup_indexer::delivery::Delivery;
use ubackup_indexer::metrics::Metrics;
use ubackup_testkit::{interop_required, Postgres, RedisServer};

const INDEXER: &str = env!("CARGO_BIN_EXE_ubackup-indexer");

fn cfg() -> AlertsConfig {
    AlertsConfig {
        evaluate_secs: 60,
        grace_secs: 3000,
        queue_backlog_secs: 3600,
        node_timeout_secs: 120,
        agent_timeout_secs: 900,
        illegal_window_secs: 86_400,
    }
}

/// `ubackup-puller`, built next to this package's binary by `cargo test --workspace`.
fn puller_bin() -> Option<PathBuf> {
    let p = Path::new(INDEXER).with_file_name("ubackup-puller");
    if p.is_file() {
        Some(p)
    } else if interop_required() {
        panic!(
            "{} is missing: build the workspace (cargo test --workspace --release)",
            p.display()
        )
    } else {
        eprintln!("SKIP: {} not built", p.display());
        None
    }
}

/// A child process, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(bin: &Path, args: &[&str], log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET on loopback; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // A chunked body: join the chunks.
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(tail.get(..n)?);
            rest = tail.get(n + 2..)?;
        }
        return Some(out);
    }
    Some(body.to_string())
}

/// Two illegal messages through a real node and a real indexer: one JSON job that names its
/// instance (a success without a file), one that is not JSON at all.
#[test]
fn one_illegal_message_opens_one_illegal_alert_that_shows_what_it_has() {
    let Some(puller) = puller_bin() else { return };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let db = work.path().join("catalog.db");
    let catalog_url = format!("sqlite://{}", db.display());
    let port = free_port();
    std::fs::write(
        work.path().join("puller.toml"),
        format!(
            "[node]\nid = \"node-1\"\nip = \"127.0.0.9\"\nroot = \"{}\"\nworkers = 1\nshutdown_grace_secs = 2\n\
             [queue]\nredis = \"{}\"\nlists = [\"uuzuback\"]\nheartbeat_secs = 1\nlease_secs = 5\nidle_poll_ms = 100\n\
             [results]\nlist = \"message\"\n[pull]\nretry = 1\nconnect_timeout_secs = 2\nstall_timeout_secs = 5\nrsync_port = 9\n",
            root.path().display(),
            redis.url(),
        ),
    )
    .unwrap();
    std::fs::write(
        work.path().join("indexer.toml"),
        format!(
            "[indexer]\nid = \"ix1\"\n[catalog]\nurl = \"{catalog_url}\"\nretention_days = 0\n\
             [results]\nredis = \"{r}\"\nbatch = 4\n[registry]\nauto_register = true\n\
             [alerts]\nevaluate_secs = 1\n[log]\nlevel = \"info\"\n\
             [[clusters]]\nname = \"c1\"\nredis = \"{r}\"\nlists = [\"uuzuback\"]\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\nanonymous_legacy_reads = true\nsecure_cookies = false\n",
            r = redis.url()
        ),
    )
    .unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // UBackup's message for a success, without its file: the node refuses it as illegal,
    // knowing the instance.
    let named = serde_json::json!({
        "filename": null, "last_all_filename": null, "last_all_time": 0,
        "size": 10, "log": "ok", "create_time": 1_700_000_000i64,
        "success": true, "server_id": "S9", "game_id": 7, "op_id": 0,
        "game_server_ip": "127.0.0.1", "back_type": "mysql", "instance": 3306,
        "rsync_model": "backup", "interval": 3600
    });
    let _: i64 = conn.lpush("uuzuback", named.to_string()).unwrap();
    let _: i64 = conn
        .lpush("uuzuback", "backup done: S9 mysql 3306 \u{7ed3}\u{675f}")
        .unwrap();
    let node = Proc::start(
        &puller,
        &[
            "run",
            "--config",
            work.path().join("puller.toml").to_str().unwrap(),
        ],
        work.path().join("node.log"),
    );
    let ix = Proc::start(
        Path::new(INDEXER),
        &[
            "run",
            "--config",
            work.path().join("indexer.toml").to_str().unwrap(),
        ],
        work.path().join("ix.log"),
    );
    // Both refused (two results, two dead letters) and both alerts served.
    let deadline = Instant::now() + Duration::from_secs(60);
    let legacy: Vec<serde_json::Value> = loop {
        let dead: i64 = conn.llen("ubackup:dead").unwrap();
        let got = http_get(port, "/api/alert")
            .and_then(|b| serde_json::from_str::<Vec<serde_json::Value>>(&b).ok())
            .unwrap_or_default();
        if dead == 2 && got.len() >= 2 {
            // One more evaluation after both results, so nothing is still on its way.
            std::thread::sleep(Duration::from_secs(3));
            let got = http_get(port, "/api/alert").unwrap();
            break serde_json::from_str(&got).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "dead {dead}, /api/alert {got:?}\nindexer:\n{}\nnode:\n{}",
            ix.log(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let open = rt.block_on(async {
        let c = ubackup_indexer::catalog::open(&catalog_url, 1)
            .await
            .unwrap();
        c.open_alerts().await.unwrap()
    });
    let rules: Vec<(&str, &str)> = open
        .iter()
        .map(|a| (a.rule.as_str(), a.subject.as_str()))
        .collect();
    // One alert per illegal message: no script_error (an illegal message is not a failed
    // backup), no dead_letter (nothing exhausted its requeues).
    assert_eq!(
        open.len(),
        2,
        "{rules:?}\nindexer:\n{}\nnode:\n{}",
        ix.log(),
        node.log()
    );
    assert!(open.iter().all(|a| a.rule == "illegal"), "{rules:?}");
    let s9 = open.iter().find(|a| a.subject == "S9:mysql:3306").unwrap();
    assert!(s9.message.contains("illegal"), "{}", s9.message);
    let anon = open.iter().find(|a| a.subject == "(no identity)").unwrap();
    assert_eq!(anon.server_id, None);
    for part in [
        "queue uuzuback",
        "node node-1",
        "raw: backup done: S9 mysql 3306 结束",
    ] {
        assert!(anon.message.contains(part), "{part}: {}", anon.message);
    }
    // `/api/alert`: no empty row.
    assert_eq!(legacy.len(), 2, "{legacy:?}");
    let row = legacy
        .iter()
        .find(|v| v["server_id"] == "(no identity)")
        .unwrap_or_else(|| panic!("{legacy:?}"));
    assert_eq!(row["alert_type"], "illegal");
    assert_eq!(row["queue"], "uuzuback");
    assert_eq!(row["node_id"], "node-1");
    assert!(row["raw"]
        .as_str()
        .unwrap()
        .starts_with("backup done: S9 mysql 3306"));
    assert!(row["log"].as_str().unwrap().contains("queue uuzuback"));
    assert!(legacy.iter().any(|v| v["server_id"] == "S9"));

    // A job that exhausted its requeues lands in the dead list too (as the node writes it):
    // dead_letter opens for that one, and says the list also holds the two illegal ones.
    let entry = serde_json::json!({
        "reason": "requeued 4 times (limit 3); last: node node-2 died holding it",
        "message": named.to_string(), "list": "uuzuback", "node_id": "node-2",
        "at_ms": 1_700_000_000_000i64, "requeues": 4, "history": [],
    });
    let _: i64 = conn.lpush("ubackup:dead", entry.to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let open = rt.block_on(async {
            let c = ubackup_indexer::catalog::open(&catalog_url, 1)
                .await
                .unwrap();
            c.open_alerts().await.unwrap()
        });
        if let Some(a) = open.into_iter().find(|a| a.rule == "dead_letter") {
            break a;
        }
        assert!(Instant::now() < deadline, "no dead_letter\n{}", ix.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(dead.subject, "c1/dead");
    assert!(
        dead.message
            .starts_with("1 job exhausted its requeues; the list also holds 2 illegal messages"),
        "{}",
        dead.message
    );
    drop(ix);
    drop(node);
}

fn reg(i: usize, created_ms: i64) -> Instance {
    Instance {
        key: InstanceKey::new(&format!("S{i:05}"), "mysql", 1),
        name: format!("db-{i}"),
        business_id: Some(1 + (i % 4) as i64),
        interval_secs: Some(3600),
        enabled: true,
        created_ms,
    }
}

/// A new instance is "awaiting first backup" (not overdue) until its period plus grace has
/// passed since its registration; then overdue. One that has backed up is "ok".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_awaits_its_first_backup_until_period_and_grace_have_passed() {
    let pg = Postgres::start();
    for db in both(&pg, "awaiting").await {
        let c = db.dyn_catalog();
        // Registered at T0 + 10 h (a batch-add); one of them backed up before.
        let t_reg = T0 + 10 * HOUR;
        let rows: Vec<Instance> = (0..3).map(|i| reg(i, t_reg)).collect();
        c.upsert_instances(&rows, t_reg).await.unwrap();
        c.ingest(&items(&[full("S00002", 1, "f", T0)]), T0)
            .await
            .unwrap();
        let clock = ManualClock::at(t_reg + 60_000);
        let engine = Engine::new(
            c.clone(),
            Arc::new(clock.clone()),
            Arc::new(ubackup_indexer::alerts::NoNotify),
            Arc::new(Metrics::default()),
            cfg(),
            false,
            3600,
        );
        let e = engine.evaluate(&[]).await.unwrap();
        assert!(e.opened.is_empty(), "{}: {:?}", db.name, e.opened);
        let h = instance_states(c.as_ref()).await.unwrap();
        assert_eq!(h.of(&rows[0]), InstanceHealth::AwaitingFirstBackup);
        // S00002's only success predates its registration: it is judged from registration.
        assert_eq!(h.of(&rows[2]), InstanceHealth::Ok);
        // Just before period + grace: still waiting.
        clock.set(t_reg + (3600 + 3000) * 1000);
        assert!(engine.evaluate(&[]).await.unwrap().opened.is_empty());
        clock.advance(1);
        let e = engine.evaluate(&[]).await.unwrap();
        let subjects: BTreeSet<&str> = e.opened.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            subjects,
            BTreeSet::from(["S00000:mysql:1", "S00001:mysql:1", "S00002:mysql:1"]),
            "{}",
            db.name
        );
        let h = instance_states(c.as_ref()).await.unwrap();
        assert_eq!(h.of(&rows[0]), InstanceHealth::Overdue);
        // The instance list's page lookup (only its own keys) agrees with the full one.
        let mut later: Vec<Instance> = (3..250).map(|i| reg(i, t_reg)).collect();
        c.upsert_instances(&later, t_reg).await.unwrap();
        later.extend(rows.iter().cloned());
        let keys: Vec<_> = later.iter().map(|i| i.key.clone()).collect();
        let (full, page) = (
            instance_states(c.as_ref()).await.unwrap(),
            ubackup_indexer::alerts::instance_states_of(c.as_ref(), &keys)
                .await
                .unwrap(),
        );
        for i in &later {
            assert_eq!(page.of(i), full.of(i), "{}: {:?}", db.name, i.key);
        }
        assert_eq!(page.of(&rows[0]), InstanceHealth::Overdue);
        assert_eq!(page.of(&rows[2]), InstanceHealth::Overdue);
        assert_eq!(page.of(&later[0]), InstanceHealth::AwaitingFirstBackup);
        assert_eq!(
            InstanceHealth::AwaitingFirstBackup.name(),
            "awaiting_first_backup"
        );
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    body: String,
}

/// A real HTTP receiver on loopback answering 200.
async fn receiver() -> (u16, Arc<Mutex<Vec<Got>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                loop {
                    let n = s.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len = head
                        .to_lowercase()
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < i + 4 + len {
                        continue;
                    }
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
                    g.lock().unwrap().push(Got { path, body });
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (port, got)
}

fn channel(name: &str, kind: ChannelKind, url: String) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        kind,
        url,
        secret: "s3cret".into(),
        ca_file: None,
        timeout_secs: 5,
        max_attempts: 3,
        backoff_ms: 10,
        max_response_bytes: 64 * 1024,
        group_by: vec![GroupBy::Rule, GroupBy::Business],
        group_wait_secs: 30,
        group_interval_secs: 300,
        rate_limit: 10,
        rate_window_secs: 300,
        max_alerts: 100,
        mail: None,
    }
}

/// 20,000 instances last backed up through node-7; node-7 goes down and three hours pass.
/// The cause (node_down) is the one notification on each channel, naming how many overdue
/// alerts it holds; the 20,000 overdue alerts are open, held under it and all listed. When
/// the node is back, they are released: notified, grouped, as any overdue alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_holds_the_overdue_alerts_it_explains() {
    const N: usize = 20_000;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (port, got) = receiver().await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let db = sqlite().await;
    let c = db.dyn_catalog();
    let rows: Vec<Instance> = (0..N).map(|i| reg(i, T0 - DAY)).collect();
    c.upsert_instances(&rows, T0 - DAY).await.unwrap();
    let results: Vec<_> = (0..N)
        .map(|i| {
            let mut r = full(&format!("S{i:05}"), 1, &format!("f{i}"), T0);
            r.node_id = "node-7".into();
            r.game_id = Some(1 + (i % 4) as i64);
            r
        })
        .collect();
    for chunk in results.chunks(1000) {
        c.ingest(&items(chunk), T0).await.unwrap();
    }
    let clock = ManualClock::at(T0 + 3 * HOUR);
    let metrics = Arc::new(Metrics::default());
    let d = Arc::new(
        Delivery::new(
            &DeliveryConfig {
                dashboard_url: "https://dash.example".into(),
                tick_ms: 100,
                channels: vec![
                    channel("hook", ChannelKind::Webhook, url("/hook")),
                    channel("slack", ChannelKind::Slack, url("/slack")),
                ],
                routes: Vec::new(),
            },
            db.catalog.clone(),
            Arc::new(clock.clone()),
            metrics.clone(),
        )
        .unwrap(),
    );
    let engine = Engine::new(
        c.clone(),
        Arc::new(clock.clone()),
        d.clone(),
        metrics.clone(),
        cfg(),
        false,
        3600,
    );
    // node-7 must be up and has no heartbeat in the cluster's Redis: node_down.
    let clusters = Clusters::new(vec![ClusterConfig {
        name: "c1".into(),
        redis: redis.url(),
        key_prefix: "ubackup".into(),
        lists: vec!["level1".into()],
        nodes: vec!["node-7".into()],
    }]);
    // Five minutes in 10 s steps: evaluate every 60 s, tick every step.
    for step in 0..=30 {
        if step % 6 == 0 {
            engine.evaluate(&clusters.status().await).await.unwrap();
        }
        d.tick().await.unwrap();
        clock.advance(10_000);
    }
    let per = |got: &[Got]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in got {
            m.entry(g.path.clone()).or_default().push(g.body.clone());
        }
        m
    };
    let first = per(&got.lock().unwrap());
    for path in ["/hook", "/slack"] {
        let msgs = &first[path];
        assert_eq!(msgs.len(), 1, "{path}: only the cause: {msgs:?}");
        assert!(msgs[0].contains("node_down"), "{}", msgs[0]);
        assert!(
            msgs[0].contains(&format!("holds {N} overdue alerts")),
            "{}",
            msgs[0]
        );
    }
    let cause = "node_down:c1/node-7";
    let held = AlertFilter {
        open: true,
        rule: Some("overdue".into()),
        limit: Some(100_000),
        held_by: Some(cause.into()),
        ..AlertFilter::default()
    };
    assert_eq!(c.count_alerts(&held).await.unwrap(), N as i64);
    let listed: BTreeSet<String> = c
        .alerts(&held)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.subject)
        .collect();
    assert_eq!(listed.len(), N, "every instance is listed under the cause");
    assert!(listed.contains("S00000:mysql:1") && listed.contains("S19999:mysql:1"));

    // node-7 is back (the instances have not backed up yet): node_down resolves, and the
    // overdue alerts, released, are notified as one message per (rule, business) group.
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for step in 0..=30 {
        let now = (T0 + 3 * HOUR + 310_000 + step * 10_000).to_string();
        let _: () = r
            .hset_multiple(
                "ubackup:node:node-7",
                &[("node_id", "node-7"), ("updated_ms", now.as_str())],
            )
            .unwrap();
        if step % 6 == 0 {
            engine.evaluate(&clusters.status().await).await.unwrap();
        }
        d.tick().await.unwrap();
        clock.advance(10_000);
    }
    assert_eq!(c.count_alerts(&held).await.unwrap(), 0);
    let open_overdue = AlertFilter {
        open: true,
        rule: Some("overdue".into()),
        limit: Some(100_000),
        ..AlertFilter::default()
    };
    assert_eq!(c.count_alerts(&open_overdue).await.unwrap(), N as i64);
    let after = per(&got.lock().unwrap());
    for path in ["/hook", "/slack"] {
        let new: Vec<&String> = after[path].iter().skip(first[path].len()).collect();
        let opened: Vec<&&String> = new
            .iter()
            .filter(|b| b.contains("overdue") && b.contains("5000 alerts opened"))
            .collect();
        assert_eq!(opened.len(), 4, "{path}: four business groups: {new:?}");
        assert!(
            new.iter()
                .any(|b| b.contains("node_down") && b.contains("resolved")),
            "{path}: {new:?}"
        );
        assert!(new.len() <= 6, "{path}: {}", new.len());
    }
}
