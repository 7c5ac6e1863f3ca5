//! One instance's run, from script to published job: the domain of the agent.
//!
//! ```text
//! lock instance ─ stamp back_log ─ sh -c script (timeout, process group)
//!   └ back_log (bounded; stale? ok/wrong? name inside back_dir? file there?)
//!      └ last_all_log (full: add its time as line 3; incremental: name + time of the full)
//!         └ self-check against the local rsyncd ─ checksum (v1)
//!            └ message (legacy | v1) ─ publish (push, or spool in order) ─ chain record
//! ```
//!
//! Every failure becomes a published failure message with a clear `log` text: nothing is
//! silent, nothing is the previous file again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ubackup_backoff::Backoff;

use crate::backlog::{self, BackLog, LogDefect};
use crate::checksum;
use crate::config::{AgentConfig, ChainKind, InstanceConfig, MessageForm, SelfCheck};
use crate::message::{self, RunReport};
use crate::queue::{Queue, QueueError};
use crate::script::{self, ScriptSpec};
use crate::selfcheck::{self, SelfCheckError};
use crate::spool::{Spool, SpoolError, SpoolLock};
use crate::state::{BackupRef, InstanceState, RunRecord, StateStore};

/// Epoch milliseconds of `t`.
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves when the stop flag turns true; never when its sender is gone without stopping.
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How a job left the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Redis took it.
    Pushed,
    /// It waits in the spool (this many jobs there now).
    Spooled(usize),
    /// It could be neither pushed nor spooled: lost unless the operator acts. Loud.
    Dropped(String),
}

impl Delivery {
    fn name(&self) -> &'static str {
        match self {
            Delivery::Pushed => "pushed",
            Delivery::Spooled(_) => "spooled",
            Delivery::Dropped(_) => "dropped",
        }
    }
}

/// The result of one instance's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// A job was built and handed on.
    Published {
        /// What was reported.
        report: RunReport,
        /// Where the job went.
        delivery: Delivery,
    },
    /// Another run of the same instance holds its lock.
    Skipped,
    /// The agent is stopping: the script was killed with its process group and nothing was
    /// published (the next start runs the instance again).
    Cancelled,
}

/// What every run of a pass shares.
#[derive(Debug)]
pub struct Context<Q> {
    /// The configuration.
    pub cfg: Arc<AgentConfig>,
    /// The list jobs go to (`redis_queue`, or `-q`).
    pub list: String,
    /// The queue.
    pub queue: Q,
    /// The spool.
    pub spool: Spool,
    /// Chain records and last runs.
    pub store: StateStore,
    /// Turns true when the agent stops: running scripts are killed.
    pub cancel: tokio::sync::watch::Receiver<bool>,
}

/// Delivers spooled jobs in order until the spool is empty or a push fails; returns the
/// depth left. Blocks other spool users while it runs.
pub async fn drain<Q: Queue>(queue: &Q, spool: &Spool) -> Result<usize, SpoolError> {
    let lock = spool.lock().await?;
    drain_locked(queue, spool, &lock).await
}

/// [`drain`] under a lock the caller holds. A torn or corrupt record is set aside (never
/// delivered), logged as an error and counted by the spool; the records behind it go on.
async fn drain_locked<Q: Queue>(
    queue: &Q,
    spool: &Spool,
    lock: &SpoolLock,
) -> Result<usize, SpoolError> {
    let seqs = spool.seqs(lock)?;
    let mut left = seqs.len();
    for seq in seqs {
        let entry = match spool.read(lock, seq) {
            Ok(e) => e,
            // Only a damaged record is set aside; a failed read of a sound one (EIO, too
            // many open files) leaves it in line for the next drain.
            Err(e @ SpoolError::Damaged { .. }) => {
                let to = spool.set_aside(lock, seq)?;
                tracing::error!(seq, error = %e, set_aside_as = %to.display(), "DAMAGED SPOOL RECORD: a spooled job is torn or corrupt and will never be delivered; set aside");
                left -= 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        match queue.push(&entry.list, &entry.payload).await {
            Ok(()) => {
                spool.remove(lock, seq)?;
                left -= 1;
                tracing::info!(seq, left, "spooled job delivered");
            }
            Err(e) => {
                tracing::warn!(error = %e, left, "spooled jobs wait for the queue");
                return Ok(left);
            }
        }
    }
    Ok(left)
}

/// Publishes one job. Jobs waiting in the spool go first, in order; when they are all
/// delivered (or none waited) the job is pushed directly. When the queue does not take them
/// (or the push fails), the job is appended to the spool. So a full spool drops a job only
/// when the queue refused or could not be reached just now.
pub async fn publish<Q: Queue>(queue: &Q, spool: &Spool, list: &str, payload: &str) -> Delivery {
    let lock = match spool.lock().await {
        Ok(l) => l,
        Err(e) => {
            // No spool: a direct push is the only way left.
            return match queue.push(list, payload).await {
                Ok(()) => Delivery::Pushed,
                Err(q) => Delivery::Dropped(format!("{q}; and the spool is unusable: {e}")),
            };
        }
    };
    let waiting = match drain_locked(queue, spool, &lock).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "spool delivery failed");
            spool.seqs(&lock).map(|s| s.len()).unwrap_or(0)
        }
    };
    if waiting == 0 {
        match queue.push(list, payload).await {
            Ok(()) => return Delivery::Pushed,
            Err(e) => tracing::warn!(error = %e, "push failed; spooling the job"),
        }
    }
    let appended = spool.append(&lock, list, payload);
    drop(lock);
    match appended {
        Ok(n) => Delivery::Spooled(n),
        Err(e @ SpoolError::Full { .. }) => {
            tracing::error!(error = %e, "JOB DROPPED: the spool is full and the queue is unreachable");
            Delivery::Dropped(e.to_string())
        }
        Err(e) => {
            let retry = queue.push(list, payload).await;
            match retry {
                Ok(()) => Delivery::Pushed,
                Err(q) => {
                    tracing::error!(error = %e, queue = %q, "JOB DROPPED: neither the queue nor the spool takes it");
                    Delivery::Dropped(format!("{q}; spool: {e}"))
                }
            }
        }
    }
}

