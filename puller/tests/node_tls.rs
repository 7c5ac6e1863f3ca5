//! `ubackup-puller run` pulling UBackup's jobs (the exact JSON the old client LPUSHes, which
//! names the host only by `game_server_ip`) from a real `rsync --daemon` (3.5.0) behind a real
//! stunnel (Debian's `stunnel4`), with a real `redis-server`: mutual TLS configured in
//! UBackup's own INI file, a wrong CA that fails the job once and writes nothing, and a
//! certificate rotation by SIGHUP.
//!
//! A missing rsync, redis-server or stunnel skips, or fails when `UBACKUP_INTEROP=required`.
//! Every wait has a deadline; every child process is killed on drop.

// Test helpers fail the test on any setup error; a panic is the report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Commands as _;
use ubackup_messages::{parse_result, PullResult};
use ubackup_testkit::{
    compare_files, free_port, http::get_http10, list_tree, require_stunnel, wait_until,
    LoggedChild, Site, Stunnel, TestCa, Usage,
};

const BIN: &str = env!("CARGO_BIN_EXE_ubackup-puller");

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
    require_stunnel()?;
    Site::start().map(Env)
}

impl Env {
    /// The UBackup client's message for `name`: no port, the host only as an address.
    fn legacy_job(&self, name: &str, size: u64, instance: i64) -> String {
        serde_json::json!({
            "filename": name, "last_all_filename": null, "last_all_time": 0, "size": size,
            "log": "ok", "create_time": 1_700_000_000i64, "success": true, "server_id": "S1",
            "game_id": 7, "op_id": 0, "game_server_ip": "127.0.0.1", "back_type": "mysql",
            "instance": instance, "rsync_model": "backup", "interval": 3600
        })
        .to_string()
    }

    fn push(&self, msg: &str) {
        let _: i64 = self.conn().lpush("level1", msg).unwrap();
    }

    /// Results, oldest first.
    fn results(&self) -> Vec<PullResult> {
        let raw: Vec<Vec<u8>> = self.conn().lrange("message", 0, -1).unwrap();
        raw.iter()
            .rev()
            .map(|r| parse_result(r).expect("a result"))
            .collect()
    }

