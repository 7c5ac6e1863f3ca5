//! `ubackup-agent restore`: rebuilds an instance's backup at a point in time from the nodes.
//!
//! ```text
//! PlanSource (indexer HTTP | saved plan) ─► Plan::check (names, chain, checksums)
//!    └► for each file, in order: Fetcher (rsync-proto ◄─ node's read-only module)
//!          ─► <DIR>/.ubackup-restore/<file> (temp name → verified by rsync → renamed)
//!          ─► checksum compared with the catalog's ─► state.json (durable)
//!    └► every file verified: renamed into <DIR> in order, staging removed ─► hook
//! ```
//!
//! Guarantees: nothing appears under a final name in `<DIR>` until every file of the plan
//! has been pulled and verified against the catalog; an interrupted restore (an error, a
//! signal, a crash) is resumed by running the same command again: verified files are kept,
//! a partial file is the delta basis of its next pull, so only missing bytes cross the
//! network; a restore never overwrites a file that is already in `<DIR>`.
//!
//! The domain is generic over [`plan::PlanSource`] and [`fetch::Fetcher`]; the command line
//! wires in [`indexer::IndexerPlans`] and [`fetch::RsyncFetcher`].

pub mod command;
pub mod fetch;
pub mod hook;
pub mod indexer;
pub mod plan;
pub mod state;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fetch::Fetcher;
use plan::{Plan, PlanFile, PlanSource, Request};
use state::Staging;

/// Why a restore did not complete. Each kind has its own exit code ([`RestoreError::exit_code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The catalog has no usable backup of the instance at that time.
    #[error("no backup of {instance} at {at}: {detail}")]
    NoBackup {
        /// `server_id/type/instance`.
        instance: String,
        /// The time asked for.
        at: String,
        /// The indexer's words.
        detail: String,
    },
    /// A file the chain needs is missing (never arrived, expired, corrupt).
    #[error("the backup chain has a hole: {detail}")]
    ChainHole {
        /// What is missing.
        detail: String,
    },
    /// A node could not be reached.
    #[error("node {node} is unreachable: {reason}")]
    NodeUnreachable {
        /// `host:port`.
        node: String,
        /// The connect error.
        reason: String,
    },
    /// A pulled file's checksum is not the catalog's: the file was discarded.
    #[error("{file}: its checksum differs from the catalog's (expected {expected}, got {got}); the pulled copy was discarded")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// The catalog's checksum.
        expected: String,
        /// What the pulled bytes hash to (or their size, when that differs already).
        got: String,
    },
    /// The pull of a file failed on the node's side (refused, missing, a protocol error).
    #[error("pulling {file} from {from} failed: {reason}")]
    Transfer {
        /// The file.
        file: String,
        /// The source URL (no password).
        from: String,
        /// The error.
        reason: String,
    },
    /// The indexer could not be reached.
    #[error("the indexer at {url} is unreachable: {reason}")]
    IndexerUnreachable {
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The indexer refused the token.
    #[error("the indexer refused the request (HTTP {status}): {message}")]
    Denied {
        /// 401 or 403.
        status: u16,
        /// Its words.
        message: String,
    },
    /// Any other indexer failure.
    #[error("the indexer answered HTTP {status}: {message}")]
    Indexer {
        /// HTTP status (0: not HTTP).
        status: u16,
        /// Its words.
        message: String,
    },
    /// The plan is malformed or unsafe.
    #[error("the restore plan is not usable: {0}")]
    BadPlan(String),
    /// Writing into the target failed.
    #[error("{path}: {source}")]
    Target {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// A file of the plan is already in the target.
    #[error("{path} already exists and is not this restore's; restore into an empty directory or move it away")]
    TargetExists {
        /// The path.
        path: String,
    },
    /// The hook exited non-zero (the files are in place).
    #[error("the hook failed ({status}); the restored files are in place. {stderr_tail}")]
    HookFailed {
        /// Exit status.
        status: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The hook ran out of time; its process group was killed.
    #[error("the hook timed out after {}s and was killed; the restored files are in place", after.as_secs())]
    HookTimedOut {
        /// The timeout.
        after: Duration,
    },
    /// A command-line or configuration problem.
    #[error("{0}")]
    Usage(String),
}

impl RestoreError {
    /// The process exit code: 2 no backup, 3 chain hole, 4 node unreachable, 5 checksum
    /// differs, 6 transfer failed, 7 indexer unreachable or refused, 8 hook failed, 9 target
    /// problem, 64 usage.
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::NoBackup { .. } => 2,
            RestoreError::ChainHole { .. } => 3,
            RestoreError::NodeUnreachable { .. } => 4,
            RestoreError::ChecksumMismatch { .. } => 5,
            RestoreError::Transfer { .. } => 6,
            RestoreError::IndexerUnreachable { .. }
            | RestoreError::Denied { .. }
            | RestoreError::Indexer { .. }
            | RestoreError::BadPlan(_) => 7,
            RestoreError::HookFailed { .. } | RestoreError::HookTimedOut { .. } => 8,
            RestoreError::Target { .. } | RestoreError::TargetExists { .. } => 9,
            RestoreError::Usage(_) => 64,
        }
    }
}

fn target_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Target {
        path: path.display().to_string(),
        source,
    }
}

/// Gets the plan for `req` and validates it.
pub async fn plan_for<P: PlanSource>(plans: &P, req: &Request) -> Result<Plan, RestoreError> {
    let mut plan = plans.plan(req).await?;
    plan.check(req)?;
    Ok(plan)
}

