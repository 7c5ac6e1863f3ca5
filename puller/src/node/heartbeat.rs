//! The node's counters ([`Stats`], shared by every task and rendered by `metrics`) and the
//! heartbeat hash that shows them to the dashboard and to other nodes (the lease), written as
//! [`ubackup_messages::NodeHeartbeat`] says.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use ubackup_messages::{NodeHeartbeat, RedisLink};

use super::{control, now_ms, Node};
use crate::queue::JobQueue;

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
    /// Jobs whose work panicked, each reported as an internal-error failure result.
    pub internal_errors: AtomicU64,
    /// Jobs failed at once because they can never fit on this node's filesystem.
    pub never_fit: AtomicU64,
    /// Jobs put back because they do not fit on the disk now (a job counts at each time).
    pub deferrals: AtomicU64,
    /// Jobs this node passes over now because they do not fit on its disk.
    pub deferred_now: AtomicUsize,
    /// Temp files of dead pulls salvaged or removed by the sweeps.
    pub temps_cleared: AtomicU64,
    /// Partial files the sweeps removed (too old, or over the total bound).
    pub partials_removed: AtomicU64,
    /// Partial files kept for resume at the last sweep.
    pub partial_files: AtomicU64,
    /// Their bytes.
    pub partial_bytes: AtomicU64,
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
    /// Jobs pulled over TLS.
    pub pulls_tls: AtomicU64,
    /// Jobs pulled over plain rsync.
    pub pulls_plain: AtomicU64,
    /// Pull attempts that failed in TLS (handshake, certificates, client certificate).
    pub tls_handshake_failures: Arc<AtomicU64>,
    /// The queue's Redis connection at the last heartbeat (master, failovers followed).
    pub redis: Mutex<Option<ubackup_redis_ha::Status>>,
}

impl Stats {
    pub(super) fn set_paused(&self, why: Option<String>) {
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

    pub(super) fn paused(&self) -> Option<String> {
        self.paused.lock().ok().and_then(|p| p.clone())
    }
}

/// Counts one busy worker for as long as it lives: the count falls back on every way out of
/// a job (a panic's unwinding included).
pub(super) struct Busy<'a>(&'a Stats);

impl<'a> Busy<'a> {
    pub(super) fn new(stats: &'a Stats) -> Busy<'a> {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        Busy(stats)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<Q: JobQueue> Node<Q> {
    pub(super) async fn heartbeat(&self, rate: u64) {
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
        if let Ok(mut r) = self.stats.redis.lock() {
            *r = self.queue.redis_status();
        }
        let s = &self.stats;
        let paused = s.paused();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let busy = s.busy.load(Ordering::Relaxed) as u64;
        let hb = NodeHeartbeat {
            node_id: self.cfg.node_id.clone(),
            ip: self.cfg.node_ip.clone(),
            host: crate::config::hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            updated_ms: now_ms(),
            free_bytes: free,
            total_bytes: total,
            paused: paused.is_some(),
            paused_reason: paused.unwrap_or_default(),
            busy_workers: busy,
            workers: s.workers.load(Ordering::Relaxed) as u64,
            bytes_per_second: rate,
            done: load(&s.done),
            failed: load(&s.failed),
            internal_errors: load(&s.internal_errors),
            deferred_jobs: s.deferred_now.load(Ordering::Relaxed) as u64,
            partial_files: load(&s.partial_files),
            partial_bytes: load(&s.partial_bytes),
            partials_removed: load(&s.partials_removed),
            temps_cleared: load(&s.temps_cleared),
            pulls_tls: load(&s.pulls_tls),
            pulls_plain: load(&s.pulls_plain),
            tls_handshake_failures: load(&s.tls_handshake_failures),
            queues: s.lengths.lock().map(|l| l.clone()).unwrap_or_default(),
            control: s.operator.report(busy),
            redis: s.redis.lock().ok().and_then(|r| r.as_ref().map(redis_link)),
        };
        if let Err(e) = self.queue.heartbeat(&hb).await {
            tracing::warn!("cannot write the heartbeat: {e}");
        }
    }
}

/// The heartbeat's view of the queue connection.
fn redis_link(s: &ubackup_redis_ha::Status) -> RedisLink {
    RedisLink {
        master: s.master.clone().unwrap_or_default(),
        master_changes: s.master_changes,
        reconnects: s.reconnects,
        unconfirmed_writes: s.unconfirmed_writes,
    }
}

pub(super) async fn heartbeat_loop<Q: JobQueue>(
    node: Arc<Node<Q>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = node.cfg.queue.heartbeat;
    let mut last_bytes = node.stats.bytes.load(Ordering::Relaxed);
    let mut last = Instant::now();
    let mut last_sweep = Instant::now();
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
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
        // The sweep walks the whole root (up to millions of entries): off this loop, so
        // that heartbeats and lease renewals never wait for it, and never two at once.
        if last_sweep.elapsed() >= super::leftovers::SWEEP_EVERY
            && sweep.as_ref().is_none_or(|t| t.is_finished())
        {
            let n = node.clone();
            sweep = Some(tokio::spawn(async move {
                n.sweep_leftovers(false, Default::default()).await
            }));
            last_sweep = Instant::now();
        }
    }
}
