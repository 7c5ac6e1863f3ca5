//! The Redis adapter: one multiplexed connection, opened lazily and dropped on any error so
//! the next call reconnects; every call bounded by a timeout.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::{Queue, QueueError};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-command timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis holding the job list and the heartbeat hash.
pub struct RedisQueue {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").finish_non_exhaustive()
    }
}

fn classify(e: redis::RedisError) -> QueueError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        QueueError::Unreachable(e.to_string())
    } else {
        QueueError::Refused(e.to_string())
    }
}

impl RedisQueue {
    /// A queue at `url` (nothing is connected yet).
    pub fn new(url: &str) -> Result<RedisQueue, QueueError> {
        let client = redis::Client::open(url).map_err(|e| QueueError::Refused(e.to_string()))?;
        Ok(RedisQueue {
            client,
            conn: Mutex::new(None),
        })
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Pipeline,
    ) -> Result<T, QueueError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let c = tokio::time::timeout(
                CONNECT_TIMEOUT,
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| QueueError::Unreachable("connect timed out".into()))?
            .map_err(classify)?;
            *guard = Some(c);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(QueueError::Unreachable("no connection".into()));
        };
        let r = tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(conn)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let e = classify(e);
                if matches!(e, QueueError::Unreachable(_)) {
                    *guard = None;
                }
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(QueueError::Unreachable("command timed out".into()))
            }
        }
    }
}

impl Queue for RedisQueue {
    async fn push(&self, list: &str, payload: &str) -> Result<(), QueueError> {
        let mut p = redis::pipe();
        p.cmd("LPUSH").arg(list).arg(payload);
        let _: (i64,) = self.query(&p).await?;
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
        for (k, v) in fields {
            h.arg(k).arg(v);
        }
        p.add_command(h).ignore();
        p.cmd("EXPIRE").arg(key).arg(ttl.as_secs().max(1)).ignore();
        let _: () = self.query(&p).await?;
        Ok(())
    }
}
