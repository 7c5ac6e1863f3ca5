//! Catalog benchmark (not a test): ingest rate through the real Redis intake into SQLite and
//! PostgreSQL, the history query of one instance on a large catalog (p50/p99), one alert
//! evaluation over 20,000 registered instances, the alert pages' queries over the alerts that
//! opens (lists and groups), and peak RSS.
//!
//! ```sh
//! ROWS=1000000 cargo run --release -p ubackup-indexer --example catalog_bench
//! ```
//! `ROWS` (default 1,000,000) results are spread over `INSTANCES` (default 20,000) instances.
//! Needs redis-server and PostgreSQL (started here on loopback ports, as the tests do).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use ubackup_indexer::alerts::{Engine, Notification};
use ubackup_indexer::catalog::{
    prelude::*, AlertChanges, AlertFilter, AlertGroupBy, AlertState, AppliedAlerts, Instance,
    InstanceKey, NewAlert, Page, SqlCatalog,
};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::config::{AlertsConfig, ChannelConfig, ChannelKind, DeliveryConfig, GroupBy};
use ubackup_indexer::delivery::Delivery;
use ubackup_indexer::ingest::redis::RedisIntake;
use ubackup_indexer::ingest::Pipeline;
use ubackup_indexer::metrics::Metrics;

const T0: i64 = 1_700_000_000_000;

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn result(i: usize, instances: usize) -> String {
    let inst = i % instances;
    let r = ubackup_messages::PullResult {
        server_id: Some(format!("S{}", inst / 4)),
        back_type: Some("mysql".into()),
        instance: Some(3306 + (inst % 4) as i64),
        game_id: Some((inst % 50) as i64),
        interval: Some(3600),
        game_server_ip: Some("10.1.2.3".into()),
        back_server_ip: "10.0.0.5".into(),
        file_path: Some("/data/backup/mysql/10.1.2/3".into()),
        filename: Some(format!("full-{i}.xb")),
        create_time: T0 + (i / instances) as i64 * 3_600_000,
        rsync_time: T0 + (i / instances) as i64 * 3_600_000 + 60_000,
        size: Some(1 << 30),
        last_all_filename: "None".into(),
        succeed: 1,
        log: "ok".into(),
        job_id: format!("job-{i}"),
        node_id: "node-1".into(),
        checksum: Some("xxh128:00112233445566778899aabbccddeeff".into()),
        checksum_algorithm: Some("xxh128".into()),
        duration_ms: 1000 + (i % 1000) as u64,
        ..Default::default()
    };
    serde_json::to_string(&r).unwrap()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

async fn bench(
    name: &str,
    catalog: Arc<SqlCatalog>,
    redis_url: &str,
    rows: usize,
    instances: usize,
) {
    catalog.migrate().await.unwrap();
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Fill the results list (a backlog), then drain it.
    let mut i = 0;
    while i < rows {
        let n = 10_000.min(rows - i);
        let batch: Vec<String> = (i..i + n).map(|k| result(k, instances)).collect();
        let _: i64 = redis::cmd("LPUSH")
            .arg("message")
            .arg(batch)
            .query_async(&mut conn)
            .await
            .unwrap();
        i += n;
    }
    let dyn_c: Arc<dyn Catalog> = catalog.clone();
    let metrics = Arc::new(Metrics::default());
    let mut p = Pipeline::new(
        dyn_c.clone(),
        Arc::new(ManualClock::at(T0)),
        metrics.clone(),
        1000,
        65_536,
        false,
    );
    let mut intake = RedisIntake::connect(redis_url, "message", "proc", "dead", "bench")
        .await
        .unwrap();
    let start = Instant::now();
    let mut done = 0;
    while done < rows {
        done += p.step(&mut intake).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: ingest {rows} results from Redis in {secs:.1} s = {:.0} results/s (batch 1000)",
        rows as f64 / secs
    );
    // History of one instance, newest 50, random instances.
    let mut lat = Vec::new();
    for q in 0..2000 {
        let inst = (q * 7919) % instances;
        let key = InstanceKey::new(&format!("S{}", inst / 4), "mysql", 3306 + (inst % 4) as i64);
        let t = Instant::now();
        let h = dyn_c
            .history(
                &key,
                Page {
                    offset: 0,
                    limit: 50,
                },
            )
            .await
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!h.is_empty());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: history (50 newest) on {rows} rows: p50 {:.2} ms, p99 {:.2} ms",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    // Alert evaluation over the registry.
    let reg: Vec<Instance> = (0..instances)
        .map(|inst| Instance {
            key: InstanceKey::new(&format!("S{}", inst / 4), "mysql", 3306 + (inst % 4) as i64),
            name: String::new(),
            business_id: Some((inst % 50) as i64),
            interval_secs: Some(3600),
            enabled: true,
            created_ms: 0,
        })
        .collect();
    dyn_c.upsert_instances(&reg, T0).await.unwrap();
    let cfg = AlertsConfig {
        evaluate_secs: 60,
        grace_secs: 3000,
        queue_backlog_secs: 3600,
        node_timeout_secs: 120,
        agent_timeout_secs: 900,
        illegal_window_secs: 86_400,
    };
    let clock = ManualClock::at(T0 + 3 * 86_400_000);
    // Two channels (never sent to here): the evaluation routes every opened alert into the
    // outbox in its own transaction, as `run` does.
    let channel = |name: &str, kind| ChannelConfig {
        name: name.into(),
        kind,
        url: "http://127.0.0.1:9/".into(),
        secret: String::new(),
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
    };
    let delivery = Delivery::new(
        &DeliveryConfig {
            dashboard_url: String::new(),
            tick_ms: 1000,
            channels: vec![
                channel("hook", ChannelKind::Webhook),
                channel("slack", ChannelKind::Slack),
            ],
            routes: Vec::new(),
        },
        catalog.clone(),
        Arc::new(clock.clone()),
        metrics.clone(),
    )
    .unwrap();
    let router = Arc::new(delivery);
    let engine = Engine::new(
        dyn_c.clone(),
        Arc::new(clock),
        router.clone(),
        metrics,
        cfg,
        false,
        3600,
    );
    let t = Instant::now();
    let first = engine.evaluate(&[]).await.unwrap();
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    engine.evaluate(&[]).await.unwrap();
    let steady_ms = t.elapsed().as_secs_f64() * 1000.0;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_events")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    println!(
        "{name}: alert evaluation over {instances} instances: {first_ms:.0} ms opening {} alerts \
         (and queuing {events} outbox events, one transaction), {steady_ms:.0} ms steady",
        first.opened.len()
    );
    // The write path alone, on the same machine and moment: the old one statement per alert
    // (`open_alert`, no outbox event) against one transaction with multi-row inserts that also
    // queues the routed events (`apply_alerts`).
    let now = T0 + 3 * 86_400_000;
    let fresh = |tag: &str| -> Vec<NewAlert> {
        (0..instances)
            .map(|i| NewAlert {
                rule: "bench".into(),
                subject: format!("{tag}-{i}"),
                game_id: Some((i % 50) as i64),
                message: "no successful backup within 3600 s + 3000 s grace".into(),
                ..NewAlert::default()
            })
            .collect()
    };
    let single = fresh("single");
    let t = Instant::now();
    for a in &single {
        dyn_c.open_alert(a, now).await.unwrap();
    }
    let single_ms = t.elapsed().as_secs_f64() * 1000.0;
    let batch = AlertChanges {
        open: fresh("batch"),
        ..AlertChanges::default()
    };
    let route = |applied: &AppliedAlerts| {
        let ns: Vec<Notification> = applied
            .opened
            .iter()
            .map(|a| Notification {
                event: "open",
                alert: a.clone(),
            })
            .collect();
        router.events(&ns)
    };
    let t = Instant::now();
    let applied = dyn_c.apply_alerts(&batch, now, &route).await.unwrap();
    let batch_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{name}: opening {instances} alerts: {single_ms:.0} ms one statement each (no outbox \
         event), {batch_ms:.0} ms in one transaction with multi-row inserts ({} opened, their \
         {} outbox events queued in it)",
        applied.opened.len(),
        2 * applied.opened.len()
    );
    alert_pages(name, &*dyn_c, now).await;
}

