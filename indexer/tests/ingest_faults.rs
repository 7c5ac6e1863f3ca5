//! The results intake under faults, with real processes: a SQLite write lock held past the
//! busy timeout, PostgreSQL stopped and started, redis-server SIGKILLed and restarted with its
//! append-only file (`appendfsync always`), and the indexer itself killed mid-batch. Each
//! drain must end with every distinct result cataloged once, every malformed message
//! dead-lettered once (and every readable result forwarded once, where forwarding is on), and
//! nothing left in flight: a fault costs time, never a result.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use redis::Commands as _;
use support::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ubackup_indexer::catalog::SqlCatalog;
use ubackup_indexer::clock::ManualClock;
use ubackup_indexer::ingest::redis::RedisIntake;
use ubackup_indexer::ingest::Pipeline;
use ubackup_indexer::metrics::Metrics;
use ubackup_testkit::{Postgres, RedisServer};

/// A result as UBackup's own node publishes it (compat §A.3).
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

/// What a drain is fed, in the order it is pushed (oldest first).
struct Feed {
    msgs: Vec<String>,
    /// Distinct results.
    distinct: usize,
    /// The malformed messages (each distinct).
    malformed: Vec<String>,
}

/// `distinct` results, a duplicate of every 50th, and a malformed message after every 40th.
fn feed(distinct: usize) -> Feed {
    let mut msgs = Vec::new();
    let mut malformed = Vec::new();
    for i in 0..distinct {
        let r = legacy_result(&format!("f-{i:06}.xb"), T0 + i as i64 * 1000);
        msgs.push(r.clone());
        if i % 50 == 7 {
            msgs.push(r);
        }
        if i % 40 == 3 {
            let bad = if i % 80 == 3 {
                format!("not json {i}")
            } else {
                format!(r#"{{"log": "ok", "succeed": 1, "n": {i}}}"#)
            };
            msgs.push(bad.clone());
            malformed.push(bad);
        }
    }
    Feed {
        msgs,
        distinct,
        malformed,
    }
}

fn conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// LPUSHes `msgs` (oldest first).
fn push(redis: &RedisServer, list: &str, msgs: &[String]) {
    let mut c = conn(redis);
    for chunk in msgs.chunks(200) {
        let _: i64 = c.lpush(list, chunk).unwrap();
    }
}

/// An indexer's ingest loop running in this process, with its own Redis connection.
struct Indexer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

async fn start_indexer(
    catalog: &Arc<SqlCatalog>,
    redis_url: &str,
    batch: usize,
    forward: Option<&str>,
) -> Indexer {
    let metrics = Arc::new(Metrics::default());
    let mut p = Pipeline::new(
        catalog.clone(),
        Arc::new(ManualClock::at(T0)),
        metrics.clone(),
        batch,
        65_536,
        false,
    );
    let mut intake = RedisIntake::connect(redis_url, "message", "proc", "dead", "t1")
        .await
        .unwrap()
        .forwarding_to(forward.map(str::to_string));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { p.run(&mut intake, rx).await });
    Indexer {
        stop,
        task,
        metrics,
    }
}

impl Indexer {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the ingest loop stops")
            .unwrap();
    }

    /// As a kill -9 would: wherever it is.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// (rows, distinct file names) in the catalog, or None while it cannot be read.
async fn rows(catalog: &SqlCatalog) -> Option<(i64, i64)> {
    sqlx::query_as::<_, (i64, i64)>("SELECT COUNT(*), COUNT(DISTINCT filename) FROM backups")
        .fetch_one(catalog.pool())
        .await
        .ok()
}

fn llen(c: &mut redis::Connection, list: &str) -> i64 {
    c.llen(list).unwrap()
}

