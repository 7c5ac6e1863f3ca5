//! `ubackup-agent`, as a process, with real shell scripts, a real `redis-server` and a real
//! `rsync --daemon` (3.5.0) on loopback ports picked at run time.
//!
//! Every wait has a deadline and every child is killed on drop.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use serde_json::Value;
use ubackup_testkit::{wait_until, LoggedChild, Site};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-agent");

/// The testkit [`Site`]: a redis-server, an rsync daemon serving `src` as module `backup`, a
/// backup root and a work dir.
struct Env(Site);

impl std::ops::Deref for Env {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Site {
        &mut self.0
    }
}

fn env() -> Option<Env> {
    Site::start().map(Env)
}

/// One instance: its back_dir (under the daemon's module), logs and script.
struct Inst {
    name: &'static str,
    back_dir: PathBuf,
    back_log: PathBuf,
    last_all_log: Option<PathBuf>,
    script: PathBuf,
}

impl Env {
    fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    fn inst(&self, name: &'static str, incremental: bool, script: &str) -> Inst {
        let back_dir = self.src.path().join(name);
        std::fs::create_dir_all(&back_dir).unwrap();
        let script_path = self.work.path().join(format!("{name}.sh"));
        std::fs::write(&script_path, format!("#!/bin/sh\nset -e\n{script}\n")).unwrap();
        Inst {
            name,
            back_dir,
            back_log: self.work.path().join(format!("{name}.log")),
            last_all_log: incremental.then(|| self.work.path().join(format!("{name}.last"))),
            script: script_path,
        }
    }

    /// UBackup's INI with our extensions; `global` and `section` lines are appended.
    fn ini(&self, insts: &[&Inst], global: &str, section: &str) -> PathBuf {
        let mut t = format!(
            "[global]\nserver_id = 111111  #服务器ID\ngame_id = 31\nop_id = 1\ninterval = 3600\n\
             redis_host = 127.0.0.1 #服务端redis地址\nredis_port = {}\nredis_queue = uuzuback\n\
             my_ip = 127.0.0.1\nstate_dir = {}\nrsync_port = {}\n{global}\n",
            self.redis.port(),
            self.state_dir().display(),
            self.daemon.port()
        );
        // Each section its own instance number (two alike are refused).
        for (n, i) in insts.iter().enumerate() {
            t += &format!(
                "\n[{}]\nback_type = mysql\ninstance = {}\nrsync_model = backup/{}\nback_dir = {}/\n\
                 back_log = {}\nscript = sh {}\n{section}\n",
                i.name,
                3306 + n,
                i.name,
                i.back_dir.display(),
                i.back_log.display(),
                i.script.display()
            );
            if let Some(l) = &i.last_all_log {
                t += &format!("last_all_log = {}\n", l.display());
            }
        }
        let p = self.work.path().join("uuzuback.conf");
        std::fs::write(&p, t).unwrap();
        p
    }

    /// Our TOML (v1 messages by default).
    fn toml(&self, insts: &[&Inst], publish: &str, instance_extra: &str) -> PathBuf {
        let mut t = format!(
            "[agent]\nserver_id = \"S1\"\ngame_id = 7\nip = \"127.0.0.1\"\nstate_dir = \"{}\"\n\
             [redis]\nurl = \"{}\"\nqueue = \"uuzuback\"\n[publish]\nrsync_port = {}\n{publish}\n",
            self.state_dir().display(),
            self.redis.url(),
            self.daemon.port()
        );
        for (n, i) in insts.iter().enumerate() {
            t += &format!(
                "[instances.{}]\nback_type = \"mysql\"\ninstance = {}\nrsync_model = \"backup/{}\"\n\
                 back_dir = \"{}\"\nback_log = \"{}\"\nscript = \"sh {}\"\n{instance_extra}\n",
                i.name,
                3306 + n,
                i.name,
                i.back_dir.display(),
                i.back_log.display(),
                i.script.display()
            );
            if let Some(l) = &i.last_all_log {
                t += &format!("last_all_log = \"{}\"\n", l.display());
            }
        }
        let p = self.work.path().join("agent.toml");
        std::fs::write(&p, t).unwrap();
        p
    }

    /// Messages on `list`, oldest first.
    fn jobs(&self, list: &str) -> Vec<Value> {
        let raw: Vec<String> = self.conn().lrange(list, 0, -1).unwrap();
        raw.iter()
            .rev()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    }

    fn take_jobs(&self) -> Vec<Value> {
        let j = self.jobs("uuzuback");
        let _: () = self.conn().del("uuzuback").unwrap();
        j
    }
}

