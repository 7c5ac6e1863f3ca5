//! A real Redis high-availability set on loopback: one master, one replica and three
//! `redis-sentinel` processes, each on a port picked at run time and in its own temp dir,
//! all killed on `Drop`.
//!
//! The Sentinels run with a short `down-after-milliseconds` (1 s) so that a test sees a
//! failover within a few seconds of killing or freezing the master. Every wait is bounded.

use crate::process::free_port;
use std::io::{BufReader, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::redis::{require_redis, RedisServer};
use crate::rsync::interop_required;

/// The master name the Sentinels monitor.
pub const MASTER_NAME: &str = "ubackup";

/// `redis-sentinel` on PATH, or None (panics instead when `UBACKUP_INTEROP=required`).
pub fn require_sentinel() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-sentinel"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if interop_required() => panic!(
            "redis-sentinel is required (UBACKUP_INTEROP=required) but not on PATH; \
             install it with `apt-get install -y redis-sentinel`"
        ),
        None => {
            eprintln!("SKIP: redis-sentinel not on PATH");
            None
        }
    }
}

/// One running `redis-sentinel`.
#[derive(Debug)]
pub struct Sentinel {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sentinel {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, a replica and three Sentinels.
#[derive(Debug)]
pub struct SentinelSet {
    /// The servers; `servers[0]` is the first master, `servers[1..]` its replicas. After a
    /// failover the roles are swapped: ask [`SentinelSet::master_port`].
    pub servers: Vec<RedisServer>,
    /// The three Sentinels.
    pub sentinels: Vec<Sentinel>,
}

/// Sends one inline command and reads one RESP reply, flattened to its bulk strings and
/// simple strings (enough for ROLE, INFO and SENTINEL replies).
pub fn query(port: u16, command: &str) -> anyhow::Result<Vec<String>> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    read_value(&mut r, &mut out, 0)?;
    Ok(out)
}

fn read_value(
    r: &mut impl std::io::BufRead,
    out: &mut Vec<String>,
    depth: u32,
) -> anyhow::Result<()> {
    if depth > 8 {
        bail!("reply nested too deeply");
    }
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    let (tag, rest) = line.split_at_checked(1).context("empty reply")?;
    match tag {
        "+" | ":" => out.push(rest.to_string()),
        "-" => bail!("error reply: {rest}"),
        "$" => {
            let n: i64 = rest.parse()?;
            if n >= 0 {
                let n = usize::try_from(n)?.min(1 << 20);
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                out.push(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        "*" => {
            let n: i64 = rest.parse()?;
            for _ in 0..n.clamp(0, 1024) {
                read_value(r, out, depth + 1)?;
            }
        }
        _ => bail!("unexpected reply {line:?}"),
    }
    Ok(())
}

impl SentinelSet {
    /// Starts the set and waits until every Sentinel knows the replica and the other
    /// Sentinels, or returns None when a binary is missing and not required.
    pub fn start() -> Option<SentinelSet> {
        Self::start_with_replicas(1)
    }

    /// Like [`SentinelSet::start`], with `replicas` replicas (`servers[1..]`).
    pub fn start_with_replicas(replicas: usize) -> Option<SentinelSet> {
        require_redis()?;
        let sentinel = require_sentinel()?;
        match Self::try_start(&sentinel, replicas.max(1)) {
            Ok(s) => Some(s),
            Err(e) => panic!("cannot start the Sentinel set: {e:#}"),
        }
    }

    fn try_start(binary: &PathBuf, replicas: usize) -> anyhow::Result<SentinelSet> {
        let master = RedisServer::start().context("redis-server")?;
        let mport = master.port().to_string();
        let mut servers = vec![master];
        for _ in 0..replicas {
            // A replica must never be an automatic master of its own after a restart by a
            // test: the Sentinels reconfigure it anyway.
            servers.push(
                RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport])
                    .context("redis-server")?,
            );
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(binary, servers[0].port())?);
        }
        let set = SentinelSet { servers, sentinels };
        set.wait_ready(Duration::from_secs(30))?;
        Ok(set)
    }

    fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.sentinels.iter().all(|s| {
                let Ok(info) = query(s.port, &format!("SENTINEL MASTER {MASTER_NAME}")) else {
                    return false;
                };
                let field = |name: &str| {
                    info.iter()
                        .position(|v| v == name)
                        .and_then(|i| info.get(i + 1))
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                field("num-slaves") as usize >= self.servers.len() - 1
                    && field("num-other-sentinels") >= 2
            });
            let synced = self.servers[1..].iter().all(|r| {
                query(r.port(), "ROLE")
                    .map(|r| r.get(3).is_some_and(|s| s == "connected"))
                    .unwrap_or(false)
            });
            if ready && synced {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.sentinels.iter().map(Sentinel::log).collect();
                bail!("Sentinels not ready within {within:?}: {logs:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT` of each Sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Sentinel::addr).collect()
    }

    /// The master's port as the first Sentinel that answers reports it.
    pub fn master_port(&self) -> anyhow::Result<u16> {
        for s in &self.sentinels {
            if let Ok(r) = query(
                s.port,
                &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER_NAME}"),
            ) {
                if let Some(p) = r.get(1).and_then(|p| p.parse().ok()) {
                    return Ok(p);
                }
            }
        }
        bail!("no Sentinel answered")
    }

    /// The index in `servers` of the current master.
    pub fn master_index(&self) -> anyhow::Result<usize> {
        let port = self.master_port()?;
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .context("the master is none of ours")
    }

    /// Waits until the Sentinels name a master other than the server on `old_port` and that
    /// server answers ROLE with `master`.
    pub fn wait_failover(&self, old_port: u16, within: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(p) = self.master_port() {
                if p != old_port
                    && query(p, "ROLE").is_ok_and(|r| r.first().is_some_and(|s| s == "master"))
                {
                    return Ok(p);
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.sentinels.iter().map(Sentinel::log).collect();
                bail!("no failover within {within:?}: {logs:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_sentinel(binary: &PathBuf, master_port: u16) -> anyhow::Result<Sentinel> {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display(),
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("sentinel.log"))?;
        let child = Command::new(binary)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning redis-sentinel")?;
        let mut s = Sentinel {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while Instant::now() < deadline {
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    last = Some(anyhow::anyhow!("sentinel exited ({status}): {}", s.log()));
                    break;
                }
            }
            if query(port, "PING").is_ok_and(|r| r.first().is_some_and(|p| p == "PONG")) {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if up {
            return Ok(s);
        }
        s.kill();
    }
    bail!("cannot start redis-sentinel: {last:?}")
}