/// Waits until the results and processing lists are empty and the catalog holds `want` rows
/// (or `limit` passes), then checks every count exactly.
async fn drained_exactly(
    redis: &RedisServer,
    catalog: &SqlCatalog,
    feed: &Feed,
    limit: Duration,
    what: &str,
) {
    let mut c = conn(redis);
    let deadline = Instant::now() + limit;
    let want = feed.distinct as i64;
    loop {
        let idle = llen(&mut c, "message") == 0 && llen(&mut c, "proc") == 0;
        let got = rows(catalog).await;
        if idle && got.is_some_and(|(n, _)| n >= want) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything still on its way would show now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rows(catalog).await.unwrap();
    let (waiting, in_flight) = (llen(&mut c, "message"), llen(&mut c, "proc"));
    let dead: Vec<String> = c.lrange("dead", 0, -1).unwrap();
    let mut dead: Vec<String> = dead
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["message"].as_str().unwrap().to_string()
        })
        .collect();
    dead.sort();
    let mut malformed = feed.malformed.clone();
    malformed.sort();
    eprintln!(
        "{what}: {} rows ({} distinct) of {want}, {} dead letters of {}, {waiting} waiting, \
         {in_flight} in flight",
        got.0,
        got.1,
        dead.len(),
        malformed.len()
    );
    assert_eq!(
        (waiting, in_flight),
        (0, 0),
        "{what}: nothing waiting or in flight"
    );
    assert_eq!(
        got,
        (want, want),
        "{what}: every distinct result cataloged once"
    );
    assert_eq!(
        dead.len(),
        malformed.len(),
        "{what}: every malformed message dead-lettered once"
    );
    assert_eq!(
        dead, malformed,
        "{what}: the dead letters are the malformed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_write_lock_held_past_the_busy_timeout_costs_time_not_results() {
    use sqlx::Connection as _;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = sqlite().await;
    let feed = feed(2_900);
    let start = Instant::now();
    // A first part drains normally.
    let split = 500;
    push(&redis, "message", &feed.msgs[..split]);
    let ix = start_indexer(&db.catalog, &redis.url(), 100, None).await;
    let mut c = conn(&redis);
    let deadline = Instant::now() + Duration::from_secs(20);
    while llen(&mut c, "message") + llen(&mut c, "proc") > 0 {
        assert!(Instant::now() < deadline, "the first part drains");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another process takes the write lock and keeps it past the 10 s busy timeout while the
    // rest arrives.
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    push(&redis, "message", &feed.msgs[split..]);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        ix.metrics.batch_failures.load(Ordering::Relaxed) >= 1,
        "a catalog transaction failed while the lock was held"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    drop(holder);
    drained_exactly(
        &redis,
        &db.catalog,
        &feed,
        Duration::from_secs(30),
        "sqlite lock",
    )
    .await;
    ix.stop().await;
    eprintln!("took {:.1} s", start.elapsed().as_secs_f64());
}

/// The postmaster behind a testkit [`Postgres`], stopped and started again on the same data
/// directory and port. The testkit's launcher has no restart, so this finds the postmaster (a
/// backend's parent), takes its command line from `postmaster.opts` (which PostgreSQL writes
/// at every start) and its user from the data directory, and runs the restarted one as a child
/// of this test, stopped on drop.
struct PgBounce {
    url: String,
    data: PathBuf,
    argv: Vec<String>,
    /// (uid, gid) of the data directory, when that is not us.
    run_as: Option<(u32, u32)>,
    log: tempfile::TempDir,
    running: Running,
}

enum Running {
    /// The testkit's postmaster (its child; the testkit reaps it).
    Original(u32),
    Ours(Child),
    Stopped,
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl PgBounce {
    async fn find(url: &str) -> PgBounce {
        use sqlx::Connection as _;
        use std::os::unix::fs::MetadataExt as _;
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let data: String = sqlx::query_scalar("SHOW data_directory")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        let data = PathBuf::from(data);
        // The postmaster's pid is the first line of `postmaster.pid` (the backend's
        // /proc entry is gone once the session above has closed, so not that).
        let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let postmaster: u32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
        let opts = std::fs::read_to_string(data.join("postmaster.opts")).unwrap();
        // `/path/to/postgres "-D" "/data" "-c" "port=…" …`
        let (bin, rest) = opts.trim_end().split_once(' ').unwrap();
        let mut argv = vec![bin.to_string()];
        argv.extend(rest.split('"').skip(1).step_by(2).map(str::to_string));
        let meta = std::fs::metadata(&data).unwrap();
        let me = std::fs::metadata("/proc/self").unwrap();
        let run_as = (meta.uid() != me.uid()).then(|| (meta.uid(), meta.gid()));
        PgBounce {
            url: url.into(),
            data,
            argv,
            run_as,
            log: tempfile::tempdir().unwrap(),
            running: Running::Original(postmaster),
        }
    }

    /// Fast shutdown (SIGINT: open transactions are rolled back, sessions end), and waits
    /// until the postmaster is gone.
    fn stop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Original(pid) => signal(pid, "INT"),
            Running::Ours(mut child) => {
                signal(child.id(), "INT");
                let _ = child.wait();
            }
            Running::Stopped => return,
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.data.join("postmaster.pid").exists() {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again and waits until it takes connections.
    async fn start(&mut self) {
        use sqlx::Connection as _;
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .args(["--clear-groups", "--", &self.argv[0]]);
                c
            }
            None => Command::new(&self.argv[0]),
        };
        let log = std::fs::File::create(self.log.path().join("postgres.log")).unwrap();
        let child = cmd
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.running = Running::Ours(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = sqlx::PgConnection::connect(&self.url).await {
                let _ = c.close().await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not come back: {}",
                std::fs::read_to_string(self.log.path().join("postgres.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgBounce {
    fn drop(&mut self) {
        if let Running::Ours(child) = &mut self.running {
            // PostgreSQL's immediate shutdown: it reaps its backends before it exits.
            signal(child.id(), "QUIT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_drain_costs_time_not_results() {
    use sqlx::Connection as _;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Some(pg) = Postgres::start() else {
        return;
    };
    let db = postgres(&pg, "faults").await;
    let mut bounce = PgBounce::find(&db.url).await;
    let feed = feed(2_900);
    let start = Instant::now();
    let ix = start_indexer(&db.catalog, &redis.url(), 100, None).await;
    // Three parts. The first drains as usual. Each of the others is pushed while another
    // session holds a lock on `backups`, so the indexer is inside a transaction, waiting, when
    // PostgreSQL stops (fast shutdown: every session ends, open transactions roll back).
    let parts: Vec<&[String]> = feed.msgs.chunks(feed.msgs.len().div_ceil(3)).collect();
    push(&redis, "message", parts[0]);
    for part in &parts[1..] {
        let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE backups IN EXCLUSIVE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        push(&redis, "message", part);
        // Watched from another session: inside a transaction, pg_stat_activity is a snapshot.
        let mut watch = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watch)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the indexer waits for the lock");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(watch);
        let failed = ix.metrics.batch_failures.load(Ordering::Relaxed);
        tokio::task::block_in_place(|| bounce.stop());
        drop(holder);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ix.metrics.batch_failures.load(Ordering::Relaxed) == failed {
            assert!(
                Instant::now() < deadline,
                "the transaction in flight failed when PostgreSQL stopped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        bounce.start().await;
    }
    let failures = ix.metrics.batch_failures.load(Ordering::Relaxed);
    eprintln!("{failures} catalog transactions failed");
    drained_exactly(
        &redis,
        &db.catalog,
        &feed,
        Duration::from_secs(60),
        "postgres restart",
    )
    .await;
    ix.stop().await;
    eprintln!("took {:.1} s", start.elapsed().as_secs_f64());
}

/// The pid of the redis-server behind `redis`.
fn redis_pid(redis: &RedisServer) -> u32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut conn(redis))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Every message that is not malformed went to the forward list once, oldest first.
fn forwarded_once(redis: &RedisServer, feed: &Feed, what: &str) {
    let mut got: Vec<String> = conn(redis).lrange("to_es", 0, -1).unwrap();
    got.reverse();
    let want: Vec<&String> = feed
        .msgs
        .iter()
        .filter(|m| !feed.malformed.contains(m))
        .collect();
    eprintln!("{what}: {} forwarded of {}", got.len(), want.len());
    assert_eq!(got.len(), want.len(), "{what}: each result forwarded once");
    assert!(
        got.iter().zip(&want).all(|(g, w)| g == *w),
        "{what}: forwarded in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkilled_mid_batch_and_restarted_with_aof_costs_time_not_results() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let db = sqlite().await;
    let feed = feed(2_900);
    let start = Instant::now();
    let ix = start_indexer(&db.catalog, &redis.url(), 50, Some("to_es")).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let (mut kills, mut mid) = (0, 0);
    for part in feed.msgs.chunks(feed.msgs.len().div_ceil(12)) {
        push(&redis, "message", part);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..60))).await;
        let mut c = conn(&redis);
        if llen(&mut c, "message") + llen(&mut c, "proc") > 0 {
            mid += 1;
        }
        let pid = redis_pid(&redis);
        signal(pid, "KILL");
        kills += 1;
        tokio::task::block_in_place(|| redis.restart().unwrap());
    }
    eprintln!("{kills} SIGKILLs, {mid} with results waiting or in flight");
    assert!(mid >= 3, "the kills landed mid-drain");
    drained_exactly(
        &redis,
        &db.catalog,
        &feed,
        Duration::from_secs(60),
        "redis kill",
    )
    .await;
    forwarded_once(&redis, &feed, "redis kill");
    ix.stop().await;
    eprintln!("took {:.1} s", start.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexer_killed_mid_batch_dead_letters_and_forwards_each_message_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = sqlite().await;
    let feed = feed(2_900);
    let start = Instant::now();
    push(&redis, "message", &feed.msgs);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for _ in 0..12 {
        let ix = start_indexer(&db.catalog, &redis.url(), 50, Some("to_es")).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
        ix.kill().await;
    }
    let ix = start_indexer(&db.catalog, &redis.url(), 50, Some("to_es")).await;
    drained_exactly(
        &redis,
        &db.catalog,
        &feed,
        Duration::from_secs(60),
        "indexer kill",
    )
    .await;
    forwarded_once(&redis, &feed, "indexer kill");
    ix.stop().await;
    eprintln!("took {:.1} s", start.elapsed().as_secs_f64());
}