fn once(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("once")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("UBACKUP_LOG")
        .output()
        .unwrap();
    eprintln!(
        "once: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A script that writes `file` with `size` bytes and reports it.
fn ok_script(inst_dir: &Path, log: &Path, file: &str, size: usize) -> String {
    format!(
        "head -c {size} /dev/urandom > {d}/{file}\nprintf 'ok\\n{file}\\n' > {log}",
        d = inst_dir.display(),
        log = log.display()
    )
}

fn one(jobs: &[Value]) -> &Value {
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    &jobs[0]
}

/// Compat §A.2, "Fields of the client message (all of them, every time)", with the JSON
/// type `uuzuback_client.py` gives each (it casts server_id, game_id, op_id and instance
/// with int(); filename and last_all_filename start as None; size and last_all_time as 0).
const LEGACY_FIELDS: [(&str, &str); 15] = [
    ("filename", "string|null"),
    ("last_all_filename", "string|null"),
    ("last_all_time", "int"),
    ("size", "int"),
    ("log", "string"),
    ("create_time", "int"),
    ("success", "bool"),
    ("server_id", "int"),
    ("game_id", "int"),
    ("op_id", "int"),
    ("game_server_ip", "string"),
    ("back_type", "string"),
    ("instance", "int"),
    ("rsync_model", "string"),
    ("interval", "int"),
];

fn check_legacy_shape(m: &Value) {
    let obj = m.as_object().unwrap();
    let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = LEGACY_FIELDS.iter().map(|(k, _)| *k).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "exactly the client's fields");
    for (k, ty) in LEGACY_FIELDS {
        let v = &obj[k];
        let ok = match ty {
            "int" => v.is_i64(),
            "bool" => v.is_boolean(),
            "string" => v.is_string(),
            _ => v.is_string() || v.is_null(),
        };
        assert!(ok, "{k} should be {ty}, got {v}");
    }
    // The nodes (ours and UBackup's server) accept it.
    ubackup_messages::LegacyJob::parse(m.to_string().as_bytes()).unwrap();
}

#[test]
fn full_only_instance_sends_the_legacy_message_field_by_field() {
    let Some(env) = env() else { return };
    let i = env.inst("redis6379", false, "");
    std::fs::write(
        &i.script,
        ok_script(&i.back_dir, &i.back_log, "dump-1.rdb", 1000),
    )
    .unwrap();
    let cfg = env.ini(&[&i], "", "");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = once(&cfg, &[]);
    assert!(out.status.success());
    let jobs = env.take_jobs();
    let m = one(&jobs);
    check_legacy_shape(m);
    assert_eq!(m["filename"], "dump-1.rdb");
    assert_eq!(m["size"], 1000);
    assert_eq!(m["log"], "ok");
    assert_eq!(m["success"], true);
    assert_eq!(m["last_all_filename"], Value::Null);
    assert_eq!(m["last_all_time"], 0);
    assert_eq!(m["server_id"], 111111);
    assert_eq!(
        (m["game_id"].as_i64(), m["op_id"].as_i64()),
        (Some(31), Some(1))
    );
    assert_eq!(m["game_server_ip"], "127.0.0.1");
    assert_eq!(m["rsync_model"], "backup/redis6379");
    assert_eq!(m["interval"], 3600);
    let ct = m["create_time"].as_i64().unwrap();
    assert!(
        (before..before + 60).contains(&ct),
        "create_time {ct} is the run start in seconds"
    );
    // The heartbeat names the instance's run.
    let hb: std::collections::HashMap<String, String> =
        env.conn().hgetall("ubackup:agent:111111").unwrap();
    assert_eq!(hb["spool_depth"], "0");
    assert!(
        hb["instance:redis6379"].contains("\"outcome\":\"ok\""),
        "{hb:?}"
    );
    let ttl: i64 = env.conn().ttl("ubackup:agent:111111").unwrap();
    assert!(ttl > 0);
    // And `status` shows it.
    let st = Command::new(BIN)
        .args(["status", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.contains("redis6379: ok") && st.contains("spool: 0"),
        "{st}"
    );
}

#[test]
fn the_old_crontab_line_works_with_only_the_program_name_changed() {
    let Some(env) = env() else { return };
    let i = env.inst("r1", false, "");
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "d.rdb", 10)).unwrap();
    let cfg = env.ini(&[&i], "", "");
    // `python uuzuback_client.py -c F -q level1`
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["-q", "level1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(env.jobs("level1").len(), 1);
    assert!(env.jobs("uuzuback").is_empty());
}

/// Full, incremental, incremental, full, incremental: the chain fields of each run.
#[test]
fn full_and_incrementals_carry_the_chain_on_every_run() {
    let Some(env) = env() else { return };
    let i = env.inst("mysql3306", true, "");
    let (d, log, last) = (
        i.back_dir.display(),
        i.back_log.display(),
        i.last_all_log.clone().unwrap(),
    );
    // The run number comes from a counter; runs 1 and 4 are fulls. The full's log is written
    // without a trailing newline (UBackup glued its time to the name then).
    std::fs::write(
        &i.script,
        format!(
            "n=$(cat {w}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {w}/n\n\
             case $n in 1|4) f=full-$n.xb; head -c 100 /dev/urandom > {d}/$f; printf 'ok\\n%s' $f > {last};;\n\
             *) f=incr-$n.xb; head -c 50 /dev/urandom > {d}/$f;; esac\n\
             printf 'ok\\n%s\\n' $f > {log}\n\
             test \"$UBACKUP_INSTANCE\" = mysql3306 && test \"$UBACKUP_BACK_DIR\" = {d} && test -n \"$UBACKUP_RUN_START\"\n",
            w = env.work.path().display(),
            last = last.display(),
        ),
    )
    .unwrap();
    let cfg = env.toml(&[&i], "", "");
    let mut runs = Vec::new();
    for _ in 0..5 {
        assert!(once(&cfg, &[]).status.success());
        runs.push(one(&env.take_jobs()).clone());
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in &runs {
        assert_eq!(r["v"], 1);
        assert_eq!(r["success"], true, "{r}");
        assert!(r["checksum"].as_str().unwrap().starts_with("xxh128:"));
        assert_eq!(r["port"], env.daemon.port());
        ubackup_messages::Job::parse(r.to_string().as_bytes()).unwrap();
    }
    let t = |k: usize| runs[k]["create_time_ms"].as_i64().unwrap();
    let full_time = |k: usize| t(k) / 1000 * 1000; // line 3 is in seconds, as UBackup wrote it
    let chain: Vec<(Value, i64, Value, i64)> = runs
        .iter()
        .map(|r| {
            (
                r["last_all_filename"].clone(),
                r["last_all_time_ms"].as_i64().unwrap(),
                r.get("prev_filename").cloned().unwrap_or(Value::Null),
                r.get("prev_time_ms").and_then(Value::as_i64).unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [
            (Value::Null, 0, Value::Null, 0),
            ("full-1.xb".into(), full_time(0), Value::Null, 0),
            ("full-1.xb".into(), full_time(0), "incr-2.xb".into(), t(1)),
            (Value::Null, 0, Value::Null, 0),
            ("full-4.xb".into(), full_time(3), Value::Null, 0),
        ]
    );
    // The full's time sits on a line of its own.
    let text = std::fs::read_to_string(&last).unwrap();
    assert_eq!(text, format!("ok\nfull-4.xb\n{}\n", t(3) / 1000));
}

#[test]
fn legacy_incremental_names_the_full_as_ubackup_did() {
    let Some(env) = env() else { return };
    let i = env.inst("m1", true, "");
    let last = i.last_all_log.clone().unwrap();
    std::fs::write(i.back_dir.join("base.xb"), b"full").unwrap();
    std::fs::write(&last, "ok\nbase.xb\n1480000000\n").unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "inc.xb", 7)).unwrap();
    let cfg = env.ini(&[&i], "", "");
    assert!(once(&cfg, &[]).status.success());
    let jobs = env.take_jobs();
    let m = one(&jobs);
    check_legacy_shape(m);
    assert_eq!(
        (m["last_all_filename"].as_str(), m["last_all_time"].as_i64()),
        (Some("base.xb"), Some(1480000000))
    );
}

/// Runs one instance whose script is `script` and returns its (failure) message.
fn failing(env: &Env, name: &'static str, script: &str, section: &str) -> (Value, Output) {
    let i = env.inst(name, false, script);
    let cfg = env.ini(&[&i], "", section);
    let out = once(&cfg, &[]);
    let jobs = env.take_jobs();
    let m = one(&jobs).clone();
    check_legacy_shape(&m);
    assert_eq!(m["success"], false, "{m}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed backup is exit status 1"
    );
    (m, out)
}

#[test]
fn wrong_sends_the_scripts_whole_error_text() {
    let Some(env) = env() else { return };
    let log = env.work.path().join("w.log");
    let (m, _) = failing(
        &env,
        "w",
        &format!(
            "printf 'wrong\\nxtrabackup: disk full on /data\\n' > {}",
            log.display()
        ),
        "",
    );
    assert_eq!(m["log"], "xtrabackup: disk full on /data");
    assert_eq!(m["filename"], Value::Null);
}

#[test]
fn non_zero_exit_carries_status_and_stderr_tail() {
    let Some(env) = env() else { return };
    let (m, _) = failing(
        &env,
        "x",
        "echo 'mysqldump: Got error 2002' >&2; exit 3",
        "",
    );
    let log = m["log"].as_str().unwrap();
    assert!(
        log.starts_with("execute backup script error: exit status 3"),
        "{log}"
    );
    assert!(log.contains("mysqldump: Got error 2002"), "{log}");
}

fn alive(pid: i32) -> bool {
    // A zombie is dead: only its exit status is left.
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let Some(env) = env() else { return };
    let pidfile = env.work.path().join("bg.pid");
    let t = Instant::now();
    let (m, _) = failing(
        &env,
        "slow",
        &format!("sleep 300 & echo $! > {}\nsleep 300", pidfile.display()),
        "timeout = 1",
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let log = m["log"].as_str().unwrap();
    assert!(
        log.contains("timed out after 1s, process group killed"),
        "{log}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(pid),
        "the script's background child {pid} was left running"
    );
}

#[test]
fn a_log_without_second_line_is_a_clear_failure() {
    let Some(env) = env() else { return };
    let log = env.work.path().join("n.log");
    let (m, _) = failing(
        &env,
        "n",
        &format!("printf 'ok\\n' > {}", log.display()),
        "",
    );
    assert_eq!(
        m["log"],
        format!(
            "back_log {} says ok but has no line 2 (the backup file name)",
            log.display()
        )
    );
}

#[test]
fn a_back_log_not_rewritten_is_stale_not_yesterdays_file() {
    let Some(env) = env() else { return };
    let i = env.inst("st", false, "");
    std::fs::write(
        &i.script,
        ok_script(&i.back_dir, &i.back_log, "day1.rdb", 10),
    )
    .unwrap();
    let cfg = env.ini(&[&i], "", "");
    assert!(once(&cfg, &[]).status.success());
    assert_eq!(one(&env.take_jobs())["filename"], "day1.rdb");
    // Next run: exits 0 without touching the log.
    std::fs::write(&i.script, "true\n").unwrap();
    let out = once(&cfg, &[]);
    assert_eq!(out.status.code(), Some(1));
    let jobs = env.take_jobs();
    let m = one(&jobs);
    assert_eq!(m["success"], false);
    assert_eq!(m["filename"], Value::Null, "never yesterday's file again");
    assert!(
        m["log"]
            .as_str()
            .unwrap()
            .contains("was not rewritten during this run"),
        "{m}"
    );
}

#[test]
fn names_that_escape_back_dir_are_refused() {
    let Some(env) = env() else { return };
    let secret = env.work.path().join("secret.txt");
    std::fs::write(&secret, b"s").unwrap();
    for (k, name) in ["../../etc/passwd", "/etc/passwd", "link"]
        .iter()
        .enumerate()
    {
        let i = env.inst(["e0", "e1", "e2"][k], false, "");
        let _ = std::os::unix::fs::symlink(&secret, i.back_dir.join("link"));
        std::fs::write(
            &i.script,
            format!("printf 'ok\\n{name}\\n' > {}", i.back_log.display()),
        )
        .unwrap();
        let cfg = env.ini(&[&i], "", "");
        assert_eq!(once(&cfg, &[]).status.code(), Some(1));
        let jobs = env.take_jobs();
        let m = one(&jobs);
        assert_eq!(m["success"], false);
        let log = m["log"].as_str().unwrap();
        assert!(log.contains("leaves back_dir"), "{name}: {log}");
        assert_eq!(m["filename"], Value::Null, "an escaping name is never sent");
    }
}

#[test]
fn a_missing_backup_file_is_a_clear_failure() {
    let Some(env) = env() else { return };
    let log = env.work.path().join("mf.log");
    let (m, _) = failing(
        &env,
        "mf",
        &format!("printf 'ok\\ngone.rdb\\n' > {}", log.display()),
        "",
    );
    let text = m["log"].as_str().unwrap();
    assert!(
        text.contains("names \"gone.rdb\" but") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn wrong_rsync_model_is_caught_by_the_self_check() {
    let Some(env) = env() else { return };
    let i = env.inst("sc", false, "");
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "d.rdb", 10)).unwrap();
    // The module exists, but the sub-path is another directory.
    let cfg = env.ini(&[&i], "self_check = on", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("rsync_model = backup/sc", "rsync_model = backup/elsewhere");
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(1));
    let jobs = env.take_jobs();
    let m = one(&jobs);
    let log = m["log"].as_str().unwrap();
    assert!(log.starts_with("self-check: rsyncd on port"), "{log}");
    assert!(log.contains("backup/elsewhere/d.rdb"), "{log}");
    // An unknown module too.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("backup/elsewhere", "nomodule/sc");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "d2.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(1));
    let jobs = env.take_jobs();
    assert!(
        one(&jobs)["log"]
            .as_str()
            .unwrap()
            .starts_with("self-check"),
        "{jobs:?}"
    );
    // A module path that exports another directory holding a file of the same name.
    std::fs::create_dir_all(env.src.path().join("other")).unwrap();
    std::fs::write(env.src.path().join("other/d4.rdb"), b"short").unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("nomodule/sc", "backup/other");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "d4.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(1));
    let jobs = env.take_jobs();
    let log = one(&jobs)["log"].as_str().unwrap().to_string();
    assert!(
        log.contains("with 5 bytes but back_dir has 10 bytes"),
        "{log}"
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("backup/other", "nomodule/sc");
    std::fs::write(&cfg, text).unwrap();
    // And the right one passes.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("nomodule/sc", "backup/sc");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "d3.rdb", 10)).unwrap();
    assert!(once(&cfg, &[]).status.success());
    assert_eq!(one(&env.take_jobs())["success"], true);
}

#[test]
fn jobs_spooled_during_a_redis_outage_arrive_once_in_order() {
    let Some(mut env) = env() else { return };
    let i = env.inst("sp", false, "");
    let cfg = env.toml(&[&i], "", "");
    env.redis.stop();
    for n in 0..3 {
        std::fs::write(
            &i.script,
            ok_script(&i.back_dir, &i.back_log, &format!("f{n}.rdb"), 10),
        )
        .unwrap();
        let out = once(&cfg, &[]);
        assert_eq!(out.status.code(), Some(2), "jobs left in the spool: exit 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = Command::new(BIN)
        .args(["status", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("spool: 3 job(s)"),
        "{st:?}"
    );
    env.redis.restart().unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "f3.rdb", 10)).unwrap();
    assert!(once(&cfg, &[]).status.success());
    let names: Vec<String> = env
        .take_jobs()
        .iter()
        .map(|j| j["filename"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["f0.rdb", "f1.rdb", "f2.rdb", "f3.rdb"]);
}

/// `ubackup-agent run` logging to `log` (a testkit [`LoggedChild`]: killed on drop).
fn start_run(cfg: &Path, log: &Path) -> LoggedChild {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("-c").arg(cfg);
    LoggedChild::spawn(cmd.env("UBACKUP_LOG", "ubackup_agent=debug"), log).unwrap()
}

#[test]
fn spooled_jobs_survive_a_killed_agent() {
    let Some(mut env) = env() else { return };
    let i = env.inst("k", false, "");
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "k.rdb", 10)).unwrap();
    let cfg = env.toml(&[&i], "", "");
    env.redis.stop();
    let log = env.work.path().join("run.log");
    let mut d = start_run(&cfg, &log);
    let spool = env.state_dir().join("spool");
    let state = env.state_dir().join("instances").join("k.json");
    // The job is spooled and the run recorded. (A kill between the two is the crash window
    // where the restarted agent runs the instance again: at least once, never lost. Under
    // load the kill could land there, and the job would then rightly arrive twice.)
    wait_until(
        Duration::from_secs(30),
        "a spooled job and its run recorded",
        || {
            let spooled = std::fs::read_dir(&spool)
                .map(|r| {
                    r.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".job"))
                })
                .unwrap_or(false);
            spooled
                && std::fs::read_to_string(&state)
                    .map(|s| s.contains("\"spooled\""))
                    .unwrap_or(false)
        },
    );
    // kill -9: no chance to flush anything.
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    env.redis.restart().unwrap();
    let _d2 = start_run(&cfg, &log);
    wait_until(Duration::from_secs(30), "the spooled job in Redis", || {
        !env.jobs("uuzuback").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let jobs = env.take_jobs();
    // Delivered exactly once; the restarted agent did not run the instance again (its last
    // run is less than an interval ago).
    assert_eq!(one(&jobs)["filename"], "k.rdb");
    assert!(!jobs[0]["job_id"].as_str().unwrap().is_empty());
}

#[test]
fn check_config_names_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("uuzuback.conf");
    std::fs::write(&p, include_str!("data/readme-sample.conf")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[global] my_ip (line 9): not an IP address: \"127.0.0.0.1\""),
        "{err}"
    );
    std::fs::write(
        &p,
        include_str!("data/readme-sample.conf").replace("127.0.0.0.1", "10.0.0.1"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The puller's binary: built next to ours by `cargo test --workspace`. When it is missing
/// (`cargo test -p ubackup-agent` alone) it is built into a target dir of its own: the outer
/// cargo holds the lock on ours.
fn puller_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = dir.join("ubackup-puller");
    if bin.exists() {
        return bin;
    }
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let own = dir.parent().unwrap().join("agent-e2e");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-p",
        "ubackup-puller",
        "--bin",
        "ubackup-puller",
        "--target-dir",
    ])
    .arg(&own);
    if profile == "release" {
        cmd.arg("--release");
    }
    let st = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(st.success(), "building ubackup-puller");
    own.join(&profile).join("ubackup-puller")
}

#[test]
fn end_to_end_agent_redis_puller_with_the_host_checksum_verified() {
    let Some(env) = env() else { return };
    let i = env.inst("e2e", false, "");
    std::fs::write(
        &i.script,
        ok_script(&i.back_dir, &i.back_log, "dump.rdb", 300_000),
    )
    .unwrap();
    let cfg = env.toml(&[&i], "self_check = \"on\"", "");
    assert!(once(&cfg, &[]).status.success());
    let job = env.jobs("uuzuback")[0].clone();
    let root = tempfile::tempdir().unwrap();
    let node_cfg = env.work.path().join("node.toml");
    std::fs::write(
        &node_cfg,
        format!(
            "[node]\nid = \"n1\"\nip = \"127.0.0.9\"\nroot = \"{}\"\nworkers = 1\n\
             [queue]\nredis = \"{}\"\nlists = [\"uuzuback\"]\nheartbeat_secs = 1\nlease_secs = 3\nidle_poll_ms = 200\n\
             [results]\nlist = \"message\"\n[pull]\nretry = 2\nconnect_timeout_secs = 5\nstall_timeout_secs = 10\n",
            root.path().display(),
            env.redis.url()
        ),
    )
    .unwrap();
    let out = Command::new(puller_binary())
        .args(["run", "--until-idle", "--config"])
        .arg(&node_cfg)
        .env_remove("UBACKUP_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = env.jobs("message");
    let r = one(&results);
    assert_eq!(r["succeed"], 1, "{r}");
    assert_eq!(r["job_id"], job["job_id"]);
    let host_sum = job["checksum"]
        .as_str()
        .unwrap()
        .strip_prefix("xxh128:")
        .unwrap()
        .to_string();
    assert_eq!(r["checksum_algorithm"], "xxh128");
    assert_eq!(
        r["checksum"].as_str(),
        Some(host_sum.as_str()),
        "the node verified the host's checksum"
    );
    let dest = Path::new(r["file_path"].as_str().unwrap()).join("dump.rdb");
    assert_eq!(
        std::fs::read(dest).unwrap(),
        std::fs::read(i.back_dir.join("dump.rdb")).unwrap()
    );
}

#[test]
fn a_missing_back_log_is_a_clear_failure() {
    let Some(env) = env() else { return };
    let (m, _) = failing(&env, "nolog", "true", "");
    let log = m["log"].as_str().unwrap();
    assert!(
        log.starts_with("back_log ")
            && log.ends_with("does not exist (the script did not write it)"),
        "{log}"
    );
}

#[test]
fn a_push_redis_refuses_is_spooled_and_delivered_in_order() {
    let Some(env) = env() else { return };
    let i = env.inst("rf", false, "");
    let cfg = env.ini(&[&i], "", "");
    // The list's key holds a string: LPUSH answers WRONGTYPE.
    let _: () = env.conn().set("uuzuback", "not a list").unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "a.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(2));
    let _: () = env.conn().del("uuzuback").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "b.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(0));
    let names: Vec<Value> = env
        .take_jobs()
        .iter()
        .map(|j| j["filename"].clone())
        .collect();
    assert_eq!(names, ["a.rdb", "b.rdb"]);
}

#[test]
fn a_full_spool_keeps_the_oldest_and_says_so() {
    let Some(mut env) = env() else { return };
    let i = env.inst("full", false, "");
    let cfg = env.ini(&[&i], "spool_max = 2", "");
    env.redis.stop();
    let mut codes = Vec::new();
    for n in 0..3 {
        std::fs::write(
            &i.script,
            ok_script(&i.back_dir, &i.back_log, &format!("s{n}.rdb"), 10),
        )
        .unwrap();
        let out = once(&cfg, &[]);
        codes.push(out.status.code());
        if n == 2 {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("DROPPED: the spool is full (2 jobs, limit 2)"),
                "{text}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(codes, [Some(2), Some(2), Some(3)]);
    env.redis.restart().unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "s3.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(0));
    let names: Vec<Value> = env
        .take_jobs()
        .iter()
        .map(|j| j["filename"].clone())
        .collect();
    assert_eq!(names, ["s0.rdb", "s1.rdb", "s3.rdb"]);
}

/// Start and end times (ns) each script appends to a shared journal.
fn journal_script(journal: &Path, inst: &Inst, file: &str, secs: &str) -> String {
    format!(
        "echo \"start $UBACKUP_INSTANCE $(date +%s%N)\" >> {j}\nsleep {secs}\n{}\necho \"end $UBACKUP_INSTANCE $(date +%s%N)\" >> {j}",
        ok_script(&inst.back_dir, &inst.back_log, file, 10),
        j = journal.display()
    )
}

/// (instance, start, end) intervals from the journal.
fn intervals(journal: &Path) -> Vec<(String, u128, u128)> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut open: std::collections::HashMap<String, u128> = Default::default();
    let mut out = Vec::new();
    for l in text.lines() {
        let p: Vec<&str> = l.split(' ').collect();
        let t: u128 = p[2].parse().unwrap();
        match p[0] {
            "start" => {
                open.insert(p[1].to_string(), t);
            }
            _ => {
                let s = open.remove(p[1]).unwrap();
                out.push((p[1].to_string(), s, t));
            }
        }
    }
    out
}

fn max_overlap(iv: &[(String, u128, u128)]) -> usize {
    let mut ev: Vec<(u128, i32)> = iv
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    ev.sort_by_key(|&(t, d)| (t, d));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[test]
fn the_concurrency_limit_bounds_scripts_running_at_once() {
    let Some(env) = env() else { return };
    let journal = env.work.path().join("journal");
    let names = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let insts: Vec<Inst> = names.iter().map(|n| env.inst(n, false, "")).collect();
    for i in &insts {
        std::fs::write(&i.script, journal_script(&journal, i, "x.rdb", "0.3")).unwrap();
    }
    let refs: Vec<&Inst> = insts.iter().collect();
    let cfg = env.ini(&refs, "concurrency = 2", "");
    assert!(once(&cfg, &[]).status.success());
    assert_eq!(env.take_jobs().len(), 6);
    let iv = intervals(&journal);
    assert_eq!(iv.len(), 6);
    assert_eq!(max_overlap(&iv), 2, "{iv:?}");
}

#[test]
fn run_repeats_each_instance_on_its_interval_without_overlap() {
    let Some(env) = env() else { return };
    let journal = env.work.path().join("journal");
    let i = env.inst("r", false, "");
    // Each run takes longer than the 1 s interval: runs must queue up, never overlap.
    std::fs::write(&i.script, journal_script(&journal, &i, "r.rdb", "1.3")).unwrap();
    let cfg = env.ini(&[&i], "", "interval = 1");
    let log = env.work.path().join("run.log");
    let mut d = start_run(&cfg, &log);
    wait_until(Duration::from_secs(30), "three runs", || {
        intervals(&journal).len() >= 3
    });
    // SIGTERM: stops cleanly.
    d.signal("TERM");
    d.wait(Duration::from_secs(20));
    let iv = intervals(&journal);
    assert_eq!(max_overlap(&iv), 1, "{iv:?}");
    assert!(env.take_jobs().len() >= 3);
}

/// The spool's `*.job` (or `*.bad`) files, by name.
fn spool_files(env: &Env, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(env.state_dir().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn status(cfg: &Path) -> String {
    let st = Command::new(BIN)
        .args(["status", "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(st.status.success());
    String::from_utf8_lossy(&st.stdout).into_owned()
}

/// Two `once` runs with Redis down spool `names[0]` and `names[1]`.
fn spool_two(env: &mut Env, i: &Inst, cfg: &Path, names: [&str; 2]) {
    env.redis.stop();
    for n in names {
        std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, n, 10)).unwrap();
        assert_eq!(once(cfg, &[]).status.code(), Some(2));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn filenames(jobs: &[Value]) -> Vec<Value> {
    jobs.iter().map(|j| j["filename"].clone()).collect()
}

/// A spool file cut short (power loss) is set aside under a name of its own, reported
/// (exit 3, stderr, `status`, heartbeat) and never delivered; the jobs around it are.
#[test]
fn a_torn_spool_record_is_set_aside_reported_and_never_delivered() {
    let Some(mut env) = env() else { return };
    let i = env.inst("torn", false, "");
    let cfg = env.ini(&[&i], "", "");

    // 1. A record cut in half (inside its message).
    spool_two(&mut env, &i, &cfg, ["a0.rdb", "a1.rdb"]);
    let files = spool_files(&env, "job");
    assert_eq!(files.len(), 2, "{files:?}");
    let whole = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &whole[..whole.len() / 2]).unwrap();
    env.redis.restart().unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "a2.rdb", 10)).unwrap();
    let out = once(&cfg, &[]);
    assert_eq!(out.status.code(), Some(3), "a lost job is loud");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("torn or corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every message on the queue is whole JSON (`jobs` parses each), and the torn one is not
    // among them.
    assert_eq!(filenames(&env.take_jobs()), ["a1.rdb", "a2.rdb"]);
    let bad = spool_files(&env, "bad");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(std::fs::read(&bad[0]).unwrap(), &whole[..whole.len() / 2]);
    assert!(status(&cfg).contains("1 DAMAGED job(s) set aside"));

    // 2. The spool emptied, so numbering restarts: the same sequence number, cut inside its
    // first line. The first `.bad` file stays as it was.
    spool_two(&mut env, &i, &cfg, ["b0.rdb", "b1.rdb"]);
    let files = spool_files(&env, "job");
    assert_eq!(
        files[0].file_name().unwrap(),
        "00000000000000000001.job",
        "{files:?}"
    );
    let first = std::fs::read(&files[0]).unwrap();
    let line = first.iter().position(|&b| b == b'\n').unwrap();
    std::fs::write(&files[0], &first[..line / 2]).unwrap();
    env.redis.restart().unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "b2.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(3));
    assert_eq!(filenames(&env.take_jobs()), ["b1.rdb", "b2.rdb"]);
    let bad2 = spool_files(&env, "bad");
    assert_eq!(bad2.len(), 2, "{bad2:?}");
    assert!(bad2.contains(&bad[0]));
    assert_eq!(std::fs::read(&bad[0]).unwrap(), &whole[..whole.len() / 2]);
    let st = status(&cfg);
    assert!(st.contains("2 DAMAGED job(s) set aside"), "{st}");
    let hb: std::collections::HashMap<String, String> =
        env.conn().hgetall("ubackup:agent:111111").unwrap();
    assert_eq!(hb["spool_bad"], "2", "{hb:?}");

    // 3. A pass with nothing damaged is clean again (the `.bad` files stay for the operator).
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "c0.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(0));
    assert_eq!(filenames(&env.take_jobs()), ["c0.rdb"]);
}

/// Redis comes back while the backup script runs and the spool is full: the waiting jobs
/// go first, then the new one; nothing is dropped.
#[test]
fn a_full_spool_is_drained_before_a_new_job_is_refused() {
    let Some(mut env) = env() else { return };
    let i = env.inst("back", false, "");
    let cfg = env.ini(&[&i], "spool_max = 2", "");
    spool_two(&mut env, &i, &cfg, ["s0.rdb", "s1.rdb"]);
    std::fs::write(
        &i.script,
        format!(
            "sleep 3\n{}",
            ok_script(&i.back_dir, &i.back_log, "s2.rdb", 10)
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .arg("once")
        .arg("-c")
        .arg(&cfg)
        .env_remove("UBACKUP_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    env.redis.restart().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("back: ok s2.rdb (10 bytes); pushed"),
        "{text}"
    );
    assert_eq!(filenames(&env.take_jobs()), ["s0.rdb", "s1.rdb", "s2.rdb"]);
}

#[test]
fn two_sections_with_one_type_and_instance_are_refused_and_ids_name_the_section() {
    let Some(env) = env() else { return };
    let a = env.inst("data1", false, "");
    let b = env.inst("data2", false, "");
    let cfg = env.toml(&[&a, &b], "", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let clash = env.work.path().join("clash.toml");
    std::fs::write(&clash, text.replace("instance = 3307", "instance = 3306")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&clash)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("instances.data2")
            && err.contains("same back_type (mysql) and instance (3306) as instances.data1"),
        "{err}"
    );
    // Distinct sections: each job's id names its section, and the ids differ.
    for x in [&a, &b] {
        std::fs::write(&x.script, ok_script(&x.back_dir, &x.back_log, "d.rdb", 10)).unwrap();
    }
    assert_eq!(once(&cfg, &[]).status.code(), Some(0));
    let jobs = env.take_jobs();
    assert_eq!(jobs.len(), 2);
    let mut ids: Vec<&str> = jobs.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    ids.sort();
    assert!(
        ids[0].contains("-data1-") && ids[1].contains("-data2-"),
        "{ids:?}"
    );
}

/// A host upgraded during an outage: the previous version's spool files (no record header)
/// are delivered; one of them cut short is set aside, not delivered.
#[test]
fn jobs_spooled_by_the_previous_version_are_still_delivered_whole() {
    let Some(env) = env() else { return };
    let i = env.inst("upg", false, "");
    let cfg = env.ini(&[&i], "", "");
    let spool = env.state_dir().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let old = |n: &str| format!("uuzuback\n{{\"filename\":\"{n}\",\"instance\":6379}}");
    std::fs::write(spool.join("00000000000000000001.job"), old("o1.rdb")).unwrap();
    let torn = old("o2.rdb");
    std::fs::write(
        spool.join("00000000000000000002.job"),
        &torn.as_bytes()[..torn.len() - 3],
    )
    .unwrap();
    std::fs::write(spool.join("00000000000000000003.job"), old("o3.rdb")).unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "n.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(3));
    assert_eq!(filenames(&env.take_jobs()), ["o1.rdb", "o3.rdb", "n.rdb"]);
    assert_eq!(spool_files(&env, "bad").len(), 1);
    assert!(spool_files(&env, "job").is_empty());
}

/// A TLS-fronted host (a real stunnel in front of its rsyncd, requiring client certificates):
/// the self-check asks through the terminator, as the nodes do, verifying this host's
/// certificate for `my_ip`; a CA that did not sign it fails the backup at the source.
#[test]
fn the_self_check_asks_a_tls_fronted_rsyncd_through_its_terminator() {
    use ubackup_testkit::{require_stunnel, Stunnel, TestCa, Usage};
    if require_stunnel().is_none() {
        return;
    }
    let Some(env) = env() else { return };
    let ca = TestCa::new("fleet CA").unwrap();
    let stunnel = Stunnel::start(
        env.daemon.addr(),
        &ca.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        Some(&ca),
    )
    .unwrap();
    let ca_file = env.work.path().join("ca.crt");
    ca.write(&ca_file).unwrap();
    let (cert, key) = ca
        .issue(&["db1.example"], Usage::Client)
        .unwrap()
        .write(env.work.path(), "host")
        .unwrap();
    let i = env.inst("tls", false, "");
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "t1.rdb", 10)).unwrap();
    let global = format!(
        "self_check = on\nself_check_tls_port = {}\nself_check_tls_ca_file = {}\n\
         self_check_tls_cert_file = {}\nself_check_tls_key_file = {}\n",
        stunnel.port(),
        ca_file.display(),
        cert.display(),
        key.display()
    );
    let cfg = env.ini(&[&i], &global, "");
    let out = once(&cfg, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(one(&env.take_jobs())["success"], true);
    assert!(
        stunnel.log().contains("accepted connection"),
        "{}",
        stunnel.log()
    );

    // Another CA: this host's certificate is not trusted, the backup fails at the source.
    TestCa::new("someone else")
        .unwrap()
        .write(&ca_file)
        .unwrap();
    std::fs::write(&i.script, ok_script(&i.back_dir, &i.back_log, "t2.rdb", 10)).unwrap();
    assert_eq!(once(&cfg, &[]).status.code(), Some(1));
    let jobs = env.take_jobs();
    let log = one(&jobs)["log"].as_str().unwrap().to_string();
    assert!(log.starts_with("self-check: TLS"), "{log}");
    assert!(log.contains("not signed by a trusted CA"), "{log}");
}
