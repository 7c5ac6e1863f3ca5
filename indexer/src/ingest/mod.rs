//! Reliable consumption of the results list.
//!
//! ```text
//!  nodes ──LPUSH──▶ message ──LMOVE RIGHT LEFT──▶ processing:<id> ──batch──▶ catalog tx
//!                                                   │  ▲                         │ commit
//!                                                   │  └── replayed at start     ▼
//!                                                   │      and after any error   │
//!                                                   └──── settle (one Lua script): LREM each
//!                                                          committed entry by its bytes, and
//!                                                          only for an entry it removed,
//!                                                          LPUSH its dead letter / forward
//! ```
//!
//! A message leaves the processing list only after the transaction that holds it committed,
//! so a crash anywhere leaves it to be replayed; replays are harmless because the catalog
//! skips a result whose (`job_id`, `create_time`) it already has. After any error (catalog,
//! Redis, a lost reply) the loop replays what is in flight before it takes anything new, and
//! it drops exactly the entries it committed, by their bytes, never "the n oldest": a take
//! whose reply was lost, or a settle whose reply was lost, cannot make it drop an entry it has
//! not committed. Dead letters and forwards are pushed by the same script that drops their
//! entry, so each is pushed once. The loop is generic over [`Intake`];
//! [`redis::RedisIntake`] is the production one.

pub mod parse;
pub mod redis;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use ubackup_backoff::Backoff;

use crate::catalog::{Catalog, Ingest, Instance, InstanceKey};
use crate::clock::Clock;
use crate::metrics::Metrics;
pub use parse::{parse_message, Invalid};

/// What became of one in-flight message once the transaction of its batch committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Cataloged, and a pull result that UBackup's `to_es.py` reads: copied to the forward
    /// list when there is one (see [`forwardable`]).
    Forward,
    /// Cataloged (or already there) and not forwarded: a node event, or a result `to_es.py`
    /// cannot read.
    Keep,
    /// Invalid: stored on the dead-letter list with this reason.
    Dead(&'a str),
}

/// One in-flight message, named by its exact bytes, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled<'a> {
    /// The message as it sits on the processing list.
    pub raw: &'a [u8],
    /// What to do with it as it leaves.
    pub outcome: Outcome<'a>,
}

/// Where results come from, with the reliable-queue operations the loop needs.
#[async_trait]
pub trait Intake: Send + Sync {
    /// Up to `max` of the messages in flight (taken but not yet settled), oldest first.
    async fn in_flight(&mut self, max: usize) -> Result<Vec<Vec<u8>>, IntakeError>;
    /// Moves up to `max` messages (oldest first) into flight, waiting up to `wait` for the
    /// first one. Returns them oldest first.
    async fn take(&mut self, max: usize, wait: Duration) -> Result<Vec<Vec<u8>>, IntakeError>;
    /// Drops each of `settled` from flight by identity: one in-flight entry with exactly its
    /// bytes per item (two identical messages in flight need two items), oldest such entry
    /// first. In the same atomic step, and only for an entry it did drop, it stores the dead
    /// letter or the forward copy that the item's outcome asks for; so an item whose entry is
    /// already gone (an earlier call ran but its reply was lost) changes nothing. Returns how
    /// many entries it dropped.
    async fn done(&mut self, settled: &[Settled<'_>]) -> Result<usize, IntakeError>;
    /// Messages still waiting (for the lag gauge).
    async fn backlog(&mut self) -> Result<i64, IntakeError>;
}

/// A lost or refused intake connection.
#[derive(Debug, thiserror::Error)]
#[error("results intake: {0}")]
pub struct IntakeError(pub String);

/// Whether UBackup's `to_es.py` can take `item` (migration step 1 forwards only these): a pull
/// result naming its business and instance. It indexes `message['game_id']` and keys its
/// heartbeat on `server_id:type:instance`; a node event (`expired`, …) or a node's
/// "illegal message" result would raise there, costing it a 3 s stall and the message.
pub fn forwardable(item: &Ingest) -> bool {
    match item {
        Ingest::Result(r) => {
            !r.illegal && r.game_id.is_some() && !r.server_id.is_empty() && !r.back_type.is_empty()
        }
        Ingest::Event(_) => false,
    }
}

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
    /// catalog failures are retried with backoff, and after each one what is in flight is
    /// replayed before anything new is taken; nothing leaves flight before its commit.
    pub async fn run<I: Intake>(&mut self, intake: &mut I, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut flight_known = false;
        if self.auto_register {
            self.refresh_registry().await;
        }
        while !*stop.borrow() {
            let step = if flight_known {
                self.step(intake).await
            } else {
                self.replay(intake).await.inspect(|&n| {
                    flight_known = true;
                    if n > 0 {
                        tracing::info!(messages = n, "replayed the processing list");
                    }
                })
            };
            match step {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    // A take whose reply was lost, or a batch whose commit or settle failed,
                    // is in flight and unknown: replay before taking more.
                    flight_known = false;
                    let delay = backoff.next_delay();
                    tracing::warn!("{e:#}; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {},
                        _ = stop.changed() => {},
                    }
                }
            }
        }
    }

