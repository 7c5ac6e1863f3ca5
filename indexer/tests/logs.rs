//! `ubackup-indexer`'s log output on a stderr that is not a terminal (journald, a redirect)
//! holds no colour codes; a real `redis-server` and a SQLite catalog.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ubackup_testkit::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-indexer");

#[test]
fn a_piped_stderr_holds_no_colour_codes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("indexer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[indexer]\nid = \"ix1\"\n[catalog]\nurl = \"sqlite://{}\"\n\
             [results]\nredis = \"{}\"\n[log]\nlevel = \"info\"\n",
            dir.path().join("c.db").display(),
            redis.url()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("UBACKUP_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text().contains("indexer starting") {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start-up line:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = text();
    assert!(!text.contains("\x1b["), "colour codes on stderr:\n{text:?}");
}
