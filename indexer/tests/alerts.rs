//! Every alert rule opening and resolving on a controlled clock, on both engines, with the
//! cluster state in a real redis-server and notifications delivered to a real HTTP receiver on
//! loopback that fails the first attempts (retries with backoff, HMAC-SHA256 signatures).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use redis::Commands as _;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::alerts::{Engine, Notify, RULES};
use ubackup_indexer::catalog::{Ingest, Instance, InstanceKey};
use ubackup_indexer::clock::{Clock as _, ManualClock};
use ubackup_indexer::cluster::Clusters;
use ubackup_indexer::config::{
    AlertsConfig, ChannelConfig, ChannelKind, ClusterConfig, DeliveryConfig, GroupBy,
};
use ubackup_indexer::delivery::Delivery;
use ubackup_indexer::metrics::Metrics;
use ubackup_messages::{EventKind, NodeEvent};
use ubackup_testkit::{Postgres, RedisServer};

const SECRET: &str = "a-webhook-secret-0123";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A real HTTP receiver on loopback that answers 500 to the first `fail_first` requests.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Got>>>, Arc<Mutex<usize>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(0usize));
    let (g, a) = (got.clone(), attempts.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let (head_end, len) = loop {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&tmp[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let n = {
                let mut a = a.lock().unwrap();
                *a += 1;
                *a
            };
            if n <= fail_first {
                let _ = s
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                continue;
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                })
                .collect();
            g.lock().unwrap().push(Got {
                headers,
                body: buf[head_end..head_end + len].to_vec(),
            });
            let _ = s
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got, attempts)
}

/// A generic webhook channel with today's behaviour: one message per alert, no wait.
fn webhook(
    db: &Db,
    url: String,
    max_attempts: u32,
    backoff_ms: u64,
    metrics: Arc<Metrics>,
) -> (Arc<Delivery>, tokio::sync::watch::Sender<bool>) {
    let cfg = DeliveryConfig {
        dashboard_url: String::new(),
        tick_ms: 20,
        channels: vec![ChannelConfig {
            name: "hook".into(),
            kind: ChannelKind::Webhook,
            url,
            secret: SECRET.into(),
            ca_file: None,
            timeout_secs: 5,
            max_attempts,
            backoff_ms,
            max_response_bytes: 4096,
            group_by: vec![GroupBy::Rule, GroupBy::Subject],
            group_wait_secs: 0,
            group_interval_secs: 0,
            rate_limit: 1000,
            rate_window_secs: 60,
            max_alerts: 10,
            mail: None,
        }],
        routes: Vec::new(),
    };
    // Delivery runs on the wall clock (its retries wait real time).
    let d = Arc::new(
        Delivery::new(
            &cfg,
            db.catalog.clone(),
            Arc::new(ubackup_indexer::clock::SystemClock),
            metrics,
        )
        .unwrap(),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(d.clone().run(rx));
    (d, tx)
}

fn header<'a>(g: &'a Got, k: &str) -> &'a str {
    g.headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn reg(server: &str, instance: i64) -> Instance {
    Instance {
        key: InstanceKey::new(server, "mysql", instance),
        name: format!("{server}-db"),
        business_id: Some(7),
        interval_secs: Some(3600),
        enabled: true,
        created_ms: 0,
    }
}