/// Runs one instance and publishes its job. `create_time` is the pass's start (UBackup's
/// `create_time`, shared by the instances of a `once` pass).
pub async fn run_instance<Q: Queue>(
    ctx: &Context<Q>,
    inst: &InstanceConfig,
    create_time: SystemTime,
) -> RunOutcome {
    let lock = match ctx.store.try_lock(&inst.name) {
        Ok(Some(l)) => Some(l),
        Ok(None) => {
            tracing::warn!(instance = %inst.name, "previous run still going; skipped");
            return RunOutcome::Skipped;
        }
        Err(e) => {
            tracing::error!(instance = %inst.name, error = %e, "cannot take the instance lock; running without it");
            None
        }
    };
    let create_time_ms = epoch_ms(create_time);
    let mut state = match ctx.store.load(&inst.name) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(instance = %inst.name, error = %e, "chain record unreadable; starting a new one");
            InstanceState::default()
        }
    };
    let Some((report, chain)) =
        examine(&ctx.cfg, inst, create_time_ms, &state, ctx.cancel.clone()).await
    else {
        tracing::warn!(instance = %inst.name, "agent stopping: script killed, nothing published");
        return RunOutcome::Cancelled;
    };
    let payload = match ctx.cfg.message {
        MessageForm::Legacy => message::legacy_json(&ctx.cfg, inst, &report),
        MessageForm::V1 => message::v1_job(&ctx.cfg, inst, &report).to_v1_json(),
    };
    let delivery = publish(&ctx.queue, &ctx.spool, &ctx.list, &payload).await;
    let mut chain_changed = false;
    if !matches!(delivery, Delivery::Dropped(_)) {
        match chain {
            ChainStep::Full(r) => {
                state.full = Some(r);
                state.prev_incremental = None;
                chain_changed = true;
            }
            ChainStep::Incremental(r) => {
                state.prev_incremental = Some(r);
                chain_changed = true;
            }
            ChainStep::None => {}
        }
    }
    state.last_run = Some(RunRecord {
        start_ms: create_time_ms,
        end_ms: epoch_ms(SystemTime::now()),
        outcome: if report.success { "ok" } else { "failed" }.into(),
        log: report.log.clone(),
        filename: report.filename.clone(),
        delivery: delivery.name().into(),
    });
    if let Err(e) = ctx.store.save(&inst.name, &state, chain_changed) {
        tracing::error!(instance = %inst.name, error = %e, "cannot save the chain record");
    }
    drop(lock);
    if report.success {
        tracing::info!(instance = %inst.name, file = ?report.filename, size = report.size, delivery = delivery.name(), "backup published");
    } else {
        tracing::error!(instance = %inst.name, log = %report.log, delivery = delivery.name(), "backup failed");
    }
    RunOutcome::Published { report, delivery }
}

enum ChainStep {
    None,
    Full(BackupRef),
    Incremental(BackupRef),
}

fn fail(report: &mut RunReport, log: impl Into<String>) -> (RunReport, ChainStep) {
    report.log = log.into();
    report.success = false;
    (std::mem::take(report), ChainStep::None)
}

