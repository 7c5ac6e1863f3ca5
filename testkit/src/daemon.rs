//! A real `rsync --daemon` on a loopback port picked at run time.
//!
//! [`DaemonBuilder`] writes `rsyncd.conf`, secrets files and the MOTD into a fresh temp dir,
//! starts the daemon in the foreground (`--no-detach`) and waits until it answers with its
//! `@RSYNCD:` greeting. [`RsyncDaemon`] kills it on `Drop` and removes the temp dir.

use crate::process::free_port;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::rsync::{rsync_binary, RsyncVersion};

/// How often to start the daemon on a fresh port when it exits at once (port taken).
const START_ATTEMPTS: usize = 5;
/// How long one attempt waits for the daemon to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Pause before starting again on a fixed port that was still taken.
const FIXED_PORT_RETRY: Duration = Duration::from_millis(200);

/// One `[module]` section of `rsyncd.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Module name, as in `rsync://host/<name>/`.
    pub name: String,
    /// Directory the module serves.
    pub path: PathBuf,
    /// Shown next to the name in the module list; omitted when empty.
    pub comment: String,
    /// `auth users` value, e.g. `"alice"` or `"alice, bob"`; `None` = no authentication.
    pub auth_users: Option<String>,
    /// `(user, password)` pairs; the testkit writes them to a secrets file with mode 0600.
    pub secrets: Vec<(String, String)>,
    /// `read only` (default true).
    pub read_only: bool,
    /// `timeout` in seconds; `None` leaves rsync's default (none).
    pub timeout: Option<u32>,
    /// Raw `key = value` lines appended to the section.
    pub extra: Vec<String>,
}

impl Module {
    /// A read-only module `name` serving `path`, without comment or authentication.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Module {
            name: name.into(),
            path: path.into(),
            comment: String::new(),
            auth_users: None,
            secrets: Vec::new(),
            read_only: true,
            timeout: None,
            extra: Vec::new(),
        }
    }

    /// Set the comment shown in the module list.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }

    /// Require authentication: add `user` to `auth users` and `user:password` to the secrets
    /// file. Call again to allow more users.
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let user = user.into();
        self.auth_users = Some(match self.auth_users.take() {
            Some(users) => format!("{users}, {user}"),
            None => user.clone(),
        });
        self.secrets.push((user, password.into()));
        self
    }

    /// Set `read only` (modules are read-only unless this says otherwise).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Set the module's I/O `timeout` in seconds.
    pub fn timeout(mut self, secs: u32) -> Self {
        self.timeout = Some(secs);
        self
    }

    /// Append a raw `key = value` line to the module section.
    pub fn extra(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }
}

/// Configures and starts an [`RsyncDaemon`].
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    version: RsyncVersion,
    modules: Vec<Module>,
    global_extra: Vec<String>,
    motd: Option<String>,
    port: Option<u16>,
    address: Ipv4Addr,
}

impl DaemonBuilder {
    /// A daemon of rsync version `v` with no modules yet.
    pub fn new(v: RsyncVersion) -> Self {
        DaemonBuilder {
            version: v,
            modules: Vec::new(),
            global_extra: Vec::new(),
            motd: None,
            port: None,
            address: Ipv4Addr::LOCALHOST,
        }
    }

    /// Add a module.
    pub fn module(mut self, m: Module) -> Self {
        self.modules.push(m);
        self
    }

    /// Append a raw `key = value` line to the global section, e.g. `"max connections = 1"`.
    pub fn global(mut self, line: impl Into<String>) -> Self {
        self.global_extra.push(line.into());
        self
    }

    /// Serve `text` as the message of the day (written to a file, set as `motd file`).
    pub fn motd(mut self, text: impl Into<String>) -> Self {
        self.motd = Some(text.into());
        self
    }

    /// Listen on `port` instead of a free port picked at start, e.g. to restart a daemon
    /// where its clients expect it (see [`RsyncDaemon::kill_with_connections`]).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Listen on this loopback address instead of 127.0.0.1 (Linux routes all of 127.0.0.0/8
    /// to `lo`), so that several "hosts" can use the same port.
    pub fn address(mut self, ip: Ipv4Addr) -> Self {
        self.address = ip;
        self
    }

