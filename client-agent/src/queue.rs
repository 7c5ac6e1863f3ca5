//! Where jobs and the heartbeat go, as the domain sees it: a small trait, so the publishing
//! rules (push, or spool and deliver in order) never name a Redis type. The Redis adapter is
//! [`redis::RedisQueue`].

pub mod redis;

use std::future::Future;
use std::time::Duration;

/// Why a push or heartbeat did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No connection (refused, timed out, reset).
    #[error("cannot reach the queue: {0}")]
    Unreachable(String),
    /// The server answered with an error (OOM, READONLY, wrong type...).
    #[error("the queue refused: {0}")]
    Refused(String),
    /// The master took the push but fewer replicas than `redis_wait_replicas` confirmed it
    /// in time: a failover could still lose it, so it counts as not done (spooled, pushed
    /// again; nodes and the indexer drop a repeated job id).
    #[error("push not confirmed by a replica: {0}")]
    Unconfirmed(String),
}

/// The job queue and the heartbeat store.
pub trait Queue: Send + Sync {
    /// LPUSHes `payload` onto `list` (producers push left, nodes pop right: FIFO).
    fn push(
        &self,
        list: &str,
        payload: &str,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Replaces the fields of hash `key` and sets its TTL, atomically.
    fn heartbeat(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
