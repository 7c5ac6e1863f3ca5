//! Our own daemons as child processes in a test: a [`LoggedChild`] writes stdout and stderr to
//! one log file, is signalled by name, waited for with a deadline and killed on `Drop`, so a
//! broken daemon fails the test instead of hanging it. Also the two waits every process test
//! needs: [`wait_until`] and [`free_port`].

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `f` every 50 ms until it holds; fails the test (panics) naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process whose stdout and stderr go to one log file; killed (SIGKILL) and reaped on
/// `Drop`.
#[derive(Debug)]
pub struct LoggedChild {
    child: Option<Child>,
    log: PathBuf,
}

impl LoggedChild {
    /// Spawns `cmd` with stdin closed and its output in `log` (created or truncated).
    pub fn spawn(cmd: &mut Command, log: impl Into<PathBuf>) -> anyhow::Result<LoggedChild> {
        let log = log.into();
        let f = std::fs::File::create(&log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        Ok(LoggedChild {
            child: Some(child),
            log,
        })
    }

    /// The process id (0 once it has been reaped by `Drop`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends signal `sig` (a name `kill` knows: `TERM`, `HUP`, `KILL`, `STOP`, ...); fails the
    /// test if `kill` does.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Everything logged so far (empty if the file cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit by itself; fails the test, with the log, after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a successful exit within `limit`; fails the test, with the log, otherwise.
    pub fn stop(&mut self, limit: Duration) {
        self.signal("TERM");
        let status = self.wait(limit);
        assert!(status.success(), "{status}: {}", self.log());
    }

    /// Waits until the log holds `text` at least `n` times; fails the test after `limit`.
    pub fn wait_log(&self, text: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.log().matches(text).count() < n {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged {n} times within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_logged_signalled_and_reaped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; echo oops >&2; exec sleep 30"]);
        let mut c = LoggedChild::spawn(&mut cmd, dir.path().join("x.log"))?;
        c.wait_log("started", 1, Duration::from_secs(5));
        c.wait_log("oops", 1, Duration::from_secs(5));
        assert!(c.try_exit().is_none());
        let pid = c.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        c.signal("TERM");
        let status = c.wait(Duration::from_secs(5));
        assert!(!status.success(), "killed by SIGTERM: {status}");
        Ok(())
    }

    #[test]
    fn drop_kills_a_child_that_would_run_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let c = LoggedChild::spawn(Command::new("sleep").arg("30"), dir.path().join("s.log"))?;
        let pid = c.pid();
        drop(c);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        Ok(())
    }

    #[test]
    fn free_ports_can_be_bound() -> anyhow::Result<()> {
        let p = free_port()?;
        TcpListener::bind((Ipv4Addr::LOCALHOST, p))?;
        Ok(())
    }
}
