//! A real `redis-server` on a loopback port picked at run time, in its own temp dir, killed
//! on `Drop`. It can be restarted on the same port and data directory (with the append-only
//! file on, so nothing acknowledged is lost across the restart), to test reconnects.

use crate::process::free_port;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::rsync::interop_required;

/// `redis-server` on PATH, or None (panics instead when `UBACKUP_INTEROP=required`).
pub fn require_redis() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if interop_required() => panic!(
            "redis-server is required (UBACKUP_INTEROP=required) but not on PATH; \
             install it with `apt-get install -y redis-server`"
        ),
        None => {
            eprintln!("SKIP: redis-server not on PATH");
            None
        }
    }
}

/// A running redis-server.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Arguments after the testkit's own (the last of a repeated directive wins).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server, or returns None when redis-server is missing and not required.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with `extra` arguments after the testkit's own (e.g.
    /// `["--appendonly", "no"]` for a server that loads `dump.rdb` at start); they apply to
    /// every restart too.
    pub fn start_with(extra: &[&str]) -> Option<RedisServer> {
        let binary = require_redis()?;
        let mut last = None;
        for _ in 0..5 {
            let mut s = RedisServer {
                binary: binary.clone(),
                port: match free_port() {
                    Ok(p) => p,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                },
                dir: match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(e) => panic!("temp dir: {e}"),
                },
                child: None,
                extra: extra.iter().map(|a| a.to_string()).collect(),
            };
            match s.spawn() {
                Ok(()) => return Some(s),
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot start redis-server: {last:?}");
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning redis-server")?;
        let mut child = child;
        let pid = child.id();
        // Up to 30 s: a loaded CI machine replaying an append-only file can be slow.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server exited at once ({status}): {}", self.log());
            }
            // The answer must come from this child, not from a server that still holds the
            // port (this child would then fail to bind and exit).
            if self.ping() && self.answering_pid() == Some(pid) {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Never leave a server we gave up on running: a retry would start a second one on
        // the same data directory.
        let _ = child.kill();
        let _ = child.wait();
        bail!("redis-server did not answer: {}", self.log())
    }

    /// The `process_id` of the server answering on the port (inline `INFO server`).
    fn answering_pid(&self) -> Option<u32> {
        use std::io::{Read as _, Write as _};
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.write_all(b"INFO server\r\n").ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while buf.len() < 64 * 1024 {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(chunk.get(..n)?);
            let text = String::from_utf8_lossy(&buf);
            if let Some(rest) = text.split("process_id:").nth(1) {
                if let Some((id, _)) = rest.split_once('\r') {
                    return id.trim().parse().ok();
                }
            }
        }
        None
    }

    fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SIGTERM: the append-only file is flushed) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to the server with kill(1).
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(c) = self.child.as_ref() else {
            bail!("redis-server is not running");
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{signal} failed: {status}");
        }
        Ok(())
    }

    /// Kills the server with SIGKILL (no flush, no goodbye: a crash) and reaps it. `restart`
    /// starts it again on the same port and data directory.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        Ok(())
    }

    /// Freezes the server with SIGSTOP: its sockets stay open and nothing answers (a
    /// partition, as its clients see it). [`RedisServer::resume`] thaws it; `Drop` kills it
    /// either way.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Thaws a server frozen by [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The port may linger for a moment.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server ignores nothing but SIGKILL, which is what `kill` sends.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