    /// Write the configuration into a new temp dir and start the daemon on a free loopback
    /// port, retrying on a fresh port (up to 5 times) if the daemon exits at once. With
    /// [`port`](DaemonBuilder::port) set, retries use that port again after a short pause. Fails, with
    /// the daemon's log in the message, if the binary is missing or the daemon never answers.
    pub fn start(self) -> anyhow::Result<RsyncDaemon> {
        let v = self.version;
        let binary = rsync_binary(v)?.with_context(|| {
            format!(
                "rsync {} not found (see ubackup_testkit::require_rsync)",
                v.label()
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("ubackup-rsyncd-")
            .tempdir()
            .context("creating the daemon's temp dir")?;
        let config = self.write_files(dir.path())?;
        let output_path = dir.path().join("rsyncd.out");
        let output = File::options()
            .create(true)
            .append(true)
            .open(&output_path)
            .with_context(|| format!("creating {}", output_path.display()))?;
        let mut config_arg = std::ffi::OsString::from("--config=");
        config_arg.push(&config);

        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = match self.port {
                Some(p) => {
                    if attempt > 1 {
                        std::thread::sleep(FIXED_PORT_RETRY);
                    }
                    p
                }
                None => free_port()?,
            };
            let mut child = Command::new(&binary)
                .args(["--daemon", "--no-detach"])
                .arg(format!("--address={}", self.address))
                .arg(format!("--port={port}"))
                .arg(&config_arg)
                .stdin(Stdio::null())
                .stdout(output.try_clone()?)
                .stderr(output.try_clone()?)
                .spawn()
                .with_context(|| format!("spawning {}", binary.display()))?;
            let problem = match wait_ready(&mut child, self.address, port, READY_TIMEOUT) {
                Ok(()) => {
                    return Ok(RsyncDaemon {
                        version: v,
                        binary,
                        child,
                        port,
                        ip: self.address,
                        dir,
                    })
                }
                Err(Unready::Exited(status)) => format!("exited with {status}"),
                Err(Unready::NotRsync(what)) => format!("port answered by {what}"),
                Err(Unready::TimedOut) => format!("no answer in {READY_TIMEOUT:?}"),
                Err(Unready::Io(e)) => format!("{e}"),
            };
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(failures, "  attempt {attempt}, port {port}: {problem}");
        }
        bail!(
            "rsync {} daemon did not start:\n{failures}--- {}:\n{}--- daemon output:\n{}",
            v.label(),
            dir.path().join("rsyncd.log").display(),
            read_lossy(&dir.path().join("rsyncd.log")),
            read_lossy(&output_path),
        )
    }

    /// Write `rsyncd.conf`, one secrets file per authenticated module and the MOTD into
    /// `dir`; returns the config path.
    fn write_files(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let mut conf = String::from("# written by ubackup-testkit\n");
        let mut line = |key: &str, value: &str| -> anyhow::Result<()> {
            if value.contains(['\n', '\r']) {
                bail!("rsyncd.conf value for {key:?} contains a line break: {value:?}");
            }
            let _ = writeln!(conf, "{key} = {value}");
            Ok(())
        };
        line("use chroot", "no")?;
        line("log file", path_str(&dir.join("rsyncd.log"))?)?;
        line("lock file", path_str(&dir.join("rsyncd.lock"))?)?;
        line("reverse lookup", "no")?;
        if running_as_root() {
            // Otherwise a root daemon drops to "nobody" and cannot read the test data.
            line("uid", "root")?;
            line("gid", "root")?;
        }
        if let Some(text) = &self.motd {
            let motd = dir.join("motd");
            fs::write(&motd, text).with_context(|| format!("writing {}", motd.display()))?;
            line("motd file", path_str(&motd)?)?;
        }
        for raw in &self.global_extra {
            raw_line(&mut conf, raw)?;
        }
        for (i, m) in self.modules.iter().enumerate() {
            if m.name.is_empty() || m.name.contains([']', '/', '\n', '\r']) {
                bail!("bad rsync module name {:?}", m.name);
            }
            let _ = writeln!(conf, "\n[{}]", m.name);
            let mut line = |key: &str, value: &str| -> anyhow::Result<()> {
                if value.contains(['\n', '\r']) {
                    bail!(
                        "module {:?}: value for {key:?} contains a line break",
                        m.name
                    );
                }
                let _ = writeln!(conf, "    {key} = {value}");
                Ok(())
            };
            line("path", path_str(&m.path)?)?;
            if !m.comment.is_empty() {
                line("comment", &m.comment)?;
            }
            line("read only", if m.read_only { "yes" } else { "no" })?;
            if let Some(users) = &m.auth_users {
                line("auth users", users)?;
            }
            if !m.secrets.is_empty() {
                let secrets = dir.join(format!("module-{i}.secrets"));
                write_secrets(&secrets, &m.secrets)?;
                line("secrets file", path_str(&secrets)?)?;
            }
            if let Some(t) = m.timeout {
                line("timeout", &t.to_string())?;
            }
            for raw in &m.extra {
                conf.push_str("    ");
                raw_line(&mut conf, raw)?;
            }
        }
        let path = dir.join("rsyncd.conf");
        fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// A running `rsync --daemon`, listening on 127.0.0.1; killed (and its temp dir removed) on
/// `Drop`.
#[derive(Debug)]
pub struct RsyncDaemon {
    version: RsyncVersion,
    binary: PathBuf,
    child: Child,
    port: u16,
    ip: Ipv4Addr,
    dir: tempfile::TempDir,
}

impl RsyncDaemon {
    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Selects `module` on a raw connection and keeps it open, holding one of the
    /// module's `max connections` slots until the stream is dropped.
    pub fn hold_module_slot(&self, module: &str) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting)?;
        anyhow::ensure!(greeting.starts_with("@RSYNCD: "), "greeting {greeting:?}");
        (&stream).write_all(format!("@RSYNCD: 30.0\n{module}\n").as_bytes())?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        anyhow::ensure!(answer == "@RSYNCD: OK\n", "module answer {answer:?}");
        Ok(stream)
    }

    /// `<address>:<port>` (127.0.0.1 unless [`DaemonBuilder::address`] chose another).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, self.port))
    }

    /// `rsync://<address>:<port>/<module_path>`, e.g. `url("data/sub/")`; `url("")` lists
    /// the modules.
    pub fn url(&self, module_path: &str) -> String {
        format!(
            "rsync://{}:{}/{}",
            self.ip,
            self.port,
            module_path.trim_start_matches('/')
        )
    }

    /// Contents of the daemon's log file (empty if it has not written one yet).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("rsyncd.log"))
    }

