//! The backup node: takes jobs from the queue, pulls each through the engine, publishes one
//! result per job, and keeps its heartbeat.
//!
//! ```text
//!            ┌ dispatcher ─ waits for a free worker, checks the disk reserve, takes a job ┐
//!  queue ───►│        (passing over jobs put back because they do not fit on disk now)    │
//!            └─► worker task: parse → (illegal → dead letter + failure result)             │
//!                             → (client failure → forwarded result)                        │
//!                             → pull engine → verify → result → finish ────────────────────┘
//!                 (a panic anywhere in it → an internal-error failure result)
//!  heartbeat task: heartbeat hash + reaper of dead nodes' jobs, every queue.heartbeat_secs
//! ```
//!
//! The node's parts, by role:
//! - this module: the dispatcher loop, start-up, reloads and shutdown;
//! - `lease`: taking, putting back, reaping and publishing, the reliable-queue moves over a
//!   [`JobQueue`];
//! - `job`: one job's pull and verify, in small steps that need no Redis;
//! - [`admission`]: whether a job fits on the disk, never, now or later;
//! - [`heartbeat`]: the [`Stats`] every task updates and the heartbeat that shows them;
//! - `destination`: where a job's file lands;
//! - [`leftovers`]: partial and temp files no pull will come back for;
//! - [`control`]: the operator's control hash.
//!
//! Shutdown (SIGTERM) stops the dispatcher, lets running pulls finish within the grace period,
//! then cancels them; a cancelled job is put back on its list. SIGHUP hands a new config to
//! [`Control::reload`]: workers, interval, reserve, rate and `[tls]` (its certificate files
//! re-read) change live.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsync_proto::limit::BandwidthLimiter;
use tokio::sync::{mpsc, watch, Semaphore};
use ubackup_backoff::Backoff;

pub mod admission;
pub mod control;
mod destination;
pub mod heartbeat;
mod job;
mod lease;
pub mod leftovers;
pub mod metrics;
#[doc(hidden)]
pub mod testing;
mod tls;

pub use destination::destination;
pub use heartbeat::Stats;

use crate::config::NodeConfig;
use crate::pull::{EngineConfig, RetryPolicy};
use crate::queue::{JobQueue, RedisQueue};

/// How the caller steers a running node.
#[derive(Debug)]
pub struct Control {
    /// Becomes true at shutdown (SIGTERM/SIGINT).
    pub stop: watch::Receiver<bool>,
    /// New configurations (SIGHUP).
    pub reload: mpsc::Receiver<NodeConfig>,
    /// Exit once every list is empty and nothing is in flight (batch runs, the quick start).
    pub until_idle: bool,
}

/// The settings SIGHUP can change.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    workers: usize,
    interval: Duration,
    reserve: u64,
}

/// How often free space is checked while paused for it.
const DISK_RECHECK: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One running node: its configuration, its queue and the state its tasks share.
struct Node<Q> {
    cfg: NodeConfig,
    queue: Q,
    stats: Arc<Stats>,
    engine: EngineConfig,
    password: Option<Vec<u8>>,
    live: watch::Receiver<Live>,
    /// Cancels running pulls (after the grace period).
    cancel: watch::Receiver<bool>,
    /// No job is taken before then (a pull just ran out of disk space mid-way).
    pause_until: Mutex<Option<Instant>>,
    /// Jobs put back because they do not fit on the disk now; passed over when taking.
    deferred: Mutex<admission::Deferred>,
    /// In-flight fields this process is working on.
    active: Mutex<HashSet<String>>,
    /// Final paths this process is writing.
    writing: Mutex<HashSet<PathBuf>>,
    /// The manifest's appends, several jobs per fdatasync.
    manifest: Arc<crate::manifest::GroupAppender>,
    /// The `[tls]` policy and client in force (replaced by SIGHUP).
    tls: Mutex<Arc<tls::TlsState>>,
}

