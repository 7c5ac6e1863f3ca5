//! End to end, every part a real process or server: UBackup-format jobs on a real
//! redis-server → `ubackup-puller run` (as a process) pulling from a real `rsync --daemon` →
//! results → `ubackup-indexer run` (as a process) → the catalog (SQLite, then PostgreSQL).
//! The indexer is killed with SIGKILL mid-stream and Redis is restarted; every result must
//! end up in the catalog exactly once.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use ubackup_testkit::{
    interop_required, require_rsync, write_random_file, DaemonBuilder, Module, Postgres,
    RedisServer, RsyncVersion,
};

const INDEXER: &str = env!("CARGO_BIN_EXE_ubackup-indexer");
const JOBS: usize = 60;

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

struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(bin: &Path, args: &[&str], log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .env_remove("UBACKUP_LOG")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn term(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn count_rows(url: &str) -> (i64, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The indexer migrates; until it has, there is no table (count 0).
        let c = ubackup_indexer::catalog::open(url, 1).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups")
            .fetch_one(c.pool())
            .await
            .unwrap_or(0);
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT job_id) FROM backups")
            .fetch_one(c.pool())
            .await
            .unwrap_or(0);
        (rows, jobs)
    })
}

fn run(catalog_url: &str) {
    let Some(puller) = puller_bin() else { return };
    if require_rsync(RsyncVersion::V3_5_0).is_none() {
        return;
    }
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("backup", src.path()))
        .start()
        .unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..JOBS {
        let name = format!("db{i}.sql");
        write_random_file(&src.path().join(&name), 20_000 + i as u64, i as u64).unwrap();
        // The UBackup client's message (compat §A.2), one instance per job.
        let job = serde_json::json!({
            "filename": name, "last_all_filename": null, "last_all_time": 0,
            "size": 20_000 + i, "log": "ok", "create_time": 1_700_000_000i64 + i as i64,
            "success": true, "server_id": "S1", "game_id": 7, "op_id": 0,
            "game_server_ip": "127.0.0.1", "back_type": "mysql", "instance": 3000 + i,
            "rsync_model": "backup", "interval": 3600
        });
        let _: i64 = conn.lpush("uuzuback", job.to_string()).unwrap();
    }
    let puller_cfg = work.path().join("puller.toml");
    std::fs::write(
        &puller_cfg,
        format!(
            "[node]\nid = \"node-1\"\nip = \"127.0.0.9\"\nroot = \"{}\"\nworkers = 2\nshutdown_grace_secs = 5\n\
             [queue]\nredis = \"{}\"\nlists = [\"level1\", \"uuzuback\"]\nheartbeat_secs = 1\nlease_secs = 5\nidle_poll_ms = 200\n\
             [results]\nlist = \"message\"\n[pull]\nretry = 3\nconnect_timeout_secs = 5\nstall_timeout_secs = 10\nrsync_port = {}\n",
            root.path().display(),
            redis.url(),
            daemon.port()
        ),
    )
    .unwrap();
    let indexer_cfg = work.path().join("indexer.toml");
    std::fs::write(
        &indexer_cfg,
        format!(
            "[indexer]\nid = \"ix1\"\n[catalog]\nurl = \"{catalog_url}\"\nretention_days = 0\n\
             [results]\nredis = \"{}\"\nbatch = 4\n[registry]\nauto_register = true\n\
             [alerts]\nevaluate_secs = 1\n[log]\nlevel = \"info\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let cfg = indexer_cfg.to_str().unwrap();
    let mut node = Proc::start(
        &puller,
        &["run", "--config", puller_cfg.to_str().unwrap()],
        work.path().join("node.log"),
    );
    let mut ix = Proc::start(
        Path::new(INDEXER),
        &["run", "--config", cfg],
        work.path().join("ix1.log"),
    );
    // Let some results be indexed, then kill -9 the indexer mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_rows(catalog_url).0 < 10 {
        assert!(
            Instant::now() < deadline,
            "no progress:\n{}\n{}",
            ix.log(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ix.kill9();
    // Redis restarts under the node (append-only file: nothing acknowledged is lost).
    redis.restart().unwrap();
    let mut ix2 = Proc::start(
        Path::new(INDEXER),
        &["run", "--config", cfg],
        work.path().join("ix2.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (rows, jobs) = count_rows(catalog_url);
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let (waiting, proc_len, queued): (i64, i64, i64) = (
            c.llen("message").unwrap_or(-1),
            c.llen("ubackup:indexer:processing:ix1").unwrap_or(-1),
            c.llen("uuzuback").unwrap_or(-1),
        );
        if rows >= JOBS as i64 && waiting == 0 && proc_len == 0 && queued == 0 {
            assert_eq!(
                (rows, jobs),
                (JOBS as i64, JOBS as i64),
                "every result exactly once"
            );
            let dead: i64 = c.llen("ubackup:indexer:dead").unwrap();
            assert_eq!(dead, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows {rows}, waiting {waiting}, processing {proc_len}, queued {queued}\nindexer:\n{}\nnode:\n{}",
            ix2.log(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every job was a success and auto-registered.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use ubackup_indexer::catalog::prelude::*;
        let c = ubackup_indexer::catalog::open(catalog_url, 1)
            .await
            .unwrap();
        let ok: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM backups WHERE succeed = 1 AND checksum IS NOT NULL",
        )
        .fetch_one(c.pool())
        .await
        .unwrap();
        assert_eq!(ok, JOBS as i64);
        assert_eq!(c.instances().await.unwrap().len(), JOBS);
    });
    ix2.term();
    node.term();
}

#[test]
fn jobs_through_a_node_into_sqlite_exactly_once_across_kill_and_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    run(&format!("sqlite://{}", dir.path().join("c.db").display()));
}

#[test]
fn jobs_through_a_node_into_postgres_exactly_once_across_kill_and_redis_restart() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("e2e").unwrap();
    run(&url);
}