    fn wait_results(&self, n: usize, node: &mut Node) -> Vec<PullResult> {
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        loop {
            let r = self.results();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} results after {limit:?}: {r:#?}\nnode log:\n{}",
                r.len(),
                node.log()
            );
            if let Some(status) = node.try_exit() {
                panic!("node exited ({status:?}):\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where UBackup's layout puts the jobs of 127.0.0.1.
    fn dest_dir(&self) -> PathBuf {
        self.root.path().join("mysql/127.0.0/1")
    }

    /// A TOML node config reaching every host over TLS on `tls_port`.
    fn toml(&self, tls_port: u16, pki: &Pki, extra: &str) -> PathBuf {
        let text = format!(
            r#"[node]
id = "n1"
ip = "127.0.0.9"
root = "{root}"
workers = 2
shutdown_grace_secs = 5

[queue]
redis = "{redis}"
lists = ["level1"]
heartbeat_secs = 1
lease_secs = 3
idle_poll_ms = 200

[pull]
retry = 3
connect_timeout_secs = 5
stall_timeout_secs = 10
rsync_port = {plain}

[log]
level = "info,ubackup_puller=debug"

[tls]
enabled = true
port = {tls_port}
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
{extra}
"#,
            root = self.root.path().display(),
            redis = self.redis.url(),
            plain = self.daemon.port(),
            ca = pki.ca_file.display(),
            cert = pki.cert.display(),
            key = pki.key.display(),
        );
        let p = self.work.path().join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The node's PKI files: the CA it trusts and its client certificate, at fixed paths (a
/// rotation rewrites them in place).
struct Pki {
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn write(dir: &Path, trusted: &TestCa, issuer: &TestCa) -> Pki {
        let ca_file = dir.join("ca.crt");
        trusted.write(&ca_file).unwrap();
        let (cert, key) = issuer
            .issue(&["node1.example"], Usage::Client)
            .unwrap()
            .write(dir, "node")
            .unwrap();
        Pki { ca_file, cert, key }
    }
}

/// A running `ubackup-puller run` (a testkit [`LoggedChild`]: killed on drop).
struct Node(LoggedChild);

impl std::ops::Deref for Node {
    type Target = LoggedChild;
    fn deref(&self) -> &LoggedChild {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut LoggedChild {
        &mut self.0
    }
}

impl Node {
    fn start(config: &Path, until_idle: bool) -> Node {
        let log = config.with_extension(format!("log.{}", rand::random::<u32>()));
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("--config").arg(config);
        if until_idle {
            cmd.arg("--until-idle");
        }
        Node(LoggedChild::spawn(cmd.env_remove("UBACKUP_LOG"), log).unwrap())
    }

    /// Waits until the log holds `text` `n` times.
    fn wait_log(&self, text: &str, n: usize) {
        self.0.wait_log(text, n, Duration::from_secs(15));
    }
}

/// The node's heartbeat field `name`.
fn heartbeat(env: &Env, name: &str) -> u64 {
    let v: Option<String> = env.conn().hget("ubackup:node:n1", name).unwrap();
    v.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// UBackup's own `uuzuback.conf`, unchanged but for the new TLS keys: the host is listed in
/// `tls_hosts` (TLS is off by default), its stunnel requires the node's client certificate
/// (`verify = 2`), and the certificate names the host by its address (the IP SAN, the
/// default name for a job that carries only `game_server_ip`).
#[test]
fn ubackup_jobs_are_pulled_over_mutual_tls_configured_in_the_legacy_ini() {
    let Some(env) = env() else { return };
    let ca = TestCa::new("fleet CA").unwrap();
    let stunnel = Stunnel::start(
        env.daemon.addr(),
        &ca.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        Some(&ca),
    )
    .unwrap();
    let pki = Pki::write(env.work.path(), &ca, &ca);
    let files = [("big.sql", 3_000_000, 1), ("small.sql", 10_000, 2)];
    for (i, (name, size, seed)) in files.iter().enumerate() {
        env.file(name, *size, *seed);
        env.push(&env.legacy_job(name, *size, i as i64));
    }
    let ini = format!(
        "[global]\nwork_thread = 2 #threads\nserver_root_path = {root}\nreserve = 0\n\
         redis_host = 127.0.0.1\nredis_port = {redis}\nredis_queue = level1 uuzuback_f\n\
         myip = 127.0.0.9\nretry = 2\nmessage_redis_host=127.0.0.1\n\
         message_redis_port={redis}\nmessage_queue=message\nnode_id=5\n\
         rsync_port = {plain}\n\
         tls = no\ntls_hosts = 127.0.0.0/8\ntls_port = {tls}\ntls_ca_file = {ca}\n\
         tls_cert_file = {cert}\ntls_key_file = {key}\n",
        root = env.root.path().display(),
        redis = env.redis.port(),
        plain = env.daemon.port(),
        tls = stunnel.port(),
        ca = pki.ca_file.display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let config = env.work.path().join("uuzuback.conf");
    std::fs::write(&config, ini).unwrap();

    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        out.contains("tls.cert_file") && out.contains("valid until"),
        "{out}"
    );
    assert!(out.contains("goes with its certificate"), "{out}");

    let mut node = Node::start(&config, true);
    let status = node.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "{status}: {}\n{}",
        node.log(),
        stunnel.log()
    );
    let results = env.results();
    assert_eq!(results.len(), 2, "{results:#?}");
    assert!(results.iter().all(|r| r.succeeded()), "{results:#?}");
    for (name, ..) in files {
        compare_files(&env.src.path().join(name), &env.dest_dir().join(name)).unwrap();
    }
    // Through stunnel, not around it: it logged the node's connections.
    assert!(
        stunnel.log().contains("accepted connection"),
        "{}",
        stunnel.log()
    );

    // Without its client certificate the node is refused, and the job fails once.
    let config_text = std::fs::read_to_string(&config).unwrap();
    let no_cert = config_text
        .lines()
        .filter(|l| !l.starts_with("tls_cert_file") && !l.starts_with("tls_key_file"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, no_cert).unwrap();
    env.file("third.sql", 5_000, 3);
    env.push(&env.legacy_job("third.sql", 5_000, 9));
    let mut node = Node::start(&config, true);
    let status = node.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", node.log());
    let results = env.results();
    let third = results.last().unwrap();
    assert!(!third.succeeded(), "{third:#?}");
    assert!(third.log.contains("client certificate"), "{}", third.log);
    assert_eq!(third.attempts, 1, "a refused certificate is not retried");
    assert!(!env.dest_dir().join("third.sql").exists());
}

/// A node that does not trust the host's CA fails the job at the first attempt (a
/// certificate problem is not retried) and writes nothing under the destination.
#[test]
fn a_wrong_ca_fails_the_job_once_and_writes_nothing() {
    let Some(env) = env() else { return };
    let ca = TestCa::new("fleet CA").unwrap();
    let stunnel = Stunnel::start(
        env.daemon.addr(),
        &ca.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        None,
    )
    .unwrap();
    let other = TestCa::new("someone else").unwrap();
    let pki = Pki::write(env.work.path(), &other, &other);
    env.file("dump.sql", 200_000, 5);
    env.push(&env.legacy_job("dump.sql", 200_000, 1));
    let config = env.toml(stunnel.port(), &pki, "");
    let mut node = Node::start(&config, true);
    let status = node.wait(Duration::from_secs(60));
    assert!(status.success(), "{status}: {}", node.log());
    let results = env.results();
    assert_eq!(results.len(), 1, "{results:#?}");
    let r = &results[0];
    assert!(!r.succeeded(), "{r:#?}");
    assert!(r.log.contains("not signed by a trusted CA"), "{}", r.log);
    assert_eq!(r.attempts, 1, "{r:#?}");
    let written = list_tree(&env.dest_dir()).unwrap_or_default();
    assert!(written.is_empty(), "wrote {written:?}");
    let left: i64 = env.conn().llen("level1").unwrap();
    assert_eq!(left, 0, "the job is not put back to fail again");
}

/// Certificates rotate by SIGHUP: a bad new CA file is refused loudly and the node goes on
/// with the old one; then the host moves to a new CA (new server certificate, and its stunnel
/// now requires client certificates of the new CA), the node's files are rewritten in place
/// and after SIGHUP the next pull uses them. Heartbeat and `/metrics` count the TLS pulls and
/// the handshake failure in between.
#[test]
fn sighup_rotates_the_certificates_without_a_restart() {
    let Some(env) = env() else { return };
    let ca1 = TestCa::new("fleet CA 2025").unwrap();
    let old = Stunnel::start(
        env.daemon.addr(),
        &ca1.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        Some(&ca1),
    )
    .unwrap();
    let pki = Pki::write(env.work.path(), &ca1, &ca1);
    let metrics = free_port().unwrap();
    let config = env.toml(
        old.port(),
        &pki,
        &format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"),
    );
    let mut node = Node::start(&config, false);
    let pull = |env: &Env, node: &mut Node, name: &str, n: usize| -> PullResult {
        env.file(name, 100_000, n as u64);
        env.push(&env.legacy_job(name, 100_000, n as i64));
        env.wait_results(n, node).pop().unwrap()
    };
    let r = pull(&env, &mut node, "one.sql", 1);
    assert!(r.succeeded(), "{r:#?}");

    // A broken CA file: not reloaded, said at error level, the old certificates go on.
    std::fs::write(
        &pki.ca_file,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    node.signal("HUP");
    node.wait_log("TLS NOT RELOADED", 1);
    let r = pull(&env, &mut node, "two.sql", 2);
    assert!(r.succeeded(), "{r:#?}\n{}", node.log());

    // The host moves to the new CA; the node still has the old one: refused.
    let ca2 = TestCa::new("fleet CA 2026").unwrap();
    let new = Stunnel::start(
        env.daemon.addr(),
        &ca2.issue(&["127.0.0.1"], Usage::Server).unwrap(),
        Some(&ca2),
    )
    .unwrap();
    ca1.write(&pki.ca_file).unwrap();
    let port_line = format!("port = {}", old.port());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&port_line));
    std::fs::write(
        &config,
        text.replace(&port_line, &format!("port = {}", new.port())),
    )
    .unwrap();
    node.signal("HUP");
    node.wait_log("TLS reloaded", 1);
    let r = pull(&env, &mut node, "three.sql", 3);
    assert!(!r.succeeded(), "{r:#?}");
    assert!(r.log.contains("not signed by a trusted CA"), "{}", r.log);

    // Rotation: the new CA and a client certificate it issued, in place; SIGHUP; pulled.
    let rotated = Pki::write(env.work.path(), &ca2, &ca2);
    assert_eq!(rotated.ca_file, pki.ca_file);
    node.signal("HUP");
    node.wait_log("TLS reloaded", 2);
    let r = pull(&env, &mut node, "four.sql", 4);
    assert!(r.succeeded(), "{r:#?}\n{}\n{}", node.log(), new.log());
    compare_files(
        &env.src.path().join("four.sql"),
        &env.dest_dir().join("four.sql"),
    )
    .unwrap();

    wait_until(
        Duration::from_secs(15),
        "the heartbeat's TLS counters",
        || heartbeat(&env, "pulls_tls") == 3 && heartbeat(&env, "tls_handshake_failures") == 1,
    );
    assert_eq!(heartbeat(&env, "pulls_plain"), 0);
    let text = get_http10(metrics, "/metrics").unwrap();
    assert!(
        text.contains("ubackup_pulls_total{transport=\"tls\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("ubackup_pulls_total{transport=\"plain\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("\nubackup_tls_handshake_failures_total 1\n"),
        "{text}"
    );
    node.signal("TERM");
    let status = node.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", node.log());
}
