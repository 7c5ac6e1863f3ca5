//! Alert storm benchmark (not a test): 20,000 registered instances go overdue while a node is
//! down. Measures, for one evaluation plus the delivery ticks after it, the time from the
//! cause (the evaluation that sees it starts) to the first message a real HTTP receiver on
//! loopback gets, to the last message, and the process's CPU (user + system) and RSS
//! meanwhile. The indexer's code runs in this process (the engine, the routing, the outbox,
//! the reqwest channels), so its CPU and RSS are this process's.
//!
//! ```sh
//! cargo run --release -p ubackup-indexer --example alert_storm
//! INSTANCES=20000 ENGINE=postgres HELD=1 GROUP_WAIT=0 cargo run --release -p ubackup-indexer --example alert_storm
//! ```
//! `HELD=1`: the instances last backed up through the node that goes down, so their overdue
//! alerts are held under its `node_down` (inhibition) and one message goes out per channel;
//! otherwise (default) the 20,000 overdue alerts are all notified, grouped by rule and
//! business. `GROUP_WAIT` (s, default 0) is the channels' group wait: the figure then is
//! processing time, not the configured wait (default 30 s in production, added to it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::alerts::Engine;
use ubackup_indexer::catalog::{prelude::*, Ingest, Instance, InstanceKey, Record, SqlCatalog};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::config::{
    AlertsConfig, ChannelConfig, ChannelKind, ClusterConfig, DeliveryConfig, GroupBy,
};
use ubackup_indexer::delivery::Delivery;
use ubackup_indexer::metrics::Metrics;

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// This process's CPU time (user + system), from /proc/self/stat (clock ticks of 10 ms).
fn cpu_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// What the receiver answers: 200 with the body the chat robots (DingTalk) send on success.
const ACCEPTED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\nconnection: close\r\n\r\n{\"errcode\":0,\"errmsg\":\"ok\"}";

/// A loopback HTTP receiver answering 200; counts requests.
async fn receiver() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = n2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 16384];
                loop {
                    let k = s.read(&mut tmp).await.unwrap_or(0);
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        n.fetch_add(1, Ordering::SeqCst);
                        let _ = s.write_all(ACCEPTED).await;
                        return;
                    }
                }
            });
        }
    });
    (port, n)
}

fn result(i: usize) -> Record {
    Record {
        job_id: format!("job-{i}"),
        server_id: format!("S{i:05}"),
        back_type: "mysql".into(),
        instance: 1,
        game_id: Some(1 + (i % 4) as i64),
        interval_secs: Some(3600),
        node_id: "node-7".into(),
        back_server_ip: "10.0.0.7".into(),
        file_path: Some("/data/backup/mysql".into()),
        filename: Some(format!("full-{i}.xb")),
        create_time: T0,
        rsync_time: T0 + 60_000,
        size: Some(1 << 20),
        succeed: true,
        log: "ok".into(),
        ..Record::default()
    }
}

fn channel(name: &str, kind: ChannelKind, url: String, wait: u64) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        kind,
        url,
        secret: "a-webhook-secret-0123".into(),
        ca_file: None,
        timeout_secs: 10,
        max_attempts: 5,
        backoff_ms: 100,
        max_response_bytes: 64 * 1024,
        group_by: vec![GroupBy::Rule, GroupBy::Business],
        group_wait_secs: wait,
        group_interval_secs: 300,
        rate_limit: 10,
        rate_window_secs: 300,
        max_alerts: 100,
        mail: None,
    }
}

