//! A real PostgreSQL (Debian's `postgresql` package: `initdb` + `postgres`) on a loopback port
//! picked at run time, in its own temp dir, as an unprivileged user, killed on `Drop`.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: the data directory is
//! handed to `nobody` (or the user named by `UBACKUP_PG_USER`) and both programs run as that
//! user through `setpriv` (util-linux) when we are root.

use crate::process::free_port;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::rsync::interop_required;

/// The directory holding `initdb` and `postgres` (the newest under /usr/lib/postgresql/*/bin,
/// or `UBACKUP_PG_BIN`), or None (panics instead when `UBACKUP_INTEROP=required`).
pub fn require_postgres() -> Option<PathBuf> {
    let found = std::env::var_os("UBACKUP_PG_BIN")
        .map(PathBuf::from)
        .filter(|d| d.join("postgres").is_file())
        .or_else(|| {
            let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                        .then_some((v, bin))
                })
                .collect();
            dirs.sort();
            dirs.pop().map(|(_, d)| d)
        });
    match found {
        Some(p) => Some(p),
        None if interop_required() => panic!(
            "PostgreSQL is required (UBACKUP_INTEROP=required) but /usr/lib/postgresql/*/bin \
             has no initdb/postgres; install it with `apt-get install -y postgresql`"
        ),
        None => {
            eprintln!("SKIP: PostgreSQL not installed");
            None
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A running PostgreSQL.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    /// (uid, gid) to run as, when we are root.
    run_as: Option<(String, String)>,
    child: Option<Child>,
}

fn id_of(flag: &str, user: &str) -> anyhow::Result<String> {
    let o = Command::new("id").arg(flag).arg(user).output()?;
    if !o.status.success() {
        bail!("no user {user:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl Postgres {
    /// Starts a server, or returns None when PostgreSQL is missing and not required.
    pub fn start() -> Option<Postgres> {
        let bin = require_postgres()?;
        let mut last = None;
        for _ in 0..3 {
            match Postgres::try_start(&bin) {
                Ok(p) => return Some(p),
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot start PostgreSQL: {last:?}");
    }

    fn command(&self, program: &str) -> Command {
        match &self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", uid, "--regid", gid, "--clear-groups", "--"])
                    .arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        }
    }

    fn try_start(bin: &Path) -> anyhow::Result<Postgres> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let run_as = if is_root() {
            let user = std::env::var("UBACKUP_PG_USER").unwrap_or_else(|_| "nobody".into());
            Some((id_of("-u", &user)?, id_of("-g", &user)?))
        } else {
            None
        };
        let mut pg = Postgres {
            bin: bin.to_path_buf(),
            port: free_port()?,
            dir,
            run_as,
            child: None,
        };
        if let Some((uid, gid)) = &pg.run_as {
            // The temp dir itself must be reachable and the data dir owned by the user.
            let ok = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(pg.dir.path())
                .status()?
                .success();
            if !ok {
                bail!("chown to {uid}:{gid} failed");
            }
        }
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg.spawn()?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path)?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("port={}", self.port))
            .args(["-c", "unix_socket_directories=", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("postgres exited at once ({status}): {}", self.log());
                }
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() && self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres did not come up: {}", self.log())
    }

    /// The server accepts connections when its log says so.
    fn ready(&self) -> bool {
        self.log()
            .contains("database system is ready to accept connections")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database and returns its URL (one per test keeps tests apart).
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            // Debian keeps psql in /usr/bin, not in the version's bin directory.
            _ => {
                let o = Command::new("psql")
                    .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                    .arg(self.port.to_string())
                    .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
                    .arg(format!("CREATE DATABASE \"{name}\""))
                    .output()
                    .context("running psql")?;
                if !o.status.success() {
                    bail!(
                        "CREATE DATABASE failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            }
        }
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The child is the postmaster itself (setpriv execs). SIGQUIT is PostgreSQL's
            // immediate shutdown: it kills its backends and reaps them before exiting, so no
            // orphan is left; SIGKILL only if that hangs.
            let _ = Command::new("kill")
                .arg("-QUIT")
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
}
