//! The Redis adapter: an [`HaConnection`] (one multiplexed connection that follows the
//! master through Sentinel when configured, and reconnects by itself), opened lazily so the
//! agent starts and spools while Redis is away; every call bounded by a timeout. A push is
//! confirmed with `WAIT` on the same connection when `[redis_sentinel]` asks for it.

use std::time::Duration;

use tokio::sync::Mutex;
use ubackup_redis_ha::{Durability, HaConnection, HaError, HaSettings, Options, Target};

use super::{Queue, QueueError};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-command timeout (a push and its WAIT together).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis holding the job list and the heartbeat hash.
pub struct RedisQueue {
    target: Target,
    durability: Durability,
    conn: Mutex<Option<HaConnection>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").finish_non_exhaustive()
    }
}

fn classify(e: HaError) -> QueueError {
    match e {
        HaError::Redis(e) if ubackup_redis_ha::is_master_lost(&e) => {
            QueueError::Unreachable(e.to_string())
        }
        HaError::Redis(e) => QueueError::Refused(e.to_string()),
        e @ HaError::Unconfirmed { .. } => QueueError::Unconfirmed(e.to_string()),
        e => QueueError::Unreachable(e.to_string()),
    }
}

impl RedisQueue {
    /// A queue at `url`, through Sentinel when `ha` names one (nothing is connected yet).
    pub fn new(url: &str, ha: &HaSettings) -> Result<RedisQueue, QueueError> {
        redis::Client::open(url).map_err(|e| QueueError::Refused(e.to_string()))?;
        Ok(RedisQueue {
            target: ha.target(url),
            durability: ha.durability,
            conn: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<HaConnection, QueueError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let opts = Options {
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: COMMAND_TIMEOUT,
            ..Options::default()
        };
        let c = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            HaConnection::connect(self.target.clone(), opts),
        )
        .await
        .map_err(|_| QueueError::Unreachable("connect timed out".into()))?
        .map_err(classify)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd` on the connection, then (when `confirm`) WAITs on the same socket.
    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Pipeline,
        confirm: bool,
    ) -> Result<T, QueueError> {
        let conn = self.connection().await?;
        let work = async {
            let mut pinned = conn.pinned().await?;
            let v: T = cmd.query_async(&mut pinned).await?;
            if confirm {
                pinned.confirm(self.durability).await?;
            }
            Ok::<T, HaError>(v)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, work).await {
            Ok(r) => r.map_err(classify),
            Err(_) => Err(QueueError::Unreachable("command timed out".into())),
        }
    }

    /// The connection's state (master, failovers followed), once connected.
    pub async fn redis_fields(&self) -> Vec<(String, String)> {
        match self.conn.lock().await.as_ref() {
            Some(c) => c.heartbeat_fields(),
            None => Vec::new(),
        }
    }
}

impl Queue for RedisQueue {
    async fn push(&self, list: &str, payload: &str) -> Result<(), QueueError> {
        let mut p = redis::pipe();
        p.cmd("LPUSH").arg(list).arg(payload);
        let _: (i64,) = self.query(&p, true).await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("DEL").arg(key).ignore();
        let mut h = redis::cmd("HSET");
        h.arg(key);
        for (k, v) in fields.iter().chain(self.redis_fields().await.iter()) {
            h.arg(k).arg(v);
        }
        p.add_command(h).ignore();
        p.cmd("EXPIRE").arg(key).arg(ttl.as_secs().max(1)).ignore();
        let _: () = self.query(&p, false).await?;
        Ok(())
    }
}