/// Runs the node until `control.stop` (or idleness with `until_idle`).
pub async fn run(cfg: NodeConfig, mut control: Control) -> anyhow::Result<Arc<Stats>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("cannot create the root {}", cfg.root.display()))?;
    let queue = connect_with_retry(&cfg, &mut control.stop).await?;
    run_on(cfg, queue, control, Arc::new(Stats::default())).await
}

/// [`run`] on a queue that is already connected (any [`JobQueue`]), updating `stats` as it
/// goes (a caller in the same process can watch them).
pub async fn run_on<Q: JobQueue + Clone>(
    cfg: NodeConfig,
    queue: Q,
    mut control: Control,
    stats: Arc<Stats>,
) -> anyhow::Result<Arc<Stats>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("cannot create the root {}", cfg.root.display()))?;
    ensure_sole_owner(&queue, &cfg).await?;
    testing::note_panic_sites();
    let password = match &cfg.pull.password_file {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("cannot read the password file {}", p.display()))?
                .split(|&b| b == b'\n' || b == b'\r')
                .next()
                .unwrap_or_default()
                .to_vec(),
        ),
        None => None,
    };
    let tls_state = tls::TlsState::load(&cfg.tls).context("[tls]")?;
    stats.workers.store(cfg.workers, Ordering::Relaxed);
    // Operator control changes reach the dispatcher as reloads.
    control.reload = stats.operator.wire(
        cfg.clone(),
        std::mem::replace(&mut control.reload, mpsc::channel(1).1),
    );
    let limiter = BandwidthLimiter::new(cfg.bwlimit);
    let engine = engine_config(&cfg, &limiter, &stats);
    let (live_tx, live_rx) = watch::channel(Live {
        workers: cfg.workers,
        interval: cfg.interval,
        reserve: cfg.reserve_bytes,
    });
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let node = Arc::new(Node {
        cfg: cfg.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
        engine,
        password,
        live: live_rx,
        cancel: cancel_rx,
        pause_until: Mutex::new(None),
        deferred: Mutex::new(admission::Deferred::default()),
        active: Mutex::new(HashSet::new()),
        writing: Mutex::new(HashSet::new()),
        manifest: crate::manifest::GroupAppender::new(crate::manifest::Manifest::new(&cfg.root)),
        tls: Mutex::new(Arc::new(tls_state)),
    });

    // The first heartbeat before anything else: a node that holds jobs is never without one.
    node.heartbeat(0).await;
    let resume = node.recover_own().await;
    // Temp files of a pull this node was running when it died, and partials nobody resumes.
    node.sweep_leftovers(true, resume).await;

    let hb = tokio::spawn(heartbeat::heartbeat_loop(
        node.clone(),
        control.stop.clone(),
    ));
    let metrics = match cfg.metrics {
        Some(addr) => Some(tokio::spawn(metrics::serve(
            addr,
            stats.clone(),
            control.stop.clone(),
        ))),
        None => None,
    };
    // Retention and scrub on their schedule; stopped with the node (also after --until-idle).
    let (lifecycle_stop, lifecycle_rx) = watch::channel(false);
    let lifecycle = tokio::spawn(crate::lifecycle::schedule(cfg.clone(), lifecycle_rx));
    let sem = Arc::new(Semaphore::new(cfg.workers));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = control.stop.clone();
    // Idle polls back off from 50 ms to the configured poll interval; a job resets them.
    let mut idle = Backoff::new(Duration::from_millis(50), cfg.queue.idle_poll);
    let mut workers = cfg.workers;
    tracing::info!(node = %cfg.node_id, lists = ?cfg.queue.lists, workers, "node started");
    'dispatch: loop {
        // Apply reloads.
        while let Ok(new) = control.reload.try_recv() {
            workers = apply_reload(&node, &new, &live_tx, &limiter, &sem, workers);
        }
        while tasks.try_join_next().is_some() {}
        if *stop.borrow() {
            break;
        }
        // A free worker.
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => continue,
            Some(new) = control.reload.recv() => {
                workers = apply_reload(&node, &new, &live_tx, &limiter, &sem, workers);
                continue;
            }
        };
        // Room on disk.
        if let Some(why) = node.disk_pause() {
            node.stats.set_paused(Some(why));
            drop(permit);
            tokio::select! {
                _ = tokio::time::sleep(DISK_RECHECK) => {},
                _ = stop.changed() => {},
                Some(new) = control.reload.recv() => {
                    workers = apply_reload(&node, &new, &live_tx, &limiter, &sem, workers);
                }
            }
            continue;
        }
        node.stats.set_paused(None);
        match node.take().await {
            Ok(Some(t)) => {
                idle.reset();
                if let Ok(mut a) = node.active.lock() {
                    a.insert(t.field.clone());
                }
                let n = node.clone();
                tasks.spawn(async move {
                    let field = t.field.clone();
                    {
                        // Counted down on every path out, a panic's included.
                        let _busy = heartbeat::Busy::new(&n.stats);
                        n.work_guarded(t).await;
                    }
                    if let Ok(mut a) = n.active.lock() {
                        a.remove(&field);
                    }
                    let interval = n.live.borrow().interval;
                    if !interval.is_zero() && !*n.cancel.borrow() {
                        tokio::time::sleep(interval).await;
                    }
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                if control.until_idle && tasks.is_empty() {
                    match node.queue.in_flight(&cfg.node_id).await {
                        Ok(v) if v.is_empty() => break 'dispatch,
                        _ => {}
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(idle.next_delay()) => {},
                    _ = stop.changed() => {},
                    _ = tasks.join_next(), if !tasks.is_empty() => {},
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!("cannot take a job: {e}; retrying");
                node.stats
                    .set_paused(Some(format!("queue unreachable: {e}")));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = stop.changed() => {},
                }
            }
        }
    }

    // Shutdown: let running pulls finish within the grace period, then cancel them.
    if !tasks.is_empty() {
        tracing::info!(
            running = tasks.len(),
            grace = ?cfg.shutdown_grace,
            "stopping: waiting for running pulls"
        );
        let grace = tokio::time::sleep(cfg.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = tasks.join_next() => if r.is_none() { break },
                _ = &mut grace => {
                    tracing::warn!(running = tasks.len(), "grace period over: cancelling pulls");
                    let _ = cancel_tx.send(true);
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
    let _ = cancel_tx.send(true);
    hb.abort();
    let _ = lifecycle_stop.send(true);
    let _ = lifecycle.await;
    if let Some(m) = metrics {
        m.abort();
    }
    match node.queue.in_flight(&cfg.node_id).await {
        Ok(v) if v.is_empty() => {
            if let Err(e) = node.queue.clear_heartbeat().await {
                tracing::warn!("cannot clear the heartbeat: {e}");
            }
        }
        Ok(v) => tracing::warn!(
            held = v.len(),
            "jobs still in flight: they are requeued at the next start or by another node"
        ),
        Err(e) => tracing::warn!("cannot check in-flight jobs: {e}"),
    }
    tracing::info!("node stopped");
    Ok(stats)
}

async fn connect_with_retry(
    cfg: &NodeConfig,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<RedisQueue> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let delay = backoff.next_delay();
        match RedisQueue::connect(&cfg.queue, &cfg.results, &cfg.node_id).await {
            Ok(q) => return Ok(q),
            Err(e) => {
                tracing::warn!(redis = %cfg.queue.redis, "cannot connect: {e}; retrying in {delay:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = stop.changed() => anyhow::bail!("stopped before Redis was reachable"),
        }
    }
}

/// Refuses to start while another live process heartbeats under our node id: its in-flight
/// jobs would be requeued under it.
async fn ensure_sole_owner(queue: &impl JobQueue, cfg: &NodeConfig) -> anyhow::Result<()> {
    let me = crate::config::hostname();
    if let Some((host, pid)) = queue.live_owner().await? {
        let ours = pid == i64::from(std::process::id());
        if host == me && !ours && pid_alive(pid) {
            anyhow::bail!(
                "node id {:?} is in use by process {pid} on this host; give each node its own node.id",
                cfg.node_id
            );
        }
        if host != me {
            anyhow::bail!(
                "node id {:?} is in use by a live node on host {host:?} (its heartbeat has not expired); \
                 give each node its own node.id, or wait {:?} for the lease to lapse",
                cfg.node_id,
                cfg.queue.lease
            );
        }
    }
    Ok(())
}

fn pid_alive(pid: i64) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| {
            rustix::process::test_kill_process(p).is_ok()
                || rustix::process::test_kill_process(p) == Err(rustix::io::Errno::PERM)
        })
}

fn engine_config(cfg: &NodeConfig, limiter: &BandwidthLimiter, stats: &Stats) -> EngineConfig {
    EngineConfig {
        connect_timeout: cfg.pull.connect_timeout,
        stall_timeout: cfg.pull.stall_timeout,
        deadline: cfg.pull.deadline,
        retry: RetryPolicy {
            max_attempts: cfg.pull.retry,
            ..RetryPolicy::default()
        },
        reserve_bytes: cfg.reserve_bytes,
        shared_limit: Some(limiter.clone()),
        forward_bwlimit: cfg.pull.forward_bwlimit,
        protocol: cfg.pull.protocol,
        progress: Some(stats.bytes.clone()),
        greetings: Some(rsync_proto::client::GreetingCache::new()),
        tls_failures: Some(stats.tls_handshake_failures.clone()),
        ..EngineConfig::default()
    }
}

fn apply_reload<Q>(
    node: &Node<Q>,
    new: &NodeConfig,
    live: &watch::Sender<Live>,
    limiter: &BandwidthLimiter,
    sem: &Arc<Semaphore>,
    workers: usize,
) -> usize {
    limiter.set_rate(new.bwlimit);
    if let Ok(mut t) = node.tls.lock() {
        *t = t.reload(&new.tls);
    }
    let _ = live.send(Live {
        workers: new.workers,
        interval: new.interval,
        reserve: new.reserve_bytes,
    });
    if let Ok(mut u) = node.pause_until.lock() {
        *u = None;
    }
    if new.workers > workers {
        sem.add_permits(new.workers - workers);
    } else if new.workers < workers {
        // Retire permits as running jobs hand them back.
        let sem = sem.clone();
        let n = (workers - new.workers) as u32;
        tokio::spawn(async move {
            if let Ok(p) = sem.acquire_many_owned(n).await {
                p.forget();
            }
        });
    }
    node.stats.workers.store(new.workers, Ordering::Relaxed);
    let restart_only = restart_only_changes(&node.cfg, new);
    tracing::info!(
        workers = new.workers,
        interval = ?new.interval,
        reserve = new.reserve_bytes,
        rate = ?new.bwlimit,
        "configuration reloaded"
    );
    if !restart_only.is_empty() {
        tracing::warn!(keys = ?restart_only, "these changes take effect at the next start");
    }
    new.workers
}

fn restart_only_changes(old: &NodeConfig, new: &NodeConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.queue != new.queue {
        v.push("queue");
    }
    if old.results != new.results {
        v.push("results");
    }
    if old.pull != new.pull {
        v.push("pull");
    }
    if old.node_id != new.node_id || old.root != new.root || old.node_ip != new.node_ip {
        v.push("node.id/ip/root");
    }
    if old.retention != new.retention || old.scrub != new.scrub {
        v.push("retention/scrub");
    }
    if old.metrics != new.metrics || old.log != new.log {
        v.push("metrics/log");
    }
    v
}
