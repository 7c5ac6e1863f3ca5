//! Wiring: Redis, spool, state store, the concurrency limit, the scheduler and shutdown.
//! The rules live in [`crate::backup`]; this module only connects them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{watch, Semaphore};

use crate::backup::{self, Context, Delivery, RunOutcome};
use crate::config::AgentConfig;
use crate::queue::redis::RedisQueue;
use crate::queue::Queue;
use crate::schedule;
use crate::spool::Spool;
use crate::state::StateStore;

/// Exit codes of `once`.
pub mod exit {
    /// Every instance backed up and its job is in Redis.
    pub const OK: u8 = 0;
    /// Some instance failed; its failure message was published.
    pub const BACKUP_FAILED: u8 = 1;
    /// Some job waits in the spool (Redis unreachable); it is delivered by the next run.
    pub const SPOOLED: u8 = 2;
    /// Some job could be neither pushed nor spooled, or a spooled job was found torn or
    /// corrupt and set aside (it is never delivered): a job is lost unless the operator acts.
    pub const DROPPED: u8 = 3;
    /// The agent itself could not start (config, state dir).
    pub const SETUP: u8 = 4;
}

/// Builds the shared context.
pub fn context(
    cfg: Arc<AgentConfig>,
    list: String,
    cancel: watch::Receiver<bool>,
) -> anyhow::Result<Context<RedisQueue>> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state_dir {}", cfg.state_dir.display()))?;
    let spool = Spool::open(&cfg.state_dir, cfg.spool_max).context("opening the spool")?;
    let store = StateStore::open(&cfg.state_dir).context("opening the state store")?;
    let queue = RedisQueue::new(&cfg.redis.0, &cfg.redis_ha).context("the Redis URL")?;
    Ok(Context {
        cfg,
        list,
        queue,
        spool,
        store,
        cancel,
    })
}

/// One pass over the instances (all, or `only`), then a short effort to empty the spool and
/// a heartbeat. Returns the exit code.
pub async fn once<Q: Queue + 'static>(ctx: Arc<Context<Q>>, only: Option<&str>) -> u8 {
    // Jobs left by an earlier run go first, in order.
    if let Err(e) = backup::drain(&ctx.queue, &ctx.spool).await {
        tracing::error!(error = %e, "spool unreadable");
    }
    let create_time = SystemTime::now();
    let limit = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for inst in ctx
        .cfg
        .instances
        .iter()
        .filter(|i| only.is_none_or(|o| o == i.name))
    {
        let (ctx, limit, inst) = (ctx.clone(), limit.clone(), inst.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let out = backup::run_instance(&ctx, &inst, create_time).await;
            (inst.name, out)
        });
    }
    let mut code = exit::OK;
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(x) => results.push(x),
            Err(e) => {
                tracing::error!(error = %e, "an instance run panicked");
                code = code.max(exit::BACKUP_FAILED);
            }
        }
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, out) in &results {
        match out {
            RunOutcome::Published { report, delivery } => {
                let d = match delivery {
                    Delivery::Pushed => "pushed".to_string(),
                    Delivery::Spooled(n) => format!("spooled ({n} waiting)"),
                    Delivery::Dropped(e) => {
                        code = code.max(exit::DROPPED);
                        format!("DROPPED: {e}")
                    }
                };
                if matches!(delivery, Delivery::Spooled(_)) {
                    code = code.max(exit::SPOOLED);
                }
                if !report.success {
                    code = code.max(exit::BACKUP_FAILED);
                }
                let what = if report.success {
                    format!(
                        "ok {} ({} bytes)",
                        report.filename.as_deref().unwrap_or(""),
                        report.size
                    )
                } else {
                    format!("failed: {}", report.log)
                };
                println!("{name}: {what}; {d}");
            }
            RunOutcome::Skipped => println!("{name}: skipped (a previous run still holds it)"),
            RunOutcome::Cancelled => {
                code = code.max(exit::BACKUP_FAILED);
                println!("{name}: cancelled (agent stopping)");
            }
        }
    }
    if only.is_some() && results.is_empty() {
        eprintln!("no instance named {:?}", only.unwrap_or_default());
        code = exit::SETUP;
    }
    // A short retry for jobs still spooled; the next run delivers whatever is left.
    let mut backoff = backup::spool_backoff();
    for _ in 0..3 {
        match ctx.spool.depth() {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        tokio::time::sleep(backoff.next_delay()).await;
        let _ = backup::drain(&ctx.queue, &ctx.spool).await;
    }
    let bad = ctx.spool.set_aside_count();
    if bad > 0 {
        eprintln!(
            "{bad} spooled job(s) were torn or corrupt and are set aside in {} (*.bad), never delivered: see the error log",
            ctx.spool.dir().display()
        );
        code = code.max(exit::DROPPED);
    }
    if let Ok(n) = ctx.spool.depth() {
        if n > 0 {
            eprintln!("{n} job(s) wait in the spool for Redis; the next run delivers them");
            code = code.max(exit::SPOOLED);
        } else if code == exit::SPOOLED {
            code = exit::OK;
        }
    }
    if let Err(e) = backup::beat(&ctx).await {
        tracing::warn!(error = %e, "heartbeat not written");
    }
    code
}