fn set(v: &[(String, String)]) -> BTreeSet<String> {
    v.iter().map(|(r, _)| r.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_opens_and_resolves_and_is_delivered_signed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let pg = Postgres::start();
    for db in both(&pg, "alerts").await {
        let mut r = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut r).unwrap();
        let c = db.dyn_catalog();
        let clock = ManualClock::at(T0);
        let metrics = Arc::new(Metrics::default());
        let (url, got, attempts) = receiver(2).await;
        let (hooks, _stop) = webhook(&db, url, 5, 50, metrics.clone());
        let notify: Arc<dyn Notify> = hooks;
        let cfg = AlertsConfig {
            evaluate_secs: 60,
            grace_secs: 3000,
            queue_backlog_secs: 3600,
            node_timeout_secs: 120,
            agent_timeout_secs: 900,
            illegal_window_secs: 86_400,
        };
        let engine = Engine::new(
            c.clone(),
            Arc::new(clock.clone()),
            notify,
            metrics.clone(),
            cfg,
            false,
            3600,
        );
        let clusters = Clusters::new(vec![ClusterConfig {
            name: "c1".into(),
            redis: redis.url(),
            key_prefix: "ubackup".into(),
            lists: vec!["level1".into(), "uuzuback".into()],
            nodes: vec!["n-expected".into()],
        }]);
        // Registry: S1..S5 (S6 is not registered).
        c.upsert_instances(
            &[reg("S1", 1), reg("S2", 1), reg("S4", 1), reg("S5", 1)],
            T0,
        )
        .await
        .unwrap();
        // Results and events, at T0 + 1 h.
        let t = T0 + HOUR;
        let s1 = full("S1", 1, "s1full", t);
        let s4 = incr("S4", 1, "s4inc", t, "s4-missing-full", T0);
        let mut items = items(&[
            s1.clone(),
            failed("S2", 1, t, "execute backup script error"),
            full("S6", 1, "stray", t),
            s4,
        ]);
        items.push(Ingest::Event(Box::new(NodeEvent {
            event: EventKind::Corrupt,
            node_id: s1.node_id.clone(),
            back_server_ip: s1.back_server_ip.clone(),
            server_id: "S1".into(),
            back_type: "mysql".into(),
            instance: 1,
            file_path: s1.file_path.clone().unwrap(),
            filename: "s1full".into(),
            job_id: None,
            size: None,
            checksum: None,
            at_ms: t + 1000,
            reason: "xxh128 differs".into(),
        })));
        c.ingest(&items, t).await.unwrap();
        // Cluster: node n1 fine, n2 paused, n-expected missing; an old job; a dead letter;
        // agent S1 alive.
        clock.set(T0 + 2 * HOUR);
        let now = clock.now_ms().to_string();
        let _: () = r
            .hset_multiple(
                "ubackup:node:n1",
                &[
                    ("node_id", "n1"),
                    ("updated_ms", now.as_str()),
                    ("paused", "0"),
                ],
            )
            .unwrap();
        let _: () = r
            .hset_multiple(
                "ubackup:node:n2",
                &[
                    ("node_id", "n2"),
                    ("updated_ms", now.as_str()),
                    ("paused", "1"),
                    ("paused_reason", "free 3 GiB < reserve 50 GiB"),
                ],
            )
            .unwrap();
        let old_job =
            serde_json::json!({"server_id": "S1", "create_time": (T0 / 1000)}).to_string();
        let _: i64 = r.lpush("uuzuback", old_job).unwrap();
        let _: i64 = r.lpush("ubackup:dead", "{}").unwrap();
        let _: () = r
            .hset("ubackup:agent:S1", "updated_ms", now.as_str())
            .unwrap();

        let e = engine.evaluate(&clusters.status().await).await.unwrap();
        let mut opened = e.opened.len();
        let want: BTreeSet<String> = RULES
            .iter()
            .filter(|r| **r != "agent_down")
            .map(|r| r.to_string())
            .collect();
        assert_eq!(set(&e.opened), want, "{}: {:?}", db.name, e.opened);
        assert!(e.opened.contains(&("illegal".into(), "S6:mysql:1".into())));
        assert!(e.opened.contains(&("overdue".into(), "S5:mysql:1".into())));
        // S2 never succeeded since its registration 2 h ago (> 3600 + 3000 s): a stream of
        // failures is overdue too.
        assert!(e.opened.contains(&("overdue".into(), "S2:mysql:1".into())));
        assert!(!e.opened.contains(&("overdue".into(), "S1:mysql:1".into())));
        assert!(e
            .opened
            .contains(&("node_down".into(), "c1/n-expected".into())));
        assert!(e.opened.contains(&("node_paused".into(), "c1/n2".into())));
        assert!(e
            .opened
            .contains(&("queue_backlog".into(), "c1/uuzuback".into())));
        assert!(e
            .opened
            .contains(&("chain_broken".into(), "S4:mysql:1".into())));
        assert!(e
            .opened
            .contains(&("backup_corrupt".into(), "S1:mysql:1".into())));
        // Evaluating again opens nothing new: one open alert per (rule, subject).
        let again = engine.evaluate(&clusters.status().await).await.unwrap();
        assert!(
            again.opened.is_empty() && again.resolved.is_empty(),
            "{again:?}"
        );

        // The agent's heartbeat lapses.
        let _: () = r.del("ubackup:agent:S1").unwrap();
        clock.advance(901_000);
        let now = clock.now_ms().to_string();
        for n in ["n1", "n2"] {
            let _: () = r
                .hset(format!("ubackup:node:{n}"), "updated_ms", now.as_str())
                .unwrap();
        }
        let e = engine.evaluate(&clusters.status().await).await.unwrap();
        assert_eq!(
            e.opened,
            vec![("agent_down".to_string(), "c1/S1".to_string())],
            "{}",
            db.name
        );
        opened += 1;

        // Ack and silence by a user.
        let open = c.open_alerts().await.unwrap();
        let node_down = open.iter().find(|a| a.rule == "node_down").unwrap();
        assert!(c
            .ack_alert(node_down.id, "ann", clock.now_ms())
            .await
            .unwrap());
        let paused = open.iter().find(|a| a.rule == "node_paused").unwrap();
        assert!(c
            .silence_alert(paused.id, clock.now_ms() + DAY, "ops")
            .await
            .unwrap());
        let acked = c
            .open_alerts()
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.id == node_down.id)
            .unwrap();
        assert_eq!(acked.acked_by.as_deref(), Some("ann"));

        // Everything clears.
        let t2 = clock.now_ms();
        let s1_new = full("S1", 1, "s1full2", t2);
        let s2_ok = full("S2", 1, "s2full", t2);
        let s4_full = full("S4", 1, "s4full", t2);
        let s5_ok = full("S5", 1, "s5full", t2);
        c.ingest(&support::items(&[s1_new, s2_ok, s4_full, s5_ok]), t2)
            .await
            .unwrap();
        c.upsert_instances(&[reg("S6", 1)], t2).await.unwrap();
        let now = t2.to_string();
        let _: () = r
            .hset_multiple(
                "ubackup:node:n-expected",
                &[("node_id", "n-expected"), ("updated_ms", now.as_str())],
            )
            .unwrap();
        let _: () = r.hset("ubackup:node:n2", "paused", "0").unwrap();
        let _: () = r.del("uuzuback").unwrap();
        let _: () = r.del("ubackup:dead").unwrap();
        let _: () = r
            .hset("ubackup:agent:S1", "updated_ms", now.as_str())
            .unwrap();
        let e = engine.evaluate(&clusters.status().await).await.unwrap();
        let all: BTreeSet<String> = RULES.iter().map(|r| r.to_string()).collect();
        assert_eq!(set(&e.resolved), all, "{}: {:?}", db.name, e.resolved);
        assert_eq!(e.resolved.len(), opened);
        assert!(c.open_alerts().await.unwrap().is_empty());
        assert!(metrics
            .render()
            .contains("ubackup_indexer_open_alerts{rule=\"overdue\"} 0"));

        // Deliveries: every open, and every resolve but the silenced node_paused one, after
        // two refused attempts; each signed over its raw body.
        let expect = opened + opened - 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.lock().unwrap().len() < expect {
            assert!(
                Instant::now() < deadline,
                "{}: {} deliveries of {expect}",
                db.name,
                got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), expect, "{}", db.name);
        assert_eq!(
            *attempts.lock().unwrap(),
            expect + 2,
            "two failed attempts were retried"
        );
        let mut opens = BTreeSet::new();
        for g in &got {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(&g.body);
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(header(g, "x-ubackup-signature"), want);
            let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
            assert_eq!(header(g, "x-ubackup-event"), v["event"].as_str().unwrap());
            if v["event"] == "open" {
                opens.insert(v["alert"]["rule"].as_str().unwrap().to_string());
            } else {
                assert!(v["alert"]["resolved_ms"].is_i64());
                assert_ne!(v["alert"]["rule"], "node_paused");
            }
        }
        assert_eq!(opens, all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_2xx_gives_up_after_its_attempts() {
    let (url, got, attempts) = receiver(usize::MAX).await;
    let metrics = Arc::new(Metrics::default());
    let db = sqlite().await;
    let (hooks, _stop) = webhook(&db, url, 3, 10, metrics.clone());
    let alert = ubackup_indexer::catalog::Alert {
        id: 1,
        rule: "overdue".into(),
        subject: "S1:mysql:1".into(),
        server_id: None,
        back_type: None,
        instance: None,
        game_id: None,
        game_server_ip: None,
        message: "m".into(),
        opened_ms: 0,
        updated_ms: 0,
        resolved_ms: None,
        acked_by: None,
        acked_ms: None,
        silenced_until_ms: None,
        held_by: None,
        silenced_by: None,
    };
    hooks
        .notify(ubackup_indexer::alerts::Notification {
            event: "open",
            alert,
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics
        .webhook_failures
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert!(got.lock().unwrap().is_empty());
    // Given up is recorded, not dropped: the message stays in the outbox, marked failed.
    let failed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM alert_outbox WHERE failed_ms IS NOT NULL")
            .fetch_one(db.catalog.pool())
            .await
            .unwrap();
    assert_eq!(failed, 1);
}
