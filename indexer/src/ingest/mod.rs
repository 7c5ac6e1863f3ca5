//! Reliable consumption of the results list.
//!
//! ```text
//!  nodes ──LPUSH──▶ message ──LMOVE RIGHT LEFT──▶ processing:<id> ──batch──▶ catalog tx
//!                                                   │  ▲                         │ commit
//!                                                   │  └── replayed at start     ▼
//!                                                   └────────── LTRIM (drop the batch)
//!  invalid ──▶ dead letter {reason, message} (then dropped from processing)
//! ```
//!
//! A message leaves the processing list only after the transaction that holds it committed,
//! so a crash anywhere leaves it to be replayed; replays are harmless because the catalog
//! skips a result whose (`job_id`, `create_time`) it already has. The loop is generic over
//! [`Intake`]; [`redis::RedisIntake`] is the production one.

pub mod parse;
pub mod redis;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::catalog::{Catalog, Ingest, Instance, InstanceKey};
use crate::clock::Clock;
use crate::metrics::Metrics;
pub use parse::{parse_message, Invalid};

/// Where results come from, with the reliable-queue operations the loop needs.
#[async_trait]
pub trait Intake: Send + Sync {
    /// Messages left in flight by an earlier run, oldest first.
    async fn in_flight(&mut self) -> Result<Vec<Vec<u8>>, IntakeError>;
    /// Moves up to `max` messages (oldest first) into flight, waiting up to `wait` for the
    /// first one. Returns them oldest first.
    async fn take(&mut self, max: usize, wait: Duration) -> Result<Vec<Vec<u8>>, IntakeError>;
    /// Drops the `n` oldest in-flight messages (their transaction committed).
    async fn done(&mut self, n: usize) -> Result<(), IntakeError>;
    /// Stores an invalid message with its reason.
    async fn dead_letter(&mut self, raw: &[u8], reason: &str) -> Result<(), IntakeError>;
    /// Messages still waiting (for the lag gauge).
    async fn backlog(&mut self) -> Result<i64, IntakeError>;
}

/// A lost or refused intake connection.
#[derive(Debug, thiserror::Error)]
#[error("results intake: {0}")]
pub struct IntakeError(pub String);

/// Registry knowledge the loop needs for `auto_register`.
#[derive(Debug)]
pub struct Pipeline {
    catalog: Arc<dyn Catalog>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    batch: usize,
    max_message_bytes: usize,
    auto_register: bool,
    registered: HashSet<InstanceKey>,
}

impl Pipeline {
    /// A pipeline into `catalog`.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        batch: usize,
        max_message_bytes: usize,
        auto_register: bool,
    ) -> Pipeline {
        Pipeline {
            catalog,
            clock,
            metrics,
            batch: batch.max(1),
            max_message_bytes,
            auto_register,
            registered: HashSet::new(),
        }
    }

    /// Runs until `stop` turns true: replays what is in flight, then consumes. Intake and
    /// catalog failures are retried with backoff; nothing is dropped from flight before its
    /// commit.
    pub async fn run<I: Intake>(&mut self, intake: &mut I, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut replayed = false;
        if self.auto_register {
            self.refresh_registry().await;
        }
        while !*stop.borrow() {
            let step = if replayed {
                self.step(intake).await
            } else {
                match self.replay(intake).await {
                    Ok(n) => {
                        replayed = true;
                        if n > 0 {
                            tracing::info!(messages = n, "replayed the processing list");
                        }
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            };
            match step {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!("{e:#}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.changed() => {},
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Indexes what an earlier run left in flight.
    pub async fn replay<I: Intake>(&mut self, intake: &mut I) -> anyhow::Result<usize> {
        let msgs = intake.in_flight().await.inspect_err(|_| {
            self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let mut done = 0;
        for chunk in msgs.chunks(self.batch) {
            self.commit(intake, chunk).await?;
            done += chunk.len();
        }
        Ok(done)
    }

    /// Takes one batch and indexes it. Returns how many messages it handled.
    pub async fn step<I: Intake>(&mut self, intake: &mut I) -> anyhow::Result<usize> {
        let msgs = intake
            .take(self.batch, Duration::from_secs(1))
            .await
            .inspect_err(|_| {
                self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
            })?;
        if msgs.is_empty() {
            if let Ok(n) = intake.backlog().await {
                self.metrics.backlog.store(n, Ordering::Relaxed);
            }
            return Ok(0);
        }
        self.commit(intake, &msgs).await?;
        Ok(msgs.len())
    }

    /// Indexes `msgs` (the oldest in flight, oldest first) and drops them from flight.
    async fn commit<I: Intake>(&mut self, intake: &mut I, msgs: &[Vec<u8>]) -> anyhow::Result<()> {
        let mut items = Vec::with_capacity(msgs.len());
        for raw in msgs {
            match parse_message(raw, self.max_message_bytes) {
                Ok(i) => items.push(i),
                Err(why) => {
                    tracing::warn!(reason = %why, "dead-lettering a result");
                    intake.dead_letter(raw, &why.to_string()).await?;
                    self.metrics.dead_letter(why.kind());
                }
            }
        }
        let now = self.clock.now_ms();
        if !items.is_empty() {
            let out = self.catalog.ingest(&items, now).await.inspect_err(|_| {
                self.metrics.batch_failures.fetch_add(1, Ordering::Relaxed);
            })?;
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .indexed
                .fetch_add(out.inserted, Ordering::Relaxed);
            self.metrics
                .duplicates
                .fetch_add(out.duplicates, Ordering::Relaxed);
            self.metrics
                .events_marked
                .fetch_add(out.marked, Ordering::Relaxed);
            self.metrics
                .events_unmatched
                .fetch_add(out.unmatched_events, Ordering::Relaxed);
            if let Some(newest) = items
                .iter()
                .filter_map(|i| match i {
                    Ingest::Result(r) => Some(r.rsync_time),
                    Ingest::Event(_) => None,
                })
                .max()
            {
                self.metrics.lag_ms.store(now - newest, Ordering::Relaxed);
            }
            if self.auto_register {
                self.register_new(&items, now).await?;
            }
        }
        intake.done(msgs.len()).await?;
        Ok(())
    }

    async fn refresh_registry(&mut self) {
        if let Ok(all) = self.catalog.instances().await {
            self.registered = all.into_iter().map(|i| i.key).collect();
        }
    }

    async fn register_new(&mut self, items: &[Ingest], now: i64) -> anyhow::Result<()> {
        let mut new = Vec::new();
        for i in items {
            let Ingest::Result(r) = i else { continue };
            if r.illegal || r.server_id.is_empty() {
                continue;
            }
            let key = r.key();
            if self.registered.contains(&key) || new.iter().any(|n: &Instance| n.key == key) {
                continue;
            }
            new.push(Instance {
                key,
                name: String::new(),
                business_id: r.game_id,
                interval_secs: r.interval_secs,
                enabled: true,
                created_ms: 0,
            });
        }
        if !new.is_empty() {
            // Re-read first: another indexer or an operator may have registered it with
            // settings we must not overwrite.
            self.refresh_registry().await;
            new.retain(|n| !self.registered.contains(&n.key));
            self.catalog.upsert_instances(&new, now).await?;
            tracing::info!(count = new.len(), "auto-registered new instances");
            self.registered.extend(new.into_iter().map(|n| n.key));
        }
        Ok(())
    }
}
