//! Result ingestion puts every text field through the same validators as the forms, the API
//! and registry import (`validate`): a real redis-server gets hostile results pushed onto
//! `message`, a running indexer (`app::run`, SQLite, auto-register on) consumes them. Each
//! refused result is dead-lettered with its field and rule and counted under
//! `ubackup_indexer_dead_letters_total{reason="illegal_field"}`; none reaches the catalog or
//! the registry; a node's own "illegal message" report is kept without its bad field.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redis::Commands as _;
use serde_json::{json, Value};
use ubackup_indexer::catalog::prelude::*;
use ubackup_testkit::RedisServer;

const T0: i64 = 1_700_000_000_000;

fn result(server_id: &str, back_type: &str, filename: &str) -> Value {
    json!({
        "interval": 3600, "server_id": server_id, "game_id": 7, "op_id": 0,
        "game_server_ip": "10.1.2.3", "instance": 3306, "back_server_ip": "10.0.0.5",
        "file_path": "/data/mysql/10.1.2/3", "filename": filename, "create_time": T0,
        "rsync_time": T0 + 1000, "size": 1024, "last_all_filename": "None",
        "last_all_time": 0, "succeed": 1, "log": "ok", "type": back_type
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_result_fields_are_refused_typed_and_counted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[indexer]\nid = \"fields\"\n[catalog]\nurl = \"sqlite://{}\"\n[results]\nredis = \"{}\"\n\
         dead_letter = \"dead\"\n[registry]\nauto_register = true\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\nsecure_cookies = false\n",
        dir.path().join("c.db").display(),
        redis.url()
    );
    let cfg = ubackup_indexer::config::Config::parse(&text).unwrap();
    let catalog = ubackup_indexer::app::open_catalog(&cfg).await.unwrap();
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut game = result("S2", "mysql", "g.xb");
    game["game_id"] = json!("9".repeat(5000));
    let illegal_report = json!({
        "back_server_ip": "10.0.0.5", "node_id": "node-1", "rsync_time": T0, "succeed": 0,
        "create_time": 0, "server_id": "\t=cmd|' /C calc'!A0", "type": "mysql", "instance": 1,
        "log": "illegal message: server_id: not printable"
    });
    let msgs: Vec<(Value, Option<&str>)> = vec![
        (result("S1", "mysql", "good.xb"), None),
        (
            result(&"S".repeat(5000), "mysql", "a.xb"),
            Some("server_id"),
        ),
        (
            result("\t=cmd|' /C calc'!A0", "mysql", "b.xb"),
            Some("server_id"),
        ),
        (
            result("S3", "=HYPERLINK(\"http://x\")", "c.xb"),
            Some("type"),
        ),
        (result("S4", "mysql", "d\r\n.xb"), Some("filename")),
        (game, None),
        (illegal_report, None),
    ];
    for (m, _) in &msgs {
        let _: i64 = c.lpush("message", m.to_string()).unwrap();
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ubackup_indexer::app::run(cfg, rx));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = c.llen("message").unwrap();
        let dead: i64 = c.llen("dead").unwrap();
        if waiting == 0 && dead >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not consumed: {waiting} waiting, {dead} dead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dead letters: oldest at the right; each names its field, none echoes the value as the
    // reason.
    let mut dead: Vec<String> = c.lrange("dead", 0, -1).unwrap();
    dead.reverse();
    assert_eq!(dead.len(), 5, "{dead:?}");
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let fields: Vec<&str> = msgs.iter().filter_map(|(_, f)| *f).collect();
    for (reason, field) in reasons.iter().zip(&fields) {
        assert!(
            reason.starts_with(&format!("illegal field: {field}: ")),
            "{reason}"
        );
        assert!(!reason.contains("calc") && !reason.contains("HYPERLINK"));
    }
    assert!(
        reasons[4].starts_with("invalid result: game_id"),
        "{}",
        reasons[4]
    );
    // The catalog: the good result and the node's report (its server id emptied), nothing
    // else; the registry: only S1.
    let states = catalog.instance_states().await.unwrap();
    let keys: Vec<String> = states.iter().map(|s| s.key.subject()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"S1:mysql:3306".to_string()), "{keys:?}");
    assert!(keys.contains(&":mysql:1".to_string()), "{keys:?}");
    let report = states.iter().find(|s| s.key.instance == 1).unwrap();
    assert!(report.last_illegal_ms > 0);
    let registered: Vec<String> = catalog
        .instances()
        .await
        .unwrap()
        .iter()
        .map(|i| i.key.subject())
        .collect();
    assert_eq!(registered, ["S1:mysql:3306"]);
    // Counted, by kind.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ubackup_indexer_dead_letters_total{reason=\"illegal_field\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("ubackup_indexer_dead_letters_total{reason=\"fields\"} 1"));
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
