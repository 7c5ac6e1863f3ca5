//! The backup node: takes jobs from the queue, pulls each through the engine, publishes one
//! result per job, and keeps its heartbeat.
//!
//! ```text
//!            ┌ dispatcher ─ waits for a free worker, checks the disk reserve, takes a job ┐
//!  queue ───►│                                                                             │
//!            └─► worker task: parse → (illegal → dead letter + failure result)             │
//!                             → (client failure → forwarded result)                        │
//!                             → pull engine → verify → result → finish ────────────────────┘
//!  heartbeat task: heartbeat hash + reaper of dead nodes' jobs, every queue.heartbeat_secs
//! ```
//!
//! Shutdown (SIGTERM) stops the dispatcher, lets running pulls finish within the grace period,
//! then cancels them; a cancelled job is put back on its list. SIGHUP hands a new config to
//! [`Control::reload`]: workers, interval, reserve and rate change live.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsync_proto::client::{BasisPolicy, Source};
use rsync_proto::limit::BandwidthLimiter;
use sha2::Digest as _;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument as _;
use ubackup_messages::{
    Delivery, HintAlgorithm, HistoryEntry, Job, JobIdentity, PullResult, ILLEGAL_PREFIX,
};

pub mod control;

use crate::config::NodeConfig;
use crate::pull::{self, EngineConfig, Outcome, PullJob, RetryPolicy};
use crate::queue::{QueueError, RedisQueue, Taken};

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

/// Counters and state shared by the node's tasks; also what the heartbeat and metrics show.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs that ended in a success result.
    pub done: AtomicU64,
    /// Jobs that ended in a failure result (client failures and illegal messages included).
    pub failed: AtomicU64,
    /// Illegal messages dead-lettered.
    pub illegal: AtomicU64,
    /// Jobs put back on their lists.
    pub requeued: AtomicU64,
    /// File bytes written.
    pub bytes: Arc<AtomicU64>,
    /// Workers busy with a job.
    pub busy: AtomicUsize,
    /// Configured workers.
    pub workers: AtomicUsize,
    /// Why the node is not taking jobs, if it is not.
    pub paused: Mutex<Option<String>>,
    /// Free bytes under the root at the last check.
    pub free: AtomicU64,
    /// Total bytes of the root's filesystem.
    pub total: AtomicU64,
    /// Queue lengths at the last heartbeat (job lists, then the dead-letter list).
    pub lengths: Mutex<Vec<(String, u64)>>,
    /// File bytes per second over the last heartbeat period.
    pub rate: AtomicU64,
    /// Operator control from the dashboard (pause, drain, workers, cap).
    pub operator: control::OperatorControl,
}

impl Stats {
    fn set_paused(&self, why: Option<String>) {
        if let Ok(mut p) = self.paused.lock() {
            if *p != why {
                match &why {
                    Some(w) => tracing::warn!("paused: {w}"),
                    None => tracing::info!("resumed"),
                }
            }
            *p = why;
        }
    }

