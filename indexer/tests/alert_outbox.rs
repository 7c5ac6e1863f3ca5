//! The alert outbox is durable: the real indexer opens an alert whose webhook answers 503, is
//! killed with SIGKILL with the message undelivered, and after a restart the message is
//! delivered exactly once, under the idempotency key its failed attempts carried.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ubackup_indexer::catalog::outbox::Outbox as _;
use ubackup_indexer::catalog::{
    AlertCatalog as _, Catalog as _, Instance, InstanceKey, RegistryCatalog as _, SqlCatalog,
};
use ubackup_testkit::RedisServer;

const INDEXER: &str = env!("CARGO_BIN_EXE_ubackup-indexer");

/// (status answered, X-Ubackup-Delivery, body) per request.
type Log = Arc<Mutex<Vec<(u16, String, String)>>>;

/// A plain-HTTP receiver on loopback answering 503 while `refuse` is set, else 204.
async fn receiver(refuse: Arc<AtomicBool>) -> (String, Log) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let lg = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (lg, refuse) = (lg.clone(), refuse.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let field = |k: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                            .unwrap_or_default()
                    };
                    let len: usize = field("content-length:").parse().unwrap_or(0);
                    let key = field("x-ubackup-delivery:");
                    while buf.len() < head_end + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    buf.drain(..head_end + len);
                    let status = if refuse.load(Ordering::SeqCst) {
                        503
                    } else {
                        204
                    };
                    lg.lock().unwrap().push((status, key, body));
                    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, log)
}

fn start(cfg: &Path, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    Command::new(INDEXER)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap()
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_message_survives_kill_9_and_is_delivered_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    // One registered instance that never backed up: overdue at the first evaluation.
    {
        let c = SqlCatalog::connect(&url, 2).await.unwrap();
        c.migrate().await.unwrap();
        c.upsert_instances(
            &[Instance {
                key: InstanceKey::new("S1", "mysql", 1),
                name: "db".into(),
                business_id: Some(7),
                interval_secs: Some(60),
                enabled: true,
                created_ms: 0,
            }],
            0,
        )
        .await
        .unwrap();
        c.pool().close().await;
    }
    let refuse = Arc::new(AtomicBool::new(true));
    let (hook, log) = receiver(refuse.clone()).await;
    let cfg = dir.path().join("indexer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[catalog]\nurl = \"{url}\"\nretention_days = 0\n[results]\nredis = \"{}\"\n\
             [alerts]\nevaluate_secs = 1\ngrace_secs = 0\n[delivery]\ntick_ms = 100\n\
             [[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\
             secret = \"a-webhook-secret-0123\"\ngroup_wait_secs = 0\nbackoff_ms = 1000\n\
             [log]\nlevel = \"info\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut ix = start(&cfg, &dir.path().join("ix1.log"));
    wait_for("two refused attempts", 30, || {
        log.lock().unwrap().len() >= 2
    })
    .await;
    // Kill once the second refusal is settled (its lease released), before the third attempt
    // (2 s later): killed while an attempt holds its lease, the message would wait that lease
    // out (2 min) before another indexer may send it, as designed for a crashed sender.
    {
        let c = SqlCatalog::connect(&url, 1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT attempts, lease_ms FROM alert_outbox ORDER BY id LIMIT 1")
                    .fetch_optional(c.pool())
                    .await
                    .unwrap();
            if matches!(row, Some((a, 0)) if a >= 2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the second attempt settled: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.pool().close().await;
    }
    ix.kill().unwrap(); // SIGKILL
    ix.wait().unwrap();
    let refused = log.lock().unwrap().clone();
    let key = refused[0].1.clone();
    assert!(!key.is_empty());
    assert!(
        refused.iter().all(|(s, k, _)| *s == 503 && *k == key),
        "{refused:?}"
    );
    {
        let c = SqlCatalog::connect(&url, 1).await.unwrap();
        assert_eq!(
            c.undelivered().await.unwrap(),
            1,
            "the message waits in the catalog"
        );
        c.pool().close().await;
    }
    refuse.store(false, Ordering::SeqCst);
    let mut ix = start(&cfg, &dir.path().join("ix2.log"));
    wait_for("the delivery", 30, || {
        log.lock().unwrap().iter().any(|(s, _, _)| *s == 204)
    })
    .await;
    // Several more evaluations and ticks: nothing is sent again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = ix.kill();
    let _ = ix.wait();
    let all = log.lock().unwrap().clone();
    let ok: Vec<_> = all.iter().filter(|(s, _, _)| *s == 204).collect();
    assert_eq!(ok.len(), 1, "{all:?}");
    assert_eq!(ok[0].1, key, "the same idempotency key");
    let v: serde_json::Value = serde_json::from_str(&ok[0].2).unwrap();
    assert_eq!(v["event"], "open");
    assert_eq!(v["alert"]["rule"], "overdue");
    assert_eq!(v["alert"]["subject"], "S1:mysql:1");
    let c = SqlCatalog::connect(&url, 1).await.unwrap();
    assert_eq!(c.undelivered().await.unwrap(), 0);
    assert_eq!(c.open_alerts().await.unwrap().len(), 1);
}
