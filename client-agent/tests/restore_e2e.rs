//! The whole restore path with every peer real: v1 jobs (full + three incrementals, each taken
//! against the one before) on a real `redis-server` → `ubackup-puller run` pulls them from the
//! database host's `rsync --daemon` → results → `ubackup-indexer run` (SQLite catalog, HTTP
//! API, a bearer token) → `ubackup-agent restore` asks the indexer for each point in time and
//! pulls the chain back through the node's read-only, password-protected module.
//!
//! `ubackup-puller` and `ubackup-indexer` are found next to this package's binary, where
//! `cargo test --workspace --release` builds them.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use serde_json::{json, Value};
use ubackup_testkit::{
    interop_required, require_rsync, write_random_file, DaemonBuilder, Module, RedisServer,
    RsyncVersion, TestCa, Usage,
};

const AGENT: &str = env!("CARGO_BIN_EXE_ubackup-agent");
const PASSWORD: &str = "restore-s3cret";
const T0: i64 = 1_764_489_600_000; // 2025-11-30T08:00:00Z
const HOUR: i64 = 3_600_000;

fn sibling(name: &str) -> Option<PathBuf> {
    let p = Path::new(AGENT).with_file_name(name);
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

/// A child killed on drop.
struct Proc(Child, PathBuf);

impl Proc {
    fn start(bin: &Path, args: &[&str], log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc(child, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn xxh128(path: &Path) -> String {
    let d = ubackup_checksum::Digest::for_checksum("xxh128:").unwrap();
    ubackup_checksum::digest_file(path, d, 1 << 20, |_| true)
        .unwrap()
        .unwrap()
        .0
}

fn output(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "--- {:?} exit {:?}\n{}{}",
        c.get_args().next(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn restores_each_point_in_time_through_the_real_node_and_indexer() {
    let (Some(puller), Some(indexer)) = (sibling("ubackup-puller"), sibling("ubackup-indexer"))
    else {
        return;
    };
    if require_rsync(RsyncVersion::V3_5_0).is_none() {
        return;
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(Module::new("backup", src.path()))
        .module(
            Module::new("ubackup", root.path())
                .auth("ubackup-restore", PASSWORD)
                .extra("exclude = .ubackup-state/ .ubackup-partial/")
                .extra("refuse options = delete* remove-source-files"),
        )
        .start()
        .unwrap();

    // The database host's backups and the agent's v1 jobs, with the chain record.
    let names = ["full-0800.xb", "inc-0900.xb", "inc-1000.xb", "inc-1100.xb"];
    let sizes = [3_000_000u64, 400_000, 250_001, 600_003];
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let p = src.path().join(name);
        write_random_file(&p, sizes[i], 40 + i as u64).unwrap();
        let job = json!({
            "v": 1, "job_id": format!("S9-mysql-3306-{i}"), "server_id": "S9", "game_id": 7,
            "op_id": 0, "host": "127.0.0.1", "port": daemon.port(), "module": "backup",
            "filename": name, "size": sizes[i], "checksum": xxh128(&p),
            "back_type": "mysql", "instance": 3306, "interval": 3600,
            "create_time_ms": T0 + HOUR * i as i64,
            "last_all_filename": if i == 0 { Value::Null } else { json!(names[0]) },
            "last_all_time_ms": if i == 0 { 0 } else { T0 },
            "prev_filename": if i >= 2 { json!(names[i - 1]) } else { Value::Null },
            "prev_time_ms": if i >= 2 { T0 + HOUR * (i as i64 - 1) } else { 0 },
            "success": true, "log": "ok"
        });
        let _: i64 = conn.lpush("uuzuback", job.to_string()).unwrap();
    }

    let puller_cfg = work.path().join("puller.toml");
    std::fs::write(
        &puller_cfg,
        format!(
            "[node]\nid = \"node-1\"\nip = \"127.0.0.1\"\nroot = \"{}\"\nworkers = 2\nshutdown_grace_secs = 5\n\
             [queue]\nredis = \"{}\"\nlists = [\"level1\", \"uuzuback\"]\nheartbeat_secs = 1\nlease_secs = 5\nidle_poll_ms = 200\n\
             [results]\nlist = \"message\"\n[pull]\nretry = 3\nconnect_timeout_secs = 5\nstall_timeout_secs = 10\nrsync_port = {}\n",
            root.path().display(),
            redis.url(),
            daemon.port()
        ),
    )
    .unwrap();
    let http = free_port();
    // The indexer serves HTTPS with a certificate from a test CA; the agent trusts that CA
    // through --ca-file only.
    let ca = TestCa::new("restore test CA").unwrap();
    let ca_file = work.path().join("ca.crt");
    ca.write(&ca_file).unwrap();
    let (crt, key) = ca
        .issue(&["localhost", "127.0.0.1"], Usage::Server)
        .unwrap()
        .write(work.path(), "indexer")
        .unwrap();
    let ix_cfg = work.path().join("indexer.toml");
    std::fs::write(
        &ix_cfg,
        format!(
            "[indexer]\nid = \"ix1\"\n[catalog]\nurl = \"sqlite://{}\"\nretention_days = 0\n\
             [results]\nredis = \"{}\"\nbatch = 4\n[registry]\nauto_register = true\n\
             [alerts]\nevaluate_secs = 1\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n[log]\nlevel = \"info\"\n",
            work.path().join("catalog.db").display(),
            redis.url(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let ixc = ix_cfg.to_str().unwrap();
    assert!(output(Command::new(&indexer).args(["-c", ixc, "migrate"]))
        .status
        .success());
    let mut add = Command::new(&indexer)
        .args(["-c", ixc, "user", "add", "dba", "--role", "viewer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        add.stdin
            .take()
            .unwrap()
            .write_all(b"a-long-password\n")
            .unwrap();
    }
    assert!(add.wait().unwrap().success());
    let out = output(Command::new(&indexer).args(["-c", ixc, "token", "create", "--user", "dba"]));
    assert!(out.status.success());
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &out.stdout).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw = work.path().join("restore.pass");
    std::fs::write(&pw, PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    let node = Proc::start(
        &puller,
        &["run", "--config", puller_cfg.to_str().unwrap()],
        work.path().join("node.log"),
    );
    let ix = Proc::start(&indexer, &["-c", ixc, "run"], work.path().join("ix.log"));

    let restore = |at: &str, to: &Path, token: &Path| {
        let mut c = Command::new(AGENT);
        c.arg("restore")
            .args(["--indexer", &format!("https://localhost:{http}")])
            .args(["--ca-file", ca_file.to_str().unwrap()])
            .args(["--token-file", token.to_str().unwrap()])
            .args(["--server-id", "S9", "--type", "mysql", "--instance", "3306"])
            .args(["--at", at, "--to", to.to_str().unwrap()])
            .args(["--password-file", pw.to_str().unwrap()])
            .args(["--node-port", &daemon.port().to_string()])
            .args(["--node-root", root.path().to_str().unwrap()])
            .env_remove("RSYNC_PASSWORD")
            .env_remove("UBACKUP_INDEXER_TOKEN");
        c
    };

    // Wait until the indexer's plan for the latest time holds the whole chain.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = restore("latest", &work.path().join("none"), &token_file)
            .args(["--dry-run", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
            if plan["files"].as_array().map(Vec::len) == Some(4) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the chain never reached the catalog\n{}\nnode:\n{}\nindexer:\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log(),
            ix.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Without the CA the indexer's certificate is not trusted (indexer unreachable, 7);
    // plain http:// to a host that is not loopback is refused before any request (usage, 64).
    let out = Command::new(AGENT)
        .arg("restore")
        .args(["--indexer", &format!("https://localhost:{http}")])
        .args(["--token-file", token_file.to_str().unwrap()])
        .args(["--server-id", "S9", "--type", "mysql", "--instance", "3306"])
        .args(["--at", "latest", "--dry-run"])
        .env_remove("UBACKUP_INDEXER_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"));
    let out = Command::new(AGENT)
        .arg("restore")
        .args(["--indexer", "http://indexer.example:8080"])
        .args(["--token-file", token_file.to_str().unwrap()])
        .args(["--server-id", "S9", "--type", "mysql", "--instance", "3306"])
        .args(["--at", "latest", "--dry-run"])
        .env_remove("UBACKUP_INDEXER_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--insecure-http"), "{err}");

    // Before the full: no backup.
    let out = output(&mut restore(
        &(T0 - 1).to_string(),
        &work.path().join("early"),
        &token_file,
    ));
    assert_eq!(out.status.code(), Some(2));

    for upto in 0..4 {
        let to = work.path().join(format!("r{upto}"));
        let at = ubackup_agent::restore::plan::rfc3339(T0 + HOUR * upto as i64 + 60_000);
        let out = output(&mut restore(&at, &to, &token_file));
        assert!(out.status.success());
        let mut got: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = names[..=upto].iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
        for name in &names[..=upto] {
            assert!(
                std::fs::read(to.join(name)).unwrap()
                    == std::fs::read(src.path().join(name)).unwrap(),
                "{name} differs"
            );
        }
    }

    // A wrong token is refused by the indexer.
    let bad = work.path().join("bad-token");
    std::fs::write(&bad, "not-a-token").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = output(&mut restore("latest", &work.path().join("x"), &bad));
    assert_eq!(out.status.code(), Some(7));

    // The node's scrub finds inc 2 corrupt: the indexer marks it, and the chain has a hole.
    let stored = walk_find(root.path(), names[2]).unwrap();
    let event = json!({
        "event": "corrupt", "node_id": "node-1", "back_server_ip": "127.0.0.1",
        "server_id": "S9", "type": "mysql", "instance": 3306,
        "file_path": stored.parent().unwrap().display().to_string(), "filename": names[2],
        "job_id": "S9-mysql-3306-2", "at_ms": T0 + 10 * HOUR, "reason": "checksum differs"
    });
    let _: i64 = conn.lpush("message", event.to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = restore("latest", &work.path().join("y"), &token_file)
            .arg("--dry-run")
            .output()
            .unwrap();
        if out.status.code() == Some(3) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(names[2]) && err.contains("corrupt"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "no hole reported\n{}", ix.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    // The time of inc 1 still restores (its chain does not need inc 2).
    let to = work.path().join("after-corrupt");
    let out = output(&mut restore(&(T0 + HOUR).to_string(), &to, &token_file));
    assert!(out.status.success());
}

fn walk_find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}