    fn paused(&self) -> Option<String> {
        self.paused.lock().ok().and_then(|p| p.clone())
    }
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

struct Node {
    cfg: NodeConfig,
    queue: RedisQueue,
    stats: Arc<Stats>,
    engine: EngineConfig,
    password: Option<Vec<u8>>,
    live: watch::Receiver<Live>,
    /// Bytes a job that paused for disk still needs above the reserve.
    disk_need: AtomicU64,
    /// Cancels running pulls (after the grace period).
    cancel: watch::Receiver<bool>,
    /// No job is taken before then (a pull just paused for disk space).
    pause_until: Mutex<Option<Instant>>,
    /// In-flight fields this process is working on.
    active: Mutex<HashSet<String>>,
    /// Final paths this process is writing.
    writing: Mutex<HashSet<PathBuf>>,
    /// The manifest's appends, several jobs per fdatasync.
    manifest: Arc<crate::manifest::GroupAppender>,
}

/// Runs the node until `control.stop` (or idleness with `until_idle`).
pub async fn run(cfg: NodeConfig, mut control: Control) -> anyhow::Result<Arc<Stats>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("cannot create the root {}", cfg.root.display()))?;
    let queue = connect_with_retry(&cfg, &mut control.stop).await?;
    ensure_sole_owner(&queue, &cfg).await?;

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
    let stats = Arc::new(Stats::default());
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
        disk_need: AtomicU64::new(0),
        cancel: cancel_rx,
        pause_until: Mutex::new(None),
        active: Mutex::new(HashSet::new()),
        writing: Mutex::new(HashSet::new()),
        manifest: crate::manifest::GroupAppender::new(crate::manifest::Manifest::new(&cfg.root)),
    });

    // The first heartbeat before anything else: a node that holds jobs is never without one.
    node.heartbeat(0).await;
    node.recover_own().await;

    let hb = tokio::spawn(heartbeat_loop(node.clone(), control.stop.clone()));
    let metrics = match cfg.metrics {
        Some(addr) => Some(tokio::spawn(crate::metrics::serve(
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
    let mut idle_delay = Duration::from_millis(50);
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
        match node.queue.take(now_ms()).await {
            Ok(Some(t)) => {
                idle_delay = Duration::from_millis(50);
                if let Ok(mut a) = node.active.lock() {
                    a.insert(t.field.clone());
                }
                let n = node.clone();
                tasks.spawn(async move {
                    n.stats.busy.fetch_add(1, Ordering::Relaxed);
                    let field = t.field.clone();
                    n.work(t).await;
                    if let Ok(mut a) = n.active.lock() {
                        a.remove(&field);
                    }
                    n.stats.busy.fetch_sub(1, Ordering::Relaxed);
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
                    _ = tokio::time::sleep(idle_delay) => {},
                    _ = stop.changed() => {},
                    _ = tasks.join_next(), if !tasks.is_empty() => {},
                }
                idle_delay = (idle_delay * 2).min(cfg.queue.idle_poll);
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
    let mut delay = Duration::from_millis(500);
    loop {
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
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Refuses to start while another live process heartbeats under our node id: its in-flight
/// jobs would be requeued under it.
async fn ensure_sole_owner(queue: &RedisQueue, cfg: &NodeConfig) -> anyhow::Result<()> {
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
        ..EngineConfig::default()
    }
}

fn apply_reload(
    node: &Node,
    new: &NodeConfig,
    live: &watch::Sender<Live>,
    limiter: &BandwidthLimiter,
    sem: &Arc<Semaphore>,
    workers: usize,
) -> usize {
    limiter.set_rate(new.bwlimit);
    let _ = live.send(Live {
        workers: new.workers,
        interval: new.interval,
        reserve: new.reserve_bytes,
    });
    node.disk_need.store(0, Ordering::Relaxed);
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

impl Node {
    /// Why the node must not take a job now, if it must not.
    fn disk_pause(&self) -> Option<String> {
        if let Some(why) = self.stats.operator.pause_reason() {
            return Some(why);
        }
        if let Ok(mut u) = self.pause_until.lock() {
            match *u {
                Some(t) if Instant::now() < t => {
                    return self
                        .stats
                        .paused()
                        .or_else(|| Some("waiting for disk space".into()))
                }
                _ => *u = None,
            }
        }
        let reserve = self.live.borrow().reserve;
        let need = self.disk_need.load(Ordering::Relaxed);
        match pull::free_bytes(&self.cfg.root) {
            Ok(free) => {
                self.stats.free.store(free, Ordering::Relaxed);
                let want = reserve.saturating_add(need);
                if free < want {
                    Some(if need > 0 {
                        format!("free space {free} B is below the reserve {reserve} B plus {need} B a waiting job needs")
                    } else {
                        format!("free space {free} B is below the reserve {reserve} B")
                    })
                } else {
                    self.disk_need.store(0, Ordering::Relaxed);
                    None
                }
            }
            Err(e) => Some(format!(
                "cannot measure free space on {}: {e}",
                self.cfg.root.display()
            )),
        }
    }

    /// Requeues the jobs this node held when it last stopped or crashed.
    async fn recover_own(&self) {
        match self.queue.in_flight(&self.cfg.node_id).await {
            Ok(held) => {
                for t in held {
                    let reason = format!("node {} restarted while holding it", self.cfg.node_id);
                    self.put_back(&self.cfg.node_id, &t, reason, true).await;
                }
            }
            Err(e) => tracing::warn!("cannot read this node's in-flight jobs: {e}"),
        }
    }

    /// Requeues (or dead-letters, past the limit) a job held by `owner`.
    async fn put_back(&self, owner: &str, t: &Taken, reason: String, counts: bool) {
        let d = Delivery::unwrap(&t.raw);
        let (msg, record) = d.wrap(
            HistoryEntry {
                at_ms: now_ms(),
                node_id: self.cfg.node_id.clone(),
                reason: reason.clone(),
            },
            counts,
        );
        let requeues = record.requeues;
        let dead = counts && requeues > self.cfg.queue.max_requeues;
        let payload = if dead {
            let d = Delivery {
                job: d.job.clone(),
                requeued: record,
            };
            dead_letter_entry(
                &format!(
                    "requeued {requeues} times (limit {}); last: {reason}",
                    self.cfg.queue.max_requeues
                ),
                t,
                &d,
                &self.cfg.node_id,
            )
        } else {
            msg
        };
        let mut delay = Duration::from_millis(200);
        for _ in 0..20 {
            match self.queue.requeue(owner, t, &payload, dead).await {
                Ok(true) => {
                    if dead {
                        tracing::warn!(owner, list = %t.list, "dead-lettered: {reason}");
                    } else {
                        self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(owner, list = %t.list, requeues, "requeued: {reason}");
                    }
                    return;
                }
                Ok(false) => return, // someone else already did
                Err(e) => {
                    tracing::warn!("cannot requeue: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(
            owner,
            "gave up requeueing; the job stays in flight and is requeued at the next start"
        );
    }

    async fn heartbeat(&self, rate: u64) {
        self.stats.operator.poll(&self.queue).await;
        let (free, total) = match rustix::fs::statvfs(&self.cfg.root) {
            Ok(st) => (
                st.f_bavail.saturating_mul(st.f_frsize),
                st.f_blocks.saturating_mul(st.f_frsize),
            ),
            Err(_) => (0, 0),
        };
        self.stats.free.store(free, Ordering::Relaxed);
        self.stats.total.store(total, Ordering::Relaxed);
        if let Ok(l) = self.queue.lengths().await {
            if let Ok(mut s) = self.stats.lengths.lock() {
                *s = l;
            }
        }
        let s = &self.stats;
        let paused = s.paused();
        let mut fields = vec![
            ("node_id".to_string(), self.cfg.node_id.clone()),
            ("ip".into(), self.cfg.node_ip.clone()),
            ("host".into(), crate::config::hostname()),
            ("pid".into(), std::process::id().to_string()),
            ("version".into(), env!("CARGO_PKG_VERSION").to_string()),
            ("updated_ms".into(), now_ms().to_string()),
            ("free_bytes".into(), free.to_string()),
            ("total_bytes".into(), total.to_string()),
            ("paused".into(), u8::from(paused.is_some()).to_string()),
            ("paused_reason".into(), paused.unwrap_or_default()),
            (
                "busy_workers".into(),
                s.busy.load(Ordering::Relaxed).to_string(),
            ),
            (
                "workers".into(),
                s.workers.load(Ordering::Relaxed).to_string(),
            ),
            ("bytes_per_second".into(), rate.to_string()),
            ("done".into(), s.done.load(Ordering::Relaxed).to_string()),
            (
                "failed".into(),
                s.failed.load(Ordering::Relaxed).to_string(),
            ),
        ];
        if let Ok(l) = s.lengths.lock() {
            for (name, len) in l.iter() {
                fields.push((format!("queue:{name}"), len.to_string()));
            }
        }
        fields.extend(
            s.operator
                .heartbeat_fields(s.busy.load(Ordering::Relaxed) as u64),
        );
        if let Err(e) = self.queue.heartbeat(&fields).await {
            tracing::warn!("cannot write the heartbeat: {e}");
        }
    }

    /// Requeues entries of this node's in-flight hash that no task works on: a take whose
    /// reply was lost (a connection cut after the script ran). Entries younger than the
    /// lease are left alone, since their task may just be starting.
    async fn reconcile(&self) -> Result<(), QueueError> {
        let cutoff = now_ms() - self.cfg.queue.lease.as_millis() as i64;
        for t in self.queue.in_flight(&self.cfg.node_id).await? {
            let orphan =
                t.taken_ms < cutoff && self.active.lock().is_ok_and(|a| !a.contains(&t.field));
            if orphan {
                let reason = "in flight on this node with no worker (a lost reply)".to_string();
                self.put_back(&self.cfg.node_id, &t, reason, false).await;
            }
        }
        Ok(())
    }

    /// Requeues the jobs of nodes whose heartbeat expired.
    async fn reap(&self) -> Result<(), QueueError> {
        for (node, alive) in self.queue.nodes().await? {
            if alive || node == self.cfg.node_id {
                continue;
            }
            for t in self.queue.in_flight(&node).await? {
                let reason = format!("node {node} stopped heartbeating while holding it");
                self.put_back(&node, &t, reason, true).await;
            }
            self.queue.forget_node_if_idle(&node).await?;
        }
        Ok(())
    }

    async fn work(&self, t: Taken) {
        let started = Instant::now();
        let delivery = Delivery::unwrap(&t.raw);
        let job = match Job::parse(&delivery.job) {
            Ok(j) => j,
            Err(e) => return self.illegal(&t, &delivery, &e.to_string()).await,
        };
        let job_id = job
            .job_id
            .clone()
            .unwrap_or_else(|| derived_job_id(&delivery.job));
        let span =
            tracing::info_span!("job", id = %job_id, host = %job.host, module = %job.module_path);
        // The span follows the future across awaits (an entered guard would not).
        self.pull_job(t, delivery, job, job_id, started)
            .instrument(span)
            .await
    }

    /// A parsed job: forwards a client failure, or pulls and reports.
    async fn pull_job(
        &self,
        t: Taken,
        delivery: Delivery,
        job: Job,
        job_id: String,
        started: Instant,
    ) {
        let dest = match destination(&self.cfg, &job) {
            Ok(d) => d,
            Err(e) => return self.illegal(&t, &delivery, &e).await,
        };
        let mut result = base_result(&self.cfg, &job, &job_id, &t, &delivery, &dest);
        if !job.success {
            // The client's own failure: forwarded, as UBackup did (with the right file_path).
            result.rsync_time = now_ms();
            result.log = job.log.clone();
            result.duration_ms = started.elapsed().as_millis() as u64;
            return self.publish(&t, result, None).await;
        }
        let Some(path) = job.source_path() else {
            return self
                .illegal(&t, &delivery, "filename: missing on a successful backup")
                .await;
        };
        let (module, sub) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let source = Source {
            user: job.user.clone(),
            host: job.host.to_string(),
            port: job.port.unwrap_or(self.cfg.pull.rsync_port),
            module: module.to_string(),
            path: sub.to_string(),
            module_slash: false,
        };
        let file_name = job
            .filename
            .as_deref()
            .and_then(|f| f.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let key = basis_key(&job);
        let previous = if self.cfg.pull.previous_as_basis {
            crate::basis::lookup(&self.cfg.root, &key)
        } else {
            None
        };
        let basis = if self.cfg.pull.previous_as_basis {
            let same = dest.join(&file_name);
            let prev = previous.clone();
            BasisPolicy::Hook(Arc::new(move |_| {
                if same.is_file() {
                    Some(same.clone())
                } else {
                    prev.clone()
                }
            }))
        } else {
            BasisPolicy::None
        };
        let pj = PullJob {
            source,
            password: job.user.as_ref().and(self.password.clone()),
            checksum_choice: self.cfg.pull.checksum_choice,
            dest_dir: dest.clone(),
            basis,
            expected_size: job.size,
            rate: None,
            recursive: false,
            compress: self.cfg.pull.compress.clone(),
        };
        let final_path = dest.join(&file_name);
        let mine = self
            .writing
            .lock()
            .is_ok_and(|mut w| w.insert(final_path.clone()));
        if mine {
            // Temp files of a process that died pulling this file become its resume basis.
            match pull::salvage_stale_temps(&dest, &file_name) {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "kept the data of an interrupted pull for resume"),
                Err(e) => tracing::warn!("cannot clean up stale temp files: {e}"),
            }
        }
        let mut engine = self.engine.clone();
        engine.reserve_bytes = self.live.borrow().reserve;
        let mut cancel = self.cancel.clone();
        let outcome = pull::run(&pj, &engine, async move {
            let _ = cancel.wait_for(|c| *c).await;
        })
        .await;
        if mine {
            if let Ok(mut w) = self.writing.lock() {
                w.remove(&final_path);
            }
        }
        result.rsync_time = now_ms();
        result.duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Completed(r) => {
                result.attempts = r.attempts;
                result.bytes_received = r.bytes_received;
                result.literal_bytes = r.literal_bytes;
                result.matched_bytes = r.matched_bytes;
                result.basis = r.basis.clone();
                result.size = Some(r.size);
                if let Some((hex, algo)) = &r.checksum {
                    result.checksum = Some(hex.clone());
                    result.checksum_algorithm = Some(algo.to_string());
                }
                let mut ok = true;
                if let Some(hint) = &job.checksum {
                    let path = r.final_path.clone();
                    let algo = hint.algorithm;
                    match tokio::task::spawn_blocking(move || digest_file(&path, algo)).await {
                        Ok(Ok(got)) if got == hint.hex => {
                            result.checksum = Some(got);
                            result.checksum_algorithm = Some(algo.name().to_string());
                        }
                        Ok(Ok(got)) => {
                            ok = false;
                            result.log = format!(
                                "checksum mismatch: the job says {hint}, the pulled file is {}:{got}",
                                algo.name()
                            );
                            // Not the backup the client described: keep it out of the catalog
                            // and out of the basis chain.
                            let _ = std::fs::remove_file(&r.final_path);
                        }
                        Ok(Err(e)) => {
                            ok = false;
                            result.log = format!("cannot verify the checksum: {e}");
                        }
                        Err(e) => {
                            ok = false;
                            result.log = format!("cannot verify the checksum: {e}");
                        }
                    }
                }
                if ok {
                    if let Some(expected) = job.size.filter(|&s| s != r.size) {
                        ok = false;
                        result.size_mismatch = true;
                        result.expected_size = Some(expected);
                        result.log = format!(
                            "file size not correct: the job says {expected} bytes, received {}",
                            r.size
                        );
                    }
                }
                if ok {
                    result.succeed = 1;
                    result.log = "ok".into();
                    crate::basis::record(&self.cfg.root, &key, &r.final_path);
                }
                if ok || result.size_mismatch {
                    crate::manifest::record_pull(&self.manifest, &job, &job_id, &r, &result).await;
                }
                self.publish(&t, result, None).await
            }
            Outcome::PausedForDisk {
                free,
                reserve,
                needed,
            } => {
                self.disk_need.store(needed.unwrap_or(0), Ordering::Relaxed);
                if let Ok(mut u) = self.pause_until.lock() {
                    *u = Some(Instant::now() + DISK_RECHECK);
                }
                let why = format!(
                    "free space {free} B would fall below the reserve {reserve} B (job needs {} B)",
                    needed.unwrap_or(0)
                );
                self.stats.set_paused(Some(why.clone()));
                self.put_back(&self.cfg.node_id, &t, why, false).await;
            }
            Outcome::Cancelled => {
                self.put_back(&self.cfg.node_id, &t, "node shutting down".into(), false)
                    .await;
            }
            Outcome::Failed {
                reason,
                attempt_errors,
                ..
            } => {
                result.attempts = attempt_errors.len() as u32;
                result.log = format!("rsync failure: {reason}");
                self.publish(&t, result, None).await
            }
        }
    }

    async fn illegal(&self, t: &Taken, d: &Delivery, reason: &str) {
        tracing::warn!(list = %t.list, "illegal message: {reason}");
        self.stats.illegal.fetch_add(1, Ordering::Relaxed);
        let id = JobIdentity::sniff(&d.job);
        let result = PullResult {
            interval: id.interval,
            server_id: id.server_id,
            game_id: id.game_id,
            game_server_ip: id.host,
            instance: id.instance,
            back_server_ip: self.cfg.node_ip.clone(),
            filename: id.filename,
            rsync_time: now_ms(),
            last_all_filename: "None".into(),
            log: format!("{ILLEGAL_PREFIX}{reason}"),
            back_type: id.back_type,
            job_id: id.job_id.unwrap_or_else(|| derived_job_id(&d.job)),
            node_id: self.cfg.node_id.clone(),
            requeues: d.requeued.requeues,
            queue: Some(t.list.clone()),
            taken_ms: t.taken_ms,
            ..PullResult::default()
        };
        let dead = dead_letter_entry(
            &format!("illegal message: {reason}"),
            t,
            d,
            &self.cfg.node_id,
        );
        self.publish(t, result, Some(dead)).await
    }

    async fn publish(&self, t: &Taken, result: PullResult, dead: Option<Vec<u8>>) {
        let succeeded = result.succeeded();
        let bytes = serde_json::to_vec(&result).unwrap_or_default();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.queue.finish(t, &bytes, dead.as_deref()).await {
                Ok(true) => {
                    let c = if succeeded {
                        &self.stats.done
                    } else {
                        &self.stats.failed
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(succeed = succeeded, log = %result.log, "result published");
                    return;
                }
                Ok(false) => {
                    tracing::warn!(
                        "the job was requeued while this node held it (lease lost); \
                         its requeued copy will report, this result is dropped"
                    );
                    return;
                }
                Err(e) => {
                    if *self.cancel.borrow() && delay >= Duration::from_secs(5) {
                        tracing::error!("cannot publish the result at shutdown: {e}; the job stays in flight and is redone");
                        return;
                    }
                    tracing::warn!("cannot publish the result: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn heartbeat_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let period = node.cfg.queue.heartbeat;
    let mut last_bytes = node.stats.bytes.load(Ordering::Relaxed);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {},
            _ = stop.changed() => {},
        }
        let bytes = node.stats.bytes.load(Ordering::Relaxed);
        let secs = last.elapsed().as_secs_f64().max(0.001);
        let rate = ((bytes.saturating_sub(last_bytes)) as f64 / secs) as u64;
        node.stats.rate.store(rate, Ordering::Relaxed);
        last_bytes = bytes;
        last = Instant::now();
        node.heartbeat(rate).await;
        if let Err(e) = node.reap().await {
            tracing::warn!("cannot check other nodes' leases: {e}");
        }
        if let Err(e) = node.reconcile().await {
            tracing::warn!("cannot check this node's in-flight jobs: {e}");
        }
    }
}

fn dead_letter_entry(reason: &str, t: &Taken, d: &Delivery, node: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "reason": reason,
        "message": String::from_utf8_lossy(&d.job),
        "list": t.list,
        "node_id": node,
        "at_ms": now_ms(),
        "requeues": d.requeued.requeues,
        "history": d.requeued.history,
    }))
    .unwrap_or_default()
}

/// A stable id for a UBackup message (which has none): the same message requeued keeps it.
fn derived_job_id(raw: &[u8]) -> String {
    let h = sha2::Sha256::digest(raw);
    let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

fn basis_key(job: &Job) -> String {
    format!("{}\n{}\n{}", job.server_id, job.back_type, job.instance)
}

fn base_result(
    cfg: &NodeConfig,
    job: &Job,
    job_id: &str,
    t: &Taken,
    d: &Delivery,
    dest: &Path,
) -> PullResult {
    PullResult {
        interval: job.interval.map(|i| i as i64),
        server_id: Some(job.server_id.clone()),
        game_id: Some(job.game_id),
        op_id: Some(job.op_id),
        game_server_ip: Some(job.host.to_string()),
        instance: Some(job.instance),
        back_server_ip: cfg.node_ip.clone(),
        file_path: Some(dest.display().to_string()),
        filename: job.filename.clone(),
        create_time: job.create_time_ms,
        size: job.size,
        last_all_filename: job
            .last_all_filename
            .clone()
            .unwrap_or_else(|| "None".into()),
        last_all_time: job.last_all_time_ms,
        prev_filename: job.prev_filename.clone(),
        prev_time: job.prev_time_ms,
        back_type: Some(job.back_type.clone()),
        job_id: job_id.to_string(),
        node_id: cfg.node_id.clone(),
        requeues: d.requeued.requeues,
        queue: Some(t.list.clone()),
        taken_ms: t.taken_ms,
        ..PullResult::default()
    }
}

/// A value that may become one directory level.
fn is_component(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.starts_with('.') && !s.contains(['/', '\0', '\n', '\r'])
}

/// The job's destination directory from the template. Values from the message must each be
/// one plain path component.
pub fn destination(cfg: &NodeConfig, job: &Job) -> Result<PathBuf, String> {
    let ip = job.host.to_string();
    let (abc, d) = match job.host {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (format!("{}.{}.{}", o[0], o[1], o[2]), o[3].to_string())
        }
        // UBackup only knew IPv4; an IPv6 host keeps its whole address in one level.
        std::net::IpAddr::V6(_) => (ip.replace(':', "_"), "v6".to_string()),
    };
    let values = [
        ("back_type", job.back_type.clone()),
        ("ip", ip.replace(':', "_")),
        ("ip_abc", abc),
        ("ip_d", d),
        ("server_id", job.server_id.clone()),
        ("instance", job.instance.to_string()),
        ("game_id", job.game_id.to_string()),
    ];
    let mut out = cfg.pull.destination.clone();
    for (name, v) in &values {
        let ph = format!("{{{name}}}");
        if out.contains(&ph) {
            if !is_component(v) {
                return Err(format!("{name}: {v:?} cannot be a directory name"));
            }
            out = out.replace(&ph, v);
        }
    }
    let root = cfg.root.to_string_lossy();
    let out = out.replace("{root}", root.trim_end_matches('/'));
    Ok(PathBuf::from(out))
}

/// Hex digest of a file (xxh3 and xxh128 in canonical big-endian form, as `xxhsum` prints).
fn digest_file(path: &Path, algo: HintAlgorithm) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sha = sha2::Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut xx = xxhash_rust::xxh3::Xxh3::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        match algo {
            HintAlgorithm::Sha256 => sha.update(chunk),
            HintAlgorithm::Md5 => md5.update(chunk),
            _ => xx.update(chunk),
        }
    }
    let bytes: Vec<u8> = match algo {
        HintAlgorithm::Sha256 => sha.finalize().to_vec(),
        HintAlgorithm::Md5 => md5.finalize().to_vec(),
        HintAlgorithm::Xxh3 => xx.digest().to_be_bytes().to_vec(),
        _ => xx.digest128().to_be_bytes().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(template: &str) -> NodeConfig {
        let mut c = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
        c.pull.destination = template.into();
        c
    }

    fn job(json: &str) -> Job {
        Job::parse(json.as_bytes()).unwrap()
    }

    const J: &str = r#"{"filename": "a.rdb", "size": 3, "log": "ok", "create_time": 1, "success": true, "server_id": "S1", "game_id": 12, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/r"}"#;

    #[test]
    fn default_destination_is_ubackups_layout() {
        let d = destination(&cfg(crate::config::DEFAULT_DESTINATION), &job(J)).unwrap();
        assert_eq!(d, PathBuf::from("/b/redis/10.1.2/3"));
    }

    #[test]
    fn message_values_must_be_plain_components() {
        let j = job(&J.replace("\"S1\"", "\"../S1\""));
        assert!(destination(&cfg("{root}/{server_id}"), &j).is_err());
        let j = job(&J.replace("\"S1\"", "\".hidden\""));
        assert!(destination(&cfg("{root}/{server_id}"), &j).is_err());
        // Not used by the template: not checked.
        assert!(destination(&cfg("{root}/{back_type}"), &j).is_ok());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_job_id(b"a"), derived_job_id(b"a"));
        assert_ne!(derived_job_id(b"a"), derived_job_id(b"b"));
        assert!(derived_job_id(b"a").starts_with("u-"));
    }

    #[test]
    fn digests_match_known_values() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            digest_file(&p, HintAlgorithm::Sha256).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_file(&p, HintAlgorithm::Md5).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // xxhsum -H3 / xxh128sum of "abc".
        assert_eq!(
            digest_file(&p, HintAlgorithm::Xxh3).unwrap(),
            "78af5f94892f3950"
        );
        assert_eq!(
            digest_file(&p, HintAlgorithm::Xxh128).unwrap(),
            "06b05ab6733a618578af5f94892f3950"
        );
    }
}
