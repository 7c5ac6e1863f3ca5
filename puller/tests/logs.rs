//! `ubackup-puller run`'s log output holds no colour codes unless it goes to a terminal:
//! `[log] file`, and stderr when it is a pipe (journald, a redirect), against a real
//! `redis-server`.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ubackup_testkit::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-puller");

fn config(dir: &Path, redis: &RedisServer, log: &str) -> std::path::PathBuf {
    let text = format!(
        "[node]\nid = \"n1\"\nip = \"127.0.0.9\"\nroot = \"{root}\"\nworkers = 1\n\
         [queue]\nredis = \"{redis}\"\nlists = [\"uuzuback_f\"]\nidle_poll_ms = 200\n\
         [log]\nlevel = \"info\"\n{log}\n",
        root = dir.join("root").display(),
        redis = redis.url(),
    );
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_until_idle(config: &Path) -> Output {
    let child = Command::new(BIN)
        .args(["run", "--until-idle", "--config"])
        .arg(config)
        .env_remove("UBACKUP_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("ubackup-puller still running after 60 s");
        }
    }
}

#[test]
fn the_log_file_and_a_piped_stderr_hold_no_colour_codes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (log, errors) = (dir.path().join("node.log"), dir.path().join("error.log"));
    let cfg = config(
        dir.path(),
        &redis,
        &format!(
            "file = \"{}\"\nerror_file = \"{}\"",
            log.display(),
            errors.display()
        ),
    );
    let out = run_until_idle(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("node started"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "colour codes in the log file:\n{text:?}"
    );

    // No file: stderr, a pipe here.
    let cfg = config(dir.path(), &redis, "");
    let out = run_until_idle(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("node started"), "{err}");
    assert!(
        !err.contains("\x1b["),
        "colour codes on a piped stderr:\n{err:?}"
    );
}
