//! Reliable consumption against a real redis-server, into both engines: malformed results
//! dead-lettered with their reason (and counted) without stopping the loop, node events
//! marking rows, and the processing list replayed after a crash without double rows.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use redis::Commands as _;
use support::*;
use ubackup_indexer::catalog::{prelude::*, InstanceKey, Page};
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::ingest::redis::RedisIntake;
use ubackup_indexer::ingest::Pipeline;
use ubackup_indexer::metrics::Metrics;
use ubackup_testkit::{Postgres, RedisServer};

/// A result as UBackup's own node publishes it (compat §A.3): no job_id, no node_id.
fn legacy_result(name: &str, t: i64) -> String {
    serde_json::json!({
        "interval": 3600, "server_id": "S1", "game_id": 7, "op_id": 0,
        "game_server_ip": "10.1.2.3", "instance": 3306, "back_server_ip": "10.0.0.5",
        "file_path": "/data/mysql/10.1.2/3", "filename": name, "create_time": t,
        "rsync_time": t + 1000, "size": 1024, "last_all_filename": "None",
        "last_all_time": 0, "succeed": 1, "log": "ok", "type": "mysql"
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_results_are_dead_lettered_with_their_reason() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let pg = Postgres::start();
    for db in both(&pg, "dead").await {
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        let expired = serde_json::json!({
            "event": "expired", "node_id": "10.0.0.5", "back_server_ip": "10.0.0.5",
            "server_id": "S1", "type": "mysql", "instance": 3306,
            "file_path": "/data/mysql/10.1.2/3", "filename": "good1", "at_ms": T0 + 5000,
            "reason": "older than 7 days"
        })
        .to_string();
        let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000));
        let msgs = [
            legacy_result("good1", T0),
            "not json".to_string(),
            "[1]".to_string(),
            big,
            r#"{"log": "ok", "succeed": 1}"#.to_string(),
            r#"{"event": "exploded"}"#.to_string(),
            legacy_result("good2", T0 + 1000),
            expired,
        ];
        for m in &msgs {
            let _: i64 = c.lpush("message", m).unwrap();
        }
        let metrics = Arc::new(Metrics::default());
        let mut p = Pipeline::new(
            db.dyn_catalog(),
            Arc::new(ManualClock::at(T0)),
            metrics.clone(),
            3,
            65_536,
            false,
        );
        let mut intake = RedisIntake::connect(&redis.url(), "message", "proc", "dead", "t1")
            .await
            .unwrap();
        let mut handled = 0;
        loop {
            let n = p.step(&mut intake).await.unwrap();
            if n == 0 {
                break;
            }
            handled += n;
        }
        assert_eq!(handled, msgs.len());
        let dead: Vec<String> = c.lrange("dead", 0, -1).unwrap();
        assert_eq!(dead.len(), 5, "{}: {dead:#?}", db.name);
        let entries: Vec<serde_json::Value> = dead
            .iter()
            .rev()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let reasons: Vec<&str> = entries
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        assert!(reasons[0].starts_with("not a JSON object"), "{reasons:?}");
        assert!(reasons[1].starts_with("not a JSON object"), "{reasons:?}");
        assert!(
            reasons[2].contains("over the 65536-byte limit"),
            "{reasons:?}"
        );
        assert!(
            reasons[3].contains("server_id: missing")
                && reasons[3].contains("back_server_ip: missing"),
            "{reasons:?}"
        );
        assert!(reasons[4].starts_with("invalid node event"), "{reasons:?}");
        assert_eq!(entries[0]["message"], "not json");
        assert_eq!(metrics.dead_letters(), 5);
        assert!(metrics
            .render()
            .contains("ubackup_indexer_dead_letters_total{reason=\"not_json\"} 2"));
        let proc_len: i64 = c.llen("proc").unwrap();
        let left: i64 = c.llen("message").unwrap();
        assert_eq!((proc_len, left), (0, 0));
        let rows = db
            .catalog
            .history(
                &InstanceKey::new("S1", "mysql", 3306),
                Page {
                    offset: 0,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{}", db.name);
        assert_eq!(rows[1].record.filename.as_deref(), Some("good1"));
        assert_eq!(
            rows[1].expired_at,
            Some(T0 + 5000),
            "{}: the event marked the row",
            db.name
        );
        assert!(rows[0].expired_at.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processing_list_is_replayed_after_a_crash_without_double_rows() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let pg = Postgres::start();
    for db in both(&pg, "replay").await {
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        // A crashed indexer took 10 results (oldest at the right of its processing list) and
        // had committed the first 4 before it died, without trimming.
        let msgs: Vec<String> = (0..10)
            .map(|i| legacy_result(&format!("r{i}"), T0 + i * 1000))
            .collect();
        for m in &msgs {
            let _: i64 = c.lpush("proc", m).unwrap();
        }
        let metrics = Arc::new(Metrics::default());
        let mut p = Pipeline::new(
            db.dyn_catalog(),
            Arc::new(ManualClock::at(T0)),
            metrics.clone(),
            3,
            65_536,
            false,
        );
        let first: Vec<_> = msgs[..4]
            .iter()
            .map(|m| ubackup_indexer::ingest::parse_message(m.as_bytes(), 65_536).unwrap())
            .collect();
        db.catalog.ingest(&first, T0).await.unwrap();
        // New results keep arriving meanwhile.
        let _: i64 = c
            .lpush("message", legacy_result("new", T0 + 99_000))
            .unwrap();
        let mut intake = RedisIntake::connect(&redis.url(), "message", "proc", "dead", "t1")
            .await
            .unwrap();
        assert_eq!(p.replay(&mut intake).await.unwrap(), 10);
        assert_eq!(p.step(&mut intake).await.unwrap(), 1);
        let proc_len: i64 = c.llen("proc").unwrap();
        assert_eq!(proc_len, 0);
        let rows = db
            .catalog
            .history(
                &InstanceKey::new("S1", "mysql", 3306),
                Page {
                    offset: 0,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 11, "{}", db.name);
        assert_eq!(
            metrics
                .duplicates
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
        assert_eq!(
            metrics.indexed.load(std::sync::atomic::Ordering::Relaxed),
            7
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sends_to_es_only_the_pull_results_it_reads() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = sqlite().await;
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Ours: a result from a new node (job_id, node_id and checksum added to UBackup's keys).
    let ours = serde_json::json!({
        "job_id": "j-1", "node_id": "node-1", "interval": 3600, "server_id": "S1",
        "game_id": 7, "op_id": 0, "game_server_ip": "10.1.2.3", "instance": 3306,
        "back_server_ip": "10.0.0.5", "file_path": "/data/mysql/10.1.2/3",
        "filename": "ours.xb", "create_time": T0 + 2000, "rsync_time": T0 + 3000,
        "size": 10, "last_all_filename": "None", "last_all_time": 0, "succeed": 1,
        "log": "ok", "type": "mysql", "checksum": "xxh128:00"
    })
    .to_string();
    let expired = serde_json::json!({
        "event": "expired", "node_id": "10.0.0.5", "back_server_ip": "10.0.0.5",
        "server_id": "S1", "type": "mysql", "instance": 3306,
        "file_path": "/data/mysql/10.1.2/3", "filename": "old.xb", "at_ms": T0 + 5000,
        "reason": "older than 7 days"
    })
    .to_string();
    let illegal = serde_json::json!({
        "back_server_ip": "10.0.0.5", "rsync_time": T0 + 4000, "succeed": 0,
        "log": format!("{}not a job", ubackup_messages::ILLEGAL_PREFIX)
    })
    .to_string();
    let no_game = serde_json::json!({
        "server_id": "S2", "type": "redis", "instance": 6379, "back_server_ip": "10.0.0.5",
        "filename": "dump.rdb", "create_time": T0, "rsync_time": T0 + 1000, "succeed": 1,
        "log": "ok"
    })
    .to_string();
    let old = legacy_result("old.xb", T0);
    let msgs = [
        old.clone(),
        "not json".to_string(),
        illegal,
        ours.clone(),
        expired,
        no_game,
    ];
    for m in &msgs {
        let _: i64 = c.lpush("ubackup_results", m).unwrap();
    }
    let mut p = Pipeline::new(
        db.dyn_catalog(),
        Arc::new(ManualClock::at(T0)),
        Arc::new(Metrics::default()),
        4,
        65_536,
        false,
    );
    let mut intake = RedisIntake::connect(&redis.url(), "ubackup_results", "proc", "dead", "t1")
        .await
        .unwrap()
        .forwarding_to(Some("message".into()));
    while p.step(&mut intake).await.unwrap() > 0 {}
    // to_es.py BLPOPs from the left: the oldest is at the right.
    let mut forwarded: Vec<String> = c.lrange("message", 0, -1).unwrap();
    forwarded.reverse();
    assert_eq!(forwarded, [old, ours], "byte for byte, oldest first");
    let dead: i64 = c.llen("dead").unwrap();
    let proc_len: i64 = c.llen("proc").unwrap();
    assert_eq!((dead, proc_len), (1, 0));
    // What is not forwarded is still cataloged: both results of S1, the expiry marking one.
    let rows = db
        .catalog
        .history(
            &InstanceKey::new("S1", "mysql", 3306),
            Page {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r.record.filename.as_deref() == Some("old.xb") && r.expired_at.is_some()));
}