/// The environment the script sees.
pub fn script_env(inst: &InstanceConfig, create_time_ms: i64) -> Vec<(String, String)> {
    vec![
        ("UBACKUP_INSTANCE".into(), inst.name.clone()),
        ("UBACKUP_BACK_TYPE".into(), inst.back_type.clone()),
        ("UBACKUP_INSTANCE_NUMBER".into(), inst.instance.to_string()),
        (
            "UBACKUP_BACK_DIR".into(),
            inst.back_dir.display().to_string(),
        ),
        (
            "UBACKUP_BACK_LOG".into(),
            inst.back_log.display().to_string(),
        ),
        (
            "UBACKUP_RUN_START".into(),
            create_time_ms.div_euclid(1000).to_string(),
        ),
        ("UBACKUP_RUN_START_MS".into(), create_time_ms.to_string()),
    ]
}

async fn examine(
    cfg: &AgentConfig,
    inst: &InstanceConfig,
    create_time_ms: i64,
    state: &InstanceState,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Option<(RunReport, ChainStep)> {
    if *cancel.borrow() {
        return None;
    }
    let spec = ScriptSpec {
        command: inst.script.clone(),
        timeout: inst.timeout,
        env: script_env(inst, create_time_ms),
    };
    let before = backlog::stamp(&inst.back_log);
    // Dropping the script's future kills its process group.
    let outcome = tokio::select! {
        o = script::run(&spec) => o,
        () = stopped(&mut cancel) => return None,
    };
    Some(after_script(cfg, inst, create_time_ms, state, outcome, before).await)
}

async fn after_script(
    cfg: &AgentConfig,
    inst: &InstanceConfig,
    create_time_ms: i64,
    state: &InstanceState,
    outcome: script::ScriptOutcome,
    before: Option<backlog::FileStamp>,
) -> (RunReport, ChainStep) {
    let mut r = RunReport {
        create_time_ms,
        ..RunReport::default()
    };
    // 1. The script.
    if let Some(log) = outcome.failure_log() {
        return fail(&mut r, log);
    }
    // 2. back_log.
    let shown = inst.back_log.display().to_string();
    let bytes = match backlog::read_log(backlog::BACK_LOG, &inst.back_log) {
        Ok(b) => b,
        Err(e) => return fail(&mut r, e.to_string()),
    };
    if before.is_some() && backlog::stamp(&inst.back_log) == before {
        return fail(&mut r, LogDefect::Stale { path: shown }.to_string());
    }
    let name = match backlog::parse_back_log(&bytes, &shown) {
        Ok(BackLog::Ok(n)) => n,
        // The script's own words, as UBackup sent them.
        Ok(BackLog::Wrong(text)) => return fail(&mut r, text),
        Err(e) => return fail(&mut r, e.to_string()),
    };
    let file = match backlog::resolve(backlog::BACK_LOG, &inst.back_dir, &name) {
        Ok(f) => f,
        Err(e) => {
            // A missing file keeps its name (as UBackup's "get file size faile" did); a name
            // that escapes back_dir is never put in a message.
            if !matches!(e, LogDefect::Escapes { .. }) {
                if let Ok(n) = backlog::normalise_name(backlog::BACK_LOG, &name, &inst.back_dir) {
                    r.filename = Some(n);
                }
            }
            return fail(&mut r, e.to_string());
        }
    };
    r.filename = Some(file.name.clone());
    // 3. last_all_log: full or incremental.
    let mut step_is_full = true;
    if let Some(last_all) = &inst.last_all_log {
        let shown = last_all.display().to_string();
        let bytes = match backlog::read_log(backlog::LAST_ALL_LOG, last_all) {
            Ok(b) => b,
            Err(e) => return fail(&mut r, format!("last all back faile: {e}")),
        };
        let la = match backlog::parse_last_all(&bytes, &shown) {
            Ok(l) => l,
            Err(e) => return fail(&mut r, format!("last all back faile: {e}")),
        };
        let full_name =
            match backlog::normalise_name(backlog::LAST_ALL_LOG, &la.filename, &inst.back_dir) {
                Ok(n) => n,
                Err(e) => return fail(&mut r, format!("last all back faile: {e}")),
            };
        if full_name == file.name {
            // This run made the full: record its time on a line of its own.
            if la.time.is_none() {
                if let Some(bad) = la.bad_time {
                    return fail(
                        &mut r,
                        LogDefect::BadFullTime {
                            path: shown,
                            got: bad,
                        }
                        .to_string(),
                    );
                }
                if let Err(e) = backlog::append_full_time(
                    last_all,
                    la.ends_with_newline,
                    create_time_ms.div_euclid(1000),
                ) {
                    return fail(&mut r, e.to_string());
                }
            }
        } else {
            let Some(t) = la.time else {
                let got = la.bad_time.unwrap_or_else(|| "nothing".into());
                return fail(
                    &mut r,
                    LogDefect::BadFullTime { path: shown, got }.to_string(),
                );
            };
            step_is_full = false;
            r.last_all = Some((full_name.clone(), t));
            if inst.chain == ChainKind::Incremental {
                let same_full = state.full.as_ref().is_some_and(|f| f.filename == full_name);
                r.prev = state
                    .prev_incremental
                    .as_ref()
                    .filter(|p| same_full && p.filename != file.name)
                    .map(|p| (p.filename.clone(), p.time_ms));
            }
        }
    }
    r.size = file.size;
    // 4. Self-check against this host's daemon, at the address the nodes pull from.
    if cfg.self_check != SelfCheck::Off {
        // A TLS-fronted host is asked through its terminator, as the nodes ask it.
        let (port, tls) = match &cfg.self_check_tls {
            None => (cfg.rsync_port, None),
            Some(t) => match rsync_proto::client::TlsConnector::new(&t.options()) {
                Ok(c) => (t.port, Some(c)),
                Err(e) => return fail(&mut r, format!("self-check: {e}")),
            },
        };
        match selfcheck::check(
            cfg.my_ip,
            port,
            tls,
            &inst.rsync_model,
            &file.name,
            file.size,
        )
        .await
        {
            Ok(()) => {}
            Err(SelfCheckError::NoDaemon { .. }) if cfg.self_check == SelfCheck::Auto => {
                tracing::debug!("no local rsyncd: self-check skipped");
            }
            Err(e) => return fail(&mut r, e.to_string()),
        }
    }
    // 5. Checksum (v1 only: the legacy message has no field for it).
    if cfg.message == MessageForm::V1 {
        let (path, choice, size, rate) = (
            file.path.clone(),
            cfg.checksum,
            file.size,
            cfg.checksum_rate,
        );
        let h =
            tokio::task::spawn_blocking(move || checksum::digest_file(&path, choice, size, rate))
                .await;
        match h {
            Ok(Ok(c)) => r.checksum = c,
            Ok(Err(e)) => return fail(&mut r, e.to_string()),
            Err(e) => return fail(&mut r, format!("hashing failed: {e}")),
        }
    }
    r.success = true;
    r.log = "ok".into();
    let this = BackupRef {
        filename: file.name,
        time_ms: create_time_ms,
        size: file.size,
        checksum: r.checksum.as_ref().map(ToString::to_string),
    };
    let step = if inst.last_all_log.is_none() {
        ChainStep::None
    } else if step_is_full {
        ChainStep::Full(this)
    } else {
        ChainStep::Incremental(this)
    };
    (r, step)
}

/// The heartbeat fields: version, spool depth, damaged spool records set aside (`spool_bad`,
/// until an operator removes them), and each instance's last run.
pub fn heartbeat_fields(
    cfg: &AgentConfig,
    store: &StateStore,
    spool_depth: Option<usize>,
    spool_bad: Option<usize>,
    now: SystemTime,
) -> Vec<(String, String)> {
    let mut f = vec![
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("updated_ms".into(), epoch_ms(now).to_string()),
        ("server_id".into(), cfg.server_id.clone()),
        ("pid".into(), std::process::id().to_string()),
        (
            "spool_depth".into(),
            spool_depth.map_or_else(|| "unknown".into(), |d| d.to_string()),
        ),
        ("spool_max".into(), cfg.spool_max.to_string()),
        (
            "spool_bad".into(),
            spool_bad.map_or_else(|| "unknown".into(), |d| d.to_string()),
        ),
    ];
    for inst in &cfg.instances {
        let last = store.load(&inst.name).ok().and_then(|s| s.last_run);
        let v = match last {
            Some(l) => serde_json::json!({
                "start_ms": l.start_ms, "end_ms": l.end_ms, "outcome": l.outcome,
                "log": l.log, "filename": l.filename, "delivery": l.delivery,
                "back_type": inst.back_type, "instance": inst.instance,
            }),
            None => {
                serde_json::json!({"outcome": "never", "back_type": inst.back_type, "instance": inst.instance})
            }
        };
        f.push((format!("instance:{}", inst.name), v.to_string()));
    }
    f
}

/// The heartbeat hash key.
pub fn heartbeat_key(cfg: &AgentConfig) -> String {
    format!("{}:agent:{}", cfg.key_prefix, cfg.server_id)
}

/// Writes the heartbeat; failures are logged, never fatal.
pub async fn beat<Q: Queue>(ctx: &Context<Q>) -> Result<(), QueueError> {
    let depth = ctx.spool.depth().ok();
    let bad = ctx.spool.bad().ok().map(|b| b.len());
    let fields = heartbeat_fields(&ctx.cfg, &ctx.store, depth, bad, SystemTime::now());
    ctx.queue
        .heartbeat(&heartbeat_key(&ctx.cfg), &fields, ctx.cfg.heartbeat_ttl)
        .await
}

/// Backoff between spool deliveries: doubles from 1 s to 60 s.
pub fn spool_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
}
