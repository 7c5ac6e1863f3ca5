//! `ubackup-agent restore`, as a process, against a real `rsync --daemon` (3.5.0) playing the
//! node's read-only, password-protected restore module, on a loopback port picked at run time.
//!
//! The node's root holds a full and three incrementals (incremental on incremental, the v1
//! chain record) laid out as `ubackup-puller run` stores them; the plan is the indexer's JSON
//! shape (`restore::plan::Plan`), given with `--plan`.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ubackup_testkit::{
    require_rsync, write_random_file, DaemonBuilder, Module, RsyncDaemon, RsyncVersion,
};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-agent");
const PASSWORD: &str = "restore-s3cret";
/// The node stores files under `<root>/<type>/<ip a.b.c>/<ip d>/`.
const NODE_DIR: &str = "mysql/127.0.0/1";
const T0: i64 = 1_764_489_600_000; // 2025-11-30T08:00:00Z

struct Node {
    daemon: RsyncDaemon,
    root: tempfile::TempDir,
    work: tempfile::TempDir,
    /// (name, size, seed) of the full and incrementals, in chain order.
    files: Vec<(String, u64, u64)>,
}

fn node(full_size: u64) -> Option<Node> {
    require_rsync(RsyncVersion::V3_5_0)?;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(NODE_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let files = vec![
        ("full-20251130080000.xbstream".to_string(), full_size, 1),
        ("inc-20251130090000.xbstream".to_string(), 1_200_000, 2),
        ("inc-20251130100000.xbstream".to_string(), 700_001, 3),
        ("inc-20251130110000.xbstream".to_string(), 2_000_003, 4),
    ];
    for (name, size, seed) in &files {
        write_random_file(&dir.join(name), *size, *seed).unwrap();
    }
    // The node's own state is not exported (as in docs/operations.md).
    std::fs::create_dir_all(root.path().join(".ubackup-state")).unwrap();
    let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
        .module(
            Module::new("ubackup", root.path())
                .auth("ubackup-restore", PASSWORD)
                .extra("exclude = .ubackup-state/ .ubackup-partial/")
                .extra("refuse options = delete* remove-source-files"),
        )
        .start()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let pw = work.path().join("restore.pass");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some(Node {
        daemon,
        root,
        work,
        files,
    })
}

fn xxh128(path: &Path) -> String {
    let d = ubackup_checksum::Digest::for_checksum("xxh128:").unwrap();
    ubackup_checksum::digest_file(path, d, 1 << 20, |_| true)
        .unwrap()
        .unwrap()
        .0
}

impl Node {
    fn stored(&self, i: usize) -> PathBuf {
        self.root.path().join(NODE_DIR).join(&self.files[i].0)
    }

    /// The indexer's plan for the point in time of file `upto` (the full and every
    /// incremental up to it), with the catalog's checksums.
    fn plan(&self, upto: usize) -> Value {
        let full = &self.files[0].0;
        let files: Vec<Value> = (0..=upto)
            .map(|i| {
                let (name, size, _) = &self.files[i];
                json!({
                    "role": if i == 0 { "full" } else { "incremental" },
                    "filename": name,
                    "create_time_ms": T0 + 3_600_000 * i as i64,
                    "node": "127.0.0.1",
                    "file_path": self.root.path().join(NODE_DIR).display().to_string(),
                    "size": size,
                    "checksum": xxh128(&self.stored(i)),
                    "last_all_filename": if i == 0 { Value::Null } else { json!(full) },
                    "prev_filename": if i >= 2 { json!(self.files[i - 1].0) } else { Value::Null },
                    "job_id": format!("job-{i}"),
                })
            })
            .collect();
        json!({"server_id": "111111", "type": "mysql", "instance": 3306, "files": files})
    }

    fn write_plan(&self, plan: &Value) -> PathBuf {
        let p = self
            .work
            .path()
            .join(format!("plan-{}.json", rand_suffix()));
        std::fs::write(&p, serde_json::to_vec(plan).unwrap()).unwrap();
        p
    }

    fn cmd(&self, plan: &Path, at: &str, to: &Path) -> Command {
        let pw = self.work.path().join("restore.pass");
        self.cmd_to(plan, at, to, self.daemon.port(), &pw)
    }

    fn cmd_to(&self, plan: &Path, at: &str, to: &Path, port: u16, pw: &Path) -> Command {
        self.cmd_for(plan, at, to, port, pw, ("mysql", "3306"))
    }

    fn cmd_for(
        &self,
        plan: &Path,
        at: &str,
        to: &Path,
        port: u16,
        pw: &Path,
        (back_type, instance): (&str, &str),
    ) -> Command {
        let mut c = Command::new(BIN);
        c.arg("restore")
            .args(["--plan", plan.to_str().unwrap()])
            .args([
                "--server-id",
                "111111",
                "--type",
                back_type,
                "--instance",
                instance,
            ])
            .args(["--at", at, "--to", to.to_str().unwrap()])
            .args(["--password-file", pw.to_str().unwrap()])
            .args(["--node-port", &port.to_string()])
            .args(["--node-root", self.root.path().to_str().unwrap()])
            .env_remove("RSYNC_PASSWORD")
            .env_remove("UBACKUP_INDEXER_TOKEN")
            .stdin(Stdio::null());
        c
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(r) => r
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn restores_every_point_in_time_byte_identical_and_the_hook_gets_the_files_in_order() {
    let Some(n) = node(6_000_000) else { return };
    let hook = n.work.path().join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\nout=\"$UBACKUP_RESTORE_DIR/../hook-$(basename \"$UBACKUP_RESTORE_DIR\").txt\"\n\
         { for f in \"$@\"; do echo \"arg $f\"; done\n  echo \"count $UBACKUP_RESTORE_COUNT\"\n  \
         echo \"full $UBACKUP_RESTORE_FULL\"\n  printf 'files %s\\n' \"$UBACKUP_RESTORE_FILES\" | tr '\\n' ' '; echo\n  \
         echo \"at $UBACKUP_RESTORE_AT_MS $UBACKUP_SERVER_ID $UBACKUP_TYPE $UBACKUP_INSTANCE\"; } >\"$out\"\n",
    )
    .unwrap();
    for upto in 0..4 {
        let plan = n.write_plan(&n.plan(upto));
        let to = n.work.path().join(format!("restore{upto}"));
        // The point in time: the backup of `upto` itself (RFC 3339), or a minute after it
        // (epoch seconds) for the others.
        let at_ms = T0 + 3_600_000 * upto as i64;
        let at = if upto % 2 == 0 {
            ubackup_agent::restore::plan::rfc3339(at_ms)
        } else {
            ((at_ms + 60_000) / 1000).to_string()
        };
        let out = run(n
            .cmd(&plan, &at, &to)
            .args(["--hook", &format!("sh {}", hook.display())]));
        assert!(out.status.success());
        let mut want: Vec<String> = n.files[..=upto].iter().map(|f| f.0.clone()).collect();
        want.sort();
        assert_eq!(
            names_in(&to),
            want,
            "only the plan's files, no staging left"
        );
        for i in 0..=upto {
            let got = std::fs::read(to.join(&n.files[i].0)).unwrap();
            let src = std::fs::read(n.stored(i)).unwrap();
            assert!(got == src, "{} differs", n.files[i].0);
        }
        let report =
            std::fs::read_to_string(n.work.path().join(format!("hook-restore{upto}.txt"))).unwrap();
        let args: Vec<&str> = report
            .lines()
            .filter_map(|l| l.strip_prefix("arg "))
            .collect();
        let expected: Vec<String> = n.files[..=upto]
            .iter()
            .map(|f| to.join(&f.0).display().to_string())
            .collect();
        assert_eq!(args, expected, "hook arguments in chain order");
        assert!(report.contains(&format!("count {}", upto + 1)), "{report}");
        assert!(
            report.contains(&format!("full {}", expected[0])),
            "{report}"
        );
        assert!(
            report.contains(&format!("files {} \n", expected.join(" "))),
            "{report}"
        );
        assert!(
            report.contains(&format!("at {at_ms} 111111 mysql 3306")),
            "{report}"
        );
    }
}

/// stderr is a pipe here (as under journald or a redirect): the log lines carry no colour.
#[test]
fn a_piped_stderr_holds_no_colour_codes() {
    let Some(n) = node(100_000) else { return };
    let plan = n.write_plan(&n.plan(1));
    let to = n.work.path().join("plain");
    let out = run(n.cmd(&plan, "latest", &to).arg("-v").env_remove("NO_COLOR"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "no log lines to check:\n{err}");
    assert!(!err.contains("\x1b["), "colour codes on stderr:\n{err:?}");
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let Some(n) = node(300_000) else { return };
    let plan = n.write_plan(&n.plan(3));
    let to = n.work.path().join("never");
    let out = run(n.cmd(&plan, "latest", &to).arg("--dry-run"));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let port = n.daemon.port();
    let mut last = 0;
    for (i, (name, size, _)) in n.files.iter().enumerate() {
        let at = text
            .find(name.as_str())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(at > last, "files out of order:\n{text}");
        last = at;
        assert!(text.contains(&format!("{size} bytes")), "{text}");
        assert!(
            text.contains(&format!(
                "from rsync://ubackup-restore@127.0.0.1:{port}/ubackup/{NODE_DIR}/{name}"
            )),
            "{text}"
        );
        let role = if i == 0 { "full" } else { "incremental" };
        assert!(text.contains(&format!("{}. {role}", i + 1)), "{text}");
    }
    assert!(text.contains("4 file(s)"), "{text}");
    assert!(!text.contains(PASSWORD));
    assert!(!to.exists(), "a dry run creates nothing");
    // --json prints a plan that --plan takes back.
    let out = run(n.cmd(&plan, "latest", &to).args(["--dry-run", "--json"]));
    assert!(out.status.success());
    let saved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(saved["files"].as_array().unwrap().len(), 4);
    assert_eq!(saved["files"][3]["prev_filename"], json!(n.files[2].0));
}

#[test]
fn restore_at_29_february_is_refused_in_2026_and_taken_in_2028() {
    let Some(n) = node(10_000) else { return };
    let plan = n.write_plan(&n.plan(3));
    let to = n.work.path().join("never");
    // 2026 has no 29 February: a usage error naming the day, not 1 March.
    let out = run(n.cmd(&plan, "2026-02-29T08:00:00Z", &to).arg("--dry-run"));
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2026-02-29") && err.contains("day"), "{err}");
    let out = run(n.cmd(&plan, "2028-02-29T08:00:00Z", &to).arg("--dry-run"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("taken 2025-11-30T08:00:00Z"), "{text}");
    assert!(text.contains("4 file(s)"), "{text}");
    assert!(!to.exists(), "a dry run creates nothing");
}

#[test]
fn a_checksum_that_differs_is_refused_and_nothing_lands_under_a_final_name() {
    let Some(n) = node(1_000_000) else { return };
    let mut plan = n.plan(3);
    // The catalog says inc 2 hashes to something else (rot on the node, say).
    plan["files"][2]["checksum"] = json!(format!("xxh128:{}", "0".repeat(32)));
    let bad = n.write_plan(&plan);
    let to = n.work.path().join("r");
    let out = run(&mut n.cmd(&bad, "latest", &to));
    assert_eq!(out.status.code(), Some(5), "checksum differs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum differs from the catalog's"), "{err}");
    assert!(err.contains(&n.files[2].0), "{err}");
    assert_eq!(
        names_in(&to),
        vec![".ubackup-restore".to_string()],
        "no final name"
    );
    let staged = names_in(&to.join(".ubackup-restore"));
    assert!(
        !staged.contains(&n.files[2].0),
        "the bad copy was discarded: {staged:?}"
    );
    // With the right catalog the same command finishes, keeping what was verified.
    let good = n.write_plan(&n.plan(3));
    let out = run(&mut n.cmd(&good, "latest", &to));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(2 resumed;"), "{text}");
    for i in 0..4 {
        assert!(
            std::fs::read(to.join(&n.files[i].0)).unwrap() == std::fs::read(n.stored(i)).unwrap()
        );
    }
}

#[test]
fn a_hole_in_the_chain_is_reported_before_anything_is_pulled() {
    let Some(n) = node(100_000) else { return };
    let mut plan = n.plan(3);
    // inc 3 was taken against inc 2, which the catalog lost.
    plan["files"].as_array_mut().unwrap().remove(2);
    let p = n.write_plan(&plan);
    let to = n.work.path().join("r");
    let out = run(&mut n.cmd(&p, "latest", &to));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hole") && err.contains(&n.files[2].0), "{err}");
    assert!(!to.exists());
    // A plan that starts with an incremental is a hole too.
    let mut plan = n.plan(1);
    plan["files"].as_array_mut().unwrap().remove(0);
    let out = run(&mut n.cmd(&n.write_plan(&plan), "latest", &to));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn an_unreachable_node_and_a_wrong_password_are_clear_errors() {
    let Some(n) = node(100_000) else { return };
    let plan = n.write_plan(&n.plan(0));
    let to = n.work.path().join("r");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let pw = n.work.path().join("restore.pass");
    let out = run(&mut n.cmd_to(&plan, "latest", &to, port, &pw));
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    let wrong = n.work.path().join("wrong.pass");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&mut n.cmd_to(&plan, "latest", &to, n.daemon.port(), &wrong));
    assert_eq!(out.status.code(), Some(6));
    assert!(!names_in(&to).iter().any(|f| f == &n.files[0].0));
}

#[test]
fn an_interrupted_restore_resumes_without_pulling_again_what_arrived() {
    let Some(n) = node(24 << 20) else { return };
    let plan = n.write_plan(&n.plan(1));
    let to = n.work.path().join("r");
    // 4 MiB/s: the full takes about 6 s; kill -9 the restore once 2 MiB of it are on disk.
    let mut child = n
        .cmd(&plan, "latest", &to)
        .args(["--bwlimit", "4M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = to.join(".ubackup-restore");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_disk: u64 = walk(&staging).iter().map(|(_, len)| len).sum();
        if on_disk > 2 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the restore never wrote 2 MiB");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished too early to interrupt"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = walk(&to);
    assert!(
        !left.iter().any(|(p, _)| n
            .files
            .iter()
            .any(|f| p.ends_with(&f.0) && p.parent() == Some(to.as_path()))),
        "nothing under a final name after the kill: {left:?}"
    );
    let out = run(&mut n.cmd(&plan, "latest", &to));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let reused: u64 = text
        .split("bytes pulled, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        reused >= 2 << 20,
        "the second run reused what the first pulled: {text}"
    );
    for i in 0..2 {
        assert!(
            std::fs::read(to.join(&n.files[i].0)).unwrap() == std::fs::read(n.stored(i)).unwrap()
        );
    }
    assert_eq!(names_in(&to).len(), 2, "staging removed");
}

fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out
}

#[test]
fn the_redis_hook_puts_the_restored_rdb_in_place_of_a_real_servers_dump() {
    let Some(n) = node(1000) else { return };
    let Some(mut redis) = ubackup_testkit::RedisServer::start_with(&["--appendonly", "no"]) else {
        return;
    };
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(format!("value{i}"))
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    // The backup, as the node stores it.
    let node_dir = n.root.path().join("redis/127.0.0/1");
    std::fs::create_dir_all(&node_dir).unwrap();
    let rdb = node_dir.join("redis_6379_20251130080000.rdb");
    std::fs::copy(redis.dir().join("dump.rdb"), &rdb).unwrap();
    // Then the data is lost.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    redis.stop();
    let plan = json!({"server_id": "111111", "type": "redis", "instance": 6379, "files": [{
        "role": "full", "filename": "redis_6379_20251130080000.rdb", "create_time_ms": T0,
        "node": "127.0.0.1", "file_path": node_dir.display().to_string(),
        "size": std::fs::metadata(&rdb).unwrap().len(), "checksum": xxh128(&rdb)}]});
    let p = n.write_plan(&plan);
    let to = n.work.path().join("redis-restore");
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hooks/redis-rdb.sh");
    let pw = n.work.path().join("restore.pass");
    let mut cmd = n.cmd_for(&p, "latest", &to, n.daemon.port(), &pw, ("redis", "6379"));
    let out = run(cmd
        .args(["--hook", &format!("sh {}", hook.display())])
        .env("REDIS_DIR", redis.dir())
        .env("REDIS_DBFILE", "dump.rdb"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("redis hook:"));
    assert!(redis.dir().join("dump.rdb.before-restore").exists());
    redis.restart().unwrap();
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let n_keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n_keys, 100);
    let v: String = redis::cmd("GET").arg("key42").query(&mut c).unwrap();
    assert_eq!(v, "value42");
}

/// `restore --tls` through a real stunnel (Debian's `stunnel4`) in front of the node's
/// restore module, requiring our client certificate (`verify = 2`) and naming the node by its
/// address (the IP SAN): the whole chain arrives byte-identical. The same restore trusting
/// another CA, or without a client certificate, is refused and leaves no file under a final
/// name.
#[test]
fn restores_over_mutual_tls_byte_identical() {
    use ubackup_testkit::{require_stunnel, Stunnel, TestCa, Usage};
    if require_stunnel().is_none() {
        return;
    }
    let Some(n) = node(3_000_000) else { return };
    let ca = TestCa::new("fleet CA").unwrap();
    let stunnel = Stunnel::start(
        n.daemon.addr(),
        &ca.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        Some(&ca),
    )
    .unwrap();
    let pki = n.work.path();
    let ca_file = pki.join("ca.crt");
    ca.write(&ca_file).unwrap();
    let (cert, key) = ca
        .issue(&["db1.example"], Usage::Client)
        .unwrap()
        .write(pki, "agent")
        .unwrap();
    let wrong_ca = pki.join("wrong.crt");
    TestCa::new("someone else")
        .unwrap()
        .write(&wrong_ca)
        .unwrap();
    let plan = n.write_plan(&n.plan(3));
    let pw = n.work.path().join("restore.pass");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let to = n.work.path().join("over-tls");
    let out = run(n
        .cmd_to(&plan, "latest", &to, stunnel.port(), &pw)
        .args(["--tls", "--tls-ca", &s(&ca_file)])
        .args(["--tls-cert", &s(&cert), "--tls-key", &s(&key)]));
    assert!(out.status.success(), "{}", stunnel.log());
    for i in 0..4 {
        let got = std::fs::read(to.join(&n.files[i].0)).unwrap();
        assert!(
            got == std::fs::read(n.stored(i)).unwrap(),
            "{} differs",
            n.files[i].0
        );
    }
    assert!(
        stunnel.log().contains("accepted connection"),
        "{}",
        stunnel.log()
    );

    // The CA from RSYNC_SSL_CA_CERT, as rsync-ssl; no
    // client certificate: stunnel refuses.
    let to = n.work.path().join("no-cert");
    let mut cmd = n.cmd_to(&plan, "latest", &to, stunnel.port(), &pw);
    cmd.arg("--tls").env("RSYNC_SSL_CA_CERT", &ca_file);
    let out = run(&mut cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused our client certificate"), "{err}");
    assert!(!names_in(&to)
        .iter()
        .any(|f| n.files.iter().any(|x| &x.0 == f)));

    // Another CA: the node is not trusted, nothing is restored.
    let to = n.work.path().join("wrong-ca");
    let out = run(n
        .cmd_to(&plan, "latest", &to, stunnel.port(), &pw)
        .args(["--tls", "--tls-ca", &s(&wrong_ca)])
        .args(["--tls-cert", &s(&cert), "--tls-key", &s(&key)]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert!(!names_in(&to)
        .iter()
        .any(|f| n.files.iter().any(|x| &x.0 == f)));
}