/// The alert pages' catalog work (what `web::alerts::view` asks for one page) with the open
/// alerts of the runs above, p50 and p99 of 20 runs each.
async fn alert_pages(name: &str, c: &dyn Catalog, now: i64) {
    let open = AlertFilter {
        state: Some(AlertState::Open),
        now_ms: now,
        limit: Some(100),
        first_businesses: vec![7],
        ..AlertFilter::default()
    };
    let total = c.count_alerts(&open).await.unwrap();
    let host = AlertFilter {
        rule: Some("bench".into()),
        business: Some(7),
        ..open.clone()
    };
    let cases: [(&str, &AlertFilter, Option<AlertGroupBy>); 5] = [
        ("list, open, focus first", &open, None),
        ("list, rule + business", &host, None),
        ("grouped by rule", &open, Some(AlertGroupBy::Rule)),
        ("grouped by business", &open, Some(AlertGroupBy::Business)),
        ("grouped by host", &open, Some(AlertGroupBy::Host)),
    ];
    for (what, f, by) in cases {
        let mut lat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            match by {
                None => {
                    c.count_alerts(f).await.unwrap();
                    c.alerts(f).await.unwrap();
                }
                Some(by) => {
                    c.alert_groups(f, by, 100, 0).await.unwrap();
                }
            }
            c.open_alert_rules().await.unwrap();
            c.businesses().await.unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}: alerts page, {what}, {total} open alerts: p50 {:.1} ms, p99 {:.1} ms",
            lat[lat.len() / 2],
            lat[lat.len() - 1]
        );
    }
}

#[tokio::main]
async fn main() {
    let rows = env("ROWS", 1_000_000);
    let instances = env("INSTANCES", 20_000);
    let redis = ubackup_testkit::RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqlCatalog::connect(
            &format!("sqlite://{}", dir.path().join("bench.db").display()),
            4,
        )
        .await
        .unwrap(),
    );
    bench("sqlite", sqlite, &redis.url(), rows, instances).await;
    if std::env::var("SKIP_PG").is_err() {
        let pg = ubackup_testkit::Postgres::start().expect("PostgreSQL");
        let url = pg.create_database("bench").unwrap();
        let c = Arc::new(SqlCatalog::connect(&url, 8).await.unwrap());
        bench("postgres", c, &redis.url(), rows, instances).await;
    }
    println!(
        "peak RSS (this process: indexer pipeline + catalog client + generator): {} MiB",
        peak_rss_kib() / 1024
    );
}