#[tokio::main]
async fn main() {
    let instances = env("INSTANCES", 20_000);
    let held = env("HELD", 0) == 1;
    let wait = env("GROUP_WAIT", 0) as u64;
    let redis = ubackup_testkit::RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let pg;
    let url = if std::env::var("ENGINE").as_deref() == Ok("postgres") {
        pg = ubackup_testkit::Postgres::start().expect("PostgreSQL");
        pg.create_database("storm").unwrap()
    } else {
        format!("sqlite://{}", dir.path().join("storm.db").display())
    };
    let catalog = Arc::new(SqlCatalog::connect(&url, 4).await.unwrap());
    catalog.migrate().await.unwrap();
    let c: Arc<dyn Catalog> = catalog.clone();
    let reg: Vec<Instance> = (0..instances)
        .map(|i| Instance {
            key: InstanceKey::new(&format!("S{i:05}"), "mysql", 1),
            name: format!("db-{i}"),
            business_id: Some(1 + (i % 4) as i64),
            interval_secs: Some(3600),
            enabled: true,
            created_ms: T0 - HOUR,
        })
        .collect();
    c.upsert_instances(&reg, T0 - HOUR).await.unwrap();
    if held {
        let items: Vec<Ingest> = (0..instances)
            .map(|i| Ingest::Result(Box::new(result(i))))
            .collect();
        for chunk in items.chunks(1000) {
            c.ingest(chunk, T0).await.unwrap();
        }
    }
    let (port, got) = receiver().await;
    let clock = ManualClock::at(T0 + 3 * HOUR);
    let metrics = Arc::new(Metrics::default());
    let delivery = Arc::new(
        Delivery::new(
            &DeliveryConfig {
                dashboard_url: "https://ubackup.example.com".into(),
                tick_ms: 100,
                channels: vec![
                    channel(
                        "hook",
                        ChannelKind::Webhook,
                        format!("http://127.0.0.1:{port}/hook"),
                        wait,
                    ),
                    channel(
                        "slack",
                        ChannelKind::Slack,
                        format!("http://127.0.0.1:{port}/slack"),
                        wait,
                    ),
                    channel(
                        "ding",
                        ChannelKind::Dingtalk,
                        format!("http://127.0.0.1:{port}/ding"),
                        wait,
                    ),
                ],
                routes: Vec::new(),
            },
            catalog.clone(),
            Arc::new(clock.clone()),
            metrics.clone(),
        )
        .unwrap(),
    );
    let engine = Engine::new(
        c.clone(),
        Arc::new(clock.clone()),
        delivery.clone(),
        metrics.clone(),
        AlertsConfig {
            evaluate_secs: 60,
            grace_secs: 3000,
            queue_backlog_secs: 3600,
            node_timeout_secs: 120,
            agent_timeout_secs: 900,
            illegal_window_secs: 86_400,
        },
        false,
        3600,
    );
    // node-7 must be up and has no heartbeat: the cause.
    let clusters = Clusters::new(vec![ClusterConfig {
        name: "c1".into(),
        redis: redis.url(),
        key_prefix: "ubackup".into(),
        lists: vec!["level1".into()],
        nodes: vec!["node-7".into()],
    }]);
    let rss_before = status_kib("VmRSS:");
    let cpu0 = cpu_ms();
    let start = Instant::now();
    let e = engine.evaluate(&clusters.status().await).await.unwrap();
    let eval = start.elapsed();
    let cpu_eval = cpu_ms() - cpu0;
    let mut first = None;
    let mut peak_rss = status_kib("VmRSS:");
    // Tick as `run` does (every 100 ms), moving the clock by the same, until the outbox is
    // empty; at most 10 simulated minutes.
    for _ in 0..6000 {
        delivery.tick().await.unwrap();
        peak_rss = peak_rss.max(status_kib("VmRSS:"));
        if first.is_none() && got.load(Ordering::SeqCst) > 0 {
            first = Some(start.elapsed());
        }
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_events")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
        if pending == 0 && first.is_some() && catalog_undelivered(&catalog).await == 0 {
            break;
        }
        clock.advance(100);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let all = start.elapsed();
    let cpu = cpu_ms() - cpu0;
    println!(
        "{} {instances} instances ({}): evaluation {:.0} ms ({cpu_eval} ms CPU) opening {} alerts; \
         first message {:.0} ms after the cause (+ group wait {wait} s simulated); all {} messages \
         after {:.0} ms; CPU {cpu} ms; RSS {rss_before} KiB before, peak {peak_rss} KiB during \
         (process high-water mark {} KiB)",
        catalog.engine().name(),
        if held {
            "held under node_down"
        } else {
            "all notified"
        },
        eval.as_secs_f64() * 1000.0,
        e.opened.len(),
        first.map(|f| f.as_secs_f64() * 1000.0).unwrap_or(f64::NAN),
        got.load(Ordering::SeqCst),
        all.as_secs_f64() * 1000.0,
        status_kib("VmHWM:"),
    );
}

async fn catalog_undelivered(c: &SqlCatalog) -> i64 {
    use ubackup_indexer::catalog::outbox::Outbox as _;
    c.undelivered().await.unwrap()
}