    /// The rsync binary running the daemon.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The rsync version running the daemon.
    pub fn version(&self) -> RsyncVersion {
        self.version
    }

    /// The temp dir holding `rsyncd.conf`, `rsyncd.log`, secrets and MOTD files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl RsyncDaemon {
    /// Kill the daemon and every process it forked to serve a connection, as a service
    /// restart does: transfers in flight are cut. (Dropping the daemon kills only the
    /// listening process; connections it already forked keep being served.) The port is
    /// free for a new daemon (see [`DaemonBuilder::port`]) when this returns.
    pub fn kill_with_connections(mut self) {
        let pid = self.child.id();
        // Stopped, the daemon forks no new connections while its children are collected.
        signal("-STOP", &[pid]);
        let descendants = descendants_of(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        signal("-KILL", &descendants);
    }
}

/// Sends `sig` (`"-KILL"`, `"-STOP"`) to `pids` with kill(1).
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every live descendant of `pid`, from the parent pids in `/proc/*/stat`.
fn descendants_of(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a daemon did not become ready.
#[derive(Debug)]
enum Unready {
    Exited(ExitStatus),
    NotRsync(String),
    TimedOut,
    Io(std::io::Error),
}

/// Poll-connect to `127.0.0.1:port` every [`PROBE_INTERVAL`] until the `@RSYNCD:` greeting
/// arrives, the child exits, or `timeout` passes.
fn wait_ready(
    child: &mut Child,
    ip: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<(), Unready> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(Unready::Io)? {
            return Err(Unready::Exited(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unready::TimedOut);
        }
        if let Ok(stream) = TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(1))) {
            let greeting = read_greeting(stream, left).map_err(Unready::Io)?;
            // Another server may have taken the port between our probe and the daemon's bind.
            if !greeting.starts_with("@RSYNCD: ") {
                return Err(Unready::NotRsync(format!("a server greeting {greeting:?}")));
            }
            return match child.try_wait().map_err(Unready::Io)? {
                Some(status) => Err(Unready::Exited(status)),
                None => Ok(()),
            };
        }
        std::thread::sleep(PROBE_INTERVAL.min(left));
    }
}

/// The first line the server sends (at most 1 KiB), or what arrived before EOF / `timeout`.
fn read_greeting(stream: TcpStream, timeout: Duration) -> std::io::Result<String> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let mut line = Vec::new();
    match BufReader::new(stream)
        .take(1024)
        .read_until(b'\n', &mut line)
    {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Whether this process runs as root (`id -u` prints 0), asked once.
fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
    })
}

fn write_secrets(path: &Path, secrets: &[(String, String)]) -> anyhow::Result<()> {
    let mut text = String::new();
    for (user, password) in secrets {
        if user.contains([':', '\n', '\r']) || password.contains(['\n', '\r']) {
            bail!("bad rsync secrets entry for user {user:?}");
        }
        let _ = writeln!(text, "{user}:{password}");
    }
    // rsync refuses ("strict modes") a secrets file other users can read.
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn raw_line(conf: &mut String, raw: &str) -> anyhow::Result<()> {
    if raw.contains(['\n', '\r']) {
        bail!("rsyncd.conf line contains a line break: {raw:?}");
    }
    conf.push_str(raw);
    conf.push('\n');
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
