//! The Redis connection of ubackup's three daemons (agent, node, indexer): the master of a
//! Redis Sentinel set, found and followed across failovers, and writes confirmed by a
//! replica before they count as done.
//!
//! ```text
//!  Sentinels ──GET-MASTER-ADDR-BY-NAME──► master? ──ROLE──► HaConnection (one multiplexed socket)
//!      │                                                      ▲   │ I/O error, timeout, READONLY
//!      └──── +switch-master (pub/sub, early hint) ────────────┘   └─► drop, find the master again
//!                                                                      (bounded backoff)
//!  write ─► WAIT <replicas> <ms> on the same socket ─► Ok, or Unconfirmed (caller keeps it)
//! ```
//!
//! Why our own piece: redis-rs's `sentinel` feature (`SentinelClient`) finds the master and
//! checks its role, but it does not follow `+switch-master`, and its `ConnectionManager`
//! reconnects to the address it first resolved, which after a failover is a replica that
//! answers every write with READONLY. [`HaConnection`] implements redis-rs's
//! `ConnectionLike`, so the daemons' commands, pipelines and Lua scripts (EVALSHA, with
//! EVAL on the new master's NOSCRIPT) run on it unchanged; a blocking command that was
//! waiting on the old master fails with the connection, and the caller's next call waits on
//! the new one.
//!
//! What it deliberately does not do: repeat a failed command (a write may have happened on
//! the old master; each caller knows whether repeating is safe), read from replicas, or
//! speak Redis Cluster.
//!
//! It lives in its own crate because all three daemons need it and none may depend on
//! another's domain (`messages` holds wire formats only).
//!
//! ```no_run
//! # async fn f() -> Result<(), ubackup_redis_ha::HaError> {
//! use ubackup_redis_ha::{Durability, HaConnection, Options, SentinelConfig, Target};
//! let sentinel = SentinelConfig::new("ubackup", &["10.0.0.1:26379".into()], None, None)
//!     .map_err(|_| ubackup_redis_ha::HaError::Poisoned)?;
//! let ha = HaConnection::connect(
//!     Target::Sentinel { sentinel, url: "redis://127.0.0.1/0".into() },
//!     Options::default(),
//! )
//! .await?;
//! let mut pinned = ha.pinned().await?;
//! let _: i64 = redis::cmd("LPUSH").arg("uuzuback").arg("{}").query_async(&mut pinned).await?;
//! pinned.confirm(Durability::SENTINEL_DEFAULT).await?; // Err(Unconfirmed): not done yet
//! # Ok(()) }
//! ```

mod config;
mod conn;
mod watch;

pub use config::{Durability, HaSettings, Secret, SentinelConfig, Target};
pub use conn::{is_master_lost, HaConnection, Options, Pinned, Status};

/// Why a connection or a confirmed write did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaError {
    /// A Redis error (connecting, a command, a malformed URL).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No Sentinel named a master that answers ROLE with `master`.
    #[error("no master for {name:?} ({tried})")]
    NoMaster {
        /// The master name.
        name: String,
        /// What each Sentinel and candidate said.
        tried: String,
    },
    /// The write happened on the master but fewer replicas than required acknowledged it
    /// in time: a failover now could lose it.
    #[error("write not confirmed by replicas (WAIT: {got} of {wanted})")]
    Unconfirmed {
        /// Replicas required.
        wanted: u32,
        /// Replicas that acknowledged.
        got: u64,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("connection state poisoned")]
    Poisoned,
}

impl HaError {
    /// Whether repeating later can succeed (everything but a malformed configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            HaError::Redis(e) => {
                is_master_lost(e) || e.kind() != redis::ErrorKind::InvalidClientConfig
            }
            _ => true,
        }
    }

    /// As a redis-rs error, for [`redis::aio::ConnectionLike`] callers.
    pub(crate) fn into_redis(self) -> redis::RedisError {
        match self {
            HaError::Redis(e) => e,
            other => redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                other.to_string(),
            )),
        }
    }
}
