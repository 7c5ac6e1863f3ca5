//! The restore hook: an operator's command run once every file is in place, with the files
//! in the order they are applied, as arguments and in the environment. It runs like a backup
//! script (`sh -c`, its own process group, a timeout that kills the group), with its output
//! shown to the operator.

use std::path::Path;
use std::time::Duration;

use super::plan::{Plan, Role};
use super::RestoreError;
use crate::script::{self, ScriptOutcome, ScriptSpec};

/// The hook to run.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The command line (`sh -c`); the files are appended as arguments.
    pub command: String,
    /// Its deadline.
    pub timeout: Duration,
}

/// The environment a hook sees (besides the agent's own):
///
/// | variable | value |
/// |---|---|
/// | `UBACKUP_RESTORE_DIR` | the target directory |
/// | `UBACKUP_RESTORE_FILES` | the files' paths in order, one a line |
/// | `UBACKUP_RESTORE_COUNT` | how many |
/// | `UBACKUP_RESTORE_FULL` | the full's path |
/// | `UBACKUP_RESTORE_INCREMENTALS` | the incrementals' paths in order, one a line |
/// | `UBACKUP_RESTORE_FILE_<N>` (1-based) | each file's path |
/// | `UBACKUP_RESTORE_TIME_<N>` | each file's backup time, ms |
/// | `UBACKUP_SERVER_ID`, `UBACKUP_TYPE`, `UBACKUP_INSTANCE` | the instance |
/// | `UBACKUP_RESTORE_AT_MS` | the newest file's backup time, ms |
pub fn environment(plan: &Plan, dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let paths: Vec<String> = plan
        .files
        .iter()
        .map(|f| dir.join(f.leaf()).display().to_string())
        .collect();
    let mut env = vec![
        ("UBACKUP_RESTORE_DIR".into(), dir.display().to_string()),
        ("UBACKUP_RESTORE_FILES".into(), paths.join("\n")),
        ("UBACKUP_RESTORE_COUNT".into(), paths.len().to_string()),
        ("UBACKUP_SERVER_ID".into(), plan.server_id.clone()),
        ("UBACKUP_TYPE".into(), plan.back_type.clone()),
        ("UBACKUP_INSTANCE".into(), plan.instance.to_string()),
    ];
    let incrementals: Vec<&str> = plan
        .files
        .iter()
        .zip(&paths)
        .filter(|(f, _)| f.role == Role::Incremental)
        .map(|(_, p)| p.as_str())
        .collect();
    env.push((
        "UBACKUP_RESTORE_INCREMENTALS".into(),
        incrementals.join("\n"),
    ));
    if let Some(full) = paths.first() {
        env.push(("UBACKUP_RESTORE_FULL".into(), full.clone()));
    }
    if let Some(last) = plan.files.last() {
        env.push((
            "UBACKUP_RESTORE_AT_MS".into(),
            last.create_time_ms.to_string(),
        ));
    }
    for (i, (f, p)) in plan.files.iter().zip(&paths).enumerate() {
        env.push((format!("UBACKUP_RESTORE_FILE_{}", i + 1), p.clone()));
        env.push((
            format!("UBACKUP_RESTORE_TIME_{}", i + 1),
            f.create_time_ms.to_string(),
        ));
    }
    (paths, env)
}

/// Runs `hook` for the restored `plan` in `dir`.
pub async fn run(hook: &Hook, plan: &Plan, dir: &Path) -> Result<(), RestoreError> {
    let (args, env) = environment(plan, dir);
    let spec = ScriptSpec {
        command: hook.command.clone(),
        timeout: hook.timeout,
        env,
    };
    match script::run_with(&spec, &args, true).await {
        ScriptOutcome::Success { .. } => Ok(()),
        ScriptOutcome::Failed {
            status,
            stderr_tail,
        } => Err(RestoreError::HookFailed {
            status,
            stderr_tail: stderr_tail.trim().to_string(),
        }),
        ScriptOutcome::TimedOut { after, .. } => Err(RestoreError::HookTimedOut { after }),
        ScriptOutcome::SpawnFailed(e) => Err(RestoreError::HookFailed {
            status: format!("cannot start sh: {e}"),
            stderr_tail: String::new(),
        }),
    }
}