/// The daemon: each instance on its own schedule (no overlap: one loop per instance), a
/// spool deliverer with backoff, and the heartbeat, until `shutdown` turns true.
pub async fn run<Q: Queue + 'static>(ctx: Arc<Context<Q>>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for inst in ctx.cfg.instances.clone() {
        let (ctx, limit, mut stop) = (ctx.clone(), limit.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let last = ctx
                    .store
                    .load(&inst.name)
                    .ok()
                    .and_then(|s| s.last_run)
                    .map(|r| {
                        SystemTime::UNIX_EPOCH + Duration::from_millis(r.start_ms.max(0) as u64)
                    });
                let now = SystemTime::now();
                let at =
                    schedule::next_run(last, inst.interval, now, schedule::jitter(ctx.cfg.jitter));
                let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
                tracing::debug!(instance = %inst.name, wait_secs = wait.as_secs(), "next run");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    () = backup::stopped(&mut stop) => return,
                }
                let permit = tokio::select! {
                    p = limit.clone().acquire_owned() => p,
                    () = backup::stopped(&mut stop) => return,
                };
                let out = backup::run_instance(&ctx, &inst, SystemTime::now()).await;
                drop(permit);
                if matches!(out, RunOutcome::Cancelled) || *stop.borrow() {
                    return;
                }
                if matches!(out, RunOutcome::Skipped) {
                    // Another agent runs it now; look again in a minute.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        () = backup::stopped(&mut stop) => return,
                    }
                }
                let _ = backup::beat(&ctx).await;
            }
        });
    }
    // Spool deliverer and heartbeat.
    let beat_every =
        (ctx.cfg.heartbeat_ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut backoff = backup::spool_backoff();
    let mut next_drain = tokio::time::Instant::now();
    let mut next_beat = tokio::time::Instant::now();
    loop {
        let wake = next_drain.min(next_beat);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            () = backup::stopped(&mut shutdown) => break,
        }
        let now = tokio::time::Instant::now();
        if now >= next_drain {
            match backup::drain(&ctx.queue, &ctx.spool).await {
                Ok(0) => {
                    backoff.reset();
                    next_drain = now + Duration::from_secs(5);
                }
                Ok(n) => {
                    let delay = backoff.next_delay();
                    next_drain = now + delay;
                    tracing::warn!(waiting = n, retry_in = ?delay, "spooled jobs wait for Redis");
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool unreadable");
                    next_drain = now + Duration::from_secs(60);
                }
            }
        }
        if now >= next_beat {
            if let Err(e) = backup::beat(&ctx).await {
                tracing::warn!(error = %e, "heartbeat not written");
            }
            next_beat = now + beat_every;
        }
    }
    // Running scripts see the cancel flag and are killed with their process group; a run
    // that is publishing finishes publishing.
    while tasks.join_next().await.is_some() {}
    let _ = backup::drain(&ctx.queue, &ctx.spool).await;
}

/// `status`: the last run of each instance and the spool depth.
pub fn status(cfg: &AgentConfig) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let store = StateStore::open(&cfg.state_dir).context("opening the state store")?;
    let spool = Spool::open(&cfg.state_dir, cfg.spool_max).context("opening the spool")?;
    let now = backup::epoch_ms(SystemTime::now());
    let mut out = String::new();
    let depth = spool.depth().context("reading the spool")?;
    let _ = writeln!(
        out,
        "spool: {depth} job(s) waiting (limit {})",
        cfg.spool_max
    );
    let bad = spool.bad().context("reading the spool")?;
    if !bad.is_empty() {
        let _ = writeln!(
            out,
            "spool: {} DAMAGED job(s) set aside, never delivered (torn or corrupt; remove each once handled):",
            bad.len()
        );
        for b in &bad {
            let _ = writeln!(out, "  {}", b.display());
        }
    }
    for inst in &cfg.instances {
        match store.load(&inst.name) {
            Ok(s) => match s.last_run {
                Some(r) => {
                    let age = (now - r.start_ms).max(0) / 1000;
                    let _ = writeln!(
                        out,
                        "{}: {} {}s ago ({}), {}; {}",
                        inst.name,
                        r.outcome,
                        age,
                        r.filename.as_deref().unwrap_or("no file"),
                        r.delivery,
                        r.log
                    );
                }
                None => {
                    let _ = writeln!(out, "{}: never run", inst.name);
                }
            },
            Err(e) => {
                let _ = writeln!(out, "{}: state unreadable: {e}", inst.name);
            }
        }
    }
    Ok(out)
}
