//! Taking and leasing jobs: the node's moves on the reliable queue. A job is taken into this
//! node's in-flight hash and leaves it only with its result (or dead letter), or put back on
//! its list: at a restart, after a dead node's lease, for a lost reply, at shutdown, or when it
//! does not fit on the disk now ([`super::admission`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ubackup_backoff::Backoff;
use ubackup_messages::{Delivery, HistoryEntry, Job, PullResult};

use super::{now_ms, Node};
use crate::queue::{JobQueue, QueueError, Taken};

impl<Q: JobQueue> Node<Q> {
    /// Takes the next job, passing over the ones put back because they do not fit now.
    pub(super) async fn take(&self) -> Result<Option<Taken>, QueueError> {
        let skip = self.deferred_to_skip();
        self.queue.take(now_ms(), &skip).await
    }

    /// Requeues the jobs this node held when it last stopped or crashed; returns where their
    /// files would land (their dead temps are kept for resume).
    pub(super) async fn recover_own(&self) -> HashSet<PathBuf> {
        let mut files = HashSet::new();
        match self.queue.in_flight(&self.cfg.node_id).await {
            Ok(held) => {
                for t in held {
                    if let Some(f) = self.final_path_of(&t) {
                        files.insert(f);
                    }
                    let reason = format!("node {} restarted while holding it", self.cfg.node_id);
                    self.put_back(&self.cfg.node_id, &t, reason, true).await;
                }
            }
            Err(e) => tracing::warn!("cannot read this node's in-flight jobs: {e}"),
        }
        files
    }

    /// Where a held job's file would land, if its message says.
    fn final_path_of(&self, t: &Taken) -> Option<PathBuf> {
        let job = Job::parse(&Delivery::unwrap(&t.raw).job).ok()?;
        let leaf = job.filename.as_deref()?.rsplit('/').next()?.to_string();
        Some(super::destination(&self.cfg, &job).ok()?.join(leaf))
    }

    /// Requeues (or dead-letters, past the limit) a job held by `owner`. Returns the message
    /// as it now waits on its list, if it was requeued by this call.
    pub(super) async fn put_back(
        &self,
        owner: &str,
        t: &Taken,
        reason: String,
        counts: bool,
    ) -> Option<Vec<u8>> {
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
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for _ in 0..20 {
            match self.queue.requeue(owner, t, &payload, dead).await {
                Ok(true) => {
                    if dead {
                        tracing::warn!(owner, list = %t.list, "dead-lettered: {reason}");
                        return None;
                    }
                    self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(owner, list = %t.list, requeues, "requeued: {reason}");
                    return Some(payload);
                }
                Ok(false) => return None, // someone else already did
                Err(e) => {
                    tracing::warn!("cannot requeue: {e}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        tracing::error!(
            owner,
            "gave up requeueing; the job stays in flight and is requeued at the next start"
        );
        None
    }

    /// Requeues entries of this node's in-flight hash that no task works on: a take whose
    /// reply was lost (a connection cut after the script ran). Entries younger than the
    /// lease are left alone, since their task may just be starting.
    pub(super) async fn reconcile(&self) -> Result<(), QueueError> {
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
    pub(super) async fn reap(&self) -> Result<(), QueueError> {
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

    pub(super) async fn publish(&self, t: &Taken, result: PullResult, dead: Option<Vec<u8>>) {
        let succeeded = result.succeeded();
        let bytes = serde_json::to_vec(&result).unwrap_or_default();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // A finish that ran on the master but was not confirmed by a replica is repeated; if
        // it was not lost after all, the repeat finds the job released: published, not lost.
        let mut unconfirmed = false;
        loop {
            match self.queue.finish(t, &bytes, dead.as_deref()).await {
                Ok(held) if held || unconfirmed => {
                    let c = if succeeded {
                        &self.stats.done
                    } else {
                        &self.stats.failed
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(succeed = succeeded, log = %result.log, "result published");
                    return;
                }
                Ok(_) => {
                    tracing::warn!(
                        "the job was requeued while this node held it (lease lost); \
                         its requeued copy will report, this result is dropped"
                    );
                    return;
                }
                Err(e) => {
                    unconfirmed |= matches!(
                        e,
                        QueueError::Ha(ubackup_redis_ha::HaError::Unconfirmed { .. })
                    );
                    if *self.cancel.borrow() && backoff.is_at_max() {
                        tracing::error!("cannot publish the result at shutdown: {e}; the job stays in flight and is redone");
                        return;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!("cannot publish the result: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

pub(super) fn dead_letter_entry(reason: &str, t: &Taken, d: &Delivery, node: &str) -> Vec<u8> {
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