    /// Indexes what is in flight (left by an earlier run, or by a failed step), a batch at a
    /// time, oldest first, until nothing is. Returns how many messages it settled.
    pub async fn replay<I: Intake>(&mut self, intake: &mut I) -> anyhow::Result<usize> {
        let mut done = 0;
        loop {
            let msgs = intake.in_flight(self.batch).await.inspect_err(|_| {
                self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
            })?;
            if msgs.is_empty() {
                return Ok(done);
            }
            let dropped = self.commit(intake, &msgs).await?;
            if dropped == 0 {
                // Only this indexer may write its processing list; another consumer on the
                // same list would otherwise make this loop spin.
                anyhow::bail!(
                    "the processing list did not shrink after a replayed batch (is another \
                     indexer using the same processing_list?)"
                );
            }
            done += dropped;
        }
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

    /// Indexes `msgs` (in flight, oldest first), then drops them from flight with their dead
    /// letters and forward copies in one step. Returns how many entries that dropped.
    async fn commit<I: Intake>(
        &mut self,
        intake: &mut I,
        msgs: &[Vec<u8>],
    ) -> anyhow::Result<usize> {
        let mut items = Vec::with_capacity(msgs.len());
        // Per message: its item's index, or why it is invalid.
        let mut parsed: Vec<Result<usize, Invalid>> = Vec::with_capacity(msgs.len());
        for raw in msgs {
            match parse_message(raw, self.max_message_bytes) {
                Ok(i) => {
                    parsed.push(Ok(items.len()));
                    items.push(i);
                }
                Err(why) => parsed.push(Err(why)),
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
        let reasons: Vec<Option<String>> = parsed
            .iter()
            .map(|p| p.as_ref().err().map(ToString::to_string))
            .collect();
        let settled: Vec<Settled<'_>> = msgs
            .iter()
            .zip(&parsed)
            .zip(&reasons)
            .map(|((raw, p), reason)| Settled {
                raw,
                outcome: match (p, reason) {
                    (Ok(i), _) if items.get(*i).is_some_and(forwardable) => Outcome::Forward,
                    (_, Some(reason)) => Outcome::Dead(reason),
                    _ => Outcome::Keep,
                },
            })
            .collect();
        let dropped = intake.done(&settled).await.inspect_err(|_| {
            self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if dropped < settled.len() {
            tracing::warn!(
                dropped,
                settled = settled.len(),
                "some settled messages were no longer in flight"
            );
        }
        for why in parsed.iter().filter_map(|p| p.as_ref().err()) {
            tracing::warn!(reason = %why, "dead-lettered a result");
            self.metrics.dead_letter(why.kind());
        }
        Ok(dropped)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: serde_json::Value) -> Ingest {
        parse_message(json.to_string().as_bytes(), 65_536).expect("parses")
    }

    #[test]
    fn forwards_only_results_that_to_es_reads() {
        let result = serde_json::json!({
            "server_id": "S1", "game_id": 7, "type": "mysql", "instance": 3306,
            "back_server_ip": "10.0.0.5", "filename": "f.xb", "create_time": 1,
            "rsync_time": 2, "succeed": 1, "log": "ok"
        });
        assert!(forwardable(&item(result.clone())));
        let mut no_game = result;
        no_game.as_object_mut().expect("object").remove("game_id");
        assert!(!forwardable(&item(no_game)));
        let illegal = serde_json::json!({
            "back_server_ip": "10.0.0.5", "rsync_time": 2, "succeed": 0, "game_id": 7,
            "log": format!("{}no job", ubackup_messages::ILLEGAL_PREFIX)
        });
        assert!(!forwardable(&item(illegal)));
        let expired = serde_json::json!({
            "event": "expired", "node_id": "n", "back_server_ip": "10.0.0.5",
            "server_id": "S1", "type": "mysql", "instance": 3306, "file_path": "/d",
            "filename": "f.xb", "at_ms": 5, "reason": "older than 7 days"
        });
        assert!(!forwardable(&item(expired)));
    }
}