/// What the restore reports as it goes.
pub trait Progress: Sync {
    /// File `i` (0-based) of `n` is being pulled (or was already there: `resumed`).
    fn file(&self, i: usize, n: usize, file: &PlanFile, resumed: bool);
    /// Bytes of the current file received so far.
    fn bytes(&self, file: &PlanFile, received: u64);
    /// The current file is verified.
    fn verified(&self, file: &PlanFile, fetched: Option<&fetch::Fetched>);
}

/// A progress that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn file(&self, _: usize, _: usize, _: &PlanFile, _: bool) {}
    fn bytes(&self, _: &PlanFile, _: u64) {}
    fn verified(&self, _: &PlanFile, _: Option<&fetch::Fetched>) {}
}

/// What a completed restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The files in place, in the order they are applied.
    pub files: Vec<PathBuf>,
    /// Files found already verified in the staging directory (a resumed restore).
    pub resumed: usize,
    /// Bytes that crossed the network.
    pub literal_bytes: u64,
    /// Bytes reused from partial files.
    pub matched_bytes: u64,
}

/// Pulls, verifies and places every file of `plan` in `to` (see the module docs), then
/// runs `hook`.
pub async fn execute<F: Fetcher>(
    plan: &Plan,
    fetcher: &F,
    to: &Path,
    hook: Option<&hook::Hook>,
    progress: &dyn Progress,
) -> Result<Outcome, RestoreError> {
    let staging = Staging::open(to).map_err(target_err(to))?;
    let dir = staging.dir().to_path_buf();
    let mut state = staging.load();
    // Only what this plan needs, with the checksum it expects, counts as done.
    state.verified.retain(|leaf, sum| {
        plan.files
            .iter()
            .any(|f| f.leaf() == leaf && f.checksum == *sum)
    });
    let mut committed = vec![false; plan.files.len()];
    for (i, f) in plan.files.iter().enumerate() {
        let fin = to.join(f.leaf());
        if std::fs::symlink_metadata(&fin).is_err() {
            continue;
        }
        let staged = dir.join(f.leaf());
        // A crash between the renames of an earlier run leaves a file in place that the
        // staging directory no longer holds: it is ours if its bytes are the catalog's.
        if std::fs::symlink_metadata(&staged).is_err()
            && std::fs::symlink_metadata(&fin).is_ok_and(|m| m.is_file() && m.len() == f.size)
            && fetch::checksum_of(&fin, &f.checksum)
                .await
                .map_err(target_err(&fin))?
                .is_some_and(|s| f.matches(&s))
        {
            committed[i] = true;
            continue;
        }
        return Err(RestoreError::TargetExists {
            path: fin.display().to_string(),
        });
    }
    let mut outcome = Outcome {
        files: plan.files.iter().map(|f| to.join(f.leaf())).collect(),
        resumed: 0,
        literal_bytes: 0,
        matched_bytes: 0,
    };
    let n = plan.files.len();
    for (i, f) in plan.files.iter().enumerate() {
        if committed[i] {
            progress.file(i, n, f, true);
            outcome.resumed += 1;
            continue;
        }
        let staged = dir.join(f.leaf());
        // A process killed while writing leaves temp files: the largest becomes the
        // partial, the basis of the next pull.
        let _ = rsync_proto::client::salvage_stale_temps(
            &dir,
            f.leaf(),
            rsync_proto::client::PARTIAL_DIR,
        );
        let on_disk = std::fs::symlink_metadata(&staged).ok();
        if let Some(m) = &on_disk {
            let known = state.verified.get(f.leaf()).is_some_and(|s| f.matches(s));
            let ok = m.is_file()
                && m.len() == f.size
                && (known
                    || fetch::checksum_of(&staged, &f.checksum)
                        .await
                        .map_err(target_err(&staged))?
                        .is_some_and(|s| f.matches(&s)));
            if ok {
                progress.file(i, n, f, true);
                outcome.resumed += 1;
                if !known {
                    state.verified.insert(f.leaf().into(), f.checksum.clone());
                    staging.save(&state).map_err(target_err(&dir))?;
                }
                continue;
            }
            remove_staged(&staged)?;
        }
        progress.file(i, n, f, false);
        let fetched = fetcher
            .fetch(f, &dir, &|received| progress.bytes(f, received))
            .await?;
        let size = std::fs::symlink_metadata(&staged)
            .map_err(target_err(&staged))?
            .len();
        let got = if size != f.size {
            Some(format!("{size} bytes, not the catalog's {}", f.size))
        } else if !f.matches(&fetched.checksum) {
            Some(fetched.checksum.clone())
        } else {
            None
        };
        if let Some(got) = got {
            remove_staged(&staged)?;
            return Err(RestoreError::ChecksumMismatch {
                file: f.filename.clone(),
                expected: f.checksum.clone(),
                got,
            });
        }
        outcome.literal_bytes += fetched.literal_bytes;
        outcome.matched_bytes += fetched.matched_bytes;
        state.verified.insert(f.leaf().into(), f.checksum.clone());
        staging.save(&state).map_err(target_err(&dir))?;
        progress.verified(f, Some(&fetched));
    }
    // Every file verified: into place, in order.
    for (i, f) in plan.files.iter().enumerate() {
        if !committed[i] {
            let fin = to.join(f.leaf());
            // Never over a file that appeared since the check above.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                dir.join(f.leaf()),
                rustix::fs::CWD,
                &fin,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => RestoreError::TargetExists {
                    path: fin.display().to_string(),
                },
                e => target_err(&fin)(e.into()),
            })?;
        }
    }
    state::sync_dir(to).map_err(target_err(to))?;
    staging.remove().map_err(target_err(&dir))?;
    if let Some(h) = hook {
        hook::run(h, plan, to).await?;
    }
    Ok(outcome)
}

fn remove_staged(path: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(target_err(path)(e)),
    }
}
