//! Runs an instance's backup script: `sh -c SCRIPT` in a process group of its own, with a
//! timeout that kills the whole group (no orphan is left holding the database or the pipe),
//! and the tail of stderr kept for the failure message.
//!
//! The script line is operator config (the agent's own file), never queue data.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

/// Bytes of stderr kept (the tail).
pub const STDERR_TAIL: usize = 2048;
/// After a timeout: SIGTERM to the group, then SIGKILL after this.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// After the script exits, how long its stderr may stay open (a background child holding
/// it must not hold the run).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The shell (`sh -c`, as UBackup's `commands.getstatusoutput` ran the script).
pub const SHELL: &str = "/bin/sh";

/// What to run.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    /// The `sh -c` argument.
    pub command: String,
    /// The deadline.
    pub timeout: Duration,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// Exit status 0.
    Success {
        /// How long it ran.
        elapsed: Duration,
    },
    /// Non-zero exit or killed by a signal.
    Failed {
        /// `exit status 3` or `killed by signal 9`.
        status: String,
        /// The end of stderr.
        stderr_tail: String,
    },
    /// The timeout passed; the process group was killed.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// The end of stderr.
        stderr_tail: String,
    },
    /// `sh` could not be started.
    SpawnFailed(String),
}

impl ScriptOutcome {
    /// The failure message's `log` text (None on success). Starts with UBackup's
    /// `execute backup script error`, so anything matching that text keeps matching.
    pub fn failure_log(&self) -> Option<String> {
        let tail = |t: &str| {
            if t.trim().is_empty() {
                String::from("(stderr empty)")
            } else {
                format!("stderr: {}", t.trim())
            }
        };
        match self {
            ScriptOutcome::Success { .. } => None,
            ScriptOutcome::Failed {
                status,
                stderr_tail,
            } => Some(format!(
                "execute backup script error: {status}; {}",
                tail(stderr_tail)
            )),
            ScriptOutcome::TimedOut { after, stderr_tail } => Some(format!(
                "execute backup script error: timed out after {}s, process group killed; {}",
                after.as_secs(),
                tail(stderr_tail)
            )),
            ScriptOutcome::SpawnFailed(e) => {
                Some(format!("execute backup script error: cannot start sh: {e}"))
            }
        }
    }
}

/// Kills the group on drop unless disarmed: a cancelled run (agent shutdown) leaves nothing.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self.0.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::KILL);
    }
}

fn push_tail(tail: &mut VecDeque<u8>, data: &[u8]) {
    tail.extend(data);
    while tail.len() > STDERR_TAIL {
        tail.pop_front();
    }
}

fn tail_text(tail: &VecDeque<u8>) -> String {
    let v: Vec<u8> = tail.iter().copied().collect();
    String::from_utf8_lossy(&v).into_owned()
}

/// Runs `spec` to completion or timeout.
pub async fn run(spec: &ScriptSpec) -> ScriptOutcome {
    run_with(spec, &[], false).await
}

/// Like [`run`], with `args` after the command (`sh -c 'COMMAND "$@"' sh ARGS...`), and with
/// `echo` the command's stdout and stderr shown on ours (stderr's tail is still kept): the
/// restore hook's way.
pub async fn run_with(spec: &ScriptSpec, args: &[String], echo: bool) -> ScriptOutcome {
    let start = Instant::now();
    // An absolute path: a PATH search costs one failed execve per entry, per run.
    let mut cmd = tokio::process::Command::new(SHELL);
    if args.is_empty() {
        cmd.arg("-c").arg(&spec.command);
    } else {
        cmd.arg("-c")
            .arg(format!("{} \"$@\"", spec.command))
            .arg("sh")
            .args(args);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(if echo {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ScriptOutcome::SpawnFailed(e.to_string()),
    };
    let mut guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let mut stderr = child.stderr.take();
    let mut tail = VecDeque::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut stderr_open = stderr.is_some();
    let status = loop {
        tokio::select! {
            st = child.wait() => break Some(st),
            n = async {
                match stderr.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            }, if stderr_open => match n {
                Ok(0) | Err(_) => stderr_open = false,
                Ok(n) => {
                    if echo {
                        use std::io::Write as _;
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    push_tail(&mut tail, &buf[..n]);
                }
            },
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    match status {
        Some(Ok(st)) => {
            // The script is gone; read what is left of stderr for a moment (a background
            // child of the script may keep the pipe open: it is not waited for).
            if stderr_open {
                if let Some(s) = stderr.as_mut() {
                    let drain = async {
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => push_tail(&mut tail, &buf[..n]),
                            }
                        }
                    };
                    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
                }
            }
            // Leave whatever the script started in the background alone on success
            // (UBackup did too); the guard only fires for timeouts and cancellation.
            guard.0 = None;
            if st.success() {
                ScriptOutcome::Success {
                    elapsed: start.elapsed(),
                }
            } else {
                use std::os::unix::process::ExitStatusExt as _;
                let status = match (st.code(), st.signal()) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => st.to_string(),
                };
                ScriptOutcome::Failed {
                    status,
                    stderr_tail: tail_text(&tail),
                }
            }
        }
        Some(Err(e)) => ScriptOutcome::Failed {
            status: format!("cannot wait for the script: {e}"),
            stderr_tail: tail_text(&tail),
        },
        None => {
            guard.signal(rustix::process::Signal::TERM);
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            guard.signal(rustix::process::Signal::KILL);
            let _ = child.wait().await;
            drop(guard);
            ScriptOutcome::TimedOut {
                after: spec.timeout,
                stderr_tail: tail_text(&tail),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str, secs: u64) -> ScriptSpec {
        ScriptSpec {
            command: cmd.into(),
            timeout: Duration::from_secs(secs),
            env: vec![("UBACKUP_INSTANCE".into(), "db1".into())],
        }
    }

    #[tokio::test]
    async fn success_and_environment() {
        let o = run(&spec("test \"$UBACKUP_INSTANCE\" = db1", 10)).await;
        assert!(matches!(o, ScriptOutcome::Success { .. }), "{o:?}");
    }

    #[tokio::test]
    async fn failure_carries_status_and_stderr_tail() {
        let o = run(&spec(
            "head -c 5000 /dev/zero | tr '\\0' a >&2; echo boom >&2; exit 3",
            10,
        ))
        .await;
        let log = o.failure_log().unwrap();
        assert!(
            log.starts_with("execute backup script error: exit status 3; stderr: "),
            "{log}"
        );
        assert!(log.ends_with("boom"), "{log}");
        assert!(log.len() < STDERR_TAIL + 100);
    }
}
